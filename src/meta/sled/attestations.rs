//! Attestations of bindings on sled: `attestations` repo \0 manifest(32) ->
//! the envelopes (JSON list).

use amber_core::dsse::Envelope;
use amber_core::{Digest, RepoName};

use super::{SledMeta, repo_key};
use crate::meta::{AttestationStore, MetaError};

impl AttestationStore for SledMeta {
    async fn attestations(&self, repo: &RepoName, manifest: &Digest) -> Result<Option<Vec<Envelope>>, MetaError> {
        let key = repo_key(repo, manifest.as_bytes());
        self.read("attestations", move |t| match t.attestations.get(key)? {
            Some(json) => Ok(Some(serde_json::from_slice(&json)?)),
            None => Ok(None),
        })
        .await
    }

    async fn put_attestations(
        &self,
        repo: &RepoName,
        manifest: &Digest,
        envelopes: &[Envelope],
    ) -> Result<Vec<Envelope>, MetaError> {
        let key = repo_key(repo, manifest.as_bytes());
        let json = serde_json::to_vec(envelopes)?;
        let made = envelopes.to_vec();
        self.write("put_attestations", move |t| {
            // The first made is kept: a racing request's are not stored.
            match t.attestations.compare_and_swap(&key, None::<&[u8]>, Some(json))? {
                Ok(()) => Ok(made),
                Err(existing) => match existing.current {
                    Some(stored) => Ok(serde_json::from_slice(&stored)?),
                    None => Ok(made),
                },
            }
        })
        .await
    }
}
