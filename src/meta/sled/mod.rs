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
//! oci_aliases `sha256:<hex>` / `sha512:<hex>` -> digest(32 bytes): OCI names of stored blobs
//! oci_sha256 digest(32 bytes)          -> `sha256:<hex>`: the way back, for OCI views of /v1/ blobs
//! oci_manifests repo \0 OCI digest   -> OciManifest (JSON): OCI manifests, byte-exact
//! oci_referrers repo \0 subject \0 OCI digest -> the referrer's descriptor (JSON)
//! oci_tags   repo \0 OCI digest       -> the first tag bound to that OCI manifest
//! attestations repo \0 manifest(32)  -> the binding's attestations (JSON list of DSSE envelopes)
//! stats      `r` repo -> its counters; `s` -> the store's (see `stats`)
//! runs       `r` id -> RunInfo (JSON); `k` kind \0 id -> (); `a` kind -> the id of its active run
//!            (default tree) "scrub"    -> ScrubProgress (JSON)
//! audit      seq, u64 big-endian       -> hash (64 hex) + entry bytes
//! audit_head "head"                    -> seq u64 BE + hash (64 hex) + the log's
//!                                         tree (`Frontier::to_bytes`; absent before the log)
//!            "checkpoint"              -> signed checkpoint envelope (JSON)
//!            "log_checkpoint"          -> tree size u64 BE + signed note
//!            "cosigned_checkpoint"     -> tree size u64 BE + the note with its witnesses' cosignatures
//!            "log_origin"              -> the log's origin (UTF-8), fixed at the first start
//!            \0 'h' index u64 BE       -> a stored hash of the tree (32 bytes)
//!            \0 't' repo \0 tag        -> log index u64 BE of its tag_bound entry
//! ```
//! The log's tree lives beside the chain's head so that every transaction
//! that appends an entry, holding those two trees, also grows the tree.
//! `\0` cannot occur in a validated name, so prefixes never collide. Every write
//! is followed by a flush before it is acknowledged. Schema 1 (links without
//! their creation time, no `refs`), schema 2 (no `linked_by`) and schema 3 (no
//! `stats`) are upgraded in place at open. Promotion leases are kept in memory: only this process
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

mod attestations;
mod audit;
mod cache;
mod keys;
mod links;
mod log;
mod oci;
mod publishers;
mod reclaim;
mod retention;
mod runs;
mod scrub;
mod stats;
mod tags;
mod tokens;
mod uploads;

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use amber_core::dsse::Envelope;
use amber_core::log::{Frontier, Hash};
use amber_core::manifest::ManifestPayload;
use amber_core::wire::PolicyInfo;
use amber_core::{Digest, RepoName, Tag};
use sled::transaction::{
    ConflictableTransactionError, ConflictableTransactionResult, TransactionError, TransactionalTree,
};
use sled::{Db, Transactional, Tree};
use time::OffsetDateTime;

use self::cache::ReadCache;
use super::watchdog::Watchdog;
use super::writer::Writer;
use super::{AuditBuild, BuildAudit, KeyRecord, Lease, MetaError, MetaStore, TagChange, TagRecord, TokenRecord};
use crate::config::FreeSpace;
use crate::space::{Purpose, SpaceReserve};

const SCHEMA_KEY: &[u8] = b"schema";
const SCHEMA_VERSION: &[u8] = b"4";
const AUDIT_HEAD: &[u8] = b"head";
const AUDIT_CHECKPOINT: &[u8] = b"checkpoint";
const LOG_CHECKPOINT: &[u8] = b"log_checkpoint";
const COSIGNED_CHECKPOINT: &[u8] = b"cosigned_checkpoint";
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
    oci_aliases: Tree,
    oci_sha256: Tree,
    oci_manifests: Tree,
    oci_referrers: Tree,
    oci_tags: Tree,
    attestations: Tree,
    runs: Tree,
    /// The counters (see `stats`).
    stats: Tree,
    /// Held by the run of each kind (`runs::lock_index`).
    run_locks: Vec<Arc<tokio::sync::Mutex<()>>>,
    /// Held by the reclaim run.
    runner: Arc<tokio::sync::Mutex<()>>,
    /// Held by the scrubber.
    scrubber: Arc<tokio::sync::Mutex<()>>,
    audit: Tree,
    audit_head: Tree,
    /// Sizes of linked blobs by link key (see `cache`): a link is made
    /// once with its size and only `unlink_blob` removes it.
    link_sizes: ReadCache<Vec<u8>, u64>,
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

/// Schema 2 to 3: `linked_by`, every link by digest. Idempotent.
fn upgrade_from_2(t: &Trees) -> Result<(), MetaError> {
    for item in t.links.iter() {
        let (key, _) = item?;
        let repo_len = key.len().checked_sub(33).ok_or_else(|| MetaError::Corrupt("link key".into()))?;
        t.linked_by.insert(holder_key(&key_digest(&key, repo_len + 1)?, &key[..repo_len]), &[][..])?;
    }
    Ok(())
}

/// Schema 3 to 4: `stats`, the counters, recounted. Idempotent; the schema
/// key is written last.
fn upgrade_from_3(t: &Trees) -> Result<(), MetaError> {
    stats::rewrite(t)?;
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
        // sled counts less than it holds: 4 MiB, not 16, took 24 MiB off
        // the RSS after 200,000 pushes at the same push, HEAD and GET rates
        // (BENCHMARKS.md, "Scale").
        const SLED_CACHE_BYTES: u64 = 4 << 20;
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
            Some(v) if v.as_ref() == b"3" => Some(3),
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
            oci_aliases: db.open_tree("oci_aliases")?,
            oci_sha256: db.open_tree("oci_sha256")?,
            oci_manifests: db.open_tree("oci_manifests")?,
            oci_referrers: db.open_tree("oci_referrers")?,
            oci_tags: db.open_tree("oci_tags")?,
            attestations: db.open_tree("attestations")?,
            runs: db.open_tree("runs")?,
            stats: db.open_tree("stats")?,
            run_locks: amber_core::wire::RunKind::ALL.iter().map(|_| Arc::default()).collect(),
            runner: Arc::new(tokio::sync::Mutex::new(())),
            scrubber: Arc::new(tokio::sync::Mutex::new(())),
            audit: db.open_tree("audit")?,
            audit_head: db.open_tree("audit_head")?,
            link_sizes: ReadCache::default(),
            db,
        };
        if from == Some(1) {
            upgrade_from_1(&trees).context("upgrading the metadata from schema 1")?;
        }
        if from.is_some_and(|f| f <= 2) {
            upgrade_from_2(&trees).context("upgrading the metadata from schema 2")?;
        }
        if from.is_some() {
            upgrade_from_3(&trees).context("upgrading the metadata from schema 3")?;
        }
        runs::abandon_at_open(&trees.runs)?;
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
    /// Changes a tag's record (its hold; never its binding, and an expiry is
    /// `expire_tags`'s, which counts it) under
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
