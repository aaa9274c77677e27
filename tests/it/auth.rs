//! Tokens on the blob routes: 401 for every kind of bad token, 403 for a good
//! token without the grant, and secrets that never reach the logs.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::backends::Backend;
use crate::harness::{TestServer, data, expect_error, independent_b3_bytes};
use crate::on_both_backends;

async fn bad_tokens_get_401_and_missing_grants_get_403(backend: Backend) {
    let server = TestServer::on(backend).await;
    let bytes = data(100, 1);
    let digest = independent_b3_bytes(&bytes);
    let path = server.url(&format!("/v1/repos/acme/web/blobs/{digest}"));
    let good = server.token(&[("acme/*", &["push", "pull"])]).await;

    let none = server.http.put(&path).body(bytes.clone()).send().await.unwrap();
    assert_eq!(none.headers()["www-authenticate"], "Bearer realm=\"amber\"");
    expect_error(none, StatusCode::UNAUTHORIZED, "unauthorized").await;

    let mut bad_checksum = good.clone().into_bytes();
    let last = bad_checksum.len() - 1;
    bad_checksum[last] = if bad_checksum[last] == b'A' { b'B' } else { b'A' };
    // Well formed, checksum right, never issued.
    let never_issued = amber_core::TokenSecret::generate(&mut rand::thread_rng()).expose().to_owned();
    for token in ["garbage", "amber_", &String::from_utf8(bad_checksum).unwrap(), &never_issued] {
        let response = server.http.put(&path).bearer_auth(token).body(bytes.clone()).send().await.unwrap();
        expect_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    let scheme = server
        .http
        .put(&path)
        .header("authorization", format!("Token {good}"))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    expect_error(scheme, StatusCode::UNAUTHORIZED, "unauthorized").await;

    // Expired: a one-second token, a moment later.
    let short = server.token_with(&[("acme/*", &["push", "pull"])], json!({"expires_in": 1})).await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let expired = server.http.put(&path).bearer_auth(&short).body(bytes.clone()).send().await.unwrap();
    let body = expect_error(expired, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert!(body["error"]["message"].as_str().unwrap().contains("expired"));

    // Lacking the grant: pull-only cannot push, another repository cannot pull.
    let pull_only = server.token(&[("acme/web", &["pull"])]).await;
    let denied = server.http.put(&path).bearer_auth(&pull_only).body(bytes.clone()).send().await.unwrap();
    expect_error(denied, StatusCode::FORBIDDEN, "denied").await;
    let other_repo = server.token(&[("acme/api", &["push", "pull"])]).await;
    let denied = server.http.get(&path).bearer_auth(&other_repo).send().await.unwrap();
    expect_error(denied, StatusCode::FORBIDDEN, "denied").await;
    let other_owner = server.token(&[("evil/*", &["push", "pull"])]).await;
    let denied = server.http.put(&path).bearer_auth(&other_owner).body(bytes.clone()).send().await.unwrap();
    expect_error(denied, StatusCode::FORBIDDEN, "denied").await;
    // Admin power is not push or pull.
    let denied = server.http.put(&path).bearer_auth(&server.admin).body(bytes.clone()).send().await.unwrap();
    expect_error(denied, StatusCode::FORBIDDEN, "denied").await;
    // And push or pull is not admin.
    let denied = server
        .http
        .post(server.url("/v1/tokens"))
        .bearer_auth(&good)
        .json(&json!({"name": "x", "grants": []}))
        .send()
        .await
        .unwrap();
    expect_error(denied, StatusCode::FORBIDDEN, "denied").await;

    // Bearer and Basic (token as password) both work.
    let put = server.http.put(&path).bearer_auth(&good).body(bytes.clone()).send().await.unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);
    let get = server.http.get(&path).basic_auth("", Some(&good)).send().await.unwrap();
    assert_eq!(get.status(), StatusCode::OK);
    let get = server.http.get(&path).basic_auth("ci-bot", Some(&pull_only)).send().await.unwrap();
    assert_eq!(get.status(), StatusCode::OK);
}

async fn whoami_and_token_creation_follow_least_privilege(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = server.token(&[("acme/*", &["pull"])]).await;
    let me: Value = server.request(Method::GET, "/v1/whoami", &token).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["name"], "test");
    assert_eq!(me["pipeline"], "it");
    assert_eq!(me["grants"], json!([{"repos": "acme/*", "actions": ["pull"]}]));
    assert!(me["id"].as_str().unwrap().starts_with("tok_"));
    assert!(me["expires_at"].is_string());
    assert!(me.get("token").is_none() && me.get("secret_hash").is_none());

    for (body, why) in [
        (json!({"name": "x", "grants": [{"repos": "*", "actions": ["pull"]}]}), "* for push/pull"),
        (json!({"name": "x", "grants": [{"repos": "acme/*", "actions": ["admin"]}]}), "admin on a repo"),
        (json!({"name": "x", "grants": [{"repos": "acme/*", "actions": ["delete"]}]}), "unknown action"),
        (json!({"name": "x", "grants": [{"repos": "ACME/*", "actions": ["pull"]}]}), "bad pattern"),
        (json!({"name": "x", "grants": [{"repos": "acme/*", "actions": []}]}), "no action"),
        (json!({"name": "x", "grants": []}), "no grant"),
        (json!({"name": "", "grants": [{"repos": "acme/*", "actions": ["pull"]}]}), "empty name"),
        (json!({"name": "x", "grants": [{"repos": "acme/*", "actions": ["pull"]}], "expires_in": 0}), "zero lifetime"),
        (
            json!({"name": "x", "grants": [{"repos": "acme/*", "actions": ["pull"]}], "expires_in": 999_999_999u64}),
            "over the maximum",
        ),
        (json!({"name": "x", "grants": [{"repos": "acme/*", "actions": ["pull"]}], "surprise": 1}), "unknown field"),
    ] {
        let response = server.request(Method::POST, "/v1/tokens", &server.admin).json(&body).send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{why}: {text}");
        assert!(text.contains("\"request_invalid\""), "{why}: {text}");
    }
    let not_json = server
        .request(Method::POST, "/v1/tokens", &server.admin)
        .body("{")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    expect_error(not_json, StatusCode::BAD_REQUEST, "request_invalid").await;
}

async fn secrets_never_reach_the_logs_or_the_data_directory(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = server.token(&[("acme/*", &["push", "pull"])]).await;
    let bytes = data(10, 1);
    let response = server.request(Method::POST, "/v1/repos/acme/web/blobs", &token).body(bytes).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let _ = server.http.get(server.url("/v1/whoami")).basic_auth("", Some(&token)).send().await.unwrap();
    let logs = server.logs_with("path=/v1/whoami").await;
    assert!(logs.contains("/v1/repos/acme/web/blobs"), "request logs are written");
    for secret in [&token, &server.admin] {
        assert!(!logs.contains(secret.as_str()), "a secret appeared in the log");
        let random_part = &secret["amber_".len()..];
        for (place, content) in server.persisted() {
            assert!(
                !content.windows(random_part.len()).any(|w| w == random_part.as_bytes()),
                "secret found in {place}"
            );
        }
    }
}

on_both_backends!(
    bad_tokens_get_401_and_missing_grants_get_403,
    whoami_and_token_creation_follow_least_privilege,
    secrets_never_reach_the_logs_or_the_data_directory,
);
