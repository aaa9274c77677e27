//! Blob routes: upload with a known or computed digest, read (whole or by
//! range, verified as it streams), and ask which digests are missing.

use std::ops::Range;

use amber_core::Action;
use amber_core::wire::{BlobInfo, MissingRequest, MissingResponse};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{StreamExt, TryStreamExt};

use super::json::{ApiJson, JsonBody};
use super::paths::{DigestParam, Repo};
use crate::auth::Caller;
use crate::blobs::{BlobError, BlobStore, BodyStream, Stored, Upload};
use crate::error::{ApiError, ApiResult, BodyIdle};
use crate::meta::{LinkStore, OciStore};
use crate::push::{self, hashes};
use crate::state::AppState;

/// Most digests one `blobs/missing` call may ask about.
const MAX_MISSING_QUERY: usize = 10_000;

/// The body as the blob store reads it; a body that stalled past the body
/// idle timeout becomes an error of kind `TimedOut` (answered `408`).
pub(crate) fn body_stream(body: Body, idle: std::time::Duration) -> BodyStream {
    Box::pin(body.into_data_stream().map_err(move |err| {
        if super::body_timed_out(&err) {
            std::io::Error::new(std::io::ErrorKind::TimedOut, BodyIdle(idle.as_secs()))
        } else {
            std::io::Error::other(err)
        }
    }))
}

/// The announced body length; an oversize body is refused before any of it
/// is read.
pub(crate) fn content_length(headers: &HeaderMap, limit: u64) -> ApiResult<Option<u64>> {
    let Some(value) = headers.get(header::CONTENT_LENGTH) else { return Ok(None) };
    let length = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| ApiError::RequestInvalid("Content-Length must be a number of bytes".into()))?;
    if length > limit { Err(ApiError::BlobTooLarge { limit }) } else { Ok(Some(length)) }
}

async fn upload(
    state: &AppState,
    caller: &Caller,
    repo: &amber_core::RepoName,
    expected: Option<amber_core::Digest>,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let limit = state.config.max_blob_size;
    let announced = content_length(headers, limit)?;
    // Held until the blob is linked: the slot bounds uploads in flight.
    let _slot = push::admit(state, caller)?;
    let pushing = push::Pushing::new(state);
    let upload =
        Upload { expected, limit, announced, memory: state.admission.memory.clone(), gate: Some(pushing.gate()) };
    // sha256 in the same pass as BLAKE3, for the attestations' subjects.
    let (body, tap) = hashes::tap(body_stream(body, state.config.limits.body_idle_timeout), false, announced);
    let written = state.blobs.put(upload, body).await;
    let sums = hashes::finish(tap).await;
    let (written, linked) = pushing.link(state, caller, repo, written).await?;
    // Derived data: if it is not recorded, an attestation hashes the bytes again.
    if let Err(err) = state.meta.note_sha256(&format!("sha256:{}", sums.sha256), &written.digest).await {
        tracing::warn!(error = %err, digest = %written.digest, "the upload's sha256 was not recorded");
    }
    let status = match linked {
        Stored::Created => StatusCode::CREATED,
        Stored::AlreadyPresent => StatusCode::OK,
    };
    let location = format!("/v1/repos/{repo}/blobs/{}", written.digest);
    let mut response = (status, ApiJson(BlobInfo { digest: written.digest, size: written.size })).into_response();
    response.headers_mut().insert(header::LOCATION, HeaderValue::try_from(location).map_err(ApiError::internal)?);
    Ok(response)
}

pub async fn put_blob(
    State(state): State<AppState>,
    caller: Caller,
    Repo(repo): Repo,
    DigestParam(digest): DigestParam,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    caller.require(Action::Push, &repo)?;
    upload(&state, &caller, &repo, Some(digest), &headers, body).await
}

pub async fn post_blob(
    State(state): State<AppState>,
    caller: Caller,
    Repo(repo): Repo,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    caller.require(Action::Push, &repo)?;
    upload(&state, &caller, &repo, None, &headers, body).await
}

/// Parses a single `bytes=` range against a blob of `size` bytes. Several
/// ranges in one request are refused rather than silently widened.
fn requested_range(headers: &HeaderMap, size: u64) -> ApiResult<Option<Range<u64>>> {
    let Some(value) = headers.get(header::RANGE) else {
        return Ok(None);
    };
    let invalid =
        || ApiError::RangeInvalid { reason: format!("range not satisfiable for a blob of {size} bytes"), size };
    let text = value.to_str().map_err(|_| invalid())?;
    let ranges =
        http_range_header::parse_range_header(text).map_err(|_| invalid())?.validate(size).map_err(|_| invalid())?;
    match ranges.as_slice() {
        [range] => Ok(Some(*range.start()..*range.end() + 1)),
        _ => Err(ApiError::RangeInvalid { reason: "only one range per request is supported".into(), size }),
    }
}

fn blob_headers(digest: &amber_core::Digest, headers: &mut HeaderMap) {
    let etag = format!("\"{digest}\"");
    headers.insert(header::ETAG, HeaderValue::try_from(etag).expect("digests are header-safe"));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=31536000, immutable"));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
}

fn not_modified(request: &HeaderMap, digest: &amber_core::Digest) -> bool {
    let etag = format!("\"{digest}\"");
    request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

/// What a HEAD or GET answers, before any byte of the body.
struct ReadPlan {
    status: StatusCode,
    headers: HeaderMap,
    size: u64,
    range: Option<Range<u64>>,
}

async fn plan_read(
    state: &AppState,
    caller: &Caller,
    repo: &amber_core::RepoName,
    digest: &amber_core::Digest,
    request: &HeaderMap,
) -> ApiResult<ReadPlan> {
    caller.require(Action::Pull, repo)?;
    let size = state.meta.blob_size(repo, digest).await?.ok_or(ApiError::BlobUnknown(*digest))?;
    if state.quarantine.contains(digest) {
        return Err(ApiError::BlobCorrupt(*digest));
    }
    let mut headers = HeaderMap::new();
    blob_headers(digest, &mut headers);
    if not_modified(request, digest) {
        return Ok(ReadPlan { status: StatusCode::NOT_MODIFIED, headers, size, range: Some(0..0) });
    }
    let range = requested_range(request, size)?;
    let (status, length) = match &range {
        Some(r) => {
            let value = format!("bytes {}-{}/{size}", r.start, r.end - 1);
            headers.insert(header::CONTENT_RANGE, HeaderValue::try_from(value).map_err(ApiError::internal)?);
            (StatusCode::PARTIAL_CONTENT, r.end - r.start)
        }
        None => (StatusCode::OK, size),
    };
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    Ok(ReadPlan { status, headers, size, range })
}

pub async fn head_blob(
    State(state): State<AppState>,
    caller: Caller,
    Repo(repo): Repo,
    DigestParam(digest): DigestParam,
    request: HeaderMap,
) -> ApiResult<Response> {
    read_blob(&state, &caller, &repo, digest, &request, true).await
}

pub async fn get_blob(
    State(state): State<AppState>,
    caller: Caller,
    Repo(repo): Repo,
    DigestParam(digest): DigestParam,
    request: HeaderMap,
) -> ApiResult<Response> {
    read_blob(&state, &caller, &repo, digest, &request, false).await
}

/// A `HEAD` (`head`) or `GET` of a blob in `repo`: every front door's read.
pub(crate) async fn read_blob(
    state: &AppState,
    caller: &Caller,
    repo: &amber_core::RepoName,
    digest: amber_core::Digest,
    request: &HeaderMap,
    head: bool,
) -> ApiResult<Response> {
    if head {
        // A quarantined blob is absent, so that a client sends it again.
        let plan = plan_read(state, caller, repo, &digest, request).await.map_err(|e| match e {
            ApiError::BlobCorrupt(digest) => ApiError::BlobUnknown(digest),
            other => other,
        })?;
        return Ok((plan.status, plan.headers).into_response());
    }
    let plan = plan_read(state, caller, repo, &digest, request).await?;
    if plan.status == StatusCode::NOT_MODIFIED {
        return Ok((plan.status, plan.headers).into_response());
    }
    let read = state.blobs.read(digest, plan.size, plan.range).await;
    if let Err(err @ (BlobError::Corrupt(_) | BlobError::Missing(_))) = &read {
        crate::lifecycle::scrub::quarantine(state, digest, err).await;
    }
    // A read that finds the bytes wrong quarantines them.
    let found = state.clone();
    let mut stream = Box::pin(read?.then(move |item| {
        let state = found.clone();
        async move {
            if let Err(err @ (BlobError::Corrupt(_) | BlobError::Missing(_))) = &item {
                crate::lifecycle::scrub::quarantine(&state, digest, err).await;
            }
            item
        }
    }));
    // A blob that fits in one chunk is verified before any header goes out.
    let first = stream.next().await;
    if let Some(Err(err)) = first {
        return Err(err.into());
    }
    let body = Body::from_stream(futures_util::stream::iter(first).chain(stream));
    Ok((plan.status, plan.headers, body).into_response())
}

pub async fn missing_blobs(
    State(state): State<AppState>,
    caller: Caller,
    Repo(repo): Repo,
    body: JsonBody,
) -> ApiResult<ApiJson<MissingResponse>> {
    caller.require(Action::Push, &repo)?;
    let request: MissingRequest = body.json(&state).await?;
    if request.digests.len() > MAX_MISSING_QUERY {
        return Err(ApiError::RequestInvalid(format!("at most {MAX_MISSING_QUERY} digests per request")));
    }
    let mut seen = std::collections::HashSet::new();
    let mut missing = Vec::new();
    for digest in request.digests {
        // Quarantined bytes are missing too: the client sends them again, which heals them.
        if seen.insert(digest)
            && (state.quarantine.contains(&digest) || state.meta.blob_size(&repo, &digest).await?.is_none())
        {
            missing.push(digest);
        }
    }
    Ok(ApiJson(MissingResponse { missing }))
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, header};
    use proptest::prelude::*;

    use super::{content_length, requested_range};

    fn with(name: header::HeaderName, value: &str) -> Option<HeaderMap> {
        let value = HeaderValue::from_str(value).ok()?;
        let mut headers = HeaderMap::new();
        headers.insert(name, value);
        Some(headers)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn a_range_is_refused_or_lies_within_the_blob(value in "bytes=[0-9,-]{0,24}|\\PC{0,30}", size in 0u64..10_000) {
            if let Some(headers) = with(header::RANGE, &value)
                && let Ok(Some(range)) = requested_range(&headers, size)
            {
                prop_assert!(range.start < range.end && range.end <= size, "{value} on {size}: {range:?}");
            }
        }

        #[test]
        fn a_content_length_is_a_number_within_the_limit_or_refused(value in "[0-9]{0,22}|\\PC{0,12}") {
            if let Some(headers) = with(header::CONTENT_LENGTH, &value) {
                match content_length(&headers, 1000) {
                    Ok(Some(n)) => prop_assert!(n <= 1000 && value.trim().parse::<u64>() == Ok(n)),
                    Ok(None) => prop_assert!(false, "a present header is never ignored"),
                    Err(_) => prop_assert!(value.trim().parse::<u64>().map_or(true, |n| n > 1000)),
                }
            }
        }
    }
}
