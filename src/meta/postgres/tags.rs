//! Tags and manifests on PostgreSQL.

use amber_core::dsse::Envelope;
use amber_core::wire::TagEntry;
use amber_core::{Digest, RepoName, Tag};
use time::OffsetDateTime;

use super::{PostgresMeta, TAG_SELECT, TagRow, append_audit_in, tag_from_row};
use crate::meta::TagStore;
use crate::meta::{AuditBuild, Bound, MetaError, Signed, TagRecord};

impl TagStore for PostgresMeta {
    async fn bind_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
        signed: &Signed,
        files: &[(Digest, u64)],
        at: OffsetDateTime,
        audit: AuditBuild,
    ) -> Result<Bound, MetaError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO manifests (repository, digest, envelope) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(repo.as_str())
            .bind(&digest.as_bytes()[..])
            .bind(serde_json::to_string(&signed.envelope)?)
            .execute(&mut *tx)
            .await?;
        if !signed.attestations.is_empty() {
            sqlx::query(
                "INSERT INTO attestations (repository, manifest, envelopes) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(repo.as_str())
            .bind(&digest.as_bytes()[..])
            .bind(serde_json::to_string(&signed.attestations)?)
            .execute(&mut *tx)
            .await?;
        }
        // FOR SHARE: an unlink of any of these links waits for this
        // transaction and then sees the manifest; one that came first has
        // removed the row, which is then missing here.
        let blobs: Vec<Vec<u8>> = files.iter().map(|(d, _)| d.as_bytes().to_vec()).collect();
        let linked: Vec<(Vec<u8>, i64)> = sqlx::query_as(
            "SELECT digest, size FROM blob_links WHERE repository = $1 AND digest = ANY($2) ORDER BY digest FOR SHARE",
        )
        .bind(repo.as_str())
        .bind(&blobs)
        .fetch_all(&mut *tx)
        .await?;
        let linked: std::collections::HashMap<Vec<u8>, u64> =
            linked.into_iter().map(|(d, size)| (d, size as u64)).collect();
        let gone: Vec<Digest> =
            files.iter().filter(|(d, size)| linked.get(&d.as_bytes()[..]) != Some(size)).map(|(d, _)| *d).collect();
        if !gone.is_empty() {
            tx.rollback().await?;
            return match self.tag(repo, tag).await? {
                Some(existing) => Ok(Bound::Existing(existing)),
                None => Ok(Bound::BlobsGone(gone)),
            };
        }
        // After the links' locks: the tag's counters are taken next (0013's
        // lock order, the one an unlink takes them in).
        let bound = sqlx::query(
            "INSERT INTO tags (repository, tag, digest, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(repo.as_str())
        .bind(tag.as_str())
        .bind(&digest.as_bytes()[..])
        .bind(at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if bound == 0 {
            // Lost the race (or a retry): keep nothing of ours, report the winner.
            tx.rollback().await?;
            let existing = self.tag(repo, tag).await?.ok_or_else(|| MetaError::Corrupt("tag vanished".into()))?;
            return Ok(Bound::Existing(existing));
        }
        sqlx::query(
            "INSERT INTO manifest_blobs (repository, blob, manifest) SELECT $1, blob, $3 FROM unnest($2::bytea[]) AS blob ON CONFLICT DO NOTHING",
        )
        .bind(repo.as_str())
        .bind(&blobs)
        .bind(&digest.as_bytes()[..])
        .execute(&mut *tx)
        .await?;
        append_audit_in(&mut tx, &*audit).await?;
        tx.commit().await?;
        Ok(Bound::Created)
    }

    async fn repositories(&self, after: Option<&RepoName>, limit: usize) -> Result<Vec<RepoName>, MetaError> {
        let rows: Vec<(String,)> = sqlx::query_as(
            r#"SELECT repository FROM repo_stats
               WHERE repository COLLATE "C" > $1 COLLATE "C" ORDER BY repository COLLATE "C" LIMIT $2"#,
        )
        .bind(after.map_or("", |a| a.as_str()))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(name,)| name.parse().map_err(|e: amber_core::name::NameError| MetaError::Corrupt(e.to_string())))
            .collect()
    }

    async fn tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<TagRecord>, MetaError> {
        let row: Option<TagRow> = sqlx::query_as(&format!("{TAG_SELECT} WHERE t.repository = $1 AND t.tag = $2"))
            .bind(repo.as_str())
            .bind(tag.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| tag_from_row(row).map(|(_, record)| record)).transpose()
    }

    async fn manifest(&self, repo: &RepoName, digest: &Digest) -> Result<Option<Envelope>, MetaError> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT envelope FROM manifests WHERE repository = $1 AND digest = $2")
                .bind(repo.as_str())
                .bind(&digest.as_bytes()[..])
                .fetch_optional(&self.pool)
                .await?;
        row.map(|(json,)| serde_json::from_str(&json).map_err(MetaError::from)).transpose()
    }

    async fn list_tags(&self, repo: &RepoName, after: Option<&str>, limit: usize) -> Result<Vec<TagEntry>, MetaError> {
        // COLLATE "C": byte order, the same order the embedded backend lists in.
        let rows: Vec<TagRow> = sqlx::query_as(&format!(
            r#"{TAG_SELECT} WHERE t.repository = $1 AND t.tag COLLATE "C" > $2 COLLATE "C"
               ORDER BY t.tag COLLATE "C" LIMIT $3"#
        ))
        .bind(repo.as_str())
        .bind(after.unwrap_or(""))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                let (tag, record) = tag_from_row(row)?;
                Ok(record.entry(tag))
            })
            .collect()
    }
}
