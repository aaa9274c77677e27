//! Recording audit events: each is appended to the hash chain together with a
//! freshly signed checkpoint of the new head (format in `amber_core::audit`),
//! and, salted, becomes the next leaf of the transparency log (`src/log/`).
//!
//! A blob link or a tag binding commits in one metadata transaction with its
//! entries ([`Draft`]), so a crash cannot keep the change and lose its record.
//! Other events are recorded after the change succeeded and before the client
//! hears of it; if recording fails the client gets a `500` and retries (every
//! change is idempotent).

use amber_core::audit::{Actor, CHECKPOINT_PAYLOAD_TYPE, CHECKPOINT_SCHEMA, Checkpoint, EntryBody, Event, entry_hash};
use time::OffsetDateTime;

use std::sync::Arc;

use crate::meta::AuditStore;
use crate::meta::{AuditBuild, BuildAudit, Meta, MetaError, NewAudit, NewAuditEntry};
use crate::signing::Signer;

/// Events one actor is about to cause, in order, ready to be built into audit
/// entries once the chain head is known. A change that has its own store
/// method (a blob link, a tag binding, a token change) is given the draft, so
/// the change and its entries commit together; anything else uses [`record`].
pub struct Draft {
    signer: Arc<Signer>,
    actor: Actor,
    at: OffsetDateTime,
    events: Vec<Event>,
}

impl Draft {
    /// The draft, ready to hand to a store method.
    pub fn shared(signer: &Arc<Signer>, actor: Actor, events: Vec<Event>) -> AuditBuild {
        Arc::new(Self { signer: signer.clone(), actor, at: OffsetDateTime::now_utc(), events })
    }
}

impl BuildAudit for Draft {
    /// The entries numbered from `seq`, the first chained to `prev`, and a
    /// signed checkpoint of the last.
    fn build(&self, seq: u64, prev: &str) -> NewAudit {
        let mut entries = Vec::with_capacity(self.events.len());
        let mut prev = prev.to_owned();
        for (seq, event) in (seq..).zip(&self.events) {
            let salt = Some(hex_salt());
            let body = EntryBody { seq, prev, at: self.at, actor: self.actor.clone(), event: event.clone(), salt };
            let bytes = serde_json::to_vec(&body).expect("audit entries always serialise");
            let hash = entry_hash(&bytes);
            prev = hash.clone();
            let tag_bound = match event {
                Event::TagBound { repository, tag, .. } => Some((repository.clone(), tag.clone())),
                _ => None,
            };
            entries.push(NewAuditEntry { bytes, hash, tag_bound });
        }
        let last = seq + self.events.len() as u64 - 1;
        let checkpoint = Checkpoint { schema: CHECKPOINT_SCHEMA.into(), seq: last, hash: prev, created_at: self.at };
        let checkpoint =
            self.signer.sign(CHECKPOINT_PAYLOAD_TYPE, &serde_json::to_vec(&checkpoint).expect("checkpoints serialise"));
        NewAudit { entries, checkpoint }
    }
}

/// A fresh salt: identical events get different leaves in the log.
fn hex_salt() -> String {
    use rand::RngCore;
    use std::fmt::Write;
    // The thread's ChaCha generator, seeded from the OS: no system call per entry.
    let mut salt = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut salt);
    salt.iter().fold(String::with_capacity(64), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    })
}

/// Records one event on its own; returns its sequence number.
pub async fn record(meta: &Meta, signer: &Arc<Signer>, actor: Actor, event: Event) -> Result<u64, MetaError> {
    meta.append_audit(Draft::shared(signer, actor, vec![event])).await
}
