//! Counters: what a listing shows per repository (links and their bytes,
//! tags, live tags, last push) and for the store (links, their bytes, what
//! waits for reclaim), each kept in the transaction that changes what it
//! counts, so that no request reads more than its page. `check_stats`
//! recounts and compares (`amberd fsck`), and with `repair` sets them right.

use std::future::Future;

use amber_core::RepoName;
use time::OffsetDateTime;

use super::{Meta, MetaError};

/// One repository's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepoStats {
    /// Blob links, and their sizes added up.
    pub links: u64,
    pub bytes: u64,
    /// Tags bound, whatever their state, and those not expired.
    pub tags: u64,
    pub live_tags: u64,
    /// When a blob was last linked or a tag bound.
    pub last_push_at: Option<OffsetDateTime>,
}

/// The store's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Blob links in every repository (a blob linked in two counts twice),
    /// and their sizes added up.
    pub links: u64,
    pub bytes: u64,
    /// Digests no repository links, waiting for reclaim, and their bytes.
    pub pending_reclaim: u64,
    pub pending_reclaim_bytes: u64,
}

pub trait StatsStore {
    /// Repositories with a link or a tag, with their counters, in name
    /// order after `after`.
    fn repo_stats(
        &self,
        after: Option<&RepoName>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(RepoName, RepoStats)>, MetaError>> + Send;

    fn store_stats(&self) -> impl Future<Output = Result<StoreStats, MetaError>> + Send;

    /// Recounts every counter from what is stored and lists each that
    /// differs; with `repair`, sets them to the recount.
    fn check_stats(&self, repair: bool) -> impl Future<Output = Result<Vec<String>, MetaError>> + Send;
}

impl StatsStore for Meta {
    async fn repo_stats(
        &self,
        after: Option<&RepoName>,
        limit: usize,
    ) -> Result<Vec<(RepoName, RepoStats)>, MetaError> {
        dispatch!(self, s => s.repo_stats(after, limit))
    }

    async fn store_stats(&self) -> Result<StoreStats, MetaError> {
        dispatch!(self, s => s.store_stats())
    }

    async fn check_stats(&self, repair: bool) -> Result<Vec<String>, MetaError> {
        // A recount reads everything: not bounded by a request's time.
        match self {
            Meta::Sled(s) => s.check_stats(repair).await,
            Meta::Postgres(s) => s.check_stats(repair).await,
        }
    }
}

/// What differs between `stored` and `counted`, one line each.
pub fn differences(
    stored: &std::collections::BTreeMap<RepoName, RepoStats>,
    counted: &std::collections::BTreeMap<RepoName, RepoStats>,
    store: (&StoreStats, &StoreStats),
) -> Vec<String> {
    let mut found = Vec::new();
    let empty = RepoStats::default();
    for name in stored.keys().chain(counted.keys().filter(|n| !stored.contains_key(*n))) {
        let (s, c) = (stored.get(name).unwrap_or(&empty), counted.get(name).unwrap_or(&empty));
        if s != c {
            found.push(format!("counters of {name}: stored {s:?}, counted {c:?}"));
        }
    }
    if store.0 != store.1 {
        found.push(format!("store counters: stored {:?}, counted {:?}", store.0, store.1));
    }
    found
}
