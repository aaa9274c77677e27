//! Store-level cases, one function per capability, for the methods the
//! cross-capability sequence in `mod.rs` does not reach: each runs on sled and
//! on PostgreSQL (`on_both_stores!`), so every method of `MetaStore` is called
//! by the conformance suite on both backends.

use std::sync::Arc;

use amber_core::audit::{Actor, Event};
use amber_core::oidc::{GenericTrust, Publisher};
use amber_core::wire::{PolicyInfo, RetentionPolicy};
use amber_core::{Digest, RepoPattern, Tag};
use amber_server::blobs::Object;
use amber_server::meta::{
    AuditStore, Bound, Exchange, Expiry, Hold, LinkStore, LogStore, Meta, PublisherStore, Quarantined, ReclaimStore,
    Replay, RetentionStore, ScrubProgress, ScrubStore, TagChange, TagStore, TokenStore,
};
use ed25519_dalek::SigningKey;
use time::OffsetDateTime;

use super::{audit_of, envelope, now, repo, token};

fn signer() -> SigningKey {
    SigningKey::from_bytes(&[9; 32])
}

fn event() -> Vec<Event> {
    vec![Event::KeyRotated { keyid: format!("k{}", rand::random::<u32>()) }]
}

/// Links: listed by digest across repositories, a page at a time; a
/// promotion lease is taken and ended.
pub async fn links(meta: Arc<Meta>) {
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

/// Reclaim: one runner at a time; an orphan noted waits, is marked, deleted
/// and recorded, and is no longer pending.
pub async fn reclaim(meta: Arc<Meta>) {
    let lock = meta.reclaim_lock().await.unwrap().expect("the first runner gets the lock");
    assert!(meta.reclaim_lock().await.unwrap().is_none(), "one runner at a time");
    drop(lock);
    assert!(meta.reclaim_lock().await.unwrap().is_some(), "free again once dropped");
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

/// Scrub: a quarantine is recorded once, listed, healed once; the progress
/// is kept; one scrubber at a time.
pub async fn scrub(meta: Arc<Meta>) {
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
    assert!(meta.scrub_lock().await.unwrap().is_some());
}

/// Publishers, and the exchange that mints a token for one of them once per
/// ID token, never for a publisher deleted.
pub async fn publishers(meta: Arc<Meta>) {
    let s = signer();
    let publisher = Publisher {
        id: amber_core::oidc::new_publisher_id(&mut rand::rngs::OsRng),
        name: "ci".into(),
        issuer: "generic".into(),
        github: None,
        gitlab: None,
        generic: Some(GenericTrust { claims: [("sub".to_owned(), "x".to_owned())].into() }),
        grants: vec![],
        token_lifetime: 900,
        created_at: now(),
    };
    meta.insert_publisher(&publisher, audit_of(&s, event())).await.unwrap();
    assert_eq!(meta.publishers().await.unwrap(), vec![publisher.clone()]);
    let replay = Replay { issuer: "https://issuer.example".into(), jti: "j1".into(), until: now() + time::Duration::hours(1) };
    let minted = token(51, "hash-51");
    assert_eq!(meta.exchange_token(&minted, &publisher.id, &replay, audit_of(&s, event())).await.unwrap(), Exchange::Minted);
    assert_eq!(meta.token(&minted.info.id).await.unwrap().unwrap().info.id, minted.info.id);
    let again = token(52, "hash-52");
    assert_eq!(meta.exchange_token(&again, &publisher.id, &replay, audit_of(&s, event())).await.unwrap(), Exchange::Replayed);
    assert!(meta.token(&again.info.id).await.unwrap().is_none(), "a replay mints nothing");
    assert!(meta.delete_publisher(&publisher.id, audit_of(&s, event())).await.unwrap());
    assert!(!meta.delete_publisher(&publisher.id, audit_of(&s, event())).await.unwrap());
    assert!(meta.publishers().await.unwrap().is_empty());
    let other = Replay { jti: "j2".into(), ..replay };
    let late = token(53, "hash-53");
    assert_eq!(
        meta.exchange_token(&late, &publisher.id, &other, audit_of(&s, event())).await.unwrap(),
        Exchange::PublisherGone
    );
}

/// The log: every audit entry a leaf in its transaction, its stored hashes
/// readable, a binding's leaf found by tag, nothing left to integrate.
pub async fn log(meta: Arc<Meta>) {
    let s = signer();
    meta.append_audit(audit_of(&s, event())).await.unwrap();
    let digest = Digest::of(b"manifest-log");
    let tag: Tag = "v1".parse().unwrap();
    let events = vec![Event::TagBound { repository: repo("acme/log"), tag: tag.clone(), digest }];
    let bound = meta.bind_tag(&repo("acme/log"), &tag, &digest, &envelope(3), &[], now(), audit_of(&s, events)).await;
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
}

/// Tags: the repositories that have any, in order, a page at a time.
pub async fn tags(meta: Arc<Meta>) {
    let s = signer();
    for (n, name) in ["acme/b", "acme/a", "other/c"].iter().enumerate() {
        let digest = Digest::of(name.as_bytes());
        let tag: Tag = "t".parse().unwrap();
        let events = vec![Event::TagBound { repository: repo(name), tag: tag.clone(), digest }];
        meta.bind_tag(&repo(name), &tag, &digest, &envelope(n as u8 + 10), &[], now(), audit_of(&s, events))
            .await
            .unwrap();
    }
    let first = meta.repositories(None, 2).await.unwrap();
    let rest = meta.repositories(first.last(), 10).await.unwrap();
    let names: Vec<String> = first.iter().chain(&rest).map(|r| r.to_string()).collect();
    assert_eq!(names, ["acme/a", "acme/b", "other/c"]);
}

/// Retention: a hold and its release, each once; policies stored, listed and
/// deleted by digest; an expiry under the policy in effect, refused under a
/// stale one.
pub async fn retention(meta: Arc<Meta>) {
    let s = signer();
    let r = repo("acme/ret");
    for (n, name) in ["old", "older"].iter().enumerate() {
        let digest = Digest::of(name.as_bytes());
        let tag: Tag = name.parse().unwrap();
        let events = vec![Event::TagBound { repository: r.clone(), tag: tag.clone(), digest }];
        meta.bind_tag(&r, &tag, &digest, &envelope(n as u8 + 20), &[], now(), audit_of(&s, events)).await.unwrap();
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
        policy: RetentionPolicy { keep_days: None, keep_last: Some(keep_last), keep_tags: None, untagged_days: Some(7) },
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
}

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sled() {
                let dir = tempfile::tempdir().unwrap();
                super::$name(super::super::open_sled(dir.path()).await).await
            }
            #[tokio::test]
            async fn postgres() {
                let db = crate::backends::PgDatabase::create();
                super::$name(super::super::open_postgres(&db).await).await
            }
        }
    )*};
}

on_both_stores!(links, reclaim, scrub, publishers, log, tags, retention);
