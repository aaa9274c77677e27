//! Publishing a manifest: the files checked (each linked in the repository
//! at its size, none quarantined), the payload built from the request and
//! the caller's token (with its verified CI claims), signed, and bound to the
//! tag once, in one transaction with its audit entries and log leaf. A tag
//! already bound to the same content is a safe retry; to other content, or
//! expired, it is refused. Every front door that binds a tag comes here.

use amber_core::audit::Event;
use amber_core::dsse::Envelope;
use amber_core::manifest::{self, ManifestPayload, ManifestRequest, PushedBy};
use amber_core::{Digest, RepoName, Tag};
use time::OffsetDateTime;

use crate::audit;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::meta::{Bound, LinkStore, TagRecord, TagStore};
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

/// Binds `tag` in `repo` to a new signed manifest of `request`, once.
pub async fn publish(
    state: &AppState,
    caller: &Caller,
    repo: &RepoName,
    tag: &Tag,
    request: &ManifestRequest,
) -> ApiResult<Published> {
    if let Some(record) = state.meta.tag(repo, tag).await? {
        return existing_binding(state, repo, tag, record, request).await;
    }
    let mut missing = Vec::new();
    for file in &request.files {
        // Quarantined bytes (found corrupt or gone by the scrub) are as good
        // as missing: listed, so the client uploads them again, which heals them.
        if state.quarantine.contains(&file.digest) {
            missing.push(serde_json::json!({
                "path": file.path, "digest": file.digest, "size": file.size, "stored_size": null, "quarantined": true,
            }));
            continue;
        }
        let stored = state.meta.blob_size(repo, &file.digest).await?;
        if stored != Some(file.size) {
            missing.push(serde_json::json!({
                "path": file.path, "digest": file.digest, "size": file.size, "stored_size": stored,
            }));
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
        files: request.files.clone(),
        annotations: request.annotations.clone(),
    };
    let bytes = payload.to_bytes();
    let digest = Digest::of(&bytes);
    let envelope = state.signer.sign(manifest::PAYLOAD_TYPE, &bytes);
    let events = vec![
        Event::ManifestPushed { repository: repo.clone(), digest },
        Event::TagBound { repository: repo.clone(), tag: tag.clone(), digest },
    ];
    let draft = audit::Draft::shared(&state.signer, caller.actor(), events);
    let files: Vec<(Digest, u64)> = request.files.iter().map(|f| (f.digest, f.size)).collect();
    match state.meta.bind_tag(repo, tag, &digest, &envelope, &files, created_at, draft).await? {
        Bound::Created => {
            tracing::info!(%repo, %tag, %digest, token = %token.id, "tag bound");
            Ok(Published::Created(Manifest { digest, envelope }))
        }
        Bound::Existing(record) => existing_binding(state, repo, tag, record, request).await,
        // Unlinked by retention since the check above.
        Bound::BlobsGone(gone) => Err(ApiError::ManifestBlobUnknown(
            request
                .files
                .iter()
                .filter(|f| gone.contains(&f.digest))
                .map(|f| {
                    serde_json::json!({
                        "path": f.path, "digest": f.digest, "size": f.size, "stored_size": null,
                    })
                })
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
    request: &ManifestRequest,
) -> ApiResult<Published> {
    expired(repo, tag, &record, true)?;
    let envelope = state
        .meta
        .manifest(repo, &record.digest)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("tag {repo}:{tag} names a missing manifest")))?;
    let payload: ManifestPayload =
        serde_json::from_slice(&envelope.payload_bytes().map_err(ApiError::internal)?).map_err(ApiError::internal)?;
    if payload.same_content(request) {
        Ok(Published::Existing(Manifest { digest: record.digest, envelope }))
    } else {
        Err(ApiError::TagExists { repo: repo.clone(), tag: tag.clone(), digest: record.digest })
    }
}
