//! Counters on sled: `stats` holds `r` repo -> links, bytes, tags, live
//! tags (u64 BE each) and the last push (i64 BE unix seconds, `i64::MIN`
//! for none), and `s` -> links, bytes, pending reclaim, its bytes (u64 BE
//! each). Every change that counts adds its deltas in its own transaction
//! ([`add_repo`], [`add_store`]); a repository with no link and no tag has
//! no record.

use std::collections::BTreeMap;

use amber_core::RepoName;
use sled::transaction::{ConflictableTransactionError, ConflictableTransactionResult, TransactionalTree};
use time::OffsetDateTime;

use super::{SledMeta, Trees, Waiting, parse_link};
use crate::meta::{MetaError, RepoStats, StatsStore, StoreStats, differences};

const STORE_KEY: &[u8] = b"s";

fn repo_stats_key(repo: &str) -> Vec<u8> {
    [b"r".as_slice(), repo.as_bytes()].concat()
}

/// Changes to one repository's counters.
#[derive(Clone, Copy, Default)]
pub(super) struct RepoDelta {
    pub links: i64,
    pub bytes: i64,
    pub tags: i64,
    pub live_tags: i64,
    pub pushed_at: Option<OffsetDateTime>,
}

/// Changes to the store's counters.
#[derive(Clone, Copy, Default)]
pub(super) struct StoreDelta {
    pub links: i64,
    pub bytes: i64,
    pub pending: i64,
    pub pending_bytes: i64,
}

fn corrupt() -> MetaError {
    MetaError::Corrupt("counters".into())
}

fn u64_at(bytes: &[u8], at: usize) -> Result<u64, MetaError> {
    Ok(u64::from_be_bytes(bytes.get(at..at + 8).ok_or_else(corrupt)?.try_into().map_err(|_| corrupt())?))
}

fn decode_repo(bytes: &[u8]) -> Result<RepoStats, MetaError> {
    if bytes.len() != 40 {
        return Err(corrupt());
    }
    let secs = u64_at(bytes, 32)? as i64;
    Ok(RepoStats {
        links: u64_at(bytes, 0)?,
        bytes: u64_at(bytes, 8)?,
        tags: u64_at(bytes, 16)?,
        live_tags: u64_at(bytes, 24)?,
        last_push_at: (secs != i64::MIN)
            .then(|| OffsetDateTime::from_unix_timestamp(secs).map_err(|_| corrupt()))
            .transpose()?,
    })
}

fn encode_repo(s: &RepoStats) -> [u8; 40] {
    let mut out = [0u8; 40];
    for (i, n) in [s.links, s.bytes, s.tags, s.live_tags].into_iter().enumerate() {
        out[i * 8..i * 8 + 8].copy_from_slice(&n.to_be_bytes());
    }
    let secs = s.last_push_at.map_or(i64::MIN, OffsetDateTime::unix_timestamp);
    out[32..].copy_from_slice(&secs.to_be_bytes());
    out
}

fn decode_store(bytes: &[u8]) -> Result<StoreStats, MetaError> {
    if bytes.len() != 32 {
        return Err(corrupt());
    }
    Ok(StoreStats {
        links: u64_at(bytes, 0)?,
        bytes: u64_at(bytes, 8)?,
        pending_reclaim: u64_at(bytes, 16)?,
        pending_reclaim_bytes: u64_at(bytes, 24)?,
    })
}

fn encode_store(s: &StoreStats) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, n) in [s.links, s.bytes, s.pending_reclaim, s.pending_reclaim_bytes].into_iter().enumerate() {
        out[i * 8..i * 8 + 8].copy_from_slice(&n.to_be_bytes());
    }
    out
}

fn plus(n: u64, delta: i64) -> u64 {
    n.saturating_add_signed(delta)
}

fn abort(e: MetaError) -> ConflictableTransactionError<MetaError> {
    ConflictableTransactionError::Abort(e)
}

/// Adds `delta` to `repo`'s counters, in the caller's transaction.
pub(super) fn add_repo(
    stats: &TransactionalTree,
    repo: &RepoName,
    delta: RepoDelta,
) -> ConflictableTransactionResult<(), MetaError> {
    let key = repo_stats_key(repo.as_str());
    let mut s = match stats.get(&key)? {
        Some(bytes) => decode_repo(&bytes).map_err(abort)?,
        None => RepoStats::default(),
    };
    s.links = plus(s.links, delta.links);
    s.bytes = plus(s.bytes, delta.bytes);
    s.tags = plus(s.tags, delta.tags);
    s.live_tags = plus(s.live_tags, delta.live_tags);
    if let Some(at) = delta.pushed_at {
        let at = at.replace_nanosecond(0).unwrap_or(at);
        s.last_push_at = Some(s.last_push_at.map_or(at, |last| last.max(at)));
    }
    if s.links == 0 && s.tags == 0 {
        stats.remove(key)?;
    } else {
        stats.insert(key, &encode_repo(&s)[..])?;
    }
    Ok(())
}

/// Adds `delta` to the store's counters, in the caller's transaction.
pub(super) fn add_store(stats: &TransactionalTree, delta: StoreDelta) -> ConflictableTransactionResult<(), MetaError> {
    let mut s = match stats.get(STORE_KEY)? {
        Some(bytes) => decode_store(&bytes).map_err(abort)?,
        None => StoreStats::default(),
    };
    s.links = plus(s.links, delta.links);
    s.bytes = plus(s.bytes, delta.bytes);
    s.pending_reclaim = plus(s.pending_reclaim, delta.pending);
    s.pending_reclaim_bytes = plus(s.pending_reclaim_bytes, delta.pending_bytes);
    stats.insert(STORE_KEY, &encode_store(&s)[..])?;
    Ok(())
}

/// Every counter recounted from the links, tags and reclaim trees.
pub(super) fn recount(t: &Trees) -> Result<(BTreeMap<RepoName, RepoStats>, StoreStats), MetaError> {
    let mut repos: BTreeMap<RepoName, RepoStats> = BTreeMap::new();
    let mut store = StoreStats::default();
    let name_of = |key: &[u8]| -> Result<RepoName, MetaError> {
        let end = key.iter().position(|b| *b == 0).ok_or_else(|| MetaError::Corrupt("key".into()))?;
        let name = std::str::from_utf8(&key[..end]).map_err(|e| MetaError::Corrupt(e.to_string()))?;
        name.parse().map_err(|e: amber_core::name::NameError| MetaError::Corrupt(e.to_string()))
    };
    // Keys come grouped by repository: one name parsed per repository.
    let mut current: Option<(Vec<u8>, RepoName)> = None;
    let mut repo_of = |key: &[u8]| -> Result<RepoName, MetaError> {
        let end = key.iter().position(|b| *b == 0).ok_or_else(|| MetaError::Corrupt("key".into()))?;
        if let Some((prefix, name)) = &current
            && prefix.as_slice() == &key[..end]
        {
            return Ok(name.clone());
        }
        let name = name_of(key)?;
        current = Some((key[..end].to_vec(), name.clone()));
        Ok(name)
    };
    for item in t.links.iter() {
        let (key, value) = item?;
        let (size, created_at) = parse_link(&value)?;
        let s = repos.entry(repo_of(&key)?).or_default();
        s.links += 1;
        s.bytes += size;
        s.last_push_at = Some(s.last_push_at.map_or(created_at, |l| l.max(created_at)));
        store.links += 1;
        store.bytes += size;
    }
    for item in t.tags.iter() {
        let (key, json) = item?;
        let record: crate::meta::TagRecord = serde_json::from_slice(&json)?;
        let s = repos.entry(repo_of(&key)?).or_default();
        s.tags += 1;
        s.live_tags += u64::from(record.expiry.is_none());
        let at = record.created_at.replace_nanosecond(0).unwrap_or(record.created_at);
        s.last_push_at = Some(s.last_push_at.map_or(at, |l| l.max(at)));
    }
    for item in t.reclaim.iter() {
        let (_, json) = item?;
        let waiting: Waiting = serde_json::from_slice(&json)?;
        store.pending_reclaim += 1;
        store.pending_reclaim_bytes += waiting.size;
    }
    Ok((repos, store))
}

/// The stored counters.
fn stored(t: &Trees) -> Result<(BTreeMap<RepoName, RepoStats>, StoreStats), MetaError> {
    let mut repos = BTreeMap::new();
    for item in t.stats.scan_prefix(b"r") {
        let (key, value) = item?;
        let name = std::str::from_utf8(&key[1..]).map_err(|e| MetaError::Corrupt(e.to_string()))?;
        let name = name.parse().map_err(|e: amber_core::name::NameError| MetaError::Corrupt(e.to_string()))?;
        repos.insert(name, decode_repo(&value)?);
    }
    let store = match t.stats.get(STORE_KEY)? {
        Some(bytes) => decode_store(&bytes)?,
        None => StoreStats::default(),
    };
    Ok((repos, store))
}

/// Sets every counter to the recount (the upgrade to schema 4, a repair).
pub(super) fn rewrite(t: &Trees) -> Result<(), MetaError> {
    let (repos, store) = recount(t)?;
    let mut batch = sled::Batch::default();
    for item in t.stats.iter() {
        batch.remove(item?.0);
    }
    for (name, s) in &repos {
        batch.insert(repo_stats_key(name.as_str()), &encode_repo(s)[..]);
    }
    batch.insert(STORE_KEY, &encode_store(&store)[..]);
    t.stats.apply_batch(batch)?;
    Ok(())
}

impl StatsStore for SledMeta {
    async fn repo_stats(
        &self,
        after: Option<&RepoName>,
        limit: usize,
    ) -> Result<Vec<(RepoName, RepoStats)>, MetaError> {
        // Past every key of `after`: its name and \x00 (no name holds \0).
        let start = after.map_or_else(|| b"r".to_vec(), |a| [repo_stats_key(a.as_str()), vec![0]].concat());
        self.read("repo_stats", move |t| {
            let mut found = Vec::with_capacity(limit.min(1024));
            for item in t.stats.range(start..).take(limit) {
                let (key, value) = item?;
                if key.first() != Some(&b'r') {
                    break;
                }
                let name = std::str::from_utf8(&key[1..]).map_err(|e| MetaError::Corrupt(e.to_string()))?;
                let name = name.parse().map_err(|e: amber_core::name::NameError| MetaError::Corrupt(e.to_string()))?;
                found.push((name, decode_repo(&value)?));
            }
            Ok(found)
        })
        .await
    }

    async fn store_stats(&self) -> Result<StoreStats, MetaError> {
        self.read("store_stats", |t| match t.stats.get(STORE_KEY)? {
            Some(bytes) => decode_store(&bytes),
            None => Ok(StoreStats::default()),
        })
        .await
    }

    async fn check_stats(&self, repair: bool) -> Result<Vec<String>, MetaError> {
        // Recounted beside the writes first; what differs is recounted again
        // with the writes held (one at a time on the writer: the counters
        // and what they count cannot move meanwhile), and only that is
        // reported: a push in flight is not a fault.
        let trees = self.trees.clone();
        let first = tokio::task::spawn_blocking(move || {
            let (repos, store) = recount(&trees)?;
            let (stored_repos, stored_store) = stored(&trees)?;
            Ok::<_, MetaError>(differences(&stored_repos, &repos, (&stored_store, &store)))
        })
        .await
        .map_err(|e| MetaError::Store(e.to_string()))??;
        if first.is_empty() {
            return Ok(first);
        }
        self.locked("check_stats", move |t| {
            let (repos, store) = recount(t)?;
            let (stored_repos, stored_store) = stored(t)?;
            let found = differences(&stored_repos, &repos, (&stored_store, &store));
            if repair && !found.is_empty() {
                rewrite(t)?;
                t.db.flush()?;
            }
            Ok(found)
        })
        .await
    }
}
