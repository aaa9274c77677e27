//! The OCI front door's records: which sha256 (or sha512) names which
//! BLAKE3-named blob (one index for the whole store, as storage is), OCI
//! manifests byte-exact per repository, and the referrers of each subject.
//! A manifest is stored once under the digest its bytes hash to and never
//! changes; which tag names it is a binding of `TagStore`.

use std::future::Future;

use amber_core::{Digest, RepoName, Tag};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{AuditBuild, Meta, MetaError};
use crate::blobs::Stored;

/// An OCI manifest as pushed: the bytes the client sent, byte for byte, and
/// what the store needs without parsing them again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciManifest {
    /// `Content-Type` it was pushed with, served back as is.
    pub media_type: String,
    #[serde(with = "bytes_b64")]
    pub bytes: Vec<u8>,
    /// The digest of the manifest it refers to (`subject`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The stored blobs it references (BLAKE3, size), its config included.
    #[serde(default)]
    pub blobs: Vec<(Digest, u64)>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// For the OCI view of a `/v1/` tag: that tag (its receipt becomes a
    /// referrer once a checkpoint covers it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view_of: Option<amber_core::Tag>,
}

mod bytes_b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        STANDARD.decode(text.as_bytes()).map_err(serde::de::Error::custom)
    }
}

/// A referrer of a subject: the descriptor the referrers API lists (JSON,
/// made once when the referrer was pushed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Referrer {
    pub digest: String,
    pub descriptor: Vec<u8>,
}

pub trait OciStore {
    /// Records that `alias` (`sha256:<hex>` or `sha512:<hex>`) names the
    /// blob stored as `digest`, and for sha256 the way back. An alias, once
    /// recorded, never changes.
    fn put_alias(&self, alias: &str, digest: &Digest) -> impl Future<Output = Result<(), MetaError>> + Send;

    /// Records the sha256 (`sha256:<hex>`) a `/v1/` upload hashed to beside
    /// BLAKE3, as `put_alias` does, made durable by the next write that is
    /// (it is hashed again from the stored bytes if a crash loses it): an
    /// upload's answer waits for no flush of its own for it.
    fn note_sha256(&self, sha256: &str, digest: &Digest) -> impl Future<Output = Result<(), MetaError>> + Send;

    /// The BLAKE3 digest an alias names, if recorded.
    fn alias(&self, alias: &str) -> impl Future<Output = Result<Option<Digest>, MetaError>> + Send;

    /// The sha256 alias (`sha256:<hex>`) of a stored blob, if recorded.
    fn sha256_of(&self, digest: &Digest) -> impl Future<Output = Result<Option<String>, MetaError>> + Send;

    /// Stores `manifest` in `repo` under `digest` unless it is there; when
    /// new, with its referrer entry (the descriptor listed for its subject),
    /// `audit`, and, with `keep_with` (a tag and the Amber manifest it binds),
    /// its blobs referenced by that binding, so that retention keeps them
    /// while the tag is live: in one transaction.
    fn put_oci_manifest(
        &self,
        repo: &RepoName,
        digest: &str,
        manifest: &OciManifest,
        referrer: Option<&[u8]>,
        keep_with: Option<(&Tag, &Digest)>,
        audit: AuditBuild,
    ) -> impl Future<Output = Result<Stored, MetaError>> + Send;

    /// Records that `tag` binds the OCI manifest `digest` in `repo` (the first
    /// tag that did, kept for good).
    fn put_bound_tag(
        &self,
        repo: &RepoName,
        digest: &str,
        tag: &Tag,
    ) -> impl Future<Output = Result<(), MetaError>> + Send;

    /// The tag first bound to the OCI manifest `digest` in `repo`, if any.
    fn bound_tag(&self, repo: &RepoName, digest: &str) -> impl Future<Output = Result<Option<Tag>, MetaError>> + Send;

    fn oci_manifest(
        &self,
        repo: &RepoName,
        digest: &str,
    ) -> impl Future<Output = Result<Option<OciManifest>, MetaError>> + Send;

    /// The referrers of `subject` in `repo`, in digest order after `after`,
    /// at most `limit`.
    fn referrers(
        &self,
        repo: &RepoName,
        subject: &str,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Referrer>, MetaError>> + Send;
}

impl OciStore for Meta {
    async fn put_alias(&self, alias: &str, digest: &Digest) -> Result<(), MetaError> {
        dispatch!(self, s => s.put_alias(alias, digest))
    }

    async fn note_sha256(&self, sha256: &str, digest: &Digest) -> Result<(), MetaError> {
        dispatch!(self, s => s.note_sha256(sha256, digest))
    }

    async fn alias(&self, alias: &str) -> Result<Option<Digest>, MetaError> {
        dispatch!(self, s => s.alias(alias))
    }

    async fn sha256_of(&self, digest: &Digest) -> Result<Option<String>, MetaError> {
        dispatch!(self, s => s.sha256_of(digest))
    }

    async fn put_oci_manifest(
        &self,
        repo: &RepoName,
        digest: &str,
        manifest: &OciManifest,
        referrer: Option<&[u8]>,
        keep_with: Option<(&Tag, &Digest)>,
        audit: AuditBuild,
    ) -> Result<Stored, MetaError> {
        dispatch!(self, s => s.put_oci_manifest(repo, digest, manifest, referrer, keep_with, audit))
    }

    async fn put_bound_tag(&self, repo: &RepoName, digest: &str, tag: &Tag) -> Result<(), MetaError> {
        dispatch!(self, s => s.put_bound_tag(repo, digest, tag))
    }

    async fn bound_tag(&self, repo: &RepoName, digest: &str) -> Result<Option<Tag>, MetaError> {
        dispatch!(self, s => s.bound_tag(repo, digest))
    }

    async fn oci_manifest(&self, repo: &RepoName, digest: &str) -> Result<Option<OciManifest>, MetaError> {
        dispatch!(self, s => s.oci_manifest(repo, digest))
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Referrer>, MetaError> {
        dispatch!(self, s => s.referrers(repo, subject, after, limit))
    }
}
