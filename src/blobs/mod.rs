//! Blob storage: write-once bytes named by their BLAKE3 digest, shared by all
//! repositories (which blobs a repository may see is metadata, not storage).
//!
//! **Invariant:** a blob is visible under its digest only once its bytes hashed
//! to that digest and are durable; a full read never completes with bytes that
//! do not hash to the digest.

mod fs;
mod pool;
mod s3;

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;

use amber_core::Digest;
use bytes::Bytes;
use futures_util::Stream;

pub use fs::FsBlobs;
pub(crate) use fs::{PREALLOCATE_STEP, joined, preallocate};
pub(crate) use s3::MIN_PART as S3_MIN_PART;
pub use s3::S3Blobs;

use crate::admission::MemoryBudget;
use crate::config::{BlobsConfig, FreeSpace};

/// An upload body as the store consumes it.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;
/// A read as the store produces it; an `Err` item aborts the response.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, BlobError>> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("body hashes to {actual}, not {expected}")]
    Mismatch { expected: Digest, actual: Digest },
    #[error("blob exceeds the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("request body: {0}")]
    Client(std::io::Error),
    #[error("stored blob {0} does not hash to its digest")]
    Corrupt(Digest),
    /// Linked, but its stored bytes are gone.
    #[error("stored blob {0} is missing")]
    Missing(Digest),
    #[error("blob {0} not found")]
    NotFound(Digest),
    #[error("no space on the data volume")]
    NoSpace,
    #[error("upload memory exhausted")]
    Throttled,
    #[error("blob storage unavailable: {0}")]
    Unavailable(String),
    #[error("blob storage: {0}")]
    Io(std::io::Error),
}

impl From<std::io::Error> for BlobError {
    fn from(err: std::io::Error) -> Self {
        if crate::space::is_full(&err) { Self::NoSpace } else { Self::Io(err) }
    }
}

/// Whether a write created the thing or found it already there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    Created,
    AlreadyPresent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    pub digest: Digest,
    pub size: u64,
    pub stored: Stored,
}

/// Passed once an upload's bytes hashed to their digest and before they are
/// made visible under it (or found already there): the metadata store's
/// lease on the digest, which keeps reclaim from deleting those bytes until
/// the upload is linked, and waits while a deletion of them is under way.
pub trait Gate: Send + Sync {
    fn enter(&self, digest: Digest) -> Pin<Box<dyn Future<Output = Result<Entered, BlobError>> + Send + '_>>;

    /// The same, decided at once without waiting on anything (callable on a
    /// blocking thread), when the gate can; `None`: call [`Gate::enter`].
    /// Lets a backend seal and link an upload in one blocking call.
    fn enter_now(&self, _digest: Digest) -> Option<Result<Entered, BlobError>> {
        None
    }
}

/// What the gate decided.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Entered {
    /// The stored bytes are quarantined: replace them (these hashed right)
    /// rather than keep what is there.
    pub replace: bool,
}

/// A stored object, as a listing of the store finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Object {
    pub digest: Digest,
    pub size: u64,
    /// When the bytes were last written, if the store says; never earlier
    /// than the truth (a store that rounds gives the end of its interval).
    pub modified: Option<time::OffsetDateTime>,
}

/// What is known of an upload before its body arrives.
#[derive(Clone)]
pub struct Upload {
    /// The digest the bytes must hash to; `None` computes it.
    pub expected: Option<Digest>,
    /// More bytes than this are refused.
    pub limit: u64,
    /// The length the client announced (`Content-Length`): a hint for
    /// preallocation, never trusted.
    pub announced: Option<u64>,
    /// Lends the memory for the bytes a backend holds; past it, `Throttled`.
    pub memory: MemoryBudget,
    /// Entered between verifying the digest and the final write.
    pub gate: Option<std::sync::Arc<dyn Gate>>,
}

/// Enters `gate`, if there is one.
pub(crate) async fn enter(gate: Option<&std::sync::Arc<dyn Gate>>, digest: Digest) -> Result<Entered, BlobError> {
    match gate {
        Some(gate) => gate.enter(digest).await,
        None => Ok(Entered::default()),
    }
}

/// What every blob backend provides. Implementations are checked by the same
/// conformance tests.
pub trait BlobStore {
    /// Streams `body` into the store. With `upload.expected`, the bytes must
    /// hash to it; otherwise the digest is computed. More than `upload.limit`
    /// bytes is refused. Nothing becomes visible unless the call succeeds.
    fn put(&self, upload: Upload, body: BodyStream) -> impl Future<Output = Result<Written, BlobError>> + Send;

    /// Streams a stored blob of known `size`, or a byte range of it. A full read
    /// is verified against the digest as it streams: the last chunk is held back
    /// until the hash matches, so a corrupt blob never completes.
    fn read(
        &self,
        digest: Digest,
        size: u64,
        range: Option<Range<u64>>,
    ) -> impl Future<Output = Result<ByteStream, BlobError>> + Send;

    /// Fails when the store cannot serve (readiness).
    fn check(&self) -> impl Future<Output = Result<(), BlobError>> + Send;

    /// Deletes the stored bytes of `digest`, durably; deleting what is not
    /// there succeeds. Only reclaim calls this, for a digest it has marked.
    fn delete(&self, digest: &Digest) -> impl Future<Output = Result<(), BlobError>> + Send;

    /// [`Self::delete`] of many at once (S3: `DeleteObjects`, 1,000 keys a
    /// call, several in flight; a directory: each shard synced once).
    fn delete_many(&self, digests: &[Digest]) -> impl Future<Output = Result<(), BlobError>> + Send;

    /// Stored objects in digest order, strictly after `after`, at most `limit`.
    fn list(&self, after: Option<Digest>, limit: usize) -> impl Future<Output = Result<Vec<Object>, BlobError>> + Send;
}

/// The configured blob backend.
pub enum Blobs {
    Fs(FsBlobs),
    S3(S3Blobs),
}

impl Blobs {
    /// Opens the backend; a local directory keeps `min_free_space` free.
    pub async fn open(config: &BlobsConfig, min_free_space: FreeSpace) -> anyhow::Result<Self> {
        match config {
            BlobsConfig::File(dir) => Ok(Self::Fs(FsBlobs::open(dir.clone(), min_free_space).await?)),
            BlobsConfig::S3 { bucket, prefix, path_style } => {
                Ok(Self::S3(S3Blobs::open(bucket.clone(), prefix.clone(), *path_style).await?))
            }
        }
    }
}

impl BlobStore for Blobs {
    async fn put(&self, upload: Upload, body: BodyStream) -> Result<Written, BlobError> {
        match self {
            Self::Fs(store) => store.put(upload, body).await,
            Self::S3(store) => store.put(upload, body).await,
        }
    }

    async fn read(&self, digest: Digest, size: u64, range: Option<Range<u64>>) -> Result<ByteStream, BlobError> {
        match self {
            Self::Fs(store) => store.read(digest, size, range).await,
            Self::S3(store) => store.read(digest, size, range).await,
        }
    }

    async fn check(&self) -> Result<(), BlobError> {
        match self {
            Self::Fs(store) => store.check().await,
            Self::S3(store) => store.check().await,
        }
    }

    async fn delete(&self, digest: &Digest) -> Result<(), BlobError> {
        match self {
            Self::Fs(store) => store.delete(digest).await,
            Self::S3(store) => store.delete(digest).await,
        }
    }

    async fn delete_many(&self, digests: &[Digest]) -> Result<(), BlobError> {
        match self {
            Self::Fs(store) => store.delete_many(digests).await,
            Self::S3(store) => store.delete_many(digests).await,
        }
    }

    async fn list(&self, after: Option<Digest>, limit: usize) -> Result<Vec<Object>, BlobError> {
        match self {
            Self::Fs(store) => store.list(after, limit).await,
            Self::S3(store) => store.list(after, limit).await,
        }
    }
}
