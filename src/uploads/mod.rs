//! Resumable, parallel uploads: tus 1.0.0 under
//! `/v1/repos/{owner}/{name}/uploads` (`design/uploads.md`).
//!
//! An upload is bound to the token that created it (any other gets `404`,
//! as for a missing one). Its offset is recorded, by compare-and-set in the
//! metadata store, only after the bytes below it are durable in the upload
//! store (`store`: a directory beside the blobs, or S3 objects), so an
//! acknowledged offset survives a crash and never decreases. A `PATCH` is
//! hashed as it is stored: a blob of its own by its digest; a part with a
//! chaining-value plan (`amber_core::parts`) by its value, and refused on
//! its last byte if it does not match (none of that `PATCH` is kept). The
//! parts with a plan name the blob's `digest`, `part_size`, every part's
//! value (`cvs`) and their own index (`part`) in their metadata, since a
//! part's value depends on where it lies in the blob; the plan is checked
//! when the part is created, before any data. A part without a plan is
//! hashed with the whole blob when its final upload completes. Completion
//! goes through `crate::push`, the path of a `PUT`.
//!
//! The hash state of an upload between `PATCH`es is kept in memory on the
//! replica that stored them; a `PATCH` that finds none (another replica, a
//! restart) first hashes the bytes stored so far again.
//!
//! Here: the wire format (`tus`), where bytes wait (`store`), and what this
//! replica keeps between requests (`Uploads`); the flow that takes a request
//! to a blob is `crate::push::resumable`.

pub mod store;
pub mod tus;

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

use self::store::{Check, UploadStore};
use crate::error::{ApiError, ApiResult};
use crate::meta::UploadId;

/// Uploads one token may hold at once (unfinished, or finished and not yet
/// forgotten); past it, `429`.
pub const MAX_PER_TOKEN: usize = 1000;
/// Hash states kept between `PATCH`es (about 2 KiB each).
const KEPT_HASHES: usize = 1024;
/// How long a request waits for another on the same upload to end.
const BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
const BUSY_POLL: std::time::Duration = std::time::Duration::from_millis(10);
/// Chaining values one part's metadata may carry (32 bytes each).
pub const MAX_PLAN_PARTS: usize = 1024;

/// The uploads of this replica: their bytes, and what it keeps between
/// requests (only ever as a shortcut: every record is in the metadata store).
pub struct Uploads {
    pub store: UploadStore,
    /// Uploads with a `PATCH` in progress here: a second one waits its turn.
    busy: Mutex<HashSet<UploadId>>,
    /// Hash state after the last `PATCH`, by upload, with its offset.
    hashes: Mutex<HashMap<UploadId, (u64, Check)>>,
}

/// Held while a `PATCH` runs; frees the upload for the next.
pub struct Busy<'a> {
    uploads: &'a Uploads,
    id: UploadId,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.uploads.busy.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.id);
    }
}

impl Uploads {
    /// Whether a request on `id` is under way on this replica.
    pub fn is_busy(&self, id: &UploadId) -> bool {
        self.busy.lock().unwrap_or_else(PoisonError::into_inner).contains(id)
    }

    pub fn new(store: UploadStore) -> Self {
        Self { store, busy: Mutex::default(), hashes: Mutex::default() }
    }

    /// Holds the upload for one request; waits (a while) for one in progress
    /// here to end: a client that resumes after a broken connection often
    /// comes back before the server has finished storing what arrived.
    pub async fn claim(&self, id: &UploadId) -> ApiResult<Busy<'_>> {
        let deadline = tokio::time::Instant::now() + BUSY_WAIT;
        loop {
            if self.busy.lock().unwrap_or_else(PoisonError::into_inner).insert(id.clone()) {
                return Ok(Busy { uploads: self, id: id.clone() });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ApiError::UploadBusy);
            }
            tokio::time::sleep(BUSY_POLL).await;
        }
    }

    /// Waits (a while) for a `PATCH` of `id` in progress here to end, so that
    /// a `HEAD` reports what it stored.
    pub async fn settled(&self, id: &UploadId) {
        let deadline = tokio::time::Instant::now() + BUSY_WAIT;
        while tokio::time::Instant::now() < deadline
            && self.busy.lock().unwrap_or_else(PoisonError::into_inner).contains(id)
        {
            tokio::time::sleep(BUSY_POLL).await;
        }
    }

    pub fn take_hash(&self, id: &UploadId, offset: u64) -> Option<Check> {
        let mut hashes = self.hashes.lock().unwrap_or_else(PoisonError::into_inner);
        match hashes.remove(id) {
            Some((at, check)) if at == offset => Some(check),
            _ => None,
        }
    }

    pub fn keep_hash(&self, id: &UploadId, offset: u64, check: Check) {
        let mut hashes = self.hashes.lock().unwrap_or_else(PoisonError::into_inner);
        if hashes.len() >= KEPT_HASHES
            && let Some(evicted) = hashes.keys().next().cloned()
        {
            hashes.remove(&evicted);
        }
        hashes.insert(id.clone(), (offset, check));
    }

    pub fn forget_hash(&self, id: &UploadId) {
        self.hashes.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
    }
}
