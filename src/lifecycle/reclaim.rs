//! Reclaim: deleting stored bytes that no repository links, after the grace.
//!
//! The protocol, in the metadata store's transactions:
//! - An upload takes a lease on its digest once its bytes hashed right and
//!   before they are stored under it (or found there) —
//!   `crate::push::lease::UploadLease` —
//!   and the link ends the lease. While a digest is marked (its bytes being
//!   deleted) no lease is given: the upload waits, then stores its bytes anew.
//! - The last unlink of a digest, or a stored object nothing links or leases
//!   (left by a crash between storing and linking), puts it on the waiting
//!   list with the time; any link takes it off again.
//! - A run, one at a time across replicas, marks each digest waiting longer
//!   than the grace that nothing links or leases (500 a transaction), deletes
//!   their bytes (`BlobStore::delete_many`: S3's `DeleteObjects`), then
//!   records the deletions (one audit entry a batch). A run that stops anywhere
//!   leaves marked digests, which the next run deletes again and records.

use std::sync::atomic::Ordering;
use std::time::Duration;

use amber_core::Digest;
use amber_core::audit::{Actor, Event};
use amber_core::wire::ReclaimReport;
use time::OffsetDateTime;

use crate::audit::Draft;
use crate::blobs::{BlobError, BlobStore};
use crate::meta::ReclaimStore;
use crate::meta::{Candidate, MetaError};
use crate::progress::Progress;
use crate::state::AppState;

/// Objects listed per call, and digests marked per batch: one batch is one
/// audit entry, which must stay under the log's 65,535 bytes.
const PAGE: usize = 500;

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
pub async fn run(
    state: &AppState,
    actor: &Actor,
    grace: Duration,
    progress: &Progress,
) -> Result<ReclaimReport, ReclaimError> {
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
    progress.plan(state.meta.reclaim_pending().await?.0);
    let (mut deleted, mut bytes_freed) = (0u64, 0u64);
    loop {
        let candidates = state.meta.reclaim_candidates(cutoff, PAGE).await?;
        crate::failpoint::hit("reclaim.after_select");
        let digests: Vec<Digest> = candidates.iter().map(|c| c.digest).collect();
        let marked: std::collections::HashSet<Digest> =
            state.meta.mark_reclaims(&digests, cutoff).await?.into_iter().collect();
        let marked: Vec<Candidate> = candidates.iter().filter(|c| marked.contains(&c.digest)).cloned().collect();
        crate::failpoint::hit("reclaim.after_mark");
        // Half, then the rest: a crash point between them for the tests.
        let (first, rest) = marked.split_at(marked.len() / 2);
        state.blobs.delete_many(&first.iter().map(|c| c.digest).collect::<Vec<_>>()).await?;
        crate::failpoint::hit("reclaim.mid_delete");
        state.blobs.delete_many(&rest.iter().map(|c| c.digest).collect::<Vec<_>>()).await?;
        crate::failpoint::hit("reclaim.after_delete");
        let digests: Vec<Digest> = marked.iter().map(|c| c.digest).collect();
        let bytes: u64 = marked.iter().map(|c| c.size).sum();
        let event = Event::BlobsReclaimed { digests: digests.clone(), bytes };
        state.meta.finish_reclaim(&digests, Draft::shared(&state.signer, actor.clone(), vec![event])).await?;
        deleted += digests.len() as u64;
        bytes_freed += bytes;
        progress.done(digests.len() as u64);
        progress.bytes(bytes);
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
