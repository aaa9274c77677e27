//! The quarantine as every replica holds it in memory: the digests the scrub
//! found corrupt or gone, which no read serves. Re-read from the store every
//! few seconds (what other replicas found, or healed); `lifecycle::scrub`
//! finds and heals.

use std::collections::HashSet;
use std::sync::RwLock;

use amber_core::Digest;

use crate::meta::{Meta, MetaError, ScrubStore};

/// The quarantined digests, kept in memory on every replica: every read asks.
#[derive(Default)]
pub struct QuarantineSet(RwLock<HashSet<Digest>>);

impl QuarantineSet {
    pub fn contains(&self, digest: &Digest) -> bool {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).contains(digest)
    }

    pub fn len(&self) -> usize {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn set(&self, digest: Digest, present: bool) {
        let mut set = self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if present {
            set.insert(digest);
        } else {
            set.remove(&digest);
        }
    }

    /// Re-reads the set from the store (what other replicas found, or healed).
    pub async fn refresh(&self, meta: &Meta) -> Result<(), MetaError> {
        let all: HashSet<Digest> = meta.quarantined().await?.into_iter().map(|q| q.digest).collect();
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = all;
        Ok(())
    }
}
