//! A fake OpenID Connect issuer on 127.0.0.1: discovery, a JWKS of keys made
//! at test start (RSA 2048 and P-256, by aws-lc-rs), key rotation, a counter
//! of key fetches, and a fake GitHub Actions ID token endpoint
//! (`ACTIONS_ID_TOKEN_REQUEST_URL`). ID tokens are put together here by
//! hand (base64url JSON and a raw signature), not by the JWT library the
//! server verifies with, so that both sides are not one implementation.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use serde_json::{Value, json};

/// The bearer the fake Actions runtime wants.
pub const REQUEST_TOKEN: &str = "fake-actions-request-token";

pub enum Secret {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

pub struct Key {
    pub kid: String,
    pub secret: Secret,
}

impl Key {
    pub fn rsa(kid: &str) -> Self {
        Self { kid: kid.into(), secret: Secret::Rsa(RsaKeyPair::generate(KeySize::Rsa2048).unwrap()) }
    }

    pub fn ec(kid: &str) -> Self {
        let pair = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        Self { kid: kid.into(), secret: Secret::Ec(pair) }
    }

    pub fn alg(&self) -> &'static str {
        match self.secret {
            Secret::Rsa(_) => "RS256",
            Secret::Ec(_) => "ES256",
        }
    }

    fn jwk(&self) -> Value {
        match &self.secret {
            Secret::Rsa(pair) => {
                let parts = PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
                json!({"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256", "n": b64(&parts.n), "e": b64(&parts.e)})
            }
            Secret::Ec(pair) => {
                let point = pair.public_key().as_ref();
                json!({"kty": "EC", "kid": self.kid, "use": "sig", "crv": "P-256",
                       "x": b64(&point[1..33]), "y": b64(&point[33..65])})
            }
        }
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        match &self.secret {
            Secret::Rsa(pair) => {
                let mut sig = vec![0; pair.public_modulus_len()];
                pair.sign(&signature::RSA_PKCS1_SHA256, &SystemRandom::new(), message, &mut sig).unwrap();
                sig
            }
            Secret::Ec(pair) => pair.sign(&SystemRandom::new(), message).unwrap().as_ref().to_vec(),
        }
    }

    /// The public key's DER, as an attacker would find it and try as an
    /// HMAC secret.
    pub fn public_der(&self) -> Vec<u8> {
        match &self.secret {
            Secret::Rsa(pair) => pair.public_key().as_ref().to_vec(),
            Secret::Ec(pair) => pair.public_key().as_ref().to_vec(),
        }
    }
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `header.claims` signed by `key` as JWS compact serialisation.
pub fn jwt(header: &Value, claims: &Value, key: &Key) -> String {
    let message = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let sig = key.sign(message.as_bytes());
    format!("{message}.{}", b64(&sig))
}

struct Inner {
    url: String,
    keys: Mutex<Vec<Arc<Key>>>,
    fetches: AtomicUsize,
    /// Requests for anything but discovery and the key set (a `jku` fetch).
    strays: AtomicUsize,
    down: AtomicBool,
    jti: AtomicUsize,
}

pub struct FakeIssuer {
    pub url: String,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeIssuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeIssuer {
    /// An issuer publishing one RSA key (`rsa-1`) and one P-256 key (`ec-1`).
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let inner = Arc::new(Inner {
            url: url.clone(),
            keys: Mutex::new(vec![Arc::new(Key::rsa("rsa-1")), Arc::new(Key::ec("ec-1"))]),
            fetches: AtomicUsize::new(0),
            strays: AtomicUsize::new(0),
            down: AtomicBool::new(false),
            jti: AtomicUsize::new(0),
        });
        let app = axum::Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/.well-known/jwks", get(jwks))
            .route("/actions/token", get(actions_token))
            .fallback(stray)
            .with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, inner, task }
    }

    /// Key set fetches so far.
    pub fn fetches(&self) -> usize {
        self.inner.fetches.load(Ordering::SeqCst)
    }

    /// Requests to any other path so far.
    pub fn strays(&self) -> usize {
        self.inner.strays.load(Ordering::SeqCst)
    }

    /// Makes discovery and the key set answer `503` (or work again).
    pub fn set_down(&self, down: bool) {
        self.inner.down.store(down, Ordering::SeqCst);
    }

    /// Publishes a new RSA key and withdraws the first published one.
    pub fn rotate(&self, kid: &str) {
        let mut keys = self.inner.keys.lock().unwrap();
        keys.remove(0);
        keys.push(Arc::new(Key::rsa(kid)));
    }

    pub fn key(&self, kid: &str) -> Arc<Key> {
        self.inner.keys.lock().unwrap().iter().find(|k| k.kid == kid).cloned().expect("published key")
    }

    /// See [`FakeIssuerView::github_claims`].
    pub fn github_claims(&self) -> Value {
        FakeIssuerView(&self.inner).github_claims()
    }

    /// `claims` signed with published key `kid`, with a usual header.
    pub fn sign(&self, kid: &str, claims: &Value) -> String {
        let key = self.key(kid);
        jwt(&json!({"alg": key.alg(), "typ": "JWT", "kid": kid}), claims, &key)
    }

    /// `ACTIONS_ID_TOKEN_REQUEST_URL`, as the runner sets it.
    pub fn actions_url(&self) -> String {
        format!("{}/actions/token?api-version=2.0", self.url)
    }
}

fn unavailable(inner: &Inner) -> Option<Response> {
    inner.down.load(Ordering::SeqCst).then(|| StatusCode::SERVICE_UNAVAILABLE.into_response())
}

async fn discovery(State(inner): State<Arc<Inner>>) -> Response {
    if let Some(down) = unavailable(&inner) {
        return down;
    }
    axum::Json(json!({"issuer": inner.url, "jwks_uri": format!("{}/.well-known/jwks", inner.url),
                      "id_token_signing_alg_values_supported": ["RS256", "ES256"]}))
    .into_response()
}

async fn jwks(State(inner): State<Arc<Inner>>) -> Response {
    inner.fetches.fetch_add(1, Ordering::SeqCst);
    if let Some(down) = unavailable(&inner) {
        return down;
    }
    let keys: Vec<Value> = inner.keys.lock().unwrap().iter().map(|k| k.jwk()).collect();
    axum::Json(json!({"keys": keys})).into_response()
}

async fn stray(State(inner): State<Arc<Inner>>) -> StatusCode {
    inner.strays.fetch_add(1, Ordering::SeqCst);
    StatusCode::NOT_FOUND
}

/// The Actions runtime: a GitHub-shaped token for the audience asked.
async fn actions_token(
    State(inner): State<Arc<Inner>>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(&format!("bearer {REQUEST_TOKEN}")));
    if !authorized || query.get("api-version").map(String::as_str) != Some("2.0") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let issuer = FakeIssuerView(&inner);
    let mut claims = issuer.github_claims();
    if let Some(audience) = query.get("audience") {
        claims["aud"] = json!(audience);
    }
    let key = inner.keys.lock().unwrap()[0].clone();
    let token = jwt(&json!({"alg": key.alg(), "typ": "JWT", "kid": key.kid}), &claims, &key);
    axum::Json(json!({"count": 1, "value": token})).into_response()
}

/// A GitHub Actions-shaped ID token's claims for acme/web's release
/// workflow on main, issued now, valid five minutes, for `amber`, with a
/// fresh `jti`.
struct FakeIssuerView<'a>(&'a Inner);

impl FakeIssuerView<'_> {
    fn github_claims(&self) -> Value {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let jti = format!("jti-{}", self.0.jti.fetch_add(1, Ordering::SeqCst));
        json!({
            "iss": self.0.url, "aud": "amber", "iat": now, "nbf": now, "exp": now + 300, "jti": jti,
            "sub": "repo:acme/web:ref:refs/heads/main",
            "repository": "acme/web", "repository_id": "123456789", "repository_owner_id": "98765",
            "workflow_ref": "acme/web/.github/workflows/release.yml@refs/heads/main",
            "job_workflow_ref": "acme/web/.github/workflows/release.yml@refs/heads/main",
            "ref": "refs/heads/main", "ref_type": "branch", "sha": "0123456789abcdef0123456789abcdef01234567",
            "event_name": "push", "run_id": "4711", "run_attempt": "1", "environment": "production",
        })
    }
}
