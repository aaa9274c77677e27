//! Who calls `/v2/`: an Amber token as `Bearer` or as the password of HTTP
//! Basic (any user name: `docker login`, `helm registry login`, `oras
//! login`), or a scoped token of the Docker token flow from `GET /v2/token`.
//! A request without a usable one gets `401` with both challenges; a scoped
//! token that lacks an action gets `401` with `insufficient_scope`, so that
//! the client asks for a token of the scope it needs.

use amber_core::{Action, RepoName};
use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::header::WWW_AUTHENTICATE;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, Uri, header};
use axum::response::{IntoResponse, Response};

use super::error::{OciError, OciResult};
use crate::auth::scoped::{self, Scope};
use crate::auth::{Authentication, Caller};
use crate::error::ApiError;
use crate::meta::TokenStore;
use crate::state::AppState;

/// The scope a request needs, from its path and method.
fn needed_scope(method: &Method, path: &str) -> Option<String> {
    let rest = path.strip_prefix("/v2/")?;
    let name = ["/blobs/", "/manifests/", "/tags/", "/referrers/"]
        .iter()
        .filter_map(|marker| rest.find(marker).map(|at| &rest[..at]))
        .min_by_key(|n| n.len())?;
    let actions = if matches!(*method, Method::GET | Method::HEAD) { "pull" } else { "pull,push" };
    Some(format!("repository:{name}:{actions}"))
}

/// The realm of the token endpoint: this server as the client reached it.
fn realm(state: &AppState, host: Option<&HeaderValue>) -> String {
    if let Some(url) = &state.config.public_url {
        return format!("{}/v2/token", url.as_str().trim_end_matches('/'));
    }
    let host = host.and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    // Only a host name and port: never echo anything else into a header.
    let host: String =
        host.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '-' | '[' | ']')).collect();
    let scheme = if state.config.tls.is_some() { "https" } else { "http" };
    format!("{scheme}://{host}/v2/token")
}

/// `401` with the Bearer challenge (for the token flow) and Basic.
pub fn challenge(
    state: &AppState,
    host: Option<&HeaderValue>,
    scope: Option<&str>,
    error: ApiError,
    insufficient: bool,
) -> OciError {
    let mut bearer = format!("Bearer realm=\"{}\",service=\"amber\"", realm(state, host));
    if let Some(scope) = scope {
        bearer.push_str(&format!(",scope=\"{scope}\""));
    }
    if insufficient {
        bearer.push_str(",error=\"insufficient_scope\"");
    }
    let mut error = OciError::from(error);
    if let Ok(value) = HeaderValue::try_from(bearer) {
        error.append(WWW_AUTHENTICATE, value);
    }
    error.append(WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"amber\""));
    error
}

/// The caller of a `/v2/` route.
pub struct OciCaller {
    pub caller: Caller,
    /// The `Host` the request named: the realm of a challenge.
    host: Option<HeaderValue>,
}

impl OciCaller {
    /// Succeeds when the caller may do `action` on `repo`; a scoped token
    /// that may not is asked to come back with a wider one.
    pub fn require(&self, state: &AppState, action: Action, repo: &RepoName) -> OciResult<()> {
        match self.caller.require(action, repo) {
            Ok(()) => Ok(()),
            Err(ApiError::Denied { .. }) if self.caller.scoped => {
                let actions = if action == Action::Pull { "pull" } else { "pull,push" };
                let scope = format!("repository:{repo}:{actions}");
                let reason = "the token's scope does not cover this request";
                Err(challenge(state, self.host.as_ref(), Some(&scope), ApiError::Unauthorized(reason), true))
            }
            Err(denied) => Err(denied.into()),
        }
    }
}

impl FromRequestParts<AppState> for OciCaller {
    type Rejection = OciError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, OciError> {
        let scope = needed_scope(&parts.method, parts.uri.path());
        let caller = match parts.extensions.get::<Authentication>() {
            Some(Authentication::Token(token)) => Caller { token: token.clone(), scoped: false },
            Some(Authentication::Scoped(token)) => Caller { token: token.clone(), scoped: true },
            Some(Authentication::Unavailable) => return Err(ApiError::Unavailable.into()),
            Some(Authentication::Failed(reason)) => {
                return Err(challenge(
                    state,
                    parts.headers.get(header::HOST),
                    scope.as_deref(),
                    ApiError::Unauthorized(reason),
                    false,
                ));
            }
            Some(Authentication::Missing) => {
                return Err(challenge(
                    state,
                    parts.headers.get(header::HOST),
                    scope.as_deref(),
                    ApiError::Unauthorized(
                        "authentication required: an Amber token as Bearer, or as the password of Basic",
                    ),
                    false,
                ));
            }
            None => return Err(ApiError::internal(anyhow::anyhow!("authenticate middleware is not installed")).into()),
        };
        Ok(Self { caller, host: parts.headers.get(header::HOST).cloned() })
    }
}

impl OciCaller {
    /// A scoped token whose parent may pull `from` but whose scope does not
    /// cover it is asked to come back with both scopes (as clients do, to
    /// mount); any other caller that cannot pull `from` gets a plain upload.
    pub async fn widen_for_mount(&self, state: &AppState, repo: &RepoName, from: &RepoName) -> OciResult<()> {
        if !self.caller.scoped || self.caller.require(Action::Pull, from).is_ok() {
            return Ok(());
        }
        let Some(parent) = state.meta.token(&self.caller.token.info.id).await? else { return Ok(()) };
        let parent = Caller { token: std::sync::Arc::new(parent), scoped: false };
        if parent.require(Action::Pull, from).is_err() {
            return Ok(());
        }
        let scope = format!("repository:{repo}:pull,push repository:{from}:pull");
        let reason = "the token's scope does not cover the mount's source";
        Err(challenge(state, self.host.as_ref(), Some(&scope), ApiError::Unauthorized(reason), true))
    }
}

/// `GET /v2/`: the API is here, for this caller.
pub async fn base(_caller: OciCaller) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], "{}").into_response()
}

/// `GET /v2/token`: the Docker token flow. Authenticated with an Amber token
/// (Basic or Bearer); answers a scoped token for the requested scopes as far
/// as that token's grants reach.
pub async fn token(State(state): State<AppState>, caller: OciCaller, uri: Uri) -> OciResult<Response> {
    if caller.caller.scoped {
        return Err(
            ApiError::Unauthorized("a scoped token cannot ask for another: authenticate with an Amber token").into()
        );
    }
    // `scope` may repeat.
    let scopes: Vec<Scope> = url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .filter(|(k, _)| k == "scope")
        .take(16)
        .flat_map(|(_, v)| Scope::parse(&v))
        .take(scoped::MAX_SCOPES)
        .collect();
    let grants = scoped::downscope(&caller.caller, &scopes);
    let (token, expires) = scoped::mint(&state.signer, &caller.caller.token, grants);
    let now = time::OffsetDateTime::now_utc();
    let issued = now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    let body = serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": (expires - now).whole_seconds().max(0),
        "issued_at": issued,
    });
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}
