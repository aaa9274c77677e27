//! The transparency log over the audit entries on sled.

use amber_core::log::{Frontier, Hash};
use amber_core::{RepoName, Tag};
use sled::Transactional;

use super::{
    AUDIT_HEAD, COSIGNED_CHECKPOINT, LOG_CHECKPOINT, LOG_ORIGIN, SledMeta, Trees, integrate_in, log_hash_key,
    parse_head, read_head, tag_log_key, transaction_error, write_head,
};
use crate::meta::LogStore;
use crate::meta::{MetaError, RunnerLock};

impl LogStore for SledMeta {
    async fn log_tree(&self) -> Result<Frontier, MetaError> {
        self.read("log_tree", |t| {
            let (_, _, tree) = parse_head(t.audit_head.get(AUDIT_HEAD)?.as_deref())?;
            // Read, then flushed: what was read is on disk before anyone
            // signs it. (Writers flush after their commit, outside the lock.)
            t.db.flush()?;
            Ok(tree)
        })
        .await
    }

    async fn log_hashes(&self, indexes: Vec<u64>) -> Result<Vec<Hash>, MetaError> {
        self.read("log_hashes", move |t| {
            indexes
                .iter()
                .map(|&i| match t.audit_head.get(log_hash_key(i))? {
                    Some(v) if v.len() == 32 => Ok(Hash(v.as_ref().try_into().expect("32 bytes"))),
                    _ => Err(MetaError::Corrupt(format!("log hash {i}"))),
                })
                .collect()
        })
        .await
    }

    async fn log_checkpoint(&self) -> Result<Option<(u64, String)>, MetaError> {
        self.read("log_checkpoint", |t| sized_note(t, LOG_CHECKPOINT)).await
    }

    async fn cosigned_checkpoint(&self) -> Result<Option<(u64, String)>, MetaError> {
        self.read("cosigned_checkpoint", |t| sized_note(t, COSIGNED_CHECKPOINT)).await
    }

    async fn put_cosigned_checkpoint(&self, size: u64, note: &str) -> Result<bool, MetaError> {
        let note = note.to_owned();
        self.write("put_cosigned_checkpoint", move |t| put_sized_note(t, COSIGNED_CHECKPOINT, size, &note)).await
    }

    async fn witness_lock(&self) -> Result<Option<RunnerLock>, MetaError> {
        // One process opens a sled store: it is the submitter.
        Ok(Some(RunnerLock(Box::new(()))))
    }

    async fn claim_log_origin(&self, candidate: &str) -> Result<String, MetaError> {
        // Read first: a store that has its origin starts without a write (a
        // store that cannot write still starts, and reports why).
        let stored = self
            .read("log_origin", |t| {
                t.audit_head
                    .get(LOG_ORIGIN)?
                    .map(|v| String::from_utf8(v.to_vec()).map_err(|_| MetaError::Corrupt("log origin".into())))
                    .transpose()
            })
            .await?;
        if let Some(origin) = stored {
            return Ok(origin);
        }
        let candidate = candidate.to_owned();
        self.write("claim_log_origin", move |t| {
            if let Some(stored) = t.audit_head.get(LOG_ORIGIN)? {
                return String::from_utf8(stored.to_vec()).map_err(|_| MetaError::Corrupt("log origin".into()));
            }
            t.audit_head.insert(LOG_ORIGIN, candidate.as_bytes())?;
            Ok(candidate)
        })
        .await
    }

    async fn rename_log_origin(&self, origin: &str) -> Result<bool, MetaError> {
        let origin = origin.to_owned();
        self.write("rename_log_origin", move |t| {
            if t.audit_head.contains_key(LOG_CHECKPOINT)? {
                return Ok(false);
            }
            t.audit_head.insert(LOG_ORIGIN, origin.as_bytes())?;
            Ok(true)
        })
        .await
    }

    async fn put_log_checkpoint(&self, size: u64, note: &str) -> Result<bool, MetaError> {
        let note = note.to_owned();
        self.write("put_log_checkpoint", move |t| put_sized_note(t, LOG_CHECKPOINT, size, &note)).await
    }

    async fn tag_log_index(&self, repo: &RepoName, tag: &Tag) -> Result<Option<u64>, MetaError> {
        let key = tag_log_key(repo, tag);
        self.read("tag_log_index", move |t| match t.audit_head.get(key)? {
            Some(v) if v.len() == 8 => Ok(Some(u64::from_be_bytes(v.as_ref().try_into().expect("8 bytes")))),
            Some(_) => Err(MetaError::Corrupt("tag log index".into())),
            None => Ok(None),
        })
        .await
    }

    async fn integrate_log(&self, limit: usize) -> Result<u64, MetaError> {
        // Read first: a store whose tree is whole is not written to at start.
        let behind = self
            .read("integrate_log", |t| {
                let (seq, _, tree) = parse_head(t.audit_head.get(AUDIT_HEAD)?.as_deref())?;
                Ok(tree.size() < seq)
            })
            .await?;
        if !behind {
            return Ok(0);
        }
        self.write("integrate_log", move |t| {
            (&t.audit, &t.audit_head)
                .transaction(|(audit, head)| {
                    let (seq, hash, mut tree) = read_head(head)?;
                    let added = integrate_in(audit, head, &mut tree, limit as u64)?;
                    if added > 0 {
                        write_head(head, seq, &hash, &tree)?;
                    }
                    Ok(added)
                })
                .map_err(transaction_error)
        })
        .await
    }
}

/// A checkpoint kept under `key`: its size (u64 BE) then its note.
fn sized_note(t: &Trees, key: &[u8]) -> Result<Option<(u64, String)>, MetaError> {
    match t.audit_head.get(key)? {
        Some(v) if v.len() > 8 => Ok(Some((
            u64::from_be_bytes(v[..8].try_into().expect("8 bytes")),
            String::from_utf8_lossy(&v[8..]).into_owned(),
        ))),
        Some(_) => Err(MetaError::Corrupt("log checkpoint".into())),
        None => Ok(None),
    }
}

/// Keeps `note` under `key` if `size` is larger than the one kept.
fn put_sized_note(t: &Trees, key: &[u8], size: u64, note: &str) -> Result<bool, MetaError> {
    let held = t.audit_head.get(key)?;
    if held.as_ref().is_some_and(|v| v.len() >= 8 && u64::from_be_bytes(v[..8].try_into().expect("8")) >= size) {
        return Ok(false);
    }
    let mut value = size.to_be_bytes().to_vec();
    value.extend_from_slice(note.as_bytes());
    t.audit_head.insert(key, value)?;
    Ok(true)
}
