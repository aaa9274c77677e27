//! Attestations of bindings: the in-toto statements (DSSE envelopes) made of
//! each tag binding, stored with it in the binding's transaction
//! (`TagStore::bind_tag` takes them), or, for a binding made before
//! attestations were, once on its first request. Never changed or removed:
//! an expired tag keeps them (they are history).

use std::future::Future;

use amber_core::dsse::Envelope;
use amber_core::{Digest, RepoName};

use super::{Meta, MetaError};

pub trait AttestationStore {
    /// The attestations of the binding whose Amber manifest is `manifest`.
    fn attestations(
        &self,
        repo: &RepoName,
        manifest: &Digest,
    ) -> impl Future<Output = Result<Option<Vec<Envelope>>, MetaError>> + Send;

    /// Stores the attestations of a binding made without them, unless some
    /// are stored already: returns what is stored (the first made, kept).
    fn put_attestations(
        &self,
        repo: &RepoName,
        manifest: &Digest,
        envelopes: &[Envelope],
    ) -> impl Future<Output = Result<Vec<Envelope>, MetaError>> + Send;
}

impl AttestationStore for Meta {
    async fn attestations(&self, repo: &RepoName, manifest: &Digest) -> Result<Option<Vec<Envelope>>, MetaError> {
        dispatch!(self, s => s.attestations(repo, manifest))
    }

    async fn put_attestations(
        &self,
        repo: &RepoName,
        manifest: &Digest,
        envelopes: &[Envelope],
    ) -> Result<Vec<Envelope>, MetaError> {
        dispatch!(self, s => s.put_attestations(repo, manifest, envelopes))
    }
}
