//! Metadata in sled, the embedded default.
//!
//! Trees and keys (the schema version lives under `schema` in the default tree):
//! ```text
//! links      repo \0 digest(32 bytes)  -> size, u64 big-endian
//! tokens     token id                  -> TokenRecord (JSON)
//! secrets    secret hash (hex)         -> token id
//! keys       key id                    -> KeyRecord (JSON)
//! tags       repo \0 tag               -> TagRecord (JSON)
//! manifests  repo \0 digest(32 bytes)  -> DSSE envelope (JSON)
//! audit      seq, u64 big-endian       -> hash (64 hex) + entry bytes
//! audit_head "head"                    -> seq u64 BE + hash (64 hex)
//!            "checkpoint"              -> signed checkpoint envelope (JSON)
//! ```
//! `\0` cannot occur in a validated name, so prefixes never collide. Every write
//! is followed by a flush before it is acknowledged.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use amber_core::audit::AuditEntry;
use amber_core::dsse::Envelope;
use amber_core::wire::{KeyStatus, TagEntry};
use amber_core::{Digest, RepoName, Tag, TokenId};
use sled::transaction::{
    ConflictableTransactionError, ConflictableTransactionResult, TransactionError, TransactionalTree,
};
use sled::{Db, Transactional, Tree};
use time::OffsetDateTime;

use super::{AuditBuild, Bound, KeyRecord, MetaError, MetaStore, Revocation, Rotation, TagRecord, TokenRecord};
use crate::blobs::Stored;

const SCHEMA_KEY: &[u8] = b"schema";
const SCHEMA_VERSION: &[u8] = b"1";
const AUDIT_HEAD: &[u8] = b"head";
const AUDIT_CHECKPOINT: &[u8] = b"checkpoint";

pub struct SledMeta {
    db: Db,
    links: Tree,
    tokens: Tree,
    secrets: Tree,
    keys: Tree,
    tags: Tree,
    manifests: Tree,
    audit: Tree,
    audit_head: Tree,
}

impl From<sled::Error> for MetaError {
    fn from(err: sled::Error) -> Self {
        Self::Store(err.to_string())
    }
}

impl From<serde_json::Error> for MetaError {
    fn from(err: serde_json::Error) -> Self {
        Self::Corrupt(err.to_string())
    }
}

fn repo_key(repo: &RepoName, suffix: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(repo.as_str().len() + 1 + suffix.len());
    key.extend_from_slice(repo.as_str().as_bytes());
    key.push(0);
    key.extend_from_slice(suffix);
    key
}

impl SledMeta {
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        // sled's default cache is 1 GiB, and it fills it as metadata grows:
        // amberd's RSS rose by 3 KiB per pushed blob without end. Capped, RSS
        // levels off; the OS page cache keeps the rest of the working set.
        const SLED_CACHE_BYTES: u64 = 16 << 20;
        use anyhow::Context;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating metadata directory {}", dir.display()))?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(SLED_CACHE_BYTES)
            .open()
            .with_context(|| format!("opening sled database in {}", dir.display()))?;
        match db.get(SCHEMA_KEY)? {
            Some(v) if v.as_ref() == SCHEMA_VERSION => {}
            Some(v) => anyhow::bail!(
                "metadata in {} has schema {:?}; this amberd reads schema {:?}",
                dir.display(),
                String::from_utf8_lossy(&v),
                String::from_utf8_lossy(SCHEMA_VERSION)
            ),
            None => {
                db.insert(SCHEMA_KEY, SCHEMA_VERSION)?;
                db.flush()?;
            }
        }
        Ok(Self {
            links: db.open_tree("links")?,
            tokens: db.open_tree("tokens")?,
            secrets: db.open_tree("secrets")?,
            keys: db.open_tree("keys")?,
            tags: db.open_tree("tags")?,
            manifests: db.open_tree("manifests")?,
            audit: db.open_tree("audit")?,
            audit_head: db.open_tree("audit_head")?,
            db,
        })
    }

    /// Flushes everything written so far to disk. A blocking `flush` on the
    /// blocking pool: sled's `flush_async` can stall when many callers wait on
    /// it at once, and concurrent callers still share each flush.
    async fn durable(&self) -> Result<(), MetaError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| MetaError::Store(format!("flush task: {e}")))??;
        Ok(())
    }
}

/// Appends `build`'s entries to the chain, inside a transaction that holds the
/// `audit` and `audit_head` trees; returns the last entry's sequence number.
fn append_audit_in(
    audit: &TransactionalTree,
    head: &TransactionalTree,
    build: AuditBuild<'_>,
) -> ConflictableTransactionResult<u64, MetaError> {
    let abort = |e: MetaError| ConflictableTransactionError::Abort(e);
    let (last, prev) = match head.get(AUDIT_HEAD)? {
        Some(v) if v.len() == 8 + 64 => {
            (u64::from_be_bytes(v[..8].try_into().expect("8 bytes")), String::from_utf8_lossy(&v[8..]).into_owned())
        }
        Some(_) => return Err(abort(MetaError::Corrupt("audit head".into()))),
        None => (0, amber_core::audit::GENESIS.to_owned()),
    };
    let new = build.build(last + 1, &prev);
    let mut seq = last;
    let mut head_hash = None;
    for entry in new.entries {
        seq += 1;
        let mut value = entry.hash.clone().into_bytes();
        value.extend_from_slice(&entry.bytes);
        audit.insert(&seq.to_be_bytes(), value)?;
        head_hash = Some(entry.hash);
    }
    let Some(hash) = head_hash else {
        return Ok(last);
    };
    let mut new_head = seq.to_be_bytes().to_vec();
    new_head.extend_from_slice(hash.as_bytes());
    head.insert(AUDIT_HEAD, new_head)?;
    head.insert(AUDIT_CHECKPOINT, serde_json::to_vec(&new.checkpoint).map_err(|e| abort(e.into()))?)?;
    Ok(seq)
}

fn transaction_error(err: TransactionError<MetaError>) -> MetaError {
    match err {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => e.into(),
    }
}

impl MetaStore for SledMeta {
    async fn link_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        audit: AuditBuild<'_>,
    ) -> Result<Stored, MetaError> {
        let key = repo_key(repo, digest.as_bytes());
        let stored = (&self.links, &self.audit, &self.audit_head)
            .transaction(|(links, audit_tree, head)| {
                if links.get(&key)?.is_some() {
                    return Ok(Stored::AlreadyPresent);
                }
                links.insert(key.as_slice(), &size.to_be_bytes()[..])?;
                append_audit_in(audit_tree, head, audit)?;
                Ok(Stored::Created)
            })
            .map_err(transaction_error)?;
        // Also when the link was there: a racing request may have made it and
        // not yet flushed it, and this answer promises it is durable.
        self.durable().await?;
        Ok(stored)
    }

    async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>, MetaError> {
        let Some(value) = self.links.get(repo_key(repo, digest.as_bytes()))? else {
            return Ok(None);
        };
        let bytes: [u8; 8] = value.as_ref().try_into().map_err(|_| MetaError::Corrupt("blob link".into()))?;
        Ok(Some(u64::from_be_bytes(bytes)))
    }

    async fn insert_token(&self, record: &TokenRecord, audit: AuditBuild<'_>) -> Result<(), MetaError> {
        let id = record.info.id.as_str().as_bytes();
        let json = serde_json::to_vec(record)?;
        (&self.tokens, &self.secrets, &self.audit, &self.audit_head)
            .transaction(|(tokens, secrets, audit_tree, head)| {
                if tokens.get(id)?.is_some() || secrets.get(record.secret_hash.as_bytes())?.is_some() {
                    return Err(ConflictableTransactionError::Abort(MetaError::Conflict("token".into())));
                }
                tokens.insert(id, json.as_slice())?;
                secrets.insert(record.secret_hash.as_bytes(), id)?;
                append_audit_in(audit_tree, head, audit)?;
                Ok(())
            })
            .map_err(transaction_error)?;
        self.durable().await
    }

    async fn token(&self, id: &TokenId) -> Result<Option<TokenRecord>, MetaError> {
        match self.tokens.get(id.as_str())? {
            Some(json) => Ok(Some(serde_json::from_slice(&json)?)),
            None => Ok(None),
        }
    }

    async fn token_by_hash(&self, secret_hash: &str) -> Result<Option<TokenRecord>, MetaError> {
        let Some(id) = self.secrets.get(secret_hash)? else {
            return Ok(None);
        };
        match self.tokens.get(id)? {
            Some(json) => Ok(Some(serde_json::from_slice(&json)?)),
            None => Ok(None),
        }
    }

    async fn touch_token(&self, id: &TokenId, at: OffsetDateTime) -> Result<(), MetaError> {
        // Read-modify-write retried on conflict, so a concurrent change to the
        // token (a revocation, say) is never overwritten by a stale copy.
        self.tokens.fetch_and_update(id.as_str(), |old| {
            let mut record: TokenRecord = serde_json::from_slice(old?).ok()?;
            record.info.last_used_at = Some(at);
            serde_json::to_vec(&record).ok()
        })?;
        Ok(())
    }

    async fn list_tokens(&self, after: Option<&str>, limit: usize) -> Result<Vec<TokenRecord>, MetaError> {
        let start = after.map_or_else(Vec::new, |a| format!("{a}\0").into_bytes());
        let mut records = Vec::new();
        for item in self.tokens.range(start..).take(limit) {
            let (_, json) = item?;
            records.push(serde_json::from_slice(&json)?);
        }
        Ok(records)
    }

    async fn revoke_token(
        &self,
        id: &TokenId,
        at: OffsetDateTime,
        audit: AuditBuild<'_>,
    ) -> Result<Revocation, MetaError> {
        let abort = |e: serde_json::Error| ConflictableTransactionError::Abort(MetaError::from(e));
        let outcome = (&self.tokens, &self.audit, &self.audit_head)
            .transaction(|(tokens, audit_tree, head)| {
                let Some(json) = tokens.get(id.as_str())? else { return Ok(Revocation::Unknown) };
                let mut record: TokenRecord = serde_json::from_slice(&json).map_err(abort)?;
                if record.info.revoked_at.is_some() {
                    return Ok(Revocation::AlreadyRevoked(record));
                }
                record.info.revoked_at = Some(at);
                tokens.insert(id.as_str(), serde_json::to_vec(&record).map_err(abort)?)?;
                append_audit_in(audit_tree, head, audit)?;
                Ok(Revocation::Revoked(record))
            })
            .map_err(transaction_error)?;
        self.durable().await?;
        Ok(outcome)
    }

    async fn rotate_token(
        &self,
        new: &TokenRecord,
        old_expires_at: OffsetDateTime,
        audit: AuditBuild<'_>,
    ) -> Result<Rotation, MetaError> {
        let old_id =
            new.info.rotated_from.as_ref().ok_or_else(|| MetaError::Corrupt("rotation without rotated_from".into()))?;
        let new_json = serde_json::to_vec(new)?;
        let outcome = (&self.tokens, &self.secrets, &self.audit, &self.audit_head)
            .transaction(|(tokens, secrets, audit_tree, head)| {
                let Some(json) = tokens.get(old_id.as_str())? else { return Ok(Rotation::Unknown) };
                let mut old: TokenRecord = serde_json::from_slice(&json)
                    .map_err(|e| ConflictableTransactionError::Abort(MetaError::from(e)))?;
                let now = OffsetDateTime::now_utc();
                if old.info.revoked_at.is_some() {
                    return Ok(Rotation::Inactive("the token is revoked"));
                }
                if old.info.expires_at <= now {
                    return Ok(Rotation::Inactive("the token has expired"));
                }
                if old.info.rotated_to.is_some() {
                    return Ok(Rotation::Inactive("the token was already rotated; rotate its replacement"));
                }
                old.info.rotated_to = Some(new.info.id.clone());
                old.info.expires_at = old.info.expires_at.min(old_expires_at);
                let old_json =
                    serde_json::to_vec(&old).map_err(|e| ConflictableTransactionError::Abort(MetaError::from(e)))?;
                tokens.insert(old_id.as_str(), old_json)?;
                tokens.insert(new.info.id.as_str(), new_json.as_slice())?;
                secrets.insert(new.secret_hash.as_bytes(), new.info.id.as_str())?;
                append_audit_in(audit_tree, head, audit)?;
                Ok(Rotation::Rotated)
            })
            .map_err(transaction_error)?;
        self.durable().await?;
        Ok(outcome)
    }

    async fn append_audit(&self, build: AuditBuild<'_>) -> Result<u64, MetaError> {
        let seq = (&self.audit, &self.audit_head)
            .transaction(|(audit, head)| append_audit_in(audit, head, build))
            .map_err(transaction_error)?;
        self.durable().await?;
        Ok(seq)
    }

    async fn audit_entries(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, MetaError> {
        let mut entries = Vec::new();
        for item in self.audit.range((after + 1).to_be_bytes()..).take(limit) {
            let (key, value) = item?;
            let seq = u64::from_be_bytes(key.as_ref().try_into().map_err(|_| MetaError::Corrupt("audit key".into()))?);
            if value.len() < 64 {
                return Err(MetaError::Corrupt(format!("audit entry {seq}")));
            }
            entries.push(AuditEntry {
                seq,
                hash: String::from_utf8_lossy(&value[..64]).into_owned(),
                entry: String::from_utf8_lossy(&value[64..]).into_owned(),
            });
        }
        Ok(entries)
    }

    async fn audit_checkpoint(&self) -> Result<Option<Envelope>, MetaError> {
        match self.audit_head.get(AUDIT_CHECKPOINT)? {
            Some(json) => Ok(Some(serde_json::from_slice(&json)?)),
            None => Ok(None),
        }
    }

    async fn keys(&self) -> Result<Vec<KeyRecord>, MetaError> {
        let mut keys = Vec::new();
        for item in self.keys.iter() {
            let (_, json) = item?;
            keys.push(serde_json::from_slice::<KeyRecord>(&json)?);
        }
        keys.sort_by_key(|k| k.created_at);
        Ok(keys)
    }

    async fn activate_key(&self, key: &KeyRecord) -> Result<(), MetaError> {
        // sled transactions cannot scan, so retire the keys read just before; only
        // one process ever opens a sled store, and key rotation runs offline.
        let mut records = self.keys().await?;
        for other in records.iter_mut() {
            other.status = KeyStatus::Retired;
        }
        records.push(key.clone());
        let encoded = records
            .iter()
            .map(|k| Ok((k.keyid.clone(), serde_json::to_vec(k)?)))
            .collect::<Result<Vec<_>, MetaError>>()?;
        self.keys
            .transaction(|tree| {
                for (id, json) in &encoded {
                    tree.insert(id.as_bytes(), json.as_slice())?;
                }
                Ok::<_, ConflictableTransactionError<MetaError>>(())
            })
            .map_err(transaction_error)?;
        self.durable().await
    }

    async fn init_key(&self, key: &KeyRecord) -> Result<bool, MetaError> {
        let existing = self.keys().await?;
        if existing.iter().any(|k| k.status == KeyStatus::Active) {
            return Ok(false);
        }
        let json = serde_json::to_vec(key)?;
        let added = self.keys.compare_and_swap(key.keyid.as_bytes(), None as Option<&[u8]>, Some(json))?.is_ok();
        self.durable().await?;
        Ok(added)
    }

    async fn bind_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
        envelope: &Envelope,
        at: OffsetDateTime,
        audit: AuditBuild<'_>,
    ) -> Result<Bound, MetaError> {
        let tag_key = repo_key(repo, tag.as_str().as_bytes());
        let manifest_key = repo_key(repo, digest.as_bytes());
        let record = serde_json::to_vec(&TagRecord { digest: *digest, created_at: at })?;
        let envelope = serde_json::to_vec(envelope)?;
        let existing = (&self.tags, &self.manifests, &self.audit, &self.audit_head)
            .transaction(|(tags, manifests, audit_tree, head)| {
                if let Some(existing) = tags.get(&tag_key)? {
                    return Ok(Some(existing));
                }
                manifests.insert(manifest_key.as_slice(), envelope.as_slice())?;
                tags.insert(tag_key.as_slice(), record.as_slice())?;
                append_audit_in(audit_tree, head, audit)?;
                Ok(None)
            })
            .map_err(transaction_error)?;
        match existing {
            Some(json) => Ok(Bound::Existing(serde_json::from_slice(&json)?)),
            None => {
                self.durable().await?;
                Ok(Bound::Created)
            }
        }
    }

    async fn tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<TagRecord>, MetaError> {
        match self.tags.get(repo_key(repo, tag.as_str().as_bytes()))? {
            Some(json) => Ok(Some(serde_json::from_slice(&json)?)),
            None => Ok(None),
        }
    }

    async fn manifest(&self, repo: &RepoName, digest: &Digest) -> Result<Option<Envelope>, MetaError> {
        match self.manifests.get(repo_key(repo, digest.as_bytes()))? {
            Some(json) => Ok(Some(serde_json::from_slice(&json)?)),
            None => Ok(None),
        }
    }

    async fn list_tags(&self, repo: &RepoName, after: Option<&str>, limit: usize) -> Result<Vec<TagEntry>, MetaError> {
        let prefix = repo_key(repo, b"");
        let start = match after {
            // The smallest key after `after`: itself followed by a NUL.
            Some(after) => repo_key(repo, format!("{after}\0").as_bytes()),
            None => prefix.clone(),
        };
        let mut entries = Vec::new();
        for item in self.tags.range(start..) {
            let (key, json) = item?;
            if !key.starts_with(&prefix) || entries.len() == limit {
                break;
            }
            let name = std::str::from_utf8(&key[prefix.len()..]).map_err(|e| MetaError::Corrupt(e.to_string()))?;
            let record: TagRecord = serde_json::from_slice(&json)?;
            entries.push(TagEntry {
                tag: name.parse().map_err(|e: amber_core::name::NameError| MetaError::Corrupt(e.to_string()))?,
                digest: record.digest,
                created_at: record.created_at,
            });
        }
        Ok(entries)
    }

    async fn check(&self) -> Result<(), MetaError> {
        self.db.get(SCHEMA_KEY)?.ok_or_else(|| MetaError::Corrupt("schema key missing".into()))?;
        Ok(())
    }
}
