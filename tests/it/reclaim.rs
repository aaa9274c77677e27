//! Reclaim over HTTP, on both backends: bytes no repository links are
//! deleted after the grace and not before, a new link within the grace keeps
//! them, an object a crash left unlinked is reclaimed too, and replicas run
//! one at a time.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::backends::Backend;
use crate::harness::{TestServer, data, independent_b3_bytes};
use crate::on_both_backends;

async fn upload(server: &TestServer, token: &str, repo: &str, bytes: &[u8]) -> (String, StatusCode) {
    let digest = independent_b3_bytes(bytes);
    let put = server
        .request(Method::PUT, &format!("/v1/repos/{repo}/blobs/{digest}"), token)
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    let status = put.status();
    assert!(status.is_success(), "{status}");
    (digest, status)
}

async fn reclaim(server: &TestServer) -> Value {
    server.run("/v1/reclaim/run").await
}

/// Unlinks every unreferenced link older than a second, by retention.
async fn unlink_all(server: &TestServer, repo: &str) {
    let policy = json!({"untagged_days": 0});
    let put = server.request(Method::PUT, &format!("/v1/retention/{repo}"), &server.admin).json(&policy).send().await;
    assert_eq!(put.unwrap().status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    server.run("/v1/retention/run").await;
}

/// Every digest the audit log records as reclaimed, sorted (repeats kept).
async fn reclaimed_digests(server: &TestServer) -> Vec<String> {
    let mut recorded: Vec<String> = server
        .audit_events()
        .await
        .iter()
        .filter(|e| e["kind"] == "blobs_reclaimed")
        .flat_map(|e| {
            e["digests"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().to_owned()).collect::<Vec<_>>()
        })
        .collect();
    recorded.sort();
    recorded
}

fn server(backend: Backend, grace: u64) -> crate::harness::Builder {
    TestServer::builder()
        .backend(backend)
        .arg("--reclaim-grace")
        .arg(grace.to_string())
        .arg("--reclaim-interval")
        .arg("0")
        .arg("--retention-interval")
        .arg("0")
}

async fn bytes_go_after_the_grace_and_a_new_link_keeps_them(backend: Backend) {
    let server = server(backend, 2).start().await;
    let token = server.token(&[("acme/*", &["push", "pull"])]).await;
    let (a_bytes, b_bytes) = (data(3000, 1), data(5000, 2));
    let (a, _) = upload(&server, &token, "acme/web", &a_bytes).await;
    let (b, _) = upload(&server, &token, "acme/web", &b_bytes).await;
    // A linked elsewhere too is never a candidate.
    let (shared, _) = upload(&server, &token, "acme/web", &data(700, 3)).await;
    upload(&server, &token, "acme/api", &data(700, 3)).await;
    unlink_all(&server, "acme/web").await;

    let report = reclaim(&server).await;
    assert_eq!(report, json!({"ran": true, "deleted": 0, "bytes_freed": 0, "pending": 2, "pending_bytes": 8000}));
    let storage: serde_json::Value =
        server.request(Method::GET, "/v1/storage", &server.admin).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        storage,
        json!({"links": 1, "linked_bytes": 700, "pending_reclaim": 2, "pending_reclaim_bytes": 8000, "quarantined": 0})
    );
    assert!(server.stored(&a).await && server.stored(&b).await, "within the grace nothing is deleted");
    // B is uploaded again (to another repository) within the grace: kept.
    let (_, status) = upload(&server, &token, "acme/api", &b_bytes).await;
    assert_eq!(status, StatusCode::CREATED);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let report = reclaim(&server).await;
    assert_eq!(report, json!({"ran": true, "deleted": 1, "bytes_freed": 3000, "pending": 0, "pending_bytes": 0}));
    assert!(!server.stored(&a).await, "A's bytes are deleted");
    assert!(server.stored(&b).await && server.stored(&shared).await);
    let head = server.request(Method::HEAD, &format!("/v1/repos/acme/api/blobs/{b}"), &token).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    let got = server.request(Method::GET, &format!("/v1/repos/acme/api/blobs/{b}"), &token).send().await.unwrap();
    assert_eq!(got.bytes().await.unwrap().as_ref(), b_bytes.as_slice());

    // Uploading A again stores its bytes again.
    let (_, status) = upload(&server, &token, "acme/web", &a_bytes).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(server.stored(&a).await);
    let got = server.request(Method::GET, &format!("/v1/repos/acme/web/blobs/{a}"), &token).send().await.unwrap();
    assert_eq!(got.bytes().await.unwrap().as_ref(), a_bytes.as_slice());

    // One audit entry for the run, naming what it deleted.
    let reclaimed: Vec<Value> =
        server.audit_events().await.into_iter().filter(|e| e["kind"] == "blobs_reclaimed").collect();
    assert_eq!(reclaimed, vec![json!({"kind": "blobs_reclaimed", "digests": [a], "bytes": 3000})]);
    let metrics = server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("amber_reclaimed_bytes_total 3000"), "{metrics}");
    assert!(metrics.contains("amber_reclaim_pending_bytes 0"), "{metrics}");
}

/// Bytes stored under their digest with no link (a crash between storing and
/// linking leaves them) wait a grace, then go.
async fn an_object_nothing_links_is_reclaimed(backend: Backend) {
    let server = server(backend, 1).start().await;
    let token = server.token(&[("acme/web", &["push", "pull"])]).await;
    let orphan = data(4096, 9);
    let digest = independent_b3_bytes(&orphan);
    match &server.services {
        None => std::fs::write(server.blob_file(&digest), &orphan).unwrap(),
        Some(services) => {
            let key = format!("amber/blobs/{}", digest.trim_start_matches("blake3:"));
            services
                .s3
                .client()
                .put_object()
                .bucket(&services.bucket)
                .key(key)
                .body(orphan.clone().into())
                .send()
                .await
                .unwrap();
        }
    }
    let (kept, _) = upload(&server, &token, "acme/web", &data(100, 10)).await;
    let report = reclaim(&server).await;
    assert_eq!((report["deleted"].as_u64(), report["pending"].as_u64()), (Some(0), Some(1)), "{report}");
    // S3 lists whole seconds, which the grace counts from the end of.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let report = reclaim(&server).await;
    assert_eq!((report["deleted"].as_u64(), report["bytes_freed"].as_u64()), (Some(1), Some(4096)), "{report}");
    assert!(!server.stored(&digest).await);
    assert!(server.stored(&kept).await, "a linked blob stays");
}

on_both_backends!(bytes_go_after_the_grace_and_a_new_link_keeps_them, an_object_nothing_links_is_reclaimed);

/// Two replicas asked to reclaim at once: one runs, or both run one after the
/// other; every digest is deleted and recorded once.
#[tokio::test]
async fn replicas_reclaim_one_at_a_time() {
    let server = server(Backend::S3Postgres, 0).start().await;
    let replica = server.spawn_replica();
    let token = server.token(&[("acme/web", &["push", "pull"])]).await;
    let mut digests = Vec::new();
    for i in 0..40 {
        digests.push(upload(&server, &token, "acme/web", &data(200 + i, 100 + i as u64)).await.0);
    }
    unlink_all(&server, "acme/web").await;
    let base = replica.url("");
    let on_replica = server.run_at(&base, "/v1/reclaim/run");
    let (a, b) = tokio::join!(reclaim(&server), on_replica);
    assert_eq!(a["deleted"].as_u64().unwrap() + b["deleted"].as_u64().unwrap(), 40, "{a} {b}");
    for digest in &digests {
        assert!(!server.stored(digest).await);
    }
    let recorded = reclaimed_digests(&server).await;
    let mut want = digests.clone();
    want.sort();
    assert_eq!(recorded, want, "each digest recorded once");
}

/// `kill -9` (an abort) at each step of a reclaim run: after a restart the
/// linked blobs are intact, and the next run deletes and records the rest,
/// each digest once.
async fn a_crash_at_any_step_of_a_run_is_finished_by_the_next(backend: Backend) {
    for point in ["reclaim.after_select", "reclaim.after_mark", "reclaim.mid_delete", "reclaim.after_delete"] {
        let mut server = server(backend, 0).env("AMBER_FAILPOINT", point).start().await;
        let token = server.token(&[("acme/web", &["push", "pull"])]).await;
        let mut loose = Vec::new();
        for i in 0..6 {
            loose.push(upload(&server, &token, "acme/web", &data(300 + i, 200 + i as u64)).await.0);
        }
        unlink_all(&server, "acme/web").await;
        let kept_bytes = data(999, 299);
        let (kept, _) = upload(&server, &token, "acme/web", &kept_bytes).await;
        // Answered at once (or not, if the crash came first); the run goes on in the background.
        let _ = server.request(Method::POST, "/v1/reclaim/run", &server.admin).send().await;
        assert!(server.wait_gone(Duration::from_secs(30)), "{point}: the run should have crashed the server");
        server.kill9();
        server.set_env("AMBER_FAILPOINT", None);
        server.restart();
        let got =
            server.request(Method::GET, &format!("/v1/repos/acme/web/blobs/{kept}"), &token).send().await.unwrap();
        assert_eq!(got.status(), StatusCode::OK, "{point}");
        assert_eq!(got.bytes().await.unwrap().as_ref(), kept_bytes.as_slice(), "{point}");
        let report = reclaim(&server).await;
        assert_eq!((report["pending"].as_u64(), report["ran"].as_bool()), (Some(0), Some(true)), "{point}: {report}");
        for digest in &loose {
            assert!(!server.stored(digest).await, "{point}: {digest} left behind");
        }
        assert!(server.stored(&kept).await);
        let recorded = reclaimed_digests(&server).await;
        let mut want = loose.clone();
        want.sort();
        assert_eq!(recorded, want, "{point}: each deletion recorded once");
    }
}

/// `amberd fsck` exits 0 on a clean store and 1 on each kind of fault;
/// `--repair` reclaims an orphan past the grace and touches nothing linked.
async fn fsck_finds_each_kind_of_fault(backend: Backend) {
    let mut server = server(backend, 0).arg("--scrub-rate").arg("0").start().await;
    let token = server.token(&[("acme/web", &["push", "pull"])]).await;
    let blobs: Vec<Vec<u8>> = (0..4).map(|i| data(1000 + i, 300 + i as u64)).collect();
    let mut digests = Vec::new();
    for bytes in &blobs {
        digests.push(upload(&server, &token, "acme/web", bytes).await.0);
    }
    // On sled the server must be stopped; beside S3 + PostgreSQL it may run.
    let stop = |server: &mut TestServer| {
        if server.services.is_none() {
            assert!(server.terminate());
        }
    };
    let start = |server: &mut TestServer| {
        if server.services.is_none() {
            server.restart();
        }
    };
    stop(&mut server);
    let (code, out) = server.amberd_status(&["fsck", "--verify"]);
    assert_eq!(code, 0, "a clean store: {out}");
    assert!(out.contains("4 linked, 4 stored, 4 verified"), "{out}");
    start(&mut server);

    server
        .tamper(&digests[0], |mut b| {
            b[10] ^= 1;
            Some(b)
        })
        .await;
    server
        .tamper(&digests[1], |mut b| {
            b.truncate(10);
            Some(b)
        })
        .await;
    server.tamper(&digests[2], |_| None).await;
    let orphan = data(2000, 399);
    let orphan_digest = independent_b3_bytes(&orphan);
    match &server.services {
        None => std::fs::write(server.blob_file(&orphan_digest), &orphan).unwrap(),
        Some(services) => {
            let key = format!("amber/blobs/{}", orphan_digest.trim_start_matches("blake3:"));
            services
                .s3
                .client()
                .put_object()
                .bucket(&services.bucket)
                .key(key)
                .body(orphan.into())
                .send()
                .await
                .unwrap();
        }
    }
    stop(&mut server);
    let (code, out) = server.amberd_status(&["fsck"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("wrong size: {}", digests[1])), "{out}");
    assert!(out.contains(&format!("missing: {}", digests[2])), "{out}");
    assert!(out.contains(&format!("orphan: {orphan_digest}")), "{out}");
    assert!(!out.contains(&format!("mismatch: {}", digests[0])), "without --verify nothing is hashed: {out}");
    let (code, out) = server.amberd_status(&["fsck", "--verify"]);
    assert_eq!(code, 1);
    assert!(out.contains(&format!("mismatch: {}", digests[0])), "{out}");

    // --repair quarantines what is wrong (so clients re-send it) and
    // reclaims the orphan (grace 0), and deletes nothing linked.
    let (code, out) = server.amberd_status(&["fsck", "--verify", "--repair"]);
    assert_eq!(code, 1, "the linked faults remain until re-sent: {out}");
    assert!(!out.contains("orphan: "), "{out}");
    assert!(!server.stored(&orphan_digest).await);
    assert!(server.stored(&digests[0]).await && server.stored(&digests[1]).await && server.stored(&digests[3]).await);
    let (code, out) = server.amberd_status(&["fsck"]);
    assert_eq!(code, 1);
    for digest in &digests[..3] {
        assert!(out.contains(&format!("quarantined: {digest}")), "{out}");
    }
    start(&mut server);

    // Told they are missing, the client sends them again: the store is
    // clean. (A running server learns of a quarantine within 5 s.)
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let asked: Vec<Value> = digests.iter().map(|d| json!(d)).collect();
        let missing = server.missing(&token, "acme/web", &asked).await;
        if missing.as_array().unwrap().len() == 3 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{missing}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for i in 0..3 {
        let response = server
            .request(Method::PUT, &format!("/v1/repos/acme/web/blobs/{}", digests[i]), &token)
            .body(blobs[i].clone())
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }
    stop(&mut server);
    let (code, out) = server.amberd_status(&["fsck", "--verify"]);
    assert_eq!(code, 0, "healed: {out}");
    assert!(out.contains("4 linked, 4 stored, 4 verified"), "{out}");
}

on_both_backends!(a_crash_at_any_step_of_a_run_is_finished_by_the_next, fsck_finds_each_kind_of_fault);
