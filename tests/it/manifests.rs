//! Signed manifests and write-once tags, verified with code nobody here wrote.

use amber_core::dsse::Envelope;
use amber_core::manifest::{self, Expected};
use amber_core::wire::KeyList;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::backends::Backend;
use crate::harness::{TestServer, data, expect_error, independent_b3_bytes, payload, verify_with_python};
use crate::on_both_backends;

/// Pushes `count` blobs to `repo` and returns manifest file entries for them.
async fn push_files(server: &TestServer, token: &str, repo: &str, count: usize, seed: u64) -> Vec<Value> {
    let mut files = Vec::new();
    for i in 0..count {
        let bytes = data(1000 + i * 10, seed + i as u64);
        let digest = independent_b3_bytes(&bytes);
        let put = server
            .request(Method::PUT, &format!("/v1/repos/{repo}/blobs/{digest}"), token)
            .body(bytes.clone())
            .send()
            .await
            .unwrap();
        assert!(put.status().is_success());
        files.push(json!({"path": format!("dir{i}/file-{i}.bin"), "digest": digest, "size": bytes.len()}));
    }
    files
}

async fn a_pushed_manifest_verifies_independently_and_binds_its_tag_once(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = server.token(&[("acme/web", &["push", "pull"])]).await;
    let files = push_files(&server, &token, "acme/web", 3, 10).await;
    let mut reversed = files.clone();
    reversed.reverse();
    let request = json!({"files": reversed, "annotations": {"git.commit": "abc123"}});

    let put = server.request(Method::PUT, "/v1/repos/acme/web/tags/1.4.2", &token).json(&request).send().await.unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);
    let digest = put.headers()["amber-manifest-digest"].to_str().unwrap().to_owned();
    let envelope: Value = put.json().await.unwrap();
    assert_eq!(envelope["payloadType"], "application/vnd.amber.manifest.v1+json");

    let keys = server.keys().await;
    assert_eq!(verify_with_python(&envelope, &keys).unwrap(), digest, "payload BLAKE3 is the manifest digest");

    let me: Value = server.request(Method::GET, "/v1/whoami", &token).send().await.unwrap().json().await.unwrap();
    let body = payload(&envelope);
    assert_eq!(body["schema"], "amber.manifest.v1");
    assert_eq!(body["repository"], "acme/web");
    assert_eq!(body["tag"], "1.4.2");
    assert_eq!(body["pushed_by"], json!({"token_id": me["id"], "token_name": "test", "pipeline": "it"}));
    assert_eq!(body["files"], json!(files), "files are sorted by path");
    assert_eq!(body["annotations"], json!({"git.commit": "abc123"}));
    assert!(body["created_at"].is_string());

    // The core verifier, with keys pinned from /v1/keys.
    let pinned: KeyList = serde_json::from_value(keys.clone()).unwrap();
    let typed: Envelope = serde_json::from_value(envelope.clone()).unwrap();
    let verified = manifest::verify(
        &typed,
        &pinned.verifying_keys().unwrap(),
        &"acme/web".parse().unwrap(),
        &Expected::Tag("1.4.2".parse().unwrap()),
    )
    .unwrap();
    assert_eq!(verified.digest.to_string(), digest);

    // A retry (even with files in another order) is safe: 200 and the same envelope.
    let retry = server
        .request(Method::PUT, "/v1/repos/acme/web/tags/1.4.2", &token)
        .json(&json!({"files": files, "annotations": {"git.commit": "abc123"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), StatusCode::OK);
    assert_eq!(retry.json::<Value>().await.unwrap(), envelope);
    // Anything else is a conflict, and the tag still means what it meant.
    let other = server
        .request(Method::PUT, "/v1/repos/acme/web/tags/1.4.2", &token)
        .json(&json!({"files": files, "annotations": {"git.commit": "def456"}}))
        .send()
        .await
        .unwrap();
    let conflict = expect_error(other, StatusCode::CONFLICT, "tag_exists").await;
    assert_eq!(conflict["error"]["detail"]["digest"], digest.as_str());

    let by_tag = server.request(Method::GET, "/v1/repos/acme/web/tags/1.4.2", &token).send().await.unwrap();
    assert_eq!(by_tag.headers()["amber-manifest-digest"], digest.as_str());
    assert_eq!(by_tag.json::<Value>().await.unwrap(), envelope);
    let by_digest =
        server.request(Method::GET, &format!("/v1/repos/acme/web/manifests/{digest}"), &token).send().await.unwrap();
    assert_eq!(by_digest.status(), StatusCode::OK);
    assert_eq!(by_digest.json::<Value>().await.unwrap(), envelope);
    // Per repository, like blobs.
    let elsewhere = server.token(&[("acme/api", &["pull"])]).await;
    let hidden = server
        .request(Method::GET, &format!("/v1/repos/acme/api/manifests/{digest}"), &elsewhere)
        .send()
        .await
        .unwrap();
    expect_error(hidden, StatusCode::NOT_FOUND, "manifest_unknown").await;
}

async fn bad_manifests_get_their_error_codes(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = server.token(&[("acme/*", &["push", "pull"])]).await;
    let files = push_files(&server, &token, "acme/web", 2, 20).await;
    let only_elsewhere = push_files(&server, &token, "acme/other", 1, 99).await;
    let unknown = json!({"path": "x", "digest": independent_b3_bytes(b"never pushed"), "size": 12});
    let mut wrong_size = files[0].clone();
    wrong_size["size"] = json!(1);
    let put = |body: Value, tag: &'static str| {
        server.request(Method::PUT, &format!("/v1/repos/acme/web/tags/{tag}"), &token).json(&body).send()
    };

    let missing = expect_error(
        put(json!({"files": [files[0], unknown]}), "v1").await.unwrap(),
        StatusCode::BAD_REQUEST,
        "manifest_blob_unknown",
    )
    .await;
    assert_eq!(missing["error"]["detail"]["missing"].as_array().unwrap().len(), 1);
    assert_eq!(missing["error"]["detail"]["missing"][0]["path"], "x");
    expect_error(
        put(json!({"files": [wrong_size]}), "v1").await.unwrap(),
        StatusCode::BAD_REQUEST,
        "manifest_blob_unknown",
    )
    .await;
    expect_error(
        put(json!({"files": only_elsewhere}), "v1").await.unwrap(),
        StatusCode::BAD_REQUEST,
        "manifest_blob_unknown",
    )
    .await;

    let digest = files[0]["digest"].clone();
    for bad in ["../etc/passwd", "/abs", "a/../b", "a//b", "./a", "a\\b", ""] {
        let body = json!({"files": [{"path": bad, "digest": digest, "size": files[0]["size"]}]});
        expect_error(put(body, "v1").await.unwrap(), StatusCode::BAD_REQUEST, "manifest_invalid").await;
    }
    let dup = json!({"files": [files[0], {"path": files[0]["path"], "digest": files[1]["digest"], "size": files[1]["size"]}]});
    expect_error(put(dup, "v1").await.unwrap(), StatusCode::BAD_REQUEST, "manifest_invalid").await;
    let clash = json!({"files": [{"path": "a", "digest": digest, "size": files[0]["size"]}, {"path": "a/b", "digest": digest, "size": files[0]["size"]}]});
    expect_error(put(clash, "v1").await.unwrap(), StatusCode::BAD_REQUEST, "manifest_invalid").await;
    expect_error(put(json!({"files": []}), "v1").await.unwrap(), StatusCode::BAD_REQUEST, "manifest_invalid").await;
    expect_error(
        put(json!({"files": files, "pushed_by": "me"}), "v1").await.unwrap(),
        StatusCode::BAD_REQUEST,
        "manifest_invalid",
    )
    .await;
    for tag in ["-x", ".x", "a%2Fb", &"x".repeat(129)] {
        let response = server
            .request(Method::PUT, &format!("/v1/repos/acme/web/tags/{tag}"), &token)
            .json(&json!({"files": files}))
            .send()
            .await
            .unwrap();
        expect_error(response, StatusCode::BAD_REQUEST, "name_invalid").await;
    }
    // Nothing above bound anything.
    expect_error(
        server.request(Method::GET, "/v1/repos/acme/web/tags/v1", &token).send().await.unwrap(),
        StatusCode::NOT_FOUND,
        "tag_unknown",
    )
    .await;
    let unknown_digest = independent_b3_bytes(b"no manifest");
    expect_error(
        server
            .request(Method::GET, &format!("/v1/repos/acme/web/manifests/{unknown_digest}"), &token)
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
        "manifest_unknown",
    )
    .await;

    let pull_only = server.token(&[("acme/web", &["pull"])]).await;
    let denied = server
        .request(Method::PUT, "/v1/repos/acme/web/tags/v1", &pull_only)
        .json(&json!({"files": files}))
        .send()
        .await
        .unwrap();
    expect_error(denied, StatusCode::FORBIDDEN, "denied").await;
}

async fn sixteen_racing_binds_have_exactly_one_winner(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = server.token(&[("acme/web", &["push", "pull"])]).await;
    let files = push_files(&server, &token, "acme/web", 1, 30).await;
    let binds = (0..16).map(|i| {
        server
            .request(Method::PUT, "/v1/repos/acme/web/tags/race", &token)
            .json(&json!({"files": files, "annotations": {"attempt": i.to_string()}}))
            .send()
    });
    let responses = futures_util::future::join_all(binds).await;
    let mut winner = None;
    let mut conflicts = 0;
    for response in responses {
        let response = response.unwrap();
        match response.status() {
            StatusCode::CREATED => {
                assert!(winner.is_none(), "two winners");
                winner = Some(response.headers()["amber-manifest-digest"].to_str().unwrap().to_owned());
            }
            StatusCode::CONFLICT => conflicts += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(conflicts, 15);
    let bound = server.request(Method::GET, "/v1/repos/acme/web/tags/race", &token).send().await.unwrap();
    assert_eq!(bound.headers()["amber-manifest-digest"].to_str().unwrap(), winner.unwrap());
}

async fn tags_are_listed_in_pages(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = server.token(&[("acme/web", &["push", "pull"])]).await;
    let files = push_files(&server, &token, "acme/web", 1, 40).await;
    for tag in ["b", "a", "c", "a1"] {
        let put = server
            .request(Method::PUT, &format!("/v1/repos/acme/web/tags/{tag}"), &token)
            .json(&json!({"files": files}))
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), StatusCode::CREATED);
    }
    let page: Value = server
        .request(Method::GET, "/v1/repos/acme/web/tags?limit=3", &token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = page["tags"].as_array().unwrap().iter().map(|t| t["tag"].as_str().unwrap()).collect();
    assert_eq!(names, ["a", "a1", "b"]);
    assert_eq!(page["next"], "b");
    let page: Value = server
        .request(Method::GET, "/v1/repos/acme/web/tags?limit=3&after=b", &token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["tags"][0]["tag"], "c");
    assert!(page["tags"][0]["digest"].as_str().unwrap().starts_with("blake3:"));
    assert_eq!(page["next"], Value::Null);
    let bad = server.request(Method::GET, "/v1/repos/acme/web/tags?limit=0", &token).send().await.unwrap();
    expect_error(bad, StatusCode::BAD_REQUEST, "request_invalid").await;
}

async fn rotated_keys_sign_new_manifests_and_old_ones_still_verify(backend: Backend) {
    let mut server = TestServer::on(backend).await;
    let token = server.token(&[("acme/web", &["push", "pull"])]).await;
    let files = push_files(&server, &token, "acme/web", 1, 50).await;
    let old: Value = server
        .request(Method::PUT, "/v1/repos/acme/web/tags/v1", &token)
        .json(&json!({"files": files}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let old_keys = server.keys().await;
    let manifest_keys =
        |list: &Value| list["keys"].as_array().unwrap().iter().filter(|k| k["purpose"] == "manifest").count();
    assert_eq!(manifest_keys(&old_keys), 1);

    assert!(server.terminate());
    let new_keyid = server.amberd(&["keys", "rotate"]).trim().to_owned();
    let exported: KeyList = serde_json::from_str(&server.amberd(&["keys", "export"])).unwrap();
    server.restart();

    let new: Value = server
        .request(Method::PUT, "/v1/repos/acme/web/tags/v2", &token)
        .json(&json!({"files": files}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(new["signatures"][0]["keyid"], new_keyid.as_str());
    assert_ne!(old["signatures"][0]["keyid"], new["signatures"][0]["keyid"]);

    let listed = server.keys().await;
    let statuses: Vec<(String, String)> = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["purpose"] == "manifest")
        .map(|k| (k["keyid"].as_str().unwrap().to_owned(), k["status"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(statuses.len(), 2);
    assert!(statuses.contains(&(old["signatures"][0]["keyid"].as_str().unwrap().to_owned(), "retired".into())));
    assert!(statuses.contains(&(new_keyid.clone(), "active".into())));
    assert_eq!(serde_json::to_value(&exported).unwrap(), listed, "keys export prints what /v1/keys serves");

    verify_with_python(&old, &listed).expect("the old manifest still verifies");
    verify_with_python(&new, &listed).expect("the new manifest verifies");
    // Pinning only the old key does not accept the new manifest.
    assert!(verify_with_python(&new, &old_keys).is_err());
}

#[test]
fn tampering_is_caught_by_the_independent_verifier_too() {
    use base64::Engine;
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let envelope = amber_core::dsse::sign(manifest::PAYLOAD_TYPE, b"{\"repository\":\"acme/web\"}", &key);
    let keys = json!({"keys": [{"keyid": amber_core::dsse::key_id(&key.verifying_key()), "public_key": base64::engine::general_purpose::STANDARD.encode(key.verifying_key().as_bytes())}]});
    let good = serde_json::to_value(&envelope).unwrap();
    verify_with_python(&good, &keys).unwrap();
    let mut flipped = good;
    flipped["payload"] = json!(base64::engine::general_purpose::STANDARD.encode(b"{\"repository\":\"acme/wed\"}"));
    assert!(verify_with_python(&flipped, &keys).is_err());
}

on_both_backends!(
    a_pushed_manifest_verifies_independently_and_binds_its_tag_once,
    bad_manifests_get_their_error_codes,
    sixteen_racing_binds_have_exactly_one_winner,
    tags_are_listed_in_pages,
    rotated_keys_sign_new_manifests_and_old_ones_still_verify,
);

#[tokio::test]
async fn an_operator_supplied_signing_key_signs_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("signing.pem");
    let made = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&pem)
        .status()
        .unwrap();
    assert!(made.success());
    let server = TestServer::builder().arg("--signing-key-file").arg(pem.to_str().unwrap()).start().await;
    let token = server.token(&[("acme/web", &["push", "pull"])]).await;
    let files = push_files(&server, &token, "acme/web", 1, 60).await;
    let envelope: Value = server
        .request(Method::PUT, "/v1/repos/acme/web/tags/v1", &token)
        .json(&json!({"files": files}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys = server.keys().await;
    let active: Vec<&Value> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["status"] == "active" && k["purpose"] == "manifest")
        .collect();
    assert_eq!(active.len(), 1);
    assert_eq!(envelope["signatures"][0]["keyid"], active[0]["keyid"]);
    // The public key served is the one openssl derives from the file.
    let der = std::process::Command::new("openssl")
        .args(["pkey", "-in"])
        .arg(&pem)
        .args(["-pubout", "-outform", "DER"])
        .output()
        .unwrap();
    use base64::Engine;
    let raw = &der.stdout[der.stdout.len() - 32..];
    assert_eq!(active[0]["public_key"], base64::engine::general_purpose::STANDARD.encode(raw));
    verify_with_python(&envelope, &keys).unwrap();
}
