//! A newcomer's first minutes: the README's first section run as written (an
//! empty directory, start, the initial admin token's file, push, a verified
//! pull), the file's mode, and no second token on later starts; on
//! PostgreSQL, replicas starting at once on an empty store mint one token.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::backends::Services;
use crate::harness::{AMBERD, spawn};

/// The first `sh` block of the README's first section.
fn first_section() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = &readme[readme.find("\n## ").unwrap()..];
    let block = &section[section.find("```sh\n").unwrap() + 6..];
    block[..block.find("```").unwrap()].to_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn tokens(addr: &str, admin: &str) -> Vec<Value> {
    let response = reqwest::Client::new().get(format!("http://{addr}/v1/tokens")).bearer_auth(admin).send().await;
    let list: Value = response.unwrap().json().await.unwrap();
    list["tokens"].as_array().unwrap().clone()
}

#[tokio::test]
async fn the_readme_first_section_runs_as_written() {
    let script = first_section();
    assert!(script.contains("cargo build --release --workspace"), "{script}");
    // The binaries of this test run stand in for the release build; the
    // port is a free one, not the default, so tests can run side by side.
    let bin = Path::new(AMBERD).parent().unwrap().to_str().unwrap().to_owned();
    let port = free_port();
    let script: String = script
        .lines()
        .filter(|line| !line.starts_with("cargo build"))
        .map(|line| line.replace("$PWD/target/release", &bin).replace("7350", &port.to_string()))
        .collect::<Vec<_>>()
        .join("\n");
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = Command::new("timeout")
        .args(["60", "bash", "-euo", "pipefail", "-c"])
        // Whatever happens, the server it started is stopped by its PID.
        .arg(format!("trap 'kill $AMBERD 2>/dev/null || true' EXIT\n{script}"))
        .current_dir(work.path())
        .env("HOME", home.path())
        .env("AMBER_LISTEN", format!("127.0.0.1:{port}"))
        .env("AMBER_URL", format!("http://127.0.0.1:{port}"))
        .env_remove("AMBER_TOKEN")
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the README's first section failed:\n{stdout}\n{stderr}");
    assert!(stdout.lines().any(|l| l == "verified"), "{stdout}");
    assert!(stderr.contains("created the initial admin token"), "{stderr}");
    let data = work.path().join("amber-data");
    let file = data.join("initial-admin-token");
    let secret = std::fs::read_to_string(&file).unwrap();
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(secret.ends_with('\n') && secret.trim().starts_with("amber_"), "the secret and a newline");
    assert!(!stderr.contains(secret.trim()), "the secret was logged");
    // Started again: the same file, no second token; deleted, not written again.
    for delete_first in [false, true] {
        if delete_first {
            std::fs::remove_file(&file).unwrap();
        }
        let log = Arc::new(Mutex::new(String::new()));
        let (mut child, addr) = spawn(&data, &[], &[], &log);
        let list = tokens(&addr.to_string(), secret.trim()).await;
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(list.iter().filter(|t| t["name"] == "initial-admin").count(), 1, "{list:?}");
        assert_eq!(list.len(), 2, "the initial admin and the pipeline's: {list:?}");
        if delete_first {
            assert!(!file.exists(), "the initial token was written again");
        } else {
            assert_eq!(std::fs::read_to_string(&file).unwrap(), secret);
        }
        assert!(!log.lock().unwrap().contains("created the initial admin token"));
    }
}

#[tokio::test]
async fn no_initial_token_when_asked_or_when_a_token_exists() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (mut child, _) = spawn(dir.path(), &["--no-initial-token".into()], &[], &log);
    let _ = child.kill();
    let _ = child.wait();
    assert!(!dir.path().join("initial-admin-token").exists());
    // A token minted with the server stopped: the store is not empty.
    let mut create = Command::new(AMBERD);
    create.args(["token", "create", "--admin", "--name", "ops", "--data-dir"]).arg(dir.path());
    assert!(create.output().unwrap().status.success());
    let (mut child, _) = spawn(dir.path(), &[], &[], &log);
    let _ = child.kill();
    let _ = child.wait();
    assert!(!dir.path().join("initial-admin-token").exists());
}

#[tokio::test]
async fn replicas_starting_at_once_on_an_empty_store_mint_one_initial_token() {
    let services = Services::start().await;
    let (args, env) = (services.args(), services.s3.env());
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let started: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = dirs
            .iter()
            .map(|dir| {
                let (args, env) = (&args, &env);
                scope.spawn(move || spawn(dir.path(), args, env, &Arc::new(Mutex::new(String::new()))))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let files: Vec<String> =
        dirs.iter().filter_map(|dir| std::fs::read_to_string(dir.path().join("initial-admin-token")).ok()).collect();
    assert_eq!(files.len(), 1, "one replica writes the file");
    for (_, addr) in &started {
        let list = tokens(&addr.to_string(), files[0].trim()).await;
        assert_eq!(list.len(), 1, "one token across replicas: {list:?}");
    }
    for (mut child, _) in started {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[test]
fn ci_runs_exactly_the_readme_test_command() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let test = &readme[readme.find("\n## Test\n").unwrap()..];
    let block = &test[test.find("```sh\n").unwrap() + 6..];
    let command = block[..block.find("```").unwrap()].lines().next().unwrap();
    assert!(command.starts_with("sudo scripts/test "), "{command}");
    let ci = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/run")).unwrap();
    assert_eq!(ci.lines().rfind(|l| !l.starts_with('#') && !l.trim().is_empty()), Some("exec scripts/test"));
}
