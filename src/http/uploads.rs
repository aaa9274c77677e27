//! tus 1.0.0 routes (`crate::uploads` does the work): `OPTIONS`, `POST`
//! (creation, creation-with-upload, concatenation), `HEAD`, `PATCH` and
//! `DELETE`. Every answer, errors included, carries `Tus-Resumable`.

use amber_core::Action;
use axum::body::Body;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::blobs::body_stream;
use super::paths::Repo;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::meta::UploadRecordStore;
use crate::meta::{UploadId, UploadKind, UploadRecord};
use crate::push::resumable::{self, Creation, Outcome};
use crate::state::AppState;
use crate::uploads::tus;

const TUS_RESUMABLE: HeaderName = HeaderName::from_static("tus-resumable");
const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
const UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
const UPLOAD_METADATA: HeaderName = HeaderName::from_static("upload-metadata");
const UPLOAD_CONCAT: HeaderName = HeaderName::from_static("upload-concat");
const UPLOAD_EXPIRES: HeaderName = HeaderName::from_static("upload-expires");
const BLOB_DIGEST: HeaderName = HeaderName::from_static("amber-blob-digest");

/// Puts `Tus-Resumable` on every answer of these routes.
pub async fn tus_resumable(mut response: Response) -> Response {
    response.headers_mut().insert(TUS_RESUMABLE, HeaderValue::from_static(tus::VERSION));
    response
}

/// `{id}` of an upload; an id that cannot exist is simply unknown.
pub struct UploadIdParam(pub UploadId);

impl<S: Send + Sync> FromRequestParts<S> for UploadIdParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(params) =
            axum::extract::Path::<std::collections::HashMap<String, String>>::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::UploadUnknown)?;
        params.get("id").and_then(|id| id.parse().ok()).map(Self).ok_or(ApiError::UploadUnknown)
    }
}

/// A header's value; given twice it is refused (two readers could take
/// different ones), as is one that is not ASCII.
fn text<'h>(headers: &'h HeaderMap, name: &HeaderName) -> ApiResult<Option<&'h str>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(ApiError::RequestInvalid(format!("{name} is given more than once")));
    }
    first.map(|v| v.to_str().map_err(|_| ApiError::RequestInvalid(format!("{name} must be ASCII")))).transpose()
}

/// Whether the request carries body bytes (a `Content-Length` above zero,
/// or a chunked body).
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().parse::<u64>().map_or(true, |n| n > 0))
}

/// The authorities this server answers at, for the absolute URLs of a
/// final's parts: the request's `Host` and the public URL's.
fn own_hosts(state: &AppState, headers: &HeaderMap, uri: &axum::http::Uri) -> Vec<String> {
    // HTTP/1.1 names it in `Host`, HTTP/2 in the URI (`:authority`).
    let mut hosts: Vec<String> = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .into_iter()
        .chain(uri.authority().map(|a| a.as_str()))
        .map(str::to_owned)
        .collect();
    if let Some(url) = &state.config.public_url
        && let Some(host) = url.host_str()
    {
        hosts.push(match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        });
    }
    hosts
}

fn check_version(headers: &HeaderMap) -> ApiResult<()> {
    Ok(tus::check_resumable(text(headers, &TUS_RESUMABLE)?)?)
}

fn base(repo: &amber_core::RepoName) -> String {
    format!("/v1/repos/{repo}/uploads")
}

/// `Upload-Expires` as an HTTP date.
fn http_date(at: time::OffsetDateTime) -> String {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    at.to_offset(time::UtcOffset::UTC).format(&format).unwrap_or_default()
}

/// The headers that describe an upload's state.
fn describe(record: &UploadRecord, headers: &mut HeaderMap) {
    headers.insert(UPLOAD_OFFSET, HeaderValue::from(record.offset));
    if let Some(digest) = record.done {
        headers.insert(BLOB_DIGEST, HeaderValue::try_from(digest.to_string()).expect("digests are header-safe"));
    } else if let Ok(value) = HeaderValue::try_from(http_date(record.expires)) {
        headers.insert(UPLOAD_EXPIRES, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// `OPTIONS`: what the server speaks; no token needed.
pub async fn options(State(state): State<AppState>, Repo(_): Repo) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert("tus-version", HeaderValue::from_static(tus::VERSION));
    headers.insert("tus-extension", HeaderValue::from_static(tus::EXTENSIONS));
    headers.insert("tus-max-size", HeaderValue::from(state.config.max_blob_size));
    (StatusCode::NO_CONTENT, headers).into_response()
}

/// `OPTIONS` of one upload's URL (the id is only checked for its form).
pub async fn options_of_one(state: State<AppState>, repo: Repo, _id: UploadIdParam) -> Response {
    options(state, repo).await
}

pub async fn create_upload(
    State(state): State<AppState>,
    caller: Caller,
    Repo(repo): Repo,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    // The grant first (default deny: nothing about the route without it).
    caller.require(Action::Push, &repo)?;
    check_version(&headers)?;
    let length = text(&headers, &UPLOAD_LENGTH)?.map(|v| tus::parse_number("Upload-Length", v)).transpose()?;
    let metadata = tus::Metadata::parse(text(&headers, &UPLOAD_METADATA)?.unwrap_or(""))?;
    let concat = text(&headers, &UPLOAD_CONCAT)?.map(tus::Concat::parse).transpose()?;
    let with_data = patch_body(&headers)?;
    if length == Some(0) && has_body(&headers) {
        return Err(ApiError::RequestInvalid("Upload-Length is 0, but the request has a body".into()));
    }
    let creation = Creation { length, metadata, concat, base: base(&repo), hosts: own_hosts(&state, &headers, &uri) };
    let Outcome { mut record, mut linked } = resumable::create(&state, &caller, &repo, creation).await?;
    let location = format!("{}/{}", base(&repo), record.id);
    // creation-with-upload: the body is the upload's first bytes.
    if with_data && record.done.is_none() && !matches!(record.kind, UploadKind::Final { .. }) {
        let body = body_stream(body, state.config.limits.body_idle_timeout);
        match resumable::patch(&state, &caller, record.clone(), 0, body).await {
            Ok(outcome) => (record, linked) = (outcome.record, outcome.linked),
            // The upload exists: say where, with what it holds, and why.
            Err(err) => {
                let mut response = err.into_response();
                let stored = state.meta.upload(&caller.token.info.id, &record.id).await.ok().flatten();
                describe(stored.as_ref().unwrap_or(&record), response.headers_mut());
                response
                    .headers_mut()
                    .insert(header::LOCATION, HeaderValue::try_from(location).map_err(ApiError::internal)?);
                return Ok(response);
            }
        }
    }
    let mut response = StatusCode::CREATED.into_response();
    describe(&record, response.headers_mut());
    response.headers_mut().insert(header::LOCATION, HeaderValue::try_from(location).map_err(ApiError::internal)?);
    if linked.is_some() {
        state.metrics.uploads_completed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(response)
}

/// Whether a body comes as upload bytes (`PATCH`'s content type).
fn patch_body(headers: &HeaderMap) -> ApiResult<bool> {
    match text(headers, &header::CONTENT_TYPE)? {
        Some(tus::PATCH_CONTENT_TYPE) => Ok(true),
        _ => Ok(false),
    }
}

/// The caller's upload in this repository, or `404` (the handler has
/// checked the grant).
async fn find(
    state: &AppState,
    caller: &Caller,
    repo: &amber_core::RepoName,
    id: &UploadId,
) -> ApiResult<UploadRecord> {
    let record = state.meta.upload(&caller.token.info.id, id).await?.ok_or(ApiError::UploadUnknown)?;
    // An OCI upload session is `/v2/`'s own.
    if record.repository != *repo || matches!(record.kind, UploadKind::Open) {
        return Err(ApiError::UploadUnknown);
    }
    Ok(record)
}

pub async fn head_upload(
    State(state): State<AppState>,
    caller: Caller,
    Repo(repo): Repo,
    UploadIdParam(id): UploadIdParam,
    headers: HeaderMap,
) -> ApiResult<Response> {
    caller.require(Action::Push, &repo)?;
    check_version(&headers)?;
    find(&state, &caller, &repo, &id).await?;
    state.uploads.settled(&id).await;
    let record = find(&state, &caller, &repo, &id).await?;
    let mut response = StatusCode::OK.into_response();
    let out = response.headers_mut();
    describe(&record, out);
    out.insert(UPLOAD_LENGTH, HeaderValue::from(record.length));
    if !record.metadata.is_empty()
        && let Ok(value) = HeaderValue::try_from(record.metadata.as_str())
    {
        out.insert(UPLOAD_METADATA, value);
    }
    let concat = match &record.kind {
        UploadKind::Single | UploadKind::Open => None,
        UploadKind::Partial { .. } => Some("partial".to_owned()),
        UploadKind::Final { parts } => {
            let urls: Vec<String> = parts.iter().map(|id| format!("{}/{id}", base(&repo))).collect();
            Some(format!("final;{}", urls.join(" ")))
        }
    };
    if let Some(value) = concat.and_then(|c| HeaderValue::try_from(c).ok()) {
        out.insert(UPLOAD_CONCAT, value);
    }
    Ok(response)
}

pub async fn patch_upload(
    State(state): State<AppState>,
    caller: Caller,
    Repo(repo): Repo,
    UploadIdParam(id): UploadIdParam,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    caller.require(Action::Push, &repo)?;
    check_version(&headers)?;
    if !patch_body(&headers)? {
        return Err(ApiError::MediaType("a PATCH body is sent as Content-Type: application/offset+octet-stream"));
    }
    let offset = tus::parse_number(
        "Upload-Offset",
        text(&headers, &UPLOAD_OFFSET)?.ok_or_else(|| ApiError::RequestInvalid("Upload-Offset is required".into()))?,
    )?;
    let record = find(&state, &caller, &repo, &id).await?;
    // The offset first: a client that resumes from the wrong place learns
    // the right one, whatever its body (checked again under the upload's claim).
    if offset != record.offset {
        return Err(ApiError::UploadOffset { current: record.offset, given: offset });
    }
    if let Some(announced) = text(&headers, &header::CONTENT_LENGTH)?.and_then(|v| v.parse::<u64>().ok())
        && offset.checked_add(announced).is_none_or(|end| end > record.length)
    {
        return Err(ApiError::RequestInvalid(format!(
            "the body runs past the upload's length of {} bytes",
            record.length
        )));
    }
    let body = body_stream(body, state.config.limits.body_idle_timeout);
    let Outcome { record, linked } = resumable::patch(&state, &caller, record, offset, body).await?;
    if linked.is_some() {
        state.metrics.uploads_completed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    describe(&record, response.headers_mut());
    Ok(response)
}

pub async fn delete_upload(
    State(state): State<AppState>,
    caller: Caller,
    Repo(repo): Repo,
    UploadIdParam(id): UploadIdParam,
    headers: HeaderMap,
) -> ApiResult<Response> {
    caller.require(Action::Push, &repo)?;
    check_version(&headers)?;
    let record = find(&state, &caller, &repo, &id).await?;
    resumable::terminate(&state, &record).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
