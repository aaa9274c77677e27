//! Counters on PostgreSQL (`repo_stats`, `store_stats`, 0013): kept by
//! triggers on `blob_links`, `tags`, `tag_expiries` and `reclaim`, in the
//! transaction of each change.

use std::collections::BTreeMap;

use amber_core::RepoName;
use time::OffsetDateTime;

use super::PostgresMeta;
use crate::meta::{MetaError, RepoStats, StatsStore, StoreStats, differences};

type RepoRow = (String, i64, i64, i64, i64, Option<OffsetDateTime>);

fn repo_from(row: RepoRow) -> Result<(RepoName, RepoStats), MetaError> {
    let (name, links, bytes, tags, live_tags, last_push_at) = row;
    let name = name.parse().map_err(|e: amber_core::name::NameError| MetaError::Corrupt(e.to_string()))?;
    let stats = RepoStats {
        links: links as u64,
        bytes: bytes as u64,
        tags: tags as u64,
        live_tags: live_tags as u64,
        last_push_at,
    };
    Ok((name, stats))
}

const RECOUNT_REPOS: &str = r#"
    SELECT repository, sum(links)::bigint, sum(bytes)::bigint, sum(tags)::bigint, sum(live_tags)::bigint, max(last_push_at)
    FROM (
        SELECT repository, count(*) AS links, sum(size) AS bytes, 0 AS tags, 0 AS live_tags, max(created_at) AS last_push_at
        FROM blob_links GROUP BY repository
        UNION ALL
        SELECT t.repository, 0, 0, count(*), count(*) FILTER (WHERE e.tag IS NULL), max(t.created_at)
        FROM tags t LEFT JOIN tag_expiries e ON e.repository = t.repository AND e.tag = t.tag
        GROUP BY t.repository
    ) c
    GROUP BY repository"#;

const RECOUNT_STORE: &str = "SELECT (SELECT count(*) FROM blob_links), (SELECT coalesce(sum(size), 0)::bigint FROM \
                             blob_links), (SELECT count(*) FROM reclaim), (SELECT coalesce(sum(size), 0)::bigint FROM \
                             reclaim)";

fn store_from((links, bytes, pending, pending_bytes): (i64, i64, i64, i64)) -> StoreStats {
    StoreStats {
        links: links as u64,
        bytes: bytes as u64,
        pending_reclaim: pending as u64,
        pending_reclaim_bytes: pending_bytes as u64,
    }
}

impl StatsStore for PostgresMeta {
    async fn repo_stats(
        &self,
        after: Option<&RepoName>,
        limit: usize,
    ) -> Result<Vec<(RepoName, RepoStats)>, MetaError> {
        let rows: Vec<RepoRow> = sqlx::query_as(
            r#"SELECT repository, links, bytes, tags, live_tags, last_push_at FROM repo_stats
               WHERE repository COLLATE "C" > $1 COLLATE "C" ORDER BY repository COLLATE "C" LIMIT $2"#,
        )
        .bind(after.map_or("", |a| a.as_str()))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(repo_from).collect()
    }

    async fn store_stats(&self) -> Result<StoreStats, MetaError> {
        let row: (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT links, bytes, pending_reclaim, pending_reclaim_bytes FROM store_stats WHERE singleton",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(store_from(row))
    }

    async fn check_stats(&self, repair: bool) -> Result<Vec<String>, MetaError> {
        // One snapshot for the counters and the recount: a change committed
        // meanwhile is in both or in neither.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ").execute(&mut *tx).await?;
        let stored: Vec<RepoRow> =
            sqlx::query_as("SELECT repository, links, bytes, tags, live_tags, last_push_at FROM repo_stats")
                .fetch_all(&mut *tx)
                .await?;
        let counted: Vec<RepoRow> = sqlx::query_as(RECOUNT_REPOS).fetch_all(&mut *tx).await?;
        let store_stored: (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT links, bytes, pending_reclaim, pending_reclaim_bytes FROM store_stats WHERE singleton",
        )
        .fetch_one(&mut *tx)
        .await?;
        let store_counted: (i64, i64, i64, i64) = sqlx::query_as(RECOUNT_STORE).fetch_one(&mut *tx).await?;
        let stored: BTreeMap<_, _> = stored.into_iter().map(repo_from).collect::<Result<_, _>>()?;
        let counted: BTreeMap<_, _> = counted.into_iter().map(repo_from).collect::<Result<_, _>>()?;
        let found = differences(&stored, &counted, (&store_from(store_stored), &store_from(store_counted)));
        if repair && !found.is_empty() {
            sqlx::query("DELETE FROM repo_stats").execute(&mut *tx).await?;
            sqlx::query(&format!(
                "INSERT INTO repo_stats (repository, links, bytes, tags, live_tags, last_push_at) {RECOUNT_REPOS}"
            ))
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE store_stats SET links = c.a, bytes = c.b, pending_reclaim = c.c, pending_reclaim_bytes = c.d \
                 FROM (SELECT (SELECT count(*) FROM blob_links) a, (SELECT coalesce(sum(size), 0) FROM blob_links) b, \
                 (SELECT count(*) FROM reclaim) c, (SELECT coalesce(sum(size), 0) FROM reclaim) d) c",
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(found)
    }
}
