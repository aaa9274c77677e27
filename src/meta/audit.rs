//! The audit log: hash-chained entries and the signed checkpoint of its head.

use std::future::Future;

use amber_core::audit::AuditEntry;
use amber_core::dsse::Envelope;

use super::{AuditBuild, Meta, MetaError};

pub trait AuditStore {
    /// Appends audit entries, all at once; returns the last one's sequence number.
    fn append_audit(&self, build: AuditBuild) -> impl Future<Output = Result<u64, MetaError>> + Send;

    /// Audit entries in order, strictly after sequence number `after`.
    fn audit_entries(
        &self,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<AuditEntry>, MetaError>> + Send;

    /// The signed checkpoint of the chain head (a DSSE envelope), if any.
    fn audit_checkpoint(&self) -> impl Future<Output = Result<Option<Envelope>, MetaError>> + Send;
}

impl AuditStore for Meta {
    async fn append_audit(&self, build: AuditBuild) -> Result<u64, MetaError> {
        dispatch!(self, s => s.append_audit(build))
    }

    async fn audit_entries(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, MetaError> {
        dispatch!(self, s => s.audit_entries(after, limit))
    }

    async fn audit_checkpoint(&self) -> Result<Option<Envelope>, MetaError> {
        dispatch!(self, s => s.audit_checkpoint())
    }
}
