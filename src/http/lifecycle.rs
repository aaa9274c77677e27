//! Lifecycle routes: retention policies (set, show, remove, plan, run),
//! reclaim (run now) and the scrub (progress and quarantined blobs). The
//! decisions live in `crate::lifecycle`.

use amber_core::audit::Event;
use amber_core::wire::{EffectivePolicy, PolicyInfo, PolicySet, RetentionPlan, RetentionPolicy, StorageReport};
use amber_core::{Action, RepoPattern};
use axum::extract::State;
use serde::Serialize;
use time::OffsetDateTime;

use super::json::{ApiJson, JsonBody};
use super::paths::Scope;
use crate::audit::Draft;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::lifecycle::{self, policy};
use crate::meta::ScrubStore;
use crate::meta::{RetentionStore, StatsStore};
use crate::state::AppState;

fn no_policy(scope: &RepoPattern) -> ApiError {
    ApiError::PolicyUnknown(format!("no retention policy applies to {scope}: every tag is kept"))
}

pub async fn put_policy(
    State(state): State<AppState>,
    caller: Caller,
    Scope(scope): Scope,
    body: JsonBody,
) -> ApiResult<ApiJson<PolicySet>> {
    caller.require_admin()?;
    let bytes = body.bytes(&state).await?;
    let info = proposed(scope.clone(), &bytes)?;
    let event = Event::RetentionPolicySet { scope: scope.clone(), policy: info.policy.clone(), digest: info.digest };
    state.meta.put_policy(&info, Draft::shared(&state.signer, caller.actor(), vec![event])).await?;
    tracing::info!(%scope, digest = %info.digest, "retention policy set");
    let plan = lifecycle::plan_scope(&state, &scope).await?;
    Ok(ApiJson(PolicySet { info, plan }))
}

/// A repository's policy in effect (its own or its owner's), for admins and
/// for tokens that may pull it; an owner's default, for admins.
#[derive(Serialize)]
#[serde(untagged)]
pub enum Shown {
    Effective(EffectivePolicy),
    Stored(PolicyInfo),
}

pub async fn get_policy(
    State(state): State<AppState>,
    caller: Caller,
    Scope(scope): Scope,
) -> ApiResult<ApiJson<Shown>> {
    match &scope {
        RepoPattern::Exact(repo) => {
            if caller.require_admin().is_err() {
                caller.require(Action::Pull, repo)?;
            }
        }
        _ => caller.require_admin()?,
    }
    let policies = state.meta.policies().await?;
    let shown = match &scope {
        RepoPattern::Exact(repo) => policy::effective(&policies, repo)
            .map(|info| Shown::Effective(EffectivePolicy { repository: repo.clone(), info: info.clone() })),
        _ => policies.into_iter().find(|p| p.scope == scope).map(Shown::Stored),
    };
    shown.map(ApiJson).ok_or_else(|| no_policy(&scope))
}

#[derive(Serialize)]
pub struct PolicyList {
    policies: Vec<PolicyInfo>,
}

pub async fn list_policies(State(state): State<AppState>, caller: Caller) -> ApiResult<ApiJson<PolicyList>> {
    caller.require_admin()?;
    Ok(ApiJson(PolicyList { policies: state.meta.policies().await? }))
}

pub async fn delete_policy(
    State(state): State<AppState>,
    caller: Caller,
    Scope(scope): Scope,
) -> ApiResult<ApiJson<PolicyInfo>> {
    caller.require_admin()?;
    // Read, then delete only that version: a policy replaced in between is
    // not removed under an audit entry that names the old one.
    for _ in 0..3 {
        let policies = state.meta.policies().await?;
        let Some(info) = policies.into_iter().find(|p| p.scope == scope) else { return Err(no_policy(&scope)) };
        let event = Event::RetentionPolicyDeleted { scope: scope.clone(), digest: info.digest };
        let draft = Draft::shared(&state.signer, caller.actor(), vec![event]);
        if state.meta.delete_policy(&scope, &info.digest, draft).await? {
            tracing::info!(%scope, "retention policy deleted");
            return Ok(ApiJson(info));
        }
    }
    Err(ApiError::Unavailable)
}

pub async fn plan(
    State(state): State<AppState>,
    caller: Caller,
    Scope(scope): Scope,
    body: JsonBody,
) -> ApiResult<ApiJson<RetentionPlan>> {
    caller.require_admin()?;
    let bytes = body.bytes(&state).await?;
    // With a policy in the body: what it would do if it were stored.
    if !bytes.iter().all(u8::is_ascii_whitespace) {
        let info = proposed(scope, &bytes)?;
        return Ok(ApiJson(lifecycle::plan_proposed(&state, info).await?));
    }
    let policies = state.meta.policies().await?;
    let applies = match &scope {
        RepoPattern::Exact(repo) => policy::effective(&policies, repo).is_some(),
        _ => policies.iter().any(|p| p.scope == scope),
    };
    if !applies {
        return Err(no_policy(&scope));
    }
    Ok(ApiJson(lifecycle::plan_scope(&state, &scope).await?))
}

/// The policy a body sends, as it would be stored: defaults filled in, its digest.
fn proposed(scope: RepoPattern, body: &[u8]) -> ApiResult<PolicyInfo> {
    let sent: RetentionPolicy =
        super::json::parse(body).map_err(|e| ApiError::RequestInvalid(format!("retention policy: {e}")))?;
    let policy = policy::normalise(sent).map_err(ApiError::RequestInvalid)?;
    let digest = policy::digest(&policy);
    let updated_at = OffsetDateTime::now_utc().replace_nanosecond(0).expect("0 is a valid nanosecond");
    Ok(PolicyInfo { scope, policy, digest, updated_at })
}

/// `GET /v1/storage`: what waits for reclaim, and how much is quarantined.
pub async fn get_storage(State(state): State<AppState>, caller: Caller) -> ApiResult<ApiJson<StorageReport>> {
    caller.require_admin()?;
    let stats = state.meta.store_stats().await?;
    let quarantined = state.meta.quarantined().await?.len() as u64;
    Ok(ApiJson(StorageReport {
        links: stats.links,
        linked_bytes: stats.bytes,
        pending_reclaim: stats.pending_reclaim,
        pending_reclaim_bytes: stats.pending_reclaim_bytes,
        quarantined,
    }))
}

/// `GET /v1/scrub`: how far the scrub is, and what it quarantined.
#[derive(Serialize)]
pub struct ScrubStatus {
    /// Bytes a second; 0 when the scrub is off.
    rate: u64,
    #[serde(flatten)]
    progress: crate::meta::ScrubProgress,
    corrupt: Vec<crate::meta::Quarantined>,
}

pub async fn get_scrub(State(state): State<AppState>, caller: Caller) -> ApiResult<ApiJson<ScrubStatus>> {
    caller.require_admin()?;
    let progress = state.meta.scrub_progress().await?;
    let corrupt = state.meta.quarantined().await?;
    Ok(ApiJson(ScrubStatus { rate: state.config.scrub_rate, progress, corrupt }))
}
