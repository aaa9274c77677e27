//! The OCI front door's records on PostgreSQL.

use amber_core::{Digest, RepoName, Tag};

use super::{PostgresMeta, append_audit_in, digest_from};
use crate::blobs::Stored;
use crate::meta::OciStore;
use crate::meta::{AuditBuild, MetaError, OciManifest, Referrer};

impl OciStore for PostgresMeta {
    async fn put_alias(&self, alias: &str, digest: &Digest) -> Result<(), MetaError> {
        // First writer wins: an alias names one content, ever.
        sqlx::query("INSERT INTO oci_aliases (alias, digest) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(alias)
            .bind(&digest.as_bytes()[..])
            .execute(&self.pool)
            .await?;
        if alias.starts_with("sha256:") {
            sqlx::query("INSERT INTO oci_sha256 (digest, sha256) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(&digest.as_bytes()[..])
                .bind(alias)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    async fn note_sha256(&self, sha256: &str, digest: &Digest) -> Result<(), MetaError> {
        // Every write here is durable; one statement writes both.
        sqlx::query(
            "WITH a AS (INSERT INTO oci_aliases (alias, digest) VALUES ($1, $2) ON CONFLICT DO NOTHING) \
             INSERT INTO oci_sha256 (digest, sha256) VALUES ($2, $1) ON CONFLICT DO NOTHING",
        )
        .bind(sha256)
        .bind(&digest.as_bytes()[..])
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn sha256_of(&self, digest: &Digest) -> Result<Option<String>, MetaError> {
        let row: Option<(String,)> = sqlx::query_as("SELECT sha256 FROM oci_sha256 WHERE digest = $1")
            .bind(&digest.as_bytes()[..])
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(s,)| s))
    }

    async fn alias(&self, alias: &str) -> Result<Option<Digest>, MetaError> {
        let row: Option<(Vec<u8>,)> = sqlx::query_as("SELECT digest FROM oci_aliases WHERE alias = $1")
            .bind(alias)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|(d,)| digest_from(&d)).transpose()
    }

    async fn put_oci_manifest(
        &self,
        repo: &RepoName,
        digest: &str,
        manifest: &OciManifest,
        referrer: Option<&[u8]>,
        keep_with: Option<(&Tag, &Digest)>,
        audit: AuditBuild,
    ) -> Result<Stored, MetaError> {
        let record = serde_json::to_vec(manifest).map_err(|e| MetaError::Corrupt(e.to_string()))?;
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO oci_manifests (repository, digest, record) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(repo.as_str())
        .bind(digest)
        .bind(&record)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            tx.commit().await?;
            return Ok(Stored::AlreadyPresent);
        }
        if let (Some(subject), Some(descriptor)) = (&manifest.subject, referrer) {
            sqlx::query(
                "INSERT INTO oci_referrers (repository, subject, digest, descriptor) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(repo.as_str())
            .bind(subject)
            .bind(digest)
            .bind(descriptor)
            .execute(&mut *tx)
            .await?;
        }
        if let Some((_, bound)) = keep_with {
            // The binding's references: retention keeps these blobs while its tag is live.
            let blobs: Vec<Vec<u8>> = manifest.blobs.iter().map(|(b, _)| b.as_bytes().to_vec()).collect();
            sqlx::query(
                "INSERT INTO manifest_blobs (repository, blob, manifest) SELECT $1, blob, $3 FROM unnest($2::bytea[]) AS blob ON CONFLICT DO NOTHING",
            )
            .bind(repo.as_str())
            .bind(&blobs)
            .bind(&bound.as_bytes()[..])
            .execute(&mut *tx)
            .await?;
        }
        append_audit_in(&mut tx, &*audit).await?;
        tx.commit().await?;
        Ok(Stored::Created)
    }

    async fn put_bound_tag(&self, repo: &RepoName, digest: &str, tag: &Tag) -> Result<(), MetaError> {
        sqlx::query("INSERT INTO oci_tags (repository, digest, tag) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(repo.as_str())
            .bind(digest)
            .bind(tag.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn bound_tag(&self, repo: &RepoName, digest: &str) -> Result<Option<Tag>, MetaError> {
        let row: Option<(String,)> = sqlx::query_as("SELECT tag FROM oci_tags WHERE repository = $1 AND digest = $2")
            .bind(repo.as_str())
            .bind(digest)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|(t,)| t.parse().map_err(|_| MetaError::Corrupt("bound tag".into()))).transpose()
    }

    async fn oci_manifest(&self, repo: &RepoName, digest: &str) -> Result<Option<OciManifest>, MetaError> {
        let row: Option<(Vec<u8>,)> =
            sqlx::query_as("SELECT record FROM oci_manifests WHERE repository = $1 AND digest = $2")
                .bind(repo.as_str())
                .bind(digest)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|(r,)| serde_json::from_slice(&r).map_err(|e| MetaError::Corrupt(e.to_string()))).transpose()
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Referrer>, MetaError> {
        let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
            "SELECT digest, descriptor FROM oci_referrers WHERE repository = $1 AND subject = $2 AND digest COLLATE \"C\" > $3 \
             ORDER BY digest COLLATE \"C\" LIMIT $4",
        )
        .bind(repo.as_str())
        .bind(subject)
        .bind(after.unwrap_or(""))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(digest, descriptor)| Referrer { digest, descriptor }).collect())
    }
}
