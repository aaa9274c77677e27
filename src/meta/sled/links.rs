//! Blob links on sled.

use amber_core::{Digest, RepoName};
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;
use time::OffsetDateTime;

use super::stats::{RepoDelta, StoreDelta, add_repo, add_store};
use super::{
    SledMeta, Waiting, append_audit_in, holder_key, key_digest, link_value, next_prefix, parse_link, repo_key,
    repo_key_bytes, transaction_error,
};
use crate::blobs::Stored;
use crate::meta::LinkStore;
use crate::meta::{AuditBuild, Lease, MetaError};

impl LinkStore for SledMeta {
    async fn link_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        lease: Option<&Lease>,
        audit: AuditBuild,
    ) -> Result<Stored, MetaError> {
        let key = repo_key(repo, digest.as_bytes());
        let holder = holder_key(digest, repo.as_str().as_bytes());
        let (digest, lease, repo) = (*digest, lease.cloned(), repo.clone());
        // Flushed also when the link was there: a racing request may have
        // made it and not yet flushed it, and this answer promises it is durable.
        self.write("link_blob", move |t| {
            let read_in = t.link_sizes.generation();
            let linked = (&t.links, &t.linked_by, &t.reclaim, &t.stats, &t.audit, &t.audit_head)
                .transaction(|(links, linked_by, reclaim, stats, audit_tree, head)| {
                    if let Some(json) = reclaim.get(digest.as_bytes())? {
                        let waiting: Waiting = serde_json::from_slice(&json)
                            .map_err(|e| ConflictableTransactionError::Abort(MetaError::from(e)))?;
                        if waiting.marked {
                            // Only an upload without a lease gets here: its bytes may be gone.
                            return Err(ConflictableTransactionError::Abort(MetaError::Unavailable(
                                "the blob's bytes are being reclaimed".into(),
                            )));
                        }
                        // Linked again within the grace: no longer waiting.
                        reclaim.remove(digest.as_bytes())?;
                        let pending_bytes = -(waiting.size as i64);
                        add_store(stats, StoreDelta { pending: -1, pending_bytes, ..Default::default() })?;
                    }
                    if links.get(&key)?.is_some() {
                        return Ok(Stored::AlreadyPresent);
                    }
                    let now = OffsetDateTime::now_utc();
                    links.insert(key.as_slice(), &link_value(size, now)[..])?;
                    linked_by.insert(holder.as_slice(), &[][..])?;
                    let delta = RepoDelta { links: 1, bytes: size as i64, pushed_at: Some(now), ..Default::default() };
                    add_repo(stats, &repo, delta)?;
                    add_store(stats, StoreDelta { links: 1, bytes: size as i64, ..Default::default() })?;
                    append_audit_in(audit_tree, head, &*audit)?;
                    Ok(Stored::Created)
                })
                .map_err(transaction_error);
            if let Ok(Stored::Created) = linked {
                // Read right after it is pushed, as often as not.
                t.link_sizes.keep(read_in, key, size);
            }
            if let Some(lease) = &lease {
                t.promotions().leases.remove(&lease.0);
            }
            linked
        })
        .await
    }

    async fn begin_promote(&self, digest: &Digest) -> Result<Option<Lease>, MetaError> {
        Ok(self.promote_now(digest))
    }

    async fn end_promote(&self, lease: &Lease) -> Result<(), MetaError> {
        self.trees.promotions().leases.remove(&lease.0);
        Ok(())
    }

    async fn linked_digests(&self, after: Option<&Digest>, limit: usize) -> Result<Vec<(Digest, u64)>, MetaError> {
        // The smallest key past every key of `after`: the digest plus one.
        let start = after.and_then(|d| next_prefix(d.as_bytes()));
        if after.is_some() && start.is_none() {
            return Ok(Vec::new());
        }
        self.read("linked_digests", move |t| {
            let mut found: Vec<(Digest, u64)> = Vec::new();
            let mut from = start.unwrap_or_default();
            while found.len() < limit {
                let Some(item) = t.linked_by.range(from.clone()..).next() else { break };
                let (key, _) = item?;
                let digest = key_digest(&key, 0)?;
                if let Some(value) = t.links.get(repo_key_bytes(&key[32..], digest.as_bytes()))? {
                    found.push((digest, parse_link(&value)?.0));
                }
                match next_prefix(digest.as_bytes()) {
                    Some(next) => from = next,
                    None => break,
                }
            }
            Ok(found)
        })
        .await
    }

    async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>, MetaError> {
        let key = repo_key(repo, digest.as_bytes());
        if let Some(size) = self.trees.link_sizes.get(&key) {
            return Ok(Some(size));
        }
        self.read("blob_size", move |t| {
            let read_in = t.link_sizes.generation();
            let Some(value) = t.links.get(&key)? else {
                return Ok(None);
            };
            let size = parse_link(&value)?.0;
            t.link_sizes.keep(read_in, key, size);
            Ok(Some(size))
        })
        .await
    }
}
