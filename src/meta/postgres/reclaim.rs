//! Reclaim on PostgreSQL.

use amber_core::Digest;
use time::OffsetDateTime;

use super::{PostgresMeta, append_audit_in, digest_from};
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

    async fn mark_reclaims(
        &self,
        digests: &[Digest],
        unlinked_before: OffsetDateTime,
    ) -> Result<Vec<Digest>, MetaError> {
        if digests.is_empty() {
            return Ok(Vec::new());
        }
        let mut hexes: Vec<String> = digests.iter().map(Digest::hex).collect();
        hexes.sort();
        let bytes: Vec<Vec<u8>> = digests.iter().map(|d| d.as_bytes().to_vec()).collect();
        let mut tx = self.pool.begin().await?;
        // Each digest's lock, which a lease is taken under (`begin_promote`).
        sqlx::query("SELECT count(pg_advisory_xact_lock(7350, hashtext(h))) FROM (SELECT h FROM unnest($1::text[]) h ORDER BY h) s")
            .bind(&hexes)
            .execute(&mut *tx)
            .await?;
        let rows: Vec<(Vec<u8>, OffsetDateTime, bool)> = sqlx::query_as(
            "SELECT digest, since, marked FROM reclaim WHERE digest = ANY($1) ORDER BY digest FOR UPDATE",
        )
        .bind(&bytes)
        .fetch_all(&mut *tx)
        .await?;
        let linked: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT DISTINCT digest FROM blob_links WHERE digest = ANY($1)")
            .bind(&bytes)
            .fetch_all(&mut *tx)
            .await?;
        let leased: Vec<(Vec<u8>,)> =
            sqlx::query_as("SELECT DISTINCT digest FROM blob_leases WHERE digest = ANY($1) AND expires_at > now()")
                .bind(&bytes)
                .fetch_all(&mut *tx)
                .await?;
        let linked: std::collections::HashSet<Vec<u8>> = linked.into_iter().map(|(d,)| d).collect();
        let leased: std::collections::HashSet<Vec<u8>> = leased.into_iter().map(|(d,)| d).collect();
        let (mut marked, mut to_mark, mut relinked) = (Vec::new(), Vec::new(), Vec::new());
        for (digest, since, was_marked) in rows {
            if was_marked {
                marked.push(digest_from(&digest)?);
            } else if since >= unlinked_before || leased.contains(&digest) {
            } else if linked.contains(&digest) {
                relinked.push(digest);
            } else {
                marked.push(digest_from(&digest)?);
                to_mark.push(digest);
            }
        }
        sqlx::query("DELETE FROM reclaim WHERE digest = ANY($1)").bind(&relinked).execute(&mut *tx).await?;
        sqlx::query("UPDATE reclaim SET marked = true WHERE digest = ANY($1)").bind(&to_mark).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(marked)
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
