//! The `authenticate` middleware: resolves the bearer (or Basic) token once
//! per request (`crate::auth::resolve`), warns about tokens near expiry and
//! audits every `401` and `403`, grouped by `crate::auth::Denials`.

use std::net::SocketAddr;

use amber_core::audit::Actor;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::http::header::WARNING;
use axum::middleware::Next;
use axum::response::Response;

use crate::auth::{Authentication, Denial, actor, expiry_warning, resolve};
use crate::error::DenialReason;
use crate::state::AppState;

/// Authenticates (for routes that need it, the `Caller` extractor then reads
/// the outcome), adds expiry warnings, and audits denied requests.
pub async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let authentication = resolve(&state.meta, &state.signer, request.headers()).await;
    request.extensions_mut().insert(authentication.clone());
    let method = request.method().to_string();
    let client = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
    let route = request.extensions().get::<MatchedPath>().map_or_else(String::new, |p| p.as_str().to_owned());
    let mut response = next.run(request).await;

    let token = match &authentication {
        Authentication::Token(token) | Authentication::Scoped(token) => Some(token),
        _ => None,
    };
    if let Some(warning) = token.and_then(|t| expiry_warning(t)) {
        response.headers_mut().insert(WARNING, warning);
    }
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        let (reason, repository) = match response.extensions().get::<DenialReason>() {
            Some(denial) => (denial.reason.clone(), denial.repository.clone()),
            None => (String::new(), None),
        };
        let actor = token.map_or(Actor { token_id: None, token_name: None }, |t| actor(t));
        let denial = Denial { actor, client, method, route, status: status.as_u16(), reason, repository };
        state.denials.record(&state.meta, &state.signer, denial).await;
    }
    response
}
