//! Unauthenticated routes: liveness, readiness and the public signing keys.

use amber_core::wire::KeyList;
use axum::extract::State;
use axum::http::StatusCode;

use super::json::ApiJson;
use crate::blobs::BlobStore;
use crate::meta::MetaStore;
use crate::state::AppState;

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when both backends answer.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if let Err(err) = state.meta.check().await {
        tracing::warn!(error = %err, "not ready: metadata store");
        return (StatusCode::SERVICE_UNAVAILABLE, "metadata store unavailable\n");
    }
    if let Err(err) = state.blobs.check().await {
        tracing::warn!(error = %err, "not ready: blob store");
        return (StatusCode::SERVICE_UNAVAILABLE, "blob store unavailable\n");
    }
    (StatusCode::OK, "ready\n")
}

/// Read afresh from the store, so a key another replica already signs with
/// is listed here too; if the store does not answer, the keys last read are.
pub async fn list_keys(State(state): State<AppState>) -> ApiJson<KeyList> {
    if let Err(err) = state.signer.refresh(&state.meta).await {
        tracing::warn!(error = %err, "serving the signing keys last read");
    }
    ApiJson(state.signer.key_list())
}
