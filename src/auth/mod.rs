//! Who is calling: the `Caller` extractor authenticates the bearer (or Basic)
//! token, and handlers state what they need in one line with
//! [`Caller::require`]. Default deny: a token may do only what a grant names.

mod issue;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine;
use time::{Duration, OffsetDateTime};

use amber_core::{Action, RepoName, TokenSecret};

pub use issue::{TokenSpec, issue_token};

use crate::error::{ApiError, ApiResult};
use crate::meta::{MetaStore, TokenRecord};
use crate::state::AppState;

/// `last_used_at` is refreshed at most this often, so auth adds no write to
/// every request.
const LAST_USED_GRANULARITY: Duration = Duration::minutes(5);

/// An authenticated request's token.
#[derive(Debug)]
pub struct Caller {
    pub token: TokenRecord,
}

impl Caller {
    fn allows(&self, action: Action, repo: Option<&RepoName>) -> bool {
        self.token.info.grants.iter().any(|grant| {
            grant.actions.contains(&action) && repo.is_none_or(|repo| grant.repos.matches(repo))
        })
    }

    /// Succeeds when a grant of this token allows `action` on `repo`.
    pub fn require(&self, action: Action, repo: &RepoName) -> ApiResult<()> {
        if self.allows(action, Some(repo)) {
            Ok(())
        } else {
            Err(ApiError::Denied {
                action: action.to_string(),
                repo: repo.to_string(),
            })
        }
    }

    /// Succeeds for admin tokens (token and key management).
    pub fn require_admin(&self) -> ApiResult<()> {
        if self.allows(Action::Admin, None) {
            Ok(())
        } else {
            Err(ApiError::Denied {
                action: "admin".into(),
                repo: "*".into(),
            })
        }
    }
}

/// The secret from `Authorization: Bearer <secret>` or `Basic base64(user:<secret>)`.
fn presented_secret(parts: &Parts) -> ApiResult<TokenSecret> {
    let header = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or(ApiError::Unauthorized(
            "authentication required: send Authorization: Bearer <token>",
        ))?;
    let header = header
        .to_str()
        .map_err(|_| ApiError::Unauthorized("malformed Authorization header"))?;
    let (scheme, value) = header
        .split_once(' ')
        .ok_or(ApiError::Unauthorized("malformed Authorization header"))?;
    let secret = if scheme.eq_ignore_ascii_case("bearer") {
        value.trim().to_owned()
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or(ApiError::Unauthorized("malformed Basic credentials"))?;
        let (_, password) = decoded
            .split_once(':')
            .ok_or(ApiError::Unauthorized("malformed Basic credentials"))?;
        password.to_owned()
    } else {
        return Err(ApiError::Unauthorized(
            "unsupported authorization scheme: use Bearer or Basic",
        ));
    };
    // The checksum rejects garbage and typos before any lookup.
    secret
        .parse()
        .map_err(|_| ApiError::Unauthorized("malformed token"))
}

pub fn secret_hash(secret: &TokenSecret) -> String {
    blake3::Hash::from_bytes(secret.hash()).to_hex().to_string()
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let secret = presented_secret(parts)?;
        // Read from the store on every request: revocation and expiry take effect
        // at once, on every replica.
        let token = state
            .meta
            .token_by_hash(&secret_hash(&secret))
            .await?
            .ok_or(ApiError::Unauthorized("unknown token"))?;
        let now = OffsetDateTime::now_utc();
        if token.info.revoked_at.is_some_and(|at| at <= now) {
            return Err(ApiError::Unauthorized("token has been revoked"));
        }
        if token.info.expires_at <= now {
            return Err(ApiError::Unauthorized("token has expired"));
        }
        if token
            .info
            .last_used_at
            .is_none_or(|at| now - at > LAST_USED_GRANULARITY)
        {
            state.meta.touch_token(&token.info.id, now).await?;
        }
        Ok(Self { token })
    }
}
