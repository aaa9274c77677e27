//! Retention on PostgreSQL.

use amber_core::wire::PolicyInfo;
use amber_core::{Digest, RepoName, RepoPattern, Tag};
use sqlx::types::Json;
use time::OffsetDateTime;

use super::{PostgresMeta, append_audit_in, digest_from, lock_tag};
use crate::meta::RetentionStore;
use crate::meta::{AuditBuild, Expiry, Hold, LinkView, MetaError, RepoView, TagChange, TagView, Unlink};

impl RetentionStore for PostgresMeta {
    async fn hold_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        hold: &Hold,
        audit: AuditBuild,
    ) -> Result<TagChange, MetaError> {
        let mut tx = self.pool.begin().await?;
        let Some(mut record) = lock_tag(&mut tx, repo, tag).await? else { return Ok(TagChange::Unknown) };
        if record.expiry.is_some() {
            return Ok(TagChange::Expired(record));
        }
        if record.hold.is_some() {
            return Ok(TagChange::Unchanged(record));
        }
        sqlx::query("INSERT INTO tag_holds (repository, tag, hold) VALUES ($1, $2, $3)")
            .bind(repo.as_str())
            .bind(tag.as_str())
            .bind(Json(hold))
            .execute(&mut *tx)
            .await?;
        append_audit_in(&mut tx, &*audit).await?;
        tx.commit().await?;
        record.hold = Some(hold.clone());
        Ok(TagChange::Changed(record))
    }

    async fn release_tag(&self, repo: &RepoName, tag: &Tag, audit: AuditBuild) -> Result<TagChange, MetaError> {
        let mut tx = self.pool.begin().await?;
        let Some(mut record) = lock_tag(&mut tx, repo, tag).await? else { return Ok(TagChange::Unknown) };
        if record.hold.take().is_none() {
            return Ok(TagChange::Unchanged(record));
        }
        sqlx::query("DELETE FROM tag_holds WHERE repository = $1 AND tag = $2")
            .bind(repo.as_str())
            .bind(tag.as_str())
            .execute(&mut *tx)
            .await?;
        append_audit_in(&mut tx, &*audit).await?;
        tx.commit().await?;
        Ok(TagChange::Changed(record))
    }

    async fn expire_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        expiry: &Expiry,
        policy: Option<&PolicyInfo>,
        audit: AuditBuild,
    ) -> Result<TagChange, MetaError> {
        let mut tx = self.pool.begin().await?;
        let Some(mut record) = lock_tag(&mut tx, repo, tag).await? else { return Ok(TagChange::Unknown) };
        if record.expiry.is_some() {
            return Ok(TagChange::Unchanged(record));
        }
        if record.hold.is_some() {
            return Ok(TagChange::Held(record));
        }
        if let Some(policy) = policy {
            // Every change appends to the audit log, so with its head locked
            // no policy change can commit before this one does: the policy
            // read next is the one in effect when this expiry commits. The
            // repository's counters first: the lock order of 0013.
            sqlx::query("SELECT 1 FROM repo_stats WHERE repository = $1 FOR UPDATE")
                .bind(repo.as_str())
                .execute(&mut *tx)
                .await?;
            sqlx::query("SELECT 1 FROM audit_head WHERE singleton FOR UPDATE").execute(&mut *tx).await?;
            let rows: Vec<(String, Json<PolicyInfo>)> =
                sqlx::query_as("SELECT scope, info FROM retention_policies WHERE scope = $1 OR scope = $2")
                    .bind(repo.as_str())
                    .bind(format!("{}/*", repo.owner()))
                    .fetch_all(&mut *tx)
                    .await?;
            let current = rows
                .iter()
                .find(|(scope, _)| scope == repo.as_str())
                .or_else(|| rows.first())
                .map(|(_, Json(info))| info);
            if current.is_none_or(|c| c.scope != policy.scope || c.digest != policy.digest) {
                return Ok(TagChange::Stale);
            }
        }
        sqlx::query("INSERT INTO tag_expiries (repository, tag, expiry) VALUES ($1, $2, $3)")
            .bind(repo.as_str())
            .bind(tag.as_str())
            .bind(Json(expiry))
            .execute(&mut *tx)
            .await?;
        append_audit_in(&mut tx, &*audit).await?;
        tx.commit().await?;
        record.expiry = Some(expiry.clone());
        Ok(TagChange::Changed(record))
    }

    async fn unlink_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        created_before: OffsetDateTime,
        audit: AuditBuild,
    ) -> Result<Unlink, MetaError> {
        let mut tx = self.pool.begin().await?;
        // FOR UPDATE waits for any bind holding the link FOR SHARE; the
        // statements after it see what that bind committed.
        let created: Option<(OffsetDateTime,)> =
            sqlx::query_as("SELECT created_at FROM blob_links WHERE repository = $1 AND digest = $2 FOR UPDATE")
                .bind(repo.as_str())
                .bind(&digest.as_bytes()[..])
                .fetch_optional(&mut *tx)
                .await?;
        let Some((created_at,)) = created else { return Ok(Unlink::Gone) };
        if created_at >= created_before {
            return Ok(Unlink::Fresh);
        }
        let (referenced,): (bool,) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM manifest_blobs mb JOIN tags t ON t.repository = mb.repository AND t.digest = mb.manifest
               WHERE mb.repository = $1 AND mb.blob = $2
                 AND NOT EXISTS (SELECT 1 FROM tag_expiries e WHERE e.repository = t.repository AND e.tag = t.tag))",
        )
        .bind(repo.as_str())
        .bind(&digest.as_bytes()[..])
        .fetch_one(&mut *tx)
        .await?;
        if referenced {
            return Ok(Unlink::Referenced);
        }
        let (size,): (i64,) =
            sqlx::query_as("DELETE FROM blob_links WHERE repository = $1 AND digest = $2 RETURNING size")
                .bind(repo.as_str())
                .bind(&digest.as_bytes()[..])
                .fetch_one(&mut *tx)
                .await?;
        // The last link gone: the bytes wait for reclaim from now.
        sqlx::query(
            "INSERT INTO reclaim (digest, size, since) SELECT $1, $2, now()
             WHERE NOT EXISTS (SELECT 1 FROM blob_links WHERE digest = $1) ON CONFLICT DO NOTHING",
        )
        .bind(&digest.as_bytes()[..])
        .bind(size)
        .execute(&mut *tx)
        .await?;
        append_audit_in(&mut tx, &*audit).await?;
        tx.commit().await?;
        Ok(Unlink::Unlinked)
    }

    async fn retention_view(&self, repo: &RepoName) -> Result<RepoView, MetaError> {
        // One snapshot for the three reads, so the view is consistent.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY").execute(&mut *tx).await?;
        let tags: Vec<(String, Vec<u8>, OffsetDateTime, bool, bool)> = sqlx::query_as(
            "SELECT t.tag, t.digest, t.created_at, h.tag IS NOT NULL, e.tag IS NOT NULL FROM tags t
               LEFT JOIN tag_holds h ON h.repository = t.repository AND h.tag = t.tag
               LEFT JOIN tag_expiries e ON e.repository = t.repository AND e.tag = t.tag
             WHERE t.repository = $1",
        )
        .bind(repo.as_str())
        .fetch_all(&mut *tx)
        .await?;
        let links: Vec<(Vec<u8>, i64, OffsetDateTime)> =
            sqlx::query_as("SELECT digest, size, created_at FROM blob_links WHERE repository = $1")
                .bind(repo.as_str())
                .fetch_all(&mut *tx)
                .await?;
        let references: Vec<(Vec<u8>, Vec<u8>)> =
            sqlx::query_as("SELECT manifest, blob FROM manifest_blobs WHERE repository = $1")
                .bind(repo.as_str())
                .fetch_all(&mut *tx)
                .await?;
        tx.commit().await?;
        let mut view = RepoView::default();
        for (tag, manifest, bound_at, held, expired) in tags {
            view.tags.push(TagView {
                tag: tag.parse().map_err(|e: amber_core::name::NameError| MetaError::Corrupt(e.to_string()))?,
                manifest: digest_from(&manifest)?,
                bound_at,
                held,
                expired,
            });
        }
        for (digest, size, created_at) in links {
            view.links.push(LinkView { digest: digest_from(&digest)?, size: size as u64, created_at });
        }
        for (manifest, blob) in references {
            view.references.push((digest_from(&manifest)?, digest_from(&blob)?));
        }
        Ok(view)
    }

    async fn put_policy(&self, info: &PolicyInfo, audit: AuditBuild) -> Result<(), MetaError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO retention_policies (scope, info) VALUES ($1, $2) ON CONFLICT (scope) DO UPDATE SET info = EXCLUDED.info",
        )
        .bind(info.scope.to_string())
        .bind(Json(info))
        .execute(&mut *tx)
        .await?;
        append_audit_in(&mut tx, &*audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_policy(&self, scope: &RepoPattern, digest: &Digest, audit: AuditBuild) -> Result<bool, MetaError> {
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query("DELETE FROM retention_policies WHERE scope = $1 AND info->>'digest' = $2")
            .bind(scope.to_string())
            .bind(digest.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Ok(false);
        }
        append_audit_in(&mut tx, &*audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn policies(&self) -> Result<Vec<PolicyInfo>, MetaError> {
        let rows: Vec<(Json<PolicyInfo>,)> =
            sqlx::query_as(r#"SELECT info FROM retention_policies ORDER BY scope COLLATE "C""#)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(Json(info),)| info).collect())
    }
}
