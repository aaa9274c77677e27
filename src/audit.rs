//! Recording audit events: each is appended to the hash chain together with a
//! freshly signed checkpoint of the new head (format in `amber_core::audit`).
//!
//! An event is recorded after the change it describes succeeded and before the
//! client hears of it; if recording fails the client gets a `500` and retries
//! (every change is idempotent).

use amber_core::audit::{Actor, CHECKPOINT_PAYLOAD_TYPE, CHECKPOINT_SCHEMA, Checkpoint, EntryBody, Event, entry_hash};
use time::OffsetDateTime;

use crate::meta::{Meta, MetaError, MetaStore, NewAuditEntry};
use crate::signing::Signer;

pub async fn record(meta: &Meta, signer: &Signer, actor: Actor, event: Event) -> Result<u64, MetaError> {
    let at = OffsetDateTime::now_utc();
    let build = |seq: u64, prev: &str| {
        let body = EntryBody { seq, prev: prev.to_owned(), at, actor: actor.clone(), event: event.clone() };
        let bytes = serde_json::to_vec(&body).expect("audit entries always serialise");
        let hash = entry_hash(&bytes);
        let checkpoint = Checkpoint { schema: CHECKPOINT_SCHEMA.into(), seq, hash: hash.clone(), created_at: at };
        let checkpoint =
            signer.sign(CHECKPOINT_PAYLOAD_TYPE, &serde_json::to_vec(&checkpoint).expect("checkpoints serialise"));
        NewAuditEntry { bytes, hash, checkpoint }
    };
    meta.append_audit(&build).await
}
