//! Path extractors that parse, so a handler never sees an invalid name or
//! digest, and a bad one gets its documented error code.

use std::collections::HashMap;

use amber_core::{Digest, RepoName, Tag};
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;

use crate::error::ApiError;

async fn params<S: Send + Sync>(parts: &mut Parts, state: &S) -> Result<HashMap<String, String>, ApiError> {
    let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
        .await
        .map_err(|e| ApiError::NameInvalid(format!("invalid path: {}", e.body_text())))?;
    Ok(params)
}

fn param<'a>(params: &'a HashMap<String, String>, name: &str) -> &'a str {
    params.get(name).map_or("", String::as_str)
}

/// `{owner}/{name}` as a repository.
pub struct Repo(pub RepoName);

impl<S: Send + Sync> FromRequestParts<S> for Repo {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = params(parts, state).await?;
        let name = format!("{}/{}", param(&params, "owner"), param(&params, "name"));
        name.parse().map(Self).map_err(|e| ApiError::NameInvalid(format!("{e}")))
    }
}

/// `{digest}`.
pub struct DigestParam(pub Digest);

impl<S: Send + Sync> FromRequestParts<S> for DigestParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = params(parts, state).await?;
        param(&params, "digest").parse().map(Self).map_err(|e| ApiError::DigestInvalid(format!("{e}")))
    }
}

/// `{tag}`.
pub struct TagParam(pub Tag);

impl<S: Send + Sync> FromRequestParts<S> for TagParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = params(parts, state).await?;
        param(&params, "tag").parse().map(Self).map_err(|e| ApiError::NameInvalid(format!("{e}")))
    }
}

/// `{id}` of a token; an id that cannot exist is simply unknown.
pub struct TokenIdParam(pub amber_core::TokenId);

impl<S: Send + Sync> FromRequestParts<S> for TokenIdParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = params(parts, state).await?;
        param(&params, "id").parse().map(Self).map_err(|_| ApiError::TokenUnknown)
    }
}

/// `{id}` of a publisher; an id that cannot exist is simply unknown.
pub struct PublisherIdParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PublisherIdParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = params(parts, state).await?;
        let id = param(&params, "id");
        if amber_core::oidc::is_publisher_id(id) { Ok(Self(id.to_owned())) } else { Err(ApiError::PublisherUnknown) }
    }
}

/// `{owner}/{name}` as a retention scope: a repository, or `owner/*` (the
/// owner's default).
pub struct Scope(pub amber_core::RepoPattern);

impl<S: Send + Sync> FromRequestParts<S> for Scope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = params(parts, state).await?;
        let scope = format!("{}/{}", param(&params, "owner"), param(&params, "name"));
        match scope.parse() {
            Ok(pattern @ (amber_core::RepoPattern::Exact(_) | amber_core::RepoPattern::Owner(_))) => Ok(Self(pattern)),
            _ => Err(ApiError::NameInvalid(format!(
                "{:?} is neither a repository nor OWNER/* (an owner's default)",
                crate::error::bounded(&scope)
            ))),
        }
    }
}
