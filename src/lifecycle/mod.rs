//! Lifecycle: retention, reclaim and scrub. A tag's binding is permanent history; its
//! availability may end, by a policy's run or by an operator, and that end is
//! a signed tombstone and an audit entry. Blob links that no live manifest
//! references are removed after `untagged_days`; bytes no repository links
//! are deleted by `reclaim` after a grace.
//!
//! `policy` checks policies and says which applies where; `plan` decides, from
//! one repository's view, what a run would do; `run` does it through the
//! metadata store, whose transactions re-check what a racing writer could
//! change (a hold, the policy in effect, a new reference).

pub mod fsck;
pub mod plan;
pub mod policy;
pub mod reclaim;
mod run;
pub mod scrub;

pub use run::{expire_tag, plan_proposed, plan_scope, plan_scope_at, run_all, run_all_at, scheduled_actor};
