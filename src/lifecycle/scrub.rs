//! Scrub: finding rot. Every linked blob is read back and re-hashed,
//! continuously, at most `--scrub-rate` bytes a second, one scrubber at a
//! time across replicas, going on from where the last one stopped, and the
//! time each blob was last found right is recorded. Passes go in digest
//! order, so the blob due next is the one checked longest ago (an upload is
//! verified as it arrives). A blob
//! that does not hash to its digest, or whose bytes are gone, is quarantined:
//! never served, reported absent by `HEAD` and `blobs/missing` so that
//! clients send it again, and healed by that upload.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use amber_core::Digest;
use amber_core::audit::{Actor, Event};
use futures_util::StreamExt;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::audit::Draft;
use crate::blobs::{BlobError, BlobStore};
use crate::meta::{LinkStore, ScrubStore};
use crate::meta::{MetaError, Quarantined};
use crate::state::AppState;

/// Digests verified between saves of the progress.
const PAGE: usize = 100;
/// What a blob costs of the rate besides its bytes: opening and reading a
/// small blob costs far more than its bytes, and a store of 4 KiB blobs
/// scrubbed at 32 MiB/s would open 8 000 files a second.
const PER_BLOB: u64 = 64 * 1024;
/// Rest between full passes, and before trying again for the lock.
const PAUSE: Duration = Duration::from_secs(5);

fn scrubber() -> Actor {
    Actor { token_id: None, token_name: Some("amberd scrub".into()) }
}

/// Quarantines `digest` (found not to hash, or gone): recorded and audited
/// once, served never again until healed.
pub async fn quarantine(state: &AppState, digest: Digest, error: &BlobError) {
    let reason = if matches!(error, BlobError::Missing(_)) { "missing" } else { "mismatch" };
    state.quarantine.set(digest, true);
    let entry = Quarantined { digest, reason: reason.into(), found_at: OffsetDateTime::now_utc() };
    let event = Event::BlobCorrupt { digest, reason: reason.into() };
    match state.meta.quarantine(&entry, Draft::shared(&state.signer, scrubber(), vec![event])).await {
        Ok(true) => tracing::error!(%digest, reason, "stored blob quarantined; an upload of the same bytes heals it"),
        Ok(false) => {}
        Err(err) => tracing::warn!(%digest, error = %err, "recording a quarantine failed; the scrub finds it again"),
    }
}

/// Keeps reads to `rate` bytes a second on average since `started`,
/// chunk by chunk: a whole large blob read at full speed would take a core
/// from the requests for as long.
struct Pace {
    rate: u64,
    started: Instant,
    read: u64,
}

impl Pace {
    async fn account(&mut self, bytes: u64, stop: &CancellationToken) {
        self.read += bytes;
        let due = Duration::from_secs_f64(self.read as f64 / self.rate as f64);
        if let Some(wait) = due.checked_sub(self.started.elapsed()) {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => {}
            }
        }
    }
}

/// Reads a blob whole, verifying it, at the pace; the bytes read.
async fn verify(
    state: &AppState,
    digest: Digest,
    size: u64,
    pace: &mut Pace,
    stop: &CancellationToken,
) -> Result<u64, BlobError> {
    pace.account(PER_BLOB, stop).await;
    let mut stream = state.blobs.read(digest, size, None).await?;
    let mut read = 0;
    while let Some(chunk) = stream.next().await {
        let len = chunk?.len() as u64;
        read += len;
        pace.account(len, stop).await;
    }
    Ok(read)
}

/// Scrubs until `stop`, at most `rate` bytes a second.
pub async fn scrub_forever(state: AppState, rate: u64, stop: CancellationToken) {
    loop {
        let held = match state.meta.scrub_lock().await {
            Ok(Some(lock)) => Some(lock),
            Ok(None) => None,
            Err(err) => {
                tracing::warn!(error = %err, "the scrub could not take its lock");
                None
            }
        };
        if let Some(_lock) = held
            && let Err(err) = scrub_pass(&state, rate, &stop).await
        {
            tracing::warn!(error = %err, "the scrub stopped; it goes on from its last saved place");
        }
        tokio::select! {
            () = tokio::time::sleep(PAUSE) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Goes on with the pass under way (or starts one) to its end.
async fn scrub_pass(state: &AppState, rate: u64, stop: &CancellationToken) -> Result<(), MetaError> {
    let mut progress = state.meta.scrub_progress().await?;
    progress.pass_started.get_or_insert_with(OffsetDateTime::now_utc);
    let mut pace = Pace { rate, started: Instant::now(), read: 0 };
    loop {
        let page = state.meta.linked_digests(progress.cursor.as_ref(), PAGE).await?;
        if page.is_empty() {
            progress.cursor = None;
            progress.pass_started = None;
            progress.last_full_pass = Some(OffsetDateTime::now_utc());
            return state.meta.save_scrub_progress(&progress).await;
        }
        let mut verified = Vec::with_capacity(page.len());
        for (digest, size) in page {
            if stop.is_cancelled() {
                state.meta.record_verified(&verified, OffsetDateTime::now_utc()).await?;
                return state.meta.save_scrub_progress(&progress).await;
            }
            if !state.quarantine.contains(&digest) {
                match verify(state, digest, size, &mut pace, stop).await {
                    Ok(bytes) => {
                        verified.push(digest);
                        progress.verified_blobs += 1;
                        progress.verified_bytes += bytes;
                        state.metrics.scrub_verified_bytes.fetch_add(bytes, Ordering::Relaxed);
                    }
                    Err(err @ (BlobError::Corrupt(_) | BlobError::Missing(_))) => quarantine(state, digest, &err).await,
                    // The store is unwell, not the blob: stop, and come back.
                    Err(err) => {
                        state.meta.record_verified(&verified, OffsetDateTime::now_utc()).await?;
                        state.meta.save_scrub_progress(&progress).await?;
                        tracing::warn!(%digest, error = %err, "the scrub could not read a blob; it retries later");
                        return Ok(());
                    }
                }
            }
            progress.cursor = Some(digest);
        }
        state.meta.record_verified(&verified, OffsetDateTime::now_utc()).await?;
        state.meta.save_scrub_progress(&progress).await?;
    }
}
