//! The exchange: a verified ID token a publisher trusts becomes a token of
//! that publisher's grants, for at most an hour, recorded with the claims
//! it was minted from. The `(iss, jti)` is recorded in the same transaction,
//! so an ID token is exchanged once, whatever races.

use amber_core::audit::{Actor, Event};
use amber_core::oidc::ExchangedToken;
use amber_core::wire::TokenInfo;
use amber_core::{TokenId, TokenSecret};
use time::OffsetDateTime;

use super::verify::{self, LEEWAY};
use super::{OidcError, trust};
use crate::audit::Draft;
use crate::auth::secret_hash;
use crate::error::ApiResult;
use crate::meta::{Exchange, Replay, TokenRecord};
use crate::meta::{PublisherStore, TokenStore};
use std::sync::Arc;

use super::Oidc;
use crate::meta::Meta;
use crate::signing::Signer;

/// Exchanges `id_token` for a token of the publisher that trusts it, living
/// at most `max_token_lifetime`.
pub async fn exchange(
    oidc: &Oidc,
    meta: &Meta,
    signer: &Arc<Signer>,
    max_token_lifetime: std::time::Duration,
    id_token: &str,
) -> ApiResult<ExchangedToken> {
    let now = OffsetDateTime::now_utc();
    let verified = verify::verify(oidc, id_token, now).await?;
    trust::check_forms(&verified)?;
    let publishers = meta.publishers().await?;
    let publisher = trust::choose(&publishers, &verified)?;
    let ci = trust::identity(publisher, &verified);
    let pipeline = trust::pipeline(publisher, &ci, &verified.issuer.config.name);

    let lifetime = publisher.token_lifetime.min(max_token_lifetime.as_secs());
    let created_at = now.replace_nanosecond(0).expect("0 is a valid nanosecond");
    let mut rng = rand::rngs::OsRng;
    let secret = TokenSecret::generate(&mut rng);
    let info = TokenInfo {
        id: TokenId::generate(&mut rng),
        name: publisher.name.clone(),
        pipeline: Some(pipeline),
        grants: publisher.grants.clone(),
        created_at,
        expires_at: created_at + time::Duration::seconds(lifetime as i64),
        last_used_at: None,
        revoked_at: None,
        rotated_from: None,
        rotated_to: None,
        ci: Some(ci.clone()),
    };
    let event = Event::TokenExchanged {
        token_id: info.id.clone(),
        publisher: publisher.id.clone(),
        kid: verified.kid.clone(),
        jti: verified.jti.clone(),
        ci,
        grants: info.grants.clone(),
        expires_at: info.expires_at,
    };
    let actor =
        Actor { token_id: None, token_name: Some(format!("ID token of issuer {}", verified.issuer.config.name)) };
    let draft = Draft::shared(signer, actor, vec![event]);
    // Past `exp` and the leeway the token is refused as expired anyway.
    let until = OffsetDateTime::from_unix_timestamp(verified.exp.saturating_add(LEEWAY).min(253_402_300_799))
        .map_err(crate::error::ApiError::internal)?;
    let replay = Replay { issuer: verified.issuer.config.url.clone(), jti: verified.jti.clone(), until };
    let record = TokenRecord { info: info.clone(), secret_hash: secret_hash(&secret) };
    match meta.exchange_token(&record, &publisher.id, &replay, draft).await? {
        Exchange::Minted => {}
        Exchange::Replayed => return Err(OidcError::Replayed.into()),
        Exchange::PublisherGone => {
            let message = format!("publisher {} was deleted", publisher.id);
            return Err(OidcError::NoPublisher { message, repository: None }.into());
        }
    }
    tracing::info!(token = %info.id, publisher = %publisher.id, pipeline = ?info.pipeline, "ID token exchanged");
    Ok(ExchangedToken { info, token: secret.expose().to_owned(), publisher: publisher.id.clone() })
}
