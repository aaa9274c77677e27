//! Upload admission: how many uploads run at once, in all and per token, and
//! how many bytes of upload bodies the server holds in memory. An upload past
//! a count is refused with `429` and `Retry-After` before any of its body is
//! read; one that cannot get memory for its next bytes within
//! [`MEMORY_WAIT`] is ended the same way, so a burst waits briefly and a
//! stalled crowd cannot starve the rest.
//!
//! The slots are shared fairly under pressure: a token already holding `k`
//! uploads starts another only while more than `min(k * slots/64, slots/8)`
//! slots stay free (4 per upload held, at most 32, of the default 256). A
//! token's first upload needs only a free slot. So tokens that stall uploads
//! leave an eighth of the slots free for the others however many uploads
//! each starts, a token holding few uploads still gets more, and one token
//! alone (with `--max-uploads-per-token` raised) may use seven eighths. Only
//! many distinct tokens, each stalling its first upload, can take that eighth.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Limits;

/// Longest an upload waits for memory for its next bytes.
pub const MEMORY_WAIT: Duration = Duration::from_secs(10);

pub struct Admission {
    uploads: Arc<Semaphore>,
    per_token: Arc<Mutex<HashMap<String, usize>>>,
    max_per_token: usize,
    /// Free slots a token must leave per upload it already holds...
    headroom: usize,
    /// ...up to this many: a token never has to leave more free.
    reserve: usize,
    pub memory: MemoryBudget,
}

/// Why an upload was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    TooManyUploads,
    TooManyForToken,
    /// The token holds its share of the few slots still free.
    Share,
}

impl Admission {
    pub fn new(limits: &Limits) -> Self {
        Self {
            uploads: Arc::new(Semaphore::new(limits.max_uploads)),
            per_token: Arc::default(),
            max_per_token: limits.max_uploads_per_token,
            headroom: limits.max_uploads / 64,
            reserve: limits.max_uploads / 8,
            memory: MemoryBudget::new(limits.upload_memory as usize),
        }
    }

    /// A slot for one upload by `token`, held until the upload ends.
    pub fn admit(&self, token: &str) -> Result<UploadSlot, Refusal> {
        let mut per_token = self.per_token.lock().unwrap_or_else(PoisonError::into_inner);
        let count = per_token.entry(token.to_owned()).or_default();
        if *count >= self.max_per_token {
            return Err(Refusal::TooManyForToken);
        }
        if *count > 0 && self.uploads.available_permits() <= (*count * self.headroom).min(self.reserve) {
            return Err(Refusal::Share);
        }
        let permit = self.uploads.clone().try_acquire_owned().map_err(|_| Refusal::TooManyUploads)?;
        *count += 1;
        Ok(UploadSlot { _permit: permit, token: token.to_owned(), per_token: self.per_token.clone() })
    }
}

/// One admitted upload; dropping it frees the slot.
pub struct UploadSlot {
    _permit: OwnedSemaphorePermit,
    token: String,
    per_token: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        let mut per_token = self.per_token.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = per_token.get_mut(&self.token) {
            *count -= 1;
            if *count == 0 {
                per_token.remove(&self.token);
            }
        }
    }
}

/// Bytes of upload bodies held in memory, by every upload together.
#[derive(Clone)]
pub struct MemoryBudget {
    bytes: Arc<Semaphore>,
    total: usize,
}

/// Memory the budget has lent; returned when dropped.
#[derive(Default)]
pub struct Lent(Option<OwnedSemaphorePermit>);

impl Lent {
    pub fn merge(&mut self, other: Lent) {
        match (&mut self.0, other.0) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (mine @ None, theirs) => *mine = theirs,
            (_, None) => {}
        }
    }
}

impl MemoryBudget {
    pub fn new(total: usize) -> Self {
        Self { bytes: Arc::new(Semaphore::new(total)), total }
    }

    /// Borrows `bytes`, waiting at most [`MEMORY_WAIT`]; `None` when the
    /// budget stays exhausted.
    pub async fn borrow(&self, bytes: usize) -> Option<Lent> {
        if bytes == 0 {
            return Some(Lent::default());
        }
        // A request larger than the whole budget could never be served.
        let bytes = bytes.min(self.total) as u32;
        if let Ok(permit) = self.bytes.clone().try_acquire_many_owned(bytes) {
            return Some(Lent(Some(permit)));
        }
        let waited = tokio::time::timeout(MEMORY_WAIT, self.bytes.clone().acquire_many_owned(bytes)).await;
        waited.ok()?.ok().map(|permit| Lent(Some(permit)))
    }

    /// Bytes lent out now.
    pub fn in_use(&self) -> usize {
        self.total - self.bytes.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_uploads: usize, max_uploads_per_token: usize) -> Limits {
        let mut limits = crate::config::Config::resolve(Default::default()).unwrap().limits;
        limits.max_uploads = max_uploads;
        limits.max_uploads_per_token = max_uploads_per_token;
        limits
    }

    #[test]
    fn slots_are_bounded_in_all_and_per_token() {
        let admission = Admission::new(&limits(3, 2));
        let a1 = admission.admit("a").unwrap();
        let _a2 = admission.admit("a").unwrap();
        assert_eq!(admission.admit("a").err(), Some(Refusal::TooManyForToken));
        let _b1 = admission.admit("b").unwrap();
        assert_eq!(admission.admit("c").err(), Some(Refusal::TooManyUploads));
        drop(a1);
        assert!(admission.admit("c").is_ok());
        assert!(admission.per_token.lock().unwrap().get("c").is_none(), "a finished token is forgotten");
    }

    #[test]
    fn tokens_holding_more_leave_more_free() {
        let admission = Admission::new(&limits(256, 32));
        // Twenty tokens start uploads that never end, 25 each (500 in all).
        let mut held = Vec::new();
        for _ in 0..25 {
            for t in 0..20 {
                if let Ok(slot) = admission.admit(&format!("stall{t}")) {
                    held.push(slot);
                }
            }
        }
        let free = 256 - held.len();
        assert!(free >= 32, "{free} slots left free by 20 stalling tokens");
        // Another token gets its uploads (a few at once) all the same.
        let others: Vec<_> = (0..4).map(|_| admission.admit("victim").unwrap()).collect();
        assert_eq!(others.len(), 4);
        assert_eq!(admission.admit("stall0").err(), Some(Refusal::Share));
    }

    #[tokio::test]
    async fn memory_is_lent_and_returned() {
        let budget = MemoryBudget::new(100);
        let mut lent = budget.borrow(60).await.unwrap();
        lent.merge(budget.borrow(40).await.unwrap());
        assert_eq!(budget.in_use(), 100);
        tokio::time::pause();
        assert!(budget.borrow(1).await.is_none(), "an exhausted budget refuses after the wait");
        drop(lent);
        assert_eq!(budget.in_use(), 0);
    }
}
