//! Trusted publishing on the wire: publishers (trust policies an admin
//! creates), the exchange of a CI platform's OpenID Connect ID token for a
//! short-lived token, and the CI identity such a token carries into the
//! signed `pushed_by.ci` of every manifest it pushes.

use std::collections::BTreeMap;

use rand::Rng;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use crate::token::CiIdentity;
use crate::token::Grant;
use crate::wire::TokenInfo;

/// A publisher's id: `pub_` and 24 hex digits.
pub fn new_publisher_id(rng: &mut impl Rng) -> String {
    let bytes: [u8; 12] = rng.r#gen();
    format!("pub_{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// True when `id` has the shape of a publisher id.
pub fn is_publisher_id(id: &str) -> bool {
    id.strip_prefix("pub_")
        .is_some_and(|hex| hex.len() == 24 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// What a GitHub Actions run must be to be trusted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubTrust {
    /// `owner/name`, compared case-insensitively.
    pub repository: String,
    /// The numeric id: a repository deleted and re-created under the same
    /// name has another.
    pub repository_id: String,
    pub repository_owner_id: String,
    /// The calling workflow's file name, as in `.github/workflows/<workflow>`.
    pub workflow: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Refs allowed (`refs/heads/main`, `refs/tags/v*`); absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refs: Option<Vec<String>>,
    /// Events allowed; absent: every event but `pull_request_target` and
    /// `workflow_run`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_events: Option<Vec<String>>,
    /// `owner/repo/.github/workflows/file.yml`, matched against
    /// `job_workflow_ref`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reusable_workflow: Option<String>,
}

/// What a GitLab CI job must be to be trusted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitlabTrust {
    /// `group/project`, compared case-insensitively.
    pub project_path: String,
    pub project_id: String,
    pub namespace_id: String,
    /// The pipeline's configuration file in the project (`.gitlab-ci.yml`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ci_config_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Refs allowed: full (`refs/heads/main`, `refs/tags/v*`) or short
    /// (`main`); absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refs: Option<Vec<String>>,
    /// Trust jobs on unprotected refs too (default: protected only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_unprotected_refs: bool,
}

/// Any other issuer: claims that must be present with exactly these values.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenericTrust {
    pub claims: BTreeMap<String, String>,
}

/// `POST /v1/publishers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublisherRequest {
    pub name: String,
    /// The configured issuer's name.
    pub issuer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github: Option<GithubTrust>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitlab: Option<GitlabTrust>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generic: Option<GenericTrust>,
    pub grants: Vec<Grant>,
    /// Seconds a minted token lives, 1 to 3600 (default 900).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_lifetime: Option<u64>,
}

/// A stored publisher: the request with its defaults, an id and its birth.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publisher {
    pub id: String,
    pub name: String,
    pub issuer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github: Option<GithubTrust>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitlab: Option<GitlabTrust>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generic: Option<GenericTrust>,
    pub grants: Vec<Grant>,
    pub token_lifetime: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PublisherList {
    pub publishers: Vec<Publisher>,
}

/// `POST /v1/oidc/token`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeRequest {
    pub id_token: String,
}

/// `201` answer to an exchange: the minted token's fields, its secret (once)
/// and the publisher that matched.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExchangedToken {
    #[serde(flatten)]
    pub info: TokenInfo,
    pub token: String,
    pub publisher: String,
}
