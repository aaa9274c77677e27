//! Reclaim on sled.

use amber_core::Digest;
use sled::Transactional;
use time::OffsetDateTime;

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
            let mut noted = 0;
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
                t.reclaim.insert(d.as_bytes(), serde_json::to_vec(&waiting)?)?;
                noted += 1;
            }
            Ok(noted)
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

    async fn mark_reclaim(&self, digest: &Digest, unlinked_before: OffsetDateTime) -> Result<bool, MetaError> {
        let digest = *digest;
        self.write("mark_reclaim", move |t| {
            let Some(mut waiting) = waiting(&t.reclaim, &digest)? else { return Ok(false) };
            if waiting.marked {
                return Ok(true);
            }
            if waiting.since >= unlinked_before {
                return Ok(false);
            }
            if t.linked_by.scan_prefix(digest.as_bytes()).next().is_some() {
                t.reclaim.remove(digest.as_bytes())?;
                return Ok(false);
            }
            {
                let mut promotions = t.promotions();
                if promotions.leased(&digest) {
                    return Ok(false);
                }
                promotions.marked.insert(digest);
            }
            waiting.marked = true;
            let marked = serde_json::to_vec(&waiting)
                .map_err(MetaError::from)
                .and_then(|json| Ok(t.reclaim.insert(digest.as_bytes(), json).map(drop)?));
            if marked.is_err() {
                t.promotions().marked.remove(&digest);
            }
            marked.map(|()| true)
        })
        .await
    }

    async fn finish_reclaim(&self, digests: &[Digest], audit: AuditBuild) -> Result<(), MetaError> {
        if digests.is_empty() {
            return Ok(());
        }
        let digests = digests.to_vec();
        self.write("finish_reclaim", move |t| {
            (&t.reclaim, &t.quarantine, &t.audit, &t.audit_head)
                .transaction(|(reclaim, quarantine, audit_tree, head)| {
                    for digest in &digests {
                        reclaim.remove(digest.as_bytes())?;
                        // Deleted bytes are no longer corrupt bytes.
                        quarantine.remove(digest.as_bytes())?;
                    }
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
        self.read("reclaim_pending", |t| {
            let (mut count, mut bytes) = (0, 0);
            for item in t.reclaim.iter() {
                let (_, json) = item?;
                let waiting: Waiting = serde_json::from_slice(&json)?;
                count += 1;
                bytes += waiting.size;
            }
            Ok((count, bytes))
        })
        .await
    }
}
