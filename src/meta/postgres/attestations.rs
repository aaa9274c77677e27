//! Attestations of bindings on PostgreSQL (`attestations`, 0010).

use amber_core::dsse::Envelope;
use amber_core::{Digest, RepoName};

use super::PostgresMeta;
use crate::meta::{AttestationStore, MetaError};

impl AttestationStore for PostgresMeta {
    async fn attestations(&self, repo: &RepoName, manifest: &Digest) -> Result<Option<Vec<Envelope>>, MetaError> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT envelopes FROM attestations WHERE repository = $1 AND manifest = $2")
                .bind(repo.as_str())
                .bind(&manifest.as_bytes()[..])
                .fetch_optional(&self.pool)
                .await?;
        row.map(|(json,)| serde_json::from_str(&json).map_err(MetaError::from)).transpose()
    }

    async fn put_attestations(
        &self,
        repo: &RepoName,
        manifest: &Digest,
        envelopes: &[Envelope],
    ) -> Result<Vec<Envelope>, MetaError> {
        sqlx::query(
            "INSERT INTO attestations (repository, manifest, envelopes) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(repo.as_str())
        .bind(&manifest.as_bytes()[..])
        .bind(serde_json::to_string(envelopes)?)
        .execute(&self.pool)
        .await?;
        // The first made is kept: what is stored now is the answer.
        Ok(self.attestations(repo, manifest).await?.unwrap_or_else(|| envelopes.to_vec()))
    }
}
