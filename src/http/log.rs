//! The transparency log in the `tlog-tiles` layout under `/v1/log`, its
//! proofs, and tag receipts. Hashes and proofs are public (they reveal
//! nothing: every leaf is salted); entries name repositories and tokens, so
//! entry bundles need an admin token.

use amber_core::Action;
use amber_core::log::{self as tlog, ProofRequest, TilePath};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::paths::{Repo, TagParam};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::meta::{AuditStore, LogStore};
use crate::state::AppState;

const TEXT: &str = "text/plain; charset=utf-8";

fn text(body: String, cache: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

/// Tiles at a given width never change.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointQuery {
    /// Present (empty): the newest checkpoint, cosigned or not.
    uncosigned: Option<String>,
}

/// With witnesses: the newest checkpoint a quorum of them cosigned, with
/// their cosignature lines (the newest, cosigned or not, until one is;
/// `?uncosigned` always); without: the newest.
pub async fn get_checkpoint(
    State(state): State<AppState>,
    query: Result<Query<CheckpointQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = query.map_err(|e| ApiError::RequestInvalid(e.body_text()))?;
    let (_, note) = match q.uncosigned {
        Some(_) => state.log.checkpoint(&state.meta).await?,
        None => state.log.served_checkpoint(&state.meta, 0).await?,
    };
    Ok(text(note, "public, max-age=2"))
}

pub async fn get_tile(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    Path(path): Path<String>,
) -> ApiResult<Response> {
    // Only hashes the newest checkpoint covers: they are durable, and a
    // client verifies them against it.
    let (size, _) = state.log.checkpoint(&state.meta).await?;
    let tile = TilePath::parse(&path).ok_or(ApiError::TileUnknown(size))?;
    let body = match tile {
        TilePath::Hashes { level, index, width } => {
            if width > tlog::tile_width(size, level, index) {
                return Err(ApiError::TileUnknown(size));
            }
            let hashes = state.meta.log_hashes(tlog::tile_hash_indexes(level, index, width)).await?;
            hashes.iter().flat_map(|h| h.0).collect::<Vec<u8>>()
        }
        TilePath::Entries { index, width } => {
            caller?.require_admin()?;
            if width > tlog::tile_width(size, 0, index) {
                return Err(ApiError::TileUnknown(size));
            }
            let first = index * tlog::TILE_WIDTH;
            let entries = state.meta.audit_entries(first, width as usize).await?;
            if entries.len() != width as usize {
                return Err(ApiError::internal(anyhow::anyhow!("log entries from {first} are missing")));
            }
            if let Some(big) = entries.iter().find(|e| e.entry.len() > tlog::MAX_ENTRY_BYTES) {
                // Only history from before the log can be this large.
                return Err(ApiError::internal(anyhow::anyhow!(
                    "log entry {} is {} bytes, over an entry bundle's 65,535: read it from GET /v1/audit",
                    big.log_index,
                    big.entry.len()
                )));
            }
            tlog::entry_bundle(entries.iter().map(|e| e.entry.as_bytes()))
        }
    };
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    let private = matches!(tile, TilePath::Entries { .. });
    headers
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(if private { "private, no-store" } else { IMMUTABLE }));
    Ok(response)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionQuery {
    index: u64,
    size: u64,
}

pub async fn get_inclusion(
    State(state): State<AppState>,
    query: Result<Query<InclusionQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = query.map_err(|e| ApiError::RequestInvalid(e.body_text()))?;
    within_checkpoint(&state, q.size).await?;
    if q.index >= q.size {
        return Err(ApiError::RequestInvalid(format!("index {} is not in a tree of size {}", q.index, q.size)));
    }
    let proof = state.log.proof(&state.meta, ProofRequest::Inclusion { index: q.index, size: q.size }).await?;
    Ok(text(tlog::proof_lines(&proof), IMMUTABLE))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    old: u64,
    new: u64,
}

pub async fn get_consistency(
    State(state): State<AppState>,
    query: Result<Query<ConsistencyQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = query.map_err(|e| ApiError::RequestInvalid(e.body_text()))?;
    within_checkpoint(&state, q.new).await?;
    if q.old > q.new {
        return Err(ApiError::RequestInvalid(format!("old size {} is larger than new size {}", q.old, q.new)));
    }
    let proof = state.log.proof(&state.meta, ProofRequest::Consistency { old: q.old, size: q.new }).await?;
    Ok(text(tlog::proof_lines(&proof), IMMUTABLE))
}

/// Proofs are given for trees a signed checkpoint has covered.
async fn within_checkpoint(state: &AppState, size: u64) -> ApiResult<()> {
    let (latest, _) = state.log.checkpoint(&state.meta).await?;
    if size > latest {
        return Err(ApiError::RequestInvalid(format!(
            "tree size {size} is larger than the latest checkpoint's ({latest})"
        )));
    }
    Ok(())
}

/// `GET .../tags/{tag}/receipt`: a `c2sp.org/tlog-proof@v1` of the tag's
/// `tag_bound` entry.
pub async fn get_receipt(
    State(state): State<AppState>,
    caller: Caller,
    Repo(repo): Repo,
    TagParam(tag): TagParam,
) -> ApiResult<Response> {
    caller.require(Action::Pull, &repo)?;
    let receipt = state.log.receipt(&state.meta, &repo, &tag).await?;
    Ok(text(receipt.to_text(), "private, no-store"))
}
