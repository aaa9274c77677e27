//! Calls into a synchronous store that may hang (sled, under a full disk or
//! a stalled flush): each runs on the blocking pool, never on an async worker,
//! and is waited for at most [`CALL_TIMEOUT`]. A call past it fails with
//! [`MetaError::Unavailable`], and while any call is stuck new calls fail at
//! once rather than pile up blocking threads behind it. A call still stuck
//! after [`WEDGED_AFTER`] means the store cannot recover: the process exits
//! non-zero so that a supervisor restarts it, instead of hanging for good.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::MetaError;

/// Longest a request waits for one store call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a call may stay stuck past its timeout before the process exits.
pub const WEDGED_AFTER: Duration = Duration::from_secs(60);
/// The exit status when the store is wedged (`EX_SOFTWARE`).
pub const WEDGED_EXIT: i32 = 70;

#[derive(Clone, Default)]
pub struct Watchdog {
    stuck: Arc<AtomicUsize>,
}

impl Watchdog {
    /// True while a call has outlived its timeout and not yet returned.
    pub fn stuck(&self) -> bool {
        self.stuck.load(Ordering::Acquire) > 0
    }

    /// Runs `call` on the blocking pool, waiting at most [`CALL_TIMEOUT`].
    pub async fn run<T: Send + 'static>(
        &self,
        what: &'static str,
        call: impl FnOnce() -> Result<T, MetaError> + Send + 'static,
    ) -> Result<T, MetaError> {
        self.wait(what, || tokio::task::spawn_blocking(call)).await
    }

    /// Starts a call elsewhere (`start` returns what answers it: a blocking
    /// task, a reply from a thread) and waits at most [`CALL_TIMEOUT`] for
    /// it; nothing is started while a call is stuck.
    pub async fn wait<T, E, F>(&self, what: &'static str, start: impl FnOnce() -> F) -> Result<T, MetaError>
    where
        T: Send + 'static,
        E: std::fmt::Display,
        F: Future<Output = Result<Result<T, MetaError>, E>> + Send + Unpin + 'static,
    {
        if self.stuck() {
            return Err(MetaError::Unavailable("the metadata store is not answering".into()));
        }
        let mut handle = start();
        match tokio::time::timeout(CALL_TIMEOUT, &mut handle).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(MetaError::Store(format!("{what}: {join}"))),
            Err(_) => {
                tracing::error!(call = what, "a metadata store call did not return in time");
                self.stuck.fetch_add(1, Ordering::AcqRel);
                let stuck = self.stuck.clone();
                tokio::spawn(async move {
                    if tokio::time::timeout(WEDGED_AFTER, handle).await.is_err() {
                        tracing::error!(
                            call = what,
                            "the metadata store has not answered for {}s; exiting so that a supervisor restarts amberd",
                            (CALL_TIMEOUT + WEDGED_AFTER).as_secs()
                        );
                        std::process::exit(WEDGED_EXIT);
                    }
                    stuck.fetch_sub(1, Ordering::AcqRel);
                    tracing::info!(call = what, "a stuck metadata store call returned");
                });
                Err(MetaError::Unavailable(format!("{what} did not return within {}s", CALL_TIMEOUT.as_secs())))
            }
        }
    }
}
