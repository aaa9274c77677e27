//! `GET /v1/audit`: the hash-chained audit log, paginated, with the signed
//! checkpoint of its head (admin).

use amber_core::audit::AuditPage;
use axum::extract::{Query, State};
use serde::Deserialize;

use super::json::ApiJson;
use super::page;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::meta::AuditStore;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    /// Entries per page, 1 to 10000 (default 1000).
    limit: Option<usize>,
    /// Sequence number to start after (the `next` of the previous page).
    after: Option<u64>,
}

pub async fn get_audit(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<ApiJson<AuditPage>> {
    caller.require_admin()?;
    let Query(page) = query.map_err(|e| ApiError::RequestInvalid(e.body_text()))?;
    let limit = page::limit(page.limit, 1000, 10_000)?;
    // The checkpoint is read first: entries appended meanwhile only extend the
    // chain past it, which a verifier accepts.
    let checkpoint = state.meta.audit_checkpoint().await?;
    let mut entries = state.meta.audit_entries(page.after.unwrap_or(0), limit + 1).await?;
    let next = page::split(&mut entries, limit, |e| e.seq);
    Ok(ApiJson(AuditPage { entries, next, checkpoint }))
}
