//! Blobs in a local directory.
//!
//! Layout (version in `VERSION`):
//! ```text
//! DIR/VERSION            "1"
//! DIR/data/ab/<hex>      a blob, named by the 64 hex digits of its digest
//! DIR/staging/<random>   uploads in flight; emptied at start
//! ```
//! An upload is hashed and written to staging in batches, each one call on the
//! blocking pool (so an upload waiting on its client holds no thread),
//! `fdatasync`ed, then hard-linked to its final name (a link never replaces an
//! existing file, so a racing upload of the same bytes simply finds it there)
//! and the shard directory is fsynced before the upload is acknowledged.
//! Reads go a chunk per blocking call, a few chunks ahead of the client.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use amber_core::Digest;
use bytes::Bytes;
use futures_util::StreamExt;

use super::pool::BufferPool;
use super::{BlobError, BlobStore, BodyStream, ByteStream, Entered, Object, Stored, Upload, Written};
use crate::admission::Lent;
use crate::config::FreeSpace;
use crate::space::{Purpose, SpaceReserve};

const LAYOUT_VERSION: &str = "1";
/// Read chunk: large enough for BLAKE3's SIMD paths and few syscalls, small
/// enough that a download holds at most a few MiB.
const READ_CHUNK: usize = 512 * 1024;
/// Chunks read ahead of the response, waiting to be sent.
const READ_AHEAD: usize = 3;
/// Chunks are gathered into batches of at least this much, each written in
/// one call on the blocking pool; the ~400 KiB reads hyper hands over on a
/// fast connection are a batch each, with no copy.
const WRITE_BATCH: usize = 256 * 1024;
/// Uploads announced at least this large get their blocks allocated ahead of
/// the data: ext4 then skips its per-page delayed-allocation bookkeeping,
/// which cut the kernel's share of a 1 GiB write by a fifth here.
const PREALLOCATE_FROM: u64 = 1024 * 1024;
/// Blocks are reserved this far ahead of the data at most (well under a
/// second of a fast upload).
pub(crate) const PREALLOCATE_STEP: u64 = 32 << 20;
/// The free space is checked at the start of an upload and again after each
/// this much written.
const SPACE_CHECK_EVERY: u64 = 32 << 20;
/// Idle read buffers kept for reuse (at most 8 MiB).
const IDLE_READ_BUFFERS: usize = 16;

#[derive(Clone)]
pub struct FsBlobs {
    inner: Arc<Dirs>,
}

struct Dirs {
    data: PathBuf,
    staging: PathBuf,
    read_buffers: BufferPool,
    space: SpaceReserve,
}

/// The upload's writer once its write in flight, if any, has finished.
async fn settled(
    idle: &mut Option<Staged>,
    in_flight: &mut Option<tokio::task::JoinHandle<Result<Staged, BlobError>>>,
) -> Result<Staged, BlobError> {
    match in_flight.take() {
        Some(write) => joined(write).await,
        None => Ok(idle.take().expect("a writer is idle when none is in flight")),
    }
}

/// Waits for a blocking call of this backend.
pub(crate) async fn joined<T>(handle: tokio::task::JoinHandle<Result<T, BlobError>>) -> Result<T, BlobError> {
    handle.await.map_err(|e| BlobError::Io(io::Error::other(e)))?
}

impl Dirs {
    fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.data.join(&hex[..2]).join(hex)
    }
}

fn create_private_dir(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(path)
}

fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

impl FsBlobs {
    pub async fn open(root: PathBuf, min_free_space: FreeSpace) -> anyhow::Result<Self> {
        tokio::task::spawn_blocking(move || Self::open_blocking(&root, min_free_space)).await?
    }

    fn open_blocking(root: &Path, min_free_space: FreeSpace) -> anyhow::Result<Self> {
        use anyhow::Context;
        create_private_dir(root).with_context(|| format!("creating blob directory {}", root.display()))?;
        let version_file = root.join("VERSION");
        match fs::read_to_string(&version_file) {
            Ok(found) if found.trim() == LAYOUT_VERSION => {}
            Ok(found) => anyhow::bail!(
                "blob directory {} has layout version {:?}; this amberd reads version {LAYOUT_VERSION}",
                root.display(),
                found.trim()
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let tmp = root.join("VERSION.tmp");
                fs::write(&tmp, LAYOUT_VERSION)?;
                File::open(&tmp)?.sync_all()?;
                fs::rename(&tmp, &version_file)?;
            }
            Err(e) => return Err(e).context("reading blob layout version"),
        }
        let data = root.join("data");
        for shard in 0..=255u8 {
            create_private_dir(&data.join(format!("{shard:02x}")))?;
        }
        sync_dir(&data)?;
        // Anything left in staging is an upload that was never acknowledged.
        let staging = root.join("staging");
        if staging.exists() {
            fs::remove_dir_all(&staging).context("reclaiming staging")?;
        }
        create_private_dir(&staging)?;
        sync_dir(root)?;
        let read_buffers = BufferPool::new(READ_CHUNK, IDLE_READ_BUFFERS);
        let space = SpaceReserve::new(root, min_free_space);
        Ok(Self { inner: Arc::new(Dirs { data, staging, read_buffers, space }) })
    }
}

impl FsBlobs {
    /// The directory the blobs live in; resumable uploads keep their bytes
    /// beside them, on the same file system, so that one becomes a blob by
    /// a hard link.
    pub(crate) fn root(&self) -> &Path {
        self.inner.data.parent().expect("data lives in the blob directory")
    }

    /// Fails when the volume is down to its reserve for uploads.
    pub(crate) fn check_space(&self) -> Result<(), BlobError> {
        self.inner.space.check(Purpose::Upload).map_err(|_| BlobError::NoSpace)
    }

    /// Makes `path`, a durable file whose bytes hashed to `digest`, the blob
    /// `digest` (a blocking call): hard-linked, so an existing blob is never
    /// replaced; with `replace` (quarantined bytes there), renamed over it
    /// through a second link, so that `path` still names the file.
    pub(crate) fn adopt(&self, path: &Path, digest: &Digest, size: u64, replace: bool) -> Result<Written, BlobError> {
        let target = self.inner.blob_path(digest);
        let shard = target.parent().expect("blob paths have a shard directory");
        let stored = if replace {
            let temporary = self.inner.staging.join(format!("{:032x}", rand::random::<u128>()));
            fs::hard_link(path, &temporary)?;
            fs::rename(&temporary, &target)?;
            Stored::Created
        } else {
            match fs::hard_link(path, &target) {
                Ok(()) => Stored::Created,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Stored::AlreadyPresent,
                Err(e) => return Err(e.into()),
            }
        };
        if stored == Stored::Created {
            sync_dir(shard)?;
        }
        Ok(Written { digest: *digest, size, stored })
    }
}

/// Removes a staging file unless the upload completed.
struct StagingFile {
    path: PathBuf,
}

impl Drop for StagingFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// An upload being written: a staging file (made at the first write), the
/// hash so far, and how far blocks are reserved. Each call runs on a blocking
/// thread and returns; between calls the upload holds no thread, so a
/// stalled client holds none either.
struct Staged {
    dirs: Arc<Dirs>,
    upload: Upload,
    file: Option<(File, StagingFile)>,
    hasher: blake3::Hasher,
    written: u64,
    /// Bytes of blocks reserved so far.
    allocated: u64,
    /// The free space is checked again once this much has been written.
    next_space_check: u64,
}

impl Staged {
    fn new(dirs: Arc<Dirs>, upload: Upload) -> Self {
        Self { dirs, upload, file: None, hasher: blake3::Hasher::new(), written: 0, allocated: 0, next_space_check: 0 }
    }

    /// Hashes and writes `chunks`. Every upload is staged and written, even
    /// of a digest already stored: the answer and its timing must not tell
    /// whether some other repository holds the blob.
    fn write(&mut self, chunks: &[Bytes]) -> Result<(), BlobError> {
        let incoming: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        if self.written + incoming >= self.next_space_check {
            self.dirs.space.check(Purpose::Upload).map_err(|_| BlobError::NoSpace)?;
            self.next_space_check = self.written + incoming + SPACE_CHECK_EVERY;
        }
        if self.file.is_none() {
            let name: u128 = rand::random();
            let path = self.dirs.staging.join(format!("{name:032x}"));
            let file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
            self.file = Some((file, StagingFile { path }));
        }
        let (file, _) = self.file.as_mut().expect("opened above");
        if let Some(announced) = self.upload.announced.filter(|&n| n >= PREALLOCATE_FROM && n <= self.upload.limit)
            && self.written + incoming > self.allocated
            && self.allocated < announced
        {
            // Reserve blocks a step at a time, never for bytes far from
            // arriving: a client that announces 4 GiB and stalls holds no
            // more than a step of the disk.
            let step = PREALLOCATE_STEP.max(incoming).min(announced - self.allocated);
            preallocate(file, self.allocated, step)?;
            self.allocated += step;
        }
        for chunk in chunks {
            self.hasher.update(chunk);
            file.write_all(chunk)?;
        }
        self.written += incoming;
        Ok(())
    }

    /// Checks the digest and makes the staged bytes durable.
    fn seal(mut self) -> Result<Sealed, BlobError> {
        if self.file.is_none() {
            self.write(&[])?; // an empty body is a blob too
        }
        let digest = Digest::from(self.hasher.finalize());
        if let Some(expected) = self.upload.expected.filter(|e| *e != digest) {
            return Err(BlobError::Mismatch { expected, actual: digest });
        }
        let (file, staging) = self.file.take().expect("written above");
        file.sync_data()?;
        Ok(Sealed { dirs: self.dirs, staging, digest, size: self.written })
    }
}

/// Verified, durable staged bytes, not yet under their digest.
struct Sealed {
    dirs: Arc<Dirs>,
    staging: StagingFile,
    digest: Digest,
    size: u64,
}

impl Sealed {
    /// Links the bytes into place, durably; finds them there if stored
    /// already, unless told to `replace` them (quarantined bytes): then
    /// renamed over them, atomically.
    fn link(self, replace: bool) -> Result<Written, BlobError> {
        let target = self.dirs.blob_path(&self.digest);
        if replace {
            fs::rename(&self.staging.path, &target)?;
            sync_dir(target.parent().expect("blob paths have a shard directory"))?;
            return Ok(Written { digest: self.digest, size: self.size, stored: Stored::Created });
        }
        let stored = match fs::hard_link(&self.staging.path, &target) {
            Ok(()) => {
                sync_dir(target.parent().expect("blob paths have a shard directory"))?;
                Stored::Created
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Stored::AlreadyPresent,
            Err(e) => return Err(e.into()),
        };
        Ok(Written { digest: self.digest, size: self.size, stored })
    }
}

/// Reserves `length` bytes of blocks from `offset` without changing the
/// file's size, so a body that ends early leaves no hole of zeros behind its
/// data. A file system that cannot preallocate simply writes as it goes; one
/// that is full says so.
pub(crate) fn preallocate(file: &File, offset: u64, length: u64) -> io::Result<()> {
    use rustix::fs::{FallocateFlags, fallocate};
    match fallocate(file, FallocateFlags::KEEP_SIZE, offset, length) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::NOSPC => Err(e.into()),
        Err(_) => Ok(()),
    }
}

/// A read in progress: the open file, what is left to send, and the hash so
/// far of a full read.
struct Reader {
    file: File,
    digest: Digest,
    remaining: u64,
    hasher: Option<blake3::Hasher>,
    buffers: BufferPool,
}

impl Reader {
    /// Reads the next chunk, on a blocking thread. The call that reads the
    /// last chunk of a full read also checks the digest, and returns an error
    /// instead of that chunk if it does not match: a corrupt blob never
    /// completes.
    fn next_chunk(mut self) -> (Self, Result<Bytes, BlobError>) {
        let mut buf = self.buffers.take();
        let want = self.remaining.min(READ_CHUNK as u64) as usize;
        let n = match self.file.read(&mut buf.space()[..want]) {
            Ok(0) => {
                tracing::error!(digest = %self.digest, "blob on disk is shorter than recorded");
                let digest = self.digest;
                return (self, Err(BlobError::Corrupt(digest)));
            }
            Ok(n) => n,
            Err(e) => return (self, Err(e.into())),
        };
        self.remaining -= n as u64;
        let chunk = buf.freeze(n);
        if let Some(hasher) = self.hasher.as_mut() {
            // Two halves at once on the hashing pool: a verified download
            // then keeps pace with one core hashing a file from memory.
            hasher.update_rayon(&chunk);
        }
        if self.remaining == 0
            && let Some(hasher) = self.hasher.take()
            && Digest::from(hasher.finalize()) != self.digest
        {
            tracing::error!(digest = %self.digest, "blob on disk does not hash to its digest");
            let digest = self.digest;
            return (self, Err(BlobError::Corrupt(digest)));
        }
        (self, Ok(chunk))
    }
}

impl BlobStore for FsBlobs {
    async fn put(&self, upload: Upload, mut body: BodyStream) -> Result<Written, BlobError> {
        let limit = upload.limit;
        let memory = upload.memory.clone();
        let mut idle = Some(Staged::new(self.inner.clone(), upload));
        // At most one write in flight while the next batch arrives.
        let mut in_flight: Option<tokio::task::JoinHandle<Result<Staged, BlobError>>> = None;
        let (mut batch, mut batch_len, mut lent) = (Vec::new(), 0usize, Lent::default());
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(BlobError::Client)?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(BlobError::TooLarge { limit });
            }
            lent.merge(memory.borrow(chunk.len()).await.ok_or(BlobError::Throttled)?);
            batch_len += chunk.len();
            batch.push(chunk);
            if batch_len >= WRITE_BATCH {
                let mut writer = settled(&mut idle, &mut in_flight).await?;
                let (chunks, held) = (std::mem::take(&mut batch), std::mem::take(&mut lent));
                batch_len = 0;
                in_flight = Some(tokio::task::spawn_blocking(move || {
                    writer.write(&chunks)?;
                    drop(held);
                    Ok(writer)
                }));
            }
        }
        let mut writer = settled(&mut idle, &mut in_flight).await?;
        let gate = writer.upload.gate.clone();
        let gate_now = gate.clone();
        // Sealed and linked in one blocking call when the gate decides at
        // once (a small upload is then a single call); else it is waited on.
        let sealed = joined(tokio::task::spawn_blocking(move || {
            writer.write(&batch)?;
            drop(lent);
            let sealed = writer.seal()?;
            let entered = match &gate_now {
                None => Ok(Entered::default()),
                Some(gate) => match gate.enter_now(sealed.digest) {
                    Some(entered) => entered,
                    None => return Ok(Err(sealed)),
                },
            }?;
            sealed.link(entered.replace).map(Ok)
        }))
        .await?;
        match sealed {
            Ok(written) => Ok(written),
            Err(sealed) => {
                let entered = super::enter(gate.as_ref(), sealed.digest).await?;
                joined(tokio::task::spawn_blocking(move || sealed.link(entered.replace))).await
            }
        }
    }

    async fn read(&self, digest: Digest, size: u64, range: Option<Range<u64>>) -> Result<ByteStream, BlobError> {
        let path = self.inner.blob_path(&digest);
        let (start, len, verify) = match range {
            Some(r) => (r.start, r.end - r.start, false),
            None => (0, size, true),
        };
        let buffers = self.inner.read_buffers.clone();
        let opened = tokio::task::spawn_blocking(move || -> Result<Reader, BlobError> {
            let mut file = match File::open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    tracing::error!(%digest, "blob is linked in metadata but missing from storage");
                    return Err(BlobError::Missing(digest));
                }
                Err(e) => return Err(e.into()),
            };
            if file.metadata()?.len() != size {
                tracing::error!(%digest, "blob on disk has the wrong size");
                return Err(BlobError::Corrupt(digest));
            }
            file.seek(SeekFrom::Start(start))?;
            Ok(Reader { file, digest, remaining: len, hasher: verify.then(blake3::Hasher::new), buffers })
        });
        let reader = joined(opened).await?;
        if reader.remaining == 0 {
            return Ok(Box::pin(futures_util::stream::empty()));
        }
        // A task reads chunk after chunk on the blocking pool, up to
        // READ_AHEAD ahead of the response: reading and hashing go on while
        // earlier chunks are sent. A client that stops reading fills the
        // channel and the task waits, holding no thread; one that leaves
        // drops the receiver and the task ends at its next chunk.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, BlobError>>(READ_AHEAD);
        tokio::spawn(async move {
            let mut reader = reader;
            loop {
                let (back, item) = match tokio::task::spawn_blocking(move || reader.next_chunk()).await {
                    Ok(step) => step,
                    Err(e) => {
                        let _ = tx.send(Err(BlobError::Io(io::Error::other(e)))).await;
                        return;
                    }
                };
                let more = item.is_ok() && back.remaining > 0;
                if tx.send(item).await.is_err() || !more {
                    return;
                }
                reader = back;
            }
        });
        Ok(Box::pin(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })))
    }

    async fn delete(&self, digest: &Digest) -> Result<(), BlobError> {
        let path = self.inner.blob_path(digest);
        joined(tokio::task::spawn_blocking(move || {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e.into()),
            }
            sync_dir(path.parent().expect("blob paths have a shard directory"))?;
            Ok(())
        }))
        .await
    }

    async fn delete_many(&self, digests: &[Digest]) -> Result<(), BlobError> {
        let paths: Vec<PathBuf> = digests.iter().map(|d| self.inner.blob_path(d)).collect();
        joined(tokio::task::spawn_blocking(move || {
            let mut shards = std::collections::BTreeSet::new();
            for path in paths {
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e.into()),
                }
                shards.insert(path.parent().expect("blob paths have a shard directory").to_path_buf());
            }
            for shard in shards {
                sync_dir(&shard)?;
            }
            Ok(())
        }))
        .await
    }

    async fn list(&self, after: Option<Digest>, limit: usize) -> Result<Vec<Object>, BlobError> {
        let data = self.inner.data.clone();
        joined(tokio::task::spawn_blocking(move || {
            let after_hex = after.map(|d| d.hex());
            let first_shard = after_hex.as_ref().map_or(0, |h| u8::from_str_radix(&h[..2], 16).unwrap_or(0));
            let mut found = Vec::new();
            for shard in first_shard..=255u8 {
                let mut names = Vec::new();
                for entry in fs::read_dir(data.join(format!("{shard:02x}")))? {
                    let entry = entry?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    // Anything that is not a blob's name is not Amber's to list.
                    let Ok(digest) = format!("blake3:{name}").parse::<Digest>() else { continue };
                    if after_hex.as_ref().is_none_or(|a| name.as_str() > a.as_str()) {
                        let metadata = entry.metadata()?;
                        let modified = metadata.modified().ok().map(time::OffsetDateTime::from);
                        names.push((digest, metadata.len(), modified));
                    }
                }
                names.sort_by_key(|(d, _, _)| d.hex());
                for (digest, size, modified) in names {
                    found.push(Object { digest, size, modified });
                    if found.len() == limit {
                        return Ok(found);
                    }
                }
            }
            Ok(found)
        }))
        .await
    }

    /// Ready when staging is there and the volume keeps the upload reserve.
    async fn check(&self) -> Result<(), BlobError> {
        let dirs = self.inner.clone();
        joined(tokio::task::spawn_blocking(move || {
            fs::metadata(&dirs.staging)?;
            dirs.space.check(Purpose::Upload).map_err(|_| BlobError::NoSpace)
        }))
        .await
    }
}
