//! The OCI front door's records on sled.

use amber_core::{Digest, RepoName, Tag};
use sled::Transactional;

use super::{SledMeta, append_audit_in, ref_key, repo_key, transaction_error};
use crate::blobs::Stored;
use crate::meta::OciStore;
use crate::meta::{AuditBuild, MetaError, OciManifest, Referrer};

/// `repo \0 subject \0`: the prefix of a subject's referrers.
fn referrers_prefix(repo: &RepoName, subject: &str) -> Vec<u8> {
    let mut key = repo_key(repo, subject.as_bytes());
    key.push(0);
    key
}

impl OciStore for SledMeta {
    async fn put_alias(&self, alias: &str, digest: &Digest) -> Result<(), MetaError> {
        let (alias, digest) = (alias.to_owned(), *digest);
        self.write("put_alias", move |t| {
            // First writer wins: an alias names one content, ever.
            t.oci_aliases.compare_and_swap(alias.as_bytes(), None::<&[u8]>, Some(&digest.as_bytes()[..]))?.ok();
            if alias.starts_with("sha256:") {
                t.oci_sha256.compare_and_swap(&digest.as_bytes()[..], None::<&[u8]>, Some(alias.as_bytes()))?.ok();
            }
            Ok(())
        })
        .await
    }

    async fn note_sha256(&self, sha256: &str, digest: &Digest) -> Result<(), MetaError> {
        let (alias, digest) = (sha256.to_owned(), *digest);
        self.locked("note_sha256", move |t| {
            // Both or neither, whatever a crash keeps of the unflushed writes.
            (&t.oci_aliases, &t.oci_sha256)
                .transaction(|(aliases, sha256)| {
                    if aliases.get(alias.as_bytes())?.is_none() {
                        aliases.insert(alias.as_bytes(), &digest.as_bytes()[..])?;
                    }
                    if sha256.get(digest.as_bytes())?.is_none() {
                        sha256.insert(&digest.as_bytes()[..], alias.as_bytes())?;
                    }
                    Ok(())
                })
                .map_err(transaction_error)
        })
        .await
    }

    async fn alias(&self, alias: &str) -> Result<Option<Digest>, MetaError> {
        let alias = alias.to_owned();
        self.read("alias", move |t| {
            let Some(value) = t.oci_aliases.get(alias.as_bytes())? else { return Ok(None) };
            let bytes: [u8; 32] = value.as_ref().try_into().map_err(|_| MetaError::Corrupt("oci alias".into()))?;
            Ok(Some(Digest::from_bytes(bytes)))
        })
        .await
    }

    async fn sha256_of(&self, digest: &Digest) -> Result<Option<String>, MetaError> {
        let digest = *digest;
        self.read("sha256_of", move |t| match t.oci_sha256.get(digest.as_bytes())? {
            Some(value) => {
                Ok(Some(String::from_utf8(value.to_vec()).map_err(|_| MetaError::Corrupt("sha256".into()))?))
            }
            None => Ok(None),
        })
        .await
    }

    async fn put_oci_manifest(
        &self,
        repo: &RepoName,
        digest: &str,
        manifest: &OciManifest,
        referrer: Option<&[u8]>,
        keep_with: Option<(&Tag, &Digest)>,
        audit: AuditBuild,
    ) -> Result<Stored, MetaError> {
        let key = repo_key(repo, digest.as_bytes());
        // The binding's references: retention keeps these blobs while its tag is live.
        let refs: Vec<(Vec<u8>, String)> = match keep_with {
            Some((tag, bound)) => manifest
                .blobs
                .iter()
                .map(|(blob, _)| (ref_key(repo.as_str().as_bytes(), blob, bound), tag.to_string()))
                .collect(),
            None => Vec::new(),
        };
        let value = serde_json::to_vec(manifest)?;
        let referrer = match (&manifest.subject, referrer) {
            (Some(subject), Some(descriptor)) => {
                let mut key = referrers_prefix(repo, subject);
                key.extend_from_slice(digest.as_bytes());
                Some((key, descriptor.to_vec()))
            }
            _ => None,
        };
        self.write("put_oci_manifest", move |t| {
            (&t.oci_manifests, &t.oci_referrers, &t.refs, &t.audit, &t.audit_head)
                .transaction(|(manifests, referrers, refs_tree, audit_tree, head)| {
                    if manifests.get(&key)?.is_some() {
                        return Ok(Stored::AlreadyPresent);
                    }
                    manifests.insert(key.as_slice(), value.as_slice())?;
                    for (key, tag) in &refs {
                        refs_tree.insert(key.as_slice(), tag.as_bytes())?;
                    }
                    if let Some((key, descriptor)) = &referrer {
                        referrers.insert(key.as_slice(), descriptor.as_slice())?;
                    }
                    append_audit_in(audit_tree, head, &*audit)?;
                    Ok(Stored::Created)
                })
                .map_err(transaction_error)
        })
        .await
    }

    async fn put_bound_tag(&self, repo: &RepoName, digest: &str, tag: &Tag) -> Result<(), MetaError> {
        let (key, tag) = (repo_key(repo, digest.as_bytes()), tag.to_string());
        self.write("put_bound_tag", move |t| {
            t.oci_tags.compare_and_swap(key, None::<&[u8]>, Some(tag.as_bytes()))?.ok();
            Ok(())
        })
        .await
    }

    async fn bound_tag(&self, repo: &RepoName, digest: &str) -> Result<Option<Tag>, MetaError> {
        let key = repo_key(repo, digest.as_bytes());
        self.read("bound_tag", move |t| match t.oci_tags.get(key)? {
            Some(value) => std::str::from_utf8(&value)
                .ok()
                .and_then(|text| text.parse().ok())
                .map(Some)
                .ok_or_else(|| MetaError::Corrupt("bound tag".into())),
            None => Ok(None),
        })
        .await
    }

    async fn oci_manifest(&self, repo: &RepoName, digest: &str) -> Result<Option<OciManifest>, MetaError> {
        let key = repo_key(repo, digest.as_bytes());
        self.read("oci_manifest", move |t| match t.oci_manifests.get(key)? {
            Some(value) => Ok(Some(serde_json::from_slice(&value)?)),
            None => Ok(None),
        })
        .await
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Referrer>, MetaError> {
        let prefix = referrers_prefix(repo, subject);
        let start = match after {
            Some(after) => {
                let mut key = prefix.clone();
                key.extend_from_slice(after.as_bytes());
                key.push(0);
                key
            }
            None => prefix.clone(),
        };
        self.read("referrers", move |t| {
            let mut found = Vec::new();
            for item in t.oci_referrers.range(start..) {
                let (key, value) = item?;
                if !key.starts_with(&prefix) || found.len() >= limit {
                    break;
                }
                let digest = String::from_utf8(key[prefix.len()..].to_vec())
                    .map_err(|_| MetaError::Corrupt("referrer key".into()))?;
                found.push(Referrer { digest, descriptor: value.to_vec() });
            }
            Ok(found)
        })
        .await
    }
}
