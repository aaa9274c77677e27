//! Who is calling. [`resolve`] finds the bearer (or Basic) token of a
//! request (the `authenticate` middleware of `http/` calls it once per
//! request, and audits every `401` and `403` through [`Denials`]); the
//! `Caller` extractor hands the token to handlers,
//! which state what they need in one line with [`Caller::require`].
//! Default deny: a token may do only what a grant names.

mod denials;
pub mod initial;
mod issue;
pub mod scoped;

use std::sync::Arc;

use amber_core::audit::Actor;
use amber_core::{Action, RepoName, TokenSecret};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use base64::Engine;
use time::{Duration, OffsetDateTime};

pub use denials::{Denial, Denials, WINDOW as DENIAL_WINDOW};
pub use issue::{TokenSpec, check_grants, issue_token, rotate};

use crate::error::{ApiError, ApiResult};
use crate::meta::Meta;
use crate::meta::TokenRecord;
use crate::meta::TokenStore;
use crate::signing::Signer;

/// `last_used_at` is refreshed at most this often, so auth adds no write to
/// every request.
const LAST_USED_GRANULARITY: Duration = Duration::minutes(5);
/// Tokens closer than this to expiry (or a tenth of their lifetime, if less)
/// get a `Warning` header, so CI logs show it before it breaks.
const EXPIRY_WARNING: Duration = Duration::days(7);

/// The outcome of authenticating one request.
#[derive(Clone, Debug)]
pub enum Authentication {
    Missing,
    Failed(&'static str),
    Unavailable,
    Token(Arc<TokenRecord>),
    /// A scoped token of the Docker token flow: its parent, with the
    /// scoped token's grants in place of the parent's.
    Scoped(Arc<TokenRecord>),
}

/// An authenticated request's token.
#[derive(Debug)]
pub struct Caller {
    pub token: Arc<TokenRecord>,
    /// Authenticated by a scoped token (`GET /v2/token`): a denial asks for
    /// a token of a wider scope rather than refusing outright.
    pub scoped: bool,
}

impl Caller {
    fn allows(&self, action: Action, repo: Option<&RepoName>) -> bool {
        self.token
            .info
            .grants
            .iter()
            .any(|grant| grant.actions.contains(&action) && repo.is_none_or(|repo| grant.repos.matches(repo)))
    }

    /// Succeeds when a grant of this token allows `action` on `repo`.
    pub fn require(&self, action: Action, repo: &RepoName) -> ApiResult<()> {
        if self.allows(action, Some(repo)) {
            Ok(())
        } else {
            Err(ApiError::Denied { action: action.to_string(), repo: repo.to_string() })
        }
    }

    /// Succeeds for admin tokens (token and key management, the audit log).
    pub fn require_admin(&self) -> ApiResult<()> {
        if self.allows(Action::Admin, None) {
            Ok(())
        } else {
            Err(ApiError::Denied { action: "admin".into(), repo: "*".into() })
        }
    }

    pub fn actor(&self) -> Actor {
        actor(&self.token)
    }
}

pub fn actor(token: &TokenRecord) -> Actor {
    Actor { token_id: Some(token.info.id.clone()), token_name: Some(token.info.name.clone()) }
}

/// What a request presents: an Amber token's secret, or a scoped token.
enum Presented {
    Secret(TokenSecret),
    Scoped(String),
}

/// The credential from `Authorization: Bearer <secret>` or `Basic base64(user:<secret>)`.
fn presented_secret(headers: &HeaderMap) -> Result<Option<Presented>, &'static str> {
    let Some(header) = headers.get(AUTHORIZATION) else { return Ok(None) };
    let header = header.to_str().map_err(|_| "malformed Authorization header")?;
    let (scheme, value) = header.split_once(' ').ok_or("malformed Authorization header")?;
    let secret = if scheme.eq_ignore_ascii_case("bearer") {
        value.trim().to_owned()
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or("malformed Basic credentials")?;
        let (_, password) = decoded.split_once(':').ok_or("malformed Basic credentials")?;
        password.to_owned()
    } else {
        return Err("unsupported authorization scheme: use Bearer or Basic");
    };
    if secret.starts_with(scoped::PREFIX) {
        return Ok(Some(Presented::Scoped(secret)));
    }
    // The checksum rejects garbage and typos before any lookup.
    secret.parse().map(|s| Some(Presented::Secret(s))).map_err(|_| "malformed token")
}

pub fn secret_hash(secret: &TokenSecret) -> String {
    blake3::Hash::from_bytes(secret.hash()).to_hex().to_string()
}

/// Resolves the request's token: read from the store on every request, so
/// that revocation and expiry take effect at once, on every replica.
pub async fn resolve(meta: &Meta, signer: &Signer, headers: &HeaderMap) -> Authentication {
    let secret = match presented_secret(headers) {
        Ok(Some(Presented::Secret(secret))) => secret,
        Ok(Some(Presented::Scoped(token))) => return resolve_scoped(meta, signer, &token).await,
        Ok(None) => return Authentication::Missing,
        Err(reason) => return Authentication::Failed(reason),
    };
    // Read from the store on every request: revocation and expiry take effect
    // at once, on every replica.
    let token = match meta.token_by_hash(&secret_hash(&secret)).await {
        Ok(Some(token)) => token,
        Ok(None) => return Authentication::Failed("unknown token"),
        Err(err) => {
            tracing::error!(error = %err, "token lookup failed");
            return Authentication::Unavailable;
        }
    };
    if let Err(reason) = usable(&token) {
        return Authentication::Failed(reason);
    }
    let now = OffsetDateTime::now_utc();
    if token.info.last_used_at.is_none_or(|at| now - at > LAST_USED_GRANULARITY)
        && let Err(err) = meta.touch_token(&token.info.id, now).await
    {
        tracing::warn!(error = %err, "recording token use failed");
    }
    Authentication::Token(Arc::new(token))
}

/// A scoped token: its parent, read again (revoked, expired or rotated, the
/// scoped token ends with it), with the scoped token's grants.
async fn resolve_scoped(meta: &Meta, signer: &Signer, token: &str) -> Authentication {
    let Some((claims, payload, mac)) = scoped::claims(token) else {
        return Authentication::Failed("malformed token");
    };
    let parent = match meta.token(&claims.token).await {
        Ok(Some(parent)) => parent,
        Ok(None) => return Authentication::Failed("unknown token"),
        Err(err) => {
            tracing::error!(error = %err, "token lookup failed");
            return Authentication::Unavailable;
        }
    };
    if !scoped::verify(signer, &parent, &payload, &mac) {
        return Authentication::Failed("unknown token");
    }
    if claims.exp <= OffsetDateTime::now_utc().unix_timestamp() {
        return Authentication::Failed("scoped token has expired; ask /v2/token for another");
    }
    if let Err(reason) = usable(&parent) {
        return Authentication::Failed(reason);
    }
    let mut scoped = parent;
    scoped.info.grants = claims.grants;
    Authentication::Scoped(Arc::new(scoped))
}

/// Whether a stored token may be used now.
fn usable(token: &TokenRecord) -> Result<(), &'static str> {
    let now = OffsetDateTime::now_utc();
    if token.info.revoked_at.is_some_and(|at| at <= now) {
        return Err("token has been revoked");
    }
    if token.info.expires_at <= now {
        return Err(if token.info.rotated_to.is_some() {
            "token was rotated and its grace period has ended"
        } else {
            "token has expired"
        });
    }
    Ok(())
}

pub fn expiry_warning(token: &TokenRecord) -> Option<HeaderValue> {
    let info = &token.info;
    let expires = info.expires_at.format(&time::format_description::well_known::Rfc3339).ok()?;
    let text = if let Some(replacement) = &info.rotated_to {
        // A rotated secret always warns: it stops working when its grace ends.
        format!(
            "299 amber \"token {} was rotated into {replacement}; this secret stops working at {expires}\"",
            info.id
        )
    } else {
        let remaining = info.expires_at - OffsetDateTime::now_utc();
        let threshold = EXPIRY_WARNING.min((info.expires_at - info.created_at) / 10);
        if remaining >= threshold {
            return None;
        }
        format!("299 amber \"token {} expires at {expires}; rotate it\"", info.id)
    };
    HeaderValue::try_from(text).ok()
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Authentication>() {
            Some(Authentication::Token(token)) => Ok(Self { token: token.clone(), scoped: false }),
            Some(Authentication::Scoped(token)) => Ok(Self { token: token.clone(), scoped: true }),
            Some(Authentication::Failed(reason)) => Err(ApiError::Unauthorized(reason)),
            Some(Authentication::Unavailable) => Err(ApiError::Unavailable),
            Some(Authentication::Missing) => {
                Err(ApiError::Unauthorized("authentication required: send Authorization: Bearer <token>"))
            }
            None => Err(ApiError::internal(anyhow::anyhow!("authenticate middleware is not installed"))),
        }
    }
}
