//! `amber pull` and `amber verify`: check the envelope against pinned keys and
//! the reference asked for, then fetch each file, hashing as it streams, and
//! move it into place only once its BLAKE3 and size match. A failure leaves
//! nothing unverified behind (temporary files are removed).

use std::io::Write;
use std::path::{Path, PathBuf};

use amber_core::dsse::Envelope;
use amber_core::manifest::{self, Expected, FileEntry, VerifiedManifest};
use amber_core::{Digest, RepoName};
use ed25519_dalek::VerifyingKey;
use futures_util::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::client::Client;
use crate::error::{CliError, Result};
use crate::reference::Reference;
use crate::{transparency, tree};

const DOWNLOAD_CONCURRENCY: usize = 4;

#[derive(Clone, Debug, Serialize)]
pub struct PullReport {
    pub repository: RepoName,
    pub tag: String,
    pub digest: Digest,
    pub files: usize,
    pub bytes: u64,
    pub keyid: String,
    /// Who pushed, from the signed payload (with the verified CI run, for a
    /// trusted-publishing push).
    pub pushed_by: amber_core::manifest::PushedBy,
    /// The binding's place in the transparency log, when a log key is pinned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<LogReport>,
    /// The verified manifest itself.
    #[serde(skip)]
    pub verified: amber_core::manifest::VerifiedManifest,
    /// What the binding's attestations state, when asked for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attestations: Vec<crate::attest::Summary>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LogReport {
    pub origin: String,
    pub index: u64,
    pub tree_size: u64,
    /// The size of the checkpoint held before, which this one extends.
    pub extends: Option<u64>,
    /// The witnesses of the policy that cosigned its checkpoint.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cosigned_by: Vec<String>,
}

/// What `amber pull` checks in the log: the pinned log keys, where the
/// newest checkpoint is kept, and where to save the receipt.
pub struct LogCheck {
    pub vkeys: Vec<String>,
    pub state: PathBuf,
    pub save_receipt: Option<PathBuf>,
    /// Cosignatures the receipt's checkpoint must carry (fails closed).
    pub witness_policy: Option<amber_core::witness::Policy>,
}

pub fn verify_envelope(
    envelope: &Envelope,
    keys: &[VerifyingKey],
    repo: &RepoName,
    target: &Expected,
) -> Result<VerifiedManifest> {
    manifest::verify(envelope, keys, repo, target).map_err(|e| CliError::Verify(e.to_string()))
}

/// The error for a retired tag or manifest, once its tombstone verified with
/// the pinned keys for what was asked; a verification failure otherwise.
pub fn retired(tombstone: &Envelope, keys: &[VerifyingKey], reference: &Reference) -> CliError {
    let (tag, manifest) = match &reference.target {
        Expected::Tag(tag) => (Some(tag), None),
        Expected::Digest(digest) => (None, Some(digest)),
    };
    match amber_core::tombstone::verify(tombstone, keys, &reference.repo, tag, manifest) {
        Ok(t) => {
            let when = t.expired_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
            let by = t.expired_by.token_name.or(t.expired_by.token_id.map(|id| id.to_string())).unwrap_or_default();
            let why = match (&t.policy, &t.note) {
                (Some(policy), _) => format!("by retention policy {policy}"),
                (None, Some(note)) => format!("by an operator: {note}"),
                (None, None) => "by an operator".to_owned(),
            };
            CliError::Retired {
                message: format!(
                    "{}:{} (manifest {}) was retired at {when} {why} (expired by {by}); the signed tombstone verified",
                    t.repository, t.tag, t.manifest
                ),
                tombstone: None,
            }
        }
        Err(e) => CliError::Verify(format!("the server says this was retired, but its tombstone does not verify: {e}")),
    }
}

pub async fn pull(
    client: &Client,
    reference: &Reference,
    keys: &[VerifyingKey],
    dir: &Path,
    quiet: bool,
    log: Option<&LogCheck>,
) -> Result<PullReport> {
    let envelope = match client.get_envelope(&reference.repo, &reference.target).await {
        Err(CliError::Retired { tombstone: Some(tombstone), .. }) => return Err(retired(&tombstone, keys, reference)),
        other => other?,
    };
    let verified = verify_envelope(&envelope, keys, &reference.repo, &reference.target)?;
    // Before any file is fetched: the binding must be in the one history.
    let log = match log {
        Some(check) => Some(check_log(client, check, &reference.repo, &verified).await?),
        None => None,
    };
    std::fs::create_dir_all(dir).map_err(|e| CliError::io(format!("creating {}", dir.display()), e))?;
    let files = &verified.payload.files;
    futures_util::stream::iter(files.iter().map(|entry| async move {
        download(client, &reference.repo, entry, dir).await?;
        if !quiet {
            eprintln!("verified {} ({} bytes)", entry.path, entry.size);
        }
        Ok::<_, CliError>(())
    }))
    .buffer_unordered(DOWNLOAD_CONCURRENCY)
    .try_collect::<Vec<()>>()
    .await?;
    Ok(PullReport {
        repository: reference.repo.clone(),
        tag: verified.payload.tag.to_string(),
        digest: verified.digest,
        files: files.len(),
        bytes: files.iter().map(|f| f.size).sum(),
        keyid: envelope.signatures.first().map(|s| s.keyid.clone()).unwrap_or_default(),
        pushed_by: verified.payload.pushed_by.clone(),
        log,
        verified,
        attestations: Vec::new(),
    })
}

async fn check_log(
    client: &Client,
    check: &LogCheck,
    repo: &RepoName,
    verified: &VerifiedManifest,
) -> Result<LogReport> {
    let tag = &verified.payload.tag;
    let mut text = client.tag_receipt(repo, tag).await?;
    let (mut checkpoint, mut index) = transparency::check_receipt(&check.vkeys, &text, repo, tag, &verified.digest)?;
    // Another pull on this machine may have held a newer checkpoint since
    // the server answered: asked once more, an honest store answers one at
    // least as new; a replay of an old history does not.
    if transparency::held_size(&check.state, &checkpoint.origin).is_some_and(|held| held > checkpoint.size) {
        text = client.tag_receipt(repo, tag).await?;
        (checkpoint, index) = transparency::check_receipt(&check.vkeys, &text, repo, tag, &verified.digest)?;
    }
    let cosigned_by = match &check.witness_policy {
        Some(policy) => {
            policy.check(&checkpoint.note).map_err(|e| CliError::Verify(e.to_string()))?.into_iter().collect()
        }
        None => Vec::new(),
    };
    let extends = transparency::advance(client, &check.state, &check.vkeys, &checkpoint).await?;
    if let Some(path) = &check.save_receipt {
        std::fs::write(path, &text).map_err(|e| CliError::io(format!("writing {}", path.display()), e))?;
    }
    Ok(LogReport { origin: checkpoint.origin, index, tree_size: checkpoint.size, extends, cosigned_by })
}

/// Where `entry` goes under `dir`, creating parent directories, and refusing
/// any existing symbolic link on the way (which could lead outside `dir`).
fn target_path(dir: &Path, entry: &FileEntry) -> Result<PathBuf> {
    let mut path = dir.to_path_buf();
    let segments: Vec<&str> = entry.path.as_str().split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        path.push(segment);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(CliError::Verify(format!(
                    "{} is a symbolic link; refusing to write through it",
                    path.display()
                )));
            }
            Ok(meta) if i + 1 < segments.len() && !meta.is_dir() => {
                return Err(CliError::Io(format!("{} exists and is not a directory", path.display())));
            }
            Ok(_) => {}
            Err(_) if i + 1 < segments.len() => {
                std::fs::create_dir(&path).map_err(|e| CliError::io(format!("creating {}", path.display()), e))?;
            }
            Err(_) => {}
        }
    }
    Ok(path)
}

async fn download(client: &Client, repo: &RepoName, entry: &FileEntry, dir: &Path) -> Result<()> {
    let target = target_path(dir, entry)?;
    let parent = target.parent().expect("a file under dir has a parent");
    let mut temp = tempfile::Builder::new()
        .prefix(".amber-partial-")
        .tempfile_in(parent)
        .map_err(|e| CliError::io(format!("creating a temporary file in {}", parent.display()), e))?;
    let response = client.get_blob(repo, &entry.digest).await?;
    let mut stream = response.bytes_stream();
    let mut hasher = blake3::Hasher::new();
    let mut size = 0u64;
    let file = temp.as_file_mut();
    let mut writer = std::io::BufWriter::with_capacity(1 << 20, file);
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| CliError::Transport(format!("downloading {}: {}", entry.path, e.without_url())))?;
        size += chunk.len() as u64;
        if size > entry.size {
            return Err(CliError::Verify(format!(
                "{}: the server sent more than the {} bytes listed",
                entry.path, entry.size
            )));
        }
        hasher.update(&chunk);
        writer.write_all(&chunk).map_err(|e| CliError::io(format!("writing {}", target.display()), e))?;
    }
    writer.flush().map_err(|e| CliError::io(format!("writing {}", target.display()), e))?;
    drop(writer);
    let actual = Digest::from(hasher.finalize());
    if size != entry.size || actual != entry.digest {
        return Err(CliError::Verify(format!(
            "{}: received {size} bytes hashing to {actual}; the signed manifest lists {} bytes with {}",
            entry.path, entry.size, entry.digest
        )));
    }
    temp.persist(&target).map_err(|e| CliError::io(format!("moving {} into place", target.display()), e.error))?;
    Ok(())
}

/// Checks files under `dir` against a verified manifest; returns the problems.
pub fn check_dir(verified: &VerifiedManifest, dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for entry in &verified.payload.files {
        let path = dir.join(entry.path.as_str());
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => match tree::hash_file(&path, meta.len()) {
                Ok(digest) if digest == entry.digest && meta.len() == entry.size => {}
                Ok(digest) => {
                    problems.push(format!("{}: hashes to {digest}, manifest says {}", entry.path, entry.digest))
                }
                Err(e) => problems.push(e.to_string()),
            },
            Ok(_) => problems.push(format!("{}: not a regular file", entry.path)),
            Err(_) => problems.push(format!("{}: missing", entry.path)),
        }
    }
    problems
}
