//! Reclaim on sled.

use amber_core::Digest;
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;
use time::OffsetDateTime;

use super::stats::{StoreDelta, add_store};
use super::{SledMeta, Waiting, append_audit_in, key_digest, transaction_error, waiting};
use crate::blobs::Object;
use crate::meta::ReclaimStore;
use crate::meta::{AuditBuild, Candidate, MetaError, RunnerLock};

impl ReclaimStore for SledMeta {
    async fn reclaim_lock(&self) -> Result<Option<RunnerLock>, MetaError> {
        Ok(self.trees.runner.clone().try_lock_owned().ok().map(|guard| RunnerLock(Box::new(guard))))
    }

    async fn note_orphans(&self, objects: &[Object]) -> Result<u64, MetaError> {
        let objects = objects.to_vec();
        self.write("note_orphans", move |t| {
            let now = OffsetDateTime::now_utc();
            let mut noted = Vec::new();
            for object in objects {
                let d = object.digest;
                if t.linked_by.scan_prefix(d.as_bytes()).next().is_some()
                    || t.reclaim.get(d.as_bytes())?.is_some()
                    || t.leased(&d)
                {
                    continue;
                }
                // Waiting since the bytes were written: a crash's leftovers
                // from long ago need not wait another grace.
                let since = object.modified.map_or(now, |m| m.min(now));
                let waiting = Waiting { size: object.size, since, marked: false };
                noted.push((d, object.size, serde_json::to_vec(&waiting)?));
            }
            if noted.is_empty() {
                return Ok(0);
            }
            (&t.reclaim, &t.stats)
                .transaction(|(reclaim, stats)| {
                    for (digest, _, waiting) in &noted {
                        reclaim.insert(digest.as_bytes(), waiting.as_slice())?;
                    }
                    let pending_bytes = noted.iter().map(|(_, size, _)| *size as i64).sum();
                    add_store(stats, StoreDelta { pending: noted.len() as i64, pending_bytes, ..Default::default() })
                })
                .map_err(transaction_error)?;
            Ok(noted.len() as u64)
        })
        .await
    }

    async fn reclaim_candidates(
        &self,
        unlinked_before: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<Candidate>, MetaError> {
        self.read("reclaim_candidates", move |t| {
            let mut found = Vec::new();
            for item in t.reclaim.iter() {
                let (key, json) = item?;
                let waiting: Waiting = serde_json::from_slice(&json)?;
                if waiting.marked || waiting.since < unlinked_before {
                    found.push(Candidate { digest: key_digest(&key, 0)?, size: waiting.size, marked: waiting.marked });
                    if found.len() == limit {
                        break;
                    }
                }
            }
            Ok(found)
        })
        .await
    }

    async fn mark_reclaims(
        &self,
        digests: &[Digest],
        unlinked_before: OffsetDateTime,
    ) -> Result<Vec<Digest>, MetaError> {
        let digests = digests.to_vec();
        self.write("mark_reclaims", move |t| {
            let mut marked = Vec::new();
            // (digest, its record once marked) and (digest, size) linked again.
            let mut to_mark = Vec::new();
            let mut relinked = Vec::new();
            {
                let mut promotions = t.promotions();
                for digest in digests {
                    let Some(mut waiting) = waiting(&t.reclaim, &digest)? else { continue };
                    if waiting.marked {
                        marked.push(digest);
                        continue;
                    }
                    if waiting.since >= unlinked_before {
                        continue;
                    }
                    if t.linked_by.scan_prefix(digest.as_bytes()).next().is_some() {
                        relinked.push((digest, waiting.size));
                        continue;
                    }
                    if promotions.leased(&digest) || !promotions.marked.insert(digest) {
                        continue;
                    }
                    waiting.marked = true;
                    to_mark.push((digest, serde_json::to_vec(&waiting)?));
                }
            }
            let written = (&t.reclaim, &t.stats)
                .transaction(|(reclaim, stats)| {
                    for (digest, json) in &to_mark {
                        reclaim.insert(digest.as_bytes(), json.as_slice())?;
                    }
                    let mut gone = StoreDelta::default();
                    for (digest, size) in &relinked {
                        reclaim.remove(digest.as_bytes())?;
                        gone.pending -= 1;
                        gone.pending_bytes -= *size as i64;
                    }
                    add_store(stats, gone)
                })
                .map_err(transaction_error);
            if let Err(err) = written {
                let mut promotions = t.promotions();
                for (digest, _) in &to_mark {
                    promotions.marked.remove(digest);
                }
                return Err(err);
            }
            marked.extend(to_mark.into_iter().map(|(digest, _)| digest));
            Ok(marked)
        })
        .await
    }

    async fn finish_reclaim(&self, digests: &[Digest], audit: AuditBuild) -> Result<(), MetaError> {
        if digests.is_empty() {
            return Ok(());
        }
        let digests = digests.to_vec();
        self.write("finish_reclaim", move |t| {
            (&t.reclaim, &t.quarantine, &t.stats, &t.audit, &t.audit_head)
                .transaction(|(reclaim, quarantine, stats, audit_tree, head)| {
                    let mut gone = StoreDelta::default();
                    for digest in &digests {
                        if let Some(json) = reclaim.remove(digest.as_bytes())? {
                            let waiting: Waiting = serde_json::from_slice(&json)
                                .map_err(|e| ConflictableTransactionError::Abort(MetaError::from(e)))?;
                            gone.pending -= 1;
                            gone.pending_bytes -= waiting.size as i64;
                        }
                        // Deleted bytes are no longer corrupt bytes.
                        quarantine.remove(digest.as_bytes())?;
                    }
                    add_store(stats, gone)?;
                    append_audit_in(audit_tree, head, &*audit)?;
                    Ok(())
                })
                .map_err(transaction_error)?;
            let mut promotions = t.promotions();
            for digest in &digests {
                promotions.marked.remove(digest);
            }
            Ok(())
        })
        .await
    }

    async fn reclaim_pending(&self) -> Result<(u64, u64), MetaError> {
        let stats = crate::meta::StatsStore::store_stats(self).await?;
        Ok((stats.pending_reclaim, stats.pending_reclaim_bytes))
    }
}
