//! The transparency log over the audit entries: its tree, stored hashes, checkpoints and origin.

use std::future::Future;

use amber_core::log::{Frontier, Hash};
use amber_core::{RepoName, Tag};

use super::{Meta, MetaError, RunnerLock};

pub trait LogStore {
    /// The log's tree as durably stored: everything it covers survives a
    /// crash, so a checkpoint of it is never contradicted later.
    fn log_tree(&self) -> impl Future<Output = Result<Frontier, MetaError>> + Send;

    /// Stored hashes of the log's tree, by `tlog` stored hash index, in the
    /// order asked; an index not stored is `Corrupt`.
    fn log_hashes(&self, indexes: Vec<u64>) -> impl Future<Output = Result<Vec<Hash>, MetaError>> + Send;

    /// The newest signed log checkpoint: its tree size and note.
    fn log_checkpoint(&self) -> impl Future<Output = Result<Option<(u64, String)>, MetaError>> + Send;

    /// Keeps `note` as the newest checkpoint if its `size` is larger than the
    /// one kept; returns whether it did.
    fn put_log_checkpoint(&self, size: u64, note: &str) -> impl Future<Output = Result<bool, MetaError>> + Send;

    /// The newest checkpoint served as cosigned: its note with the
    /// cosignature lines of a quorum of the log's witnesses.
    fn cosigned_checkpoint(&self) -> impl Future<Output = Result<Option<(u64, String)>, MetaError>> + Send;

    /// Keeps `note` (a checkpoint with its cosignatures) as the newest
    /// cosigned one if its `size` is larger than the one kept; returns
    /// whether it did.
    fn put_cosigned_checkpoint(&self, size: u64, note: &str) -> impl Future<Output = Result<bool, MetaError>> + Send;

    /// The lock of the replica that submits checkpoints to the witnesses,
    /// if no other replica holds it (dropping it lets another in; so does
    /// a crash).
    fn witness_lock(&self) -> impl Future<Output = Result<Option<RunnerLock>, MetaError>> + Send;

    /// The log's origin, fixed at the first start: the one stored, or else
    /// `candidate`, stored now (the first replica to store one wins; every
    /// other gets its origin back).
    fn claim_log_origin(&self, candidate: &str) -> impl Future<Output = Result<String, MetaError>> + Send;

    /// Replaces the stored origin, only while no checkpoint has been signed;
    /// returns whether it did.
    fn rename_log_origin(&self, origin: &str) -> impl Future<Output = Result<bool, MetaError>> + Send;

    /// The log index of the `tag_bound` entry of a tag.
    fn tag_log_index(&self, repo: &RepoName, tag: &Tag) -> impl Future<Output = Result<Option<u64>, MetaError>> + Send;

    /// Adds up to `limit` entries written before the log existed (or by an
    /// older replica) to the tree; returns how many it added.
    fn integrate_log(&self, limit: usize) -> impl Future<Output = Result<u64, MetaError>> + Send;
}

impl LogStore for Meta {
    async fn log_tree(&self) -> Result<Frontier, MetaError> {
        dispatch!(self, s => s.log_tree())
    }

    async fn log_hashes(&self, indexes: Vec<u64>) -> Result<Vec<Hash>, MetaError> {
        dispatch!(self, s => s.log_hashes(indexes))
    }

    async fn log_checkpoint(&self) -> Result<Option<(u64, String)>, MetaError> {
        dispatch!(self, s => s.log_checkpoint())
    }

    async fn put_log_checkpoint(&self, size: u64, note: &str) -> Result<bool, MetaError> {
        dispatch!(self, s => s.put_log_checkpoint(size, note))
    }

    async fn cosigned_checkpoint(&self) -> Result<Option<(u64, String)>, MetaError> {
        dispatch!(self, s => s.cosigned_checkpoint())
    }

    async fn put_cosigned_checkpoint(&self, size: u64, note: &str) -> Result<bool, MetaError> {
        dispatch!(self, s => s.put_cosigned_checkpoint(size, note))
    }

    async fn witness_lock(&self) -> Result<Option<RunnerLock>, MetaError> {
        dispatch!(self, s => s.witness_lock())
    }

    async fn claim_log_origin(&self, candidate: &str) -> Result<String, MetaError> {
        dispatch!(self, s => s.claim_log_origin(candidate))
    }

    async fn rename_log_origin(&self, origin: &str) -> Result<bool, MetaError> {
        dispatch!(self, s => s.rename_log_origin(origin))
    }

    async fn tag_log_index(&self, repo: &RepoName, tag: &Tag) -> Result<Option<u64>, MetaError> {
        dispatch!(self, s => s.tag_log_index(repo, tag))
    }

    async fn integrate_log(&self, limit: usize) -> Result<u64, MetaError> {
        dispatch!(self, s => s.integrate_log(limit))
    }
}
