//! Publishers on PostgreSQL.

use sqlx::types::Json;

use super::{PostgresMeta, append_audit_in};
use crate::meta::PublisherStore;
use crate::meta::{AuditBuild, MetaError};

impl PublisherStore for PostgresMeta {
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
}
