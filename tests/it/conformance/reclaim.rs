//! Reclaim: the store-level cases the sequence in `mod.rs` does not
//! reach, on sled and PostgreSQL.

use std::sync::Arc;

use amber_core::Digest;
use amber_server::blobs::Object;
use amber_server::meta::{Meta, ReclaimStore};

use super::{audit_of, event, now, signer};

/// Reclaim: one runner at a time; an orphan noted waits, is marked, deleted
/// and recorded, and is no longer pending.
async fn reclaim(meta: Arc<Meta>) {
    let lock = meta.reclaim_lock().await.unwrap().expect("the first runner gets the lock");
    assert!(meta.reclaim_lock().await.unwrap().is_none(), "one runner at a time");
    drop(lock);
    // Free again once dropped: at once on sled; on PostgreSQL once the
    // server has seen the lock's connection close.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while meta.reclaim_lock().await.unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "the lock was never freed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let orphan = Digest::of(b"orphan");
    let long_ago = now() - time::Duration::days(30);
    let noted = meta.note_orphans(&[Object { digest: orphan, size: 6, modified: Some(long_ago) }]).await.unwrap();
    assert_eq!(noted, 1);
    let (count, bytes) = meta.reclaim_pending().await.unwrap();
    assert!(count >= 1 && bytes >= 6, "{count} {bytes}");
    let cutoff = now() + time::Duration::seconds(1);
    let candidates = meta.reclaim_candidates(cutoff, 100).await.unwrap();
    assert!(candidates.iter().any(|c| c.digest == orphan && c.size == 6), "{candidates:?}");
    assert!(meta.mark_reclaim(&orphan, cutoff).await.unwrap());
    meta.finish_reclaim(&[orphan], audit_of(&signer(), event())).await.unwrap();
    let after = meta.reclaim_candidates(cutoff, 100).await.unwrap();
    assert!(!after.iter().any(|c| c.digest == orphan), "{after:?}");
    assert_eq!(meta.reclaim_pending().await.unwrap().0, count - 1);
}

on_both_stores!(reclaim);
