//! Trusted publishing routes: the ID token exchange (anyone with an ID token
//! may try; no `Authorization`) and the publishers (admin). The work is in
//! `crate::oidc`; every publisher change commits with its audit entry.

use amber_core::audit::Event;
use amber_core::oidc::{ExchangeRequest, ExchangedToken, Publisher, PublisherList, PublisherRequest};
use axum::extract::State;
use axum::http::StatusCode;
use time::OffsetDateTime;

use super::json::{ApiJson, JsonBody};
use super::paths::PublisherIdParam;
use crate::audit;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::meta::PublisherStore;
use crate::state::AppState;

/// Largest exchange body: an ID token is a few KiB, and anyone may send one.
const EXCHANGE_BODY_LIMIT: usize = 64 << 10;

pub async fn exchange(
    State(state): State<AppState>,
    body: JsonBody,
) -> ApiResult<(StatusCode, ApiJson<ExchangedToken>)> {
    let result = async {
        let request: ExchangeRequest = body.json_within(&state, EXCHANGE_BODY_LIMIT).await?;
        crate::oidc::exchange(
            &state.oidc,
            &state.meta,
            &state.signer,
            state.config.max_token_lifetime,
            &request.id_token,
        )
        .await
    }
    .await;
    state.metrics.oidc_exchange(match &result {
        Ok(_) => "minted",
        Err(err) => err.code(),
    });
    Ok((StatusCode::CREATED, ApiJson(result?)))
}

pub async fn create_publisher(
    State(state): State<AppState>,
    caller: Caller,
    body: JsonBody,
) -> ApiResult<(StatusCode, ApiJson<Publisher>)> {
    caller.require_admin()?;
    let request: PublisherRequest = body.json(&state).await?;
    let publisher = crate::oidc::new_publisher(&state.oidc, request, OffsetDateTime::now_utc())?;
    let event = Event::PublisherCreated { publisher: publisher.clone() };
    let draft = audit::Draft::shared(&state.signer, caller.actor(), vec![event]);
    state.meta.insert_publisher(&publisher, draft).await?;
    tracing::info!(publisher = %publisher.id, issuer = %publisher.issuer, by = %caller.token.info.id, "publisher created");
    Ok((StatusCode::CREATED, ApiJson(publisher)))
}

pub async fn list_publishers(State(state): State<AppState>, caller: Caller) -> ApiResult<ApiJson<PublisherList>> {
    caller.require_admin()?;
    Ok(ApiJson(PublisherList { publishers: state.meta.publishers().await? }))
}

async fn find(state: &AppState, id: &str) -> ApiResult<Publisher> {
    state.meta.publishers().await?.into_iter().find(|p| p.id == id).ok_or(ApiError::PublisherUnknown)
}

pub async fn show_publisher(
    State(state): State<AppState>,
    caller: Caller,
    PublisherIdParam(id): PublisherIdParam,
) -> ApiResult<ApiJson<Publisher>> {
    caller.require_admin()?;
    Ok(ApiJson(find(&state, &id).await?))
}

/// Answers the publisher deleted. Tokens it minted live out their (short)
/// lives unless revoked: `GET /v1/tokens` shows which carry its id.
pub async fn delete_publisher(
    State(state): State<AppState>,
    caller: Caller,
    PublisherIdParam(id): PublisherIdParam,
) -> ApiResult<ApiJson<Publisher>> {
    caller.require_admin()?;
    let publisher = find(&state, &id).await?;
    let event = Event::PublisherDeleted { publisher: publisher.clone() };
    let draft = audit::Draft::shared(&state.signer, caller.actor(), vec![event]);
    if !state.meta.delete_publisher(&id, draft).await? {
        return Err(ApiError::PublisherUnknown);
    }
    tracing::info!(publisher = %id, by = %caller.token.info.id, "publisher deleted");
    Ok(ApiJson(publisher))
}
