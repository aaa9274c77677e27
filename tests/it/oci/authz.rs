//! The authorization matrix of `/v2/`: every route, with no token, a bad
//! one, a token of another repository, a token lacking the action, and the
//! token that may; and the token endpoint. Default deny everywhere.

use reqwest::{Method, StatusCode};

use super::protocol::{image, push_blob, put_manifest, sha256};
use crate::backends::Backend;
use crate::harness::TestServer;
use crate::on_both_backends;

async fn every_route_is_default_deny(backend: Backend) {
    let server = TestServer::on(backend).await;
    let owner = server.token(&[("acme/web", &["pull", "push"])]).await;
    let puller = server.token(&[("acme/web", &["pull"])]).await;
    let pusher = server.token(&[("acme/web", &["push"])]).await;
    let stranger = server.token(&[("acme/api", &["pull", "push"])]).await;
    let blob = push_blob(&server, &owner, "acme/web", b"matrix layer").await;
    let manifest = image(&server, &owner, "acme/web", &[(b"matrix layer", "layer")]).await;
    assert_eq!(put_manifest(&server, &owner, "acme/web", "1", &manifest).await.status(), StatusCode::CREATED);
    let digest = sha256(&manifest);
    let start = server.request(Method::POST, "/v2/acme/web/blobs/uploads/", &owner).send().await.unwrap();
    let session = start.headers()["location"].to_str().unwrap().to_owned();

    // (method, path, needs push)
    let routes: Vec<(Method, String, bool)> = vec![
        (Method::HEAD, format!("/v2/acme/web/blobs/{blob}"), false),
        (Method::GET, format!("/v2/acme/web/blobs/{blob}"), false),
        (Method::POST, "/v2/acme/web/blobs/uploads/".into(), true),
        (Method::PATCH, session.clone(), true),
        (Method::GET, session.clone(), true),
        (Method::PUT, format!("{session}?digest={}", sha256(b"")), true),
        (Method::DELETE, session.clone(), true),
        (Method::PUT, "/v2/acme/web/manifests/2".into(), true),
        (Method::HEAD, "/v2/acme/web/manifests/1".into(), false),
        (Method::GET, format!("/v2/acme/web/manifests/{digest}"), false),
        (Method::GET, "/v2/acme/web/tags/list".into(), false),
        (Method::GET, format!("/v2/acme/web/referrers/{digest}"), false),
    ];
    for (method, path, push) in &routes {
        let send = |token: Option<&str>| {
            let mut request = server.http.request(method.clone(), server.url(path));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            if *method == Method::PUT && path.contains("/manifests/") {
                request =
                    request.header("content-type", "application/vnd.oci.image.manifest.v1+json").body(manifest.clone());
            }
            request.send()
        };
        let none = send(None).await.unwrap();
        assert_eq!(none.status(), StatusCode::UNAUTHORIZED, "{method} {path} without a token");
        assert!(none.headers().get_all("www-authenticate").iter().count() == 2, "{method} {path}: both challenges");
        let bad = send(Some("amber_notarealtoken")).await.unwrap();
        assert_eq!(bad.status(), StatusCode::UNAUTHORIZED, "{method} {path} with a bad token");
        let other = send(Some(&stranger)).await.unwrap();
        assert_eq!(other.status(), StatusCode::FORBIDDEN, "{method} {path} from another repository's token");
        let lacking = send(Some(if *push { &puller } else { &pusher })).await.unwrap();
        assert_eq!(lacking.status(), StatusCode::FORBIDDEN, "{method} {path} lacking the action");
        if *method != Method::HEAD {
            let body: serde_json::Value = lacking.json().await.unwrap();
            assert_eq!(body["errors"][0]["code"], "DENIED");
        }
    }
    // The session is its creator's: even a token of the same grants sees none.
    let same_grants = server.token(&[("acme/web", &["pull", "push"])]).await;
    let foreign = server.request(Method::GET, &session, &same_grants).send().await.unwrap();
    assert_eq!(foreign.status(), StatusCode::NOT_FOUND);
    // The catalog and the base need any token.
    for path in ["/v2/", "/v2/_catalog"] {
        assert_eq!(server.http.get(server.url(path)).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    }
    // The token endpoint: an Amber token only, and it never widens.
    let token = server.http.get(server.url("/v2/token?scope=repository:acme/web:pull")).send().await.unwrap();
    assert_eq!(token.status(), StatusCode::UNAUTHORIZED);
    let wide: serde_json::Value = server
        .http
        .get(server.url("/v2/token?scope=repository:acme/web:pull,push&scope=repository:acme/api:pull"))
        .basic_auth("x", Some(&puller))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let scoped = wide["token"].as_str().unwrap();
    for (method, path, push) in &routes {
        if method == Method::PUT || method == Method::DELETE || method == Method::PATCH {
            continue;
        }
        let response = server.http.request(method.clone(), server.url(path)).bearer_auth(scoped).send().await.unwrap();
        let expected = if *push { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
        assert!(
            response.status() == expected || (!*push && response.status().is_success()),
            "{method} {path} with a pull-scoped token: {}",
            response.status()
        );
    }
    let api = server.http.get(server.url("/v2/acme/api/tags/list")).bearer_auth(scoped).send().await.unwrap();
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED, "never wider than the parent's grants");
}

on_both_backends!(every_route_is_default_deny);
