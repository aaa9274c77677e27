//! Token routes: mint, list, show, rotate and revoke (admin), and whoami.
//! Every change is committed together with its audit entry.

use std::time::Duration;

use amber_core::audit::Event;
use amber_core::wire::{CreateTokenRequest, CreatedToken, RotateTokenRequest, TokenInfo, TokenList};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use time::OffsetDateTime;

use super::json::{ApiJson, JsonBody};
use super::page;
use super::paths::TokenIdParam;
use crate::audit;
use crate::auth::{Caller, TokenSpec, issue_token};
use crate::error::{ApiError, ApiResult};
use crate::meta::Revocation;
use crate::meta::TokenStore;
use crate::state::AppState;

pub async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    body: JsonBody,
) -> ApiResult<(StatusCode, ApiJson<CreatedToken>)> {
    caller.require_admin()?;
    let request: CreateTokenRequest = body.json(&state).await?;
    let spec = TokenSpec {
        name: request.name,
        pipeline: request.pipeline,
        grants: request.grants,
        lifetime: request.expires_in.map(Duration::from_secs),
    };
    let (info, secret) = issue_token(&state.meta, &state.config, &state.signer, caller.actor(), spec).await?;
    tracing::info!(token = %info.id, name = %info.name, by = %caller.token.info.id, "token created");
    Ok((StatusCode::CREATED, ApiJson(CreatedToken { info, token: secret.expose().to_owned() })))
}

pub async fn whoami(caller: Caller) -> ApiJson<TokenInfo> {
    ApiJson(caller.token.info.clone())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    /// Tokens per page, 1 to 1000 (default 100).
    limit: Option<usize>,
    /// The `next` cursor of the previous page.
    after: Option<String>,
}

pub async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<ApiJson<TokenList>> {
    caller.require_admin()?;
    let Query(page) = query.map_err(|e| ApiError::RequestInvalid(e.body_text()))?;
    let limit = page::limit(page.limit, 100, 1000)?;
    let records = state.meta.list_tokens(page.after.as_deref(), limit + 1).await?;
    let mut tokens: Vec<TokenInfo> = records.into_iter().map(|r| r.info).collect();
    let next = page::split(&mut tokens, limit, |t| t.id.to_string());
    Ok(ApiJson(TokenList { tokens, next }))
}

pub async fn show_token(
    State(state): State<AppState>,
    caller: Caller,
    TokenIdParam(id): TokenIdParam,
) -> ApiResult<ApiJson<TokenInfo>> {
    caller.require_admin()?;
    let record = state.meta.token(&id).await?.ok_or(ApiError::TokenUnknown)?;
    Ok(ApiJson(record.info))
}

pub async fn rotate_token(
    State(state): State<AppState>,
    caller: Caller,
    TokenIdParam(id): TokenIdParam,
    body: JsonBody,
) -> ApiResult<(StatusCode, ApiJson<CreatedToken>)> {
    caller.require_admin()?;
    let body = body.bytes(&state).await?;
    // An empty body means the defaults, so `curl -X POST` is enough.
    let request: RotateTokenRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RotateTokenRequest::default()
    } else {
        super::json::parse(&body).map_err(|e| ApiError::RequestInvalid(format!("invalid JSON body: {e}")))?
    };
    let (info, secret) =
        crate::auth::rotate(&state.meta, &state.config, &state.signer, caller.actor(), &id, request.grace_seconds)
            .await?;
    tracing::info!(token = %id, new_token = %info.id, "token rotated");
    Ok((StatusCode::CREATED, ApiJson(CreatedToken { info, token: secret.expose().to_owned() })))
}

pub async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    TokenIdParam(id): TokenIdParam,
) -> ApiResult<ApiJson<TokenInfo>> {
    caller.require_admin()?;
    let now = OffsetDateTime::now_utc();
    let draft = audit::Draft::shared(&state.signer, caller.actor(), vec![Event::TokenRevoked { token_id: id.clone() }]);
    match state.meta.revoke_token(&id, now, draft).await? {
        Revocation::Revoked(record) => {
            tracing::info!(token = %id, "token revoked");
            Ok(ApiJson(record.info))
        }
        Revocation::AlreadyRevoked(record) => Ok(ApiJson(record.info)),
        Revocation::Unknown => Err(ApiError::TokenUnknown),
    }
}
