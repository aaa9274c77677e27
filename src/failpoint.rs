//! Crash points for tests: with `AMBER_FAILPOINT=NAME` in its environment,
//! the process aborts (no cleanup, like `kill -9`) when it reaches the point
//! of that name. A point costs one comparison when unset.

use std::sync::OnceLock;

/// Aborts the process here if `AMBER_FAILPOINT` names this point.
pub fn hit(name: &str) {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    if ARMED.get_or_init(|| std::env::var("AMBER_FAILPOINT").ok()).as_deref() == Some(name) {
        eprintln!("amberd: failpoint {name} reached; aborting");
        std::process::abort();
    }
}
