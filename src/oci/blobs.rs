//! Blobs through `/v2/`: reads by any OCI digest, and uploads (monolithic
//! `POST ?digest=`, `POST` then `PUT ?digest=`, chunked and streamed `PATCH`,
//! status, cancel, cross-repository mount). An upload session is a
//! resumable upload of `crate::uploads` (bound to its token, durable
//! offset, expiry), so it survives a restart and continues on any replica.
//! Bytes are hashed with BLAKE3 and sha256 as they arrive and stored once,
//! under BLAKE3; the sha256 (and sha512 when named) is recorded as an alias.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, PoisonError};

use amber_core::audit::Event;
use amber_core::{Action, Digest, RepoName};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use sha2::Digest as _;
use time::OffsetDateTime;

use super::auth::OciCaller;
use super::digest::{self, Algorithm, OciDigest};
use super::error::{OciError, OciResult};
use super::media::{DOCKER_CONTENT_DIGEST, header_value};
use crate::auth::Caller;
use crate::blobs::{BlobError, BlobStore, Upload};
use crate::error::ApiError;
use crate::http::blobs::{body_stream, content_length, read_blob};
use crate::meta::{Created, LinkStore, OciStore, UploadId, UploadKind, UploadRecord, UploadRecordStore};
use crate::push::resumable;
use crate::state::AppState;
use crate::uploads::store::{Check, UploadBytes};

const DOCKER_UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");

/// Aliases found visible in a repository lately, by repository: a hit needs
/// no store. Only what a read found in that repository is kept, so that
/// nobody learns by timing what another repository holds. An alias is a
/// fact about content (these bytes hash to both), true in any store and
/// never changed; whether the blob is still linked is read every time.
/// Bounded, and emptied whole when full.
static SEEN: LazyLock<Mutex<HashMap<(RepoName, String), Digest>>> = LazyLock::new(Default::default);
const SEEN_KEPT: usize = 65_536;

fn seen(repo: &RepoName, alias: &str) -> Option<Digest> {
    SEEN.lock().unwrap_or_else(PoisonError::into_inner).get(&(repo.clone(), alias.to_owned())).copied()
}

fn remember(repo: &RepoName, alias: &OciDigest, digest: Digest) {
    if alias.algorithm == Algorithm::Blake3 {
        return;
    }
    let mut kept = SEEN.lock().unwrap_or_else(PoisonError::into_inner);
    if kept.len() >= SEEN_KEPT {
        kept.clear();
    }
    kept.insert((repo.clone(), alias.to_string()), digest);
}

/// The stored blob an OCI digest names, if known, as `repo` would read it.
pub async fn resolve(state: &AppState, repo: &RepoName, digest: &OciDigest) -> OciResult<Option<Digest>> {
    if let Some(b3) = digest.blake3() {
        return Ok(Some(b3));
    }
    let alias = digest.to_string();
    if let Some(b3) = seen(repo, &alias) {
        return Ok(Some(b3));
    }
    Ok(state.meta.alias(&alias).await?)
}

fn digest_param(text: &str) -> OciResult<OciDigest> {
    OciDigest::parse(text).map_err(OciError::from)
}

#[derive(serde::Deserialize)]
pub struct BlobPath {
    owner: String,
    name: String,
    digest: String,
}

/// `HEAD` and `GET /v2/{name}/blobs/{digest}`.
async fn read(
    state: AppState,
    caller: OciCaller,
    path: BlobPath,
    request: HeaderMap,
    head: bool,
) -> OciResult<Response> {
    let repo = repo_of(&path.owner, &path.name)?;
    caller.require(&state, Action::Pull, &repo)?;
    let digest = digest_param(&path.digest)?;
    if digest.to_string() == super::media::EMPTY_SHA256 {
        return Ok(empty_blob(&digest, head));
    }
    // Unknown to the index, a link is read all the same (of a digest no
    // blob has): the answer takes as long whether any repository holds it.
    let b3 = resolve(&state, &repo, &digest).await?.unwrap_or_else(|| Digest::of(digest.to_string().as_bytes()));
    let mut response = read_blob(&state, &caller.caller, &repo, b3, &request, head).await?;
    if response.status().is_success() {
        remember(&repo, &digest, b3);
    }
    response.headers_mut().insert(DOCKER_CONTENT_DIGEST, header_value(&digest.to_string()));
    Ok(response)
}

/// The empty JSON config (`{}`), the same in every repository.
fn empty_blob(digest: &OciDigest, head: bool) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(super::media::EMPTY.len()));
    headers.insert(DOCKER_CONTENT_DIGEST, header_value(&digest.to_string()));
    if head {
        return (StatusCode::OK, headers).into_response();
    }
    (StatusCode::OK, headers, super::media::EMPTY).into_response()
}

pub async fn head_blob(
    State(state): State<AppState>,
    caller: OciCaller,
    Path(path): Path<BlobPath>,
    request: HeaderMap,
) -> OciResult<Response> {
    read(state, caller, path, request, true).await
}

pub async fn get_blob(
    State(state): State<AppState>,
    caller: OciCaller,
    Path(path): Path<BlobPath>,
    request: HeaderMap,
) -> OciResult<Response> {
    read(state, caller, path, request, false).await
}

pub fn repo_of(owner: &str, name: &str) -> OciResult<RepoName> {
    format!("{owner}/{name}").parse().map_err(|e| OciError::from(ApiError::NameInvalid(format!("{e}"))))
}

/// `201` for a blob now in `repo`.
fn created(repo: &RepoName, digest: &OciDigest) -> Response {
    let location = format!("/v2/{repo}/blobs/{digest}");
    let mut response = StatusCode::CREATED.into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, header_value(&location));
    headers.insert(DOCKER_CONTENT_DIGEST, header_value(&digest.to_string()));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    response
}

/// Records what the OCI digests of a stored blob are.
async fn record_aliases(state: &AppState, repo: &RepoName, b3: &Digest, aliases: &[&OciDigest]) -> OciResult<()> {
    for (i, alias) in aliases.iter().enumerate() {
        if alias.algorithm == Algorithm::Blake3 || aliases[..i].contains(alias) {
            continue;
        }
        state.meta.put_alias(&alias.to_string(), b3).await?;
        // Just linked in `repo`: its first reads need no store for the alias.
        remember(repo, alias, *b3);
    }
    Ok(())
}

/// A whole blob in one request body: hashed with BLAKE3 by the blob store
/// and with sha256 (and sha512) beside it, linked only if it matches.
async fn put_whole(
    state: &AppState,
    caller: &Caller,
    repo: &RepoName,
    expected: &OciDigest,
    headers: &HeaderMap,
    body: Body,
) -> OciResult<Response> {
    let limit = state.config.max_blob_size;
    let announced = content_length(headers, limit)?;
    let _slot = crate::push::admit(state, caller)?;
    let pushing = crate::push::Pushing::new(state);
    let sha512 = expected.algorithm == Algorithm::Sha512;
    let (body, tap) =
        crate::push::hashes::tap(body_stream(body, state.config.limits.body_idle_timeout), sha512, announced);
    let upload = Upload {
        expected: expected.blake3(),
        limit,
        announced,
        memory: state.admission.memory.clone(),
        gate: Some(pushing.gate()),
    };
    let written = state.blobs.put(upload, body).await;
    let tapped = digest::Tapped::from(crate::push::hashes::finish(tap).await);
    if written.is_ok() && tapped.get(expected.algorithm).is_some_and(|got| got != expected) {
        pushing.abandon().await;
        return Err(mismatch(expected, tapped.get(expected.algorithm)));
    }
    let mismatched = matches!(written, Err(BlobError::Mismatch { .. }));
    let linked = pushing.link(state, caller, repo, written).await;
    if mismatched {
        return Err(mismatch(expected, None));
    }
    let (written, _) = linked?;
    record_aliases(state, repo, &written.digest, &[&tapped.sha256, expected]).await?;
    if let Some(sha512) = &tapped.sha512 {
        record_aliases(state, repo, &written.digest, &[sha512]).await?;
    }
    Ok(created(repo, expected))
}

/// Stores `bytes` as a blob of `repo` (what the server itself makes: the
/// layers of a `/v1/` tag's referrers), returning its sha256.
pub async fn put_bytes(state: &AppState, caller: &Caller, repo: &RepoName, bytes: Vec<u8>) -> OciResult<OciDigest> {
    let digest = OciDigest::of(Algorithm::Sha256, &bytes);
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    put_whole(state, caller, repo, &digest, &headers, Body::from(bytes)).await?;
    Ok(digest)
}

fn mismatch(expected: &OciDigest, actual: Option<&OciDigest>) -> OciError {
    let actual = actual.map_or_else(|| "other content".to_owned(), ToString::to_string);
    OciError::with_code(
        ApiError::DigestInvalid(format!("the bytes hash to {actual}, not {expected}")),
        "DIGEST_INVALID",
    )
}

/// `{owner}/{name}` of a `/v2/` route.
#[derive(serde::Deserialize)]
pub struct RepoPath {
    pub(super) owner: String,
    pub(super) name: String,
}

#[derive(serde::Deserialize)]
pub struct StartQuery {
    digest: Option<String>,
    mount: Option<String>,
    from: Option<String>,
}

/// `POST /v2/{name}/blobs/uploads/`: a mount, a whole blob, or a session.
pub async fn start_upload(
    State(state): State<AppState>,
    caller: OciCaller,
    Path(path): Path<RepoPath>,
    Query(query): Query<StartQuery>,
    headers: HeaderMap,
    body: Body,
) -> OciResult<Response> {
    let repo = repo_of(&path.owner, &path.name)?;
    caller.require(&state, Action::Push, &repo)?;
    if let Some(mount) = &query.mount {
        let digest = digest_param(mount)?;
        if let Some(from) = query.from.as_deref().and_then(|f| f.parse::<RepoName>().ok()) {
            caller.widen_for_mount(&state, &repo, &from).await?;
        }
        // A source the caller cannot pull, or that lacks the blob, is a
        // plain upload start: never an oracle of what another repository holds.
        if let Some(from) = query.from.as_deref().and_then(|f| f.parse::<RepoName>().ok())
            && caller.caller.require(Action::Pull, &from).is_ok()
            && let Some(b3) = resolve(&state, &from, &digest).await?
            && !state.quarantine.contains(&b3)
            && let Some(size) = state.meta.blob_size(&from, &b3).await?
        {
            let event = Event::BlobPushed { repository: repo.clone(), digest: b3, size };
            let draft = crate::audit::Draft::shared(&state.signer, caller.caller.actor(), vec![event]);
            state.meta.link_blob(&repo, &b3, size, None, draft).await?;
            return Ok(created(&repo, &digest));
        }
    }
    if let Some(digest) = &query.digest {
        let digest = digest_param(digest)?;
        return put_whole(&state, &caller.caller, &repo, &digest, &headers, body).await;
    }
    // Nothing is stored until the session's first bytes: most clients send
    // the whole blob with the `PUT` that closes it.
    let session = Session::open(&state, &caller.caller, &repo);
    let record = session.unrecorded(&state, &caller.caller, &repo);
    Ok(answer(StatusCode::ACCEPTED, &session, &record))
}

/// A session as its URL names it: `<id>.<created, 16 hex>.<MAC, 64 hex>`,
/// the MAC binding the id and its creation time to the token and the
/// repository (keyed by the store's active manifest key), so that a session
/// needs no record until its first bytes arrive, and none at all when a
/// `PUT` brings the whole blob. Its record, once written, is found by `id`.
struct Session {
    id: UploadId,
    created: i64,
    text: String,
}

const SESSION_KEY_CONTEXT: &str = "amber 2026 oci upload session mac v1";

fn session_mac(state: &AppState, caller: &Caller, repo: &RepoName, id: &UploadId, created: i64) -> blake3::Hash {
    let key = state.signer.derived_key(SESSION_KEY_CONTEXT, &[]);
    let mut mac = blake3::Hasher::new_keyed(&key);
    for part in [caller.token.info.id.as_str(), repo.as_str(), id.as_str()] {
        mac.update(part.as_bytes()).update(&[0]);
    }
    mac.update(&created.to_be_bytes());
    mac.finalize()
}

impl Session {
    fn open(state: &AppState, caller: &Caller, repo: &RepoName) -> Self {
        let (id, created) = (UploadId::random(), OffsetDateTime::now_utc().unix_timestamp());
        let mac = session_mac(state, caller, repo, &id, created);
        let text = format!("{id}.{created:016x}.{}", mac.to_hex());
        Self { id, created, text }
    }

    /// The session a URL names, if its MAC holds for this caller and
    /// repository and it has not expired.
    fn parse(state: &AppState, caller: &Caller, repo: &RepoName, text: &str) -> Option<Self> {
        let mut parts = text.split('.');
        let (id, created, mac) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || created.len() != 16 {
            return None;
        }
        let id: UploadId = id.parse().ok()?;
        let created = i64::from_str_radix(created, 16).ok()?;
        let mac = blake3::Hash::from_hex(mac).ok()?;
        // Compared in constant time.
        if mac != session_mac(state, caller, repo, &id, created) {
            return None;
        }
        let expires = OffsetDateTime::from_unix_timestamp(created).ok()? + state.config.upload_expiry;
        (expires > OffsetDateTime::now_utc()).then(|| Self { id, created, text: text.to_owned() })
    }

    /// The record it would have: nothing stored yet.
    fn unrecorded(&self, state: &AppState, caller: &Caller, repo: &RepoName) -> UploadRecord {
        let created = OffsetDateTime::from_unix_timestamp(self.created).unwrap_or_else(|_| OffsetDateTime::now_utc());
        UploadRecord {
            id: self.id.clone(),
            token: caller.token.info.id.clone(),
            repository: repo.clone(),
            length: state.config.max_blob_size,
            offset: 0,
            metadata: String::new(),
            digest: None,
            kind: UploadKind::Open,
            segments: Vec::new(),
            created,
            expires: created + state.config.upload_expiry,
            done: None,
            claimed_by: None,
        }
    }
}

/// An answer about a session: where it is and what it holds.
fn answer(status: StatusCode, session: &Session, record: &UploadRecord) -> Response {
    let mut response = status.into_response();
    let headers = response.headers_mut();
    let location = format!("/v2/{}/blobs/uploads/{}", record.repository, session.text);
    headers.insert(header::LOCATION, header_value(&location));
    headers.insert(header::RANGE, header_value(&format!("0-{}", record.offset.saturating_sub(1))));
    headers.insert(DOCKER_UPLOAD_UUID, header_value(record.id.as_str()));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    response
}

#[derive(serde::Deserialize)]
pub struct UploadPath {
    owner: String,
    name: String,
    id: String,
}

/// A session found: its record (`recorded`: stored, else what it would be).
struct Found {
    session: Session,
    record: UploadRecord,
    recorded: bool,
}

/// The caller's session in this repository, or `BLOB_UPLOAD_UNKNOWN`.
async fn find(state: &AppState, caller: &OciCaller, path: &UploadPath, action: Action) -> OciResult<Found> {
    let repo = repo_of(&path.owner, &path.name)?;
    caller.require(state, action, &repo)?;
    let session = Session::parse(state, &caller.caller, &repo, &path.id).ok_or(ApiError::UploadUnknown)?;
    match state.meta.upload(&caller.caller.token.info.id, &session.id).await? {
        Some(record) => {
            if record.repository != repo || !matches!(record.kind, UploadKind::Open) || record.done.is_some() {
                return Err(ApiError::UploadUnknown.into());
            }
            Ok(Found { session, record, recorded: true })
        }
        None => {
            let record = session.unrecorded(state, &caller.caller, &repo);
            Ok(Found { session, record, recorded: false })
        }
    }
}

/// Stores a session's record before its first bytes (once, even when two
/// requests race to).
async fn record(state: &AppState, caller: &Caller, found: Found) -> OciResult<Found> {
    if found.recorded {
        return Ok(found);
    }
    let _busy = state.uploads.claim(&found.record.id).await?;
    let token = &caller.token.info.id;
    if let Some(record) = state.meta.upload(token, &found.record.id).await? {
        return Ok(Found { record, recorded: true, ..found });
    }
    let mut record = found.record.clone();
    record.expires = OffsetDateTime::now_utc() + state.config.upload_expiry;
    match state.meta.create_upload(&record, crate::uploads::MAX_PER_TOKEN).await {
        Ok(Created::Created) => Ok(Found { record, recorded: true, ..found }),
        Ok(_) => Err(ApiError::TooManyRequests {
            reason: "this token holds as many uploads as it may; finish or cancel some",
            retry_after: 60,
        }
        .into()),
        // Another replica stored it first.
        Err(err) => match state.meta.upload(token, &found.record.id).await? {
            Some(record) => Ok(Found { record, recorded: true, ..found }),
            None => Err(err.into()),
        },
    }
}

/// Where a `Content-Range` (`start-end`) starts, if given.
fn range_start(headers: &HeaderMap) -> OciResult<Option<u64>> {
    let Some(value) = headers.get(header::CONTENT_RANGE) else { return Ok(None) };
    let text = value.to_str().unwrap_or("").trim();
    let text = text.strip_prefix("bytes ").unwrap_or(text);
    let (start, _end) = text
        .split_once('-')
        .ok_or_else(|| OciError::from(ApiError::RequestInvalid("Content-Range is START-END".into())))?;
    start.parse().map(Some).map_err(|_| OciError::from(ApiError::RequestInvalid("Content-Range is START-END".into())))
}

fn out_of_order(session: &Session, record: &UploadRecord) -> OciError {
    OciError::with_code(ApiError::UploadOffset { current: record.offset, given: record.offset }, "RANGE_INVALID")
        .header(header::RANGE, format!("0-{}", record.offset.saturating_sub(1)))
        .header(header::LOCATION, format!("/v2/{}/blobs/uploads/{}", record.repository, session.text))
}

/// Appends a body to a session at its offset (storing its record first).
async fn append(state: &AppState, caller: &Caller, found: Found, headers: &HeaderMap, body: Body) -> OciResult<Found> {
    let offset = found.record.offset;
    // A session's length is the size limit until it closes: past it, refused
    // before a byte is read (and a body of unknown length, once it is full).
    let left = found.record.length.saturating_sub(offset);
    let announced = content_length(headers, u64::MAX)?;
    if announced.is_some_and(|n| n > left) || (announced.is_none() && left == 0) {
        return Err(ApiError::BlobTooLarge { limit: state.config.max_blob_size }.into());
    }
    let found = record(state, caller, found).await?;
    let body = body_stream(body, state.config.limits.body_idle_timeout);
    match resumable::patch(state, caller, found.record.clone(), offset, body).await {
        Ok(outcome) => Ok(Found { record: outcome.record, ..found }),
        Err(ApiError::UploadOffset { .. }) => {
            let now = state.meta.upload(&caller.token.info.id, &found.record.id).await?.unwrap_or(found.record);
            Err(out_of_order(&found.session, &now))
        }
        Err(err) => Err(err.into()),
    }
}

/// `PATCH`: a chunk (with `Content-Range`, in order) or a stream.
pub async fn patch_upload(
    State(state): State<AppState>,
    caller: OciCaller,
    Path(path): Path<UploadPath>,
    headers: HeaderMap,
    body: Body,
) -> OciResult<Response> {
    let found = find(&state, &caller, &path, Action::Push).await?;
    if range_start(&headers)?.is_some_and(|start| start != found.record.offset) {
        return Err(out_of_order(&found.session, &found.record));
    }
    let found = append(&state, &caller.caller, found, &headers, body).await?;
    Ok(answer(StatusCode::ACCEPTED, &found.session, &found.record))
}

/// `GET`: the session's progress.
pub async fn upload_status(
    State(state): State<AppState>,
    caller: OciCaller,
    Path(path): Path<UploadPath>,
) -> OciResult<Response> {
    let found = find(&state, &caller, &path, Action::Push).await?;
    Ok(answer(StatusCode::NO_CONTENT, &found.session, &found.record))
}

/// `DELETE`: the session is cancelled, its bytes discarded.
pub async fn cancel_upload(
    State(state): State<AppState>,
    caller: OciCaller,
    Path(path): Path<UploadPath>,
) -> OciResult<Response> {
    let found = find(&state, &caller, &path, Action::Push).await?;
    if found.recorded {
        resumable::terminate(&state, &found.record).await?;
    }
    Ok((StatusCode::NO_CONTENT, [(DOCKER_UPLOAD_UUID, header_value(found.record.id.as_str()))]).into_response())
}

#[derive(serde::Deserialize)]
pub struct CloseQuery {
    digest: Option<String>,
}

/// `PUT ?digest=`: the session's last bytes (if any), then the blob.
pub async fn close_upload(
    State(state): State<AppState>,
    caller: OciCaller,
    Path(path): Path<UploadPath>,
    Query(query): Query<CloseQuery>,
    headers: HeaderMap,
    body: Body,
) -> OciResult<Response> {
    let found = find(&state, &caller, &path, Action::Push).await?;
    let expected = digest_param(query.digest.as_deref().ok_or_else(|| {
        OciError::with_code(ApiError::DigestInvalid("PUT closes an upload with ?digest=".into()), "DIGEST_INVALID")
    })?)?;
    if range_start(&headers)?.is_some_and(|start| start != found.record.offset) {
        return Err(out_of_order(&found.session, &found.record));
    }
    let caller = &caller.caller;
    if found.record.offset == 0 && found.record.segments.is_empty() {
        // Nothing stored yet: the body is the whole blob, put as one.
        let response = put_whole(&state, caller, &found.record.repository, &expected, &headers, body).await?;
        if found.recorded {
            forget(&state, &found.record).await;
        }
        return Ok(response);
    }
    let has_body = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).is_none_or(|v| v.trim() != "0");
    let found = if has_body { append(&state, caller, found, &headers, body).await? } else { found };
    let record = found.record;
    let check = match state.uploads.take_hash(&record.id, record.offset) {
        Some(check) => Some(check),
        None => resumable::hash_so_far(&state, &record).await?,
    };
    let Some(Check::Open(hash)) = check else {
        return Err(ApiError::internal(anyhow::anyhow!("an OCI upload without its hashes")).into());
    };
    let b3 = Digest::from(hash.blake3.finalize());
    let sha256 = OciDigest::sha256_hex(format!("{:x}", hash.sha256.clone().finalize()));
    let actual = match expected.algorithm {
        Algorithm::Sha256 => sha256.clone(),
        Algorithm::Blake3 => OciDigest::parse(&b3.to_string())?,
        Algorithm::Sha512 => sha512_of(&state, &record).await?,
    };
    if actual != expected {
        state.uploads.keep_hash(&record.id, record.offset, Check::Open(hash));
        return Err(mismatch(&expected, Some(&actual)));
    }
    let mut closed = record.clone();
    closed.length = closed.offset;
    let (digest, _) = resumable::link(&state, caller, std::slice::from_ref(&closed), Some(b3), true).await?;
    record_aliases(&state, &record.repository, &digest, &[&sha256, &expected]).await?;
    // Kept as done until it expires, so that its URL is unknown from now on
    // (a session nothing was stored for is never recorded at all).
    closed.done = Some(digest);
    let _ = state.meta.update_upload(&closed, closed.offset).await?;
    state.uploads.forget_hash(&record.id);
    if let Err(err) = state.uploads.store.discard(&record).await {
        tracing::warn!(upload = %record.id, error = %err, "could not remove a closed session's bytes; the sweep will");
    }
    Ok(created(&record.repository, &expected))
}

/// The sha512 of a session's stored bytes (only a client naming sha512 asks).
async fn sha512_of(state: &AppState, record: &UploadRecord) -> OciResult<OciDigest> {
    let mut hasher = sha2::Sha512::new();
    let mut bytes = state.uploads.store.read(record, 0..record.offset).await.map_err(ApiError::from)?;
    while let Some(chunk) = bytes.next().await {
        hasher.update(&chunk.map_err(ApiError::from)?);
    }
    Ok(OciDigest::parse(&format!("sha512:{:x}", hasher.finalize()))?)
}

/// Drops a finished session: its record and any bytes left.
async fn forget(state: &AppState, record: &UploadRecord) {
    if let Err(err) = resumable::terminate(state, record).await {
        tracing::debug!(upload = %record.id, error = %err, "finished OCI upload not forgotten now; expiry will");
    }
}

/// `DELETE` of a blob: refused, immutability is the product.
pub async fn delete_blob(_caller: OciCaller) -> OciError {
    OciError::unsupported_delete()
}
