//! The transparency log: the store-level cases the sequence in `mod.rs` does not
//! reach, on sled and PostgreSQL.

use std::sync::Arc;

use amber_core::audit::Event;
use amber_core::{Digest, Tag};
use amber_server::meta::{AuditStore, Bound, LogStore, Meta, TagStore};

use super::{audit_of, envelope, event, now, repo, signer};

/// The log: every audit entry a leaf in its transaction, its stored hashes
/// readable, a binding's leaf found by tag, nothing left to integrate.
async fn log(meta: Arc<Meta>) {
    let s = signer();
    meta.append_audit(audit_of(&s, event())).await.unwrap();
    let digest = Digest::of(b"manifest-log");
    let tag: Tag = "v1".parse().unwrap();
    let events = vec![Event::TagBound { repository: repo("acme/log"), tag: tag.clone(), digest }];
    let bound =
        meta.bind_tag(&repo("acme/log"), &tag, &digest, &envelope(3).into(), &[], now(), audit_of(&s, events)).await;
    assert!(matches!(bound.unwrap(), Bound::Created));
    let entries = meta.audit_entries(0, 1000).await.unwrap();
    let tree = meta.log_tree().await.unwrap();
    assert_eq!(tree.size(), entries.len() as u64);
    let leaves = meta.log_hashes(vec![0, tree.size() - 1]).await.unwrap();
    assert_eq!(leaves[0], amber_core::log::leaf_hash(entries[0].entry.as_bytes()));
    assert_eq!(leaves[1], amber_core::log::leaf_hash(entries.last().unwrap().entry.as_bytes()));
    assert_eq!(meta.tag_log_index(&repo("acme/log"), &tag).await.unwrap(), Some(tree.size() - 1));
    assert_eq!(meta.tag_log_index(&repo("acme/log"), &"v2".parse().unwrap()).await.unwrap(), None);
    assert_eq!(meta.integrate_log(100).await.unwrap(), 0, "the tree grew with each entry");
    // Checkpoints: kept only when larger.
    assert_eq!(meta.log_checkpoint().await.unwrap(), None);
    assert!(meta.put_log_checkpoint(2, "o\n2\nr\n").await.unwrap());
    assert!(!meta.put_log_checkpoint(1, "o\n1\nr\n").await.unwrap(), "never smaller");
    assert!(!meta.put_log_checkpoint(2, "o\n2\nx\n").await.unwrap(), "never the same size again");
    assert_eq!(meta.log_checkpoint().await.unwrap(), Some((2, "o\n2\nr\n".to_owned())));
}

on_both_stores!(log);
