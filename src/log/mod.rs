//! The transparency log over the audit entries (formats in
//! `amber_core::log`, contract in `design/transparency-log.md`).
//!
//! The metadata store grows the tree in the transaction of every entry
//! (`MetaStore::append_audit` and every change that records one), so the
//! tree is never behind what it records. Here: the log key, the task that
//! signs a checkpoint when the tree has grown, proofs, tiles and receipts.
//!
//! **Invariant:** a checkpoint is signed only over a tree the store reports
//! durable (`MetaStore::log_tree`), only if it is consistent with the newest
//! checkpoint kept (checked with a proof from the stored hashes), and kept
//! only if larger. Checkpoint text has no timestamp and Ed25519 is
//! deterministic, so replicas signing the same tree sign the same bytes.

pub mod witness;

use std::sync::Arc;
use std::time::Duration;

use amber_core::log::{self as tlog, Checkpoint, Frontier, Hash, ProofRequest, Receipt};
use amber_core::{RepoName, Tag};

use crate::config::LogConfig;
use crate::error::{ApiError, ApiResult};
use crate::meta::{AuditStore, LogStore};
use crate::meta::{Meta, MetaError};
use crate::signing::Signer;

/// Entries added to the tree per transaction while catching up on history.
const CATCH_UP_BATCH: usize = 5000;
/// Longest a receipt waits for a checkpoint that covers its entry.
const RECEIPT_WAIT: Duration = Duration::from_millis(1500);

/// A random origin for a store given none: `amber-<16 hex>.invalid/log`
/// (`.invalid` is reserved: the name can never be someone else's host).
pub fn random_origin() -> String {
    format!("amber-{:016x}.invalid/log", rand::random::<u64>())
}

/// The origin of the first line of a signed checkpoint.
fn origin_of_note(note: &str) -> Option<&str> {
    note.lines().next().filter(|line| !line.is_empty())
}

/// The log's origin, fixed at the first start and kept in the metadata
/// store so that every replica signs under it: the stored one; for a store
/// that signed before origins were stored, the origin of its checkpoint; for
/// a new store, `--log-origin`, else the one `--public-url` gives, else a
/// random one. A store never changes its origin (clients hold its log by
/// it): an explicit `--log-origin` naming another one stops the start.
pub async fn resolve_origin(meta: &Meta, config: &LogConfig) -> anyhow::Result<String> {
    let signed = meta.log_checkpoint().await?;
    let signed_origin = signed.as_ref().and_then(|(_, note)| origin_of_note(note)).map(str::to_owned);
    let candidate = signed_origin.clone().or_else(|| config.origin.clone()).unwrap_or_else(random_origin);
    let origin = meta.claim_log_origin(&candidate).await?;
    if let Some(signed) = signed_origin.filter(|signed| *signed != origin) {
        anyhow::bail!("the stored log origin {origin:?} is not the origin {signed:?} of the signed checkpoint");
    }
    match &config.origin {
        Some(asked) if *asked != origin && config.origin_explicit => anyhow::bail!(
            "--log-origin {asked:?}: this store's log is {origin:?}, fixed when it first signed; clients hold it \
             by that name. Leave --log-origin out, or set it to {origin:?}"
        ),
        Some(asked) if *asked != origin => tracing::info!(
            %origin, from_public_url = %asked,
            "the log keeps the origin it was created with, not the one --public-url would give"
        ),
        _ => {}
    }
    if candidate == origin && signed.is_none() {
        tracing::info!(%origin, "the transparency log's origin");
    }
    Ok(origin)
}

pub struct Log {
    origin: String,
    interval: Duration,
    signer: Arc<Signer>,
    /// The witnesses asked to cosign its checkpoints (none: none asked).
    pub witnesses: Arc<witness::Witnesses>,
}

impl Log {
    /// Loads (or makes) the log key, adds any entries the tree does not
    /// cover yet (history from before the log), and signs the first
    /// checkpoint if there is none.
    pub async fn open(meta: &Meta, config: &LogConfig) -> anyhow::Result<Self> {
        let origin = resolve_origin(meta, config).await?;
        let signer = Arc::new(Signer::load_log(meta, &origin, config.key_file.as_deref()).await?);
        let witnesses = Arc::new(witness::Witnesses::new(config.witnesses.clone())?);
        let log = Self { origin, interval: config.interval, signer, witnesses };
        let mut added = 0;
        loop {
            let n = meta.integrate_log(CATCH_UP_BATCH).await?;
            if n == 0 {
                break;
            }
            added += n;
        }
        if added > 0 {
            tracing::info!(entries = added, "added the audit history to the transparency log");
        }
        if let Err(err) = log.sign_if_grown(meta).await {
            tracing::warn!(error = %err, "could not sign a first log checkpoint; the signing task retries");
        }
        Ok(log)
    }

    /// The origin this store's log signs under.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn signer(&self) -> &Arc<Signer> {
        &self.signer
    }

    /// Signs and keeps a checkpoint of the durable tree if it is larger
    /// than the one kept (or none is); returns the size signed.
    pub async fn sign_if_grown(&self, meta: &Meta) -> anyhow::Result<Option<u64>> {
        let held = meta.log_checkpoint().await?;
        let tree = meta.log_tree().await?;
        if held.as_ref().is_some_and(|(size, _)| *size >= tree.size()) {
            return Ok(None);
        }
        if let Some((_, held_note)) = &held {
            self.check_extends(meta, held_note, &tree).await?;
        }
        let note = tlog::sign_checkpoint(&self.origin, tree.size(), &tree.root(), &self.signer.active_key());
        if meta.put_log_checkpoint(tree.size(), &note).await? {
            tracing::debug!(size = tree.size(), "signed a log checkpoint");
            Ok(Some(tree.size()))
        } else {
            Ok(None)
        }
    }

    /// Refuses to sign `tree` unless it extends the checkpoint kept: after a
    /// store was rolled back, or its hashes damaged, the log stops growing
    /// (and says why) rather than sign a second history.
    async fn check_extends(&self, meta: &Meta, held_note: &str, tree: &Frontier) -> anyhow::Result<()> {
        let held =
            self.open_any_key(held_note).map_err(|e| anyhow::anyhow!("the kept checkpoint does not verify: {e}"))?;
        let new = Checkpoint { origin: self.origin.clone(), size: tree.size(), root: tree.root(), note: String::new() };
        let proof = self.proof(meta, ProofRequest::Consistency { old: held.size, size: tree.size() }).await?;
        tlog::check_consistency(&held, &new, &proof).map_err(|e| {
            tracing::error!(held = held.size, tree = tree.size(), error = %e, "REFUSING to sign a log checkpoint: the stored tree does not extend the last checkpoint");
            anyhow::anyhow!("the stored tree does not extend the last signed checkpoint: {e}")
        })
    }

    /// A checkpoint note this log signed with any of its keys, active or retired.
    fn open_any_key(&self, note: &str) -> Result<Checkpoint, tlog::LogError> {
        tlog::open_with_any(&self.signer.key_list().log_vkeys(), note).map(|(checkpoint, _)| checkpoint)
    }

    /// Signs checkpoints every interval until the server stops.
    pub async fn run(&self, meta: &Meta) {
        let mut failing = false;
        loop {
            tokio::time::sleep(self.interval).await;
            match self.sign_if_grown(meta).await {
                Ok(_) if failing => {
                    failing = false;
                    tracing::info!("signing log checkpoints again");
                }
                Ok(_) => {}
                Err(err) if !failing => {
                    failing = true;
                    tracing::warn!(error = %err, "could not sign a log checkpoint; retrying");
                }
                Err(_) => {}
            }
        }
    }

    /// The newest checkpoint: its size and note.
    pub async fn checkpoint(&self, meta: &Meta) -> ApiResult<(u64, String)> {
        meta.log_checkpoint().await?.ok_or(ApiError::Unavailable)
    }

    /// The checkpoint to serve: with witnesses, the newest one a quorum of
    /// them cosigned (with their cosignature lines) if it covers `at_least`
    /// entries, else the newest (a client that requires cosignatures then
    /// refuses it, and says why; one that does not is unaffected).
    pub async fn served_checkpoint(&self, meta: &Meta, at_least: u64) -> ApiResult<(u64, String)> {
        if !self.witnesses.is_empty()
            && let Some((size, note)) = meta.cosigned_checkpoint().await?
            && size >= at_least
        {
            return Ok((size, note));
        }
        self.checkpoint(meta).await
    }

    /// A proof built from the store's hashes (sizes checked by the caller).
    pub async fn proof(&self, meta: &Meta, request: ProofRequest) -> Result<Vec<Hash>, MetaError> {
        let hashes = meta.log_hashes(request.needed_hashes()).await?;
        request.build(&hashes).map_err(|e| MetaError::Corrupt(format!("log proof: {e}")))
    }

    /// The receipt of a tag's binding: its entry, inclusion proof and the
    /// newest checkpoint, waiting (a moment) for one that covers it.
    pub async fn receipt(&self, meta: &Meta, repo: &RepoName, tag: &Tag) -> ApiResult<Receipt> {
        let index = meta.tag_log_index(repo, tag).await?.ok_or_else(|| ApiError::TagUnknown(tag.clone()))?;
        let deadline = tokio::time::Instant::now() + RECEIPT_WAIT;
        let (size, checkpoint) = loop {
            let (size, note) = self.served_checkpoint(meta, index + 1).await?;
            if size > index {
                break (size, note);
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(index, size, "no checkpoint covers a tag's entry yet");
                return Err(ApiError::Unavailable);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let entry = meta
            .audit_entries(index, 1)
            .await?
            .into_iter()
            .next()
            .filter(|e| e.log_index == index)
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("log entry {index} is missing")))?;
        let proof = self.proof(meta, ProofRequest::Inclusion { index, size }).await?;
        Ok(Receipt { entry: entry.entry.into_bytes(), index, proof, checkpoint })
    }
}
