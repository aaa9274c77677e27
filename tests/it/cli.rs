//! The `amber` CLI end to end, as a CI job pushes and a deploy tool pulls:
//! byte-identical round trips, nothing re-uploaded, and failing closed.

use std::io::Write;
use std::path::Path;

use amber_core::Digest;
use reqwest::Method;
use serde_json::Value;

use crate::backends::Backend;
use crate::harness::{TestServer, data, key_file};
use crate::on_both_backends;

/// A tree with nested directories, an empty file and a 100 MiB file.
fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("bin/deep/er")).unwrap();
    std::fs::create_dir_all(root.join("empty-dir-is-skipped")).unwrap();
    std::fs::write(root.join("README"), b"hello\n").unwrap();
    std::fs::write(root.join("empty"), b"").unwrap();
    std::fs::write(root.join("bin/deep/er/tool"), data(70_000, 1)).unwrap();
    std::fs::write(root.join("bin/same-as-tool"), data(70_000, 1)).unwrap();
    let mut big = std::io::BufWriter::new(std::fs::File::create(root.join("bin/big.tar")).unwrap());
    let block = data(1 << 20, 2);
    for i in 0..100u32 {
        big.write_all(&i.to_le_bytes()).unwrap();
        big.write_all(&block[4..]).unwrap();
    }
}

fn files_under(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push((
                    path.strip_prefix(root).unwrap().to_str().unwrap().to_owned(),
                    std::fs::read(&path).unwrap(),
                ));
            }
        }
    }
    walk(root, root, &mut out);
    out.sort();
    out
}

async fn push_then_pull_by_tag_and_by_digest_is_byte_identical(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = server.token(&[("acme/*", &["push", "pull"])]).await;
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("dist");
    make_tree(&tree);
    let keys = key_file(&server, work.path()).await;

    let pushed = server
        .amber(&token, &["push", "acme/web:1.0.0", tree.to_str().unwrap(), "--annotation", "git.commit=abc", "--json"])
        .await;
    assert_eq!(pushed.code, 0, "{}", pushed.stderr);
    let report: Value = serde_json::from_str(&pushed.stdout).unwrap();
    assert_eq!(report["files"], 5);
    assert_eq!(report["uploaded"], 4, "identical files are uploaded once");
    assert_eq!(report["created"], true);
    let digest = report["digest"].as_str().unwrap().to_owned();

    // Unchanged tree: nothing uploaded, same manifest.
    let again = server
        .amber(&token, &["push", "acme/web:1.0.0", tree.to_str().unwrap(), "--annotation", "git.commit=abc", "--json"])
        .await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    let report: Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(report["uploaded"], 0);
    assert_eq!(report["uploaded_bytes"], 0);
    assert_eq!(report["created"], false);
    assert_eq!(report["digest"], digest.as_str());

    let by_tag = work.path().join("by-tag");
    let pulled =
        server.amber(&token, &["pull", "acme/web:1.0.0", "-o", by_tag.to_str().unwrap(), "--key", &keys]).await;
    assert_eq!(pulled.code, 0, "{}", pulled.stderr);
    assert_eq!(pulled.stdout.trim(), digest);
    assert!(files_under(&tree) == files_under(&by_tag), "pulled tree differs");

    let by_digest = work.path().join("by-digest");
    let reference = format!("acme/web@{digest}");
    let pulled = server.amber(&token, &["pull", &reference, "-o", by_digest.to_str().unwrap(), "--key", &keys]).await;
    assert_eq!(pulled.code, 0, "{}", pulled.stderr);
    assert!(files_under(&tree) == files_under(&by_digest));

    // Offline verification of a saved envelope and the pulled directory.
    let envelope = server
        .request(Method::GET, "/v1/repos/acme/web/tags/1.0.0", &token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let envelope_path = work.path().join("envelope.json");
    std::fs::write(&envelope_path, envelope).unwrap();
    let env = envelope_path.to_str().unwrap();
    let checked = server
        .amber("", &["verify", "--key", &keys, env, "--ref", "acme/web:1.0.0", "--dir", by_tag.to_str().unwrap()])
        .await;
    assert_eq!(checked.code, 0, "{}", checked.stderr);
    std::fs::write(by_tag.join("README"), b"changed\n").unwrap();
    let tampered = server.amber("", &["verify", "--key", &keys, env, "--dir", by_tag.to_str().unwrap()]).await;
    assert_eq!(tampered.code, 4, "{}", tampered.stderr);
    assert!(tampered.stderr.contains("README"));
    let wrong_tag = server.amber("", &["verify", "--key", &keys, env, "--ref", "acme/web:2.0.0"]).await;
    assert_eq!(wrong_tag.code, 4);
}

fn no_files(dir: &Path) -> bool {
    !dir.exists() || files_under(dir).is_empty()
}

#[tokio::test]
async fn pull_fails_closed_and_writes_nothing_unverified() {
    let mut server = TestServer::start().await;
    let token = server.token(&[("acme/*", &["push", "pull"])]).await;
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("dist");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("app"), data(3 << 20, 9)).unwrap();
    let keys = key_file(&server, work.path()).await;
    assert_eq!(server.amber(&token, &["push", "acme/web:v1", tree.to_str().unwrap()]).await.code, 0);
    assert_eq!(
        server.amber(&token, &["push", "acme/web:v2", tree.to_str().unwrap(), "--annotation", "v=2"]).await.code,
        0
    );

    // A key that did not sign it.
    let wrong_key = work.path().join("wrong.txt");
    use base64::Engine;
    let other = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    std::fs::write(&wrong_key, base64::engine::general_purpose::STANDARD.encode(other.verifying_key().as_bytes()))
        .unwrap();
    let out = work.path().join("wrong-key");
    let run = server
        .amber(&token, &["pull", "acme/web:v1", "-o", out.to_str().unwrap(), "--key", wrong_key.to_str().unwrap()])
        .await;
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(no_files(&out));

    // The server hands out v1's envelope when asked for v2.
    server.with_stopped_meta(|db| {
        let tags = db.open_tree("tags").unwrap();
        let v1 = tags.get(b"acme/web\0v1").unwrap().unwrap();
        tags.insert(b"acme/web\0v2", v1).unwrap();
    });
    server.restart();
    let out = work.path().join("other-tag");
    let run = server.amber(&token, &["pull", "acme/web:v2", "-o", out.to_str().unwrap(), "--key", &keys]).await;
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(run.stderr.contains("tag"), "{}", run.stderr);
    assert!(no_files(&out));

    // A blob corrupted at rest on the server.
    let digest: Digest = Digest::of(&data(3 << 20, 9));
    let blob = server.blob_file(&digest.to_string());
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[1 << 20] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    let out = work.path().join("corrupt");
    let run = server.amber(&token, &["pull", "acme/web:v1", "-o", out.to_str().unwrap(), "--key", &keys]).await;
    assert_ne!(run.code, 0, "{}", run.stderr);
    assert!(
        no_files(&out),
        "an unverified file was left: {:?}",
        files_under(&out).iter().map(|f| &f.0).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn pull_refuses_to_write_through_a_symlink() {
    let server = TestServer::start().await;
    let token = server.token(&[("acme/*", &["push", "pull"])]).await;
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("dist");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/passwd"), b"not really").unwrap();
    let keys = key_file(&server, work.path()).await;
    assert_eq!(server.amber(&token, &["push", "acme/web:v1", tree.to_str().unwrap()]).await.code, 0);
    let out = work.path().join("out");
    let outside = work.path().join("outside");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, out.join("etc")).unwrap();
    let run = server.amber(&token, &["pull", "acme/web:v1", "-o", out.to_str().unwrap(), "--key", &keys]).await;
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(!outside.join("passwd").exists());
}

on_both_backends!(push_then_pull_by_tag_and_by_digest_is_byte_identical,);
