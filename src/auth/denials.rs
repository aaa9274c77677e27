//! Denied requests in the audit log, coalesced. The first denial of a kind
//! (same token, method, route, status and reason) is recorded at once; its
//! repeats within the next second are counted and recorded as one entry with
//! that count once the second is over (or at shutdown). A client hammering
//! with a bad token thus appends about one entry per second per kind instead
//! of one durable entry per request (1 694 per second were measured before).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use amber_core::audit::{Actor, Event};

use crate::state::AppState;

/// How long repeats of a denial are gathered into one entry.
pub const WINDOW: Duration = Duration::from_secs(1);
/// Kinds tracked at once. Kinds are few (routes are matched templates and
/// token ids are real tokens); past this, denials are recorded one by one.
const MAX_KINDS: usize = 1024;

#[derive(Clone, PartialEq, Eq, Hash)]
struct Kind {
    token_id: Option<String>,
    method: String,
    route: String,
    status: u16,
    reason: String,
}

struct Window {
    actor: Actor,
    opened: Instant,
    repeats: u64,
}

#[derive(Default)]
pub struct Denials {
    open: Mutex<HashMap<Kind, Window>>,
}

impl Denials {
    /// Records a denial, or counts it as a repeat of one recorded less than
    /// [`WINDOW`] ago.
    pub async fn record(
        &self,
        state: &AppState,
        actor: Actor,
        method: String,
        route: String,
        status: u16,
        reason: String,
    ) {
        let kind =
            Kind { token_id: actor.token_id.as_ref().map(|t| t.as_str().to_owned()), method, route, status, reason };
        let first = {
            let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
            match open.get_mut(&kind) {
                Some(window) => {
                    window.repeats += 1;
                    false
                }
                None => {
                    if open.len() < MAX_KINDS {
                        open.insert(kind.clone(), Window { actor: actor.clone(), opened: Instant::now(), repeats: 0 });
                    }
                    true
                }
            }
        };
        if first {
            write(state, actor, kind, 1).await;
        }
    }

    /// Records the repeats of every window that has closed, or of every window
    /// at all when `everything` (at shutdown).
    pub async fn flush(&self, state: &AppState, everything: bool) {
        let closed: Vec<(Kind, Window)> = {
            let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            open.extract_if(|_, w| everything || now.duration_since(w.opened) >= WINDOW).collect()
        };
        for (kind, window) in closed {
            if window.repeats > 0 {
                write(state, window.actor, kind, window.repeats).await;
            }
        }
    }
}

async fn write(state: &AppState, actor: Actor, kind: Kind, count: u64) {
    let Kind { method, route, status, reason, .. } = kind;
    let event = Event::RequestDenied { method, route, status, reason, count };
    if let Err(err) = crate::audit::record(&state.meta, &state.signer, actor, event).await {
        tracing::error!(error = %err, "recording a denied request in the audit log failed");
    }
}
