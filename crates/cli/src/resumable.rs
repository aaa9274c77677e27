//! Large files as resumable, parallel uploads (tus concatenation): the file
//! is cut at a power-of-two part size, each part's BLAKE3 chaining value is
//! sent with it so the server checks it on arrival, the parts go up a few at
//! a time, and each resumes from the offset the server acknowledged after a
//! broken connection or a `5xx`. Progress counts acknowledged bytes only.

use std::path::Path;
use std::time::Duration;

use amber_core::{Digest, RepoName};
use base64::Engine;
use blake3::hazmat::ChainingValue;
use futures_util::{StreamExt, TryStreamExt};

use crate::client::Client;
use crate::error::{CliError, Result};

/// Most chaining values one part carries in its metadata (the server's limit).
const MAX_PLAN_PARTS: u64 = 1024;
/// Bytes per `PATCH`: each is acknowledged (and counted) as it completes.
const PATCH_SIZE: u64 = 64 << 20;
/// Failures in a row, on one part, before the push gives up.
const ATTEMPTS: u32 = 8;

/// The part size for a file: `requested` (a power of two of at least 1 MiB),
/// doubled until the plan fits the server's limit of chaining values.
pub fn part_size_for(size: u64, requested: u64) -> u64 {
    let mut part_size = requested.max(amber_core::parts::MIN_PART_SIZE).next_power_of_two();
    while amber_core::parts::part_count(size, part_size) > MAX_PLAN_PARTS {
        part_size *= 2;
    }
    part_size
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Uploads `file` (`size` bytes, digest `digest`, parts' values `cvs`) to
/// `repo` in parts of `part_size`, `parallel` at a time.
#[allow(clippy::too_many_arguments)]
pub async fn upload(
    client: &Client,
    repo: &RepoName,
    file: &Path,
    size: u64,
    digest: Digest,
    part_size: u64,
    cvs: &[ChainingValue],
    parallel: usize,
    on_bytes: impl Fn(u64) + Clone + Send + Sync,
) -> Result<()> {
    let values: Vec<u8> = cvs.iter().flatten().copied().collect();
    let values = b64(&values);
    let parts = cvs.len() as u64;
    let urls: Vec<String> = futures_util::stream::iter((0..parts).map(|index| {
        let (values, on_bytes) = (values.clone(), on_bytes.clone());
        async move {
            let start = index * part_size;
            let length = part_size.min(size - start);
            let metadata = format!(
                "digest {},part_size {},part {},cvs {values}",
                b64(digest.to_string().as_bytes()),
                b64(part_size.to_string().as_bytes()),
                b64(index.to_string().as_bytes()),
            );
            let (url, _) = client.create_upload(repo, Some(length), &metadata, "partial").await?;
            send_part(client, &url, file, start, length, &on_bytes).await?;
            Ok::<_, CliError>(url)
        }
    }))
    .buffered(parallel.max(1))
    .try_collect()
    .await?;
    let metadata = format!("digest {}", b64(digest.to_string().as_bytes()));
    match client.create_upload(repo, None, &metadata, &format!("final;{}", urls.join(" "))).await {
        Ok(_) => Ok(()),
        // The answer may have been lost after the blob was linked (the
        // parts are then consumed): the blob itself says.
        Err(err) if client.head_blob(repo, &digest).await.is_ok() => {
            eprintln!("amber: {err}; the blob is stored all the same");
            Ok(())
        }
        Err(err) => Err(err),
    }
}

/// Sends one part, resuming from the acknowledged offset after a failure.
async fn send_part(
    client: &Client,
    url: &str,
    file: &Path,
    start: u64,
    length: u64,
    on_bytes: &impl Fn(u64),
) -> Result<()> {
    let (mut offset, mut failures, mut backoff) = (0u64, 0u32, Duration::from_millis(200));
    while offset < length {
        let size = (length - offset).min(PATCH_SIZE);
        match client.patch_upload(url, offset, file, start + offset, size).await {
            Ok(acknowledged) => {
                on_bytes(acknowledged.saturating_sub(offset));
                offset = acknowledged.max(offset);
                failures = 0;
            }
            Err(err) if resumable(&err) && failures + 1 < ATTEMPTS => {
                failures += 1;
                eprintln!("amber: {err}; resuming in {} ms", backoff.as_millis());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                let acknowledged = client.upload_offset(url).await?;
                on_bytes(acknowledged.saturating_sub(offset));
                offset = acknowledged.max(offset);
            }
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// A failure after which the part resumes: the connection, the server, or
/// another request of ours still holding the upload.
fn resumable(err: &CliError) -> bool {
    err.is_transient() || matches!(err, CliError::Api { status: 423, .. } | CliError::Conflict { status: 409, .. })
}
