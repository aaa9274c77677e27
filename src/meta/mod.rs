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
pub trait MetaStore:
    LinkStore
    + ReclaimStore
    + ScrubStore
    + TokenStore
    + PublisherStore
    + AuditStore
    + LogStore
    + KeyStore
    + TagStore
    + RetentionStore
    + UploadRecordStore
{
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

mod audit;
mod keys;
mod links;
mod log;
mod publishers;
mod reclaim;
mod retention;
mod scrub;
mod tags;
mod tokens;
mod uploads;

pub use self::audit::AuditStore;
pub use self::keys::KeyStore;
pub use self::links::LinkStore;
pub use self::log::LogStore;
pub use self::publishers::PublisherStore;
pub use self::reclaim::ReclaimStore;
pub use self::retention::RetentionStore;
pub use self::scrub::ScrubStore;
pub use self::tags::TagStore;
pub use self::tokens::TokenStore;
pub use self::uploads::UploadRecordStore;

impl MetaStore for Meta {
    async fn check(&self) -> Result<(), MetaError> {
        dispatch!(self, s => s.check())
    }
}
