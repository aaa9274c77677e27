//! Signing keys on PostgreSQL.

use super::{KeyRow, PostgresMeta, key_from_row, status_text};
use crate::meta::KeyStore;
use crate::meta::{KeyRecord, MetaError};

impl KeyStore for PostgresMeta {
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
}
