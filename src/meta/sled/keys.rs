//! Signing keys on sled.

use amber_core::wire::KeyStatus;
use sled::transaction::ConflictableTransactionError;

use super::{SledMeta, all_keys, transaction_error};
use crate::meta::KeyStore;
use crate::meta::{KeyRecord, MetaError};

impl KeyStore for SledMeta {
    async fn keys(&self) -> Result<Vec<KeyRecord>, MetaError> {
        self.read("keys", |t| all_keys(&t.keys)).await
    }

    async fn activate_key(&self, key: &KeyRecord) -> Result<(), MetaError> {
        let key = key.clone();
        self.write("activate_key", move |t| {
            // sled transactions cannot scan, so retire the keys read just
            // before; only one process ever opens a sled store, and key
            // rotation runs offline.
            let mut records = all_keys(&t.keys)?;
            records.retain(|k| k.purpose == key.purpose);
            for other in records.iter_mut() {
                other.status = KeyStatus::Retired;
            }
            records.push(key);
            let encoded = records
                .iter()
                .map(|k| Ok((k.keyid.clone(), serde_json::to_vec(k)?)))
                .collect::<Result<Vec<_>, MetaError>>()?;
            t.keys
                .transaction(|tree| {
                    for (id, json) in &encoded {
                        tree.insert(id.as_bytes(), json.as_slice())?;
                    }
                    Ok::<_, ConflictableTransactionError<MetaError>>(())
                })
                .map_err(transaction_error)
        })
        .await
    }

    async fn init_key(&self, key: &KeyRecord) -> Result<bool, MetaError> {
        let (keyid, json, purpose) = (key.keyid.clone(), serde_json::to_vec(key)?, key.purpose);
        self.write("init_key", move |t| {
            if all_keys(&t.keys)?.iter().any(|k| k.status == KeyStatus::Active && k.purpose == purpose) {
                return Ok(false);
            }
            Ok(t.keys.compare_and_swap(keyid.as_bytes(), None as Option<&[u8]>, Some(json))?.is_ok())
        })
        .await
    }
}
