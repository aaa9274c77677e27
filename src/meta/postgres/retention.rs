//! Retention on PostgreSQL.

use amber_core::wire::PolicyInfo;
use amber_core::{Digest, RepoName, RepoPattern, Tag};
use sqlx::types::Json;
use time::OffsetDateTime;

use super::{PostgresMeta, append_audit_in, digest_from, lock_tag};
use crate::meta::RetentionStore;
use crate::meta::{
    AuditBuild, Expiring, Hold, LinkView, MetaError, RepoView, TagChange, TagRecord, TagView, Unlink, Unlinking,
};

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

    async fn expire_tags(
        &self,
        repo: &RepoName,
        items: &[Expiring],
        policy: Option<&PolicyInfo>,
    ) -> Result<Vec<TagChange>, MetaError> {
        let mut tx = self.pool.begin().await?;
        // The tags' rows first, in name order (as every batch takes them),
        // then the repository's counters, then the audit head: 0013's order.
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_by(|a, b| items[*a].tag.as_str().cmp(items[*b].tag.as_str()));
        let mut records: Vec<Option<TagRecord>> = vec![None; items.len()];
        for &i in &order {
            records[i] = lock_tag(&mut tx, repo, &items[i].tag).await?;
        }
        if let Some(policy) = policy {
            // Every change appends to the audit log, so with its head locked
            // no policy change can commit before this one does: the policy
            // read next is the one in effect when these expiries commit.
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
                return Ok(vec![TagChange::Stale; items.len()]);
            }
        }
        let mut outcomes = Vec::with_capacity(items.len());
        let mut changed = false;
        for (item, record) in items.iter().zip(records) {
            let outcome = match record {
                None => TagChange::Unknown,
                Some(record) if record.expiry.is_some() => TagChange::Unchanged(record),
                Some(record) if record.hold.is_some() => TagChange::Held(record),
                Some(mut record) => {
                    let inserted = sqlx::query(
                        "INSERT INTO tag_expiries (repository, tag, expiry) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    )
                    .bind(repo.as_str())
                    .bind(item.tag.as_str())
                    .bind(Json(&item.expiry))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if inserted == 0 {
                        // The same tag twice in one batch: expired by the first.
                        outcomes.push(TagChange::Unchanged(record));
                        continue;
                    }
                    append_audit_in(&mut tx, &*item.audit).await?;
                    changed = true;
                    record.expiry = Some(item.expiry.clone());
                    TagChange::Changed(record)
                }
            };
            outcomes.push(outcome);
        }
        if changed {
            tx.commit().await?;
        }
        Ok(outcomes)
    }

    async fn unlink_blobs(
        &self,
        repo: &RepoName,
        items: &[Unlinking],
        created_before: OffsetDateTime,
    ) -> Result<Vec<Unlink>, MetaError> {
        let mut tx = self.pool.begin().await?;
        let digests: Vec<Vec<u8>> = items.iter().map(|i| i.digest.as_bytes().to_vec()).collect();
        // FOR UPDATE, in digest order (as a bind takes them FOR SHARE): each
        // waits for any bind holding the link; the statements after see
        // what that bind committed.
        let links: Vec<(Vec<u8>, OffsetDateTime, i64)> = sqlx::query_as(
            "SELECT digest, created_at, size FROM blob_links WHERE repository = $1 AND digest = ANY($2) ORDER BY \
             digest FOR UPDATE",
        )
        .bind(repo.as_str())
        .bind(&digests)
        .fetch_all(&mut *tx)
        .await?;
        let links: std::collections::HashMap<Vec<u8>, (OffsetDateTime, i64)> =
            links.into_iter().map(|(d, at, size)| (d, (at, size))).collect();
        let referenced: Vec<(Vec<u8>,)> = sqlx::query_as(
            "SELECT DISTINCT mb.blob FROM manifest_blobs mb JOIN tags t ON t.repository = mb.repository AND t.digest = mb.manifest
               WHERE mb.repository = $1 AND mb.blob = ANY($2)
                 AND NOT EXISTS (SELECT 1 FROM tag_expiries e WHERE e.repository = t.repository AND e.tag = t.tag)",
        )
        .bind(repo.as_str())
        .bind(&digests)
        .fetch_all(&mut *tx)
        .await?;
        let referenced: std::collections::HashSet<Vec<u8>> = referenced.into_iter().map(|(d,)| d).collect();
        let mut outcomes = Vec::with_capacity(items.len());
        let mut removed = std::collections::HashSet::new();
        for item in items {
            let key = item.digest.as_bytes().to_vec();
            let outcome = match links.get(&key) {
                _ if removed.contains(&key) => Unlink::Gone,
                None => Unlink::Gone,
                Some((created_at, _)) if *created_at >= created_before => Unlink::Fresh,
                Some(_) if referenced.contains(&key) => Unlink::Referenced,
                Some((_, size)) => {
                    sqlx::query("DELETE FROM blob_links WHERE repository = $1 AND digest = $2")
                        .bind(repo.as_str())
                        .bind(&key)
                        .execute(&mut *tx)
                        .await?;
                    // The last link gone: the bytes wait for reclaim from now.
                    sqlx::query(
                        "INSERT INTO reclaim (digest, size, since) SELECT $1, $2, now()
                         WHERE NOT EXISTS (SELECT 1 FROM blob_links WHERE digest = $1) ON CONFLICT DO NOTHING",
                    )
                    .bind(&key)
                    .bind(size)
                    .execute(&mut *tx)
                    .await?;
                    append_audit_in(&mut tx, &*item.audit).await?;
                    removed.insert(key);
                    Unlink::Unlinked
                }
            };
            outcomes.push(outcome);
        }
        if !removed.is_empty() {
            tx.commit().await?;
        }
        Ok(outcomes)
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
