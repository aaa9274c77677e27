//! Several `amberd` replicas on one S3 bucket and one PostgreSQL database,
//! behaving as one store.

use std::time::Duration;

use amber_server::server::KEY_REFRESH;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::backends::Backend;
use crate::harness::{TestServer, data, expect_error, independent_b3_bytes, verify_with_python};

#[tokio::test]
async fn two_replicas_serve_one_store() {
    let server = TestServer::on(Backend::S3Postgres).await;
    let other = server.spawn_replica();
    let token = server.token(&[("acme/*", &["push", "pull"])]).await;

    // A blob pushed through one is read, whole and by range, through the other.
    let bytes = data(20 << 20, 1);
    let digest = independent_b3_bytes(&bytes);
    let path = format!("/v1/repos/acme/web/blobs/{digest}");
    let put = server.request(Method::PUT, &path, &token).body(bytes.clone()).send().await.unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);
    let whole = server.http.get(other.url(&path)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(whole.status(), StatusCode::OK);
    assert!(whole.bytes().await.unwrap() == bytes);
    let range =
        server.http.get(other.url(&path)).bearer_auth(&token).header("range", "bytes=1000-1999").send().await.unwrap();
    assert_eq!(range.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(range.bytes().await.unwrap().as_ref(), &bytes[1000..2000]);

    // Both publish the same signing keys.
    let keys_a: Value = server.http.get(server.url("/v1/keys")).send().await.unwrap().json().await.unwrap();
    let keys_b: Value = server.http.get(other.url("/v1/keys")).send().await.unwrap().json().await.unwrap();
    assert_eq!(keys_a, keys_b);
    // One manifest key and one log key, the same on both.
    let purposes: Vec<&str> =
        keys_a["keys"].as_array().unwrap().iter().map(|k| k["purpose"].as_str().unwrap()).collect();
    assert_eq!(purposes, ["manifest", "log"]);

    // 16 racing binds of one tag, split across both: exactly one winner.
    let files = json!({"files": [{"path": "app", "digest": digest, "size": bytes.len()}]});
    let binds = (0..16).map(|i| {
        let base = if i % 2 == 0 { server.url("") } else { other.url("") };
        let mut body = files.clone();
        body["annotations"] = json!({"attempt": i.to_string()});
        server.http.put(format!("{base}/v1/repos/acme/web/tags/race")).bearer_auth(&token).json(&body).send()
    });
    let mut winners = Vec::new();
    let mut conflicts = 0;
    for response in futures_util::future::join_all(binds).await {
        let response = response.unwrap();
        match response.status() {
            StatusCode::CREATED => {
                winners.push(response.headers()["amber-manifest-digest"].to_str().unwrap().to_owned())
            }
            StatusCode::CONFLICT => conflicts += 1,
            other => panic!("unexpected {other}: {}", response.text().await.unwrap()),
        }
    }
    assert_eq!((winners.len(), conflicts), (1, 15));
    for base in [server.url(""), other.url("")] {
        let bound =
            server.http.get(format!("{base}/v1/repos/acme/web/tags/race")).bearer_auth(&token).send().await.unwrap();
        assert_eq!(bound.headers()["amber-manifest-digest"].to_str().unwrap(), winners[0]);
    }

    // A token revoked through one is refused by the other on the next request.
    let victim = server.token(&[("acme/*", &["pull"])]).await;
    let me: Value =
        server.http.get(other.url("/v1/whoami")).bearer_auth(&victim).send().await.unwrap().json().await.unwrap();
    let revoked = server
        .request(Method::DELETE, &format!("/v1/tokens/{}", me["id"].as_str().unwrap()), &server.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    let refused = server.http.get(other.url("/v1/whoami")).bearer_auth(&victim).send().await.unwrap();
    expect_error(refused, StatusCode::UNAUTHORIZED, "unauthorized").await;

    // A key rotated while both run: `GET /v1/keys` lists it at once, and
    // each replica signs with it from its next key refresh on, without a
    // restart.
    let rotated = server.amberd(&["keys", "rotate"]).trim().to_owned();
    let keys_a: Value = server.http.get(server.url("/v1/keys")).send().await.unwrap().json().await.unwrap();
    let active: Vec<&str> = keys_a["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["status"] == "active" && k["purpose"] == "manifest")
        .map(|k| k["keyid"].as_str().unwrap())
        .collect();
    assert_eq!(active, [rotated.as_str()]);
    let deadline = std::time::Instant::now() + 3 * KEY_REFRESH;
    let mut attempt = 0;
    let signed = loop {
        attempt += 1;
        let tag = format!("/v1/repos/acme/web/tags/after-rotation-{attempt}");
        let signed: Value = server
            .http
            .put(other.url(&tag))
            .bearer_auth(&token)
            .json(&files)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if signed["signatures"][0]["keyid"] == rotated.as_str() {
            break signed;
        }
        assert!(std::time::Instant::now() < deadline, "the replica still signs with the old key");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let keys_b: Value = server.http.get(other.url("/v1/keys")).send().await.unwrap().json().await.unwrap();
    assert_eq!(keys_a, keys_b);
    verify_with_python(&signed, &keys_a).expect("a replica's manifest verifies with the keys the other lists");

    // Both append to one audit chain, which verifies.
    let verified = server.amber(&server.admin, &["audit", "verify"]).await;
    assert_eq!(verified.code, 0, "{}", verified.stderr);
}

#[tokio::test]
async fn a_digest_mismatch_on_s3_leaves_no_object_and_no_open_upload() {
    let server = TestServer::on(Backend::S3Postgres).await;
    let token = server.token(&[("acme/*", &["push", "pull"])]).await;
    // One small (single PutObject) and one large (multipart) body.
    for len in [1000, 20 << 20] {
        let bytes = data(len, 2);
        let digest = independent_b3_bytes(&bytes);
        let mut wrong = bytes.clone();
        wrong[len - 1] ^= 1;
        let response = server
            .request(Method::PUT, &format!("/v1/repos/acme/web/blobs/{digest}"), &token)
            .body(wrong)
            .send()
            .await
            .unwrap();
        expect_error(response, StatusCode::BAD_REQUEST, "digest_mismatch").await;
        assert!(!server.stored(&digest).await);
        server.assert_nothing_staged().await;
    }
    let services = server.services.as_ref().unwrap();
    assert_eq!(services.objects("amber/blobs/").await, Vec::<String>::new());
}

#[tokio::test]
async fn kill_9_of_a_replica_mid_upload_leaves_the_blob_absent_or_whole() {
    let server = TestServer::on(Backend::S3Postgres).await;
    let mut doomed = server.spawn_replica();
    let token = server.token(&[("acme/*", &["push", "pull"])]).await;
    let bytes = data(100 << 20, 3);
    let digest = independent_b3_bytes(&bytes);
    let path = format!("/v1/repos/acme/web/blobs/{digest}");

    // Trickle the body so the kill lands mid-upload.
    let pieces: Vec<Vec<u8>> = bytes.chunks(1 << 20).map(<[u8]>::to_vec).collect();
    let body = futures_util::stream::unfold(pieces.into_iter(), |mut it| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        it.next().map(|piece| (Ok::<_, std::io::Error>(piece), it))
    });
    let upload = tokio::spawn(
        server.http.put(doomed.url(&path)).bearer_auth(&token).body(reqwest::Body::wrap_stream(body)).send(),
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    doomed.kill9();
    assert!(upload.await.unwrap().is_err(), "the upload should have been cut off");

    // The other replica keeps serving, and the blob is absent (never partial).
    assert_eq!(server.http.get(server.url("/readyz")).send().await.unwrap().status(), StatusCode::OK);
    let head = server.request(Method::HEAD, &path, &token).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::NOT_FOUND);
    assert!(!server.stored(&digest).await, "a partial blob became visible in S3");

    // A retry through the survivor completes it whole.
    let put = server.request(Method::PUT, &path, &token).body(bytes.clone()).send().await.unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);
    let got = server.request(Method::GET, &path, &token).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(independent_b3_bytes(&got), digest);
}

#[tokio::test]
async fn the_audit_log_in_postgres_detects_tampering() {
    let mut server = TestServer::on(Backend::S3Postgres).await;
    let token = server.token(&[("acme/*", &["push", "pull"])]).await;
    let bytes = data(100, 4);
    let digest = independent_b3_bytes(&bytes);
    server
        .request(Method::PUT, &format!("/v1/repos/acme/web/blobs/{digest}"), &token)
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(server.amber(&server.admin, &["audit", "verify"]).await.code, 0);
    assert!(server.terminate());
    let pg = &server.services.as_ref().unwrap().pg;
    // History is protected by triggers; an attacker with database access can lift them.
    let refused = std::process::Command::new("psql")
        .args([&pg.url, "-c", "DELETE FROM audit_log WHERE seq = 2"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&refused.stderr).contains("append-only"));
    pg.sql("ALTER TABLE audit_log DISABLE TRIGGER audit_log_immutable; UPDATE audit_log SET entry = replace(entry, '\"size\":100', '\"size\":101') WHERE seq = 3");
    server.restart();
    let run = server.amber(&server.admin, &["audit", "verify"]).await;
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(run.stderr.contains("entry 3"), "{}", run.stderr);
}
