//! `OWNER/NAME:TAG` and `OWNER/NAME@blake3:...` references.

use std::str::FromStr;

use amber_core::manifest::Expected;
use amber_core::{Digest, RepoName, Tag};

#[derive(Clone, Debug)]
pub struct Reference {
    pub repo: RepoName,
    pub target: Expected,
}

impl Reference {
    pub fn tag(&self) -> Option<&Tag> {
        match &self.target {
            Expected::Tag(tag) => Some(tag),
            Expected::Digest(_) => None,
        }
    }
}

impl FromStr for Reference {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: String| format!("{s:?} is not OWNER/NAME:TAG or OWNER/NAME@blake3:<hex>: {why}");
        if let Some((repo, digest)) = s.split_once('@') {
            let repo = repo.parse().map_err(|e| bad(format!("{e}")))?;
            let digest: Digest = digest.parse().map_err(|e| bad(format!("{e}")))?;
            return Ok(Self { repo, target: Expected::Digest(digest) });
        }
        let (repo, tag) = s.rsplit_once(':').ok_or_else(|| bad("no :TAG".into()))?;
        Ok(Self {
            repo: repo.parse().map_err(|e| bad(format!("{e}")))?,
            target: Expected::Tag(tag.parse().map_err(|e| bad(format!("{e}")))?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tags_and_digests() {
        let r: Reference = "acme/web:1.4.2".parse().unwrap();
        assert_eq!(r.repo.as_str(), "acme/web");
        assert_eq!(r.tag().unwrap().as_str(), "1.4.2");
        let d = Digest::of(b"x");
        let r: Reference = format!("acme/web@{d}").parse().unwrap();
        assert!(matches!(r.target, Expected::Digest(x) if x == d));
        for bad in ["acme/web", "acme:1", "acme/web:", "acme/web@sha256:00", "Acme/web:1"] {
            assert!(bad.parse::<Reference>().is_err(), "{bad}");
        }
    }
}
