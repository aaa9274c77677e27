//! `TestServer`: boots the real `amberd` binary on 127.0.0.1:0 in a fresh data
//! directory, with an admin token minted the way an operator would, and hands
//! out clients and scoped tokens.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};

use crate::backends::{Backend, Services};

pub const AMBERD: &str = env!("CARGO_BIN_EXE_amberd");

pub struct TestServer {
    child: Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    extra_args: Vec<String>,
    env: Vec<(String, String)>,
    pub admin: String,
    log: Arc<Mutex<String>>,
    pub http: reqwest::Client,
    pub backend: Backend,
    /// S3 and PostgreSQL, for `Backend::S3Postgres`.
    pub services: Option<Services>,
}

#[derive(Default)]
pub struct Builder {
    args: Vec<String>,
    backend: Option<Backend>,
    env: Vec<(String, String)>,
    parent: Option<PathBuf>,
}

impl Builder {
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = Some(backend);
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Puts the data directory inside `parent` (a small file system, say).
    pub fn data_dir_in(mut self, parent: &Path) -> Self {
        self.parent = Some(parent.to_owned());
        self
    }

    pub async fn start(mut self) -> TestServer {
        let dir = match &self.parent {
            Some(parent) => tempfile::tempdir_in(parent).expect("temp dir"),
            None => tempfile::tempdir().expect("temp dir"),
        };
        let backend = self.backend.unwrap_or(Backend::Embedded);
        let (services, env) = match backend {
            Backend::Embedded => (None, std::mem::take(&mut self.env)),
            Backend::S3Postgres => {
                let services = Services::start().await;
                self.args.extend(services.args());
                let mut env = services.s3.env();
                env.append(&mut self.env);
                (Some(services), env)
            }
        };
        let out = Command::new(AMBERD)
            .args(["token", "create", "--admin", "--name", "test-admin", "--data-dir"])
            .arg(dir.path())
            .args(&self.args)
            .envs(env.iter().cloned())
            .output()
            .expect("run amberd token create");
        assert!(out.status.success(), "token create failed: {}", String::from_utf8_lossy(&out.stderr));
        let admin = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let log = Arc::new(Mutex::new(String::new()));
        let (child, addr) = spawn(dir.path(), &self.args, &env, &log);
        TestServer {
            child,
            addr,
            dir,
            extra_args: self.args,
            env,
            admin,
            log,
            http: reqwest::Client::new(),
            backend,
            services,
        }
    }
}

/// Starts amberd on `dir` as it is (no admin token is made first).
pub fn spawn(dir: &Path, args: &[String], env: &[(String, String)], log: &Arc<Mutex<String>>) -> (Child, SocketAddr) {
    let mut child = Command::new(AMBERD)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args(args)
        .envs(env.iter().cloned())
        .env("AMBER_LOG", "info,amber_server=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn amberd");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some((_, addr)) = line.split_once("amberd listening addr=")
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(addr.trim().parse::<SocketAddr>().unwrap());
            }
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(addr) => (child, addr),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("amberd did not start: {}", log.lock().unwrap())
        }
    }
}

impl TestServer {
    pub async fn start() -> Self {
        Builder::default().start().await
    }

    pub async fn on(backend: Backend) -> Self {
        Builder::default().backend(backend).start().await
    }

    pub fn builder() -> Builder {
        Builder::default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn request(&self, method: Method, path: &str, token: &str) -> RequestBuilder {
        self.http.request(method, self.url(path)).bearer_auth(token)
    }

    /// Starts a run (`POST` of a `.../run` route, as admin) at `base` (this
    /// server, or a replica's URL), waits for it to end and answers its
    /// report; waits out a run of the kind already under way.
    pub async fn run_at(&self, base: &str, path: &str) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let run: Value = loop {
            let response = self.http.post(format!("{base}{path}")).bearer_auth(&self.admin).send().await.unwrap();
            let status = response.status();
            let body: Value = response.json().await.unwrap();
            match status {
                StatusCode::ACCEPTED => break body,
                StatusCode::CONFLICT if body["error"]["code"] == "run_active" => {}
                other => panic!("{path}: {other} {body}"),
            }
            assert!(std::time::Instant::now() < deadline, "{path}: a run stayed active: {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let id = run["id"].as_str().unwrap().to_owned();
        loop {
            let response = self.http.get(format!("{base}/v1/runs/{id}")).bearer_auth(&self.admin).send().await;
            let run: Value = response.unwrap().json().await.unwrap();
            match run["state"].as_str().unwrap() {
                "running" => {}
                "done" => return run["report"].clone(),
                _ => panic!("{path}: the run failed: {run}"),
            }
            assert!(std::time::Instant::now() < deadline, "{path}: the run did not end: {run}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// [`Self::run_at`] on this server.
    pub async fn run(&self, path: &str) -> Value {
        self.run_at(&self.url(""), path).await
    }

    /// Mints a token through the API: `grants` as (pattern, actions).
    pub async fn token_with(&self, grants: &[(&str, &[&str])], extra: Value) -> String {
        let grants: Vec<Value> =
            grants.iter().map(|(repos, actions)| json!({"repos": repos, "actions": actions})).collect();
        let mut body = json!({"name": "test", "pipeline": "it", "grants": grants});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let response = self.request(Method::POST, "/v1/tokens", &self.admin).json(&body).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "{}", response.text().await.unwrap());
        response.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned()
    }

    pub async fn token(&self, grants: &[(&str, &[&str])]) -> String {
        self.token_with(grants, json!({})).await
    }

    /// Every audit event, in order (as the admin reads them).
    pub async fn audit_events(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let path = format!("/v1/audit?after={after}&limit=1000");
            let response = self.request(Method::GET, &path, &self.admin).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let page: Value = response.json().await.unwrap();
            for entry in page["entries"].as_array().unwrap() {
                let body: Value = serde_json::from_str(entry["entry"].as_str().unwrap()).unwrap();
                out.push(body["event"].clone());
            }
            match page["next"].as_u64() {
                Some(next) => after = next,
                None => return out,
            }
        }
    }

    /// `GET /v1/keys`.
    pub async fn keys(&self) -> Value {
        self.http.get(self.url("/v1/keys")).send().await.unwrap().json().await.unwrap()
    }

    pub fn logs(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The log once it holds `needle` (log lines arrive through a pipe, a
    /// moment after the response they describe); panics after 10 s.
    pub async fn logs_with(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let logs = self.logs();
            if logs.contains(needle) {
                return logs;
            }
            assert!(Instant::now() < deadline, "the log never showed {needle:?}:\n{logs}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A KiB figure from amberd's `/proc/PID/status`.
    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap()
    }

    /// Resident set size of amberd now, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// Peak resident set size of amberd so far, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    /// Waits up to `limit` for amberd to exit by itself; its exit code.
    /// Whether the process ended (by any means, a signal too) within `limit`.
    pub fn wait_gone(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        None
    }

    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends `signal` (`HUP`, say) to amberd.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([&format!("-{signal}"), &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// Sends SIGTERM and waits for amberd to exit; returns whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            assert!(Instant::now() < deadline, "amberd did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The data directory (sled's store is `meta/` in it).
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts amberd again on the same data directory (after kill9 or terminate).
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, addr) = spawn(self.dir.path(), &self.extra_args, &self.env, &self.log);
        self.child = child;
        self.addr = addr;
    }

    /// Another `amberd` on the same backends (scale-out only).
    pub fn spawn_replica(&self) -> Replica {
        assert_eq!(self.backend, Backend::S3Postgres, "replicas share S3 and PostgreSQL");
        let log = Arc::new(Mutex::new(String::new()));
        let dir = tempfile::tempdir().unwrap();
        let (child, addr) = spawn(dir.path(), &self.extra_args, &self.env, &log);
        Replica { child, addr, _dir: dir }
    }

    /// Sets (or, with `None`, removes) an environment variable for the next
    /// start of amberd.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(value) = value {
            self.env.push((key.to_owned(), value.to_owned()));
        }
    }

    /// Runs an `amberd` subcommand on the data directory; its exit code and output.
    pub fn amberd_status(&self, args: &[&str]) -> (i32, String) {
        let out = self.amberd_output(args);
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), text)
    }

    /// Runs an `amberd` subcommand on the data directory (server stopped).
    pub fn amberd(&self, args: &[&str]) -> String {
        let out = self.amberd_output(args);
        assert!(out.status.success(), "amberd {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn amberd_output(&self, args: &[&str]) -> std::process::Output {
        Command::new(AMBERD)
            .args(args)
            .arg("--data-dir")
            .arg(self.dir.path())
            .args(&self.extra_args)
            .envs(self.env.iter().cloned())
            .output()
            .unwrap()
    }

    /// `POST .../blobs/missing` in `repo`: the digests it answers missing.
    pub async fn missing(&self, token: &str, repo: &str, digests: &[Value]) -> Value {
        let path = format!("/v1/repos/{repo}/blobs/missing");
        let response =
            self.request(Method::POST, &path, token).json(&json!({"digests": digests})).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json::<Value>().await.unwrap()["missing"].clone()
    }

    /// Asserts that no upload is left half-done: nothing staged, no open
    /// multipart upload (aborts run in the background, so this waits a little).
    pub async fn assert_nothing_staged(&self) {
        match &self.services {
            None => assert_eq!(self.staging_entries(), 0, "staging is not empty"),
            Some(services) => {
                let deadline = Instant::now() + Duration::from_secs(5);
                loop {
                    let staged = services.objects("amber/staging/").await;
                    let open = services.open_multipart_uploads().await;
                    if staged.is_empty() && open == 0 {
                        break;
                    }
                    assert!(Instant::now() < deadline, "left behind: {staged:?} and {open} open multipart uploads");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Whether the blob store holds `digest` (in any repository).
    pub async fn stored(&self, digest: &str) -> bool {
        match &self.services {
            None => self.blob_file(digest).exists(),
            Some(services) => {
                let key = format!("amber/blobs/{}", digest.trim_start_matches("blake3:"));
                services.objects(&key).await.contains(&key)
            }
        }
    }

    /// Flips one byte of a stored blob, behind the server's back.
    pub async fn corrupt(&self, digest: &str) {
        match &self.services {
            None => {
                let file = self.blob_file(digest);
                let mut bytes = std::fs::read(&file).unwrap();
                let middle = bytes.len() / 2;
                bytes[middle] ^= 1;
                std::fs::write(&file, bytes).unwrap();
            }
            Some(services) => {
                let key = format!("amber/blobs/{}", digest.trim_start_matches("blake3:"));
                let client = services.s3.client();
                let object = client.get_object().bucket(&services.bucket).key(&key).send().await.unwrap();
                let mut bytes = object.body.collect().await.unwrap().into_bytes().to_vec();
                let middle = bytes.len() / 2;
                bytes[middle] ^= 1;
                client.put_object().bucket(&services.bucket).key(&key).body(bytes.into()).send().await.unwrap();
            }
        }
    }

    /// Rewrites a stored blob's bytes behind the server's back with what
    /// `edit` makes of them; `None` deletes it.
    pub async fn tamper(&self, digest: &str, edit: impl FnOnce(Vec<u8>) -> Option<Vec<u8>>) {
        match &self.services {
            None => {
                let file = self.blob_file(digest);
                match edit(std::fs::read(&file).unwrap()) {
                    Some(bytes) => std::fs::write(&file, bytes).unwrap(),
                    None => std::fs::remove_file(&file).unwrap(),
                }
            }
            Some(services) => {
                let client = services.s3.client();
                let key = format!("amber/blobs/{}", digest.trim_start_matches("blake3:"));
                let object = client.get_object().bucket(&services.bucket).key(&key).send().await.unwrap();
                let bytes = object.body.collect().await.unwrap().into_bytes().to_vec();
                match edit(bytes) {
                    Some(bytes) => {
                        client.put_object().bucket(&services.bucket).key(&key).body(bytes.into()).send().await.unwrap();
                    }
                    None => {
                        client.delete_object().bucket(&services.bucket).key(&key).send().await.unwrap();
                    }
                }
            }
        }
    }

    /// Every byte the server keeps at rest: the data directory and, on
    /// PostgreSQL, a `pg_dump`.
    pub fn persisted(&self) -> Vec<(String, Vec<u8>)> {
        let mut all: Vec<(String, Vec<u8>)> =
            walk(self.dir.path()).into_iter().map(|p| (p.display().to_string(), std::fs::read(&p).unwrap())).collect();
        if let Some(services) = &self.services {
            all.push(("pg_dump".into(), services.pg.dump()));
        }
        all
    }

    pub fn staging_entries(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("blobs/staging")).unwrap().count()
    }

    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("blake3:");
        self.dir.path().join("blobs/data").join(&hex[..2]).join(hex)
    }

    /// Sends `head` (request line and headers, no body) over a raw socket, so
    /// paths reach the server exactly as written (no client normalisation).
    pub fn raw(&self, head: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(self.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let request = format!("{head}\r\nHost: {}\r\nConnection: close\r\n\r\n", self.addr);
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        (status, body)
    }
}

/// The `amber` CLI, built beside `amberd` (built on demand when a test run
/// did not build the whole workspace).
pub fn amber_bin() -> PathBuf {
    let path = Path::new(AMBERD).with_file_name("amber");
    static BUILD: std::sync::Once = std::sync::Once::new();
    BUILD.call_once(|| {
        if !path.exists() {
            let status = Command::new(env!("CARGO"))
                .args(["build", "-p", "amber-cli", "--bin", "amber"])
                .status()
                .expect("cargo build amber");
            assert!(status.success());
        }
    });
    path
}

/// The server's public keys (`GET /v1/keys`) written to `dir/keys.json`,
/// for `amber pull|verify --key`; returns the file's path.
pub async fn key_file(server: &TestServer, dir: &Path) -> String {
    let keys = server.http.get(server.url("/v1/keys")).send().await.unwrap().text().await.unwrap();
    let path = dir.join("keys.json");
    std::fs::write(&path, keys).unwrap();
    path.to_str().unwrap().to_owned()
}

/// What an `amber` run printed and how it exited.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl TestServer {
    /// Runs `amber ARGS` against this server with `token`.
    pub async fn amber(&self, token: &str, args: &[&str]) -> Run {
        let mut command = tokio::process::Command::new(amber_bin());
        command.args(args).env("AMBER_URL", self.url("")).env("AMBER_TOKEN", token).stdin(Stdio::null());
        // Each server's log history is its own: so is the client's record of it.
        command.env("AMBER_LOG_STATE", self.dir.path().join("client-log-state.json"));
        let out = command.output().await.expect("run amber");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Stops amberd (SIGTERM), then runs `edit` on its sled store.
    pub fn with_stopped_meta(&mut self, edit: impl FnOnce(&sled::Db)) {
        assert!(self.terminate());
        let db = sled::open(self.dir.path().join("meta")).unwrap();
        edit(&db);
        db.flush().unwrap();
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { files.extend(walk(&path)) } else { files.push(path) }
    }
    files
}

/// A second `amberd` on the same S3 bucket and database.
pub struct Replica {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Replica {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts an error response: status and the stable error code.
pub async fn expect_error(response: reqwest::Response, status: StatusCode, code: &str) -> Value {
    let got = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(got, status, "body: {text}");
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("error body is not JSON: {text}"));
    assert_eq!(body["error"]["code"], code, "body: {text}");
    body
}

/// BLAKE3 by an implementation nobody here wrote (Python's `blake3` package).
pub fn independent_b3(path: &Path) -> String {
    let out = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/b3.py"))
        .arg(path)
        .output()
        .expect("python3");
    assert!(out.status.success(), "b3.py: {}", String::from_utf8_lossy(&out.stderr));
    format!("blake3:{}", String::from_utf8(out.stdout).unwrap().trim())
}

pub fn independent_b3_bytes(data: &[u8]) -> String {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), data).unwrap();
    independent_b3(file.path())
}

/// Deterministic, incompressible-looking test data.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// The payload bytes of a DSSE envelope.
pub fn payload_bytes(envelope: &Value) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(envelope["payload"].as_str().unwrap()).unwrap()
}

/// The payload of a DSSE envelope, as JSON.
pub fn payload(envelope: &Value) -> Value {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.decode(envelope["payload"].as_str().unwrap()).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Verifies with Python's `cryptography`; returns the BLAKE3 hex of the payload.
pub fn verify_with_python(envelope: &Value, keys: &Value) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let (env_path, keys_path) = (dir.path().join("envelope.json"), dir.path().join("keys.json"));
    std::fs::write(&env_path, envelope.to_string()).unwrap();
    std::fs::write(&keys_path, keys.to_string()).unwrap();
    let out = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/verify_dsse.py"))
        .args([&env_path, &keys_path])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(format!("blake3:{}", String::from_utf8(out.stdout).unwrap().trim()))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
