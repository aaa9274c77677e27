//! `schemathesis` (PyPI) against `api/openapi.yaml` and a live `amberd`: no
//! `5xx`, every response matching its schema (status, headers, body), and
//! schema-violating requests refused. Run with an admin token and with a
//! push-and-pull token, so both sides of every grant are exercised.
//! Schema-valid requests may still be refused (`positive_data_acceptance` is
//! not checked): the schema cannot say that `..` is no repository name. And
//! `DELETE /v1/tokens/{id}` revokes a token, whose record stays readable with
//! its `revoked_at` (nothing is erased from history), so `use_after_free`,
//! which expects a deleted resource to be gone, is not checked either.

use std::process::Command;

use crate::harness::TestServer;

fn schemathesis(server: &TestServer, token: &str) -> (bool, String) {
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/api/openapi.yaml");
    let out = Command::new("st")
        .args(["--config-file", concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/schemathesis.toml")])
        .args(["run", spec, "--url", &server.url(""), "--max-examples", "40", "--request-timeout", "20"])
        .args(["--checks", "all", "--exclude-checks", "positive_data_acceptance,use_after_free"])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_HOOKS", "st_hooks")
        .env("PYTHONPATH", concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools"))
        .output()
        .expect("schemathesis is needed: pip install schemathesis (.ci/run installs it)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_server_matches_its_openapi_document() {
    let server = TestServer::start().await;
    let pusher = server.token(&[("acme/*", &["push", "pull"])]).await;
    for (who, token) in [("admin", server.admin.clone()), ("push and pull", pusher)] {
        let (ok, output) = schemathesis(&server, &token);
        let lines: Vec<&str> = output.lines().collect();
        let summary = lines[lines.len().saturating_sub(6)..].join("\n");
        println!("schemathesis as {who}:\n{summary}");
        assert!(ok, "schemathesis as {who} found problems:\n{output}");
    }
    assert!(!server.logs().contains("internal error"), "a request ended in an internal error");
}
