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
