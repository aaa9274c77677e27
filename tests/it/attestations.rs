//! Attestations checked by tools nobody here wrote: securesystemslib (the
//! envelope, with the key from `GET /v1/keys`), in-toto-attestation (the
//! statement, and the VSA and provenance parsed strictly by its SLSA
//! models), Python `cryptography` (the raw PAE signature), `sha256sum` and
//! `b3sum` (every subject); provenance from GitHub and GitLab ID tokens
//! carrying exactly their claims; the OCI referrers; tampering caught.

use std::process::Command;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::backends::Backend;
use crate::fake_issuer::FakeIssuer;
use crate::harness::{TestServer, data, expect_error, payload};
use crate::oidc::{create_publisher, github_publisher, minted, server_trusting, with};
use crate::on_both_backends;

const VSA: &str = "https://slsa.dev/verification_summary/v1";
const PROVENANCE: &str = "https://slsa.dev/provenance/v1";

/// Pushes `files` through `/v1/` and binds `repo:tag`.
async fn push(server: &TestServer, token: &str, repo: &str, tag: &str, files: &[(&str, &[u8])]) -> Value {
    let mut entries = Vec::new();
    for (path, bytes) in files {
        let put = server
            .request(Method::POST, &format!("/v1/repos/{repo}/blobs"), token)
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert!(put.status().is_success(), "{}", put.text().await.unwrap());
        let info: Value = put.json().await.unwrap();
        entries.push(json!({"path": path, "digest": info["digest"], "size": bytes.len()}));
    }
    let bound = server
        .request(Method::PUT, &format!("/v1/repos/{repo}/tags/{tag}"), token)
        .json(&json!({"files": entries}))
        .send()
        .await
        .unwrap();
    assert_eq!(bound.status(), StatusCode::CREATED, "{}", bound.text().await.unwrap());
    bound.json().await.unwrap()
}

async fn attestations(server: &TestServer, token: &str, repo: &str, tag: &str, accept: &str) -> String {
    let response = server
        .request(Method::GET, &format!("/v1/repos/{repo}/tags/{tag}/attestations"), token)
        .header("accept", accept)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.unwrap()
}

/// What `tests/tools/verify_intoto.py` found: one statement per envelope.
pub fn verify_stock(envelopes: &str, keys: &Value) -> Result<Vec<Value>, String> {
    let dir = tempfile::tempdir().unwrap();
    let (list, keys_path) = (dir.path().join("attestations"), dir.path().join("keys.json"));
    std::fs::write(&list, envelopes).unwrap();
    std::fs::write(&keys_path, keys.to_string()).unwrap();
    let out = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/verify_intoto.py"))
        .args([&list, &keys_path])
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect())
}

/// `TOOL FILE`'s first word (`sha256sum`, `b3sum`).
fn sum_of(tool: &str, bytes: &[u8]) -> String {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    let out = Command::new(tool).arg(file.path()).output().unwrap_or_else(|e| panic!("{tool}: {e}"));
    assert!(out.status.success(), "{tool}");
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_owned()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(bytes))
}

/// An envelope whose payload `edit` changed, its signature kept.
fn altered(envelope: &Value, edit: impl FnOnce(&mut Value)) -> Value {
    use base64::Engine;
    let mut statement = payload(envelope);
    edit(&mut statement);
    let mut changed = envelope.clone();
    changed["payload"] = json!(base64::engine::general_purpose::STANDARD.encode(statement.to_string()));
    changed
}

/// Every binding gets a VSA that stock verifiers check; its subjects are
/// the files as `sha256sum` and `b3sum` see them; the NDJSON and Sigstore
/// bundle forms carry the same envelope; anything altered fails.
async fn stock_verifiers_check_every_binding(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = server.token(&[("acme/app", &["push", "pull"])]).await;
    let (small, big) = (b"hello\n".to_vec(), data(300_000, 31));
    let manifest = push(&server, &token, "acme/app", "v1", &[("a.txt", &small), ("dir/b.bin", &big)]).await;
    let keys = server.keys().await;

    let list = attestations(&server, &token, "acme/app", "v1", "application/json").await;
    let statements = verify_stock(&list, &keys).expect("securesystemslib, in-toto and cryptography verify");
    assert_eq!(statements.len(), 1, "a stored token's push has a VSA and no provenance");
    let vsa = &statements[0];
    assert_eq!(vsa["predicateType"], VSA);
    assert_eq!(vsa["predicate"]["verificationResult"], "PASSED");
    let manifest_digest = crate::harness::independent_b3_bytes(&crate::harness::payload_bytes(&manifest));
    let resource = vsa["predicate"]["resourceUri"].as_str().unwrap();
    assert!(
        resource.starts_with("amber://") && resource.ends_with(&format!("/acme/app:v1@{manifest_digest}")),
        "{resource}"
    );
    let subjects = vsa["subject"].as_array().unwrap();
    assert_eq!(subjects.len(), 3);
    for (subject, (name, bytes)) in subjects.iter().zip([("a.txt", &small), ("dir/b.bin", &big)]) {
        assert_eq!(subject["name"], name);
        assert_eq!(subject["digest"]["sha256"], sum_of("sha256sum", bytes), "{name}");
        assert_eq!(subject["digest"]["blake3"], sum_of("b3sum", bytes), "{name}");
    }
    assert_eq!(subjects[2]["name"], "acme/app:v1");
    assert_eq!(format!("blake3:{}", subjects[2]["digest"]["blake3"].as_str().unwrap()), manifest_digest);

    // The policy the VSA names, by its sha256.
    let policy = server.http.get(server.url("/v1/attestations/policy")).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(vsa["predicate"]["policy"]["digest"]["sha256"], sha256_hex(&policy));
    assert!(vsa["predicate"]["policy"]["uri"].as_str().unwrap().ends_with("/v1/attestations/policy"));

    // One per line, and as Sigstore bundles: the same envelopes.
    let lines = attestations(&server, &token, "acme/app", "v1", "application/x-ndjson").await;
    assert_eq!(verify_stock(&lines, &keys).unwrap(), statements);
    let envelopes: Vec<Value> = serde_json::from_str(&list).unwrap();
    let bundles: Vec<Value> = server
        .request(Method::GET, "/v1/repos/acme/app/tags/v1/attestations?format=sigstore-bundle", &token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bundles[0]["mediaType"], "application/vnd.dev.sigstore.bundle.v0.3+json");
    assert_eq!(bundles[0]["dsseEnvelope"]["payload"], envelopes[0]["payload"]);
    assert_eq!(bundles[0]["verificationMaterial"]["publicKey"]["hint"], envelopes[0]["signatures"][0]["keyid"]);
    // The key id is securesystemslib's, listed beside Amber's own.
    let listed =
        keys["keys"].as_array().unwrap().iter().any(|k| k["sslib_keyid"] == envelopes[0]["signatures"][0]["keyid"]);
    assert!(listed, "{keys}");

    // A subject digest, the predicate, the payload type: each altered fails.
    let envelope = &envelopes[0];
    for (what, bad) in [
        ("subject", altered(envelope, |s| s["subject"][0]["digest"]["sha256"] = json!("00".repeat(32)))),
        ("predicate", altered(envelope, |s| s["predicate"]["verificationResult"] = json!("FAILED"))),
        ("payload type", {
            let mut bad = envelope.clone();
            bad["payloadType"] = json!("application/vnd.in-toto.v1+json");
            bad
        }),
    ] {
        let text = serde_json::to_string(&[bad]).unwrap();
        assert!(verify_stock(&text, &keys).is_err(), "an altered {what} verified");
    }

    // Made the same way for a binding made before (read again: stored).
    assert_eq!(attestations(&server, &token, "acme/app", "v1", "application/json").await, list);
    // Bad requests and callers.
    let odd = server.request(Method::GET, "/v1/repos/acme/app/tags/v1/attestations?format=pgp", &token);
    expect_error(odd.send().await.unwrap(), StatusCode::BAD_REQUEST, "request_invalid").await;
    let unknown = server.request(Method::GET, "/v1/repos/acme/app/tags/v9/attestations", &token);
    expect_error(unknown.send().await.unwrap(), StatusCode::NOT_FOUND, "tag_unknown").await;
    let other = server.token(&[("acme/other", &["pull"])]).await;
    let denied = server.request(Method::GET, "/v1/repos/acme/app/tags/v1/attestations", &other);
    expect_error(denied.send().await.unwrap(), StatusCode::FORBIDDEN, "denied").await;
    let anonymous = server.http.get(server.url("/v1/repos/acme/app/tags/v1/attestations")).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    // Through /v2/: the tag's OCI artifact lists them as referrers.
    let head = server.request(Method::HEAD, "/v2/acme/app/manifests/v1", &token).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    let subject = head.headers()["docker-content-digest"].to_str().unwrap().to_owned();
    let referrers: Value = server
        .request(
            Method::GET,
            &format!("/v2/acme/app/referrers/{subject}?artifactType=application/vnd.in-toto%2Bjson"),
            &token,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let found = referrers["manifests"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{referrers}");
    assert_eq!(found[0]["annotations"]["in-toto.io/predicate-type"], VSA);
    let referrer: Value = server
        .request(Method::GET, &format!("/v2/acme/app/manifests/{}", found[0]["digest"].as_str().unwrap()), &token)
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let layer = referrer["layers"][0]["digest"].as_str().unwrap();
    let served = server.request(Method::GET, &format!("/v2/acme/app/blobs/{layer}"), &token).send().await.unwrap();
    let served = served.text().await.unwrap();
    assert_eq!(format!("{served}\n"), lines, "the referrer's layer is the envelope's line, byte for byte");

    // An expired tag keeps its attestations: they are history.
    let expire = server
        .request(Method::POST, "/v1/repos/acme/app/tags/v1/expire", &server.admin)
        .json(&json!({"reason": "superseded"}))
        .send()
        .await
        .unwrap();
    assert!(expire.status().is_success(), "{}", expire.text().await.unwrap());
    let kept = server.request(Method::GET, "/v1/repos/acme/app/tags/v1/attestations", &token).send().await.unwrap();
    assert_eq!(kept.status(), StatusCode::OK);
    assert_eq!(kept.headers()["amber-tag-state"], "expired");
    assert_eq!(kept.text().await.unwrap(), list);
}

/// A push with a token minted from a GitHub Actions ID token, and one from
/// a GitLab CI one: provenance carrying exactly their claims, in their
/// build types, checked by the stock verifiers; the VSA names it as input.
#[tokio::test]
async fn provenance_carries_exactly_the_claims_of_the_id_token() {
    let github = FakeIssuer::start().await;
    let gitlab = FakeIssuer::start().await;
    let (server, _config) =
        server_trusting(Backend::Embedded, &[("github", &github, "github"), ("gitlab", &gitlab, "gitlab")]).await;
    create_publisher(&server, &github_publisher()).await;
    let token = minted(&server, &github.sign("rsa-1", &github.github_claims())).await;
    let secret = token["token"].as_str().unwrap();
    push(&server, secret, "acme/web", "1.0", &[("app.tar", &data(5000, 3))]).await;
    let keys = server.keys().await;
    let list = attestations(&server, secret, "acme/web", "1.0", "application/json").await;
    let statements = verify_stock(&list, &keys).expect("the provenance and the VSA verify");
    assert_eq!(statements.len(), 2);
    assert_eq!(statements[0]["predicateType"], PROVENANCE);
    assert_eq!(statements[1]["predicateType"], VSA);
    let p = &statements[0]["predicate"];
    let d = &p["buildDefinition"];
    // The test issuer stands for a GitHub Enterprise Server: its host is the server.
    let host = &github.url;
    assert_eq!(d["buildType"], "https://actions.github.io/buildtypes/workflow/v1");
    assert_eq!(
        d["externalParameters"],
        json!({"workflow": {"ref": "refs/heads/main", "repository": format!("{host}/acme/web"), "path": ".github/workflows/release.yml"}})
    );
    assert_eq!(
        d["internalParameters"],
        json!({"github": {"event_name": "push", "repository_id": "123456789", "repository_owner_id": "98765", "environment": "production"}})
    );
    assert_eq!(
        d["resolvedDependencies"],
        json!([{"uri": format!("git+{host}/acme/web@refs/heads/main"), "digest": {"gitCommit": "0123456789abcdef0123456789abcdef01234567"}}])
    );
    assert_eq!(
        p["runDetails"]["builder"]["id"],
        format!("{host}/acme/web/.github/workflows/release.yml@refs/heads/main")
    );
    assert_eq!(p["runDetails"]["metadata"]["invocationId"], format!("{host}/acme/web/actions/runs/4711/attempts/1"));
    // The VSA names the provenance by the sha256 of its line in the
    // `.intoto.jsonl` form.
    let lines = attestations(&server, secret, "acme/web", "1.0", "application/x-ndjson").await;
    let input = &statements[1]["predicate"]["inputAttestations"][0];
    assert_eq!(input["digest"]["sha256"], sha256_hex(lines.lines().next().unwrap().as_bytes()));
    assert!(input["uri"].as_str().unwrap().ends_with("/v1/repos/acme/web/tags/1.0/attestations"), "{input}");

    // GitLab CI.
    create_publisher(
        &server,
        &json!({
            "name": "api deploy", "issuer": "gitlab",
            "gitlab": {"project_path": "acme/api", "project_id": "42", "namespace_id": "7",
                       "ci_config_path": ".gitlab-ci.yml", "refs": ["main"]},
            "grants": [{"repos": "acme/api", "actions": ["push", "pull"]}],
        }),
    )
    .await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let gl_host = gitlab.url.trim_start_matches("http://").to_owned();
    let claims = json!({
        "iss": gitlab.url, "aud": "amber", "iat": now, "nbf": now, "exp": now + 300, "jti": "gl-prov-1",
        "sub": "project_path:acme/api:ref_type:branch:ref:main",
        "namespace_id": "7", "namespace_path": "acme", "project_id": "42", "project_path": "acme/api",
        "pipeline_id": "900", "pipeline_source": "push", "job_id": "901", "ref": "main", "ref_type": "branch",
        "ref_protected": "true", "sha": "89abcdef0123456789abcdef0123456789abcdef",
        "ci_config_ref_uri": format!("{gl_host}/acme/api//.gitlab-ci.yml@refs/heads/main"),
    });
    let token = minted(&server, &gitlab.sign("rsa-1", &with(claims, json!({})))).await;
    let secret = token["token"].as_str().unwrap();
    push(&server, secret, "acme/api", "2.0", &[("api.tar", &data(700, 4))]).await;
    let list = attestations(&server, secret, "acme/api", "2.0", "application/json").await;
    let statements = verify_stock(&list, &keys).expect("GitLab's provenance verifies");
    let p = &statements[0]["predicate"];
    let d = &p["buildDefinition"];
    let url = &gitlab.url;
    assert_eq!(d["buildType"], "https://docs.gitlab.com/ci/pipeline_security/slsa/provenance_v1");
    assert_eq!(
        d["externalParameters"],
        json!({"source": format!("{url}/acme/api"), "entryPoint": ".gitlab-ci.yml", "ref": "refs/heads/main"})
    );
    assert_eq!(
        d["internalParameters"],
        json!({"job": "901", "pipeline_id": "900", "pipeline_source": "push", "project_id": "42", "namespace_id": "7"})
    );
    assert_eq!(d["resolvedDependencies"][0]["digest"]["gitCommit"], "89abcdef0123456789abcdef0123456789abcdef");
    assert_eq!(p["runDetails"]["builder"]["id"], format!("http://{gl_host}/acme/api//.gitlab-ci.yml@refs/heads/main"));
    assert_eq!(p["runDetails"]["metadata"]["invocationId"], format!("{url}/acme/api/-/jobs/901"));
}

on_both_backends!(stock_verifiers_check_every_binding);

/// `amber pull --attestations` saves what `amber verify --attestation`,
/// `cosign verify-blob-attestation` (with `--signature` and with `--bundle`,
/// the key as PEM from `GET /v1/keys`) and sigstore-js (`@sigstore/verify`,
/// with a key selector) all verify offline; a file that is no subject and a
/// tampered bundle fail each of them.
#[tokio::test]
async fn the_cli_cosign_and_sigstore_js_check_what_pull_saved() {
    let server = TestServer::start().await;
    let token = server.token(&[("acme/*", &["push", "pull"])]).await;
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    std::fs::create_dir_all(src.join("bin")).unwrap();
    std::fs::write(src.join("bin/app"), data(200_000, 9)).unwrap();
    std::fs::write(src.join("README"), b"read me\n").unwrap();
    let pushed = server.amber(&token, &["push", "acme/tool:1.2", src.to_str().unwrap()]).await;
    assert_eq!(pushed.code, 0, "{}", pushed.stderr);
    let keys = crate::harness::key_file(&server, work.path()).await;
    let (out, saved) = (work.path().join("out"), work.path().join("att"));
    let (out_s, saved_s) = (out.to_str().unwrap(), saved.to_str().unwrap());
    let pulled =
        server.amber(&token, &["pull", "acme/tool:1.2", "-o", out_s, "--key", &keys, "--attestations", saved_s]).await;
    assert_eq!(pulled.code, 0, "{}", pulled.stderr);
    assert!(
        pulled.stderr.contains("attestation https://slsa.dev/verification_summary/v1 verified"),
        "{}",
        pulled.stderr
    );
    for name in ["1.2.intoto.jsonl", "1.2.vsa.dsse.json", "1.2.vsa.sigstore.json"] {
        assert!(saved.join(name).is_file(), "{name} was not saved");
    }
    for file in ["1.2.intoto.jsonl", "1.2.vsa.dsse.json", "1.2.vsa.sigstore.json"] {
        let path = saved.join(file);
        let verified = server
            .amber(&token, &["verify", "--attestation", path.to_str().unwrap(), "--key", &keys, "--dir", out_s])
            .await;
        assert_eq!(verified.code, 0, "{file}: {}", verified.stderr);
        assert!(
            verified.stderr.contains("PASSED") && verified.stderr.contains("are its subjects"),
            "{}",
            verified.stderr
        );
    }

    // cosign, with the key as PEM.
    let key_list: Value = serde_json::from_str(&std::fs::read_to_string(&keys).unwrap()).unwrap();
    let pem =
        key_list["keys"].as_array().unwrap().iter().find(|k| k["purpose"] == "manifest").unwrap()["public_key_pem"]
            .as_str()
            .unwrap()
            .to_owned();
    let pem_path = work.path().join("amber.pem");
    std::fs::write(&pem_path, pem).unwrap();
    let other = work.path().join("other");
    std::fs::write(&other, b"not a subject").unwrap();
    let cosign = |how: &str, file: &std::path::Path, blob: &std::path::Path| {
        Command::new(crate::oci::go_tool("cosign"))
            .args([
                "verify-blob-attestation",
                "--key",
                pem_path.to_str().unwrap(),
                "--type",
                VSA,
                "--insecure-ignore-tlog",
            ])
            .args([how, file.to_str().unwrap(), blob.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let (dsse, bundle) = (saved.join("1.2.vsa.dsse.json"), saved.join("1.2.vsa.sigstore.json"));
    for (how, file) in [("--signature", &dsse), ("--bundle", &bundle)] {
        let ok = cosign(how, file, &out.join("bin/app"));
        assert!(ok.status.success(), "cosign {how}: {}", String::from_utf8_lossy(&ok.stderr));
        assert!(!cosign(how, file, &other).status.success(), "cosign {how} took a file that is no subject");
    }

    // sigstore-js, with a key selector.
    let sigstore = |file: &std::path::Path| {
        Command::new("node")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/sigstore_verify.mjs"))
            .args([file, std::path::Path::new(&keys)])
            .output()
            .unwrap()
    };
    let ok = sigstore(&bundle);
    assert!(ok.status.success(), "sigstore-js: {}", String::from_utf8_lossy(&ok.stderr));
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), VSA);

    // Tampered: every verifier refuses it.
    let mut tampered: Value = serde_json::from_str(&std::fs::read_to_string(&bundle).unwrap()).unwrap();
    let envelope = json!({"payload": tampered["dsseEnvelope"]["payload"], "payloadType": "x", "signatures": []});
    let changed = altered(&envelope, |s| s["subject"][0]["digest"]["sha256"] = json!(sha256_hex(b"not a subject")));
    tampered["dsseEnvelope"]["payload"] = changed["payload"].clone();
    let bad = work.path().join("tampered.sigstore.json");
    std::fs::write(&bad, tampered.to_string()).unwrap();
    assert!(!sigstore(&bad).status.success(), "sigstore-js took a tampered bundle");
    assert!(!cosign("--bundle", &bad, &other).status.success(), "cosign took a tampered bundle");
    let refused = server.amber(&token, &["verify", "--attestation", bad.to_str().unwrap(), "--key", &keys]).await;
    assert_eq!(refused.code, 4, "{}", refused.stderr);
}
