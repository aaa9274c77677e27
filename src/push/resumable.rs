//! The resumable flow (tus, `design/uploads.md`): a request to create, send
//! to, finish or discard an upload, taken to a linked blob through the path
//! of a `PUT` (`super`). The wire format, the byte stores and what a replica
//! keeps between requests are `crate::uploads`.

use std::collections::HashSet;

use amber_core::parts::{PartPlan, PlanError};
use amber_core::{Digest, RepoName};
use futures_util::StreamExt;
use time::OffsetDateTime;

use crate::auth::Caller;
use crate::blobs::{BodyStream, Stored, Upload};
use crate::error::{ApiError, ApiResult};
use crate::meta::{Created, OciStore, Updated, UploadId, UploadKind, UploadRecord, UploadRecordStore};
use crate::state::AppState;
use crate::uploads::store::{self, Check, UploadBytes};
use crate::uploads::{MAX_PER_TOKEN, MAX_PLAN_PARTS, tus};

/// Objects one upload may be stored in (a `PATCH` each, on S3).
const MAX_SEGMENTS: usize = 10_000;

/// What a request asks for at creation.
pub struct Creation {
    pub length: Option<u64>,
    pub metadata: tus::Metadata,
    pub concat: Option<tus::Concat>,
    /// The uploads path of the repository (`/v1/repos/OWNER/NAME/uploads`).
    pub base: String,
    /// The authorities an absolute URL of a final's part may name: those
    /// this server answers at.
    pub hosts: Vec<String>,
}

/// An upload after a request: its record, and the blob it made, if it did now.
pub struct Outcome {
    pub record: UploadRecord,
    pub linked: Option<Stored>,
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn expiry(state: &AppState) -> OffsetDateTime {
    now() + state.config.upload_expiry
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::RequestInvalid(message.into())
}

impl From<tus::TusError> for ApiError {
    fn from(err: tus::TusError) -> Self {
        match err {
            tus::TusError::Version => Self::TusVersion,
            other => Self::RequestInvalid(other.to_string()),
        }
    }
}

fn plan_error(err: PlanError) -> ApiError {
    match err {
        PlanError::Mismatch(digest) => ApiError::DigestMismatch { expected: digest, actual: digest },
        other => invalid(other.to_string()),
    }
}

/// A decimal metadata value.
fn number(metadata: &tus::Metadata, key: &str) -> ApiResult<Option<u64>> {
    match metadata.text(key)? {
        None => Ok(None),
        Some(text) => tus::parse_number("Upload-Metadata", text)
            .map(Some)
            .map_err(|_| invalid(format!("Upload-Metadata: {key} must be a decimal number"))),
    }
}

/// The stated digest, if any.
fn stated_digest(metadata: &tus::Metadata) -> ApiResult<Option<Digest>> {
    match metadata.text("digest")? {
        None => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|e: amber_core::digest::DigestError| {
            ApiError::DigestInvalid(format!("Upload-Metadata: digest: {e}"))
        }),
    }
}

/// The part's place in the plan its metadata gives, checked before any data.
fn part_slot(
    metadata: &tus::Metadata,
    digest: Option<Digest>,
    length: u64,
) -> ApiResult<Option<amber_core::parts::PartSlot>> {
    let (part_size, index, cvs) = (number(metadata, "part_size")?, number(metadata, "part")?, metadata.bytes("cvs"));
    let (part_size, index, cvs) = match (part_size, index, cvs) {
        (None, None, None) => return Ok(None),
        (Some(p), Some(i), Some(c)) => (p, i, c),
        _ => return Err(invalid("Upload-Metadata: part_size, part and cvs are given together or not at all")),
    };
    let digest =
        digest.ok_or_else(|| invalid("Upload-Metadata: a part with chaining values names the blob's digest"))?;
    if cvs.len() % 32 != 0 || cvs.len() / 32 > MAX_PLAN_PARTS {
        return Err(invalid(format!(
            "Upload-Metadata: cvs is the parts' 32-byte chaining values, one after another, at most {MAX_PLAN_PARTS}"
        )));
    }
    let cvs: Vec<[u8; 32]> = cvs.chunks(32).map(|c| c.try_into().expect("chunks of 32")).collect();
    let parts = cvs.len() as u64;
    if index >= parts {
        return Err(invalid(format!("Upload-Metadata: part {index} is not one of the plan's {parts} parts")));
    }
    // Every part but the last is a whole part; the last one's length gives
    // the blob's. (A non-last part is checked the same whatever the last
    // part's length: the tree above whole parts does not depend on it.)
    let blob_length = if index + 1 == parts { index * part_size + length } else { parts * part_size };
    let plan = PartPlan::new(digest, blob_length, part_size, cvs).map_err(plan_error)?;
    let slot = plan.slot(index);
    if slot.length != length {
        return Err(invalid(format!(
            "Upload-Length is {length}, but part {index} of the plan is {} bytes long",
            slot.length
        )));
    }
    Ok(Some(slot))
}

/// Creates an upload; a final one, or one of zero bytes, completes at once.
pub async fn create(state: &AppState, caller: &Caller, repo: &RepoName, request: Creation) -> ApiResult<Outcome> {
    let digest = stated_digest(&request.metadata)?;
    let limit = state.config.max_blob_size;
    let (length, kind, parts) = match &request.concat {
        Some(tus::Concat::Final(urls)) => {
            if request.length.is_some() {
                return Err(invalid("a final upload takes no Upload-Length: it is the sum of its parts"));
            }
            let parts = final_parts(state, caller, repo, urls, &request.base, &request.hosts).await?;
            let length = parts.iter().try_fold(0u64, |sum, p| sum.checked_add(p.length)).unwrap_or(u64::MAX);
            let ids = parts.iter().map(|p| p.id.clone()).collect();
            (length, UploadKind::Final { parts: ids }, parts)
        }
        other => {
            let length = request
                .length
                .ok_or_else(|| invalid("Upload-Length is required (deferred lengths are not supported)"))?;
            let kind = match other {
                Some(tus::Concat::Partial) => {
                    UploadKind::Partial { slot: part_slot(&request.metadata, digest, length)? }
                }
                _ => {
                    if request.metadata.bytes("cvs").is_some() {
                        return Err(invalid(
                            "Upload-Metadata: chaining values are given with the parts of a concatenation",
                        ));
                    }
                    UploadKind::Single
                }
            };
            (length, kind, Vec::new())
        }
    };
    if length > limit {
        return Err(ApiError::BlobTooLarge { limit });
    }
    let digest = digest.or_else(|| parts.first().and_then(|p| p.slot()).map(|s| s.digest));
    // Here, each part is held from its claim to the final's end (a DELETE or
    // PATCH of it waits); across replicas, the claim in the store decides.
    let mut held = Vec::with_capacity(parts.len());
    let mut ids: Vec<&UploadId> = parts.iter().map(|p| &p.id).collect();
    ids.sort();
    for id in ids {
        held.push(state.uploads.claim(id).await?);
    }
    let record = UploadRecord {
        id: UploadId::random(),
        token: caller.token.info.id.clone(),
        repository: repo.clone(),
        length,
        offset: 0,
        metadata: request.metadata.to_header(),
        digest,
        kind,
        segments: Vec::new(),
        created: now(),
        expires: expiry(state),
        done: None,
        claimed_by: None,
    };
    match state.meta.create_upload(&record, MAX_PER_TOKEN).await? {
        Created::Created => {}
        Created::TooMany => {
            return Err(ApiError::TooManyRequests {
                reason: "this token holds as many uploads as it may; finish or delete some",
                retry_after: 60,
            });
        }
        // Another final took the part between the check above and now.
        Created::PartTaken(part) => {
            return Err(ApiError::UploadIncomplete(format!(
                "partial upload {part} is being concatenated by another final upload, or is gone"
            )));
        }
    }
    match record.kind {
        UploadKind::Final { .. } => complete(state, caller, record, parts).await,
        UploadKind::Single if length == 0 => complete(state, caller, record.clone(), vec![record]).await,
        _ => Ok(Outcome { record, linked: None }),
    }
}

/// The partial uploads a final names, each finished and of this repository.
async fn final_parts(
    state: &AppState,
    caller: &Caller,
    repo: &RepoName,
    urls: &[String],
    base: &str,
    hosts: &[String],
) -> ApiResult<Vec<UploadRecord>> {
    if urls.is_empty() {
        return Err(invalid("Upload-Concat: final names at least one partial upload"));
    }
    let mut parts = Vec::with_capacity(urls.len());
    let mut seen = HashSet::new();
    for (index, url) in urls.iter().enumerate() {
        let missing = || ApiError::UploadIncomplete(format!("part {index} ({url}) is not a partial upload of {repo}"));
        let id: UploadId = tus::upload_in(url, base, hosts).and_then(|id| id.parse().ok()).ok_or_else(missing)?;
        if !seen.insert(id.clone()) {
            return Err(invalid(format!("Upload-Concat: part {index} ({url}) is named twice")));
        }
        let part = state.meta.upload(&caller.token.info.id, &id).await?.ok_or_else(missing)?;
        if !part.is_partial() || part.repository != *repo || part.done.is_some() {
            return Err(missing());
        }
        if part.claimed_by.is_some() {
            return Err(ApiError::UploadIncomplete(format!(
                "part {index} ({url}) is being concatenated by another final upload"
            )));
        }
        if part.offset < part.length {
            return Err(ApiError::UploadIncomplete(format!(
                "part {index} ({url}) holds {} of its {} bytes; finish it first",
                part.offset, part.length
            )));
        }
        parts.push(part);
    }
    Ok(parts)
}

/// Stores a `PATCH` body at `offset`; on the last byte, completes the upload.
pub async fn patch(
    state: &AppState,
    caller: &Caller,
    record: UploadRecord,
    offset: u64,
    body: BodyStream,
) -> ApiResult<Outcome> {
    let uploads = &state.uploads;
    if matches!(record.kind, UploadKind::Final { .. }) {
        return Err(ApiError::UploadFinal);
    }
    let _busy = uploads.claim(&record.id).await?;
    // Read again under the claim: another PATCH may have ended meanwhile.
    let record = state.meta.upload(&caller.token.info.id, &record.id).await?.ok_or(ApiError::UploadUnknown)?;
    if offset != record.offset {
        return Err(ApiError::UploadOffset { current: record.offset, given: offset });
    }
    if record.done.is_some() || record.offset == record.length {
        return Ok(Outcome { record, linked: None });
    }
    if record.segments.len() >= MAX_SEGMENTS {
        return Err(invalid(format!("an upload is stored in at most {MAX_SEGMENTS} PATCHes; send larger ones")));
    }
    let _slot = crate::push::admit(state, caller)?;
    let check = match uploads.take_hash(&record.id, offset) {
        Some(check) => Some(check),
        None => hash_so_far(state, &record).await?,
    };
    let appended = uploads.store.append(&record, body, check, state.admission.memory.clone()).await;
    let written = appended.written;
    if written == 0 {
        if let Some(check) = appended.check {
            uploads.keep_hash(&record.id, offset, check);
        }
        return match appended.error {
            Some(err) => Err(gone(err)),
            None => Ok(Outcome { record, linked: None }),
        };
    }
    let reached = offset + written;
    let last = reached == record.length;
    // On the last byte, the hash decides whether any of this PATCH is kept.
    if last && let Err(refused) = verify(&record, appended.check.as_ref(), offset) {
        if let Some(segment) = &appended.segment {
            let _ = uploads.store.discard_segment(segment).await;
        }
        return Err(refused);
    }
    let mut advanced = record.clone();
    advanced.offset = reached;
    advanced.expires = expiry(state);
    advanced.segments.extend(appended.segment.clone());
    if last && matches!(record.kind, UploadKind::Single) {
        // Linked before the offset reaches the end, so that an upload shown
        // complete always has its blob.
        let computed = store::whole_digest(appended.check.as_ref());
        let sha256 = store::whole_sha256(appended.check.as_ref());
        let digest = computed.or(record.digest);
        let outcome = finish_single(state, caller, advanced, offset, digest, computed.is_some()).await?;
        // Derived data: if it is not recorded, an attestation hashes the bytes again.
        if let (Some(sha256), Some(digest)) = (sha256, outcome.record.done)
            && let Err(err) = state.meta.note_sha256(&sha256, &digest).await
        {
            tracing::warn!(error = %err, %digest, "the upload's sha256 was not recorded");
        }
        return Ok(outcome);
    }
    match state.meta.update_upload(&advanced, offset).await? {
        Updated::Done => {}
        Updated::Moved(current) => {
            if let Some(segment) = &appended.segment {
                let _ = uploads.store.discard_segment(segment).await;
            }
            return Err(ApiError::UploadOffset { current, given: offset });
        }
        Updated::Gone => return Err(ApiError::UploadUnknown),
    }
    if let Some(check) = appended.check.filter(|_| !last) {
        uploads.keep_hash(&record.id, reached, check);
    }
    match appended.error {
        // The client is gone or stalled; what it sent is kept, and it resumes.
        Some(err) => Err(err.into()),
        None => Ok(Outcome { record: advanced, linked: None }),
    }
}

/// The hash state of the bytes stored so far, hashed again from the store.
pub(crate) async fn hash_so_far(state: &AppState, record: &UploadRecord) -> ApiResult<Option<Check>> {
    let mut check = match &record.kind {
        UploadKind::Single => Check::Whole(Box::default()),
        UploadKind::Partial { slot: Some(slot) } => Check::Part(Box::new(slot.hasher())),
        UploadKind::Open => Check::Open(Box::default()),
        _ => return Ok(None),
    };
    if record.offset > 0 {
        let mut bytes = state.uploads.store.read(record, 0..record.offset).await.map_err(gone)?;
        while let Some(chunk) = bytes.next().await {
            check.update(&chunk.map_err(gone)?);
        }
    }
    Ok(Some(check))
}

/// Stored bytes that cannot be read back are gone.
fn gone(err: crate::blobs::BlobError) -> ApiError {
    match err {
        crate::blobs::BlobError::Io(e) if e.kind() == std::io::ErrorKind::NotFound => ApiError::UploadGone,
        other => other.into(),
    }
}

/// Checks an upload's last `PATCH`: a part against its value, a blob of its
/// own against its stated digest.
fn verify(record: &UploadRecord, check: Option<&Check>, from: u64) -> ApiResult<()> {
    match (check, &record.kind) {
        (Some(Check::Part(hasher)), UploadKind::Partial { slot: Some(slot) }) if !hasher.matches() => {
            Err(ApiError::PartMismatch { index: slot.index, offset: from })
        }
        (Some(Check::Whole(hash)), UploadKind::Single) => match record.digest {
            Some(expected) if Digest::from(hash.blake3.finalize()) != expected => {
                Err(ApiError::DigestMismatch { expected, actual: Digest::from(hash.blake3.finalize()) })
            }
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Makes a single upload's blob visible, then records it complete.
async fn finish_single(
    state: &AppState,
    caller: &Caller,
    advanced: UploadRecord,
    from: u64,
    digest: Option<Digest>,
    verified: bool,
) -> ApiResult<Outcome> {
    let mut record = advanced;
    let linked = link(state, caller, std::slice::from_ref(&record), digest, verified).await;
    let (digest, linked) = match linked {
        Ok(done) => done,
        Err(err) => {
            if let Some(segment) = record.segments.last().filter(|s| s.end == record.length) {
                let _ = state.uploads.store.discard_segment(segment).await;
            }
            return Err(err);
        }
    };
    record.done = Some(digest);
    // Whether or not another request moved it meanwhile, the blob is linked.
    let _ = state.meta.update_upload(&record, from).await?;
    state.uploads.forget_hash(&record.id);
    if let Err(err) = state.uploads.store.discard(&record).await {
        tracing::warn!(upload = %record.id, error = %err, "could not remove a finished upload's bytes; the sweep will");
    }
    Ok(Outcome { record, linked: Some(linked) })
}

/// Links the blob of `parts` through the path of a `PUT`.
pub(crate) async fn link(
    state: &AppState,
    caller: &Caller,
    parts: &[UploadRecord],
    expected: Option<Digest>,
    verified: bool,
) -> ApiResult<(Digest, Stored)> {
    let _slot = crate::push::admit(state, caller)?;
    let pushing = crate::push::Pushing::new(state);
    let length = parts.iter().map(|p| p.length).sum();
    let upload = Upload {
        expected,
        limit: state.config.max_blob_size,
        announced: Some(length),
        memory: state.admission.memory.clone(),
        gate: Some(pushing.gate()),
    };
    let written = state.uploads.store.finish(parts, upload, verified && expected.is_some()).await;
    // Bytes that cannot be found (removed after a crash as they were being
    // linked) are gone: the client starts again.
    let missing = matches!(&written, Err(crate::blobs::BlobError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound);
    let repo = &parts[0].repository;
    let linked = pushing.link(state, caller, repo, written).await;
    if missing {
        return Err(ApiError::UploadGone);
    }
    let (written, linked) = linked?;
    Ok((written.digest, linked))
}

/// Completes a final upload (or a zero-byte one) as it is created.
async fn complete(
    state: &AppState,
    caller: &Caller,
    mut record: UploadRecord,
    parts: Vec<UploadRecord>,
) -> ApiResult<Outcome> {
    // Every part with a plan was checked on arrival against the same digest.
    let verified = !parts.is_empty()
        && parts
            .iter()
            .all(|p| p.slot().is_some_and(|s| Some(s.digest) == record.digest && s.parts == parts.len() as u64));
    let linked = link(state, caller, &parts, record.digest, verified).await;
    let (digest, linked) = match linked {
        Ok(done) => done,
        Err(err) => {
            // The final is refused whole; its parts stay for another try.
            let _ = state.meta.delete_upload(&record.id).await;
            return Err(err);
        }
    };
    record.offset = record.length;
    record.done = Some(digest);
    state.meta.update_upload(&record, 0).await?;
    if !matches!(record.kind, UploadKind::Single) {
        for part in &parts {
            forget(state, part).await;
        }
    }
    Ok(Outcome { record, linked: Some(linked) })
}

/// Discards an upload: its bytes, then its record.
async fn forget(state: &AppState, record: &UploadRecord) {
    state.uploads.forget_hash(&record.id);
    if let Err(err) = state.uploads.store.discard(record).await {
        tracing::warn!(upload = %record.id, error = %err, "could not remove an upload's bytes; the sweep will");
    }
    if let Err(err) = state.meta.delete_upload(&record.id).await {
        tracing::warn!(upload = %record.id, error = %err, "could not delete an upload's record; expiry will");
    }
}

/// `DELETE`: the upload is discarded now.
pub async fn terminate(state: &AppState, record: &UploadRecord) -> ApiResult<()> {
    let _busy = state.uploads.claim(&record.id).await?;
    // A part a final is concatenating stays until that final ends.
    if state.meta.upload(&record.token, &record.id).await?.is_some_and(|now| now.claimed_by.is_some()) {
        return Err(ApiError::UploadBusy);
    }
    if !state.meta.delete_upload(&record.id).await? {
        return Err(ApiError::UploadUnknown);
    }
    state.uploads.forget_hash(&record.id);
    state.uploads.store.discard(record).await?;
    Ok(())
}

/// Discards every upload past its expiry, then any stored bytes no upload
/// owns (a crash's leftovers). Returns how many uploads were discarded.
pub async fn expire(state: &AppState) -> ApiResult<u64> {
    let (mut after, mut live, mut expired) = (None::<UploadId>, HashSet::new(), 0);
    loop {
        let page = state.meta.list_uploads(after.as_ref(), 500).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        for record in page {
            // A part claimed by a final waits for that final: it is given back
            // (and then expires) when the final ends or expires itself.
            if record.expires < now() && record.claimed_by.is_none() && !state.uploads.is_busy(&record.id) {
                forget(state, &record).await;
                expired += 1;
            } else {
                live.insert(record.id);
            }
        }
    }
    state.uploads.store.sweep(&live).await?;
    Ok(expired)
}
