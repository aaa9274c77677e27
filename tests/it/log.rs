//! The transparency log, checked by verifiers nobody here wrote: Go's
//! `golang.org/x/mod/sumdb/{note,tlog}` (tests/tools/logcheck, built from
//! Debian's packages in GOPATH mode) for checkpoints and proofs, Python's
//! `hashlib` for the tiles (tests/tools/log_tiles.py).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::backends::Backend;
use crate::harness::{TestServer, expect_error};
use amber_server::meta::{AuditStore, LogStore};

/// The Go checker, built once per test run.
fn go_checker() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("logcheck");
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/logcheck/main.go");
        let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("go-cache");
        let status = Command::new("go")
            .args(["build", "-o"])
            .arg(&out)
            .arg(&source)
            .env("GOPATH", "/usr/share/gocode")
            .env("GO111MODULE", "off")
            .env("GOFLAGS", "")
            .env("GOCACHE", &cache)
            .status()
            .expect("go is installed (golang-go; .ci/run installs it)");
        assert!(status.success(), "building the Go checker failed (golang-golang-x-mod-dev installed?)");
        out
    })
}

/// Runs checks through the Go checker; one result per check.
fn go(checks: &[Value]) -> Vec<Value> {
    let mut child = Command::new(go_checker()).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input: String = checks.iter().map(|c| format!("{c}\n")).collect();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success());
    let results: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(results.len(), checks.len());
    results
}

fn accepted(check: &Value) -> Value {
    let result = go(std::slice::from_ref(check)).remove(0);
    assert_eq!(result["ok"], true, "Go refused {check}: {result}");
    result
}

/// Every variant of `check` with one bit changed in `field` (a string, or an
/// array of strings) must be refused by Go.
fn one_bit_changes_refused(check: &Value, field: &str) {
    let mut variants = Vec::new();
    let flips = |text: &str| -> Vec<String> {
        let bytes = text.as_bytes();
        // A few positions spread over the text, each one bit.
        let positions: Vec<usize> = (0..8).map(|i| i * bytes.len().max(1) / 8).collect();
        positions
            .into_iter()
            .filter(|&p| p < bytes.len())
            .filter_map(|p| {
                let mut b = bytes.to_vec();
                b[p] ^= 0x01;
                String::from_utf8(b).ok().filter(|s| s != text)
            })
            .collect()
    };
    match &check[field] {
        Value::String(text) => {
            for flipped in flips(text) {
                let mut c = check.clone();
                c[field] = json!(flipped);
                variants.push(c);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let raw = B64.decode(item.as_str().unwrap()).unwrap();
                for bit in [0usize, 77, 255] {
                    let mut changed = raw.clone();
                    changed[bit / 8] ^= 1 << (bit % 8);
                    let mut c = check.clone();
                    c[field][i] = json!(B64.encode(&changed));
                    variants.push(c);
                }
            }
        }
        other => panic!("{field} is {other}"),
    }
    for (variant, result) in variants.iter().zip(go(&variants)) {
        assert_eq!(result["ok"], false, "Go accepted a changed {field}: {variant}");
    }
}

async fn log_vkey(server: &TestServer) -> String {
    let keys = server.keys().await;
    let logs: Vec<&Value> = keys["keys"].as_array().unwrap().iter().filter(|k| k["purpose"] == "log").collect();
    assert_eq!(logs.len(), 1, "one log key: {keys}");
    assert_eq!(logs[0]["status"], "active");
    logs[0]["vkey"].as_str().unwrap().to_owned()
}

async fn checkpoint(server: &TestServer) -> String {
    let response = server.http.get(server.url("/v1/log/checkpoint")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/plain; charset=utf-8");
    response.text().await.unwrap()
}

fn size_of(note: &str) -> u64 {
    note.lines().nth(1).unwrap().parse().unwrap()
}

/// Waits until the checkpoint covers exactly `size` entries.
async fn checkpoint_at(server: &TestServer, size: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let note = checkpoint(server).await;
        if size_of(&note) == size {
            return note;
        }
        assert!(size_of(&note) < size, "the log has more entries than the test made: {note}");
        assert!(Instant::now() < deadline, "no checkpoint of size {size}; last {note}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Appends audit entries one at a time (each token created is one), until
/// the log has `size` entries.
async fn grow_to(server: &TestServer, have: &mut u64, size: u64) {
    while *have < size {
        let response = server
            .request(Method::POST, "/v1/tokens", &server.admin)
            .json(&json!({"name": format!("t{have}"), "grants": [{"repos": "acme/*", "actions": ["pull"]}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        *have += 1;
    }
}

async fn text(server: &TestServer, path: &str) -> String {
    let response = server.http.get(server.url(path)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.text().await.unwrap()
}

fn lines(proof: &str) -> Value {
    json!(proof.lines().collect::<Vec<_>>())
}

/// Entry `index` (0-based) as stored, base64.
async fn entry(server: &TestServer, index: u64) -> String {
    let page: Value = server
        .request(Method::GET, &format!("/v1/audit?after={index}&limit=1"), &server.admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entry = &page["entries"][0];
    assert_eq!(entry["log_index"], index);
    B64.encode(entry["entry"].as_str().unwrap())
}

/// Checks, with Go, every checkpoint, inclusion proofs at the edges and the
/// middle of each, and consistency proofs between every pair.
async fn go_checks_all(server: &TestServer, vkey: &str, notes: &[String]) {
    for note in notes {
        let check = json!({"op": "checkpoint", "vkey": vkey, "note": note});
        assert_eq!(accepted(&check)["size"], size_of(note));
        one_bit_changes_refused(&check, "note");
        let size = size_of(note);
        let mut indexes = vec![0, size / 2, size.saturating_sub(1)];
        indexes.dedup();
        for index in indexes.into_iter().filter(|&i| i < size) {
            let proof = text(server, &format!("/v1/log/proof?index={index}&size={size}")).await;
            let entry = entry(server, index).await;
            let check = json!({"op": "inclusion", "vkey": vkey, "note": note, "index": index, "entry": entry, "proof": lines(&proof)});
            accepted(&check);
            if !proof.is_empty() {
                one_bit_changes_refused(&check, "proof");
            }
            one_bit_changes_refused(&check, "entry");
            if index + 1 < size {
                let mut moved = check.clone();
                moved["index"] = json!(index + 1);
                assert_eq!(go(&[moved])[0]["ok"], false, "Go accepted the proof at another index");
            }
        }
    }
    for (i, old) in notes.iter().enumerate() {
        for new in &notes[i..] {
            let proof = text(server, &format!("/v1/log/consistency?old={}&new={}", size_of(old), size_of(new))).await;
            let check = json!({"op": "consistency", "vkey": vkey, "old": old, "new": new, "proof": lines(&proof)});
            accepted(&check);
            if !proof.is_empty() {
                one_bit_changes_refused(&check, "proof");
            }
        }
    }
}

#[tokio::test]
async fn an_empty_log_has_a_checkpoint_go_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    // No initial admin token: its creation would be the log's first entry.
    let (mut child, addr) = crate::harness::spawn(dir.path(), &["--no-initial-token".into()], &[], &log);
    let http = reqwest::Client::new();
    let note = http.get(format!("http://{addr}/v1/log/checkpoint")).send().await.unwrap().text().await.unwrap();
    let keys: Value = http.get(format!("http://{addr}/v1/keys")).send().await.unwrap().json().await.unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let vkey = keys["keys"].as_array().unwrap().iter().find(|k| k["purpose"] == "log").unwrap()["vkey"].clone();
    assert_eq!(size_of(&note), 0);
    let result = accepted(&json!({"op": "checkpoint", "vkey": vkey, "note": note}));
    // The root of the empty tree is SHA-256 of nothing.
    assert_eq!(result["root"], "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
    // A store given no origin chooses one of its own, under `.invalid`.
    let origin = note.lines().next().unwrap();
    assert!(origin.starts_with("amber-") && origin.ends_with(".invalid/log") && origin.len() == 34, "{note}");
    assert!(note.ends_with("\n") && size_of(&note) == 0, "{note}");
}

/// Sizes 1, 2, 3, 255, 256 and 257 (the first tile boundary): every
/// checkpoint and proof verifies in Go, none with one bit changed; the tiles
/// rebuild the root in Python.
async fn go_verifies_checkpoints_and_proofs(backend: Backend) {
    let server = TestServer::builder().backend(backend).arg("--log-interval").arg("10").start().await;
    let vkey = log_vkey(&server).await;
    assert!(vkey.starts_with("amber-") && vkey.contains(".invalid/log+"), "{vkey}");
    let mut have = 1; // the admin token the harness made
    let mut notes = Vec::new();
    for size in [1u64, 2, 3, 255, 256, 257] {
        grow_to(&server, &mut have, size).await;
        notes.push(checkpoint_at(&server, size).await);
    }
    go_checks_all(&server, &vkey, &notes).await;
    tiles_check_in_python(&server);

    // Beyond the checkpoint there is nothing to prove.
    let response = server.http.get(server.url("/v1/log/proof?index=0&size=258")).send().await.unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, "request_invalid").await;
    let response = server.http.get(server.url("/v1/log/proof?index=257&size=257")).send().await.unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, "request_invalid").await;
    let response = server.http.get(server.url("/v1/log/consistency?old=3&new=2")).send().await.unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, "request_invalid").await;
}

fn tiles_check_in_python(server: &TestServer) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/log_tiles.py");
    let out = Command::new("python3").arg(script).arg(server.url("")).arg(&server.admin).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "tiles: {said}{}", String::from_utf8_lossy(&out.stderr));
}

crate::on_both_backends!(go_verifies_checkpoints_and_proofs);

/// 65,536 entries (a full level-2 tile) and one more: the history is written
/// through the store directly (as a long-lived store would have it), then
/// served.
#[tokio::test]
async fn a_log_past_65536_entries_verifies_in_go() {
    use amber_server::audit::Draft;
    use amber_server::config::{FreeSpace, LogConfig, MetaConfig};
    use amber_server::meta::Meta;

    let mut server = TestServer::builder().arg("--log-interval").arg("10").start().await;
    assert!(server.terminate());
    let meta = Meta::open(&MetaConfig::Sled(server.data_dir().join("meta")), FreeSpace::Bytes(0)).await.unwrap();
    let signer = Arc::new(amber_server::signing::Signer::load(&meta, None).await.unwrap());
    let actor = amber_core::audit::Actor::operator();
    let mut size = meta.audit_entries(0, 10).await.unwrap().len() as u64;
    while size < 65_536 {
        let n = (65_536 - size).min(2000);
        let events = (0..n).map(|i| amber_core::audit::Event::KeyRotated { keyid: format!("k{}", size + i) }).collect();
        meta.append_audit(Draft::shared(&signer, actor.clone(), events)).await.unwrap();
        size += n;
    }
    let config = LogConfig {
        origin: None,
        origin_explicit: false,
        interval: Duration::from_millis(10),
        key_file: None,
        witnesses: Default::default(),
    };
    amber_server::log::Log::open(&meta, &config).await.unwrap();
    let (signed, at_65536) = meta.log_checkpoint().await.unwrap().unwrap();
    assert_eq!(signed, 65_536);
    drop(meta);
    server.restart();
    let vkey = log_vkey(&server).await;
    let mut have = 65_536;
    grow_to(&server, &mut have, 65_537).await;
    let past = checkpoint_at(&server, 65_537).await;
    go_checks_all(&server, &vkey, &[at_65536, past]).await;
    tiles_check_in_python(&server);
}

#[tokio::test]
async fn entries_need_an_admin_and_identical_events_have_different_leaves() {
    let server = TestServer::builder().arg("--log-interval").arg("10").start().await;
    let push = server.token(&[("acme/web", &["push", "pull"])]).await;
    let bytes = crate::harness::data(100, 1);
    let digest = crate::harness::independent_b3_bytes(&bytes);
    let put =
        server.request(Method::PUT, &format!("/v1/repos/acme/web/blobs/{digest}"), &push).body(bytes).send().await;
    assert!(put.unwrap().status().is_success());
    let files = json!({"files": [{"path": "a.bin", "digest": digest, "size": 100}]});
    let bound = server.request(Method::PUT, "/v1/repos/acme/web/tags/v1", &push).json(&files).send().await.unwrap();
    assert_eq!(bound.status(), StatusCode::CREATED);
    // token, token, blob, manifest, tag: the tag_bound entry is the fifth.
    assert_eq!(bound.headers()["amber-log-index"], "4");
    let again = server.request(Method::PUT, "/v1/repos/acme/web/tags/v1", &push).json(&files).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.headers()["amber-log-index"], "4");
    // The same hold twice: two identical events.
    let hold = "/v1/repos/acme/web/tags/v1/hold";
    for method in [Method::PUT, Method::DELETE, Method::PUT] {
        let request = server.request(method.clone(), hold, &server.admin);
        let request = if method == Method::PUT { request.json(&json!({"reason": "audit"})) } else { request };
        assert!(request.send().await.unwrap().status().is_success());
    }
    let note = checkpoint_at(&server, 8).await;
    let (first, second) = (entry(&server, 5).await, entry(&server, 7).await);
    let body = |e: &str| -> Value { serde_json::from_slice(&B64.decode(e).unwrap()).unwrap() };
    assert_eq!(body(&first)["event"], body(&second)["event"], "the same event twice");
    let (salt1, salt2) =
        (body(&first)["salt"].as_str().unwrap().to_owned(), body(&second)["salt"].as_str().unwrap().to_owned());
    assert_eq!(salt1.len(), 64);
    assert_ne!(salt1, salt2);
    let size = size_of(&note);
    let tile = server.http.get(server.url(&format!("/v1/log/tile/0/000.p/{size}"))).send().await.unwrap();
    assert_eq!(tile.status(), StatusCode::OK);
    assert_eq!(tile.headers()["cache-control"], "public, max-age=31536000, immutable");
    let hashes = tile.bytes().await.unwrap();
    let leaves: Vec<&[u8]> = hashes.chunks(32).collect();
    assert_eq!(leaves.len() as u64, size);
    assert_ne!(leaves[5], leaves[7], "two identical events share a leaf");

    // The receipt needs pull, and Go accepts it.
    let receipt = server.request(Method::GET, "/v1/repos/acme/web/tags/v1/receipt", &push).send().await.unwrap();
    assert_eq!(receipt.status(), StatusCode::OK);
    let receipt = receipt.text().await.unwrap();
    assert!(receipt.starts_with("c2sp.org/tlog-proof@v1\nextra "), "{receipt}");
    accepted(&json!({"op": "receipt", "vkey": log_vkey(&server).await, "receipt": receipt}));
    let other = server.token(&[("acme/api", &["pull"])]).await;
    let denied = server.request(Method::GET, "/v1/repos/acme/web/tags/v1/receipt", &other).send().await.unwrap();
    expect_error(denied, StatusCode::FORBIDDEN, "denied").await;
    let unknown = server.request(Method::GET, "/v1/repos/acme/web/tags/v9/receipt", &push).send().await.unwrap();
    expect_error(unknown, StatusCode::NOT_FOUND, "tag_unknown").await;

    let path = format!("/v1/log/tile/entries/000.p/{size}");
    let anonymous = server.http.get(server.url(&path)).send().await.unwrap();
    expect_error(anonymous, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let pusher = server.request(Method::GET, &path, &push).send().await.unwrap();
    expect_error(pusher, StatusCode::FORBIDDEN, "denied").await;
    let admin = server.request(Method::GET, &path, &server.admin).send().await.unwrap();
    assert_eq!(admin.status(), StatusCode::OK);
    assert_eq!(admin.headers()["cache-control"], "private, no-store");
    // Hashes and proofs are public.
    let proof = server.http.get(server.url(&format!("/v1/log/proof?index=0&size={size}"))).send().await.unwrap();
    assert_eq!(proof.status(), StatusCode::OK);
    for bad in ["0/000.p/0", "0/000.p/256", "0/0", "8/000", "entries/x000/001", "0/000.p/99"] {
        let response = server.http.get(server.url(&format!("/v1/log/tile/{bad}"))).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{bad}");
    }
}

async fn push_tag(server: &TestServer, token: &str, tree: &Path, tag: &str) {
    std::fs::write(tree.join("app.bin"), format!("build {tag}")).unwrap();
    let run = server.amber(token, &["push", &format!("acme/web:{tag}"), tree.to_str().unwrap()]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
}

async fn pull(server: &TestServer, token: &str, keys: &str, work: &Path, tag: &str) -> crate::harness::Run {
    let out = work.join(format!("out-{tag}-{}", rand::random::<u32>()));
    server.amber(token, &["pull", &format!("acme/web:{tag}"), "-o", out.to_str().unwrap(), "--key", keys]).await
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A store rolled back to an older copy, then grown into another history:
/// every signature is valid, yet a client holding a newer checkpoint refuses
/// both. An entry edited in place fails `amber audit verify`, named.
#[tokio::test]
async fn rolled_back_and_forked_histories_are_refused_and_an_edited_entry_is_named() {
    let mut server = TestServer::builder().arg("--log-interval").arg("10").start().await;
    let push = server.token(&[("acme/web", &["push", "pull"])]).await;
    let work = tempfile::tempdir().unwrap();
    let keys = work.path().join("keys.json");
    std::fs::write(&keys, server.keys().await.to_string()).unwrap();
    let keys = keys.to_str().unwrap().to_owned();
    let tree = work.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    push_tag(&server, &push, &tree, "v1").await;
    let first = pull(&server, &push, &keys, work.path(), "v1").await;
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert!(first.stderr.contains("first checkpoint held"), "{}", first.stderr);

    assert!(server.terminate());
    let backup = work.path().join("meta-backup");
    copy_dir(&server.data_dir().join("meta"), &backup);
    server.restart();
    push_tag(&server, &push, &tree, "v2").await;
    push_tag(&server, &push, &tree, "v3").await;
    let grown = pull(&server, &push, &keys, work.path(), "v2").await;
    assert_eq!(grown.code, 0, "{}", grown.stderr);
    assert!(grown.stderr.contains("consistent with the"), "{}", grown.stderr);

    // Rolled back: the server's log is smaller than the one the client holds.
    assert!(server.terminate());
    std::fs::remove_dir_all(server.data_dir().join("meta")).unwrap();
    copy_dir(&backup, &server.data_dir().join("meta"));
    server.restart();
    let rolled = pull(&server, &push, &keys, work.path(), "v1").await;
    assert_eq!(rolled.code, 4, "{}", rolled.stderr);
    assert!(rolled.stderr.contains("rolled-back"), "{}", rolled.stderr);

    // Forked: the rolled-back store grows past what the client holds, with
    // other entries.
    for tag in ["w1", "w2", "w3", "w4"] {
        push_tag(&server, &push, &tree, tag).await;
    }
    let forked = pull(&server, &push, &keys, work.path(), "w4").await;
    assert_eq!(forked.code, 4, "{}", forked.stderr);
    assert!(forked.stderr.contains("forked or was rewritten"), "{}", forked.stderr);

    // An entry edited where it is stored.
    assert_eq!(server.amber(&server.admin, &["audit", "verify"]).await.code, 0);
    server.with_stopped_meta(|db| {
        let audit = db.open_tree("audit").unwrap();
        let mut value = audit.get(3u64.to_be_bytes()).unwrap().unwrap().to_vec();
        let text = String::from_utf8(value.split_off(64)).unwrap().replace("acme/web", "acme/wib");
        value.extend_from_slice(text.as_bytes());
        audit.insert(3u64.to_be_bytes(), value).unwrap();
    });
    server.restart();
    let verify = server.amber(&server.admin, &["audit", "verify"]).await;
    assert_eq!(verify.code, 4, "{}", verify.stderr);
    assert!(verify.stderr.contains("entry 3"), "{}", verify.stderr);
}

/// `kill -9` at random moments of pushes, 100 times: every checkpoint seen
/// is consistent with every later one, as Go checks it.
#[tokio::test]
async fn checkpoints_seen_across_100_kills_are_all_consistent() {
    let mut server = TestServer::builder().arg("--log-interval").arg("10").start().await;
    let push = server.token(&[("acme/web", &["push", "pull"])]).await;
    let vkey = log_vkey(&server).await;
    let mut seen: Vec<String> = Vec::new();
    for round in 0..100u64 {
        let stop = Instant::now() + Duration::from_millis(20 + rand::random::<u64>() % 180);
        let pushers = (0..3u64)
            .map(|w| {
                let (http, url, push) = (server.http.clone(), server.url(""), push.clone());
                tokio::spawn(async move {
                    let mut i = 0;
                    while Instant::now() < stop {
                        let bytes = format!("round {round} writer {w} push {i}").into_bytes();
                        // Not a subprocess: nothing may block this runtime's thread.
                        let digest = amber_core::Digest::of(&bytes).to_string();
                        let size = bytes.len();
                        let put =
                            http.put(format!("{url}/v1/repos/acme/web/blobs/{digest}")).bearer_auth(&push).body(bytes);
                        if put.send().await.is_err() {
                            return;
                        }
                        let files = json!({"files": [{"path": "a", "digest": digest, "size": size}]});
                        let tag = http
                            .put(format!("{url}/v1/repos/acme/web/tags/r{round}-w{w}-{i}"))
                            .bearer_auth(&push)
                            .json(&files);
                        if tag.send().await.is_err() {
                            return;
                        }
                        i += 1;
                    }
                })
            })
            .collect::<Vec<_>>();
        let watcher = {
            let (http, url) = (server.http.clone(), server.url("/v1/log/checkpoint"));
            tokio::spawn(async move {
                let mut notes = Vec::new();
                while Instant::now() < stop {
                    if let Ok(r) = http.get(&url).send().await
                        && let Ok(text) = r.text().await
                    {
                        notes.push(text);
                    }
                    tokio::time::sleep(Duration::from_millis(15)).await;
                }
                notes
            })
        };
        tokio::time::sleep_until(stop.into()).await;
        server.kill9();
        for p in pushers {
            p.await.unwrap();
        }
        seen.extend(watcher.await.unwrap().into_iter().filter(|n| n.contains('\u{2014}')));
        server.restart();
        seen.push(checkpoint(&server).await);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let last = checkpoint(&server).await;
    seen.sort_by_key(|n| size_of(n));
    seen.dedup();
    let mut checks = Vec::new();
    for note in &seen {
        assert!(size_of(note) <= size_of(&last), "a checkpoint larger than the log: {note}");
        let proof = text(&server, &format!("/v1/log/consistency?old={}&new={}", size_of(note), size_of(&last))).await;
        checks.push(json!({"op": "consistency", "vkey": vkey, "old": note, "new": last, "proof": lines(&proof)}));
    }
    for (check, result) in checks.iter().zip(go(&checks)) {
        assert_eq!(result["ok"], true, "inconsistent with the last checkpoint: {check}: {result}");
    }
    // Two checkpoints of one size are the same checkpoint.
    for pair in seen.windows(2) {
        assert!(size_of(&pair[0]) != size_of(&pair[1]), "two checkpoints of size {}", size_of(&pair[0]));
    }
    assert!(seen.len() > 20, "only {} distinct checkpoints seen", seen.len());
    eprintln!(
        "{} distinct checkpoints over 100 kills, all consistent with the last ({} entries)",
        seen.len(),
        size_of(&last)
    );
}

/// A store from before the log: its entries (unsalted) become the first
/// leaves, in order, when amberd starts; replicas serve the same checkpoint.
#[tokio::test]
async fn history_from_before_the_log_becomes_its_first_leaves_and_replicas_agree() {
    let mut server = TestServer::builder().backend(Backend::S3Postgres).arg("--log-interval").arg("10").start().await;
    let push = server.token(&[("acme/web", &["push", "pull"])]).await;
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    push_tag(&server, &push, &tree, "old").await;
    // Two tokens, then the blob, the manifest and the tag.
    let size = 5;
    let before = checkpoint_at(&server, size).await;
    assert!(server.terminate());
    // What the store held before the log: entries and nothing of the tree.
    let pg = &server.services.as_ref().unwrap().pg;
    pg.sql(
        "ALTER TABLE log_hashes DISABLE TRIGGER log_hashes_immutable; DELETE FROM log_hashes;
         ALTER TABLE tag_log DISABLE TRIGGER tag_log_immutable; DELETE FROM tag_log;
         DELETE FROM log_checkpoint; UPDATE audit_head SET log_tree = '\\x0000000000000000'::bytea",
    );
    assert_eq!(pg.sql("SELECT count(*) FROM log_hashes").trim(), "0");
    server.restart();
    let after = checkpoint_at(&server, size).await;
    assert_eq!(after.lines().nth(2), before.lines().nth(2), "the rebuilt tree has the same root");
    assert!(server.logs().contains("added the audit history to the transparency log"), "{}", server.logs());
    let receipt = server.request(Method::GET, "/v1/repos/acme/web/tags/old/receipt", &push).send().await.unwrap();
    assert_eq!(receipt.status(), StatusCode::OK, "the tag's index was found again");

    let replica = server.spawn_replica();
    push_tag(&server, &push, &tree, "new").await;
    let grown = checkpoint(&server).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let from_replica = server.http.get(replica.url("/v1/log/checkpoint")).send().await.unwrap().text().await.unwrap();
    let from_primary = checkpoint(&server).await;
    assert_eq!(from_replica, from_primary, "replicas serve one checkpoint");
    let vkey = log_vkey(&server).await;
    let proof = text(&server, &format!("/v1/log/consistency?old={size}&new={}", size_of(&from_primary))).await;
    accepted(&json!({"op": "consistency", "vkey": vkey, "old": after, "new": from_primary, "proof": lines(&proof)}));
    assert!(size_of(&grown) > size);
}

/// Two replicas on one PostgreSQL, both pushed to and both signing, for a
/// few seconds: every checkpoint either served is consistent with the last.
#[tokio::test]
async fn replicas_signing_at_once_never_sign_two_histories() {
    let server = TestServer::builder().backend(Backend::S3Postgres).arg("--log-interval").arg("10").start().await;
    let replica = server.spawn_replica();
    let push = server.token(&[("acme/web", &["push", "pull"])]).await;
    let vkey = log_vkey(&server).await;
    let stop = Instant::now() + Duration::from_secs(3);
    let urls = [server.url(""), replica.url("")];
    let mut tasks = Vec::new();
    for (r, url) in urls.iter().enumerate() {
        for w in 0..2u64 {
            let (http, url, push) = (server.http.clone(), url.clone(), push.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = 0u64;
                while Instant::now() < stop {
                    let bytes = format!("replica {r} writer {w} push {i}").into_bytes();
                    let digest = amber_core::Digest::of(&bytes).to_string();
                    let put =
                        http.put(format!("{url}/v1/repos/acme/web/blobs/{digest}")).bearer_auth(&push).body(bytes);
                    assert!(put.send().await.unwrap().status().is_success());
                    i += 1;
                }
                Vec::new()
            }));
        }
        let (http, url) = (server.http.clone(), format!("{url}/v1/log/checkpoint"));
        tasks.push(tokio::spawn(async move {
            let mut notes = Vec::new();
            while Instant::now() < stop {
                notes.push(http.get(&url).send().await.unwrap().text().await.unwrap());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            notes
        }));
    }
    let mut seen = Vec::new();
    for task in tasks {
        seen.extend(task.await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let last = checkpoint(&server).await;
    seen.sort_by_key(|n| size_of(n));
    seen.dedup();
    for pair in seen.windows(2) {
        assert!(size_of(&pair[0]) != size_of(&pair[1]), "two checkpoints of size {}", size_of(&pair[0]));
    }
    let mut checks = Vec::new();
    for note in &seen {
        let proof = text(&server, &format!("/v1/log/consistency?old={}&new={}", size_of(note), size_of(&last))).await;
        checks.push(json!({"op": "consistency", "vkey": vkey, "old": note, "new": last, "proof": lines(&proof)}));
    }
    for (check, result) in checks.iter().zip(go(&checks)) {
        assert_eq!(result["ok"], true, "inconsistent with the last checkpoint: {check}: {result}");
    }
    eprintln!(
        "{} distinct checkpoints from two replicas, all consistent with the last ({} entries)",
        seen.len(),
        size_of(&last)
    );
    assert!(seen.len() > 10, "only {} checkpoints seen", seen.len());
}
