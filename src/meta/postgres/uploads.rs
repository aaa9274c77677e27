//! Resumable uploads as records on PostgreSQL.

use std::collections::HashSet;

use amber_core::TokenId;
use sqlx::types::Json;

use super::PostgresMeta;
use crate::meta::UploadRecordStore;
use crate::meta::{Created, MetaError, Updated, UploadId, UploadKind, UploadRecord};

impl UploadRecordStore for PostgresMeta {
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
}
