//! Tokens on PostgreSQL.

use amber_core::TokenId;
use sqlx::types::Json;
use time::OffsetDateTime;

use super::{PostgresMeta, append_audit_in};
use crate::meta::TokenStore;
use crate::meta::{AuditBuild, Exchange, MetaError, Replay, Revocation, Rotation, TokenRecord};

/// Stores `record` in `tx` (a new token: its id is random).
async fn insert_record(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, record: &TokenRecord) -> Result<(), MetaError> {
    sqlx::query("INSERT INTO tokens (id, secret_hash, info) VALUES ($1, $2, $3)")
        .bind(record.info.id.as_str())
        .bind(&record.secret_hash)
        .bind(Json(&record.info))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl TokenStore for PostgresMeta {
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

    async fn insert_first_token(&self, record: &TokenRecord, audit: AuditBuild) -> Result<bool, MetaError> {
        // Tokens are never deleted: a store that holds one needs no lock.
        let any: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tokens)").fetch_one(&self.pool).await?;
        if any {
            return Ok(false);
        }
        let mut tx = self.pool.begin().await?;
        // Replicas starting at once: one at a time past this lock, and each
        // then sees the token of the one before it.
        sqlx::query("SELECT pg_advisory_xact_lock(7353, 0)").execute(&mut *tx).await?;
        let any: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tokens)").fetch_one(&mut *tx).await?;
        if any {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_record(&mut tx, record).await?;
        append_audit_in(&mut tx, &*audit).await?;
        tx.commit().await?;
        Ok(true)
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
        insert_record(&mut tx, record).await?;
        append_audit_in(&mut tx, &*audit).await?;
        tx.commit().await?;
        Ok(Exchange::Minted)
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
}
