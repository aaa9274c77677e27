//! Witnesses: a real `litewitness` (torchwood, pinned in
//! `../shared/tools/go-tools.sh`) per test, its Ed25519 key in an
//! `ssh-agent` of the test's own, the store's log added with `witnessctl`.
//! The store submits its checkpoints (C2SP tlog-witness), serves the
//! cosigned one, and `amber pull --witness-policy` requires the quorum,
//! failing closed below it; a witness that is down delays nothing else.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use reqwest::Method;
use serde_json::Value;

use crate::harness::{TestServer, data, key_file};

/// A free port on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running litewitness and its ssh-agent, ended when dropped.
pub(crate) struct LiteWitness {
    pub(crate) name: String,
    pub(crate) vkey: String,
    pub(crate) url: String,
    db: PathBuf,
    agent: Child,
    witness: Option<Child>,
    fingerprint: String,
    socket: PathBuf,
    port: u16,
}

impl Drop for LiteWitness {
    fn drop(&mut self) {
        if let Some(mut witness) = self.witness.take() {
            let _ = witness.kill();
            let _ = witness.wait();
        }
        let _ = self.agent.kill();
        let _ = self.agent.wait();
    }
}

fn run(command: &mut Command) -> String {
    let out = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl LiteWitness {
    /// A witness named `name` with a fresh key, not yet started.
    pub(crate) fn new(dir: &Path, name: &str) -> Self {
        let key = dir.join("witness_key");
        run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", "witness", "-f"]).arg(&key));
        let public = std::fs::read_to_string(dir.join("witness_key.pub")).unwrap();
        let blob = B64.decode(public.split_whitespace().nth(1).unwrap()).unwrap();
        let raw: [u8; 32] = blob[blob.len() - 32..].try_into().unwrap();
        let verifying = ed25519_dalek::VerifyingKey::from_bytes(&raw).unwrap();
        let id = amber_core::witness::cosigner_key_id(name, &verifying);
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let mut typed = vec![amber_core::witness::COSIGNATURE_ED25519];
        typed.extend_from_slice(&raw);
        let vkey = format!("{name}+{hex}+{}", B64.encode(typed));
        let listed =
            run(Command::new("ssh-keygen").args(["-l", "-E", "sha256", "-f"]).arg(dir.join("witness_key.pub")));
        let fingerprint = listed.split_whitespace().nth(1).unwrap().to_owned();
        // A short socket path: the limit of a Unix socket's path is ~108 bytes.
        let socket = PathBuf::from(format!("/tmp/lw-{}.sock", rand::random::<u32>()));
        let agent = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < until, "ssh-agent did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        run(Command::new("ssh-add").arg(&key).env("SSH_AUTH_SOCK", &socket));
        let port = free_port();
        Self {
            name: name.to_owned(),
            vkey,
            url: format!("http://127.0.0.1:{port}"),
            db: dir.join("litewitness.db"),
            agent,
            witness: None,
            fingerprint,
            socket,
            port,
        }
    }

    /// Adds the store's log (its origin and log key) to the witness's database.
    pub(crate) fn add_log(&self, origin: &str, log_vkey: &str) {
        let ctl = crate::oci::go_tool("witnessctl");
        run(Command::new(&ctl).args(["add-log", "-origin", origin, "-db"]).arg(&self.db));
        run(Command::new(&ctl).args(["add-key", "-origin", origin, "-key", log_vkey, "-db"]).arg(&self.db));
    }

    pub(crate) fn start(&mut self) {
        let child = Command::new(crate::oci::go_tool("litewitness"))
            .args(["-name", &self.name, "-key", &self.fingerprint, "-listen", &format!("127.0.0.1:{}", self.port)])
            .arg("-ssh-agent")
            .arg(&self.socket)
            .arg("-db")
            .arg(&self.db)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.witness = Some(child);
        let until = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < until, "litewitness did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A store asking `witnesses` (name, vkey, url) to cosign, quorum `quorum`.
async fn store_with(witnesses: &[(&str, &str, &str)], quorum: usize, dir: &Path) -> TestServer {
    store_on(crate::backends::Backend::Embedded, witnesses, quorum, dir).await
}

async fn store_on(
    backend: crate::backends::Backend,
    witnesses: &[(&str, &str, &str)],
    quorum: usize,
    dir: &Path,
) -> TestServer {
    let mut toml = format!("[log]\nwitness_quorum = {quorum}\n");
    for (name, vkey, url) in witnesses {
        toml.push_str(&format!("\n[[log.witnesses]]\nname = \"{name}\"\nvkey = \"{vkey}\"\nurl = \"{url}\"\n"));
    }
    let path = dir.join("amber.toml");
    std::fs::write(&path, toml).unwrap();
    TestServer::builder().backend(backend).arg("--config").arg(path.to_str().unwrap()).start().await
}

/// The log's origin and verifier key, from `GET /v1/keys`.
pub(crate) async fn log_key(server: &TestServer) -> (String, String) {
    let keys = server.keys().await;
    let vkey = keys["keys"].as_array().unwrap().iter().find(|k| k["purpose"] == "log").unwrap()["vkey"]
        .as_str()
        .unwrap()
        .to_owned();
    (vkey.split('+').next().unwrap().to_owned(), vkey)
}

async fn checkpoint(server: &TestServer, query: &str) -> String {
    server.http.get(server.url(&format!("/v1/log/checkpoint{query}"))).send().await.unwrap().text().await.unwrap()
}

/// Waits until the served checkpoint carries a cosignature by `name` and
/// covers at least `size` entries.
pub(crate) async fn cosigned(server: &TestServer, name: &str, size: u64) -> String {
    // Long enough for the backoff a witness that was down has reached.
    let until = Instant::now() + Duration::from_secs(45);
    loop {
        let note = checkpoint(server, "").await;
        let covers = note.lines().nth(1).and_then(|l| l.parse::<u64>().ok()).is_some_and(|n| n >= size);
        if covers && note.lines().any(|l| l.starts_with(&format!("\u{2014} {name} "))) {
            return note;
        }
        assert!(
            Instant::now() < until,
            "no cosignature by {name} of {size} entries; served:\n{note}\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The tree size that covers `repo:tag`'s binding (its log index plus one),
/// from its receipt (which waits for a checkpoint that covers it).
pub(crate) async fn covering(base: &str, token: &str, repo: &str, tag: &str) -> u64 {
    let receipt = reqwest::Client::new()
        .get(format!("{base}/v1/repos/{repo}/tags/{tag}/receipt"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let index: u64 = receipt.lines().find_map(|l| l.strip_prefix("index ")).unwrap().parse().unwrap();
    index + 1
}

async fn push(server: &TestServer, token: &str, tag: &str, dir: &Path) {
    let src = dir.join(format!("src-{tag}"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("app.bin"), data(4000, tag.len() as u64)).unwrap();
    let pushed = server.amber(token, &["push", &format!("acme/web:{tag}"), src.to_str().unwrap()]).await;
    assert_eq!(pushed.code, 0, "{}", pushed.stderr);
}

/// litewitness cosigns the store's checkpoints; the cosignature verifies
/// with its key; `amber pull` with a policy requiring it succeeds and says
/// so, one requiring a witness that never cosigned fails closed (exit 4).
#[tokio::test]
async fn litewitness_cosigns_and_clients_require_the_quorum() {
    let dir = tempfile::tempdir().unwrap();
    let mut witness = LiteWitness::new(dir.path(), "witness.test/w1");
    let server = store_with(&[(&witness.name, &witness.vkey, &witness.url)], 1, dir.path()).await;
    let (origin, log_vkey) = log_key(&server).await;
    witness.add_log(&origin, &log_vkey);
    witness.start();
    let token = server.token(&[("acme/*", &["push", "pull"])]).await;
    push(&server, &token, "1.0", dir.path()).await;
    let size = covering(&server.url(""), &token, "acme/web", "1.0").await;
    let note = cosigned(&server, &witness.name, size).await;
    // The witness's line verifies with torchwood's cosignature verifier (Go)
    // and with Amber's.
    let checked = cosigcheck(&witness.name, &dir.path().join("witness_key"), &note);
    assert!(checked.is_ok(), "torchwood: {checked:?}\n{note}");
    assert!(cosigcheck(&witness.name, &dir.path().join("witness_key"), &note.replacen('\n', "x\n", 1)).is_err());
    let w = amber_core::witness::Witness::from_vkey(&witness.vkey, None).unwrap();
    assert!(amber_core::witness::cosigners(&note, [&w]).contains(&witness.name), "{note}");
    // The keys file carries the store's policy.
    let keys: Value = server.keys().await;
    assert!(keys["witness_policy"].as_str().unwrap().contains(&witness.vkey), "{keys}");

    // A pull that requires the witness: the receipt's checkpoint is cosigned.
    let keys_path = key_file(&server, dir.path()).await;
    let policy = dir.path().join("policy");
    std::fs::write(&policy, format!("log {log_vkey}\nwitness w1 {}\nquorum w1\n", witness.vkey)).unwrap();
    let out = dir.path().join("out");
    let pull_with_policy = || {
        let args = ["pull", "acme/web:1.0", "-o", out.to_str().unwrap(), "--key", &keys_path, "--witness-policy"];
        let policy = policy.to_str().unwrap().to_owned();
        let token = token.clone();
        let server = &server;
        async move { server.amber(&token, &[&args[..], &[policy.as_str()]].concat()).await }
    };
    let pulled = pull_with_policy().await;
    assert_eq!(pulled.code, 0, "{}", pulled.stderr);
    assert!(pulled.stderr.contains("cosigned by witnesses w1"), "{}", pulled.stderr);
    // By default, the policy the pinned key file carries.
    let pulled =
        server.amber(&token, &["pull", "acme/web:1.0", "-o", out.to_str().unwrap(), "--key", &keys_path]).await;
    assert_eq!(pulled.code, 0, "{}", pulled.stderr);
    assert!(pulled.stderr.contains("cosigned by witnesses"), "{}", pulled.stderr);

    // A policy that also requires a witness that never cosigned: refused.
    let other = LiteWitness::new(&dir.path().join("other").tap_mkdir(), "witness.test/w2");
    std::fs::write(
        &policy,
        format!("witness w1 {}\nwitness w2 {}\ngroup both all w1 w2\nquorum both\n", witness.vkey, other.vkey),
    )
    .unwrap();
    let refused = pull_with_policy().await;
    assert_eq!(refused.code, 4, "{}", refused.stderr);
    assert!(refused.stderr.contains("quorum both") && refused.stderr.contains("w2"), "{}", refused.stderr);

    // The witness goes down: pushes and plain pulls go on; the store serves
    // the newest cosigned checkpoint, and the uncosigned one on request.
    if let Some(mut child) = witness.witness.take() {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let started = Instant::now();
    push(&server, &token, "2.0", dir.path()).await;
    assert!(started.elapsed() < Duration::from_secs(5), "a push waited for a witness that is down");
    let plain = server
        .amber(
            &token,
            &[
                "pull",
                "acme/web:2.0",
                "-o",
                out.to_str().unwrap(),
                "--key",
                &server_keys_without_policy(&server, dir.path()).await,
            ],
        )
        .await;
    assert_eq!(plain.code, 0, "{}", plain.stderr);
    let newest = covering(&server.url(""), &token, "acme/web", "2.0").await;
    let newest = newest.max(checkpoint(&server, "?uncosigned").await.lines().nth(1).unwrap().parse().unwrap());
    let served: u64 = checkpoint(&server, "").await.lines().nth(1).unwrap().parse().unwrap();
    assert!(served < newest, "the served checkpoint ({served}) is the cosigned one, behind the newest ({newest})");
    // Back up: it catches up (re-proved from the size it holds).
    witness.start();
    cosigned(&server, &witness.name, newest).await;
    let _ = server.request(Method::GET, "/v1/whoami", &token).send().await.unwrap();
}

/// The keys without a witness policy: a client that asks for none.
async fn server_keys_without_policy(server: &TestServer, dir: &Path) -> String {
    let mut keys = server.keys().await;
    keys.as_object_mut().unwrap().remove("witness_policy");
    let path = dir.join("keys-no-policy.json");
    std::fs::write(&path, keys.to_string()).unwrap();
    path.to_str().unwrap().to_owned()
}

trait TapMkdir {
    fn tap_mkdir(self) -> PathBuf;
}

impl TapMkdir for PathBuf {
    fn tap_mkdir(self) -> PathBuf {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

/// Pushes one small file to `repo:tag` through `/v1/` at `base`.
async fn push_to(base: &str, token: &str, repo: &str, tag: &str, seed: u64) {
    let http = reqwest::Client::new();
    let bytes = data(3000, seed);
    let put = http.post(format!("{base}/v1/repos/{repo}/blobs")).bearer_auth(token).body(bytes).send().await.unwrap();
    assert!(put.status().is_success(), "{}", put.text().await.unwrap());
    let info: Value = put.json().await.unwrap();
    let files = serde_json::json!({"files": [{"path": "app.bin", "digest": info["digest"], "size": 3000}]});
    let bound =
        http.put(format!("{base}/v1/repos/{repo}/tags/{tag}")).bearer_auth(token).json(&files).send().await.unwrap();
    assert!(bound.status().is_success(), "{}", bound.text().await.unwrap());
}

/// Split view: two stores from one snapshot (same keys, same origin)
/// diverge. The witness cosigns the first one's history and refuses the
/// other's; a client requiring the witness takes the first one's receipts
/// and refuses the other's, though every log signature on them is valid.
#[tokio::test]
async fn a_split_view_is_cosigned_once_and_refused_by_clients_that_require_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut witness = LiteWitness::new(dir.path(), "witness.test/w1");
    let mut a = store_with(&[(&witness.name, &witness.vkey, &witness.url)], 1, dir.path()).await;
    let (origin, log_vkey) = log_key(&a).await;
    witness.add_log(&origin, &log_vkey);
    witness.start();
    let token = a.token(&[("acme/*", &["push", "pull"])]).await;
    push(&a, &token, "1.0", dir.path()).await;
    cosigned(&a, &witness.name, covering(&a.url(""), &token, "acme/web", "1.0").await).await;

    // The snapshot, then B on it: the same keys, origin and tokens.
    assert!(a.terminate());
    let snapshot = tempfile::tempdir().unwrap();
    crate::trust::copy_dir(a.data_dir(), snapshot.path());
    a.restart();
    let config = dir.path().join("amber.toml");
    let b_log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (b_child, b_addr) =
        crate::harness::spawn(snapshot.path(), &["--config".into(), config.to_str().unwrap().into()], &[], &b_log);
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _b = Kill(b_child);
    let b = format!("http://{b_addr}");

    // They diverge: each binds a tag the other never sees.
    push_to(&a.url(""), &token, "acme/web", "2.0-a", 1).await;
    push_to(&b, &token, "acme/web", "2.0-b", 2).await;
    cosigned(&a, &witness.name, covering(&a.url(""), &token, "acme/web", "2.0-a").await).await;

    let keys_path = key_file(&a, dir.path()).await;
    let policy = dir.path().join("policy");
    std::fs::write(&policy, format!("log {log_vkey}\nwitness w1 {}\nquorum w1\n", witness.vkey)).unwrap();
    let pull = |base: String, tag: &'static str, state: &'static str| {
        let (keys_path, policy, token) = (keys_path.clone(), policy.clone(), token.clone());
        let out = dir.path().join(format!("out-{tag}"));
        let state = dir.path().join(state);
        async move {
            let out = tokio::process::Command::new(crate::harness::amber_bin())
                .args(["pull", &format!("acme/web:{tag}"), "-o", out.to_str().unwrap(), "--key", &keys_path])
                .arg("--witness-policy")
                .arg(&policy)
                .env("AMBER_URL", base)
                .env("AMBER_TOKEN", token)
                .env("AMBER_LOG_STATE", state)
                .output()
                .await
                .unwrap();
            (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
        }
    };
    let (code, stderr) = pull(a.url(""), "2.0-a", "state-a.json").await;
    assert_eq!(code, 0, "A's history is the witnessed one: {stderr}");
    // B's receipt: a valid log signature, but no witness will cosign B's
    // history. Give B time to try (it is told 409 and then 422 or a larger size).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (code, stderr) = pull(b.clone(), "2.0-b", "state-b.json").await;
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.contains("quorum w1"), "{stderr}");
    let served = reqwest::get(format!("{b}/v1/log/checkpoint?uncosigned")).await.unwrap().text().await.unwrap();
    assert!(!served.contains("\u{2014} witness.test/w1"), "B's newest checkpoint got a cosignature:\n{served}");
    let ready = reqwest::get(format!("{b}/readyz")).await.unwrap().text().await.unwrap();
    assert!(ready.contains("witness witness.test/w1 behind"), "{ready}");
    let logs = b_log.lock().unwrap().clone();
    assert!(logs.contains("ALARM"), "B raised no alarm:\n{logs}");
    // And recorded it in its audit log.
    let audit: Value = reqwest::Client::new()
        .get(format!("{b}/v1/audit?limit=1000"))
        .bearer_auth(&a.admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let events: Vec<Value> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| serde_json::from_str::<Value>(e["entry"].as_str().unwrap()).unwrap()["event"].clone())
        .filter(|event| event["kind"] == "witness_alarm")
        .collect();
    assert_eq!(events.len(), 1, "{audit}");
    assert_eq!(events[0]["witness"], "witness.test/w1");
}

/// How a fake witness misbehaves.
#[derive(Clone, Copy)]
enum Misbehaviour {
    /// Answers after 30 s (past the store's 10 s limit).
    Slow,
    /// `200` with lines that are no cosignature.
    Garbage,
    /// `409` naming a size it never accepts a proof from, forever.
    ConflictForever,
}

/// A witness on 127.0.0.1 that misbehaves; counts the submissions it got.
async fn misbehaving(how: Misbehaviour) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let app = axum::Router::new().route(
        "/add-checkpoint",
        axum::routing::post(move |_body: String| {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                match how {
                    Misbehaviour::Slow => {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        (axum::http::StatusCode::OK, String::new())
                    }
                    Misbehaviour::Garbage => (axum::http::StatusCode::OK, "\u{2014} nobody AAAA\nnot a line\n".into()),
                    Misbehaviour::ConflictForever => (axum::http::StatusCode::CONFLICT, "1\n".into()),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, count)
}

/// A witness that is slow, answers garbage or `409`s forever: every push
/// and plain pull goes on at once, the store keeps retrying, and its
/// metrics and `/readyz` say which witness is behind and why.
#[tokio::test]
async fn a_witness_that_misbehaves_delays_nothing_and_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let key = |n: u8| {
        let key = ed25519_dalek::SigningKey::from_bytes(&[n; 32]).verifying_key();
        let name = format!("bad.test/w{n}");
        let id = amber_core::witness::cosigner_key_id(&name, &key);
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let mut typed = vec![amber_core::witness::COSIGNATURE_ED25519];
        typed.extend_from_slice(key.as_bytes());
        (name.clone(), format!("{name}+{hex}+{}", B64.encode(typed)))
    };
    let mut witnesses = Vec::new();
    let mut counts = Vec::new();
    for (n, how) in [(1, Misbehaviour::Slow), (2, Misbehaviour::Garbage), (3, Misbehaviour::ConflictForever)] {
        let (url, count) = misbehaving(how).await;
        let (name, vkey) = key(n);
        witnesses.push((name, vkey, url));
        counts.push(count);
    }
    let listed: Vec<(&str, &str, &str)> =
        witnesses.iter().map(|(n, v, u)| (n.as_str(), v.as_str(), u.as_str())).collect();
    let server = store_with(&listed, 1, dir.path()).await;
    let token = server.token(&[("acme/*", &["push", "pull"])]).await;
    let keys = server_keys_without_policy(&server, dir.path()).await;
    let started = Instant::now();
    for n in 0..10 {
        push(&server, &token, &format!("1.{n}"), dir.path()).await;
    }
    let out = dir.path().join("out");
    let pulled = server.amber(&token, &["pull", "acme/web:1.9", "-o", out.to_str().unwrap(), "--key", &keys]).await;
    assert_eq!(pulled.code, 0, "{}", pulled.stderr);
    assert!(started.elapsed() < Duration::from_secs(15), "10 pushes and a pull took {:?}", started.elapsed());
    // Retried: the garbage and conflicting witnesses were asked more than once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    use std::sync::atomic::Ordering;
    assert!(
        counts[1].load(Ordering::SeqCst) >= 2,
        "the garbage witness was asked {} times",
        counts[1].load(Ordering::SeqCst)
    );
    assert!(
        counts[2].load(Ordering::SeqCst) >= 3,
        "the 409 witness was asked {} times",
        counts[2].load(Ordering::SeqCst)
    );
    let metrics = server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for (name, _, _) in &witnesses[1..] {
        assert!(metrics.contains(&format!("amber_witness_failing{{witness=\"{name}\"}} 1")), "{name}:\n{metrics}");
    }
    assert!(metrics.contains("amber_witness_behind_entries{witness=\"bad.test/w1\"}"), "{metrics}");
    let ready = server.http.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), reqwest::StatusCode::OK, "a witness behind does not make the store unready");
    let ready = ready.text().await.unwrap();
    for (name, _, _) in &witnesses {
        assert!(ready.contains(&format!("witness {name} behind")), "{ready}");
    }
    assert!(ready.contains("without a valid cosignature") && ready.contains("409"), "{ready}");
    // Nothing cosigned: the newest checkpoint is served.
    assert_eq!(checkpoint(&server, "").await, checkpoint(&server, "?uncosigned").await);
}

/// `tests/tools/cosigcheck` (torchwood's cosignature verifier and Go's
/// `sumdb/note`) on `note`, for the witness whose private key is `key`:
/// the cosignature's timestamp, or why it does not verify.
fn cosigcheck(name: &str, key: &Path, note: &str) -> Result<String, String> {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let binary = BUILT.get_or_init(|| {
        let out = std::env::temp_dir().join(format!("amber-cosigcheck-{}", std::process::id()));
        let modcache = std::env::var("AMBER_GO_MODCACHE").unwrap_or_else(|_| "/var/cache/amber-go-tools/mod".into());
        run(Command::new("go")
            .args(["build", "-o"])
            .arg(&out)
            .arg(".")
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/cosigcheck"))
            .env("GOMODCACHE", modcache)
            .env("GOFLAGS", "-mod=mod"));
        out
    });
    let mut child = Command::new(binary)
        .arg(name)
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(note.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Two replicas on PostgreSQL, both submitting, under pushes through both:
/// the witness sees one history (no alarm), and both serve checkpoints it
/// cosigned, each consistent with the other.
#[tokio::test]
async fn two_replicas_on_postgres_submit_one_history() {
    let dir = tempfile::tempdir().unwrap();
    let mut witness = LiteWitness::new(dir.path(), "witness.test/w1");
    let server =
        store_on(crate::backends::Backend::S3Postgres, &[(&witness.name, &witness.vkey, &witness.url)], 1, dir.path())
            .await;
    let replica = server.spawn_replica();
    let (origin, log_vkey) = log_key(&server).await;
    witness.add_log(&origin, &log_vkey);
    witness.start();
    let token = server.token(&[("acme/*", &["push", "pull"])]).await;
    let (first, second) = (server.url(""), replica.url(""));
    let pushes = (0..12).map(|n| {
        let (base, token) = (if n % 2 == 0 { first.clone() } else { second.clone() }, token.clone());
        async move { push_to(&base, &token, "acme/web", &format!("r{n}"), n).await }
    });
    futures_util::future::join_all(pushes).await;
    let needed =
        covering(&first, &token, "acme/web", "r11").await.max(covering(&first, &token, "acme/web", "r10").await);
    let note = cosigned(&server, &witness.name, needed).await;
    // The replica serves a cosigned checkpoint of the same history.
    let until = Instant::now() + Duration::from_secs(20);
    let other = loop {
        let served = reqwest::get(replica.url("/v1/log/checkpoint")).await.unwrap().text().await.unwrap();
        if served.contains("\u{2014} witness.test/w1 ") && served.lines().nth(1) == note.lines().nth(1) {
            break served;
        }
        assert!(Instant::now() < until, "the replica serves no cosigned checkpoint of the same size:\n{served}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(other.lines().nth(2), note.lines().nth(2), "one root for one size: no fork");
    // One replica submits (it holds the witness lock): only its metrics
    // know the witness.
    let metrics_of = |url: String| async move { reqwest::get(url).await.unwrap().text().await.unwrap() };
    let submitting = [server.url("/metrics"), replica.url("/metrics")];
    let mut knows = 0;
    for url in submitting {
        if metrics_of(url).await.contains("amber_witness_cosigned_size{witness=\"witness.test/w1\"}") {
            knows += 1;
        }
    }
    assert_eq!(knows, 1, "exactly one replica submits");
    assert!(!server.logs().contains("ALARM"), "{}", server.logs());
    let w = amber_core::witness::Witness::from_vkey(&witness.vkey, None).unwrap();
    assert!(amber_core::witness::cosigners(&other, [&w]).contains(&witness.name));
}
