//! Metadata in PostgreSQL, for any number of replicas. The schema is in
//! `migrations/` (embedded, applied at start). Write-once is enforced by the
//! database: primary keys with `ON CONFLICT DO NOTHING`, a unique index for
//! the single active key, row locks for token changes and the audit head, and
//! triggers that refuse to update or delete tags, manifests, links and audit
//! entries. A committed transaction is durable before it is acknowledged.

use std::str::FromStr;
use std::time::Duration;

use amber_core::audit::AuditEntry;
use amber_core::dsse::Envelope;
use amber_core::wire::{KeyStatus, TagEntry};
use amber_core::{Digest, RepoName, Tag, TokenId};
use sqlx::PgConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::types::Json;
use time::OffsetDateTime;

use super::{
    AuditBuild, Bound, BuildAudit, KeyRecord, MetaError, MetaStore, Revocation, Rotation, TagRecord, TokenRecord,
};
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

type KeyRow = (String, String, OffsetDateTime, String);

fn key_from_row((keyid, private_key, created_at, status): KeyRow) -> Result<KeyRecord, MetaError> {
    let status = match status.as_str() {
        "active" => KeyStatus::Active,
        "retired" => KeyStatus::Retired,
        other => return Err(MetaError::Corrupt(format!("key status {other:?}"))),
    };
    Ok(KeyRecord { keyid, private_key, created_at, status })
}

/// Appends `build`'s entries to the chain within the caller's transaction;
/// returns the last entry's sequence number. The head row lock it takes
/// serialises appenders across every replica until the transaction ends, so
/// callers take it last, after their own rows.
async fn append_audit_in(tx: &mut PgConnection, build: &dyn BuildAudit) -> Result<u64, MetaError> {
    let (last, prev): (i64, String) =
        sqlx::query_as("SELECT seq, hash FROM audit_head WHERE singleton FOR UPDATE").fetch_one(&mut *tx).await?;
    let new = build.build(last as u64 + 1, &prev);
    let mut seq = last as u64;
    let mut head_hash = None;
    for entry in new.entries {
        seq += 1;
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
        sqlx::query("UPDATE audit_head SET seq = $1, hash = $2, checkpoint = $3 WHERE singleton")
            .bind(seq as i64)
            .bind(hash)
            .bind(serde_json::to_string(&new.checkpoint)?)
            .execute(&mut *tx)
            .await?;
    }
    Ok(seq)
}

impl MetaStore for PostgresMeta {
    async fn link_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        audit: AuditBuild,
    ) -> Result<Stored, MetaError> {
        let mut tx = self.pool.begin().await?;
        let inserted =
            sqlx::query("INSERT INTO blob_links (repository, digest, size) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                .bind(repo.as_str())
                .bind(&digest.as_bytes()[..])
                .bind(size as i64)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            return Ok(Stored::AlreadyPresent);
        }
        append_audit_in(&mut tx, &*audit).await?;
        tx.commit().await?;
        Ok(Stored::Created)
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
        Ok(rows.into_iter().map(|(seq, hash, entry)| AuditEntry { seq: seq as u64, hash, entry }).collect())
    }

    async fn audit_checkpoint(&self) -> Result<Option<Envelope>, MetaError> {
        let row: Option<(Option<String>,)> =
            sqlx::query_as("SELECT checkpoint FROM audit_head WHERE singleton").fetch_optional(&self.pool).await?;
        match row.and_then(|(c,)| c) {
            Some(json) => Ok(Some(serde_json::from_str(&json)?)),
            None => Ok(None),
        }
    }

    async fn keys(&self) -> Result<Vec<KeyRecord>, MetaError> {
        let rows: Vec<KeyRow> = sqlx::query_as(
            "SELECT keyid, private_key, created_at, status FROM signing_keys ORDER BY created_at, keyid",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(key_from_row).collect()
    }

    async fn activate_key(&self, key: &KeyRecord) -> Result<(), MetaError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE signing_keys SET status = 'retired' WHERE status = 'active'").execute(&mut *tx).await?;
        sqlx::query("INSERT INTO signing_keys (keyid, private_key, created_at, status) VALUES ($1, $2, $3, 'active')")
            .bind(&key.keyid)
            .bind(&key.private_key)
            .bind(key.created_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn init_key(&self, key: &KeyRecord) -> Result<bool, MetaError> {
        // The unique index on the active key makes racing replicas agree on one.
        let inserted = sqlx::query(
            "INSERT INTO signing_keys (keyid, private_key, created_at, status) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(&key.keyid)
        .bind(&key.private_key)
        .bind(key.created_at)
        .bind(status_text(key.status))
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
        if bound == 1 {
            append_audit_in(&mut tx, &*audit).await?;
            tx.commit().await?;
            return Ok(Bound::Created);
        }
        // Lost the race (or a retry): keep nothing of ours, report the winner.
        tx.rollback().await?;
        let existing = self.tag(repo, tag).await?.ok_or_else(|| MetaError::Corrupt("tag vanished".into()))?;
        Ok(Bound::Existing(existing))
    }

    async fn tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<TagRecord>, MetaError> {
        let row: Option<(Vec<u8>, OffsetDateTime)> =
            sqlx::query_as("SELECT digest, created_at FROM tags WHERE repository = $1 AND tag = $2")
                .bind(repo.as_str())
                .bind(tag.as_str())
                .fetch_optional(&self.pool)
                .await?;
        row.map(|(digest, created_at)| Ok(TagRecord { digest: digest_from(&digest)?, created_at })).transpose()
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
        let rows: Vec<(String, Vec<u8>, OffsetDateTime)> = sqlx::query_as(
            r#"SELECT tag, digest, created_at FROM tags WHERE repository = $1 AND tag COLLATE "C" > $2 COLLATE "C"
               ORDER BY tag COLLATE "C" LIMIT $3"#,
        )
        .bind(repo.as_str())
        .bind(after.unwrap_or(""))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(tag, digest, created_at)| {
                Ok(TagEntry {
                    tag: tag.parse().map_err(|e: amber_core::name::NameError| MetaError::Corrupt(e.to_string()))?,
                    digest: digest_from(&digest)?,
                    created_at,
                })
            })
            .collect()
    }

    async fn check(&self) -> Result<(), MetaError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
