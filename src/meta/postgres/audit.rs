//! The audit log on PostgreSQL.

use amber_core::audit::AuditEntry;
use amber_core::dsse::Envelope;

use super::{PostgresMeta, append_audit_in};
use crate::meta::AuditStore;
use crate::meta::{AuditBuild, MetaError};

impl AuditStore for PostgresMeta {
    async fn append_audit(&self, build: AuditBuild) -> Result<u64, MetaError> {
        let mut tx = self.pool.begin().await?;
        let seq = append_audit_in(&mut tx, &*build).await?;
        tx.commit().await?;
        Ok(seq)
    }

    async fn audit_entries(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, MetaError> {
        let rows: Vec<(i64, String, String)> =
            sqlx::query_as("SELECT seq, hash, entry FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2")
                .bind(after as i64)
                .bind(limit as i64)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(seq, hash, entry)| AuditEntry { seq: seq as u64, hash, entry, log_index: seq as u64 - 1 })
            .collect())
    }

    async fn audit_checkpoint(&self) -> Result<Option<Envelope>, MetaError> {
        let row: Option<(Option<String>,)> =
            sqlx::query_as("SELECT checkpoint FROM audit_head WHERE singleton").fetch_optional(&self.pool).await?;
        match row.and_then(|(c,)| c) {
            Some(json) => Ok(Some(serde_json::from_str(&json)?)),
            None => Ok(None),
        }
    }
}
