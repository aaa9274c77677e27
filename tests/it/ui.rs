//! The console at `/ui/` (`design/console.md`): served from the binary with
//! strict headers, no token needed, off with `--no-ui`; and driven end to
//! end in headless Chromium by Playwright (`tests/tools/console.mjs`).

use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::TestServer;

fn ui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ui")
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { files(&path, out) } else { out.push(path) }
    }
}

#[tokio::test]
async fn the_console_is_served_with_strict_headers_and_can_be_turned_off() {
    let server = TestServer::start().await;
    let page = server.http.get(server.url("/ui/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let headers = page.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    let html = page.text().await.unwrap();
    // No inline script: every script element names its file.
    for script in html.split("<script").skip(1) {
        assert!(script.split('>').next().unwrap().contains("src="), "inline script in {html}");
    }
    // Every script and style file under ui/ is served, with its type and the same headers.
    let mut all = Vec::new();
    files(&ui_dir(), &mut all);
    let mut served = 0;
    for path in all {
        let name = path.strip_prefix(ui_dir()).unwrap().to_str().unwrap().to_owned();
        let kind = match path.extension().and_then(|e| e.to_str()) {
            Some("js") => "text/javascript; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            Some("html") => "text/html; charset=utf-8",
            _ => continue,
        };
        let response = server.http.get(server.url(&format!("/ui/{name}"))).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{name}");
        assert_eq!(response.headers()["content-type"], kind, "{name}");
        assert_eq!(response.headers()["x-frame-options"], "DENY", "{name}");
        assert_eq!(response.bytes().await.unwrap(), std::fs::read(&path).unwrap(), "{name}");
        served += 1;
    }
    assert!(served > 10, "{served} files");
    // Files of other kinds (the vendored licence) are not served.
    let licence = server.http.get(server.url("/ui/vendor/noble-hashes/LICENSE")).send().await.unwrap();
    assert_eq!(licence.status(), StatusCode::NOT_FOUND);
    let missing = server.http.get(server.url("/ui/../v1/keys")).send().await.unwrap();
    assert_ne!(missing.headers().get("content-type").map(|v| v.to_str().unwrap()), Some("text/html; charset=utf-8"));
    let missing = server.http.get(server.url("/ui/nope.js")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let bare = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let redirect = bare.get(server.url("/ui")).send().await.unwrap();
    assert_eq!(
        (redirect.status(), redirect.headers()["location"].to_str().unwrap()),
        (StatusCode::PERMANENT_REDIRECT, "/ui/")
    );

    let off = TestServer::builder().arg("--no-ui").start().await;
    assert_eq!(off.http.get(off.url("/ui/")).send().await.unwrap().status(), StatusCode::NOT_FOUND);
}

/// The vendored `@noble/hashes` files are the npm package's, unchanged
/// (`npm ci` in `tests/tools` installs the same version).
#[test]
fn the_vendored_hashes_are_the_npm_package_unchanged() {
    let vendored = ui_dir().join("vendor/noble-hashes");
    let package = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/node_modules/@noble/hashes");
    assert!(package.exists(), "run `npm ci --prefix tests/tools` first");
    let mut all = Vec::new();
    files(&vendored, &mut all);
    for path in all {
        let name = path.file_name().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(package.join(name)).unwrap(), "{name:?}");
    }
}

#[tokio::test]
async fn the_console_works_end_to_end_in_chromium() {
    // Trusting a (fake) GitHub Actions issuer: acme/web:2.0.0 is pushed
    // through trusted publishing, so its provenance is shown.
    // And a real witness (litewitness) cosigning its checkpoints: the
    // console shows each binding's cosignatures.
    let issuer = crate::fake_issuer::FakeIssuer::start().await;
    let config = tempfile::tempdir().unwrap();
    let mut witness = crate::witness::LiteWitness::new(config.path(), "witness.test/console");
    let toml = format!(
        "[[oidc.issuers]]\nname = \"github\"\nurl = \"{}\"\nkind = \"github\"\nallow_insecure_http = true\n\n[log]\nwitness_quorum = 1\n\n[[log.witnesses]]\nname = \"{}\"\nvkey = \"{}\"\nurl = \"{}\"\n",
        issuer.url, witness.name, witness.vkey, witness.url
    );
    std::fs::write(config.path().join("amber.toml"), toml).unwrap();
    let server =
        TestServer::builder().arg("--config").arg(config.path().join("amber.toml").to_str().unwrap()).start().await;
    let (origin, log_vkey) = crate::witness::log_key(&server).await;
    witness.add_log(&origin, &log_vkey);
    witness.start();
    let pusher =
        server.token_with(&[("acme/*", &["push", "pull"])], json!({"name": "ci-pusher", "pipeline": "web-ci"})).await;
    // Admin grants no pull: the operator's console token has both.
    let operator = server.token_with(&[("*", &["admin"]), ("acme/*", &["pull"])], json!({"name": "operator"})).await;
    let pull_only = server.token_with(&[("acme/web", &["pull"])], json!({"name": "viewer"})).await;
    let tree = server.data_dir().parent().unwrap().join("site");
    std::fs::create_dir_all(tree.join("dist")).unwrap();
    std::fs::write(tree.join("dist/app.bin"), crate::harness::data(300_000, 7)).unwrap();
    std::fs::write(tree.join("README.txt"), b"hello\n").unwrap();
    for reference in ["acme/web:1.0.0", "acme/web:1.1.0", "acme/secret:2.0.0"] {
        let run = server
            .amber(&pusher, &["push", reference, tree.to_str().unwrap(), "--annotation", "git.commit=abc123"])
            .await;
        assert_eq!(run.code, 0, "{}", run.stderr);
    }
    crate::oidc::create_publisher(&server, &crate::oidc::github_publisher()).await;
    let minted = crate::oidc::minted(&server, &issuer.sign("rsa-1", &issuer.github_claims())).await;
    let run =
        server.amber(minted["token"].as_str().unwrap(), &["push", "acme/web:2.0.0", tree.to_str().unwrap()]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let covering = crate::witness::covering(&server.url(""), &pusher, "acme/web", "2.0.0").await;
    crate::witness::cosigned(&server, &witness.name, covering).await;

    let mut node = Command::new("node");
    node.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/console.mjs"))
        .env("AMBER_URL", server.url(""))
        .env("AMBER_ADMIN", &operator)
        .env("AMBER_PULL", &pull_only);
    if let Ok(dir) = std::env::var("AMBER_SCREENSHOTS") {
        node.env("SCREENSHOTS", dir);
    }
    let out = node.output().expect("node runs the Playwright tests");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
}
