//! Tags: the store-level cases the sequence in `mod.rs` does not
//! reach, on sled and PostgreSQL.

use std::sync::Arc;

use amber_core::audit::Event;
use amber_core::{Digest, Tag};
use amber_server::meta::{Meta, TagStore};

use super::{audit_of, envelope, now, repo, signer};

/// Tags: the repositories that have any, in order, a page at a time.
async fn tags(meta: Arc<Meta>) {
    let s = signer();
    for (n, name) in ["acme/b", "acme/a", "other/c"].iter().enumerate() {
        let digest = Digest::of(name.as_bytes());
        let tag: Tag = "t".parse().unwrap();
        let events = vec![Event::TagBound { repository: repo(name), tag: tag.clone(), digest }];
        meta.bind_tag(&repo(name), &tag, &digest, &envelope(n as u8 + 10).into(), &[], now(), audit_of(&s, events))
            .await
            .unwrap();
    }
    let first = meta.repositories(None, 2).await.unwrap();
    let rest = meta.repositories(first.last(), 10).await.unwrap();
    let names: Vec<String> = first.iter().chain(&rest).map(|r| r.to_string()).collect();
    assert_eq!(names, ["acme/a", "acme/b", "other/c"]);
}

on_both_stores!(tags);
