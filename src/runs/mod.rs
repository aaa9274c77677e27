//! Runs: retention, reclaim, a scrub pass or fsck done in the background
//! and followed by id. A run is recorded before it starts (one active per
//! kind in the whole store: `RunStore::start_run` refuses a second), says it
//! is alive every [`HEARTBEAT`] with its progress, and records its end with
//! its report, holding its kind's lock (`RunStore::start_run`) throughout. A
//! run whose replica dies releases the lock with it: the next run of the
//! kind records it as abandoned and starts; until then it is shown so once
//! silent for [`STALE`]. What it did is done, each change its own
//! transaction, and the next run goes on.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use amber_core::audit::Actor;
use amber_core::wire::{RunInfo, RunKind, RunProgress, RunState};
use time::OffsetDateTime;

use crate::meta::{MetaError, RunStore, RunnerLock, abandoned};
use crate::progress::Progress;
use crate::state::AppState;

/// How often a run saves its progress (and so says it is alive).
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// A running run silent this long is shown as abandoned (its replica is
/// gone; the next run of its kind records it so).
pub const STALE: Duration = Duration::from_secs(60);

/// How a run names who started it.
pub fn started_by(actor: &Actor) -> String {
    match (&actor.token_name, &actor.token_id) {
        (Some(name), Some(id)) => format!("{name} ({id})"),
        (Some(name), None) => name.clone(),
        (None, Some(id)) => id.to_string(),
        (None, None) => "unknown".into(),
    }
}

/// What a run's work answers: its report, or why it failed.
pub type Outcome = Result<serde_json::Value, String>;

/// A piece of work's result as a run's outcome.
pub fn outcome<T: serde::Serialize, E: std::fmt::Display>(done: Result<T, E>) -> Outcome {
    serde_json::to_value(done.map_err(|e| e.to_string())?).map_err(|e| e.to_string())
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// A time-ordered id: milliseconds since the epoch, then randomness.
fn new_id() -> String {
    let millis = (now().unix_timestamp_nanos() / 1_000_000) as u64;
    format!("{millis:012x}{:08x}", rand::random::<u32>())
}

/// `run` as it stands: a running run silent past [`STALE`] is abandoned.
pub fn settled(run: RunInfo) -> RunInfo {
    let silent = now() - run.updated_at;
    if run.state == RunState::Running && silent > STALE {
        return abandoned(run);
    }
    run
}

fn progress_of(kind: RunKind, progress: &Progress, started_at: OffsetDateTime, at: OffsetDateTime) -> RunProgress {
    let (done, planned, bytes) = progress.read();
    let elapsed = (at - started_at).as_seconds_f64().max(0.0);
    let rate = if elapsed > 0.0 { done as f64 / elapsed } else { 0.0 };
    RunProgress {
        unit: kind.unit().into(),
        done,
        planned,
        bytes,
        elapsed_seconds: (elapsed * 1000.0).round() / 1000.0,
        rate: (rate * 10.0).round() / 10.0,
    }
}

/// A run under way in this process.
pub struct Run {
    info: RunInfo,
    progress: Arc<Progress>,
    state: AppState,
    heartbeat: tokio::task::JoinHandle<()>,
    /// Held until the run's end is recorded: while it is, no other run of
    /// the kind starts, on any replica.
    _lock: RunnerLock,
}

/// What asking to start a run got.
pub enum Begun {
    Started(Run),
    /// Another run of the kind is active (on any replica): this one.
    Active(RunInfo),
}

impl Run {
    /// Records a new run of `kind`, unless one is active.
    pub async fn begin(state: &AppState, kind: RunKind, started_by: &str) -> Result<Begun, MetaError> {
        let at = now();
        let progress = Arc::new(Progress::default());
        let info = RunInfo {
            id: new_id(),
            kind,
            state: RunState::Running,
            started_by: started_by.into(),
            started_at: at,
            updated_at: at,
            finished_at: None,
            progress: progress_of(kind, &progress, at, at),
            report: None,
            error: None,
        };
        // A run of the kind starting or ending this very moment has its
        // lock and no running record: asked again shortly, it has both or neither.
        let mut attempts = 0;
        let lock = loop {
            match state.meta.start_run(&info).await? {
                Ok(lock) => break lock,
                Err(Some(active)) => return Ok(Begun::Active(settled(active))),
                Err(None) if attempts < 20 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(None) => return Err(MetaError::Unavailable("a run of this kind is starting or ending".into())),
            }
        };
        tracing::info!(id = %info.id, %kind, started_by, "run started");
        let heartbeat = tokio::spawn({
            let (state, progress, mut info) = (state.clone(), progress.clone(), info.clone());
            async move {
                let mut tick = tokio::time::interval(HEARTBEAT);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    info.updated_at = now();
                    info.progress = progress_of(info.kind, &progress, info.started_at, info.updated_at);
                    match state.meta.save_run(&info).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(id = %info.id, "a run was found abandoned while it went on");
                            return;
                        }
                        Err(err) => tracing::warn!(id = %info.id, error = %err, "could not save a run's progress"),
                    }
                }
            }
        });
        Ok(Begun::Started(Self { info, progress, state: state.clone(), heartbeat, _lock: lock }))
    }

    pub fn info(&self) -> &RunInfo {
        &self.info
    }

    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// Records the run's end.
    pub async fn end(mut self, outcome: Outcome) -> RunInfo {
        self.heartbeat.abort();
        let _ = (&mut self.heartbeat).await;
        let at = now();
        self.info.updated_at = at;
        self.info.finished_at = Some(at);
        self.info.progress = progress_of(self.info.kind, &self.progress, self.info.started_at, at);
        match outcome {
            Ok(report) => {
                self.info.state = RunState::Done;
                self.info.report = Some(report);
            }
            Err(error) => {
                tracing::warn!(id = %self.info.id, kind = %self.info.kind, %error, "run failed");
                self.info.state = RunState::Failed;
                self.info.error = Some(error);
            }
        }
        // A store that cannot be written now: the run is found abandoned later.
        for attempt in 0..3 {
            match self.state.meta.save_run(&self.info).await {
                Ok(_) => break,
                Err(err) if attempt == 2 => {
                    tracing::warn!(id = %self.info.id, error = %err, "could not record a run's end")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        tracing::info!(id = %self.info.id, kind = %self.info.kind, state = ?self.info.state, "run ended");
        self.info
    }
}

/// A run started in the background.
pub struct Started {
    pub info: RunInfo,
    /// The run as it ended.
    pub ended: tokio::sync::oneshot::Receiver<RunInfo>,
}

/// Starts a run of `kind` doing `work` in the background, unless one is
/// active (then that one, as `Err`). A stop of the server ends it, recorded.
pub async fn spawn<F, Fut>(
    state: &AppState,
    kind: RunKind,
    started_by: &str,
    work: F,
) -> Result<Result<Started, RunInfo>, MetaError>
where
    F: FnOnce(AppState, Arc<Progress>) -> Fut + Send + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let run = match Run::begin(state, kind, started_by).await? {
        Begun::Started(run) => run,
        Begun::Active(active) => return Ok(Err(active)),
    };
    let info = run.info().clone();
    let stop = state.running.stopping();
    let work = work(state.clone(), run.progress());
    let (tell, ended) = tokio::sync::oneshot::channel();
    state.running.track(tokio::spawn(async move {
        let outcome = tokio::select! {
            outcome = work => outcome,
            () = stop.cancelled() => Err("stopped: the server shut down; the next run goes on from where this one \
                                         stopped".into()),
        };
        let _ = tell.send(run.end(outcome).await);
    }));
    Ok(Ok(Started { info, ended }))
}

/// Runs `kind` now on a schedule, and waits for it to end; skipped when a
/// run of the kind is active.
pub async fn scheduled<F, Fut>(state: &AppState, kind: RunKind, started_by: &str, work: F)
where
    F: FnOnce(AppState, Arc<Progress>) -> Fut + Send + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    match spawn(state, kind, started_by, work).await {
        Ok(Ok(started)) => {
            let _ = started.ended.await;
        }
        Ok(Err(active)) => tracing::info!(%kind, id = %active.id, "a scheduled run is skipped: one is under way"),
        Err(err) => tracing::warn!(%kind, error = %err, "a scheduled run could not start; the next one retries"),
    }
}
