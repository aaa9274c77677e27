//! `amber push`: hash the tree, ask which blobs are missing, upload only
//! those (a few at a time), then bind the tag to a signed manifest.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use amber_core::manifest::{FileEntry, ManifestRequest};
use amber_core::{Digest, RepoName, Tag};
use blake3::hazmat::ChainingValue;
use futures_util::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::client::Client;
use crate::error::{CliError, Result};
use crate::tree::{self, LocalFile};

/// Uploads in flight at once.
const UPLOAD_CONCURRENCY: usize = 4;

/// How progress is shown: a bar on a terminal, plain lines in CI logs, or nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    Bar,
    Lines,
    Quiet,
}

#[derive(Clone, Debug, Serialize)]
pub struct PushReport {
    pub repository: RepoName,
    pub tag: Tag,
    pub digest: Digest,
    /// False when the tag was already bound to exactly this content.
    pub created: bool,
    pub files: usize,
    pub bytes: u64,
    pub uploaded: usize,
    pub uploaded_bytes: u64,
}

/// How large files go up: files larger than `part_size` as resumable uploads
/// in parts of (about) that size, `parallel` parts at a time.
#[derive(Clone, Copy, Debug)]
pub struct Parts {
    pub part_size: u64,
    pub parallel: usize,
}

impl Default for Parts {
    fn default() -> Self {
        Self { part_size: 64 << 20, parallel: 4 }
    }
}

pub async fn push(
    client: &Client,
    repo: &RepoName,
    tag: &Tag,
    inputs: &[PathBuf],
    annotations: BTreeMap<String, String>,
    progress: Progress,
    parts: Parts,
) -> Result<PushReport> {
    // Files larger than a part are hashed into their parts' chaining values
    // (the digest comes with them); the rest are hashed whole.
    type Hashed = (Vec<LocalFile>, Vec<Digest>, BTreeMap<Digest, (u64, Vec<ChainingValue>)>);
    let files = {
        let inputs = inputs.to_vec();
        tokio::task::spawn_blocking(move || -> Result<Hashed> {
            let files = tree::collect(&inputs)?;
            let (large, small): (Vec<usize>, Vec<usize>) =
                (0..files.len()).partition(|&i| files[i].size > parts.part_size);
            let mut digests = vec![Digest::of(b""); files.len()];
            let hashed = tree::hash_all(&small.iter().map(|&i| files[i].clone()).collect::<Vec<_>>())?;
            for (&i, digest) in small.iter().zip(hashed) {
                digests[i] = digest;
            }
            let mut plans = BTreeMap::new();
            for i in large {
                let part_size = crate::resumable::part_size_for(files[i].size, parts.part_size);
                let (digest, cvs) = tree::plan_file(&files[i].source, files[i].size, part_size)?;
                digests[i] = digest;
                plans.insert(digest, (part_size, cvs));
            }
            Ok((files, digests, plans))
        })
        .await
        .map_err(|e| CliError::Io(e.to_string()))??
    };
    let (files, digests, plans) = files;
    let total_bytes: u64 = files.iter().map(|f| f.size).sum();

    // One upload per distinct digest, of the first file that has it.
    let mut unique: BTreeMap<Digest, &LocalFile> = BTreeMap::new();
    for (file, digest) in files.iter().zip(&digests) {
        unique.entry(*digest).or_insert(file);
    }
    let all: Vec<Digest> = unique.keys().copied().collect();
    let (mut uploaded, mut uploaded_bytes, mut round) = (0usize, 0u64, 0);
    let (digest, created) = loop {
        let missing = client.missing(repo, &all).await?;
        let to_upload: Vec<(Digest, LocalFile)> = missing.iter().map(|d| (*d, unique[d].clone())).collect();
        let upload_bytes: u64 = to_upload.iter().map(|(_, f)| f.size).sum();

        let bar = match progress {
            Progress::Bar => {
                let bar = indicatif::ProgressBar::new(upload_bytes);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                bar.set_message(format!("uploading {} of {} files", to_upload.len(), files.len()));
                Some(bar)
            }
            _ => None,
        };
        if progress == Progress::Lines {
            eprintln!(
                "{} files, {} bytes; {} to upload ({} bytes)",
                files.len(),
                total_bytes,
                to_upload.len(),
                upload_bytes
            );
        }
        let counter = Arc::new(bar.clone());
        let plans = &plans;
        futures_util::stream::iter(to_upload.iter().map(|(digest, file)| {
            let counter = counter.clone();
            async move {
                let on_bytes = move |n| {
                    if let Some(bar) = counter.as_ref() {
                        bar.inc(n);
                    }
                };
                match plans.get(digest) {
                    Some((part_size, cvs)) => {
                        let (file, size, parallel) = (&file.source, file.size, parts.parallel);
                        crate::resumable::upload(client, repo, file, size, *digest, *part_size, cvs, parallel, on_bytes)
                            .await?
                    }
                    None => {
                        client.put_blob_file(repo, digest, &file.source, file.size, on_bytes).await?;
                    }
                }
                if progress == Progress::Lines {
                    eprintln!("uploaded {} ({} bytes)", file.path, file.size);
                }
                Ok::<_, CliError>(())
            }
        }))
        .buffer_unordered(UPLOAD_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }

        let manifest = ManifestRequest {
            files: files
                .iter()
                .zip(&digests)
                .map(|(f, d)| FileEntry { path: f.path.clone(), digest: *d, size: f.size })
                .collect(),
            annotations: annotations.clone(),
        };
        let bound = client.put_tag(repo, tag, &manifest).await;
        uploaded += to_upload.len();
        uploaded_bytes += upload_bytes;
        // Bytes the server lost since it listed what was missing (quarantined
        // by its scrub, or unlinked): asked again, uploaded again, once.
        if let Err(CliError::Api { code, .. }) = &bound
            && code == "manifest_blob_unknown"
            && round == 0
        {
            eprintln!("amber: the server no longer has some of the files; uploading them again");
            round += 1;
            continue;
        }
        let (_, digest, created) = bound.map_err(|err| match err {
            CliError::Conflict { status, code, detail, .. } if code == "tag_exists" => CliError::Conflict {
                status,
                code,
                message: format!("{repo}:{tag} is already bound to other content; tags never move, so push a new tag"),
                detail,
            },
            CliError::Conflict { status, code, detail, .. } if code == "tag_expired" => CliError::Conflict {
                status,
                code,
                message: format!(
                    "{repo}:{tag} has expired; an expired tag's name is never bound again, so push a new tag"
                ),
                detail,
            },
            other => other,
        })?;
        break (digest, created);
    };
    Ok(PushReport {
        repository: repo.clone(),
        tag: tag.clone(),
        digest,
        created,
        files: files.len(),
        bytes: total_bytes,
        uploaded,
        uploaded_bytes,
    })
}
