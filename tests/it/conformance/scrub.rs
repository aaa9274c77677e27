//! Scrub: the store-level cases the sequence in `mod.rs` does not
//! reach, on sled and PostgreSQL.

use std::sync::Arc;

use amber_core::Digest;
use amber_server::meta::{Meta, Quarantined, ScrubProgress, ScrubStore};

use super::{audit_of, event, now, signer};

/// Scrub: a quarantine is recorded once, listed, healed once; the progress
/// is kept; one scrubber at a time.
async fn scrub(meta: Arc<Meta>) {
    let s = signer();
    let digest = Digest::of(b"rotten");
    let entry = Quarantined { digest, reason: "mismatch".into(), found_at: now() };
    assert!(meta.quarantine(&entry, audit_of(&s, event())).await.unwrap());
    assert!(!meta.quarantine(&entry, audit_of(&s, event())).await.unwrap(), "recorded once");
    assert_eq!(meta.quarantined().await.unwrap(), vec![entry]);
    assert!(meta.heal(&digest, audit_of(&s, event())).await.unwrap());
    assert!(!meta.heal(&digest, audit_of(&s, event())).await.unwrap(), "healed once");
    assert!(meta.quarantined().await.unwrap().is_empty());
    assert_eq!(meta.scrub_progress().await.unwrap(), ScrubProgress::default());
    // When each blob was last found right.
    let (a, b) = (Digest::of(b"verified-a"), Digest::of(b"verified-b"));
    assert_eq!(meta.last_verified(&a).await.unwrap(), None);
    let at = now();
    meta.record_verified(&[a, b], at).await.unwrap();
    assert_eq!(meta.last_verified(&a).await.unwrap(), Some(at));
    assert_eq!(meta.last_verified(&b).await.unwrap(), Some(at));
    let progress = ScrubProgress {
        cursor: Some(digest),
        pass_started: Some(now()),
        last_full_pass: None,
        verified_blobs: 7,
        verified_bytes: 700,
    };
    meta.save_scrub_progress(&progress).await.unwrap();
    assert_eq!(meta.scrub_progress().await.unwrap(), progress);
    let lock = meta.scrub_lock().await.unwrap().expect("the first scrubber gets the lock");
    assert!(meta.scrub_lock().await.unwrap().is_none());
    drop(lock);
    // Free again once dropped: at once on sled; on PostgreSQL once the
    // server has seen the lock's connection close.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while meta.scrub_lock().await.unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "the lock was never freed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

on_both_stores!(scrub);
