//! Runs: `POST /v1/retention/run`, `/v1/reclaim/run`, `/v1/scrub/run` and
//! `/v1/fsck/run` start one in the background and answer `202` with it at
//! once (`Location: /v1/runs/{id}`), or `409 run_active` naming the run of
//! that kind under way on any replica; `GET /v1/runs` and `/v1/runs/{id}`
//! follow them. Admin only. The work lives in `crate::lifecycle`, the
//! bookkeeping in `crate::runs`.

use amber_core::wire::{RunInfo, RunKind, RunList};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::json::ApiJson;
use super::page;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::lifecycle;
use crate::meta::RunStore;
use crate::runs::{self, Outcome};
use crate::state::AppState;

/// `202 Accepted` with the run and where to follow it.
pub struct Accepted(RunInfo);

impl IntoResponse for Accepted {
    fn into_response(self) -> Response {
        let location = format!("/v1/runs/{}", self.0.id);
        (StatusCode::ACCEPTED, [(header::LOCATION, location)], ApiJson(self.0)).into_response()
    }
}

async fn start<F, Fut>(state: &AppState, caller: &Caller, kind: RunKind, work: F) -> ApiResult<Accepted>
where
    F: FnOnce(AppState, std::sync::Arc<crate::progress::Progress>, amber_core::audit::Actor) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Outcome> + Send + 'static,
{
    caller.require_admin()?;
    let actor = caller.actor();
    match runs::spawn(state, kind, &runs::started_by(&actor), move |state, progress| work(state, progress, actor))
        .await?
    {
        Ok(started) => Ok(Accepted(started.info)),
        Err(active) => Err(ApiError::RunActive(Box::new(active))),
    }
}

/// `POST /v1/retention/run`: every policy, now.
pub async fn run_retention(State(state): State<AppState>, caller: Caller) -> ApiResult<Accepted> {
    start(&state, &caller, RunKind::Retention, |state, progress, actor| async move {
        runs::outcome(lifecycle::run_all(&state, &actor, &progress).await)
    })
    .await
}

/// `POST /v1/reclaim/run`: bytes nothing links past the grace, deleted now.
pub async fn run_reclaim(State(state): State<AppState>, caller: Caller) -> ApiResult<Accepted> {
    start(&state, &caller, RunKind::Reclaim, |state, progress, actor| async move {
        runs::outcome(lifecycle::reclaim::run(&state, &actor, state.config.reclaim_grace, &progress).await)
    })
    .await
}

/// The scrub's pace for a pass asked for while the continuous scrub is off.
const SCRUB_RATE_ON_DEMAND: u64 = 64 * 1024 * 1024;

/// `POST /v1/scrub/run`: a scrub pass now (or the rest of the one under way),
/// at `--scrub-rate` (64 MiB/s when the continuous scrub is off).
pub async fn run_scrub(State(state): State<AppState>, caller: Caller) -> ApiResult<Accepted> {
    start(&state, &caller, RunKind::Scrub, |state, progress, _| async move {
        let rate = if state.config.scrub_rate > 0 { state.config.scrub_rate } else { SCRUB_RATE_ON_DEMAND };
        lifecycle::scrub::run_pass(&state, rate, &progress).await
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsckQuery {
    /// Also read back every linked blob and check its hash.
    #[serde(default)]
    verify: bool,
}

/// `POST /v1/fsck/run`: the store checked against its metadata, live,
/// changing nothing (repairs are `amberd fsck --repair`'s).
pub async fn run_fsck(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<FsckQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Accepted> {
    let Query(query) = query.map_err(|e| ApiError::RequestInvalid(e.body_text()))?;
    start(&state, &caller, RunKind::Fsck, move |state, progress, _| async move {
        runs::outcome(lifecycle::fsck::fsck(&state, query.verify, false, &progress).await.map_err(|e| format!("{e:#}")))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Runs of this kind only.
    kind: Option<String>,
    /// How many, 1 to 1000 (default 50).
    limit: Option<usize>,
}

/// `GET /v1/runs`: the most recent runs, newest first.
pub async fn list_runs(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<ApiJson<RunList>> {
    caller.require_admin()?;
    let Query(query) = query.map_err(|e| ApiError::RequestInvalid(e.body_text()))?;
    let kind = query.kind.as_deref().map(str::parse::<RunKind>).transpose().map_err(ApiError::RequestInvalid)?;
    let limit = page::limit(query.limit, 50, crate::meta::RUNS_KEPT)?;
    let found = state.meta.runs(kind, limit).await?;
    Ok(ApiJson(RunList { runs: found.into_iter().map(runs::settled).collect() }))
}

/// `GET /v1/runs/{id}`: one run, its progress and, once done, its report.
pub async fn show_run(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<ApiJson<RunInfo>> {
    caller.require_admin()?;
    if id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::RunUnknown);
    }
    let run = state.meta.run(&id).await?.ok_or(ApiError::RunUnknown)?;
    Ok(ApiJson(runs::settled(run)))
}
