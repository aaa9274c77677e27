//! Signing keys: the manifest keys (manifests, tombstones, the audit chain's
//! DSSE checkpoint) and, apart, the transparency log's key (its checkpoints),
//! each a [`Signer`] of one [`KeyPurpose`].
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
use amber_core::wire::{KeyList, KeyPurpose, KeyStatus, PublicKeyInfo};
use anyhow::Context;
use arc_swap::ArcSwap;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use time::OffsetDateTime;

use crate::meta::KeyStore;
use crate::meta::{KeyRecord, Meta};

/// The keys a server signs with, swapped whole when the store's keys change.
pub struct Signer {
    purpose: KeyPurpose,
    /// The log's origin: the key name of the log key's signed notes.
    origin: Option<String>,
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

fn new_key_record(purpose: KeyPurpose) -> (KeyRecord, SigningKey) {
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let record = KeyRecord {
        keyid: dsse::key_id(&key.verifying_key()),
        private_key: B64.encode(key.to_bytes()),
        created_at: OffsetDateTime::now_utc().replace_nanosecond(0).expect("0 is a valid nanosecond"),
        status: KeyStatus::Active,
        purpose,
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

fn public_info(record: &KeyRecord, key: &SigningKey, status: KeyStatus, origin: Option<&str>) -> PublicKeyInfo {
    PublicKeyInfo {
        keyid: record.keyid.clone(),
        algorithm: "ed25519".into(),
        public_key: B64.encode(key.verifying_key().as_bytes()),
        created_at: record.created_at,
        status,
        purpose: record.purpose,
        vkey: origin.map(|origin| amber_core::log::vkey(origin, &key.verifying_key())),
        sslib_keyid: (record.purpose == KeyPurpose::Manifest).then(|| dsse::sslib_key_id(&key.verifying_key())),
        public_key_pem: {
            use ed25519_dalek::pkcs8::EncodePublicKey;
            key.verifying_key().to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF).ok()
        },
    }
}

impl KeySet {
    /// The store's keys, with the operator's file key (if any) signing in
    /// place of the store's active key.
    fn build(
        records: &[KeyRecord],
        file_key: Option<&FileKey>,
        purpose: KeyPurpose,
        origin: Option<&str>,
    ) -> anyhow::Result<Self> {
        let records: Vec<KeyRecord> = records.iter().filter(|r| r.purpose == purpose).cloned().collect();
        let records = records.as_slice();
        let mut keys = Vec::new();
        let mut active = None;
        for record in records {
            let key = decode(record)?;
            let status = if file_key.is_some() { KeyStatus::Retired } else { record.status };
            if status == KeyStatus::Active {
                active = Some(key.clone());
            }
            keys.push(public_info(record, &key, status, origin));
        }
        if let Some(file) = file_key {
            let keyid = dsse::key_id(&file.key.verifying_key());
            keys.retain(|k| k.keyid != keyid);
            let record = KeyRecord {
                keyid,
                private_key: String::new(),
                created_at: file.created_at,
                status: KeyStatus::Active,
                purpose,
            };
            keys.push(public_info(&record, &file.key, KeyStatus::Active, origin));
            active = Some(file.key.clone());
        }
        let active = active.with_context(|| format!("no active {} signing key", purpose.as_str()))?;
        Ok(Self { active, keys: KeyList { keys, witness_policy: None }, built_from: summary(records) })
    }

    fn active_id(&self) -> String {
        dsse::key_id(&self.active.verifying_key())
    }
}

impl Signer {
    /// The manifest keys.
    pub async fn load(meta: &Meta, key_file: Option<&Path>) -> anyhow::Result<Self> {
        Self::load_for(meta, KeyPurpose::Manifest, None, key_file).await
    }

    /// The log key, whose notes are signed under the key name `origin`.
    pub async fn load_log(meta: &Meta, origin: &str, key_file: Option<&Path>) -> anyhow::Result<Self> {
        Self::load_for(meta, KeyPurpose::Log, Some(origin.to_owned()), key_file).await
    }

    async fn load_for(
        meta: &Meta,
        purpose: KeyPurpose,
        origin: Option<String>,
        key_file: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let file_key = key_file
            .map(|path| -> anyhow::Result<FileKey> {
                let key = SigningKey::read_pkcs8_pem_file(path)
                    .map_err(|e| anyhow::anyhow!("reading signing key {}: {e}", path.display()))?;
                Ok(FileKey { key, created_at: std::fs::metadata(path)?.modified()?.into() })
            })
            .transpose()?;
        let mut records = meta.keys().await?;
        if file_key.is_none() && !records.iter().any(|k| k.status == KeyStatus::Active && k.purpose == purpose) {
            let (record, _) = new_key_record(purpose);
            if meta.init_key(&record).await? {
                tracing::info!(keyid = %record.keyid, purpose = purpose.as_str(), "generated the first signing key");
            }
            records = meta.keys().await?;
        }
        let current = ArcSwap::from_pointee(KeySet::build(&records, file_key.as_ref(), purpose, origin.as_deref())?);
        Ok(Self { purpose, origin, file_key, current })
    }

    /// Re-reads the store's keys. Replicas share one store, so a key that
    /// `amberd keys rotate` added while they run is published and signs from
    /// the next refresh on, without a restart.
    pub async fn refresh(&self, meta: &Meta) -> anyhow::Result<()> {
        let mut records = meta.keys().await?;
        records.retain(|r| r.purpose == self.purpose);
        if self.current.load().built_from == summary(&records) {
            return Ok(());
        }
        let fresh = Arc::new(KeySet::build(&records, self.file_key.as_ref(), self.purpose, self.origin.as_deref())?);
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
        debug_assert_eq!(self.purpose, KeyPurpose::Manifest, "a log key signs only checkpoints");
        dsse::sign(payload_type, payload, &self.current.load().active)
    }

    /// Signs an in-toto statement: the envelope names the key by the id
    /// stock verifiers compute for it (`dsse::sslib_key_id`).
    pub fn sign_statement(&self, statement: &[u8]) -> Envelope {
        debug_assert_eq!(self.purpose, KeyPurpose::Manifest, "a log key signs only checkpoints");
        let active = &self.current.load().active;
        let keyid = dsse::sslib_key_id(&active.verifying_key());
        dsse::sign_as(amber_core::attestation::PAYLOAD_TYPE, statement, active, &keyid)
    }

    /// A key for `context` derived from the active key (and `extra`): MACs the
    /// server checks itself (scoped tokens, upload session URLs), void when
    /// the key rotates. The key's seed never leaves this module.
    pub fn derived_key(&self, context: &str, extra: &[u8]) -> [u8; 32] {
        let mut material = self.current.load().active.to_bytes().to_vec();
        material.extend_from_slice(extra);
        blake3::derive_key(context, &material)
    }

    /// The active key, for signed notes (the log's checkpoints).
    pub fn active_key(&self) -> SigningKey {
        self.current.load().active.clone()
    }

    /// Every key this server signs or signed with, for `GET /v1/keys`.
    pub fn key_list(&self) -> KeyList {
        self.current.load().keys.clone()
    }
}

/// Adds a new active key of `purpose` and retires the others of that
/// purpose (`amberd keys rotate [--log]`).
pub async fn rotate(meta: &Meta, purpose: KeyPurpose) -> anyhow::Result<String> {
    let (record, _) = new_key_record(purpose);
    meta.activate_key(&record).await?;
    Ok(record.keyid)
}
