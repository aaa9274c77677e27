//! The same sequence of OCI requests against the reference registry
//! (distribution v3.1.2, pinned) and `amberd`: the same statuses and the
//! same headers (present, and equal where both name content), except where
//! the contract says Amber differs, each difference listed here and in
//! `api/oci.md`.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::protocol::sha256;
use crate::backends::Backend;
use crate::harness::{TestServer, data};

/// Where Amber differs from the reference registry, on purpose: the step and why.
const DIFFERENCES: &[(&str, &str)] = &[
    (
        "monolithic blob",
        "a POST with ?digest= and the body stores the blob in one request (201), as the spec allows; the registry starts a session (202) and the client sends it again",
    ),
    (
        "wrong digest",
        "a one-request upload whose bytes hash to another digest is refused at once (400 DIGEST_INVALID); the registry starts a session (202)",
    ),
    ("move tag", "tags are create-only: 409 DENIED (tag_exists), where the registry moves the tag (201)"),
    ("referrers", "referrers are native (200, an image index), where the registry has no referrers API (404)"),
    (
        "sha512 blob",
        "a sha512 blob is stored in one request (201), where the registry starts a session (202) it cannot close with a sha512 digest",
    ),
    ("fallback tag", "tags shaped like the referrers fallback are refused (409), where the registry binds them (201)"),
];

/// Headers where Amber says more than the reference registry, on purpose.
const HEADER_DIFFERENCES: &[(&str, &str, &str)] = &[
    (
        "chunk out of order",
        "location",
        "a refused chunk says where the session is (the contract: 416 with the current Range)",
    ),
    (
        "chunk out of order",
        "range",
        "a refused chunk says how far the session is (the contract: 416 with the current Range)",
    ),
];

/// Headers whose presence must match; and those whose values must match too.
const PRESENT: &[&str] = &["location", "docker-upload-uuid", "range", "docker-content-digest", "content-type"];
const EQUAL: &[&str] = &["docker-content-digest", "range", "content-length"];

struct Registry(Child);

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_registry(dir: &std::path::Path) -> (Registry, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = format!(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: false\nhttp:\n  addr: 127.0.0.1:{port}\n",
        dir.join("data").display()
    );
    std::fs::write(dir.join("config.yml"), config).unwrap();
    let registry = Registry(
        Command::new(super::go_tool("registry"))
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if reqwest::get(format!("{base}/v2/")).await.is_ok_and(|r| r.status() == StatusCode::OK) {
            return (registry, base);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the reference registry did not start");
}

/// One answer: the step, its status, the headers compared, the body.
type Seen = (String, u16, BTreeMap<String, String>, Vec<u8>);

/// One server under the sequence.
struct Target {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    seen: Vec<Seen>,
}

impl Target {
    async fn send(
        &mut self,
        step: &str,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> reqwest::header::HeaderMap {
        let url = if path.starts_with("http") { path.to_owned() } else { format!("{}{path}", self.base) };
        let mut request = self.http.request(method, url).body(body);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let out = response.headers().clone();
        let kept: BTreeMap<String, String> = PRESENT
            .iter()
            .chain(EQUAL)
            .filter_map(|name| out.get(*name).map(|v| ((*name).to_owned(), v.to_str().unwrap_or("").to_owned())))
            .collect();
        let body = response.bytes().await.unwrap().to_vec();
        self.seen.push((step.to_owned(), status, kept, body));
        out
    }
}

/// The sequence: every request a push, a pull and content discovery make.
async fn sequence(target: &mut Target) {
    let repo = "acme/diff";
    let layer = data(100_000, 21);
    let digest = sha256(&layer);
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
    let config_digest = sha256(&config);
    target.send("base", Method::GET, "/v2/", &[], vec![]).await;
    target.send("missing blob", Method::HEAD, &format!("/v2/{repo}/blobs/{digest}"), &[], vec![]).await;
    let start = target.send("start session", Method::POST, &format!("/v2/{repo}/blobs/uploads/"), &[], vec![]).await;
    let location = start["location"].to_str().unwrap().to_owned();
    let chunk = target
        .send(
            "first chunk",
            Method::PATCH,
            &location,
            &[("content-range", "0-49999"), ("content-type", "application/octet-stream")],
            layer[..50_000].to_vec(),
        )
        .await;
    let location = chunk["location"].to_str().unwrap().to_owned();
    target
        .send(
            "chunk out of order",
            Method::PATCH,
            &location,
            &[("content-range", "60000-99999"), ("content-type", "application/octet-stream")],
            layer[60_000..].to_vec(),
        )
        .await;
    let status = target.send("session status", Method::GET, &location, &[], vec![]).await;
    let location = status["location"].to_str().unwrap().to_owned();
    let sep = if location.contains('?') { '&' } else { '?' };
    target
        .send(
            "close session",
            Method::PUT,
            &format!("{location}{sep}digest={digest}"),
            &[("content-range", "50000-99999"), ("content-type", "application/octet-stream")],
            layer[50_000..].to_vec(),
        )
        .await;
    target.send("head blob", Method::HEAD, &format!("/v2/{repo}/blobs/{digest}"), &[], vec![]).await;
    target
        .send("range of blob", Method::GET, &format!("/v2/{repo}/blobs/{digest}"), &[("range", "bytes=10-19")], vec![])
        .await;
    let monolithic = target
        .send(
            "monolithic blob",
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/?digest={config_digest}"),
            &[("content-type", "application/octet-stream")],
            config.clone(),
        )
        .await;
    if target.seen.last().is_some_and(|(_, status, _, _)| *status == 202) {
        // A session instead: the bytes again, to close it (as clients do).
        let location = monolithic["location"].to_str().unwrap().to_owned();
        let sep = if location.contains('?') { '&' } else { '?' };
        let close = format!("{location}{sep}digest={config_digest}");
        target
            .send(
                "monolithic fallback",
                Method::PUT,
                &close,
                &[("content-type", "application/octet-stream")],
                config.clone(),
            )
            .await;
        let (_, status, _, body) = target.seen.pop().unwrap();
        assert_eq!(status, 201, "the fallback PUT: {}", String::from_utf8_lossy(&body));
    }
    let bad = sha256(b"other bytes");
    target
        .send(
            "wrong digest",
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/?digest={bad}"),
            &[("content-type", "application/octet-stream")],
            b"these bytes".to_vec(),
        )
        .await;
    let cancel =
        target.send("session to cancel", Method::POST, &format!("/v2/{repo}/blobs/uploads/"), &[], vec![]).await;
    let cancel = cancel["location"].to_str().unwrap().to_owned();
    target.send("cancel session", Method::DELETE, &cancel, &[], vec![]).await;
    let manifest = |note: &str| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": layer.len()}],
            "annotations": {"note": note},
        }))
        .unwrap()
    };
    let first = manifest("first");
    let kind = [("content-type", "application/vnd.oci.image.manifest.v1+json")];
    target.send("push by tag", Method::PUT, &format!("/v2/{repo}/manifests/1.0"), &kind, first.clone()).await;
    target.send("push again", Method::PUT, &format!("/v2/{repo}/manifests/1.0"), &kind, first.clone()).await;
    let accept = [("accept", "application/vnd.oci.image.manifest.v1+json")];
    target.send("get by tag", Method::GET, &format!("/v2/{repo}/manifests/1.0"), &accept, vec![]).await;
    target
        .send("head by digest", Method::HEAD, &format!("/v2/{repo}/manifests/{}", sha256(&first)), &accept, vec![])
        .await;
    target.send("unknown manifest", Method::GET, &format!("/v2/{repo}/manifests/nope"), &accept, vec![]).await;
    target.send("tags", Method::GET, &format!("/v2/{repo}/tags/list"), &[], vec![]).await;
    target.send("tags page", Method::GET, &format!("/v2/{repo}/tags/list?n=1"), &[], vec![]).await;
    target.send("move tag", Method::PUT, &format!("/v2/{repo}/manifests/1.0"), &kind, manifest("second")).await;
    let missing = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(b"absent"), "size": 6},
        "layers": [],
    }))
    .unwrap();
    target.send("blob unknown", Method::PUT, &format!("/v2/{repo}/manifests/2.0"), &kind, missing).await;
    target
        .send("digest mismatch", Method::PUT, &format!("/v2/{repo}/manifests/{}", sha256(b"x")), &kind, first.clone())
        .await;
    let fallback = format!("sha256-{}", &sha256(&first)[7..]);
    target.send("fallback tag", Method::PUT, &format!("/v2/{repo}/manifests/{fallback}"), &kind, manifest("sig")).await;
    target
        .send("delete manifest", Method::DELETE, &format!("/v2/{repo}/manifests/{}", sha256(&first)), &[], vec![])
        .await;
    target.send("delete blob", Method::DELETE, &format!("/v2/{repo}/blobs/{digest}"), &[], vec![]).await;
    target.send("referrers", Method::GET, &format!("/v2/{repo}/referrers/{}", sha256(&first)), &[], vec![]).await;
    target
        .send("mount", Method::POST, &format!("/v2/acme/other/blobs/uploads/?mount={digest}&from={repo}"), &[], vec![])
        .await;
    let sha512 = format!("sha512:{:x}", <sha2::Sha512 as sha2::Digest>::digest(b"five"));
    target
        .send(
            "sha512 blob",
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/?digest={sha512}"),
            &[("content-type", "application/octet-stream")],
            b"five".to_vec(),
        )
        .await;
}

#[tokio::test]
async fn the_same_requests_get_the_same_answers_as_the_reference_registry() {
    let work = tempfile::tempdir().unwrap();
    let (_registry, registry_base) = start_registry(work.path()).await;
    let server = TestServer::on(Backend::Embedded).await;
    let token = server.token(&[("acme/*", &["pull", "push"])]).await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let mut reference = Target { http: http.clone(), base: registry_base, token: None, seen: Vec::new() };
    let mut amber = Target { http, base: server.url(""), token: Some(token), seen: Vec::new() };
    sequence(&mut reference).await;
    sequence(&mut amber).await;
    let mut report = Vec::new();
    for ((step, r_status, r_headers, r_body), (_, a_status, a_headers, a_body)) in
        reference.seen.iter().zip(&amber.seen)
    {
        if let Some((_, why)) = DIFFERENCES.iter().find(|(s, _)| s == step) {
            assert_ne!(r_status, a_status, "{step}: listed as a difference ({why}), but both answer {r_status}");
            report.push(format!("{step}: registry {r_status}, amber {a_status}: {why}"));
            continue;
        }
        assert_eq!(
            r_status,
            a_status,
            "{step}: registry {r_status} {r_headers:?} {}, amber {a_status} {a_headers:?} {}\nall: {:?}",
            String::from_utf8_lossy(r_body),
            String::from_utf8_lossy(a_body),
            reference.seen.iter().map(|(s, st, _, _)| format!("{s}={st}")).collect::<Vec<_>>()
        );
        let listed = |name: &str| HEADER_DIFFERENCES.iter().find(|(s, h, _)| s == step && *h == name);
        for name in PRESENT.iter().chain(EQUAL.iter().filter(|n| !PRESENT.contains(n))) {
            if let Some((_, _, why)) = listed(name) {
                assert_ne!(r_headers.get(*name), a_headers.get(*name), "{step}: header {name} listed as a difference");
                report.push(format!(
                    "{step}: header {name}: registry {:?}, amber {:?}: {why}",
                    r_headers.get(*name),
                    a_headers.get(*name)
                ));
            }
        }
        for name in PRESENT.iter().filter(|n| listed(n).is_none()) {
            assert_eq!(
                r_headers.contains_key(*name),
                a_headers.contains_key(*name),
                "{step}: header {name}: registry {r_headers:?}, amber {a_headers:?}"
            );
        }
        // Error bodies word their messages differently: their lengths differ.
        // JSON bodies (errors, tag lists) may differ in wording and a final
        // newline; their lengths are not compared, their content is.
        let json = r_headers.get("content-type").is_some_and(|t| t == "application/json");
        for name in EQUAL.iter().filter(|n| (!json || **n != "content-length") && listed(n).is_none()) {
            assert_eq!(
                r_headers.get(*name),
                a_headers.get(*name),
                "{step}: header {name}: registry {r_headers:?}, amber {a_headers:?}"
            );
        }
        if matches!(step.as_str(), "get by tag" | "range of blob") {
            assert_eq!(r_body, a_body, "{step}: bodies differ");
        }
        if step.starts_with("tags") {
            let parse = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).unwrap();
            assert_eq!(parse(r_body), parse(a_body), "{step}: tag lists differ");
        }
        // Error codes agree where both fail.
        if *r_status >= 400 && !r_body.is_empty() {
            let code =
                |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).ok().map(|v| v["errors"][0]["code"].clone());
            assert_eq!(code(r_body), code(a_body), "{step}: error codes differ");
        }
    }
    println!("differences from the reference registry, each on purpose:\n{}", report.join("\n"));
}
