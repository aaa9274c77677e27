//! Retention on sled.

use amber_core::wire::PolicyInfo;
use amber_core::{Digest, RepoName, RepoPattern, Tag};
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;
use time::OffsetDateTime;

use super::stats::{RepoDelta, StoreDelta, add_repo, add_store};
use super::{
    SledMeta, Waiting, append_audit_in, effective_policy, holder_key, key_digest, parse_link, repo_key, tag_record,
    transaction_error,
};
use crate::meta::RetentionStore;
use crate::meta::{AuditBuild, Expiry, Hold, LinkView, MetaError, RepoView, TagChange, TagRecord, TagView, Unlink};

impl RetentionStore for SledMeta {
    async fn hold_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        hold: &Hold,
        audit: AuditBuild,
    ) -> Result<TagChange, MetaError> {
        let hold = hold.clone();
        self.change_tag("hold_tag", repo, tag, audit, move |mut record, _| {
            if record.expiry.is_some() {
                return Ok(Err(TagChange::Expired(record)));
            }
            if record.hold.is_some() {
                return Ok(Err(TagChange::Unchanged(record)));
            }
            record.hold = Some(hold);
            Ok(Ok(record))
        })
        .await
    }

    async fn release_tag(&self, repo: &RepoName, tag: &Tag, audit: AuditBuild) -> Result<TagChange, MetaError> {
        self.change_tag("release_tag", repo, tag, audit, |mut record, _| {
            if record.hold.take().is_none() {
                return Ok(Err(TagChange::Unchanged(record)));
            }
            Ok(Ok(record))
        })
        .await
    }

    async fn expire_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        expiry: &Expiry,
        policy: Option<&PolicyInfo>,
        audit: AuditBuild,
    ) -> Result<TagChange, MetaError> {
        let expiry = expiry.clone();
        let policy = policy.map(|p| (p.scope.clone(), p.digest));
        let repo_name = repo.clone();
        self.change_tag("expire_tag", repo, tag, audit, move |mut record, t| {
            if record.expiry.is_some() {
                return Ok(Err(TagChange::Unchanged(record)));
            }
            if record.hold.is_some() {
                return Ok(Err(TagChange::Held(record)));
            }
            if let Some((scope, digest)) = &policy {
                let current = effective_policy(&t.policies, &repo_name)?;
                if current.is_none_or(|c| &c.scope != scope || &c.digest != digest) {
                    return Ok(Err(TagChange::Stale));
                }
            }
            record.expiry = Some(expiry);
            Ok(Ok(record))
        })
        .await
    }

    async fn unlink_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        created_before: OffsetDateTime,
        audit: AuditBuild,
    ) -> Result<Unlink, MetaError> {
        let (repo, digest) = (repo.clone(), *digest);
        self.write("unlink_blob", move |t| {
            let _changing = t.link_sizes.changing();
            let link_key = repo_key(&repo, digest.as_bytes());
            let Some(value) = t.links.get(&link_key)? else { return Ok(Unlink::Gone) };
            if parse_link(&value)?.1 >= created_before {
                return Ok(Unlink::Fresh);
            }
            // Under the write lock, so no bind commits between this check and the removal.
            let prefix = repo_key(&repo, digest.as_bytes());
            for item in t.refs.scan_prefix(&prefix) {
                let (_, tag) = item?;
                let tag = std::str::from_utf8(&tag).map_err(|e| MetaError::Corrupt(e.to_string()))?;
                match tag_record(&t.tags, &repo_key(&repo, tag.as_bytes()))? {
                    Some(record) if record.expiry.is_none() => return Ok(Unlink::Referenced),
                    _ => {}
                }
            }
            let holder = holder_key(&digest, repo.as_str().as_bytes());
            // Under the write lock: no other link of the digest appears before the commit.
            let last =
                t.linked_by.scan_prefix(digest.as_bytes()).keys().all(|k| k.is_ok_and(|k| k == holder.as_slice()));
            let size = parse_link(&value)?.0;
            let waiting = serde_json::to_vec(&Waiting { size, since: OffsetDateTime::now_utc(), marked: false })?;
            (&t.links, &t.linked_by, &t.reclaim, &t.stats, &t.audit, &t.audit_head)
                .transaction(|(links, linked_by, reclaim, stats, audit_tree, head)| {
                    if links.remove(link_key.as_slice())?.is_none() {
                        return Ok(Unlink::Gone);
                    }
                    linked_by.remove(holder.as_slice())?;
                    let bytes = size as i64;
                    add_repo(stats, &repo, RepoDelta { links: -1, bytes: -bytes, ..Default::default() })?;
                    add_store(stats, StoreDelta { links: -1, bytes: -bytes, ..Default::default() })?;
                    if last && reclaim.get(digest.as_bytes())?.is_none() {
                        reclaim.insert(digest.as_bytes(), waiting.as_slice())?;
                        add_store(stats, StoreDelta { pending: 1, pending_bytes: bytes, ..Default::default() })?;
                    }
                    append_audit_in(audit_tree, head, &*audit)?;
                    Ok(Unlink::Unlinked)
                })
                .map_err(transaction_error)
        })
        .await
    }

    async fn retention_view(&self, repo: &RepoName) -> Result<RepoView, MetaError> {
        let prefix = repo_key(repo, b"");
        self.read("retention_view", move |t| {
            let mut view = RepoView::default();
            for item in t.tags.scan_prefix(&prefix) {
                let (key, json) = item?;
                let name = std::str::from_utf8(&key[prefix.len()..]).map_err(|e| MetaError::Corrupt(e.to_string()))?;
                let record: TagRecord = serde_json::from_slice(&json)?;
                view.tags.push(TagView {
                    tag: name.parse().map_err(|e: amber_core::name::NameError| MetaError::Corrupt(e.to_string()))?,
                    manifest: record.digest,
                    bound_at: record.created_at,
                    held: record.hold.is_some(),
                    expired: record.expiry.is_some(),
                });
            }
            for item in t.links.scan_prefix(&prefix) {
                let (key, value) = item?;
                let (size, created_at) = parse_link(&value)?;
                view.links.push(LinkView { digest: key_digest(&key, prefix.len())?, size, created_at });
            }
            for item in t.refs.scan_prefix(&prefix) {
                let (key, _) = item?;
                view.references.push((key_digest(&key, prefix.len() + 32)?, key_digest(&key, prefix.len())?));
            }
            Ok(view)
        })
        .await
    }

    async fn put_policy(&self, info: &PolicyInfo, audit: AuditBuild) -> Result<(), MetaError> {
        let (scope, json) = (info.scope.to_string(), serde_json::to_vec(info)?);
        self.write("put_policy", move |t| {
            (&t.policies, &t.audit, &t.audit_head)
                .transaction(|(policies, audit_tree, head)| {
                    policies.insert(scope.as_bytes(), json.as_slice())?;
                    append_audit_in(audit_tree, head, &*audit)?;
                    Ok(())
                })
                .map_err(transaction_error)
        })
        .await
    }

    async fn delete_policy(&self, scope: &RepoPattern, digest: &Digest, audit: AuditBuild) -> Result<bool, MetaError> {
        let (scope, digest) = (scope.to_string(), *digest);
        self.write("delete_policy", move |t| {
            (&t.policies, &t.audit, &t.audit_head)
                .transaction(|(policies, audit_tree, head)| {
                    let Some(json) = policies.get(scope.as_bytes())? else { return Ok(false) };
                    let stored: PolicyInfo = serde_json::from_slice(&json)
                        .map_err(|e| ConflictableTransactionError::Abort(MetaError::from(e)))?;
                    if stored.digest != digest {
                        return Ok(false);
                    }
                    policies.remove(scope.as_bytes())?;
                    append_audit_in(audit_tree, head, &*audit)?;
                    Ok(true)
                })
                .map_err(transaction_error)
        })
        .await
    }

    async fn policies(&self) -> Result<Vec<PolicyInfo>, MetaError> {
        self.read("policies", |t| {
            let mut all = Vec::new();
            for item in t.policies.iter() {
                let (_, json) = item?;
                all.push(serde_json::from_slice(&json)?);
            }
            Ok(all)
        })
        .await
    }
}
