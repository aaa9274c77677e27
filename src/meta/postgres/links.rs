//! Blob links on PostgreSQL.

use amber_core::{Digest, RepoName};

use super::{PostgresMeta, append_audit_in, digest_from, lock_digest};
use crate::blobs::Stored;
use crate::meta::LinkStore;
use crate::meta::{AuditBuild, LEASE_LIFETIME, Lease, MetaError};

impl LinkStore for PostgresMeta {
    async fn link_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        lease: Option<&Lease>,
        audit: AuditBuild,
    ) -> Result<Stored, MetaError> {
        let mut tx = self.pool.begin().await?;
        let marked: Option<(bool,)> = sqlx::query_as("SELECT marked FROM reclaim WHERE digest = $1")
            .bind(&digest.as_bytes()[..])
            .fetch_optional(&mut *tx)
            .await?;
        if marked.is_some_and(|(m,)| m) {
            // Only an upload without a lease can get here: its bytes may be gone.
            return Err(MetaError::Unavailable("the blob's bytes are being reclaimed".into()));
        }
        let inserted =
            sqlx::query("INSERT INTO blob_links (repository, digest, size) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                .bind(repo.as_str())
                .bind(&digest.as_bytes()[..])
                .bind(size as i64)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        // Linked again within the grace: no longer waiting for reclaim.
        sqlx::query("DELETE FROM reclaim WHERE digest = $1 AND NOT marked")
            .bind(&digest.as_bytes()[..])
            .execute(&mut *tx)
            .await?;
        if let Some(lease) = lease {
            sqlx::query("DELETE FROM blob_leases WHERE id = $1").bind(&lease.0).execute(&mut *tx).await?;
        }
        if inserted == 0 {
            tx.commit().await?;
            return Ok(Stored::AlreadyPresent);
        }
        append_audit_in(&mut tx, &*audit).await?;
        tx.commit().await?;
        Ok(Stored::Created)
    }

    async fn begin_promote(&self, digest: &Digest) -> Result<Option<Lease>, MetaError> {
        let mut tx = self.pool.begin().await?;
        lock_digest(&mut tx, digest).await?;
        let marked: Option<(bool,)> = sqlx::query_as("SELECT marked FROM reclaim WHERE digest = $1")
            .bind(&digest.as_bytes()[..])
            .fetch_optional(&mut *tx)
            .await?;
        if marked.is_some_and(|(m,)| m) {
            return Ok(None);
        }
        let lease = Lease::new();
        sqlx::query("INSERT INTO blob_leases (id, digest, expires_at) VALUES ($1, $2, now() + $3)")
            .bind(&lease.0)
            .bind(&digest.as_bytes()[..])
            .bind(LEASE_LIFETIME)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(lease))
    }

    async fn end_promote(&self, lease: &Lease) -> Result<(), MetaError> {
        sqlx::query("DELETE FROM blob_leases WHERE id = $1").bind(&lease.0).execute(&self.pool).await?;
        Ok(())
    }

    async fn linked_digests(&self, after: Option<&Digest>, limit: usize) -> Result<Vec<(Digest, u64)>, MetaError> {
        let rows: Vec<(Vec<u8>, i64)> = sqlx::query_as(
            "SELECT DISTINCT ON (digest) digest, size FROM blob_links WHERE digest > $1 ORDER BY digest LIMIT $2",
        )
        .bind(after.map_or_else(Vec::new, |d| d.as_bytes().to_vec()))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(|(d, size)| Ok((digest_from(&d)?, size as u64))).collect()
    }

    async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>, MetaError> {
        let size: Option<(i64,)> = sqlx::query_as("SELECT size FROM blob_links WHERE repository = $1 AND digest = $2")
            .bind(repo.as_str())
            .bind(&digest.as_bytes()[..])
            .fetch_optional(&self.pool)
            .await?;
        Ok(size.map(|(s,)| s as u64))
    }
}
