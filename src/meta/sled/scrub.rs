//! Scrub on sled.

use amber_core::Digest;
use sled::Transactional;
use time::OffsetDateTime;

use super::{SCRUB_KEY, SledMeta, append_audit_in, transaction_error};
use crate::meta::ScrubStore;
use crate::meta::{AuditBuild, MetaError, Quarantined, RunnerLock, ScrubProgress};

impl ScrubStore for SledMeta {
    async fn quarantine(&self, entry: &Quarantined, audit: AuditBuild) -> Result<bool, MetaError> {
        let (key, json) = (entry.digest.as_bytes().to_vec(), serde_json::to_vec(entry)?);
        self.write("quarantine", move |t| {
            (&t.quarantine, &t.audit, &t.audit_head)
                .transaction(|(quarantine, audit_tree, head)| {
                    if quarantine.get(&key)?.is_some() {
                        return Ok(false);
                    }
                    quarantine.insert(key.as_slice(), json.as_slice())?;
                    append_audit_in(audit_tree, head, &*audit)?;
                    Ok(true)
                })
                .map_err(transaction_error)
        })
        .await
    }

    async fn heal(&self, digest: &Digest, audit: AuditBuild) -> Result<bool, MetaError> {
        let key = digest.as_bytes().to_vec();
        self.write("heal", move |t| {
            (&t.quarantine, &t.audit, &t.audit_head)
                .transaction(|(quarantine, audit_tree, head)| {
                    if quarantine.remove(key.as_slice())?.is_none() {
                        return Ok(false);
                    }
                    append_audit_in(audit_tree, head, &*audit)?;
                    Ok(true)
                })
                .map_err(transaction_error)
        })
        .await
    }

    async fn quarantined(&self) -> Result<Vec<Quarantined>, MetaError> {
        self.read("quarantined", |t| {
            let mut all = Vec::new();
            for item in t.quarantine.iter() {
                let (_, json) = item?;
                all.push(serde_json::from_slice(&json)?);
            }
            Ok(all)
        })
        .await
    }

    async fn scrub_progress(&self) -> Result<ScrubProgress, MetaError> {
        self.read("scrub_progress", |t| match t.db.get(SCRUB_KEY)? {
            Some(json) => Ok(serde_json::from_slice(&json)?),
            None => Ok(ScrubProgress::default()),
        })
        .await
    }

    async fn record_verified(&self, digests: &[Digest], at: OffsetDateTime) -> Result<(), MetaError> {
        let digests = digests.to_vec();
        // Flushed with the next write (the scrub saves its progress right after).
        self.locked("record_verified", move |t| {
            let mut batch = sled::Batch::default();
            for digest in &digests {
                batch.insert(digest.as_bytes(), &at.unix_timestamp().to_be_bytes()[..]);
            }
            t.verified.apply_batch(batch)?;
            Ok(())
        })
        .await
    }

    async fn last_verified(&self, digest: &Digest) -> Result<Option<OffsetDateTime>, MetaError> {
        let key = digest.as_bytes().to_vec();
        self.read("last_verified", move |t| match t.verified.get(key)? {
            Some(v) => {
                let secs =
                    i64::from_be_bytes(v.as_ref().try_into().map_err(|_| MetaError::Corrupt("verified".into()))?);
                Ok(Some(OffsetDateTime::from_unix_timestamp(secs).map_err(|e| MetaError::Corrupt(e.to_string()))?))
            }
            None => Ok(None),
        })
        .await
    }

    async fn save_scrub_progress(&self, progress: &ScrubProgress) -> Result<(), MetaError> {
        let json = serde_json::to_vec(progress)?;
        self.write("save_scrub_progress", move |t| {
            t.db.insert(SCRUB_KEY, json)?;
            Ok(())
        })
        .await
    }

    async fn scrub_lock(&self) -> Result<Option<RunnerLock>, MetaError> {
        Ok(self.trees.scrubber.clone().try_lock_owned().ok().map(|guard| RunnerLock(Box::new(guard))))
    }
}
