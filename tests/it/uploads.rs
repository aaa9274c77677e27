//! Resumable uploads (tus 1.0.0) over HTTP, on both backends: unmodified
//! real clients (tuspy, tus-js-client with `parallelUploads`), whose blobs
//! `b3sum` confirms; parts checked on arrival against chaining values;
//! every rule of `design/uploads.md` ("Tests").

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};

use crate::backends::Backend;
use crate::harness::{TestServer, data, expect_error};
use crate::on_both_backends;
use crate::proxy::{CuttingProxy, Seen};

const UPLOADS: &str = "/v1/repos/acme/web/uploads";
const MIB: usize = 1 << 20;

/// The digest by `b3sum` (the BLAKE3 team's own tool).
fn b3sum(path: &Path) -> String {
    let out = Command::new("b3sum").arg("--no-names").arg(path).output().expect("b3sum");
    assert!(out.status.success(), "b3sum: {}", String::from_utf8_lossy(&out.stderr));
    format!("blake3:{}", String::from_utf8(out.stdout).unwrap().trim())
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn metadata(pairs: &[(&str, &[u8])]) -> String {
    pairs.iter().map(|(k, v)| format!("{k} {}", b64(v))).collect::<Vec<_>>().join(",")
}

/// Each part's BLAKE3 chaining value, by the blake3 crate's tree API.
fn cvs(bytes: &[u8], part_size: usize) -> Vec<u8> {
    use blake3::hazmat::HasherExt;
    let mut all = Vec::new();
    for (index, part) in bytes.chunks(part_size).enumerate() {
        let mut hasher = blake3::Hasher::new();
        hasher.set_input_offset((index * part_size) as u64);
        hasher.update(part);
        all.extend_from_slice(&hasher.finalize_non_root());
    }
    all
}

fn tus(server: &TestServer, method: Method, path: &str, token: &str) -> reqwest::RequestBuilder {
    server.request(method, path, token).header("Tus-Resumable", "1.0.0")
}

async fn create(
    server: &TestServer,
    token: &str,
    length: usize,
    meta: &str,
    concat: Option<&str>,
) -> reqwest::Response {
    let mut request = tus(server, Method::POST, UPLOADS, token).header("Upload-Length", length.to_string());
    if !meta.is_empty() {
        request = request.header("Upload-Metadata", meta);
    }
    if let Some(concat) = concat {
        request = request.header("Upload-Concat", concat);
    }
    request.send().await.unwrap()
}

async fn created(server: &TestServer, token: &str, length: usize, meta: &str, concat: Option<&str>) -> String {
    let response = create(server, token, length, meta, concat).await;
    let status = response.status();
    let location = response.headers().get("location").map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(status, StatusCode::CREATED, "{}", response.text().await.unwrap());
    location.unwrap()
}

async fn patch(server: &TestServer, token: &str, url: &str, offset: usize, bytes: &[u8]) -> reqwest::Response {
    tus(server, Method::PATCH, url, token)
        .header("Upload-Offset", offset.to_string())
        .header("Content-Type", "application/offset+octet-stream")
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap()
}

async fn offset(server: &TestServer, token: &str, url: &str) -> u64 {
    let response = tus(server, Method::HEAD, url, token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.headers()["upload-offset"].to_str().unwrap().parse().unwrap()
}

async fn blob(server: &TestServer, token: &str, digest: &str) -> Vec<u8> {
    let response =
        server.request(Method::GET, &format!("/v1/repos/acme/web/blobs/{digest}"), token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "blob {digest}");
    response.bytes().await.unwrap().to_vec()
}

fn node_tools() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools")
}

/// Runs a real client; its stdout.
fn run(mut command: Command) -> String {
    let out = command.output().expect("client");
    assert!(
        out.status.success(),
        "client failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn real_clients_upload_blobs_that_b3sum_confirms(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = server.token(&[("acme/web", &["push", "pull"])]).await;
    let dir = tempfile::tempdir().unwrap();
    let endpoint = server.url(UPLOADS);
    for (name, len, seed) in [("small", 1000, 1), ("odd", 3 * MIB + 12_345, 2), ("empty", 0, 3)] {
        let file = dir.path().join(name);
        std::fs::write(&file, data(len, seed)).unwrap();
        let digest = b3sum(&file);
        // tuspy, in 1 MiB PATCHes, with and without a stated digest.
        for stated in [Some(digest.as_str()), None] {
            let mut tuspy = Command::new("python3");
            tuspy.arg(node_tools().join("tus_py.py")).args([&endpoint, &token]).arg(&file).arg(MIB.to_string());
            tuspy.args(stated);
            run(tuspy);
            assert_eq!(blob(&server, &token, &digest).await, std::fs::read(&file).unwrap(), "tuspy {name}");
        }
        // tus-js-client, one upload and four parallel ones (concatenation).
        for parallel in ["1", "4"] {
            if len == 0 && parallel == "4" {
                continue; // tus-js-client cannot split an empty file
            }
            let mut node = Command::new("node");
            node.arg(node_tools().join("tus_js.mjs")).args([&endpoint, &token]).arg(&file).arg(parallel);
            node.arg(&digest);
            let out = run(node);
            assert_eq!(blob(&server, &token, &digest).await, std::fs::read(&file).unwrap(), "tus-js {name} {parallel}");
            let url: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
            let path = url["url"].as_str().unwrap().splitn(4, '/').nth(3).map(|p| format!("/{p}")).unwrap();
            let head = tus(&server, Method::HEAD, &path, &token).send().await.unwrap();
            assert_eq!(head.headers()["amber-blob-digest"].to_str().unwrap(), digest);
            assert_eq!(head.headers()["upload-offset"].to_str().unwrap(), len.to_string());
        }
    }
    // Without a stated digest in parallel: hashed whole at completion.
    let file = dir.path().join("unstated");
    std::fs::write(&file, data(2 * MIB + 7, 9)).unwrap();
    let mut node = Command::new("node");
    node.arg(node_tools().join("tus_js.mjs")).args([&endpoint, &token]).arg(&file).arg("3");
    run(node);
    assert_eq!(blob(&server, &token, &b3sum(&file)).await, std::fs::read(&file).unwrap());
    // Each blob's push is in the audit log, as a PUT's is.
    let events = server.audit_events().await;
    let pushed: std::collections::HashSet<_> = events
        .iter()
        .filter(|e| e["kind"] == "blob_pushed")
        .map(|e| e["digest"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(pushed.len(), 4, "{pushed:?}");
}

async fn parts_are_checked_on_arrival_against_their_chaining_values(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = server.token(&[("acme/web", &["push", "pull"])]).await;
    let bytes = data(5 * MIB + 300_000, 7);
    let digest = blake3::hash(&bytes);
    let digest = format!("blake3:{digest}");
    let all = cvs(&bytes, MIB);
    let part_meta = |index: usize, cvs: &[u8]| {
        metadata(&[
            ("digest", digest.as_bytes()),
            ("part_size", MIB.to_string().as_bytes()),
            ("part", index.to_string().as_bytes()),
            ("cvs", cvs),
        ])
    };
    let part = |index: usize| &bytes[index * MIB..((index + 1) * MIB).min(bytes.len())];

    // Wrong chaining values are refused before any data.
    let mut swapped = all.clone();
    swapped[..64].rotate_left(32);
    let refused = create(&server, &token, MIB, &part_meta(0, &swapped), Some("partial")).await;
    expect_error(refused, StatusCode::BAD_REQUEST, "digest_mismatch").await;
    // A part size that is not a power of two.
    let odd = metadata(&[
        ("digest", digest.as_bytes()),
        ("part_size", (3 * MIB).to_string().as_bytes()),
        ("part", b"0"),
        ("cvs", &all[..64]),
    ]);
    let refused = create(&server, &token, 3 * MIB, &odd, Some("partial")).await;
    let body = expect_error(refused, StatusCode::BAD_REQUEST, "request_invalid").await;
    assert!(body["error"]["message"].as_str().unwrap().contains("power of two"), "{body}");
    // A part whose length is not its place's.
    let refused = create(&server, &token, MIB - 1, &part_meta(0, &all), Some("partial")).await;
    expect_error(refused, StatusCode::BAD_REQUEST, "request_invalid").await;

    let mut urls = Vec::new();
    for index in 0..6 {
        urls.push(created(&server, &token, part(index).len(), &part_meta(index, &all), Some("partial")).await);
    }
    // A corrupted part is refused on arrival, nothing of it kept, and can be sent again.
    let mut corrupt = part(2).to_vec();
    corrupt[1000] ^= 1;
    let refused = patch(&server, &token, &urls[2], 0, &corrupt).await;
    let body = expect_error(refused, StatusCode::BAD_REQUEST, "digest_mismatch").await;
    assert!(body["error"]["message"].as_str().unwrap().contains("part 2"), "{body}");
    assert_eq!(offset(&server, &token, &urls[2]).await, 0);
    // Parts in any order; one in two PATCHes (resumed mid-part).
    for index in [5, 3, 2, 0] {
        assert_eq!(patch(&server, &token, &urls[index], 0, part(index)).await.status(), StatusCode::NO_CONTENT);
    }
    let half = 400_000;
    assert_eq!(patch(&server, &token, &urls[1], 0, &part(1)[..half]).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(offset(&server, &token, &urls[1]).await, half as u64);
    // A missing part stops completion, and the error names it.
    let final_of = |urls: &[String]| format!("final;{}", urls.join(" "));
    let missing = tus(&server, Method::POST, UPLOADS, &token)
        .header("Upload-Concat", final_of(&urls))
        .header("Upload-Metadata", metadata(&[("digest", digest.as_bytes())]))
        .send()
        .await
        .unwrap();
    let body = expect_error(missing, StatusCode::BAD_REQUEST, "upload_incomplete").await;
    assert!(body["error"]["message"].as_str().unwrap().contains("part 1"), "{body}");
    assert_eq!(patch(&server, &token, &urls[1], half, &part(1)[half..]).await.status(), StatusCode::NO_CONTENT);
    let missing =
        tus(&server, Method::POST, UPLOADS, &token).header("Upload-Concat", final_of(&urls)).send().await.unwrap();
    let body = expect_error(missing, StatusCode::BAD_REQUEST, "upload_incomplete").await;
    assert!(body["error"]["message"].as_str().unwrap().contains("part 4"), "{body}");
    assert_eq!(patch(&server, &token, &urls[4], 0, part(4)).await.status(), StatusCode::NO_CONTENT);
    // Complete: the blob is visible, as a PUT's would be.
    let done =
        tus(&server, Method::POST, UPLOADS, &token).header("Upload-Concat", final_of(&urls)).send().await.unwrap();
    assert_eq!(done.status(), StatusCode::CREATED);
    assert_eq!(done.headers()["amber-blob-digest"].to_str().unwrap(), digest);
    assert_eq!(blob(&server, &token, &digest).await, bytes);
    // Its parts are consumed; on the file backend they were written in place
    // into the one file that became the blob, and nothing of them is left.
    assert_eq!(tus(&server, Method::HEAD, &urls[0], &token).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    if backend == Backend::Embedded {
        let left: Vec<_> = std::fs::read_dir(server.data_dir().join("blobs/uploads")).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }

    // A one-part blob: checked against the digest itself.
    let small = data(700_000, 8);
    let small_digest = format!("blake3:{}", blake3::hash(&small));
    let one = metadata(&[
        ("digest", small_digest.as_bytes()),
        ("part_size", MIB.to_string().as_bytes()),
        ("part", b"0"),
        ("cvs", &cvs(&small, MIB)),
    ]);
    let url = created(&server, &token, small.len(), &one, Some("partial")).await;
    let mut wrong = small.clone();
    wrong[0] ^= 1;
    expect_error(patch(&server, &token, &url, 0, &wrong).await, StatusCode::BAD_REQUEST, "digest_mismatch").await;
    assert_eq!(patch(&server, &token, &url, 0, &small).await.status(), StatusCode::NO_CONTENT);
    let done = tus(&server, Method::POST, UPLOADS, &token)
        .header("Upload-Concat", format!("final;{url}"))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::CREATED);
    assert_eq!(blob(&server, &token, &small_digest).await, small);

    // A zero-byte blob is complete at creation.
    let empty = create(&server, &token, 0, "", None).await;
    assert_eq!(empty.status(), StatusCode::CREATED);
    let empty_digest = format!("blake3:{}", blake3::hash(b""));
    assert_eq!(empty.headers()["amber-blob-digest"].to_str().unwrap(), empty_digest);
    assert!(blob(&server, &token, &empty_digest).await.is_empty());
}

async fn the_protocol_rules_hold(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = server.token(&[("acme/web", &["push", "pull"])]).await;
    let other = server.token(&[("acme/web", &["push", "pull"])]).await;
    let bytes = data(300_000, 3);
    let digest = format!("blake3:{}", blake3::hash(&bytes));
    let url = created(&server, &token, bytes.len(), &metadata(&[("digest", digest.as_bytes())]), None).await;
    assert!(url.starts_with(&format!("{UPLOADS}/")) && url.len() == UPLOADS.len() + 33, "{url}");

    // Another token sees nothing, as if there were no such upload.
    for method in [Method::HEAD, Method::DELETE] {
        let response = tus(&server, method.clone(), &url, &other).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{method}");
    }
    expect_error(patch(&server, &other, &url, 0, b"x").await, StatusCode::NOT_FOUND, "upload_unknown").await;
    // No Tus-Resumable: 412 with Tus-Version.
    let response = server.request(Method::HEAD, &url, &token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(response.headers()["tus-version"], "1.0.0");
    // Every answer says Tus-Resumable, errors too.
    assert_eq!(response.headers()["tus-resumable"], "1.0.0");
    // Wrong content type; wrong offset (409 with the current one). (A
    // refused body is not read: these are small, so that they are sent whole.)
    let response =
        tus(&server, Method::PATCH, &url, &token).header("Upload-Offset", "0").body(&b"x"[..]).send().await.unwrap();
    expect_error(response, StatusCode::UNSUPPORTED_MEDIA_TYPE, "media_type_unsupported").await;
    assert_eq!(patch(&server, &token, &url, 0, &bytes[..100_000]).await.status(), StatusCode::NO_CONTENT);
    let response = patch(&server, &token, &url, 0, b"x").await;
    assert_eq!(response.headers()["upload-offset"], "100000");
    expect_error(response, StatusCode::CONFLICT, "upload_offset_mismatch").await;
    // More than the upload's length.
    let short = created(&server, &token, 10, "", None).await;
    expect_error(patch(&server, &token, &short, 0, &[0; 11]).await, StatusCode::BAD_REQUEST, "request_invalid").await;
    // The OPTIONS answer.
    let options = server.http.request(Method::OPTIONS, server.url(UPLOADS)).send().await.unwrap();
    assert_eq!(options.status(), StatusCode::NO_CONTENT);
    assert!(options.headers()["tus-extension"].to_str().unwrap().contains("concatenation"));
    // HEAD tells the length, metadata and expiry.
    let head = tus(&server, Method::HEAD, &url, &token).send().await.unwrap();
    assert_eq!(head.headers()["upload-length"], bytes.len().to_string().as_str());
    assert!(head.headers().contains_key("upload-expires"));
    assert_eq!(head.headers()["cache-control"], "no-store");

    // A wrong last byte: 400 digest_mismatch, nothing visible, resumable.
    let mut wrong = bytes[100_000..].to_vec();
    wrong[5] ^= 1;
    expect_error(patch(&server, &token, &url, 100_000, &wrong).await, StatusCode::BAD_REQUEST, "digest_mismatch").await;
    let response =
        server.request(Method::HEAD, &format!("/v1/repos/acme/web/blobs/{digest}"), &token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(offset(&server, &token, &url).await, 100_000);
    let done = patch(&server, &token, &url, 100_000, &bytes[100_000..]).await;
    assert_eq!(done.status(), StatusCode::NO_CONTENT);
    assert_eq!(done.headers()["amber-blob-digest"].to_str().unwrap(), digest);
    assert_eq!(blob(&server, &token, &digest).await, bytes);

    // creation-with-upload: the POST's body is the first bytes.
    let small = data(70_000, 4);
    let small_digest = format!("blake3:{}", blake3::hash(&small));
    let response = tus(&server, Method::POST, UPLOADS, &token)
        .header("Upload-Length", "100000")
        .header("Upload-Metadata", metadata(&[("digest", small_digest.as_bytes())]))
        .header("Content-Type", "application/offset+octet-stream")
        .body(small[..60_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["upload-offset"], "60000");
    let with_data = response.headers()["location"].to_str().unwrap().to_owned();
    let response = tus(&server, Method::POST, UPLOADS, &token)
        .header("Upload-Length", small.len().to_string())
        .header("Upload-Metadata", metadata(&[("digest", small_digest.as_bytes())]))
        .header("Content-Type", "application/offset+octet-stream")
        .body(small.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["amber-blob-digest"].to_str().unwrap(), small_digest, "complete in one request");
    assert_eq!(blob(&server, &token, &small_digest).await, small);
    assert_eq!(offset(&server, &token, &with_data).await, 60_000);
    // An upload counts against --max-blob-size.
    let huge = create(&server, &token, usize::MAX >> 8, "", None).await;
    expect_error(huge, StatusCode::PAYLOAD_TOO_LARGE, "blob_too_large").await;

    // Termination.
    let url = created(&server, &token, 10, "", None).await;
    assert_eq!(tus(&server, Method::DELETE, &url, &token).send().await.unwrap().status(), StatusCode::NO_CONTENT);
    assert_eq!(tus(&server, Method::HEAD, &url, &token).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    // A final upload takes no PATCH.
    let part = created(&server, &token, 3, "", Some("partial")).await;
    assert_eq!(patch(&server, &token, &part, 0, b"abc").await.status(), StatusCode::NO_CONTENT);
    let done = tus(&server, Method::POST, UPLOADS, &token)
        .header("Upload-Concat", format!("final;{part}"))
        .send()
        .await
        .unwrap();
    let final_url = done.headers()["location"].to_str().unwrap().to_owned();
    expect_error(patch(&server, &token, &final_url, 3, b"").await, StatusCode::FORBIDDEN, "upload_final").await;
    // A pull-only token cannot create one; bad headers are named.
    let puller = server.token(&[("acme/web", &["pull"])]).await;
    expect_error(create(&server, &puller, 10, "", None).await, StatusCode::FORBIDDEN, "denied").await;
    let bad = tus(&server, Method::POST, UPLOADS, &token).header("Upload-Length", "-1").send().await.unwrap();
    expect_error(bad, StatusCode::BAD_REQUEST, "request_invalid").await;
    let bad = tus(&server, Method::POST, UPLOADS, &token).send().await.unwrap();
    expect_error(bad, StatusCode::BAD_REQUEST, "request_invalid").await;
    let bad = create(&server, &token, 10, "digest eHl6", None).await;
    expect_error(bad, StatusCode::BAD_REQUEST, "digest_invalid").await;
}

async fn two_patches_racing_on_one_upload_never_interleave(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = server.token(&[("acme/web", &["push", "pull"])]).await;
    for round in 0..5u64 {
        let (a, b) = (data(2 * MIB, 100 + round), data(2 * MIB, 200 + round));
        let url = created(&server, &token, a.len(), "", None).await;
        // Each on a connection of its own (a refused body is not read, and
        // its connection is not reused).
        let racer = |bytes: &[u8]| {
            reqwest::Client::new()
                .patch(server.url(&url))
                .bearer_auth(&token)
                .header("Tus-Resumable", "1.0.0")
                .header("Upload-Offset", "0")
                .header("Content-Type", "application/offset+octet-stream")
                .body(bytes.to_vec())
                .send()
        };
        let (ra, rb) = tokio::join!(racer(&a), racer(&b));
        // The loser may be cut off while it still sends (its body unread).
        let (sa, sb) = (ra.map(|r| r.status()).ok(), rb.map(|r| r.status()).ok());
        let won: Vec<_> =
            [(sa, &a), (sb, &b)].into_iter().filter(|(s, _)| *s == Some(StatusCode::NO_CONTENT)).collect();
        assert_eq!(won.len(), 1, "exactly one PATCH wins: {sa:?} {sb:?}");
        let lost = if sa == Some(StatusCode::NO_CONTENT) { sb } else { sa };
        assert!(
            lost.is_none_or(|s| s == StatusCode::LOCKED || s == StatusCode::CONFLICT),
            "the other waits its turn, then finds the offset moved: {lost:?}"
        );
        let digest = format!("blake3:{}", blake3::hash(won[0].1));
        assert_eq!(blob(&server, &token, &digest).await, *won[0].1);
    }
}

async fn abandoned_uploads_are_discarded_after_their_expiry(backend: Backend) {
    let server = TestServer::builder().backend(backend).arg("--upload-expiry").arg("2").start().await;
    let token = server.token(&[("acme/web", &["push", "pull"])]).await;
    let url = created(&server, &token, 4 * MIB, "", None).await;
    assert_eq!(patch(&server, &token, &url, 0, &data(MIB, 1)).await.status(), StatusCode::NO_CONTENT);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = tus(&server, Method::HEAD, &url, &token).send().await.unwrap().status();
        if status == StatusCode::NOT_FOUND {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the upload outlived its expiry");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if backend == Backend::Embedded {
        let left: Vec<_> = std::fs::read_dir(server.data_dir().join("blobs/uploads")).unwrap().collect();
        assert!(left.is_empty(), "its bytes are gone too: {left:?}");
    }
}

/// Whether the offsets a client sent never went back below one the server
/// had acknowledged before (no acknowledged byte sent twice).
fn never_resent(seen: &[Seen]) -> Result<(), String> {
    let mut acknowledged = 0;
    for event in seen {
        match event {
            Seen::Acknowledged(offset) => acknowledged = acknowledged.max(*offset),
            Seen::Sent(offset) if *offset < acknowledged => {
                return Err(format!("sent from {offset} after {acknowledged} was acknowledged: {seen:?}"));
            }
            _ => {}
        }
    }
    Ok(())
}

async fn a_cut_connection_resumes_from_the_last_durable_byte(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = server.token(&[("acme/web", &["push", "pull"])]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("image");
    std::fs::write(&file, data(256 * MIB, 11)).unwrap();
    let digest = b3sum(&file);
    // 20 connections cut, each after 1 to 12 MiB of what the client sent.
    let proxy = CuttingProxy::start(server.addr, 20, (MIB as u64)..(12 * MIB as u64)).await;
    let endpoint = format!("http://{}{UPLOADS}", proxy.addr);
    // tuspy, one PATCH for all that is left, resuming (HEAD, then PATCH from
    // the offset) after each failure.
    let mut tuspy = Command::new("python3");
    tuspy.arg(node_tools().join("tus_py.py")).args([&endpoint, &token]).arg(&file).arg((256 * MIB).to_string());
    tuspy.arg(&digest);
    tokio::task::spawn_blocking(move || run(tuspy)).await.unwrap();
    let seen = proxy.seen();
    let cuts = seen.iter().filter(|e| matches!(e, Seen::Cut(_))).count();
    assert_eq!(cuts, 20, "{seen:?}");
    never_resent(&seen).unwrap();
    // Each resumption started where the server had stored bytes up to.
    let sent: Vec<u64> = seen.iter().filter_map(|e| if let Seen::Sent(o) = e { Some(*o) } else { None }).collect();
    assert!(sent.windows(2).all(|w| w[0] <= w[1]), "{sent:?}");
    let resumed = sent.iter().filter(|&&o| o > 0).collect::<std::collections::BTreeSet<_>>().len();
    assert!(resumed >= 15, "the upload resumed past stored bytes after most cuts: {sent:?}");
    assert_eq!(blob(&server, &token, &digest).await, std::fs::read(&file).unwrap());
    // Memory does not grow with the upload: 256 MiB went through.
    let peak = server.peak_rss_kib();
    println!("peak RSS after 256 MiB through 20 cuts: {} MiB", peak / 1024);
    assert!(peak < 128 * 1024, "peak RSS {peak} KiB");
}

/// A PATCH body sent slowly, counting what has been handed to the socket.
fn slow_body(bytes: &[u8], sent: Arc<AtomicU64>) -> reqwest::Body {
    let chunks: Vec<Vec<u8>> = bytes.chunks(256 * 1024).map(<[u8]>::to_vec).collect();
    let stream = futures_util::stream::iter(chunks).then(move |chunk| {
        let sent = sent.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            Ok::<_, std::io::Error>(chunk)
        }
    });
    reqwest::Body::wrap_stream(stream)
}

async fn kill_9_during_patches_never_loses_or_invents_bytes(backend: Backend) {
    use rand::Rng;
    let mut server = TestServer::on(backend).await;
    let token = server.token(&[("acme/web", &["push", "pull"])]).await;
    let bytes = data(96 * MIB, 12);
    let digest = format!("blake3:{}", blake3::hash(&bytes));
    let url = created(&server, &token, bytes.len(), &metadata(&[("digest", digest.as_bytes())]), None).await;
    let sent = Arc::new(AtomicU64::new(0));
    let mut offset = 0u64;
    for round in 0..50 {
        let before = sent.load(Ordering::SeqCst);
        let body = slow_body(&bytes[offset as usize..], sent.clone());
        let request = tus(&server, Method::PATCH, &url, &token)
            .header("Upload-Offset", offset.to_string())
            .header("Content-Type", "application/offset+octet-stream")
            .body(body)
            .send();
        let patching = tokio::spawn(request);
        tokio::time::sleep(Duration::from_millis(rand::thread_rng().gen_range(30..250))).await;
        server.kill9();
        let _ = patching.await;
        server.restart();
        let now = offset_after_restart(&server, &token, &url).await;
        // Never more than was sent from the offset this PATCH started at,
        // never less than was acknowledged before.
        let reached = offset + (sent.load(Ordering::SeqCst) - before);
        assert!(now >= offset && now <= reached, "round {round}: offset {now}, was {offset}, sent up to {reached}");
        offset = now;
    }
    // The rest, in one go: the digest is checked over every byte stored, so
    // the bytes below each acknowledged offset were intact.
    let done = patch(&server, &token, &url, offset as usize, &bytes[offset as usize..]).await;
    assert_eq!(done.status(), StatusCode::NO_CONTENT, "{:?}", done.text().await);
    assert_eq!(blob(&server, &token, &digest).await, bytes);
}

/// `HEAD`'s offset once the restarted server answers.
async fn offset_after_restart(server: &TestServer, token: &str, url: &str) -> u64 {
    for _ in 0..100 {
        if let Ok(response) = tus(server, Method::HEAD, url, token).send().await
            && response.status() == StatusCode::OK
        {
            return response.headers()["upload-offset"].to_str().unwrap().parse().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the restarted server never answered HEAD");
}

async fn amber_push_sends_large_files_in_parts_and_resumes(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = server.token(&[("acme/web", &["push", "pull"])]).await;
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("dist");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("big.img"), data(21 * MIB + 4321, 13)).unwrap();
    std::fs::write(tree.join("small.txt"), b"hello").unwrap();
    let big = b3sum(&tree.join("big.img"));
    // Through a proxy that cuts six connections mid-PATCH.
    let proxy = CuttingProxy::start(server.addr, 6, 256 * 1024..(3 * MIB as u64)).await;
    let mut command = tokio::process::Command::new(crate::harness::amber_bin());
    command
        .args(["push", "acme/web:1.0.0"])
        .arg(&tree)
        .args(["--part-size", &(4 * MIB).to_string(), "--parallel", "3", "--json"])
        .env("AMBER_URL", format!("http://{}", proxy.addr))
        .env("AMBER_TOKEN", &token);
    let out = command.output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("resuming"), "the cuts were resumed: {stderr}");
    let seen = proxy.seen();
    assert_eq!(seen.iter().filter(|e| matches!(e, Seen::Cut(_))).count(), 6, "{seen:?}");
    assert_eq!(blob(&server, &token, &big).await, std::fs::read(tree.join("big.img")).unwrap());
    // Six parts, each checked on arrival, and one blob_pushed for the file.
    let events = server.audit_events().await;
    assert_eq!(events.iter().filter(|e| e["kind"] == "blob_pushed" && e["digest"] == big.as_str()).count(), 1);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["uploaded"], 2, "{report}");
    // Pushed again: nothing to send.
    let again = server.amber(&token, &["push", "acme/web:1.0.1", tree.to_str().unwrap(), "--json"]).await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    let report: serde_json::Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(report["uploaded"], 0);
}

on_both_backends!(
    a_cut_connection_resumes_from_the_last_durable_byte,
    kill_9_during_patches_never_loses_or_invents_bytes,
    amber_push_sends_large_files_in_parts_and_resumes,
);

/// Finals racing over the same parts (the attack, turn 3): eight at once,
/// twenty times. One binds the parts; the others are told the parts are
/// taken (`upload_incomplete`), never a `500`; a part deleted while a final
/// concatenates it is refused (`423`) or, deleted before, makes the final
/// fail cleanly, and what was stored is whole either way.
async fn finals_racing_over_the_same_parts_bind_them_once(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = server.token(&[("acme/web", &["push", "pull"])]).await;
    for round in 0..20u64 {
        let bytes = data(3 * 200_000, 100 + round);
        let digest = format!("blake3:{}", blake3::hash(&bytes));
        let mut urls = Vec::new();
        for part in bytes.chunks(200_000) {
            let url = created(&server, &token, part.len(), "", Some("partial")).await;
            assert_eq!(patch(&server, &token, &url, 0, part).await.status(), StatusCode::NO_CONTENT);
            urls.push(url);
        }
        let concat = format!("final;{}", urls.join(" "));
        let finals =
            (0..8).map(|_| tus(&server, Method::POST, UPLOADS, &token).header("Upload-Concat", &concat).send());
        let answers = futures_util::future::join_all(finals).await;
        let mut created_count = 0;
        for answer in answers {
            let answer = answer.unwrap();
            match answer.status() {
                StatusCode::CREATED => {
                    created_count += 1;
                    assert_eq!(answer.headers()["amber-blob-digest"].to_str().unwrap(), digest);
                }
                _ => {
                    expect_error(answer, StatusCode::BAD_REQUEST, "upload_incomplete").await;
                }
            }
        }
        assert_eq!(created_count, 1, "round {round}: the parts bound once");
        assert_eq!(blob(&server, &token, &digest).await, bytes);
    }

    // A part deleted while finals concatenate it.
    for round in 0..10u64 {
        let bytes = data(2 * 4 * MIB, 200 + round);
        let digest = format!("blake3:{}", blake3::hash(&bytes));
        let mut urls = Vec::new();
        for part in bytes.chunks(4 * MIB) {
            let url = created(&server, &token, part.len(), "", Some("partial")).await;
            assert_eq!(patch(&server, &token, &url, 0, part).await.status(), StatusCode::NO_CONTENT);
            urls.push(url);
        }
        let concat = format!("final;{}", urls.join(" "));
        let final_request = tus(&server, Method::POST, UPLOADS, &token).header("Upload-Concat", &concat).send();
        let delete = async {
            tokio::time::sleep(Duration::from_millis(round * 3)).await;
            tus(&server, Method::DELETE, &urls[1], &token).send().await.unwrap()
        };
        let (done, deleted) = tokio::join!(final_request, delete);
        let done = done.unwrap();
        match (done.status(), deleted.status()) {
            // The final won: the part was consumed or held while it was.
            (StatusCode::CREATED, StatusCode::LOCKED | StatusCode::NOT_FOUND) => {
                assert_eq!(blob(&server, &token, &digest).await, bytes);
            }
            // The DELETE won: the final is refused cleanly, nothing linked.
            (status, StatusCode::NO_CONTENT) => {
                assert!(matches!(status.as_u16(), 400 | 410), "round {round}: final answered {status}");
                let body: serde_json::Value = done.json().await.unwrap();
                assert!(["upload_incomplete", "upload_gone"].contains(&body["error"]["code"].as_str().unwrap()));
                let head = server
                    .request(Method::HEAD, &format!("/v1/repos/acme/web/blobs/{digest}"), &token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(head.status(), StatusCode::NOT_FOUND);
            }
            other => panic!("round {round}: final and DELETE answered {other:?}"),
        }
    }
}

/// The headers the attack sent that the server used to take.
async fn ambiguous_tus_requests_are_refused(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = server.token(&[("acme/web", &["push", "pull"])]).await;
    // Upload-Length: 0 with a body: which is it?
    let zero = tus(&server, Method::POST, UPLOADS, &token)
        .header("Upload-Length", "0")
        .header("Content-Type", "application/offset+octet-stream")
        .body(b"surprise".to_vec())
        .send()
        .await
        .unwrap();
    let body = expect_error(zero, StatusCode::BAD_REQUEST, "request_invalid").await;
    assert!(body["error"]["message"].as_str().unwrap().contains("Upload-Length is 0"), "{body}");
    let zero =
        tus(&server, Method::POST, UPLOADS, &token).header("Upload-Length", "0").body(b"x".to_vec()).send().await;
    expect_error(zero.unwrap(), StatusCode::BAD_REQUEST, "request_invalid").await;
    // A header given twice.
    let twice = tus(&server, Method::POST, UPLOADS, &token)
        .header("Upload-Length", "10")
        .header("Upload-Length", "20")
        .send()
        .await
        .unwrap();
    let body = expect_error(twice, StatusCode::BAD_REQUEST, "request_invalid").await;
    assert!(body["error"]["message"].as_str().unwrap().contains("more than once"), "{body}");
    let url = created(&server, &token, 10, "", None).await;
    let twice = tus(&server, Method::PATCH, &url, &token)
        .header("Upload-Offset", "0")
        .header("Upload-Offset", "5")
        .header("Content-Type", "application/offset+octet-stream")
        .body(b"0123456789".to_vec())
        .send()
        .await
        .unwrap();
    expect_error(twice, StatusCode::BAD_REQUEST, "request_invalid").await;
    assert_eq!(offset(&server, &token, &url).await, 0, "nothing of it was stored");
    // A final naming a part by another host's URL; by this server's, taken.
    let part = created(&server, &token, 3, "", Some("partial")).await;
    assert_eq!(patch(&server, &token, &part, 0, b"abc").await.status(), StatusCode::NO_CONTENT);
    for foreign in [
        format!("http://evil.example{part}"),
        format!("http://127.0.0.1:1{part}"),
        format!("ftp://{}{part}", server.addr),
    ] {
        let refused = tus(&server, Method::POST, UPLOADS, &token)
            .header("Upload-Concat", format!("final;{foreign}"))
            .send()
            .await
            .unwrap();
        expect_error(refused, StatusCode::BAD_REQUEST, "upload_incomplete").await;
    }
    let done = tus(&server, Method::POST, UPLOADS, &token)
        .header("Upload-Concat", format!("final;{}", server.url(&part)))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::CREATED);
}

on_both_backends!(finals_racing_over_the_same_parts_bind_them_once, ambiguous_tus_requests_are_refused,);

on_both_backends!(
    real_clients_upload_blobs_that_b3sum_confirms,
    parts_are_checked_on_arrival_against_their_chaining_values,
    the_protocol_rules_hold,
    two_patches_racing_on_one_upload_never_interleave,
    abandoned_uploads_are_discarded_after_their_expiry,
);

/// On S3 + PostgreSQL any replica continues an upload: one upload's bytes
/// go through three replicas in turn, the parts of another are spread over
/// two, and its final is created on a third.
#[tokio::test]
async fn an_upload_continues_through_any_replica() {
    let server = TestServer::on(Backend::S3Postgres).await;
    let (one, two) = (server.spawn_replica(), server.spawn_replica());
    let token = server.token(&[("acme/web", &["push", "pull"])]).await;
    let on = |url: String, bytes: Vec<u8>, offset: usize| {
        reqwest::Client::new()
            .patch(url)
            .bearer_auth(&token)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Offset", offset.to_string())
            .header("Content-Type", "application/offset+octet-stream")
            .body(bytes)
            .send()
    };
    let bytes = data(9 * MIB, 21);
    let digest = format!("blake3:{}", blake3::hash(&bytes));
    let url = created(&server, &token, bytes.len(), &metadata(&[("digest", digest.as_bytes())]), None).await;
    let thirds = [0, 3 * MIB, 6 * MIB, 9 * MIB];
    for (i, target) in [one.url(&url), two.url(&url), server.url(&url)].into_iter().enumerate() {
        let response = on(target, bytes[thirds[i]..thirds[i + 1]].to_vec(), thirds[i]).await.unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }
    assert_eq!(blob(&server, &token, &digest).await, bytes);

    // PATCHes of at least 5 MiB, checked as they came: joined by S3 itself.
    let bytes = data(13 * MIB, 23);
    let digest = format!("blake3:{}", blake3::hash(&bytes));
    let url = created(&server, &token, bytes.len(), &metadata(&[("digest", digest.as_bytes())]), None).await;
    for (from, to) in [(0, 6 * MIB), (6 * MIB, 12 * MIB), (12 * MIB, 13 * MIB)] {
        let response = on(one.url(&url), bytes[from..to].to_vec(), from).await.unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }
    assert_eq!(blob(&server, &token, &digest).await, bytes);

    let bytes = data(4 * MIB + 5, 22);
    let digest = format!("blake3:{}", blake3::hash(&bytes));
    let all = cvs(&bytes, MIB);
    let mut urls = Vec::new();
    for index in 0..5 {
        let meta = metadata(&[
            ("digest", digest.as_bytes()),
            ("part_size", MIB.to_string().as_bytes()),
            ("part", index.to_string().as_bytes()),
            ("cvs", &all),
        ]);
        let part = &bytes[index * MIB..((index + 1) * MIB).min(bytes.len())];
        let url = created(&server, &token, part.len(), &meta, Some("partial")).await;
        let target = if index % 2 == 0 { one.url(&url) } else { two.url(&url) };
        assert_eq!(on(target, part.to_vec(), 0).await.unwrap().status(), StatusCode::NO_CONTENT);
        urls.push(url);
    }
    let done = reqwest::Client::new()
        .post(server.url(UPLOADS))
        .bearer_auth(&token)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Concat", format!("final;{}", urls.join(" ")))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::CREATED);
    assert_eq!(blob(&server, &token, &digest).await, bytes);
}

/// What one push token can make the server keep: at most 1 000 uploads (then
/// `429`, nothing stored), metadata of at most 64 KiB each.
#[tokio::test]
async fn one_token_holds_a_bounded_number_of_uploads() {
    let server = TestServer::start().await;
    let token = server.token(&[("acme/web", &["push"])]).await;
    let big = format!("note {}", b64(&vec![b'x'; 48 * 1024]));
    expect_error(create(&server, &token, 10, &big, None).await, StatusCode::BAD_REQUEST, "request_invalid").await;
    for _ in 0..amber_server::uploads::MAX_PER_TOKEN {
        created(&server, &token, 10, "", None).await;
    }
    let refused = create(&server, &token, 10, "", None).await;
    assert!(refused.headers().contains_key("retry-after"));
    expect_error(refused, StatusCode::TOO_MANY_REQUESTS, "too_many_requests").await;
    // Another token is not affected.
    let other = server.token(&[("acme/web", &["push"])]).await;
    created(&server, &other, 10, "", None).await;
}
