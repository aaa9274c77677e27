//! Manifest and tag routes: bind a tag to a new signed manifest (once), read
//! a manifest by tag or digest, list tags.

use amber_core::audit::Event;
use amber_core::dsse::Envelope;
use amber_core::manifest::{self, ManifestPayload, ManifestRequest, PushedBy};
use amber_core::wire::TagList;
use amber_core::{Action, Digest, RepoName, Tag};
use axum::extract::{Query, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use time::OffsetDateTime;

use super::json::{ApiJson, JsonBody};
use super::page;
use super::paths::{DigestParam, Repo, TagParam};
use crate::audit;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::meta::{Bound, MetaStore, TagRecord};
use crate::state::AppState;

pub const MANIFEST_DIGEST_HEADER: HeaderName = HeaderName::from_static("amber-manifest-digest");
const MAX_FILES: usize = 100_000;
const MAX_ANNOTATIONS: usize = 256;
const MAX_ANNOTATION_LEN: usize = 4096;

fn envelope_response(status: StatusCode, digest: &Digest, envelope: Envelope) -> ApiResult<Response> {
    let mut response = (status, ApiJson(envelope)).into_response();
    let value = HeaderValue::try_from(digest.to_string()).map_err(ApiError::internal)?;
    response.headers_mut().insert(MANIFEST_DIGEST_HEADER, value);
    Ok(response)
}

fn parse_request(body: &[u8]) -> ApiResult<ManifestRequest> {
    let request: ManifestRequest =
        super::json::parse(body).map_err(|e| ApiError::ManifestInvalid(format!("manifest body: {e}")))?;
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

/// The answer when the tag is already bound: the same content is a safe retry.
async fn existing_binding(
    state: &AppState,
    repo: &RepoName,
    tag: &Tag,
    record: TagRecord,
    request: &ManifestRequest,
) -> ApiResult<Response> {
    let envelope = state
        .meta
        .manifest(repo, &record.digest)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("tag {repo}:{tag} names a missing manifest")))?;
    let payload: ManifestPayload =
        serde_json::from_slice(&envelope.payload_bytes().map_err(ApiError::internal)?).map_err(ApiError::internal)?;
    if payload.same_content(request) {
        envelope_response(StatusCode::OK, &record.digest, envelope)
    } else {
        Err(ApiError::TagExists { repo: repo.clone(), tag: tag.clone(), digest: record.digest })
    }
}

pub async fn put_tag(
    State(state): State<AppState>,
    caller: Caller,
    Repo(repo): Repo,
    TagParam(tag): TagParam,
    body: JsonBody,
) -> ApiResult<Response> {
    caller.require(Action::Push, &repo)?;
    let body = body.bytes(&state).await?;
    let request = parse_request(&body)?;
    if let Some(record) = state.meta.tag(&repo, &tag).await? {
        return existing_binding(&state, &repo, &tag, record, &request).await;
    }
    let mut missing = Vec::new();
    for file in &request.files {
        let stored = state.meta.blob_size(&repo, &file.digest).await?;
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
    match state.meta.bind_tag(&repo, &tag, &digest, &envelope, created_at, draft).await? {
        Bound::Created => {
            tracing::info!(%repo, %tag, %digest, token = %token.id, "tag bound");
            envelope_response(StatusCode::CREATED, &digest, envelope)
        }
        Bound::Existing(record) => existing_binding(&state, &repo, &tag, record, &request).await,
    }
}

pub async fn get_tag(
    State(state): State<AppState>,
    caller: Caller,
    Repo(repo): Repo,
    TagParam(tag): TagParam,
) -> ApiResult<Response> {
    caller.require(Action::Pull, &repo)?;
    let record = state.meta.tag(&repo, &tag).await?.ok_or(ApiError::TagUnknown(tag))?;
    let envelope = state.meta.manifest(&repo, &record.digest).await?.ok_or(ApiError::ManifestUnknown(record.digest))?;
    envelope_response(StatusCode::OK, &record.digest, envelope)
}

pub async fn get_manifest(
    State(state): State<AppState>,
    caller: Caller,
    Repo(repo): Repo,
    DigestParam(digest): DigestParam,
) -> ApiResult<Response> {
    caller.require(Action::Pull, &repo)?;
    let envelope = state.meta.manifest(&repo, &digest).await?.ok_or(ApiError::ManifestUnknown(digest))?;
    envelope_response(StatusCode::OK, &digest, envelope)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    /// Tags per page, 1 to 1000 (default 100).
    limit: Option<usize>,
    /// The `next` cursor of the previous page.
    after: Option<String>,
}

pub async fn list_tags(
    State(state): State<AppState>,
    caller: Caller,
    Repo(repo): Repo,
    query: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<ApiJson<TagList>> {
    caller.require(Action::Pull, &repo)?;
    let Query(page) = query.map_err(|e| ApiError::RequestInvalid(e.body_text()))?;
    let limit = page::limit(page.limit, 100, 1000)?;
    let mut tags = state.meta.list_tags(&repo, page.after.as_deref(), limit + 1).await?;
    let next = page::split(&mut tags, limit, |t| t.tag.to_string());
    Ok(ApiJson(TagList { tags, next }))
}
