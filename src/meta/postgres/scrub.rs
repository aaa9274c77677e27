//! Scrub on PostgreSQL.

use amber_core::Digest;
use sqlx::types::Json;
use time::OffsetDateTime;

use super::{PostgresMeta, append_audit_in, digest_from};
use crate::meta::ScrubStore;
use crate::meta::{AuditBuild, MetaError, Quarantined, RunnerLock, ScrubProgress};

impl ScrubStore for PostgresMeta {
    async fn quarantine(&self, entry: &Quarantined, audit: AuditBuild) -> Result<bool, MetaError> {
        let mut tx = self.pool.begin().await?;
        let inserted =
            sqlx::query("INSERT INTO quarantine (digest, reason, found_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                .bind(&entry.digest.as_bytes()[..])
                .bind(&entry.reason)
                .bind(entry.found_at)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if inserted == 0 {
            return Ok(false);
        }
        append_audit_in(&mut tx, &*audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn heal(&self, digest: &Digest, audit: AuditBuild) -> Result<bool, MetaError> {
        let mut tx = self.pool.begin().await?;
        let removed = sqlx::query("DELETE FROM quarantine WHERE digest = $1")
            .bind(&digest.as_bytes()[..])
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if removed == 0 {
            return Ok(false);
        }
        append_audit_in(&mut tx, &*audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn quarantined(&self) -> Result<Vec<Quarantined>, MetaError> {
        let rows: Vec<(Vec<u8>, String, OffsetDateTime)> =
            sqlx::query_as("SELECT digest, reason, found_at FROM quarantine ORDER BY found_at, digest")
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter()
            .map(|(d, reason, found_at)| Ok(Quarantined { digest: digest_from(&d)?, reason, found_at }))
            .collect()
    }

    async fn scrub_progress(&self) -> Result<ScrubProgress, MetaError> {
        let row: Option<(Json<ScrubProgress>,)> =
            sqlx::query_as("SELECT progress FROM scrub_progress WHERE singleton").fetch_optional(&self.pool).await?;
        Ok(row.map(|(Json(p),)| p).unwrap_or_default())
    }

    async fn record_verified(&self, digests: &[Digest], at: OffsetDateTime) -> Result<(), MetaError> {
        let bytes: Vec<Vec<u8>> = digests.iter().map(|d| d.as_bytes().to_vec()).collect();
        sqlx::query(
            "INSERT INTO blob_checks (digest, verified_at) SELECT d, $2 FROM unnest($1::bytea[]) AS d
             ON CONFLICT (digest) DO UPDATE SET verified_at = EXCLUDED.verified_at",
        )
        .bind(&bytes)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn last_verified(&self, digest: &Digest) -> Result<Option<OffsetDateTime>, MetaError> {
        let row: Option<(OffsetDateTime,)> = sqlx::query_as("SELECT verified_at FROM blob_checks WHERE digest = $1")
            .bind(&digest.as_bytes()[..])
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(at,)| at))
    }

    async fn save_scrub_progress(&self, progress: &ScrubProgress) -> Result<(), MetaError> {
        sqlx::query(
            "INSERT INTO scrub_progress (singleton, progress) VALUES (true, $1)
             ON CONFLICT (singleton) DO UPDATE SET progress = EXCLUDED.progress",
        )
        .bind(Json(progress))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn scrub_lock(&self) -> Result<Option<RunnerLock>, MetaError> {
        let mut conn = self.pool.acquire().await?.detach();
        let (locked,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock(7351, 1)").fetch_one(&mut conn).await?;
        Ok(locked.then(|| RunnerLock(Box::new(std::sync::Mutex::new(conn)))))
    }
}
