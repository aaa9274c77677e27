//! The token lifecycle and the audit log, as an operator uses them.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::backends::Backend;
use crate::harness::{TestServer, data, expect_error, independent_b3_bytes};
use crate::on_both_backends;

/// A token class of the authorization matrix and the secret to send.
struct Class {
    name: &'static str,
    secret: Option<String>,
    pull: bool,
    push: bool,
    admin: bool,
    /// Rejected before any grant is looked at.
    invalid: bool,
}

async fn create(server: &TestServer, grants: &[(&str, &[&str])], extra: Value) -> Value {
    let grants: Vec<Value> = grants.iter().map(|(r, a)| json!({"repos": r, "actions": a})).collect();
    let mut body = json!({"name": "matrix", "grants": grants});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let response = server.request(Method::POST, "/v1/tokens", &server.admin).json(&body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.unwrap()
}

/// One request of the matrix: what it needs and what it answers when allowed.
struct Case {
    method: Method,
    template: &'static str,
    path: String,
    json_body: Option<Value>,
    raw_body: Option<Vec<u8>>,
    needs: &'static str,
    allowed: StatusCode,
}

type CaseParts = (Method, &'static str, String, Option<Value>, Option<Vec<u8>>, &'static str, StatusCode);

impl From<CaseParts> for Case {
    fn from((method, template, path, json_body, raw_body, needs, allowed): CaseParts) -> Self {
        Self { method, template, path, json_body, raw_body, needs, allowed }
    }
}

async fn victim(server: &TestServer) -> String {
    create(server, &[("acme/web", &["pull"])], json!({})).await["id"].as_str().unwrap().to_owned()
}

const UPLOADS: &str = "/v1/repos/{owner}/{name}/uploads";
const UPLOAD: &str = "/v1/repos/{owner}/{name}/uploads/{id}";
const UPLOADS_OF_WEB: &str = "/v1/repos/acme/web/uploads";

async fn authorization_matrix_has_no_unexpected_allow(backend: Backend) {
    let server = TestServer::on(backend).await;
    let no_upload = format!("{UPLOADS_OF_WEB}/{:032x}", 0x5eed_u128);
    let owner = server.token(&[("acme/*", &["push", "pull"])]).await;
    let bytes = data(500, 1);
    let digest = independent_b3_bytes(&bytes);
    let blob = format!("/v1/repos/acme/web/blobs/{digest}");
    server.request(Method::PUT, &blob, &owner).body(bytes.clone()).send().await.unwrap();
    let files = json!({"files": [{"path": "f", "digest": digest, "size": 500}]});
    let tag = server.request(Method::PUT, "/v1/repos/acme/web/tags/v1", &owner).json(&files).send().await.unwrap();
    let manifest = tag.headers()["amber-manifest-digest"].to_str().unwrap().to_owned();
    // A tag for the admin's expiry, and a policy to read, plan and delete.
    server.request(Method::PUT, "/v1/repos/acme/web/tags/v2", &owner).json(&files).send().await.unwrap();
    let policy = json!({"keep_tags": ["v*"]});
    let put = server.request(Method::PUT, "/v1/retention/acme/web", &server.admin).json(&policy).send().await.unwrap();
    assert_eq!(put.status(), StatusCode::OK);

    let expired = create(&server, &[("acme/*", &["push", "pull"])], json!({"expires_in": 1})).await;
    let revoked = create(&server, &[("acme/*", &["push", "pull"])], json!({})).await;
    server
        .request(Method::DELETE, &format!("/v1/tokens/{}", revoked["id"].as_str().unwrap()), &server.admin)
        .send()
        .await
        .unwrap();
    let rotated = create(&server, &[("acme/*", &["push", "pull"])], json!({})).await;
    let rotate = server
        .request(Method::POST, &format!("/v1/tokens/{}/rotate", rotated["id"].as_str().unwrap()), &server.admin)
        .json(&json!({"grace_seconds": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(rotate.status(), StatusCode::CREATED);
    let mut bad_checksum = owner.clone().into_bytes();
    let last = bad_checksum.len() - 1;
    bad_checksum[last] = if bad_checksum[last] == b'0' { b'1' } else { b'0' };
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let secret = |v: &Value| Some(v["token"].as_str().unwrap().to_owned());
    let classes = vec![
        Class { name: "none", secret: None, pull: false, push: false, admin: false, invalid: true },
        Class {
            name: "garbage",
            secret: Some("let-me-in".into()),
            pull: false,
            push: false,
            admin: false,
            invalid: true,
        },
        Class {
            name: "bad checksum",
            secret: Some(String::from_utf8(bad_checksum).unwrap()),
            pull: false,
            push: false,
            admin: false,
            invalid: true,
        },
        Class { name: "expired", secret: secret(&expired), pull: false, push: false, admin: false, invalid: true },
        Class { name: "revoked", secret: secret(&revoked), pull: false, push: false, admin: false, invalid: true },
        Class {
            name: "rotated past grace",
            secret: secret(&rotated),
            pull: false,
            push: false,
            admin: false,
            invalid: true,
        },
        Class {
            name: "pull-only",
            secret: Some(server.token(&[("acme/web", &["pull"])]).await),
            pull: true,
            push: false,
            admin: false,
            invalid: false,
        },
        Class {
            name: "push-only",
            secret: Some(server.token(&[("acme/web", &["push"])]).await),
            pull: false,
            push: true,
            admin: false,
            invalid: false,
        },
        Class {
            name: "another repository",
            secret: Some(server.token(&[("acme/api", &["push", "pull"])]).await),
            pull: false,
            push: false,
            admin: false,
            invalid: false,
        },
        Class {
            name: "owner wildcard",
            secret: Some(owner.clone()),
            pull: true,
            push: true,
            admin: false,
            invalid: false,
        },
        Class {
            name: "admin",
            secret: Some(server.admin.clone()),
            pull: false,
            push: false,
            admin: true,
            invalid: false,
        },
    ];

    let mut covered = BTreeSet::new();
    let mut unexpected = Vec::new();
    for class in &classes {
        // Targets that an allowed admin call may consume.
        let rotate_target = victim(&server).await;
        let revoke_target = victim(&server).await;
        // (method, route template, concrete path, body, needs, status when allowed)
        let cases: Vec<CaseParts> = vec![
            (Method::GET, "/v1/whoami", "/v1/whoami".into(), None, None, "any", StatusCode::OK),
            (
                Method::POST,
                "/v1/tokens",
                "/v1/tokens".into(),
                Some(json!({"name": "x", "grants": [{"repos": "acme/web", "actions": ["pull"]}]})),
                None,
                "admin",
                StatusCode::CREATED,
            ),
            (Method::GET, "/v1/tokens", "/v1/tokens".into(), None, None, "admin", StatusCode::OK),
            (
                Method::GET,
                "/v1/tokens/{id}",
                format!("/v1/tokens/{rotate_target}"),
                None,
                None,
                "admin",
                StatusCode::OK,
            ),
            (
                Method::POST,
                "/v1/tokens/{id}/rotate",
                format!("/v1/tokens/{rotate_target}/rotate"),
                Some(json!({})),
                None,
                "admin",
                StatusCode::CREATED,
            ),
            (
                Method::DELETE,
                "/v1/tokens/{id}",
                format!("/v1/tokens/{revoke_target}"),
                None,
                None,
                "admin",
                StatusCode::OK,
            ),
            (Method::GET, "/v1/audit", "/v1/audit".into(), None, None, "admin", StatusCode::OK),
            (
                Method::PUT,
                "/v1/repos/{owner}/{name}/blobs/{digest}",
                blob.clone(),
                None,
                Some(bytes.clone()),
                "push",
                StatusCode::OK,
            ),
            (
                Method::POST,
                "/v1/repos/{owner}/{name}/blobs",
                "/v1/repos/acme/web/blobs".into(),
                None,
                Some(bytes.clone()),
                "push",
                StatusCode::OK,
            ),
            (Method::HEAD, "/v1/repos/{owner}/{name}/blobs/{digest}", blob.clone(), None, None, "pull", StatusCode::OK),
            (Method::GET, "/v1/repos/{owner}/{name}/blobs/{digest}", blob.clone(), None, None, "pull", StatusCode::OK),
            (Method::GET, "/v1/repos", "/v1/repos".into(), None, None, "any", StatusCode::OK),
            // tus: every request of the matrix carries the tus headers. An
            // upload is bound to its creator, so one that no class created
            // is unknown to every class with the grant.
            (Method::POST, UPLOADS, UPLOADS_OF_WEB.into(), None, None, "push", StatusCode::CREATED),
            (Method::HEAD, UPLOAD, no_upload.clone(), None, None, "push", StatusCode::NOT_FOUND),
            (Method::PATCH, UPLOAD, no_upload.clone(), None, Some(b"abc".to_vec()), "push", StatusCode::NOT_FOUND),
            (Method::DELETE, UPLOAD, no_upload.clone(), None, None, "push", StatusCode::NOT_FOUND),
            (
                Method::POST,
                "/v1/repos/{owner}/{name}/blobs/missing",
                "/v1/repos/acme/web/blobs/missing".into(),
                Some(json!({"digests": [digest]})),
                None,
                "push",
                StatusCode::OK,
            ),
            (
                Method::PUT,
                "/v1/repos/{owner}/{name}/tags/{tag}",
                "/v1/repos/acme/web/tags/v1".into(),
                Some(files.clone()),
                None,
                "push",
                StatusCode::OK,
            ),
            (
                Method::GET,
                "/v1/repos/{owner}/{name}/tags/{tag}",
                "/v1/repos/acme/web/tags/v1".into(),
                None,
                None,
                "pull",
                StatusCode::OK,
            ),
            (
                Method::GET,
                "/v1/repos/{owner}/{name}/tags",
                "/v1/repos/acme/web/tags".into(),
                None,
                None,
                "pull",
                StatusCode::OK,
            ),
            (
                Method::GET,
                "/v1/repos/{owner}/{name}/manifests/{digest}",
                format!("/v1/repos/acme/web/manifests/{manifest}"),
                None,
                None,
                "pull",
                StatusCode::OK,
            ),
            (
                Method::GET,
                "/v1/repos/{owner}/{name}/tags/{tag}/receipt",
                "/v1/repos/acme/web/tags/v1/receipt".into(),
                None,
                None,
                "pull",
                StatusCode::OK,
            ),
            (
                Method::GET,
                "/v1/repos/{owner}/{name}/tags/{tag}/attestations",
                "/v1/repos/acme/web/tags/v1/attestations".into(),
                None,
                None,
                "pull",
                StatusCode::OK,
            ),
            // Hash tiles are public; entry bundles are the admin's.
            (
                Method::GET,
                "/v1/log/tile/{*path}",
                "/v1/log/tile/entries/000.p/1".into(),
                None,
                None,
                "admin",
                StatusCode::OK,
            ),
            (
                Method::PUT,
                "/v1/repos/{owner}/{name}/tags/{tag}/hold",
                "/v1/repos/acme/web/tags/v1/hold".into(),
                Some(json!({"reason": "matrix"})),
                None,
                "admin",
                StatusCode::OK,
            ),
            (
                Method::DELETE,
                "/v1/repos/{owner}/{name}/tags/{tag}/hold",
                "/v1/repos/acme/web/tags/v1/hold".into(),
                None,
                None,
                "admin",
                StatusCode::OK,
            ),
            (
                Method::POST,
                "/v1/repos/{owner}/{name}/tags/{tag}/expire",
                "/v1/repos/acme/web/tags/v2/expire".into(),
                Some(json!({"reason": "matrix"})),
                None,
                "admin",
                StatusCode::OK,
            ),
            (Method::GET, "/v1/retention", "/v1/retention".into(), None, None, "admin", StatusCode::OK),
            (
                Method::PUT,
                "/v1/retention/{owner}/{name}",
                "/v1/retention/acme/web".into(),
                Some(policy.clone()),
                None,
                "admin",
                StatusCode::OK,
            ),
            (
                Method::GET,
                "/v1/retention/{owner}/{name}",
                "/v1/retention/acme/web".into(),
                None,
                None,
                "pull or admin",
                StatusCode::OK,
            ),
            (
                Method::POST,
                "/v1/retention/{owner}/{name}/plan",
                "/v1/retention/acme/web/plan".into(),
                None,
                None,
                "admin",
                StatusCode::OK,
            ),
            (Method::POST, "/v1/retention/run", "/v1/retention/run".into(), None, None, "admin", StatusCode::ACCEPTED),
            (Method::POST, "/v1/reclaim/run", "/v1/reclaim/run".into(), None, None, "admin", StatusCode::ACCEPTED),
            (Method::GET, "/v1/scrub", "/v1/scrub".into(), None, None, "admin", StatusCode::OK),
            (Method::POST, "/v1/scrub/run", "/v1/scrub/run".into(), None, None, "admin", StatusCode::ACCEPTED),
            (Method::POST, "/v1/fsck/run", "/v1/fsck/run".into(), None, None, "admin", StatusCode::ACCEPTED),
            (Method::GET, "/v1/runs", "/v1/runs".into(), None, None, "admin", StatusCode::OK),
            (Method::GET, "/v1/runs/{id}", "/v1/runs/00000000".into(), None, None, "admin", StatusCode::NOT_FOUND),
            (Method::GET, "/v1/storage", "/v1/storage".into(), None, None, "admin", StatusCode::OK),
            // No issuer is configured here: an admin's publisher is refused
            // as invalid, after the grant check.
            (
                Method::POST,
                "/v1/publishers",
                "/v1/publishers".into(),
                Some(json!({"name": "p", "issuer": "github", "grants": [{"repos": "acme/web", "actions": ["pull"]}]})),
                None,
                "admin",
                StatusCode::BAD_REQUEST,
            ),
            (Method::GET, "/v1/publishers", "/v1/publishers".into(), None, None, "admin", StatusCode::OK),
            (
                Method::GET,
                "/v1/publishers/{id}",
                "/v1/publishers/pub_000000000000000000000000".into(),
                None,
                None,
                "admin",
                StatusCode::NOT_FOUND,
            ),
            (
                Method::DELETE,
                "/v1/publishers/{id}",
                "/v1/publishers/pub_000000000000000000000000".into(),
                None,
                None,
                "admin",
                StatusCode::NOT_FOUND,
            ),
            (
                Method::DELETE,
                "/v1/retention/{owner}/{name}",
                "/v1/retention/acme/web".into(),
                None,
                None,
                "admin",
                StatusCode::OK,
            ),
        ];
        for Case { method, template, path, json_body, raw_body, needs, allowed } in cases.into_iter().map(Case::from) {
            covered.insert((method.to_string(), template.to_owned()));
            let mut request = server
                .http
                .request(method.clone(), server.url(&path))
                .header("Tus-Resumable", "1.0.0")
                .header("Upload-Length", "3")
                .header("Upload-Offset", "0");
            if let Some(secret) = &class.secret {
                request = request.bearer_auth(secret);
            }
            if let Some(body) = json_body {
                request = request.json(&body);
            }
            if let Some(body) = raw_body {
                request = request.header("Content-Type", "application/offset+octet-stream").body(body);
            }
            let status = request.send().await.unwrap().status();
            let granted = match needs {
                "any" => !class.invalid,
                "admin" => class.admin,
                "push" => class.push,
                "pull" => class.pull,
                "pull or admin" => class.pull || class.admin,
                _ => unreachable!(),
            };
            let expected = if class.invalid {
                StatusCode::UNAUTHORIZED
            } else if granted {
                allowed
            } else {
                StatusCode::FORBIDDEN
            };
            if status != expected {
                unexpected.push(format!("{} {method} {path}: got {status}, expected {expected}", class.name));
            }
        }
    }
    assert!(unexpected.is_empty(), "{} unexpected outcomes:\n{}", unexpected.len(), unexpected.join("\n"));
    // The exchange takes an ID token instead (tests/it/oidc.rs).
    // The log's checkpoint and proofs reveal nothing (tests/it/log.rs).
    let public = [
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/keys",
        "/v1/attestations/policy",
        "/v1/oidc/token",
        "/v1/log/checkpoint",
        "/v1/log/proof",
        "/v1/log/consistency",
    ];
    // `OPTIONS` of the tus routes says only what the server speaks.
    let routes: BTreeSet<(String, String)> = amber_server::http::routes()
        .into_iter()
        .filter(|(method, path, _)| !public.contains(path) && *method != Method::OPTIONS)
        .map(|(m, p, _)| (m.to_string(), p.to_owned()))
        .collect();
    assert_eq!(covered, routes, "the matrix covers every authenticated route");
}

async fn rotation_keeps_the_old_secret_for_its_grace_only(backend: Backend) {
    let server = TestServer::on(backend).await;
    let old = create(&server, &[("acme/web", &["pull"])], json!({"pipeline": "web", "expires_in": 86_400})).await;
    let old_id = old["id"].as_str().unwrap().to_owned();
    let old_secret = old["token"].as_str().unwrap().to_owned();
    let rotated = server
        .request(Method::POST, &format!("/v1/tokens/{old_id}/rotate"), &server.admin)
        .json(&json!({"grace_seconds": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(rotated.status(), StatusCode::CREATED);
    let new: Value = rotated.json().await.unwrap();
    let new_secret = new["token"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, old_secret);
    assert_eq!(new["grants"], old["grants"]);
    assert_eq!(new["pipeline"], "web");
    assert_eq!(new["rotated_from"], old_id.as_str());

    // During the grace both work, and the old one warns that it ends soon.
    let during = server.request(Method::GET, "/v1/whoami", &old_secret).send().await.unwrap();
    assert_eq!(during.status(), StatusCode::OK);
    assert!(during.headers()["warning"].to_str().unwrap().contains(&old_id));
    let fresh = server.request(Method::GET, "/v1/whoami", &new_secret).send().await.unwrap();
    assert_eq!(fresh.status(), StatusCode::OK);
    assert!(fresh.headers().get("warning").is_none());

    let shown: Value = server
        .request(Method::GET, &format!("/v1/tokens/{old_id}"), &server.admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["rotated_to"], new["id"]);
    let again =
        server.request(Method::POST, &format!("/v1/tokens/{old_id}/rotate"), &server.admin).send().await.unwrap();
    expect_error(again, StatusCode::CONFLICT, "token_inactive").await;

    tokio::time::sleep(Duration::from_millis(2200)).await;
    let after = server.request(Method::GET, "/v1/whoami", &old_secret).send().await.unwrap();
    let body = expect_error(after, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert!(body["error"]["message"].as_str().unwrap().contains("rotated"));
    assert_eq!(server.request(Method::GET, "/v1/whoami", &new_secret).send().await.unwrap().status(), StatusCode::OK);

    // Grace 0 ends the old secret at once; revocation too, on the very next request.
    let zero: Value = server
        .request(Method::POST, &format!("/v1/tokens/{}/rotate", new["id"].as_str().unwrap()), &server.admin)
        .json(&json!({"grace_seconds": 0}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        server.request(Method::GET, "/v1/whoami", &new_secret).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let newest = zero["token"].as_str().unwrap();
    assert_eq!(server.request(Method::GET, "/v1/whoami", newest).send().await.unwrap().status(), StatusCode::OK);
    let revoked = server
        .request(Method::DELETE, &format!("/v1/tokens/{}", zero["id"].as_str().unwrap()), &server.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    assert!(revoked.json::<Value>().await.unwrap()["revoked_at"].is_string());
    assert_eq!(
        server.request(Method::GET, "/v1/whoami", newest).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );

    let unknown =
        server.request(Method::DELETE, "/v1/tokens/tok_000000000000000000000000", &server.admin).send().await.unwrap();
    expect_error(unknown, StatusCode::NOT_FOUND, "token_unknown").await;
    let bad = server.request(Method::GET, "/v1/tokens/nope", &server.admin).send().await.unwrap();
    expect_error(bad, StatusCode::NOT_FOUND, "token_unknown").await;
    let too_long = server
        .request(Method::POST, &format!("/v1/tokens/{old_id}/rotate"), &server.admin)
        .json(&json!({"grace_seconds": 99_999_999}))
        .send()
        .await
        .unwrap();
    expect_error(too_long, StatusCode::BAD_REQUEST, "request_invalid").await;

    // Listing pages through every token, never with a secret.
    let page: Value =
        server.request(Method::GET, "/v1/tokens?limit=2", &server.admin).send().await.unwrap().json().await.unwrap();
    assert_eq!(page["tokens"].as_array().unwrap().len(), 2);
    assert!(page["next"].is_string());
    assert!(!page.to_string().contains("amber_"));
}

async fn the_cli_manages_tokens_and_nothing_leaks(backend: Backend) {
    let server = TestServer::on(backend).await;
    let created = server
        .amber(
            &server.admin,
            &[
                "token",
                "create",
                "--name",
                "web-ci",
                "--pipeline",
                "acme/web",
                "--grant",
                "acme/web=push,pull",
                "--expires-in",
                "3600",
            ],
        )
        .await;
    assert_eq!(created.code, 0, "{}", created.stderr);
    let secret = created.stdout.trim().to_owned();
    assert!(secret.starts_with("amber_"));
    let me = server.amber(&secret, &["whoami"]).await;
    let me: Value = serde_json::from_str(&me.stdout).unwrap();
    let id = me["id"].as_str().unwrap().to_owned();
    assert_eq!(me["pipeline"], "acme/web");

    let pushed =
        server.request(Method::POST, "/v1/repos/acme/web/blobs", &secret).body(data(10, 3)).send().await.unwrap();
    assert_eq!(pushed.status(), StatusCode::CREATED);
    let listed = server.amber(&server.admin, &["token", "list"]).await;
    assert!(listed.stdout.contains(&id));
    let shown = server.amber(&server.admin, &["token", "show", &id]).await;
    assert_eq!(serde_json::from_str::<Value>(&shown.stdout).unwrap()["name"], "web-ci");
    let rotated = server.amber(&server.admin, &["token", "rotate", &id, "--grace", "0"]).await;
    assert_eq!(rotated.code, 0, "{}", rotated.stderr);
    let new_secret = rotated.stdout.trim().to_owned();
    assert_eq!(server.amber(&secret, &["whoami"]).await.code, 3, "the old secret is refused with the auth exit code");
    assert_eq!(server.amber(&new_secret, &["whoami"]).await.code, 0);
    let new_id = serde_json::from_str::<Value>(&server.amber(&new_secret, &["whoami"]).await.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let revoked = server.amber(&server.admin, &["token", "revoke", &new_id]).await;
    assert_eq!(revoked.code, 0, "{}", revoked.stderr);
    assert_eq!(server.amber(&new_secret, &["whoami"]).await.code, 3);
    let denied = server.amber(&new_secret, &["token", "list"]).await;
    assert_eq!(denied.code, 3);
    let usage = server.amber(&server.admin, &["token", "create", "--name", "x", "--grant", "acme/web=fly"]).await;
    assert_eq!(usage.code, 2);

    let logs = server.logs_with("path=/v1/tokens").await;
    for secret in [&secret, &new_secret, &server.admin] {
        assert!(!logs.contains(secret.as_str()), "a secret reached the server log");
        let random = &secret.as_bytes()["amber_".len()..];
        for (place, content) in server.persisted() {
            assert!(!content.windows(random.len()).any(|w| w == random), "a secret is at rest in {place}");
        }
    }
}

/// Produces a log with every kind of event.
async fn busy_log(server: &TestServer) -> String {
    let token = server.token(&[("acme/*", &["push", "pull"])]).await;
    let bytes = data(100, 5);
    let digest = independent_b3_bytes(&bytes);
    server
        .request(Method::PUT, &format!("/v1/repos/acme/web/blobs/{digest}"), &token)
        .body(bytes)
        .send()
        .await
        .unwrap();
    let files = json!({"files": [{"path": "f", "digest": digest, "size": 100}]});
    server.request(Method::PUT, "/v1/repos/acme/web/tags/v1", &token).json(&files).send().await.unwrap();
    let denied = server.request(Method::GET, "/v1/audit", &token).send().await.unwrap();
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    token
}

async fn the_audit_log_records_every_change_and_verifies(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = busy_log(&server).await;
    let me: Value = server.request(Method::GET, "/v1/whoami", &token).send().await.unwrap().json().await.unwrap();
    let page: Value =
        server.request(Method::GET, "/v1/audit", &server.admin).send().await.unwrap().json().await.unwrap();
    let kinds: Vec<String> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(e["entry"].as_str().unwrap()).unwrap()["event"]["kind"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        kinds,
        ["token_created", "token_created", "blob_pushed", "manifest_pushed", "tag_bound", "request_denied"]
    );
    let denied: Value = serde_json::from_str(page["entries"][5]["entry"].as_str().unwrap()).unwrap();
    assert_eq!(denied["actor"]["token_id"], me["id"]);
    assert_eq!(denied["event"]["route"], "/v1/audit");
    assert_eq!(denied["event"]["status"], 403);
    assert!(page["checkpoint"]["payloadType"].as_str().unwrap().contains("audit-checkpoint"));
    assert!(!page.to_string().contains(&token), "no secret in the audit log");

    // A flood of denials of one kind becomes a few entries that count them all.
    let flood = (0..40).map(|_| server.request(Method::GET, "/v1/whoami", "amber_not_a_real_token").send());
    for response in futures_util::future::join_all(flood).await {
        assert_eq!(response.unwrap().status(), StatusCode::UNAUTHORIZED);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (entries, counted) = loop {
        let page: Value =
            server.request(Method::GET, "/v1/audit", &server.admin).send().await.unwrap().json().await.unwrap();
        let events: Vec<Value> = page["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| serde_json::from_str::<Value>(e["entry"].as_str().unwrap()).unwrap()["event"].clone())
            .filter(|e| e["route"] == "/v1/whoami")
            .collect();
        let counted: u64 = events.iter().map(|e| e["count"].as_u64().unwrap_or(1)).sum();
        if counted == 40 || std::time::Instant::now() > deadline {
            break (events.len(), counted);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(counted, 40, "every denial is accounted for");
    assert!(entries <= 3, "40 denials took {entries} entries");

    let keys = server.http.get(server.url("/v1/keys")).send().await.unwrap().text().await.unwrap();
    let key_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key_file.path(), keys).unwrap();
    let ok = server.amber(&server.admin, &["audit", "verify", "--key", key_file.path().to_str().unwrap()]).await;
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert!(ok.stderr.contains("intact"));
}

/// Tampers with the stored log, restarts, and returns what `amber audit verify` said.
async fn tamper(edit: impl FnOnce(&sled::Tree)) -> (i32, String) {
    let mut server = TestServer::start().await;
    busy_log(&server).await;
    server.with_stopped_meta(|db| edit(&db.open_tree("audit").unwrap()));
    server.restart();
    let run = server.amber(&server.admin, &["audit", "verify"]).await;
    (run.code, run.stderr)
}

fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

#[tokio::test]
async fn editing_deleting_or_reordering_an_entry_is_detected_and_named() {
    let (code, said) = tamper(|audit| {
        let value = audit.get(key(3)).unwrap().unwrap().to_vec();
        let text = String::from_utf8(value).unwrap().replacen("\"size\":100", "\"size\":999", 1);
        audit.insert(key(3), text.as_bytes()).unwrap();
    })
    .await;
    assert_eq!(code, 4, "{said}");
    assert!(said.contains("entry 3"), "{said}");

    let (code, said) = tamper(|audit| {
        audit.remove(key(2)).unwrap();
    })
    .await;
    assert_eq!(code, 4, "{said}");
    assert!(said.contains("entry 2"), "{said}");

    let (code, said) = tamper(|audit| {
        let (a, b) = (audit.get(key(3)).unwrap().unwrap(), audit.get(key(4)).unwrap().unwrap());
        audit.insert(key(3), b).unwrap();
        audit.insert(key(4), a).unwrap();
    })
    .await;
    assert_eq!(code, 4, "{said}");
    assert!(said.contains("entry 3"), "{said}");

    // Dropping the newest entry is caught by the signed checkpoint.
    let (code, said) = tamper(|audit| {
        // The restart's own request_denied-free run leaves entry 6 last.
        let last = audit.last().unwrap().unwrap().0;
        audit.remove(last).unwrap();
    })
    .await;
    assert_eq!(code, 4, "{said}");
    assert!(said.contains("checkpoint"), "{said}");
}

on_both_backends!(
    authorization_matrix_has_no_unexpected_allow,
    rotation_keeps_the_old_secret_for_its_grace_only,
    the_cli_manages_tokens_and_nothing_leaks,
    the_audit_log_records_every_change_and_verifies,
);
