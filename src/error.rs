//! `ApiError`: every way a request can fail, and the one place that turns a
//! failure into an HTTP status and a stable JSON error code. Internal causes are
//! logged here and never sent to the client.

use amber_core::wire::{ErrorBody, ErrorDetail, ExpiredBody};
use amber_core::{Digest, RepoName, Tag};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::blobs::BlobError;
use crate::meta::MetaError;

/// Why a request was refused, for the audit log (a response extension): the
/// reason, and apart from it the repository named, so that denials naming
/// different repositories are still one kind.
#[derive(Clone, Debug)]
pub struct DenialReason {
    pub reason: String,
    pub repository: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("token lacks {action} on {repo}")]
    Denied { action: String, repo: String },
    #[error("{0}")]
    NameInvalid(String),
    #[error("{0}")]
    DigestInvalid(String),
    #[error("body hashes to {actual}, not {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("blob {0} is not in this repository")]
    BlobUnknown(Digest),
    #[error("blob exceeds the limit of {limit} bytes")]
    BlobTooLarge { limit: u64 },
    #[error("{reason}")]
    RangeInvalid { reason: String, size: u64 },
    #[error("{0}")]
    ManifestInvalid(String),
    #[error("{} file(s) name blobs that are not in this repository with the stated size", .0.len())]
    ManifestBlobUnknown(Vec<serde_json::Value>),
    #[error("manifest {0} is not in this repository")]
    ManifestUnknown(Digest),
    #[error("tag {0} is not bound in this repository")]
    TagUnknown(Tag),
    #[error("tag {tag} in {repo} is already bound to different content")]
    TagExists { repo: RepoName, tag: Tag, digest: Digest },
    /// The tag's availability ended: `410` on a read, `409` on a bind (its
    /// name is never bound again). The body carries the signed tombstone.
    #[error("tag {tag} in {repo} has expired: {what}")]
    TagExpired {
        repo: RepoName,
        tag: Tag,
        tombstone: Box<amber_core::dsse::Envelope>,
        on_bind: bool,
        what: &'static str,
    },
    #[error("tag {0} is held; release the hold first")]
    TagHeld(Tag),
    #[error("{0}")]
    PolicyUnknown(String),
    #[error("no such token")]
    TokenUnknown,
    #[error("no such publisher")]
    PublisherUnknown,
    #[error("{0}")]
    TokenInactive(&'static str),
    #[error("{0}")]
    RequestInvalid(String),
    #[error("no such route")]
    NotFound,
    /// A log tile that is not spelled as tlog-tiles spells it, or not (yet)
    /// in the tree of the newest checkpoint.
    #[error("no such tile in the log's tree of {0} entries (tile/{{L}}/{{N}}[.p/{{W}}], tile/entries/{{N}}[.p/{{W}}])")]
    TileUnknown(u64),
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("no such upload")]
    UploadUnknown,
    #[error("a {} run is under way ({}); follow it at /v1/runs/{}", .0.kind, .0.id, .0.id)]
    RunActive(Box<amber_core::wire::RunInfo>),
    #[error("no such run")]
    RunUnknown,
    /// A `PATCH` from another offset than the upload's: `409` with the
    /// current `Upload-Offset`.
    #[error("the upload is at offset {current}, not {given}; resume from {current}")]
    UploadOffset { current: u64, given: u64 },
    #[error("another PATCH of this upload is in progress; retry once it ends")]
    UploadBusy,
    #[error("a final upload takes no PATCH: it is the concatenation of its parts")]
    UploadFinal,
    /// Completion needs a part that is missing or unfinished.
    #[error("{0}")]
    UploadIncomplete(String),
    /// A part's bytes do not hash to its chaining value; none were kept.
    #[error("part {index} does not hash to its chaining value; its bytes from offset {offset} were not kept")]
    PartMismatch { index: u64, offset: u64 },
    #[error("the upload's stored bytes are gone; start a new upload")]
    UploadGone,
    /// `Tus-Resumable` absent or of another version: `412` with `Tus-Version`.
    #[error("Tus-Resumable: 1.0.0 is required")]
    TusVersion,
    #[error("{0}")]
    MediaType(&'static str),
    #[error("a stored blob failed its integrity check; the operator has been alerted")]
    BlobCorrupt(Digest),
    #[error("the request body made no progress for {0} seconds")]
    RequestTimeout(u64),
    #[error("{reason}; retry after {retry_after} seconds")]
    TooManyRequests { reason: &'static str, retry_after: u64 },
    #[error("the server is low on storage; uploads are refused until space is freed")]
    InsufficientStorage,
    #[error("a backend did not answer in time; retry later")]
    Unavailable,
    #[error("the request body exceeds the limit of {limit} bytes")]
    RequestTooLarge { limit: usize },
    /// An ID token exchange was refused.
    #[error(transparent)]
    Oidc(#[from] OidcError),
    /// Anything the client cannot fix. The cause is logged, never sent.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        Self::Internal(err.into())
    }

    /// The stable error code.
    pub fn code(&self) -> &'static str {
        self.status_and_code().1
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        use StatusCode as S;
        match self {
            Self::Unauthorized(_) => (S::UNAUTHORIZED, "unauthorized"),
            Self::Denied { .. } => (S::FORBIDDEN, "denied"),
            Self::NameInvalid(_) => (S::BAD_REQUEST, "name_invalid"),
            Self::DigestInvalid(_) => (S::BAD_REQUEST, "digest_invalid"),
            Self::DigestMismatch { .. } => (S::BAD_REQUEST, "digest_mismatch"),
            Self::BlobUnknown(_) => (S::NOT_FOUND, "blob_unknown"),
            Self::BlobTooLarge { .. } => (S::PAYLOAD_TOO_LARGE, "blob_too_large"),
            Self::RangeInvalid { .. } => (S::RANGE_NOT_SATISFIABLE, "range_invalid"),
            Self::ManifestInvalid(_) => (S::BAD_REQUEST, "manifest_invalid"),
            Self::ManifestBlobUnknown(_) => (S::BAD_REQUEST, "manifest_blob_unknown"),
            Self::ManifestUnknown(_) => (S::NOT_FOUND, "manifest_unknown"),
            Self::TagUnknown(_) => (S::NOT_FOUND, "tag_unknown"),
            Self::TagExists { .. } => (S::CONFLICT, "tag_exists"),
            Self::TagExpired { on_bind: true, .. } => (S::CONFLICT, "tag_expired"),
            Self::TagExpired { on_bind: false, .. } => (S::GONE, "tag_expired"),
            Self::TagHeld(_) => (S::CONFLICT, "tag_held"),
            Self::PolicyUnknown(_) => (S::NOT_FOUND, "policy_unknown"),
            Self::TokenUnknown => (S::NOT_FOUND, "token_unknown"),
            Self::PublisherUnknown => (S::NOT_FOUND, "publisher_unknown"),
            Self::TokenInactive(_) => (S::CONFLICT, "token_inactive"),
            Self::RequestInvalid(_) => (S::BAD_REQUEST, "request_invalid"),
            Self::NotFound | Self::TileUnknown(_) => (S::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed => (S::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::UploadUnknown => (S::NOT_FOUND, "upload_unknown"),
            Self::RunActive(_) => (S::CONFLICT, "run_active"),
            Self::RunUnknown => (S::NOT_FOUND, "run_unknown"),
            Self::UploadOffset { .. } => (S::CONFLICT, "upload_offset_mismatch"),
            Self::UploadBusy => (S::LOCKED, "upload_busy"),
            Self::UploadFinal => (S::FORBIDDEN, "upload_final"),
            Self::UploadIncomplete(_) => (S::BAD_REQUEST, "upload_incomplete"),
            Self::PartMismatch { .. } => (S::BAD_REQUEST, "digest_mismatch"),
            Self::UploadGone => (S::GONE, "upload_gone"),
            Self::TusVersion => (S::PRECONDITION_FAILED, "tus_version"),
            Self::MediaType(_) => (S::UNSUPPORTED_MEDIA_TYPE, "media_type_unsupported"),
            Self::BlobCorrupt(_) => (S::INTERNAL_SERVER_ERROR, "blob_corrupt"),
            Self::RequestTimeout(_) => (S::REQUEST_TIMEOUT, "request_timeout"),
            Self::TooManyRequests { .. } => (S::TOO_MANY_REQUESTS, "too_many_requests"),
            Self::InsufficientStorage => (S::INSUFFICIENT_STORAGE, "insufficient_storage"),
            Self::Unavailable => (S::SERVICE_UNAVAILABLE, "unavailable"),
            Self::RequestTooLarge { .. } => (S::PAYLOAD_TOO_LARGE, "request_too_large"),
            Self::Oidc(OidcError::Invalid { .. }) => (S::UNAUTHORIZED, "oidc_invalid"),
            Self::Oidc(OidcError::Replayed) => (S::UNAUTHORIZED, "oidc_replayed"),
            Self::Oidc(OidcError::NoPublisher { .. }) => (S::FORBIDDEN, "oidc_no_publisher"),
            Self::Oidc(OidcError::Unavailable(_)) => (S::SERVICE_UNAVAILABLE, "oidc_unavailable"),
            Self::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

/// The JSON body of the `400` for a request whose head cannot be parsed (a
/// `Content-Length` that is not a number, a malformed header line). hyper
/// answers those itself, before a request exists; `crate::server` puts this
/// body in its answer.
pub fn unparsable_request_body() -> Vec<u8> {
    let error = ErrorDetail {
        code: "request_invalid".to_owned(),
        message: "the request's head cannot be parsed: a malformed header line, or a Content-Length that is not a \
                  number of bytes"
            .to_owned(),
        detail: None,
    };
    serde_json::to_vec(&ErrorBody { error }).expect("error bodies serialise")
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        match &self {
            Self::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "internal error")
            }
            Self::BlobCorrupt(digest) => {
                tracing::error!(%digest, "stored blob is corrupt; refusing to serve it")
            }
            // Messages may quote what the client sent: logged cut short.
            _ => tracing::debug!(code, message = %crate::error::bounded(&self.to_string()), "request failed"),
        }
        let detail = match &self {
            Self::ManifestBlobUnknown(missing) => Some(serde_json::json!({ "missing": missing })),
            Self::TagExists { digest, .. } => Some(serde_json::json!({ "digest": digest })),
            Self::RunActive(run) => Some(serde_json::json!({ "run": run })),
            _ => None,
        };
        let error = ErrorDetail { code: code.to_owned(), message: self.to_string(), detail };
        let mut response = match &self {
            Self::TagExpired { tombstone, .. } => {
                let body = ExpiredBody { error, tombstone: (**tombstone).clone() };
                (status, axum::Json(body)).into_response()
            }
            _ => (status, axum::Json(ErrorBody { error })).into_response(),
        };
        match &self {
            Self::Unauthorized(reason) => {
                response.extensions_mut().insert(DenialReason { reason: (*reason).to_owned(), repository: None });
            }
            Self::Denied { action, repo } => {
                let reason = format!("token lacks {action}");
                response.extensions_mut().insert(DenialReason { reason, repository: Some(repo.clone()) });
            }
            // The kind of refusal only, never what the token said, so that
            // varied forged tokens are still one kind of denial.
            Self::Oidc(refusal) => {
                let (reason, repository) = match refusal {
                    OidcError::Invalid { check, .. } => (format!("oidc_invalid: {check}"), None),
                    OidcError::Replayed => ("oidc_replayed".to_owned(), None),
                    OidcError::NoPublisher { repository, .. } => ("oidc_no_publisher".to_owned(), repository.clone()),
                    OidcError::Unavailable(_) => ("oidc_unavailable".to_owned(), None),
                };
                response.extensions_mut().insert(DenialReason { reason, repository });
            }
            _ => {}
        }
        if let Self::RangeInvalid { size, .. } = &self
            && let Ok(value) = HeaderValue::try_from(format!("bytes */{size}"))
        {
            response.headers_mut().insert(header::CONTENT_RANGE, value);
        }
        if let Self::UploadOffset { current, .. } = &self {
            response.headers_mut().insert("upload-offset", HeaderValue::from(*current));
        }
        if let Self::TusVersion = &self {
            response.headers_mut().insert("tus-version", HeaderValue::from_static(crate::uploads::tus::VERSION));
        }
        let retry_after = match &self {
            Self::TooManyRequests { retry_after, .. } => Some(*retry_after),
            Self::Unavailable => Some(5),
            Self::Oidc(OidcError::Unavailable(_)) => Some(60),
            Self::InsufficientStorage => Some(60),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"amber\""));
        }
        response
    }
}

impl From<MetaError> for ApiError {
    fn from(err: MetaError) -> Self {
        match err {
            MetaError::Unavailable(cause) => {
                tracing::warn!(%cause, "metadata store unavailable");
                Self::Unavailable
            }
            MetaError::NoSpace(cause) => {
                tracing::warn!(%cause, "metadata write refused");
                Self::InsufficientStorage
            }
            err @ MetaError::EntryTooLarge(_) => Self::RequestInvalid(format!("{err}: make the change smaller")),
            other => Self::Internal(other.into()),
        }
    }
}

impl From<BlobError> for ApiError {
    fn from(err: BlobError) -> Self {
        match err {
            BlobError::Mismatch { expected, actual } => Self::DigestMismatch { expected, actual },
            BlobError::TooLarge { limit } => Self::BlobTooLarge { limit },
            BlobError::Client(e) if e.kind() == std::io::ErrorKind::TimedOut => Self::RequestTimeout(
                e.get_ref().and_then(|inner| inner.downcast_ref::<BodyIdle>()).map_or(0, |idle| idle.0),
            ),
            BlobError::Client(e) => Self::RequestInvalid(format!("reading the request body failed: {e}")),
            BlobError::NoSpace => Self::InsufficientStorage,
            BlobError::Throttled => Self::TooManyRequests { reason: "upload memory is exhausted", retry_after: 1 },
            BlobError::Unavailable(cause) => {
                tracing::warn!(%cause, "blob store unavailable");
                Self::Unavailable
            }
            BlobError::Corrupt(digest) | BlobError::Missing(digest) => Self::BlobCorrupt(digest),
            BlobError::NotFound(digest) => Self::BlobUnknown(digest),
            other @ BlobError::Io(_) => Self::Internal(other.into()),
        }
    }
}

/// Every error code the API can answer with; `api/openapi.yaml` lists the same.
pub const ERROR_CODES: &[&str] = &[
    "unauthorized",
    "denied",
    "name_invalid",
    "digest_invalid",
    "digest_mismatch",
    "blob_unknown",
    "blob_too_large",
    "range_invalid",
    "manifest_invalid",
    "manifest_blob_unknown",
    "manifest_unknown",
    "tag_unknown",
    "tag_exists",
    "tag_expired",
    "tag_held",
    "policy_unknown",
    "token_unknown",
    "publisher_unknown",
    "token_inactive",
    "request_invalid",
    "not_found",
    "method_not_allowed",
    "upload_unknown",
    "run_active",
    "run_unknown",
    "upload_offset_mismatch",
    "upload_busy",
    "upload_final",
    "upload_incomplete",
    "upload_gone",
    "tus_version",
    "media_type_unsupported",
    "blob_corrupt",
    "request_timeout",
    "too_many_requests",
    "insufficient_storage",
    "unavailable",
    "request_too_large",
    "oidc_invalid",
    "oidc_replayed",
    "oidc_no_publisher",
    "oidc_unavailable",
    "internal",
];

/// The cause of a request body that stalled: no progress for this many
/// seconds. Carried inside an `io::Error` of kind `TimedOut`.
#[derive(Debug, thiserror::Error)]
#[error("no progress for {0} seconds")]
pub struct BodyIdle(pub u64);

pub type ApiResult<T> = Result<T, ApiError>;

/// Longest text from a client kept in a log line or an audit entry.
const MAX_TEXT: usize = 256;

/// `text` cut to at most [`MAX_TEXT`] bytes, on a character boundary.
pub fn bounded(text: &str) -> String {
    if text.len() <= MAX_TEXT {
        return text.to_owned();
    }
    let mut end = MAX_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Why an exchange was refused.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// A check of the ID token failed; `check` names it (also in the audit
    /// log, where denials of one kind are counted together).
    #[error("{message}")]
    Invalid { check: &'static str, message: String },
    #[error("this ID token was exchanged before; each is exchanged once")]
    Replayed,
    /// A valid ID token no publisher trusts.
    #[error("{message}")]
    NoPublisher { message: String, repository: Option<String> },
    /// The issuer's keys are not known and could not be fetched.
    #[error("{0}")]
    Unavailable(String),
}

impl OidcError {
    pub fn invalid(check: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid { check, message: message.into() }
    }
}
