//! TLS of amberd's own (`--tls-cert`, `--tls-key`): rustls, TLS 1.2 and 1.3
//! only, HTTP/2 and HTTP/1.1 by ALPN. The pair is read again on `SIGHUP` and
//! when either file changes on disk; a new pair serves the connections that
//! open after it, those open keep theirs, and a pair that does not load (or
//! whose key is not the certificate's) is refused with an error while the
//! old one goes on serving.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

use crate::config::TlsFiles;

/// How often the files are checked for a change.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// The pair being served, swapped whole when the files change.
#[derive(Debug)]
pub struct Certificates {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
    /// What the files looked like when last read (length, modified time).
    seen: std::sync::Mutex<[FileStamp; 2]>,
}

type FileStamp = Option<(u64, SystemTime)>;

impl Certificates {
    /// Reads the pair; an error names the file and what is wrong with it.
    pub fn load(files: TlsFiles) -> anyhow::Result<Arc<Self>> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let seen = stamps(&files);
        let key = read_pair(&files, &provider)?;
        Ok(Arc::new(Self { files, provider, current: ArcSwap::from_pointee(key), seen: std::sync::Mutex::new(seen) }))
    }

    /// The rustls server configuration: TLS 1.2 and 1.3 with rustls' default
    /// (AEAD, forward-secret) suites, `h2` then `http/1.1` offered by ALPN.
    pub fn server_config(self: &Arc<Self>) -> anyhow::Result<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }

    /// Reads the files again and serves the new pair, or keeps the old one
    /// and says why.
    pub fn reload(&self, why: &str) -> bool {
        let seen = stamps(&self.files);
        *self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = seen;
        match read_pair(&self.files, &self.provider) {
            Ok(key) => {
                self.current.store(Arc::new(key));
                tracing::info!(cert = %self.files.cert.display(), why, "TLS certificate reloaded");
                true
            }
            Err(err) => {
                tracing::error!(error = %format!("{err:#}"), why, "the new TLS certificate was refused; serving the previous one");
                false
            }
        }
    }

    /// Whether either file changed since it was last read.
    fn changed(&self) -> bool {
        let now = stamps(&self.files);
        *self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner) != now
    }

    /// Reloads on `SIGHUP` and when the files change, until `stop`.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(stream) => Some(stream),
            Err(err) => {
                tracing::warn!(error = %err, "no SIGHUP handler; the TLS files are still watched");
                None
            }
        };
        let mut tick = tokio::time::interval(WATCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let hup = async {
                match hangup.as_mut() {
                    Some(stream) => stream.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = hup => { self.reload("SIGHUP"); }
                _ = tick.tick() => {
                    if self.changed() {
                        // A pair caught half-written is refused; the end of
                        // the write changes the files again, and they are
                        // read again at the next tick.
                        self.reload("the files changed");
                    }
                }
                () = stop.cancelled() => return,
            }
        }
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn stamps(files: &TlsFiles) -> [FileStamp; 2] {
    let stamp =
        |path: &Path| std::fs::metadata(path).ok().map(|m| (m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
    [stamp(&files.cert), stamp(&files.key)]
}

fn read_pair(files: &TlsFiles, provider: &CryptoProvider) -> anyhow::Result<CertifiedKey> {
    use anyhow::Context;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("reading the TLS certificate {}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing the TLS certificate {}", files.cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("the TLS certificate file {} holds no certificate", files.cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("reading the TLS key {} (PEM: PKCS#8, PKCS#1 or SEC1)", files.key.display()))?;
    let key = CertifiedKey::from_der(certs, key, provider).with_context(|| {
        format!("the key {} does not belong to the certificate {}", files.key.display(), files.cert.display())
    })?;
    Ok(key)
}
