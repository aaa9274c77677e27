//! Resumable uploads as the metadata store keeps them (everything a
//! replica needs to continue one; no replica keeps local state an upload
//! depends on): created (a final claiming its parts), advanced
//! by compare-and-set, deleted, listed.

use std::future::Future;

use amber_core::parts::PartSlot;
use amber_core::{Digest, RepoName, TokenId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{Meta, MetaError};

/// An upload's id: 128 random bits, 32 lowercase hex digits (the last
/// segment of its URL).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UploadId(String);

impl UploadId {
    pub fn random() -> Self {
        Self(format!("{:032x}", rand::random::<u128>()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for UploadId {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        if s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self(s.to_owned()))
        } else {
            Err(())
        }
    }
}

impl TryFrom<String> for UploadId {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse().map_err(|()| format!("not an upload id: {s:?}"))
    }
}

impl From<UploadId> for String {
    fn from(id: UploadId) -> Self {
        id.0
    }
}

impl std::fmt::Display for UploadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an upload becomes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum UploadKind {
    /// A blob of its own, complete when its last byte arrives.
    Single,
    /// A part of a later final upload (`Upload-Concat: partial`); with a
    /// slot, checked against its chaining value when its last byte arrives.
    Partial { slot: Option<PartSlot> },
    /// The concatenation of these partial uploads, in order.
    Final { parts: Vec<UploadId> },
    /// An OCI upload session (`/v2/`): its length is known once it is
    /// closed (`PUT ?digest=`); until then its `length` is the size limit.
    Open,
}

/// Bytes of an upload stored as one object per `PATCH` (the S3 backend):
/// the segment ends at `end` and lives under `key`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub end: u64,
    pub key: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub id: UploadId,
    /// Only this token sees the upload; any other gets `404`.
    pub token: TokenId,
    pub repository: RepoName,
    pub length: u64,
    /// Durable: every byte below it is stored (and survives a crash).
    pub offset: u64,
    /// `Upload-Metadata` as the client sent it, echoed by `HEAD`.
    pub metadata: String,
    /// The digest the blob must have, if the client stated it.
    pub digest: Option<Digest>,
    #[serde(flatten)]
    pub kind: UploadKind,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<Segment>,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// Discarded after this, unless finished (and then forgotten after it).
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
    /// The blob it became, once complete.
    pub done: Option<Digest>,
    /// For a partial upload: the final upload concatenating it now. Set
    /// with the final's creation, in one write, so that two finals racing
    /// over the same parts never both take them; cleared when that final
    /// is deleted without finishing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_by: Option<UploadId>,
}

impl UploadRecord {
    pub fn is_partial(&self) -> bool {
        matches!(self.kind, UploadKind::Partial { .. })
    }

    pub fn slot(&self) -> Option<&PartSlot> {
        match &self.kind {
            UploadKind::Partial { slot } => slot.as_ref(),
            _ => None,
        }
    }
}

/// What creating an upload did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Created {
    Created,
    /// Its token holds as many uploads as it may.
    TooMany,
    /// A final's part is gone, or already claimed by another final.
    PartTaken(UploadId),
}

/// What a compare-and-set of an upload's record found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Updated {
    Done,
    /// The offset was no longer the one the change started from.
    Moved(u64),
    Gone,
}

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
