//! Manifest signing keys.
//!
//! Keys live in the metadata store, so every replica signs with the same key:
//! the first server to start generates one. `amberd keys rotate` adds a new
//! active key and retires the others, which stay listed so that what they
//! signed still verifies. Servers re-read the keys while they run
//! ([`Signer::refresh`]), so replicas follow a rotation made beside them.
//! An operator may instead supply the active key as a PKCS#8 PEM file (e.g.
//! from `openssl genpkey -algorithm ed25519`).

use std::path::Path;
use std::sync::Arc;

use amber_core::dsse::{self, Envelope};
use amber_core::wire::{KeyList, KeyStatus, PublicKeyInfo};
use anyhow::Context;
use arc_swap::ArcSwap;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use time::OffsetDateTime;

use crate::meta::{KeyRecord, Meta, MetaStore};

/// The keys a server signs with, swapped whole when the store's keys change.
pub struct Signer {
    /// The operator's PEM key, which signs instead of the store's active key.
    file_key: Option<FileKey>,
    current: ArcSwap<KeySet>,
}

struct FileKey {
    key: SigningKey,
    created_at: OffsetDateTime,
}

struct KeySet {
    active: SigningKey,
    keys: KeyList,
    /// The stored keys this set was built from, by id and status: a refresh
    /// that finds them unchanged keeps the set instead of decoding every key.
    built_from: Vec<(String, KeyStatus)>,
}

fn summary(records: &[KeyRecord]) -> Vec<(String, KeyStatus)> {
    records.iter().map(|r| (r.keyid.clone(), r.status)).collect()
}

fn new_key_record() -> (KeyRecord, SigningKey) {
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let record = KeyRecord {
        keyid: dsse::key_id(&key.verifying_key()),
        private_key: B64.encode(key.to_bytes()),
        created_at: OffsetDateTime::now_utc().replace_nanosecond(0).expect("0 is a valid nanosecond"),
        status: KeyStatus::Active,
    };
    (record, key)
}

fn decode(record: &KeyRecord) -> anyhow::Result<SigningKey> {
    let seed: [u8; 32] = B64
        .decode(&record.private_key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("stored key {} is not a 32-byte seed", record.keyid))?;
    Ok(SigningKey::from_bytes(&seed))
}

fn public_info(record: &KeyRecord, key: &SigningKey, status: KeyStatus) -> PublicKeyInfo {
    PublicKeyInfo {
        keyid: record.keyid.clone(),
        algorithm: "ed25519".into(),
        public_key: B64.encode(key.verifying_key().as_bytes()),
        created_at: record.created_at,
        status,
    }
}

impl KeySet {
    /// The store's keys, with the operator's file key (if any) signing in
    /// place of the store's active key.
    fn build(records: &[KeyRecord], file_key: Option<&FileKey>) -> anyhow::Result<Self> {
        let mut keys = Vec::new();
        let mut active = None;
        for record in records {
            let key = decode(record)?;
            let status = if file_key.is_some() { KeyStatus::Retired } else { record.status };
            if status == KeyStatus::Active {
                active = Some(key.clone());
            }
            keys.push(public_info(record, &key, status));
        }
        if let Some(file) = file_key {
            let keyid = dsse::key_id(&file.key.verifying_key());
            keys.retain(|k| k.keyid != keyid);
            let record =
                KeyRecord { keyid, private_key: String::new(), created_at: file.created_at, status: KeyStatus::Active };
            keys.push(public_info(&record, &file.key, KeyStatus::Active));
            active = Some(file.key.clone());
        }
        let active = active.context("no active signing key")?;
        Ok(Self { active, keys: KeyList { keys }, built_from: summary(records) })
    }

    fn active_id(&self) -> String {
        dsse::key_id(&self.active.verifying_key())
    }
}

impl Signer {
    pub async fn load(meta: &Meta, key_file: Option<&Path>) -> anyhow::Result<Self> {
        let file_key = key_file
            .map(|path| -> anyhow::Result<FileKey> {
                let key = SigningKey::read_pkcs8_pem_file(path)
                    .map_err(|e| anyhow::anyhow!("reading signing key {}: {e}", path.display()))?;
                Ok(FileKey { key, created_at: std::fs::metadata(path)?.modified()?.into() })
            })
            .transpose()?;
        let mut records = meta.keys().await?;
        if file_key.is_none() && !records.iter().any(|k| k.status == KeyStatus::Active) {
            let (record, _) = new_key_record();
            if meta.init_key(&record).await? {
                tracing::info!(keyid = %record.keyid, "generated the first signing key");
            }
            records = meta.keys().await?;
        }
        let current = ArcSwap::from_pointee(KeySet::build(&records, file_key.as_ref())?);
        Ok(Self { file_key, current })
    }

    /// Re-reads the store's keys. Replicas share one store, so a key that
    /// `amberd keys rotate` added while they run is published and signs from
    /// the next refresh on, without a restart.
    pub async fn refresh(&self, meta: &Meta) -> anyhow::Result<()> {
        let records = meta.keys().await?;
        if self.current.load().built_from == summary(&records) {
            return Ok(());
        }
        let fresh = Arc::new(KeySet::build(&records, self.file_key.as_ref())?);
        // Keys are only ever added, so of two racing refreshes the one that
        // read fewer keys read earlier and must not replace the other's set.
        let previous = self.current.rcu(|current| {
            if current.built_from.len() > fresh.built_from.len() { current.clone() } else { fresh.clone() }
        });
        let active = self.current.load().active_id();
        if previous.active_id() != active {
            tracing::info!(keyid = %active, "signing with a rotated key");
        }
        Ok(())
    }

    pub fn sign(&self, payload_type: &str, payload: &[u8]) -> Envelope {
        dsse::sign(payload_type, payload, &self.current.load().active)
    }

    /// Every key this server signs or signed with, for `GET /v1/keys`.
    pub fn key_list(&self) -> KeyList {
        self.current.load().keys.clone()
    }
}

/// Adds a new active key and retires the others (`amberd keys rotate`).
pub async fn rotate(meta: &Meta) -> anyhow::Result<String> {
    let (record, _) = new_key_record();
    meta.activate_key(&record).await?;
    Ok(record.keyid)
}
