//! Reclaim: stored bytes nothing links, marked, deleted after the grace, and recorded.

use std::future::Future;

use amber_core::Digest;
use time::OffsetDateTime;

use super::{AuditBuild, Meta, MetaError, RunnerLock};

/// A digest reclaim may delete: linked nowhere since before the cutoff, or
/// already marked by a run that stopped before finishing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub digest: Digest,
    pub size: u64,
    pub marked: bool,
}

pub trait ReclaimStore {
    /// The reclaim runner's lock, if no other runner (on any replica) holds it.
    fn reclaim_lock(&self) -> impl Future<Output = Result<Option<RunnerLock>, MetaError>> + Send;

    /// Records as waiting for reclaim each stored object that no repository
    /// links, no lease covers and nothing records yet (bytes left by a crash
    /// between storing and linking); returns how many.
    fn note_orphans(&self, objects: &[crate::blobs::Object]) -> impl Future<Output = Result<u64, MetaError>> + Send;

    /// Digests waiting since before `unlinked_before`, and marked ones; drops
    /// expired leases.
    fn reclaim_candidates(
        &self,
        unlinked_before: OffsetDateTime,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Candidate>, MetaError>> + Send;

    /// Marks for deletion each of `digests` that still waits since before
    /// `unlinked_before` (or is marked), that no repository links and no
    /// lease covers; a digest linked again is dropped from the waiting list.
    /// Answers the marked ones, in one transaction.
    fn mark_reclaims(
        &self,
        digests: &[Digest],
        unlinked_before: OffsetDateTime,
    ) -> impl Future<Output = Result<Vec<Digest>, MetaError>> + Send;

    /// [`Self::mark_reclaims`] of one digest: whether it is marked.
    fn mark_reclaim(
        &self,
        digest: &Digest,
        unlinked_before: OffsetDateTime,
    ) -> impl Future<Output = Result<bool, MetaError>> + Send
    where
        Self: Sync,
    {
        let digest = *digest;
        async move { Ok(!self.mark_reclaims(&[digest], unlinked_before).await?.is_empty()) }
    }

    /// Records the deletion of marked digests whose bytes are gone, with
    /// `audit` (skipped when `digests` is empty).
    fn finish_reclaim(
        &self,
        digests: &[Digest],
        audit: AuditBuild,
    ) -> impl Future<Output = Result<(), MetaError>> + Send;

    /// Digests waiting for reclaim, and their bytes.
    fn reclaim_pending(&self) -> impl Future<Output = Result<(u64, u64), MetaError>> + Send;
}

impl ReclaimStore for Meta {
    async fn reclaim_lock(&self) -> Result<Option<RunnerLock>, MetaError> {
        dispatch!(self, s => s.reclaim_lock())
    }

    async fn note_orphans(&self, objects: &[crate::blobs::Object]) -> Result<u64, MetaError> {
        dispatch!(self, s => s.note_orphans(objects))
    }

    async fn reclaim_candidates(
        &self,
        unlinked_before: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<Candidate>, MetaError> {
        dispatch!(self, s => s.reclaim_candidates(unlinked_before, limit))
    }

    async fn mark_reclaims(
        &self,
        digests: &[Digest],
        unlinked_before: OffsetDateTime,
    ) -> Result<Vec<Digest>, MetaError> {
        dispatch!(self, s => s.mark_reclaims(digests, unlinked_before))
    }

    async fn finish_reclaim(&self, digests: &[Digest], audit: AuditBuild) -> Result<(), MetaError> {
        dispatch!(self, s => s.finish_reclaim(digests, audit))
    }

    async fn reclaim_pending(&self) -> Result<(u64, u64), MetaError> {
        dispatch!(self, s => s.reclaim_pending())
    }
}
