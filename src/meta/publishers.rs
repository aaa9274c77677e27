//! Publishers: the trust policies of trusted publishing.

use std::future::Future;

use super::{AuditBuild, Meta, MetaError};

pub trait PublisherStore {
    /// Stores a new publisher with its audit entry.
    fn insert_publisher(
        &self,
        publisher: &amber_core::oidc::Publisher,
        audit: AuditBuild,
    ) -> impl Future<Output = Result<(), MetaError>> + Send;

    /// Every publisher, in id order.
    fn publishers(&self) -> impl Future<Output = Result<Vec<amber_core::oidc::Publisher>, MetaError>> + Send;

    /// Deletes a publisher with its audit entry; false if there was none.
    fn delete_publisher(&self, id: &str, audit: AuditBuild) -> impl Future<Output = Result<bool, MetaError>> + Send;
}

impl PublisherStore for Meta {
    async fn insert_publisher(
        &self,
        publisher: &amber_core::oidc::Publisher,
        audit: AuditBuild,
    ) -> Result<(), MetaError> {
        dispatch!(self, s => s.insert_publisher(publisher, audit))
    }

    async fn publishers(&self) -> Result<Vec<amber_core::oidc::Publisher>, MetaError> {
        dispatch!(self, s => s.publishers())
    }

    async fn delete_publisher(&self, id: &str, audit: AuditBuild) -> Result<bool, MetaError> {
        dispatch!(self, s => s.delete_publisher(id, audit))
    }
}
