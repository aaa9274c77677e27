//! Tags and manifests: bound once, read by tag and by digest, listed.

use std::future::Future;

use amber_core::audit::Actor;
use amber_core::dsse::Envelope;
use amber_core::wire::{TagEntry, TagState};
use amber_core::{Digest, RepoName, Tag};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{AuditBuild, Meta, MetaError};

/// A tag binding, with its hold and its expiry. The binding (`digest`,
/// `created_at`) never changes; a hold comes and goes; an expiry is final.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TagRecord {
    pub digest: Digest,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<Hold>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry: Option<Expiry>,
}

impl TagRecord {
    pub fn bound(digest: Digest, created_at: OffsetDateTime) -> Self {
        Self { digest, created_at, hold: None, expiry: None }
    }

    pub fn state(&self) -> TagState {
        if self.expiry.is_some() { TagState::Expired } else { TagState::Live }
    }

    pub fn entry(&self, tag: Tag) -> TagEntry {
        TagEntry {
            tag,
            digest: self.digest,
            created_at: self.created_at,
            state: self.state(),
            held: self.hold.is_some(),
            pushed_by: None,
        }
    }
}

/// When a tag expired, and the signed tombstone that says so.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Expiry {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub tombstone: Envelope,
}

/// Why and by whom a tag is held.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub by: Actor,
}

/// What a binding stores: the signed manifest, and the attestations made
/// of it (in-toto statements in DSSE envelopes), in the same transaction.
#[derive(Clone, Debug)]
pub struct Signed {
    pub envelope: Envelope,
    pub attestations: Vec<Envelope>,
}

impl From<Envelope> for Signed {
    fn from(envelope: Envelope) -> Self {
        Self { envelope, attestations: Vec::new() }
    }
}

/// The outcome of binding a tag.
#[derive(Clone, Debug)]
pub enum Bound {
    Created,
    /// The tag was already bound (perhaps by a racing writer) to this.
    Existing(TagRecord),
    /// These blobs are no longer linked in the repository (unlinked by
    /// retention after the caller checked): nothing was bound.
    BlobsGone(Vec<Digest>),
}

pub trait TagStore {
    /// Stores the manifest and binds the tag to it, unless the tag is bound
    /// (live or expired) or one of `files` (digest, size) is not linked in
    /// `repo` with that size at that moment; appends `audit` in the same
    /// transaction as the binding. Checked in the transaction, so a racing
    /// unlink either sees this manifest or makes the bind fail.
    #[allow(clippy::too_many_arguments)]
    fn bind_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
        signed: &Signed,
        files: &[(Digest, u64)],
        at: OffsetDateTime,
        audit: AuditBuild,
    ) -> impl Future<Output = Result<Bound, MetaError>> + Send;

    /// Repositories that have a link or a tag, in name order, after `after`.
    fn repositories(
        &self,
        after: Option<&RepoName>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RepoName>, MetaError>> + Send;

    fn tag(&self, repo: &RepoName, tag: &Tag) -> impl Future<Output = Result<Option<TagRecord>, MetaError>> + Send;

    fn manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> impl Future<Output = Result<Option<Envelope>, MetaError>> + Send;

    /// Tags of `repo` in name order, strictly after `after`.
    fn list_tags(
        &self,
        repo: &RepoName,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<TagEntry>, MetaError>> + Send;
}

impl TagStore for Meta {
    async fn bind_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
        signed: &Signed,
        files: &[(Digest, u64)],
        at: OffsetDateTime,
        audit: AuditBuild,
    ) -> Result<Bound, MetaError> {
        dispatch!(self, s => s.bind_tag(repo, tag, digest, signed, files, at, audit))
    }

    async fn repositories(&self, after: Option<&RepoName>, limit: usize) -> Result<Vec<RepoName>, MetaError> {
        dispatch!(self, s => s.repositories(after, limit))
    }

    async fn tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<TagRecord>, MetaError> {
        dispatch!(self, s => s.tag(repo, tag))
    }

    async fn manifest(&self, repo: &RepoName, digest: &Digest) -> Result<Option<Envelope>, MetaError> {
        dispatch!(self, s => s.manifest(repo, digest))
    }

    async fn list_tags(&self, repo: &RepoName, after: Option<&str>, limit: usize) -> Result<Vec<TagEntry>, MetaError> {
        dispatch!(self, s => s.list_tags(repo, after, limit))
    }
}
