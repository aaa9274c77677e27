//! amberd's own TLS, with a certificate authority made at test time
//! (`rcgen`): curl, the `amber` CLI, tuspy and `openssl s_client` reach it;
//! only TLS 1.2 and 1.3 with AEAD suites; a new pair is served after
//! `SIGHUP` (and after the files change) while 16 clients push, none failing;
//! a bad pair is refused and the old one kept; connections that never
//! finish a handshake or drip their headers are closed at the header timeout.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{TestServer, amber_bin, data};

/// A CA and the leaf certificates it signs, as PEM files in `dir`.
struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "Amber test CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Self { dir, ca, ca_key }
    }

    fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A certificate for 127.0.0.1 and localhost: its PEM, its key's PEM, its DER.
    fn leaf(&self) -> (String, String, Vec<u8>) {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.subject_alt_names.push(SanType::IpAddress(IpAddr::from([127, 0, 0, 1])));
        params.distinguished_name.push(DnType::CommonName, "amberd");
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    /// Writes a pair where amberd reads it (each file replaced whole).
    fn install(&self, cert: &str, key: &str) {
        for (name, text) in [("server.pem", cert), ("server.key", key)] {
            let staged = self.dir.path().join(format!("{name}.new"));
            std::fs::write(&staged, text).unwrap();
            std::fs::rename(&staged, self.dir.path().join(name)).unwrap();
        }
    }

    fn args(&self) -> [String; 2] {
        let path = |name: &str| self.dir.path().join(name).to_str().unwrap().to_owned();
        [format!("--tls-cert={}", path("server.pem")), format!("--tls-key={}", path("server.key"))]
    }

    fn client(&self) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(self.ca_pem()).unwrap()).unwrap();
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
    }

    /// The certificate a new TLS connection is served (DER).
    async fn served(&self, port: u16) -> Vec<u8> {
        let stream = self.connect(port).await;
        stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    }

    async fn connect(&self, port: u16) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls::pki_types::CertificateDer::from(self.ca.der().to_vec())).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        connector.connect(name, tcp).await.unwrap()
    }
}

async fn tls_server(pki: &Pki, extra: &[&str]) -> TestServer {
    let (cert, key, _) = pki.leaf();
    pki.install(&cert, &key);
    let mut builder = TestServer::builder();
    for arg in pki.args().into_iter().chain(extra.iter().map(|a| (*a).to_owned())) {
        builder = builder.arg(arg);
    }
    builder.start().await
}

fn https(server: &TestServer, path: &str) -> String {
    format!("https://127.0.0.1:{}{path}", server.addr.port())
}

/// A token with `grants` on `repo`, minted by the admin over HTTPS.
async fn token(pki: &Pki, server: &TestServer, repo: &str, actions: &[&str]) -> String {
    let body = json!({"name": "tls", "grants": [{"repos": repo, "actions": actions}]});
    let response =
        pki.client().post(https(server, "/v1/tokens")).bearer_auth(&server.admin).json(&body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned()
}

fn run(command: &mut Command) -> (i32, String, String) {
    let out = command.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn s_client(port: u16, args: &[&str]) -> (i32, String) {
    let (code, out, err) = run(Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-servername", "localhost"])
        .args(args)
        .stdin(std::process::Stdio::null()));
    (code, format!("{out}{err}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_amber_tuspy_and_openssl_reach_it_through_a_private_ca() {
    let pki = Pki::new();
    let server = tls_server(&pki, &[]).await;
    let port = server.addr.port();
    let ca = pki.ca_pem();
    let ca = ca.to_str().unwrap();
    // curl: HTTP/2 by ALPN, HTTP/1.1 when asked; refused without the CA; plain HTTP gets no answer.
    let curl = |args: &[&str]| {
        run(Command::new("curl").args(["-sS", "-o", "/dev/null", "-w", "%{http_code} %{http_version}"]).args(args))
    };
    assert_eq!(curl(&["--cacert", ca, &https(&server, "/healthz")]).1, "200 2");
    assert_eq!(curl(&["--cacert", ca, "--http1.1", &https(&server, "/healthz")]).1, "200 1.1");
    assert_eq!(curl(&[&https(&server, "/healthz")]).0, 60, "curl trusts only the CA it is given");
    assert_ne!(curl(&["--max-time", "5", &server.url("/healthz")]).1, "200 1.1", "plain HTTP is not served");
    // The amber CLI: push and a verified pull with --ca-cert.
    let token = token(&pki, &server, "demo/tls", &["push", "pull"]).await;
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("hello.txt"), b"hello over TLS\n").unwrap();
    let keys = pki.client().get(https(&server, "/v1/keys")).send().await.unwrap().text().await.unwrap();
    std::fs::write(work.path().join("keys.json"), keys).unwrap();
    let amber = |args: &[&str]| {
        run(Command::new(amber_bin())
            .current_dir(work.path())
            .env("AMBER_URL", https(&server, ""))
            .env("AMBER_TOKEN", &token)
            .env("AMBER_LOG_STATE", work.path().join("log-state.json"))
            .args(args))
    };
    let (code, _, err) = amber(&["--ca-cert", ca, "push", "demo/tls:v1", "hello.txt"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = amber(&["--ca-cert", ca, "pull", "demo/tls:v1", "-o", "out", "--key", "keys.json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(work.path().join("out/hello.txt")).unwrap(), b"hello over TLS\n");
    let (code, _, err) = amber(&["whoami"]);
    assert_eq!(code, 5, "not trusted without --ca-cert: {err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    let (code, _, err) = amber(&["--insecure-skip-tls-verify", "whoami"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("WARNING: --insecure-skip-tls-verify"), "{err}");
    // tuspy (requests) with the CA as its bundle.
    let file = work.path().join("tus.bin");
    let bytes = data(3 * 1024 * 1024 + 17, 4);
    std::fs::write(&file, &bytes).unwrap();
    let (code, _, err) = run(Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/tus_py.py"))
        .args([&https(&server, "/v1/repos/demo/tls/uploads"), &token])
        .arg(&file)
        .arg((1024 * 1024).to_string())
        .env("REQUESTS_CA_BUNDLE", ca));
    assert_eq!(code, 0, "{err}");
    let digest = format!("blake3:{}", blake3::hash(&bytes).to_hex());
    let got = pki.client().get(https(&server, &format!("/v1/repos/demo/tls/blobs/{digest}"))).bearer_auth(&token);
    assert_eq!(got.send().await.unwrap().bytes().await.unwrap(), bytes);
    // openssl s_client: 1.2 and 1.3 only; no CBC suite, no suite without forward secrecy.
    for (version, protocol) in [("-tls1_3", "TLSv1.3"), ("-tls1_2", "TLSv1.2")] {
        let (code, out) = s_client(port, &[version, "-CAfile", ca, "-verify_return_error"]);
        assert_eq!(code, 0, "{version}: {out}");
        assert!(out.contains(&format!("Protocol  : {protocol}")) || out.contains(&format!("New, {protocol}")), "{out}");
    }
    for old in ["-tls1_1", "-tls1"] {
        let (code, out) = s_client(port, &[old, "-cipher", "ALL:@SECLEVEL=0"]);
        assert_ne!(code, 0, "{old} was accepted: {out}");
    }
    for weak in
        ["ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA256", "AES128-SHA:AES256-GCM-SHA384"]
    {
        let (code, out) = s_client(port, &["-tls1_2", "-cipher", weak]);
        assert_ne!(code, 0, "{weak} was accepted: {out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_pair_is_served_after_sighup_while_16_clients_push_and_a_bad_one_is_refused() {
    let pki = Pki::new();
    let server = tls_server(&pki, &[]).await;
    let port = server.addr.port();
    let first = pki.served(port).await;
    let token = token(&pki, &server, "demo/rotate", &["push"]).await;
    let (pushed, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let until = Instant::now() + Duration::from_secs(5);
    let clients: Vec<_> = (0..16u64)
        .map(|worker| {
            let (pki_client, url, token) = (pki.client(), https(&server, ""), token.clone());
            let (pushed, failed) = (pushed.clone(), failed.clone());
            let ca = std::fs::read(pki.ca_pem()).unwrap();
            tokio::spawn(async move {
                let mut client = pki_client;
                let mut n = 0u64;
                while Instant::now() < until {
                    // A new connection every eight pushes: some open after the reload.
                    if n % 8 == 7 {
                        let root = reqwest::Certificate::from_pem(&ca).unwrap();
                        client = reqwest::Client::builder()
                            .use_rustls_tls()
                            .tls_built_in_root_certs(false)
                            .add_root_certificate(root)
                            .build()
                            .unwrap();
                    }
                    let body = data(4096, worker * 1_000_000 + n);
                    let digest = format!("blake3:{}", blake3::hash(&body).to_hex());
                    let put = client.put(format!("{url}/v1/repos/demo/rotate/blobs/{digest}")).bearer_auth(&token);
                    match put.body(body).send().await {
                        Ok(r) if r.status().is_success() => pushed.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                    n += 1;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (cert, key, second) = pki.leaf();
    pki.install(&cert, &key);
    server.signal("HUP");
    for client in clients {
        client.await.unwrap();
    }
    let (pushed, failed) = (pushed.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("{pushed} pushes over the reload, {failed} failed");
    assert_eq!(failed, 0);
    assert!(pushed > 100, "{pushed}");
    assert_ne!(first, second);
    assert_eq!(pki.served(port).await, second, "new connections get the new certificate");
    // A key that is not the certificate's: refused, the old pair kept.
    let (_, other_key, _) = pki.leaf();
    pki.install(&cert, &other_key);
    server.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(pki.served(port).await, second);
    assert!(server.logs().contains("the new TLS certificate was refused"), "{}", server.logs());
    // A pair changed on disk, with no signal: served within a few seconds.
    let (cert, key, third) = pki.leaf();
    pki.install(&cert, &key);
    let deadline = Instant::now() + Duration::from_secs(10);
    while pki.served(port).await != third {
        assert!(Instant::now() < deadline, "the changed files were not read again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_handshakes_and_slowloris_over_tls_end_at_the_header_timeout() {
    let pki = Pki::new();
    let server = tls_server(&pki, &["--header-timeout=2"]).await;
    let port = server.addr.port();
    let started = Instant::now();
    // 100 connections that never send a ClientHello.
    let mut silent = Vec::new();
    for _ in 0..100 {
        silent.push(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    // 100 that finish the handshake, then send a request head a byte a second.
    let dripping: Vec<_> = (0..100)
        .map(|_| {
            let connecting = pki.connect(port);
            async move {
                let mut stream = connecting.await;
                for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\n".iter().take(6) {
                    if stream.write_all(&[*byte]).await.is_err() || stream.flush().await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                closed(&mut stream).await
            }
        })
        .collect();
    // Others are served meanwhile.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let health = pki.client().get(https(&server, "/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let dripped = futures_util::future::join_all(dripping).await;
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert!(dripped.iter().all(|closed| *closed), "a slowloris connection outlived the header timeout");
    for mut stream in silent {
        assert!(closed(&mut stream).await, "a connection that never said hello is still open");
    }
}

/// Whether the server closed `stream` (a read ends, or fails, within a second).
async fn closed(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue, // an answer's bytes (a 408, say), then the end
            Err(_) => return false,
        }
    }
}
