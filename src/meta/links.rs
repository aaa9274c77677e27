//! Blob links: which repository may see which stored bytes, and the promotion
//! leases that keep reclaim away from an upload.

use std::future::Future;

use amber_core::{Digest, RepoName};

use super::{AuditBuild, Meta, MetaError};
use crate::blobs::Stored;

/// A promotion lease: while one is held on a digest, reclaim does not mark
/// it, so its stored bytes stay until the upload that holds it is linked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease(pub String);

impl Lease {
    pub fn new() -> Self {
        Self(format!("{:032x}", rand::random::<u128>()))
    }
}

impl Default for Lease {
    fn default() -> Self {
        Self::new()
    }
}

/// How long a lease lasts if its upload never ends it (a crashed replica).
pub const LEASE_LIFETIME: time::Duration = time::Duration::hours(1);

pub trait LinkStore {
    /// Makes a stored blob visible in `repo`; if it was not yet, appends
    /// `audit` in the same transaction. Ends `lease` and revives the digest
    /// if it was waiting for reclaim, in that transaction too.
    fn link_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        lease: Option<&Lease>,
        audit: AuditBuild,
    ) -> impl Future<Output = Result<Stored, MetaError>> + Send;

    /// Takes a promotion lease on `digest`, unless reclaim has marked it
    /// (its bytes are being deleted): then `None`, and the caller waits.
    fn begin_promote(&self, digest: &Digest) -> impl Future<Output = Result<Option<Lease>, MetaError>> + Send;

    /// Ends a lease whose upload did not link.
    fn end_promote(&self, lease: &Lease) -> impl Future<Output = Result<(), MetaError>> + Send;

    /// Distinct linked digests with their size, in digest order after `after`.
    fn linked_digests(
        &self,
        after: Option<&Digest>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(Digest, u64)>, MetaError>> + Send;

    /// The size of a blob visible in `repo`, or `None`.
    fn blob_size(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> impl Future<Output = Result<Option<u64>, MetaError>> + Send;
}

impl LinkStore for Meta {
    async fn link_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        lease: Option<&Lease>,
        audit: AuditBuild,
    ) -> Result<Stored, MetaError> {
        dispatch!(self, s => s.link_blob(repo, digest, size, lease, audit))
    }

    async fn begin_promote(&self, digest: &Digest) -> Result<Option<Lease>, MetaError> {
        dispatch!(self, s => s.begin_promote(digest))
    }

    async fn end_promote(&self, lease: &Lease) -> Result<(), MetaError> {
        dispatch!(self, s => s.end_promote(lease))
    }

    async fn linked_digests(&self, after: Option<&Digest>, limit: usize) -> Result<Vec<(Digest, u64)>, MetaError> {
        dispatch!(self, s => s.linked_digests(after, limit))
    }

    async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>, MetaError> {
        dispatch!(self, s => s.blob_size(repo, digest))
    }
}
