//! The log's witnesses as the TOML file names them (`[[log.witnesses]]`,
//! `[log] witness_quorum`), checked once at start: a bad entry stops
//! `amberd` with its place and the reason.

use anyhow::bail;
use serde::Deserialize;

/// The `[log]` table of the TOML file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFile {
    #[serde(default)]
    pub witnesses: Vec<WitnessEntry>,
    /// Cosignatures a checkpoint needs to be served as cosigned (default: every witness).
    pub witness_quorum: Option<usize>,
}

/// One `[[log.witnesses]]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessEntry {
    pub name: String,
    /// Its C2SP cosignature/v1 verifier key (type 0x04).
    pub vkey: String,
    /// Its submission prefix: checkpoints go to `<url>/add-checkpoint`.
    pub url: String,
}

/// The witnesses, checked, and the quorum.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WitnessConfig {
    pub witnesses: Vec<amber_core::witness::Witness>,
    pub quorum: usize,
}

impl LogFile {
    pub fn witnesses(&self) -> anyhow::Result<WitnessConfig> {
        let mut witnesses = Vec::new();
        for (n, entry) in self.witnesses.iter().enumerate() {
            let place = format!("[[log.witnesses]] entry {} ({:?})", n + 1, entry.name);
            let url = url::Url::parse(&entry.url).map_err(|e| anyhow::anyhow!("{place}: url {:?}: {e}", entry.url))?;
            if !matches!(url.scheme(), "http" | "https") || url.query().is_some() || url.fragment().is_some() {
                bail!("{place}: url must be an http(s) submission prefix with no query");
            }
            let witness =
                amber_core::witness::Witness::from_vkey(&entry.vkey, Some(entry.url.trim_end_matches('/').to_owned()))
                    .map_err(|e| anyhow::anyhow!("{place}: {e}"))?;
            if witness.name != entry.name {
                bail!("{place}: the vkey names {:?}, not {:?}", witness.name, entry.name);
            }
            if witnesses.iter().any(|w: &amber_core::witness::Witness| w.name == witness.name) {
                bail!("{place}: a second witness named {:?}", entry.name);
            }
            witnesses.push(witness);
        }
        let quorum = self.witness_quorum.unwrap_or(witnesses.len());
        if quorum > witnesses.len() || (quorum == 0 && !witnesses.is_empty()) {
            bail!("[log] witness_quorum must be between 1 and the {} witnesses listed", witnesses.len());
        }
        Ok(WitnessConfig { witnesses, quorum })
    }
}
