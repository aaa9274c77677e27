//! `ApiJson`: a JSON body in, a JSON body out. Bodies are parsed whatever
//! their `Content-Type` (so `curl -d` works) and parse failures are our JSON
//! errors (`400 request_invalid`), not plain text.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|e| ApiError::RequestInvalid(format!("reading the body failed: {}", e.body_text())))?;
        serde_json::from_slice(&bytes)
            .map(Self)
            .map_err(|e| ApiError::RequestInvalid(format!("invalid JSON body: {e}")))
    }
}

impl<T: serde::Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}
