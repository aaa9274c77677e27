//! Metadata in PostgreSQL, for any number of replicas. The schema is in
//! `migrations/` (embedded, applied at start). Write-once is enforced by the
//! database: primary keys with `ON CONFLICT DO NOTHING`, a unique index for
//! the single active key, row locks for token changes and the audit head, and
//! triggers that refuse to update or delete tags, manifests, links and audit
//! entries. A committed transaction is durable before it is acknowledged.

mod attestations;
mod audit;
mod keys;
mod links;
mod log;
mod oci;
mod publishers;
mod reclaim;
mod retention;
mod runs;
mod scrub;
mod stats;
mod tags;
mod tokens;
mod uploads;

use std::str::FromStr;
use std::time::Duration;

use amber_core::log::Frontier;
use amber_core::wire::{KeyPurpose, KeyStatus};
use amber_core::{Digest, RepoName, Tag};
use sqlx::PgConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::types::Json;
use time::OffsetDateTime;

use super::{BuildAudit, Expiry, Hold, KeyRecord, MetaError, MetaStore, TagRecord};

pub struct PostgresMeta {
    pool: PgPool,
}

impl From<sqlx::Error> for MetaError {
    fn from(err: sqlx::Error) -> Self {
        // 57014: a statement cancelled by `statement_timeout`.
        let timed_out = err.as_database_error().and_then(|e| e.code()).is_some_and(|c| c == "57014");
        match err {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                Self::Unavailable(err.to_string())
            }
            _ if timed_out => Self::Unavailable(err.to_string()),
            _ => Self::Store(err.to_string()),
        }
    }
}

/// Longest wait for a pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a statement may run; the server cancels it past this.
const STATEMENT_TIMEOUT: &str = "30s";
/// Longest a call may take as a whole, for a server that stops answering
/// altogether (no statement timeout fires then).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(35);

fn digest_from(bytes: &[u8]) -> Result<Digest, MetaError> {
    let array: [u8; 32] = bytes.try_into().map_err(|_| MetaError::Corrupt("digest is not 32 bytes".into()))?;
    Ok(Digest::from_bytes(array))
}

fn status_text(status: KeyStatus) -> &'static str {
    match status {
        KeyStatus::Active => "active",
        KeyStatus::Retired => "retired",
    }
}

impl PostgresMeta {
    /// Connects and applies the embedded migrations.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| anyhow::anyhow!("PostgreSQL URL: {e}"))?
            .options([("statement_timeout", STATEMENT_TIMEOUT)]);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| anyhow::anyhow!("connecting to PostgreSQL: {e}"))?;
        sqlx::migrate!("./migrations").run(&pool).await.map_err(|e| anyhow::anyhow!("applying migrations: {e}"))?;
        Ok(Self { pool })
    }
}

type KeyRow = (String, String, OffsetDateTime, String, String);

fn key_from_row((keyid, private_key, created_at, status, purpose): KeyRow) -> Result<KeyRecord, MetaError> {
    let status = match status.as_str() {
        "active" => KeyStatus::Active,
        "retired" => KeyStatus::Retired,
        other => return Err(MetaError::Corrupt(format!("key status {other:?}"))),
    };
    let purpose = match purpose.as_str() {
        "manifest" => KeyPurpose::Manifest,
        "log" => KeyPurpose::Log,
        other => return Err(MetaError::Corrupt(format!("key purpose {other:?}"))),
    };
    Ok(KeyRecord { keyid, private_key, created_at, status, purpose })
}

/// Appends `build`'s entries to the chain within the caller's transaction,
/// and grows the log's tree with them; returns the last entry's sequence
/// number. The head row lock it takes serialises appenders across every
/// replica until the transaction ends, so callers take it last, after their
/// own rows; sequence numbers (log indexes) are thereby given in commit order,
/// with no gaps a reader could see.
async fn append_audit_in(tx: &mut PgConnection, build: &dyn BuildAudit) -> Result<u64, MetaError> {
    let (last, prev, tree): (i64, String, Vec<u8>) =
        sqlx::query_as("SELECT seq, hash, log_tree FROM audit_head WHERE singleton FOR UPDATE")
            .fetch_one(&mut *tx)
            .await?;
    let mut tree = Frontier::from_bytes(&tree).map_err(|e| MetaError::Corrupt(e.to_string()))?;
    let integrated = tree.size() < last as u64 && integrate_in(tx, &mut tree, u64::MAX).await? > 0;
    let new = build.build(last as u64 + 1, &prev);
    let mut seq = last as u64;
    let mut head_hash = None;
    let mut growth = LogGrowth::default();
    for entry in new.entries {
        seq += 1;
        growth.add(&mut tree, &entry.bytes, entry.tag_bound.as_ref(), seq - 1, true)?;
        let entry_text = String::from_utf8(entry.bytes).map_err(|e| MetaError::Corrupt(e.to_string()))?;
        sqlx::query("INSERT INTO audit_log (seq, hash, entry) VALUES ($1, $2, $3)")
            .bind(seq as i64)
            .bind(&entry.hash)
            .bind(entry_text)
            .execute(&mut *tx)
            .await?;
        head_hash = Some(entry.hash);
    }
    if let Some(hash) = head_hash {
        growth.store(tx).await?;
        sqlx::query("UPDATE audit_head SET seq = $1, hash = $2, checkpoint = $3, log_tree = $4 WHERE singleton")
            .bind(seq as i64)
            .bind(hash)
            .bind(serde_json::to_string(&new.checkpoint)?)
            .bind(tree.to_bytes())
            .execute(&mut *tx)
            .await?;
    } else if integrated {
        sqlx::query("UPDATE audit_head SET log_tree = $1 WHERE singleton")
            .bind(tree.to_bytes())
            .execute(&mut *tx)
            .await?;
    }
    Ok(seq)
}

/// What entries add to the log: stored hashes and tag indexes, written in
/// one statement each.
#[derive(Default)]
struct LogGrowth {
    indexes: Vec<i64>,
    hashes: Vec<Vec<u8>>,
    tags: Vec<(String, String, i64)>,
}

impl LogGrowth {
    fn add(
        &mut self,
        tree: &mut Frontier,
        bytes: &[u8],
        tag: Option<&(RepoName, Tag)>,
        index: u64,
        new: bool,
    ) -> Result<(), MetaError> {
        for (i, hash) in super::grow_log(tree, bytes, new)? {
            self.indexes.push(i as i64);
            self.hashes.push(hash.0.to_vec());
        }
        if let Some((repo, tag)) = tag {
            self.tags.push((repo.to_string(), tag.to_string(), index as i64));
        }
        Ok(())
    }

    async fn store(self, tx: &mut PgConnection) -> Result<(), MetaError> {
        sqlx::query("INSERT INTO log_hashes (idx, hash) SELECT * FROM UNNEST($1::BIGINT[], $2::BYTEA[])")
            .bind(&self.indexes)
            .bind(&self.hashes)
            .execute(&mut *tx)
            .await?;
        for (repo, tag, index) in self.tags {
            sqlx::query("INSERT INTO tag_log (repository, tag, log_index) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                .bind(repo)
                .bind(tag)
                .bind(index)
                .execute(&mut *tx)
                .await?;
        }
        Ok(())
    }
}

/// Adds up to `limit` stored entries the tree does not cover yet (history
/// from before the log, or from an older replica) to `tree`, within the
/// caller's transaction, which holds the head's lock; stores what they add
/// but not the tree itself.
async fn integrate_in(tx: &mut PgConnection, tree: &mut Frontier, limit: u64) -> Result<u64, MetaError> {
    let mut added = 0u64;
    while added < limit {
        let batch = (limit - added).min(1000) as i64;
        let rows: Vec<(i64, String)> =
            sqlx::query_as("SELECT seq, entry FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2")
                .bind(tree.size() as i64)
                .bind(batch)
                .fetch_all(&mut *tx)
                .await?;
        if rows.is_empty() {
            break;
        }
        let mut growth = LogGrowth::default();
        for (seq, entry) in &rows {
            if *seq as u64 != tree.size() + 1 {
                return Err(MetaError::Corrupt(format!("audit entry {} is missing", tree.size() + 1)));
            }
            let tag = super::tag_bound_in(entry.as_bytes());
            growth.add(tree, entry.as_bytes(), tag.as_ref(), *seq as u64 - 1, false)?;
        }
        growth.store(tx).await?;
        added += rows.len() as u64;
        if (rows.len() as i64) < batch {
            break;
        }
    }
    Ok(added)
}

/// A tag with its hold and expiry: name, digest, bound at, hold, expiry.
type TagRow = (String, Vec<u8>, OffsetDateTime, Option<Json<Hold>>, Option<Json<Expiry>>);

const TAG_SELECT: &str = "SELECT t.tag, t.digest, t.created_at, h.hold, e.expiry FROM tags t
    LEFT JOIN tag_holds h ON h.repository = t.repository AND h.tag = t.tag
    LEFT JOIN tag_expiries e ON e.repository = t.repository AND e.tag = t.tag";

fn tag_from_row((tag, digest, created_at, hold, expiry): TagRow) -> Result<(Tag, TagRecord), MetaError> {
    let tag = tag.parse().map_err(|e: amber_core::name::NameError| MetaError::Corrupt(e.to_string()))?;
    let record = TagRecord {
        digest: digest_from(&digest)?,
        created_at,
        hold: hold.map(|Json(h)| h),
        expiry: expiry.map(|Json(e)| e),
    };
    Ok((tag, record))
}

/// Serialises, across replicas, the changes that decide whether a digest's
/// bytes may be deleted: a lease taken and a reclaim mark. (Digests that
/// share a hash only wait for each other.)
async fn lock_digest(tx: &mut PgConnection, digest: &Digest) -> Result<(), MetaError> {
    sqlx::query("SELECT pg_advisory_xact_lock(7350, hashtext($1))").bind(digest.hex()).execute(&mut *tx).await?;
    Ok(())
}

/// Locks a tag's binding row (a lock only: the row is never updated) for a
/// change to its hold or expiry, and reads it with both.
async fn lock_tag(tx: &mut PgConnection, repo: &RepoName, tag: &Tag) -> Result<Option<TagRecord>, MetaError> {
    let locked: Option<(String,)> =
        sqlx::query_as("SELECT tag FROM tags WHERE repository = $1 AND tag = $2 FOR NO KEY UPDATE")
            .bind(repo.as_str())
            .bind(tag.as_str())
            .fetch_optional(&mut *tx)
            .await?;
    if locked.is_none() {
        return Ok(None);
    }
    let row: TagRow = sqlx::query_as(&format!("{TAG_SELECT} WHERE t.repository = $1 AND t.tag = $2"))
        .bind(repo.as_str())
        .bind(tag.as_str())
        .fetch_one(&mut *tx)
        .await?;
    Ok(Some(tag_from_row(row)?.1))
}

impl MetaStore for PostgresMeta {
    async fn check(&self) -> Result<(), MetaError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
