//! Retention policies: validation with defaults filled in, the canonical
//! digest, tag-name globs, and which policy applies to a repository.

use amber_core::wire::{PolicyInfo, RetentionPolicy};
use amber_core::{Digest, RepoName, RepoPattern};

/// `untagged_days` when a policy leaves it out.
pub const DEFAULT_UNTAGGED_DAYS: u32 = 7;
const MAX_DAYS: u32 = 36_500;
const MAX_KEEP_LAST: u32 = 1_000_000;
const MAX_PATTERNS: usize = 64;
const MAX_PATTERN_LEN: usize = 256;

/// The policy as stored: checked, `untagged_days` filled in, `keep_tags`
/// deduplicated in the order given. A rule that could only be a mistake (keep
/// the last 0, keep no patterns) is refused rather than read as "keep none":
/// with another rule present it would expire tags the user meant to keep.
pub fn normalise(mut policy: RetentionPolicy) -> Result<RetentionPolicy, String> {
    if policy.keep_last == Some(0) || policy.keep_last.is_some_and(|n| n > MAX_KEEP_LAST) {
        return Err(format!("keep_last must be 1 to {MAX_KEEP_LAST}; leave it out to keep none by count"));
    }
    if policy.keep_days == Some(0) || policy.keep_days.is_some_and(|n| n > MAX_DAYS) {
        return Err(format!("keep_days must be 1 to {MAX_DAYS}; leave it out to keep none by age"));
    }
    if policy.untagged_days.is_some_and(|n| n > MAX_DAYS) {
        return Err(format!("untagged_days must be 0 to {MAX_DAYS}"));
    }
    if let Some(patterns) = &mut policy.keep_tags {
        if patterns.is_empty() || patterns.len() > MAX_PATTERNS {
            return Err(format!("keep_tags must list 1 to {MAX_PATTERNS} patterns; leave it out to keep none by name"));
        }
        for pattern in patterns.iter() {
            check_pattern(pattern)?;
        }
        let mut seen = std::collections::HashSet::new();
        patterns.retain(|p| seen.insert(p.clone()));
    }
    policy.untagged_days.get_or_insert(DEFAULT_UNTAGGED_DAYS);
    Ok(policy)
}

fn check_pattern(pattern: &str) -> Result<(), String> {
    let valid = !pattern.is_empty()
        && pattern.len() <= MAX_PATTERN_LEN
        && pattern.chars().all(|c| c == '*' || c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "keep_tags pattern {:?} must be 1 to {MAX_PATTERN_LEN} characters of A-Z a-z 0-9 . _ - and *",
            crate::error::bounded(pattern)
        ))
    }
}

/// True when the policy has a rule that keeps tags; without one it keeps
/// every tag and only cleans untagged links.
pub fn has_keep_rule(policy: &RetentionPolicy) -> bool {
    policy.keep_last.is_some() || policy.keep_days.is_some() || policy.keep_tags.is_some()
}

/// BLAKE3 of the canonical JSON: fields in name order, absent ones left out,
/// no whitespace (how `RetentionPolicy` serialises).
pub fn digest(policy: &RetentionPolicy) -> Digest {
    Digest::of(&serde_json::to_vec(policy).expect("policies serialise"))
}

/// Whole-name match where `*` matches any run of characters (none included)
/// and every other character itself.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let (pattern, name) = (pattern.as_bytes(), name.as_bytes());
    // Greedy with backtracking to the last `*`: linear in practice, and at
    // most |pattern| x |name| steps.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if p < pattern.len() && pattern[p] == name[n] {
            p += 1;
            n += 1;
        } else if let Some((star_p, star_n)) = star {
            p = star_p + 1;
            n = star_n + 1;
            star = Some((star_p, star_n + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// The policy in effect for `repo`: its own, else its owner's default.
pub fn effective<'a>(policies: &'a [PolicyInfo], repo: &RepoName) -> Option<&'a PolicyInfo> {
    let exact = policies.iter().find(|p| matches!(&p.scope, RepoPattern::Exact(name) if name == repo));
    exact.or_else(|| policies.iter().find(|p| matches!(&p.scope, RepoPattern::Owner(owner) if owner == repo.owner())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn globs_match_whole_names() {
        for (pattern, name) in
            [("v*", "v1.2"), ("*", "x"), ("release-*", "release-"), ("a*b*c", "aXbYc"), ("1.0", "1.0")]
        {
            assert!(glob_matches(pattern, name), "{pattern} {name}");
        }
        for (pattern, name) in
            [("v*", "xv1"), ("release", "release-1"), ("*-rc", "1-rc2"), ("a*b", "ab-"), ("1.0", "1x0")]
        {
            assert!(!glob_matches(pattern, name), "{pattern} {name}");
        }
    }

    /// The textbook recursive definition, exponential but plainly right.
    fn reference(pattern: &[u8], name: &[u8]) -> bool {
        match pattern.split_first() {
            None => name.is_empty(),
            Some((b'*', rest)) => (0..=name.len()).any(|i| reference(rest, &name[i..])),
            Some((c, rest)) => name.first() == Some(c) && reference(rest, &name[1..]),
        }
    }

    proptest! {
        #[test]
        fn glob_agrees_with_a_reference_matcher(pattern in "[ab.*]{0,8}", name in "[ab.]{0,10}") {
            prop_assert_eq!(glob_matches(&pattern, &name), reference(pattern.as_bytes(), name.as_bytes()));
        }
    }

    #[test]
    fn normalise_fills_defaults_and_refuses_mistakes() {
        let p = normalise(RetentionPolicy::default()).unwrap();
        assert_eq!(p.untagged_days, Some(DEFAULT_UNTAGGED_DAYS));
        assert!(!has_keep_rule(&p));
        for bad in [
            RetentionPolicy { keep_last: Some(0), ..Default::default() },
            RetentionPolicy { keep_days: Some(0), ..Default::default() },
            RetentionPolicy { keep_tags: Some(vec![]), ..Default::default() },
            RetentionPolicy { keep_tags: Some(vec!["v/1".into()]), ..Default::default() },
            RetentionPolicy { untagged_days: Some(40_000), ..Default::default() },
        ] {
            assert!(normalise(bad.clone()).is_err(), "{bad:?}");
        }
        let p = normalise(RetentionPolicy { keep_tags: Some(vec!["v*".into(), "v*".into()]), ..Default::default() })
            .unwrap();
        assert_eq!(p.keep_tags, Some(vec!["v*".to_string()]));
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"keep_tags":["v*"],"untagged_days":7}"#,
            "canonical: sorted, compact, absent fields left out"
        );
    }
}
