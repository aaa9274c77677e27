//! Scrub: the quarantine of bytes found corrupt or gone, and the progress of
//! the passes that find them.

use std::future::Future;

use amber_core::Digest;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{AuditBuild, Meta, MetaError, RunnerLock};

/// A stored blob found not to hash to its digest, or gone: never served,
/// reported absent so that clients send it again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    pub digest: Digest,
    /// `mismatch` (the bytes do not hash to the digest) or `missing`.
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    pub found_at: OffsetDateTime,
}

/// Where the scrub is: kept in the store so that a restart, or another
/// replica, goes on from there.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubProgress {
    /// The last digest verified in the pass under way.
    pub cursor: Option<Digest>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub pass_started: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_full_pass: Option<OffsetDateTime>,
    pub verified_blobs: u64,
    pub verified_bytes: u64,
}

pub trait ScrubStore {
    /// Quarantines a digest, with `audit`, unless it is already; returns whether it was new.
    fn quarantine(
        &self,
        entry: &Quarantined,
        audit: AuditBuild,
    ) -> impl Future<Output = Result<bool, MetaError>> + Send;

    /// Lifts the quarantine of a digest whose bytes were replaced by ones
    /// that hash right, with `audit`; returns whether it was quarantined.
    fn heal(&self, digest: &Digest, audit: AuditBuild) -> impl Future<Output = Result<bool, MetaError>> + Send;

    /// Every quarantined digest.
    fn quarantined(&self) -> impl Future<Output = Result<Vec<Quarantined>, MetaError>> + Send;

    fn scrub_progress(&self) -> impl Future<Output = Result<ScrubProgress, MetaError>> + Send;

    /// Records that these blobs were read back and hashed right at `at`.
    fn record_verified(
        &self,
        digests: &[Digest],
        at: OffsetDateTime,
    ) -> impl Future<Output = Result<(), MetaError>> + Send;

    /// When the scrub last found `digest` hashing right, if ever.
    fn last_verified(&self, digest: &Digest) -> impl Future<Output = Result<Option<OffsetDateTime>, MetaError>> + Send;

    fn save_scrub_progress(&self, progress: &ScrubProgress) -> impl Future<Output = Result<(), MetaError>> + Send;

    /// The scrubber's lock, if no other scrubber (on any replica) holds it.
    fn scrub_lock(&self) -> impl Future<Output = Result<Option<RunnerLock>, MetaError>> + Send;
}

impl ScrubStore for Meta {
    async fn quarantine(&self, entry: &Quarantined, audit: AuditBuild) -> Result<bool, MetaError> {
        dispatch!(self, s => s.quarantine(entry, audit))
    }

    async fn heal(&self, digest: &Digest, audit: AuditBuild) -> Result<bool, MetaError> {
        dispatch!(self, s => s.heal(digest, audit))
    }

    async fn quarantined(&self) -> Result<Vec<Quarantined>, MetaError> {
        dispatch!(self, s => s.quarantined())
    }

    async fn scrub_progress(&self) -> Result<ScrubProgress, MetaError> {
        dispatch!(self, s => s.scrub_progress())
    }

    async fn record_verified(&self, digests: &[Digest], at: OffsetDateTime) -> Result<(), MetaError> {
        dispatch!(self, s => s.record_verified(digests, at))
    }

    async fn last_verified(&self, digest: &Digest) -> Result<Option<OffsetDateTime>, MetaError> {
        dispatch!(self, s => s.last_verified(digest))
    }

    async fn save_scrub_progress(&self, progress: &ScrubProgress) -> Result<(), MetaError> {
        dispatch!(self, s => s.save_scrub_progress(progress))
    }

    async fn scrub_lock(&self) -> Result<Option<RunnerLock>, MetaError> {
        dispatch!(self, s => s.scrub_lock())
    }
}
