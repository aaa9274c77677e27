//! Trusted publishing: a CI job presents the OpenID Connect ID token its
//! platform issued for that one run; it is verified against an issuer the
//! operator configured ([`verify`], keys from [`keys`]), matched against a
//! publisher an admin created ([`trust`]), and exchanged for a short-lived
//! token whose record keeps the verified claims ([`exchange`]). No secret is
//! stored in CI, and every manifest pushed with such a token says under the
//! server's signature which run produced it.

mod exchange;
mod keys;
mod trust;
mod verify;

use std::sync::Arc;
use std::time::Duration;

pub use crate::config::oidc::{IssuerConfig, IssuerKind, OidcConfig};
pub use crate::error::OidcError;
pub use exchange::exchange;
pub use trust::{MAX_TOKEN_LIFETIME, new_publisher};

/// How long fetching discovery or keys may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// A configured issuer and its keys.
pub struct Issuer {
    pub config: IssuerConfig,
    /// `host[:port]` of its URL, as GitLab writes it in `ci_config_ref_uri`.
    pub host: String,
    keys: keys::KeyCache,
}

/// Every configured issuer.
#[derive(Default)]
pub struct Oidc {
    issuers: Vec<Arc<Issuer>>,
}

impl Oidc {
    pub fn new(config: &OidcConfig) -> anyhow::Result<Self> {
        // No redirects: a key set must come from where discovery said.
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(FETCH_TIMEOUT)
            .user_agent(concat!("amberd/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let mut issuers = Vec::new();
        for config in &config.issuers {
            let url = reqwest::Url::parse(&config.url)?;
            let host = match url.port() {
                Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
                None => url.host_str().unwrap_or_default().to_owned(),
            };
            let keys = keys::KeyCache::new(config, client.clone())?;
            issuers.push(Arc::new(Issuer { config: config.clone(), host, keys }));
        }
        Ok(Self { issuers })
    }

    fn by_url(&self, url: &str) -> Option<&Arc<Issuer>> {
        self.issuers.iter().find(|i| i.config.url == url)
    }

    fn by_name(&self, name: &str) -> Option<&Arc<Issuer>> {
        self.issuers.iter().find(|i| i.config.name == name)
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        self.issuers.iter().map(|i| i.config.name.as_str())
    }

    /// Fetches every issuer's keys now and then every few minutes, until
    /// `stop`; a failure keeps the keys cached before.
    pub async fn refresh_forever(&self, stop: tokio_util::sync::CancellationToken) {
        loop {
            futures_util::future::join_all(self.issuers.iter().map(|i| i.keys.refresh())).await;
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(keys::REFRESH_EVERY) => {}
            }
        }
    }
}
