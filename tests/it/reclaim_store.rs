//! Deterministic interleavings of an upload, a reclaim run, a tag bind and
//! an unlink of one digest whose bytes wait for reclaim, run against the real
//! metadata stores and blob directory, step by step in every order (sled) or
//! in hundreds of random orders (PostgreSQL): every acknowledged link and
//! every bound tag's blob stays readable, with the right bytes.

use std::collections::VecDeque;
use std::sync::Arc;

use amber_core::audit::Actor;
use amber_core::{Digest, RepoName, Tag};
use amber_server::admission::MemoryBudget;
use amber_server::blobs::{BlobStore, Upload};
use amber_server::config::{Config, Options};
use amber_server::meta::{AuditBuild, Bound, Lease, NewAudit, NewAuditEntry};
use amber_server::state::AppState;
use bytes::Bytes;
use futures_util::StreamExt;
use time::{Duration, OffsetDateTime};

use crate::backends::PgDatabase;
use amber_server::meta::{LinkStore, ReclaimStore, RetentionStore, ScrubStore, TagStore};

async fn state(dir: &std::path::Path, pg: Option<&PgDatabase>) -> AppState {
    let options = Options {
        data_dir: Some(dir.to_path_buf()),
        meta: pg.map(|db| db.url.clone()),
        retention_interval: Some(0),
        reclaim_interval: Some(0),
        ..Default::default()
    };
    AppState::open(Config::resolve(options).unwrap()).await.unwrap()
}

fn audit() -> AuditBuild {
    let signer = ed25519_dalek::SigningKey::from_bytes(&[4; 32]);
    Arc::new(move |seq: u64, prev: &str| {
        let body = amber_core::audit::EntryBody {
            seq,
            prev: prev.to_owned(),
            at: OffsetDateTime::now_utc(),
            actor: Actor::operator(),
            event: amber_core::audit::Event::KeyRotated { keyid: "interleaving".into() },
            salt: None,
        };
        let bytes = serde_json::to_vec(&body).unwrap();
        let hash = amber_core::audit::entry_hash(&bytes);
        let checkpoint = amber_core::dsse::sign("t", hash.as_bytes(), &signer);
        NewAudit { entries: vec![NewAuditEntry { bytes, hash, tag_bound: None }], checkpoint }
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Actor4 {
    Upload,
    Reclaim,
    Bind,
    Unlink,
}

const STEPS: [(Actor4, usize); 4] = [(Actor4::Upload, 3), (Actor4::Reclaim, 4), (Actor4::Bind, 1), (Actor4::Unlink, 1)];

/// Every order of the actors' steps (each actor's own steps in order).
fn all_schedules() -> Vec<Vec<Actor4>> {
    fn go(left: &mut [(Actor4, usize); 4], current: &mut Vec<Actor4>, out: &mut Vec<Vec<Actor4>>) {
        if left.iter().all(|(_, n)| *n == 0) {
            out.push(current.clone());
            return;
        }
        for i in 0..4 {
            if left[i].1 > 0 {
                left[i].1 -= 1;
                current.push(left[i].0);
                go(left, current, out);
                current.pop();
                left[i].1 += 1;
            }
        }
    }
    let mut out = Vec::new();
    go(&mut STEPS.clone(), &mut Vec::new(), &mut out);
    out
}

struct World {
    n: u64,
    digest: Digest,
    bytes: Bytes,
    b: RepoName,
    // Upload
    upload_step: usize,
    lease: Option<Lease>,
    acked_link: bool,
    // Reclaim
    reclaim_step: usize,
    marked: Vec<Digest>,
    // Bind
    bound: bool,
    bind_done: bool,
    unlink_done: bool,
}

async fn put(state: &AppState, bytes: &Bytes) {
    let upload = Upload {
        expected: Some(Digest::of(bytes)),
        limit: 1 << 20,
        announced: None,
        memory: MemoryBudget::new(1 << 20),
        gate: None,
    };
    let body = futures_util::stream::iter([Ok::<_, std::io::Error>(bytes.clone())]).boxed();
    state.blobs.put(upload, body).await.unwrap();
}

impl World {
    async fn new(state: &AppState, n: u64) -> Self {
        let bytes = Bytes::from(crate::harness::data(64, 7_000_000 + n));
        let digest = Digest::of(&bytes);
        let (a, b): (RepoName, RepoName) = (format!("s{n}/a").parse().unwrap(), format!("s{n}/b").parse().unwrap());
        // The digest's bytes are stored and wait for reclaim: linked once, unlinked.
        put(state, &bytes).await;
        state.meta.link_blob(&a, &digest, 64, None, audit()).await.unwrap();
        let far = OffsetDateTime::now_utc() + Duration::days(1);
        state.meta.unlink_blob(&a, &digest, far, audit()).await.unwrap();
        Self {
            n,
            digest,
            bytes,
            b,
            upload_step: 0,
            lease: None,
            acked_link: false,
            reclaim_step: 0,
            marked: Vec::new(),
            bound: false,
            bind_done: false,
            unlink_done: false,
        }
    }

    fn done(&self, actor: Actor4) -> bool {
        match actor {
            Actor4::Upload => self.upload_step == 3,
            Actor4::Reclaim => self.reclaim_step == 4,
            Actor4::Bind => self.bind_done,
            Actor4::Unlink => self.unlink_done,
        }
    }

    /// One step of `actor`; an upload refused a lease stays at that step.
    async fn step(&mut self, state: &AppState, actor: Actor4) {
        let cutoff = OffsetDateTime::now_utc() + Duration::seconds(60);
        match actor {
            Actor4::Upload => match self.upload_step {
                0 => {
                    if let Some(lease) = state.meta.begin_promote(&self.digest).await.unwrap() {
                        self.lease = Some(lease);
                        self.upload_step = 1;
                    }
                }
                1 => {
                    put(state, &self.bytes).await;
                    self.upload_step = 2;
                }
                2 => {
                    state.meta.link_blob(&self.b, &self.digest, 64, self.lease.as_ref(), audit()).await.unwrap();
                    self.acked_link = true;
                    self.upload_step = 3;
                }
                _ => {}
            },
            Actor4::Reclaim => {
                match self.reclaim_step {
                    0 => {
                        let candidates = state.meta.reclaim_candidates(cutoff, 100_000).await.unwrap();
                        self.marked = candidates.into_iter().map(|c| c.digest).filter(|d| *d == self.digest).collect();
                    }
                    1 => {
                        let mut marked = Vec::new();
                        for d in &self.marked {
                            if state.meta.mark_reclaim(d, cutoff).await.unwrap() {
                                marked.push(*d);
                            }
                        }
                        self.marked = marked;
                    }
                    2 => {
                        for d in &self.marked {
                            state.blobs.delete(d).await.unwrap();
                        }
                    }
                    3 => state.meta.finish_reclaim(&self.marked, audit()).await.unwrap(),
                    _ => {}
                }
                self.reclaim_step += 1;
            }
            Actor4::Bind => {
                let tag: Tag = "t".parse().unwrap();
                let manifest = Digest::of(format!("manifest {}", self.n).as_bytes());
                let envelope = amber_core::dsse::sign(
                    "t",
                    &self.n.to_le_bytes(),
                    &ed25519_dalek::SigningKey::from_bytes(&[6; 32]),
                );
                let bound = state
                    .meta
                    .bind_tag(
                        &self.b,
                        &tag,
                        &manifest,
                        &envelope.into(),
                        &[(self.digest, 64)],
                        OffsetDateTime::now_utc(),
                        audit(),
                    )
                    .await
                    .unwrap();
                self.bound = matches!(bound, Bound::Created);
                self.bind_done = true;
            }
            Actor4::Unlink => {
                let far = OffsetDateTime::now_utc() + Duration::days(1);
                state.meta.unlink_blob(&self.b, &self.digest, far, audit()).await.unwrap();
                self.unlink_done = true;
            }
        }
    }

    async fn readable(&self, state: &AppState) -> bool {
        let Ok(mut stream) = state.blobs.read(self.digest, 64, None).await else { return false };
        let mut got = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => got.extend_from_slice(&c),
                Err(_) => return false,
            }
        }
        got == self.bytes
    }
}

/// Runs `schedule`, then lets every actor finish, then checks the invariants.
async fn run_schedule(state: &AppState, n: u64, schedule: &[Actor4]) {
    let mut world = World::new(state, n).await;
    let mut queue: VecDeque<Actor4> = schedule.iter().copied().collect();
    let mut turns = 0;
    while let Some(actor) = queue.pop_front() {
        turns += 1;
        assert!(turns < 200, "schedule {schedule:?} does not end");
        if world.done(actor) {
            continue;
        }
        world.step(state, actor).await;
        if !world.done(actor) && !queue.contains(&actor) {
            // Its scheduled turns are used up: it goes on at the end.
            queue.push_back(actor);
        }
    }
    let linked = state.meta.blob_size(&world.b, &world.digest).await.unwrap().is_some();
    if world.acked_link && linked {
        assert!(world.readable(state).await, "schedule {schedule:?}: an acknowledged link lost its bytes");
    }
    if world.bound {
        assert!(linked, "schedule {schedule:?}: a bound tag's blob was unlinked");
        assert!(world.readable(state).await, "schedule {schedule:?}: a bound tag's blob lost its bytes");
    }
    assert!(world.acked_link, "the upload always ends");
}

#[tokio::test]
async fn every_interleaving_keeps_acknowledged_blobs_readable_on_sled() {
    let parent = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" };
    let dir = tempfile::tempdir_in(parent).unwrap();
    let state = state(dir.path(), None).await;
    let schedules = all_schedules();
    assert_eq!(schedules.len(), 2520);
    for (n, schedule) in schedules.iter().enumerate() {
        run_schedule(&state, n as u64, schedule).await;
    }
}

#[tokio::test]
async fn random_interleavings_keep_acknowledged_blobs_readable_on_postgres() {
    let parent = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" };
    let dir = tempfile::tempdir_in(parent).unwrap();
    let db = PgDatabase::create();
    let state = state(dir.path(), Some(&db)).await;
    let schedules = all_schedules();
    for n in 0..400u64 {
        let schedule = &schedules[rand::random::<u64>() as usize % schedules.len()];
        run_schedule(&state, n, schedule).await;
    }
}

/// The scrub records when each blob was last found right, on both stores.
#[tokio::test]
async fn the_time_each_blob_was_last_verified_is_kept() {
    let db = PgDatabase::create();
    for pg in [None, Some(&db)] {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path(), pg).await;
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        assert_eq!(state.meta.last_verified(&a).await.unwrap(), None);
        let first = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() - Duration::hours(1);
        state.meta.record_verified(&[a, b], first).await.unwrap();
        let later = first + Duration::minutes(30);
        state.meta.record_verified(&[b], later).await.unwrap();
        assert_eq!(state.meta.last_verified(&a).await.unwrap(), Some(first));
        assert_eq!(state.meta.last_verified(&b).await.unwrap(), Some(later));
    }
}
