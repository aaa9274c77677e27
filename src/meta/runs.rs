//! Runs: retention, reclaim, scrub passes and fsck as jobs. One active run
//! per kind in the whole store (every replica asks here), each run's record
//! kept with its progress, its end and its report.

use std::future::Future;

use amber_core::wire::{RunInfo, RunKind};

use super::{Meta, MetaError, RunnerLock};

/// Runs kept of each kind: the oldest finished ones beyond this are
/// forgotten as new ones start (the continuous scrub makes one a pass).
pub const RUNS_KEPT: usize = 200;

/// The error of a run found running whose replica stopped saying it was alive.
pub fn abandoned(mut run: RunInfo) -> RunInfo {
    run.state = amber_core::wire::RunState::Failed;
    run.error = Some(
        "abandoned: the replica running it stopped (a crash or a kill); the next run of its kind goes on from \
         where it stopped"
            .into(),
    );
    run
}

pub trait RunStore {
    /// Records `run` (running) as the active run of its kind, unless
    /// another is: then that one is the answer (`None` when its runner is
    /// starting or ending this very moment). The lock answered is held
    /// for as long as the run goes (on PostgreSQL a session lock, released
    /// by a crash too); a run recorded as running whose lock is free was
    /// abandoned, and is recorded so first.
    fn start_run(
        &self,
        run: &RunInfo,
    ) -> impl Future<Output = Result<Result<RunnerLock, Option<RunInfo>>, MetaError>> + Send;

    /// Saves a running run's progress, or its end; false (nothing saved)
    /// when it is no longer running (found abandoned meanwhile).
    fn save_run(&self, run: &RunInfo) -> impl Future<Output = Result<bool, MetaError>> + Send;

    fn run(&self, id: &str) -> impl Future<Output = Result<Option<RunInfo>, MetaError>> + Send;

    /// The most recent runs, newest first, of `kind` or of every kind.
    fn runs(&self, kind: Option<RunKind>, limit: usize)
    -> impl Future<Output = Result<Vec<RunInfo>, MetaError>> + Send;
}

impl RunStore for Meta {
    async fn start_run(&self, run: &RunInfo) -> Result<Result<RunnerLock, Option<RunInfo>>, MetaError> {
        dispatch!(self, s => s.start_run(run))
    }

    async fn save_run(&self, run: &RunInfo) -> Result<bool, MetaError> {
        dispatch!(self, s => s.save_run(run))
    }

    async fn run(&self, id: &str) -> Result<Option<RunInfo>, MetaError> {
        dispatch!(self, s => s.run(id))
    }

    async fn runs(&self, kind: Option<RunKind>, limit: usize) -> Result<Vec<RunInfo>, MetaError> {
        dispatch!(self, s => s.runs(kind, limit))
    }
}
