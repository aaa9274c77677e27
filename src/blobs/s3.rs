//! Blobs in S3 or an S3-compatible store.
//!
//! Layout under `s3://BUCKET/PREFIX`:
//! ```text
//! PREFIX/VERSION           "1"
//! PREFIX/blobs/<hex>       a blob, named by the 64 hex digits of its digest
//! PREFIX/staging/<random>  uploads whose digest was not known in advance
//! ```
//! A known-digest upload streams into a multipart upload at the final key,
//! hashing as it goes; it is completed (with `If-None-Match: *`, so nothing
//! is ever overwritten) only when the digest matches, and aborted otherwise.
//! A body smaller than one part is verified first and written with a single
//! conditional `PutObject`. An unknown-digest upload is staged, then copied to
//! its final key (again conditionally) and the staged object deleted. Memory
//! per upload is bounded by a few parts, never the blob. Abandoned multipart
//! uploads and staged objects older than a day are swept at start.

use std::ops::Range;
use std::time::{Duration, SystemTime};

use amber_core::Digest;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream as S3Body;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::task::JoinSet;

use super::{BlobError, BlobStore, BodyStream, ByteStream, Object, Stored, Upload, Written};
use crate::admission::Lent;

const LAYOUT_VERSION: &str = "1";
/// Part size: S3's minimum is 5 MiB; 8 MiB keeps requests few and memory small.
const PART_SIZE: usize = 8 << 20;
/// Parts uploading at once per blob, besides the one being filled.
const PARTS_IN_FLIGHT: usize = 2;
/// S3's smallest part, but for the last.
pub(crate) const MIN_PART: u64 = 5 << 20;
/// Largest object a single `CopyObject` may copy.
const COPY_LIMIT: u64 = 5 << 30;
/// Staged objects and multipart uploads older than this are abandoned.
const ABANDONED_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(Clone)]
pub struct S3Blobs {
    client: Client,
    bucket: String,
    prefix: String,
    /// Whether upload bodies are hashed into the request signature.
    sign_payload: bool,
}

fn io(context: &str, err: impl std::fmt::Display) -> BlobError {
    BlobError::Io(std::io::Error::other(format!("{context}: {err}")))
}

/// An SDK failure as the API reports it: a store that did not answer in time
/// or could not be reached is `Unavailable` (`503`), anything else internal.
fn failed<E: std::error::Error + 'static, R: std::fmt::Debug>(context: &str, err: &SdkError<E, R>) -> BlobError {
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => {
            BlobError::Unavailable(format!("{context}: {}", describe(err)))
        }
        _ => io(context, describe(err)),
    }
}

/// Every S3 call's time limits: reaching the store, one attempt, and all
/// attempts together (so a frozen store fails a request within ~35 s).
fn timeouts() -> aws_sdk_s3::config::timeout::TimeoutConfig {
    aws_sdk_s3::config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(Duration::from_secs(30))
        .operation_timeout(Duration::from_secs(32))
        .build()
}

/// Longest wait for the next bytes of an object being read.
const READ_IDLE: Duration = Duration::from_secs(30);

/// The service error's detail, for logs (never sent to clients).
fn describe<E: std::error::Error + 'static, R: std::fmt::Debug>(err: &SdkError<E, R>) -> String {
    match err {
        SdkError::ServiceError(service) => format!("{}", aws_sdk_s3::error::DisplayErrorContext(service.err())),
        other => format!("{}", aws_sdk_s3::error::DisplayErrorContext(other)),
    }
}

/// True when a conditional write found the key already there (`412`).
fn precondition_failed<E>(err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> bool {
    err.raw_response().is_some_and(|r| r.status().as_u16() == 412)
}

/// Whether upload bodies must be signed: as botocore decides, only over plain
/// HTTP. Over HTTPS, TLS protects the body in transit, and the CRC32 checksum
/// the SDK sends with each part, which S3 verifies, catches corruption; the
/// SHA-256 of every part that signing needs was a sixth of an upload's CPU.
/// Reads are verified against the BLAKE3 digest either way.
fn signs_payload(shared: &aws_config::SdkConfig) -> bool {
    let endpoint = std::env::var("AWS_ENDPOINT_URL_S3").ok().or_else(|| shared.endpoint_url().map(str::to_owned));
    endpoint.is_some_and(|url| !url.to_ascii_lowercase().starts_with("https://"))
}

impl S3Blobs {
    /// Connects and checks the bucket (so a bad bucket fails at start), writes or
    /// checks the layout version, and sweeps abandoned uploads in the background.
    pub async fn open(bucket: String, prefix: String, path_style: bool) -> anyhow::Result<Self> {
        let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let sign_payload = signs_payload(&shared);
        let config =
            aws_sdk_s3::config::Builder::from(&shared).force_path_style(path_style).timeout_config(timeouts()).build();
        Self::with_client(Client::from_conf(config), bucket, prefix, sign_payload).await
    }

    /// As [`S3Blobs::open`], with a client configured by the caller.
    pub async fn with_client(
        client: Client,
        bucket: String,
        prefix: String,
        sign_payload: bool,
    ) -> anyhow::Result<Self> {
        use anyhow::Context;
        let prefix = prefix.trim_matches('/').to_owned();
        let store = Self { client, bucket, prefix, sign_payload };
        store
            .client
            .head_bucket()
            .bucket(&store.bucket)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("bucket {}: {}", store.bucket, describe(&e)))?;
        let version_key = store.key("VERSION");
        match store.client.get_object().bucket(&store.bucket).key(&version_key).send().await {
            Ok(object) => {
                let found = object.body.collect().await.context("reading layout version")?.into_bytes();
                if found.as_ref() != LAYOUT_VERSION.as_bytes() {
                    anyhow::bail!(
                        "blob layout version {:?} at s3://{}/{version_key}; this amberd reads version {LAYOUT_VERSION}",
                        String::from_utf8_lossy(&found),
                        store.bucket
                    );
                }
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                let put = store
                    .client
                    .put_object()
                    .bucket(&store.bucket)
                    .key(&version_key)
                    .body(S3Body::from_static(LAYOUT_VERSION.as_bytes()))
                    .if_none_match("*")
                    .send()
                    .await;
                if let Err(e) = put
                    && !precondition_failed(&e)
                {
                    anyhow::bail!("writing s3://{}/{version_key}: {}", store.bucket, describe(&e));
                }
            }
            Err(e) => anyhow::bail!("reading s3://{}/{version_key}: {}", store.bucket, describe(&e)),
        }
        let sweeper = store.clone();
        tokio::spawn(async move {
            if let Err(err) = sweeper.sweep_abandoned().await {
                tracing::warn!(error = %err, "sweeping abandoned S3 uploads failed");
            }
        });
        Ok(store)
    }

    fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() { name.to_owned() } else { format!("{}/{name}", self.prefix) }
    }

    fn blob_key(&self, digest: &Digest) -> String {
        self.key(&format!("blobs/{}", digest.hex()))
    }

    async fn exists(&self, key: &str) -> Result<Option<u64>, BlobError> {
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(head) => Ok(Some(head.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(failed("HeadObject", &e)),
        }
    }

    /// Aborts multipart uploads and deletes staged objects older than a day.
    pub async fn sweep_abandoned(&self) -> Result<(), BlobError> {
        let cutoff = SystemTime::now() - ABANDONED_AFTER;
        let old = |t: Option<&aws_sdk_s3::primitives::DateTime>| {
            t.and_then(|t| SystemTime::try_from(*t).ok()).is_some_and(|t| t < cutoff)
        };
        let uploads = self
            .client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .prefix(self.key(""))
            .send()
            .await
            .map_err(|e| failed("ListMultipartUploads", &e))?;
        for upload in uploads.uploads() {
            if let (Some(key), Some(id)) = (upload.key(), upload.upload_id())
                && old(upload.initiated())
            {
                let _ = self.client.abort_multipart_upload().bucket(&self.bucket).key(key).upload_id(id).send().await;
                tracing::info!(key, "aborted an abandoned multipart upload");
            }
        }
        let mut pages =
            self.client.list_objects_v2().bucket(&self.bucket).prefix(self.key("staging/")).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| io("ListObjectsV2", describe(&e)))?;
            for object in page.contents() {
                if let Some(key) = object.key()
                    && old(object.last_modified())
                {
                    let _ = self.client.delete_object().bucket(&self.bucket).key(key).send().await;
                    tracing::info!(key, "deleted an abandoned staged upload");
                }
            }
        }
        Ok(())
    }

    /// Moves a staged object to its final key without ever replacing one.
    /// With `replace` (quarantined bytes), writes over the object there.
    async fn promote(&self, staged: &str, digest: &Digest, size: u64, replace: bool) -> Result<Stored, BlobError> {
        let target = self.blob_key(digest);
        let source = format!("{}/{staged}", self.bucket);
        let stored = if !replace && self.exists(&target).await?.is_some() {
            Stored::AlreadyPresent
        } else if size <= COPY_LIMIT {
            let mut copy = self.client.copy_object().bucket(&self.bucket).key(&target).copy_source(&source);
            if !replace {
                copy = copy.if_none_match("*");
            }
            let copy = copy.send().await;
            match copy {
                Ok(_) => Stored::Created,
                Err(e) if precondition_failed(&e) => Stored::AlreadyPresent,
                Err(e) => return Err(failed("CopyObject", &e)),
            }
        } else {
            let mut upload = Multipart::start(self, &target).await?;
            upload.replace = replace;
            let mut start = 0u64;
            while start < size {
                let end = (start + COPY_LIMIT).min(size);
                upload.copy_part(&source, Some(start..end)).await?;
                start = end;
            }
            upload.complete(size).await?
        };
        let _ = self.client.delete_object().bucket(&self.bucket).key(staged).send().await;
        Ok(stored)
    }
}

/// Objects of other Amber stores kept in the same bucket (resumable uploads'
/// segments): written once under fresh keys, read back, deleted.
impl S3Blobs {
    /// `name` under the store's prefix.
    pub(crate) fn object_key(&self, name: &str) -> String {
        self.key(name)
    }

    /// Writes what `body` yields, at most `most` bytes, as the new object
    /// `key`, feeding each byte to `check` first. When the body breaks off,
    /// the bytes that arrived are written all the same. Returns how many
    /// bytes the object holds (zero: no object) and what ended the body
    /// early; a failure of S3 itself stores nothing.
    pub(crate) async fn write_object(
        &self,
        key: &str,
        body: &mut BodyStream,
        most: u64,
        memory: &crate::admission::MemoryBudget,
        check: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Result<(u64, Option<BlobError>), BlobError> {
        let mut part = PartBuffer::default();
        let mut multipart: Option<Multipart> = None;
        let (mut size, mut ended) = (0u64, None);
        while let Some(chunk) = body.next().await {
            let mut chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    ended = Some(BlobError::Client(e));
                    break;
                }
            };
            if size + chunk.len() as u64 > most {
                ended = Some(BlobError::TooLarge { limit: most });
                break;
            }
            let Some(lent) = memory.borrow(chunk.len()).await else {
                ended = Some(BlobError::Throttled);
                break;
            };
            part.lent.merge(lent);
            size += chunk.len() as u64;
            check(&chunk);
            while part.len + chunk.len() >= PART_SIZE {
                part.push(chunk.split_to(PART_SIZE - part.len));
                let (bytes, lent) = std::mem::take(&mut part).freeze();
                let upload = match multipart.as_mut() {
                    Some(upload) => upload,
                    None => multipart.insert(Multipart::start(self, key).await?),
                };
                upload.upload(bytes, lent).await?;
            }
            if !chunk.is_empty() {
                part.push(chunk);
            }
        }
        match multipart {
            Some(mut upload) => {
                if part.len > 0 {
                    let (bytes, lent) = part.freeze();
                    upload.upload(bytes, lent).await?;
                }
                upload.complete(size).await?;
            }
            None if size == 0 => {}
            None => {
                let (bytes, _lent) = part.freeze();
                let put =
                    self.client.put_object().bucket(&self.bucket).key(key).body(S3Body::from(bytes)).if_none_match("*");
                let sent = if self.sign_payload {
                    put.send().await
                } else {
                    put.customize().disable_payload_signing().send().await
                };
                sent.map_err(|e| failed("PutObject", &e))?;
            }
        }
        Ok((size, ended))
    }

    /// Makes the blob `digest` of the objects `sources` (whole, in order,
    /// each but the last at least S3's 5 MiB part minimum), copied by S3
    /// itself: the bytes do not pass through Amber. They must be known to
    /// hash to `digest`. Never replaces a blob, unless `replace`.
    pub(crate) async fn compose(
        &self,
        digest: &Digest,
        sources: &[String],
        size: u64,
        replace: bool,
    ) -> Result<Stored, BlobError> {
        let target = self.blob_key(digest);
        if !replace && self.exists(&target).await?.is_some() {
            return Ok(Stored::AlreadyPresent);
        }
        let mut upload = Multipart::start(self, &target).await?;
        upload.replace = replace;
        for source in sources {
            upload.copy_part(&format!("{}/{source}", self.bucket), None).await?;
        }
        upload.complete(size).await
    }

    /// The bytes of object `key` in `range`, as stored (no digest to check).
    pub(crate) async fn read_object(&self, key: &str, range: Range<u64>) -> Result<ByteStream, BlobError> {
        if range.is_empty() {
            return Ok(Box::pin(futures_util::stream::empty()));
        }
        let object = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(format!("bytes={}-{}", range.start, range.end - 1))
            .send()
            .await
            .map_err(|e| failed("GetObject", &e))?;
        Ok(Box::pin(futures_util::stream::unfold(Some(object.body), |body| async move {
            let mut body = body?;
            match tokio::time::timeout(READ_IDLE, body.next()).await {
                Err(_) => {
                    Some((Err(BlobError::Unavailable(format!("S3 sent nothing for {}s", READ_IDLE.as_secs()))), None))
                }
                Ok(None) => None,
                Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(body))),
                Ok(Some(Err(e))) => Some((Err(io("reading from S3", e)), None)),
            }
        })))
    }

    pub(crate) async fn delete_object(&self, key: &str) -> Result<(), BlobError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| failed("DeleteObject", &e))?;
        Ok(())
    }

    /// One `DeleteObjects` call: at most 1,000 keys.
    async fn delete_keys(&self, keys: Vec<String>) -> Result<(), BlobError> {
        let objects: Vec<ObjectIdentifier> = keys
            .into_iter()
            .map(|key| ObjectIdentifier::builder().key(key).build())
            .collect::<Result<_, _>>()
            .map_err(|e| io("DeleteObjects", e))?;
        let delete =
            Delete::builder().set_objects(Some(objects)).quiet(true).build().map_err(|e| io("DeleteObjects", e))?;
        let done = self
            .client
            .delete_objects()
            .bucket(&self.bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|e| failed("DeleteObjects", &e))?;
        // Quiet: only the keys that failed are listed (a missing key is no failure).
        if let Some(error) = done.errors().first() {
            let what = format!(
                "{} key(s) not deleted, the first {}: {} {}",
                done.errors().len(),
                error.key().unwrap_or("?"),
                error.code().unwrap_or("?"),
                error.message().unwrap_or("")
            );
            return Err(io("DeleteObjects", what));
        }
        Ok(())
    }

    /// Every object under `prefix` (below the store's), with when it was written.
    pub(crate) async fn list_objects(&self, prefix: &str) -> Result<Vec<(String, Option<SystemTime>)>, BlobError> {
        let mut pages =
            self.client.list_objects_v2().bucket(&self.bucket).prefix(self.key(prefix)).into_paginator().send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| io("ListObjectsV2", describe(&e)))?;
            for object in page.contents() {
                if let Some(key) = object.key() {
                    let modified = object.last_modified().and_then(|t| SystemTime::try_from(*t).ok());
                    found.push((key.to_owned(), modified));
                }
            }
        }
        Ok(found)
    }
}

/// The chunks of one part as they arrived, and the memory they hold.
#[derive(Default)]
struct PartBuffer {
    chunks: Vec<Bytes>,
    len: usize,
    lent: Lent,
}

impl PartBuffer {
    fn push(&mut self, chunk: Bytes) {
        self.len += chunk.len();
        self.chunks.push(chunk);
    }

    /// The part in one buffer (no copy when it arrived as one chunk).
    fn freeze(self) -> (Bytes, Lent) {
        let bytes = match <[Bytes; 1]>::try_from(self.chunks) {
            Ok([one]) => one,
            Err(chunks) => {
                let mut buffer = BytesMut::with_capacity(self.len);
                for chunk in chunks {
                    buffer.extend_from_slice(&chunk);
                }
                buffer.freeze()
            }
        };
        (bytes, self.lent)
    }
}

/// A multipart upload in progress. Dropped unfinished, it aborts itself.
struct Multipart {
    store: S3Blobs,
    key: String,
    id: String,
    parts: Vec<CompletedPart>,
    in_flight: JoinSet<Result<CompletedPart, BlobError>>,
    finished: bool,
    /// Complete over an existing object (quarantined bytes) instead of
    /// leaving it be.
    replace: bool,
}

impl Multipart {
    async fn start(store: &S3Blobs, key: &str) -> Result<Self, BlobError> {
        let created = store
            .client
            .create_multipart_upload()
            .bucket(&store.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| failed("CreateMultipartUpload", &e))?;
        let id = created.upload_id().ok_or_else(|| io("CreateMultipartUpload", "no upload id"))?.to_owned();
        Ok(Self {
            store: store.clone(),
            key: key.to_owned(),
            id,
            parts: Vec::new(),
            in_flight: JoinSet::new(),
            finished: false,
            replace: false,
        })
    }

    /// Sends a part; its memory goes back to the budget once it is sent.
    async fn upload(&mut self, part: Bytes, lent: Lent) -> Result<(), BlobError> {
        while self.in_flight.len() >= PARTS_IN_FLIGHT {
            self.collect_one().await?;
        }
        let number = (self.parts.len() + self.in_flight.len() + 1) as i32;
        let (client, bucket, key, id) =
            (self.store.client.clone(), self.store.bucket.clone(), self.key.clone(), self.id.clone());
        let sign_payload = self.store.sign_payload;
        self.in_flight.spawn(async move {
            let request =
                client.upload_part().bucket(bucket).key(key).upload_id(id).part_number(number).body(S3Body::from(part));
            let sent = if sign_payload {
                request.send().await
            } else {
                request.customize().disable_payload_signing().send().await
            };
            drop(lent);
            let sent = sent.map_err(|e| failed("UploadPart", &e))?;
            Ok(CompletedPart::builder().part_number(number).set_e_tag(sent.e_tag().map(str::to_owned)).build())
        });
        Ok(())
    }

    /// Adds the next part, copied by S3 from `source` (`bucket/key`), whole
    /// or the byte `range` of it.
    async fn copy_part(&mut self, source: &str, range: Option<Range<u64>>) -> Result<(), BlobError> {
        let number = (self.parts.len() + 1) as i32;
        let mut request = self
            .store
            .client
            .upload_part_copy()
            .bucket(&self.store.bucket)
            .key(&self.key)
            .upload_id(&self.id)
            .part_number(number)
            .copy_source(source);
        if let Some(range) = range {
            request = request.copy_source_range(format!("bytes={}-{}", range.start, range.end - 1));
        }
        let part = request.send().await.map_err(|e| failed("UploadPartCopy", &e))?;
        let etag = part.copy_part_result().and_then(|r| r.e_tag()).unwrap_or_default().to_owned();
        self.parts.push(CompletedPart::builder().part_number(number).e_tag(etag).build());
        Ok(())
    }

    async fn collect_one(&mut self) -> Result<(), BlobError> {
        if let Some(done) = self.in_flight.join_next().await {
            self.parts.push(done.map_err(|e| io("UploadPart task", e))??);
        }
        Ok(())
    }

    /// Completes without replacing an existing object.
    async fn complete(mut self, size: u64) -> Result<Stored, BlobError> {
        while !self.in_flight.is_empty() {
            self.collect_one().await?;
        }
        self.parts.sort_by_key(|p| p.part_number());
        let done = CompletedMultipartUpload::builder().set_parts(Some(std::mem::take(&mut self.parts))).build();
        let mut complete = self
            .store
            .client
            .complete_multipart_upload()
            .bucket(&self.store.bucket)
            .key(&self.key)
            .upload_id(&self.id)
            .multipart_upload(done);
        if !self.replace {
            complete = complete.if_none_match("*");
        }
        let completed = complete.send().await;
        match completed {
            Ok(_) => {
                self.finished = true;
                Ok(Stored::Created)
            }
            // Another upload of the same bytes won; ours is aborted on drop.
            Err(e) if precondition_failed(&e) => Ok(Stored::AlreadyPresent),
            // A `200` whose body did not parse (S3 may report errors inside a
            // 200; some compatible stores answer with another XML root): the
            // object itself says whether the upload completed.
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 200) => {
                match self.store.exists(&self.key).await? {
                    Some(found) if found == size => {
                        self.finished = true;
                        Ok(Stored::Created)
                    }
                    _ => Err(failed("CompleteMultipartUpload", &e)),
                }
            }
            Err(e) => Err(failed("CompleteMultipartUpload", &e)),
        }
    }
}

impl Drop for Multipart {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.in_flight.abort_all();
        let (client, bucket, key, id) =
            (self.store.client.clone(), self.store.bucket.clone(), self.key.clone(), self.id.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = client.abort_multipart_upload().bucket(bucket).key(&key).upload_id(id).send().await {
                    tracing::warn!(key, error = %describe(&e), "aborting a multipart upload failed; the start-up sweep will retry");
                }
            });
        }
    }
}

impl BlobStore for S3Blobs {
    async fn put(&self, upload: Upload, mut body: BodyStream) -> Result<Written, BlobError> {
        // Every upload is sent to S3, even of a digest already stored (the
        // conditional write then finds it there): the answer and its timing
        // must not tell whether some other repository holds the blob.
        let Upload { expected, limit, memory, gate, .. } = upload;

        let target = match expected {
            Some(digest) => self.blob_key(&digest),
            None => self.key(&format!("staging/{:032x}", rand::random::<u128>())),
        };
        let mut hasher = blake3::Hasher::new();
        let mut size = 0u64;
        // A part is gathered as the chunks that arrived (memory for bytes that
        // have not arrived is never taken), then copied once into one
        // allocation of exactly its size.
        let mut part = PartBuffer::default();
        let mut multipart: Option<Multipart> = None;
        while let Some(chunk) = body.next().await {
            let mut chunk = chunk.map_err(BlobError::Client)?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(BlobError::TooLarge { limit });
            }
            hasher.update(&chunk);
            part.lent.merge(memory.borrow(chunk.len()).await.ok_or(BlobError::Throttled)?);
            while part.len + chunk.len() >= PART_SIZE {
                part.push(chunk.split_to(PART_SIZE - part.len));
                let (bytes, lent) = std::mem::take(&mut part).freeze();
                let upload = match multipart.as_mut() {
                    Some(upload) => upload,
                    None => multipart.insert(Multipart::start(self, &target).await?),
                };
                upload.upload(bytes, lent).await?;
            }
            if !chunk.is_empty() {
                part.push(chunk);
            }
        }
        let digest = Digest::from(hasher.finalize());
        if let Some(expected) = expected.filter(|e| *e != digest) {
            return Err(BlobError::Mismatch { expected, actual: digest }); // `multipart` aborts on drop
        }
        // A known digest is written at its final key: the gate comes before
        // that write; a computed one is staged, and the gate comes before
        // its promotion.
        let stored = match multipart {
            Some(mut upload) => {
                if part.len > 0 {
                    let (bytes, lent) = part.freeze();
                    upload.upload(bytes, lent).await?;
                }
                if expected.is_some() {
                    upload.replace = super::enter(gate.as_ref(), digest).await?.replace;
                }
                upload.complete(size).await?
            }
            None => {
                let replace = match expected {
                    Some(_) => super::enter(gate.as_ref(), digest).await?.replace,
                    None => false,
                };
                let (bytes, _lent) = part.freeze();
                let mut put = self.client.put_object().bucket(&self.bucket).key(&target).body(S3Body::from(bytes));
                if expected.is_some() && !replace {
                    put = put.if_none_match("*");
                }
                let sent = if self.sign_payload {
                    put.send().await
                } else {
                    put.customize().disable_payload_signing().send().await
                };
                match sent {
                    Ok(_) => Stored::Created,
                    Err(e) if precondition_failed(&e) => Stored::AlreadyPresent,
                    Err(e) => return Err(failed("PutObject", &e)),
                }
            }
        };
        let stored = match expected {
            Some(_) => stored,
            None => {
                let replace = super::enter(gate.as_ref(), digest).await?.replace;
                self.promote(&target, &digest, size, replace).await?
            }
        };
        Ok(Written { digest, size, stored })
    }

    async fn read(&self, digest: Digest, size: u64, range: Option<Range<u64>>) -> Result<ByteStream, BlobError> {
        let mut request = self.client.get_object().bucket(&self.bucket).key(self.blob_key(&digest));
        if let Some(r) = &range {
            request = request.range(format!("bytes={}-{}", r.start, r.end - 1));
        }
        let object = match request.send().await {
            Ok(object) => object,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                tracing::error!(%digest, "blob is linked in metadata but missing from S3");
                return Err(BlobError::Missing(digest));
            }
            Err(e) => return Err(failed("GetObject", &e)),
        };
        let expected_len = range.as_ref().map_or(size, |r| r.end - r.start);
        if object.content_length().unwrap_or(-1) != expected_len as i64 {
            tracing::error!(%digest, "blob in S3 has the wrong size");
            return Err(BlobError::Corrupt(digest));
        }
        let verify = range.is_none();
        let state = (object.body, verify.then(blake3::Hasher::new), None::<Bytes>, false);
        // Holds each chunk back until the next arrives, so the last one goes out
        // only after the whole blob hashed to its digest.
        Ok(Box::pin(futures_util::stream::unfold(state, move |(mut body, mut hasher, mut held, done)| async move {
            if done {
                return None;
            }
            loop {
                let Ok(next) = tokio::time::timeout(READ_IDLE, body.next()).await else {
                    let stalled = BlobError::Unavailable(format!("S3 sent nothing for {}s", READ_IDLE.as_secs()));
                    return Some((Err(stalled), (body, None, None, true)));
                };
                match next {
                    Some(Ok(chunk)) => {
                        if let Some(h) = hasher.as_mut() {
                            h.update(&chunk);
                        }
                        if let Some(previous) = held.replace(chunk) {
                            return Some((Ok(previous), (body, hasher, held, false)));
                        }
                    }
                    Some(Err(e)) => return Some((Err(io("reading from S3", e)), (body, hasher, None, true))),
                    None => {
                        if let Some(h) = hasher.take()
                            && Digest::from(h.finalize()) != digest
                        {
                            tracing::error!(%digest, "blob in S3 does not hash to its digest");
                            return Some((Err(BlobError::Corrupt(digest)), (body, None, None, true)));
                        }
                        return held.take().map(|last| (Ok(last), (body, None, None, true)));
                    }
                }
            }
        })))
    }

    async fn check(&self) -> Result<(), BlobError> {
        self.client.head_bucket().bucket(&self.bucket).send().await.map_err(|e| failed("HeadBucket", &e))?;
        Ok(())
    }

    async fn delete(&self, digest: &Digest) -> Result<(), BlobError> {
        // S3 answers 204 whether or not the key existed.
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.blob_key(digest))
            .send()
            .await
            .map_err(|e| failed("DeleteObject", &e))?;
        Ok(())
    }

    async fn delete_many(&self, digests: &[Digest]) -> Result<(), BlobError> {
        /// Keys per `DeleteObjects` (S3's most), and calls in flight.
        const KEYS: usize = 1000;
        const IN_FLIGHT: usize = 4;
        let calls: Vec<_> = digests
            .chunks(KEYS)
            .map(|chunk| self.delete_keys(chunk.iter().map(|d| self.blob_key(d)).collect()))
            .collect();
        let mut calls = futures_util::stream::iter(calls).buffer_unordered(IN_FLIGHT);
        while let Some(done) = calls.next().await {
            done?;
        }
        Ok(())
    }

    async fn list(&self, after: Option<Digest>, limit: usize) -> Result<Vec<Object>, BlobError> {
        let prefix = self.key("blobs/");
        let mut request =
            self.client.list_objects_v2().bucket(&self.bucket).prefix(&prefix).max_keys(limit.min(1000) as i32);
        if let Some(after) = after {
            request = request.start_after(self.blob_key(&after));
        }
        let listed = request.send().await.map_err(|e| failed("ListObjectsV2", &e))?;
        Ok(listed
            .contents()
            .iter()
            .filter_map(|o| {
                let hex = o.key()?.strip_prefix(&prefix)?;
                let digest = format!("blake3:{hex}").parse::<Digest>().ok()?;
                // S3 lists whole seconds: the bytes may have been written up
                // to a second after the time it shows, and an orphan's grace
                // must never start early.
                let modified = o.last_modified().and_then(|t| {
                    let nanos = match t.subsec_nanos() {
                        0 => i128::from(t.secs() + 1) * 1_000_000_000,
                        n => i128::from(t.secs()) * 1_000_000_000 + i128::from(n),
                    };
                    time::OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
                });
                Some(Object { digest, size: o.size().unwrap_or(0).max(0) as u64, modified })
            })
            .collect())
    }
}
