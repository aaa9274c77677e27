//! Links: the store-level cases the sequence in `mod.rs` does not
//! reach, on sled and PostgreSQL.

use std::sync::Arc;

use amber_core::Digest;
use amber_server::meta::{LinkStore, Meta};

use super::{audit_of, event, repo, signer};

/// Links: listed by digest across repositories, a page at a time; a
/// promotion lease is taken and ended.
async fn links(meta: Arc<Meta>) {
    let s = signer();
    let mut digests: Vec<Digest> = (0..5u8).map(|n| Digest::of(&[n, 1])).collect();
    for (n, d) in digests.iter().enumerate() {
        meta.link_blob(&repo("acme/l"), d, n as u64 + 1, None, audit_of(&s, event())).await.unwrap();
    }
    // The same digest in another repository is listed once.
    meta.link_blob(&repo("acme/m"), &digests[0], 1, None, audit_of(&s, event())).await.unwrap();
    digests.sort();
    let first = meta.linked_digests(None, 3).await.unwrap();
    let rest = meta.linked_digests(Some(&first[2].0), 10).await.unwrap();
    let all: Vec<Digest> = first.iter().chain(&rest).map(|(d, _)| *d).collect();
    assert_eq!(all, digests);
    let lease = meta.begin_promote(&Digest::of(b"promoted")).await.unwrap().expect("a lease for an unmarked digest");
    meta.end_promote(&lease).await.unwrap();
    meta.end_promote(&lease).await.unwrap();
}

on_both_stores!(links);
