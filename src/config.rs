//! Configuration: command-line flags, `AMBER_*` environment variables and an
//! optional TOML file, in that order of precedence, resolved once at start into
//! a [`Config`] whose backend choices mirror the backend enums.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

/// Options shared by `amberd` and its subcommands (flags and `AMBER_*`).
#[derive(Debug, Default, clap::Args)]
pub struct Options {
    /// TOML config file; flags and environment variables override it.
    #[arg(long, env = "AMBER_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Address to serve HTTP on [default: 127.0.0.1:7350].
    #[arg(long, env = "AMBER_LISTEN", global = true)]
    pub listen: Option<SocketAddr>,
    /// Directory for the embedded backends' data [default: ./amber-data].
    #[arg(long, env = "AMBER_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Blob backend URL: file://DIR [default: file://DATA_DIR/blobs].
    #[arg(long, env = "AMBER_BLOBS", global = true)]
    pub blobs: Option<String>,
    /// Metadata backend URL: sled://DIR [default: sled://DATA_DIR/meta].
    #[arg(long, env = "AMBER_META", global = true)]
    pub meta: Option<String>,
    /// Largest blob accepted, in bytes [default: 10 GiB].
    #[arg(long, env = "AMBER_MAX_BLOB_SIZE", global = true)]
    pub max_blob_size: Option<u64>,
    /// Longest lifetime a token may be given, in seconds [default: 1 year].
    #[arg(long, env = "AMBER_MAX_TOKEN_LIFETIME", global = true)]
    pub max_token_lifetime: Option<u64>,
    /// Ed25519 signing key (PKCS#8 PEM) supplied by the operator instead of the stored keys.
    #[arg(long, env = "AMBER_SIGNING_KEY_FILE", global = true)]
    pub signing_key_file: Option<PathBuf>,
}

/// The same options as they appear in the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileOptions {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    blobs: Option<String>,
    meta: Option<String>,
    max_blob_size: Option<u64>,
    max_token_lifetime: Option<u64>,
    signing_key_file: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobsConfig {
    File(PathBuf),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaConfig {
    Sled(PathBuf),
}

#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub blobs: BlobsConfig,
    pub meta: MetaConfig,
    pub max_blob_size: u64,
    pub max_token_lifetime: Duration,
    /// Lifetime of a token created without `expires_in`.
    pub default_token_lifetime: Duration,
    pub signing_key_file: Option<PathBuf>,
}

const DAY: u64 = 24 * 60 * 60;

impl Config {
    pub fn resolve(options: Options) -> anyhow::Result<Self> {
        let file = match &options.config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))?
            }
            None => FileOptions::default(),
        };
        let data_dir = options.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("amber-data"));
        let blobs = match options.blobs.or(file.blobs) {
            Some(url) => parse_blobs_url(&url)?,
            None => BlobsConfig::File(data_dir.join("blobs")),
        };
        let meta = match options.meta.or(file.meta) {
            Some(url) => parse_meta_url(&url)?,
            None => MetaConfig::Sled(data_dir.join("meta")),
        };
        let max_token_lifetime =
            Duration::from_secs(options.max_token_lifetime.or(file.max_token_lifetime).unwrap_or(365 * DAY));
        if max_token_lifetime.is_zero() {
            bail!("max_token_lifetime must be positive");
        }
        Ok(Self {
            listen: options.listen.or(file.listen).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7350))),
            data_dir,
            blobs,
            meta,
            max_blob_size: options.max_blob_size.or(file.max_blob_size).unwrap_or(10 << 30),
            default_token_lifetime: max_token_lifetime.min(Duration::from_secs(90 * DAY)),
            max_token_lifetime,
            signing_key_file: options.signing_key_file.or(file.signing_key_file),
        })
    }
}

fn local_path(url: &str, scheme: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix(scheme)?.strip_prefix("://")?;
    (!rest.is_empty()).then(|| Path::new(rest).to_path_buf())
}

fn parse_blobs_url(url: &str) -> anyhow::Result<BlobsConfig> {
    match local_path(url, "file") {
        Some(path) => Ok(BlobsConfig::File(path)),
        None => bail!("unsupported blobs URL {url:?}: expected file://DIR"),
    }
}

fn parse_meta_url(url: &str) -> anyhow::Result<MetaConfig> {
    match local_path(url, "sled") {
        Some(path) => Ok(MetaConfig::Sled(path)),
        None => bail!("unsupported metadata URL {url:?}: expected sled://DIR"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_defaults_fill_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("amber.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9000\"\ndata_dir = \"/srv/amber\"\nmax_blob_size = 5\n").unwrap();
        let config =
            Config::resolve(Options { config: Some(path.clone()), max_blob_size: Some(7), ..Default::default() })
                .unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.max_blob_size, 7);
        assert_eq!(config.blobs, BlobsConfig::File("/srv/amber/blobs".into()));
        assert_eq!(config.meta, MetaConfig::Sled("/srv/amber/meta".into()));

        std::fs::write(&path, "listen = \"127.0.0.1:9000\"\nbogus = 1\n").unwrap();
        assert!(Config::resolve(Options { config: Some(path), ..Default::default() }).is_err());
        assert!(parse_blobs_url("s4://x").is_err());
    }
}
