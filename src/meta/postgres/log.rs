//! The transparency log over the audit entries on PostgreSQL.

use amber_core::log::{Frontier, Hash};
use amber_core::{RepoName, Tag};

use super::{PostgresMeta, integrate_in};
use crate::meta::LogStore;
use crate::meta::{MetaError, RunnerLock};

impl LogStore for PostgresMeta {
    async fn log_tree(&self) -> Result<Frontier, MetaError> {
        // Committed is durable here: any tree read can be signed.
        let (tree,): (Vec<u8>,) =
            sqlx::query_as("SELECT log_tree FROM audit_head WHERE singleton").fetch_one(&self.pool).await?;
        Frontier::from_bytes(&tree).map_err(|e| MetaError::Corrupt(e.to_string()))
    }

    async fn log_hashes(&self, indexes: Vec<u64>) -> Result<Vec<Hash>, MetaError> {
        let wanted: Vec<i64> = indexes.iter().map(|&i| i as i64).collect();
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as("SELECT idx, hash FROM log_hashes WHERE idx = ANY($1)")
            .bind(&wanted)
            .fetch_all(&self.pool)
            .await?;
        let found: std::collections::HashMap<i64, Vec<u8>> = rows.into_iter().collect();
        wanted
            .iter()
            .map(|i| {
                found
                    .get(i)
                    .and_then(|h| <[u8; 32]>::try_from(h.as_slice()).ok())
                    .map(Hash)
                    .ok_or_else(|| MetaError::Corrupt(format!("log hash {i}")))
            })
            .collect()
    }

    async fn log_checkpoint(&self) -> Result<Option<(u64, String)>, MetaError> {
        sized_note(&self.pool, "log_checkpoint").await
    }

    async fn put_log_checkpoint(&self, size: u64, note: &str) -> Result<bool, MetaError> {
        put_sized_note(&self.pool, "log_checkpoint", size, note).await
    }

    async fn cosigned_checkpoint(&self) -> Result<Option<(u64, String)>, MetaError> {
        sized_note(&self.pool, "log_cosigned").await
    }

    async fn put_cosigned_checkpoint(&self, size: u64, note: &str) -> Result<bool, MetaError> {
        put_sized_note(&self.pool, "log_cosigned", size, note).await
    }

    async fn witness_lock(&self) -> Result<Option<RunnerLock>, MetaError> {
        // A session lock on a connection of its own, as reclaim's.
        let mut conn = self.pool.acquire().await?.detach();
        let (locked,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock(7351, 2)").fetch_one(&mut conn).await?;
        Ok(locked.then(|| RunnerLock(Box::new(std::sync::Mutex::new(conn)))))
    }

    async fn claim_log_origin(&self, candidate: &str) -> Result<String, MetaError> {
        // Read first: every start after the first writes nothing.
        let stored: Option<(String,)> =
            sqlx::query_as("SELECT origin FROM log_origin WHERE singleton").fetch_optional(&self.pool).await?;
        if let Some((origin,)) = stored {
            return Ok(origin);
        }
        sqlx::query("INSERT INTO log_origin (origin) VALUES ($1) ON CONFLICT (singleton) DO NOTHING")
            .bind(candidate)
            .execute(&self.pool)
            .await?;
        let (origin,): (String,) =
            sqlx::query_as("SELECT origin FROM log_origin WHERE singleton").fetch_one(&self.pool).await?;
        Ok(origin)
    }

    async fn rename_log_origin(&self, origin: &str) -> Result<bool, MetaError> {
        // One statement: no checkpoint can be signed between the check and the write
        // that a replica would not see (it reads the origin before signing).
        let changed = sqlx::query(
            "INSERT INTO log_origin (origin) SELECT $1 WHERE NOT EXISTS (SELECT 1 FROM log_checkpoint)
             ON CONFLICT (singleton) DO UPDATE SET origin = EXCLUDED.origin",
        )
        .bind(origin)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(changed == 1)
    }

    async fn tag_log_index(&self, repo: &RepoName, tag: &Tag) -> Result<Option<u64>, MetaError> {
        let row: Option<(i64,)> = sqlx::query_as("SELECT log_index FROM tag_log WHERE repository = $1 AND tag = $2")
            .bind(repo.as_str())
            .bind(tag.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(i,)| i as u64))
    }

    async fn integrate_log(&self, limit: usize) -> Result<u64, MetaError> {
        // Read first: with the tree whole, no replica takes the head's lock at start.
        let (seq, tree): (i64, Vec<u8>) =
            sqlx::query_as("SELECT seq, log_tree FROM audit_head WHERE singleton").fetch_one(&self.pool).await?;
        if Frontier::from_bytes(&tree).map_err(|e| MetaError::Corrupt(e.to_string()))?.size() >= seq as u64 {
            return Ok(0);
        }
        let mut tx = self.pool.begin().await?;
        let (tree,): (Vec<u8>,) =
            sqlx::query_as("SELECT log_tree FROM audit_head WHERE singleton FOR UPDATE").fetch_one(&mut *tx).await?;
        let mut tree = Frontier::from_bytes(&tree).map_err(|e| MetaError::Corrupt(e.to_string()))?;
        let added = integrate_in(&mut tx, &mut tree, limit as u64).await?;
        if added > 0 {
            sqlx::query("UPDATE audit_head SET log_tree = $1 WHERE singleton")
                .bind(tree.to_bytes())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(added)
    }
}

/// The checkpoint kept in `table` (`log_checkpoint`, `log_cosigned`: one
/// row each, `size` and `note`).
async fn sized_note(pool: &sqlx::PgPool, table: &'static str) -> Result<Option<(u64, String)>, MetaError> {
    let row: Option<(i64, String)> =
        sqlx::query_as(&format!("SELECT size, note FROM {table} WHERE singleton")).fetch_optional(pool).await?;
    Ok(row.map(|(size, note)| (size as u64, note)))
}

/// Keeps `note` in `table` if `size` is larger than the one kept.
async fn put_sized_note(pool: &sqlx::PgPool, table: &'static str, size: u64, note: &str) -> Result<bool, MetaError> {
    let stored = sqlx::query(&format!(
        "INSERT INTO {table} (size, note) VALUES ($1, $2)
         ON CONFLICT (singleton) DO UPDATE SET size = EXCLUDED.size, note = EXCLUDED.note
         WHERE {table}.size < EXCLUDED.size"
    ))
    .bind(size as i64)
    .bind(note)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(stored == 1)
}
