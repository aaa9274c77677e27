//! Pinned public keys, read from a file: either the JSON that `GET /v1/keys`
//! and `amberd keys export` print, or one base64 Ed25519 public key per line.
//! Key ids are always recomputed from the key bytes.

use std::path::Path;

use amber_core::wire::KeyList;
use base64::Engine;
use ed25519_dalek::VerifyingKey;

use crate::error::{CliError, Result};

pub fn load(paths: &[impl AsRef<Path>]) -> Result<Vec<VerifyingKey>> {
    let mut keys = Vec::new();
    for path in paths {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::io(format!("reading key file {}", path.display()), e))?;
        keys.extend(parse(&text).map_err(|e| CliError::Usage(format!("key file {}: {e}", path.display())))?);
    }
    if keys.is_empty() {
        return Err(CliError::Usage("no public key to verify with: pass --key FILE".into()));
    }
    Ok(keys)
}

/// The log's verifier keys in the key files: the `vkey`s of the JSON's log
/// keys, or lines of the form `<origin>+<hex id>+<base64>`. Empty when the
/// files hold no log key (then no receipt is checked).
pub fn load_log(paths: &[impl AsRef<Path>]) -> Result<Vec<String>> {
    let mut vkeys = Vec::new();
    for path in paths {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::io(format!("reading key file {}", path.display()), e))?;
        if text.trim_start().starts_with('{') {
            let list: KeyList = serde_json::from_str(&text)
                .map_err(|e| CliError::Usage(format!("key file {}: {e}", path.display())))?;
            vkeys.extend(list.log_vkeys());
        } else {
            vkeys.extend(text.lines().map(str::trim).filter(|l| is_vkey_line(l)).map(str::to_owned));
        }
    }
    for vkey in &vkeys {
        amber_core::log::LogVerifier::new(vkey).map_err(|e| CliError::Usage(format!("log key {vkey:?}: {e}")))?;
    }
    Ok(vkeys)
}

/// A signed-note verifier key: its key id must match its name and key, which
/// a base64 public key (whose alphabet has `+` too) never does by chance.
fn is_vkey_line(line: &str) -> bool {
    !line.starts_with('#') && amber_core::log::LogVerifier::new(line).is_ok()
}

pub fn parse(text: &str) -> std::result::Result<Vec<VerifyingKey>, String> {
    if text.trim_start().starts_with('{') {
        let list: KeyList = serde_json::from_str(text).map_err(|e| e.to_string())?;
        return list.verifying_keys();
    }
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !is_vkey_line(l))
        .map(|line| {
            let bytes: [u8; 32] = base64::engine::general_purpose::STANDARD
                .decode(line)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| format!("{line:?} is not a base64 Ed25519 public key"))?;
            VerifyingKey::from_bytes(&bytes).map_err(|e| e.to_string())
        })
        .collect()
}

/// The witness policy to require: `--witness-policy FILE`, else the one a
/// pinned key file carries (`witness_policy` of `GET /v1/keys`), else none.
pub fn load_witness_policy(
    explicit: Option<&Path>,
    key_files: &[impl AsRef<Path>],
) -> Result<Option<amber_core::witness::Policy>> {
    let parse = |text: &str, from: &Path| {
        amber_core::witness::Policy::parse(text)
            .map_err(|e| CliError::Usage(format!("witness policy {}: {e}", from.display())))
    };
    if let Some(path) = explicit {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::io(format!("reading witness policy {}", path.display()), e))?;
        return parse(&text, path).map(Some);
    }
    for path in key_files {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::io(format!("reading key file {}", path.display()), e))?;
        if text.trim_start().starts_with('{')
            && let Ok(list) = serde_json::from_str::<KeyList>(&text)
            && let Some(policy) = list.witness_policy
        {
            return parse(&policy, path).map(Some);
        }
    }
    Ok(None)
}
