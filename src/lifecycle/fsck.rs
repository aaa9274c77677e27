//! `amberd fsck`: the store checked against its metadata. The counters must
//! be what a recount finds (with `repair`, they are set to it). Every linked digest
//! must have stored bytes of its size (and, with `verify`, bytes that hash to
//! it); every stored object must be linked or waiting for reclaim; nothing
//! may be quarantined. With `repair`, linked bytes found wrong or gone are
//! quarantined (so that clients send them again, which heals them), stored
//! objects nothing links are recorded as waiting and those past the grace
//! deleted by a reclaim run; nothing linked is ever deleted.
//!
//! Both lists come in digest order, so they are walked side by side.

use amber_core::Digest;
use amber_core::audit::Actor;
use futures_util::StreamExt;

use super::reclaim;
use crate::blobs::{BlobError, BlobStore, Object};
use crate::meta::ScrubStore;
use crate::meta::{LinkStore, ReclaimStore, StatsStore};
use crate::progress::Progress;
use crate::state::AppState;

const PAGE: usize = 1000;

/// One thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Linked, with no stored bytes.
    Missing(Digest),
    /// Stored bytes of another size than linked.
    WrongSize {
        digest: Digest,
        linked: u64,
        stored: u64,
    },
    /// Stored bytes that do not hash to their digest (`verify`).
    Mismatch(Digest),
    /// Stored, linked nowhere, and not waiting for reclaim.
    Orphan(Digest),
    Quarantined(Digest),
    /// A counter that is not what a recount finds.
    Counter(String),
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing(d) => write!(f, "missing: {d}: linked, but no bytes are stored"),
            Self::WrongSize { digest, linked, stored } => {
                write!(f, "wrong size: {digest}: linked as {linked} bytes, stored as {stored}")
            }
            Self::Mismatch(d) => write!(f, "mismatch: {d}: the stored bytes do not hash to it"),
            Self::Orphan(d) => write!(f, "orphan: {d}: stored, linked nowhere, not waiting for reclaim"),
            Self::Quarantined(d) => write!(f, "quarantined: {d}: an upload of the same bytes heals it"),
            Self::Counter(what) => write!(f, "counter: {what}"),
        }
    }
}

#[derive(Debug, Default, serde::Serialize)]
pub struct FsckReport {
    pub linked: u64,
    pub stored: u64,
    pub verified: u64,
    pub waiting: u64,
    #[serde(serialize_with = "as_text")]
    pub faults: Vec<Fault>,
    /// With `repair`: what the reclaim run deleted.
    pub reclaimed: u64,
    /// With `repair`: counters set to their recount.
    pub counters_repaired: u64,
}

fn as_text<S: serde::Serializer>(faults: &[Fault], to: S) -> Result<S::Ok, S::Error> {
    to.collect_seq(faults.iter().map(ToString::to_string))
}

/// Pages of one digest-ordered list, one item at a time.
struct Pages<T> {
    page: std::vec::IntoIter<T>,
    done: bool,
}

async fn verify(state: &AppState, digest: Digest, size: u64) -> Result<(), BlobError> {
    let mut stream = state.blobs.read(digest, size, None).await?;
    while let Some(chunk) = stream.next().await {
        chunk?;
    }
    Ok(())
}

pub async fn fsck(
    state: &AppState,
    check_hashes: bool,
    repair: bool,
    progress: &Progress,
) -> anyhow::Result<FsckReport> {
    let mut report = FsckReport::default();
    // The counters, recounted (on a live store, only what differs with the
    // writes held counts: a push in flight is not a fault).
    let counters = state.meta.check_stats(repair).await?;
    if repair {
        report.counters_repaired = counters.len() as u64;
    } else {
        report.faults.extend(counters.into_iter().map(Fault::Counter));
    }
    let quarantined: std::collections::HashSet<Digest> =
        state.meta.quarantined().await?.into_iter().map(|q| q.digest).collect();
    report.faults.extend(quarantined.iter().map(|d| Fault::Quarantined(*d)));
    let mut linked = Pages { page: Vec::new().into_iter(), done: false };
    let mut stored = Pages { page: Vec::new().into_iter(), done: false };
    let (mut last_linked, mut last_stored): (Option<Digest>, Option<Digest>) = (None, None);
    let mut next_linked = None;
    let mut next_stored: Option<Object> = None;
    let mut unlinked = Vec::new();
    loop {
        if next_linked.is_none() {
            next_linked = linked.page.next();
            if next_linked.is_none() && !linked.done {
                let page = state.meta.linked_digests(last_linked.as_ref(), PAGE).await?;
                linked.done = page.len() < PAGE;
                linked.page = page.into_iter();
                next_linked = linked.page.next();
            }
            if let Some((d, _)) = &next_linked {
                last_linked = Some(*d);
            }
        }
        if next_stored.is_none() {
            next_stored = stored.page.next();
            if next_stored.is_none() && !stored.done {
                let page = state.blobs.list(last_stored, PAGE).await?;
                stored.done = page.len() < PAGE;
                stored.page = page.into_iter();
                next_stored = stored.page.next();
            }
            if let Some(o) = &next_stored {
                last_stored = Some(o.digest);
            }
        }
        match (next_linked, next_stored) {
            (None, None) => break,
            (Some((digest, size)), Some(object)) if digest == object.digest => {
                report.linked += 1;
                report.stored += 1;
                progress.done(1);
                progress.bytes(size);
                if object.size != size {
                    report.faults.push(Fault::WrongSize { digest, linked: size, stored: object.size });
                } else if check_hashes && !quarantined.contains(&digest) {
                    match verify(state, digest, size).await {
                        Ok(()) => report.verified += 1,
                        Err(BlobError::Corrupt(_)) => report.faults.push(Fault::Mismatch(digest)),
                        Err(BlobError::Missing(_)) => report.faults.push(Fault::Missing(digest)),
                        Err(other) => return Err(other.into()),
                    }
                }
                (next_linked, next_stored) = (None, None);
            }
            (Some((digest, _)), object) if object.is_none_or(|o| digest < o.digest) => {
                report.linked += 1;
                report.faults.push(Fault::Missing(digest));
                (next_linked, next_stored) = (None, object);
            }
            (linked_next, Some(object)) => {
                report.stored += 1;
                unlinked.push(object);
                (next_linked, next_stored) = (linked_next, None);
            }
            (Some(_), None) => unreachable!("handled by the arm before"),
        }
    }
    // Stored and linked nowhere: waiting for reclaim is as it should be.
    let waiting: std::collections::HashSet<Digest> = state
        .meta
        .reclaim_candidates(time::OffsetDateTime::now_utc() + time::Duration::days(36_500), usize::MAX)
        .await?
        .into_iter()
        .map(|c| c.digest)
        .collect();
    for object in &unlinked {
        if waiting.contains(&object.digest) {
            report.waiting += 1;
        } else {
            report.faults.push(Fault::Orphan(object.digest));
        }
    }
    if repair {
        // Linked bytes that are wrong or gone are quarantined, so that
        // clients are told to send them again, which heals them.
        for fault in &report.faults {
            let found = match fault {
                Fault::Missing(d) => Some((*d, BlobError::Missing(*d))),
                Fault::WrongSize { digest, .. } | Fault::Mismatch(digest) => {
                    Some((*digest, BlobError::Corrupt(*digest)))
                }
                _ => None,
            };
            if let Some((digest, error)) = found {
                super::scrub::quarantine(state, digest, &error).await;
            }
        }
        let actor = Actor { token_id: None, token_name: Some("amberd fsck --repair".into()) };
        let done = reclaim::run(state, &actor, state.config.reclaim_grace, &Progress::default()).await?;
        report.reclaimed = done.deleted;
        // Recorded now: no longer a fault, whether deleted or waiting its grace.
        report.faults.retain(|f| !matches!(f, Fault::Orphan(_)));
    }
    Ok(report)
}
