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
    /// Serve `GET /metrics` on this address instead of the API's, so the
    /// counters need not be reachable wherever the API is.
    #[arg(long, env = "AMBER_METRICS_LISTEN", global = true)]
    pub metrics_listen: Option<SocketAddr>,
    /// Directory for the embedded backends' data [default: ./amber-data].
    #[arg(long, env = "AMBER_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Blob backend URL: file://DIR or s3://BUCKET/PREFIX [default: file://DATA_DIR/blobs].
    /// S3 takes the standard AWS variables (AWS_ENDPOINT_URL, AWS_REGION, credentials).
    #[arg(long, env = "AMBER_BLOBS", global = true)]
    pub blobs: Option<String>,
    /// Metadata backend URL: sled://DIR or postgres://... [default: sled://DATA_DIR/meta].
    #[arg(long, env = "AMBER_META", global = true)]
    pub meta: Option<String>,
    /// Address S3 buckets by path (http://host/bucket), as most S3-compatible stores need.
    #[arg(long, env = "AMBER_S3_PATH_STYLE", global = true)]
    pub s3_path_style: bool,
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
    metrics_listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    blobs: Option<String>,
    meta: Option<String>,
    #[serde(default)]
    s3_path_style: bool,
    max_blob_size: Option<u64>,
    max_token_lifetime: Option<u64>,
    signing_key_file: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobsConfig {
    File(PathBuf),
    S3 { bucket: String, prefix: String, path_style: bool },
}

#[derive(Clone, PartialEq, Eq)]
pub enum MetaConfig {
    Sled(PathBuf),
    /// A connection URL; it may hold a password, so `Debug` hides it.
    Postgres(String),
}

impl std::fmt::Debug for MetaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sled(dir) => f.debug_tuple("Sled").field(dir).finish(),
            Self::Postgres(_) => f.write_str("Postgres(<url>)"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    /// Where `GET /metrics` is served when not on `listen`.
    pub metrics_listen: Option<SocketAddr>,
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
        let path_style = options.s3_path_style || file.s3_path_style;
        let blobs = match options.blobs.or(file.blobs) {
            Some(url) => parse_blobs_url(&url, path_style)?,
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
        let listen = options.listen.or(file.listen).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7350)));
        let metrics_listen = options.metrics_listen.or(file.metrics_listen);
        // Port 0 asks for any free port, so two of them never clash.
        if metrics_listen == Some(listen) && listen.port() != 0 {
            bail!("metrics_listen must differ from listen ({listen}); leave it unset to serve /metrics with the API");
        }
        Ok(Self {
            listen,
            metrics_listen,
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

fn parse_blobs_url(url: &str, path_style: bool) -> anyhow::Result<BlobsConfig> {
    if let Some(path) = local_path(url, "file") {
        return Ok(BlobsConfig::File(path));
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            bail!("blobs URL {url:?} names no bucket: expected s3://BUCKET/PREFIX");
        }
        return Ok(BlobsConfig::S3 {
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
            path_style,
        });
    }
    bail!("unsupported blobs URL {url:?}: expected file://DIR or s3://BUCKET/PREFIX")
}

fn parse_meta_url(url: &str) -> anyhow::Result<MetaConfig> {
    if let Some(path) = local_path(url, "sled") {
        return Ok(MetaConfig::Sled(path));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(MetaConfig::Postgres(url.to_owned()));
    }
    bail!("unsupported metadata URL: expected sled://DIR or postgres://...")
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
        assert!(parse_blobs_url("s4://x", false).is_err());
        assert_eq!(
            parse_blobs_url("s3://bucket/some/prefix/", true).unwrap(),
            BlobsConfig::S3 { bucket: "bucket".into(), prefix: "some/prefix".into(), path_style: true }
        );
        assert!(parse_blobs_url("s3:///x", false).is_err());
        assert!(matches!(parse_meta_url("postgres://u:secret@h/db").unwrap(), MetaConfig::Postgres(_)));
        assert!(!format!("{:?}", parse_meta_url("postgres://u:secret@h/db").unwrap()).contains("secret"));
    }

    #[test]
    fn metrics_may_not_share_the_api_address() {
        let options = |listen: &str, metrics: &str| Options {
            listen: Some(listen.parse().unwrap()),
            metrics_listen: Some(metrics.parse().unwrap()),
            ..Options::default()
        };
        let err = Config::resolve(options("127.0.0.1:7350", "127.0.0.1:7350")).unwrap_err();
        assert!(err.to_string().contains("must differ"), "{err}");
        let config = Config::resolve(options("127.0.0.1:7350", "127.0.0.1:9350")).unwrap();
        assert_eq!(config.metrics_listen, Some("127.0.0.1:9350".parse().unwrap()));
        assert!(Config::resolve(options("127.0.0.1:0", "127.0.0.1:0")).is_ok());
    }
}
