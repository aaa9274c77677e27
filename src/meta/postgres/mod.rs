//! Metadata in PostgreSQL, for any number of replicas. The schema is in
//! `migrations/` (embedded, applied at start). Write-once is enforced by the
//! database: primary keys with `ON CONFLICT DO NOTHING`, a unique index for
//! the single active key, row locks for token changes and the audit head, and
//! triggers that refuse to update or delete tags, manifests, links and audit
//! entries. A committed transaction is durable before it is acknowledged.

use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

use amber_core::audit::AuditEntry;
use amber_core::dsse::Envelope;
use amber_core::log::{Frontier, Hash};
use amber_core::wire::{KeyPurpose, KeyStatus, PolicyInfo, TagEntry};
use amber_core::{Digest, RepoName, RepoPattern, Tag, TokenId};
use sqlx::PgConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::types::Json;
use time::OffsetDateTime;

use super::{
    AuditBuild, Bound, BuildAudit, Candidate, Created, Exchange, Expiry, Hold, KeyRecord, LEASE_LIFETIME, Lease,
    LinkView, MetaError, MetaStore, Quarantined, Replay, RepoView, Revocation, Rotation, RunnerLock, ScrubProgress,
    TagChange, TagRecord, TagView, TokenRecord, Unlink, Updated, UploadId, UploadKind, UploadRecord,
};
use crate::blobs::Object;
use crate::blobs::Stored;

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

    async fn quarantine(&self, entry: &Quarantined, audit: AuditBuild) -> Result<bool, MetaError> {
        let mut tx = self.pool.begin().await?;
        let inserted =
            sqlx::query("INSERT INTO quarantine (digest, reason, found_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                .bind(&entry.digest.as_bytes()[..])
                .bind(&entry.reason)
                .bind(entry.found_at)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if inserted == 0 {
            return Ok(false);
        }
        append_audit_in(&mut tx, &*audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn heal(&self, digest: &Digest, audit: AuditBuild) -> Result<bool, MetaError> {
        let mut tx = self.pool.begin().await?;
        let removed = sqlx::query("DELETE FROM quarantine WHERE digest = $1")
            .bind(&digest.as_bytes()[..])
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if removed == 0 {
            return Ok(false);
        }
        append_audit_in(&mut tx, &*audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn quarantined(&self) -> Result<Vec<Quarantined>, MetaError> {
        let rows: Vec<(Vec<u8>, String, OffsetDateTime)> =
            sqlx::query_as("SELECT digest, reason, found_at FROM quarantine ORDER BY found_at, digest")
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter()
            .map(|(d, reason, found_at)| Ok(Quarantined { digest: digest_from(&d)?, reason, found_at }))
            .collect()
    }

    async fn scrub_progress(&self) -> Result<ScrubProgress, MetaError> {
        let row: Option<(Json<ScrubProgress>,)> =
            sqlx::query_as("SELECT progress FROM scrub_progress WHERE singleton").fetch_optional(&self.pool).await?;
        Ok(row.map(|(Json(p),)| p).unwrap_or_default())
    }

    async fn record_verified(&self, digests: &[Digest], at: OffsetDateTime) -> Result<(), MetaError> {
        let bytes: Vec<Vec<u8>> = digests.iter().map(|d| d.as_bytes().to_vec()).collect();
        sqlx::query(
            "INSERT INTO blob_checks (digest, verified_at) SELECT d, $2 FROM unnest($1::bytea[]) AS d
             ON CONFLICT (digest) DO UPDATE SET verified_at = EXCLUDED.verified_at",
        )
        .bind(&bytes)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn last_verified(&self, digest: &Digest) -> Result<Option<OffsetDateTime>, MetaError> {
        let row: Option<(OffsetDateTime,)> = sqlx::query_as("SELECT verified_at FROM blob_checks WHERE digest = $1")
            .bind(&digest.as_bytes()[..])
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(at,)| at))
    }

    async fn save_scrub_progress(&self, progress: &ScrubProgress) -> Result<(), MetaError> {
        sqlx::query(
            "INSERT INTO scrub_progress (singleton, progress) VALUES (true, $1)
             ON CONFLICT (singleton) DO UPDATE SET progress = EXCLUDED.progress",
        )
        .bind(Json(progress))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn scrub_lock(&self) -> Result<Option<RunnerLock>, MetaError> {
        let mut conn = self.pool.acquire().await?.detach();
        let (locked,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock(7351, 1)").fetch_one(&mut conn).await?;
        Ok(locked.then(|| RunnerLock(Box::new(std::sync::Mutex::new(conn)))))
    }

    async fn reclaim_pending(&self) -> Result<(u64, u64), MetaError> {
        let (count, bytes): (i64, i64) = sqlx::query_as("SELECT count(*), coalesce(sum(size), 0)::bigint FROM reclaim")
            .fetch_one(&self.pool)
            .await?;
        Ok((count as u64, bytes as u64))
    }

    async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>, MetaError> {
        let size: Option<(i64,)> = sqlx::query_as("SELECT size FROM blob_links WHERE repository = $1 AND digest = $2")
            .bind(repo.as_str())
            .bind(&digest.as_bytes()[..])
            .fetch_optional(&self.pool)
            .await?;
        Ok(size.map(|(s,)| s as u64))
    }

    async fn insert_token(&self, record: &TokenRecord, audit: AuditBuild) -> Result<(), MetaError> {
        let mut tx = self.pool.begin().await?;
        let inserted =
            sqlx::query("INSERT INTO tokens (id, secret_hash, info) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                .bind(record.info.id.as_str())
                .bind(&record.secret_hash)
                .bind(Json(&record.info))
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            return Err(MetaError::Conflict("token".into()));
        }
        append_audit_in(&mut tx, &*audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn exchange_token(
        &self,
        record: &TokenRecord,
        publisher: &str,
        replay: &Replay,
        audit: AuditBuild,
    ) -> Result<Exchange, MetaError> {
        let mut tx = self.pool.begin().await?;
        // Bounded, and cheap by the index: the table holds only ID tokens
        // that could still pass the time checks.
        sqlx::query(
            "DELETE FROM oidc_replays WHERE (issuer, jti) IN \
             (SELECT issuer, jti FROM oidc_replays WHERE until < now() LIMIT 64)",
        )
        .execute(&mut *tx)
        .await?;
        // A racing exchange of the same ID token waits here for this
        // transaction, then finds the row: one of them mints.
        let recorded =
            sqlx::query("INSERT INTO oidc_replays (issuer, jti, until) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                .bind(&replay.issuer)
                .bind(&replay.jti)
                .bind(replay.until)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if recorded == 0 {
            tx.rollback().await?;
            return Ok(Exchange::Replayed);
        }
        let present: Option<(String,)> = sqlx::query_as("SELECT id FROM publishers WHERE id = $1 FOR SHARE")
            .bind(publisher)
            .fetch_optional(&mut *tx)
            .await?;
        if present.is_none() {
            tx.rollback().await?;
            return Ok(Exchange::PublisherGone);
        }
        sqlx::query("INSERT INTO tokens (id, secret_hash, info) VALUES ($1, $2, $3)")
            .bind(record.info.id.as_str())
            .bind(&record.secret_hash)
            .bind(Json(&record.info))
            .execute(&mut *tx)
            .await?;
        append_audit_in(&mut tx, &*audit).await?;
        tx.commit().await?;
        Ok(Exchange::Minted)
    }

    async fn insert_publisher(
        &self,
        publisher: &amber_core::oidc::Publisher,
        audit: AuditBuild,
    ) -> Result<(), MetaError> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO publishers (id, publisher, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(&publisher.id)
        .bind(Json(publisher))
        .bind(publisher.created_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            return Err(MetaError::Conflict("publisher".into()));
        }
        append_audit_in(&mut tx, &*audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn publishers(&self) -> Result<Vec<amber_core::oidc::Publisher>, MetaError> {
        let rows: Vec<(Json<amber_core::oidc::Publisher>,)> =
            sqlx::query_as("SELECT publisher FROM publishers ORDER BY id").fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(|(Json(p),)| p).collect())
    }

    async fn delete_publisher(&self, id: &str, audit: AuditBuild) -> Result<bool, MetaError> {
        let mut tx = self.pool.begin().await?;
        let deleted =
            sqlx::query("DELETE FROM publishers WHERE id = $1").bind(id).execute(&mut *tx).await?.rows_affected();
        if deleted == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        append_audit_in(&mut tx, &*audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn token(&self, id: &TokenId) -> Result<Option<TokenRecord>, MetaError> {
        let row: Option<(String, Json<amber_core::wire::TokenInfo>)> =
            sqlx::query_as("SELECT secret_hash, info FROM tokens WHERE id = $1")
                .bind(id.as_str())
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(secret_hash, Json(info))| TokenRecord { info, secret_hash }))
    }

    async fn token_by_hash(&self, secret_hash: &str) -> Result<Option<TokenRecord>, MetaError> {
        let row: Option<(Json<amber_core::wire::TokenInfo>,)> =
            sqlx::query_as("SELECT info FROM tokens WHERE secret_hash = $1")
                .bind(secret_hash)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(Json(info),)| TokenRecord { info, secret_hash: secret_hash.to_owned() }))
    }

    async fn touch_token(&self, id: &TokenId, at: OffsetDateTime) -> Result<(), MetaError> {
        let at =
            at.format(&time::format_description::well_known::Rfc3339).map_err(|e| MetaError::Corrupt(e.to_string()))?;
        // One statement: it changes only last_used_at, so a concurrent revocation survives.
        sqlx::query("UPDATE tokens SET info = jsonb_set(info, '{last_used_at}', to_jsonb($2::text)) WHERE id = $1")
            .bind(id.as_str())
            .bind(at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn list_tokens(&self, after: Option<&str>, limit: usize) -> Result<Vec<TokenRecord>, MetaError> {
        let rows: Vec<(String, Json<amber_core::wire::TokenInfo>)> =
            sqlx::query_as("SELECT secret_hash, info FROM tokens WHERE id > $1 ORDER BY id LIMIT $2")
                .bind(after.unwrap_or(""))
                .bind(limit as i64)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(secret_hash, Json(info))| TokenRecord { info, secret_hash }).collect())
    }

    async fn revoke_token(&self, id: &TokenId, at: OffsetDateTime, audit: AuditBuild) -> Result<Revocation, MetaError> {
        let mut tx = self.pool.begin().await?;
        let row: Option<(String, Json<amber_core::wire::TokenInfo>)> =
            sqlx::query_as("SELECT secret_hash, info FROM tokens WHERE id = $1 FOR UPDATE")
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let Some((secret_hash, Json(mut info))) = row else { return Ok(Revocation::Unknown) };
        if info.revoked_at.is_some() {
            return Ok(Revocation::AlreadyRevoked(TokenRecord { info, secret_hash }));
        }
        info.revoked_at = Some(at);
        sqlx::query("UPDATE tokens SET info = $2 WHERE id = $1")
            .bind(id.as_str())
            .bind(Json(&info))
            .execute(&mut *tx)
            .await?;
        append_audit_in(&mut tx, &*audit).await?;
        tx.commit().await?;
        Ok(Revocation::Revoked(TokenRecord { info, secret_hash }))
    }

    async fn rotate_token(
        &self,
        new: &TokenRecord,
        old_expires_at: OffsetDateTime,
        audit: AuditBuild,
    ) -> Result<Rotation, MetaError> {
        let old_id =
            new.info.rotated_from.as_ref().ok_or_else(|| MetaError::Corrupt("rotation without rotated_from".into()))?;
        let mut tx = self.pool.begin().await?;
        let row: Option<(Json<amber_core::wire::TokenInfo>,)> =
            sqlx::query_as("SELECT info FROM tokens WHERE id = $1 FOR UPDATE")
                .bind(old_id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let Some((Json(mut old),)) = row else { return Ok(Rotation::Unknown) };
        if old.revoked_at.is_some() {
            return Ok(Rotation::Inactive("the token is revoked"));
        }
        if old.expires_at <= OffsetDateTime::now_utc() {
            return Ok(Rotation::Inactive("the token has expired"));
        }
        if old.rotated_to.is_some() {
            return Ok(Rotation::Inactive("the token was already rotated; rotate its replacement"));
        }
        old.rotated_to = Some(new.info.id.clone());
        old.expires_at = old.expires_at.min(old_expires_at);
        sqlx::query("UPDATE tokens SET info = $2 WHERE id = $1")
            .bind(old_id.as_str())
            .bind(Json(&old))
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO tokens (id, secret_hash, info) VALUES ($1, $2, $3)")
            .bind(new.info.id.as_str())
            .bind(&new.secret_hash)
            .bind(Json(&new.info))
            .execute(&mut *tx)
            .await?;
        append_audit_in(&mut tx, &*audit).await?;
        tx.commit().await?;
        Ok(Rotation::Rotated)
    }

    async fn append_audit(&self, build: AuditBuild) -> Result<u64, MetaError> {
        let mut tx = self.pool.begin().await?;
        let seq = append_audit_in(&mut tx, &*build).await?;
        tx.commit().await?;
        Ok(seq)
    }

    async fn audit_entries(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, MetaError> {
        let rows: Vec<(i64, String, String)> =
            sqlx::query_as("SELECT seq, hash, entry FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2")
                .bind(after as i64)
                .bind(limit as i64)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(seq, hash, entry)| AuditEntry { seq: seq as u64, hash, entry, log_index: seq as u64 - 1 })
            .collect())
    }

    async fn audit_checkpoint(&self) -> Result<Option<Envelope>, MetaError> {
        let row: Option<(Option<String>,)> =
            sqlx::query_as("SELECT checkpoint FROM audit_head WHERE singleton").fetch_optional(&self.pool).await?;
        match row.and_then(|(c,)| c) {
            Some(json) => Ok(Some(serde_json::from_str(&json)?)),
            None => Ok(None),
        }
    }

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
        let row: Option<(i64, String)> =
            sqlx::query_as("SELECT size, note FROM log_checkpoint WHERE singleton").fetch_optional(&self.pool).await?;
        Ok(row.map(|(size, note)| (size as u64, note)))
    }

    async fn put_log_checkpoint(&self, size: u64, note: &str) -> Result<bool, MetaError> {
        let stored = sqlx::query(
            "INSERT INTO log_checkpoint (size, note) VALUES ($1, $2)
             ON CONFLICT (singleton) DO UPDATE SET size = EXCLUDED.size, note = EXCLUDED.note
             WHERE log_checkpoint.size < EXCLUDED.size",
        )
        .bind(size as i64)
        .bind(note)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(stored == 1)
    }

    async fn claim_log_origin(&self, candidate: &str) -> Result<String, MetaError> {
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

    async fn keys(&self) -> Result<Vec<KeyRecord>, MetaError> {
        let rows: Vec<KeyRow> = sqlx::query_as(
            "SELECT keyid, private_key, created_at, status, purpose FROM signing_keys ORDER BY created_at, keyid",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(key_from_row).collect()
    }

    async fn activate_key(&self, key: &KeyRecord) -> Result<(), MetaError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE signing_keys SET status = 'retired' WHERE status = 'active' AND purpose = $1")
            .bind(key.purpose.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO signing_keys (keyid, private_key, created_at, status, purpose) VALUES ($1, $2, $3, 'active', $4)",
        )
        .bind(&key.keyid)
        .bind(&key.private_key)
        .bind(key.created_at)
        .bind(key.purpose.as_str())
        .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn init_key(&self, key: &KeyRecord) -> Result<bool, MetaError> {
        // The unique index on the active key makes racing replicas agree on one.
        let inserted = sqlx::query(
            "INSERT INTO signing_keys (keyid, private_key, created_at, status, purpose) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING",
        )
        .bind(&key.keyid)
        .bind(&key.private_key)
        .bind(key.created_at)
        .bind(status_text(key.status))
        .bind(key.purpose.as_str())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    async fn bind_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
        envelope: &Envelope,
        files: &[(Digest, u64)],
        at: OffsetDateTime,
        audit: AuditBuild,
    ) -> Result<Bound, MetaError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO manifests (repository, digest, envelope) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(repo.as_str())
            .bind(&digest.as_bytes()[..])
            .bind(serde_json::to_string(envelope)?)
            .execute(&mut *tx)
            .await?;
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
            return Ok(Bound::BlobsGone(gone));
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
            // read next is the one in effect when this expiry commits.
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

    async fn repositories(&self, after: Option<&RepoName>, limit: usize) -> Result<Vec<RepoName>, MetaError> {
        let rows: Vec<(String,)> = sqlx::query_as(
            r#"SELECT repository FROM (SELECT repository FROM blob_links UNION SELECT repository FROM tags) r
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

    async fn create_upload(&self, record: &UploadRecord, most: usize) -> Result<Created, MetaError> {
        let parts: Vec<String> = match &record.kind {
            UploadKind::Final { parts } => parts.iter().map(|p| p.as_str().to_owned()).collect(),
            _ => Vec::new(),
        };
        let mut tx = self.pool.begin().await?;
        // The parts' rows locked in one order (two finals racing over the
        // same parts wait in turn, never for each other), then claimed only
        // where no final holds them: the second final finds them taken.
        if !parts.is_empty() {
            let locked: Vec<(String, Option<String>)> = sqlx::query_as(
                r#"SELECT id, record->>'claimed_by' FROM uploads WHERE id = ANY($1) AND token_id = $2
                   ORDER BY id COLLATE "C" FOR UPDATE"#,
            )
            .bind(&parts)
            .bind(record.token.as_str())
            .fetch_all(&mut *tx)
            .await?;
            let free: HashSet<&str> =
                locked.iter().filter(|(_, claimed)| claimed.is_none()).map(|(id, _)| id.as_str()).collect();
            if let Some(taken) = parts.iter().find(|p| !free.contains(p.as_str())) {
                let taken = taken.parse().map_err(|()| MetaError::Corrupt("upload id".into()))?;
                return Ok(Created::PartTaken(taken));
            }
            sqlx::query(
                "UPDATE uploads SET record = jsonb_set(record, '{claimed_by}', to_jsonb($1::text)) WHERE id = ANY($2)",
            )
            .bind(record.id.as_str())
            .bind(&parts)
            .execute(&mut *tx)
            .await?;
        }
        // One statement: the count and the insert see the same snapshot; two
        // creations racing may both pass, which only loosens the bound by one.
        let inserted = sqlx::query(
            "INSERT INTO uploads (id, token_id, upload_offset, expires_at, record)
             SELECT $1, $2, $3, $4, $5 WHERE (SELECT count(*) FROM uploads WHERE token_id = $2) < $6",
        )
        .bind(record.id.as_str())
        .bind(record.token.as_str())
        .bind(record.offset as i64)
        .bind(record.expires)
        .bind(Json(record))
        .bind(most as i64)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() != 1 {
            return Ok(Created::TooMany);
        }
        tx.commit().await?;
        Ok(Created::Created)
    }

    async fn upload(&self, token: &TokenId, id: &UploadId) -> Result<Option<UploadRecord>, MetaError> {
        let row: Option<(Json<UploadRecord>,)> =
            sqlx::query_as("SELECT record FROM uploads WHERE id = $1 AND token_id = $2")
                .bind(id.as_str())
                .bind(token.as_str())
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(Json(record),)| record))
    }

    async fn update_upload(&self, record: &UploadRecord, from: u64) -> Result<Updated, MetaError> {
        let updated = sqlx::query(
            "UPDATE uploads SET upload_offset = $2, expires_at = $3, record = $4 WHERE id = $1 AND upload_offset = $5",
        )
        .bind(record.id.as_str())
        .bind(record.offset as i64)
        .bind(record.expires)
        .bind(Json(record))
        .bind(from as i64)
        .execute(&self.pool)
        .await?;
        if updated.rows_affected() == 1 {
            return Ok(Updated::Done);
        }
        let now: Option<(i64,)> = sqlx::query_as("SELECT upload_offset FROM uploads WHERE id = $1")
            .bind(record.id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(now.map_or(Updated::Gone, |(offset,)| Updated::Moved(offset.max(0) as u64)))
    }

    async fn delete_upload(&self, id: &UploadId) -> Result<bool, MetaError> {
        let mut tx = self.pool.begin().await?;
        let deleted: Option<(Json<UploadRecord>,)> =
            sqlx::query_as("DELETE FROM uploads WHERE id = $1 RETURNING record")
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let Some((Json(old),)) = deleted else { return Ok(false) };
        if let UploadKind::Final { parts } = &old.kind {
            let parts: Vec<&str> = parts.iter().map(UploadId::as_str).collect();
            sqlx::query(
                "UPDATE uploads SET record = record - 'claimed_by' WHERE id = ANY($1) AND record->>'claimed_by' = $2",
            )
            .bind(&parts)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn list_uploads(&self, after: Option<&UploadId>, limit: usize) -> Result<Vec<UploadRecord>, MetaError> {
        let rows: Vec<(Json<UploadRecord>,)> =
            sqlx::query_as(r#"SELECT record FROM uploads WHERE id > $1 ORDER BY id COLLATE "C" LIMIT $2"#)
                .bind(after.map_or("", |id| id.as_str()))
                .bind(limit as i64)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(Json(record),)| record).collect())
    }

    async fn check(&self) -> Result<(), MetaError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
