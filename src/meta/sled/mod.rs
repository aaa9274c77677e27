//! Metadata in sled, the embedded default.
//!
//! Trees and keys (the schema version lives under `schema` in the default tree):
//! ```text
//! links      repo \0 digest(32 bytes)  -> size u64 BE + created_at i64 BE (unix s)
//! tokens     token id                  -> TokenRecord (JSON)
//! secrets    secret hash (hex)         -> token id
//! keys       key id                    -> KeyRecord (JSON)
//! tags       repo \0 tag               -> TagRecord (JSON: binding, hold, expiry)
//! manifests  repo \0 digest(32 bytes)  -> DSSE envelope (JSON)
//! refs       repo \0 blob(32) manifest(32) -> tag (the manifest's files)
//! policies   scope (`owner/name`, `owner/*`) -> PolicyInfo (JSON)
//! linked_by  digest(32) repo           -> () (every link, by digest)
//! reclaim    digest(32)                -> Waiting (JSON: size, since, marked)
//! quarantine digest(32)                -> Quarantined (JSON)
//! verified   digest(32)                -> when the scrub last found it right, i64 BE (unix s)
//! publishers publisher id              -> Publisher (JSON)
//! replays    issuer \0 jti             -> until, i64 BE (unix s): ID tokens exchanged
//! replays_by_time until i64 BE, issuer \0 jti -> () (to forget them in order)
//! uploads    upload id                 -> UploadRecord (JSON): resumable uploads
//! uploads_by_token token id \0 upload id -> () (to count a token's uploads)
//!            (default tree) "scrub"    -> ScrubProgress (JSON)
//! audit      seq, u64 big-endian       -> hash (64 hex) + entry bytes
//! audit_head "head"                    -> seq u64 BE + hash (64 hex) + the log's
//!                                         tree (`Frontier::to_bytes`; absent before the log)
//!            "checkpoint"              -> signed checkpoint envelope (JSON)
//!            "log_checkpoint"          -> tree size u64 BE + signed note
//!            "log_origin"              -> the log's origin (UTF-8), fixed at the first start
//!            \0 'h' index u64 BE       -> a stored hash of the tree (32 bytes)
//!            \0 't' repo \0 tag        -> log index u64 BE of its tag_bound entry
//! ```
//! The log's tree lives beside the chain's head so that every transaction
//! that appends an entry, holding those two trees, also grows the tree.
//! `\0` cannot occur in a validated name, so prefixes never collide. Every write
//! is followed by a flush before it is acknowledged. Schema 1 (links without
//! their creation time, no `refs`) and schema 2 (no `linked_by`) are upgraded
//! in place at open. Promotion leases are kept in memory: only this process
//! uploads into this store, and a crash ends its uploads with it.
//!
//! Writes run one at a time on one thread (see `super::writer`), so a check
//! made in one (no live manifest references a blob; every file of a manifest is
//! linked) holds until the write it guards commits.
//!
//! sled is synchronous and, under a full disk, can block for good: reads run
//! on the blocking pool and writes on the writer thread, every call through
//! a [`Watchdog`], and writes first check the free-space reserve, so that
//! sled itself never meets `ENOSPC`.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use amber_core::audit::AuditEntry;
use amber_core::dsse::Envelope;
use amber_core::log::{Frontier, Hash};
use amber_core::manifest::ManifestPayload;
use amber_core::wire::{KeyStatus, PolicyInfo, TagEntry};
use amber_core::{Digest, RepoName, RepoPattern, Tag, TokenId};
use sled::transaction::{
    ConflictableTransactionError, ConflictableTransactionResult, TransactionError, TransactionalTree,
};
use sled::{Db, Transactional, Tree};
use time::OffsetDateTime;

use super::watchdog::Watchdog;
use super::writer::Writer;
use super::{
    AuditBuild, Bound, BuildAudit, Candidate, Created, Exchange, Expiry, Hold, KeyRecord, Lease, LinkView, MetaError,
    MetaStore, Quarantined, Replay, RepoView, Revocation, Rotation, RunnerLock, ScrubProgress, TagChange, TagRecord,
    TagView, TokenRecord, Unlink, Updated, UploadId, UploadKind, UploadRecord,
};
use crate::blobs::{Object, Stored};
use crate::config::FreeSpace;
use crate::space::{Purpose, SpaceReserve};

const SCHEMA_KEY: &[u8] = b"schema";
const SCHEMA_VERSION: &[u8] = b"3";
const AUDIT_HEAD: &[u8] = b"head";
const AUDIT_CHECKPOINT: &[u8] = b"checkpoint";
const LOG_CHECKPOINT: &[u8] = b"log_checkpoint";
const LOG_ORIGIN: &[u8] = b"log_origin";
const SCRUB_KEY: &[u8] = b"scrub";

pub struct SledMeta {
    trees: Arc<Trees>,
    space: SpaceReserve,
    watchdog: Watchdog,
    /// Runs every write, one at a time (see `writer`).
    writer: Writer<Trees>,
}

struct Trees {
    /// Every token by the hash of its secret, kept in step with the `tokens`
    /// tree: every request authenticates, and a lookup here needs no call
    /// into sled (no hop to the blocking pool). Exact, not a cache that may
    /// lag: only this process opens the store (sled locks it), and every
    /// token change goes through this module.
    by_secret: RwLock<HashMap<String, TokenRecord>>,
    db: Db,
    links: Tree,
    tokens: Tree,
    secrets: Tree,
    keys: Tree,
    tags: Tree,
    manifests: Tree,
    refs: Tree,
    policies: Tree,
    linked_by: Tree,
    reclaim: Tree,
    /// Promotion leases in force, and the digests marked for reclaim: in
    /// memory, so that an upload takes its lease with no call into sled.
    promotions: std::sync::Mutex<Promotions>,
    quarantine: Tree,
    verified: Tree,
    publishers: Tree,
    replays: Tree,
    replays_by_time: Tree,
    uploads: Tree,
    uploads_by_token: Tree,
    /// Held by the reclaim run.
    runner: Arc<tokio::sync::Mutex<()>>,
    /// Held by the scrubber.
    scrubber: Arc<tokio::sync::Mutex<()>>,
    audit: Tree,
    audit_head: Tree,
}

/// A digest no repository links, waiting for reclaim.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Waiting {
    size: u64,
    #[serde(with = "time::serde::rfc3339")]
    since: OffsetDateTime,
    marked: bool,
}

impl From<sled::Error> for MetaError {
    fn from(err: sled::Error) -> Self {
        match err {
            sled::Error::Io(e) if crate::space::is_full(&e) => Self::NoSpace(e.to_string()),
            other => Self::Store(other.to_string()),
        }
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

/// A link's value: its size and when it was created.
fn link_value(size: u64, created_at: OffsetDateTime) -> [u8; 16] {
    let mut value = [0u8; 16];
    value[..8].copy_from_slice(&size.to_be_bytes());
    value[8..].copy_from_slice(&created_at.unix_timestamp().to_be_bytes());
    value
}

fn parse_link(value: &[u8]) -> Result<(u64, OffsetDateTime), MetaError> {
    let corrupt = || MetaError::Corrupt("blob link".into());
    let bytes: [u8; 16] = value.try_into().map_err(|_| corrupt())?;
    let size = u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
    let secs = i64::from_be_bytes(bytes[8..].try_into().expect("8 bytes"));
    Ok((size, OffsetDateTime::from_unix_timestamp(secs).map_err(|_| corrupt())?))
}

/// The digest at the end of a `repo \0 digest` key.
fn key_digest(key: &[u8], at: usize) -> Result<Digest, MetaError> {
    let bytes: [u8; 32] =
        key.get(at..at + 32).and_then(|b| b.try_into().ok()).ok_or_else(|| MetaError::Corrupt("key".into()))?;
    Ok(Digest::from_bytes(bytes))
}

/// Schema 1 to 2: links gain a creation time (the time of the upgrade: the
/// real one was not kept, and a later one only delays retention), and `refs`
/// is built from the stored manifests. Each step is idempotent; the schema
/// key is written last.
fn upgrade_from_1(t: &Trees) -> Result<(), MetaError> {
    let now = OffsetDateTime::now_utc();
    for item in t.links.iter() {
        let (key, value) = item?;
        if let Ok(bytes) = <[u8; 8]>::try_from(value.as_ref()) {
            t.links.insert(key, &link_value(u64::from_be_bytes(bytes), now)[..])?;
        }
    }
    for item in t.manifests.iter() {
        let (key, json) = item?;
        let repo_len = key.len().checked_sub(33).ok_or_else(|| MetaError::Corrupt("manifest key".into()))?;
        let manifest = key_digest(&key, repo_len + 1)?;
        let envelope: Envelope = serde_json::from_slice(&json)?;
        let bytes = envelope.payload_bytes().map_err(|e| MetaError::Corrupt(e.to_string()))?;
        let payload: ManifestPayload = serde_json::from_slice(&bytes)?;
        for file in &payload.files {
            t.refs.insert(ref_key(&key[..repo_len], &file.digest, &manifest), payload.tag.as_str().as_bytes())?;
        }
    }
    Ok(())
}

/// Schema 2 to 3: `linked_by`, every link by digest. Idempotent; the schema
/// key is written last.
fn upgrade_from_2(t: &Trees) -> Result<(), MetaError> {
    for item in t.links.iter() {
        let (key, _) = item?;
        let repo_len = key.len().checked_sub(33).ok_or_else(|| MetaError::Corrupt("link key".into()))?;
        t.linked_by.insert(holder_key(&key_digest(&key, repo_len + 1)?, &key[..repo_len]), &[][..])?;
    }
    t.db.insert(SCHEMA_KEY, SCHEMA_VERSION)?;
    t.db.flush()?;
    Ok(())
}

/// The smallest key greater than every key starting with `prefix`.
fn next_prefix(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut next = prefix.to_vec();
    while let Some(last) = next.pop() {
        if last < 0xff {
            next.push(last + 1);
            return Some(next);
        }
    }
    None
}

/// `repo \0 suffix` from the repository's name bytes.
fn repo_key_bytes(repo: &[u8], suffix: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(repo.len() + 1 + suffix.len());
    key.extend_from_slice(repo);
    key.push(0);
    key.extend_from_slice(suffix);
    key
}

/// `digest repo`: a key of `linked_by`.
fn holder_key(digest: &Digest, repo_prefix: &[u8]) -> Vec<u8> {
    let mut key = digest.as_bytes().to_vec();
    key.extend_from_slice(repo_prefix);
    key
}

fn waiting(reclaim: &Tree, digest: &Digest) -> Result<Option<Waiting>, MetaError> {
    match reclaim.get(digest.as_bytes())? {
        Some(json) => Ok(Some(serde_json::from_slice(&json)?)),
        None => Ok(None),
    }
}

/// An upload's lease and a reclaim's mark exclude each other: each is taken
/// under this one lock, after checking for the other. The marks mirror the
/// `marked` flags of the `reclaim` tree (loaded at open; only this process
/// writes them).
#[derive(Default)]
struct Promotions {
    /// Lease id -> digest.
    leases: HashMap<String, Digest>,
    marked: HashSet<Digest>,
}

impl Promotions {
    fn leased(&self, digest: &Digest) -> bool {
        self.leases.values().any(|d| d == digest)
    }
}

impl Trees {
    fn promotions(&self) -> std::sync::MutexGuard<'_, Promotions> {
        self.promotions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn leased(&self, digest: &Digest) -> bool {
        self.promotions().leased(digest)
    }
}

/// `repo \0 blob manifest`: `repo_prefix` is the repository's name bytes.
fn ref_key(repo_prefix: &[u8], blob: &Digest, manifest: &Digest) -> Vec<u8> {
    let mut key = Vec::with_capacity(repo_prefix.len() + 65);
    key.extend_from_slice(repo_prefix);
    key.push(0);
    key.extend_from_slice(blob.as_bytes());
    key.extend_from_slice(manifest.as_bytes());
    key
}

fn tag_record(tags: &Tree, key: &[u8]) -> Result<Option<TagRecord>, MetaError> {
    match tags.get(key)? {
        Some(json) => Ok(Some(serde_json::from_slice(&json)?)),
        None => Ok(None),
    }
}

/// The policy in effect for `repo`: its own, else its owner's default.
fn effective_policy(policies: &Tree, repo: &RepoName) -> Result<Option<PolicyInfo>, MetaError> {
    for scope in [repo.to_string(), format!("{}/*", repo.owner())] {
        if let Some(json) = policies.get(scope.as_bytes())? {
            return Ok(Some(serde_json::from_slice(&json)?));
        }
    }
    Ok(None)
}

impl SledMeta {
    pub fn open(dir: &Path, min_free_space: FreeSpace) -> anyhow::Result<Self> {
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
        let from = match db.get(SCHEMA_KEY)? {
            Some(v) if v.as_ref() == SCHEMA_VERSION => None,
            Some(v) if v.as_ref() == b"1" => Some(1),
            Some(v) if v.as_ref() == b"2" => Some(2),
            Some(v) => anyhow::bail!(
                "metadata in {} has schema {:?}; this amberd reads schema {:?}",
                dir.display(),
                String::from_utf8_lossy(&v),
                String::from_utf8_lossy(SCHEMA_VERSION)
            ),
            None => {
                db.insert(SCHEMA_KEY, SCHEMA_VERSION)?;
                db.flush()?;
                None
            }
        };
        let tokens = db.open_tree("tokens")?;
        let mut by_secret = HashMap::new();
        for item in tokens.iter() {
            let (_, json) = item?;
            let record: TokenRecord = serde_json::from_slice(&json)?;
            by_secret.insert(record.secret_hash.clone(), record);
        }
        let trees = Trees {
            by_secret: RwLock::new(by_secret),
            tokens,
            links: db.open_tree("links")?,
            secrets: db.open_tree("secrets")?,
            keys: db.open_tree("keys")?,
            tags: db.open_tree("tags")?,
            manifests: db.open_tree("manifests")?,
            refs: db.open_tree("refs")?,
            policies: db.open_tree("policies")?,
            linked_by: db.open_tree("linked_by")?,
            reclaim: db.open_tree("reclaim")?,
            promotions: std::sync::Mutex::new(Promotions::default()),
            quarantine: db.open_tree("quarantine")?,
            verified: db.open_tree("verified")?,
            publishers: db.open_tree("publishers")?,
            replays: db.open_tree("replays")?,
            replays_by_time: db.open_tree("replays_by_time")?,
            uploads: db.open_tree("uploads")?,
            uploads_by_token: db.open_tree("uploads_by_token")?,
            runner: Arc::new(tokio::sync::Mutex::new(())),
            scrubber: Arc::new(tokio::sync::Mutex::new(())),
            audit: db.open_tree("audit")?,
            audit_head: db.open_tree("audit_head")?,
            db,
        };
        if from == Some(1) {
            upgrade_from_1(&trees).context("upgrading the metadata from schema 1")?;
        }
        if from.is_some() {
            upgrade_from_2(&trees).context("upgrading the metadata from schema 2")?;
        }
        for item in trees.reclaim.iter() {
            let (key, json) = item?;
            if serde_json::from_slice::<Waiting>(&json)?.marked {
                trees.promotions().marked.insert(key_digest(&key, 0)?);
            }
        }
        let space = SpaceReserve::new(dir, min_free_space);
        let trees = Arc::new(trees);
        let writer = Writer::start(trees.clone(), |t: &Trees| Ok(t.db.flush().map(drop)?))
            .context("starting the metadata writer thread")?;
        Ok(Self { trees, space, watchdog: Watchdog::default(), writer })
    }

    /// `begin_promote`, at once: in memory, under the lock a mark is taken
    /// under, with no call into sled.
    pub fn promote_now(&self, digest: &Digest) -> Option<Lease> {
        let mut promotions = self.trees.promotions();
        if promotions.marked.contains(digest) {
            return None;
        }
        let lease = Lease::new();
        promotions.leases.insert(lease.0.clone(), *digest);
        Some(lease)
    }

    /// True while a call is stuck past its timeout.
    pub fn stuck(&self) -> bool {
        self.watchdog.stuck()
    }

    /// Runs a read on the blocking pool, bounded in time.
    async fn read<T: Send + 'static>(
        &self,
        what: &'static str,
        call: impl FnOnce(&Trees) -> Result<T, MetaError> + Send + 'static,
    ) -> Result<T, MetaError> {
        let trees = self.trees.clone();
        self.watchdog.run(what, move || call(&trees)).await
    }

    /// Runs `call` under the write lock on the blocking pool, bounded in
    /// time, not flushed: for changes that may wait for the next write's
    /// flush (the scrub's record of what it verified).
    async fn locked<T: Send + 'static>(
        &self,
        what: &'static str,
        call: impl FnOnce(&Trees) -> Result<T, MetaError> + Send + 'static,
    ) -> Result<T, MetaError> {
        self.watchdog.wait(what, || self.writer.submit(false, call)).await
    }

    /// Runs a write on the writer thread, bounded in time, if the volume has
    /// room; returns once a flush after it has made it durable.
    async fn write<T: Send + 'static>(
        &self,
        what: &'static str,
        call: impl FnOnce(&Trees) -> Result<T, MetaError> + Send + 'static,
    ) -> Result<T, MetaError> {
        let space = self.space.clone();
        self.watchdog
            .wait(what, || {
                self.writer.submit(true, move |trees| {
                    space.check(Purpose::Metadata).map_err(|low| MetaError::NoSpace(low.to_string()))?;
                    crate::failpoint::stall("sled.write");
                    call(trees)
                })
            })
            .await
    }
}

impl SledMeta {
    /// Changes a tag's record (its hold or expiry; never its binding) under
    /// the write lock: `change` returns the new record, or the outcome that
    /// refuses the change. The new record and `audit` commit together.
    async fn change_tag(
        &self,
        what: &'static str,
        repo: &RepoName,
        tag: &Tag,
        audit: AuditBuild,
        change: impl FnOnce(TagRecord, &Trees) -> Result<Result<TagRecord, TagChange>, MetaError> + Send + 'static,
    ) -> Result<TagChange, MetaError> {
        let key = repo_key(repo, tag.as_str().as_bytes());
        self.write(what, move |t| {
            let Some(record) = tag_record(&t.tags, &key)? else { return Ok(TagChange::Unknown) };
            let record = match change(record, t)? {
                Ok(record) => record,
                Err(refused) => return Ok(refused),
            };
            let json = serde_json::to_vec(&record)?;
            (&t.tags, &t.audit, &t.audit_head)
                .transaction(|(tags, audit_tree, head)| {
                    tags.insert(key.as_slice(), json.as_slice())?;
                    append_audit_in(audit_tree, head, &*audit)?;
                    Ok(())
                })
                .map_err(transaction_error)?;
            Ok(TagChange::Changed(record))
        })
        .await
    }
}

/// Appends `build`'s entries to the chain, inside a transaction that holds the
/// `audit` and `audit_head` trees, and grows the log's tree with them; returns
/// the last entry's sequence number.
fn append_audit_in(
    audit: &TransactionalTree,
    head: &TransactionalTree,
    build: &dyn BuildAudit,
) -> ConflictableTransactionResult<u64, MetaError> {
    let abort = |e: MetaError| ConflictableTransactionError::Abort(e);
    let (last, prev, mut tree) = read_head(head)?;
    let integrated = tree.size() < last && integrate_in(audit, head, &mut tree, u64::MAX)? > 0;
    let new = build.build(last + 1, &prev);
    let mut seq = last;
    let mut head_hash = None;
    for entry in new.entries {
        seq += 1;
        let hashes = super::grow_log(&mut tree, &entry.bytes, true).map_err(abort)?;
        store_log_hashes(head, &hashes)?;
        if let Some((repo, tag)) = &entry.tag_bound {
            head.insert(tag_log_key(repo, tag), &(seq - 1).to_be_bytes())?;
        }
        let mut value = entry.hash.clone().into_bytes();
        value.extend_from_slice(&entry.bytes);
        audit.insert(&seq.to_be_bytes(), value)?;
        head_hash = Some(entry.hash);
    }
    let Some(hash) = head_hash else {
        if integrated {
            write_head(head, last, &prev, &tree)?;
        }
        return Ok(last);
    };
    write_head(head, seq, &hash, &tree)?;
    head.insert(AUDIT_CHECKPOINT, serde_json::to_vec(&new.checkpoint).map_err(|e| abort(e.into()))?)?;
    Ok(seq)
}

/// The chain's head and the log's tree: `seq` u64 BE, the head's hash (64
/// hex), then the tree's frontier; a store from before the log has no
/// frontier (its tree is empty until its history is added).
fn parse_head(value: Option<&[u8]>) -> Result<(u64, String, Frontier), MetaError> {
    match value {
        None => Ok((0, amber_core::audit::GENESIS.to_owned(), Frontier::default())),
        Some(v) if v.len() >= 8 + 64 => {
            let seq = u64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
            let hash = String::from_utf8_lossy(&v[8..72]).into_owned();
            let tree = if v.len() == 72 {
                Frontier::default()
            } else {
                Frontier::from_bytes(&v[72..]).map_err(|e| MetaError::Corrupt(e.to_string()))?
            };
            Ok((seq, hash, tree))
        }
        Some(_) => Err(MetaError::Corrupt("audit head".into())),
    }
}

fn read_head(head: &TransactionalTree) -> ConflictableTransactionResult<(u64, String, Frontier), MetaError> {
    parse_head(head.get(AUDIT_HEAD)?.as_deref()).map_err(ConflictableTransactionError::Abort)
}

fn write_head(
    head: &TransactionalTree,
    seq: u64,
    hash: &str,
    tree: &Frontier,
) -> ConflictableTransactionResult<(), MetaError> {
    let mut value = seq.to_be_bytes().to_vec();
    value.extend_from_slice(hash.as_bytes());
    value.extend_from_slice(&tree.to_bytes());
    head.insert(AUDIT_HEAD, value)?;
    Ok(())
}

fn log_hash_key(index: u64) -> [u8; 10] {
    let mut key = [0u8; 10];
    key[1] = b'h';
    key[2..].copy_from_slice(&index.to_be_bytes());
    key
}

fn tag_log_key(repo: &RepoName, tag: &Tag) -> Vec<u8> {
    let mut key = b"\0t".to_vec();
    key.extend_from_slice(&repo_key(repo, tag.as_str().as_bytes()));
    key
}

fn store_log_hashes(head: &TransactionalTree, hashes: &[(u64, Hash)]) -> ConflictableTransactionResult<(), MetaError> {
    for (index, hash) in hashes {
        head.insert(&log_hash_key(*index), &hash.0)?;
    }
    Ok(())
}

/// Adds to `tree` up to `limit` stored entries it does not cover yet (the
/// history from before the log), storing their hashes; returns how many.
/// The caller writes the head.
fn integrate_in(
    audit: &TransactionalTree,
    head: &TransactionalTree,
    tree: &mut Frontier,
    limit: u64,
) -> ConflictableTransactionResult<u64, MetaError> {
    let abort = |e: MetaError| ConflictableTransactionError::Abort(e);
    let start = tree.size();
    while tree.size() - start < limit {
        let seq = tree.size() + 1;
        let Some(value) = audit.get(seq.to_be_bytes())? else { break };
        let bytes = value.get(64..).ok_or_else(|| abort(MetaError::Corrupt(format!("audit entry {seq}"))))?;
        let hashes = super::grow_log(tree, bytes, false).map_err(abort)?;
        store_log_hashes(head, &hashes)?;
        if let Some((repo, tag)) = super::tag_bound_in(bytes) {
            head.insert(tag_log_key(&repo, &tag), &(seq - 1).to_be_bytes())?;
        }
    }
    Ok(tree.size() - start)
}

fn transaction_error(err: TransactionError<MetaError>) -> MetaError {
    match err {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => e.into(),
    }
}

impl Trees {
    /// Records a token as now stored.
    fn remember(&self, record: TokenRecord) {
        self.by_secret.write().unwrap_or_else(PoisonError::into_inner).insert(record.secret_hash.clone(), record);
    }
}

/// Forgets, a bounded number at a time, ID tokens whose replay records
/// ran out before `now` (under the write lock).
fn forget_replays(t: &Trees, now: OffsetDateTime) -> Result<(), MetaError> {
    let end = now.unix_timestamp().to_be_bytes();
    for item in t.replays_by_time.range(..&end[..]).take(64) {
        let (by_time, _) = item?;
        t.replays.remove(&by_time[8..])?;
        t.replays_by_time.remove(by_time)?;
    }
    Ok(())
}

fn token_json(tokens: &Tree, id: impl AsRef<[u8]>) -> Result<Option<TokenRecord>, MetaError> {
    match tokens.get(id)? {
        Some(json) => Ok(Some(serde_json::from_slice(&json)?)),
        None => Ok(None),
    }
}

fn all_keys(keys: &Tree) -> Result<Vec<KeyRecord>, MetaError> {
    let mut records = Vec::new();
    for item in keys.iter() {
        let (_, json) = item?;
        records.push(serde_json::from_slice::<KeyRecord>(&json)?);
    }
    records.sort_by_key(|k| k.created_at);
    Ok(records)
}

impl MetaStore for SledMeta {
    async fn link_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        lease: Option<&Lease>,
        audit: AuditBuild,
    ) -> Result<Stored, MetaError> {
        let key = repo_key(repo, digest.as_bytes());
        let holder = holder_key(digest, repo.as_str().as_bytes());
        let (digest, lease) = (*digest, lease.cloned());
        // Flushed also when the link was there: a racing request may have
        // made it and not yet flushed it, and this answer promises it is durable.
        self.write("link_blob", move |t| {
            let linked = (&t.links, &t.linked_by, &t.reclaim, &t.audit, &t.audit_head)
                .transaction(|(links, linked_by, reclaim, audit_tree, head)| {
                    if let Some(json) = reclaim.get(digest.as_bytes())? {
                        let waiting: Waiting = serde_json::from_slice(&json)
                            .map_err(|e| ConflictableTransactionError::Abort(MetaError::from(e)))?;
                        if waiting.marked {
                            // Only an upload without a lease gets here: its bytes may be gone.
                            return Err(ConflictableTransactionError::Abort(MetaError::Unavailable(
                                "the blob's bytes are being reclaimed".into(),
                            )));
                        }
                        // Linked again within the grace: no longer waiting.
                        reclaim.remove(digest.as_bytes())?;
                    }
                    if links.get(&key)?.is_some() {
                        return Ok(Stored::AlreadyPresent);
                    }
                    links.insert(key.as_slice(), &link_value(size, OffsetDateTime::now_utc())[..])?;
                    linked_by.insert(holder.as_slice(), &[][..])?;
                    append_audit_in(audit_tree, head, &*audit)?;
                    Ok(Stored::Created)
                })
                .map_err(transaction_error);
            if let Some(lease) = &lease {
                t.promotions().leases.remove(&lease.0);
            }
            linked
        })
        .await
    }

    async fn begin_promote(&self, digest: &Digest) -> Result<Option<Lease>, MetaError> {
        Ok(self.promote_now(digest))
    }

    async fn end_promote(&self, lease: &Lease) -> Result<(), MetaError> {
        self.trees.promotions().leases.remove(&lease.0);
        Ok(())
    }

    async fn reclaim_lock(&self) -> Result<Option<RunnerLock>, MetaError> {
        Ok(self.trees.runner.clone().try_lock_owned().ok().map(|guard| RunnerLock(Box::new(guard))))
    }

    async fn note_orphans(&self, objects: &[Object]) -> Result<u64, MetaError> {
        let objects = objects.to_vec();
        self.write("note_orphans", move |t| {
            let now = OffsetDateTime::now_utc();
            let mut noted = 0;
            for object in objects {
                let d = object.digest;
                if t.linked_by.scan_prefix(d.as_bytes()).next().is_some()
                    || t.reclaim.get(d.as_bytes())?.is_some()
                    || t.leased(&d)
                {
                    continue;
                }
                // Waiting since the bytes were written: a crash's leftovers
                // from long ago need not wait another grace.
                let since = object.modified.map_or(now, |m| m.min(now));
                let waiting = Waiting { size: object.size, since, marked: false };
                t.reclaim.insert(d.as_bytes(), serde_json::to_vec(&waiting)?)?;
                noted += 1;
            }
            Ok(noted)
        })
        .await
    }

    async fn reclaim_candidates(
        &self,
        unlinked_before: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<Candidate>, MetaError> {
        self.read("reclaim_candidates", move |t| {
            let mut found = Vec::new();
            for item in t.reclaim.iter() {
                let (key, json) = item?;
                let waiting: Waiting = serde_json::from_slice(&json)?;
                if waiting.marked || waiting.since < unlinked_before {
                    found.push(Candidate { digest: key_digest(&key, 0)?, size: waiting.size, marked: waiting.marked });
                    if found.len() == limit {
                        break;
                    }
                }
            }
            Ok(found)
        })
        .await
    }

    async fn mark_reclaim(&self, digest: &Digest, unlinked_before: OffsetDateTime) -> Result<bool, MetaError> {
        let digest = *digest;
        self.write("mark_reclaim", move |t| {
            let Some(mut waiting) = waiting(&t.reclaim, &digest)? else { return Ok(false) };
            if waiting.marked {
                return Ok(true);
            }
            if waiting.since >= unlinked_before {
                return Ok(false);
            }
            if t.linked_by.scan_prefix(digest.as_bytes()).next().is_some() {
                t.reclaim.remove(digest.as_bytes())?;
                return Ok(false);
            }
            {
                let mut promotions = t.promotions();
                if promotions.leased(&digest) {
                    return Ok(false);
                }
                promotions.marked.insert(digest);
            }
            waiting.marked = true;
            let marked = serde_json::to_vec(&waiting)
                .map_err(MetaError::from)
                .and_then(|json| Ok(t.reclaim.insert(digest.as_bytes(), json).map(drop)?));
            if marked.is_err() {
                t.promotions().marked.remove(&digest);
            }
            marked.map(|()| true)
        })
        .await
    }

    async fn finish_reclaim(&self, digests: &[Digest], audit: AuditBuild) -> Result<(), MetaError> {
        if digests.is_empty() {
            return Ok(());
        }
        let digests = digests.to_vec();
        self.write("finish_reclaim", move |t| {
            (&t.reclaim, &t.quarantine, &t.audit, &t.audit_head)
                .transaction(|(reclaim, quarantine, audit_tree, head)| {
                    for digest in &digests {
                        reclaim.remove(digest.as_bytes())?;
                        // Deleted bytes are no longer corrupt bytes.
                        quarantine.remove(digest.as_bytes())?;
                    }
                    append_audit_in(audit_tree, head, &*audit)?;
                    Ok(())
                })
                .map_err(transaction_error)?;
            let mut promotions = t.promotions();
            for digest in &digests {
                promotions.marked.remove(digest);
            }
            Ok(())
        })
        .await
    }

    async fn linked_digests(&self, after: Option<&Digest>, limit: usize) -> Result<Vec<(Digest, u64)>, MetaError> {
        // The smallest key past every key of `after`: the digest plus one.
        let start = after.and_then(|d| next_prefix(d.as_bytes()));
        if after.is_some() && start.is_none() {
            return Ok(Vec::new());
        }
        self.read("linked_digests", move |t| {
            let mut found: Vec<(Digest, u64)> = Vec::new();
            let mut from = start.unwrap_or_default();
            while found.len() < limit {
                let Some(item) = t.linked_by.range(from.clone()..).next() else { break };
                let (key, _) = item?;
                let digest = key_digest(&key, 0)?;
                if let Some(value) = t.links.get(repo_key_bytes(&key[32..], digest.as_bytes()))? {
                    found.push((digest, parse_link(&value)?.0));
                }
                match next_prefix(digest.as_bytes()) {
                    Some(next) => from = next,
                    None => break,
                }
            }
            Ok(found)
        })
        .await
    }

    async fn quarantine(&self, entry: &Quarantined, audit: AuditBuild) -> Result<bool, MetaError> {
        let (key, json) = (entry.digest.as_bytes().to_vec(), serde_json::to_vec(entry)?);
        self.write("quarantine", move |t| {
            (&t.quarantine, &t.audit, &t.audit_head)
                .transaction(|(quarantine, audit_tree, head)| {
                    if quarantine.get(&key)?.is_some() {
                        return Ok(false);
                    }
                    quarantine.insert(key.as_slice(), json.as_slice())?;
                    append_audit_in(audit_tree, head, &*audit)?;
                    Ok(true)
                })
                .map_err(transaction_error)
        })
        .await
    }

    async fn heal(&self, digest: &Digest, audit: AuditBuild) -> Result<bool, MetaError> {
        let key = digest.as_bytes().to_vec();
        self.write("heal", move |t| {
            (&t.quarantine, &t.audit, &t.audit_head)
                .transaction(|(quarantine, audit_tree, head)| {
                    if quarantine.remove(key.as_slice())?.is_none() {
                        return Ok(false);
                    }
                    append_audit_in(audit_tree, head, &*audit)?;
                    Ok(true)
                })
                .map_err(transaction_error)
        })
        .await
    }

    async fn quarantined(&self) -> Result<Vec<Quarantined>, MetaError> {
        self.read("quarantined", |t| {
            let mut all = Vec::new();
            for item in t.quarantine.iter() {
                let (_, json) = item?;
                all.push(serde_json::from_slice(&json)?);
            }
            Ok(all)
        })
        .await
    }

    async fn scrub_progress(&self) -> Result<ScrubProgress, MetaError> {
        self.read("scrub_progress", |t| match t.db.get(SCRUB_KEY)? {
            Some(json) => Ok(serde_json::from_slice(&json)?),
            None => Ok(ScrubProgress::default()),
        })
        .await
    }

    async fn record_verified(&self, digests: &[Digest], at: OffsetDateTime) -> Result<(), MetaError> {
        let digests = digests.to_vec();
        // Flushed with the next write (the scrub saves its progress right after).
        self.locked("record_verified", move |t| {
            let mut batch = sled::Batch::default();
            for digest in &digests {
                batch.insert(digest.as_bytes(), &at.unix_timestamp().to_be_bytes()[..]);
            }
            t.verified.apply_batch(batch)?;
            Ok(())
        })
        .await
    }

    async fn last_verified(&self, digest: &Digest) -> Result<Option<OffsetDateTime>, MetaError> {
        let key = digest.as_bytes().to_vec();
        self.read("last_verified", move |t| match t.verified.get(key)? {
            Some(v) => {
                let secs =
                    i64::from_be_bytes(v.as_ref().try_into().map_err(|_| MetaError::Corrupt("verified".into()))?);
                Ok(Some(OffsetDateTime::from_unix_timestamp(secs).map_err(|e| MetaError::Corrupt(e.to_string()))?))
            }
            None => Ok(None),
        })
        .await
    }

    async fn save_scrub_progress(&self, progress: &ScrubProgress) -> Result<(), MetaError> {
        let json = serde_json::to_vec(progress)?;
        self.write("save_scrub_progress", move |t| {
            t.db.insert(SCRUB_KEY, json)?;
            Ok(())
        })
        .await
    }

    async fn scrub_lock(&self) -> Result<Option<RunnerLock>, MetaError> {
        Ok(self.trees.scrubber.clone().try_lock_owned().ok().map(|guard| RunnerLock(Box::new(guard))))
    }

    async fn reclaim_pending(&self) -> Result<(u64, u64), MetaError> {
        self.read("reclaim_pending", |t| {
            let (mut count, mut bytes) = (0, 0);
            for item in t.reclaim.iter() {
                let (_, json) = item?;
                let waiting: Waiting = serde_json::from_slice(&json)?;
                count += 1;
                bytes += waiting.size;
            }
            Ok((count, bytes))
        })
        .await
    }

    async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>, MetaError> {
        let key = repo_key(repo, digest.as_bytes());
        self.read("blob_size", move |t| {
            let Some(value) = t.links.get(key)? else {
                return Ok(None);
            };
            Ok(Some(parse_link(&value)?.0))
        })
        .await
    }

    async fn insert_token(&self, record: &TokenRecord, audit: AuditBuild) -> Result<(), MetaError> {
        let id = record.info.id.as_str().as_bytes().to_vec();
        let secret_hash = record.secret_hash.clone();
        let json = serde_json::to_vec(record)?;
        let record = record.clone();
        self.write("insert_token", move |t| {
            let inserted = (&t.tokens, &t.secrets, &t.audit, &t.audit_head)
                .transaction(|(tokens, secrets, audit_tree, head)| {
                    if tokens.get(&id)?.is_some() || secrets.get(secret_hash.as_bytes())?.is_some() {
                        return Err(ConflictableTransactionError::Abort(MetaError::Conflict("token".into())));
                    }
                    tokens.insert(id.as_slice(), json.as_slice())?;
                    secrets.insert(secret_hash.as_bytes(), id.as_slice())?;
                    append_audit_in(audit_tree, head, &*audit)?;
                    Ok(())
                })
                .map_err(transaction_error);
            if inserted.is_ok() {
                t.remember(record);
            }
            inserted
        })
        .await
    }

    async fn exchange_token(
        &self,
        record: &TokenRecord,
        publisher: &str,
        replay: &Replay,
        audit: AuditBuild,
    ) -> Result<Exchange, MetaError> {
        let id = record.info.id.as_str().as_bytes().to_vec();
        let secret_hash = record.secret_hash.clone();
        let json = serde_json::to_vec(record)?;
        let record = record.clone();
        let publisher = publisher.as_bytes().to_vec();
        let mut key = replay.issuer.as_bytes().to_vec();
        key.push(0);
        key.extend_from_slice(replay.jti.as_bytes());
        let until = replay.until.unix_timestamp().to_be_bytes();
        let mut by_time = until.to_vec();
        by_time.extend_from_slice(&key);
        self.write("exchange_token", move |t| {
            forget_replays(t, OffsetDateTime::now_utc())?;
            let trees = (&t.tokens, &t.secrets, &t.publishers, &t.replays, &t.replays_by_time, &t.audit, &t.audit_head);
            let outcome = trees
                .transaction(|(tokens, secrets, publishers, replays, replays_by_time, audit_tree, head)| {
                    if replays.get(&key)?.is_some() {
                        return Ok(Exchange::Replayed);
                    }
                    if publishers.get(&publisher)?.is_none() {
                        return Ok(Exchange::PublisherGone);
                    }
                    if tokens.get(&id)?.is_some() || secrets.get(secret_hash.as_bytes())?.is_some() {
                        return Err(ConflictableTransactionError::Abort(MetaError::Conflict("token".into())));
                    }
                    replays.insert(key.as_slice(), &until[..])?;
                    replays_by_time.insert(by_time.as_slice(), &[][..])?;
                    tokens.insert(id.as_slice(), json.as_slice())?;
                    secrets.insert(secret_hash.as_bytes(), id.as_slice())?;
                    append_audit_in(audit_tree, head, &*audit)?;
                    Ok(Exchange::Minted)
                })
                .map_err(transaction_error)?;
            if outcome == Exchange::Minted {
                t.remember(record);
            }
            Ok(outcome)
        })
        .await
    }

    async fn insert_publisher(
        &self,
        publisher: &amber_core::oidc::Publisher,
        audit: AuditBuild,
    ) -> Result<(), MetaError> {
        let id = publisher.id.as_bytes().to_vec();
        let json = serde_json::to_vec(publisher)?;
        self.write("insert_publisher", move |t| {
            (&t.publishers, &t.audit, &t.audit_head)
                .transaction(|(publishers, audit_tree, head)| {
                    if publishers.get(&id)?.is_some() {
                        return Err(ConflictableTransactionError::Abort(MetaError::Conflict("publisher".into())));
                    }
                    publishers.insert(id.as_slice(), json.as_slice())?;
                    append_audit_in(audit_tree, head, &*audit)?;
                    Ok(())
                })
                .map_err(transaction_error)
        })
        .await
    }

    async fn publishers(&self) -> Result<Vec<amber_core::oidc::Publisher>, MetaError> {
        self.read("publishers", |t| t.publishers.iter().map(|item| Ok(serde_json::from_slice(&item?.1)?)).collect())
            .await
    }

    async fn delete_publisher(&self, id: &str, audit: AuditBuild) -> Result<bool, MetaError> {
        let id = id.as_bytes().to_vec();
        self.write("delete_publisher", move |t| {
            (&t.publishers, &t.audit, &t.audit_head)
                .transaction(|(publishers, audit_tree, head)| {
                    if publishers.remove(id.as_slice())?.is_none() {
                        return Ok(false);
                    }
                    append_audit_in(audit_tree, head, &*audit)?;
                    Ok(true)
                })
                .map_err(transaction_error)
        })
        .await
    }

    async fn token(&self, id: &TokenId) -> Result<Option<TokenRecord>, MetaError> {
        let id = id.as_str().to_owned();
        self.read("token", move |t| token_json(&t.tokens, id)).await
    }

    async fn token_by_hash(&self, secret_hash: &str) -> Result<Option<TokenRecord>, MetaError> {
        Ok(self.trees.by_secret.read().unwrap_or_else(PoisonError::into_inner).get(secret_hash).cloned())
    }

    async fn touch_token(&self, id: &TokenId, at: OffsetDateTime) -> Result<(), MetaError> {
        let id = id.as_str().to_owned();
        // A hint, not flushed at once; but it is a write, so it keeps the
        // reserve like any other.
        let space = self.space.clone();
        self.read("touch_token", move |t| {
            space.check(Purpose::Metadata).map_err(|low| MetaError::NoSpace(low.to_string()))?;
            // Read-modify-write retried on conflict, so a concurrent change to
            // the token (a revocation, say) is never overwritten by a stale copy.
            let touched = |old: Option<&[u8]>| {
                let mut record: TokenRecord = serde_json::from_slice(old?).ok()?;
                record.info.last_used_at = Some(at);
                Some(record)
            };
            let previous =
                t.tokens.fetch_and_update(id, |old| touched(old).and_then(|r| serde_json::to_vec(&r).ok()))?;
            if let Some(record) = touched(previous.as_deref()) {
                t.remember(record);
            }
            Ok(())
        })
        .await
    }

    async fn list_tokens(&self, after: Option<&str>, limit: usize) -> Result<Vec<TokenRecord>, MetaError> {
        let start = after.map_or_else(Vec::new, |a| format!("{a}\0").into_bytes());
        self.read("list_tokens", move |t| {
            let mut records = Vec::new();
            for item in t.tokens.range(start..).take(limit) {
                let (_, json) = item?;
                records.push(serde_json::from_slice(&json)?);
            }
            Ok(records)
        })
        .await
    }

    async fn revoke_token(&self, id: &TokenId, at: OffsetDateTime, audit: AuditBuild) -> Result<Revocation, MetaError> {
        let id = id.as_str().to_owned();
        self.write("revoke_token", move |t| {
            let abort = |e: serde_json::Error| ConflictableTransactionError::Abort(MetaError::from(e));
            (&t.tokens, &t.audit, &t.audit_head)
                .transaction(|(tokens, audit_tree, head)| {
                    let Some(json) = tokens.get(id.as_str())? else { return Ok(Revocation::Unknown) };
                    let mut record: TokenRecord = serde_json::from_slice(&json).map_err(abort)?;
                    if record.info.revoked_at.is_some() {
                        return Ok(Revocation::AlreadyRevoked(record));
                    }
                    record.info.revoked_at = Some(at);
                    tokens.insert(id.as_str(), serde_json::to_vec(&record).map_err(abort)?)?;
                    append_audit_in(audit_tree, head, &*audit)?;
                    Ok(Revocation::Revoked(record))
                })
                .map_err(transaction_error)
                .inspect(|outcome| {
                    if let Revocation::Revoked(record) = outcome {
                        t.remember(record.clone());
                    }
                })
        })
        .await
    }

    async fn rotate_token(
        &self,
        new: &TokenRecord,
        old_expires_at: OffsetDateTime,
        audit: AuditBuild,
    ) -> Result<Rotation, MetaError> {
        let old_id = new
            .info
            .rotated_from
            .as_ref()
            .ok_or_else(|| MetaError::Corrupt("rotation without rotated_from".into()))?
            .as_str()
            .to_owned();
        let new_json = serde_json::to_vec(new)?;
        let (new_id, new_hash) = (new.info.id.clone(), new.secret_hash.clone());
        let new = new.clone();
        self.write("rotate_token", move |t| {
            let abort = |e: serde_json::Error| ConflictableTransactionError::Abort(MetaError::from(e));
            let outcome = (&t.tokens, &t.secrets, &t.audit, &t.audit_head)
                .transaction(|(tokens, secrets, audit_tree, head)| {
                    let Some(json) = tokens.get(old_id.as_str())? else { return Ok((Rotation::Unknown, None)) };
                    let mut old: TokenRecord = serde_json::from_slice(&json).map_err(abort)?;
                    let now = OffsetDateTime::now_utc();
                    if old.info.revoked_at.is_some() {
                        return Ok((Rotation::Inactive("the token is revoked"), None));
                    }
                    if old.info.expires_at <= now {
                        return Ok((Rotation::Inactive("the token has expired"), None));
                    }
                    if old.info.rotated_to.is_some() {
                        return Ok((Rotation::Inactive("the token was already rotated; rotate its replacement"), None));
                    }
                    old.info.rotated_to = Some(new_id.clone());
                    old.info.expires_at = old.info.expires_at.min(old_expires_at);
                    tokens.insert(old_id.as_str(), serde_json::to_vec(&old).map_err(abort)?)?;
                    tokens.insert(new_id.as_str(), new_json.as_slice())?;
                    secrets.insert(new_hash.as_bytes(), new_id.as_str())?;
                    append_audit_in(audit_tree, head, &*audit)?;
                    Ok((Rotation::Rotated, Some(old)))
                })
                .map_err(transaction_error)?;
            if let (Rotation::Rotated, Some(old)) = &outcome {
                t.remember(old.clone());
                t.remember(new);
            }
            Ok(outcome.0)
        })
        .await
    }

    async fn append_audit(&self, build: AuditBuild) -> Result<u64, MetaError> {
        self.write("append_audit", move |t| {
            (&t.audit, &t.audit_head)
                .transaction(|(audit, head)| append_audit_in(audit, head, &*build))
                .map_err(transaction_error)
        })
        .await
    }

    async fn audit_entries(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, MetaError> {
        self.read("audit_entries", move |t| {
            let mut entries = Vec::new();
            for item in t.audit.range((after + 1).to_be_bytes()..).take(limit) {
                let (key, value) = item?;
                let seq =
                    u64::from_be_bytes(key.as_ref().try_into().map_err(|_| MetaError::Corrupt("audit key".into()))?);
                if value.len() < 64 {
                    return Err(MetaError::Corrupt(format!("audit entry {seq}")));
                }
                entries.push(AuditEntry {
                    seq,
                    hash: String::from_utf8_lossy(&value[..64]).into_owned(),
                    entry: String::from_utf8_lossy(&value[64..]).into_owned(),
                    log_index: seq - 1,
                });
            }
            Ok(entries)
        })
        .await
    }

    async fn audit_checkpoint(&self) -> Result<Option<Envelope>, MetaError> {
        self.read("audit_checkpoint", |t| match t.audit_head.get(AUDIT_CHECKPOINT)? {
            Some(json) => Ok(Some(serde_json::from_slice(&json)?)),
            None => Ok(None),
        })
        .await
    }

    async fn log_tree(&self) -> Result<Frontier, MetaError> {
        self.read("log_tree", |t| {
            let (_, _, tree) = parse_head(t.audit_head.get(AUDIT_HEAD)?.as_deref())?;
            // Read, then flushed: what was read is on disk before anyone
            // signs it. (Writers flush after their commit, outside the lock.)
            t.db.flush()?;
            Ok(tree)
        })
        .await
    }

    async fn log_hashes(&self, indexes: Vec<u64>) -> Result<Vec<Hash>, MetaError> {
        self.read("log_hashes", move |t| {
            indexes
                .iter()
                .map(|&i| match t.audit_head.get(log_hash_key(i))? {
                    Some(v) if v.len() == 32 => Ok(Hash(v.as_ref().try_into().expect("32 bytes"))),
                    _ => Err(MetaError::Corrupt(format!("log hash {i}"))),
                })
                .collect()
        })
        .await
    }

    async fn log_checkpoint(&self) -> Result<Option<(u64, String)>, MetaError> {
        self.read("log_checkpoint", |t| match t.audit_head.get(LOG_CHECKPOINT)? {
            Some(v) if v.len() > 8 => Ok(Some((
                u64::from_be_bytes(v[..8].try_into().expect("8 bytes")),
                String::from_utf8_lossy(&v[8..]).into_owned(),
            ))),
            Some(_) => Err(MetaError::Corrupt("log checkpoint".into())),
            None => Ok(None),
        })
        .await
    }

    async fn claim_log_origin(&self, candidate: &str) -> Result<String, MetaError> {
        let candidate = candidate.to_owned();
        self.write("claim_log_origin", move |t| {
            if let Some(stored) = t.audit_head.get(LOG_ORIGIN)? {
                return String::from_utf8(stored.to_vec()).map_err(|_| MetaError::Corrupt("log origin".into()));
            }
            t.audit_head.insert(LOG_ORIGIN, candidate.as_bytes())?;
            Ok(candidate)
        })
        .await
    }

    async fn rename_log_origin(&self, origin: &str) -> Result<bool, MetaError> {
        let origin = origin.to_owned();
        self.write("rename_log_origin", move |t| {
            if t.audit_head.contains_key(LOG_CHECKPOINT)? {
                return Ok(false);
            }
            t.audit_head.insert(LOG_ORIGIN, origin.as_bytes())?;
            Ok(true)
        })
        .await
    }

    async fn put_log_checkpoint(&self, size: u64, note: &str) -> Result<bool, MetaError> {
        let mut value = size.to_be_bytes().to_vec();
        value.extend_from_slice(note.as_bytes());
        self.write("put_log_checkpoint", move |t| {
            let held = t.audit_head.get(LOG_CHECKPOINT)?;
            if held.as_ref().is_some_and(|v| v.len() >= 8 && u64::from_be_bytes(v[..8].try_into().expect("8")) >= size)
            {
                return Ok(false);
            }
            t.audit_head.insert(LOG_CHECKPOINT, value)?;
            Ok(true)
        })
        .await
    }

    async fn tag_log_index(&self, repo: &RepoName, tag: &Tag) -> Result<Option<u64>, MetaError> {
        let key = tag_log_key(repo, tag);
        self.read("tag_log_index", move |t| match t.audit_head.get(key)? {
            Some(v) if v.len() == 8 => Ok(Some(u64::from_be_bytes(v.as_ref().try_into().expect("8 bytes")))),
            Some(_) => Err(MetaError::Corrupt("tag log index".into())),
            None => Ok(None),
        })
        .await
    }

    async fn integrate_log(&self, limit: usize) -> Result<u64, MetaError> {
        // Read first: a store whose tree is whole is not written to at start.
        let behind = self
            .read("integrate_log", |t| {
                let (seq, _, tree) = parse_head(t.audit_head.get(AUDIT_HEAD)?.as_deref())?;
                Ok(tree.size() < seq)
            })
            .await?;
        if !behind {
            return Ok(0);
        }
        self.write("integrate_log", move |t| {
            (&t.audit, &t.audit_head)
                .transaction(|(audit, head)| {
                    let (seq, hash, mut tree) = read_head(head)?;
                    let added = integrate_in(audit, head, &mut tree, limit as u64)?;
                    if added > 0 {
                        write_head(head, seq, &hash, &tree)?;
                    }
                    Ok(added)
                })
                .map_err(transaction_error)
        })
        .await
    }

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

    async fn bind_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
        envelope: &Envelope,
        files: &[(Digest, u64)],
        at: OffsetDateTime,
        audit: AuditBuild,
    ) -> Result<Bound, MetaError> {
        let tag_key = repo_key(repo, tag.as_str().as_bytes());
        let manifest_key = repo_key(repo, digest.as_bytes());
        let record = serde_json::to_vec(&TagRecord::bound(*digest, at))?;
        let envelope = serde_json::to_vec(envelope)?;
        let (repo, tag, manifest, files) = (repo.clone(), tag.clone(), *digest, files.to_vec());
        self.write("bind_tag", move |t| {
            if let Some(existing) = tag_record(&t.tags, &tag_key)? {
                return Ok(Bound::Existing(existing));
            }
            // Under the write lock: no unlink can run between this check and the commit.
            let mut gone = Vec::new();
            for (blob, size) in &files {
                match t.links.get(repo_key(&repo, blob.as_bytes()))? {
                    Some(value) if parse_link(&value)?.0 == *size => {}
                    _ => gone.push(*blob),
                }
            }
            if !gone.is_empty() {
                return Ok(Bound::BlobsGone(gone));
            }
            let refs: Vec<Vec<u8>> =
                files.iter().map(|(blob, _)| ref_key(repo.as_str().as_bytes(), blob, &manifest)).collect();
            (&t.tags, &t.manifests, &t.refs, &t.audit, &t.audit_head)
                .transaction(|(tags, manifests, refs_tree, audit_tree, head)| {
                    if let Some(existing) = tags.get(&tag_key)? {
                        let existing = serde_json::from_slice(&existing)
                            .map_err(|e| ConflictableTransactionError::Abort(MetaError::from(e)))?;
                        return Ok(Bound::Existing(existing));
                    }
                    manifests.insert(manifest_key.as_slice(), envelope.as_slice())?;
                    tags.insert(tag_key.as_slice(), record.as_slice())?;
                    for key in &refs {
                        refs_tree.insert(key.as_slice(), tag.as_str().as_bytes())?;
                    }
                    append_audit_in(audit_tree, head, &*audit)?;
                    Ok(Bound::Created)
                })
                .map_err(transaction_error)
        })
        .await
    }

    async fn hold_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        hold: &Hold,
        audit: AuditBuild,
    ) -> Result<TagChange, MetaError> {
        let hold = hold.clone();
        self.change_tag("hold_tag", repo, tag, audit, move |mut record, _| {
            if record.expiry.is_some() {
                return Ok(Err(TagChange::Expired(record)));
            }
            if record.hold.is_some() {
                return Ok(Err(TagChange::Unchanged(record)));
            }
            record.hold = Some(hold);
            Ok(Ok(record))
        })
        .await
    }

    async fn release_tag(&self, repo: &RepoName, tag: &Tag, audit: AuditBuild) -> Result<TagChange, MetaError> {
        self.change_tag("release_tag", repo, tag, audit, |mut record, _| {
            if record.hold.take().is_none() {
                return Ok(Err(TagChange::Unchanged(record)));
            }
            Ok(Ok(record))
        })
        .await
    }

    async fn expire_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        expiry: &Expiry,
        policy: Option<&PolicyInfo>,
        audit: AuditBuild,
    ) -> Result<TagChange, MetaError> {
        let expiry = expiry.clone();
        let policy = policy.map(|p| (p.scope.clone(), p.digest));
        let repo_name = repo.clone();
        self.change_tag("expire_tag", repo, tag, audit, move |mut record, t| {
            if record.expiry.is_some() {
                return Ok(Err(TagChange::Unchanged(record)));
            }
            if record.hold.is_some() {
                return Ok(Err(TagChange::Held(record)));
            }
            if let Some((scope, digest)) = &policy {
                let current = effective_policy(&t.policies, &repo_name)?;
                if current.is_none_or(|c| &c.scope != scope || &c.digest != digest) {
                    return Ok(Err(TagChange::Stale));
                }
            }
            record.expiry = Some(expiry);
            Ok(Ok(record))
        })
        .await
    }

    async fn unlink_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        created_before: OffsetDateTime,
        audit: AuditBuild,
    ) -> Result<Unlink, MetaError> {
        let (repo, digest) = (repo.clone(), *digest);
        self.write("unlink_blob", move |t| {
            let link_key = repo_key(&repo, digest.as_bytes());
            let Some(value) = t.links.get(&link_key)? else { return Ok(Unlink::Gone) };
            if parse_link(&value)?.1 >= created_before {
                return Ok(Unlink::Fresh);
            }
            // Under the write lock, so no bind commits between this check and the removal.
            let prefix = repo_key(&repo, digest.as_bytes());
            for item in t.refs.scan_prefix(&prefix) {
                let (_, tag) = item?;
                let tag = std::str::from_utf8(&tag).map_err(|e| MetaError::Corrupt(e.to_string()))?;
                match tag_record(&t.tags, &repo_key(&repo, tag.as_bytes()))? {
                    Some(record) if record.expiry.is_none() => return Ok(Unlink::Referenced),
                    _ => {}
                }
            }
            let holder = holder_key(&digest, repo.as_str().as_bytes());
            // Under the write lock: no other link of the digest appears before the commit.
            let last =
                t.linked_by.scan_prefix(digest.as_bytes()).keys().all(|k| k.is_ok_and(|k| k == holder.as_slice()));
            let size = parse_link(&value)?.0;
            let waiting = serde_json::to_vec(&Waiting { size, since: OffsetDateTime::now_utc(), marked: false })?;
            (&t.links, &t.linked_by, &t.reclaim, &t.audit, &t.audit_head)
                .transaction(|(links, linked_by, reclaim, audit_tree, head)| {
                    if links.remove(link_key.as_slice())?.is_none() {
                        return Ok(Unlink::Gone);
                    }
                    linked_by.remove(holder.as_slice())?;
                    if last && reclaim.get(digest.as_bytes())?.is_none() {
                        reclaim.insert(digest.as_bytes(), waiting.as_slice())?;
                    }
                    append_audit_in(audit_tree, head, &*audit)?;
                    Ok(Unlink::Unlinked)
                })
                .map_err(transaction_error)
        })
        .await
    }

    async fn retention_view(&self, repo: &RepoName) -> Result<RepoView, MetaError> {
        let prefix = repo_key(repo, b"");
        self.read("retention_view", move |t| {
            let mut view = RepoView::default();
            for item in t.tags.scan_prefix(&prefix) {
                let (key, json) = item?;
                let name = std::str::from_utf8(&key[prefix.len()..]).map_err(|e| MetaError::Corrupt(e.to_string()))?;
                let record: TagRecord = serde_json::from_slice(&json)?;
                view.tags.push(TagView {
                    tag: name.parse().map_err(|e: amber_core::name::NameError| MetaError::Corrupt(e.to_string()))?,
                    manifest: record.digest,
                    bound_at: record.created_at,
                    held: record.hold.is_some(),
                    expired: record.expiry.is_some(),
                });
            }
            for item in t.links.scan_prefix(&prefix) {
                let (key, value) = item?;
                let (size, created_at) = parse_link(&value)?;
                view.links.push(LinkView { digest: key_digest(&key, prefix.len())?, size, created_at });
            }
            for item in t.refs.scan_prefix(&prefix) {
                let (key, _) = item?;
                view.references.push((key_digest(&key, prefix.len() + 32)?, key_digest(&key, prefix.len())?));
            }
            Ok(view)
        })
        .await
    }

    async fn repositories(&self, after: Option<&RepoName>, limit: usize) -> Result<Vec<RepoName>, MetaError> {
        // The smallest key past every key of `after`: its name and \x01.
        let start = after.map(|a| repo_key(a, b"")).map(|mut k| {
            *k.last_mut().expect("a NUL at least") = 1;
            k
        });
        self.read("repositories", move |t| {
            let mut names = std::collections::BTreeSet::new();
            // Each tree is walked by jumping from one repository to the next.
            for tree in [&t.links, &t.tags] {
                let mut from = start.clone().unwrap_or_default();
                let mut found = 0;
                while found < limit {
                    let Some(item) = tree.range(from.clone()..).next() else { break };
                    let (key, _) = item?;
                    let end = key.iter().position(|b| *b == 0).ok_or_else(|| MetaError::Corrupt("key".into()))?;
                    let name = std::str::from_utf8(&key[..end]).map_err(|e| MetaError::Corrupt(e.to_string()))?;
                    names.insert(
                        name.parse::<RepoName>()
                            .map_err(|e: amber_core::name::NameError| MetaError::Corrupt(e.to_string()))?,
                    );
                    found += 1;
                    from = key[..end].to_vec();
                    from.push(1);
                }
            }
            Ok(names.into_iter().take(limit).collect())
        })
        .await
    }

    async fn put_policy(&self, info: &PolicyInfo, audit: AuditBuild) -> Result<(), MetaError> {
        let (scope, json) = (info.scope.to_string(), serde_json::to_vec(info)?);
        self.write("put_policy", move |t| {
            (&t.policies, &t.audit, &t.audit_head)
                .transaction(|(policies, audit_tree, head)| {
                    policies.insert(scope.as_bytes(), json.as_slice())?;
                    append_audit_in(audit_tree, head, &*audit)?;
                    Ok(())
                })
                .map_err(transaction_error)
        })
        .await
    }

    async fn delete_policy(&self, scope: &RepoPattern, digest: &Digest, audit: AuditBuild) -> Result<bool, MetaError> {
        let (scope, digest) = (scope.to_string(), *digest);
        self.write("delete_policy", move |t| {
            (&t.policies, &t.audit, &t.audit_head)
                .transaction(|(policies, audit_tree, head)| {
                    let Some(json) = policies.get(scope.as_bytes())? else { return Ok(false) };
                    let stored: PolicyInfo = serde_json::from_slice(&json)
                        .map_err(|e| ConflictableTransactionError::Abort(MetaError::from(e)))?;
                    if stored.digest != digest {
                        return Ok(false);
                    }
                    policies.remove(scope.as_bytes())?;
                    append_audit_in(audit_tree, head, &*audit)?;
                    Ok(true)
                })
                .map_err(transaction_error)
        })
        .await
    }

    async fn policies(&self) -> Result<Vec<PolicyInfo>, MetaError> {
        self.read("policies", |t| {
            let mut all = Vec::new();
            for item in t.policies.iter() {
                let (_, json) = item?;
                all.push(serde_json::from_slice(&json)?);
            }
            Ok(all)
        })
        .await
    }

    async fn tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<TagRecord>, MetaError> {
        let key = repo_key(repo, tag.as_str().as_bytes());
        self.read("tag", move |t| tag_record(&t.tags, &key)).await
    }

    async fn manifest(&self, repo: &RepoName, digest: &Digest) -> Result<Option<Envelope>, MetaError> {
        let key = repo_key(repo, digest.as_bytes());
        self.read("manifest", move |t| match t.manifests.get(key)? {
            Some(json) => Ok(Some(serde_json::from_slice(&json)?)),
            None => Ok(None),
        })
        .await
    }

    async fn list_tags(&self, repo: &RepoName, after: Option<&str>, limit: usize) -> Result<Vec<TagEntry>, MetaError> {
        let prefix = repo_key(repo, b"");
        let start = match after {
            // The smallest key after `after`: itself followed by a NUL.
            Some(after) => repo_key(repo, format!("{after}\0").as_bytes()),
            None => prefix.clone(),
        };
        self.read("list_tags", move |t| {
            let mut entries = Vec::new();
            for item in t.tags.range(start..) {
                let (key, json) = item?;
                if !key.starts_with(&prefix) || entries.len() == limit {
                    break;
                }
                let name = std::str::from_utf8(&key[prefix.len()..]).map_err(|e| MetaError::Corrupt(e.to_string()))?;
                let record: TagRecord = serde_json::from_slice(&json)?;
                entries.push(
                    record.entry(
                        name.parse().map_err(|e: amber_core::name::NameError| MetaError::Corrupt(e.to_string()))?,
                    ),
                );
            }
            Ok(entries)
        })
        .await
    }

    /// Ready when a read answers and the volume keeps the metadata's reserve.
    async fn create_upload(&self, record: &UploadRecord, most: usize) -> Result<Created, MetaError> {
        let json = serde_json::to_vec(record)?;
        let (id, token) = (record.id.clone(), record.token.clone());
        let parts = match &record.kind {
            UploadKind::Final { parts } => parts.clone(),
            _ => Vec::new(),
        };
        // Writes run one at a time, so the count and the claims hold until
        // the inserts.
        self.write("create_upload", move |t| {
            let prefix = by_token_prefix(token.as_str());
            if t.uploads_by_token.scan_prefix(&prefix).take(most).count() >= most {
                return Ok(Created::TooMany);
            }
            let mut claimed = Vec::with_capacity(parts.len());
            for part in &parts {
                let Some(stored) = t.uploads.get(part.as_str())? else { return Ok(Created::PartTaken(part.clone())) };
                let mut stored: UploadRecord = serde_json::from_slice(&stored)?;
                if stored.token != token || stored.claimed_by.is_some() {
                    return Ok(Created::PartTaken(part.clone()));
                }
                stored.claimed_by = Some(id.clone());
                claimed.push((part, serde_json::to_vec(&stored)?));
            }
            for (part, json) in claimed {
                t.uploads.insert(part.as_str(), json)?;
            }
            let mut key = prefix;
            key.extend_from_slice(id.as_str().as_bytes());
            t.uploads.insert(id.as_str(), json)?;
            t.uploads_by_token.insert(key, &[][..])?;
            Ok(Created::Created)
        })
        .await
    }

    async fn upload(&self, token: &TokenId, id: &UploadId) -> Result<Option<UploadRecord>, MetaError> {
        let (token, id) = (token.clone(), id.clone());
        self.read("upload", move |t| {
            let Some(json) = t.uploads.get(id.as_str())? else { return Ok(None) };
            let record: UploadRecord = serde_json::from_slice(&json)?;
            Ok((record.token == token).then_some(record))
        })
        .await
    }

    async fn update_upload(&self, record: &UploadRecord, from: u64) -> Result<Updated, MetaError> {
        let json = serde_json::to_vec(record)?;
        let id = record.id.clone();
        self.write("update_upload", move |t| {
            let Some(old) = t.uploads.get(id.as_str())? else { return Ok(Updated::Gone) };
            let old: UploadRecord = serde_json::from_slice(&old)?;
            if old.offset != from {
                return Ok(Updated::Moved(old.offset));
            }
            t.uploads.insert(id.as_str(), json)?;
            Ok(Updated::Done)
        })
        .await
    }

    async fn delete_upload(&self, id: &UploadId) -> Result<bool, MetaError> {
        let id = id.clone();
        self.write("delete_upload", move |t| {
            let Some(old) = t.uploads.remove(id.as_str())? else { return Ok(false) };
            let old: UploadRecord = serde_json::from_slice(&old)?;
            let mut key = by_token_prefix(old.token.as_str());
            key.extend_from_slice(id.as_str().as_bytes());
            t.uploads_by_token.remove(key)?;
            if let UploadKind::Final { parts } = &old.kind {
                for part in parts {
                    let Some(stored) = t.uploads.get(part.as_str())? else { continue };
                    let mut stored: UploadRecord = serde_json::from_slice(&stored)?;
                    if stored.claimed_by.as_ref() == Some(&id) {
                        stored.claimed_by = None;
                        t.uploads.insert(part.as_str(), serde_json::to_vec(&stored)?)?;
                    }
                }
            }
            Ok(true)
        })
        .await
    }

    async fn list_uploads(&self, after: Option<&UploadId>, limit: usize) -> Result<Vec<UploadRecord>, MetaError> {
        let after = after.map(|id| id.as_str().to_owned());
        self.read("list_uploads", move |t| {
            let range = match &after {
                Some(after) => t
                    .uploads
                    .range::<&[u8], _>((std::ops::Bound::Excluded(after.as_bytes()), std::ops::Bound::Unbounded)),
                None => t.uploads.iter(),
            };
            let mut found = Vec::new();
            for item in range.take(limit) {
                let (_, json) = item?;
                found.push(serde_json::from_slice(&json)?);
            }
            Ok(found)
        })
        .await
    }

    async fn check(&self) -> Result<(), MetaError> {
        let space = self.space.clone();
        self.read("check", move |t| {
            t.db.get(SCHEMA_KEY)?.ok_or_else(|| MetaError::Corrupt("schema key missing".into()))?;
            space.check(Purpose::Metadata).map_err(|low| MetaError::NoSpace(low.to_string()))
        })
        .await
    }
}

/// The `uploads_by_token` keys of one token's uploads.
fn by_token_prefix(token: &str) -> Vec<u8> {
    let mut key = token.as_bytes().to_vec();
    key.push(0);
    key
}
