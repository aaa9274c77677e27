//! `GET /v1/repos/{owner}/{name}/tags/{tag}/attestations`: the attestations
//! of a binding (`crate::attest`), as a JSON list of DSSE envelopes, one per
//! line with `Accept: application/x-ndjson` (the `.intoto.jsonl` form), or
//! as Sigstore bundles v0.3 with `?format=sigstore-bundle`. An expired tag
//! keeps them: they are history (`Amber-Tag-State: expired` says so).

use amber_core::Action;
use amber_core::attestation;
use amber_core::manifest::ManifestPayload;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::paths::{Repo, TagParam};
use super::tags::MANIFEST_DIGEST_HEADER;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::meta::TagStore;
use crate::state::AppState;

const NDJSON: &str = "application/x-ndjson";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationQuery {
    format: Option<String>,
}

fn wants_lines(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.split(',').any(|t| t.split(';').next().is_some_and(|m| m.trim() == NDJSON)))
}

pub async fn get_attestations(
    State(state): State<AppState>,
    caller: Caller,
    Repo(repo): Repo,
    TagParam(tag): TagParam,
    query: Result<Query<AttestationQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    caller.require(Action::Pull, &repo)?;
    let Query(query) = query.map_err(|e| ApiError::RequestInvalid(e.body_text()))?;
    let bundles = match query.format.as_deref() {
        None | Some("dsse") => false,
        Some("sigstore-bundle") => true,
        Some(other) => {
            return Err(ApiError::RequestInvalid(format!(
                "format {:?} is not one of dsse, sigstore-bundle",
                crate::error::bounded(other)
            )));
        }
    };
    let record = state.meta.tag(&repo, &tag).await?.ok_or_else(|| ApiError::TagUnknown(tag.clone()))?;
    let envelope = state.meta.manifest(&repo, &record.digest).await?.ok_or(ApiError::ManifestUnknown(record.digest))?;
    let payload: ManifestPayload =
        serde_json::from_slice(&envelope.payload_bytes().map_err(ApiError::internal)?).map_err(ApiError::internal)?;
    let envelopes = crate::attest::of_binding(&state, &record.digest, &payload).await?;
    // Each as the bytes the VSA's input digest and the OCI referrer's layer
    // hash: the envelope serialised once, its fields in DSSE's order.
    let mut items = Vec::with_capacity(envelopes.len());
    for envelope in &envelopes {
        items.push(if bundles {
            attestation::bundle(envelope).to_string()
        } else {
            serde_json::to_string(envelope).map_err(ApiError::internal)?
        });
    }
    let (content_type, body) = if wants_lines(&headers) {
        (NDJSON, items.iter().map(|item| format!("{item}\n")).collect::<String>())
    } else {
        ("application/json", format!("[{}]", items.join(",")))
    };
    let mut response = (StatusCode::OK, body).into_response();
    let out = response.headers_mut();
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    out.insert(MANIFEST_DIGEST_HEADER, HeaderValue::try_from(record.digest.to_string()).map_err(ApiError::internal)?);
    out.insert("amber-tag-state", HeaderValue::from_static(if record.expiry.is_some() { "expired" } else { "live" }));
    Ok(response)
}

/// `GET /v1/attestations/policy`: what the server checks before it binds a
/// tag, the document every VSA names by its sha256.
pub async fn get_policy() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], crate::attest::POLICY).into_response()
}
