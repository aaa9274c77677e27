//! What a read found, kept until a write changes it: a hot read (a `HEAD`
//! of a linked blob) is then answered with no call into sled, so with no hop
//! to the blocking pool and back, which is most of its cost (a profile of
//! `HEAD`s put a third of the server's CPU in handing work between threads).
//!
//! Exact, not a cache that may lag: only this process opens the store (sled
//! locks it), and every write that changes or removes what a cache keeps
//! holds [`ReadCache::changing`] across it, which advances the cache's
//! generation when the write ends. A read notes the generation before it
//! reads; what it found is kept only if the generation has not moved, and
//! served only until it does, so what a read found is never served after a
//! write that changed it returned. Only found values are kept (what a prober
//! asks for and no one holds is not), and at most [`ENTRIES`] of them: a
//! full cache starts over.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// Entries kept at most per cache (a link's is about 100 bytes).
const ENTRIES: usize = 16 * 1024;

/// Values found by reads, for keys whose values change only under
/// [`ReadCache::changing`].
pub struct ReadCache<K, V> {
    generation: AtomicU64,
    inner: Mutex<Kept<K, V>>,
}

struct Kept<K, V> {
    generation: u64,
    values: HashMap<K, V>,
}

/// Held across a write that changes what a cache keeps.
pub struct Changing<'a>(&'a AtomicU64);

impl Drop for Changing<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

impl<K: Hash + Eq, V: Clone> Default for ReadCache<K, V> {
    fn default() -> Self {
        Self { generation: AtomicU64::new(0), inner: Mutex::new(Kept { generation: 0, values: HashMap::new() }) }
    }
}

impl<K: Hash + Eq, V: Clone> ReadCache<K, V> {
    /// Noted before a read whose result may be kept.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Held across a write that changes or removes a kept key: ends what
    /// was kept when it is dropped (also when the write failed or panicked).
    pub fn changing(&self) -> Changing<'_> {
        Changing(&self.generation)
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Kept<K, V>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What a read found for `key`, if kept since the last change.
    pub fn get(&self, key: &K) -> Option<V> {
        let now = self.generation();
        let mut kept = self.kept();
        if kept.generation != now {
            kept.values.clear();
            kept.generation = now;
            return None;
        }
        kept.values.get(key).cloned()
    }

    /// Keeps what a read that began in generation `read_in` found, unless a
    /// change has been made since.
    pub fn keep(&self, read_in: u64, key: K, value: V) {
        let mut kept = self.kept();
        if self.generation() != read_in {
            return;
        }
        if kept.generation != read_in {
            kept.values.clear();
            kept.generation = read_in;
        }
        if kept.values.len() >= ENTRIES {
            kept.values.clear();
        }
        kept.values.insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_ends_what_was_kept() {
        let cache = ReadCache::<u8, u8>::default();
        cache.keep(cache.generation(), 1, 10);
        assert_eq!(cache.get(&1), Some(10));
        drop(cache.changing());
        assert_eq!(cache.get(&1), None);
    }

    #[test]
    fn a_read_that_raced_a_change_is_not_kept() {
        let cache = ReadCache::<u8, u8>::default();
        let read_in = cache.generation();
        drop(cache.changing());
        cache.keep(read_in, 1, 10);
        assert_eq!(cache.get(&1), None);
    }

    #[test]
    fn a_full_cache_starts_over() {
        let cache = ReadCache::<usize, usize>::default();
        for key in 0..=ENTRIES {
            cache.keep(cache.generation(), key, key);
        }
        assert_eq!(cache.get(&0), None);
        assert_eq!(cache.get(&ENTRIES), Some(ENTRIES));
    }
}
