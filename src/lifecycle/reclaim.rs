//! Reclaim: deleting stored bytes that no repository links, after the grace.
//!
//! The protocol, in the metadata store's transactions:
//! - An upload takes a lease on its digest once its bytes hashed right and
//!   before they are stored under it (or found there) — [`UploadLease`] —
//!   and the link ends the lease. While a digest is marked (its bytes being
//!   deleted) no lease is given: the upload waits, then stores its bytes anew.
//! - The last unlink of a digest, or a stored object nothing links or leases
//!   (left by a crash between storing and linking), puts it on the waiting
//!   list with the time; any link takes it off again.
//! - A run, one at a time across replicas, marks each digest waiting longer
//!   than the grace that nothing links or leases, deletes its bytes, then
//!   records the deletions (one audit entry). A run that stops anywhere
//!   leaves marked digests, which the next run deletes again and records.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use amber_core::Digest;
use amber_core::audit::{Actor, Event};
use amber_core::wire::ReclaimReport;
use time::OffsetDateTime;

use crate::audit::Draft;
use crate::blobs::{BlobError, BlobStore, Entered, Gate};
use crate::meta::LinkStore;
use crate::meta::ReclaimStore;
use crate::meta::{Lease, MetaError};
use crate::state::AppState;

/// How long an upload waits for the deletion of its digest's bytes to end.
const MARKED_WAIT: Duration = Duration::from_secs(10);
/// Objects listed per call, and digests marked per batch: one batch is one
/// audit entry, which must stay under the log's 65,535 bytes.
const PAGE: usize = 500;

/// The lease an upload holds from the gate until it is linked.
pub struct UploadLease {
    state: AppState,
    lease: Mutex<Option<Lease>>,
    /// The gate told the store to replace quarantined bytes.
    replacing: std::sync::atomic::AtomicBool,
}

impl UploadLease {
    pub fn new(state: &AppState) -> Arc<Self> {
        Arc::new(Self { state: state.clone(), lease: Mutex::new(None), replacing: Default::default() })
    }

    /// True when this upload replaced quarantined bytes: once linked, it heals them.
    pub fn replaced(&self) -> bool {
        self.replacing.load(Ordering::Relaxed)
    }

    /// The lease taken at the gate, for the link to end.
    pub fn take(&self) -> Option<Lease> {
        self.lease.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    /// Holds `lease` for the link to end.
    fn granted(&self, digest: Digest, lease: Lease) -> Entered {
        *self.lease.lock().unwrap_or_else(PoisonError::into_inner) = Some(lease);
        // Quarantined bytes are replaced by these, which hashed right.
        let replace = self.state.quarantine.contains(&digest);
        self.replacing.store(replace, Ordering::Relaxed);
        Entered { replace }
    }

    /// Ends the lease of an upload that failed after the gate.
    pub async fn abandon(&self) {
        if let Some(lease) = self.take()
            && let Err(err) = self.state.meta.end_promote(&lease).await
        {
            tracing::warn!(error = %err, "ending an upload's lease failed; it expires on its own");
        }
    }
}

impl Gate for UploadLease {
    /// Only a lease granted at once is taken here; a digest marked for
    /// reclaim waits in `enter`.
    fn enter_now(&self, digest: Digest) -> Option<Result<Entered, BlobError>> {
        match self.state.meta.promote_now(&digest) {
            Some(Some(lease)) => Some(Ok(self.granted(digest, lease))),
            Some(None) | None => None,
        }
    }

    fn enter(&self, digest: Digest) -> std::pin::Pin<Box<dyn Future<Output = Result<Entered, BlobError>> + Send + '_>> {
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + MARKED_WAIT;
            loop {
                match self.state.meta.begin_promote(&digest).await {
                    Ok(Some(lease)) => return Ok(self.granted(digest, lease)),
                    Ok(None) if tokio::time::Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Ok(None) => {
                        return Err(BlobError::Unavailable(format!("the bytes of {digest} are still being reclaimed")));
                    }
                    Err(err) => return Err(BlobError::Unavailable(err.to_string())),
                }
            }
        })
    }
}

/// Who scheduled runs act as in the audit log.
pub fn scheduled_actor() -> Actor {
    Actor { token_id: None, token_name: Some("amberd reclaim schedule".into()) }
}

/// Failures of a run.
#[derive(Debug, thiserror::Error)]
pub enum ReclaimError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Blobs(#[from] BlobError),
}

/// Runs reclaim now, unless another runner holds the lock (then `ran` is
/// false and nothing is done). `grace` is counted from when the last link went.
pub async fn run(state: &AppState, actor: &Actor, grace: Duration) -> Result<ReclaimReport, ReclaimError> {
    let Some(_lock) = state.meta.reclaim_lock().await? else {
        let (pending, pending_bytes) = state.meta.reclaim_pending().await?;
        return Ok(ReclaimReport { ran: false, deleted: 0, bytes_freed: 0, pending, pending_bytes });
    };
    // Stored objects nothing links or leases: left by a crash between
    // storing and linking. They wait a grace like any other.
    let mut after = None;
    let mut orphans = 0;
    loop {
        let page = state.blobs.list(after, PAGE).await?;
        orphans += state.meta.note_orphans(&page).await?;
        match page.last() {
            Some(last) if page.len() == PAGE => after = Some(last.digest),
            _ => break,
        }
    }
    if orphans > 0 {
        tracing::info!(orphans, "stored objects that nothing links now wait for reclaim");
    }
    let cutoff = OffsetDateTime::now_utc() - grace;
    let (mut deleted, mut bytes_freed) = (0u64, 0u64);
    loop {
        let candidates = state.meta.reclaim_candidates(cutoff, PAGE).await?;
        crate::failpoint::hit("reclaim.after_select");
        let mut marked = Vec::new();
        for candidate in &candidates {
            if state.meta.mark_reclaim(&candidate.digest, cutoff).await? {
                marked.push(candidate.clone());
            }
        }
        crate::failpoint::hit("reclaim.after_mark");
        for (i, candidate) in marked.iter().enumerate() {
            state.blobs.delete(&candidate.digest).await?;
            if i == marked.len() / 2 {
                crate::failpoint::hit("reclaim.mid_delete");
            }
        }
        crate::failpoint::hit("reclaim.after_delete");
        let digests: Vec<Digest> = marked.iter().map(|c| c.digest).collect();
        let bytes: u64 = marked.iter().map(|c| c.size).sum();
        let event = Event::BlobsReclaimed { digests: digests.clone(), bytes };
        state.meta.finish_reclaim(&digests, Draft::shared(&state.signer, actor.clone(), vec![event])).await?;
        deleted += digests.len() as u64;
        bytes_freed += bytes;
        state.metrics.reclaimed_bytes.fetch_add(bytes, Ordering::Relaxed);
        // A full page may have more behind it; one where nothing was marked
        // has nothing more to give this run.
        if candidates.len() < PAGE || marked.is_empty() {
            break;
        }
    }
    let (pending, pending_bytes) = state.meta.reclaim_pending().await?;
    state.metrics.reclaim_pending_bytes.store(pending_bytes, Ordering::Relaxed);
    tracing::info!(deleted, bytes_freed, pending, pending_bytes, "reclaim run finished");
    Ok(ReclaimReport { ran: true, deleted, bytes_freed, pending, pending_bytes })
}
