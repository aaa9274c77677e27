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

/// The newest verified checkpoint of each log, by origin.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    logs: BTreeMap<String, Held>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Held {
    size: u64,
    /// Base64 root hash.
    root: String,
    note: String,
    /// The log key it was verified with.
    #[serde(default)]
    vkey: String,
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

fn load_state(path: &Path) -> Result<State> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| CliError::Usage(format!("log state {}: {e} (move it aside to start again)", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(CliError::io(format!("reading log state {}", path.display()), e)),
    }
}

fn save_state(path: &Path, state: &State) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| CliError::io(format!("creating {}", dir.display()), e))?;
    let mut temp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| CliError::io(format!("writing log state in {}", dir.display()), e))?;
    serde_json::to_writer_pretty(temp.as_file_mut(), state).map_err(|e| CliError::Io(e.to_string()))?;
    temp.as_file().sync_all().map_err(|e| CliError::io("writing log state", e))?;
    temp.persist(path).map_err(|e| CliError::io(format!("writing log state {}", path.display()), e.error))?;
    Ok(())
}

/// Accepts `seen` only if it extends the checkpoint held for its origin (a
/// consistency proof from the server, checked here), then holds it.
/// Returns the size held before, if any. A checkpoint held under a log key
/// that is no longer pinned is of another log that had the same origin (a
/// key file lists a log's retired keys too, so a rotation keeps the history).
pub async fn advance(client: &Client, state_path: &Path, vkeys: &[String], seen: &Checkpoint) -> Result<Option<u64>> {
    let mut state = load_state(state_path)?;
    let (_, vkey) = open_with(vkeys, &seen.note)?;
    let held = state.logs.get(&seen.origin).filter(|held| {
        let pinned = vkeys.contains(&held.vkey);
        if !pinned {
            eprintln!("amber: the log key of {} changed; holding this log's checkpoints from now on", seen.origin);
        }
        pinned
    });
    let previous = match held {
        None => None,
        Some(held) => {
            let root = tlog::Hash::parse_hash(&held.root)
                .map_err(|_| CliError::Usage(format!("log state {}: bad root", state_path.display())))?;
            let held_cp = Checkpoint { origin: seen.origin.clone(), size: held.size, root, note: held.note.clone() };
            let proof = if seen.size > held.size && held.size > 0 {
                let text = client.log_consistency(held.size, seen.size).await?;
                tlog::parse_proof_lines(&text).map_err(verify_error)?
            } else {
                Vec::new()
            };
            tlog::check_consistency(&held_cp, seen, &proof).map_err(verify_error)?;
            if seen.size <= held.size {
                // Same tree: nothing to store.
                return Ok(Some(held.size));
            }
            Some(held.size)
        }
    };
    state.logs.insert(
        seen.origin.clone(),
        Held { size: seen.size, root: tlog::hash_b64(&seen.root), note: seen.note.clone(), vkey: vkey.to_owned() },
    );
    save_state(state_path, &state)?;
    Ok(previous)
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
