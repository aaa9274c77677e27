//! The audit log on sled.

use amber_core::audit::AuditEntry;
use amber_core::dsse::Envelope;
use sled::Transactional;

use super::{AUDIT_CHECKPOINT, SledMeta, append_audit_in, transaction_error};
use crate::meta::AuditStore;
use crate::meta::{AuditBuild, MetaError};

impl AuditStore for SledMeta {
    async fn append_audit(&self, build: AuditBuild) -> Result<u64, MetaError> {
        self.write("append_audit", move |t| {
            (&t.audit, &t.audit_head)
                .transaction(|(audit, head)| append_audit_in(audit, head, &*build))
                .map_err(transaction_error)
        })
        .await
    }

    async fn audit_entries(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, MetaError> {
        self.read("audit_entries", move |t| {
            let mut entries = Vec::new();
            for item in t.audit.range((after + 1).to_be_bytes()..).take(limit) {
                let (key, value) = item?;
                let seq =
                    u64::from_be_bytes(key.as_ref().try_into().map_err(|_| MetaError::Corrupt("audit key".into()))?);
                if value.len() < 64 {
                    return Err(MetaError::Corrupt(format!("audit entry {seq}")));
                }
                entries.push(AuditEntry {
                    seq,
                    hash: String::from_utf8_lossy(&value[..64]).into_owned(),
                    entry: String::from_utf8_lossy(&value[64..]).into_owned(),
                    log_index: seq - 1,
                });
            }
            Ok(entries)
        })
        .await
    }

    async fn audit_checkpoint(&self) -> Result<Option<Envelope>, MetaError> {
        self.read("audit_checkpoint", |t| match t.audit_head.get(AUDIT_CHECKPOINT)? {
            Some(json) => Ok(Some(serde_json::from_slice(&json)?)),
            None => Ok(None),
        })
        .await
    }
}
