//! Tags and manifests on sled.

use amber_core::dsse::Envelope;
use amber_core::wire::TagEntry;
use amber_core::{Digest, RepoName, Tag};
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;
use time::OffsetDateTime;

use super::stats::{RepoDelta, add_repo};
use super::{SledMeta, append_audit_in, parse_link, ref_key, repo_key, tag_record, transaction_error};
use crate::meta::TagStore;
use crate::meta::{AuditBuild, Bound, MetaError, Signed, TagRecord};

impl TagStore for SledMeta {
    async fn bind_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
        signed: &Signed,
        files: &[(Digest, u64)],
        at: OffsetDateTime,
        audit: AuditBuild,
    ) -> Result<Bound, MetaError> {
        let tag_key = repo_key(repo, tag.as_str().as_bytes());
        let manifest_key = repo_key(repo, digest.as_bytes());
        let record = serde_json::to_vec(&TagRecord::bound(*digest, at))?;
        let envelope = serde_json::to_vec(&signed.envelope)?;
        let attestations =
            (!signed.attestations.is_empty()).then(|| serde_json::to_vec(&signed.attestations)).transpose()?;
        let (repo, tag, manifest, files) = (repo.clone(), tag.clone(), *digest, files.to_vec());
        self.write("bind_tag", move |t| {
            if let Some(existing) = tag_record(&t.tags, &tag_key)? {
                return Ok(Bound::Existing(existing));
            }
            // Under the write lock: no unlink can run between this check and the commit.
            let mut gone = Vec::new();
            for (blob, size) in &files {
                match t.links.get(repo_key(&repo, blob.as_bytes()))? {
                    Some(value) if parse_link(&value)?.0 == *size => {}
                    _ => gone.push(*blob),
                }
            }
            if !gone.is_empty() {
                return Ok(Bound::BlobsGone(gone));
            }
            let refs: Vec<Vec<u8>> =
                files.iter().map(|(blob, _)| ref_key(repo.as_str().as_bytes(), blob, &manifest)).collect();
            (&t.tags, &t.manifests, &t.refs, &t.attestations, &t.stats, &t.audit, &t.audit_head)
                .transaction(|(tags, manifests, refs_tree, attestations_tree, stats, audit_tree, head)| {
                    if let Some(existing) = tags.get(&tag_key)? {
                        let existing = serde_json::from_slice(&existing)
                            .map_err(|e| ConflictableTransactionError::Abort(MetaError::from(e)))?;
                        return Ok(Bound::Existing(existing));
                    }
                    manifests.insert(manifest_key.as_slice(), envelope.as_slice())?;
                    if let Some(attestations) = &attestations {
                        attestations_tree.insert(manifest_key.as_slice(), attestations.as_slice())?;
                    }
                    tags.insert(tag_key.as_slice(), record.as_slice())?;
                    add_repo(
                        stats,
                        &repo,
                        RepoDelta { tags: 1, live_tags: 1, pushed_at: Some(at), ..Default::default() },
                    )?;
                    for key in &refs {
                        refs_tree.insert(key.as_slice(), tag.as_str().as_bytes())?;
                    }
                    append_audit_in(audit_tree, head, &*audit)?;
                    Ok(Bound::Created)
                })
                .map_err(transaction_error)
        })
        .await
    }

    async fn repositories(&self, after: Option<&RepoName>, limit: usize) -> Result<Vec<RepoName>, MetaError> {
        let found = crate::meta::StatsStore::repo_stats(self, after, limit).await?;
        Ok(found.into_iter().map(|(name, _)| name).collect())
    }

    async fn tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<TagRecord>, MetaError> {
        let key = repo_key(repo, tag.as_str().as_bytes());
        self.read("tag", move |t| tag_record(&t.tags, &key)).await
    }

    async fn manifest(&self, repo: &RepoName, digest: &Digest) -> Result<Option<Envelope>, MetaError> {
        let key = repo_key(repo, digest.as_bytes());
        self.read("manifest", move |t| match t.manifests.get(key)? {
            Some(json) => Ok(Some(serde_json::from_slice(&json)?)),
            None => Ok(None),
        })
        .await
    }

    async fn list_tags(&self, repo: &RepoName, after: Option<&str>, limit: usize) -> Result<Vec<TagEntry>, MetaError> {
        let prefix = repo_key(repo, b"");
        let start = match after {
            // The smallest key after `after`: itself followed by a NUL.
            Some(after) => repo_key(repo, format!("{after}\0").as_bytes()),
            None => prefix.clone(),
        };
        self.read("list_tags", move |t| {
            let mut entries = Vec::new();
            for item in t.tags.range(start..) {
                let (key, json) = item?;
                if !key.starts_with(&prefix) || entries.len() == limit {
                    break;
                }
                let name = std::str::from_utf8(&key[prefix.len()..]).map_err(|e| MetaError::Corrupt(e.to_string()))?;
                let record: TagRecord = serde_json::from_slice(&json)?;
                entries.push(
                    record.entry(
                        name.parse().map_err(|e: amber_core::name::NameError| MetaError::Corrupt(e.to_string()))?,
                    ),
                );
            }
            Ok(entries)
        })
        .await
    }
}
