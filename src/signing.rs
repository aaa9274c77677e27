//! Manifest signing keys.
//!
//! Keys live in the metadata store, so every replica signs with the same key:
//! the first server to start generates one. `amberd keys rotate` adds a new
//! active key and retires the others, which stay listed so that what they
//! signed still verifies. An operator may instead supply the active key as a
//! PKCS#8 PEM file (e.g. from `openssl genpkey -algorithm ed25519`).

use std::path::Path;

use amber_core::dsse::{self, Envelope};
use amber_core::wire::{KeyList, KeyStatus, PublicKeyInfo};
use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use time::OffsetDateTime;

use crate::meta::{KeyRecord, Meta, MetaStore};

pub struct Signer {
    active: SigningKey,
    keys: KeyList,
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

impl Signer {
    pub async fn load(meta: &Meta, key_file: Option<&Path>) -> anyhow::Result<Self> {
        let mut records = meta.keys().await?;
        if key_file.is_none() && !records.iter().any(|k| k.status == KeyStatus::Active) {
            let (record, _) = new_key_record();
            if meta.init_key(&record).await? {
                tracing::info!(keyid = %record.keyid, "generated the first signing key");
            }
            records = meta.keys().await?;
        }
        let mut keys = Vec::new();
        let mut active = None;
        for record in &records {
            let key = decode(record)?;
            let status = if key_file.is_some() { KeyStatus::Retired } else { record.status };
            if status == KeyStatus::Active {
                active = Some(key.clone());
            }
            keys.push(public_info(record, &key, status));
        }
        if let Some(path) = key_file {
            let key = SigningKey::read_pkcs8_pem_file(path)
                .map_err(|e| anyhow::anyhow!("reading signing key {}: {e}", path.display()))?;
            let keyid = dsse::key_id(&key.verifying_key());
            keys.retain(|k| k.keyid != keyid);
            let created_at = std::fs::metadata(path)?.modified()?.into();
            let record = KeyRecord { keyid, private_key: String::new(), created_at, status: KeyStatus::Active };
            keys.push(public_info(&record, &key, KeyStatus::Active));
            active = Some(key);
        }
        let active = active.context("no active signing key")?;
        Ok(Self { active, keys: KeyList { keys } })
    }

    pub fn sign(&self, payload_type: &str, payload: &[u8]) -> Envelope {
        dsse::sign(payload_type, payload, &self.active)
    }

    /// Every key this server signs or signed with, for `GET /v1/keys`.
    pub fn key_list(&self) -> &KeyList {
        &self.keys
    }
}

/// Adds a new active key and retires the others (`amberd keys rotate`).
pub async fn rotate(meta: &Meta) -> anyhow::Result<String> {
    let (record, _) = new_key_record();
    meta.activate_key(&record).await?;
    Ok(record.keyid)
}
