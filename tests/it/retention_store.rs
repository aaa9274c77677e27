//! Retention against the metadata stores directly, on sled and PostgreSQL:
//! a property test that a plan and a run at the same moment select the same
//! tags and links over random tag sets, times and holds; and many rounds of
//! a bind racing an unlink of the blob it references.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use amber_core::audit::Actor;
use amber_core::wire::{PolicyInfo, RetentionPolicy};
use amber_core::{Digest, RepoName, RepoPattern, Tag};
use amber_server::config::{Config, Options};
use amber_server::lifecycle::{self, policy};
use amber_server::meta::{AuditBuild, Bound, Hold, NewAudit, NewAuditEntry, Unlink};
use amber_server::state::AppState;
use proptest::prelude::*;
use time::{Duration, OffsetDateTime};

use crate::backends::PgDatabase;
use amber_server::meta::{LinkStore, RetentionStore, TagStore};

/// An `AppState` on sled (in `dir`) or, with `pg`, on PostgreSQL; blobs in `dir`.
async fn state(dir: &std::path::Path, pg: Option<&PgDatabase>) -> AppState {
    let options = Options {
        data_dir: Some(dir.to_path_buf()),
        meta: pg.map(|db| db.url.clone()),
        retention_interval: Some(0),
        ..Default::default()
    };
    AppState::open(Config::resolve(options).unwrap()).await.unwrap()
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc().replace_nanosecond(0).unwrap()
}

/// Audit entries for nothing in particular: the chain needs some.
fn audit() -> AuditBuild {
    let signer = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    Arc::new(move |seq: u64, prev: &str| {
        let body = amber_core::audit::EntryBody {
            seq,
            prev: prev.to_owned(),
            at: now(),
            actor: Actor::operator(),
            event: amber_core::audit::Event::KeyRotated { keyid: "test".into() },
            salt: None,
        };
        let bytes = serde_json::to_vec(&body).unwrap();
        let hash = amber_core::audit::entry_hash(&bytes);
        let checkpoint = amber_core::dsse::sign("t", hash.as_bytes(), &signer);
        NewAudit { entries: vec![NewAuditEntry { bytes, hash, tag_bound: None }], checkpoint }
    })
}

fn envelope(n: u64) -> amber_core::dsse::Envelope {
    amber_core::dsse::sign("t", &n.to_le_bytes(), &ed25519_dalek::SigningKey::from_bytes(&[5; 32]))
}

#[derive(Clone, Debug)]
struct Case {
    /// Per tag: age in seconds, held, and which of the blobs its manifest names.
    tags: Vec<(i64, bool, Vec<usize>)>,
    blobs: usize,
    policy: RetentionPolicy,
}

fn cases() -> impl Strategy<Value = Case> {
    let policy = (
        proptest::option::of(1u32..6),
        proptest::option::of(1u32..30),
        proptest::option::of(proptest::collection::vec(
            prop_oneof![Just("t1*"), Just("*3"), Just("t*0*"), Just("x")],
            1..3,
        )),
        proptest::option::of(0u32..3),
    )
        .prop_map(|(keep_last, keep_days, keep_tags, untagged_days)| RetentionPolicy {
            keep_last,
            keep_days,
            keep_tags: keep_tags.map(|v| v.into_iter().map(String::from).collect()),
            untagged_days,
        });
    (2usize..8)
        .prop_flat_map(move |blobs| {
            let tag = (0i64..40 * 86_400, proptest::bool::weighted(0.2), proptest::collection::vec(0..blobs, 1..4));
            (proptest::collection::vec(tag, 0..14), Just(blobs), policy.clone())
        })
        .prop_map(|(tags, blobs, policy)| Case { tags, blobs, policy })
}

/// Sets the case up in its own repository, then compares a plan and a run
/// at one moment, and checks what the run left behind.
async fn plan_and_run_agree(state: &AppState, n: u64, case: Case) -> Result<(), TestCaseError> {
    let repo: RepoName = format!("prop/case-{n}").parse().unwrap();
    let base = now();
    let digests: Vec<(Digest, u64)> =
        (0..case.blobs).map(|b| (Digest::of(format!("{n}-{b}").as_bytes()), 10 + b as u64)).collect();
    for (digest, size) in &digests {
        state.meta.link_blob(&repo, digest, *size, None, audit()).await.unwrap();
    }
    let mut held = BTreeSet::new();
    for (i, (age, hold, files)) in case.tags.iter().enumerate() {
        let tag: Tag = format!("t{i}").parse().unwrap();
        let files: Vec<(Digest, u64)> = files.iter().map(|&b| digests[b]).collect();
        let bound = state
            .meta
            .bind_tag(
                &repo,
                &tag,
                &Digest::of(format!("m-{n}-{i}").as_bytes()),
                &envelope(n * 100 + i as u64).into(),
                &files,
                base - Duration::seconds(*age),
                audit(),
            )
            .await
            .unwrap();
        prop_assert!(matches!(bound, Bound::Created));
        if *hold {
            let hold = Hold { reason: "prop".into(), at: base, by: Actor::operator() };
            state.meta.hold_tag(&repo, &tag, &hold, audit()).await.unwrap();
            held.insert(tag.to_string());
        }
    }
    let policy = policy::normalise(case.policy.clone()).unwrap();
    let info = PolicyInfo {
        scope: RepoPattern::Exact(repo.clone()),
        digest: policy::digest(&policy),
        policy,
        updated_at: base,
    };
    state.meta.put_policy(&info, audit()).await.unwrap();

    // A moment after every link was made, so untagged_days 0 unlinks them.
    let at = base + Duration::seconds(5);
    let plan = lifecycle::plan_scope_at(state, &RepoPattern::Exact(repo.clone()), at).await.unwrap();
    let report = lifecycle::run_all_at(state, &Actor::operator(), at, &Default::default()).await.unwrap();
    let mine = |r: &amber_core::wire::RetentionPlan| {
        let expire: Vec<_> = r.expire.iter().filter(|e| e.repository == repo).cloned().collect();
        let unlink: Vec<_> = r.unlink.iter().filter(|u| u.repository == repo).cloned().collect();
        (expire, unlink)
    };
    prop_assert_eq!(mine(&plan), mine(&report), "plan and run at one moment");

    // What is left: held tags live; without keep rules, every tag live; no
    // live tag lost a blob; a second run at that moment has nothing to do.
    let view = state.meta.retention_view(&repo).await.unwrap();
    let expired: BTreeSet<String> = view.tags.iter().filter(|t| t.expired).map(|t| t.tag.to_string()).collect();
    prop_assert!(expired.is_disjoint(&held));
    if !policy::has_keep_rule(&info.policy) {
        prop_assert!(expired.is_empty());
    }
    if let Some(n) = info.policy.keep_last {
        prop_assert!(view.tags.iter().filter(|t| !t.expired).count() >= (n as usize).min(case.tags.len()));
    }
    let linked: HashMap<Digest, u64> = view.links.iter().map(|l| (l.digest, l.size)).collect();
    for (i, (_, _, files)) in case.tags.iter().enumerate() {
        if !expired.contains(&format!("t{i}")) {
            for &b in files {
                prop_assert!(linked.contains_key(&digests[b].0), "live tag t{i} lost blob {b}");
            }
        }
    }
    let again = lifecycle::run_all_at(state, &Actor::operator(), at, &Default::default()).await.unwrap();
    prop_assert_eq!(mine(&again), (vec![], vec![]));
    Ok(())
}

fn run_property(pg: bool, count: u32) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = pg.then(PgDatabase::create);
    let state = runtime.block_on(state(dir.path(), db.as_ref()));
    let counter = std::sync::atomic::AtomicU64::new(0);
    let mut runner =
        proptest::test_runner::TestRunner::new(ProptestConfig { cases: count, ..ProptestConfig::default() });
    runner
        .run(&cases(), |case| {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            runtime.block_on(plan_and_run_agree(&state, n, case))
        })
        .unwrap();
}

#[test]
fn a_plan_and_a_run_select_the_same_tags_and_links_on_sled() {
    run_property(false, 64);
}

#[test]
fn a_plan_and_a_run_select_the_same_tags_and_links_on_postgres() {
    run_property(true, 24);
}

/// Rounds of a bind of a manifest naming a blob, racing an unlink of that
/// blob: exactly one wins, and a bound tag's blob is always linked.
async fn bind_races_unlink(pg: bool, rounds: u64) {
    let dir = tempfile::tempdir().unwrap();
    let db = pg.then(PgDatabase::create);
    let state = state(dir.path(), db.as_ref()).await;
    let repo: RepoName = "race/store".parse().unwrap();
    let far = now() + Duration::days(1);
    let (mut bound, mut unlinked) = (0, 0);
    for round in 0..rounds {
        let digest = Digest::of(&round.to_le_bytes());
        state.meta.link_blob(&repo, &digest, 7, None, audit()).await.unwrap();
        let tag: Tag = format!("r{round}").parse().unwrap();
        let manifest = Digest::of(format!("m{round}").as_bytes());
        let envelope = envelope(round);
        let files = [(digest, 7u64)];
        // A little jitter on either side, so both orders happen on both stores.
        let (first, second) = (rand::random::<u64>() % 400, rand::random::<u64>() % 400);
        let (bind, unlink) = tokio::join!(
            async {
                tokio::time::sleep(std::time::Duration::from_micros(first)).await;
                state.meta.bind_tag(&repo, &tag, &manifest, &envelope.clone().into(), &files, now(), audit()).await
            },
            async {
                tokio::time::sleep(std::time::Duration::from_micros(second)).await;
                state.meta.unlink_blob(&repo, &digest, far, audit()).await
            },
        );
        let linked = state.meta.blob_size(&repo, &digest).await.unwrap().is_some();
        match (bind.unwrap(), unlink.unwrap()) {
            (Bound::Created, Unlink::Referenced) => {
                assert!(linked, "round {round}");
                bound += 1;
            }
            (Bound::BlobsGone(gone), Unlink::Unlinked) => {
                assert_eq!(gone, vec![digest]);
                assert!(!linked);
                unlinked += 1;
            }
            other => panic!("round {round}: {other:?}"),
        }
    }
    println!("pg={pg}: {bound} binds first, {unlinked} unlinks first, in {rounds} rounds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bind_racing_an_unlink_has_one_outcome_on_sled() {
    bind_races_unlink(false, 400).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bind_racing_an_unlink_has_one_outcome_on_postgres() {
    bind_races_unlink(true, 200).await;
}
