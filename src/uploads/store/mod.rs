//! Where an upload's bytes wait until it completes: the trait, and the enum
//! of the configured backend (a directory beside the blobs, or S3 objects).

pub mod fs;
pub mod s3;

use std::future::Future;
use std::ops::Range;

use amber_core::Digest;
use amber_core::parts::PartHasher;

use self::fs::FsUploads;
use self::s3::S3Uploads;
use crate::admission::MemoryBudget;
use crate::blobs::{BlobError, BodyStream, ByteStream, Upload, Written};
use crate::meta::{Segment, UploadId, UploadRecord};

/// The hash of an upload's bytes so far, fed as they are stored.
pub enum Check {
    /// A blob of its own: its digest, computed as it arrives, and its
    /// sha256 beside it (for its attestations' subjects).
    Whole(Box<OpenHash>),
    /// A part with a chaining value to match.
    Part(Box<PartHasher>),
    /// An OCI upload: its BLAKE3 and sha256, the digest the client names
    /// being known only when it closes the upload.
    Open(Box<OpenHash>),
}

/// BLAKE3 and sha256 of an upload's bytes so far.
#[derive(Clone, Default)]
pub struct OpenHash {
    pub blake3: blake3::Hasher,
    pub sha256: sha2::Sha256,
}

impl Check {
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Part(hasher) => hasher.update(bytes),
            Self::Whole(hash) | Self::Open(hash) => {
                hash.blake3.update(bytes);
                sha2::Digest::update(&mut hash.sha256, bytes);
            }
        }
    }
}

/// What an append stored: `written` bytes from the record's offset, durable,
/// even when the body then failed (`error`).
pub struct Appended {
    pub written: u64,
    pub check: Option<Check>,
    /// The object holding them, for a backend that keeps one per append.
    pub segment: Option<Segment>,
    pub error: Option<BlobError>,
}

impl Appended {
    pub fn failed(error: BlobError, check: Option<Check>) -> Self {
        Self { written: 0, check, segment: None, error: Some(error) }
    }
}

/// What every upload backend provides.
pub trait UploadBytes {
    /// Stores `body` at the record's offset, at most the bytes left before its
    /// length, feeding each to `check`; they are durable when this returns.
    fn append(
        &self,
        record: &UploadRecord,
        body: BodyStream,
        check: Option<Check>,
        memory: MemoryBudget,
    ) -> impl Future<Output = Appended> + Send;

    /// The stored bytes of an upload in `range` (below its offset).
    fn read(
        &self,
        record: &UploadRecord,
        range: Range<u64>,
    ) -> impl Future<Output = Result<ByteStream, BlobError>> + Send;

    /// Makes the blob made of `parts` (one upload, or a final's partial
    /// uploads in order) visible under its digest, through `upload.gate`.
    /// `verified`: every byte is known to hash to `upload.expected`, so the
    /// backend need not hash them again.
    fn finish(
        &self,
        parts: &[UploadRecord],
        upload: Upload,
        verified: bool,
    ) -> impl Future<Output = Result<Written, BlobError>> + Send;

    /// Forgets an upload's bytes (and an append's, lost to a racing one).
    fn discard(&self, record: &UploadRecord) -> impl Future<Output = Result<(), BlobError>> + Send;
    fn discard_segment(&self, segment: &Segment) -> impl Future<Output = Result<(), BlobError>> + Send;

    /// Removes bytes no live upload owns (left by a crash), older than an hour.
    fn sweep(&self, live: &std::collections::HashSet<UploadId>) -> impl Future<Output = Result<u64, BlobError>> + Send;
}

/// The configured backend: it follows the blob store's.
pub enum UploadStore {
    Fs(FsUploads),
    S3(S3Uploads),
}

impl UploadBytes for UploadStore {
    async fn append(
        &self,
        record: &UploadRecord,
        body: BodyStream,
        check: Option<Check>,
        memory: MemoryBudget,
    ) -> Appended {
        match self {
            Self::Fs(store) => store.append(record, body, check, memory).await,
            Self::S3(store) => store.append(record, body, check, memory).await,
        }
    }

    async fn read(&self, record: &UploadRecord, range: Range<u64>) -> Result<ByteStream, BlobError> {
        match self {
            Self::Fs(store) => store.read(record, range).await,
            Self::S3(store) => store.read(record, range).await,
        }
    }

    async fn finish(&self, parts: &[UploadRecord], upload: Upload, verified: bool) -> Result<Written, BlobError> {
        match self {
            Self::Fs(store) => store.finish(parts, upload, verified).await,
            Self::S3(store) => store.finish(parts, upload, verified).await,
        }
    }

    async fn discard(&self, record: &UploadRecord) -> Result<(), BlobError> {
        match self {
            Self::Fs(store) => store.discard(record).await,
            Self::S3(store) => store.discard(record).await,
        }
    }

    async fn discard_segment(&self, segment: &Segment) -> Result<(), BlobError> {
        match self {
            Self::Fs(store) => store.discard_segment(segment).await,
            Self::S3(store) => store.discard_segment(segment).await,
        }
    }

    async fn sweep(&self, live: &std::collections::HashSet<UploadId>) -> Result<u64, BlobError> {
        match self {
            Self::Fs(store) => store.sweep(live).await,
            Self::S3(store) => store.sweep(live).await,
        }
    }
}

/// The digest `check` computed, if it covered a whole blob of its own.
pub fn whole_digest(check: Option<&Check>) -> Option<Digest> {
    match check {
        Some(Check::Whole(hash)) => Some(Digest::from(hash.blake3.finalize())),
        _ => None,
    }
}

/// The sha256 (`sha256:<hex>`) `check` computed, if it covered a whole blob.
pub fn whole_sha256(check: Option<&Check>) -> Option<String> {
    match check {
        Some(Check::Whole(hash)) => Some(format!("sha256:{:x}", sha2::Digest::finalize(hash.sha256.clone()))),
        _ => None,
    }
}

/// The stored bytes of `parts` one after another, for a backend that builds
/// the blob by streaming them into the blob store. A failed read ends it
/// with an error that [`stored_side`] turns back into the store's own.
pub fn concatenated<S>(store: S, parts: Vec<UploadRecord>) -> BodyStream
where
    S: UploadBytes + Clone + Send + Sync + 'static,
{
    use futures_util::{StreamExt, TryStreamExt};
    Box::pin(
        futures_util::stream::iter(parts)
            .then(move |part| {
                let store = store.clone();
                async move { store.read(&part, 0..part.length).await }
            })
            .map_ok(|bytes| bytes.map_err(|e| std::io::Error::other(e.to_string())))
            .map_err(|e| std::io::Error::other(e.to_string()))
            .try_flatten(),
    )
}

/// A put fed by [`concatenated`] reports a failed read as the client's;
/// here it is the store's.
pub fn stored_side(err: BlobError) -> BlobError {
    match err {
        BlobError::Client(io) => BlobError::Io(io),
        other => other,
    }
}
