//! Denied requests in the audit log, coalesced. Denials are grouped by who
//! asked (the token, or the client's address when there is no valid token)
//! and kind (method, route, status and reason, whatever repository the
//! request named). The first of a group is recorded at once; its repeats
//! within the next second are counted and recorded as one entry, with at
//! most [`MAX_REPOSITORIES`] of the repositories they named, once the second
//! is over (or at shutdown). So one client adds at most about one entry per
//! second per kind, however it varies its requests: 3 600 entries a second
//! were measured before, from one token naming a new repository each time.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use amber_core::audit::{Actor, Event};

use crate::error::bounded;
use crate::meta::Meta;
use crate::signing::Signer;
use std::sync::Arc;

/// How long repeats of a denial are gathered into one entry.
pub const WINDOW: Duration = Duration::from_secs(1);
/// Groups tracked at once. Past this, every further denial joins one
/// overflow group per status, so the entries written stay bounded.
const MAX_GROUPS: usize = 1024;
/// Repositories named in one entry at most.
pub const MAX_REPOSITORIES: usize = 16;

/// Who was denied.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Who {
    Token(String),
    Client(Option<IpAddr>),
    /// Everyone past [`MAX_GROUPS`].
    Overflow,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Group {
    who: Who,
    method: String,
    route: String,
    status: u16,
    reason: String,
}

struct Window {
    actor: Actor,
    opened: Instant,
    repeats: u64,
    repositories: BTreeSet<String>,
}

/// One denied request, as the middleware saw it.
pub struct Denial {
    pub actor: Actor,
    pub client: Option<IpAddr>,
    pub method: String,
    pub route: String,
    pub status: u16,
    pub reason: String,
    pub repository: Option<String>,
}

#[derive(Default)]
pub struct Denials {
    open: Mutex<HashMap<Group, Window>>,
}

impl Denials {
    /// Records a denial, or counts it as a repeat of one recorded less than
    /// [`WINDOW`] ago.
    pub async fn record(&self, meta: &Meta, signer: &Arc<Signer>, denial: Denial) {
        let who = match &denial.actor.token_id {
            Some(id) => Who::Token(id.as_str().to_owned()),
            None => Who::Client(denial.client),
        };
        let mut group = Group {
            who,
            method: denial.method,
            route: denial.route,
            status: denial.status,
            reason: bounded(&denial.reason),
        };
        let repository = denial.repository.as_deref().map(bounded);
        let first = {
            let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
            if !open.contains_key(&group) && open.len() >= MAX_GROUPS {
                group = Group {
                    who: Who::Overflow,
                    method: "*".into(),
                    route: "*".into(),
                    status: group.status,
                    reason: "denials of more clients and kinds than are tracked at once".into(),
                };
            }
            match open.get_mut(&group) {
                Some(window) => {
                    window.repeats += 1;
                    if let Some(repository) = &repository
                        && window.repositories.len() < MAX_REPOSITORIES
                    {
                        window.repositories.insert(repository.clone());
                    }
                    false
                }
                None => {
                    let window = Window {
                        actor: denial.actor.clone(),
                        opened: Instant::now(),
                        repeats: 0,
                        repositories: BTreeSet::new(),
                    };
                    open.insert(group.clone(), window);
                    true
                }
            }
        };
        if first {
            write(meta, signer, denial.actor, group, 1, repository.into_iter().collect()).await;
        }
    }

    /// Records the repeats of every window that has closed, or of every window
    /// at all when `everything` (at shutdown).
    pub async fn flush(&self, meta: &Meta, signer: &Arc<Signer>, everything: bool) {
        let closed: Vec<(Group, Window)> = {
            let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            open.extract_if(|_, w| everything || now.duration_since(w.opened) >= WINDOW).collect()
        };
        for (group, window) in closed {
            if window.repeats > 0 {
                write(meta, signer, window.actor, group, window.repeats, window.repositories.into_iter().collect())
                    .await;
            }
        }
    }
}

async fn write(meta: &Meta, signer: &Arc<Signer>, actor: Actor, group: Group, count: u64, repositories: Vec<String>) {
    let Group { who, method, route, status, reason } = group;
    let client = match who {
        Who::Client(address) => address.map(|a| a.to_string()),
        Who::Token(_) | Who::Overflow => None,
    };
    let event = Event::RequestDenied { method, route, status, reason, count, repositories, client };
    if let Err(err) = crate::audit::record(meta, signer, actor, event).await {
        tracing::error!(error = %err, "recording a denied request in the audit log failed");
    }
}

#[cfg(test)]
mod tests {
    use super::bounded;

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        assert_eq!(bounded("short"), "short");
        let long = "é".repeat(300);
        let cut = bounded(&long);
        assert!(cut.len() <= 256 + '…'.len_utf8());
        assert!(cut.ends_with('…'));
    }
}
