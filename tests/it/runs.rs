//! Runs as jobs, on both backends: `POST …/run` answers `202` at once with
//! the run, which goes on after the request and reports at
//! `GET /v1/runs/{id}`; a second run of a kind is refused while one is
//! active (also on another replica); a run whose replica is killed is
//! recorded as abandoned and the next one goes on.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::backends::Backend;
use crate::harness::{TestServer, data, expect_error, independent_b3_bytes};
use crate::on_both_backends;

async fn push(server: &TestServer, token: &str, bytes: &[u8]) -> String {
    let digest = independent_b3_bytes(bytes);
    let path = format!("/v1/repos/acme/web/blobs/{digest}");
    let response = server.request(Method::PUT, &path, token).body(bytes.to_vec()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    digest
}

async fn get(server: &TestServer, base: &str, path: &str) -> (StatusCode, Value) {
    let response = server.http.get(format!("{base}{path}")).bearer_auth(&server.admin).send().await.unwrap();
    (response.status(), response.json().await.unwrap_or(Value::Null))
}

/// The scrub run under way, once there is one.
async fn active_scrub(server: &TestServer) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, list) = get(server, &server.url(""), "/v1/runs?kind=scrub").await;
        if let Some(run) = list["runs"].as_array().unwrap().iter().find(|r| r["state"] == "running") {
            return run.clone();
        }
        assert!(Instant::now() < deadline, "no scrub run started: {list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_run_outlives_its_request_and_reports(backend: Backend) {
    let server = TestServer::builder().backend(backend).env("AMBER_SCRUB_RATE", "0").start().await;
    let token = server.token(&[("acme/web", &["push", "pull"])]).await;
    for i in 0..5 {
        push(&server, &token, &data(1000 + i, i as u64)).await;
    }
    let response = server.request(Method::POST, "/v1/fsck/run", &server.admin).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let started: Value = response.json().await.unwrap();
    assert_eq!(started["state"], "running", "{started}");
    assert_eq!(started["kind"], "fsck");
    assert_eq!(location, format!("/v1/runs/{}", started["id"].as_str().unwrap()));
    assert!(started["started_by"].as_str().unwrap().contains("admin"), "{started}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let done = loop {
        let (status, run) = get(&server, &server.url(""), &location).await;
        assert_eq!(status, StatusCode::OK);
        if run["state"] != "running" {
            break run;
        }
        assert!(Instant::now() < deadline, "{run}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["report"]["linked"], 5, "{done}");
    assert_eq!(done["report"]["faults"], json!([]), "{done}");
    assert_eq!(done["progress"]["done"], 5, "{done}");
    assert_eq!(done["progress"]["unit"], "blobs", "{done}");
    assert!(done["finished_at"].is_string(), "{done}");

    // The report of a retention run is what the route answered before runs were jobs.
    let report = server.run("/v1/retention/run").await;
    assert_eq!(report, json!({"expire": [], "unlink": []}));
    let (_, list) = get(&server, &server.url(""), "/v1/runs").await;
    let kinds: Vec<&str> = list["runs"].as_array().unwrap().iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["retention", "fsck"], "newest first: {list}");
    let (_, only) = get(&server, &server.url(""), "/v1/runs?kind=fsck&limit=1").await;
    assert_eq!(only["runs"][0]["id"], started["id"]);

    let unknown = server.request(Method::GET, "/v1/runs/0123456789abcdef", &server.admin).send().await.unwrap();
    expect_error(unknown, StatusCode::NOT_FOUND, "run_unknown").await;
    let bad = server.request(Method::GET, "/v1/runs?kind=vacuum", &server.admin).send().await.unwrap();
    expect_error(bad, StatusCode::BAD_REQUEST, "request_invalid").await;
    let bad = server.request(Method::POST, "/v1/fsck/run?repair=true", &server.admin).send().await.unwrap();
    expect_error(bad, StatusCode::BAD_REQUEST, "request_invalid").await;
    let pull = server.request(Method::GET, "/v1/runs", &token).send().await.unwrap();
    expect_error(pull, StatusCode::FORBIDDEN, "denied").await;
}

on_both_backends!(a_run_outlives_its_request_and_reports);

/// The continuous scrub, slowed to a crawl, holds its pass as a run: a
/// `POST /v1/scrub/run` is refused naming it, here and on another replica;
/// a run of another kind is not. Killed, the run is recorded as abandoned
/// and the next run of its kind goes on.
async fn a_second_run_is_refused_while_one_is_active(backend: Backend) {
    let mut server = TestServer::builder()
        .backend(backend)
        .env("AMBER_SCRUB_RATE", "1024")
        .env("AMBER_SCRUB_INTERVAL", "0")
        .env("AMBER_RECLAIM_INTERVAL", "0")
        .env("AMBER_RETENTION_INTERVAL", "0")
        .start()
        .await;
    let token = server.token(&[("acme/web", &["push", "pull"])]).await;
    for i in 0..3 {
        push(&server, &token, &data(2000 + i, 10 + i as u64)).await;
    }
    let active = active_scrub(&server).await;
    let refused = server.request(Method::POST, "/v1/scrub/run", &server.admin).send().await.unwrap();
    let body = expect_error(refused, StatusCode::CONFLICT, "run_active").await;
    assert_eq!(body["error"]["detail"]["run"]["id"], active["id"], "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains(active["id"].as_str().unwrap()));
    // Another kind is not held back.
    assert_eq!(server.run("/v1/reclaim/run").await["ran"], true);

    let replica = (backend == Backend::S3Postgres).then(|| server.spawn_replica());
    if let Some(replica) = &replica {
        let refused = server.http.post(replica.url("/v1/scrub/run")).bearer_auth(&server.admin).send().await;
        let body = expect_error(refused.unwrap(), StatusCode::CONFLICT, "run_active").await;
        assert_eq!(body["error"]["detail"]["run"]["id"], active["id"], "on the replica: {body}");
    }

    server.kill9();
    let id = active["id"].as_str().unwrap();
    match &replica {
        // The killed replica's session lock went with it: the other
        // replica's scrubber starts the next pass, and the old run is
        // recorded as abandoned.
        Some(replica) => {
            let base = replica.url("");
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let (_, list) = get(&server, &base, "/v1/runs?kind=scrub").await;
                let runs = list["runs"].as_array().unwrap();
                let old = runs.iter().find(|r| r["id"] == id).unwrap();
                if runs[0]["id"] != id {
                    assert_eq!(old["state"], "failed", "{old}");
                    assert!(old["error"].as_str().unwrap().starts_with("abandoned"), "{old}");
                    break;
                }
                assert!(Instant::now() < deadline, "no next run: {list}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        None => {
            server.set_env("AMBER_SCRUB_RATE", Some("0"));
            server.restart();
            let (_, old) = get(&server, &server.url(""), &format!("/v1/runs/{id}")).await;
            assert_eq!(old["state"], "failed", "{old}");
            assert!(old["error"].as_str().unwrap().starts_with("abandoned"), "{old}");
            let report = server.run("/v1/scrub/run").await;
            assert!(report["verified_blobs"].as_u64().is_some(), "{report}");
            let (_, scrub) = get(&server, &server.url(""), "/v1/scrub").await;
            assert!(scrub["last_full_pass"].is_string(), "the next run finished the pass: {scrub}");
        }
    }
}

on_both_backends!(a_second_run_is_refused_while_one_is_active);
