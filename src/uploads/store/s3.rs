//! Upload bytes in S3, one object per append:
//! `PREFIX/uploads/<id>/<offset, 20 digits>-<random>`, written once under a
//! fresh key (`If-None-Match: *`) and listed in the upload's record only when
//! its offset advances, so any replica can continue an upload and two
//! appends racing on one never mix their bytes (the one that loses its
//! compare-and-set deletes its object). A finished upload whose bytes were
//! all checked on arrival (parts with chaining values, or a blob hashed as
//! it came) is joined by S3 itself (`UploadPartCopy`) when its objects are
//! large enough to be parts; otherwise its objects are streamed into the
//! blob store, which hashes and writes the blob at its final key.

use std::collections::HashSet;
use std::ops::Range;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;

use super::{Appended, Check, UploadBytes, concatenated, stored_side};
use crate::admission::MemoryBudget;
use crate::blobs::{BlobError, BlobStore, BodyStream, ByteStream, S3Blobs, Upload, Written};
use crate::meta::{Segment, UploadId, UploadRecord};

/// Objects no live upload owns are deleted once this old.
const ORPHAN_AGE: Duration = Duration::from_secs(60 * 60);

#[derive(Clone)]
pub struct S3Uploads {
    blobs: S3Blobs,
}

impl S3Uploads {
    pub fn new(blobs: S3Blobs) -> Self {
        Self { blobs }
    }

    fn prefix(id: &UploadId) -> String {
        format!("uploads/{id}/")
    }
}

impl UploadBytes for S3Uploads {
    async fn append(
        &self,
        record: &UploadRecord,
        mut body: BodyStream,
        check: Option<Check>,
        memory: MemoryBudget,
    ) -> Appended {
        let name = format!("{}{:020}-{:016x}", Self::prefix(&record.id), record.offset, rand::random::<u64>());
        let key = self.blobs.object_key(&name);
        let mut check = check;
        let mut feed = |bytes: &[u8]| {
            if let Some(check) = check.as_mut() {
                check.update(bytes);
            }
        };
        let most = record.length - record.offset;
        match self.blobs.write_object(&key, &mut body, most, &memory, &mut feed).await {
            Ok((written, error)) => {
                let segment = (written > 0).then(|| Segment { end: record.offset + written, key });
                Appended { written, check, segment, error }
            }
            Err(e) => Appended::failed(e, None),
        }
    }

    async fn read(&self, record: &UploadRecord, range: Range<u64>) -> Result<ByteStream, BlobError> {
        let mut pieces = Vec::new();
        let mut start = 0u64;
        for segment in &record.segments {
            let (from, to) = (range.start.max(start), range.end.min(segment.end));
            if from < to {
                pieces.push((segment.key.clone(), from - start..to - start));
            }
            start = segment.end;
        }
        if range.end > start {
            return Err(BlobError::Io(std::io::Error::other("reading past an upload's stored bytes")));
        }
        let blobs = self.blobs.clone();
        Ok(Box::pin(
            futures_util::stream::iter(pieces)
                .then(move |(key, range)| {
                    let blobs = blobs.clone();
                    async move { blobs.read_object(&key, range).await }
                })
                .flat_map(|read| match read {
                    Ok(stream) => stream,
                    Err(e) => Box::pin(futures_util::stream::once(async move { Err(e) })),
                }),
        ))
    }

    async fn finish(&self, parts: &[UploadRecord], upload: Upload, verified: bool) -> Result<Written, BlobError> {
        // Bytes already checked, in objects S3 can join as parts: S3 copies
        // them into the blob, and none passes through here again.
        let segments: Vec<(u64, &str)> = parts
            .iter()
            .flat_map(|part| {
                let mut start = 0;
                part.segments.iter().map(move |s| {
                    let length = s.end - start;
                    start = s.end;
                    (length, s.key.as_str())
                })
            })
            .collect();
        let joinable = segments.len() <= 10_000
            && segments.iter().rev().skip(1).all(|(length, _)| *length >= crate::blobs::S3_MIN_PART);
        if let (true, true, Some(digest)) = (verified, joinable && !segments.is_empty(), upload.expected) {
            let size = parts.iter().map(|p| p.length).sum();
            let entered = crate::blobs::enter(upload.gate.as_ref(), digest).await?;
            let sources: Vec<String> = segments.iter().map(|(_, key)| (*key).to_owned()).collect();
            let stored = self.blobs.compose(&digest, &sources, size, entered.replace).await?;
            return Ok(Written { digest, size, stored });
        }
        let body = concatenated(self.clone(), parts.to_vec());
        self.blobs.put(upload, body).await.map_err(stored_side)
    }

    async fn discard(&self, record: &UploadRecord) -> Result<(), BlobError> {
        // Listed rather than taken from the record: an append that lost its
        // race, or a crash before its offset was recorded, left objects the
        // record does not name.
        for (key, _) in self.blobs.list_objects(&Self::prefix(&record.id)).await? {
            self.blobs.delete_object(&key).await?;
        }
        Ok(())
    }

    async fn discard_segment(&self, segment: &Segment) -> Result<(), BlobError> {
        self.blobs.delete_object(&segment.key).await
    }

    async fn sweep(&self, live: &HashSet<UploadId>) -> Result<u64, BlobError> {
        let cutoff = SystemTime::now() - ORPHAN_AGE;
        let prefix = self.blobs.object_key("uploads/");
        let mut removed = 0;
        for (key, modified) in self.blobs.list_objects("uploads/").await? {
            let id = key.strip_prefix(&prefix).and_then(|rest| rest.split('/').next()).and_then(|id| id.parse().ok());
            if id.is_none_or(|id| !live.contains(&id)) && modified.is_some_and(|m| m < cutoff) {
                self.blobs.delete_object(&key).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}
