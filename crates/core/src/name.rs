//! Validated names: repositories (`owner/name`), repository patterns in grants
//! (`owner/name`, `owner/*`, and `*` for admin tokens only) and tags.
//!
//! Parse, don't validate: a handler holding a `RepoName` never sees `..`, upper
//! case or a NUL, so names are safe to use in storage keys as they are.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error(
        "repository must be <owner>/<name>, each 1 to 64 characters of a-z 0-9 . _ - starting with a letter or digit"
    )]
    Repo,
    #[error("repository pattern must be <owner>/<name>, <owner>/* or (admin tokens only) *")]
    Pattern,
    #[error("tag must be 1 to 128 characters of A-Z a-z 0-9 . _ - starting with a letter or digit")]
    Tag,
}

fn valid_segment(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=64).contains(&b.len())
        && b[0].is_ascii_lowercase() | b[0].is_ascii_digit()
        && b.iter().all(|&c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
        && !s.contains("..")
}

/// A repository name, `<owner>/<name>`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    pub fn owner(&self) -> &str {
        self.0.split_once('/').map_or("", |(owner, _)| owner)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for RepoName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((owner, name)) if valid_segment(owner) && valid_segment(name) => Ok(Self(s.to_owned())),
            _ => Err(NameError::Repo),
        }
    }
}

/// What a grant applies to: one repository, every repository of an owner, or all.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum RepoPattern {
    Exact(RepoName),
    Owner(String),
    /// `*`: only admin tokens may hold it (checked where grants are accepted).
    Any,
}

impl RepoPattern {
    pub fn matches(&self, repo: &RepoName) -> bool {
        match self {
            Self::Exact(name) => name == repo,
            Self::Owner(owner) => repo.owner() == owner,
            Self::Any => true,
        }
    }
}

impl FromStr for RepoPattern {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "*" {
            return Ok(Self::Any);
        }
        match s.split_once('/') {
            Some((owner, "*")) if valid_segment(owner) => Ok(Self::Owner(owner.to_owned())),
            _ => s.parse().map(Self::Exact).map_err(|_| NameError::Pattern),
        }
    }
}

impl fmt::Display for RepoPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name.as_str()),
            Self::Owner(owner) => write!(f, "{owner}/*"),
            Self::Any => f.write_str("*"),
        }
    }
}

/// A tag: a human name bound once to one manifest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let ok = (1..=128).contains(&b.len())
            && b[0].is_ascii_alphanumeric()
            && b.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
        if ok { Ok(Self(s.to_owned())) } else { Err(NameError::Tag) }
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Debug as the quoted string, and serde through `Display` / `FromStr`, so the
/// wire form and the validated form can never disagree.
macro_rules! string_form {
    ($($t:ty),*) => {$(
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.to_string())
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}

string_form!(RepoName, RepoPattern, Tag);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names() {
        for good in ["acme/web", "a/b", "acme/web.v2", "0x/x_", "a-b/c_d.e"] {
            assert!(good.parse::<RepoName>().is_ok(), "{good}");
        }
        let long = "a".repeat(65);
        for bad in [
            "acme",
            "acme/",
            "/web",
            "acme/web/x",
            "Acme/web",
            "acme/../x",
            "acme/..",
            "acme/a..b",
            "-acme/web",
            "acme/.web",
            "acme/we\0b",
            "acme/%2e%2e",
            "acme/web ",
            "",
            &format!("acme/{long}"),
        ] {
            assert_eq!(bad.parse::<RepoName>(), Err(NameError::Repo), "{bad:?}");
        }
        assert!(format!("acme/{}", "a".repeat(64)).parse::<RepoName>().is_ok());
    }

    #[test]
    fn patterns_match_what_they_name() {
        let web: RepoName = "acme/web".parse().unwrap();
        let other: RepoName = "evil/web".parse().unwrap();
        let owner: RepoPattern = "acme/*".parse().unwrap();
        assert!(owner.matches(&web) && !owner.matches(&other));
        let exact: RepoPattern = "acme/web".parse().unwrap();
        assert!(exact.matches(&web) && !exact.matches(&"acme/webx".parse().unwrap()));
        assert!("*".parse::<RepoPattern>().unwrap().matches(&other));
        for bad in ["acme/w*", "*/web", "acme/**", "ACME/*", ""] {
            assert!(bad.parse::<RepoPattern>().is_err(), "{bad}");
        }
        assert_eq!(owner.to_string(), "acme/*");
    }

    #[test]
    fn tags() {
        for good in ["1.4.2", "build-1234", "Latest", "a", &"x".repeat(128)] {
            assert!(good.parse::<Tag>().is_ok(), "{good}");
        }
        for bad in ["", "-x", ".x", "a/b", "a b", &"x".repeat(129), "ä"] {
            assert!(bad.parse::<Tag>().is_err(), "{bad}");
        }
    }
}
