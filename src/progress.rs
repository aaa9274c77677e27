//! How far a long run is (counted as it goes, read by its heartbeat), and
//! the runs this process has under way, so that a stop ends them and says so.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Counts of one run; every call is a relaxed atomic add.
#[derive(Debug)]
pub struct Progress {
    done: AtomicU64,
    /// `u64::MAX` while unknown.
    planned: AtomicU64,
    bytes: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Self { done: AtomicU64::new(0), planned: AtomicU64::new(u64::MAX), bytes: AtomicU64::new(0) }
    }
}

impl Progress {
    pub fn done(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    pub fn plan(&self, n: u64) {
        self.planned.store(n, Ordering::Relaxed);
    }

    pub fn bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// Done, planned (if known), bytes.
    pub fn read(&self) -> (u64, Option<u64>, u64) {
        let planned = self.planned.load(Ordering::Relaxed);
        (
            self.done.load(Ordering::Relaxed),
            (planned != u64::MAX).then_some(planned),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

/// The runs under way in this process.
#[derive(Default)]
pub struct Running {
    stop: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Running {
    /// Cancelled when the server stops.
    pub fn stopping(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Keeps `task` (a run's) to wait for at the stop.
    pub fn track(&self, task: JoinHandle<()>) {
        let mut tasks = self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }

    /// Stops every run and waits (at most `within`) for each to record that it stopped.
    pub async fn stop(&self, within: Duration) {
        self.stop.cancel();
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let _ = tokio::time::timeout(within, futures_util::future::join_all(tasks)).await;
    }
}
