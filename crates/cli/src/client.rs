//! `Client`: Amber's HTTP API, typed. Idempotent requests (every read, blob
//! uploads by digest, tag binds, which the server answers `200` on retry) are
//! retried with backoff on connection errors and `5xx`.

use std::path::Path;
use std::time::Duration;

use amber_core::audit::AuditPage;
use amber_core::dsse::Envelope;
use amber_core::manifest::{Expected, ManifestRequest};
use amber_core::oidc::{ExchangeRequest, ExchangedToken, Publisher, PublisherList};
use amber_core::wire::{
    BlobInfo, CreateTokenRequest, CreatedToken, ErrorBody, ExpiredBody, KeyList, MissingRequest, MissingResponse,
    ReasonRequest, RetentionPlan, RetentionPolicy, RotateTokenRequest, RunInfo, RunState, TagList, TagStatus,
    TokenInfo, TokenList,
};
use amber_core::{Digest, RepoName, Tag};
use futures_util::TryStreamExt;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;

use crate::error::{CliError, Result};

const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
pub const MANIFEST_DIGEST_HEADER: &str = "amber-manifest-digest";

#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// Longest `Retry-After` honoured; a server asking for more is retried sooner.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Whether a request may be sent again after a failure.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    Idempotent,
    Once,
}

async fn error_from(response: Response) -> CliError {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let (code, message, detail) = match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => (body.error.code, body.error.message, body.error.detail),
        Err(_) => ("http_error".to_owned(), text.chars().take(200).collect(), None),
    };
    match status {
        401 | 403 => CliError::Auth { status, code, message },
        410 if code == "tag_expired" => {
            let tombstone = serde_json::from_str::<ExpiredBody>(&text).ok().map(|b| Box::new(b.tombstone));
            CliError::Retired { message: format!("{code}: {message} (HTTP {status})"), tombstone }
        }
        409 => CliError::Conflict { status, code, message, detail },
        _ => CliError::Api { status, code, message, detail },
    }
}

/// How the client checks a server's certificate: the system's roots, and
/// the certificates of `ca_cert` (a PEM bundle) too; `insecure` checks
/// nothing, and says so on every call.
#[derive(Clone, Debug, Default)]
pub struct Trust {
    pub ca_cert: Option<std::path::PathBuf>,
    pub insecure: bool,
}

impl Trust {
    /// The HTTP client builder with this trust and amber's user agent.
    pub fn builder(&self) -> Result<reqwest::ClientBuilder> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("amber/", env!("CARGO_PKG_VERSION")))
            .tls_built_in_webpki_certs(false)
            .tls_built_in_native_certs(true);
        if let Some(path) = &self.ca_cert {
            let pem =
                std::fs::read(path).map_err(|e| CliError::Io(format!("reading --ca-cert {}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| CliError::Usage(format!("--ca-cert {}: not PEM certificates: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(CliError::Usage(format!("--ca-cert {} holds no certificate", path.display())));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if self.insecure {
            eprintln!(
                "amber: WARNING: --insecure-skip-tls-verify: the server's certificate is not checked; \
                 anyone on the path can read the token and change what is sent"
            );
            builder = builder.danger_accept_invalid_certs(true);
        }
        Ok(builder)
    }
}

impl Client {
    pub fn new(base: &str, token: Option<String>, trust: &Trust) -> Result<Self> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(CliError::Usage(format!("server URL {base:?} must start with http:// or https://")));
        }
        let http = trust.builder()?.connect_timeout(Duration::from_secs(10)).build()?;
        Ok(Self { base, token, http })
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends what `build` makes, retrying transient failures if `retry` allows,
    /// and turns error statuses into [`CliError`]s.
    async fn send(&self, retry: Retry, build: impl Fn() -> Result<RequestBuilder>) -> Result<Response> {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let mut asked_wait = None;
            let outcome = match build()?.send().await {
                Ok(response) if response.status().is_success() || response.status() == StatusCode::NOT_MODIFIED => {
                    return Ok(response);
                }
                Ok(response) => {
                    // `429` and `503` say when to come back.
                    asked_wait = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
                        .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
                    error_from(response).await
                }
                Err(err) => CliError::from(err),
            };
            if retry == Retry::Once || !outcome.is_transient() || attempt == ATTEMPTS {
                return Err(outcome);
            }
            let wait = asked_wait.map_or(backoff, |asked| asked.max(backoff));
            eprintln!("amber: {outcome}; retrying in {} ms", wait.as_millis());
            tokio::time::sleep(wait).await;
            backoff *= 2;
            attempt += 1;
        }
    }

    async fn get_text(&self, path: &str) -> Result<String> {
        Ok(self.send(Retry::Idempotent, || Ok(self.request(Method::GET, path))).await?.text().await?)
    }

    /// The log's newest signed checkpoint.
    pub async fn log_checkpoint(&self) -> Result<String> {
        self.get_text("/v1/log/checkpoint").await
    }

    /// The consistency proof from tree size `old` to `new`, one base64 hash a line.
    pub async fn log_consistency(&self, old: u64, new: u64) -> Result<String> {
        self.get_text(&format!("/v1/log/consistency?old={old}&new={new}")).await
    }

    /// A hash tile (`tile/...` path after `tile/`), raw bytes.
    pub async fn log_tile(&self, path: &str) -> Result<bytes::Bytes> {
        Ok(self
            .send(Retry::Idempotent, || Ok(self.request(Method::GET, &format!("/v1/log/{path}"))))
            .await?
            .bytes()
            .await?)
    }

    /// A tag's receipt: a `c2sp.org/tlog-proof@v1` of its `tag_bound` entry.
    pub async fn tag_receipt(&self, repo: &RepoName, tag: &Tag) -> Result<String> {
        self.get_text(&format!("/v1/repos/{repo}/tags/{tag}/receipt")).await
    }

    /// A binding's attestations, one DSSE envelope per line (`.intoto.jsonl`).
    pub async fn tag_attestations(&self, repo: &RepoName, tag: &Tag) -> Result<String> {
        let path = format!("/v1/repos/{repo}/tags/{tag}/attestations");
        let request = || Ok(self.request(Method::GET, &path).header(reqwest::header::ACCEPT, "application/x-ndjson"));
        Ok(self.send(Retry::Idempotent, request).await?.text().await?)
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        Ok(self.send(Retry::Idempotent, || Ok(self.request(Method::GET, path))).await?.json().await?)
    }

    pub async fn healthz(&self) -> Result<()> {
        self.send(Retry::Once, || Ok(self.request(Method::GET, "/healthz"))).await.map(drop)
    }

    pub async fn whoami(&self) -> Result<TokenInfo> {
        self.get_json("/v1/whoami").await
    }

    pub async fn keys(&self) -> Result<KeyList> {
        self.get_json("/v1/keys").await
    }

    /// Exchanges a CI ID token for a token (no `Authorization` is sent).
    /// Not retried: an ID token is exchanged once, so a lost answer could
    /// only be answered `oidc_replayed`.
    pub async fn exchange_id_token(&self, id_token: &str) -> Result<ExchangedToken> {
        let body = ExchangeRequest { id_token: id_token.to_owned() };
        let url = format!("{}/v1/oidc/token", self.base);
        let response = self.send(Retry::Once, || Ok(self.http.post(&url).json(&body))).await?;
        Ok(response.json().await?)
    }

    pub async fn create_publisher(&self, request: &serde_json::Value) -> Result<Publisher> {
        let response =
            self.send(Retry::Once, || Ok(self.request(Method::POST, "/v1/publishers").json(request))).await?;
        Ok(response.json().await?)
    }

    pub async fn list_publishers(&self) -> Result<PublisherList> {
        self.get_json("/v1/publishers").await
    }

    pub async fn show_publisher(&self, id: &str) -> Result<Publisher> {
        self.get_json(&format!("/v1/publishers/{id}")).await
    }

    pub async fn delete_publisher(&self, id: &str) -> Result<Publisher> {
        let path = format!("/v1/publishers/{id}");
        Ok(self.send(Retry::Idempotent, || Ok(self.request(Method::DELETE, &path))).await?.json().await?)
    }

    pub async fn create_token(&self, request: &CreateTokenRequest) -> Result<CreatedToken> {
        // Not retried: a lost answer would leave an unknown live token behind.
        let response = self.send(Retry::Once, || Ok(self.request(Method::POST, "/v1/tokens").json(request))).await?;
        Ok(response.json().await?)
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>> {
        let mut tokens = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let path = match &after {
                Some(after) => format!("/v1/tokens?limit=1000&after={after}"),
                None => "/v1/tokens?limit=1000".to_owned(),
            };
            let page: TokenList = self.get_json(&path).await?;
            tokens.extend(page.tokens);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(tokens),
            }
        }
    }

    pub async fn show_token(&self, id: &str) -> Result<TokenInfo> {
        self.get_json(&format!("/v1/tokens/{id}")).await
    }

    pub async fn rotate_token(&self, id: &str, grace_seconds: Option<u64>) -> Result<CreatedToken> {
        let body = RotateTokenRequest { grace_seconds };
        let path = format!("/v1/tokens/{id}/rotate");
        let response = self.send(Retry::Once, || Ok(self.request(Method::POST, &path).json(&body))).await?;
        Ok(response.json().await?)
    }

    pub async fn revoke_token(&self, id: &str) -> Result<TokenInfo> {
        let path = format!("/v1/tokens/{id}");
        Ok(self.send(Retry::Idempotent, || Ok(self.request(Method::DELETE, &path))).await?.json().await?)
    }

    pub async fn audit_page(&self, after: u64) -> Result<AuditPage> {
        self.get_json(&format!("/v1/audit?limit=10000&after={after}")).await
    }

    /// The digests of `digests` that `repo` does not have yet.
    pub async fn missing(&self, repo: &RepoName, digests: &[Digest]) -> Result<Vec<Digest>> {
        let mut missing = Vec::new();
        let path = format!("/v1/repos/{repo}/blobs/missing");
        for chunk in digests.chunks(10_000) {
            let body = MissingRequest { digests: chunk.to_vec() };
            let response = self.send(Retry::Idempotent, || Ok(self.request(Method::POST, &path).json(&body))).await?;
            missing.extend(response.json::<MissingResponse>().await?.missing);
        }
        Ok(missing)
    }

    /// Streams a file to `repo` under its known digest; `on_bytes` sees progress.
    pub async fn put_blob_file(
        &self,
        repo: &RepoName,
        digest: &Digest,
        file: &Path,
        size: u64,
        on_bytes: impl Fn(u64) + Clone + Send + Sync + 'static,
    ) -> Result<BlobInfo> {
        let path = format!("/v1/repos/{repo}/blobs/{digest}");
        let response = self
            .send(Retry::Idempotent, || {
                let opened =
                    std::fs::File::open(file).map_err(|e| CliError::io(format!("opening {}", file.display()), e))?;
                let on_bytes = on_bytes.clone();
                let stream = tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(opened), 256 << 10)
                    .inspect_ok(move |chunk| on_bytes(chunk.len() as u64));
                Ok(self
                    .request(Method::PUT, &path)
                    .header(reqwest::header::CONTENT_LENGTH, size)
                    .body(reqwest::Body::wrap_stream(stream)))
            })
            .await?;
        Ok(response.json().await?)
    }

    /// Creates a tus upload in `repo`; its path. `concat`: `Upload-Concat`.
    pub async fn create_upload(
        &self,
        repo: &RepoName,
        length: Option<u64>,
        metadata: &str,
        concat: &str,
    ) -> Result<(String, Option<String>)> {
        let path = format!("/v1/repos/{repo}/uploads");
        let response = self
            .send(Retry::Idempotent, || {
                let mut request = self
                    .request(Method::POST, &path)
                    .header("Tus-Resumable", "1.0.0")
                    .header("Upload-Metadata", metadata)
                    .header("Upload-Concat", concat);
                if let Some(length) = length {
                    request = request.header("Upload-Length", length);
                }
                Ok(request)
            })
            .await?;
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let location = header("location").ok_or_else(|| CliError::Io("the server gave no upload location".into()))?;
        Ok((location, header("amber-blob-digest")))
    }

    /// The acknowledged offset of the upload at `path`.
    pub async fn upload_offset(&self, path: &str) -> Result<u64> {
        let response = self
            .send(Retry::Idempotent, || Ok(self.request(Method::HEAD, path).header("Tus-Resumable", "1.0.0")))
            .await?;
        upload_offset_of(&response)
    }

    /// Sends `length` bytes of `file` from `from` to the upload at `path`,
    /// whose acknowledged offset is `offset`; the new acknowledged offset.
    /// Sent once: the caller resumes from the offset the server reports.
    pub async fn patch_upload(&self, path: &str, offset: u64, file: &Path, from: u64, length: u64) -> Result<u64> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let context = || format!("reading {}", file.display());
        let mut opened = tokio::fs::File::open(file).await.map_err(|e| CliError::io(context(), e))?;
        opened.seek(std::io::SeekFrom::Start(from)).await.map_err(|e| CliError::io(context(), e))?;
        let stream = tokio_util::io::ReaderStream::with_capacity(opened.take(length), 256 << 10);
        let body = std::sync::Mutex::new(Some(reqwest::Body::wrap_stream(stream)));
        let response = self
            .send(Retry::Once, || {
                let body = body.lock().expect("not poisoned").take().ok_or_else(|| CliError::Io("sent once".into()))?;
                Ok(self
                    .request(Method::PATCH, path)
                    .header("Tus-Resumable", "1.0.0")
                    .header("Upload-Offset", offset)
                    .header(reqwest::header::CONTENT_TYPE, "application/offset+octet-stream")
                    .header(reqwest::header::CONTENT_LENGTH, length)
                    .body(body))
            })
            .await?;
        upload_offset_of(&response)
    }

    /// Uploads bytes already in memory (small blobs).
    pub async fn put_blob_bytes(&self, repo: &RepoName, digest: &Digest, body: bytes::Bytes) -> Result<()> {
        let path = format!("/v1/repos/{repo}/blobs/{digest}");
        self.send(Retry::Idempotent, || Ok(self.request(Method::PUT, &path).body(body.clone()))).await.map(drop)
    }

    pub async fn head_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let path = format!("/v1/repos/{repo}/blobs/{digest}");
        self.send(Retry::Idempotent, || Ok(self.request(Method::HEAD, &path))).await.map(drop)
    }

    pub async fn get_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Response> {
        let path = format!("/v1/repos/{repo}/blobs/{digest}");
        self.send(Retry::Idempotent, || Ok(self.request(Method::GET, &path))).await
    }

    /// Binds `tag`; returns the envelope, its digest and whether it was new.
    pub async fn put_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        manifest: &ManifestRequest,
    ) -> Result<(Envelope, Digest, bool)> {
        let path = format!("/v1/repos/{repo}/tags/{tag}");
        let response = self.send(Retry::Idempotent, || Ok(self.request(Method::PUT, &path).json(manifest))).await?;
        let created = response.status() == StatusCode::CREATED;
        let digest = manifest_digest(&response)?;
        Ok((response.json().await?, digest, created))
    }

    /// Every tag of `repo`, expired ones included.
    pub async fn list_tags(&self, repo: &RepoName) -> Result<Vec<amber_core::wire::TagEntry>> {
        let mut tags = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut path = format!("/v1/repos/{repo}/tags?limit=1000");
            if let Some(after) = &after {
                path.push_str(&format!("&after={after}"));
            }
            let page: TagList = self.get_json(&path).await?;
            tags.extend(page.tags);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(tags),
            }
        }
    }

    pub async fn hold_tag(&self, repo: &RepoName, tag: &Tag, reason: &str) -> Result<TagStatus> {
        let path = format!("/v1/repos/{repo}/tags/{tag}/hold");
        let body = ReasonRequest { reason: reason.to_owned() };
        Ok(self.send(Retry::Idempotent, || Ok(self.request(Method::PUT, &path).json(&body))).await?.json().await?)
    }

    pub async fn release_tag(&self, repo: &RepoName, tag: &Tag) -> Result<TagStatus> {
        let path = format!("/v1/repos/{repo}/tags/{tag}/hold");
        Ok(self.send(Retry::Idempotent, || Ok(self.request(Method::DELETE, &path))).await?.json().await?)
    }

    /// Expires a tag now; answers its tombstone (also on a retry).
    pub async fn expire_tag(&self, repo: &RepoName, tag: &Tag, reason: &str) -> Result<Envelope> {
        let path = format!("/v1/repos/{repo}/tags/{tag}/expire");
        let body = ReasonRequest { reason: reason.to_owned() };
        Ok(self.send(Retry::Idempotent, || Ok(self.request(Method::POST, &path).json(&body))).await?.json().await?)
    }

    /// `scope` is `OWNER/NAME` or `OWNER/*`.
    pub async fn put_policy(&self, scope: &str, policy: &RetentionPolicy) -> Result<serde_json::Value> {
        let path = format!("/v1/retention/{scope}");
        Ok(self.send(Retry::Idempotent, || Ok(self.request(Method::PUT, &path).json(policy))).await?.json().await?)
    }

    /// The policy in effect for `scope`; every policy without one.
    pub async fn get_policy(&self, scope: Option<&str>) -> Result<serde_json::Value> {
        match scope {
            Some(scope) => self.get_json(&format!("/v1/retention/{scope}")).await,
            None => self.get_json("/v1/retention").await,
        }
    }

    pub async fn delete_policy(&self, scope: &str) -> Result<serde_json::Value> {
        let path = format!("/v1/retention/{scope}");
        Ok(self.send(Retry::Once, || Ok(self.request(Method::DELETE, &path))).await?.json().await?)
    }

    pub async fn plan_retention(&self, scope: &str) -> Result<RetentionPlan> {
        let path = format!("/v1/retention/{scope}/plan");
        Ok(self.send(Retry::Idempotent, || Ok(self.request(Method::POST, &path))).await?.json().await?)
    }

    /// Starts a run (`POST` of `path`), or, when one of its kind is under
    /// way, follows that one; waits for its end and answers it.
    pub async fn run_to_end(&self, path: &str) -> Result<RunInfo> {
        let started = match self.send(Retry::Once, || Ok(self.request(Method::POST, path))).await {
            Ok(response) => response.json::<RunInfo>().await?,
            Err(CliError::Conflict { code, detail: Some(detail), message, .. }) if code == "run_active" => {
                eprintln!("amber: {message}; following it");
                serde_json::from_value(detail["run"].clone())
                    .map_err(|e| CliError::Transport(format!("the active run is unreadable: {e}")))?
            }
            Err(other) => return Err(other),
        };
        let path = format!("/v1/runs/{}", started.id);
        let mut said = std::time::Instant::now();
        loop {
            let run: RunInfo =
                self.send(Retry::Idempotent, || Ok(self.request(Method::GET, &path))).await?.json().await?;
            if run.state != RunState::Running {
                return Ok(run);
            }
            if said.elapsed() >= Duration::from_secs(5) {
                let p = &run.progress;
                let of = p.planned.map(|n| format!(" of {n}")).unwrap_or_default();
                eprintln!("amber: {} run {}: {}{of} {} done, {:.0}/s", run.kind, run.id, p.done, p.unit, p.rate);
                said = std::time::Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// A run's report, once it ended well.
    fn report_of<T: serde::de::DeserializeOwned>(run: RunInfo) -> Result<T> {
        match (run.state, run.report) {
            (RunState::Done, Some(report)) => serde_json::from_value(report)
                .map_err(|e| CliError::Transport(format!("the run's report is unreadable: {e}"))),
            _ => Err(CliError::Api {
                status: 200,
                code: "run_failed".into(),
                message: format!("the {} run {} failed: {}", run.kind, run.id, run.error.unwrap_or_default()),
                detail: None,
            }),
        }
    }

    /// Runs every policy now, and waits for the run to end.
    pub async fn run_retention(&self) -> Result<RetentionPlan> {
        Self::report_of(self.run_to_end("/v1/retention/run").await?)
    }

    /// Runs reclaim now, and waits for the run to end.
    pub async fn run_reclaim(&self) -> Result<amber_core::wire::ReclaimReport> {
        Self::report_of(self.run_to_end("/v1/reclaim/run").await?)
    }

    /// The most recent runs, newest first.
    pub async fn list_runs(&self) -> Result<amber_core::wire::RunList> {
        Ok(self.send(Retry::Idempotent, || Ok(self.request(Method::GET, "/v1/runs"))).await?.json().await?)
    }

    pub async fn show_run(&self, id: &str) -> Result<RunInfo> {
        let path = format!("/v1/runs/{id}");
        Ok(self.send(Retry::Idempotent, || Ok(self.request(Method::GET, &path))).await?.json().await?)
    }

    /// The envelope a tag is bound to, or a manifest by digest. Unverified.
    pub async fn get_envelope(&self, repo: &RepoName, target: &Expected) -> Result<Envelope> {
        let path = match target {
            Expected::Tag(tag) => format!("/v1/repos/{repo}/tags/{tag}"),
            Expected::Digest(digest) => format!("/v1/repos/{repo}/manifests/{digest}"),
        };
        self.get_json(&path).await
    }
}

fn manifest_digest(response: &Response) -> Result<Digest> {
    response
        .headers()
        .get(MANIFEST_DIGEST_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| CliError::Transport("the server did not send Amber-Manifest-Digest".into()))
}

fn upload_offset_of(response: &Response) -> Result<u64> {
    response
        .headers()
        .get("upload-offset")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .ok_or_else(|| CliError::Io("the server gave no Upload-Offset".into()))
}
