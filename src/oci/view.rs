//! Amber's own tags seen through `/v2/`: each tag pushed through `/v1/` is
//! also an OCI artifact, an image manifest with the empty config and one
//! titled layer per file (its sha256 and size, its BLAKE3 in an annotation),
//! made on its first OCI read, stored, and served byte-identical forever
//! (found again by its Amber manifest, never made twice). Its referrers: the
//! signed DSSE envelope, and the binding's transparency-log receipt once a
//! checkpoint covers it, and its attestations (`crate::attest`). A `/v1/`
//! blob's sha256 was hashed on upload, or is hashed once from its verified
//! bytes the first time a view needs it (`crate::attest::sha256_of`).
//!
//! Made on a read, so made with the reading token as the actor of their
//! audit entries: derived from what is there, never a change of content.

use std::collections::BTreeMap;

use amber_core::Digest;
use amber_core::audit::Event;
use amber_core::dsse::Envelope;
use amber_core::manifest::ManifestPayload;
use amber_core::{RepoName, Tag};
use serde_json::{Value, json};

use super::blobs::put_bytes;
use super::digest::{Algorithm, OciDigest};
use super::error::OciResult;
use super::media::{ARTIFACT_TYPE, EMPTY_SHA256, ENVELOPE_TYPE, INTOTO_TYPE, OCI_MANIFEST, RECEIPT_TYPE};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::meta::{OciManifest, OciStore, Referrer};
use crate::state::AppState;

const BLAKE3_ANNOTATION: &str = "dev.amber.blake3";
const TITLE: &str = "org.opencontainers.image.title";

fn empty_config() -> Value {
    json!({"mediaType": "application/vnd.oci.empty.v1+json", "digest": EMPTY_SHA256, "size": 2, "data": "e30="})
}

/// Where the view of the tag bound to Amber manifest `manifest` is kept.
fn view_key(manifest: &Digest) -> String {
    format!("amber-view:{manifest}")
}

/// The OCI artifact of a `/v1/` tag bound to `manifest`: its digest and record.
pub async fn artifact(
    state: &AppState,
    caller: &Caller,
    repo: &RepoName,
    manifest: &Digest,
    envelope: &Envelope,
    payload: &ManifestPayload,
) -> OciResult<(String, OciManifest)> {
    if let Some(view) = state.meta.oci_manifest(repo, &view_key(manifest)).await? {
        return Ok((OciDigest::of(Algorithm::Sha256, &view.bytes).to_string(), view));
    }
    let mut layers = Vec::with_capacity(payload.files.len());
    for file in &payload.files {
        let sha256 = crate::attest::sha256_of(state, &file.digest, file.size).await?;
        layers.push(json!({
            "mediaType": "application/octet-stream",
            "digest": sha256,
            "size": file.size,
            "annotations": {TITLE: file.path.as_str(), BLAKE3_ANNOTATION: file.digest.to_string()},
        }));
    }
    let created =
        payload.created_at.format(&time::format_description::well_known::Rfc3339).map_err(ApiError::internal)?;
    let mut annotations: BTreeMap<String, String> = BTreeMap::new();
    annotations.insert("dev.amber.manifest".into(), manifest.to_string());
    annotations.insert("dev.amber.tag".into(), payload.tag.to_string());
    annotations.insert("org.opencontainers.image.created".into(), created);
    let bytes = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": empty_config(),
        "layers": layers,
        "annotations": annotations,
    }))
    .expect("a manifest serialises");
    let digest = OciDigest::of(Algorithm::Sha256, &bytes);
    let record = OciManifest {
        media_type: OCI_MANIFEST.into(),
        bytes,
        subject: None,
        blobs: payload.files.iter().map(|f| (f.digest, f.size)).collect(),
        created_at: payload.created_at,
        view_of: Some(payload.tag.clone()),
    };
    let event = Event::OciManifestPushed {
        repository: repo.clone(),
        digest: digest.to_string(),
        media_type: OCI_MANIFEST.into(),
    };
    let draft = crate::audit::Draft::shared(&state.signer, caller.actor(), vec![event]);
    state.meta.put_oci_manifest(repo, &digest.to_string(), &record, None, None, draft).await?;
    // Its envelope, as a referrer, before the view can be found by its tag.
    let envelope_bytes = serde_json::to_vec(envelope).map_err(ApiError::internal)?;
    let title = format!("{}.dsse.json", payload.tag);
    let binding = (&payload.tag, manifest);
    refer(state, caller, repo, &digest, record.bytes.len(), ENVELOPE_TYPE, envelope_bytes, &title, binding, None)
        .await?;
    attest(state, caller, repo, &digest, record.bytes.len(), binding, payload).await?;
    // Found by its tag from now on: the first view made is the one kept.
    let none = crate::audit::Draft::shared(&state.signer, caller.actor(), Vec::new());
    state.meta.put_oci_manifest(repo, &view_key(manifest), &record, None, None, none).await?;
    let kept = state.meta.oci_manifest(repo, &view_key(manifest)).await?.unwrap_or(record);
    Ok((OciDigest::of(Algorithm::Sha256, &kept.bytes).to_string(), kept))
}

/// Annotates an attestation referrer with its statement's predicate type.
const PREDICATE_ANNOTATION: &str = "in-toto.io/predicate-type";

/// The binding's attestations (`crate::attest`), each a referrer of
/// `subject` (the binding's OCI manifest), so that `oras discover` and
/// in-toto tooling find them.
pub async fn attest(
    state: &AppState,
    caller: &Caller,
    repo: &RepoName,
    subject: &OciDigest,
    subject_size: usize,
    binding: (&Tag, &Digest),
    payload: &ManifestPayload,
) -> OciResult<()> {
    for envelope in crate::attest::of_binding(state, binding.1, payload).await? {
        let predicate_type = amber_core::attestation::statement_of(&envelope).map(|s| s.predicate_type);
        let short = match predicate_type.as_deref() {
            Some(amber_core::attestation::PROVENANCE_V1) => "provenance",
            _ => "vsa",
        };
        let title = format!("{}.{short}.intoto.json", binding.0);
        let bytes = serde_json::to_vec(&envelope).map_err(ApiError::internal)?;
        let (kind, predicate) = (INTOTO_TYPE, predicate_type.as_deref());
        refer(state, caller, repo, subject, subject_size, kind, bytes, &title, binding, predicate).await?;
    }
    Ok(())
}

/// Stores `bytes` as a blob of `repo` and a manifest referring to `subject`
/// with that one layer, listed among the subject's referrers, and kept by
/// retention while `binding` (the tag and its Amber manifest) is live.
#[allow(clippy::too_many_arguments)]
async fn refer(
    state: &AppState,
    caller: &Caller,
    repo: &RepoName,
    subject: &OciDigest,
    subject_size: usize,
    artifact_type: &str,
    bytes: Vec<u8>,
    title: &str,
    binding: (&Tag, &Digest),
    predicate_type: Option<&str>,
) -> OciResult<()> {
    let manifest = binding.1;
    let (size, b3) = (bytes.len(), Digest::of(&bytes));
    let layer = put_bytes(state, caller, repo, bytes).await?;
    let mut annotations = json!({"dev.amber.manifest": manifest.to_string()});
    if let Some(predicate_type) = predicate_type {
        annotations[PREDICATE_ANNOTATION] = json!(predicate_type);
    }
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": empty_config(),
        "layers": [{
            "mediaType": artifact_type, "digest": layer.to_string(), "size": size,
            "annotations": {TITLE: title, BLAKE3_ANNOTATION: b3.to_string()},
        }],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject.to_string(), "size": subject_size},
        "annotations": annotations,
    }))
    .expect("a manifest serialises");
    let digest = OciDigest::of(Algorithm::Sha256, &body);
    let descriptor = serde_json::to_vec(&json!({
        "mediaType": OCI_MANIFEST, "digest": digest.to_string(), "size": body.len(),
        "artifactType": artifact_type, "annotations": annotations,
    }))
    .expect("a descriptor serialises");
    let record = OciManifest {
        media_type: OCI_MANIFEST.into(),
        bytes: body,
        subject: Some(subject.to_string()),
        blobs: vec![(b3, size as u64)],
        created_at: time::OffsetDateTime::now_utc().replace_nanosecond(0).expect("0 is a valid nanosecond"),
        view_of: None,
    };
    let event = Event::OciManifestPushed {
        repository: repo.clone(),
        digest: digest.to_string(),
        media_type: OCI_MANIFEST.into(),
    };
    let draft = crate::audit::Draft::shared(&state.signer, caller.actor(), vec![event]);
    state.meta.put_oci_manifest(repo, &digest.to_string(), &record, Some(&descriptor), Some(binding), draft).await?;
    Ok(())
}

/// Given the referrers of `subject` as listed: when it is the view of a
/// `/v1/` tag whose receipt is not yet among them and a checkpoint covers the
/// binding now, the receipt is added. True when it was (list them again).
pub async fn add_receipt(
    state: &AppState,
    caller: &Caller,
    repo: &RepoName,
    subject: &str,
    listed: &[Referrer],
) -> OciResult<bool> {
    let has_receipt = listed
        .iter()
        .any(|r| serde_json::from_slice::<Value>(&r.descriptor).is_ok_and(|d| d["artifactType"] == RECEIPT_TYPE));
    if has_receipt {
        return Ok(false);
    }
    let Some(view) = state.meta.oci_manifest(repo, subject).await? else { return Ok(false) };
    let Some(tag) = &view.view_of else { return Ok(false) };
    let Ok(receipt) = state.log.receipt(&state.meta, repo, tag).await else { return Ok(false) };
    let manifest: Value = serde_json::from_slice(&view.bytes).map_err(ApiError::internal)?;
    let amber = manifest["annotations"]["dev.amber.manifest"].as_str().and_then(|d| d.parse::<Digest>().ok());
    let Some(amber) = amber else { return Ok(false) };
    let subject = OciDigest::parse(subject)?;
    let title = format!("{tag}.receipt");
    let bytes = receipt.to_text().into_bytes();
    refer(state, caller, repo, &subject, view.bytes.len(), RECEIPT_TYPE, bytes, &title, (tag, &amber), None).await?;
    Ok(true)
}
