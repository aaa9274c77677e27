//! Manifest and tag routes: bind a tag to a new signed manifest (once), read
//! a manifest by tag or digest, list tags.

use amber_core::audit::Event;
use amber_core::dsse::Envelope;
use amber_core::manifest::{ManifestPayload, PushedBy};
use amber_core::wire::{ReasonRequest, TagList, TagStatus};
use amber_core::{Action, Digest, RepoName, Tag};
use axum::extract::{Query, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;
use time::OffsetDateTime;

use super::json::{ApiJson, JsonBody};
use super::page;
use super::paths::{DigestParam, Repo, TagParam};
use crate::audit;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::lifecycle;
use crate::meta::{Hold, TagChange, TagRecord};
use crate::meta::{LogStore, RetentionStore, TagStore};
use crate::push::publish::{self, Published, expired};
use crate::state::AppState;

pub const MANIFEST_DIGEST_HEADER: HeaderName = HeaderName::from_static("amber-manifest-digest");

fn envelope_response(status: StatusCode, digest: &Digest, envelope: Envelope) -> ApiResult<Response> {
    let mut response = (status, ApiJson(envelope)).into_response();
    let value = HeaderValue::try_from(digest.to_string()).map_err(ApiError::internal)?;
    response.headers_mut().insert(MANIFEST_DIGEST_HEADER, value);
    Ok(response)
}

/// `Amber-Log-Index`: the log index of the binding's `tag_bound` entry, the
/// leaf `GET .../receipt` proves.
async fn with_log_index(state: &AppState, repo: &RepoName, tag: &Tag, mut response: Response) -> ApiResult<Response> {
    if let Some(index) = state.meta.tag_log_index(repo, tag).await? {
        response.headers_mut().insert("amber-log-index", axum::http::HeaderValue::from(index));
    }
    Ok(response)
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
    let request = publish::parse_request(&body)?;
    let (status, published) = match publish::publish(&state, &caller, &repo, &tag, &request).await? {
        Published::Created(published) => (StatusCode::CREATED, published),
        Published::Existing(published) => (StatusCode::OK, published),
    };
    with_log_index(&state, &repo, &tag, envelope_response(status, &published.digest, published.envelope)?).await
}

pub async fn get_tag(
    State(state): State<AppState>,
    caller: Caller,
    Repo(repo): Repo,
    TagParam(tag): TagParam,
) -> ApiResult<Response> {
    caller.require(Action::Pull, &repo)?;
    let record = state.meta.tag(&repo, &tag).await?.ok_or_else(|| ApiError::TagUnknown(tag.clone()))?;
    expired(&repo, &tag, &record, false)?;
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
    // The manifest names its tag (one manifest per binding): an expired
    // tag's manifest is gone as well.
    let payload: ManifestPayload =
        serde_json::from_slice(&envelope.payload_bytes().map_err(ApiError::internal)?).map_err(ApiError::internal)?;
    if let Some(record) = state.meta.tag(&repo, &payload.tag).await?
        && record.digest == digest
    {
        expired(&repo, &payload.tag, &record, false)?;
    }
    envelope_response(StatusCode::OK, &digest, envelope)
}

/// The operator's reason for a hold or an expiry: required, one line of text.
async fn reason(state: &AppState, body: JsonBody) -> ApiResult<String> {
    let request: ReasonRequest = body.json(state).await?;
    let reason = request.reason.trim();
    if reason.is_empty() || reason.len() > 1024 || reason.chars().any(char::is_control) {
        return Err(ApiError::RequestInvalid("reason must be 1 to 1024 bytes of text on one line".into()));
    }
    Ok(reason.to_owned())
}

fn status(repo: &RepoName, tag: &Tag, record: &TagRecord) -> ApiJson<TagStatus> {
    ApiJson(TagStatus {
        repository: repo.clone(),
        tag: tag.clone(),
        digest: record.digest,
        created_at: record.created_at,
        state: record.state(),
        held: record.hold.is_some(),
        hold_reason: record.hold.as_ref().map(|h| h.reason.clone()),
    })
}

pub async fn hold_tag(
    State(state): State<AppState>,
    caller: Caller,
    Repo(repo): Repo,
    TagParam(tag): TagParam,
    body: JsonBody,
) -> ApiResult<ApiJson<TagStatus>> {
    caller.require_admin()?;
    let reason = reason(&state, body).await?;
    let at = OffsetDateTime::now_utc().replace_nanosecond(0).expect("0 is a valid nanosecond");
    let hold = Hold { reason: reason.clone(), at, by: caller.actor() };
    let event = Event::TagHeld { repository: repo.clone(), tag: tag.clone(), reason };
    let draft = audit::Draft::shared(&state.signer, caller.actor(), vec![event]);
    match state.meta.hold_tag(&repo, &tag, &hold, draft).await? {
        TagChange::Changed(record) | TagChange::Unchanged(record) => Ok(status(&repo, &tag, &record)),
        TagChange::Expired(record) => {
            expired(&repo, &tag, &record, true)?;
            Err(ApiError::internal(anyhow::anyhow!("an expired tag without its expiry")))
        }
        TagChange::Unknown => Err(ApiError::TagUnknown(tag)),
        other => Err(ApiError::internal(anyhow::anyhow!("hold answered {other:?}"))),
    }
}

pub async fn release_tag(
    State(state): State<AppState>,
    caller: Caller,
    Repo(repo): Repo,
    TagParam(tag): TagParam,
) -> ApiResult<ApiJson<TagStatus>> {
    caller.require_admin()?;
    let event = Event::TagReleased { repository: repo.clone(), tag: tag.clone() };
    let draft = audit::Draft::shared(&state.signer, caller.actor(), vec![event]);
    match state.meta.release_tag(&repo, &tag, draft).await? {
        TagChange::Changed(record) | TagChange::Unchanged(record) => Ok(status(&repo, &tag, &record)),
        TagChange::Unknown => Err(ApiError::TagUnknown(tag)),
        other => Err(ApiError::internal(anyhow::anyhow!("release answered {other:?}"))),
    }
}

/// Expires one live tag now (a yanked release); answers its tombstone. An
/// expired tag answers the tombstone it already has.
pub async fn expire_tag(
    State(state): State<AppState>,
    caller: Caller,
    Repo(repo): Repo,
    TagParam(tag): TagParam,
    body: JsonBody,
) -> ApiResult<ApiJson<Envelope>> {
    caller.require_admin()?;
    let note = reason(&state, body).await?;
    let record = state.meta.tag(&repo, &tag).await?.ok_or_else(|| ApiError::TagUnknown(tag.clone()))?;
    let change = lifecycle::expire_tag(&state, &repo, &tag, &record, None, caller.actor(), Some(note)).await?;
    match change {
        TagChange::Changed(record) | TagChange::Unchanged(record) => record
            .expiry
            .map(|e| ApiJson(e.tombstone))
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("an expired tag without its expiry"))),
        TagChange::Held(_) => Err(ApiError::TagHeld(tag)),
        TagChange::Unknown => Err(ApiError::TagUnknown(tag)),
        other => Err(ApiError::internal(anyhow::anyhow!("expiry answered {other:?}"))),
    }
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
    // Who pushed each: read from the manifests, a few at a time.
    let digests: Vec<Digest> = tags.iter().map(|t| t.digest).collect();
    let pushers: Vec<_> = futures_util::stream::iter(digests)
        .map(|digest| {
            let (state, repo) = (state.clone(), repo.clone());
            async move { pushed_by(&state, &repo, digest).await }
        })
        .buffered(16)
        .collect()
        .await;
    for (tag, pusher) in tags.iter_mut().zip(pushers) {
        tag.pushed_by = pusher?;
    }
    Ok(ApiJson(TagList { tags, next }))
}

/// The `pushed_by` of a stored manifest's payload.
async fn pushed_by(state: &AppState, repo: &RepoName, digest: Digest) -> Result<Option<PushedBy>, ApiError> {
    let Some(envelope) = state.meta.manifest(repo, &digest).await? else { return Ok(None) };
    let payload = envelope.payload_bytes().map_err(ApiError::internal)?;
    Ok(serde_json::from_slice::<ManifestPayload>(&payload).ok().map(|p| p.pushed_by))
}
