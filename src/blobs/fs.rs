//! Blobs in a local directory.
//!
//! Layout (version in `VERSION`):
//! ```text
//! DIR/VERSION            "1"
//! DIR/data/ab/<hex>      a blob, named by the 64 hex digits of its digest
//! DIR/staging/<random>   uploads in flight; emptied at start
//! ```
//! An upload is written and hashed on a blocking thread, `fdatasync`ed, then
//! hard-linked to its final name (a link never replaces an existing file, so a
//! racing upload of the same bytes simply finds it there) and the shard
//! directory is fsynced before the upload is acknowledged.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use amber_core::Digest;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::pool::BufferPool;
use super::{BlobError, BlobStore, BodyStream, ByteStream, Stored, Upload, Written};

const LAYOUT_VERSION: &str = "1";
/// Read chunk: large enough for BLAKE3's SIMD paths and few syscalls, small
/// enough that a download holds at most a few MiB.
const READ_CHUNK: usize = 512 * 1024;
/// Small chunks (a slow client, a finely chunked body) are gathered into
/// writes this large; the ~400 KiB reads hyper hands over on a fast connection
/// are larger, so `BufWriter` writes them straight through without a copy.
const WRITE_BUFFER: usize = 256 * 1024;
/// Uploads announced at least this large get their blocks allocated up front:
/// ext4 then skips its per-page delayed-allocation bookkeeping, which cut the
/// kernel's share of a 1 GiB write by a fifth here.
const PREALLOCATE_FROM: u64 = 1024 * 1024;
/// Chunks in flight between the async side and the blocking writer or reader.
const CHANNEL_DEPTH: usize = 8;
/// Idle read buffers kept for reuse (at most 8 MiB).
const IDLE_READ_BUFFERS: usize = 16;

pub struct FsBlobs {
    inner: Arc<Dirs>,
}

struct Dirs {
    data: PathBuf,
    staging: PathBuf,
    read_buffers: BufferPool,
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
    pub async fn open(root: PathBuf) -> anyhow::Result<Self> {
        tokio::task::spawn_blocking(move || Self::open_blocking(&root)).await?
    }

    fn open_blocking(root: &Path) -> anyhow::Result<Self> {
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
        Ok(Self { inner: Arc::new(Dirs { data, staging, read_buffers }) })
    }
}

enum Chunk {
    Data(Bytes),
    /// The body ended normally; without it the writer discards the upload.
    End,
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

/// Hashes the upload and, unless the blob is already stored, writes it to
/// staging and links it into place. Runs on a blocking thread.
fn write_blob(dirs: &Dirs, upload: Upload, mut rx: mpsc::Receiver<Chunk>) -> Result<Written, BlobError> {
    let expected = upload.expected;
    let already_stored = expected.is_some_and(|d| dirs.blob_path(&d).exists());
    let mut sink = if already_stored {
        None
    } else {
        let name: u128 = rand::random();
        let path = dirs.staging.join(format!("{name:032x}"));
        let file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
        let staging = StagingFile { path };
        if let Some(length) = upload.announced.filter(|&n| n >= PREALLOCATE_FROM && n <= upload.limit) {
            preallocate(&file, length)?;
        }
        Some((BufWriter::with_capacity(WRITE_BUFFER, file), staging))
    };
    let mut hasher = blake3::Hasher::new();
    let mut size = 0u64;
    loop {
        match rx.blocking_recv() {
            Some(Chunk::Data(bytes)) => {
                hasher.update(&bytes);
                size += bytes.len() as u64;
                if let Some((file, _)) = sink.as_mut() {
                    file.write_all(&bytes)?;
                }
            }
            Some(Chunk::End) => break,
            // The request was abandoned: the staging file goes with `sink`.
            None => return Err(BlobError::Client(io::Error::other("upload abandoned"))),
        }
    }
    let digest = Digest::from(hasher.finalize());
    if let Some(expected) = expected.filter(|e| *e != digest) {
        return Err(BlobError::Mismatch { expected, actual: digest });
    }
    let stored = match sink {
        None => Stored::AlreadyPresent,
        Some((file, staging)) => {
            let file = file.into_inner().map_err(|e| e.into_error())?;
            file.sync_data()?;
            let target = dirs.blob_path(&digest);
            match fs::hard_link(&staging.path, &target) {
                Ok(()) => {
                    sync_dir(target.parent().expect("blob paths have a shard directory"))?;
                    Stored::Created
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Stored::AlreadyPresent,
                Err(e) => return Err(e.into()),
            }
        }
    };
    Ok(Written { digest, size, stored })
}

/// Reserves `length` bytes of blocks without changing the file's size, so a
/// body that ends early leaves no hole of zeros behind its data. A file system
/// that cannot preallocate simply writes as it goes; one that is full says so
/// before the body is read.
fn preallocate(file: &File, length: u64) -> io::Result<()> {
    use rustix::fs::{FallocateFlags, fallocate};
    match fallocate(file, FallocateFlags::KEEP_SIZE, 0, length) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::NOSPC => Err(e.into()),
        Err(_) => Ok(()),
    }
}

/// Sends `len` bytes from `start` in chunks. A full read (`verify`) withholds
/// its last chunk until the whole blob hashed to `digest`. Runs on a blocking
/// thread.
fn read_blob(
    buffers: &BufferPool,
    mut file: File,
    digest: Digest,
    start: u64,
    len: u64,
    verify: bool,
    tx: &mpsc::Sender<Result<Bytes, BlobError>>,
) -> Result<(), BlobError> {
    file.seek(SeekFrom::Start(start))?;
    let mut remaining = len;
    let mut hasher = verify.then(blake3::Hasher::new);
    let mut held: Option<Bytes> = None;
    while remaining > 0 {
        let mut buf = buffers.take();
        let want = remaining.min(READ_CHUNK as u64) as usize;
        let n = file.read(&mut buf.space()[..want])?;
        if n == 0 {
            tracing::error!(%digest, "blob on disk is shorter than recorded");
            return Err(BlobError::Corrupt(digest));
        }
        remaining -= n as u64;
        let chunk = buf.freeze(n);
        if let Some(hasher) = hasher.as_mut() {
            hasher.update(&chunk);
        }
        if let Some(previous) = held.replace(chunk)
            && tx.blocking_send(Ok(previous)).is_err()
        {
            return Ok(()); // the client went away
        }
    }
    if let Some(hasher) = hasher
        && Digest::from(hasher.finalize()) != digest
    {
        tracing::error!(%digest, "blob on disk does not hash to its digest");
        return Err(BlobError::Corrupt(digest));
    }
    if let Some(last) = held {
        let _ = tx.blocking_send(Ok(last));
    }
    Ok(())
}

impl BlobStore for FsBlobs {
    async fn put(&self, upload: Upload, mut body: BodyStream) -> Result<Written, BlobError> {
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        let dirs = self.inner.clone();
        let limit = upload.limit;
        let writer = tokio::task::spawn_blocking(move || write_blob(&dirs, upload, rx));
        let mut size = 0u64;
        let outcome = loop {
            match body.next().await {
                Some(Ok(bytes)) => {
                    size += bytes.len() as u64;
                    if size > limit {
                        break Err(BlobError::TooLarge { limit });
                    }
                    if tx.send(Chunk::Data(bytes)).await.is_err() {
                        break Ok(()); // the writer failed; its error is reported below
                    }
                }
                Some(Err(e)) => break Err(BlobError::Client(e)),
                None => {
                    let _ = tx.send(Chunk::End).await;
                    break Ok(());
                }
            }
        };
        drop(tx);
        let written = writer.await.map_err(io::Error::other)?;
        outcome?;
        written
    }

    async fn read(&self, digest: Digest, size: u64, range: Option<Range<u64>>) -> Result<ByteStream, BlobError> {
        let path = self.inner.blob_path(&digest);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::error!(%digest, "blob is linked in metadata but missing from storage");
                return Err(BlobError::Corrupt(digest));
            }
            Err(e) => return Err(e.into()),
        };
        if file.metadata()?.len() != size {
            tracing::error!(%digest, "blob on disk has the wrong size");
            return Err(BlobError::Corrupt(digest));
        }
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        let (start, len, verify) = match range {
            Some(r) => (r.start, r.end - r.start, false),
            None => (0, size, true),
        };
        let buffers = self.inner.read_buffers.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = read_blob(&buffers, file, digest, start, len, verify, &tx) {
                let _ = tx.blocking_send(Err(e));
            }
        });
        Ok(Box::pin(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })))
    }

    async fn check(&self) -> Result<(), BlobError> {
        let staging = self.inner.staging.clone();
        tokio::task::spawn_blocking(move || fs::metadata(staging).map(drop)).await.map_err(io::Error::other)??;
        Ok(())
    }
}
