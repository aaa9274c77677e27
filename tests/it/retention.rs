//! Retention over HTTP, on both backends: keep rules, holds, operator expiry,
//! signed tombstones verified with Python's `cryptography`, names never bound
//! twice, untagged links unlinked, binds racing runs, replicas racing each
//! other, and the CLI's exit codes.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::backends::Backend;
use crate::harness::{TestServer, data, expect_error, independent_b3_bytes, payload, verify_with_python};
use crate::on_both_backends;

/// Uploads a blob to `repo`; returns its manifest file entry.
async fn blob(server: &TestServer, token: &str, repo: &str, seed: u64) -> Value {
    let bytes = data(500 + seed as usize % 300, seed);
    let digest = independent_b3_bytes(&bytes);
    let put = server
        .request(Method::PUT, &format!("/v1/repos/{repo}/blobs/{digest}"), token)
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    json!({"path": format!("f-{seed}.bin"), "digest": digest, "size": bytes.len()})
}

/// `GET` of a blob's bytes in `repo`: its status.
async fn read_blob(server: &TestServer, token: &str, repo: &str, file: &Value) -> StatusCode {
    let path = format!("/v1/repos/{repo}/blobs/{}", file["digest"].as_str().unwrap());
    server.request(Method::GET, &path, token).send().await.unwrap().status()
}

async fn bind(server: &TestServer, token: &str, repo: &str, tag: &str, files: &[Value]) -> reqwest::Response {
    server
        .request(Method::PUT, &format!("/v1/repos/{repo}/tags/{tag}"), token)
        .json(&json!({"files": files}))
        .send()
        .await
        .unwrap()
}

/// Binds each tag to a manifest of one new blob; returns the manifest digests.
async fn tags(server: &TestServer, token: &str, repo: &str, names: &[&str], seed: u64) -> Vec<String> {
    let mut digests = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let file = blob(server, token, repo, seed + i as u64).await;
        let put = bind(server, token, repo, name, &[file]).await;
        assert_eq!(put.status(), StatusCode::CREATED, "{name}");
        digests.push(put.headers()["amber-manifest-digest"].to_str().unwrap().to_owned());
    }
    digests
}

async fn admin(server: &TestServer, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut request = server.request(method, path, &server.admin);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn set_policy(server: &TestServer, scope: &str, policy: Value) -> Value {
    let (status, body) = admin(server, Method::PUT, &format!("/v1/retention/{scope}"), Some(policy)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn run(server: &TestServer) -> Value {
    server.run("/v1/retention/run").await
}

fn expired_names(report: &Value) -> BTreeSet<String> {
    report["expire"].as_array().unwrap().iter().map(|e| e["tag"].as_str().unwrap().to_owned()).collect()
}

async fn keep_rules_expire_what_none_keeps_into_verifiable_tombstones(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = server.token(&[("acme/web", &["push", "pull"])]).await;
    let names = ["1.0", "ci-01", "ci-02", "ci-03", "ci-04", "ci-05"];
    let manifests = tags(&server, &token, "acme/web", &names, 100).await;
    let (status, _) =
        admin(&server, Method::PUT, "/v1/repos/acme/web/tags/ci-01/hold", Some(json!({"reason": "audit"}))).await;
    assert_eq!(status, StatusCode::OK);

    // No policy: nothing expires, and nothing is planned.
    let (status, body) = admin(&server, Method::POST, "/v1/retention/acme/web/plan", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("policy_unknown")));
    assert!(expired_names(&run(&server).await).is_empty());

    // A proposed policy is planned without being stored (the console's
    // preview before saving): the same plan the PUT then answers.
    let proposal = json!({"keep_last": 2, "keep_tags": ["1.*"]});
    let (status, preview) = admin(&server, Method::POST, "/v1/retention/acme/web/plan", Some(proposal.clone())).await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    let (status, _) = admin(&server, Method::GET, "/v1/retention/acme/web", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a preview stores nothing");
    let (status, body) =
        admin(&server, Method::POST, "/v1/retention/acme/web/plan", Some(json!({"keep_last": "two"}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("request_invalid")));

    // keep_last 2 keeps ci-05 and ci-04; the glob keeps 1.0 (whole name:
    // `1.*` would not keep `x1.0`); the hold keeps ci-01.
    let set = set_policy(&server, "acme/web", json!({"keep_last": 2, "keep_tags": ["1.*"]})).await;
    assert_eq!(set["policy"], json!({"keep_last": 2, "keep_tags": ["1.*"], "untagged_days": 7}));
    assert!(set["digest"].as_str().unwrap().starts_with("blake3:"));
    let want: BTreeSet<String> = ["ci-02", "ci-03"].map(String::from).into();
    assert_eq!(expired_names(&set["plan"]), want, "{set}");
    assert_eq!(preview, set["plan"], "the preview was the plan");
    let (_, plan) = admin(&server, Method::POST, "/v1/retention/acme/web/plan", None).await;
    assert_eq!(plan, set["plan"], "a plan and the PUT's plan agree");
    let report = run(&server).await;
    assert_eq!(report["expire"], plan["expire"], "the run does what the plan said");
    assert!(expired_names(&run(&server).await).is_empty(), "a second run has nothing to do");

    let listed: Value =
        server.request(Method::GET, "/v1/repos/acme/web/tags", &token).send().await.unwrap().json().await.unwrap();
    let states: Vec<(String, String, bool)> = listed["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["tag"].as_str().unwrap().into(), t["state"].as_str().unwrap().into(), t["held"].as_bool().unwrap()))
        .collect();
    let expect = |t: &str, s: &str, h: bool| (t.to_owned(), s.to_owned(), h);
    assert_eq!(
        states,
        vec![
            expect("1.0", "live", false),
            expect("ci-01", "live", true),
            expect("ci-02", "expired", false),
            expect("ci-03", "expired", false),
            expect("ci-04", "live", false),
            expect("ci-05", "live", false),
        ]
    );

    // An expired tag and its manifest answer 410 with a tombstone that
    // verifies with code nobody here wrote, and names the policy.
    let gone = server.request(Method::GET, "/v1/repos/acme/web/tags/ci-02", &token).send().await.unwrap();
    let body = expect_error(gone, StatusCode::GONE, "tag_expired").await;
    let tombstone = &body["tombstone"];
    assert_eq!(tombstone["payloadType"], "application/vnd.amber.tombstone.v1+json");
    let tombstone_digest = verify_with_python(tombstone, &server.keys().await).unwrap();
    let t = payload(tombstone);
    assert_eq!(t["schema"], "amber.tombstone.v1");
    assert_eq!((t["repository"].as_str(), t["tag"].as_str()), (Some("acme/web"), Some("ci-02")));
    assert_eq!(t["manifest"].as_str(), Some(manifests[2].as_str()));
    assert_eq!((t["reason"].as_str(), t["policy"].as_str()), (Some("policy"), set["digest"].as_str()));
    assert!(t["bound_at"].is_string() && t["expired_at"].is_string() && t["expired_by"].is_object());
    let by_digest = server
        .request(Method::GET, &format!("/v1/repos/acme/web/manifests/{}", manifests[2]), &token)
        .send()
        .await
        .unwrap();
    let body = expect_error(by_digest, StatusCode::GONE, "tag_expired").await;
    assert_eq!(&body["tombstone"], tombstone);
    let live = server.request(Method::GET, "/v1/repos/acme/web/tags/ci-04", &token).send().await.unwrap();
    assert_eq!(live.status(), StatusCode::OK);

    // The name is never bound again: not to the same content, not to other.
    let same = blob(&server, &token, "acme/web", 102).await;
    let again = bind(&server, &token, "acme/web", "ci-02", &[same]).await;
    assert_eq!(expect_error(again, StatusCode::CONFLICT, "tag_expired").await["tombstone"], *tombstone);
    let other = blob(&server, &token, "acme/web", 999).await;
    expect_error(bind(&server, &token, "acme/web", "ci-02", &[other]).await, StatusCode::CONFLICT, "tag_expired").await;

    // Each expiry is audited once, with its tombstone's digest and the policy.
    let events = server.audit_events().await;
    let expiries: Vec<&Value> = events.iter().filter(|e| e["kind"] == "tag_expired").collect();
    assert_eq!(expiries.len(), 2);
    let ci02 = expiries.iter().find(|e| e["tag"] == "ci-02").unwrap();
    assert_eq!(ci02["tombstone"].as_str(), Some(tombstone_digest.as_str()));
    assert_eq!(ci02["policy"], set["digest"]);
    let policy_set = events.iter().find(|e| e["kind"] == "retention_policy_set").unwrap();
    assert_eq!(policy_set["policy"], set["policy"]);
    assert!(events.iter().any(|e| e["kind"] == "tag_held" && e["reason"] == "audit"));

    let metrics = server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("amber_retention_expired_total 2"), "{metrics}");
}

async fn holds_beat_policies_and_operators_expire_by_hand(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = server.token(&[("acme/web", &["push", "pull"])]).await;
    tags(&server, &token, "acme/web", &["a", "b", "c"], 200).await;
    let hold = |tag: &str| format!("/v1/repos/acme/web/tags/{tag}/hold");
    let expire = |tag: &str| format!("/v1/repos/acme/web/tags/{tag}/expire");

    // Only admins hold or expire; a reason is required.
    let denied = server.request(Method::PUT, &hold("a"), &token).json(&json!({"reason": "x"})).send().await.unwrap();
    expect_error(denied, StatusCode::FORBIDDEN, "denied").await;
    let denied = server.request(Method::POST, &expire("a"), &token).json(&json!({"reason": "x"})).send().await.unwrap();
    expect_error(denied, StatusCode::FORBIDDEN, "denied").await;
    for bad in [json!({}), json!({"reason": ""}), json!({"reason": "a\nb"}), json!({"reason": "x", "extra": 1})] {
        let (status, body) = admin(&server, Method::PUT, &hold("a"), Some(bad.clone())).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("request_invalid")),
            "{bad}"
        );
    }
    let (status, body) = admin(&server, Method::PUT, &hold("nope"), Some(json!({"reason": "x"}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("tag_unknown")));

    let (status, held) = admin(&server, Method::PUT, &hold("a"), Some(json!({"reason": "release 1"}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((held["held"].as_bool(), held["hold_reason"].as_str()), (Some(true), Some("release 1")));
    let (status, again) = admin(&server, Method::PUT, &hold("a"), Some(json!({"reason": "other"}))).await;
    assert_eq!((status, again["hold_reason"].as_str()), (StatusCode::OK, Some("release 1")), "a hold is kept as set");

    // A policy that keeps nothing by name or count still cannot expire a held tag.
    set_policy(&server, "acme/web", json!({"keep_tags": ["none-match"]})).await;
    assert_eq!(expired_names(&run(&server).await), ["b", "c"].map(String::from).into());

    let (status, body) = admin(&server, Method::POST, &expire("a"), Some(json!({"reason": "yanked"}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("tag_held")));
    let (status, released) = admin(&server, Method::DELETE, &hold("a"), None).await;
    assert_eq!((status, released["held"].as_bool()), (StatusCode::OK, Some(false)));

    // The operator's expiry: reason operator, no policy, the note kept.
    let (status, tombstone) = admin(&server, Method::POST, &expire("a"), Some(json!({"reason": "CVE-2026-1"}))).await;
    assert_eq!(status, StatusCode::OK, "{tombstone}");
    verify_with_python(&tombstone, &server.keys().await).unwrap();
    let t = payload(&tombstone);
    assert_eq!(
        (t["reason"].as_str(), t["policy"].is_null(), t["note"].as_str()),
        (Some("operator"), true, Some("CVE-2026-1"))
    );
    let (status, retry) = admin(&server, Method::POST, &expire("a"), Some(json!({"reason": "again"}))).await;
    assert_eq!((status, &retry), (StatusCode::OK, &tombstone), "a retry answers the same tombstone");
    let (status, body) = admin(&server, Method::PUT, &hold("a"), Some(json!({"reason": "too late"}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("tag_expired")));
    assert!(body["tombstone"].is_object());
    let events = server.audit_events().await;
    assert_eq!(events.iter().filter(|e| e["kind"] == "tag_released").count(), 1);
    assert_eq!(events.iter().filter(|e| e["kind"] == "tag_held").count(), 1);
    assert_eq!(events.iter().filter(|e| e["kind"] == "tag_expired" && e["reason"] == "operator").count(), 1);
}

async fn untagged_links_go_and_referenced_ones_stay(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = server.token(&[("acme/web", &["push", "pull"])]).await;
    let referenced = blob(&server, &token, "acme/web", 300).await;
    assert_eq!(
        bind(&server, &token, "acme/web", "v1", std::slice::from_ref(&referenced)).await.status(),
        StatusCode::CREATED
    );
    let loose = blob(&server, &token, "acme/web", 301).await;

    // No keep rule: every tag is kept; untagged_days 0 unlinks at the next
    // run what is older than now (links are timed to the second).
    let set = set_policy(&server, "acme/web", json!({"untagged_days": 7})).await;
    assert_eq!(set["plan"], json!({"expire": [], "unlink": []}), "a week has not passed");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    set_policy(&server, "acme/web", json!({"untagged_days": 0})).await;
    let report = run(&server).await;
    assert_eq!(report["expire"], json!([]));
    assert_eq!(report["unlink"], json!([{"repository": "acme/web", "digest": loose["digest"], "size": loose["size"]}]));
    let head =
        |d: &Value| server.request(Method::HEAD, &format!("/v1/repos/acme/web/blobs/{}", d.as_str().unwrap()), &token);
    assert_eq!(head(&loose["digest"]).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(head(&referenced["digest"]).send().await.unwrap().status(), StatusCode::OK);
    let missing = server.missing(&token, "acme/web", &[loose["digest"].clone(), referenced["digest"].clone()]).await;
    assert_eq!(missing, json!([loose["digest"]]), "the client is told to send it again");
    let events = server.audit_events().await;
    assert_eq!(events.iter().filter(|e| e["kind"] == "blob_unlinked").count(), 1);

    // An expired tag's blobs go at the next run after it expired.
    admin(&server, Method::POST, "/v1/repos/acme/web/tags/v1/expire", Some(json!({"reason": "done"}))).await;
    let report = run(&server).await;
    assert_eq!(report["unlink"][0]["digest"], referenced["digest"]);
    // Re-uploading links it again, fresh.
    let again = blob(&server, &token, "acme/web", 300).await;
    assert_eq!(head(&again["digest"]).send().await.unwrap().status(), StatusCode::OK);
    let metrics = server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("amber_links_removed_total 2"), "{metrics}");
}

async fn the_repository_policy_beats_the_owner_default(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = server.token(&[("acme/*", &["push", "pull"]), ("other/x", &["push", "pull"])]).await;
    for (i, repo) in ["acme/web", "acme/api", "other/x"].iter().enumerate() {
        tags(&server, &token, repo, &["t1", "t2", "t3"], 400 + 10 * i as u64).await;
    }
    set_policy(&server, "acme/*", json!({"keep_last": 1})).await;
    let set = set_policy(&server, "acme/api", json!({"keep_last": 3})).await;
    assert_eq!(set["plan"]["expire"], json!([]));
    let (_, plan) = admin(&server, Method::POST, "/v1/retention/acme/*/plan", None).await;
    let planned: Vec<(&str, &str)> = plan["expire"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["repository"].as_str().unwrap(), e["tag"].as_str().unwrap()))
        .collect();
    assert_eq!(planned, vec![("acme/web", "t1"), ("acme/web", "t2")]);
    let report = run(&server).await;
    assert_eq!(report["expire"], plan["expire"]);

    // The policy in effect: the repository's own, else the owner's; a
    // puller of the repository may read it, nothing more.
    let puller = server.token(&[("acme/web", &["pull"])]).await;
    let get = |path: &str, token: &str| server.request(Method::GET, path, token).send();
    let web: Value = get("/v1/retention/acme/web", &puller).await.unwrap().json().await.unwrap();
    assert_eq!((web["repository"].as_str(), web["scope"].as_str()), (Some("acme/web"), Some("acme/*")));
    let api: Value = get("/v1/retention/acme/api", &server.admin).await.unwrap().json().await.unwrap();
    assert_eq!(api["scope"], "acme/api");
    expect_error(get("/v1/retention/acme/api", &puller).await.unwrap(), StatusCode::FORBIDDEN, "denied").await;
    expect_error(get("/v1/retention/acme/*", &puller).await.unwrap(), StatusCode::FORBIDDEN, "denied").await;
    let put = server.request(Method::PUT, "/v1/retention/acme/web", &puller).json(&json!({})).send().await.unwrap();
    expect_error(put, StatusCode::FORBIDDEN, "denied").await;
    expect_error(get("/v1/retention/other/x", &server.admin).await.unwrap(), StatusCode::NOT_FOUND, "policy_unknown")
        .await;

    // Bad policies and scopes are refused, clearly, and change nothing.
    for bad in [
        r#"{"keep_last": 0}"#,
        r#"{"keep_last": -1}"#,
        r#"{"keep_days": 1.5}"#,
        r#"{"keep_tags": []}"#,
        r#"{"keep_tags": ["a/b"]}"#,
        r#"{"keep_last": 1, "keep_last": 2}"#,
        r#"{"keep": 1}"#,
        "[]",
        "",
    ] {
        let response =
            server.request(Method::PUT, "/v1/retention/acme/web", &server.admin).body(bad).send().await.unwrap();
        expect_error(response, StatusCode::BAD_REQUEST, "request_invalid").await;
    }
    let (status, body) = admin(&server, Method::PUT, "/v1/retention/acme/*x", Some(json!({}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("name_invalid")));

    // Removing the exact policy hands the repository to the owner default.
    let (status, deleted) = admin(&server, Method::DELETE, "/v1/retention/acme/api", None).await;
    assert_eq!((status, &deleted["digest"]), (StatusCode::OK, &set["digest"]));
    let (status, _) = admin(&server, Method::DELETE, "/v1/retention/acme/api", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(expired_names(&run(&server).await), ["t1", "t2"].map(String::from).into());
    let (_, all) = admin(&server, Method::GET, "/v1/retention", None).await;
    assert_eq!(all["policies"].as_array().unwrap().len(), 1);
    let events = server.audit_events().await;
    assert_eq!(events.iter().filter(|e| e["kind"] == "retention_policy_deleted").count(), 1);
    let listed: Value = get("/v1/repos/other/x/tags", &token).await.unwrap().json().await.unwrap();
    assert!(listed["tags"].as_array().unwrap().iter().all(|t| t["state"] == "live"), "other owners untouched");
}

/// Rounds of a bind that references a blob against a run that would unlink
/// it: every bound live tag's blob stays readable.
async fn a_bind_racing_a_run_never_leaves_a_tag_without_its_blob(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = server.token(&[("acme/race", &["push", "pull"])]).await;
    set_policy(&server, "acme/race", json!({"untagged_days": 0})).await;
    let (mut bound, mut refused) = (0, 0);
    let mut files = Vec::new();
    // One blob per round, old enough (links are timed to the second) that
    // the run may unlink it, and the only one it may: each round is a race.
    for round in 0..16u64 {
        let file = blob(&server, &token, "acme/race", 1000 + round).await;
        tokio::time::sleep(std::time::Duration::from_millis(1050)).await;
        let tag = format!("r{round}");
        // Jitter on both sides, so either may go first.
        let jitter = || std::time::Duration::from_micros(rand::random::<u64>() % 4000);
        let (bind_jitter, run_jitter) = (jitter(), jitter());
        let bind_later = async {
            tokio::time::sleep(bind_jitter).await;
            bind(&server, &token, "acme/race", &tag, std::slice::from_ref(&file)).await
        };
        let run_later = async {
            tokio::time::sleep(run_jitter).await;
            run(&server).await
        };
        let (put, _) = tokio::join!(bind_later, run_later);
        match put.status() {
            StatusCode::CREATED => {
                bound += 1;
                let read = read_blob(&server, &token, "acme/race", &file).await;
                assert_eq!(read, StatusCode::OK, "round {round}: a bound tag's blob is gone");
            }
            StatusCode::BAD_REQUEST => {
                refused += 1;
                let body: Value = put.json().await.unwrap();
                assert_eq!(body["error"]["code"], "manifest_blob_unknown");
            }
            other => panic!("round {round}: {other}"),
        }
        files.push(file);
    }
    println!("{backend:?}: {bound} binds won, {refused} lost to the unlink");
    // After everything, a run unlinks nothing a live tag references.
    run(&server).await;
    for (round, file) in files.iter().enumerate() {
        let got =
            server.request(Method::GET, &format!("/v1/repos/acme/race/tags/r{round}"), &token).send().await.unwrap();
        if got.status() == StatusCode::OK {
            assert_eq!(read_blob(&server, &token, "acme/race", file).await, StatusCode::OK, "round {round}");
        }
    }
}

async fn amber_pull_reports_a_retired_tag_and_push_a_conflict(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = server.token(&[("acme/web", &["push", "pull"])]).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), b"hello").unwrap();
    let path = dir.path().join("a.txt");
    let pushed = server.amber(&token, &["push", "acme/web:1.0", path.to_str().unwrap()]).await;
    assert_eq!(pushed.code, 0, "{}", pushed.stderr);
    let keys_file = dir.path().join("keys.json");
    std::fs::write(&keys_file, server.keys().await.to_string()).unwrap();

    let expired = server.amber(&server.admin, &["tag", "expire", "acme/web:1.0", "--reason", "yanked: CVE"]).await;
    assert_eq!(expired.code, 0, "{}", expired.stderr);
    let out = dir.path().join("out");
    let pull = server
        .amber(&token, &["pull", "acme/web:1.0", "-o", out.to_str().unwrap(), "--key", keys_file.to_str().unwrap()])
        .await;
    assert_eq!(pull.code, 6, "{}", pull.stderr);
    assert!(pull.stderr.contains("retired") && pull.stderr.contains("yanked: CVE"), "{}", pull.stderr);
    assert!(!out.exists(), "nothing written");
    let by_digest = format!("acme/web@{}", pushed.stdout.trim());
    let pull = server
        .amber(&token, &["pull", &by_digest, "-o", out.to_str().unwrap(), "--key", keys_file.to_str().unwrap()])
        .await;
    assert_eq!(pull.code, 6, "{}", pull.stderr);

    // A tombstone signed by a key that is not pinned does not verify (4).
    let other_keys = dir.path().join("other.json");
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    use base64::Engine;
    let public = base64::engine::general_purpose::STANDARD.encode(stranger.verifying_key().as_bytes());
    std::fs::write(
        &other_keys,
        json!({"keys": [{"keyid": "x", "algorithm": "ed25519", "public_key": public,
        "created_at": "2026-01-01T00:00:00Z", "status": "active"}]})
        .to_string(),
    )
    .unwrap();
    let pull = server
        .amber(&token, &["pull", "acme/web:1.0", "-o", out.to_str().unwrap(), "--key", other_keys.to_str().unwrap()])
        .await;
    assert_eq!(pull.code, 4, "{}", pull.stderr);

    // Pushing to the expired name, or to a name bound to other content: 7.
    let push = server.amber(&token, &["push", "acme/web:1.0", path.to_str().unwrap()]).await;
    assert_eq!(push.code, 7, "{}", push.stderr);
    assert!(push.stderr.contains("never bound again"), "{}", push.stderr);
    std::fs::write(dir.path().join("b.txt"), b"other").unwrap();
    let first = server.amber(&token, &["push", "acme/web:2.0", path.to_str().unwrap()]).await;
    assert_eq!(first.code, 0);
    let other = server.amber(&token, &["push", "acme/web:2.0", dir.path().join("b.txt").to_str().unwrap()]).await;
    assert_eq!(other.code, 7, "{}", other.stderr);

    // The operator's commands.
    let set =
        server.amber(&server.admin, &["retention", "set", "acme/*", "--keep-last", "5", "--keep-tags", "v*"]).await;
    assert_eq!(set.code, 0, "{}", set.stderr);
    let shown: Value =
        serde_json::from_str(&server.amber(&server.admin, &["retention", "show", "acme/web"]).await.stdout).unwrap();
    assert_eq!(shown["policy"]["keep_last"], 5);
    let plan = server.amber(&server.admin, &["retention", "plan", "acme/web"]).await;
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let held = server.amber(&server.admin, &["tag", "hold", "acme/web:2.0", "--reason", "keep"]).await;
    assert_eq!(held.code, 0, "{}", held.stderr);
    let expire_held = server.amber(&server.admin, &["tag", "expire", "acme/web:2.0", "--reason", "x"]).await;
    assert_eq!(expire_held.code, 7, "{}", expire_held.stderr);
    let list = server.amber(&token, &["tag", "list", "acme/web"]).await;
    assert!(
        list.stdout.contains("1.0\t") && list.stdout.contains("expired") && list.stdout.contains("live held"),
        "{}",
        list.stdout
    );
    let ran = server.amber(&server.admin, &["retention", "run"]).await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let bad = server.amber(&server.admin, &["retention", "set", "*", "--keep-last", "1"]).await;
    assert_eq!(bad.code, 2);
}

on_both_backends!(
    keep_rules_expire_what_none_keeps_into_verifiable_tombstones,
    holds_beat_policies_and_operators_expire_by_hand,
    untagged_links_go_and_referenced_ones_stay,
    the_repository_policy_beats_the_owner_default,
    a_bind_racing_a_run_never_leaves_a_tag_without_its_blob,
    amber_pull_reports_a_retired_tag_and_push_a_conflict,
);

/// Two replicas running retention at once expire each tag once, and their
/// reports together are the plan.
#[tokio::test]
async fn two_replicas_running_at_once_expire_each_tag_once() {
    let server = TestServer::on(Backend::S3Postgres).await;
    let replica = server.spawn_replica();
    let token = server.token(&[("acme/web", &["push", "pull"])]).await;
    let names: Vec<String> = (0..24).map(|i| format!("b{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    tags(&server, &token, "acme/web", &refs, 500).await;
    let set = set_policy(&server, "acme/web", json!({"keep_last": 4})).await;
    let planned = expired_names(&set["plan"]);
    assert_eq!(planned.len(), 20);
    let base = replica.url("");
    let on_replica = server.run_at(&base, "/v1/retention/run");
    let (a, b) = tokio::join!(run(&server), on_replica);
    let (a, b) = (expired_names(&a), expired_names(&b));
    assert!(a.is_disjoint(&b), "both replicas expired {:?}", a.intersection(&b).collect::<Vec<_>>());
    assert_eq!(a.union(&b).cloned().collect::<BTreeSet<_>>(), planned);
    let events = server.audit_events().await;
    assert_eq!(events.iter().filter(|e| e["kind"] == "tag_expired").count(), 20);
}

/// A sled store written by the previous release (schema 1: links without
/// their creation time, no manifest references) is upgraded at start: the
/// references are rebuilt, so retention never unlinks a blob a live tag names.
#[tokio::test]
async fn a_schema_1_sled_store_is_upgraded_in_place() {
    let mut server = TestServer::start().await;
    let token = server.token(&[("acme/web", &["push", "pull"])]).await;
    let named = blob(&server, &token, "acme/web", 600).await;
    assert_eq!(
        bind(&server, &token, "acme/web", "v1", std::slice::from_ref(&named)).await.status(),
        StatusCode::CREATED
    );
    let loose = blob(&server, &token, "acme/web", 601).await;
    server.with_stopped_meta(|db| {
        db.insert("schema", "1").unwrap();
        let links = db.open_tree("links").unwrap();
        for item in links.iter() {
            let (key, value) = item.unwrap();
            links.insert(key, &value[..8]).unwrap();
        }
        db.drop_tree("refs").unwrap();
    });
    server.restart();
    assert!(server.logs().contains("amberd listening"));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    set_policy(&server, "acme/web", json!({"untagged_days": 0})).await;
    let report = run(&server).await;
    assert_eq!(report["unlink"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["unlink"][0]["digest"], loose["digest"]);
    let got = server.request(Method::GET, "/v1/repos/acme/web/tags/v1", &token).send().await.unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    let head = server
        .request(Method::HEAD, &format!("/v1/repos/acme/web/blobs/{}", named["digest"].as_str().unwrap()), &token)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
}

/// Migration 0002 builds `manifest_blobs` for manifests pushed before it
/// from their signed payloads: the same rows a bind writes.
#[tokio::test]
async fn the_postgres_migration_derives_manifest_references_as_binds_do() {
    let server = TestServer::on(Backend::S3Postgres).await;
    let token = server.token(&[("acme/web", &["push", "pull"])]).await;
    let (a, b) = (blob(&server, &token, "acme/web", 700).await, blob(&server, &token, "acme/web", 701).await);
    let mut same = b.clone();
    same["path"] = json!("again/f.bin");
    assert_eq!(bind(&server, &token, "acme/web", "v1", &[a, b, same]).await.status(), StatusCode::CREATED);
    let pg = &server.services.as_ref().unwrap().pg;
    let migration = include_str!("../../migrations/0002_retention.sql");
    let backfill = migration
        .split(';')
        .find(|statement| statement.contains("INSERT INTO manifest_blobs"))
        .unwrap()
        .split_once("SELECT")
        .unwrap()
        .1;
    let rows = |from: &str| {
        pg.sql(&format!(
            "SELECT string_agg(r, ',' ORDER BY r) FROM (SELECT repository || ':' || encode(blob, 'hex') || ':' || encode(manifest, 'hex') AS r FROM {from}) AS rows"
        ))
    };
    let derived = rows(&format!("(SELECT{backfill}) AS d(repository, blob, manifest)"));
    let stored = rows("manifest_blobs");
    assert_eq!(derived, stored);
    assert_eq!(stored.trim().split(',').count(), 2, "one row per distinct blob: {stored}");
}

/// The server runs every policy on its own every `--retention-interval`.
#[tokio::test]
async fn policies_run_on_schedule() {
    let server = TestServer::builder().arg("--retention-interval").arg("1").start().await;
    let token = server.token(&[("acme/web", &["push", "pull"])]).await;
    tags(&server, &token, "acme/web", &["t1", "t2"], 800).await;
    set_policy(&server, "acme/web", json!({"keep_last": 1})).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let got = server.request(Method::GET, "/v1/repos/acme/web/tags/t1", &token).send().await.unwrap();
        if got.status() == StatusCode::GONE {
            let body: Value = got.json().await.unwrap();
            assert_eq!(payload(&body["tombstone"])["expired_by"]["token_name"], "amberd retention schedule");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no scheduled run expired the tag");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    server.logs_with("retention run finished").await;
}
