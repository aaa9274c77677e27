//! Upload bytes in a directory beside the blobs, on the same file system:
//! ```text
//! DIR/uploads/u-<id>           an upload's bytes, each at its offset
//! DIR/uploads/a-<key>          one blob's bytes, each part at its place in
//!                              the blob, for the parts with a chaining-value
//!                              plan that one token uploads (key: a hash of
//!                              the token, the digest and the part size)
//! DIR/uploads/a-<key>.<index>  part <index>'s claim on it: the id of the
//!                              upload that holds that place
//! ```
//! A final upload whose parts all hold their claims is linked as the blob
//! itself: no byte is copied, none hashed again. A part whose place another
//! upload holds (the same token sending the same blob twice at once) keeps
//! its bytes in a file of its own, and its final is built by streaming the
//! parts into the blob store. Every append is `fdatasync`ed before its
//! offset is recorded. A file with more than one link is a blob and is
//! never written again: one left behind by a crash between linking it and
//! removing its upload name is unlinked at start.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use amber_core::Digest;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use super::{Appended, Check, UploadBytes, concatenated, stored_side};
use crate::admission::{Lent, MemoryBudget};
use crate::blobs::{
    BlobError, BlobStore, BodyStream, ByteStream, FsBlobs, PREALLOCATE_STEP, Upload, Written, joined, preallocate,
};
use crate::meta::{Segment, UploadId, UploadRecord};

/// Bytes gathered before each blocking write (larger than a `PUT`'s: the
/// parts of one upload take turns writing into one file).
const WRITE_BATCH: usize = 1024 * 1024;
/// Read chunk (re-hashing after a restart, and finals built by streaming).
const READ_CHUNK: usize = 512 * 1024;
/// The free space is checked again after each this much written.
const SPACE_CHECK_EVERY: u64 = 32 << 20;
/// Files no live upload owns are removed once this old (a younger one may
/// belong to an upload being created).
const ORPHAN_AGE: Duration = Duration::from_secs(60 * 60);

#[derive(Clone)]
pub struct FsUploads {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    blobs: FsBlobs,
    /// Held while claims are made or given up, so that an assembly file is
    /// never removed as a part claims a place in it.
    claims: Mutex<()>,
    /// A lock per shared file, taken around each write to it: parts written
    /// at once into one file otherwise spin on its inode lock in the kernel
    /// (a tenth of the CPU of a 4-part upload, measured); waiting here sleeps.
    writers: Mutex<HashMap<PathBuf, Weak<Mutex<()>>>>,
}

/// Where an upload's bytes are: a file, and the offset of its first byte.
struct Place {
    path: PathBuf,
    base: u64,
    /// The claim file, when the place is in a shared blob file.
    claim: Option<PathBuf>,
}

fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

fn is_blob(file: &File) -> io::Result<bool> {
    Ok(file.metadata()?.nlink() > 1)
}

fn already_a_blob() -> BlobError {
    BlobError::Io(io::Error::other("the upload's file is a blob already"))
}

impl FsUploads {
    pub async fn open(blobs: FsBlobs) -> anyhow::Result<Self> {
        let dir = blobs.root().join("uploads");
        let opened = tokio::task::spawn_blocking(move || -> anyhow::Result<Self> {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
            for entry in fs::read_dir(&dir)? {
                let entry = entry?;
                if entry.metadata()?.nlink() > 1 {
                    fs::remove_file(entry.path())?;
                    tracing::info!(path = %entry.path().display(), "removed the upload name of a finished blob");
                }
            }
            sync_dir(&dir)?;
            let inner = Inner { dir, blobs, claims: Mutex::new(()), writers: Mutex::default() };
            Ok(Self { inner: Arc::new(inner) })
        });
        opened.await?
    }
}

impl Inner {
    fn own(&self, id: &UploadId) -> PathBuf {
        self.dir.join(format!("u-{id}"))
    }

    /// The shared file of the blob a token uploads in parts of `part_size`.
    fn assembly(&self, record: &UploadRecord, digest: &Digest, part_size: u64) -> PathBuf {
        let mut key = blake3::Hasher::new();
        key.update(record.token.as_str().as_bytes());
        key.update(digest.as_bytes());
        key.update(&part_size.to_be_bytes());
        self.dir.join(format!("a-{}", &key.finalize().to_hex()[..32]))
    }

    fn claim_path(assembly: &Path, index: u64) -> PathBuf {
        let mut name = assembly.as_os_str().to_owned();
        name.push(format!(".{index}"));
        PathBuf::from(name)
    }

    /// Where `record`'s bytes are; `may_claim` at offset zero, a part with a
    /// plan claims its place in the blob's shared file if no other upload
    /// holds it.
    fn place(&self, record: &UploadRecord, may_claim: bool) -> io::Result<Place> {
        let own = Place { path: self.own(&record.id), base: 0, claim: None };
        let Some(slot) = record.slot() else { return Ok(own) };
        let assembly = self.assembly(record, &slot.digest, slot.part_size);
        let claim = Self::claim_path(&assembly, slot.index);
        let shared = Place { path: assembly.clone(), base: slot.offset(), claim: Some(claim.clone()) };
        match fs::read_to_string(&claim) {
            Ok(owner) if owner == record.id.as_str() => return Ok(shared),
            Ok(_) => return Ok(own),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if !may_claim || record.offset > 0 {
            return Ok(own);
        }
        let _claims = self.claims.lock().unwrap_or_else(PoisonError::into_inner);
        // A shared file that is a blob already belongs to a finished upload.
        if fs::metadata(&assembly).is_ok_and(|m| m.nlink() > 1) {
            fs::remove_file(&assembly)?;
        }
        match OpenOptions::new().write(true).create_new(true).mode(0o600).open(&claim) {
            Ok(mut file) => {
                io::Write::write_all(&mut file, record.id.as_str().as_bytes())?;
                file.sync_all()?;
                sync_dir(&self.dir)?;
                Ok(shared)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(own),
            Err(e) => Err(e),
        }
    }

    /// The write lock of a shared file.
    fn writer_lock(&self, path: &Path) -> Arc<Mutex<()>> {
        let mut writers = self.writers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(lock) = writers.get(path).and_then(Weak::upgrade) {
            return lock;
        }
        if writers.len() >= 1024 {
            writers.retain(|_, lock| lock.strong_count() > 0);
        }
        let lock = Arc::new(Mutex::new(()));
        writers.insert(path.to_owned(), Arc::downgrade(&lock));
        lock
    }

    /// Opens `place` for writing; only at offset zero may it be created.
    fn open_for_append(place: &Place, offset: u64) -> Result<File, BlobError> {
        let mut options = OpenOptions::new();
        options.write(true).mode(0o600);
        if offset == 0 || place.claim.is_some() {
            options.create(true);
        }
        let file = options.open(&place.path)?;
        if is_blob(&file)? {
            return Err(already_a_blob());
        }
        Ok(file)
    }
}

/// An append's file and hash between blocking writes.
struct Writing {
    file: File,
    at: u64,
    check: Option<Check>,
    /// Blocks are reserved up to here, a step ahead of the data (as a
    /// `PUT`'s are: ext4 then skips its per-page allocation work), never
    /// past `end`, the end of the upload's bytes in the file.
    allocated: u64,
    end: u64,
    /// Taken around each write, when the file is shared.
    lock: Option<Arc<Mutex<()>>>,
}

impl Writing {
    fn write(&mut self, chunks: &[Bytes]) -> io::Result<()> {
        let incoming: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        if self.at + incoming > self.allocated && self.allocated < self.end {
            let step = PREALLOCATE_STEP.max(incoming).min(self.end - self.allocated);
            preallocate(&self.file, self.allocated, step)?;
            self.allocated += step;
        }
        let writing = self.lock.as_ref().map(|lock| lock.lock().unwrap_or_else(PoisonError::into_inner));
        let written = chunks.iter().try_for_each(|chunk| {
            self.file.write_all_at(chunk, self.at)?;
            self.at += chunk.len() as u64;
            Ok::<_, io::Error>(())
        });
        drop(writing);
        if let Err(e) = written {
            // Some of the batch reached the file, unhashed: the next PATCH
            // hashes what is stored instead of trusting this state.
            self.check = None;
            return Err(e);
        }
        if let Some(check) = self.check.as_mut() {
            for chunk in chunks {
                check.update(chunk);
            }
        }
        Ok(())
    }
}

impl UploadBytes for FsUploads {
    async fn append(
        &self,
        record: &UploadRecord,
        mut body: BodyStream,
        check: Option<Check>,
        memory: MemoryBudget,
    ) -> Appended {
        let inner = self.inner.clone();
        let (opening, offset) = (record.clone(), record.offset);
        let opened = joined(tokio::task::spawn_blocking(move || {
            inner.blobs.check_space()?;
            let place = inner.place(&opening, true)?;
            let file = Inner::open_for_append(&place, opening.offset)?;
            let lock = place.claim.is_some().then(|| inner.writer_lock(&place.path));
            Ok((file, place.base, lock))
        }))
        .await;
        let (file, base, lock) = match opened {
            Ok(opened) => opened,
            Err(e) => return Appended::failed(e, check),
        };
        let remaining = record.length - offset;
        let (at, end) = (base + offset, base + record.length);
        let mut idle = Some(Writing { file, at, check, allocated: at, end, lock });
        // One write in flight while the next batch arrives.
        let mut in_flight: Option<tokio::task::JoinHandle<(Writing, Result<(), BlobError>)>> = None;
        let (mut batch, mut batch_len, mut lent) = (Vec::new(), 0usize, Lent::default());
        let (mut received, mut next_space_check) = (0u64, SPACE_CHECK_EVERY);
        let mut error = None;
        let blobs = self.inner.blobs.clone();
        loop {
            let chunk = match body.next().await {
                None => break,
                Some(Err(e)) => {
                    error = Some(BlobError::Client(e));
                    break;
                }
                Some(Ok(chunk)) => chunk,
            };
            if received + chunk.len() as u64 > remaining {
                error = Some(BlobError::TooLarge { limit: record.length });
                break;
            }
            match memory.borrow(chunk.len()).await {
                Some(more) => lent.merge(more),
                None => {
                    error = Some(BlobError::Throttled);
                    break;
                }
            }
            received += chunk.len() as u64;
            batch_len += chunk.len();
            batch.push(chunk);
            if batch_len >= WRITE_BATCH {
                if let Err(e) = settle(&mut idle, &mut in_flight).await {
                    error = Some(e);
                    break;
                }
                let mut writer = idle.take().expect("settled");
                let (chunks, held) = (std::mem::take(&mut batch), std::mem::take(&mut lent));
                batch_len = 0;
                let check_space = received >= next_space_check;
                if check_space {
                    next_space_check = received + SPACE_CHECK_EVERY;
                }
                let blobs = blobs.clone();
                in_flight = Some(tokio::task::spawn_blocking(move || {
                    if check_space && let Err(e) = blobs.check_space() {
                        return (writer, Err(e));
                    }
                    let wrote = writer.write(&chunks).map_err(BlobError::from);
                    drop(held);
                    (writer, wrote)
                }));
            }
        }
        if let Err(e) = settle(&mut idle, &mut in_flight).await {
            error = error.or(Some(e));
            batch.clear(); // not after bytes that failed to be written
        }
        let Some(mut writer) = idle.take() else { return Appended::failed(error.expect("a lost writer failed"), None) };
        // Whatever arrived is made durable, even when the body broke off:
        // the client resumes after the last byte stored.
        let start = base + offset;
        let synced = joined(tokio::task::spawn_blocking(move || {
            // Bytes that arrived before the body broke off are kept too.
            let wrote = writer.write(&batch).map_err(BlobError::from);
            drop(lent);
            match writer.file.sync_data() {
                Ok(()) => Ok((writer, error.or(wrote.err()))),
                // Not durable, so not stored: nothing of this PATCH counts.
                Err(e) => Err(BlobError::from(e)),
            }
        }))
        .await;
        match synced {
            Ok((writer, error)) => {
                let written = writer.at - start;
                Appended { written, check: writer.check, segment: None, error }
            }
            Err(e) => Appended::failed(e, None),
        }
    }

    async fn read(&self, record: &UploadRecord, range: Range<u64>) -> Result<ByteStream, BlobError> {
        if range.is_empty() {
            return Ok(Box::pin(futures_util::stream::empty()));
        }
        let inner = self.inner.clone();
        let record = record.clone();
        let opened = joined(tokio::task::spawn_blocking(move || {
            let place = inner.place(&record, false)?;
            let file = File::open(&place.path)?;
            Ok((Arc::new(file), place.base))
        }))
        .await?;
        let (file, base) = opened;
        let state = (file, base + range.start, base + range.end);
        Ok(Box::pin(futures_util::stream::try_unfold(state, |(file, at, end)| async move {
            if at >= end {
                return Ok(None);
            }
            let reading = file.clone();
            let want = (end - at).min(READ_CHUNK as u64) as usize;
            let chunk = joined(tokio::task::spawn_blocking(move || {
                let mut buffer = BytesMut::zeroed(want);
                reading.read_exact_at(&mut buffer, at)?;
                Ok(buffer.freeze())
            }))
            .await?;
            Ok(Some((chunk, (file, at + want as u64, end))))
        })))
    }

    async fn finish(&self, parts: &[UploadRecord], upload: Upload, verified: bool) -> Result<Written, BlobError> {
        let inner = self.inner.clone();
        let total: u64 = parts.iter().map(|p| p.length).sum();
        let whole = if total == 0 {
            None // nothing was ever written: the empty blob is put like any other
        } else {
            let (inner, parts) = (inner.clone(), parts.to_vec());
            joined(tokio::task::spawn_blocking(move || one_file(&inner, &parts))).await?
        };
        let Some(whole) = whole else {
            let body = concatenated(self.clone(), parts.to_vec());
            return inner.blobs.put(upload, body).await.map_err(stored_side);
        };
        let expected = upload.expected;
        let path = whole.path.clone();
        let digest = joined(tokio::task::spawn_blocking(move || {
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            // A file that is a blob already was linked by an earlier try
            // whose answer was lost: it is only linked again.
            let linked = is_blob(&file)?;
            if !linked {
                file.set_len(total)?;
            }
            let digest = match expected.filter(|_| verified) {
                Some(digest) => digest,
                None => hash_file(&file, total)?,
            };
            if let Some(expected) = expected.filter(|e| *e != digest) {
                return Err(BlobError::Mismatch { expected, actual: digest });
            }
            if !linked {
                file.sync_data()?;
            }
            Ok(digest)
        }))
        .await?;
        let entered = crate::blobs::enter(upload.gate.as_ref(), digest).await?;
        // The upload's names stay until its record says it is done (then
        // `discard` removes them): until then the file is a blob, never written.
        joined(tokio::task::spawn_blocking(move || inner.blobs.adopt(&whole.path, &digest, total, entered.replace)))
            .await
    }

    async fn discard(&self, record: &UploadRecord) -> Result<(), BlobError> {
        let inner = self.inner.clone();
        let record = record.clone();
        joined(tokio::task::spawn_blocking(move || {
            remove_if_there(&inner.own(&record.id))?;
            if let Some(slot) = record.slot() {
                let assembly = inner.assembly(&record, &slot.digest, slot.part_size);
                let claim = Inner::claim_path(&assembly, slot.index);
                let _claims = inner.claims.lock().unwrap_or_else(PoisonError::into_inner);
                if fs::read_to_string(&claim).is_ok_and(|owner| owner == record.id.as_str()) {
                    fs::remove_file(&claim)?;
                    if !has_claims(&inner.dir, &assembly)? {
                        remove_if_there(&assembly)?;
                    }
                }
            }
            Ok(())
        }))
        .await
    }

    async fn discard_segment(&self, _segment: &Segment) -> Result<(), BlobError> {
        Ok(())
    }

    async fn sweep(&self, live: &HashSet<UploadId>) -> Result<u64, BlobError> {
        let (inner, live) = (self.inner.clone(), live.clone());
        joined(tokio::task::spawn_blocking(move || {
            let cutoff = SystemTime::now() - ORPHAN_AGE;
            let _claims = inner.claims.lock().unwrap_or_else(PoisonError::into_inner);
            let mut removed = 0;
            let mut assemblies = Vec::new();
            for entry in fs::read_dir(&inner.dir)? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if entry.metadata()?.modified()? > cutoff {
                    continue;
                }
                let owner = if let Some(id) = name.strip_prefix("u-") {
                    Some(id.to_owned())
                } else if name.starts_with("a-") && name.contains('.') {
                    fs::read_to_string(entry.path()).ok()
                } else {
                    if name.starts_with("a-") {
                        assemblies.push(entry.path());
                    }
                    continue;
                };
                if owner.and_then(|id| id.parse::<UploadId>().ok()).is_none_or(|id| !live.contains(&id)) {
                    fs::remove_file(entry.path())?;
                    removed += 1;
                }
            }
            for assembly in assemblies {
                if !has_claims(&inner.dir, &assembly)? {
                    remove_if_there(&assembly)?;
                    removed += 1;
                }
            }
            Ok(removed)
        }))
        .await
    }
}

/// Waits for the write in flight, if any; the writer is then idle again
/// (unless its task was lost, which fails the append).
async fn settle(
    idle: &mut Option<Writing>,
    in_flight: &mut Option<tokio::task::JoinHandle<(Writing, Result<(), BlobError>)>>,
) -> Result<(), BlobError> {
    let Some(write) = in_flight.take() else { return Ok(()) };
    let (writer, wrote) = write.await.map_err(|e| BlobError::Io(io::Error::other(e)))?;
    *idle = Some(writer);
    wrote
}

/// The one file that holds exactly the blob of `parts`, if there is one: a
/// single upload's, or the shared file whose every place a part of this
/// final holds.
struct OneFile {
    path: PathBuf,
}

fn one_file(inner: &Inner, parts: &[UploadRecord]) -> Result<Option<OneFile>, BlobError> {
    if let [single] = parts
        && single.slot().is_none()
        && !single.is_partial()
    {
        return Ok(Some(OneFile { path: inner.own(&single.id) }));
    }
    let mut shared: Option<PathBuf> = None;
    for (index, part) in parts.iter().enumerate() {
        if part.slot().is_none_or(|s| s.index != index as u64 || s.parts != parts.len() as u64) {
            return Ok(None);
        }
        let place = inner.place(part, false)?;
        if place.claim.is_none() || shared.as_ref().is_some_and(|s| *s != place.path) {
            return Ok(None);
        }
        shared = Some(place.path);
    }
    Ok(shared.map(|path| OneFile { path }))
}

fn hash_file(file: &File, length: u64) -> Result<Digest, BlobError> {
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; READ_CHUNK];
    let mut at = 0u64;
    while at < length {
        let want = (length - at).min(READ_CHUNK as u64) as usize;
        file.read_exact_at(&mut buffer[..want], at)?;
        hasher.update(&buffer[..want]);
        at += want as u64;
    }
    Ok(Digest::from(hasher.finalize()))
}

fn remove_if_there(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Whether any part still claims a place in `assembly`.
fn has_claims(dir: &Path, assembly: &Path) -> io::Result<bool> {
    let prefix = format!("{}.", assembly.file_name().expect("assembly files have names").to_string_lossy());
    for entry in fs::read_dir(dir)? {
        if entry?.file_name().to_string_lossy().starts_with(&prefix) {
            return Ok(true);
        }
    }
    Ok(false)
}
