//! `GET /v1/repos`: what a token may pull, with its counts, and nothing of
//! the rest.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::backends::Backend;
use crate::harness::{TestServer, data, independent_b3_bytes};
use crate::on_both_backends;

async fn repos(server: &TestServer, token: &str, query: &str) -> Value {
    let response = server.request(Method::GET, &format!("/v1/repos{query}"), token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

fn names(page: &Value) -> Vec<&str> {
    page["repositories"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect()
}

async fn a_token_lists_the_repositories_it_may_pull(backend: Backend) {
    let server = TestServer::on(backend).await;
    let pusher = server.token(&[("acme/*", &["push", "pull"]), ("other/x", &["push"])]).await;
    for (repo, size) in [("acme/web", 1000), ("acme/api", 3000), ("other/x", 10)] {
        let bytes = data(size, size as u64);
        let digest = independent_b3_bytes(&bytes);
        let path = format!("/v1/repos/{repo}/blobs/{digest}");
        assert_eq!(
            server.request(Method::PUT, &path, &pusher).body(bytes).send().await.unwrap().status(),
            StatusCode::CREATED
        );
        if repo == "acme/web" {
            let manifest = json!({"files": [{"path": "a", "digest": digest, "size": size}]});
            let tag =
                server.request(Method::PUT, "/v1/repos/acme/web/tags/1.0.0", &pusher).json(&manifest).send().await;
            assert_eq!(tag.unwrap().status(), StatusCode::CREATED);
        }
    }
    // acme/* with pull: both acme repositories, with their counts; other/x
    // (push only) is not there, nor counted.
    let page = repos(&server, &pusher, "").await;
    assert_eq!(names(&page), ["acme/api", "acme/web"]);
    let web = &page["repositories"][1];
    assert_eq!((web["tags"].as_u64(), web["bytes"].as_u64()), (Some(1), Some(1000)));
    assert!(web["last_push_at"].is_string());
    assert_eq!(page["next"], Value::Null);
    // Paginated; the cursor is always a repository the caller may see.
    let first = repos(&server, &pusher, "?limit=1").await;
    assert_eq!((names(&first), first["next"].as_str()), (vec!["acme/api"], Some("acme/api")));
    let second = repos(&server, &pusher, "?limit=1&after=acme/api").await;
    assert_eq!((names(&second), second["next"].clone()), (vec!["acme/web"], Value::Null));
    // A pull-only token on one repository sees that one only.
    let narrow = server.token(&[("other/x", &["pull"])]).await;
    assert_eq!(names(&repos(&server, &narrow, "").await), ["other/x"]);
    let none = server.token(&[("nobody/here", &["pull"])]).await;
    assert_eq!(repos(&server, &none, "").await, json!({"repositories": [], "next": null}));
    // An admin token sees every repository.
    assert_eq!(names(&repos(&server, &server.admin, "").await), ["acme/api", "acme/web", "other/x"]);
    let bad = server.request(Method::GET, "/v1/repos?after=..", &pusher).send().await.unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

on_both_backends!(a_token_lists_the_repositories_it_may_pull);

/// A small deterministic generator (the test repeats exactly).
struct Steps(u64);

impl Steps {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

/// The counters behind `GET /v1/repos` and `GET /v1/storage` equal a
/// recount, made here through the API (`HEAD` of every blob pushed, every
/// tag listed) and by the store itself (the fsck run), after random pushes,
/// bindings, expiries, unlinks and reclaims.
async fn counters_equal_a_recount(backend: Backend) {
    let server = TestServer::builder()
        .backend(backend)
        .env("AMBER_SCRUB_RATE", "0")
        .env("AMBER_RECLAIM_INTERVAL", "0")
        .env("AMBER_RETENTION_INTERVAL", "0")
        .arg("--reclaim-grace")
        .arg("0")
        .start()
        .await;
    let repos_names = ["acme/web", "acme/api", "zeta/tools"];
    let token = server.token(&[("acme/*", &["push", "pull"]), ("zeta/tools", &["push", "pull"])]).await;
    let mut steps = Steps(0x9e37_79b9_7f4a_7c15);
    let mut pushed: Vec<(&str, String, u64)> = Vec::new();
    let mut tags: Vec<(&str, String)> = Vec::new();
    for i in 0..70u64 {
        let repo = repos_names[steps.next(3) as usize];
        match steps.next(10) {
            // Push a blob (sometimes one pushed before, to another repository).
            0..=4 => {
                let size = 100 + steps.next(5000);
                let seed = if steps.next(4) == 0 && !pushed.is_empty() { steps.next(i.max(1)) } else { 1000 + i };
                let bytes = data(size as usize, seed);
                let digest = independent_b3_bytes(&bytes);
                let path = format!("/v1/repos/{repo}/blobs/{digest}");
                let put = server.request(Method::PUT, &path, &token).body(bytes).send().await.unwrap();
                assert!(put.status().is_success(), "{}", put.status());
                pushed.push((repo, digest, size));
            }
            // Bind a tag to the repository's blobs pushed so far (linked or not).
            5..=6 => {
                let files: Vec<Value> = pushed
                    .iter()
                    .filter(|(r, _, _)| *r == repo)
                    .take(2)
                    .enumerate()
                    .map(|(n, (_, d, s))| json!({"path": format!("f{n}"), "digest": d, "size": s}))
                    .collect();
                let tag = format!("t{i}");
                let path = format!("/v1/repos/{repo}/tags/{tag}");
                let bound = server.request(Method::PUT, &path, &token).json(&json!({"files": files})).send().await;
                if bound.unwrap().status() == StatusCode::CREATED {
                    tags.push((repo, tag));
                }
            }
            // Expire a tag.
            7 if !tags.is_empty() => {
                let (repo, tag) = tags[steps.next(tags.len() as u64) as usize].clone();
                let path = format!("/v1/repos/{repo}/tags/{tag}/expire");
                let expire = server.request(Method::POST, &path, &server.admin).json(&json!({"reason": "test"}));
                assert!(expire.send().await.unwrap().status().is_success());
            }
            // Unlink what no live tag references, in one repository.
            8 => {
                let path = format!("/v1/retention/{repo}");
                let policy = json!({"untagged_days": 0});
                assert!(
                    server
                        .request(Method::PUT, &path, &server.admin)
                        .json(&policy)
                        .send()
                        .await
                        .unwrap()
                        .status()
                        .is_success()
                );
                tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
                server.run("/v1/retention/run").await;
                let gone = server.request(Method::DELETE, &path, &server.admin).send().await.unwrap();
                assert!(gone.status().is_success());
            }
            _ => {
                server.run("/v1/reclaim/run").await;
            }
        }
    }
    // The recount through the API.
    let mut linked: Vec<(String, String, u64)> = Vec::new();
    for (repo, digest, size) in &pushed {
        let head = server.request(Method::HEAD, &format!("/v1/repos/{repo}/blobs/{digest}"), &token).send().await;
        if head.unwrap().status() == StatusCode::OK && !linked.iter().any(|(r, d, _)| r == repo && d == digest) {
            linked.push((repo.to_string(), digest.clone(), *size));
        }
    }
    let listed = repos(&server, &server.admin, "").await;
    for repo in repos_names {
        let tags_page: Value = server
            .request(Method::GET, &format!("/v1/repos/{repo}/tags?limit=1000"), &token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let all = tags_page["tags"].as_array().unwrap();
        let live = all.iter().filter(|t| t["state"] == "live").count() as u64;
        let blobs: Vec<_> = linked.iter().filter(|(r, _, _)| r == repo).collect();
        let entry = listed["repositories"].as_array().unwrap().iter().find(|r| r["name"] == repo);
        if all.is_empty() && blobs.is_empty() {
            assert!(entry.is_none(), "{repo} holds nothing: {listed}");
            continue;
        }
        let entry = entry.unwrap_or_else(|| panic!("{repo} is not listed: {listed}"));
        assert_eq!(entry["tags"], all.len() as u64, "{repo}: {entry}");
        assert_eq!(entry["live_tags"], live, "{repo}: {entry}");
        assert_eq!(entry["blobs"], blobs.len() as u64, "{repo}: {entry}");
        assert_eq!(entry["bytes"], blobs.iter().map(|(_, _, s)| s).sum::<u64>(), "{repo}: {entry}");
    }
    let storage: Value =
        server.request(Method::GET, "/v1/storage", &server.admin).send().await.unwrap().json().await.unwrap();
    assert_eq!(storage["links"], linked.len() as u64, "{storage}");
    assert_eq!(storage["linked_bytes"], linked.iter().map(|(_, _, s)| s).sum::<u64>(), "{storage}");
    let mut waiting = std::collections::BTreeMap::new();
    for (_, digest, size) in &pushed {
        if !linked.iter().any(|(_, d, _)| d == digest) && server.stored(digest).await {
            waiting.insert(digest.clone(), *size);
        }
    }
    assert_eq!(storage["pending_reclaim"], waiting.len() as u64, "{storage}");
    assert_eq!(storage["pending_reclaim_bytes"], waiting.values().sum::<u64>(), "{storage}");
    // And the store's own recount.
    let fsck = server.run("/v1/fsck/run").await;
    assert_eq!(fsck["faults"], json!([]), "{fsck}");
}

on_both_backends!(counters_equal_a_recount);
