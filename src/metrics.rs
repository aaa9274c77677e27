//! `GET /metrics`: counters in the Prometheus text format. Kept in memory per
//! replica; a scraper sums replicas. Labels are route templates, never
//! concrete paths, so the number of series stays bounded.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

/// Method, route template, status.
type Series = (String, String, u16);

#[derive(Default)]
pub struct Metrics {
    /// Requests and total seconds per series.
    requests: Mutex<BTreeMap<Series, (u64, f64)>>,
    pub blobs_stored: AtomicU64,
    pub blob_bytes_stored: AtomicU64,
}

impl Metrics {
    fn render(&self) -> String {
        let mut out = String::new();
        let requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        out.push_str("# HELP amber_http_requests_total HTTP requests answered, by route and status.\n");
        out.push_str("# TYPE amber_http_requests_total counter\n");
        for ((method, route, status), (count, _)) in requests.iter() {
            let _ = writeln!(
                out,
                "amber_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {count}"
            );
        }
        out.push_str("# HELP amber_http_request_seconds_total Time spent answering, by route and status.\n");
        out.push_str("# TYPE amber_http_request_seconds_total counter\n");
        for ((method, route, status), (_, seconds)) in requests.iter() {
            let _ = writeln!(
                out,
                "amber_http_request_seconds_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {seconds:.6}"
            );
        }
        out.push_str("# HELP amber_blobs_stored_total Blobs made visible in a repository.\n");
        out.push_str("# TYPE amber_blobs_stored_total counter\n");
        let _ = writeln!(out, "amber_blobs_stored_total {}", self.blobs_stored.load(Ordering::Relaxed));
        out.push_str("# HELP amber_blob_bytes_stored_total Bytes of the blobs made visible in a repository.\n");
        out.push_str("# TYPE amber_blob_bytes_stored_total counter\n");
        let _ = writeln!(out, "amber_blob_bytes_stored_total {}", self.blob_bytes_stored.load(Ordering::Relaxed));
        out
    }
}

/// Counts every routed request by method, route template and status.
pub async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let route = request.extensions().get::<MatchedPath>().map_or_else(String::new, |p| p.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    let elapsed = started.elapsed().as_secs_f64();
    let mut requests = state.metrics.requests.lock().unwrap_or_else(|e| e.into_inner());
    let entry = requests.entry((method, route, response.status().as_u16())).or_default();
    entry.0 += 1;
    entry.1 += elapsed;
    response
}

pub async fn get_metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}
