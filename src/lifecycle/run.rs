//! Running retention: plans made from the store's view, then the expiries and
//! unlinks in batches, one transaction each, every item re-checked there and
//! audited with its own entry. A run may stop anywhere
//! (a crash, a shutdown): what it did is done and audited, and the next run
//! does the rest. Runs on several replicas at once expire each tag once.

use std::sync::atomic::Ordering;

use amber_core::audit::{Actor, Event};
use amber_core::tombstone::{self, Reason, TombstonePayload};
use amber_core::wire::{PolicyInfo, RetentionPlan};
use amber_core::{Digest, RepoName, RepoPattern, Tag};
use time::OffsetDateTime;

use super::{plan, policy};
use crate::audit::Draft;
use crate::meta::{Expiring, Expiry, MetaError, TagChange, TagRecord, Unlink, Unlinking};
use crate::meta::{RetentionStore, TagStore};
use crate::progress::Progress;
use crate::state::AppState;

/// Who the scheduled runs act as in tombstones and the audit log.
pub fn scheduled_actor() -> Actor {
    Actor { token_id: None, token_name: Some("amberd retention schedule".into()) }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc().replace_nanosecond(0).expect("0 is a valid nanosecond")
}

/// Every repository with its policy in effect, when `scope` is that policy's
/// scope (or for every policy, without one).
async fn governed(state: &AppState, scope: Option<&RepoPattern>) -> Result<Vec<(RepoName, PolicyInfo)>, MetaError> {
    let policies = state.meta.policies().await?;
    governed_by(state, &policies, scope).await
}

/// [`governed`] under `policies` rather than the stored ones.
async fn governed_by(
    state: &AppState,
    policies: &[PolicyInfo],
    scope: Option<&RepoPattern>,
) -> Result<Vec<(RepoName, PolicyInfo)>, MetaError> {
    if policies.is_empty() {
        return Ok(Vec::new());
    }
    let mut governed = Vec::new();
    let mut after: Option<RepoName> = None;
    loop {
        let page = state.meta.repositories(after.as_ref(), 1000).await?;
        for repo in &page {
            if let Some(info) = policy::effective(policies, repo)
                && scope.is_none_or(|s| s == &info.scope)
            {
                governed.push((repo.clone(), info.clone()));
            }
        }
        match page.last() {
            Some(last) if page.len() == 1000 => after = Some(last.clone()),
            _ => return Ok(governed),
        }
    }
}

/// What a run would do now: for an exact repository, under the policy in
/// effect for it (its own or its owner's); for `owner/*`, in every repository
/// the owner's default governs.
pub async fn plan_scope(state: &AppState, scope: &RepoPattern) -> Result<RetentionPlan, MetaError> {
    plan_scope_at(state, scope, now()).await
}

/// [`plan_scope`] as decided at `now` (tests hold a plan and a run to one moment).
pub async fn plan_scope_at(
    state: &AppState,
    scope: &RepoPattern,
    now: OffsetDateTime,
) -> Result<RetentionPlan, MetaError> {
    let policies = state.meta.policies().await?;
    plan_under(state, &policies, scope, now).await
}

/// What a run would do now if `proposed` were stored (the console shows it
/// before an operator saves a policy); nothing is stored.
pub async fn plan_proposed(state: &AppState, proposed: PolicyInfo) -> Result<RetentionPlan, MetaError> {
    let mut policies = state.meta.policies().await?;
    policies.retain(|p| p.scope != proposed.scope);
    let scope = proposed.scope.clone();
    policies.push(proposed);
    plan_under(state, &policies, &scope, now()).await
}

async fn plan_under(
    state: &AppState,
    policies: &[PolicyInfo],
    scope: &RepoPattern,
    now: OffsetDateTime,
) -> Result<RetentionPlan, MetaError> {
    let targets = match scope {
        RepoPattern::Exact(repo) => {
            policy::effective(policies, repo).map(|info| vec![(repo.clone(), info.clone())]).unwrap_or_default()
        }
        other => governed_by(state, policies, Some(other)).await?,
    };
    let mut all = RetentionPlan::default();
    for (repo, info) in targets {
        let view = state.meta.retention_view(&repo).await?;
        let planned = plan::plan(&repo, &info.policy, &view, now);
        all.expire.extend(planned.expire);
        all.unlink.extend(planned.unlink);
    }
    Ok(all)
}

/// Runs every policy now; answers what was done.
pub async fn run_all(state: &AppState, actor: &Actor, progress: &Progress) -> Result<RetentionPlan, MetaError> {
    run_all_at(state, actor, now(), progress).await
}

/// [`run_all`] as decided at `now`.
pub async fn run_all_at(
    state: &AppState,
    actor: &Actor,
    now: OffsetDateTime,
    progress: &Progress,
) -> Result<RetentionPlan, MetaError> {
    let mut report = RetentionPlan::default();
    let governed = governed(state, None).await?;
    progress.plan(governed.len() as u64);
    for (repo, info) in governed {
        let done = run_repo(state, &repo, &info, actor, now).await?;
        progress.done(1);
        progress.bytes(done.unlink.iter().map(|u| u.size).sum());
        report.expire.extend(done.expire);
        report.unlink.extend(done.unlink);
    }
    tracing::info!(expired = report.expire.len(), unlinked = report.unlink.len(), "retention run finished");
    Ok(report)
}

/// Expiries and unlinks committed per transaction: each item re-checked and
/// audited in it; a crash loses at most one batch's work, which the next run does.
const BATCH: usize = 100;

async fn run_repo(
    state: &AppState,
    repo: &RepoName,
    info: &PolicyInfo,
    actor: &Actor,
    now: OffsetDateTime,
) -> Result<RetentionPlan, MetaError> {
    let view = state.meta.retention_view(repo).await?;
    let planned = plan::plan(repo, &info.policy, &view, now);
    let mut done = RetentionPlan::default();
    for batch in planned.expire.chunks(BATCH) {
        let items: Vec<Expiring> = batch
            .iter()
            .map(|e| expiring(state, repo, &e.tag, e.manifest, e.bound_at, Some(info), actor.clone(), None))
            .collect();
        let changes = state.meta.expire_tags(repo, &items, Some(info)).await?;
        for (expiry, change) in batch.iter().zip(changes) {
            // Anything else: held, policy changed, or expired by a racing run meanwhile.
            if matches!(change, TagChange::Changed(_)) {
                state.metrics.retention_expired.fetch_add(1, Ordering::Relaxed);
                done.expire.push(expiry.clone());
            }
        }
    }
    let cutoff = plan::unlink_cutoff(&info.policy, now);
    for batch in planned.unlink.chunks(BATCH) {
        let items: Vec<Unlinking> = batch
            .iter()
            .map(|u| {
                let event = Event::BlobUnlinked { repository: repo.clone(), digest: u.digest, size: u.size };
                Unlinking { digest: u.digest, audit: Draft::shared(&state.signer, actor.clone(), vec![event]) }
            })
            .collect();
        let outcomes = state.meta.unlink_blobs(repo, &items, cutoff).await?;
        for (unlink, outcome) in batch.iter().zip(outcomes) {
            if outcome == Unlink::Unlinked {
                state.metrics.links_removed.fetch_add(1, Ordering::Relaxed);
                done.unlink.push(unlink.clone());
            }
        }
    }
    if !done.expire.is_empty() {
        tracing::info!(%repo, expired = done.expire.len(), "tags expired");
    }
    Ok(done)
}

/// One tag's expiry, ready to commit: its signed tombstone and its audit
/// entry. With `policy`, a policy's expiry; without, an operator's, with `note`.
#[allow(clippy::too_many_arguments)]
fn expiring(
    state: &AppState,
    repo: &RepoName,
    tag: &Tag,
    manifest: Digest,
    bound_at: OffsetDateTime,
    policy: Option<&PolicyInfo>,
    actor: Actor,
    note: Option<String>,
) -> Expiring {
    let at = now();
    let payload = TombstonePayload {
        schema: tombstone::SCHEMA.into(),
        repository: repo.clone(),
        tag: tag.clone(),
        manifest,
        bound_at,
        expired_at: at,
        reason: if policy.is_some() { Reason::Policy } else { Reason::Operator },
        policy: policy.map(|p| p.digest),
        expired_by: actor.clone(),
        note: note.clone(),
    };
    let bytes = payload.to_bytes();
    let event = Event::TagExpired {
        repository: repo.clone(),
        tag: tag.clone(),
        manifest,
        tombstone: Digest::of(&bytes),
        reason: payload.reason,
        policy: payload.policy,
        note,
    };
    let expiry = Expiry { at, tombstone: state.signer.sign(tombstone::PAYLOAD_TYPE, &bytes) };
    Expiring { tag: tag.clone(), expiry, audit: Draft::shared(&state.signer, actor, vec![event]) }
}

/// Expires one tag: signs its tombstone and records the expiry with its audit
/// entry. With `policy`, a policy's expiry (refused as stale if another
/// policy is in effect by then); without, an operator's, with `note`.
pub async fn expire_tag(
    state: &AppState,
    repo: &RepoName,
    tag: &Tag,
    record: &TagRecord,
    policy: Option<&PolicyInfo>,
    actor: Actor,
    note: Option<String>,
) -> Result<TagChange, MetaError> {
    let item = expiring(state, repo, tag, record.digest, record.created_at, policy, actor, note);
    let change = state.meta.expire_tags(repo, std::slice::from_ref(&item), policy).await?.pop();
    let change = change.unwrap_or(TagChange::Unknown);
    if matches!(change, TagChange::Changed(_)) {
        state.metrics.retention_expired.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%repo, %tag, reason = if policy.is_some() { "policy" } else { "operator" }, "tag expired");
    }
    Ok(change)
}
