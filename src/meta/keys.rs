//! Signing keys: manifest and log keys, one active key per purpose.

use super::*;

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
