//! Trusted publishing against a fake issuer on 127.0.0.1: every check of the
//! exchange, replay across replicas, key rotation and an issuer that goes
//! down, publishers, the minted tokens' limits and the signed provenance of
//! what they push (verified with Python's `cryptography`), and the CLI in a
//! fake GitHub Actions job.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::backends::Backend;
use crate::fake_issuer::{FakeIssuer, Key, REQUEST_TOKEN, b64, jwt};
use crate::harness::{TestServer, amber_bin, data, expect_error, independent_b3_bytes, payload, verify_with_python};
use crate::on_both_backends;

/// A server trusting `issuers` as `(name, issuer, kind)`; the returned
/// directory holds its configuration file.
pub(crate) async fn server_trusting(
    backend: Backend,
    issuers: &[(&str, &FakeIssuer, &str)],
) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut toml = String::new();
    for (name, issuer, kind) in issuers {
        toml.push_str(&format!(
            "[[oidc.issuers]]\nname = \"{name}\"\nurl = \"{}\"\nkind = \"{kind}\"\nallow_insecure_http = true\n\n",
            issuer.url
        ));
    }
    let path = dir.path().join("amber.toml");
    std::fs::write(&path, toml).unwrap();
    let server = TestServer::builder().backend(backend).arg("--config").arg(path.to_str().unwrap()).start().await;
    (server, dir)
}

pub(crate) fn github_publisher() -> Value {
    json!({
        "name": "web release", "issuer": "github",
        "github": {"repository": "acme/web", "repository_id": "123456789", "repository_owner_id": "98765",
                   "workflow": "release.yml", "environment": "production",
                   "refs": ["refs/heads/main", "refs/tags/v*"]},
        "grants": [{"repos": "acme/web", "actions": ["push", "pull"]}],
    })
}

pub(crate) async fn create_publisher(server: &TestServer, body: &Value) -> Value {
    let response = server.request(Method::POST, "/v1/publishers", &server.admin).json(body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED, "{}", response.text().await.unwrap());
    response.json().await.unwrap()
}

async fn exchange_at(server: &TestServer, url: &str, id_token: &str) -> reqwest::Response {
    server.http.post(url).json(&json!({ "id_token": id_token })).send().await.unwrap()
}

async fn exchange(server: &TestServer, id_token: &str) -> reqwest::Response {
    exchange_at(server, &server.url("/v1/oidc/token"), id_token).await
}

pub(crate) async fn minted(server: &TestServer, id_token: &str) -> Value {
    let response = exchange(server, id_token).await;
    assert_eq!(response.status(), StatusCode::CREATED, "{}", response.text().await.unwrap());
    response.json().await.unwrap()
}

/// Expects `401 oidc_invalid` whose message names `words`.
async fn refused(server: &TestServer, id_token: &str, words: &str) {
    let body = expect_error(exchange(server, id_token).await, StatusCode::UNAUTHORIZED, "oidc_invalid").await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(words), "expected {words:?} in {message:?}");
}

/// Expects `403 oidc_no_publisher` naming `claim` as the first difference.
async fn untrusted(server: &TestServer, id_token: &str, claim: &str) {
    let body = expect_error(exchange(server, id_token).await, StatusCode::FORBIDDEN, "oidc_no_publisher").await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(&format!("differs in {claim}")), "expected {claim} in {message:?}");
}

pub(crate) fn with(mut claims: Value, changes: Value) -> Value {
    let Value::Object(changes) = changes else { panic!("changes are an object") };
    for (k, v) in changes {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(&k);
        } else {
            claims[k] = v;
        }
    }
    claims
}

/// Every check the contract lists, on one server per backend.
async fn every_check_of_the_exchange_is_made(backend: Backend) {
    let issuer = FakeIssuer::start().await;
    let other = FakeIssuer::start().await;
    let (server, _config) =
        server_trusting(backend, &[("github", &issuer, "github"), ("other", &other, "github")]).await;
    let publisher = create_publisher(&server, &github_publisher()).await;
    let claims = issuer.github_claims();
    let now = claims["iat"].as_i64().unwrap();

    // Valid RS256 and ES256.
    let valid = issuer.sign("rsa-1", &claims);
    let token = minted(&server, &valid).await;
    assert_eq!(token["publisher"], publisher["id"]);
    assert_eq!(token["name"], "web release");
    assert_eq!(token["pipeline"], "github:acme/web/release.yml@refs/heads/main run 4711.1");
    assert_eq!(token["grants"], json!([{"repos": "acme/web", "actions": ["pull", "push"]}]));
    assert_eq!(token["ci"]["repository_id"], "123456789");
    assert_eq!(token["ci"]["sha"], "0123456789abcdef0123456789abcdef01234567");
    let lifetime = time::OffsetDateTime::parse(
        token["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
        - time::OffsetDateTime::parse(
            token["created_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
    assert_eq!(lifetime.whole_seconds(), 900);
    minted(&server, &issuer.sign("ec-1", &issuer.github_claims())).await;

    // Replay of the first.
    expect_error(exchange(&server, &valid).await, StatusCode::UNAUTHORIZED, "oidc_replayed").await;

    // Algorithms and keys the token picks for itself.
    let rsa = issuer.key("rsa-1");
    let fresh = || issuer.github_claims();
    let unsigned = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "kid": "rsa-1"}).to_string().as_bytes()),
        b64(fresh().to_string().as_bytes())
    );
    refused(&server, &unsigned, "algorithm none").await;
    let message = format!(
        "{}.{}",
        b64(json!({"alg": "HS256", "kid": "rsa-1"}).to_string().as_bytes()),
        b64(fresh().to_string().as_bytes())
    );
    let hmac = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &rsa.public_der()),
        message.as_bytes(),
    );
    refused(&server, &format!("{message}.{}", b64(hmac.as_ref())), "algorithm HS256").await;
    let fetches = issuer.fetches();
    let stranger = Key::rsa("stranger");
    let header = json!({"alg": "RS256", "kid": "stranger", "jku": format!("{}/evil-jwks", issuer.url)});
    refused(&server, &jwt(&header, &fresh(), &stranger), "jku").await;
    assert_eq!((issuer.fetches(), issuer.strays()), (fetches, 0), "a jku is never fetched");
    let unknown = jwt(&json!({"alg": "RS256", "kid": "stranger"}), &fresh(), &stranger);
    refused(&server, &unknown, "key id").await;
    refused(&server, &jwt(&json!({"alg": "RS256", "kid": "stranger"}), &fresh(), &stranger), "key id").await;
    assert_eq!(issuer.fetches(), fetches + 1, "an unknown kid fetches once, then not again within 60 s");
    let forged = jwt(&json!({"alg": "RS256", "kid": "rsa-1"}), &fresh(), &stranger);
    refused(&server, &forged, "signature").await;
    refused(&server, &jwt(&json!({"alg": "ES256", "kid": "rsa-1"}), &fresh(), &issuer.key("ec-1")), "algorithm").await;

    // Issuer, audience, times and jti.
    refused(&server, &issuer.sign("rsa-1", &with(fresh(), json!({"iss": "https://elsewhere.example"}))), "issuer")
        .await;
    refused(&server, &issuer.sign("rsa-1", &with(fresh(), json!({"iss": format!("{}/", issuer.url)}))), "issuer").await;
    refused(&server, &issuer.sign("rsa-1", &with(fresh(), json!({"aud": "sigstore"}))), "audience").await;
    refused(&server, &issuer.sign("rsa-1", &with(fresh(), json!({"aud": ["amber", "sigstore"]}))), "audience").await;
    minted(&server, &issuer.sign("rsa-1", &with(fresh(), json!({"aud": ["amber"]})))).await;
    refused(
        &server,
        &issuer.sign("rsa-1", &with(fresh(), json!({"iat": now - 900, "nbf": now - 900, "exp": now - 300}))),
        "expired",
    )
    .await;
    refused(&server, &issuer.sign("rsa-1", &with(fresh(), json!({"nbf": now + 600}))), "not valid yet").await;
    refused(
        &server,
        &issuer.sign("rsa-1", &with(fresh(), json!({"iat": now + 600, "nbf": null, "exp": now + 900}))),
        "future",
    )
    .await;
    refused(&server, &issuer.sign("rsa-1", &with(fresh(), json!({"exp": (now + 300).to_string()}))), "exp").await;
    refused(&server, &issuer.sign("rsa-1", &with(fresh(), json!({"nbf": (now + 600).to_string()}))), "nbf").await;
    refused(&server, &issuer.sign("rsa-1", &with(fresh(), json!({"iat": null}))), "iat").await;
    refused(&server, &issuer.sign("rsa-1", &with(fresh(), json!({"exp": now + 7 * 3600}))), "lifetime").await;
    refused(&server, &issuer.sign("rsa-1", &with(fresh(), json!({"jti": null}))), "jti").await;
    refused(&server, "not-a-jwt", "compact form").await;
    let payload = b64(br#"{"iss":"x","iss":"y"}"#);
    refused(&server, &format!("{}.{payload}.sig", b64(br#"{"alg":"RS256","kid":"rsa-1"}"#)), "unique").await;

    // Valid ID tokens no publisher trusts.
    untrusted(&server, &issuer.sign("rsa-1", &with(fresh(), json!({"repository_id": "555"}))), "repository_id").await;
    untrusted(
        &server,
        &issuer.sign("rsa-1", &with(fresh(), json!({"event_name": "pull_request_target"}))),
        "event_name",
    )
    .await;
    untrusted(&server, &issuer.sign("rsa-1", &with(fresh(), json!({"event_name": "workflow_run"}))), "event_name")
        .await;
    // A workflow path smuggled in a ref: no ref git accepts can carry it
    // (a component starting with '.'), so the claims are refused by form.
    let smuggled = "acme/web/.github/workflows/other.yml@refs/heads/x/.github/workflows/release.yml";
    let claims = with(fresh(), json!({"workflow_ref": smuggled, "ref": "refs/heads/x/.github/workflows/release.yml"}));
    refused(&server, &issuer.sign("rsa-1", &claims), "claim ref is not").await;
    refused(
        &server,
        &issuer.sign("rsa-1", &with(fresh(), json!({"workflow_ref": smuggled}))),
        "claim workflow_ref is not",
    )
    .await;
    let other_workflow = "acme/web/.github/workflows/other.yml@refs/heads/main";
    untrusted(&server, &issuer.sign("rsa-1", &with(fresh(), json!({"workflow_ref": other_workflow}))), "workflow_ref")
        .await;
    untrusted(&server, &issuer.sign("rsa-1", &with(fresh(), json!({"ref": "refs/heads/feature"}))), "ref").await;
    untrusted(&server, &issuer.sign("rsa-1", &with(fresh(), json!({"environment": "staging"}))), "environment").await;
    untrusted(&server, &issuer.sign("rsa-1", &with(fresh(), json!({"environment": null}))), "environment").await;
    // GitHub compares environments and names case-insensitively.
    minted(
        &server,
        &issuer.sign("rsa-1", &with(fresh(), json!({"environment": "Production", "repository": "ACME/Web"}))),
    )
    .await;
    minted(&server, &issuer.sign("rsa-1", &with(fresh(), json!({"ref": "refs/tags/v1.2.3"})))).await;
    // The same claims from the second issuer: its own publishers only.
    let from_other = other.sign("rsa-1", &with(fresh(), json!({"iss": other.url})));
    let body = expect_error(exchange(&server, &from_other).await, StatusCode::FORBIDDEN, "oidc_no_publisher").await;
    assert!(body["error"]["message"].as_str().unwrap().contains("issuer other"), "{body}");

    // The audit log: the exchanges with their claims and key, the refusals
    // counted by kind, never an ID token.
    let events = server.audit_events().await;
    let exchanged: Vec<&Value> = events.iter().filter(|e| e["kind"] == "token_exchanged").collect();
    assert_eq!(exchanged.len(), 5, "{exchanged:?}");
    assert_eq!(exchanged[0]["kid"], "rsa-1");
    assert_eq!(exchanged[0]["publisher"], publisher["id"]);
    assert_eq!(exchanged[0]["ci"]["workflow_ref"], "acme/web/.github/workflows/release.yml@refs/heads/main");
    assert_eq!(exchanged[1]["kid"], "ec-1");
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "publisher_created" && e["publisher"]["github"]["repository_id"] == "123456789")
    );
    let denials: Vec<&Value> = events.iter().filter(|e| e["kind"] == "request_denied").collect();
    let reasons: Vec<&str> = denials.iter().map(|e| e["reason"].as_str().unwrap()).collect();
    assert!(reasons.contains(&"oidc_replayed") && reasons.contains(&"oidc_invalid: alg"), "{reasons:?}");
    assert!(reasons.contains(&"oidc_no_publisher"), "{reasons:?}");
    let text = serde_json::to_string(&events).unwrap() + &server.logs();
    assert!(
        !text.contains(&valid[..40]) && !text.contains(valid.rsplit('.').next().unwrap()),
        "an ID token was recorded"
    );
    let metrics = server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("amber_oidc_exchanges_total{outcome=\"minted\"} 5"), "{metrics}");
}

/// Every claim copied into the signed `pushed_by.ci` has GitHub's documented
/// form, and the claims matched against a publisher compare exactly (the
/// attack, turn 3): case, one `@`, no `..` in a ref. Publishers' ref
/// patterns are refs too.
#[tokio::test]
async fn claims_signed_into_manifests_have_their_documented_form() {
    let issuer = FakeIssuer::start().await;
    let (server, _config) = server_trusting(Backend::Embedded, &[("github", &issuer, "github")]).await;
    create_publisher(&server, &github_publisher()).await;
    let sign = |changes: Value| issuer.sign("rsa-1", &with(issuer.github_claims(), changes));
    minted(&server, &sign(json!({}))).await;
    for (claim, value) in [
        ("sha", json!("0123456789abcdef")),
        ("sha", json!("0123456789ABCDEF0123456789abcdef01234567")),
        ("sha", json!("0123456789abcdef0123456789abcdef0123456z")),
        ("run_id", json!("4711x")),
        ("run_id", json!("-4711")),
        ("run_attempt", json!("1.5")),
        ("ref", json!("main")),
        ("ref", json!("refs/heads/main/../../tags/v1")),
        ("ref", json!("refs/tags/v1 ")),
        ("ref", json!("refs/heads/ma~in")),
        ("event_name", json!("PUSH")),
        ("event_name", json!("Pull_Request_Target")),
        ("workflow_ref", json!("acme/web/.github/workflows/release.yml@refs/heads/main@evil")),
        ("workflow_ref", json!("acme/web/.github/workflows/release.yml@@refs/heads/main")),
        ("workflow_ref", json!("acme/web/../web/.github/workflows/release.yml@refs/heads/main")),
        ("job_workflow_ref", json!("acme/web/.github/workflows/release.yml@refs/heads/a..b")),
    ] {
        refused(&server, &sign(json!({ claim: value })), &format!("claim {claim} is not")).await;
    }
    // Numbers as JSON numbers are as good as digits in a string.
    minted(&server, &sign(json!({"run_id": 4711, "run_attempt": 2}))).await;
    // Exact comparison: a ref that differs in case is another ref.
    untrusted(&server, &sign(json!({"ref": "refs/heads/Main"})), "ref").await;
    untrusted(&server, &sign(json!({"ref": "refs/tagsX/v1"})), "ref").await;
    // Patterns that are not refs are refused at creation.
    for refs in
        [json!(["refs/heads/../tags/*"]), json!(["main"]), json!(["refs/heads//main"]), json!(["refs/heads/a b"])]
    {
        let mut body = github_publisher();
        body["github"]["refs"] = refs.clone();
        let response = server.request(Method::POST, "/v1/publishers", &server.admin).json(&body).send().await.unwrap();
        expect_error(response, StatusCode::BAD_REQUEST, "request_invalid").await;
    }
    let mut body = github_publisher();
    body["github"]["allow_events"] = json!(["Push"]);
    let response = server.request(Method::POST, "/v1/publishers", &server.admin).json(&body).send().await.unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, "request_invalid").await;
}

/// A minted token pushes with its claims signed into the manifest, cannot
/// administer, cannot be rotated, is revoked like any other, and expires.
async fn minted_tokens_push_with_signed_provenance(backend: Backend) {
    let issuer = FakeIssuer::start().await;
    let (server, _config) = server_trusting(backend, &[("github", &issuer, "github")]).await;
    create_publisher(&server, &github_publisher()).await;
    let token = minted(&server, &issuer.sign("rsa-1", &issuer.github_claims())).await;
    let secret = token["token"].as_str().unwrap();

    let bytes = data(3000, 7);
    let digest = independent_b3_bytes(&bytes);
    let put = server
        .request(Method::PUT, &format!("/v1/repos/acme/web/blobs/{digest}"), secret)
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);
    let files = json!({"files": [{"path": "app.tar", "digest": digest, "size": 3000}]});
    let bound = server.request(Method::PUT, "/v1/repos/acme/web/tags/1.0", secret).json(&files).send().await.unwrap();
    assert_eq!(bound.status(), StatusCode::CREATED);
    let envelope: Value = bound.json().await.unwrap();
    verify_with_python(&envelope, &server.keys().await).expect("the manifest verifies with Python's cryptography");
    let pushed_by = &payload(&envelope)["pushed_by"];
    assert_eq!(pushed_by["token_id"], token["id"]);
    assert_eq!(pushed_by["pipeline"], "github:acme/web/release.yml@refs/heads/main run 4711.1");
    let ci = &pushed_by["ci"];
    for (claim, value) in [
        ("issuer", issuer.url.as_str()),
        ("repository", "acme/web"),
        ("repository_id", "123456789"),
        ("repository_owner_id", "98765"),
        ("ref", "refs/heads/main"),
        ("sha", "0123456789abcdef0123456789abcdef01234567"),
        ("workflow_ref", "acme/web/.github/workflows/release.yml@refs/heads/main"),
        ("environment", "production"),
        ("event_name", "push"),
        ("run_id", "4711"),
        ("run_attempt", "1"),
    ] {
        assert_eq!(ci[claim], value, "{claim} in {ci}");
    }

    // Its grants and nothing more.
    let other =
        server.request(Method::PUT, &format!("/v1/repos/acme/api/blobs/{digest}"), secret).send().await.unwrap();
    expect_error(other, StatusCode::FORBIDDEN, "denied").await;
    for (method, path) in [(Method::GET, "/v1/tokens"), (Method::GET, "/v1/publishers"), (Method::GET, "/v1/audit")] {
        expect_error(server.request(method, path, secret).send().await.unwrap(), StatusCode::FORBIDDEN, "denied").await;
    }
    let whoami: Value = server.request(Method::GET, "/v1/whoami", secret).send().await.unwrap().json().await.unwrap();
    assert_eq!(whoami["ci"]["run_id"], "4711");
    let id = token["id"].as_str().unwrap();
    let rotate = server.request(Method::POST, &format!("/v1/tokens/{id}/rotate"), &server.admin).send().await.unwrap();
    expect_error(rotate, StatusCode::CONFLICT, "token_inactive").await;
    let revoke = server.request(Method::DELETE, &format!("/v1/tokens/{id}"), &server.admin).send().await.unwrap();
    assert_eq!(revoke.status(), StatusCode::OK);
    let after = server.request(Method::GET, "/v1/whoami", secret).send().await.unwrap();
    expect_error(after, StatusCode::UNAUTHORIZED, "unauthorized").await;

    // A short-lived publisher's token ends on time.
    let mut short = github_publisher();
    short["name"] = json!("short");
    short["token_lifetime"] = json!(2);
    short["github"]["environment"] = json!("canary");
    create_publisher(&server, &short).await;
    let token =
        minted(&server, &issuer.sign("rsa-1", &with(issuer.github_claims(), json!({"environment": "canary"})))).await;
    let secret = token["token"].as_str().unwrap();
    assert_eq!(server.request(Method::GET, "/v1/whoami", secret).send().await.unwrap().status(), StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let expired = server.request(Method::GET, "/v1/whoami", secret).send().await.unwrap();
    let body = expect_error(expired, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert!(body["error"]["message"].as_str().unwrap().contains("expired"), "{body}");
}

on_both_backends!(every_check_of_the_exchange_is_made, minted_tokens_push_with_signed_provenance);

/// 32 exchanges of one ID token at once, through two replicas (or one sled
/// server), mint exactly one token.
async fn one_id_token_is_exchanged_once(backend: Backend) {
    let issuer = FakeIssuer::start().await;
    let (server, _config) = server_trusting(backend, &[("github", &issuer, "github")]).await;
    create_publisher(&server, &github_publisher()).await;
    let replica = (backend == Backend::S3Postgres).then(|| server.spawn_replica());
    let urls: Vec<String> = match &replica {
        Some(replica) => vec![server.url("/v1/oidc/token"), replica.url("/v1/oidc/token")],
        None => vec![server.url("/v1/oidc/token")],
    };
    for round in 0..3 {
        let id_token = issuer.sign("rsa-1", &issuer.github_claims());
        let attempts = (0..32).map(|i| {
            let (server, url, id_token) = (&server, &urls[i % urls.len()], &id_token);
            async move { exchange_at(server, url, id_token).await.status() }
        });
        let statuses = futures_util::future::join_all(attempts).await;
        let created = statuses.iter().filter(|s| **s == StatusCode::CREATED).count();
        let replayed = statuses.iter().filter(|s| **s == StatusCode::UNAUTHORIZED).count();
        assert_eq!((created, replayed), (1, 31), "round {round}: {statuses:?}");
    }
    let exchanged = server.audit_events().await.into_iter().filter(|e| e["kind"] == "token_exchanged").count();
    assert_eq!(exchanged, 3);
}

on_both_backends!(one_id_token_is_exchanged_once);

/// Rotated keys are fetched once when first used; cached keys keep working
/// while the issuer is down; with no keys at all, `503 oidc_unavailable`.
#[tokio::test]
async fn keys_rotate_and_survive_the_issuer_going_down() {
    let issuer = FakeIssuer::start().await;
    let (server, _config) = server_trusting(Backend::Embedded, &[("github", &issuer, "github")]).await;
    create_publisher(&server, &github_publisher()).await;
    minted(&server, &issuer.sign("rsa-1", &issuer.github_claims())).await;
    let fetches = issuer.fetches();
    issuer.rotate("rsa-2");
    minted(&server, &issuer.sign("rsa-2", &issuer.github_claims())).await;
    assert_eq!(issuer.fetches(), fetches + 1, "the new key id was fetched once");
    minted(&server, &issuer.sign("rsa-2", &issuer.github_claims())).await;
    assert_eq!(issuer.fetches(), fetches + 1, "and then served from the cache");

    issuer.set_down(true);
    minted(&server, &issuer.sign("ec-1", &issuer.github_claims())).await;

    let down = FakeIssuer::start().await;
    down.set_down(true);
    let (cold, _config) = server_trusting(Backend::Embedded, &[("github", &down, "github")]).await;
    create_publisher(&cold, &github_publisher()).await;
    let claims = with(down.github_claims(), json!({"iss": down.url}));
    let response = exchange(&cold, &down.sign("rsa-1", &claims)).await;
    assert_eq!(response.headers()["retry-after"], "60");
    expect_error(response, StatusCode::SERVICE_UNAVAILABLE, "oidc_unavailable").await;
}

/// Publishers are admin-only, validated, audited whole, and deleting one
/// ends its exchanges.
#[tokio::test]
async fn publishers_are_validated_audited_and_admin_only() {
    let issuer = FakeIssuer::start().await;
    let (server, _config) = server_trusting(Backend::Embedded, &[("github", &issuer, "github")]).await;
    let pusher = server.token(&[("acme/web", &["push", "pull"])]).await;
    let denied =
        server.request(Method::POST, "/v1/publishers", &pusher).json(&github_publisher()).send().await.unwrap();
    expect_error(denied, StatusCode::FORBIDDEN, "denied").await;
    let edits: Vec<(Value, &str)> = vec![
        (json!({"grants": [{"repos": "*", "actions": ["admin"]}]}), "admin"),
        (json!({"token_lifetime": 3601}), "token_lifetime"),
        (json!({"token_lifetime": 0}), "token_lifetime"),
        (json!({"issuer": "gitlab"}), "no issuer named"),
        (
            json!({"github": null, "gitlab": {"project_path": "a/b", "project_id": "1", "namespace_id": "2"}}),
            "kind github",
        ),
        (
            json!({"github": {"repository": "acme/web", "repository_owner_id": "1", "workflow": "release.yml"}}),
            "repository_id",
        ),
        (
            json!({"github": {"repository": "acme/web", "repository_id": "x1", "repository_owner_id": "1", "workflow": "release.yml"}}),
            "numeric",
        ),
        (
            json!({"github": {"repository": "acme/web", "repository_id": "1", "repository_owner_id": "1", "workflow": ".github/workflows/release.yml"}}),
            "file name",
        ),
        (
            json!({"github": {"repository": "acme/web", "repository_id": "1", "repository_owner_id": "1", "workflow": "r.yml", "refs": ["refs/*/main"]}}),
            "only at the end",
        ),
        (json!({"name": ""}), "name"),
        (json!({"subject": "repo:acme/web:*"}), "unknown field"),
    ];
    for (edit, words) in edits {
        let body = with(github_publisher(), edit.clone());
        let response = server.request(Method::POST, "/v1/publishers", &server.admin).json(&body).send().await.unwrap();
        let body = expect_error(response, StatusCode::BAD_REQUEST, "request_invalid").await;
        assert!(body["error"]["message"].as_str().unwrap().contains(words), "{edit}: {body}");
    }
    let publisher = create_publisher(&server, &github_publisher()).await;
    assert_eq!(publisher["token_lifetime"], 900);
    let id = publisher["id"].as_str().unwrap();
    let list: Value =
        server.request(Method::GET, "/v1/publishers", &server.admin).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["publishers"], json!([publisher]));
    let shown: Value = server
        .request(Method::GET, &format!("/v1/publishers/{id}"), &server.admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown, publisher);
    let deleted = server.request(Method::DELETE, &format!("/v1/publishers/{id}"), &server.admin).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);
    let again = server.request(Method::DELETE, &format!("/v1/publishers/{id}"), &server.admin).send().await.unwrap();
    expect_error(again, StatusCode::NOT_FOUND, "publisher_unknown").await;
    let unknown = server.request(Method::GET, "/v1/publishers/nope", &server.admin).send().await.unwrap();
    expect_error(unknown, StatusCode::NOT_FOUND, "publisher_unknown").await;
    let body = expect_error(
        exchange(&server, &issuer.sign("rsa-1", &issuer.github_claims())).await,
        StatusCode::FORBIDDEN,
        "oidc_no_publisher",
    )
    .await;
    assert!(body["error"]["message"].as_str().unwrap().contains("no publisher trusts issuer github"), "{body}");
    let events = server.audit_events().await;
    let deleted: Vec<&Value> = events.iter().filter(|e| e["kind"] == "publisher_deleted").collect();
    assert_eq!(deleted, vec![&json!({"kind": "publisher_deleted", "publisher": publisher})]);
}

/// GitLab's claims (protected refs, the pipeline's configuration file) and
/// a generic issuer's exact claims.
#[tokio::test]
async fn gitlab_and_generic_publishers() {
    let gitlab = FakeIssuer::start().await;
    let generic = FakeIssuer::start().await;
    let (server, _config) =
        server_trusting(Backend::Embedded, &[("gitlab", &gitlab, "gitlab"), ("buildkite", &generic, "generic")]).await;
    create_publisher(
        &server,
        &json!({
            "name": "api deploy", "issuer": "gitlab",
            "gitlab": {"project_path": "acme/api", "project_id": "42", "namespace_id": "7",
                       "ci_config_path": ".gitlab-ci.yml", "refs": ["main", "refs/tags/v*"]},
            "grants": [{"repos": "acme/api", "actions": ["push"]}], "token_lifetime": 600,
        }),
    )
    .await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let host = gitlab.url.trim_start_matches("http://");
    let base = json!({
        "iss": gitlab.url, "aud": "amber", "iat": now, "nbf": now, "exp": now + 300,
        "sub": "project_path:acme/api:ref_type:branch:ref:main",
        "namespace_id": "7", "namespace_path": "acme", "project_id": "42", "project_path": "acme/api",
        "pipeline_id": "900", "pipeline_source": "push", "job_id": "901", "ref": "main", "ref_type": "branch",
        "ref_protected": "true", "sha": "89abcdef0123456789abcdef0123456789abcdef", "ci_config_ref_uri": format!("{host}/acme/api//.gitlab-ci.yml@refs/heads/main"),
    });
    let signed = |changes: Value| {
        let mut claims = with(base.clone(), changes);
        claims["jti"] = json!(format!("gl-{}", rand::random::<u64>()));
        gitlab.sign("rsa-1", &claims)
    };
    let token = minted(&server, &signed(json!({}))).await;
    assert_eq!(token["pipeline"], "gitlab:acme/api@refs/heads/main pipeline 900 job 901");
    assert_eq!(token["ci"]["ref"], "refs/heads/main");
    assert_eq!(token["ci"]["job_id"], "901");
    minted(&server, &signed(json!({"ref": "v2.0", "ref_type": "tag"}))).await;
    untrusted(&server, &signed(json!({"ref_protected": "false"})), "ref_protected").await;
    untrusted(&server, &signed(json!({"ref": "feature"})), "ref").await;
    untrusted(&server, &signed(json!({"project_id": "43"})), "project_id").await;
    let elsewhere = format!("{host}/evil/pipelines//.gitlab-ci.yml@refs/heads/main");
    untrusted(&server, &signed(json!({"ci_config_ref_uri": elsewhere})), "ci_config_ref_uri").await;
    // Claims copied into signed manifests have GitLab's documented form.
    for (claim, value) in [
        ("sha", json!("89abcdef")),
        ("pipeline_id", json!("900; rm")),
        ("job_id", json!("-1")),
        ("ref", json!("main/../../tags/v1")),
        ("ref_type", json!("branchy")),
        ("pipeline_source", json!("Push")),
        ("ci_config_ref_uri", json!(format!("{host}/acme/api//.gitlab-ci.yml@refs/heads/main@x"))),
    ] {
        refused(&server, &signed(json!({ claim: value })), &format!("claim {claim} is not")).await;
    }

    create_publisher(&server, &json!({
        "name": "buildkite", "issuer": "buildkite",
        "generic": {"claims": {"sub": "organization:acme:pipeline:web:ref:refs/heads/main", "organization_slug": "acme"}},
        "grants": [{"repos": "acme/web", "actions": ["pull"]}],
    }))
    .await;
    let claims = json!({"iss": generic.url, "aud": "amber", "iat": now, "exp": now + 300, "jti": "bk-1",
                        "sub": "organization:acme:pipeline:web:ref:refs/heads/main", "organization_slug": "acme"});
    let token = minted(&server, &generic.sign("ec-1", &claims)).await;
    assert_eq!(token["ci"]["subject"], "organization:acme:pipeline:web:ref:refs/heads/main");
    let wrong = with(claims, json!({"jti": "bk-2", "organization_slug": "evil"}));
    untrusted(&server, &generic.sign("ec-1", &wrong), "organization_slug").await;
}

/// `amber` in a fake GitHub Actions job: no AMBER_TOKEN, an ID token from
/// the runtime, exchanged by `amber oidc token`, `amber push` and, with
/// `AMBER_ID_TOKEN`, by `amber pull`; publishers from the CLI.
#[tokio::test]
async fn the_cli_exchanges_the_runs_id_token() {
    let issuer = FakeIssuer::start().await;
    let (server, config) = server_trusting(Backend::Embedded, &[("github", &issuer, "github")]).await;
    let file = config.path().join("publisher.json");
    std::fs::write(&file, github_publisher().to_string()).unwrap();
    let created = server.amber(&server.admin, &["publisher", "create", file.to_str().unwrap()]).await;
    assert_eq!(created.code, 0, "{}", created.stderr);
    let publisher: Value = serde_json::from_str(&created.stdout).unwrap();
    let listed = server.amber(&server.admin, &["publisher", "list"]).await;
    assert_eq!(serde_json::from_str::<Value>(&listed.stdout).unwrap(), json!([publisher]));

    let ci = async |args: &[&str], env: &[(&str, &str)]| {
        // Async: the fake issuer answers on this test's runtime meanwhile.
        let mut command = tokio::process::Command::new(amber_bin());
        command.args(args).env("AMBER_URL", server.url("")).env_remove("AMBER_TOKEN").envs(env.iter().copied());
        command.env("AMBER_LOG_STATE", server.data_dir().join("client-log-state.json"));
        command.stdin(std::process::Stdio::null()).output().await.unwrap()
    };
    let actions = [
        ("ACTIONS_ID_TOKEN_REQUEST_URL", issuer.actions_url()),
        ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", REQUEST_TOKEN.to_owned()),
    ];
    let actions: Vec<(&str, &str)> = actions.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = ci(&["oidc", "token"], &actions).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let secret = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let whoami: Value = server.request(Method::GET, "/v1/whoami", &secret).send().await.unwrap().json().await.unwrap();
    assert_eq!(whoami["ci"]["repository"], "acme/web");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.txt"), b"built by CI\n").unwrap();
    let out = ci(&["push", "acme/web:1.0", dir.path().to_str().unwrap()], &actions).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exchanged this run's ID token"));

    let keys = dir.path().join("keys.json");
    std::fs::write(&keys, server.keys().await.to_string()).unwrap();
    let id_token = issuer.sign("rsa-1", &issuer.github_claims());
    let target = dir.path().join("out");
    let args = ["pull", "acme/web:1.0", "-o", target.to_str().unwrap(), "--key", keys.to_str().unwrap()];
    let out = ci(&args, &[("AMBER_ID_TOKEN", id_token.as_str())]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("pushed by CI run github:acme/web/release.yml@refs/heads/main run 4711.1"), "{stderr}");
    assert_eq!(std::fs::read(target.join("app.txt")).unwrap(), b"built by CI\n");
    // The same ID token again: refused, exit 3.
    let out = ci(&args, &[("AMBER_ID_TOKEN", id_token.as_str())]).await;
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));

    let id = publisher["id"].as_str().unwrap();
    assert_eq!(server.amber(&server.admin, &["publisher", "delete", id]).await.code, 0);
    let out = ci(&["oidc", "token"], &actions).await;
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("oidc_no_publisher"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
