//! Publishers on sled.

use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use super::{SledMeta, append_audit_in, transaction_error};
use crate::meta::PublisherStore;
use crate::meta::{AuditBuild, MetaError};

impl PublisherStore for SledMeta {
    async fn insert_publisher(
        &self,
        publisher: &amber_core::oidc::Publisher,
        audit: AuditBuild,
    ) -> Result<(), MetaError> {
        let id = publisher.id.as_bytes().to_vec();
        let json = serde_json::to_vec(publisher)?;
        self.write("insert_publisher", move |t| {
            (&t.publishers, &t.audit, &t.audit_head)
                .transaction(|(publishers, audit_tree, head)| {
                    if publishers.get(&id)?.is_some() {
                        return Err(ConflictableTransactionError::Abort(MetaError::Conflict("publisher".into())));
                    }
                    publishers.insert(id.as_slice(), json.as_slice())?;
                    append_audit_in(audit_tree, head, &*audit)?;
                    Ok(())
                })
                .map_err(transaction_error)
        })
        .await
    }

    async fn publishers(&self) -> Result<Vec<amber_core::oidc::Publisher>, MetaError> {
        self.read("publishers", |t| t.publishers.iter().map(|item| Ok(serde_json::from_slice(&item?.1)?)).collect())
            .await
    }

    async fn delete_publisher(&self, id: &str, audit: AuditBuild) -> Result<bool, MetaError> {
        let id = id.as_bytes().to_vec();
        self.write("delete_publisher", move |t| {
            (&t.publishers, &t.audit, &t.audit_head)
                .transaction(|(publishers, audit_tree, head)| {
                    if publishers.remove(id.as_slice())?.is_none() {
                        return Ok(false);
                    }
                    append_audit_in(audit_tree, head, &*audit)?;
                    Ok(true)
                })
                .map_err(transaction_error)
        })
        .await
    }
}
