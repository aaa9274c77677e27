//! OCI errors: the spec's body `{"errors": [{"code", "message", "detail"}]}`
//! with its codes, built from Amber's own `ApiError` (whose status, headers
//! and audit marks it keeps); `detail.code` is Amber's code.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// A `/v2/` failure (boxed: it travels in every `Result` of the door).
pub struct OciError(Box<Failure>);

pub struct Failure {
    pub error: ApiError,
    /// The OCI code, when the context knows better than the mapping.
    pub code: Option<&'static str>,
    pub headers: HeaderMap,
}

pub type OciResult<T> = Result<T, OciError>;

impl From<ApiError> for OciError {
    fn from(error: ApiError) -> Self {
        Self(Box::new(Failure { error, code: None, headers: HeaderMap::new() }))
    }
}

impl From<crate::meta::MetaError> for OciError {
    fn from(error: crate::meta::MetaError) -> Self {
        ApiError::from(error).into()
    }
}

impl OciError {
    pub fn with_code(error: ApiError, code: &'static str) -> Self {
        Self(Box::new(Failure { error, code: Some(code), headers: HeaderMap::new() }))
    }

    pub fn header(mut self, name: HeaderName, value: String) -> Self {
        if let Ok(value) = HeaderValue::try_from(value) {
            self.0.headers.insert(name, value);
        }
        self
    }

    /// Adds a header value beside any others of its name.
    pub fn append(&mut self, name: HeaderName, value: HeaderValue) {
        self.0.headers.append(name, value);
    }

    /// Deletes are refused: immutability is the product.
    pub fn unsupported_delete() -> Self {
        Self::with_code(ApiError::MethodNotAllowed, "UNSUPPORTED")
    }
}

/// The OCI code and the status for an Amber error.
fn oci_code(error: &ApiError) -> (&'static str, Option<StatusCode>) {
    use ApiError as E;
    match error {
        E::Unauthorized(_) => ("UNAUTHORIZED", None),
        E::Denied { .. } => ("DENIED", None),
        E::NameInvalid(_) => ("NAME_INVALID", None),
        E::DigestInvalid(_) | E::DigestMismatch { .. } | E::PartMismatch { .. } => ("DIGEST_INVALID", None),
        E::BlobUnknown(_) | E::BlobCorrupt(_) => ("BLOB_UNKNOWN", None),
        E::BlobTooLarge { .. } | E::RequestTooLarge { .. } => ("SIZE_INVALID", None),
        E::ManifestInvalid(_) => ("MANIFEST_INVALID", None),
        E::ManifestBlobUnknown(_) => ("MANIFEST_BLOB_UNKNOWN", None),
        E::ManifestUnknown(_) | E::TagUnknown(_) => ("MANIFEST_UNKNOWN", Some(StatusCode::NOT_FOUND)),
        E::TagExpired { on_bind: false, .. } => ("MANIFEST_UNKNOWN", Some(StatusCode::NOT_FOUND)),
        E::TagExists { .. } | E::TagExpired { .. } => ("DENIED", None),
        E::UploadUnknown | E::UploadGone => ("BLOB_UPLOAD_UNKNOWN", Some(StatusCode::NOT_FOUND)),
        E::UploadOffset { .. } => ("RANGE_INVALID", Some(StatusCode::RANGE_NOT_SATISFIABLE)),
        E::UploadBusy | E::UploadIncomplete(_) | E::RequestInvalid(_) | E::RequestTimeout(_) => {
            ("BLOB_UPLOAD_INVALID", None)
        }
        E::RangeInvalid { .. } => ("RANGE_INVALID", None),
        E::TooManyRequests { .. } => ("TOOMANYREQUESTS", None),
        E::MethodNotAllowed => ("UNSUPPORTED", None),
        E::NotFound => ("NAME_UNKNOWN", None),
        E::InsufficientStorage => ("INSUFFICIENT_STORAGE", None),
        E::Unavailable => ("UNAVAILABLE", None),
        _ => ("INTERNAL", None),
    }
}

impl IntoResponse for OciError {
    fn into_response(self) -> Response {
        let failure = *self.0;
        let (mapped, status) = oci_code(&failure.error);
        let code = failure.code.unwrap_or(mapped);
        let message = match (&failure.error, failure.code) {
            (ApiError::MethodNotAllowed, Some("UNSUPPORTED")) => {
                "Amber never deletes or moves content: expire a tag (POST /v1/repos/{owner}/{name}/tags/{tag}/expire) \
                 and let retention reclaim what no live tag keeps"
                    .to_owned()
            }
            (ApiError::Internal(_), _) => "internal error".to_owned(),
            (error, _) => error.to_string(),
        };
        let mut detail = serde_json::json!({ "code": failure.error.code() });
        if let ApiError::ManifestBlobUnknown(missing) = &failure.error {
            detail["missing"] = serde_json::Value::Array(missing.clone());
        }
        if let ApiError::TagExists { digest, .. } = &failure.error {
            detail["manifest"] = serde_json::json!(digest);
        }
        let body = serde_json::json!({ "errors": [{ "code": code, "message": message, "detail": detail }] });
        let mut response = failure.error.into_response();
        if let Some(status) = status {
            *response.status_mut() = status;
        }
        let bytes = serde_json::to_vec(&body).expect("an error body serialises");
        response.headers_mut().remove(header::CONTENT_LENGTH);
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for name in failure.headers.keys() {
            response.headers_mut().remove(name);
        }
        for (name, value) in &failure.headers {
            response.headers_mut().append(name, value.clone());
        }
        *response.body_mut() = Body::from(bytes);
        response
    }
}
