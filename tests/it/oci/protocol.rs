//! Where `/v2/` keeps Amber's rules: create-only tags, every OCI tag binding
//! an Amber binding (signed, logged, verified by `amber pull`), no deletes,
//! default deny with no existence oracle, and the Docker token flow
//! downscoped to what the token may do.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::backends::Backend;
use crate::harness::{TestServer, data};
use crate::on_both_backends;

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", sha2::Sha256::digest(bytes))
}

/// Pushes a blob through `POST ?digest=` (one request).
pub async fn push_blob(server: &TestServer, token: &str, repo: &str, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let response = server
        .request(Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={digest}"), token)
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED, "{}", response.text().await.unwrap());
    digest
}

/// An image manifest of `layers` (bytes, title) with an empty config, pushed blobs first.
pub async fn image(server: &TestServer, token: &str, repo: &str, layers: &[(&[u8], &str)]) -> Vec<u8> {
    let config = push_blob(server, token, repo, b"{}").await;
    let mut descriptors = Vec::new();
    for (bytes, title) in layers {
        let digest = push_blob(server, token, repo, bytes).await;
        descriptors.push(json!({
            "mediaType": "application/octet-stream", "digest": digest, "size": bytes.len(),
            "annotations": {"org.opencontainers.image.title": title},
        }));
    }
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.example.test",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2},
        "layers": descriptors,
    }))
    .unwrap()
}

pub async fn put_manifest(
    server: &TestServer,
    token: &str,
    repo: &str,
    reference: &str,
    body: &[u8],
) -> reqwest::Response {
    server
        .request(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"), token)
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

async fn oci_error(response: reqwest::Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], code, "{body}");
    body["errors"][0].clone()
}

async fn a_tag_is_bound_once(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = server.token(&[("acme/*", &["pull", "push"])]).await;
    let first = image(&server, &token, "acme/web", &[(&data(3000, 1), "app.tar")]).await;
    let other = image(&server, &token, "acme/web", &[(&data(3000, 2), "app.tar")]).await;
    let put = put_manifest(&server, &token, "acme/web", "1.0.0", &first).await;
    assert_eq!(put.status(), StatusCode::CREATED);
    assert_eq!(put.headers()["docker-content-digest"], sha256(&first).as_str());
    // The same bytes again: a safe retry.
    assert_eq!(put_manifest(&server, &token, "acme/web", "1.0.0", &first).await.status(), StatusCode::CREATED);
    // Other bytes: refused, the tag stays where it is.
    let refused =
        oci_error(put_manifest(&server, &token, "acme/web", "1.0.0", &other).await, StatusCode::CONFLICT, "DENIED")
            .await;
    assert_eq!(refused["detail"]["code"], "tag_exists");
    let got = server.request(Method::GET, "/v2/acme/web/manifests/1.0.0", &token).send().await.unwrap();
    assert_eq!(got.headers()["content-type"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(got.bytes().await.unwrap().to_vec(), first, "served byte-exact");
    // The referrers tag schema is never needed: refused.
    let fallback = format!("sha256-{}", &sha256(&first)[7..]);
    oci_error(put_manifest(&server, &token, "acme/web", &fallback, &other).await, StatusCode::CONFLICT, "DENIED").await;
    // An expired tag's name is never bound again.
    let admin = server.admin.clone();
    let expire = server
        .request(Method::POST, "/v1/repos/acme/web/tags/1.0.0/expire", &admin)
        .json(&json!({"reason": "test"}))
        .send()
        .await
        .unwrap();
    assert!(expire.status().is_success(), "{}", expire.text().await.unwrap());
    let expired =
        oci_error(put_manifest(&server, &token, "acme/web", "1.0.0", &first).await, StatusCode::CONFLICT, "DENIED")
            .await;
    assert_eq!(expired["detail"]["code"], "tag_expired");
    let gone = server.request(Method::GET, "/v2/acme/web/manifests/1.0.0", &token).send().await.unwrap();
    oci_error(gone, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
}

async fn an_oci_binding_is_an_amber_binding(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = server.token(&[("acme/*", &["pull", "push"])]).await;
    let (chart, notes) = (data(5000, 3), b"release notes\n".to_vec());
    let body = image(&server, &token, "acme/chart", &[(&chart, "chart-1.2.0.tgz"), (&notes, "docs/NOTES.txt")]).await;
    assert_eq!(put_manifest(&server, &token, "acme/chart", "1.2.0", &body).await.status(), StatusCode::CREATED);
    // The binding is signed and logged: its payload names the OCI manifest.
    let tag: Value = server
        .request(Method::GET, "/v1/repos/acme/chart/tags/1.2.0", &token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let payload = crate::harness::payload(&tag);
    assert_eq!(payload["oci"]["digest"], sha256(&body).as_str());
    assert_eq!(payload["files"].as_array().unwrap().len(), 2);
    let events = server.audit_events().await;
    assert!(events.iter().any(|e| e["kind"] == "tag_bound" && e["tag"] == "1.2.0"), "{events:?}");
    assert!(events.iter().any(|e| e["kind"] == "oci_manifest_pushed"), "{events:?}");
    // `amber pull` verifies it (signature, receipt) and writes the layers by title.
    let work = tempfile::tempdir().unwrap();
    let keys = crate::harness::key_file(&server, work.path()).await;
    let out = work.path().join("out");
    let run = server.amber(&token, &["pull", "acme/chart:1.2.0", "-o", out.to_str().unwrap(), "--key", &keys]).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(std::fs::read(out.join("chart-1.2.0.tgz")).unwrap(), chart);
    assert_eq!(std::fs::read(out.join("docs/NOTES.txt")).unwrap(), notes);
}

async fn deletes_are_refused(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = server.token(&[("acme/*", &["pull", "push"])]).await;
    let body = image(&server, &token, "acme/web", &[(b"x", "x")]).await;
    put_manifest(&server, &token, "acme/web", "1", &body).await;
    let digest = sha256(&body);
    for path in [
        format!("/v2/acme/web/manifests/{digest}"),
        "/v2/acme/web/manifests/1".to_owned(),
        format!("/v2/acme/web/blobs/{}", sha256(b"x")),
    ] {
        let response = server.request(Method::DELETE, &path, &token).send().await.unwrap();
        let error = oci_error(response, StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED").await;
        assert!(error["message"].as_str().unwrap().contains("expire"), "{error}");
    }
    let still = server.request(Method::GET, "/v2/acme/web/manifests/1", &token).send().await.unwrap();
    assert_eq!(still.status(), StatusCode::OK);
}

async fn authentication_and_the_token_flow(backend: Backend) {
    let server = TestServer::on(backend).await;
    let pusher = server.token(&[("acme/*", &["pull", "push"])]).await;
    let reader = server.token(&[("acme/web", &["pull"])]).await;
    let blob = push_blob(&server, &pusher, "acme/web", b"secret layer").await;
    let http = reqwest::Client::new();

    // No credentials: both challenges, the Bearer one naming the scope.
    let anonymous = http.head(server.url(&format!("/v2/acme/web/blobs/{blob}"))).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let challenges: Vec<&str> =
        anonymous.headers().get_all("www-authenticate").iter().map(|v| v.to_str().unwrap()).collect();
    assert!(challenges.iter().any(|c| c.starts_with("Basic realm=\"amber\"")), "{challenges:?}");
    let bearer = challenges.iter().find(|c| c.starts_with("Bearer ")).expect("a Bearer challenge");
    assert!(bearer.contains("/v2/token\"") && bearer.contains("scope=\"repository:acme/web:pull\""), "{bearer}");

    // Basic with the token as password (any user), and Bearer: both work.
    let basic = http
        .get(server.url(&format!("/v2/acme/web/blobs/{blob}")))
        .basic_auth("anyone", Some(&reader))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.bytes().await.unwrap().as_ref(), b"secret layer");

    // The token flow: a pull-only token asking for push gets pull only.
    let answer: Value = http
        .get(server.url("/v2/token?service=amber&scope=repository:acme/web:pull,push&scope=repository:acme/api:pull"))
        .basic_auth("ci", Some(&reader))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let scoped = answer["token"].as_str().unwrap().to_owned();
    assert!(answer["expires_in"].as_i64().unwrap() <= 300);
    let got = http.get(server.url(&format!("/v2/acme/web/blobs/{blob}"))).bearer_auth(&scoped).send().await.unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    let push = http.post(server.url("/v2/acme/web/blobs/uploads/")).bearer_auth(&scoped).send().await.unwrap();
    assert_eq!(push.status(), StatusCode::UNAUTHORIZED, "a scoped token is asked to widen, never let past its grants");
    let widen = push.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(widen.contains("insufficient_scope") && widen.contains("acme/web:pull,push"), "{widen}");
    let other = http.get(server.url("/v2/acme/api/tags/list")).bearer_auth(&scoped).send().await.unwrap();
    assert_eq!(other.status(), StatusCode::UNAUTHORIZED);
    // A scoped token does not mint another.
    let again =
        http.get(server.url("/v2/token?scope=repository:acme/web:pull")).bearer_auth(&scoped).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    // A changed scoped token is refused.
    let mut forged = scoped.clone().into_bytes();
    let at = forged.len() - 5;
    forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let refused =
        http.get(server.url(&format!("/v2/acme/web/blobs/{blob}"))).bearer_auth(&forged).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);

    // Revoking the parent ends the scoped token at once.
    let whoami: Value = server.request(Method::GET, "/v1/whoami", &reader).send().await.unwrap().json().await.unwrap();
    let id = whoami["id"].as_str().unwrap();
    let revoke = server.request(Method::DELETE, &format!("/v1/tokens/{id}"), &server.admin).send().await.unwrap();
    assert!(revoke.status().is_success());
    let after = http.get(server.url(&format!("/v2/acme/web/blobs/{blob}"))).bearer_auth(&scoped).send().await.unwrap();
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);

    // Default deny, no oracle: another repository's blob is 403 whether or not it exists.
    let narrow = server.token(&[("acme/api", &["pull", "push"])]).await;
    for digest in [blob.clone(), sha256(b"never pushed")] {
        let head = server.request(Method::HEAD, &format!("/v2/acme/web/blobs/{digest}"), &narrow).send().await.unwrap();
        assert_eq!(head.status(), StatusCode::FORBIDDEN);
        // In its own repository a blob pushed elsewhere is simply unknown.
        let own = server.request(Method::HEAD, &format!("/v2/acme/api/blobs/{digest}"), &narrow).send().await.unwrap();
        assert_eq!(own.status(), StatusCode::NOT_FOUND);
    }
    // A mount from a repository the token cannot pull is a plain upload start.
    let mount = server
        .request(Method::POST, &format!("/v2/acme/api/blobs/uploads/?mount={blob}&from=acme/web"), &narrow)
        .send()
        .await
        .unwrap();
    assert_eq!(mount.status(), StatusCode::ACCEPTED);
    // The catalog lists what the caller may pull.
    push_blob(&server, &narrow, "acme/api", b"own layer").await;
    let catalog: Value =
        server.request(Method::GET, "/v2/_catalog", &narrow).send().await.unwrap().json().await.unwrap();
    assert_eq!(catalog["repositories"], json!(["acme/api"]));
    // A name of another shape is NAME_INVALID.
    let shape = server.request(Method::GET, "/v2/a/b/c/manifests/latest", &narrow).send().await.unwrap();
    oci_error(shape, StatusCode::BAD_REQUEST, "NAME_INVALID").await;
}

on_both_backends!(a_tag_is_bound_once, an_oci_binding_is_an_amber_binding, deletes_are_refused);
on_both_backends!(authentication_and_the_token_flow);

/// A referrer (a signature, an SBOM) lives as long as its subject's binding:
/// retention keeps its blobs while the tag is live, and takes them with it.
async fn a_referrer_lives_as_long_as_its_subject(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = server.token(&[("acme/*", &["pull", "push"])]).await;
    let subject = image(&server, &token, "acme/web", &[(b"the image", "image.bin")]).await;
    assert_eq!(put_manifest(&server, &token, "acme/web", "1.0", &subject).await.status(), StatusCode::CREATED);
    let signature = push_blob(&server, &token, "acme/web", b"a signature").await;
    let referrer = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.example.sig",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(b"{}"), "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": signature, "size": 11}],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha256(&subject), "size": subject.len()},
    }))
    .unwrap();
    let pushed = put_manifest(&server, &token, "acme/web", &sha256(&referrer), &referrer).await;
    assert_eq!(pushed.status(), StatusCode::CREATED);
    assert_eq!(pushed.headers()["oci-subject"], sha256(&subject).as_str());
    let loose = push_blob(&server, &token, "acme/web", b"nothing refers to me").await;
    let admin = |method: Method, path: &str, body: Option<Value>| {
        let mut request = server.request(method, path, &server.admin);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send()
    };
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let set = admin(Method::PUT, "/v1/retention/acme/web", Some(json!({"untagged_days": 0}))).await.unwrap();
    assert!(set.status().is_success());
    // The loose blob goes (and the empty config blob `image` pushed: the
    // empty config is served in every repository, nothing keeps its link).
    let run: Value = server.run("/v1/retention/run").await;
    assert_eq!(run["unlink"].as_array().unwrap().len(), 2, "{run}");
    let head = |digest: &str| server.request(Method::HEAD, &format!("/v2/acme/web/blobs/{digest}"), &token).send();
    assert_eq!(head(&loose).await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(head(&signature).await.unwrap().status(), StatusCode::OK, "kept with its subject's tag");
    // The subject's tag expires: the signature goes with it at the next run.
    let expire =
        admin(Method::POST, "/v1/repos/acme/web/tags/1.0/expire", Some(json!({"reason": "done"}))).await.unwrap();
    assert!(expire.status().is_success());
    server.run("/v1/retention/run").await;
    assert_eq!(head(&signature).await.unwrap().status(), StatusCode::NOT_FOUND);
}

on_both_backends!(a_referrer_lives_as_long_as_its_subject);

/// Docker's schema 2 manifest and manifest list are accepted and served
/// with the media type they were pushed with; a list names manifests of the
/// repository only; the catalog pages with `n` and `last`.
async fn docker_media_types_and_the_catalog(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = server.token(&[("acme/*", &["pull", "push"])]).await;
    let config = push_blob(&server, &token, "acme/docker", br#"{"architecture":"amd64","os":"linux"}"#).await;
    let layer = push_blob(&server, &token, "acme/docker", b"a docker layer").await;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config, "size": 37},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": layer, "size": 14}],
    }))
    .unwrap();
    let docker = "application/vnd.docker.distribution.manifest.v2+json";
    let put = server
        .request(Method::PUT, &format!("/v2/acme/docker/manifests/{}", sha256(&manifest)), &token)
        .header("content-type", docker)
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::CREATED, "{}", put.text().await.unwrap());
    let list = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [{"mediaType": docker, "digest": sha256(&manifest), "size": manifest.len(), "platform": {"architecture": "amd64", "os": "linux"}}],
    }))
    .unwrap();
    let list_type = "application/vnd.docker.distribution.manifest.list.v2+json";
    let put = server
        .request(Method::PUT, "/v2/acme/docker/manifests/latest", &token)
        .header("content-type", list_type)
        .body(list.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::CREATED, "{}", put.text().await.unwrap());
    let got = server.request(Method::GET, "/v2/acme/docker/manifests/latest", &token).send().await.unwrap();
    assert_eq!(got.headers()["content-type"], list_type);
    assert_eq!(got.bytes().await.unwrap().to_vec(), list);
    let got = server
        .request(Method::GET, &format!("/v2/acme/docker/manifests/{}", sha256(&manifest)), &token)
        .send()
        .await
        .unwrap();
    assert_eq!(got.headers()["content-type"], docker);
    // A list naming a manifest this repository does not hold is refused.
    let stray = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": list_type,
        "manifests": [{"mediaType": docker, "digest": sha256(b"elsewhere"), "size": 9}],
    }))
    .unwrap();
    let refused = server
        .request(Method::PUT, "/v2/acme/docker/manifests/stray", &token)
        .header("content-type", list_type)
        .body(stray)
        .send()
        .await
        .unwrap();
    oci_error(refused, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN").await;

    // The catalog, a page at a time.
    for name in ["acme/a1", "acme/a2", "acme/a3"] {
        push_blob(&server, &token, name, name.as_bytes()).await;
    }
    let first = server.request(Method::GET, "/v2/_catalog?n=2", &token).send().await.unwrap();
    let link = first.headers()["link"].to_str().unwrap().to_owned();
    assert!(link.contains("n=2&last=acme/a2") && link.ends_with("rel=\"next\""), "{link}");
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["repositories"], json!(["acme/a1", "acme/a2"]));
    let rest: Value = server
        .request(Method::GET, "/v2/_catalog?n=2&last=acme/a2", &token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rest["repositories"], json!(["acme/a3", "acme/docker"]));
}

on_both_backends!(docker_media_types_and_the_catalog);
