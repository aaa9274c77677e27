//! Metadata: which blobs each repository may see, tags and manifests, tokens
//! and signing keys. Write-once rules (a link, a tag) are enforced by the store
//! itself so that racing writers get exactly one winner.
//!
//! **Invariant:** a method that changes anything returns only after the change
//! is durable. A change that clients make (a blob link, a tag) is committed in
//! one transaction with its audit entries: a crash leaves both or neither, so
//! no change can escape the audit log.

mod postgres;
mod sled;
pub mod watchdog;
mod writer;

use std::future::Future;

use amber_core::audit::{Actor, AuditEntry};
use amber_core::dsse::Envelope;
use amber_core::log::{Frontier, Hash};
use amber_core::wire::{KeyPurpose, KeyStatus, PolicyInfo, TagEntry, TagState, TokenInfo};
use amber_core::{Digest, RepoName, RepoPattern, Tag, TokenId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use self::postgres::PostgresMeta;
pub use self::sled::SledMeta;
use crate::blobs::Stored;
use crate::config::{FreeSpace, MetaConfig};
pub use crate::uploads::record::{Created, Updated, UploadId, UploadKind, UploadRecord};

#[derive(Clone, Debug, thiserror::Error)]
pub enum MetaError {
    #[error("metadata store: {0}")]
    Store(String),
    #[error("metadata record is unreadable: {0}")]
    Corrupt(String),
    #[error("{0} already exists")]
    Conflict(String),
    /// The store did not answer in time, or cannot be reached.
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
    /// The data volume is (nearly) full; nothing was written.
    #[error("no space for metadata: {0}")]
    NoSpace(String),
    /// A change's audit entry is over the log's limit; nothing was written.
    #[error("the audit entry of this change would be {0} bytes; the log takes at most 65,535")]
    EntryTooLarge(usize),
}

/// A token as the server keeps it: its public fields and the hash of its secret.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenRecord {
    pub info: TokenInfo,
    /// `TokenSecret::hash` of the current secret, hex.
    pub secret_hash: String,
}

/// A signing key pair. `Debug` leaves out the private half.
#[derive(Clone, Serialize, Deserialize)]
pub struct KeyRecord {
    pub keyid: String,
    /// The 32-byte Ed25519 seed, base64.
    pub private_key: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub status: KeyStatus,
    /// Keys from before the log signed manifests.
    #[serde(default)]
    pub purpose: KeyPurpose,
}

impl std::fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRecord")
            .field("keyid", &self.keyid)
            .field("status", &self.status)
            .field("purpose", &self.purpose)
            .finish_non_exhaustive()
    }
}

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

/// Why and by whom a tag is held.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub by: Actor,
}

/// When a tag expired, and the signed tombstone that says so.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Expiry {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub tombstone: Envelope,
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

/// A promotion lease: while one is held on a digest, reclaim does not mark
/// it, so its stored bytes stay until the upload that holds it is linked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease(pub String);

impl Lease {
    pub fn new() -> Self {
        Self(format!("{:032x}", rand::random::<u128>()))
    }
}

impl Default for Lease {
    fn default() -> Self {
        Self::new()
    }
}

/// How long a lease lasts if its upload never ends it (a crashed replica).
pub const LEASE_LIFETIME: time::Duration = time::Duration::hours(1);

/// A digest reclaim may delete: linked nowhere since before the cutoff, or
/// already marked by a run that stopped before finishing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub digest: Digest,
    pub size: u64,
    pub marked: bool,
}

/// Held while a reclaim run or the scrub goes; dropping it lets the next
/// runner in (on any replica).
pub struct RunnerLock(#[allow(dead_code)] Box<dyn Send + Sync>);

/// A stored blob found not to hash to its digest, or gone: never served,
/// reported absent so that clients send it again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    pub digest: Digest,
    /// `mismatch` (the bytes do not hash to the digest) or `missing`.
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    pub found_at: OffsetDateTime,
}

/// Where the scrub is: kept in the store so that a restart, or another
/// replica, goes on from there.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubProgress {
    /// The last digest verified in the pass under way.
    pub cursor: Option<Digest>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub pass_started: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_full_pass: Option<OffsetDateTime>,
    pub verified_blobs: u64,
    pub verified_bytes: u64,
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

/// What every metadata backend provides. Each implementation passes the same
/// conformance tests.
pub trait MetaStore {
    /// Makes a stored blob visible in `repo`; if it was not yet, appends
    /// `audit` in the same transaction. Ends `lease` and revives the digest
    /// if it was waiting for reclaim, in that transaction too.
    fn link_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        lease: Option<&Lease>,
        audit: AuditBuild,
    ) -> impl Future<Output = Result<Stored, MetaError>> + Send;

    /// Takes a promotion lease on `digest`, unless reclaim has marked it
    /// (its bytes are being deleted): then `None`, and the caller waits.
    fn begin_promote(&self, digest: &Digest) -> impl Future<Output = Result<Option<Lease>, MetaError>> + Send;
    /// Ends a lease whose upload did not link.
    fn end_promote(&self, lease: &Lease) -> impl Future<Output = Result<(), MetaError>> + Send;
    /// The reclaim runner's lock, if no other runner (on any replica) holds it.
    fn reclaim_lock(&self) -> impl Future<Output = Result<Option<RunnerLock>, MetaError>> + Send;
    /// Records as waiting for reclaim each stored object that no repository
    /// links, no lease covers and nothing records yet (bytes left by a crash
    /// between storing and linking); returns how many.
    fn note_orphans(&self, objects: &[crate::blobs::Object]) -> impl Future<Output = Result<u64, MetaError>> + Send;
    /// Digests waiting since before `unlinked_before`, and marked ones; drops
    /// expired leases.
    fn reclaim_candidates(
        &self,
        unlinked_before: OffsetDateTime,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Candidate>, MetaError>> + Send;
    /// Marks `digest` for deletion if it still waits since before
    /// `unlinked_before` (or is marked), no repository links it and no lease
    /// covers it; a digest linked again is dropped from the waiting list.
    fn mark_reclaim(
        &self,
        digest: &Digest,
        unlinked_before: OffsetDateTime,
    ) -> impl Future<Output = Result<bool, MetaError>> + Send;
    /// Records the deletion of marked digests whose bytes are gone, with
    /// `audit` (skipped when `digests` is empty).
    fn finish_reclaim(
        &self,
        digests: &[Digest],
        audit: AuditBuild,
    ) -> impl Future<Output = Result<(), MetaError>> + Send;
    /// Digests waiting for reclaim, and their bytes.
    fn reclaim_pending(&self) -> impl Future<Output = Result<(u64, u64), MetaError>> + Send;

    /// Distinct linked digests with their size, in digest order after `after`.
    fn linked_digests(
        &self,
        after: Option<&Digest>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(Digest, u64)>, MetaError>> + Send;
    /// Quarantines a digest, with `audit`, unless it is already; returns whether it was new.
    fn quarantine(
        &self,
        entry: &Quarantined,
        audit: AuditBuild,
    ) -> impl Future<Output = Result<bool, MetaError>> + Send;
    /// Lifts the quarantine of a digest whose bytes were replaced by ones
    /// that hash right, with `audit`; returns whether it was quarantined.
    fn heal(&self, digest: &Digest, audit: AuditBuild) -> impl Future<Output = Result<bool, MetaError>> + Send;
    /// Every quarantined digest.
    fn quarantined(&self) -> impl Future<Output = Result<Vec<Quarantined>, MetaError>> + Send;
    fn scrub_progress(&self) -> impl Future<Output = Result<ScrubProgress, MetaError>> + Send;
    /// Records that these blobs were read back and hashed right at `at`.
    fn record_verified(
        &self,
        digests: &[Digest],
        at: OffsetDateTime,
    ) -> impl Future<Output = Result<(), MetaError>> + Send;
    /// When the scrub last found `digest` hashing right, if ever.
    fn last_verified(&self, digest: &Digest) -> impl Future<Output = Result<Option<OffsetDateTime>, MetaError>> + Send;
    fn save_scrub_progress(&self, progress: &ScrubProgress) -> impl Future<Output = Result<(), MetaError>> + Send;
    /// The scrubber's lock, if no other scrubber (on any replica) holds it.
    fn scrub_lock(&self) -> impl Future<Output = Result<Option<RunnerLock>, MetaError>> + Send;
    /// The size of a blob visible in `repo`, or `None`.
    fn blob_size(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> impl Future<Output = Result<Option<u64>, MetaError>> + Send;

    /// Stores a new token and appends `audit` in the same transaction.
    fn insert_token(
        &self,
        record: &TokenRecord,
        audit: AuditBuild,
    ) -> impl Future<Output = Result<(), MetaError>> + Send;
    fn token(&self, id: &TokenId) -> impl Future<Output = Result<Option<TokenRecord>, MetaError>> + Send;
    fn token_by_hash(&self, secret_hash: &str) -> impl Future<Output = Result<Option<TokenRecord>, MetaError>> + Send;
    /// Records use of a token; a hint, so it need not be durable at once.
    fn touch_token(&self, id: &TokenId, at: OffsetDateTime) -> impl Future<Output = Result<(), MetaError>> + Send;

    /// Tokens in id order, strictly after `after`.
    fn list_tokens(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<TokenRecord>, MetaError>> + Send;
    /// Sets `revoked_at` and appends `audit` in the same transaction, once: a
    /// second revocation keeps the first time and records nothing.
    fn revoke_token(
        &self,
        id: &TokenId,
        at: OffsetDateTime,
        audit: AuditBuild,
    ) -> impl Future<Output = Result<Revocation, MetaError>> + Send;
    /// Atomically stores `new` (which names the old token in `rotated_from`) and
    /// makes the old token end at `old_expires_at`, unless the old token is
    /// revoked, expired or already rotated; appends `audit` if it rotated.
    fn rotate_token(
        &self,
        new: &TokenRecord,
        old_expires_at: OffsetDateTime,
        audit: AuditBuild,
    ) -> impl Future<Output = Result<Rotation, MetaError>> + Send;

    /// Records `replay` and stores `record`, minted for `publisher`, with
    /// `audit`, all in one transaction, unless `(issuer, jti)` is recorded
    /// already or the publisher is gone: of racing exchanges of one ID
    /// token, on any replica, exactly one mints. Forgets replays past their
    /// `until` on the way.
    fn exchange_token(
        &self,
        record: &TokenRecord,
        publisher: &str,
        replay: &Replay,
        audit: AuditBuild,
    ) -> impl Future<Output = Result<Exchange, MetaError>> + Send;
    /// Stores a new publisher with its audit entry.
    fn insert_publisher(
        &self,
        publisher: &amber_core::oidc::Publisher,
        audit: AuditBuild,
    ) -> impl Future<Output = Result<(), MetaError>> + Send;
    /// Every publisher, in id order.
    fn publishers(&self) -> impl Future<Output = Result<Vec<amber_core::oidc::Publisher>, MetaError>> + Send;
    /// Deletes a publisher with its audit entry; false if there was none.
    fn delete_publisher(&self, id: &str, audit: AuditBuild) -> impl Future<Output = Result<bool, MetaError>> + Send;

    /// Appends audit entries, all at once; returns the last one's sequence number.
    fn append_audit(&self, build: AuditBuild) -> impl Future<Output = Result<u64, MetaError>> + Send;
    /// Audit entries in order, strictly after sequence number `after`.
    fn audit_entries(
        &self,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<AuditEntry>, MetaError>> + Send;
    /// The signed checkpoint of the chain head (a DSSE envelope), if any.
    fn audit_checkpoint(&self) -> impl Future<Output = Result<Option<Envelope>, MetaError>> + Send;

    /// The log's tree as durably stored: everything it covers survives a
    /// crash, so a checkpoint of it is never contradicted later.
    fn log_tree(&self) -> impl Future<Output = Result<Frontier, MetaError>> + Send;
    /// Stored hashes of the log's tree, by `tlog` stored hash index, in the
    /// order asked; an index not stored is `Corrupt`.
    fn log_hashes(&self, indexes: Vec<u64>) -> impl Future<Output = Result<Vec<Hash>, MetaError>> + Send;
    /// The newest signed log checkpoint: its tree size and note.
    fn log_checkpoint(&self) -> impl Future<Output = Result<Option<(u64, String)>, MetaError>> + Send;
    /// Keeps `note` as the newest checkpoint if its `size` is larger than the
    /// one kept; returns whether it did.
    fn put_log_checkpoint(&self, size: u64, note: &str) -> impl Future<Output = Result<bool, MetaError>> + Send;
    /// The log's origin, fixed at the first start: the one stored, or else
    /// `candidate`, stored now (the first replica to store one wins; every
    /// other gets its origin back).
    fn claim_log_origin(&self, candidate: &str) -> impl Future<Output = Result<String, MetaError>> + Send;
    /// Replaces the stored origin, only while no checkpoint has been signed;
    /// returns whether it did.
    fn rename_log_origin(&self, origin: &str) -> impl Future<Output = Result<bool, MetaError>> + Send;
    /// The log index of the `tag_bound` entry of a tag.
    fn tag_log_index(&self, repo: &RepoName, tag: &Tag) -> impl Future<Output = Result<Option<u64>, MetaError>> + Send;
    /// Adds up to `limit` entries written before the log existed (or by an
    /// older replica) to the tree; returns how many it added.
    fn integrate_log(&self, limit: usize) -> impl Future<Output = Result<u64, MetaError>> + Send;

    /// Every key of every purpose.
    fn keys(&self) -> impl Future<Output = Result<Vec<KeyRecord>, MetaError>> + Send;
    /// Adds `key` as the only active key of its purpose; every other key of
    /// that purpose becomes retired.
    fn activate_key(&self, key: &KeyRecord) -> impl Future<Output = Result<(), MetaError>> + Send;
    /// Adds `key` only if there is no active key of its purpose yet; returns
    /// whether it was added.
    fn init_key(&self, key: &KeyRecord) -> impl Future<Output = Result<bool, MetaError>> + Send;

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
    /// Expires a live, unheld tag, for good. With `policy`, only while that
    /// policy (scope and digest) is still the one in effect for `repo`.
    fn expire_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        expiry: &Expiry,
        policy: Option<&PolicyInfo>,
        audit: AuditBuild,
    ) -> impl Future<Output = Result<TagChange, MetaError>> + Send;
    /// Removes the link of `digest` in `repo` if it was created before
    /// `created_before` and no live manifest of `repo` references it, checked
    /// in the same transaction as the removal; appends `audit` if removed.
    fn unlink_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        created_before: OffsetDateTime,
        audit: AuditBuild,
    ) -> impl Future<Output = Result<Unlink, MetaError>> + Send;
    /// A repository's tags, links and manifest references, for retention.
    fn retention_view(&self, repo: &RepoName) -> impl Future<Output = Result<RepoView, MetaError>> + Send;
    /// Repositories that have a link or a tag, in name order, after `after`.
    fn repositories(
        &self,
        after: Option<&RepoName>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RepoName>, MetaError>> + Send;

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

    /// Stores a new upload, unless its token already has `most`. A final
    /// upload claims its parts in the same write: each must still be stored,
    /// its token's, and claimed by no other final, or nothing is stored.
    fn create_upload(
        &self,
        record: &UploadRecord,
        most: usize,
    ) -> impl Future<Output = Result<Created, MetaError>> + Send;
    /// The upload `id`, if `token` created it.
    fn upload(
        &self,
        token: &TokenId,
        id: &UploadId,
    ) -> impl Future<Output = Result<Option<UploadRecord>, MetaError>> + Send;
    /// Replaces the record of `record.id` if its stored offset is still `from`.
    fn update_upload(
        &self,
        record: &UploadRecord,
        from: u64,
    ) -> impl Future<Output = Result<Updated, MetaError>> + Send;
    /// Deletes an upload; a final's parts that it claimed are given back
    /// (they stay for another final) in the same write.
    fn delete_upload(&self, id: &UploadId) -> impl Future<Output = Result<bool, MetaError>> + Send;
    /// Uploads in id order strictly after `after`, at most `limit`.
    fn list_uploads(
        &self,
        after: Option<&UploadId>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<UploadRecord>, MetaError>> + Send;

    /// Fails when the store cannot serve (readiness).
    fn check(&self) -> impl Future<Output = Result<(), MetaError>> + Send;
}

/// An ID token consumed by an exchange: `(issuer, jti)` is refused again
/// until `until` (its expiry plus the leeway, after which it is refused as
/// expired anyway), and forgotten after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replay {
    pub issuer: String,
    pub jti: String,
    pub until: OffsetDateTime,
}

/// The outcome of minting a token for an ID token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exchange {
    Minted,
    /// This ID token was exchanged before: nothing was minted.
    Replayed,
    /// The publisher was deleted meanwhile: nothing was minted.
    PublisherGone,
}

/// The outcome of a rotation.
#[derive(Clone, Debug)]
pub enum Rotation {
    Rotated,
    Unknown,
    /// Revoked, expired or already rotated: nothing to rotate.
    Inactive(&'static str),
}

/// The outcome of a revocation.
#[derive(Clone, Debug)]
pub enum Revocation {
    Revoked(TokenRecord),
    /// Revoked before; unchanged.
    AlreadyRevoked(TokenRecord),
    Unknown,
}

/// An audit entry ready to be stored.
pub struct NewAuditEntry {
    pub bytes: Vec<u8>,
    pub hash: String,
    /// The tag this entry binds, so the store can find its log index.
    pub tag_bound: Option<(RepoName, Tag)>,
}

/// The tag an entry's bytes bind, for entries read back from the store.
pub(crate) fn tag_bound_in(bytes: &[u8]) -> Option<(RepoName, Tag)> {
    match serde_json::from_slice::<amber_core::audit::EntryBody>(bytes).ok()?.event {
        amber_core::audit::Event::TagBound { repository, tag, .. } => Some((repository, tag)),
        _ => None,
    }
}

/// Adds an entry to the log's tree: the stored hashes to write, in the same
/// transaction as the entry. A `new` entry must fit an entry bundle; one of
/// the history from before the log may not (a reclaim run once recorded up
/// to 1,000 digests), and is a leaf all the same.
pub(crate) fn grow_log(frontier: &mut Frontier, bytes: &[u8], new: bool) -> Result<Vec<(u64, Hash)>, MetaError> {
    if new && bytes.len() > amber_core::log::MAX_ENTRY_BYTES {
        return Err(MetaError::EntryTooLarge(bytes.len()));
    }
    Ok(frontier.push(amber_core::log::leaf_hash(bytes)))
}

/// Audit entries ready to be stored: consecutive, each chained to the one
/// before, and the signed checkpoint of the last.
pub struct NewAudit {
    pub entries: Vec<NewAuditEntry>,
    pub checkpoint: Envelope,
}

/// Builds the audit entries for a change once the chain head is known.
pub trait BuildAudit: Sync {
    /// The entries numbered from `seq`, the first chained to the entry hashed
    /// `prev`. A store may call this more than once (a retried transaction)
    /// and keeps only what it stored last.
    fn build(&self, seq: u64, prev: &str) -> NewAudit;
}

impl<F: Fn(u64, &str) -> NewAudit + Sync> BuildAudit for F {
    fn build(&self, seq: u64, prev: &str) -> NewAudit {
        self(seq, prev)
    }
}

/// A change's audit entries, owned so that a store may build them on another thread.
pub type AuditBuild = std::sync::Arc<dyn BuildAudit + Send>;

/// The configured metadata backend.
pub enum Meta {
    Sled(SledMeta),
    Postgres(PostgresMeta),
}

impl Meta {
    /// `begin_promote` decided at once, where the store keeps leases in
    /// memory (sled); `None` where it must be asked (PostgreSQL).
    pub fn promote_now(&self, digest: &Digest) -> Option<Option<Lease>> {
        match self {
            Self::Sled(store) => Some(store.promote_now(digest)),
            Self::Postgres(_) => None,
        }
    }

    /// Opens the store; sled keeps half of `min_free_space` free on its volume.
    pub async fn open(config: &MetaConfig, min_free_space: FreeSpace) -> anyhow::Result<Self> {
        match config {
            MetaConfig::Sled(dir) => {
                let dir = dir.clone();
                let store = tokio::task::spawn_blocking(move || SledMeta::open(&dir, min_free_space)).await??;
                Ok(Self::Sled(store))
            }
            MetaConfig::Postgres(url) => Ok(Self::Postgres(PostgresMeta::open(url).await?)),
        }
    }

    /// True while the store has a call stuck past its timeout: the server
    /// cannot serve, and `/healthz` says so.
    pub fn stuck(&self) -> bool {
        match self {
            Self::Sled(store) => store.stuck(),
            Self::Postgres(_) => false,
        }
    }
}

/// Forwards each call to the configured backend.
/// Forwards each call to the configured backend. sled bounds its own calls
/// (see `watchdog`); a PostgreSQL call is bounded here as a whole.
macro_rules! dispatch {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            Meta::Sled($store) => $call.await,
            Meta::Postgres($store) => match tokio::time::timeout(postgres::CALL_TIMEOUT, $call).await {
                Ok(result) => result,
                Err(_) => Err(MetaError::Unavailable("PostgreSQL did not answer in time".into())),
            },
        }
    };
}

impl MetaStore for Meta {
    async fn link_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        lease: Option<&Lease>,
        audit: AuditBuild,
    ) -> Result<Stored, MetaError> {
        dispatch!(self, s => s.link_blob(repo, digest, size, lease, audit))
    }
    async fn begin_promote(&self, digest: &Digest) -> Result<Option<Lease>, MetaError> {
        dispatch!(self, s => s.begin_promote(digest))
    }
    async fn end_promote(&self, lease: &Lease) -> Result<(), MetaError> {
        dispatch!(self, s => s.end_promote(lease))
    }
    async fn reclaim_lock(&self) -> Result<Option<RunnerLock>, MetaError> {
        dispatch!(self, s => s.reclaim_lock())
    }
    async fn note_orphans(&self, objects: &[crate::blobs::Object]) -> Result<u64, MetaError> {
        dispatch!(self, s => s.note_orphans(objects))
    }
    async fn reclaim_candidates(
        &self,
        unlinked_before: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<Candidate>, MetaError> {
        dispatch!(self, s => s.reclaim_candidates(unlinked_before, limit))
    }
    async fn mark_reclaim(&self, digest: &Digest, unlinked_before: OffsetDateTime) -> Result<bool, MetaError> {
        dispatch!(self, s => s.mark_reclaim(digest, unlinked_before))
    }
    async fn finish_reclaim(&self, digests: &[Digest], audit: AuditBuild) -> Result<(), MetaError> {
        dispatch!(self, s => s.finish_reclaim(digests, audit))
    }
    async fn reclaim_pending(&self) -> Result<(u64, u64), MetaError> {
        dispatch!(self, s => s.reclaim_pending())
    }
    async fn linked_digests(&self, after: Option<&Digest>, limit: usize) -> Result<Vec<(Digest, u64)>, MetaError> {
        dispatch!(self, s => s.linked_digests(after, limit))
    }
    async fn quarantine(&self, entry: &Quarantined, audit: AuditBuild) -> Result<bool, MetaError> {
        dispatch!(self, s => s.quarantine(entry, audit))
    }
    async fn heal(&self, digest: &Digest, audit: AuditBuild) -> Result<bool, MetaError> {
        dispatch!(self, s => s.heal(digest, audit))
    }
    async fn quarantined(&self) -> Result<Vec<Quarantined>, MetaError> {
        dispatch!(self, s => s.quarantined())
    }
    async fn scrub_progress(&self) -> Result<ScrubProgress, MetaError> {
        dispatch!(self, s => s.scrub_progress())
    }
    async fn record_verified(&self, digests: &[Digest], at: OffsetDateTime) -> Result<(), MetaError> {
        dispatch!(self, s => s.record_verified(digests, at))
    }
    async fn last_verified(&self, digest: &Digest) -> Result<Option<OffsetDateTime>, MetaError> {
        dispatch!(self, s => s.last_verified(digest))
    }
    async fn save_scrub_progress(&self, progress: &ScrubProgress) -> Result<(), MetaError> {
        dispatch!(self, s => s.save_scrub_progress(progress))
    }
    async fn scrub_lock(&self) -> Result<Option<RunnerLock>, MetaError> {
        dispatch!(self, s => s.scrub_lock())
    }
    async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>, MetaError> {
        dispatch!(self, s => s.blob_size(repo, digest))
    }
    async fn insert_token(&self, record: &TokenRecord, audit: AuditBuild) -> Result<(), MetaError> {
        dispatch!(self, s => s.insert_token(record, audit))
    }
    async fn token(&self, id: &TokenId) -> Result<Option<TokenRecord>, MetaError> {
        dispatch!(self, s => s.token(id))
    }
    async fn exchange_token(
        &self,
        record: &TokenRecord,
        publisher: &str,
        replay: &Replay,
        audit: AuditBuild,
    ) -> Result<Exchange, MetaError> {
        dispatch!(self, s => s.exchange_token(record, publisher, replay, audit))
    }
    async fn insert_publisher(
        &self,
        publisher: &amber_core::oidc::Publisher,
        audit: AuditBuild,
    ) -> Result<(), MetaError> {
        dispatch!(self, s => s.insert_publisher(publisher, audit))
    }
    async fn publishers(&self) -> Result<Vec<amber_core::oidc::Publisher>, MetaError> {
        dispatch!(self, s => s.publishers())
    }
    async fn delete_publisher(&self, id: &str, audit: AuditBuild) -> Result<bool, MetaError> {
        dispatch!(self, s => s.delete_publisher(id, audit))
    }
    async fn token_by_hash(&self, secret_hash: &str) -> Result<Option<TokenRecord>, MetaError> {
        dispatch!(self, s => s.token_by_hash(secret_hash))
    }
    async fn touch_token(&self, id: &TokenId, at: OffsetDateTime) -> Result<(), MetaError> {
        dispatch!(self, s => s.touch_token(id, at))
    }
    async fn list_tokens(&self, after: Option<&str>, limit: usize) -> Result<Vec<TokenRecord>, MetaError> {
        dispatch!(self, s => s.list_tokens(after, limit))
    }
    async fn revoke_token(&self, id: &TokenId, at: OffsetDateTime, audit: AuditBuild) -> Result<Revocation, MetaError> {
        dispatch!(self, s => s.revoke_token(id, at, audit))
    }
    async fn rotate_token(
        &self,
        new: &TokenRecord,
        old_expires_at: OffsetDateTime,
        audit: AuditBuild,
    ) -> Result<Rotation, MetaError> {
        dispatch!(self, s => s.rotate_token(new, old_expires_at, audit))
    }
    async fn append_audit(&self, build: AuditBuild) -> Result<u64, MetaError> {
        dispatch!(self, s => s.append_audit(build))
    }
    async fn audit_entries(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, MetaError> {
        dispatch!(self, s => s.audit_entries(after, limit))
    }
    async fn audit_checkpoint(&self) -> Result<Option<Envelope>, MetaError> {
        dispatch!(self, s => s.audit_checkpoint())
    }
    async fn log_tree(&self) -> Result<Frontier, MetaError> {
        dispatch!(self, s => s.log_tree())
    }
    async fn log_hashes(&self, indexes: Vec<u64>) -> Result<Vec<Hash>, MetaError> {
        dispatch!(self, s => s.log_hashes(indexes))
    }
    async fn log_checkpoint(&self) -> Result<Option<(u64, String)>, MetaError> {
        dispatch!(self, s => s.log_checkpoint())
    }
    async fn put_log_checkpoint(&self, size: u64, note: &str) -> Result<bool, MetaError> {
        dispatch!(self, s => s.put_log_checkpoint(size, note))
    }
    async fn claim_log_origin(&self, candidate: &str) -> Result<String, MetaError> {
        dispatch!(self, s => s.claim_log_origin(candidate))
    }
    async fn rename_log_origin(&self, origin: &str) -> Result<bool, MetaError> {
        dispatch!(self, s => s.rename_log_origin(origin))
    }
    async fn tag_log_index(&self, repo: &RepoName, tag: &Tag) -> Result<Option<u64>, MetaError> {
        dispatch!(self, s => s.tag_log_index(repo, tag))
    }
    async fn integrate_log(&self, limit: usize) -> Result<u64, MetaError> {
        dispatch!(self, s => s.integrate_log(limit))
    }
    async fn keys(&self) -> Result<Vec<KeyRecord>, MetaError> {
        dispatch!(self, s => s.keys())
    }
    async fn activate_key(&self, key: &KeyRecord) -> Result<(), MetaError> {
        dispatch!(self, s => s.activate_key(key))
    }
    async fn init_key(&self, key: &KeyRecord) -> Result<bool, MetaError> {
        dispatch!(self, s => s.init_key(key))
    }
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
    async fn expire_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        expiry: &Expiry,
        policy: Option<&PolicyInfo>,
        audit: AuditBuild,
    ) -> Result<TagChange, MetaError> {
        dispatch!(self, s => s.expire_tag(repo, tag, expiry, policy, audit))
    }
    async fn unlink_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        created_before: OffsetDateTime,
        audit: AuditBuild,
    ) -> Result<Unlink, MetaError> {
        dispatch!(self, s => s.unlink_blob(repo, digest, created_before, audit))
    }
    async fn retention_view(&self, repo: &RepoName) -> Result<RepoView, MetaError> {
        dispatch!(self, s => s.retention_view(repo))
    }
    async fn repositories(&self, after: Option<&RepoName>, limit: usize) -> Result<Vec<RepoName>, MetaError> {
        dispatch!(self, s => s.repositories(after, limit))
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
    async fn tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<TagRecord>, MetaError> {
        dispatch!(self, s => s.tag(repo, tag))
    }
    async fn manifest(&self, repo: &RepoName, digest: &Digest) -> Result<Option<Envelope>, MetaError> {
        dispatch!(self, s => s.manifest(repo, digest))
    }
    async fn list_tags(&self, repo: &RepoName, after: Option<&str>, limit: usize) -> Result<Vec<TagEntry>, MetaError> {
        dispatch!(self, s => s.list_tags(repo, after, limit))
    }
    async fn create_upload(&self, record: &UploadRecord, most: usize) -> Result<Created, MetaError> {
        dispatch!(self, s => s.create_upload(record, most))
    }
    async fn upload(&self, token: &TokenId, id: &UploadId) -> Result<Option<UploadRecord>, MetaError> {
        dispatch!(self, s => s.upload(token, id))
    }
    async fn update_upload(&self, record: &UploadRecord, from: u64) -> Result<Updated, MetaError> {
        dispatch!(self, s => s.update_upload(record, from))
    }
    async fn delete_upload(&self, id: &UploadId) -> Result<bool, MetaError> {
        dispatch!(self, s => s.delete_upload(id))
    }
    async fn list_uploads(&self, after: Option<&UploadId>, limit: usize) -> Result<Vec<UploadRecord>, MetaError> {
        dispatch!(self, s => s.list_uploads(after, limit))
    }
    async fn check(&self) -> Result<(), MetaError> {
        dispatch!(self, s => s.check())
    }
}
