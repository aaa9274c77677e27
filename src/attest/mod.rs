//! Attestations: what the store verified about a binding, stated in the
//! formats stock verifiers read. For every tag binding an in-toto Statement
//! v1 with a SLSA Verification Summary (VSA), and, when the push came
//! through trusted publishing from GitHub Actions or GitLab CI, one with
//! SLSA Provenance v1 built from the verified ID token claims kept with the
//! token (never from the client). Each signed with the manifest key in a
//! DSSE envelope whose `keyid` is the one securesystemslib computes.
//!
//! Made when the tag binds and stored in the binding's transaction
//! (`push::publish`); for a binding made before attestations were, made
//! once on its first request and stored ([`of_binding`]).

pub mod provenance;

use amber_core::Digest;
use amber_core::attestation::{self, Statement, Subject, SubjectDigest};
use amber_core::dsse::Envelope;
use amber_core::manifest::ManifestPayload;
use futures_util::StreamExt;
use serde_json::{Value, json};
use sha2::Digest as _;
use time::format_description::well_known::Rfc3339;

use crate::blobs::BlobStore;
use crate::error::{ApiError, ApiResult};
use crate::meta::{AttestationStore, OciStore};
use crate::state::AppState;

/// The sha256 of a stored blob (`sha256:<hex>`): recorded (hashed when it
/// was uploaded), or hashed once now from its verified bytes and kept.
pub async fn sha256_of(state: &AppState, digest: &Digest, size: u64) -> ApiResult<String> {
    if let Some(known) = state.meta.sha256_of(digest).await? {
        return Ok(known);
    }
    let mut hasher = sha2::Sha256::new();
    let mut bytes = state.blobs.read(*digest, size, None).await?;
    while let Some(chunk) = bytes.next().await {
        hasher.update(&chunk?);
    }
    let sha256 = format!("sha256:{:x}", hasher.finalize());
    state.meta.put_alias(&sha256, digest).await?;
    Ok(sha256)
}

/// Who the statements name as their verifier: the store's public URL, else
/// its log origin (as a URL).
pub fn verifier_id(state: &AppState) -> String {
    match &state.config.public_url {
        Some(url) => url.as_str().trim_end_matches('/').to_owned(),
        None => format!("https://{}", state.log.origin()),
    }
}

/// The authority the store's references are written under: the host (and
/// port, and path) of its public URL, else its log origin's host.
fn authority(state: &AppState) -> String {
    match &state.config.public_url {
        Some(url) => {
            let host = url.host_str().unwrap_or_default();
            let path = url.path().trim_end_matches('/');
            match url.port() {
                Some(port) => format!("{host}:{port}{path}"),
                None => format!("{host}{path}"),
            }
        }
        None => state.log.origin().split('/').next().unwrap_or_default().to_owned(),
    }
}

/// The subjects of a binding: each file (sha256, BLAKE3), then the manifest.
async fn subjects(state: &AppState, manifest: &Digest, payload: &ManifestPayload) -> ApiResult<Vec<Subject>> {
    let mut subjects = Vec::with_capacity(payload.files.len() + 1);
    for file in &payload.files {
        let sha256 = sha256_of(state, &file.digest, file.size).await?;
        subjects.push(Subject {
            name: file.path.to_string(),
            digest: SubjectDigest { sha256: hex_of(&sha256), blake3: file.digest.hex() },
        });
    }
    subjects.push(Subject {
        name: format!("{}:{}", payload.repository, payload.tag),
        digest: SubjectDigest {
            sha256: payload.oci.as_ref().and_then(|oci| hex_of(&oci.digest)),
            blake3: manifest.hex(),
        },
    });
    Ok(subjects)
}

fn hex_of(sha256: &str) -> Option<String> {
    sha256.strip_prefix("sha256:").map(str::to_owned)
}

/// The reference the VSA's `resourceUri` names.
fn resource_uri(state: &AppState, manifest: &Digest, payload: &ManifestPayload) -> String {
    let authority = authority(state);
    match &payload.oci {
        Some(oci) => format!("oci://{authority}/{}@{}", payload.repository, oci.digest),
        None => format!("amber://{authority}/{}:{}@{manifest}", payload.repository, payload.tag),
    }
}

/// What the server checks before it binds a tag: the VSA's `policy`, served
/// at `GET /v1/attestations/policy` and named there by its sha256.
pub const POLICY: &str = r#"{
  "policy": "amber push v1",
  "checks": [
    "every byte of every file hashed with BLAKE3 as it arrived and stored under that digest, its sha256 computed in the same pass or from the stored bytes",
    "every file linked in the repository at its size, none quarantined",
    "the pushing token authenticated, unexpired, unrevoked, holding push on the repository",
    "a token minted by trusted publishing: the CI system's ID token verified (issuer, signature, audience, expiry, single use) and matched to a publisher; its claims are the provenance, listed as an input attestation",
    "the tag bound once and never moved: the binding is in the audit chain and the transparency log"
  ]
}
"#;

/// The route the policy is served at.
pub const POLICY_PATH: &str = "/v1/attestations/policy";

/// The VSA predicate: what the server checked before it bound the tag, and
/// the provenance it made from the verified claims (an input).
fn summary(
    state: &AppState,
    manifest: &Digest,
    payload: &ManifestPayload,
    provenance: Option<&Envelope>,
) -> ApiResult<Value> {
    let verifier = verifier_id(state);
    let policy_sha256 = format!("{:x}", sha2::Sha256::digest(POLICY.as_bytes()));
    let mut predicate = json!({
        "verifier": {"id": verifier},
        "timeVerified": payload.created_at.format(&Rfc3339).map_err(ApiError::internal)?,
        "resourceUri": resource_uri(state, manifest, payload),
        "policy": {"uri": format!("{verifier}{POLICY_PATH}"), "digest": {"sha256": policy_sha256}},
        "verificationResult": "PASSED",
        // No `verifiedLevels`: the SLSA spec makes it a list, in-toto's
        // model (in-toto-attestation 0.9.3) one string, so either form fails
        // one of them. The level the facts support (Build L1 with the
        // provenance, L0 without) is stated in the README.
        "slsaVersion": "1.0",
    });
    if let Some(provenance) = provenance {
        let bytes = serde_json::to_vec(provenance).map_err(ApiError::internal)?;
        predicate["inputAttestations"] = json!([{
            "uri": format!("{}/v1/repos/{}/tags/{}/attestations", verifier, payload.repository, payload.tag),
            "digest": {"sha256": format!("{:x}", sha2::Sha256::digest(&bytes))},
        }]);
    }
    Ok(predicate)
}

fn sign(state: &AppState, subjects: &[Subject], predicate_type: &str, predicate: Value) -> Envelope {
    let statement = Statement {
        statement_type: attestation::STATEMENT_V1.into(),
        subject: subjects.to_vec(),
        predicate_type: predicate_type.into(),
        predicate,
    };
    state.signer.sign_statement(&statement.to_bytes())
}

/// The attestations of a binding: the provenance (when there is one), then
/// the VSA.
pub async fn make(state: &AppState, manifest: &Digest, payload: &ManifestPayload) -> ApiResult<Vec<Envelope>> {
    let subjects = subjects(state, manifest, payload).await?;
    let provenance = payload
        .pushed_by
        .ci
        .as_ref()
        .and_then(provenance::of)
        .map(|predicate| sign(state, &subjects, attestation::PROVENANCE_V1, predicate));
    let vsa = summary(state, manifest, payload, provenance.as_ref())?;
    let vsa = sign(state, &subjects, attestation::VSA_V1, vsa);
    Ok(provenance.into_iter().chain([vsa]).collect())
}

/// The attestations of the binding of `manifest`: stored, or made now (a
/// binding from before attestations) and stored.
pub async fn of_binding(state: &AppState, manifest: &Digest, payload: &ManifestPayload) -> ApiResult<Vec<Envelope>> {
    if let Some(stored) = state.meta.attestations(&payload.repository, manifest).await? {
        return Ok(stored);
    }
    let made = make(state, manifest, payload).await?;
    Ok(state.meta.put_attestations(&payload.repository, manifest, &made).await?)
}
