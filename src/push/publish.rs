//! Publishing a manifest: the files checked (each linked in the repository
//! at its size, none quarantined), the payload built from the request and
//! the caller's token (with its verified CI claims), signed, and bound to the
//! tag once, in one transaction with its audit entries, log leaf and
//! attestations (`crate::attest`). A tag
//! already bound to the same content is a safe retry; to other content, or
//! expired, it is refused. Every front door that binds a tag comes here.

use amber_core::audit::Event;
use amber_core::dsse::Envelope;
use std::collections::BTreeMap;

use amber_core::manifest::{self, FileEntry, ManifestPayload, ManifestRequest, OciRef, PushedBy};
use amber_core::{Digest, RepoName, Tag};
use time::OffsetDateTime;

use crate::audit;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::meta::{Bound, LinkStore, Signed, TagRecord, TagStore};
use crate::state::AppState;

const MAX_FILES: usize = 100_000;
const MAX_ANNOTATIONS: usize = 256;
const MAX_ANNOTATION_LEN: usize = 4096;

/// A bound manifest: its digest and signed envelope.
pub struct Manifest {
    pub digest: Digest,
    pub envelope: Envelope,
}

/// What publishing did.
pub enum Published {
    /// Bound now.
    Created(Manifest),
    /// The tag was already bound to this very content (a retry).
    Existing(Manifest),
}

/// `410` (a read) or `409` (a bind) for an expired tag, with its tombstone.
pub fn expired(repo: &RepoName, tag: &Tag, record: &TagRecord, on_bind: bool) -> ApiResult<()> {
    match &record.expiry {
        Some(expiry) => Err(ApiError::TagExpired {
            repo: repo.clone(),
            tag: tag.clone(),
            tombstone: Box::new(expiry.tombstone.clone()),
            on_bind,
            what: if on_bind { "its name is never bound again" } else { "see the tombstone" },
        }),
        None => Ok(()),
    }
}

/// A manifest request body, parsed strictly and bounded.
pub fn parse_request(body: &[u8]) -> ApiResult<ManifestRequest> {
    let request: ManifestRequest =
        crate::json::parse(body).map_err(|e| ApiError::ManifestInvalid(format!("manifest body: {e}")))?;
    if request.files.len() > MAX_FILES {
        return Err(ApiError::ManifestInvalid(format!("at most {MAX_FILES} files per manifest")));
    }
    if request.annotations.len() > MAX_ANNOTATIONS
        || request
            .annotations
            .iter()
            .any(|(k, v)| k.is_empty() || k.len() > MAX_ANNOTATION_LEN || v.len() > MAX_ANNOTATION_LEN)
    {
        return Err(ApiError::ManifestInvalid(format!(
            "at most {MAX_ANNOTATIONS} annotations, keys non-empty, keys and values at most {MAX_ANNOTATION_LEN} bytes"
        )));
    }
    request.normalise().map_err(|e| ApiError::ManifestInvalid(e.to_string()))
}

/// What a binding publishes: the files and annotations of its manifest,
/// the OCI manifest it is (pushed through `/v2/`), and every blob it keeps
/// linked (its files; for an OCI manifest also its config and what the
/// manifests an index lists reference).
pub struct Binding {
    pub files: Vec<FileEntry>,
    pub annotations: BTreeMap<String, String>,
    pub oci: Option<OciRef>,
    pub keep: Vec<(Digest, u64)>,
}

impl Binding {
    /// A `/v1/` manifest request.
    pub fn of_request(request: &ManifestRequest) -> Self {
        Self {
            files: request.files.clone(),
            annotations: request.annotations.clone(),
            oci: None,
            keep: request.files.iter().map(|f| (f.digest, f.size)).collect(),
        }
    }

    fn same_content(&self, payload: &ManifestPayload) -> bool {
        payload.files == self.files && payload.annotations == self.annotations && payload.oci == self.oci
    }

    /// The entries a missing blob gets in `manifest_blob_unknown`: each file
    /// of its digest, or the blob alone.
    fn missing(&self, digest: &Digest, size: u64, stored: Option<u64>) -> Vec<serde_json::Value> {
        let files: Vec<serde_json::Value> = self
            .files
            .iter()
            .filter(|f| f.digest == *digest)
            .map(|f| serde_json::json!({ "path": f.path, "digest": f.digest, "size": f.size, "stored_size": stored }))
            .collect();
        if files.is_empty() {
            vec![serde_json::json!({ "digest": digest, "size": size, "stored_size": stored })]
        } else {
            files
        }
    }
}

/// Binds `tag` in `repo` to a new signed manifest of `request`, once.
pub async fn publish(
    state: &AppState,
    caller: &Caller,
    repo: &RepoName,
    tag: &Tag,
    request: &ManifestRequest,
) -> ApiResult<Published> {
    bind(state, caller, repo, tag, &Binding::of_request(request)).await
}

/// Binds `tag` in `repo` to a new signed manifest of `binding`, once.
pub async fn bind(
    state: &AppState,
    caller: &Caller,
    repo: &RepoName,
    tag: &Tag,
    binding: &Binding,
) -> ApiResult<Published> {
    if let Some(record) = state.meta.tag(repo, tag).await? {
        return existing_binding(state, repo, tag, record, binding).await;
    }
    let mut missing = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for &(digest, size) in &binding.keep {
        if !seen.insert((digest, size)) {
            continue;
        }
        // Quarantined bytes (found corrupt or gone by the scrub) are as good
        // as missing: listed, so the client uploads them again, which heals them.
        if state.quarantine.contains(&digest) {
            for mut entry in binding.missing(&digest, size, None) {
                entry["quarantined"] = serde_json::Value::Bool(true);
                missing.push(entry);
            }
            continue;
        }
        let stored = state.meta.blob_size(repo, &digest).await?;
        if stored != Some(size) {
            missing.extend(binding.missing(&digest, size, stored));
        }
    }
    if !missing.is_empty() {
        return Err(ApiError::ManifestBlobUnknown(missing));
    }
    let created_at = OffsetDateTime::now_utc().replace_nanosecond(0).expect("0 is a valid nanosecond");
    let token = &caller.token.info;
    let payload = ManifestPayload {
        schema: manifest::SCHEMA.into(),
        repository: repo.clone(),
        tag: tag.clone(),
        created_at,
        pushed_by: PushedBy {
            token_id: token.id.clone(),
            token_name: token.name.clone(),
            pipeline: token.pipeline.clone(),
            ci: token.ci.clone(),
        },
        files: binding.files.clone(),
        annotations: binding.annotations.clone(),
        oci: binding.oci.clone(),
    };
    let bytes = payload.to_bytes();
    let digest = Digest::of(&bytes);
    let envelope = state.signer.sign(manifest::PAYLOAD_TYPE, &bytes);
    // Signed before the commit and stored with it: no binding without them.
    let attestations = crate::attest::make(state, &digest, &payload).await?;
    let signed = Signed { envelope, attestations };
    let events = vec![
        Event::ManifestPushed { repository: repo.clone(), digest },
        Event::TagBound { repository: repo.clone(), tag: tag.clone(), digest },
    ];
    let draft = audit::Draft::shared(&state.signer, caller.actor(), events);
    let mut keep = binding.keep.clone();
    keep.sort();
    keep.dedup();
    match state.meta.bind_tag(repo, tag, &digest, &signed, &keep, created_at, draft).await? {
        Bound::Created => {
            tracing::info!(%repo, %tag, %digest, token = %token.id, "tag bound");
            Ok(Published::Created(Manifest { digest, envelope: signed.envelope }))
        }
        Bound::Existing(record) => existing_binding(state, repo, tag, record, binding).await,
        // Unlinked by retention since the check above.
        Bound::BlobsGone(gone) => Err(ApiError::ManifestBlobUnknown(
            keep.iter()
                .filter(|(d, _)| gone.contains(d))
                .flat_map(|(d, size)| binding.missing(d, *size, None))
                .collect(),
        )),
    }
}

/// The answer when the tag is already bound: the same content is a safe
/// retry, unless the tag has expired.
async fn existing_binding(
    state: &AppState,
    repo: &RepoName,
    tag: &Tag,
    record: TagRecord,
    binding: &Binding,
) -> ApiResult<Published> {
    expired(repo, tag, &record, true)?;
    let envelope = state
        .meta
        .manifest(repo, &record.digest)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("tag {repo}:{tag} names a missing manifest")))?;
    let payload: ManifestPayload =
        serde_json::from_slice(&envelope.payload_bytes().map_err(ApiError::internal)?).map_err(ApiError::internal)?;
    if binding.same_content(&payload) {
        Ok(Published::Existing(Manifest { digest: record.digest, envelope }))
    } else {
        Err(ApiError::TagExists { repo: repo.clone(), tag: tag.clone(), digest: record.digest })
    }
}
