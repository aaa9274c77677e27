//! Fault points for tests: with `AMBER_FAILPOINT=NAME` in its environment,
//! the process aborts (no cleanup, like `kill -9`) when it reaches the crash
//! point of that name, or the thread that reaches the stall point of that
//! name never returns (a store call stuck for good). A point costs one
//! comparison when unset.

use std::sync::OnceLock;

fn armed(name: &str) -> bool {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    ARMED.get_or_init(|| std::env::var("AMBER_FAILPOINT").ok()).as_deref() == Some(name)
}

/// Aborts the process here if `AMBER_FAILPOINT` names this point.
pub fn hit(name: &str) {
    if armed(name) {
        eprintln!("amberd: failpoint {name} reached; aborting");
        std::process::abort();
    }
}

/// Blocks this thread for good here if `AMBER_FAILPOINT` names this point.
pub fn stall(name: &str) {
    if armed(name) {
        eprintln!("amberd: failpoint {name} reached; this call never returns");
        loop {
            std::thread::park();
        }
    }
}
