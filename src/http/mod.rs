//! The HTTP API v1 router. Routes are declared once, in [`routes`], so the
//! router and the test that holds it to `api/openapi.yaml` read the same table.

mod attestations;
mod audit;
mod auth;
pub(crate) mod blobs;
pub(crate) mod json;
mod lifecycle;
mod log;
mod metrics;
mod oidc;
mod page;
pub(crate) mod paths;
mod repos;
pub mod runs;
mod system;
mod tags;
pub mod tokens;
mod uploads;

use std::time::Duration;

use axum::Router;
use axum::http::{Method, Request};
use axum::routing::{MethodFilter, MethodRouter, on};
use tower_http::trace::TraceLayer;

use axum::response::IntoResponse;

use crate::error::ApiError;
use crate::state::AppState;

/// Largest JSON body accepted (a manifest of many files is the big one);
/// `json::JsonBody` enforces it. Blob bodies have `--max-blob-size`.
const JSON_BODY_LIMIT: usize = 16 << 20;

/// True when a request body failed because it stalled past the body idle
/// timeout (the server wraps every request body in one): `err`, or an error
/// it wraps, is that timeout firing.
pub fn body_timed_out(err: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(err) = cause {
        if err.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = err.source();
    }
    false
}

const METRICS: &str = "/metrics";
const BLOB: &str = "/v1/repos/{owner}/{name}/blobs/{digest}";
const TAG: &str = "/v1/repos/{owner}/{name}/tags/{tag}";
const HOLD: &str = "/v1/repos/{owner}/{name}/tags/{tag}/hold";
const POLICY: &str = "/v1/retention/{owner}/{name}";
const UPLOADS: &str = "/v1/repos/{owner}/{name}/uploads";
const UPLOAD: &str = "/v1/repos/{owner}/{name}/uploads/{id}";

/// Every route: method, path (as in the OpenAPI document) and handler.
pub fn routes() -> Vec<(Method, &'static str, MethodRouter<AppState>)> {
    use MethodFilter as M;
    vec![
        (Method::GET, "/healthz", on(M::GET, system::healthz)),
        (Method::GET, "/readyz", on(M::GET, system::readyz)),
        (Method::GET, METRICS, on(M::GET, metrics::get_metrics)),
        (Method::GET, "/v1/keys", on(M::GET, system::list_keys)),
        (Method::GET, crate::attest::POLICY_PATH, on(M::GET, attestations::get_policy)),
        (Method::GET, "/v1/whoami", on(M::GET, tokens::whoami)),
        (Method::POST, "/v1/tokens", on(M::POST, tokens::create_token)),
        (Method::GET, "/v1/tokens", on(M::GET, tokens::list_tokens)),
        (Method::GET, "/v1/tokens/{id}", on(M::GET, tokens::show_token)),
        (Method::POST, "/v1/tokens/{id}/rotate", on(M::POST, tokens::rotate_token)),
        (Method::DELETE, "/v1/tokens/{id}", on(M::DELETE, tokens::revoke_token)),
        (Method::GET, "/v1/audit", on(M::GET, audit::get_audit)),
        (Method::GET, "/v1/log/checkpoint", on(M::GET, log::get_checkpoint)),
        (Method::GET, "/v1/log/tile/{*path}", on(M::GET, log::get_tile)),
        (Method::GET, "/v1/log/proof", on(M::GET, log::get_inclusion)),
        (Method::GET, "/v1/log/consistency", on(M::GET, log::get_consistency)),
        (Method::GET, "/v1/repos", on(M::GET, repos::list_repos)),
        (Method::PUT, BLOB, on(M::PUT, blobs::put_blob)),
        (Method::POST, "/v1/repos/{owner}/{name}/blobs", on(M::POST, blobs::post_blob)),
        (Method::HEAD, BLOB, on(M::HEAD, blobs::head_blob)),
        (Method::GET, BLOB, on(M::GET, blobs::get_blob)),
        (Method::POST, "/v1/repos/{owner}/{name}/blobs/missing", on(M::POST, blobs::missing_blobs)),
        (Method::OPTIONS, UPLOADS, tus(on(M::OPTIONS, uploads::options))),
        (Method::POST, UPLOADS, tus(on(M::POST, uploads::create_upload))),
        (Method::OPTIONS, UPLOAD, tus(on(M::OPTIONS, uploads::options_of_one))),
        (Method::HEAD, UPLOAD, tus(on(M::HEAD, uploads::head_upload))),
        (Method::PATCH, UPLOAD, tus(on(M::PATCH, uploads::patch_upload))),
        (Method::DELETE, UPLOAD, tus(on(M::DELETE, uploads::delete_upload))),
        (Method::PUT, TAG, on(M::PUT, tags::put_tag)),
        (Method::GET, TAG, on(M::GET, tags::get_tag)),
        (Method::GET, "/v1/repos/{owner}/{name}/tags", on(M::GET, tags::list_tags)),
        (Method::GET, "/v1/repos/{owner}/{name}/manifests/{digest}", on(M::GET, tags::get_manifest)),
        (Method::GET, "/v1/repos/{owner}/{name}/tags/{tag}/receipt", on(M::GET, log::get_receipt)),
        (Method::GET, "/v1/repos/{owner}/{name}/tags/{tag}/attestations", on(M::GET, attestations::get_attestations)),
        (Method::PUT, HOLD, on(M::PUT, tags::hold_tag)),
        (Method::DELETE, HOLD, on(M::DELETE, tags::release_tag)),
        (Method::POST, "/v1/repos/{owner}/{name}/tags/{tag}/expire", on(M::POST, tags::expire_tag)),
        (Method::GET, "/v1/retention", on(M::GET, lifecycle::list_policies)),
        (Method::POST, "/v1/retention/run", on(M::POST, runs::run_retention)),
        (Method::PUT, POLICY, on(M::PUT, lifecycle::put_policy)),
        (Method::GET, POLICY, on(M::GET, lifecycle::get_policy)),
        (Method::DELETE, POLICY, on(M::DELETE, lifecycle::delete_policy)),
        (Method::POST, "/v1/retention/{owner}/{name}/plan", on(M::POST, lifecycle::plan)),
        (Method::POST, "/v1/reclaim/run", on(M::POST, runs::run_reclaim)),
        (Method::GET, "/v1/scrub", on(M::GET, lifecycle::get_scrub)),
        (Method::POST, "/v1/scrub/run", on(M::POST, runs::run_scrub)),
        (Method::POST, "/v1/fsck/run", on(M::POST, runs::run_fsck)),
        (Method::GET, "/v1/runs", on(M::GET, runs::list_runs)),
        (Method::GET, "/v1/runs/{id}", on(M::GET, runs::show_run)),
        (Method::GET, "/v1/storage", on(M::GET, lifecycle::get_storage)),
        (Method::POST, "/v1/oidc/token", on(M::POST, oidc::exchange)),
        (Method::POST, "/v1/publishers", on(M::POST, oidc::create_publisher)),
        (Method::GET, "/v1/publishers", on(M::GET, oidc::list_publishers)),
        (Method::GET, "/v1/publishers/{id}", on(M::GET, oidc::show_publisher)),
        (Method::DELETE, "/v1/publishers/{id}", on(M::DELETE, oidc::delete_publisher)),
    ]
}

/// Answers a path no route matched, if it is the door's.
pub type Fallback = fn(&axum::http::Uri) -> Option<axum::response::Response>;

/// Another front door (`/v2/`): its routes, served behind the same
/// authentication, metrics and limits, and its answer for paths it owns
/// that no route matched.
pub struct Door {
    pub routes: Vec<(Method, &'static str, MethodRouter<AppState>)>,
    pub fallback: Fallback,
}

/// A tus route: every answer carries `Tus-Resumable`.
fn tus(route: MethodRouter<AppState>) -> MethodRouter<AppState> {
    route.layer(axum::middleware::map_response(uploads::tus_resumable))
}

/// The API, with the routes of other front doors (`doors`: `/v2/`) behind
/// the same authentication, metrics and limits. `GET /metrics` is left out
/// when it has a listener of its own.
pub fn router(state: AppState, doors: Vec<Door>) -> Router {
    let mut router = Router::new();
    let fallbacks: Vec<Fallback> = doors.iter().map(|d| d.fallback).collect();
    for (_, path, handler) in routes().into_iter().chain(doors.into_iter().flat_map(|d| d.routes)) {
        if path == METRICS && state.config.metrics_listen.is_some() {
            continue;
        }
        router = router.route(path, handler);
    }
    router = router
        // After routing, so the audit log can name the route of a denied request.
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::authenticate))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), metrics::record));
    // The console's static files need no token (the page asks for one).
    if state.config.ui {
        router = router
            .route("/ui", axum::routing::get(crate::ui::redirect))
            .route("/ui/", axum::routing::get(crate::ui::index))
            .route("/ui/{*file}", axum::routing::get(crate::ui::file));
    }
    router
        .fallback(move |uri: axum::http::Uri| async move {
            // A door answers the paths it owns in its own dialect.
            fallbacks.iter().find_map(|answer| answer(&uri)).unwrap_or_else(|| ApiError::NotFound.into_response())
        })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(
            // Logs method, path, status and latency; never headers, so never a token.
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<_>| {
                    // The path comes from the client: logged cut to a bounded length.
                    let path = crate::error::bounded(request.uri().path());
                    tracing::info_span!("request", method = %request.method(), path = %path)
                })
                .on_request(())
                .on_response(|response: &axum::response::Response, latency: Duration, _span: &tracing::Span| {
                    tracing::info!(
                        status = response.status().as_u16(),
                        latency_ms = latency.as_secs_f64() * 1e3,
                        "response"
                    );
                }),
        )
        .with_state(state)
}

/// `GET /metrics` alone, for `--metrics-listen`.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route(METRICS, on(MethodFilter::GET, metrics::get_metrics))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
}
