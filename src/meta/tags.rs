//! Tags and manifests: bound once, read by tag and by digest, listed.

use super::*;

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
        envelope: &Envelope,
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
        envelope: &Envelope,
        files: &[(Digest, u64)],
        at: OffsetDateTime,
        audit: AuditBuild,
    ) -> Result<Bound, MetaError> {
        dispatch!(self, s => s.bind_tag(repo, tag, digest, envelope, files, at, audit))
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
