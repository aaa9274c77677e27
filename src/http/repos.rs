//! `GET /v1/repos`: the repositories the caller may pull (all of them for an
//! admin token) that hold a blob or a tag, in name order, paginated like
//! tags. Nothing of the others shows, not even their count: the cursor is
//! always a repository the caller may see.

use amber_core::wire::{RepoList, RepoSummary};
use amber_core::{Action, RepoName};
use axum::extract::{Query, State};
use serde::Deserialize;

use super::json::ApiJson;
use super::page;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::meta::StatsStore;
use crate::state::AppState;

/// Repository names read from the store per call while filtering.
const SCAN_PAGE: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    /// Repositories per page, 1 to 1000 (default 100).
    limit: Option<usize>,
    /// The `next` cursor of the previous page.
    after: Option<String>,
}

pub async fn list_repos(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<ApiJson<RepoList>> {
    let Query(page) = query.map_err(|e| ApiError::RequestInvalid(e.body_text()))?;
    let limit = page::limit(page.limit, 100, 1000)?;
    let mut after: Option<RepoName> = match page.after.as_deref() {
        None => None,
        Some(text) => Some(text.parse().map_err(|_| ApiError::RequestInvalid("after: not a repository name".into()))?),
    };
    let admin = caller.require_admin().is_ok();
    let mut found = Vec::new();
    // Repositories are read with their counters, in pages, and filtered by
    // the caller's grants; every one costs a comparison, none a scan.
    while found.len() <= limit {
        let scanned = state.meta.repo_stats(after.as_ref(), SCAN_PAGE).await?;
        let Some((last, _)) = scanned.last().cloned() else { break };
        let full = scanned.len() == SCAN_PAGE;
        found.extend(scanned.into_iter().filter(|(repo, _)| admin || caller.require(Action::Pull, repo).is_ok()));
        after = Some(last);
        if !full {
            break;
        }
    }
    let next = page::split(&mut found, limit, |(name, _)| name.to_string());
    let repositories = found
        .into_iter()
        .map(|(name, s)| RepoSummary {
            name,
            tags: s.tags,
            live_tags: s.live_tags,
            blobs: s.links,
            bytes: s.bytes,
            last_push_at: s.last_push_at,
        })
        .collect();
    Ok(ApiJson(RepoList { repositories, next }))
}
