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
use amber_core::wire::RunKind;
use futures_util::StreamExt;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::audit::Draft;
use crate::blobs::{BlobError, BlobStore};
use crate::meta::{LinkStore, ScrubStore};
use crate::meta::{MetaError, Quarantined};
use crate::progress::Progress;
use crate::runs::{Begun, Outcome, Run};
use crate::state::AppState;

/// Digests verified between saves of the progress.
const PAGE: usize = 100;
/// What a blob costs of the rate besides its bytes: opening and reading a
/// small blob costs far more than its bytes, and a store of 4 KiB blobs
/// scrubbed at 32 MiB/s would open 8 000 files a second.
const PER_BLOB: u64 = 64 * 1024;
/// Rest before trying again for the lock, or going on with a pass.
const PAUSE: Duration = Duration::from_secs(5);

const SCRUBBER: &str = "amberd scrub";

fn scrubber() -> Actor {
    Actor { token_id: None, token_name: Some(SCRUBBER.into()) }
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

/// Scrubs until `stop`, at most `rate` bytes a second. Each pass (or what
/// is left of one) is a run of kind `scrub`.
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
            && pass_due(&state).await
        {
            match Run::begin(&state, RunKind::Scrub, SCRUBBER).await {
                Ok(Begun::Started(run)) => {
                    let outcome = scrub_pass(&state, rate, &stop, &run.progress()).await;
                    run.end(outcome).await;
                }
                // A pass asked for by an operator; this one comes after it.
                Ok(Begun::Active(_)) => {}
                Err(err) => tracing::warn!(error = %err, "the scrub could not record its run"),
            }
        }
        tokio::select! {
            () = tokio::time::sleep(PAUSE) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Whether a pass is under way, or the last full one (by any replica) ended
/// at least `--scrub-interval` ago: a store read through faster is not read
/// again and again (each pass a run that would crowd the others out of
/// `GET /v1/runs`).
async fn pass_due(state: &AppState) -> bool {
    let every = state.config.scrub_interval;
    match state.meta.scrub_progress().await {
        Ok(saved) => {
            saved.pass_started.is_some()
                || saved.last_full_pass.is_none_or(|ended| OffsetDateTime::now_utc() - ended >= every)
        }
        Err(err) => {
            tracing::warn!(error = %err, "the scrub could not read its progress");
            false
        }
    }
}

/// One pass now (`POST /v1/scrub/run`), at `rate`, unless a scrubber holds the lock.
pub async fn run_pass(state: &AppState, rate: u64, progress: &Progress) -> Outcome {
    let Some(_lock) = state.meta.scrub_lock().await.map_err(|e| e.to_string())? else {
        return Err("another scrubber is under way (on this or another replica)".into());
    };
    scrub_pass(state, rate, &state.running.stopping(), progress).await
}

/// Goes on with the pass under way (or starts one) to its end; its report,
/// or why it stopped (it goes on from its last saved place).
async fn scrub_pass(state: &AppState, rate: u64, stop: &CancellationToken, progress: &Progress) -> Outcome {
    pass(state, rate, stop, progress).await.map_err(|e| format!("{e}; the scrub goes on from its last saved place"))
}

#[derive(serde::Serialize)]
struct PassReport {
    verified_blobs: u64,
    verified_bytes: u64,
    quarantined: u64,
}

async fn pass(
    state: &AppState,
    rate: u64,
    stop: &CancellationToken,
    progress: &Progress,
) -> Result<serde_json::Value, MetaError> {
    let mut saved = state.meta.scrub_progress().await?;
    saved.pass_started.get_or_insert_with(OffsetDateTime::now_utc);
    let mut pace = Pace { rate, started: Instant::now(), read: 0 };
    let mut report = PassReport { verified_blobs: 0, verified_bytes: 0, quarantined: 0 };
    loop {
        let page = state.meta.linked_digests(saved.cursor.as_ref(), PAGE).await?;
        if page.is_empty() {
            saved.cursor = None;
            saved.pass_started = None;
            saved.last_full_pass = Some(OffsetDateTime::now_utc());
            state.meta.save_scrub_progress(&saved).await?;
            return Ok(serde_json::to_value(report)?);
        }
        let mut verified = Vec::with_capacity(page.len());
        for (digest, size) in page {
            if stop.is_cancelled() {
                state.meta.record_verified(&verified, OffsetDateTime::now_utc()).await?;
                state.meta.save_scrub_progress(&saved).await?;
                return Err(MetaError::Unavailable("the server is stopping".into()));
            }
            if !state.quarantine.contains(&digest) {
                match verify(state, digest, size, &mut pace, stop).await {
                    Ok(bytes) => {
                        verified.push(digest);
                        saved.verified_blobs += 1;
                        saved.verified_bytes += bytes;
                        report.verified_blobs += 1;
                        report.verified_bytes += bytes;
                        progress.bytes(bytes);
                        state.metrics.scrub_verified_bytes.fetch_add(bytes, Ordering::Relaxed);
                    }
                    Err(err @ (BlobError::Corrupt(_) | BlobError::Missing(_))) => {
                        report.quarantined += 1;
                        quarantine(state, digest, &err).await
                    }
                    // The store is unwell, not the blob: stop, and come back.
                    Err(err) => {
                        state.meta.record_verified(&verified, OffsetDateTime::now_utc()).await?;
                        state.meta.save_scrub_progress(&saved).await?;
                        tracing::warn!(%digest, error = %err, "the scrub could not read a blob; it retries later");
                        return Err(MetaError::Unavailable(format!("reading {digest}: {err}")));
                    }
                }
            }
            progress.done(1);
            saved.cursor = Some(digest);
        }
        state.meta.record_verified(&verified, OffsetDateTime::now_utc()).await?;
        state.meta.save_scrub_progress(&saved).await?;
    }
}
