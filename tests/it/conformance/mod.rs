//! One conformance suite per backend trait, written once and run on every
//! implementation: `MetaStore` on sled and PostgreSQL, `BlobStore` on a
//! directory and S3.

use std::sync::Arc;

use amber_core::audit::{Actor, ChainVerifier, Event};
use amber_core::dsse::Envelope;
use amber_core::wire::{KeyStatus, TokenInfo};
use amber_core::{Digest, RepoName, Tag, TokenId};
use amber_server::admission::MemoryBudget;
use amber_server::blobs::{BlobError, BlobStore, Blobs, FsBlobs, S3Blobs, Stored, Upload};
use amber_server::config::{FreeSpace, MetaConfig};
use amber_server::meta::{
    AuditBuild, Bound, Created, KeyRecord, Meta, MetaStore, NewAudit, NewAuditEntry, Revocation, Rotation, TokenRecord,
    Updated, UploadId, UploadKind, UploadRecord,
};
use bytes::Bytes;
use futures_util::StreamExt;
use time::OffsetDateTime;

use crate::backends::{PgDatabase, S3Service};
use crate::harness::data;
use amber_server::meta::{AuditStore, KeyStore, LinkStore, LogStore, TagStore, TokenStore, UploadRecordStore};

fn repo(name: &str) -> RepoName {
    name.parse().unwrap()
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc().replace_nanosecond(0).unwrap()
}

fn token(id_byte: u8, hash: &str) -> TokenRecord {
    let id: TokenId = format!("tok_{}", format!("{id_byte:02x}").repeat(12)).parse().unwrap();
    TokenRecord {
        info: TokenInfo {
            id,
            name: "t".into(),
            pipeline: None,
            grants: vec![],
            created_at: now(),
            expires_at: now() + time::Duration::hours(1),
            last_used_at: None,
            revoked_at: None,
            rotated_from: None,
            rotated_to: None,
            ci: None,
        },
        secret_hash: hash.into(),
    }
}

fn envelope(n: u8) -> Envelope {
    amber_core::dsse::sign("t", &[n], &ed25519_dalek::SigningKey::from_bytes(&[n; 32]))
}

/// Audit entries for `events`, as `audit::Draft` builds them, signed by `signer`.
fn audit_of(signer: &ed25519_dalek::SigningKey, events: Vec<Event>) -> AuditBuild {
    let signer = signer.clone();
    Arc::new(move |first: u64, prev: &str| {
        let mut prev = prev.to_owned();
        let mut entries = Vec::new();
        for (seq, event) in (first..).zip(&events) {
            let body = amber_core::audit::EntryBody {
                seq,
                prev,
                at: now(),
                actor: Actor::operator(),
                event: event.clone(),
                salt: Some(format!("{seq:064x}")),
            };
            let bytes = serde_json::to_vec(&body).unwrap();
            let hash = amber_core::audit::entry_hash(&bytes);
            prev = hash.clone();
            let tag_bound = match event {
                Event::TagBound { repository, tag, .. } => Some((repository.clone(), tag.clone())),
                _ => None,
            };
            entries.push(NewAuditEntry { bytes, hash, tag_bound });
        }
        let checkpoint = amber_core::audit::Checkpoint {
            schema: amber_core::audit::CHECKPOINT_SCHEMA.into(),
            seq: first + events.len() as u64 - 1,
            hash: prev,
            created_at: now(),
        };
        let checkpoint = amber_core::dsse::sign(
            amber_core::audit::CHECKPOINT_PAYLOAD_TYPE,
            &serde_json::to_vec(&checkpoint).unwrap(),
            &signer,
        );
        NewAudit { entries, checkpoint }
    })
}

async fn meta_conformance(meta: Meta) {
    let meta = Arc::new(meta);
    let (a, b) = (repo("acme/a"), repo("acme/b"));
    let d = Digest::of(b"blob");
    let signer = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let pushed = |repo: &RepoName, digest: Digest| {
        audit_of(&signer, vec![Event::BlobPushed { repository: repo.clone(), digest, size: 4 }])
    };
    let bound = |repo: &RepoName, tag: &Tag, digest: Digest| {
        audit_of(
            &signer,
            vec![
                Event::ManifestPushed { repository: repo.clone(), digest },
                Event::TagBound { repository: repo.clone(), tag: tag.clone(), digest },
            ],
        )
    };

    // Links: write-once, per repository, each new one recorded with it.
    assert!(meta.blob_size(&a, &d).await.unwrap().is_none());
    assert_eq!(meta.link_blob(&a, &d, 4, None, pushed(&a, d)).await.unwrap(), Stored::Created);
    assert_eq!(meta.link_blob(&a, &d, 4, None, pushed(&a, d)).await.unwrap(), Stored::AlreadyPresent);
    assert_eq!(meta.audit_entries(0, 10).await.unwrap().len(), 1, "a link already there is not recorded again");
    assert_eq!(meta.blob_size(&a, &d).await.unwrap(), Some(4));
    assert!(meta.blob_size(&b, &d).await.unwrap().is_none());

    // Tokens: each change recorded with it, and only a change.
    let event = |id: &TokenRecord| audit_of(&signer, vec![Event::TokenRevoked { token_id: id.info.id.clone() }]);
    let t = token(1, "hash-1");
    meta.insert_token(&t, event(&t)).await.unwrap();
    assert!(meta.insert_token(&t, event(&t)).await.is_err(), "ids are unique");
    assert_eq!(meta.token(&t.info.id).await.unwrap().unwrap().info, t.info);
    assert_eq!(meta.token_by_hash("hash-1").await.unwrap().unwrap().info.id, t.info.id);
    assert!(meta.token_by_hash("nope").await.unwrap().is_none());
    meta.touch_token(&t.info.id, now()).await.unwrap();
    assert!(meta.token(&t.info.id).await.unwrap().unwrap().info.last_used_at.is_some());
    let first_revocation = now();
    let Revocation::Revoked(revoked) = meta.revoke_token(&t.info.id, first_revocation, event(&t)).await.unwrap() else {
        panic!("a first revocation revokes");
    };
    assert_eq!(revoked.info.revoked_at, Some(first_revocation));
    let later = first_revocation + time::Duration::hours(1);
    let Revocation::AlreadyRevoked(again) = meta.revoke_token(&t.info.id, later, event(&t)).await.unwrap() else {
        panic!("a second revocation changes nothing");
    };
    assert_eq!(again.info.revoked_at, Some(first_revocation), "a second revocation keeps the first time");
    let unknown_id = token(8, "hash-8");
    assert!(matches!(meta.revoke_token(&unknown_id.info.id, later, event(&t)).await.unwrap(), Revocation::Unknown));
    meta.touch_token(&t.info.id, now()).await.unwrap();
    assert!(
        meta.token(&t.info.id).await.unwrap().unwrap().info.revoked_at.is_some(),
        "touch never undoes a revocation"
    );

    let old = token(2, "hash-2");
    meta.insert_token(&old, event(&old)).await.unwrap();
    let mut new = token(3, "hash-3");
    new.info.rotated_from = Some(old.info.id.clone());
    let grace_end = now() + time::Duration::seconds(60);
    assert!(matches!(meta.rotate_token(&new, grace_end, event(&new)).await.unwrap(), Rotation::Rotated));
    let old_after = meta.token(&old.info.id).await.unwrap().unwrap();
    assert_eq!(old_after.info.rotated_to, Some(new.info.id.clone()));
    assert_eq!(old_after.info.expires_at, grace_end);
    assert!(meta.token_by_hash("hash-3").await.unwrap().is_some());
    let mut twice = token(4, "hash-4");
    twice.info.rotated_from = Some(old.info.id.clone());
    assert!(matches!(meta.rotate_token(&twice, grace_end, event(&twice)).await.unwrap(), Rotation::Inactive(_)));
    let mut unknown = token(5, "hash-5");
    unknown.info.rotated_from = Some(token(9, "x").info.id);
    assert!(matches!(meta.rotate_token(&unknown, grace_end, event(&unknown)).await.unwrap(), Rotation::Unknown));
    assert_eq!(meta.audit_entries(1, 100).await.unwrap().len(), 4, "a token, a revocation, a token, a rotation");
    let listed = meta.list_tokens(None, 2).await.unwrap();
    assert_eq!(listed.len(), 2);
    let rest = meta.list_tokens(Some(listed[1].info.id.as_str()), 10).await.unwrap();
    assert_eq!(rest.len(), 1);

    // Keys: one active at a time; racing first starts agree on one.
    let key = |n: u8, status| KeyRecord {
        keyid: format!("key{n}"),
        private_key: "x".into(),
        created_at: now() + time::Duration::seconds(n.into()),
        status,
        purpose: amber_core::wire::KeyPurpose::Manifest,
    };
    let racers = (1..=8).map(|n| {
        let meta = meta.clone();
        tokio::spawn(async move { meta.init_key(&key(n, KeyStatus::Active)).await.unwrap() })
    });
    let added = futures_util::future::join_all(racers).await.into_iter().filter(|r| *r.as_ref().unwrap()).count();
    let keys = meta.keys().await.unwrap();
    assert_eq!(keys.iter().filter(|k| k.status == KeyStatus::Active).count(), 1);
    assert!(added >= 1 && keys.len() == added.max(1).min(keys.len()));
    meta.activate_key(&key(20, KeyStatus::Active)).await.unwrap();
    let keys = meta.keys().await.unwrap();
    assert_eq!(
        keys.iter().filter(|k| k.status == KeyStatus::Active).map(|k| k.keyid.as_str()).collect::<Vec<_>>(),
        ["key20"]
    );
    assert_eq!(keys.last().unwrap().keyid, "key20", "keys are listed oldest first");

    // Tags: racing binds have exactly one winner, and losers leave nothing.
    let tag: Tag = "race".parse().unwrap();
    let binds = (0..16u8).map(|n| {
        let (meta, a, tag) = (meta.clone(), a.clone(), tag.clone());
        let digest = Digest::of(&[n]);
        let audit = bound(&a, &tag, digest);
        tokio::spawn(async move {
            (digest, meta.bind_tag(&a, &tag, &digest, &envelope(n).into(), &[], now(), audit).await.unwrap())
        })
    });
    let outcomes: Vec<(Digest, Bound)> =
        futures_util::future::join_all(binds).await.into_iter().map(Result::unwrap).collect();
    let winners: Vec<Digest> = outcomes.iter().filter(|(_, b)| matches!(b, Bound::Created)).map(|(d, _)| *d).collect();
    assert_eq!(winners.len(), 1);
    for (digest, outcome) in &outcomes {
        if let Bound::Existing(record) = outcome {
            assert_eq!(record.digest, winners[0]);
            assert!(meta.manifest(&a, digest).await.unwrap().is_none(), "a losing manifest was kept");
        }
    }
    assert_eq!(meta.tag(&a, &tag).await.unwrap().unwrap().digest, winners[0]);
    assert!(meta.manifest(&a, &winners[0]).await.unwrap().is_some());
    assert!(meta.manifest(&b, &winners[0]).await.unwrap().is_none(), "manifests are per repository");
    assert!(meta.tag(&b, &tag).await.unwrap().is_none());
    let recorded = meta.audit_entries(5, 100).await.unwrap();
    assert_eq!(recorded.len(), 2, "only the winning bind is recorded");
    assert!(recorded[1].entry.contains(&winners[0].to_string()));

    for (i, name) in ["b", "a", "A", "a-1", "c"].iter().enumerate() {
        let (digest, tag) = (Digest::of(name.as_bytes()), name.parse().unwrap());
        meta.bind_tag(&b, &tag, &digest, &envelope(100 + i as u8).into(), &[], now(), bound(&b, &tag, digest))
            .await
            .unwrap();
    }
    let page = meta.list_tags(&b, None, 3).await.unwrap();
    let names: Vec<&str> = page.iter().map(|t| t.tag.as_str()).collect();
    assert_eq!(names, ["A", "a", "a-1"], "byte order");
    let page = meta.list_tags(&b, Some("a-1"), 10).await.unwrap();
    assert_eq!(page.iter().map(|t| t.tag.as_str()).collect::<Vec<_>>(), ["b", "c"]);

    // Audit: concurrent appends make one unbroken chain, after the 17 entries
    // recorded with the link, the tokens and the tags above.
    let appends = (0..24).map(|n| {
        let meta = meta.clone();
        let audit = audit_of(&signer, vec![Event::KeyRotated { keyid: format!("k{n}") }]);
        tokio::spawn(async move { meta.append_audit(audit).await.unwrap() })
    });
    let mut seqs: Vec<u64> = futures_util::future::join_all(appends).await.into_iter().map(Result::unwrap).collect();
    seqs.sort();
    assert_eq!(seqs, (18..=41).collect::<Vec<_>>());
    let mut verifier = ChainVerifier::default();
    let first = meta.audit_entries(0, 10).await.unwrap();
    let rest = meta.audit_entries(10, 100).await.unwrap();
    assert_eq!((first.len(), rest.len()), (10, 31));
    for entry in first.iter().chain(&rest) {
        verifier.push(entry).unwrap();
    }
    let checkpoint = meta.audit_checkpoint().await.unwrap();
    assert_eq!(verifier.finish(checkpoint.as_ref(), &[signer.verifying_key()]).unwrap().entries, 41);

    // The log's origin: renamed only before the first checkpoint; the first
    // claim wins, whatever replicas race.
    assert!(meta.rename_log_origin("first.example/log").await.unwrap());
    let claims = (0..8).map(|n| {
        let meta = meta.clone();
        tokio::spawn(async move { meta.claim_log_origin(&format!("r{n}.example/log")).await.unwrap() })
    });
    for origin in futures_util::future::join_all(claims).await {
        assert_eq!(origin.unwrap(), "first.example/log");
    }
    assert!(meta.put_log_checkpoint(1, "first.example/log\n1\nroot\n").await.unwrap());
    assert!(!meta.rename_log_origin("second.example/log").await.unwrap());
    assert_eq!(meta.claim_log_origin("third.example/log").await.unwrap(), "first.example/log");

    uploads_conformance(&meta).await;
    meta.check().await.unwrap();
}

fn upload_record(token: &TokenId, kind: UploadKind) -> UploadRecord {
    UploadRecord {
        id: UploadId::random(),
        token: token.clone(),
        repository: repo("acme/up"),
        length: 3,
        offset: 3,
        metadata: String::new(),
        digest: None,
        kind,
        segments: Vec::new(),
        created: now(),
        expires: now() + time::Duration::hours(1),
        done: None,
        claimed_by: None,
    }
}

/// Uploads: the per-token bound; finals racing over the same parts claim
/// them once; deleting a final gives its parts back; an offset moves only
/// from where it was.
async fn uploads_conformance(meta: &Arc<Meta>) {
    let (owner, other) = (token(41, "hash-41").info.id, token(42, "hash-42").info.id);
    let parts: Vec<UploadRecord> = (0..3).map(|_| upload_record(&owner, UploadKind::Partial { slot: None })).collect();
    for part in &parts {
        assert_eq!(meta.create_upload(part, 10).await.unwrap(), Created::Created);
    }
    let ids: Vec<UploadId> = parts.iter().map(|p| p.id.clone()).collect();
    let finals: Vec<UploadRecord> =
        (0..6).map(|_| upload_record(&owner, UploadKind::Final { parts: ids.clone() })).collect();
    let racing = finals.iter().map(|f| {
        let (meta, f) = (meta.clone(), f.clone());
        tokio::spawn(async move { meta.create_upload(&f, 100).await.unwrap() })
    });
    let results: Vec<Created> = futures_util::future::join_all(racing).await.into_iter().map(Result::unwrap).collect();
    assert_eq!(results.iter().filter(|r| **r == Created::Created).count(), 1, "{results:?}");
    assert!(results.iter().all(|r| *r == Created::Created || matches!(r, Created::PartTaken(_))), "{results:?}");
    let winner = &finals[results.iter().position(|r| *r == Created::Created).unwrap()];
    for id in &ids {
        assert_eq!(meta.upload(&owner, id).await.unwrap().unwrap().claimed_by.as_ref(), Some(&winner.id));
    }
    // Another token's final cannot claim them; a loser left no record.
    let foreign = upload_record(&other, UploadKind::Final { parts: ids.clone() });
    assert!(matches!(meta.create_upload(&foreign, 10).await.unwrap(), Created::PartTaken(_)));
    let loser = finals.iter().find(|f| f.id != winner.id).unwrap();
    assert!(meta.upload(&owner, &loser.id).await.unwrap().is_none());
    // The winner deleted unfinished: its parts are free for another final.
    assert!(meta.delete_upload(&winner.id).await.unwrap());
    assert!(meta.upload(&owner, &ids[0]).await.unwrap().unwrap().claimed_by.is_none());
    let again = upload_record(&owner, UploadKind::Final { parts: ids.clone() });
    assert_eq!(meta.create_upload(&again, 10).await.unwrap(), Created::Created);
    // A part gone: nothing stored.
    assert!(meta.delete_upload(&again.id).await.unwrap());
    assert!(meta.delete_upload(&ids[2]).await.unwrap());
    let short = upload_record(&owner, UploadKind::Final { parts: ids.clone() });
    assert_eq!(meta.create_upload(&short, 10).await.unwrap(), Created::PartTaken(ids[2].clone()));
    assert!(meta.upload(&owner, &ids[0]).await.unwrap().unwrap().claimed_by.is_none());
    // The per-token bound, and offsets that move only from where they were.
    let mut single = upload_record(&other, UploadKind::Single);
    single.offset = 0;
    assert_eq!(meta.create_upload(&single, 1).await.unwrap(), Created::Created);
    assert_eq!(meta.create_upload(&upload_record(&other, UploadKind::Single), 1).await.unwrap(), Created::TooMany);
    let mut moved = single.clone();
    moved.offset = 2;
    assert_eq!(meta.update_upload(&moved, 0).await.unwrap(), Updated::Done);
    assert_eq!(meta.update_upload(&moved, 0).await.unwrap(), Updated::Moved(2));
    assert!(meta.delete_upload(&single.id).await.unwrap());
    assert_eq!(meta.update_upload(&moved, 2).await.unwrap(), Updated::Gone);
    assert!(!meta.delete_upload(&single.id).await.unwrap());
    let listed = meta.list_uploads(None, 100).await.unwrap();
    assert_eq!(listed.len(), 2, "the two parts left");
}

/// Runs a capability's store-level case on sled and on PostgreSQL.
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

mod links;
mod log;
mod oci;
mod publishers;
mod reclaim;
mod retention;
mod scrub;
mod tags;

pub fn signer() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[9; 32])
}

pub fn event() -> Vec<Event> {
    vec![Event::KeyRotated { keyid: format!("k{}", rand::random::<u32>()) }]
}

async fn open_sled(dir: &std::path::Path) -> Arc<Meta> {
    Arc::new(Meta::open(&MetaConfig::Sled(dir.to_owned()), FreeSpace::Bytes(0)).await.unwrap())
}

async fn open_postgres(db: &PgDatabase) -> Arc<Meta> {
    Arc::new(Meta::open(&MetaConfig::Postgres(db.url.clone()), FreeSpace::Bytes(0)).await.unwrap())
}

#[tokio::test]
async fn meta_conformance_sled() {
    let dir = tempfile::tempdir().unwrap();
    meta_conformance(Meta::open(&MetaConfig::Sled(dir.path().to_owned()), FreeSpace::Bytes(0)).await.unwrap()).await;
}

#[tokio::test]
async fn meta_conformance_postgres() {
    let db = PgDatabase::create();
    meta_conformance(Meta::open(&MetaConfig::Postgres(db.url.clone()), FreeSpace::Bytes(0)).await.unwrap()).await;
}

fn body(bytes: &[u8], chunk: usize) -> amber_server::blobs::BodyStream {
    let chunks: Vec<Result<Bytes, std::io::Error>> =
        bytes.chunks(chunk.max(1)).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    Box::pin(futures_util::stream::iter(chunks))
}

async fn read_all(
    store: &Blobs,
    digest: Digest,
    size: u64,
    range: Option<std::ops::Range<u64>>,
) -> Result<Vec<u8>, BlobError> {
    let mut stream = store.read(digest, size, range).await?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

fn upload(expected: Option<Digest>, limit: u64, announced: Option<usize>) -> Upload {
    Upload { expected, limit, announced: announced.map(|n| n as u64), memory: MemoryBudget::new(64 << 20), gate: None }
}

async fn blob_conformance(store: Blobs) {
    let store = Arc::new(store);
    let limit = 64 << 20;
    // The last size has chunks that straddle S3 part boundaries.
    for (len, seed, chunk) in [
        (0usize, 1u64, 64 << 10),
        (1, 2, 64 << 10),
        (1 << 20, 3, 64 << 10),
        (20 << 20, 4, 64 << 10),
        ((17 << 20) + 5, 6, 1_000_003),
    ] {
        let bytes = data(len, seed);
        let digest = Digest::of(&bytes);
        let written = store.put(upload(Some(digest), limit, Some(len)), body(&bytes, chunk)).await.unwrap();
        assert_eq!((written.digest, written.size, written.stored), (digest, len as u64, Stored::Created));
        let again = store.put(upload(Some(digest), limit, None), body(&bytes, chunk)).await.unwrap();
        assert_eq!(again.stored, Stored::AlreadyPresent);
        assert!(read_all(&store, digest, len as u64, None).await.unwrap() == bytes);
        if len > 10 {
            assert_eq!(read_all(&store, digest, len as u64, Some(3..9)).await.unwrap(), &bytes[3..9]);
        }
    }

    // Unknown digest: computed, then stored under it.
    let bytes = data(9 << 20, 5);
    let written = store.put(upload(None, limit, None), body(&bytes, 100_000)).await.unwrap();
    assert_eq!((written.digest, written.stored), (Digest::of(&bytes), Stored::Created));
    let again = store.put(upload(None, limit, Some(bytes.len())), body(&bytes, 7777)).await.unwrap();
    assert_eq!(again.stored, Stored::AlreadyPresent);

    // The announced length is only a hint: a wrong one changes nothing stored.
    for (len, announced, seed) in [(3 << 20, 9 << 20, 9), (3 << 20, 2 << 20, 10)] {
        let bytes = data(len, seed);
        let digest = Digest::of(&bytes);
        let written = store.put(upload(Some(digest), limit, Some(announced)), body(&bytes, 65536)).await.unwrap();
        assert_eq!((written.digest, written.size), (digest, len as u64));
        assert!(read_all(&store, digest, len as u64, None).await.unwrap() == bytes);
    }

    // Mismatch and oversize leave nothing visible.
    for len in [1000, 10 << 20] {
        let bytes = data(len, 6);
        let digest = Digest::of(&bytes);
        let mut wrong = bytes.clone();
        wrong[0] ^= 1;
        let announced = upload(Some(digest), limit, Some(len));
        assert!(matches!(store.put(announced, body(&wrong, 65536)).await, Err(BlobError::Mismatch { .. })));
        assert!(matches!(
            store.put(upload(Some(digest), (len - 1) as u64, None), body(&bytes, 65536)).await,
            Err(BlobError::TooLarge { .. })
        ));
        assert!(matches!(read_all(&store, digest, len as u64, None).await, Err(BlobError::Missing(_))));
    }

    // A body that breaks off stores nothing.
    let bytes = data(10 << 20, 7);
    let digest = Digest::of(&bytes);
    let broken: amber_server::blobs::BodyStream = Box::pin(
        futures_util::stream::iter(vec![Ok(Bytes::copy_from_slice(&bytes[..9 << 20]))])
            .chain(futures_util::stream::iter(vec![Err(std::io::Error::other("connection reset"))])),
    );
    let announced = upload(Some(digest), limit, Some(bytes.len()));
    assert!(matches!(store.put(announced, broken).await, Err(BlobError::Client(_))));
    assert!(matches!(read_all(&store, digest, bytes.len() as u64, None).await, Err(BlobError::Missing(_))));

    // Concurrent uploads of one blob: all succeed, exactly one creates it.
    let bytes = Arc::new(data(12 << 20, 8));
    let digest = Digest::of(&bytes);
    let racers = (0..6).map(|_| {
        let (store, bytes) = (store.clone(), bytes.clone());
        let announced = upload(Some(digest), limit, Some(bytes.len()));
        tokio::spawn(async move { store.put(announced, body(&bytes, 1 << 20)).await.unwrap().stored })
    });
    let outcomes: Vec<Stored> = futures_util::future::join_all(racers).await.into_iter().map(Result::unwrap).collect();
    assert!(outcomes.contains(&Stored::Created), "{outcomes:?}");
    assert!(read_all(&store, digest, bytes.len() as u64, None).await.unwrap() == *bytes);
    store.check().await.unwrap();
}

#[tokio::test]
async fn blob_conformance_directory() {
    let dir = tempfile::tempdir().unwrap();
    blob_conformance(Blobs::Fs(FsBlobs::open(dir.path().to_owned(), FreeSpace::Bytes(0)).await.unwrap())).await;
}

#[tokio::test]
async fn blob_conformance_s3() {
    let s3 = S3Service::start();
    let bucket = s3.bucket().await;
    // Signed bodies, as over plain HTTP, and unsigned ones, as over HTTPS.
    for sign_payload in [true, false] {
        let prefix = format!("conformance-{sign_payload}");
        let store = S3Blobs::with_client(s3.client(), bucket.clone(), prefix, sign_payload).await.unwrap();
        blob_conformance(Blobs::S3(store)).await;
    }
}
