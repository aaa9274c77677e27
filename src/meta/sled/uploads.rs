//! Resumable uploads as records on sled.

use amber_core::TokenId;

use super::{SledMeta, by_token_prefix};
use crate::meta::UploadRecordStore;
use crate::meta::{Created, MetaError, Updated, UploadId, UploadKind, UploadRecord};

impl UploadRecordStore for SledMeta {
    /// Ready when a read answers and the volume keeps the metadata's reserve.
    async fn create_upload(&self, record: &UploadRecord, most: usize) -> Result<Created, MetaError> {
        let json = serde_json::to_vec(record)?;
        let (id, token) = (record.id.clone(), record.token.clone());
        let parts = match &record.kind {
            UploadKind::Final { parts } => parts.clone(),
            _ => Vec::new(),
        };
        // Writes run one at a time, so the count and the claims hold until
        // the inserts.
        self.write("create_upload", move |t| {
            let prefix = by_token_prefix(token.as_str());
            if t.uploads_by_token.scan_prefix(&prefix).take(most).count() >= most {
                return Ok(Created::TooMany);
            }
            let mut claimed = Vec::with_capacity(parts.len());
            for part in &parts {
                let Some(stored) = t.uploads.get(part.as_str())? else { return Ok(Created::PartTaken(part.clone())) };
                let mut stored: UploadRecord = serde_json::from_slice(&stored)?;
                if stored.token != token || stored.claimed_by.is_some() {
                    return Ok(Created::PartTaken(part.clone()));
                }
                stored.claimed_by = Some(id.clone());
                claimed.push((part, serde_json::to_vec(&stored)?));
            }
            for (part, json) in claimed {
                t.uploads.insert(part.as_str(), json)?;
            }
            let mut key = prefix;
            key.extend_from_slice(id.as_str().as_bytes());
            t.uploads.insert(id.as_str(), json)?;
            t.uploads_by_token.insert(key, &[][..])?;
            Ok(Created::Created)
        })
        .await
    }

    async fn upload(&self, token: &TokenId, id: &UploadId) -> Result<Option<UploadRecord>, MetaError> {
        let (token, id) = (token.clone(), id.clone());
        self.read("upload", move |t| {
            let Some(json) = t.uploads.get(id.as_str())? else { return Ok(None) };
            let record: UploadRecord = serde_json::from_slice(&json)?;
            Ok((record.token == token).then_some(record))
        })
        .await
    }

    async fn update_upload(&self, record: &UploadRecord, from: u64) -> Result<Updated, MetaError> {
        let json = serde_json::to_vec(record)?;
        let id = record.id.clone();
        self.write("update_upload", move |t| {
            let Some(old) = t.uploads.get(id.as_str())? else { return Ok(Updated::Gone) };
            let old: UploadRecord = serde_json::from_slice(&old)?;
            if old.offset != from {
                return Ok(Updated::Moved(old.offset));
            }
            t.uploads.insert(id.as_str(), json)?;
            Ok(Updated::Done)
        })
        .await
    }

    async fn delete_upload(&self, id: &UploadId) -> Result<bool, MetaError> {
        let id = id.clone();
        self.write("delete_upload", move |t| {
            let Some(old) = t.uploads.remove(id.as_str())? else { return Ok(false) };
            let old: UploadRecord = serde_json::from_slice(&old)?;
            let mut key = by_token_prefix(old.token.as_str());
            key.extend_from_slice(id.as_str().as_bytes());
            t.uploads_by_token.remove(key)?;
            if let UploadKind::Final { parts } = &old.kind {
                for part in parts {
                    let Some(stored) = t.uploads.get(part.as_str())? else { continue };
                    let mut stored: UploadRecord = serde_json::from_slice(&stored)?;
                    if stored.claimed_by.as_ref() == Some(&id) {
                        stored.claimed_by = None;
                        t.uploads.insert(part.as_str(), serde_json::to_vec(&stored)?)?;
                    }
                }
            }
            Ok(true)
        })
        .await
    }

    async fn list_uploads(&self, after: Option<&UploadId>, limit: usize) -> Result<Vec<UploadRecord>, MetaError> {
        let after = after.map(|id| id.as_str().to_owned());
        self.read("list_uploads", move |t| {
            let range = match &after {
                Some(after) => t
                    .uploads
                    .range::<&[u8], _>((std::ops::Bound::Excluded(after.as_bytes()), std::ops::Bound::Unbounded)),
                None => t.uploads.iter(),
            };
            let mut found = Vec::new();
            for item in range.take(limit) {
                let (_, json) = item?;
                found.push(serde_json::from_slice(&json)?);
            }
            Ok(found)
        })
        .await
    }
}
