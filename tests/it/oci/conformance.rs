//! The OCI distribution-spec conformance suite, pinned, against `amberd` on
//! both backends: pull, push, content discovery and referrers on, sha512
//! data on, content management (deletes) off. Each top-level group runs in
//! fresh repositories, since several groups reuse the tags `image`, `index`
//! and `tagged-artifact` with other bytes, which create-only tags refuse
//! (`protocol::a_tag_is_bound_once` shows that refusal). Anonymous mounts
//! are off: a mount without a source would tell whether any repository
//! holds a digest.

use std::process::Command;

use crate::backends::Backend;
use crate::harness::TestServer;
use crate::on_both_backends;

/// The suite's top-level groups (of the pinned version).
const GROUPS: &[&str] = &[
    "ping",
    "empty",
    "sha256 blobs",
    "sha512 blobs",
    "image",
    "image-uncompressed",
    "large-manifest",
    "index",
    "nested-index",
    "empty-index",
    "artifact",
    "artifact-index",
    "artifact-without-layers",
    "artifacts-with-subject",
    "index-with-subject",
    "missing-subject",
    "data-field",
    "non-distributable-layers",
    "custom-fields",
    "no-layers",
    "sha512",
    "bad-digest-image",
    "missing-manifest",
    "invalid-digest-format",
];

/// The counts of the summary (`Pass....: 47`).
fn counts(report: &str) -> std::collections::BTreeMap<String, u64> {
    let mut counts = std::collections::BTreeMap::new();
    for line in report.lines() {
        let line = line.trim();
        if let Some((label, value)) = line.split_once(':')
            && let Some(kind) = label.strip_suffix('.').map(|l| l.trim_end_matches('.'))
            && ["Pass", "Fail", "Error", "Skip", "Disabled"].contains(&kind)
            && let Ok(n) = value.trim().parse::<u64>()
        {
            *counts.entry(kind.to_owned()).or_insert(0) += n;
        }
    }
    counts
}

async fn suite(backend: Backend) {
    let tool = super::go_tool("conformance");
    let server = TestServer::on(backend).await;
    let token = server.token(&[("conf/*", &["pull", "push"])]).await;
    let registry = server.url("").trim_start_matches("http://").to_owned();
    let mut total = std::collections::BTreeMap::<String, u64>::new();
    for (index, group) in GROUPS.iter().enumerate() {
        let results = server.data_dir().join(format!("conformance-{index}"));
        let out = Command::new(&tool)
            .env("OCI_REGISTRY", &registry)
            .env("OCI_TLS", "disabled")
            .env("OCI_REPO1", format!("conf/g{index}-one"))
            .env("OCI_REPO2", format!("conf/g{index}-two"))
            .env("OCI_USERNAME", "ci")
            .env("OCI_PASSWORD", &token)
            .env("OCI_API_BLOBS_DELETE", "false")
            .env("OCI_API_MANIFESTS_DELETE", "false")
            .env("OCI_API_TAGS_DELETE", "false")
            .env("OCI_API_BLOBS_UPLOAD_CANCEL", "true")
            .env("OCI_API_BLOBS_MOUNT_ANONYMOUS", "false")
            // The trailing `/` keeps `image` from also running `image-uncompressed`.
            .env("OCI_FILTER_TEST", format!("OCI Conformance Test/{group}/"))
            .env("OCI_RESULTS_DIR", &results)
            .current_dir(server.data_dir())
            .output()
            .expect("run the conformance suite");
        let report = String::from_utf8_lossy(&out.stdout);
        let log = String::from_utf8_lossy(&out.stderr);
        let found = counts(&report);
        assert!(
            out.status.success()
                && found.get("Fail").copied().unwrap_or(0) == 0
                && found.get("Error").copied().unwrap_or(0) == 0,
            "group {group} on {backend:?}: {found:?}\n{report}\n{log}\nserver log:\n{}",
            server.logs()
        );
        assert_eq!(found.get("Skip").copied().unwrap_or(0), 0, "group {group} skipped tests:\n{report}");
        assert!(found.get("Pass").copied().unwrap_or(0) > 0, "group {group} ran nothing:\n{report}");
        for (kind, n) in found {
            *total.entry(kind).or_insert(0) += n;
        }
    }
    println!("OCI conformance on {backend:?}: {total:?}");
    assert_eq!(total.get("Fail").copied().unwrap_or(0) + total.get("Error").copied().unwrap_or(0), 0);
}

on_both_backends!(suite);
