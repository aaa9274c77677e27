//! Token routes: mint a token (admin) and tell a caller who it is.

use std::time::Duration;

use amber_core::wire::{CreateTokenRequest, CreatedToken, TokenInfo};
use axum::extract::State;
use axum::http::StatusCode;

use super::json::ApiJson;
use crate::auth::{Caller, TokenSpec, issue_token};
use crate::error::ApiResult;
use crate::state::AppState;

pub async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateTokenRequest>,
) -> ApiResult<(StatusCode, ApiJson<CreatedToken>)> {
    caller.require_admin()?;
    let spec = TokenSpec {
        name: request.name,
        pipeline: request.pipeline,
        grants: request.grants,
        lifetime: request.expires_in.map(Duration::from_secs),
    };
    let (info, secret) = issue_token(&state.meta, &state.config, spec).await?;
    tracing::info!(token = %info.id, name = %info.name, by = %caller.token.info.id, "token created");
    Ok((
        StatusCode::CREATED,
        ApiJson(CreatedToken {
            info,
            token: secret.expose().to_owned(),
        }),
    ))
}

pub async fn whoami(caller: Caller) -> ApiJson<TokenInfo> {
    ApiJson(caller.token.info)
}
