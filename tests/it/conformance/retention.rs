//! Retention: the store-level cases the sequence in `mod.rs` does not
//! reach, on sled and PostgreSQL.

use std::sync::Arc;

use amber_core::audit::{Actor, Event};
use amber_core::wire::{PolicyInfo, RetentionPolicy};
use amber_core::{Digest, RepoPattern, Tag};
use amber_server::meta::{Expiry, Hold, LinkStore, Meta, RetentionStore, TagChange, TagStore, Unlink};
use time::OffsetDateTime;

use super::{audit_of, envelope, event, now, repo, signer};

/// Retention: a hold and its release, each once; policies stored, listed and
/// deleted by digest; an expiry under the policy in effect, refused under a
/// stale one.
async fn retention(meta: Arc<Meta>) {
    let s = signer();
    let r = repo("acme/ret");
    for (n, name) in ["old", "older"].iter().enumerate() {
        let digest = Digest::of(name.as_bytes());
        let tag: Tag = name.parse().unwrap();
        let events = vec![Event::TagBound { repository: r.clone(), tag: tag.clone(), digest }];
        meta.bind_tag(&r, &tag, &digest, &envelope(n as u8 + 20).into(), &[], now(), audit_of(&s, events))
            .await
            .unwrap();
    }
    let old: Tag = "old".parse().unwrap();
    let hold = Hold { reason: "audit".into(), at: now(), by: Actor::operator() };
    assert!(matches!(meta.hold_tag(&r, &old, &hold, audit_of(&s, event())).await.unwrap(), TagChange::Changed(_)));
    assert!(matches!(meta.release_tag(&r, &old, audit_of(&s, event())).await.unwrap(), TagChange::Changed(_)));
    assert!(matches!(meta.release_tag(&r, &old, audit_of(&s, event())).await.unwrap(), TagChange::Unchanged(_)));
    let unknown: Tag = "nope".parse().unwrap();
    assert!(matches!(meta.release_tag(&r, &unknown, audit_of(&s, event())).await.unwrap(), TagChange::Unknown));

    let scope: RepoPattern = "acme/ret".parse().unwrap();
    let policy = |keep_last: u32| PolicyInfo {
        scope: scope.clone(),
        policy: RetentionPolicy {
            keep_days: None,
            keep_last: Some(keep_last),
            keep_tags: None,
            untagged_days: Some(7),
        },
        digest: Digest::of(&keep_last.to_be_bytes()),
        updated_at: now(),
    };
    let (first, second) = (policy(1), policy(2));
    meta.put_policy(&first, audit_of(&s, event())).await.unwrap();
    let listed = meta.policies().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].digest, first.digest);
    let expiry = |at: OffsetDateTime| Expiry { at, tombstone: envelope(30) };
    meta.put_policy(&second, audit_of(&s, event())).await.unwrap();
    let stale = meta.expire_tag(&r, &old, &expiry(now()), Some(&first), audit_of(&s, event())).await.unwrap();
    assert!(matches!(stale, TagChange::Stale), "{stale:?}");
    let expired = meta.expire_tag(&r, &old, &expiry(now()), Some(&second), audit_of(&s, event())).await.unwrap();
    assert!(matches!(expired, TagChange::Changed(ref record) if record.expiry.is_some()), "{expired:?}");
    let again = meta.expire_tag(&r, &old, &expiry(now()), None, audit_of(&s, event())).await.unwrap();
    assert!(matches!(again, TagChange::Unchanged(_)), "{again:?}");
    assert!(!meta.delete_policy(&scope, &first.digest, audit_of(&s, event())).await.unwrap(), "not the one in effect");
    assert!(meta.delete_policy(&scope, &second.digest, audit_of(&s, event())).await.unwrap());
    assert!(meta.policies().await.unwrap().is_empty());

    // The view a plan is made from, and unlinks re-checked in their transaction.
    let (kept, loose) = (Digest::of(b"kept-blob"), Digest::of(b"loose-blob"));
    for d in [kept, loose] {
        meta.link_blob(&r, &d, 9, None, audit_of(&s, event())).await.unwrap();
    }
    let digest = Digest::of(b"referencing");
    let live: Tag = "live".parse().unwrap();
    let events = vec![Event::TagBound { repository: r.clone(), tag: live.clone(), digest }];
    meta.bind_tag(&r, &live, &digest, &envelope(31).into(), &[(kept, 9)], now(), audit_of(&s, events)).await.unwrap();
    let view = meta.retention_view(&r).await.unwrap();
    assert_eq!(view.tags.len(), 3, "{view:?}");
    assert!(view.tags.iter().any(|t| t.tag == old && t.expired));
    assert!(view.links.iter().any(|l| l.digest == loose && l.size == 9));
    assert!(view.references.contains(&(digest, kept)));
    let later = now() + time::Duration::seconds(5);
    let cut = |d: Digest| {
        let meta = meta.clone();
        let a = audit_of(&s, event());
        let r = r.clone();
        async move { meta.unlink_blob(&r, &d, later, a).await.unwrap() }
    };
    assert_eq!(cut(kept).await, Unlink::Referenced, "a live manifest references it");
    assert_eq!(cut(loose).await, Unlink::Unlinked);
    assert_eq!(cut(loose).await, Unlink::Gone);
    let fresh = Digest::of(b"fresh-blob");
    meta.link_blob(&r, &fresh, 9, None, audit_of(&s, event())).await.unwrap();
    let early = meta.unlink_blob(&r, &fresh, now() - time::Duration::hours(1), audit_of(&s, event())).await.unwrap();
    assert_eq!(early, Unlink::Fresh, "linked after the cutoff");
}

on_both_stores!(retention);
