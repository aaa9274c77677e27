//! Making uploaded bytes visible in a repository: the one path a `PUT` and a
//! finished resumable upload share (the upload slot, the reclaim lease, the
//! link with its audit entry, healing quarantined bytes, the counters).

pub mod hashes;
pub mod lease;
pub mod publish;
pub mod resumable;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use amber_core::RepoName;
use amber_core::audit::Event;

use self::lease::UploadLease;
use crate::admission::{Refusal, UploadSlot};
use crate::audit;
use crate::auth::Caller;
use crate::blobs::{BlobError, Gate, Stored, Written};
use crate::error::{ApiError, ApiResult};
use crate::meta::LinkStore;
use crate::state::AppState;

/// Takes one of the caller's upload slots (uploads in flight), held until
/// the upload is linked or has failed.
pub fn admit(state: &AppState, caller: &Caller) -> ApiResult<UploadSlot> {
    state.admission.admit(caller.token.info.id.as_str()).map_err(|refusal| {
        state.metrics.uploads_throttled.fetch_add(1, Ordering::Relaxed);
        ApiError::TooManyRequests {
            reason: match refusal {
                Refusal::TooManyUploads => "too many uploads in flight",
                Refusal::TooManyForToken => "too many uploads in flight for this token",
                Refusal::Share => {
                    "this token holds its share of the upload slots the server has left; finish some first"
                }
            },
            retry_after: 1,
        }
    })
}

/// An upload's lease on its digest, from verifying its bytes until linked.
pub struct Pushing {
    lease: Arc<UploadLease>,
}

impl Pushing {
    pub fn new(state: &AppState) -> Self {
        Self { lease: UploadLease::new(state) }
    }

    /// The gate the blob store enters before making bytes visible.
    pub fn gate(&self) -> Arc<dyn Gate> {
        self.lease.clone()
    }

    /// Gives the lease up without linking: the bytes were stored, but the
    /// front door refuses them (an OCI digest they do not hash to).
    pub async fn abandon(self) {
        self.lease.abandon().await;
    }

    /// Links what the blob store wrote (`written`: its result) into `repo`,
    /// with its audit entry; gives the lease up if anything failed.
    pub async fn link(
        self,
        state: &AppState,
        caller: &Caller,
        repo: &RepoName,
        written: Result<Written, BlobError>,
    ) -> ApiResult<(Written, Stored)> {
        if written.is_err() {
            self.lease.abandon().await;
        }
        let written = written.inspect_err(|err| match err {
            BlobError::NoSpace => {
                state.metrics.uploads_refused_no_space.fetch_add(1, Ordering::Relaxed);
            }
            BlobError::Throttled => {
                state.metrics.uploads_throttled.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        })?;
        let event = Event::BlobPushed { repository: repo.clone(), digest: written.digest, size: written.size };
        let draft = audit::Draft::shared(&state.signer, caller.actor(), vec![event]);
        let held = self.lease.take();
        let linked = state.meta.link_blob(repo, &written.digest, written.size, held.as_ref(), draft).await;
        if linked.is_err()
            && let Some(held) = &held
        {
            let _ = state.meta.end_promote(held).await;
        }
        let linked = linked?;
        if self.lease.replaced() {
            lease::healed(state, written.digest, caller.actor()).await?;
        }
        if linked == Stored::Created {
            state.metrics.blobs_stored.fetch_add(1, Ordering::Relaxed);
            state.metrics.blob_bytes_stored.fetch_add(written.size, Ordering::Relaxed);
        }
        Ok((written, linked))
    }
}
