//! `GET /metrics` and the route layer that counts every request (the
//! counters themselves are `crate::metrics`, which knows no `AppState`).

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::meta::LogStore;
use crate::state::AppState;

/// Counts every routed request by method, route template and status.
pub async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let route = request.extensions().get::<MatchedPath>().map_or_else(String::new, |p| p.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    let elapsed = started.elapsed().as_secs_f64();
    state.metrics.count_request(method, route, response.status().as_u16(), elapsed);
    response
}

pub async fn get_metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut text = state.metrics.render(state.quarantine.len());
    if !state.log.witnesses.is_empty() {
        let newest = state.meta.log_checkpoint().await.ok().flatten().map_or(0, |(size, _)| size);
        text.push_str(&state.log.witnesses.render_metrics(newest));
    }
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}
