//! Blob upload and download, as a CI job and a deploy tool use them.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::backends::Backend;
use crate::harness::{TestServer, data, expect_error, independent_b3_bytes};
use crate::on_both_backends;

const REPO: &str = "/v1/repos/acme/web";

async fn small_blobs_round_trip_and_match_an_independent_blake3(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = server.token(&[("acme/*", &["push", "pull"])]).await;
    for (i, len) in [0usize, 1, 1 << 20].into_iter().enumerate() {
        let bytes = data(len, i as u64);
        let digest = independent_b3_bytes(&bytes);
        let path = format!("{REPO}/blobs/{digest}");

        let put = server.request(Method::PUT, &path, &token).body(bytes.clone()).send().await.unwrap();
        assert_eq!(put.status(), StatusCode::CREATED);
        assert_eq!(put.headers()["location"], path.as_str());
        let info: Value = put.json().await.unwrap();
        assert_eq!(info["digest"], digest.as_str());
        assert_eq!(info["size"], len as u64);

        // Idempotent: the same upload again is 200, never an error.
        let again = server.request(Method::PUT, &path, &token).body(bytes.clone()).send().await.unwrap();
        assert_eq!(again.status(), StatusCode::OK);

        let get = server.request(Method::GET, &path, &token).send().await.unwrap();
        assert_eq!(get.status(), StatusCode::OK);
        let headers = get.headers().clone();
        assert_eq!(headers["etag"], format!("\"{digest}\"").as_str());
        assert_eq!(headers["accept-ranges"], "bytes");
        assert_eq!(headers["cache-control"], "private, max-age=31536000, immutable");
        assert_eq!(headers["content-length"], len.to_string().as_str());
        let body = get.bytes().await.unwrap();
        assert_eq!(independent_b3_bytes(&body), digest);
        assert!(body == bytes);

        let head = server.request(Method::HEAD, &path, &token).send().await.unwrap();
        assert_eq!(head.status(), StatusCode::OK);
        assert_eq!(head.headers()["content-length"], len.to_string().as_str());

        // Conditional GET: the ETag never changes, so a cache can revalidate for free.
        let cached = server
            .request(Method::GET, &path, &token)
            .header("if-none-match", format!("\"{digest}\""))
            .send()
            .await
            .unwrap();
        assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
    }
}

async fn post_computes_the_digest_b3sum_computes(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = server.token(&[("acme/web", &["push", "pull"])]).await;
    let bytes = data(300_000, 7);
    let response =
        server.request(Method::POST, &format!("{REPO}/blobs"), &token).body(bytes.clone()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let info: Value = response.json().await.unwrap();
    assert_eq!(info["digest"], independent_b3_bytes(&bytes).as_str());
    let again = server.request(Method::POST, &format!("{REPO}/blobs"), &token).body(bytes).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
}

async fn malformed_digests_are_refused_and_leave_nothing(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = server.token(&[("acme/*", &["push", "pull"])]).await;
    let bytes = data(1000, 1);
    let good = independent_b3_bytes(&bytes);
    let hex = good.trim_start_matches("blake3:");
    for bad in [
        format!("blake3:{}", hex.to_uppercase()),
        format!("blake3:{}", &hex[..63]),
        format!("sha256:{hex}"),
        hex.to_owned(),
        format!("BLAKE3:{hex}"),
    ] {
        let response = server
            .request(Method::PUT, &format!("{REPO}/blobs/{bad}"), &token)
            .body(bytes.clone())
            .send()
            .await
            .unwrap();
        expect_error(response, StatusCode::BAD_REQUEST, "digest_invalid").await;
        let response = server.request(Method::GET, &format!("{REPO}/blobs/{bad}"), &token).send().await.unwrap();
        expect_error(response, StatusCode::BAD_REQUEST, "digest_invalid").await;
    }
    let head = server.request(Method::HEAD, &format!("{REPO}/blobs/{good}"), &token).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::NOT_FOUND);
    server.assert_nothing_staged().await;
}

async fn digest_mismatch_stores_nothing(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = server.token(&[("acme/*", &["push", "pull"])]).await;
    let bytes = data(200_000, 2);
    let digest = independent_b3_bytes(&bytes);
    let path = format!("{REPO}/blobs/{digest}");
    let mut flipped = bytes.clone();
    flipped[12_345] ^= 0x10;
    let mut extra = bytes.clone();
    extra.push(0);
    for body in [flipped, bytes[..bytes.len() - 1].to_vec(), extra, Vec::new()] {
        let response = server.request(Method::PUT, &path, &token).body(body).send().await.unwrap();
        let error = expect_error(response, StatusCode::BAD_REQUEST, "digest_mismatch").await;
        assert!(error["error"]["message"].as_str().unwrap().contains(&digest));
        let head = server.request(Method::HEAD, &path, &token).send().await.unwrap();
        assert_eq!(head.status(), StatusCode::NOT_FOUND);
        assert!(!server.stored(&digest).await);
        server.assert_nothing_staged().await;
    }
}

async fn bodies_over_the_limit_are_refused_whether_announced_or_streamed(backend: Backend) {
    let server = TestServer::builder().backend(backend).arg("--max-blob-size").arg("65536").start().await;
    let token = server.token(&[("acme/*", &["push", "pull"])]).await;
    let at_limit = data(65536, 3);
    let ok = server.request(Method::POST, &format!("{REPO}/blobs"), &token).body(at_limit).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::CREATED);

    let over = data(65537, 4);
    let digest = independent_b3_bytes(&over);
    let announced =
        server.request(Method::PUT, &format!("{REPO}/blobs/{digest}"), &token).body(over.clone()).send().await.unwrap();
    expect_error(announced, StatusCode::PAYLOAD_TOO_LARGE, "blob_too_large").await;

    // Chunked, so the server only learns the size while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = over.chunks(8192).map(|c| Ok(c.to_vec())).collect();
    let streamed = server
        .request(Method::PUT, &format!("{REPO}/blobs/{digest}"), &token)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    expect_error(streamed, StatusCode::PAYLOAD_TOO_LARGE, "blob_too_large").await;
    assert!(!server.stored(&digest).await);
    server.assert_nothing_staged().await;
}

async fn hostile_repository_names_are_refused(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = server.token(&[("acme/*", &["push", "pull"])]).await;
    let digest = independent_b3_bytes(b"x");
    let long = "a".repeat(65);
    for repo in [
        "acme/..",
        "acme/%2e%2e",
        "Acme/web",
        "acme/we%00b",
        &format!("acme/{long}"),
        "acme/-web",
        "-acme/web",
        "acme/web%2Fx",
        "acme/a..b",
    ] {
        let (status, body) =
            server.raw(&format!("GET /v1/repos/{repo}/blobs/{digest} HTTP/1.1\r\nAuthorization: Bearer {token}"));
        assert_eq!(status, 400, "{repo}: {body}");
        assert!(body.contains("\"name_invalid\""), "{repo}: {body}");
    }
    // `..` as a whole segment must not climb out of the repository either.
    let (status, _) = server.raw(&format!(
        "PUT /v1/repos/acme/../blobs/{digest} HTTP/1.1\r\nAuthorization: Bearer {token}\r\nContent-Length: 0"
    ));
    assert!(status == 400 || status == 404, "{status}");
}

async fn ranges_are_served_and_unsatisfiable_ones_refused(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = server.token(&[("acme/*", &["push", "pull"])]).await;
    let bytes = data(100, 5);
    let digest = independent_b3_bytes(&bytes);
    let path = format!("{REPO}/blobs/{digest}");
    server.request(Method::PUT, &path, &token).body(bytes.clone()).send().await.unwrap();
    for (range, want, content_range) in [
        ("bytes=0-0", &bytes[..1], "bytes 0-0/100"),
        ("bytes=10-19", &bytes[10..20], "bytes 10-19/100"),
        ("bytes=90-", &bytes[90..], "bytes 90-99/100"),
        ("bytes=-5", &bytes[95..], "bytes 95-99/100"),
        ("bytes=50-500", &bytes[50..], "bytes 50-99/100"),
    ] {
        let response = server.request(Method::GET, &path, &token).header("range", range).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(response.headers()["content-range"], content_range);
        assert_eq!(response.bytes().await.unwrap().as_ref(), want, "{range}");
    }
    for range in ["bytes=100-200", "bytes=500-", "bytes=20-10", "bytes=0-1,5-6", "pages=1-2", "bytes=-0"] {
        let response = server.request(Method::GET, &path, &token).header("range", range).send().await.unwrap();
        assert_eq!(
            response.headers().get("content-range").map(|v| v.to_str().unwrap()),
            Some("bytes */100"),
            "{range}"
        );
        expect_error(response, StatusCode::RANGE_NOT_SATISFIABLE, "range_invalid").await;
    }
}

async fn visibility_is_per_repository(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = server.token(&[("acme/a", &["push", "pull"]), ("acme/b", &["push", "pull"])]).await;
    let bytes = data(5000, 6);
    let digest = independent_b3_bytes(&bytes);
    let put = server
        .request(Method::PUT, &format!("/v1/repos/acme/a/blobs/{digest}"), &token)
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);

    let in_b = format!("/v1/repos/acme/b/blobs/{digest}");
    let head = server.request(Method::HEAD, &in_b, &token).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::NOT_FOUND);
    expect_error(
        server.request(Method::GET, &in_b, &token).send().await.unwrap(),
        StatusCode::NOT_FOUND,
        "blob_unknown",
    )
    .await;
    let missing: Value = server
        .request(Method::POST, "/v1/repos/acme/b/blobs/missing", &token)
        .json(&serde_json::json!({"digests": [digest, digest]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(missing["missing"], serde_json::json!([digest]));

    // Pushing it to b makes it visible there (201: new to this repository).
    let put = server.request(Method::PUT, &in_b, &token).body(bytes).send().await.unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);
    assert_eq!(server.request(Method::HEAD, &in_b, &token).send().await.unwrap().status(), StatusCode::OK);
    let missing: Value = server
        .request(Method::POST, "/v1/repos/acme/b/blobs/missing", &token)
        .json(&serde_json::json!({"digests": [digest]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(missing["missing"], serde_json::json!([]));

    let bad = server
        .request(Method::POST, "/v1/repos/acme/b/blobs/missing", &token)
        .json(&serde_json::json!({"digests": ["nope"]}))
        .send()
        .await
        .unwrap();
    expect_error(bad, StatusCode::BAD_REQUEST, "request_invalid").await;
}

async fn concurrent_uploads_of_one_blob_store_one_copy(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = server.token(&[("acme/*", &["push", "pull"])]).await;
    // Smaller on S3: the S3-protocol server under test keeps everything in memory.
    let size = if backend == Backend::Embedded { 64 << 20 } else { 16 << 20 };
    let bytes = bytes::Bytes::from(data(size, 8));
    let digest = independent_b3_bytes(&bytes);
    let path = format!("{REPO}/blobs/{digest}");
    let uploads = (0..32).map(|_| server.request(Method::PUT, &path, &token).body(bytes.clone()).send());
    let statuses: Vec<StatusCode> =
        futures_util::future::join_all(uploads).await.into_iter().map(|r| r.unwrap().status()).collect();
    assert!(statuses.iter().all(|s| *s == StatusCode::CREATED || *s == StatusCode::OK), "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::CREATED).count(), 1, "{statuses:?}");

    match &server.services {
        None => {
            let shard = server.blob_file(&digest).parent().unwrap().to_owned();
            assert_eq!(std::fs::read_dir(shard).unwrap().count(), 1, "one stored copy");
        }
        Some(services) => assert_eq!(services.objects("amber/blobs/").await.len(), 1, "one stored copy"),
    }
    server.assert_nothing_staged().await;
    let body = server.request(Method::GET, &path, &token).send().await.unwrap().bytes().await.unwrap();
    assert!(body == bytes);
}

async fn a_blob_corrupted_at_rest_is_never_served_whole(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = server.token(&[("acme/*", &["push", "pull"])]).await;
    for len in [1000usize, 3 << 20] {
        let bytes = data(len, 9);
        let digest = independent_b3_bytes(&bytes);
        let path = format!("{REPO}/blobs/{digest}");
        server.request(Method::PUT, &path, &token).body(bytes.clone()).send().await.unwrap();
        server.corrupt(&digest).await;
        let response = server.request(Method::GET, &path, &token).send().await.unwrap();
        if len == 1000 {
            // Small enough to verify before the headers: a clean error.
            expect_error(response, StatusCode::INTERNAL_SERVER_ERROR, "blob_corrupt").await;
        } else {
            // Streamed: the last chunk is withheld, so the body never completes.
            assert_eq!(response.status(), StatusCode::OK);
            assert!(response.bytes().await.is_err(), "a corrupt blob was served whole");
        }
    }
    server.logs_with("does not hash to its digest").await;
}

on_both_backends!(
    bodies_over_the_limit_are_refused_whether_announced_or_streamed,
    small_blobs_round_trip_and_match_an_independent_blake3,
    post_computes_the_digest_b3sum_computes,
    malformed_digests_are_refused_and_leave_nothing,
    digest_mismatch_stores_nothing,
    hostile_repository_names_are_refused,
    ranges_are_served_and_unsatisfiable_ones_refused,
    visibility_is_per_repository,
    concurrent_uploads_of_one_blob_store_one_copy,
    a_blob_corrupted_at_rest_is_never_served_whole,
);

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let server = TestServer::start().await;
    let token = server.token(&[("acme/*", &["push", "pull"])]).await;
    let bytes = data(1234, 11);
    let digest = independent_b3_bytes(&bytes);
    let path = format!("{REPO}/blobs/{digest}");
    server.request(Method::PUT, &path, &token).body(bytes).send().await.unwrap();
    server
        .request(Method::GET, &format!("{REPO}/blobs/{}", independent_b3_bytes(b"absent")), &token)
        .send()
        .await
        .unwrap();
    let response = server.http.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = response.text().await.unwrap();
    let route = "/v1/repos/{owner}/{name}/blobs/{digest}";
    assert!(
        text.contains(&format!("amber_http_requests_total{{method=\"PUT\",route=\"{route}\",status=\"201\"}} 1")),
        "{text}"
    );
    assert!(
        text.contains(&format!("amber_http_requests_total{{method=\"GET\",route=\"{route}\",status=\"404\"}} 1")),
        "{text}"
    );
    assert!(
        text.contains("amber_blobs_stored_total 1") && text.contains("amber_blob_bytes_stored_total 1234"),
        "{text}"
    );
    assert!(!text.contains(&token) && !text.contains(&digest), "labels are route templates, never paths or secrets");
}

#[tokio::test]
async fn metrics_can_be_served_on_an_address_of_their_own() {
    let server = TestServer::builder().arg("--metrics-listen").arg("127.0.0.1:0").start().await;
    let logs = server.logs_with("amberd metrics listening").await;
    let addr = logs
        .split_once("amberd metrics listening addr=")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .expect("the metrics address is logged");
    let token = server.token(&[("acme/*", &["push", "pull"])]).await;
    let bytes = data(100, 12);
    let put =
        server.request(Method::PUT, &format!("{REPO}/blobs/{}", independent_b3_bytes(&bytes)), &token).body(bytes);
    assert_eq!(put.send().await.unwrap().status(), StatusCode::CREATED);

    let metrics = server.http.get(format!("http://{addr}/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    assert!(metrics.text().await.unwrap().contains("amber_blobs_stored_total 1"));
    // Not on the API's address, and nothing but the metrics on theirs.
    expect_error(server.http.get(server.url("/metrics")).send().await.unwrap(), StatusCode::NOT_FOUND, "not_found")
        .await;
    let api_on_metrics = server.http.get(format!("http://{addr}/v1/keys")).send().await.unwrap();
    expect_error(api_on_metrics, StatusCode::NOT_FOUND, "not_found").await;
}
