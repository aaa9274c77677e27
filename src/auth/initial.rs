//! The first admin token of an empty store, written to
//! `DATA_DIR/initial-admin-token` (mode 0600, the secret and a newline) when
//! the server first starts, as Jenkins writes its initial password: the
//! operator reads it, stores it elsewhere and deletes the file. Never written
//! again once the store holds any token; across replicas one of them mints
//! it (`TokenStore::insert_first_token`). `--no-initial-token` turns it off.
//!
//! The secret reaches the file before the token is stored, under a
//! temporary name renamed once the token is in: a crash between the two
//! leaves the temporary file, which the next start renames if its token was
//! stored and deletes if not.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use amber_core::audit::Actor;
use amber_core::{Action, Grant, RepoPattern, TokenSecret};

use super::issue::{TokenSpec, issue_first_token};
use super::secret_hash;
use crate::config::Config;
use crate::meta::{Meta, TokenStore};
use crate::signing::Signer;

/// The file's name in the data directory.
pub const FILE: &str = "initial-admin-token";
const PENDING: &str = "initial-admin-token.pending";
/// A file left longer than this is mentioned at start and once a day.
pub const LEFT_BEHIND: Duration = Duration::from_secs(24 * 60 * 60);

/// The path of the file for `config`.
pub fn path(config: &Config) -> PathBuf {
    config.data_dir.join(FILE)
}

/// Mints the first admin token if the store holds none and writes its secret
/// to the file; finishes what a crash left; says so if the file is old.
pub async fn ensure(meta: &Meta, config: &Config, signer: &Arc<Signer>) -> anyhow::Result<()> {
    let (dir, file) = (config.data_dir.as_path(), path(config));
    finish_pending(meta, dir).await?;
    if !config.initial_token || file.exists() {
        warn_if_left(config);
        return Ok(());
    }
    let spec = TokenSpec {
        name: "initial-admin".into(),
        pipeline: None,
        grants: vec![Grant { repos: RepoPattern::Any, actions: vec![Action::Admin] }],
        lifetime: None,
    };
    let pending = dir.join(PENDING);
    fs::create_dir_all(dir)?;
    let minted =
        issue_first_token(meta, config, signer, Actor::operator(), spec, |secret| write_secret(&pending, secret)).await;
    let minted = match minted {
        Ok(Some(info)) => {
            fs::rename(&pending, &file)?;
            Some(info)
        }
        Ok(None) => {
            let _ = fs::remove_file(&pending);
            None
        }
        Err(err) => {
            let _ = fs::remove_file(&pending);
            anyhow::bail!("creating the initial admin token: {err:#}");
        }
    };
    sync_dir(dir)?;
    if let Some(info) = minted {
        tracing::warn!(
            file = %file.display(),
            token = %info.id,
            expires_at = %info.expires_at,
            "created the initial admin token; its secret is in the file (mode 0600): \
             `export AMBER_TOKEN=$(cat {})`, store it elsewhere, then delete the file",
            file.display()
        );
    }
    Ok(())
}

/// Logs that the file is still there, if it has been for a day.
pub fn warn_if_left(config: &Config) {
    let file = path(config);
    let age =
        fs::metadata(&file).and_then(|m| m.modified()).ok().and_then(|t| SystemTime::now().duration_since(t).ok());
    if let Some(age) = age
        && age >= LEFT_BEHIND
    {
        tracing::warn!(
            file = %file.display(),
            hours = age.as_secs() / 3600,
            "the initial admin token's file is still here; store the secret elsewhere and delete it"
        );
    }
}

/// Writes the secret and a newline to a new file only the owner may read.
fn write_secret(path: &Path, secret: &TokenSecret) -> std::io::Result<()> {
    let _ = fs::remove_file(path);
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(secret.expose().as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// A pending file from a start that stopped half-way: kept if its token was
/// stored, deleted if not.
async fn finish_pending(meta: &Meta, dir: &Path) -> anyhow::Result<()> {
    let pending = dir.join(PENDING);
    let Ok(text) = fs::read_to_string(&pending) else { return Ok(()) };
    let stored = match text.trim().parse::<TokenSecret>() {
        Ok(secret) => meta.token_by_hash(&secret_hash(&secret)).await?.is_some(),
        Err(_) => false,
    };
    if stored && !dir.join(FILE).exists() {
        fs::rename(&pending, dir.join(FILE))?;
    } else {
        fs::remove_file(&pending)?;
    }
    sync_dir(dir)?;
    Ok(())
}
