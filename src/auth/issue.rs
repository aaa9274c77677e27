//! Minting tokens: validating what is asked for and storing only the hash.
//!
//! Grant rules (least privilege): every grant names at least one action;
//! `admin` is granted only on `*`, and `*` only carries `admin`, so admin power
//! and push/pull never come in one grant; a lifetime is always set and never
//! exceeds the configured maximum.

use std::time::Duration;

use amber_core::audit::{Actor, Event};
use amber_core::wire::TokenInfo;
use amber_core::{Action, Grant, RepoPattern, TokenId, TokenSecret};
use time::OffsetDateTime;

use super::secret_hash;
use crate::audit::Draft;
use crate::config::Config;
use crate::error::{ApiError, ApiResult};
use crate::meta::TokenStore;
use crate::meta::{Meta, Rotation, TokenRecord};
use crate::signing::Signer;

/// What a new token should be.
#[derive(Debug)]
pub struct TokenSpec {
    pub name: String,
    pub pipeline: Option<String>,
    pub grants: Vec<Grant>,
    pub lifetime: Option<Duration>,
}

fn check_label(what: &str, value: &str) -> ApiResult<()> {
    if value.trim().is_empty() || value.len() > 128 || value.chars().any(char::is_control) {
        return Err(ApiError::RequestInvalid(format!("{what} must be 1 to 128 printable characters")));
    }
    Ok(())
}

/// Applies the grant rules above; sorts and de-duplicates each grant's actions.
pub fn check_grants(grants: &mut [Grant]) -> ApiResult<()> {
    if grants.is_empty() {
        return Err(ApiError::RequestInvalid("a token needs at least one grant".into()));
    }
    for grant in grants.iter_mut() {
        grant.actions.sort();
        grant.actions.dedup();
        let admin = grant.actions.contains(&Action::Admin);
        let any = grant.repos == RepoPattern::Any;
        if grant.actions.is_empty() {
            return Err(ApiError::RequestInvalid(format!("grant on {} names no action", grant.repos)));
        }
        if admin && (!any || grant.actions.len() > 1) {
            return Err(ApiError::RequestInvalid("the admin action is granted alone, on repos \"*\"".into()));
        }
        if any && !admin {
            return Err(ApiError::RequestInvalid(
                "repos \"*\" is allowed only for admin grants; name a repository or owner/*".into(),
            ));
        }
    }
    Ok(())
}

/// Default grace period of a rotated secret.
const DEFAULT_GRACE: u64 = 60 * 60;
/// Longest grace period a rotation may ask for.
const MAX_GRACE: u64 = 30 * 24 * 60 * 60;

/// Validates `spec`, stores the new token, and returns it with its secret,
/// which exists nowhere else from here on.
/// The token is stored together with its `token_created` audit entry, made
/// by `actor` and signed by `signer`.
pub async fn issue_token(
    meta: &Meta,
    config: &Config,
    signer: &std::sync::Arc<Signer>,
    actor: Actor,
    spec: TokenSpec,
) -> ApiResult<(TokenInfo, TokenSecret)> {
    let (record, secret) = prepare(config, spec)?;
    let draft = Draft::shared(signer, actor, vec![token_created(&record.info)]);
    meta.insert_token(&record, draft).await?;
    Ok((record.info, secret))
}

/// [`issue_token`] only if the store holds no token at all (across
/// replicas, one of them mints); `None`: it holds one, nothing was minted.
/// `keep` gets the secret before the token is stored; if it fails, nothing is.
pub async fn issue_first_token(
    meta: &Meta,
    config: &Config,
    signer: &std::sync::Arc<Signer>,
    actor: Actor,
    spec: TokenSpec,
    keep: impl FnOnce(&TokenSecret) -> std::io::Result<()>,
) -> anyhow::Result<Option<TokenInfo>> {
    let (record, secret) = prepare(config, spec).map_err(|e| anyhow::anyhow!("{e}"))?;
    keep(&secret)?;
    let draft = Draft::shared(signer, actor, vec![token_created(&record.info)]);
    Ok(meta.insert_first_token(&record, draft).await?.then_some(record.info))
}

/// Checks `spec` and makes the token and its secret.
fn prepare(config: &Config, mut spec: TokenSpec) -> ApiResult<(TokenRecord, TokenSecret)> {
    check_label("name", &spec.name)?;
    if let Some(pipeline) = &spec.pipeline {
        check_label("pipeline", pipeline)?;
    }
    check_grants(&mut spec.grants)?;
    let lifetime = spec.lifetime.unwrap_or(config.default_token_lifetime);
    if lifetime.is_zero() || lifetime > config.max_token_lifetime {
        return Err(ApiError::RequestInvalid(format!(
            "expires_in must be between 1 and {} seconds",
            config.max_token_lifetime.as_secs()
        )));
    }
    let mut rng = rand::rngs::OsRng;
    let secret = TokenSecret::generate(&mut rng);
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).expect("0 is a valid nanosecond");
    let info = TokenInfo {
        id: TokenId::generate(&mut rng),
        name: spec.name,
        pipeline: spec.pipeline,
        grants: spec.grants,
        created_at: now,
        expires_at: now + lifetime,
        last_used_at: None,
        revoked_at: None,
        rotated_from: None,
        rotated_to: None,
        ci: None,
    };
    let record = TokenRecord { secret_hash: secret_hash(&secret), info };
    Ok((record, secret))
}

/// Rotates token `id`: a new secret and id with the same grants, for the
/// same lifetime (at most `max_token_lifetime`); the old secret works
/// `grace_seconds` more (default an hour, at most 30 days). Recorded with
/// its `token_rotated` entry in one transaction. A token minted by trusted
/// publishing is not rotated: a new run exchanges a new ID token.
pub async fn rotate(
    meta: &Meta,
    config: &Config,
    signer: &std::sync::Arc<Signer>,
    actor: Actor,
    id: &TokenId,
    grace_seconds: Option<u64>,
) -> ApiResult<(TokenInfo, TokenSecret)> {
    let grace = grace_seconds.unwrap_or(DEFAULT_GRACE);
    if grace > MAX_GRACE {
        return Err(ApiError::RequestInvalid(format!("grace_seconds must be at most {MAX_GRACE}")));
    }
    let old = meta.token(id).await?.ok_or(ApiError::TokenUnknown)?;
    if old.info.ci.is_some() {
        // Its life is one CI run's: a new run exchanges a new ID token.
        return Err(ApiError::TokenInactive(
            "a token minted by trusted publishing is not rotated; exchange a new ID token",
        ));
    }
    let mut rng = rand::rngs::OsRng;
    let secret = TokenSecret::generate(&mut rng);
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).expect("0 is a valid nanosecond");
    let lifetime = (old.info.expires_at - old.info.created_at)
        .min(time::Duration::try_from(config.max_token_lifetime).map_err(ApiError::internal)?);
    let info = TokenInfo {
        id: TokenId::generate(&mut rng),
        created_at: now,
        expires_at: now + lifetime,
        last_used_at: None,
        revoked_at: None,
        rotated_from: Some(old.info.id.clone()),
        rotated_to: None,
        ..old.info.clone()
    };
    let record = TokenRecord { info: info.clone(), secret_hash: secret_hash(&secret) };
    let grace_end = now + time::Duration::seconds(grace as i64);
    let event = Event::TokenRotated { token_id: id.clone(), new_token_id: info.id.clone(), grace_seconds: grace };
    let draft = Draft::shared(signer, actor, vec![event]);
    match meta.rotate_token(&record, grace_end, draft).await? {
        Rotation::Rotated => {}
        Rotation::Unknown => return Err(ApiError::TokenUnknown),
        Rotation::Inactive(reason) => return Err(ApiError::TokenInactive(reason)),
    }
    tracing::debug!(token = %id, grace, "token rotated");
    Ok((info, secret))
}

fn token_created(info: &TokenInfo) -> Event {
    Event::TokenCreated {
        token_id: info.id.clone(),
        name: info.name.clone(),
        pipeline: info.pipeline.clone(),
        grants: info.grants.clone(),
        expires_at: info.expires_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(repos: &str, actions: &[Action]) -> Grant {
        Grant { repos: repos.parse().unwrap(), actions: actions.to_vec() }
    }

    #[test]
    fn least_privilege_grant_rules() {
        assert!(check_grants(&mut [grant("acme/*", &[Action::Pull, Action::Push, Action::Pull])]).is_ok());
        assert!(check_grants(&mut [grant("*", &[Action::Admin])]).is_ok());
        assert!(check_grants(&mut []).is_err());
        assert!(check_grants(&mut [grant("acme/web", &[])]).is_err());
        assert!(check_grants(&mut [grant("*", &[Action::Pull])]).is_err());
        assert!(check_grants(&mut [grant("acme/*", &[Action::Admin])]).is_err());
        assert!(check_grants(&mut [grant("*", &[Action::Admin, Action::Push])]).is_err());
    }
}
