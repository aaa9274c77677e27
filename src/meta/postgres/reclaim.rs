//! Reclaim on PostgreSQL.

use amber_core::Digest;
use time::OffsetDateTime;

use super::{PostgresMeta, append_audit_in, digest_from, lock_digest};
use crate::blobs::Object;
use crate::meta::ReclaimStore;
use crate::meta::{AuditBuild, Candidate, MetaError, RunnerLock};

impl ReclaimStore for PostgresMeta {
    async fn reclaim_lock(&self) -> Result<Option<RunnerLock>, MetaError> {
        // A session lock on a connection of its own, taken out of the pool:
        // dropping the guard closes the connection, which releases it, and
        // so does a crash.
        let mut conn = self.pool.acquire().await?.detach();
        let (locked,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock(7351, 0)").fetch_one(&mut conn).await?;
        Ok(locked.then(|| RunnerLock(Box::new(std::sync::Mutex::new(conn)))))
    }

    async fn note_orphans(&self, objects: &[Object]) -> Result<u64, MetaError> {
        let digests: Vec<Vec<u8>> = objects.iter().map(|o| o.digest.as_bytes().to_vec()).collect();
        let sizes: Vec<i64> = objects.iter().map(|o| o.size as i64).collect();
        let modified: Vec<Option<OffsetDateTime>> = objects.iter().map(|o| o.modified).collect();
        // Waiting since the bytes were written: a crash's leftovers from long
        // ago need not wait another grace.
        let noted = sqlx::query(
            "INSERT INTO reclaim (digest, size, since)
             SELECT o.d, o.s, least(coalesce(o.m, now()), now())
             FROM unnest($1::bytea[], $2::bigint[], $3::timestamptz[]) AS o(d, s, m)
             WHERE NOT EXISTS (SELECT 1 FROM blob_links l WHERE l.digest = o.d)
               AND NOT EXISTS (SELECT 1 FROM blob_leases b WHERE b.digest = o.d AND b.expires_at > now())
             ON CONFLICT DO NOTHING",
        )
        .bind(&digests)
        .bind(&sizes)
        .bind(&modified)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(noted)
    }

    async fn reclaim_candidates(
        &self,
        unlinked_before: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<Candidate>, MetaError> {
        sqlx::query("DELETE FROM blob_leases WHERE expires_at < now()").execute(&self.pool).await?;
        let rows: Vec<(Vec<u8>, i64, bool)> = sqlx::query_as(
            "SELECT digest, size, marked FROM reclaim WHERE marked OR since < $1 ORDER BY marked DESC, since LIMIT $2",
        )
        .bind(unlinked_before)
        .bind(limit.min(i64::MAX as usize) as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(d, size, marked)| Ok(Candidate { digest: digest_from(&d)?, size: size as u64, marked }))
            .collect()
    }

    async fn mark_reclaim(&self, digest: &Digest, unlinked_before: OffsetDateTime) -> Result<bool, MetaError> {
        let mut tx = self.pool.begin().await?;
        lock_digest(&mut tx, digest).await?;
        let row: Option<(OffsetDateTime, bool)> =
            sqlx::query_as("SELECT since, marked FROM reclaim WHERE digest = $1 FOR UPDATE")
                .bind(&digest.as_bytes()[..])
                .fetch_optional(&mut *tx)
                .await?;
        let Some((since, marked)) = row else { return Ok(false) };
        if marked {
            return Ok(true);
        }
        if since >= unlinked_before {
            return Ok(false);
        }
        let (linked, leased): (bool, bool) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM blob_links WHERE digest = $1),
                    EXISTS (SELECT 1 FROM blob_leases WHERE digest = $1 AND expires_at > now())",
        )
        .bind(&digest.as_bytes()[..])
        .fetch_one(&mut *tx)
        .await?;
        if linked {
            sqlx::query("DELETE FROM reclaim WHERE digest = $1").bind(&digest.as_bytes()[..]).execute(&mut *tx).await?;
            tx.commit().await?;
            return Ok(false);
        }
        if leased {
            return Ok(false);
        }
        sqlx::query("UPDATE reclaim SET marked = true WHERE digest = $1")
            .bind(&digest.as_bytes()[..])
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn finish_reclaim(&self, digests: &[Digest], audit: AuditBuild) -> Result<(), MetaError> {
        if digests.is_empty() {
            return Ok(());
        }
        let bytes: Vec<Vec<u8>> = digests.iter().map(|d| d.as_bytes().to_vec()).collect();
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM reclaim WHERE digest = ANY($1) AND marked").bind(&bytes).execute(&mut *tx).await?;
        // Deleted bytes are no longer corrupt bytes.
        sqlx::query("DELETE FROM quarantine WHERE digest = ANY($1)").bind(&bytes).execute(&mut *tx).await?;
        append_audit_in(&mut tx, &*audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn reclaim_pending(&self) -> Result<(u64, u64), MetaError> {
        let (count, bytes): (i64, i64) =
            sqlx::query_as("SELECT pending_reclaim, pending_reclaim_bytes FROM store_stats WHERE singleton")
                .fetch_one(&self.pool)
                .await?;
        Ok((count as u64, bytes as u64))
    }
}
