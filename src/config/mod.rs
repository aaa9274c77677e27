//! Configuration: command-line flags, `AMBER_*` environment variables and an
//! optional TOML file, in that order of precedence, resolved once at start into
//! a [`Config`] whose backend choices mirror the backend enums.

pub mod oidc;
pub mod witnesses;

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
    /// Serve HTTPS with this certificate chain (PEM, the server's own first);
    /// read again on SIGHUP and when the file changes. Needs --tls-key.
    #[arg(long, env = "AMBER_TLS_CERT", global = true, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "AMBER_TLS_KEY", global = true, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Do not write an initial admin token to DATA_DIR/initial-admin-token
    /// on the first start of an empty store (mint one with `amberd token
    /// create` instead).
    #[arg(long, env = "AMBER_NO_INITIAL_TOKEN", global = true)]
    pub no_initial_token: bool,
    /// Serve `GET /metrics` on this address instead of the API's, so the
    /// counters need not be reachable wherever the API is.
    #[arg(long, env = "AMBER_METRICS_LISTEN", global = true)]
    pub metrics_listen: Option<SocketAddr>,
    /// Do not serve the operator console at `/ui/`.
    #[arg(long, env = "AMBER_NO_UI", global = true)]
    pub no_ui: bool,
    /// Do not serve the OCI distribution API at `/v2/`.
    #[arg(long, env = "AMBER_NO_OCI", global = true)]
    pub no_oci: bool,
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
    /// The URL clients reach this store at (`https://amber.example.com`); gives
    /// the log's origin (`amber.example.com/log`) when --log-origin is not set.
    #[arg(long, env = "AMBER_PUBLIC_URL", global = true)]
    pub public_url: Option<String>,
    /// The transparency log's origin: a schema-less URL unique to this store,
    /// e.g. `amber.example.com/log`; the key name of the log key. Fixed at the
    /// first start and kept in the metadata store: clients hold the log by it
    /// [default: from --public-url, else `amber-<random>.invalid/log`].
    #[arg(long, env = "AMBER_LOG_ORIGIN", global = true)]
    pub log_origin: Option<String>,
    /// Milliseconds between signed checkpoints of a growing log [default: 500].
    #[arg(long, env = "AMBER_LOG_INTERVAL", global = true)]
    pub log_interval: Option<u64>,
    /// Ed25519 log key (PKCS#8 PEM) supplied by the operator instead of the stored log keys.
    #[arg(long, env = "AMBER_LOG_KEY_FILE", global = true)]
    pub log_key_file: Option<PathBuf>,
    /// Seconds a client has to send a request's headers, from the connection
    /// opening or the previous response [default: 10].
    #[arg(long, env = "AMBER_HEADER_TIMEOUT", global = true)]
    pub header_timeout: Option<u64>,
    /// Seconds a request body may make no progress before it is ended with
    /// `408` [default: 30].
    #[arg(long, env = "AMBER_BODY_IDLE_TIMEOUT", global = true)]
    pub body_idle_timeout: Option<u64>,
    /// Seconds a connection may move no byte either way before it is closed
    /// [default: 60].
    #[arg(long, env = "AMBER_IDLE_TIMEOUT", global = true)]
    pub idle_timeout: Option<u64>,
    /// Seconds `SIGTERM` waits for requests in flight before the process exits
    /// anyway [default: 30].
    #[arg(long, env = "AMBER_SHUTDOWN_GRACE", global = true)]
    pub shutdown_grace: Option<u64>,
    /// Seconds between runs of the retention policies; 0 runs them only on
    /// demand (`POST /v1/retention/run`) [default: 3600].
    #[arg(long, env = "AMBER_RETENTION_INTERVAL", global = true)]
    pub retention_interval: Option<u64>,
    /// Seconds the stored bytes of a digest no repository links are kept
    /// before reclaim deletes them; a new link within them keeps the bytes
    /// [default: 86400].
    #[arg(long, env = "AMBER_RECLAIM_GRACE", global = true)]
    pub reclaim_grace: Option<u64>,
    /// Seconds after its last `PATCH` an unfinished resumable upload is
    /// discarded [default: 86400].
    #[arg(long, env = "AMBER_UPLOAD_EXPIRY", global = true)]
    pub upload_expiry: Option<u64>,
    /// Seconds between reclaim runs; 0 runs it only on demand
    /// (`POST /v1/reclaim/run`) [default: 3600].
    #[arg(long, env = "AMBER_RECLAIM_INTERVAL", global = true)]
    pub reclaim_interval: Option<u64>,
    /// Bytes a second the scrub reads back to verify stored blobs, each blob
    /// counting 64 KiB more than its size; 0 turns it off [default: 33554432,
    /// 32 MiB/s].
    #[arg(long, env = "AMBER_SCRUB_RATE", global = true)]
    pub scrub_rate: Option<u64>,
    /// Seconds from the end of one full scrub pass to the start of the next;
    /// a store read through faster rests the remainder (0: passes back to
    /// back) [default: 3600].
    #[arg(long, env = "AMBER_SCRUB_INTERVAL", global = true)]
    pub scrub_interval: Option<u64>,
    /// Most connections open at once; idle ones are closed first to make room
    /// [default: half the file-descriptor limit].
    #[arg(long, env = "AMBER_MAX_CONNECTIONS", global = true)]
    pub max_connections: Option<usize>,
    /// Most uploads in flight at once; past it, `429` [default: 256].
    #[arg(long, env = "AMBER_MAX_UPLOADS", global = true)]
    pub max_uploads: Option<usize>,
    /// Most uploads in flight at once for one token [default: 32].
    #[arg(long, env = "AMBER_MAX_UPLOADS_PER_TOKEN", global = true)]
    pub max_uploads_per_token: Option<usize>,
    /// Bytes of upload bodies held in memory at once, S3 parts included
    /// [default: 256 MiB].
    #[arg(long, env = "AMBER_UPLOAD_MEMORY", global = true)]
    pub upload_memory: Option<u64>,
    /// Free space the data volume keeps: uploads are refused with `507` below
    /// it. Bytes, or a percentage of the volume such as `5%` [default: the
    /// smaller of 1 GiB and 5%].
    #[arg(long, env = "AMBER_MIN_FREE_SPACE", global = true)]
    pub min_free_space: Option<FreeSpace>,
}

/// A free-space reserve: an amount, or a share of the volume.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(try_from = "String")]
pub enum FreeSpace {
    Bytes(u64),
    Percent(f64),
    /// The smaller of 1 GiB and 5 %.
    Default,
}

impl FreeSpace {
    /// The reserve in bytes on a volume of `total` bytes.
    pub fn bytes(self, total: u64) -> u64 {
        let share = |p: f64| (total as f64 * p / 100.0) as u64;
        match self {
            Self::Bytes(n) => n,
            Self::Percent(p) => share(p),
            Self::Default => share(5.0).min(1 << 30),
        }
    }
}

impl std::str::FromStr for FreeSpace {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(percent) = s.strip_suffix('%') {
            let p: f64 = percent.trim().parse().map_err(|_| format!("{s:?} is not a percentage"))?;
            if !(0.0..=50.0).contains(&p) {
                return Err(format!("{s:?}: a reserve must be between 0% and 50%"));
            }
            return Ok(Self::Percent(p));
        }
        s.parse().map(Self::Bytes).map_err(|_| format!("{s:?} is neither a byte count nor a percentage like 5%"))
    }
}

impl TryFrom<String> for FreeSpace {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// How long things may take and how much one server holds at once.
#[derive(Clone, Debug)]
pub struct Limits {
    pub header_timeout: Duration,
    pub body_idle_timeout: Duration,
    pub idle_timeout: Duration,
    pub shutdown_grace: Duration,
    /// `None`: half the file-descriptor limit, read once it is raised.
    pub max_connections: Option<usize>,
    pub max_uploads: usize,
    pub max_uploads_per_token: usize,
    pub upload_memory: u64,
    pub min_free_space: FreeSpace,
}

/// The same options as they appear in the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileOptions {
    listen: Option<SocketAddr>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    no_initial_token: Option<bool>,
    metrics_listen: Option<SocketAddr>,
    no_ui: Option<bool>,
    no_oci: Option<bool>,
    data_dir: Option<PathBuf>,
    blobs: Option<String>,
    meta: Option<String>,
    #[serde(default)]
    s3_path_style: bool,
    max_blob_size: Option<u64>,
    max_token_lifetime: Option<u64>,
    signing_key_file: Option<PathBuf>,
    public_url: Option<String>,
    log_origin: Option<String>,
    log_interval: Option<u64>,
    log_key_file: Option<PathBuf>,
    header_timeout: Option<u64>,
    body_idle_timeout: Option<u64>,
    idle_timeout: Option<u64>,
    shutdown_grace: Option<u64>,
    max_connections: Option<usize>,
    max_uploads: Option<usize>,
    max_uploads_per_token: Option<usize>,
    upload_memory: Option<u64>,
    min_free_space: Option<FreeSpace>,
    retention_interval: Option<u64>,
    reclaim_grace: Option<u64>,
    upload_expiry: Option<u64>,
    reclaim_interval: Option<u64>,
    scrub_rate: Option<u64>,
    scrub_interval: Option<u64>,
    #[serde(default)]
    oidc: oidc::OidcConfig,
    /// `[log]`: the log's witnesses.
    #[serde(default)]
    log: witnesses::LogFile,
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

/// The certificate chain and key files of `--tls-cert` and `--tls-key` (PEM).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Clone, Debug)]
pub struct Config {
    /// The URL clients reach this store at (`--public-url`), when given.
    pub public_url: Option<url::Url>,
    pub listen: SocketAddr,
    /// HTTPS on `listen` with these files; `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Whether the first start of an empty store writes an initial admin token.
    pub initial_token: bool,
    /// Where `GET /metrics` is served when not on `listen`.
    pub metrics_listen: Option<SocketAddr>,
    /// Whether `/ui/` serves the operator console.
    pub ui: bool,
    /// Whether `/v2/` serves the OCI distribution API.
    pub oci: bool,
    pub data_dir: PathBuf,
    pub blobs: BlobsConfig,
    pub meta: MetaConfig,
    pub max_blob_size: u64,
    pub max_token_lifetime: Duration,
    /// Lifetime of a token created without `expires_in`.
    pub default_token_lifetime: Duration,
    pub signing_key_file: Option<PathBuf>,
    pub log: LogConfig,
    pub limits: Limits,
    /// Between scheduled retention runs; `None`: only on demand.
    pub retention_interval: Option<Duration>,
    /// How long unlinked bytes are kept before reclaim deletes them.
    pub reclaim_grace: Duration,
    /// How long an unfinished resumable upload is kept after its last `PATCH`.
    pub upload_expiry: Duration,
    /// Between scheduled reclaim runs; `None`: only on demand.
    pub reclaim_interval: Option<Duration>,
    /// Bytes a second the scrub may read; 0: no scrub.
    pub scrub_rate: u64,
    /// The least time from the end of a full scrub pass to the next one.
    pub scrub_interval: Duration,
    /// Issuers of CI ID tokens trusted for trusted publishing (TOML only).
    pub oidc: oidc::OidcConfig,
}

/// The transparency log's identity and pace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// The origin asked for (`--log-origin`, else from `--public-url`); `None`:
    /// a random one at the first start. A store keeps the origin it has (see
    /// `crate::log::resolve_origin`).
    pub origin: Option<String>,
    /// Whether `origin` was given as `--log-origin` (a store on another
    /// origin then refuses to start) rather than derived from the public URL.
    pub origin_explicit: bool,
    pub interval: Duration,
    pub key_file: Option<PathBuf>,
    /// Witnesses asked to cosign each checkpoint, and how many must.
    pub witnesses: witnesses::WitnessConfig,
}

/// `--public-url`: an absolute http(s) URL with a host and nothing after
/// its path; kept without a trailing slash.
fn public_url(text: &str) -> anyhow::Result<url::Url> {
    let url = url::Url::parse(text).map_err(|e| anyhow::anyhow!("public_url {text:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host_str().is_none_or(str::is_empty)
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        bail!("public_url {text:?} must be an http or https URL with a host and no query, fragment or credentials");
    }
    Ok(url)
}

/// The log origin a public URL gives: `<host>[:<port>][/<path>]/log`.
pub fn origin_of(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let path = url.path().trim_end_matches('/');
    format!("{host}{port}{path}/log")
}

/// A log origin as C2SP and the signed-note key names take it: a
/// schema-less URL, no trailing slash, spaces or `+`.
pub fn check_origin(origin: &str, what: &str) -> anyhow::Result<()> {
    if !amber_core::log::is_valid_origin(origin) || origin.contains("://") || origin.ends_with('/') {
        bail!(
            "{what} {origin:?} must be a schema-less URL with no trailing slash, spaces or '+' (e.g. amber.example.com/log)"
        );
    }
    Ok(())
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
        let seconds =
            |flag: Option<u64>, file: Option<u64>, default: u64, name: &str| match flag.or(file).unwrap_or(default) {
                0 => bail!("{name} must be at least one second"),
                n => Ok(Duration::from_secs(n)),
            };
        let limits = Limits {
            header_timeout: seconds(options.header_timeout, file.header_timeout, 10, "header_timeout")?,
            body_idle_timeout: seconds(options.body_idle_timeout, file.body_idle_timeout, 30, "body_idle_timeout")?,
            idle_timeout: seconds(options.idle_timeout, file.idle_timeout, 60, "idle_timeout")?,
            shutdown_grace: seconds(options.shutdown_grace, file.shutdown_grace, 30, "shutdown_grace")?,
            max_connections: options.max_connections.or(file.max_connections),
            max_uploads: options.max_uploads.or(file.max_uploads).unwrap_or(256),
            max_uploads_per_token: options.max_uploads_per_token.or(file.max_uploads_per_token).unwrap_or(32),
            upload_memory: options.upload_memory.or(file.upload_memory).unwrap_or(256 << 20),
            min_free_space: options.min_free_space.or(file.min_free_space).unwrap_or(FreeSpace::Default),
        };
        if limits.max_connections == Some(0) || limits.max_uploads == 0 || limits.max_uploads_per_token == 0 {
            bail!("max_connections, max_uploads and max_uploads_per_token must be at least 1");
        }
        file.oidc.validate()?;
        let public_url = options.public_url.or(file.public_url).as_deref().map(public_url).transpose()?;
        let explicit = options.log_origin.or(file.log_origin);
        let log = LogConfig {
            origin_explicit: explicit.is_some(),
            origin: explicit.or_else(|| public_url.as_ref().map(origin_of)),
            interval: Duration::from_millis(options.log_interval.or(file.log_interval).unwrap_or(500)),
            key_file: options.log_key_file.or(file.log_key_file),
            witnesses: file.log.witnesses()?,
        };
        if let Some(origin) = &log.origin {
            check_origin(origin, if log.origin_explicit { "log_origin" } else { "the log origin of public_url" })?;
        }
        if log.interval < Duration::from_millis(10) || log.interval > Duration::from_secs(60) {
            bail!("log_interval must be between 10 and 60000 milliseconds");
        }
        if limits.upload_memory < 16 << 20 {
            bail!("upload_memory must be at least 16 MiB (one S3 part and its successor)");
        }
        let tls = match (options.tls_cert.or(file.tls_cert), options.tls_key.or(file.tls_key)) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => bail!("tls_cert and tls_key go together: give both, or neither for plain HTTP"),
        };
        Ok(Self {
            limits,
            public_url,
            listen,
            tls,
            initial_token: !(options.no_initial_token || file.no_initial_token.unwrap_or(false)),
            metrics_listen,
            ui: !(options.no_ui || file.no_ui.unwrap_or(false)),
            oci: !(options.no_oci || file.no_oci.unwrap_or(false)),
            data_dir,
            blobs,
            meta,
            max_blob_size: options.max_blob_size.or(file.max_blob_size).unwrap_or(10 << 30),
            default_token_lifetime: max_token_lifetime.min(Duration::from_secs(90 * DAY)),
            max_token_lifetime,
            signing_key_file: options.signing_key_file.or(file.signing_key_file),
            log,
            retention_interval: match options.retention_interval.or(file.retention_interval).unwrap_or(3600) {
                0 => None,
                n => Some(Duration::from_secs(n)),
            },
            reclaim_grace: Duration::from_secs(options.reclaim_grace.or(file.reclaim_grace).unwrap_or(DAY)),
            upload_expiry: Duration::from_secs(options.upload_expiry.or(file.upload_expiry).unwrap_or(DAY).max(1)),
            scrub_rate: options.scrub_rate.or(file.scrub_rate).unwrap_or(32 << 20),
            scrub_interval: Duration::from_secs(options.scrub_interval.or(file.scrub_interval).unwrap_or(3600)),
            reclaim_interval: match options.reclaim_interval.or(file.reclaim_interval).unwrap_or(3600) {
                0 => None,
                n => Some(Duration::from_secs(n)),
            },
            oidc: file.oidc,
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

    #[test]
    fn free_space_is_bytes_or_a_share() {
        assert_eq!("5%".parse::<FreeSpace>().unwrap().bytes(1000), 50);
        assert_eq!("123".parse::<FreeSpace>().unwrap().bytes(1000), 123);
        assert_eq!(FreeSpace::Default.bytes(100 << 30), 1 << 30);
        assert_eq!(FreeSpace::Default.bytes(1000), 50);
        assert!("80%".parse::<FreeSpace>().is_err());
        assert!("lots".parse::<FreeSpace>().is_err());
    }
}
