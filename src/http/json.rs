//! JSON bodies. `ApiJson` is a JSON answer; `JsonBody` a request body that
//! is read only when the handler asks, after it checked the caller's grant,
//! so a token without the grant cannot make the server buffer anything.
//! Bodies are parsed whatever their `Content-Type` (so `curl -d` works); a
//! body announced or found over the limit is `413 request_too_large`, one
//! that stalls `408`, and anything that is not JSON of the expected shape
//! (duplicate keys included) `400 request_invalid`. The bytes being read are
//! borrowed from the upload memory budget, so many large bodies at once wait
//! or get `429` rather than exhaust memory.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use super::JSON_BODY_LIMIT;
use crate::error::ApiError;
pub use crate::json::parse;
use crate::state::AppState;

pub struct ApiJson<T>(pub T);

/// A request body, unread.
pub struct JsonBody(Body);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    /// Refuses a body announced over the limit at once; reads nothing.
    async fn from_request(request: Request, _state: &S) -> Result<Self, ApiError> {
        let announced =
            request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if announced.is_some_and(|n| n > JSON_BODY_LIMIT as u64) {
            return Err(ApiError::RequestTooLarge { limit: JSON_BODY_LIMIT });
        }
        Ok(Self(request.into_body()))
    }
}

impl JsonBody {
    /// Reads the whole body, at most [`JSON_BODY_LIMIT`] bytes.
    pub async fn bytes(self, state: &AppState) -> Result<Bytes, ApiError> {
        self.bytes_within(state, JSON_BODY_LIMIT).await
    }

    /// Reads the whole body, at most `limit` bytes (routes anyone may call
    /// keep theirs small).
    pub async fn bytes_within(self, state: &AppState, limit: usize) -> Result<Bytes, ApiError> {
        let mut stream = self.0.into_data_stream();
        let (mut buffer, mut lent) = (BytesMut::new(), crate::admission::Lent::default());
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                if super::body_timed_out(&e) {
                    ApiError::RequestTimeout(state.config.limits.body_idle_timeout.as_secs())
                } else {
                    ApiError::RequestInvalid(format!("reading the body failed: {e}"))
                }
            })?;
            if buffer.len() + chunk.len() > limit {
                return Err(ApiError::RequestTooLarge { limit });
            }
            let more = state.admission.memory.borrow(chunk.len()).await;
            lent.merge(
                more.ok_or(ApiError::TooManyRequests { reason: "request memory is exhausted", retry_after: 1 })?,
            );
            buffer.extend_from_slice(&chunk);
        }
        Ok(buffer.freeze())
    }

    /// Reads and parses the body.
    pub async fn json<T: DeserializeOwned>(self, state: &AppState) -> Result<T, ApiError> {
        self.json_within(state, JSON_BODY_LIMIT).await
    }

    /// Reads and parses a body of at most `limit` bytes.
    pub async fn json_within<T: DeserializeOwned>(self, state: &AppState, limit: usize) -> Result<T, ApiError> {
        let bytes = self.bytes_within(state, limit).await?;
        parse(&bytes).map_err(|e| ApiError::RequestInvalid(format!("invalid JSON body: {e}")))
    }
}

impl<T: serde::Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}
