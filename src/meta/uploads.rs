//! Resumable uploads as records: created (a final claiming its parts), advanced
//! by compare-and-set, deleted, listed.

use super::*;

pub trait UploadRecordStore {
    /// Stores a new upload, unless its token already has `most`. A final
    /// upload claims its parts in the same write: each must still be stored,
    /// its token's, and claimed by no other final, or nothing is stored.
    fn create_upload(
        &self,
        record: &UploadRecord,
        most: usize,
    ) -> impl Future<Output = Result<Created, MetaError>> + Send;

    /// The upload `id`, if `token` created it.
    fn upload(
        &self,
        token: &TokenId,
        id: &UploadId,
    ) -> impl Future<Output = Result<Option<UploadRecord>, MetaError>> + Send;

    /// Replaces the record of `record.id` if its stored offset is still `from`.
    fn update_upload(
        &self,
        record: &UploadRecord,
        from: u64,
    ) -> impl Future<Output = Result<Updated, MetaError>> + Send;

    /// Deletes an upload; a final's parts that it claimed are given back
    /// (they stay for another final) in the same write.
    fn delete_upload(&self, id: &UploadId) -> impl Future<Output = Result<bool, MetaError>> + Send;

    /// Uploads in id order strictly after `after`, at most `limit`.
    fn list_uploads(
        &self,
        after: Option<&UploadId>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<UploadRecord>, MetaError>> + Send;
}

impl UploadRecordStore for Meta {
    async fn create_upload(&self, record: &UploadRecord, most: usize) -> Result<Created, MetaError> {
        dispatch!(self, s => s.create_upload(record, most))
    }

    async fn upload(&self, token: &TokenId, id: &UploadId) -> Result<Option<UploadRecord>, MetaError> {
        dispatch!(self, s => s.upload(token, id))
    }

    async fn update_upload(&self, record: &UploadRecord, from: u64) -> Result<Updated, MetaError> {
        dispatch!(self, s => s.update_upload(record, from))
    }

    async fn delete_upload(&self, id: &UploadId) -> Result<bool, MetaError> {
        dispatch!(self, s => s.delete_upload(id))
    }

    async fn list_uploads(&self, after: Option<&UploadId>, limit: usize) -> Result<Vec<UploadRecord>, MetaError> {
        dispatch!(self, s => s.list_uploads(after, limit))
    }
}
