//! An issuer's signing keys: found by OpenID discovery, cached, refreshed
//! when a token names a key id the cache does not hold (at most once a
//! [`MIN_REFRESH`]) and every [`REFRESH_EVERY`] (so that a key the issuer
//! withdrew stops working). A failed refresh keeps the cached keys; a key
//! set with no usable key is never cached.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use reqwest::Url;

use super::OidcError;
use crate::config::oidc::IssuerConfig;

/// Unknown key ids trigger at most one fetch this often.
pub const MIN_REFRESH: Duration = Duration::from_secs(60);
/// The keys are fetched again this often regardless.
pub const REFRESH_EVERY: Duration = Duration::from_secs(10 * 60);
/// Largest discovery document or key set read.
const MAX_DOCUMENT: usize = 256 << 10;

/// A verification key and the one algorithm it is used with.
#[derive(Clone)]
pub struct Key {
    pub alg: Algorithm,
    pub decoding: DecodingKey,
}

pub struct KeyCache {
    /// The issuer exactly as configured (`Url` may add a trailing slash).
    configured: String,
    issuer: Url,
    allow_http: bool,
    client: reqwest::Client,
    keys: RwLock<Arc<HashMap<String, Key>>>,
    /// Held while a fetch runs, so that callers waiting for it do not fetch
    /// again.
    fetching: tokio::sync::Mutex<()>,
    /// When an unknown key id last caused a fetch (scheduled fetches do not
    /// count: a key rotated in just after one is still found).
    last_on_demand: std::sync::Mutex<Option<Instant>>,
}

impl KeyCache {
    pub fn new(config: &IssuerConfig, client: reqwest::Client) -> anyhow::Result<Self> {
        Ok(Self {
            configured: config.url.clone(),
            issuer: Url::parse(&config.url)?,
            allow_http: config.allow_insecure_http,
            client,
            keys: RwLock::default(),
            fetching: tokio::sync::Mutex::new(()),
            last_on_demand: std::sync::Mutex::new(None),
        })
    }

    fn cached(&self, kid: &str) -> Option<Key> {
        self.keys.read().unwrap_or_else(PoisonError::into_inner).get(kid).cloned()
    }

    fn is_empty(&self) -> bool {
        self.keys.read().unwrap_or_else(PoisonError::into_inner).is_empty()
    }

    /// The key `kid`, fetching the key set again if it is not cached and no
    /// fetch was tried in the last [`MIN_REFRESH`].
    pub async fn key(&self, kid: &str) -> Result<Key, OidcError> {
        if let Some(key) = self.cached(kid) {
            return Ok(key);
        }
        {
            let _one_fetch_at_a_time = self.fetching.lock().await;
            // A fetch that ran while this caller waited may have brought it.
            if self.cached(kid).is_none() && self.may_fetch_on_demand() {
                self.fetch_and_store().await;
            }
        }
        if let Some(key) = self.cached(kid) {
            return Ok(key);
        }
        if self.is_empty() {
            return Err(OidcError::Unavailable(format!(
                "the signing keys of issuer {} could not be fetched; retry later",
                self.issuer
            )));
        }
        Err(OidcError::invalid("kid", "the ID token's key id is not among the issuer's signing keys"))
    }

    /// True, and counted, if no unknown key id caused a fetch in the last
    /// [`MIN_REFRESH`].
    fn may_fetch_on_demand(&self) -> bool {
        let mut last = self.last_on_demand.lock().unwrap_or_else(PoisonError::into_inner);
        if last.is_some_and(|at| at.elapsed() < MIN_REFRESH) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// Fetches the key set now (at start, and every [`REFRESH_EVERY`]).
    pub async fn refresh(&self) {
        let _one_fetch_at_a_time = self.fetching.lock().await;
        self.fetch_and_store().await;
    }

    async fn fetch_and_store(&self) {
        match self.fetch().await {
            Ok(keys) => {
                tracing::info!(issuer = %self.issuer, keys = keys.len(), "fetched the issuer's signing keys");
                *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
            }
            Err(err) => {
                tracing::warn!(issuer = %self.issuer, error = format!("{err:#}"), "fetching signing keys failed; keeping the cached ones")
            }
        }
    }

    async fn fetch(&self) -> anyhow::Result<HashMap<String, Key>> {
        let base = self.configured.trim_end_matches('/');
        let discovery = Url::parse(&format!("{base}/.well-known/openid-configuration"))?;
        let document = self.get_json(discovery).await.context("discovery")?;
        if document.get("issuer").and_then(|v| v.as_str()) != Some(self.configured.as_str()) {
            bail!("the discovery document names another issuer");
        }
        let jwks_uri = document.get("jwks_uri").and_then(|v| v.as_str()).context("discovery names no jwks_uri")?;
        let jwks_uri = Url::parse(jwks_uri).context("jwks_uri")?;
        // Keys from anywhere but the issuer's own host would let whoever
        // controls that host mint ID tokens.
        let scheme_ok = jwks_uri.scheme() == "https" || (self.allow_http && jwks_uri.scheme() == "http");
        if !scheme_ok || jwks_uri.origin() != self.issuer.origin() {
            bail!("jwks_uri {jwks_uri} is not https on the issuer's host");
        }
        let set = self.get_json(jwks_uri).await.context("key set")?;
        let keys = set.get("keys").and_then(|v| v.as_array()).context("the key set has no keys array")?;
        let usable: HashMap<String, Key> = keys.iter().filter_map(usable_key).collect();
        if usable.is_empty() {
            bail!("the key set has no RS256 or ES256 signing key with a key id");
        }
        Ok(usable)
    }

    async fn get_json(&self, url: Url) -> anyhow::Result<serde_json::Value> {
        let mut response = self.client.get(url).send().await?.error_for_status()?;
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_DOCUMENT {
                bail!("document larger than {MAX_DOCUMENT} bytes");
            }
        }
        Ok(serde_json::from_slice(&body)?)
    }
}

/// A JWK that can verify RS256 or ES256, by its key id. Encryption keys,
/// other algorithms and keys without an id are left out.
fn usable_key(value: &serde_json::Value) -> Option<(String, Key)> {
    let jwk: Jwk = serde_json::from_value(value.clone()).ok()?;
    let kid = jwk.common.key_id.clone().filter(|k| !k.is_empty())?;
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
        (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
        (AlgorithmParameters::EllipticCurve(p), None | Some(KeyAlgorithm::ES256)) if p.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        _ => return None,
    };
    let decoding = DecodingKey::from_jwk(&jwk).ok()?;
    Some((kid, Key { alg, decoding }))
}
