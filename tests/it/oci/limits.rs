//! The hardening limits hold on `/v2/` as on `/v1/`: sizes refused before
//! a byte is read, a stalled body cut by the body idle timeout with what was
//! durable kept, a bounded number of sessions per token, manifests bounded.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};

use super::protocol::sha256;
use crate::harness::{TestServer, data};

#[tokio::test]
async fn the_limits_hold_on_v2() {
    let server =
        TestServer::builder().arg("--max-blob-size").arg("1048576").arg("--body-idle-timeout").arg("2").start().await;
    let token = server.token(&[("acme/*", &["pull", "push"])]).await;
    let code = |body: serde_json::Value| body["errors"][0]["code"].as_str().unwrap_or("").to_owned();

    // Announced over the limit: refused before a byte is read.
    let big = data((1 << 20) + 1, 1);
    // (A client of its own: the refused connection is closed, not reused.)
    let once = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let refused = once
        .post(server.url(&format!("/v2/acme/web/blobs/uploads/?digest={}", sha256(&big))))
        .bearer_auth(&token)
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(code(refused.json().await.unwrap()), "SIZE_INVALID");
    // A session fed past the limit in chunks: refused, nothing past it kept.
    let start = server.request(Method::POST, "/v2/acme/web/blobs/uploads/", &token).send().await.unwrap();
    let location = start.headers()["location"].to_str().unwrap().to_owned();
    let first = server.request(Method::PATCH, &location, &token).body(big[..1 << 20].to_vec()).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let over = once.patch(server.url(&location)).bearer_auth(&token).body(vec![0u8; 10]).send().await.unwrap();
    assert_eq!(over.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let status = server.request(Method::GET, &location, &token).send().await.unwrap();
    assert_eq!(status.headers()["range"], format!("0-{}", (1 << 20) - 1).as_str());

    // A manifest over 4 MiB: refused.
    let huge = vec![b' '; (4 << 20) + 1];
    let manifest = once
        .put(server.url("/v2/acme/web/manifests/big"))
        .bearer_auth(&token)
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(manifest.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // A PATCH whose body stalls is cut after the body idle timeout; the
    // bytes that arrived before are durable and the session resumes.
    let start = server.request(Method::POST, "/v2/acme/web/blobs/uploads/", &token).send().await.unwrap();
    let location = start.headers()["location"].to_str().unwrap().to_owned();
    let addr = server.url("").trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\nContent-Length: 200000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&data(100_000, 2)).unwrap();
    let began = Instant::now();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let elapsed = began.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(elapsed < Duration::from_secs(10), "cut after {elapsed:?}");
    let status = server.request(Method::GET, &location, &token).send().await.unwrap();
    let range = status.headers()["range"].to_str().unwrap().to_owned();
    let kept: usize = range.trim_start_matches("0-").parse::<usize>().unwrap() + 1;
    assert!(kept <= 100_000, "{range}");

    // At most 1000 sessions holding bytes a token; the next is 429
    // TOOMANYREQUESTS. (A session stores nothing until its first bytes.)
    let mut refused = None;
    for _ in 0..1100 {
        let start = server.request(Method::POST, "/v2/acme/web/blobs/uploads/", &token).send().await.unwrap();
        assert_eq!(start.status(), StatusCode::ACCEPTED);
        let location = start.headers()["location"].to_str().unwrap().to_owned();
        let response = server.request(Method::PATCH, &location, &token).body(vec![1u8]).send().await.unwrap();
        if response.status() != StatusCode::ACCEPTED {
            refused = Some(response);
            break;
        }
    }
    let refused = refused.expect("a bounded number of sessions");
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(code(refused.json().await.unwrap()), "TOOMANYREQUESTS");
}

/// No oracle by timing: a `HEAD` through `/v2/` of a blob another
/// repository holds takes as long as one of a digest nobody holds (both
/// `404`), even after the caller asked before (what it saw is remembered
/// only for what its own repository holds).
#[tokio::test]
async fn a_head_takes_as_long_whether_another_repository_holds_the_blob_or_not() {
    let server = TestServer::start().await;
    let other = server.token(&[("acme/other", &["pull", "push"])]).await;
    let token = server.token(&[("acme/web", &["pull", "push"])]).await;
    let mut stored = Vec::new();
    for i in 0..200 {
        stored.push(super::protocol::push_blob(&server, &other, "acme/other", &data(512, 1000 + i)).await);
    }
    let client = reqwest::Client::new();
    let head = |digest: String| {
        let (client, token) = (client.clone(), token.clone());
        let url = server.url(&format!("/v2/acme/web/blobs/{digest}"));
        async move {
            let started = Instant::now();
            let response = client.head(url).bearer_auth(token).send().await.unwrap();
            let elapsed = started.elapsed();
            assert_eq!(response.status(), StatusCode::NOT_FOUND);
            elapsed
        }
    };
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    // The machine is shared and noisy: a sitting whose medians differ is
    // measured again, up to three times.
    let mut last = (Duration::ZERO, Duration::ZERO);
    for _ in 0..3 {
        let (mut known, mut unknown) = (Vec::new(), Vec::new());
        for (i, digest) in stored.iter().enumerate() {
            // Each asked twice: a second ask must not be faster for a held blob.
            for _ in 0..2 {
                let a = head(digest.clone()).await;
                let b = head(sha256(&rand::random::<[u8; 16]>())).await;
                if i >= 20 {
                    known.push(a);
                    unknown.push(b);
                }
            }
        }
        last = (median(known), median(unknown));
        let ratio = last.0.as_secs_f64() / last.1.as_secs_f64();
        println!("/v2/ HEAD medians: held elsewhere {:?}, held nowhere {:?} (ratio {ratio:.3})", last.0, last.1);
        if (0.9..=1.1).contains(&ratio) {
            return;
        }
    }
    panic!("medians differ by more than 10 %: held elsewhere {:?}, held nowhere {:?}", last.0, last.1);
}
