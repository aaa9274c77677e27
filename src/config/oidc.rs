//! Issuers the operator trusts, as the TOML file names them
//! (`[[oidc.issuers]]`), checked once at start.

use std::collections::HashSet;

use anyhow::{Context, bail};
use serde::Deserialize;

/// Which claims a publisher of this issuer matches on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IssuerKind {
    Github,
    Gitlab,
    Generic,
}

impl IssuerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Github => "github",
            Self::Gitlab => "gitlab",
            Self::Generic => "generic",
        }
    }
}

/// One `[[oidc.issuers]]` table.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// How publishers refer to it.
    pub name: String,
    /// Must equal the ID token's `iss` exactly.
    pub url: String,
    pub kind: IssuerKind,
    /// The `aud` an ID token must carry, alone.
    #[serde(default = "default_audience")]
    pub audience: String,
    /// ID tokens whose `exp - iat` exceeds this many seconds are refused.
    #[serde(default = "default_max_lifetime")]
    pub max_id_token_lifetime: u64,
    /// Accept a plain-`http` issuer (tests on 127.0.0.1 only).
    #[serde(default)]
    pub allow_insecure_http: bool,
}

fn default_audience() -> String {
    "amber".into()
}

fn default_max_lifetime() -> u64 {
    6 * 60 * 60
}

/// The `[oidc]` table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
}

impl OidcConfig {
    /// Refuses what would make trust ambiguous or weak: two issuers of one
    /// name or URL, a URL that is not plain https, an empty audience.
    pub fn validate(&self) -> anyhow::Result<()> {
        let (mut names, mut urls) = (HashSet::new(), HashSet::new());
        for issuer in &self.issuers {
            let name = &issuer.name;
            if name.is_empty()
                || name.len() > 64
                || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            {
                bail!("oidc issuer name {name:?}: 1 to 64 of a-z, 0-9, - and _");
            }
            if !names.insert(name.as_str()) {
                bail!("oidc issuer {name:?} is configured twice");
            }
            if !urls.insert(issuer.url.as_str()) {
                bail!("oidc issuer URL {} is configured twice", issuer.url);
            }
            let url = reqwest::Url::parse(&issuer.url).with_context(|| format!("oidc issuer {name:?}: url"))?;
            match url.scheme() {
                "https" => {}
                "http" if issuer.allow_insecure_http => {}
                "http" => bail!("oidc issuer {name:?}: {} is not https (allow_insecure_http is for tests)", issuer.url),
                other => bail!("oidc issuer {name:?}: scheme {other} is not https"),
            }
            if url.host_str().is_none_or(str::is_empty)
                || url.query().is_some()
                || url.fragment().is_some()
                || !url.username().is_empty()
            {
                bail!("oidc issuer {name:?}: {} must be a plain URL with a host", issuer.url);
            }
            if issuer.audience.trim().is_empty() || issuer.audience.len() > 256 {
                bail!("oidc issuer {name:?}: audience must be 1 to 256 characters");
            }
            if issuer.max_id_token_lifetime == 0 || issuer.max_id_token_lifetime > 24 * 60 * 60 {
                bail!("oidc issuer {name:?}: max_id_token_lifetime must be 1 to 86400 seconds");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> anyhow::Result<OidcConfig> {
        let config: OidcConfig = toml::from_str(toml)?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn issuers_are_checked_at_start() {
        let ok = config(
            r#"[[issuers]]
name = "github"
url = "https://token.actions.githubusercontent.com"
kind = "github""#,
        )
        .unwrap();
        assert_eq!(ok.issuers[0].audience, "amber");
        assert_eq!(ok.issuers[0].max_id_token_lifetime, 21600);
        for bad in [
            "[[issuers]]\nname = \"g\"\nurl = \"http://example.com\"\nkind = \"github\"",
            "[[issuers]]\nname = \"G\"\nurl = \"https://example.com\"\nkind = \"github\"",
            "[[issuers]]\nname = \"g\"\nurl = \"https://example.com\"\nkind = \"jenkins\"",
            "[[issuers]]\nname = \"g\"\nurl = \"https://example.com?x=1\"\nkind = \"generic\"",
            "[[issuers]]\nname = \"g\"\nurl = \"https://example.com\"\nkind = \"generic\"\naudience = \"\"",
            "[[issuers]]\nname = \"g\"\nurl = \"https://a.example\"\nkind = \"generic\"\n\
             [[issuers]]\nname = \"g\"\nurl = \"https://b.example\"\nkind = \"generic\"",
            "[[issuers]]\nname = \"g\"\nurl = \"https://a.example\"\nkind = \"generic\"\nextra = 1",
        ] {
            assert!(config(bad).is_err(), "{bad}");
        }
        assert!(config("[[issuers]]\nname = \"t\"\nurl = \"http://127.0.0.1:1\"\nkind = \"generic\"\nallow_insecure_http = true").is_ok());
    }
}
