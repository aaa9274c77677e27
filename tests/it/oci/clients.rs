//! Unmodified OCI clients against a real `amberd`: `oras` (push, pull,
//! attach, discover, manifest fetch) and `crane` (append, pull, push, copy,
//! digest, ls), with credentials from a Docker config as any CI job has;
//! the bytes pulled compared with `cmp`, digests with `sha256sum`.

use std::path::Path;
use std::process::Command;

use base64::Engine;
use serde_json::{Value, json};

use crate::backends::Backend;
use crate::harness::{TestServer, data, key_file};
use crate::on_both_backends;

/// A client's environment: a home and Docker config of its own holding
/// `token` for `host` (the user name is anything).
fn docker_config(dir: &Path, host: &str, token: &str) {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("ci:{token}"));
    let config = json!({"auths": {host: {"auth": auth}}});
    std::fs::create_dir_all(dir.join(".docker")).unwrap();
    std::fs::write(dir.join(".docker/config.json"), config.to_string()).unwrap();
}

fn run(tool: &str, home: &Path, cwd: &Path, args: &[&str]) -> String {
    let out = Command::new(super::go_tool(tool))
        .args(args)
        .env("HOME", home)
        .env("DOCKER_CONFIG", home.join(".docker"))
        .current_dir(cwd)
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{tool} {args:?}: {stdout}{stderr}");
    stdout.into_owned()
}

fn same_file(a: &Path, b: &Path) {
    let cmp = Command::new("cmp").arg(a).arg(b).status().unwrap();
    assert!(cmp.success(), "{} and {} differ", a.display(), b.display());
}

fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    format!("sha256:{}", String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap())
}

async fn oras_pushes_pulls_attaches_and_discovers(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = server.token(&[("acme/*", &["pull", "push"])]).await;
    let host = server.url("").trim_start_matches("http://").to_owned();
    let work = tempfile::tempdir().unwrap();
    let (home, src, out) = (work.path().join("home"), work.path().join("src"), work.path().join("out"));
    for dir in [&home, &src, &out] {
        std::fs::create_dir_all(dir).unwrap();
    }
    docker_config(&home, &host, &token);
    std::fs::write(src.join("app.bin"), data(300_000, 7)).unwrap();
    std::fs::write(src.join("README.md"), b"# artifact\n").unwrap();
    let reference = format!("{host}/acme/art:1.0.0");
    run(
        "oras",
        &home,
        &src,
        &[
            "push",
            "--plain-http",
            &reference,
            "--artifact-type",
            "application/vnd.example.bundle",
            "app.bin",
            "README.md",
        ],
    );
    run("oras", &home, &out, &["pull", "--plain-http", &reference]);
    for name in ["app.bin", "README.md"] {
        same_file(&src.join(name), &out.join(name));
    }
    // The manifest names each layer by the sha256 that sha256sum computes.
    let manifest: Value =
        serde_json::from_str(&run("oras", &home, &out, &["manifest", "fetch", "--plain-http", &reference])).unwrap();
    let layer = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["annotations"]["org.opencontainers.image.title"] == "app.bin")
        .unwrap();
    assert_eq!(layer["digest"].as_str().unwrap(), sha256sum(&src.join("app.bin")));

    // A signature attached as a referrer, found through the referrers API.
    std::fs::write(src.join("sig.txt"), b"signed by someone\n").unwrap();
    run(
        "oras",
        &home,
        &src,
        &["attach", "--plain-http", &reference, "--artifact-type", "application/vnd.example.sig", "sig.txt"],
    );
    let found: Value = serde_json::from_str(&run(
        "oras",
        &home,
        &out,
        &["discover", "--plain-http", "--format", "json", "--artifact-type", "application/vnd.example.sig", &reference],
    ))
    .unwrap();
    let referrers = found["referrers"].as_array().or_else(|| found["manifests"].as_array()).expect("referrers listed");
    assert_eq!(referrers.len(), 1, "{found}");
    assert_eq!(referrers[0]["artifactType"], "application/vnd.example.sig");
    // Nothing was tagged `sha256-…` for it: the tags are the one pushed.
    let tags = run("oras", &home, &out, &["repo", "tags", "--plain-http", &format!("{host}/acme/art")]);
    assert_eq!(tags.trim(), "1.0.0");
}

async fn crane_appends_pulls_pushes_copies_and_lists(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = server.token(&[("acme/*", &["pull", "push"])]).await;
    let host = server.url("").trim_start_matches("http://").to_owned();
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    docker_config(&home, &host, &token);
    // A layer: a tar of one file.
    let layer_dir = work.path().join("layer");
    std::fs::create_dir_all(&layer_dir).unwrap();
    std::fs::write(layer_dir.join("hello.txt"), data(50_000, 9)).unwrap();
    let tar = work.path().join("layer.tar");
    assert!(
        Command::new("tar").arg("-cf").arg(&tar).arg("-C").arg(&layer_dir).arg("hello.txt").status().unwrap().success()
    );
    let (image, copy, pushed) =
        (format!("{host}/acme/img:1.0"), format!("{host}/acme/copy:1.0"), format!("{host}/acme/pushed:1.0"));
    let w = work.path();
    run("crane", &home, w, &["append", "--insecure", "--oci-empty-base", "-f", tar.to_str().unwrap(), "-t", &image]);
    let digest = run("crane", &home, w, &["digest", "--insecure", &image]).trim().to_owned();
    assert!(digest.starts_with("sha256:"));
    run("crane", &home, w, &["copy", "--insecure", &image, &copy]);
    assert_eq!(run("crane", &home, w, &["digest", "--insecure", &copy]).trim(), digest, "a copy keeps the digest");
    // Pulled to an OCI layout and pushed again: the same image.
    let tarball = work.path().join("img-layout");
    run("crane", &home, w, &["pull", "--insecure", "--format", "oci", &image, tarball.to_str().unwrap()]);
    run("crane", &home, w, &["push", "--insecure", tarball.to_str().unwrap(), &pushed]);
    assert_eq!(run("crane", &home, w, &["digest", "--insecure", &pushed]).trim(), digest);
    assert_eq!(run("crane", &home, w, &["ls", "--insecure", &format!("{host}/acme/img")]).trim(), "1.0");
    // skopeo (Debian's) copies it to another repository and to an OCI
    // layout: the same manifest digest, the same layer bytes.
    let creds = format!("ci:{token}");
    let skopeo_copy = format!("{host}/acme/skopeo:1.0");
    let skopeo = |args: &[&str]| {
        let out = Command::new("skopeo").arg("--insecure-policy").args(args).env("HOME", &home).output().unwrap();
        assert!(out.status.success(), "skopeo {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--src-creds",
        &creds,
        "--dest-creds",
        &creds,
        &format!("docker://{image}"),
        &format!("docker://{skopeo_copy}"),
    ]);
    assert_eq!(run("crane", &home, w, &["digest", "--insecure", &skopeo_copy]).trim(), digest);
    let layout = work.path().join("skopeo-layout");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &creds,
        &format!("docker://{image}"),
        &format!("oci:{}:1.0", layout.display()),
    ]);
    let index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"].as_str().unwrap(), digest);
    // The layer crane pulls back is the tar it appended.
    let config: Value = serde_json::from_str(&run("crane", &home, w, &["manifest", "--insecure", &image])).unwrap();
    let layer = config["layers"][0]["digest"].as_str().unwrap().to_owned();
    let blob = work.path().join("layer.out");
    let out = Command::new(super::go_tool("crane"))
        .args(["blob", "--insecure", &format!("{host}/acme/img@{layer}")])
        .env("HOME", &home)
        .env("DOCKER_CONFIG", home.join(".docker"))
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(&blob, &out.stdout).unwrap();
    assert_eq!(sha256sum(&blob), layer);
}

on_both_backends!(oras_pushes_pulls_attaches_and_discovers, crane_appends_pulls_pushes_copies_and_lists);

async fn an_amber_push_is_an_oci_artifact(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = server.token(&[("acme/*", &["pull", "push"])]).await;
    let host = server.url("").trim_start_matches("http://").to_owned();
    let work = tempfile::tempdir().unwrap();
    let (home, src, out, sig) =
        (work.path().join("home"), work.path().join("src"), work.path().join("out"), work.path().join("sig"));
    for dir in [&home, &src.join("docs"), &out, &sig] {
        std::fs::create_dir_all(dir).unwrap();
    }
    docker_config(&home, &host, &token);
    std::fs::write(src.join("app.bin"), data(200_000, 11)).unwrap();
    std::fs::write(src.join("docs/guide.md"), b"# guide\n").unwrap();
    let pushed = server.amber(&token, &["push", "acme/web:1.0.0", src.to_str().unwrap()]).await;
    assert_eq!(pushed.code, 0, "{}{}", pushed.stdout, pushed.stderr);

    // oras writes the files by their paths, byte-identical.
    let reference = format!("{host}/acme/web:1.0.0");
    run("oras", &home, &out, &["pull", "--plain-http", &reference]);
    same_file(&src.join("app.bin"), &out.join("app.bin"));
    same_file(&src.join("docs/guide.md"), &out.join("docs/guide.md"));
    // The view is made once: the same digest on every read.
    let first = run("oras", &home, &out, &["resolve", "--plain-http", &reference]);
    let manifest: Value =
        serde_json::from_str(&run("oras", &home, &out, &["manifest", "fetch", "--plain-http", &reference])).unwrap();
    assert_eq!(manifest["artifactType"], "application/vnd.amber.manifest.v1+json");
    let layer = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["annotations"]["org.opencontainers.image.title"] == "app.bin")
        .unwrap();
    assert_eq!(layer["digest"].as_str().unwrap(), sha256sum(&src.join("app.bin")));
    assert_eq!(
        layer["annotations"]["dev.amber.blake3"].as_str().unwrap(),
        crate::harness::independent_b3(&src.join("app.bin"))
    );
    assert_eq!(run("oras", &home, &out, &["resolve", "--plain-http", &reference]), first);

    // Its envelope and its receipt are referrers; the envelope oras pulls verifies offline.
    let mut found: Value = Value::Null;
    for _ in 0..50 {
        found = serde_json::from_str(&run(
            "oras",
            &home,
            &out,
            &["discover", "--plain-http", "--format", "json", &reference],
        ))
        .unwrap();
        if found["referrers"].as_array().is_some_and(|r| r.len() == 2) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let referrers = found["referrers"].as_array().expect("referrers listed");
    let types: Vec<&str> = referrers.iter().filter_map(|r| r["artifactType"].as_str()).collect();
    assert!(types.contains(&"application/vnd.dsse.envelope.v1+json"), "{found}");
    assert!(types.contains(&"application/vnd.amber.tlog-proof"), "{found}");
    let envelope = referrers.iter().find(|r| r["artifactType"] == "application/vnd.dsse.envelope.v1+json").unwrap();
    let at = format!("{host}/acme/web@{}", envelope["digest"].as_str().unwrap());
    run("oras", &home, &sig, &["pull", "--plain-http", &at]);
    let keys = key_file(&server, work.path()).await;
    let verified = server
        .amber(
            "",
            &[
                "verify",
                "--key",
                &keys,
                sig.join("1.0.0.dsse.json").to_str().unwrap(),
                "--ref",
                "acme/web:1.0.0",
                "--dir",
                out.to_str().unwrap(),
            ],
        )
        .await;
    assert_eq!(verified.code, 0, "{}{}", verified.stdout, verified.stderr);
}

on_both_backends!(an_amber_push_is_an_oci_artifact);

/// `helm` (4): a packaged chart pushed, pulled, shown; and `amber pull`
/// verifies the binding `helm push` made.
async fn helm_pushes_pulls_and_shows_a_chart(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = server.token(&[("acme/*", &["pull", "push"])]).await;
    let host = server.url("").trim_start_matches("http://").to_owned();
    let work = tempfile::tempdir().unwrap();
    let (home, chart, out) = (work.path().join("home"), work.path().join("hello"), work.path().join("out"));
    for dir in [&home, &chart.join("templates"), &out] {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(chart.join("Chart.yaml"), "apiVersion: v2\nname: hello\nversion: 1.2.0\ndescription: a chart\n")
        .unwrap();
    std::fs::write(chart.join("values.yaml"), "replicas: 2\n").unwrap();
    std::fs::write(chart.join("templates/cm.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: hello\n")
        .unwrap();
    let helm = |args: &[&str]| {
        let out = Command::new(super::go_tool("helm"))
            .args(args)
            .env("HOME", &home)
            .env("HELM_CONFIG_HOME", home.join("helm-config"))
            .env("HELM_CACHE_HOME", home.join("helm-cache"))
            .env("HELM_DATA_HOME", home.join("helm-data"))
            .env("HELM_REGISTRY_CONFIG", home.join("registry.json"))
            .current_dir(work.path())
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "helm {args:?}: {text}");
        text
    };
    helm(&["registry", "login", &host, "--username", "ci", "--password", &token, "--plain-http"]);
    helm(&["package", chart.to_str().unwrap(), "--destination", work.path().to_str().unwrap()]);
    let package = work.path().join("hello-1.2.0.tgz");
    helm(&["push", package.to_str().unwrap(), &format!("oci://{host}/acme"), "--plain-http"]);
    let reference = format!("oci://{host}/acme/hello");
    helm(&["pull", &reference, "--version", "1.2.0", "--plain-http", "--destination", out.to_str().unwrap()]);
    same_file(&package, &out.join("hello-1.2.0.tgz"));
    let shown = helm(&["show", "chart", &reference, "--version", "1.2.0", "--plain-http"]);
    assert!(shown.contains("name: hello") && shown.contains("version: 1.2.0"), "{shown}");
    // The tag helm bound is an Amber binding: `amber pull` verifies it.
    let keys = key_file(&server, work.path()).await;
    let pulled = work.path().join("pulled");
    let run = server.amber(&token, &["pull", "acme/hello:1.2.0", "-o", pulled.to_str().unwrap(), "--key", &keys]).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let files: Vec<std::path::PathBuf> = walk(&pulled);
    assert!(files.iter().any(|f| std::fs::read(f).unwrap() == std::fs::read(&package).unwrap()), "{files:?}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// `cosign` 3, offline: a key pair it made, a signing config with no log or
/// timestamp service; the signature stored as a referrer (no `sha256-` tag).
async fn cosign_signs_and_verifies_through_referrers(backend: Backend) {
    let server = TestServer::on(backend).await;
    let token = server.token(&[("acme/*", &["pull", "push"])]).await;
    let host = server.url("").trim_start_matches("http://").to_owned();
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    docker_config(&home, &host, &token);
    let body = super::protocol::image(&server, &token, "acme/signed", &[(b"signed layer", "layer.bin")]).await;
    assert!(super::protocol::put_manifest(&server, &token, "acme/signed", "1.0", &body).await.status().is_success());
    let image = format!("{host}/acme/signed@{}", super::protocol::sha256(&body));
    let cosign = |args: &[&str]| {
        let out = Command::new(super::go_tool("cosign"))
            .args(args)
            .env("HOME", &home)
            .env("DOCKER_CONFIG", home.join(".docker"))
            .env("COSIGN_PASSWORD", "")
            .env("COSIGN_YES", "true")
            .env("TUF_ROOT", home.join("tuf"))
            .current_dir(work.path())
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "cosign {args:?}: {text}");
        text
    };
    cosign(&["generate-key-pair"]);
    cosign(&["signing-config", "create", "--out", "sc.json"]);
    cosign(&["sign", "--key", "cosign.key", "--signing-config", "sc.json", "--allow-http-registry", &image]);
    cosign(&["verify", "--key", "cosign.pub", "--insecure-ignore-tlog", "--allow-http-registry", &image]);
    // Found through the referrers API; no fallback tag was made.
    let referrers: Value = server
        .request(reqwest::Method::GET, &format!("/v2/acme/signed/referrers/{}", super::protocol::sha256(&body)), &token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!referrers["manifests"].as_array().unwrap().is_empty(), "{referrers}");
    let tags: Value = server
        .request(reqwest::Method::GET, "/v2/acme/signed/tags/list", &token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"], json!(["1.0"]));
    // Another key does not verify it.
    std::fs::create_dir_all(work.path().join("other")).unwrap();
    let other = Command::new(super::go_tool("cosign"))
        .args(["generate-key-pair"])
        .env("COSIGN_PASSWORD", "")
        .current_dir(work.path().join("other"))
        .output()
        .unwrap();
    assert!(other.status.success());
    let refused = Command::new(super::go_tool("cosign"))
        .args(["verify", "--key", "other/cosign.pub", "--insecure-ignore-tlog", "--allow-http-registry", &image])
        .env("HOME", &home)
        .env("DOCKER_CONFIG", home.join(".docker"))
        .current_dir(work.path())
        .output()
        .unwrap();
    assert!(!refused.status.success());
}

on_both_backends!(helm_pushes_pulls_and_shows_a_chart, cosign_signs_and_verifies_through_referrers);
