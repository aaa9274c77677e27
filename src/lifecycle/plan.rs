//! The retention plan: which live tags a policy expires and which blob links
//! it removes, from one repository's view at one moment. Pure, so that a
//! plan and a run on the same state select the same tags and links.

use std::collections::HashSet;

use amber_core::RepoName;
use amber_core::wire::{PlannedExpiry, PlannedUnlink, RetentionPlan, RetentionPolicy};
use time::{Duration, OffsetDateTime};

use super::policy::{self, DEFAULT_UNTAGGED_DAYS};
use crate::meta::{RepoView, TagView};

/// A link created before this is old enough to remove when unreferenced.
pub fn unlink_cutoff(policy: &RetentionPolicy, now: OffsetDateTime) -> OffsetDateTime {
    now - Duration::days(i64::from(policy.untagged_days.unwrap_or(DEFAULT_UNTAGGED_DAYS)))
}

/// True when a rule of `policy` keeps `tag`. `rank` is its place among the
/// repository's live tags, newest first.
fn kept(policy: &RetentionPolicy, tag: &TagView, rank: usize, now: OffsetDateTime) -> bool {
    tag.held
        || policy.keep_last.is_some_and(|n| rank < n as usize)
        || policy.keep_days.is_some_and(|days| now - tag.bound_at < Duration::days(i64::from(days)))
        || policy
            .keep_tags
            .as_ref()
            .is_some_and(|globs| globs.iter().any(|g| policy::glob_matches(g, tag.tag.as_str())))
}

/// What `policy` does to `repo` at `now`: the live tags no rule keeps (only
/// if the policy has a keep rule), then the links created before the cutoff
/// that no manifest of a tag still live afterwards references.
pub fn plan(repo: &RepoName, policy: &RetentionPolicy, view: &RepoView, now: OffsetDateTime) -> RetentionPlan {
    let mut live: Vec<&TagView> = view.tags.iter().filter(|t| !t.expired).collect();
    // Newest first; ties (bound in the same second) by name, last first.
    live.sort_by(|a, b| b.bound_at.cmp(&a.bound_at).then_with(|| b.tag.as_str().cmp(a.tag.as_str())));
    let mut expire = Vec::new();
    let mut still_live = HashSet::new();
    for (rank, tag) in live.iter().enumerate() {
        if policy::has_keep_rule(policy) && !kept(policy, tag, rank, now) {
            expire.push(PlannedExpiry {
                repository: repo.clone(),
                tag: tag.tag.clone(),
                manifest: tag.manifest,
                bound_at: tag.bound_at,
            });
        } else {
            still_live.insert(tag.manifest);
        }
    }
    expire.sort_by(|a, b| a.tag.as_str().cmp(b.tag.as_str()));
    let referenced: HashSet<_> =
        view.references.iter().filter(|(manifest, _)| still_live.contains(manifest)).map(|(_, blob)| *blob).collect();
    let cutoff = unlink_cutoff(policy, now);
    let mut unlink: Vec<PlannedUnlink> = view
        .links
        .iter()
        .filter(|link| link.created_at < cutoff && !referenced.contains(&link.digest))
        .map(|link| PlannedUnlink { repository: repo.clone(), digest: link.digest, size: link.size })
        .collect();
    unlink.sort_by_key(|u| u.digest.to_string());
    RetentionPlan { expire, unlink }
}
