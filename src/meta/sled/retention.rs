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
use crate::meta::{
    AuditBuild, Expiring, Hold, LinkView, MetaError, RepoView, TagChange, TagRecord, TagView, Unlink, Unlinking,
};

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

    async fn expire_tags(
        &self,
        repo: &RepoName,
        items: &[Expiring],
        policy: Option<&PolicyInfo>,
    ) -> Result<Vec<TagChange>, MetaError> {
        let items = items.to_vec();
        let policy = policy.map(|p| (p.scope.clone(), p.digest));
        let repo = repo.clone();
        self.write("expire_tags", move |t| {
            // Under the write lock: what is decided here holds until the commit.
            if let Some((scope, digest)) = &policy {
                let current = effective_policy(&t.policies, &repo)?;
                if current.is_none_or(|c| &c.scope != scope || &c.digest != digest) {
                    return Ok(vec![TagChange::Stale; items.len()]);
                }
            }
            let mut outcomes = Vec::with_capacity(items.len());
            let mut changes = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for (i, item) in items.iter().enumerate() {
                let key = repo_key(&repo, item.tag.as_str().as_bytes());
                let outcome = match tag_record(&t.tags, &key)? {
                    None => TagChange::Unknown,
                    Some(record) if !seen.insert(key.clone()) => TagChange::Unchanged(record),
                    Some(record) if record.expiry.is_some() => TagChange::Unchanged(record),
                    Some(record) if record.hold.is_some() => TagChange::Held(record),
                    Some(mut record) => {
                        record.expiry = Some(item.expiry.clone());
                        changes.push((i, key, serde_json::to_vec(&record)?));
                        TagChange::Changed(record)
                    }
                };
                outcomes.push(outcome);
            }
            if changes.is_empty() {
                return Ok(outcomes);
            }
            (&t.tags, &t.stats, &t.audit, &t.audit_head)
                .transaction(|(tags, stats, audit_tree, head)| {
                    for (i, key, json) in &changes {
                        tags.insert(key.as_slice(), json.as_slice())?;
                        append_audit_in(audit_tree, head, &*items[*i].audit)?;
                    }
                    let live_tags = -(changes.len() as i64);
                    add_repo(stats, &repo, RepoDelta { live_tags, ..Default::default() })
                })
                .map_err(transaction_error)?;
            Ok(outcomes)
        })
        .await
    }

    async fn unlink_blobs(
        &self,
        repo: &RepoName,
        items: &[Unlinking],
        created_before: OffsetDateTime,
    ) -> Result<Vec<Unlink>, MetaError> {
        let (repo, items) = (repo.clone(), items.to_vec());
        self.write("unlink_blobs", move |t| {
            let _changing = t.link_sizes.changing();
            let mut outcomes = Vec::with_capacity(items.len());
            // (item, link key, holder key, size, the digest's last link)
            let mut removals = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let digest = item.digest;
                let link_key = repo_key(&repo, digest.as_bytes());
                let Some(value) = t.links.get(&link_key)? else {
                    outcomes.push(Unlink::Gone);
                    continue;
                };
                let (size, created_at) = parse_link(&value)?;
                if created_at >= created_before {
                    outcomes.push(Unlink::Fresh);
                    continue;
                }
                // Under the write lock, so no bind commits between this check and the removal.
                let mut referenced = false;
                for item in t.refs.scan_prefix(&link_key) {
                    let (_, tag) = item?;
                    let tag = std::str::from_utf8(&tag).map_err(|e| MetaError::Corrupt(e.to_string()))?;
                    if tag_record(&t.tags, &repo_key(&repo, tag.as_bytes()))?.is_some_and(|r| r.expiry.is_none()) {
                        referenced = true;
                        break;
                    }
                }
                if referenced {
                    outcomes.push(Unlink::Referenced);
                    continue;
                }
                let holder = holder_key(&digest, repo.as_str().as_bytes());
                // Under the write lock: no other link of the digest appears before the commit.
                let last =
                    t.linked_by.scan_prefix(digest.as_bytes()).keys().all(|k| k.is_ok_and(|k| k == holder.as_slice()));
                removals.push((i, link_key, holder, size, last));
                outcomes.push(Unlink::Unlinked);
            }
            if removals.is_empty() {
                return Ok(outcomes);
            }
            let since = OffsetDateTime::now_utc();
            (&t.links, &t.linked_by, &t.reclaim, &t.stats, &t.audit, &t.audit_head)
                .transaction(|(links, linked_by, reclaim, stats, audit_tree, head)| {
                    let (mut repo_delta, mut store_delta) = (RepoDelta::default(), StoreDelta::default());
                    for (i, link_key, holder, size, last) in &removals {
                        let digest = items[*i].digest;
                        links.remove(link_key.as_slice())?;
                        linked_by.remove(holder.as_slice())?;
                        let bytes = *size as i64;
                        repo_delta.links -= 1;
                        repo_delta.bytes -= bytes;
                        store_delta.links -= 1;
                        store_delta.bytes -= bytes;
                        if *last && reclaim.get(digest.as_bytes())?.is_none() {
                            let waiting = serde_json::to_vec(&Waiting { size: *size, since, marked: false })
                                .map_err(|e| ConflictableTransactionError::Abort(MetaError::from(e)))?;
                            reclaim.insert(digest.as_bytes(), waiting)?;
                            store_delta.pending += 1;
                            store_delta.pending_bytes += bytes;
                        }
                        append_audit_in(audit_tree, head, &*items[*i].audit)?;
                    }
                    add_repo(stats, &repo, repo_delta)?;
                    add_store(stats, store_delta)
                })
                .map_err(transaction_error)?;
            Ok(outcomes)
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
