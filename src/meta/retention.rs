//! Retention: holds, expiries and unlinks, each re-checked in its transaction, and the policies.

use std::future::Future;

use amber_core::wire::PolicyInfo;
use amber_core::{Digest, RepoName, RepoPattern, Tag};
use time::OffsetDateTime;

use super::{AuditBuild, Meta, MetaError};
use crate::meta::tags::{Expiry, Hold, TagRecord};

/// The outcome of a hold, a release or an expiry.
#[derive(Clone, Debug)]
pub enum TagChange {
    /// Done; the record as it is now.
    Changed(TagRecord),
    /// Already so (held, not held, expired): nothing recorded.
    Unchanged(TagRecord),
    /// Refused: the tag is held (an expiry).
    Held(TagRecord),
    /// Refused: the tag has expired (a hold).
    Expired(TagRecord),
    /// Refused: the policy the expiry was decided by is no longer the one in
    /// effect for the repository.
    Stale,
    Unknown,
}

/// The outcome of removing a blob link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unlink {
    Unlinked,
    /// A live manifest of the repository references the blob: kept.
    Referenced,
    /// Created at or after the cutoff: kept.
    Fresh,
    /// There was no such link.
    Gone,
}

/// One tag to expire in a batch, with its audit entry.
#[derive(Clone)]
pub struct Expiring {
    pub tag: Tag,
    pub expiry: Expiry,
    pub audit: AuditBuild,
}

/// One link to remove in a batch, with its audit entry.
#[derive(Clone)]
pub struct Unlinking {
    pub digest: Digest,
    pub audit: AuditBuild,
}

/// A tag as retention sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagView {
    pub tag: Tag,
    pub manifest: Digest,
    pub bound_at: OffsetDateTime,
    pub held: bool,
    pub expired: bool,
}

/// A blob link as retention sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkView {
    pub digest: Digest,
    pub size: u64,
    pub created_at: OffsetDateTime,
}

/// One repository's tags, links, and which blobs each manifest references:
/// everything a retention plan is made from.
#[derive(Clone, Debug, Default)]
pub struct RepoView {
    pub tags: Vec<TagView>,
    pub links: Vec<LinkView>,
    /// `(manifest, blob)` for every file of every manifest of the repository.
    pub references: Vec<(Digest, Digest)>,
}

pub trait RetentionStore {
    /// Holds a live tag; a held tag never expires.
    fn hold_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        hold: &Hold,
        audit: AuditBuild,
    ) -> impl Future<Output = Result<TagChange, MetaError>> + Send;

    /// Releases a hold.
    fn release_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        audit: AuditBuild,
    ) -> impl Future<Output = Result<TagChange, MetaError>> + Send;

    /// Expires each live, unheld tag of `items`, for good, in one
    /// transaction, each re-checked in it and audited with its own entry.
    /// With `policy`, only while that policy (scope and digest) is still the
    /// one in effect for `repo`. One outcome per item, in order.
    fn expire_tags(
        &self,
        repo: &RepoName,
        items: &[Expiring],
        policy: Option<&PolicyInfo>,
    ) -> impl Future<Output = Result<Vec<TagChange>, MetaError>> + Send;

    /// [`Self::expire_tags`] of one tag.
    fn expire_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        expiry: &Expiry,
        policy: Option<&PolicyInfo>,
        audit: AuditBuild,
    ) -> impl Future<Output = Result<TagChange, MetaError>> + Send
    where
        Self: Sync,
    {
        let item = Expiring { tag: tag.clone(), expiry: expiry.clone(), audit };
        async move { Ok(self.expire_tags(repo, &[item], policy).await?.pop().unwrap_or(TagChange::Unknown)) }
    }

    /// Removes each link of `items` in `repo` that was created before
    /// `created_before` and that no live manifest of `repo` references,
    /// checked in the one transaction of the removals; appends an item's
    /// audit entry if its link is removed. One outcome per item, in order.
    fn unlink_blobs(
        &self,
        repo: &RepoName,
        items: &[Unlinking],
        created_before: OffsetDateTime,
    ) -> impl Future<Output = Result<Vec<Unlink>, MetaError>> + Send;

    /// [`Self::unlink_blobs`] of one link.
    fn unlink_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        created_before: OffsetDateTime,
        audit: AuditBuild,
    ) -> impl Future<Output = Result<Unlink, MetaError>> + Send
    where
        Self: Sync,
    {
        let item = Unlinking { digest: *digest, audit };
        async move { Ok(self.unlink_blobs(repo, &[item], created_before).await?.pop().unwrap_or(Unlink::Gone)) }
    }

    /// A repository's tags, links and manifest references, for retention.
    fn retention_view(&self, repo: &RepoName) -> impl Future<Output = Result<RepoView, MetaError>> + Send;

    /// Stores a retention policy (replacing the one of its scope) and appends
    /// `audit` in the same transaction.
    fn put_policy(&self, info: &PolicyInfo, audit: AuditBuild) -> impl Future<Output = Result<(), MetaError>> + Send;

    /// Removes the policy of `scope` if its digest is `digest`; returns
    /// whether it did (and appended `audit`).
    fn delete_policy(
        &self,
        scope: &RepoPattern,
        digest: &Digest,
        audit: AuditBuild,
    ) -> impl Future<Output = Result<bool, MetaError>> + Send;

    /// Every stored policy, in scope order.
    fn policies(&self) -> impl Future<Output = Result<Vec<PolicyInfo>, MetaError>> + Send;
}

impl RetentionStore for Meta {
    async fn hold_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        hold: &Hold,
        audit: AuditBuild,
    ) -> Result<TagChange, MetaError> {
        dispatch!(self, s => s.hold_tag(repo, tag, hold, audit))
    }

    async fn release_tag(&self, repo: &RepoName, tag: &Tag, audit: AuditBuild) -> Result<TagChange, MetaError> {
        dispatch!(self, s => s.release_tag(repo, tag, audit))
    }

    async fn expire_tags(
        &self,
        repo: &RepoName,
        items: &[Expiring],
        policy: Option<&PolicyInfo>,
    ) -> Result<Vec<TagChange>, MetaError> {
        dispatch!(self, s => s.expire_tags(repo, items, policy))
    }

    async fn unlink_blobs(
        &self,
        repo: &RepoName,
        items: &[Unlinking],
        created_before: OffsetDateTime,
    ) -> Result<Vec<Unlink>, MetaError> {
        dispatch!(self, s => s.unlink_blobs(repo, items, created_before))
    }

    async fn retention_view(&self, repo: &RepoName) -> Result<RepoView, MetaError> {
        dispatch!(self, s => s.retention_view(repo))
    }

    async fn put_policy(&self, info: &PolicyInfo, audit: AuditBuild) -> Result<(), MetaError> {
        dispatch!(self, s => s.put_policy(info, audit))
    }

    async fn delete_policy(&self, scope: &RepoPattern, digest: &Digest, audit: AuditBuild) -> Result<bool, MetaError> {
        dispatch!(self, s => s.delete_policy(scope, digest, audit))
    }

    async fn policies(&self) -> Result<Vec<PolicyInfo>, MetaError> {
        dispatch!(self, s => s.policies())
    }
}
