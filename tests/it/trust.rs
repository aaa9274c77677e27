//! Trust per store: each store signs its log under an origin of its own, and
//! the client holds each log by origin and key in one state file, so that
//! no second store (on another origin, or on the same one with another key)
//! can reset what the client holds of the first. The attack's sequence
//! (turn 3, F1) and the commands that change what is held.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::harness::{Run, TestServer, amber_bin, spawn};

/// `amber ARGS` against `url` with one state file shared by every store.
async fn amber(url: &str, token: &str, state: &Path, args: &[&str]) -> Run {
    let out = tokio::process::Command::new(amber_bin())
        .args(args)
        .env("AMBER_URL", url)
        .env("AMBER_TOKEN", token)
        .env("AMBER_LOG_STATE", state)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run amber");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn pull(url: &str, token: &str, state: &Path, keys: &Path, tag: &str, work: &Path) -> Run {
    let out = work.join(format!("out-{}", rand::random::<u64>()));
    let args = ["pull", &format!("acme/web:{tag}"), "-o", out.to_str().unwrap(), "--key", keys.to_str().unwrap()];
    amber(url, token, state, &args).await
}

async fn push(server: &TestServer, token: &str, tree: &Path, tag: &str) {
    std::fs::write(tree.join("app.bin"), format!("build {tag} of {}", server.addr)).unwrap();
    let run = server.amber(token, &["push", &format!("acme/web:{tag}"), tree.to_str().unwrap()]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
}

async fn write_keys(server: &TestServer, path: &Path) -> PathBuf {
    std::fs::write(path, server.keys().await.to_string()).unwrap();
    path.to_owned()
}

fn held(state: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(state).unwrap()).expect("the state file is whole JSON")
}

pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A second amberd serving a copy of a store's data as it was: what an
/// attacker between the client and the store can replay.
struct Stale {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Stale {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stale_copy(server: &mut TestServer) -> Stale {
    assert!(server.terminate());
    let dir = tempfile::tempdir().unwrap();
    copy_dir(server.data_dir(), dir.path());
    server.restart();
    let (child, addr) =
        spawn(dir.path(), &["--log-interval".into(), "10".into()], &[], &Arc::new(Mutex::new(String::new())));
    Stale { child, url: format!("http://{addr}"), _dir: dir }
}

fn origin_of(keys: &Path) -> String {
    let list: Value = serde_json::from_str(&std::fs::read_to_string(keys).unwrap()).unwrap();
    let vkey = list["keys"].as_array().unwrap().iter().find(|k| k["purpose"] == "log").unwrap()["vkey"].clone();
    vkey.as_str().unwrap().split('+').next().unwrap().to_owned()
}

/// F1: pulls from store A, a replay of A's older history, and store B, all
/// with one state file. The replay is refused before and after B is used,
/// whichever origin B has; B on A's origin with its own key is refused
/// until the operator says otherwise.
#[tokio::test]
async fn a_second_store_never_resets_the_first_stores_rollback_protection() {
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("runner-log-state.json");
    let tree = work.path().join("tree");
    std::fs::create_dir(&tree).unwrap();

    let mut a = TestServer::builder().arg("--log-interval").arg("10").start().await;
    let a_token = a.token(&[("acme/web", &["push", "pull"])]).await;
    let a_keys = write_keys(&a, &work.path().join("a-keys.json")).await;
    push(&a, &a_token, &tree, "v1").await;
    let old_a = stale_copy(&mut a);
    push(&a, &a_token, &tree, "v2").await;
    push(&a, &a_token, &tree, "v3").await;
    let first = pull(&a.url(""), &a_token, &state, &a_keys, "v3", work.path()).await;
    assert_eq!(first.code, 0, "{}", first.stderr);

    // The replay of A as it was: a smaller history, refused.
    let replayed = pull(&old_a.url, &a_token, &state, &a_keys, "v1", work.path()).await;
    assert_eq!(replayed.code, 4, "{}", replayed.stderr);
    assert!(replayed.stderr.contains("rolled-back"), "{}", replayed.stderr);

    // B, a store of its own (its own origin, chosen at its first start).
    let b = TestServer::builder().arg("--log-interval").arg("10").start().await;
    let b_token = b.token(&[("acme/web", &["push", "pull"])]).await;
    let b_keys = write_keys(&b, &work.path().join("b-keys.json")).await;
    assert_ne!(origin_of(&a_keys), origin_of(&b_keys), "every store has its own origin");
    push(&b, &b_token, &tree, "v1").await;
    let from_b = pull(&b.url(""), &b_token, &state, &b_keys, "v1", work.path()).await;
    assert_eq!(from_b.code, 0, "{}", from_b.stderr);
    let replayed = pull(&old_a.url, &a_token, &state, &a_keys, "v1", work.path()).await;
    assert_eq!(replayed.code, 4, "after a pull from B: {}", replayed.stderr);
    assert!(replayed.stderr.contains("rolled-back"), "{}", replayed.stderr);
    assert_eq!(held(&state)["logs"].as_object().unwrap().len(), 2, "A and B side by side");

    // C, on A's origin (as every store had before origins were unique),
    // with a key of its own: refused, and A's protection stays.
    let a_origin = origin_of(&a_keys);
    let c = TestServer::builder().arg("--log-interval").arg("10").arg(format!("--log-origin={a_origin}")).start().await;
    let c_token = c.token(&[("acme/web", &["push", "pull"])]).await;
    let c_keys = write_keys(&c, &work.path().join("c-keys.json")).await;
    push(&c, &c_token, &tree, "v1").await;
    let before = held(&state);
    let from_c = pull(&c.url(""), &c_token, &state, &c_keys, "v1", work.path()).await;
    assert_eq!(from_c.code, 4, "{}", from_c.stderr);
    assert!(from_c.stderr.contains(&format!("the log key of {a_origin} changed")), "{}", from_c.stderr);
    assert!(from_c.stderr.contains("amber log trust"), "the error says what to do: {}", from_c.stderr);
    assert_eq!(held(&state), before, "a refused pull holds nothing");
    let replayed = pull(&old_a.url, &a_token, &state, &a_keys, "v1", work.path()).await;
    assert_eq!(replayed.code, 4, "after a pull from C: {}", replayed.stderr);

    // Trusting C's key keeps A's checkpoint: C's history does not extend it.
    let trusted = amber(&c.url(""), "", &state, &["log", "trust", &a_origin, "--key", c_keys.to_str().unwrap()]).await;
    assert_eq!(trusted.code, 0, "{}", trusted.stderr);
    let forked = pull(&c.url(""), &c_token, &state, &c_keys, "v1", work.path()).await;
    assert_eq!(forked.code, 4, "{}", forked.stderr);
    // Forgetting the origin is the step for a store that started over.
    let forgot = amber(&c.url(""), "", &state, &["log", "forget", &a_origin]).await;
    assert_eq!(forgot.code, 0, "{}", forgot.stderr);
    let from_c = pull(&c.url(""), &c_token, &state, &c_keys, "v1", work.path()).await;
    assert_eq!(from_c.code, 0, "{}", from_c.stderr);
    assert!(from_c.stderr.contains("first checkpoint held"), "{}", from_c.stderr);
    let again = amber(&c.url(""), "", &state, &["log", "forget", "nothing.example/log"]).await;
    assert_eq!(again.code, 2, "{}", again.stderr);
    let list = amber(&c.url(""), "", &state, &["log", "list"]).await;
    let list: Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
}

/// A store's log key replaced (the old one not in the new key file): the
/// pull is refused until `amber log trust`, which keeps the checkpoint, so
/// the store must still extend the history the client holds.
#[tokio::test]
async fn a_changed_log_key_is_refused_until_trusted() {
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state.json");
    let tree = work.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    let mut server = TestServer::builder().arg("--log-interval").arg("10").start().await;
    let token = server.token(&[("acme/web", &["push", "pull"])]).await;
    let old_keys = write_keys(&server, &work.path().join("old-keys.json")).await;
    push(&server, &token, &tree, "v1").await;
    let first = pull(&server.url(""), &token, &state, &old_keys, "v1", work.path()).await;
    assert_eq!(first.code, 0, "{}", first.stderr);

    assert!(server.terminate());
    server.amberd(&["keys", "rotate", "--log"]);
    server.restart();
    push(&server, &token, &tree, "v2").await;
    // The new key file without the retired log key: a key change, not a rotation.
    let mut list = server.keys().await;
    list["keys"].as_array_mut().unwrap().retain(|k| k["purpose"] != "log" || k["status"] == "active");
    let new_keys = work.path().join("new-keys.json");
    std::fs::write(&new_keys, list.to_string()).unwrap();
    let refused = pull(&server.url(""), &token, &state, &new_keys, "v2", work.path()).await;
    assert_eq!(refused.code, 4, "{}", refused.stderr);
    assert!(refused.stderr.contains("changed"), "{}", refused.stderr);

    // With the retired key still in the file, it is a rotation: accepted.
    let rotation = write_keys(&server, &work.path().join("rotated-keys.json")).await;
    let other_state = work.path().join("other-state.json");
    std::fs::copy(&state, &other_state).unwrap();
    let rotated = pull(&server.url(""), &token, &other_state, &rotation, "v2", work.path()).await;
    assert_eq!(rotated.code, 0, "{}", rotated.stderr);
    assert!(rotated.stderr.contains("consistent with the"), "{}", rotated.stderr);

    let origin = origin_of(&old_keys);
    let no_key = amber(
        &server.url(""),
        "",
        &state,
        &["log", "trust", "elsewhere.example/log", "--key", new_keys.to_str().unwrap()],
    )
    .await;
    assert_eq!(no_key.code, 2, "a key file without a key for that origin: {}", no_key.stderr);
    let trusted =
        amber(&server.url(""), "", &state, &["log", "trust", &origin, "--key", new_keys.to_str().unwrap()]).await;
    assert_eq!(trusted.code, 0, "{}", trusted.stderr);
    let accepted = pull(&server.url(""), &token, &state, &new_keys, "v2", work.path()).await;
    assert_eq!(accepted.code, 0, "{}", accepted.stderr);
    assert!(accepted.stderr.contains("consistent with the"), "the held checkpoint was extended: {}", accepted.stderr);
}

/// Two CI jobs on one runner: two `amber pull`s at once, 50 times, one
/// state file, the log growing between rounds. The file is always whole
/// JSON, and what it holds never goes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pulls_at_once_never_tear_the_state_or_take_it_back() {
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state.json");
    let tree = work.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    let server = TestServer::builder().arg("--log-interval").arg("10").start().await;
    let token = server.token(&[("acme/web", &["push", "pull"])]).await;
    let keys = write_keys(&server, &work.path().join("keys.json")).await;
    let (mut size, url) = (0u64, server.url(""));
    for round in 0..50 {
        let tag = format!("r{round}");
        push(&server, &token, &tree, &tag).await;
        let (one, two) = tokio::join!(
            pull(&url, &token, &state, &keys, &tag, work.path()),
            pull(&url, &token, &state, &keys, &tag, work.path())
        );
        assert_eq!(one.code, 0, "round {round}: {}", one.stderr);
        assert_eq!(two.code, 0, "round {round}: {}", two.stderr);
        let logs = held(&state)["logs"].clone();
        let logs = logs.as_object().unwrap();
        assert_eq!(logs.len(), 1);
        let now = logs.values().next().unwrap()["size"].as_u64().unwrap();
        assert!(now > size, "round {round}: held {now} after {size}");
        size = now;
    }
}

/// A store keeps the origin it first signed under: given later a
/// --public-url, or asked for another --log-origin, it keeps it (or refuses
/// to start); a new store takes its origin from --public-url.
#[tokio::test]
async fn a_store_keeps_its_origin_and_takes_a_new_one_from_its_public_url() {
    let mut server = TestServer::builder().arg("--public-url=https://amber.example.com:8443/ci/").start().await;
    let note = server.http.get(server.url("/v1/log/checkpoint")).send().await.unwrap().text().await.unwrap();
    assert!(note.starts_with("amber.example.com:8443/ci/log\n"), "{note}");
    assert!(server.terminate());
    assert_eq!(server.amberd(&["log", "origin"]).trim(), "amber.example.com:8443/ci/log");
    let (code, out) = server.amberd_status(&["log", "rename", "other.example/log"]);
    assert_ne!(code, 0, "a log that signed is never renamed: {out}");
    assert!(out.contains("never renamed"), "{out}");
    let (code, out) = server.amberd_status(&["--log-origin=other.example/log", "log", "origin"]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("amber.example.com:8443/ci/log"), "the error names the store's origin: {out}");
    server.restart();
    let note = server.http.get(server.url("/v1/log/checkpoint")).send().await.unwrap().text().await.unwrap();
    assert!(note.starts_with("amber.example.com:8443/ci/log\n"), "{note}");
    let mut plain = TestServer::start().await;
    let note = plain.http.get(plain.url("/v1/log/checkpoint")).send().await.unwrap().text().await.unwrap();
    let random = note.lines().next().unwrap().to_owned();
    assert!(random.ends_with(".invalid/log"), "{note}");
    assert!(plain.terminate());
    let (code, kept) = plain.amberd_status(&["--public-url=https://new.example.com", "log", "origin"]);
    assert_eq!(code, 0, "{kept}");
    assert!(kept.lines().any(|line| line == random), "a later public URL keeps the origin: {kept}");
    for bad in ["ftp://amber.example.com", "amber.example.com", "https://amber.example.com/?q=1", "https://u:p@h/"] {
        let (code, out) = plain.amberd_status(&[&format!("--public-url={bad}"), "log", "origin"]);
        assert_ne!(code, 0, "{bad}: {out}");
        assert!(out.contains("public_url"), "{bad}: {out}");
    }
}

/// A store that signed before origins were stored (every such store kept
/// `--log-origin`, or the old default) keeps the origin of its checkpoint,
/// whatever it is started with now, and stores it.
#[tokio::test]
async fn a_store_from_before_stored_origins_keeps_the_origin_it_signed_with() {
    let mut server = TestServer::builder().arg("--log-origin=amber.localhost/log").start().await;
    server.with_stopped_meta(|db| {
        db.open_tree("audit_head").unwrap().remove("log_origin").unwrap().expect("the origin was stored");
    });
    let log = Arc::new(Mutex::new(String::new()));
    let (child, addr) = spawn(server.data_dir(), &["--public-url=https://amber.example.com".into()], &[], &log);
    let mut child = Guard(child);
    let note = reqwest::get(format!("http://{addr}/v1/log/checkpoint")).await.unwrap().text().await.unwrap();
    assert!(note.starts_with("amber.localhost/log\n"), "{note}");
    let _ = child.0.kill();
    let _ = child.0.wait();
    assert_eq!(server.amberd(&["log", "origin"]).trim(), "amber.localhost/log", "and it is stored now");
}

/// Ends the child when the test ends, passed or not.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A state file whose lock another process never lets go (a stopped job):
/// the pull fails after its wait, naming the lock, and never hangs.
#[tokio::test]
async fn a_state_file_locked_for_good_fails_the_pull_instead_of_hanging_it() {
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state.json");
    let tree = work.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    let server = TestServer::builder().arg("--log-interval").arg("10").start().await;
    let token = server.token(&[("acme/web", &["push", "pull"])]).await;
    let keys = write_keys(&server, &work.path().join("keys.json")).await;
    push(&server, &token, &tree, "v1").await;
    // Python's flock, held for a minute by a process of the test's own.
    let lock = format!("{}.lock", state.display());
    let mut holder = std::process::Command::new("python3")
        .args(["-c", "import fcntl,sys,time; f=open(sys.argv[1],'w'); fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)", &lock])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), "held");
    let started = std::time::Instant::now();
    let blocked = pull(&server.url(""), &token, &state, &keys, "v1", work.path()).await;
    let waited = started.elapsed();
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(blocked.code, 1, "{}", blocked.stderr);
    assert!(blocked.stderr.contains("stayed locked by another amber process"), "{}", blocked.stderr);
    assert!(waited >= std::time::Duration::from_secs(29) && waited < std::time::Duration::from_secs(45), "{waited:?}");
    // Let go: the next pull holds its checkpoint.
    let after = pull(&server.url(""), &token, &state, &keys, "v1", work.path()).await;
    assert_eq!(after.code, 0, "{}", after.stderr);
}
