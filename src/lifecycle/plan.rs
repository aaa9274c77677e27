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

#[cfg(test)]
mod tests {
    use super::*;
    use amber_core::Digest;

    use crate::meta::LinkView;

    fn at(days_ago: i64, now: OffsetDateTime) -> OffsetDateTime {
        now - Duration::days(days_ago)
    }

    /// Tags `(name, days ago, held)`, each its own manifest naming blob `name`.
    fn view(tags: &[(&str, i64, bool)], now: OffsetDateTime) -> RepoView {
        let mut view = RepoView::default();
        for (name, days, held) in tags {
            let manifest = Digest::of(format!("m-{name}").as_bytes());
            view.tags.push(TagView {
                tag: name.parse().unwrap(),
                manifest,
                bound_at: at(*days, now),
                held: *held,
                expired: false,
            });
            view.references.push((manifest, Digest::of(name.as_bytes())));
            view.links.push(LinkView { digest: Digest::of(name.as_bytes()), size: 1, created_at: at(*days, now) });
        }
        view
    }

    fn expired(policy: &RetentionPolicy, tags: &[(&str, i64, bool)]) -> Vec<String> {
        let now = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
        let plan = plan(&"acme/web".parse().unwrap(), policy, &view(tags, now), now);
        plan.expire.iter().map(|e| e.tag.to_string()).collect()
    }

    const TAGS: &[(&str, i64, bool)] = &[
        ("v1.0", 90, false),
        ("b1", 40, false),
        ("b2", 20, true),
        ("b3", 10, false),
        ("b4", 2, false),
        ("b5", 1, false),
    ];

    #[test]
    fn each_rule_keeps_and_any_rule_is_enough() {
        let p = |keep_last, keep_days, keep_tags: Option<&[&str]>| RetentionPolicy {
            keep_last,
            keep_days,
            keep_tags: keep_tags.map(|g| g.iter().map(|s| s.to_string()).collect()),
            untagged_days: Some(7),
        };
        // Held b2 survives every rule.
        assert_eq!(expired(&p(Some(2), None, None), TAGS), ["b1", "b3", "v1.0"]);
        assert_eq!(expired(&p(None, Some(15), None), TAGS), ["b1", "v1.0"]);
        assert_eq!(expired(&p(None, None, Some(&["v*"])), TAGS), ["b1", "b3", "b4", "b5"]);
        assert_eq!(expired(&p(Some(1), Some(3), Some(&["v*"])), TAGS), ["b1", "b3"]);
        // Whole-name globs: `b` keeps nothing, `*1` keeps b1 (and not v1.0).
        assert_eq!(expired(&p(None, None, Some(&["b", "*1"])), TAGS), ["b3", "b4", "b5", "v1.0"]);
        // No keep rule: every tag is kept.
        assert!(expired(&p(None, None, None), TAGS).is_empty());
    }

    #[test]
    fn keep_last_counts_live_tags_newest_first_ties_by_name() {
        let policy = RetentionPolicy { keep_last: Some(2), ..Default::default() };
        let same_second = [("a", 1, false), ("c", 1, false), ("b", 1, false)];
        assert_eq!(expired(&policy, &same_second), ["a"]);
        let now = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
        let mut v = view(&[("old", 3, false), ("mid", 2, false), ("new", 1, false)], now);
        v.tags[2].expired = true; // "new" was yanked: it takes no place.
        let planned = plan(&"acme/web".parse().unwrap(), &policy, &v, now);
        assert!(planned.expire.is_empty(), "{planned:?}");
    }

    #[test]
    fn links_go_when_old_and_referenced_by_no_tag_live_after_the_run() {
        let now = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
        let mut v = view(&[("keep", 30, false), ("goes", 30, false), ("young", 1, false)], now);
        v.links.push(LinkView { digest: Digest::of(b"loose-old"), size: 5, created_at: at(8, now) });
        v.links.push(LinkView { digest: Digest::of(b"loose-new"), size: 5, created_at: at(6, now) });
        let policy = RetentionPolicy {
            keep_tags: Some(vec!["keep".into(), "young".into()]),
            untagged_days: Some(7),
            ..Default::default()
        };
        let planned = plan(&"acme/web".parse().unwrap(), &policy, &v, now);
        let mut unlinked: Vec<Digest> = planned.unlink.iter().map(|u| u.digest).collect();
        unlinked.sort_by_key(|d| d.to_string());
        let mut want = vec![Digest::of(b"goes"), Digest::of(b"loose-old")];
        want.sort_by_key(|d| d.to_string());
        assert_eq!(unlinked, want);
        // untagged_days 0: every unreferenced link older than now.
        let policy = RetentionPolicy { untagged_days: Some(0), ..Default::default() };
        let planned = plan(&"acme/web".parse().unwrap(), &policy, &v, now);
        assert_eq!(planned.unlink.len(), 2, "only the two loose links; every tag is kept");
    }
}
