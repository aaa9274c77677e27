//! `/v2/` as one store: an upload session continues through a restart and
//! through another replica; of a thousand concurrent `PUT`s of different
//! manifests to one tag over two replicas, exactly one binds.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::protocol::{push_blob, sha256};
use crate::backends::Backend;
use crate::harness::{TestServer, data};
use crate::on_both_backends;

/// Sends `chunk` at `offset` to the session at `location`, through `base`.
async fn patch(http: &reqwest::Client, base: &str, location: &str, token: &str, offset: usize, chunk: &[u8]) -> String {
    let end = offset + chunk.len() - 1;
    let response = http
        .patch(format!("{base}{location}"))
        .bearer_auth(token)
        .header("content-range", format!("{offset}-{end}"))
        .header("content-type", "application/octet-stream")
        .body(chunk.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED, "{}", response.text().await.unwrap());
    assert_eq!(response.headers()["range"], format!("0-{end}").as_str());
    response.headers()["location"].to_str().unwrap().to_owned()
}

async fn a_session_survives_a_restart(backend: Backend) {
    let mut server = TestServer::on(backend).await;
    let token = server.token(&[("acme/*", &["pull", "push"])]).await;
    let bytes = data(3 << 20, 5);
    let http = reqwest::Client::new();
    let start = server.request(Method::POST, "/v2/acme/web/blobs/uploads/", &token).send().await.unwrap();
    assert_eq!(start.status(), StatusCode::ACCEPTED);
    let location = start.headers()["location"].to_str().unwrap().to_owned();
    let third = bytes.len() / 3;
    let location = patch(&http, &server.url(""), &location, &token, 0, &bytes[..third]).await;
    server.restart();
    // Out of order after the restart: refused with where it stands.
    let skipped = http
        .patch(server.url(&location))
        .bearer_auth(&token)
        .header("content-range", format!("{}-{}", 2 * third, bytes.len() - 1))
        .body(bytes[2 * third..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(skipped.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(skipped.headers()["range"], format!("0-{}", third - 1).as_str());
    let status = server.request(Method::GET, &location, &token).send().await.unwrap();
    assert_eq!(status.status(), StatusCode::NO_CONTENT);
    assert_eq!(status.headers()["range"], format!("0-{}", third - 1).as_str());
    let location = patch(&http, &server.url(""), &location, &token, third, &bytes[third..2 * third]).await;
    let digest = sha256(&bytes);
    let close = http
        .put(server.url(&format!("{location}?digest={digest}")))
        .bearer_auth(&token)
        .header("content-range", format!("{}-{}", 2 * third, bytes.len() - 1))
        .body(bytes[2 * third..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(close.status(), StatusCode::CREATED, "{}", close.text().await.unwrap());
    let got = server.request(Method::GET, &format!("/v2/acme/web/blobs/{digest}"), &token).send().await.unwrap();
    assert!(got.bytes().await.unwrap() == bytes);
    // Closed: the session is gone.
    let after = server.request(Method::GET, &location, &token).send().await.unwrap();
    assert_eq!(after.status(), StatusCode::NOT_FOUND);
    // A session is its token's: another token of the same grants sees none.
    let start = server.request(Method::POST, "/v2/acme/web/blobs/uploads/", &token).send().await.unwrap();
    let location = start.headers()["location"].to_str().unwrap().to_owned();
    let other = server.token(&[("acme/*", &["pull", "push"])]).await;
    let foreign = server.request(Method::GET, &location, &other).send().await.unwrap();
    assert_eq!(foreign.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_session_continues_through_another_replica() {
    let server = TestServer::on(Backend::S3Postgres).await;
    let other = server.spawn_replica();
    let token = server.token(&[("acme/*", &["pull", "push"])]).await;
    let bytes = data(12 << 20, 6);
    let http = reqwest::Client::new();
    let start = server.request(Method::POST, "/v2/acme/web/blobs/uploads/", &token).send().await.unwrap();
    let location = start.headers()["location"].to_str().unwrap().to_owned();
    let half = 6 << 20;
    let location = patch(&http, &server.url(""), &location, &token, 0, &bytes[..half]).await;
    let location = patch(&http, &other.url(""), &location, &token, half, &bytes[half..]).await;
    let digest = sha256(&bytes);
    let close = http.put(server.url(&format!("{location}?digest={digest}"))).bearer_auth(&token).send().await.unwrap();
    assert_eq!(close.status(), StatusCode::CREATED, "{}", close.text().await.unwrap());
    let got = http.get(other.url(&format!("/v2/acme/web/blobs/{digest}"))).bearer_auth(&token).send().await.unwrap();
    assert!(got.bytes().await.unwrap() == bytes);
}

#[tokio::test]
async fn one_of_a_thousand_puts_binds_across_two_replicas() {
    let server = TestServer::on(Backend::S3Postgres).await;
    let other = server.spawn_replica();
    let token = server.token(&[("acme/*", &["pull", "push"])]).await;
    let layer = push_blob(&server, &token, "acme/web", &data(1000, 8)).await;
    let config = push_blob(&server, &token, "acme/web", b"{}").await;
    let bases = [server.url(""), other.url("")];
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(128));
    let mut puts = Vec::new();
    for i in 0..1000 {
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2},
            "layers": [{"mediaType": "application/octet-stream", "digest": layer, "size": 1000}],
            "annotations": {"attempt": i.to_string()},
        }))
        .unwrap();
        let (http, url, token, limit) =
            (http.clone(), format!("{}/v2/acme/web/manifests/race", bases[i % 2]), token.clone(), limit.clone());
        puts.push(tokio::spawn(async move {
            let _permit = limit.acquire().await.unwrap();
            let response = http
                .put(url)
                .bearer_auth(token)
                .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                .body(manifest.clone())
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body: Value = if status == StatusCode::CREATED { Value::Null } else { response.json().await.unwrap() };
            (status, body, manifest)
        }));
    }
    let mut bound = Vec::new();
    for put in puts {
        let (status, body, manifest) = put.await.unwrap();
        match status {
            StatusCode::CREATED => bound.push(manifest),
            StatusCode::CONFLICT => assert_eq!(body["errors"][0]["detail"]["code"], "tag_exists", "{body}"),
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(bound.len(), 1, "exactly one binds");
    for base in &bases {
        let got = http.get(format!("{base}/v2/acme/web/manifests/race")).bearer_auth(&token).send().await.unwrap();
        assert!(got.bytes().await.unwrap() == bound[0], "both replicas serve the one bound");
    }
}

on_both_backends!(a_session_survives_a_restart);
