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

use amber_core::dsse::Envelope;
use amber_core::log::{Frontier, Hash};
use amber_core::{Digest, RepoName, Tag};

pub use self::postgres::PostgresMeta;
pub use self::sled::SledMeta;
use crate::config::{FreeSpace, MetaConfig};

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

/// Held while a reclaim run or the scrub goes; dropping it lets the next
/// runner in (on any replica).
pub struct RunnerLock(#[allow(dead_code)] Box<dyn Send + Sync>);

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
    + OciStore
    + AttestationStore
    + RunStore
    + StatsStore
{
    /// Fails when the store cannot serve (readiness).
    fn check(&self) -> impl Future<Output = Result<(), MetaError>> + Send;
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
            Meta::Postgres($store) => match tokio::time::timeout($crate::meta::postgres::CALL_TIMEOUT, $call).await {
                Ok(result) => result,
                Err(_) => Err(MetaError::Unavailable("PostgreSQL did not answer in time".into())),
            },
        }
    };
}

mod attestations;
mod audit;
mod keys;
mod links;
mod log;
mod oci;
mod publishers;
mod reclaim;
mod retention;
mod runs;
mod scrub;
mod stats;
mod tags;
mod tokens;
mod uploads;

pub use self::attestations::AttestationStore;
pub use self::audit::AuditStore;
pub use self::keys::KeyRecord;
pub use self::keys::KeyStore;
pub use self::links::LinkStore;
pub use self::links::{LEASE_LIFETIME, Lease};
pub use self::log::LogStore;
pub use self::oci::OciStore;
pub use self::oci::{OciManifest, Referrer};
pub use self::publishers::PublisherStore;
pub use self::reclaim::Candidate;
pub use self::reclaim::ReclaimStore;
pub use self::retention::RetentionStore;
pub use self::retention::{Expiring, LinkView, RepoView, TagChange, TagView, Unlink, Unlinking};
pub use self::runs::RunStore;
pub use self::runs::{RUNS_KEPT, abandoned};
pub use self::scrub::ScrubStore;
pub use self::scrub::{Quarantined, ScrubProgress};
pub use self::stats::StatsStore;
pub use self::stats::{RepoStats, StoreStats, differences};
pub use self::tags::TagStore;
pub use self::tags::{Bound, Expiry, Hold, Signed, TagRecord};
pub use self::tokens::TokenStore;
pub use self::tokens::{Exchange, Replay, Revocation, Rotation, TokenRecord};
pub use self::uploads::UploadRecordStore;
pub use self::uploads::{Created, Segment, Updated, UploadId, UploadKind, UploadRecord};

impl MetaStore for Meta {
    async fn check(&self) -> Result<(), MetaError> {
        dispatch!(self, s => s.check())
    }
}
