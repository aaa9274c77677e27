//! Unauthenticated routes: liveness, readiness and the public signing keys.

use std::time::Duration;

use amber_core::wire::KeyList;
use axum::extract::State;
use axum::http::StatusCode;

use super::json::ApiJson;
use crate::blobs::BlobStore;
use crate::meta::{LogStore, MetaStore};
use crate::state::AppState;

/// Live while the server can serve: not while a metadata store call is stuck
/// (every request would fail then), though it answers at once either way.
pub async fn healthz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.meta.stuck() {
        return (StatusCode::SERVICE_UNAVAILABLE, "metadata store is not answering\n");
    }
    (StatusCode::OK, "ok\n")
}

/// Longest `/readyz` takes: a backend that has not answered by then is not ready.
const READY_WITHIN: Duration = Duration::from_secs(2);

/// Ready when both backends answer within [`READY_WITHIN`], and the data
/// volume keeps its free-space reserve. A witness behind does not make the
/// store unready (pushes and pulls never wait for one): it is named in the
/// answer.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, String) {
    let (status, text) = backends_ready(&state).await;
    let mut text = text.to_owned();
    if status == StatusCode::OK && !state.log.witnesses.is_empty() {
        let newest = state.meta.log_checkpoint().await.ok().flatten().map_or(0, |(size, _)| size);
        for line in state.log.witnesses.lagging(newest) {
            text.push_str(&line);
            text.push('\n');
        }
    }
    (status, text)
}

async fn backends_ready(state: &AppState) -> (StatusCode, &'static str) {
    let checks = async { tokio::join!(state.meta.check(), state.blobs.check()) };
    let unavailable = StatusCode::SERVICE_UNAVAILABLE;
    match tokio::time::timeout(READY_WITHIN, checks).await {
        Err(_) => {
            tracing::warn!("not ready: a backend did not answer within {READY_WITHIN:?}");
            (unavailable, "a backend did not answer in time\n")
        }
        Ok((Err(err), _)) => {
            tracing::warn!(error = %err, "not ready: metadata store");
            (unavailable, "metadata store unavailable\n")
        }
        Ok((_, Err(err))) => {
            tracing::warn!(error = %err, "not ready: blob store");
            (unavailable, "blob store unavailable\n")
        }
        Ok((Ok(()), Ok(()))) => (StatusCode::OK, "ready\n"),
    }
}

/// Read afresh from the store, so a key another replica already signs with
/// is listed here too; if the store does not answer, the keys last read are.
pub async fn list_keys(State(state): State<AppState>) -> ApiJson<KeyList> {
    let log = state.log.signer();
    for signer in [&state.signer, log] {
        if let Err(err) = signer.refresh(&state.meta).await {
            tracing::warn!(error = %err, "serving the signing keys last read");
        }
    }
    let mut keys = state.signer.key_list();
    keys.keys.extend(log.key_list().keys);
    let witnesses = &state.log.witnesses;
    if !witnesses.is_empty() {
        keys.witness_policy = Some(amber_core::witness::policy_text(witnesses.list(), witnesses.quorum()));
    }
    ApiJson(keys)
}
