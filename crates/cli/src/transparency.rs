//! The client's side of the transparency log: a tag's receipt proves that
//! its binding is in the log, and the newest checkpoint seen of each log is
//! kept (`--log-state`) so that a later checkpoint is accepted only with a
//! consistency proof from it. A rolled-back or forked history is refused even
//! when every signature on it is valid.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use amber_core::audit::{EntryBody, Event};
use amber_core::log::{self as tlog, Checkpoint, Receipt};
use amber_core::{Digest, RepoName, Tag};
use serde::{Deserialize, Serialize};

use crate::client::Client;
use crate::error::{CliError, Result};

fn verify_error(e: impl std::fmt::Display) -> CliError {
    CliError::Verify(format!("transparency log: {e}"))
}

/// Opens a checkpoint with whichever pinned log key signed it.
pub fn open_checkpoint(vkeys: &[String], note: &str) -> Result<Checkpoint> {
    open_with(vkeys, note).map(|(checkpoint, _)| checkpoint)
}

/// The checkpoint and the vkey that verified it.
fn open_with<'a>(vkeys: &'a [String], note: &str) -> Result<(Checkpoint, &'a str)> {
    tlog::open_with_any(vkeys, note).map_err(verify_error)
}

/// Checks a receipt offline: the checkpoint's signature, that the entry is
/// its leaf, and that the entry binds `repo:tag` to `digest`; returns the
/// checkpoint and the entry's index.
pub fn check_receipt(
    vkeys: &[String],
    text: &str,
    repo: &RepoName,
    tag: &Tag,
    digest: &Digest,
) -> Result<(Checkpoint, u64)> {
    let receipt = Receipt::parse(text).map_err(verify_error)?;
    let checkpoint = open_checkpoint(vkeys, &receipt.checkpoint)?;
    tlog::check_inclusion(&checkpoint, receipt.index, tlog::leaf_hash(&receipt.entry), &receipt.proof)
        .map_err(verify_error)?;
    let body: EntryBody = serde_json::from_slice(&receipt.entry)
        .map_err(|e| verify_error(format!("the receipt's entry is not an audit entry: {e}")))?;
    if body.seq != receipt.index + 1 {
        return Err(verify_error(format!("the entry says it is entry {}, not leaf {}", body.seq, receipt.index)));
    }
    match &body.event {
        Event::TagBound { repository, tag: bound, digest: manifest }
            if repository == repo && bound == tag && manifest == digest => {}
        other => {
            return Err(verify_error(format!(
                "the logged entry is not the binding of {repo}:{tag} to {digest} (it records {})",
                serde_json::to_string(other).unwrap_or_default()
            )));
        }
    }
    Ok((checkpoint, receipt.index))
}

/// What the client trusts of each log: by origin, the log key it holds the
/// log under and the newest checkpoint verified with it. A log is known by
/// its origin **and** its key: a checkpoint of a held origin signed by
/// another key is refused (it may be another store on the same origin, or a
/// store whose key was taken), never taken in place of the held one; only
/// `amber log trust` changes the key, and `amber log forget` drops a log.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub logs: BTreeMap<String, Held>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Held {
    /// Entries in the newest checkpoint verified (0 before the first).
    pub size: u64,
    /// Base64 root hash (empty before the first checkpoint).
    pub root: String,
    /// The checkpoint's signed note, as verified.
    pub note: String,
    /// The log key it is held under (a signed-note verifier key). Empty only
    /// in state files written before keys were kept: then the held note
    /// must verify with a pinned key.
    #[serde(default)]
    pub vkey: String,
}

/// Where the state is kept unless `--log-state` says: the user's config
/// directory (`$XDG_CONFIG_HOME/amber`, else `~/.config/amber`).
pub fn default_state_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("amber").join("log-state.json"))
}

/// Longest a pull waits for another to let go of the state file.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The state file, held locked from reading to writing: two `amber`
/// processes sharing one file (two CI jobs on one runner) take turns, so
/// neither writes over what the other held. The lock is on a file beside
/// the state (`log-state.json.lock`, never removed), since the state itself
/// is replaced by a rename on every write.
pub struct Locked {
    path: PathBuf,
    _lock: std::fs::File,
    pub state: State,
}

impl Locked {
    /// Waits for the lock, then reads the state (empty if there is none).
    pub async fn open(path: &Path) -> Result<Self> {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_blocking(path))
            .await
            .map_err(|e| CliError::Io(format!("locking the log state: {e}")))?
    }

    fn open_blocking(path: PathBuf) -> Result<Self> {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| CliError::io(format!("creating {}", dir.display()), e))?;
        let mut lock_path = path.clone().into_os_string();
        lock_path.push(".lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| CliError::io(format!("opening {}", PathBuf::from(&lock_path).display()), e))?;
        // Another job's pull holds it while it checks a proof: a turn is
        // short. One that never lets go (a stopped process) fails this one
        // after a while rather than hang it.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(CliError::Io(format!(
                        "the log state {} stayed locked by another amber process for {} s ({} names it)",
                        path.display(),
                        LOCK_WAIT.as_secs(),
                        PathBuf::from(&lock_path).display()
                    )));
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(CliError::io(format!("locking {}", PathBuf::from(&lock_path).display()), e));
                }
            }
        }
        let state = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                CliError::Usage(format!("log state {}: {e} (move it aside to start again)", path.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(CliError::io(format!("reading log state {}", path.display()), e)),
        };
        Ok(Self { path, _lock: lock, state })
    }

    /// Writes the state whole (a temporary file, synced, renamed over the
    /// old one, the directory synced): a reader sees the old or the new
    /// state, never a torn one. The lock is let go when `self` is dropped.
    pub fn save(&self) -> Result<()> {
        let path = &self.path;
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let mut temp = tempfile::NamedTempFile::new_in(dir)
            .map_err(|e| CliError::io(format!("writing log state in {}", dir.display()), e))?;
        serde_json::to_writer_pretty(temp.as_file_mut(), &self.state).map_err(|e| CliError::Io(e.to_string()))?;
        temp.as_file().sync_all().map_err(|e| CliError::io("writing log state", e))?;
        temp.persist(path).map_err(|e| CliError::io(format!("writing log state {}", path.display()), e.error))?;
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

/// The size held of `origin`, read without the lock (the file is replaced
/// whole, so a read sees one state or the other).
pub fn held_size(state_path: &Path, origin: &str) -> Option<u64> {
    let text = std::fs::read_to_string(state_path).ok()?;
    serde_json::from_str::<State>(&text).ok()?.logs.get(origin).map(|held| held.size)
}

/// The refusal of a checkpoint signed by a key other than the held one.
fn key_changed(origin: &str, held: &str, presented: &str) -> CliError {
    CliError::Verify(format!(
        "the log key of {origin} changed: this client holds the log under {held}, the store signed with {presented}. \
         Another store may be using the same origin, or this store's key was replaced. If its operator confirms \
         the new key, run `amber log trust {origin} --key FILE` with the new key file"
    ))
}

/// Accepts `seen` only if it is signed by the key its origin is held under
/// (or, for an origin not held yet, by a pinned key) and extends the
/// checkpoint held (a consistency proof from the server, checked here),
/// then holds it. Returns the size held before, if any. A key file lists a
/// log's retired keys too, so a checkpoint signed after a rotation is
/// accepted when the held key is still pinned; the held checkpoint never
/// goes back.
pub async fn advance(client: &Client, state_path: &Path, vkeys: &[String], seen: &Checkpoint) -> Result<Option<u64>> {
    let (_, vkey) = open_with(vkeys, &seen.note)?;
    let mut locked = Locked::open(state_path).await?;
    let previous = match locked.state.logs.get(&seen.origin) {
        None => None,
        Some(held) => {
            let same_log = if held.vkey.is_empty() {
                open_with(vkeys, &held.note).is_ok()
            } else {
                held.vkey == vkey || vkeys.contains(&held.vkey)
            };
            if !same_log {
                return Err(key_changed(&seen.origin, &held.vkey, vkey));
            }
            if held.size > 0 {
                let root = tlog::Hash::parse_hash(&held.root)
                    .map_err(|_| CliError::Usage(format!("log state {}: bad root", state_path.display())))?;
                let held_cp =
                    Checkpoint { origin: seen.origin.clone(), size: held.size, root, note: held.note.clone() };
                let proof = if seen.size > held.size {
                    let text = client.log_consistency(held.size, seen.size).await?;
                    tlog::parse_proof_lines(&text).map_err(verify_error)?
                } else {
                    Vec::new()
                };
                tlog::check_consistency(&held_cp, seen, &proof).map_err(verify_error)?;
            }
            if seen.size <= held.size && held.vkey == vkey {
                // Same tree, same key: nothing to store.
                return Ok(Some(held.size));
            }
            Some(held.size).filter(|size| *size > 0)
        }
    };
    let held =
        Held { size: seen.size, root: tlog::hash_b64(&seen.root), note: seen.note.clone(), vkey: vkey.to_owned() };
    locked.state.logs.insert(seen.origin.clone(), held);
    locked.save()?;
    Ok(previous)
}

/// The origin a verifier key names (`<origin>+<id>+<key>`).
pub fn vkey_origin(vkey: &str) -> &str {
    vkey.split('+').next().unwrap_or_default()
}

/// `amber log trust ORIGIN --key FILE`: holds ORIGIN under the key the file
/// gives it (its active one, for a JSON key list). The checkpoint held stays:
/// the next pull must still extend it, so a store whose key was replaced
/// keeps its rollback protection; a store that really started over needs
/// `amber log forget` instead. Returns the key held before, if any, and
/// the key held now.
pub async fn trust(state_path: &Path, origin: &str, vkeys: &[String]) -> Result<(Option<String>, String)> {
    let vkey = vkeys.iter().find(|v| vkey_origin(v) == origin).ok_or_else(|| {
        let named: Vec<&str> = vkeys.iter().map(|v| vkey_origin(v)).collect();
        CliError::Usage(if named.is_empty() {
            "the key file holds no log key".to_owned()
        } else {
            format!("the key file holds no log key for {origin} (it has keys for {})", named.join(", "))
        })
    })?;
    let mut locked = Locked::open(state_path).await?;
    let before = locked.state.logs.get(origin).map(|held| held.vkey.clone());
    let held = match locked.state.logs.remove(origin) {
        Some(held) => Held { vkey: vkey.clone(), ..held },
        None => Held { size: 0, root: String::new(), note: String::new(), vkey: vkey.clone() },
    };
    locked.state.logs.insert(origin.to_owned(), held);
    locked.save()?;
    Ok((before, vkey.clone()))
}

/// `amber log forget ORIGIN`: the log is no longer held; the next pull holds
/// whatever it is shown first. Returns what was held.
pub async fn forget(state_path: &Path, origin: &str) -> Result<Option<Held>> {
    let mut locked = Locked::open(state_path).await?;
    let held = locked.state.logs.remove(origin);
    if held.is_some() {
        locked.save()?;
    }
    Ok(held)
}

/// `amber audit verify`: the tree rebuilt from the entries, up to the size
/// of the signed checkpoint, must have its root.
pub struct Rebuild {
    size: u64,
    tree: tlog::Frontier,
    leaves: Vec<tlog::Hash>,
}

impl Rebuild {
    pub fn new(size: u64) -> Self {
        Self { size, tree: tlog::Frontier::default(), leaves: Vec::new() }
    }

    pub fn push(&mut self, entry: &[u8]) {
        if self.tree.size() < self.size {
            let leaf = tlog::leaf_hash(entry);
            self.tree.push(leaf);
            self.leaves.push(leaf);
        }
    }

    /// Compares the root with the checkpoint's; on a difference, finds the
    /// first entry whose leaf is not the one the server's hash tiles hold
    /// (and says whether those tiles lead to the signed root).
    pub async fn check(&self, client: &Client, checkpoint: &Checkpoint) -> Result<()> {
        if self.tree.size() < checkpoint.size {
            return Err(CliError::Verify(format!(
                "the log's signed checkpoint covers {} entries but the audit log has {} (entries deleted from the end?)",
                checkpoint.size,
                self.tree.size()
            )));
        }
        if self.tree.root() == checkpoint.root {
            return Ok(());
        }
        let mut served = tlog::Frontier::default();
        let mut first_difference = None;
        let mut index = 0u64;
        while served.size() < checkpoint.size {
            let width = tlog::tile_width(checkpoint.size, 0, index);
            let path = tlog::TilePath::Hashes { level: 0, index, width }.path();
            let tile = client.log_tile(&path).await?;
            if tile.len() != width as usize * tlog::HASH_SIZE {
                return Err(CliError::Verify(format!("log tile {path} has {} bytes", tile.len())));
            }
            for chunk in tile.chunks_exact(tlog::HASH_SIZE) {
                let leaf = tlog::Hash(chunk.try_into().expect("32 bytes"));
                if first_difference.is_none() && self.leaves[served.size() as usize] != leaf {
                    first_difference = Some(served.size() + 1);
                }
                served.push(leaf);
            }
            index += 1;
        }
        let tiles_signed = served.root() == checkpoint.root;
        Err(CliError::Verify(match (first_difference, tiles_signed) {
            (Some(seq), true) => format!(
                "audit log broken at entry {seq}: it is not the entry the signed log checkpoint ({} entries) covers (edited?)",
                checkpoint.size
            ),
            (Some(seq), false) => format!(
                "the log tree does not match the signed checkpoint ({} entries); entry {seq} is the first whose leaf differs from the server's tiles, which do not lead to the signed root either",
                checkpoint.size
            ),
            (None, _) => format!(
                "the entries do not rebuild the tree of the signed log checkpoint ({} entries), though each matches the server's tiles: the stored tree was altered",
                checkpoint.size
            ),
        }))
    }
}
