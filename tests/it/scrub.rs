//! Scrub over HTTP, on both backends: stored files flipped, truncated and
//! deleted behind the server's back are quarantined within one pass, never
//! served (whole or by range), reported absent so that clients re-send, and
//! healed by that upload.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::backends::Backend;
use crate::harness::{TestServer, data, expect_error, independent_b3_bytes};
use crate::on_both_backends;

async fn put(server: &TestServer, token: &str, bytes: &[u8]) -> (String, StatusCode) {
    let digest = independent_b3_bytes(bytes);
    let response = server
        .request(Method::PUT, &format!("/v1/repos/acme/web/blobs/{digest}"), token)
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    (digest, response.status())
}

async fn scrub(server: &TestServer) -> Value {
    let response = server.request(Method::GET, "/v1/scrub", &server.admin).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn rot_is_quarantined_never_served_and_healed_by_upload(backend: Backend) {
    // Passes back to back, so that rot is found within the test.
    let server =
        TestServer::builder().backend(backend).arg("--scrub-rate=100000000").arg("--scrub-interval=0").start().await;
    let token = server.token(&[("acme/web", &["push", "pull"])]).await;
    let blobs: Vec<Vec<u8>> = vec![data(700_000, 1), data(5000, 2), data(6000, 3), data(7000, 4)];
    let mut digests = Vec::new();
    for bytes in &blobs {
        let (digest, status) = put(&server, &token, bytes).await;
        assert_eq!(status, StatusCode::CREATED);
        digests.push(digest);
    }
    let (flipped, truncated, deleted, intact) = (&digests[0], &digests[1], &digests[2], &digests[3]);
    server
        .tamper(flipped, |mut b| {
            b[600_000] ^= 1;
            Some(b)
        })
        .await;
    server
        .tamper(truncated, |mut b| {
            b.truncate(100);
            Some(b)
        })
        .await;
    server.tamper(deleted, |_| None).await;

    // Within one pass (the first starts at once, the next 5 s after). A
    // pass records each corrupt blob as it finds it and its progress (the
    // intact blob verified) after the page: wait for both.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status = scrub(&server).await;
        if status["corrupt"].as_array().unwrap().len() == 3 && status["verified_blobs"].as_u64().unwrap() >= 1 {
            break status;
        }
        assert!(Instant::now() < deadline, "not all quarantined: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let reasons: std::collections::BTreeMap<String, String> = status["corrupt"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["digest"].as_str().unwrap().to_owned(), c["reason"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(reasons[flipped], "mismatch");
    assert_eq!(reasons[truncated], "mismatch");
    assert_eq!(reasons[deleted], "missing");
    assert!(status["verified_blobs"].as_u64().unwrap() >= 1, "{status}");

    // Never served, whole or by a range that avoids the flipped byte; absent to HEAD and missing.
    let blob = |d: &str| format!("/v1/repos/acme/web/blobs/{d}");
    for digest in [flipped, truncated, deleted] {
        let get = server.request(Method::GET, &blob(digest), &token).send().await.unwrap();
        expect_error(get, StatusCode::INTERNAL_SERVER_ERROR, "blob_corrupt").await;
        let range =
            server.request(Method::GET, &blob(digest), &token).header("range", "bytes=0-9").send().await.unwrap();
        expect_error(range, StatusCode::INTERNAL_SERVER_ERROR, "blob_corrupt").await;
        let head = server.request(Method::HEAD, &blob(digest), &token).send().await.unwrap();
        assert_eq!(head.status(), StatusCode::NOT_FOUND);
    }
    let asked: Vec<Value> = digests.iter().map(|d| json!(d)).collect();
    let missing = json!({"missing": server.missing(&token, "acme/web", &asked).await});
    let mut want = vec![flipped.clone(), truncated.clone(), deleted.clone()];
    want.sort();
    let mut got: Vec<String> =
        missing["missing"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().to_owned()).collect();
    got.sort();
    assert_eq!(got, want);
    let get = server.request(Method::GET, &blob(intact), &token).send().await.unwrap();
    assert_eq!(get.status(), StatusCode::OK);
    let metrics = server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("amber_blobs_corrupt 3"), "{metrics}");
    let storage: Value =
        server.request(Method::GET, "/v1/storage", &server.admin).send().await.unwrap().json().await.unwrap();
    assert_eq!(storage["quarantined"], 3, "{storage}");

    // A manifest naming quarantined bytes is refused like one naming missing
    // ones, each listed, so that the client sends them again.
    let manifest = json!({"files": [
        {"path": "a.bin", "digest": flipped, "size": blobs[0].len()},
        {"path": "d.bin", "digest": intact, "size": blobs[3].len()},
    ]});
    let tag = |t: &str| format!("/v1/repos/acme/web/tags/{t}");
    let refused = server.request(Method::PUT, &tag("q1"), &token).json(&manifest).send().await.unwrap();
    let body = expect_error(refused, StatusCode::BAD_REQUEST, "manifest_blob_unknown").await;
    let listed = body["error"]["detail"]["missing"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{body}");
    assert_eq!(listed[0]["digest"], json!(flipped));
    assert_eq!(listed[0]["quarantined"], json!(true));

    // Healing: the client sends them again.
    for bytes in &blobs[..3] {
        let (_, status) = put(&server, &token, bytes).await;
        assert!(status.is_success(), "{status}");
    }
    for (digest, bytes) in digests.iter().zip(&blobs) {
        let get = server.request(Method::GET, &blob(digest), &token).send().await.unwrap();
        assert_eq!(get.status(), StatusCode::OK);
        assert_eq!(get.bytes().await.unwrap().as_ref(), bytes.as_slice());
        let head = server.request(Method::HEAD, &blob(digest), &token).send().await.unwrap();
        assert_eq!(head.status(), StatusCode::OK);
    }
    assert_eq!(scrub(&server).await["corrupt"], json!([]));
    let bound = server.request(Method::PUT, &tag("q1"), &token).json(&manifest).send().await.unwrap();
    assert_eq!(bound.status(), StatusCode::CREATED, "healed, the manifest binds");
    let kinds: Vec<String> =
        server.audit_events().await.iter().map(|e| e["kind"].as_str().unwrap().to_owned()).collect();
    assert_eq!(kinds.iter().filter(|k| *k == "blob_corrupt").count(), 3);
    assert_eq!(kinds.iter().filter(|k| *k == "blob_repaired").count(), 3);
    let metrics = server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("amber_blobs_corrupt 0"), "{metrics}");
}

on_both_backends!(rot_is_quarantined_never_served_and_healed_by_upload);

/// A store read through in a moment is not read again until
/// `--scrub-interval` has passed (each pass is a run: back to back they would
/// crowd every other run out of `GET /v1/runs`); with 0 they go back to back.
#[tokio::test]
async fn a_full_pass_waits_out_the_scrub_interval() {
    let (resting, eager) = tokio::join!(
        TestServer::builder().arg("--scrub-interval=3600").start(),
        TestServer::builder().arg("--scrub-interval=0").start()
    );
    tokio::time::sleep(Duration::from_secs(12)).await;
    let passes = |server: &TestServer| {
        let request = server.request(Method::GET, "/v1/runs?kind=scrub", &server.admin).send();
        async move { request.await.unwrap().json::<Value>().await.unwrap()["runs"].as_array().unwrap().len() }
    };
    assert_eq!(passes(&resting).await, 1, "one pass, then rest");
    assert!(passes(&eager).await >= 2, "back to back, a pause of 5 s between");
}
