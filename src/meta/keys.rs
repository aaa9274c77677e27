//! Signing keys: manifest and log keys, one active key per purpose.

use std::future::Future;

use amber_core::wire::{KeyPurpose, KeyStatus};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{Meta, MetaError};

/// A signing key pair. `Debug` leaves out the private half.
#[derive(Clone, Serialize, Deserialize)]
pub struct KeyRecord {
    pub keyid: String,
    /// The 32-byte Ed25519 seed, base64.
    pub private_key: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub status: KeyStatus,
    /// Keys from before the log signed manifests.
    #[serde(default)]
    pub purpose: KeyPurpose,
}

impl std::fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRecord")
            .field("keyid", &self.keyid)
            .field("status", &self.status)
            .field("purpose", &self.purpose)
            .finish_non_exhaustive()
    }
}

pub trait KeyStore {
    /// Every key of every purpose.
    fn keys(&self) -> impl Future<Output = Result<Vec<KeyRecord>, MetaError>> + Send;

    /// Adds `key` as the only active key of its purpose; every other key of
    /// that purpose becomes retired.
    fn activate_key(&self, key: &KeyRecord) -> impl Future<Output = Result<(), MetaError>> + Send;

    /// Adds `key` only if there is no active key of its purpose yet; returns
    /// whether it was added.
    fn init_key(&self, key: &KeyRecord) -> impl Future<Output = Result<bool, MetaError>> + Send;
}

impl KeyStore for Meta {
    async fn keys(&self) -> Result<Vec<KeyRecord>, MetaError> {
        dispatch!(self, s => s.keys())
    }

    async fn activate_key(&self, key: &KeyRecord) -> Result<(), MetaError> {
        dispatch!(self, s => s.activate_key(key))
    }

    async fn init_key(&self, key: &KeyRecord) -> Result<bool, MetaError> {
        dispatch!(self, s => s.init_key(key))
    }
}
