//! Tokens of the Docker token flow (`GET /v2/token`): short-lived, and
//! downscoped to the scope a client asked for intersected with the grants of
//! the Amber token it authenticated with. Bound to that token: each use
//! reads it again, so its revocation, expiry or rotation ends them at once.
//!
//! A scoped token is `amberscope.` + base64url(claims JSON) + `.` +
//! base64url(MAC), the MAC a keyed BLAKE3 under a key derived from the
//! store's active manifest key and the parent token's secret hash: no one
//! without both can make one, and a new secret of the parent voids them.

use amber_core::{Action, Grant, RepoName, RepoPattern, TokenId};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::Caller;
use crate::meta::TokenRecord;
use crate::signing::Signer;

pub const PREFIX: &str = "amberscope.";
/// How long a scoped token lasts (never past its parent).
pub const LIFETIME: Duration = Duration::minutes(5);
const KEY_CONTEXT: &str = "amber 2026 oci scoped token mac v1";
/// Longest scoped token accepted (a few scopes' worth of grants).
const MAX_LEN: usize = 8192;
/// Most scopes one token request may name (the token stays under `MAX_LEN`).
pub const MAX_SCOPES: usize = 32;

#[derive(Serialize, Deserialize)]
pub struct Claims {
    /// The parent token.
    pub token: TokenId,
    pub grants: Vec<Grant>,
    /// Expiry, unix seconds.
    pub exp: i64,
}

fn mac_key(signer: &Signer, parent: &TokenRecord) -> [u8; 32] {
    signer.derived_key(KEY_CONTEXT, parent.secret_hash.as_bytes())
}

/// A scope the client asked for: `repository:<name>:<actions>` or
/// `registry:catalog:*`. Anything else is ignored (no grant).
pub enum Scope {
    Repository(RepoName, Vec<Action>),
    Catalog,
}

impl Scope {
    pub fn parse(text: &str) -> Vec<Self> {
        // Several scopes may come space-separated in one parameter.
        text.split(' ')
            .take(MAX_SCOPES)
            .filter_map(|one| {
                let (kind, rest) = one.split_once(':')?;
                let (name, actions) = rest.rsplit_once(':')?;
                match kind {
                    "repository" => {
                        let repo = name.parse().ok()?;
                        let actions = actions
                            .split(',')
                            .filter_map(|a| match a {
                                "pull" => Some(vec![Action::Pull]),
                                "push" => Some(vec![Action::Push]),
                                "*" => Some(vec![Action::Pull, Action::Push]),
                                _ => None,
                            })
                            .flatten()
                            .collect();
                        Some(Self::Repository(repo, actions))
                    }
                    "registry" if name == "catalog" => Some(Self::Catalog),
                    _ => None,
                }
            })
            .collect()
    }
}

/// The grants a scoped token gets: each scope's actions that `caller` has.
pub fn downscope(caller: &Caller, scopes: &[Scope]) -> Vec<Grant> {
    let mut grants: Vec<Grant> = Vec::new();
    for scope in scopes {
        match scope {
            Scope::Repository(repo, actions) => {
                let mut allowed: Vec<Action> =
                    actions.iter().copied().filter(|a| caller.require(*a, repo).is_ok()).collect();
                // Pushing through /v2/ reads too (a HEAD before each upload).
                allowed.sort();
                allowed.dedup();
                if !allowed.is_empty() {
                    grants.push(Grant { repos: RepoPattern::Exact(repo.clone()), actions: allowed });
                }
            }
            // The catalog lists what the token may pull: its pull grants.
            Scope::Catalog => grants.extend(
                caller
                    .token
                    .info
                    .grants
                    .iter()
                    .filter(|g| g.actions.contains(&Action::Pull))
                    .map(|g| Grant { repos: g.repos.clone(), actions: vec![Action::Pull] }),
            ),
        }
    }
    grants
}

/// Mints a scoped token for `parent` with `grants`; returns it and its expiry.
pub fn mint(signer: &Signer, parent: &TokenRecord, grants: Vec<Grant>) -> (String, OffsetDateTime) {
    let expires = (OffsetDateTime::now_utc() + LIFETIME).min(parent.info.expires_at);
    let claims = Claims { token: parent.info.id.clone(), grants, exp: expires.unix_timestamp() };
    let payload = serde_json::to_vec(&claims).expect("claims serialise");
    let mac = blake3::keyed_hash(&mac_key(signer, parent), &payload);
    (format!("{PREFIX}{}.{}", B64.encode(&payload), B64.encode(mac.as_bytes())), expires)
}

/// The claims of a presented scoped token, unverified: the caller looks the
/// parent up, then calls [`verify`].
pub fn claims(token: &str) -> Option<(Claims, Vec<u8>, [u8; 32])> {
    if token.len() > MAX_LEN {
        return None;
    }
    let (payload, mac) = token.strip_prefix(PREFIX)?.split_once('.')?;
    let payload = B64.decode(payload).ok()?;
    let mac: [u8; 32] = B64.decode(mac).ok()?.try_into().ok()?;
    let claims: Claims = serde_json::from_slice(&payload).ok()?;
    Some((claims, payload, mac))
}

/// True when `mac` is the MAC of `payload` for `parent` (in constant time).
pub fn verify(signer: &Signer, parent: &TokenRecord, payload: &[u8], mac: &[u8; 32]) -> bool {
    blake3::keyed_hash(&mac_key(signer, parent), payload) == blake3::Hash::from_bytes(*mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_stay_bounded() {
        let parsed =
            Scope::parse("repository:acme/web:pull,push registry:catalog:* repository:Bad Name:pull other:x:y");
        assert_eq!(parsed.len(), 2);
        assert!(
            matches!(&parsed[0], Scope::Repository(repo, actions) if repo.as_str() == "acme/web" && actions.len() == 2)
        );
        assert!(matches!(parsed[1], Scope::Catalog));
        let many = vec!["repository:acme/web:pull"; 100].join(" ");
        assert_eq!(Scope::parse(&many).len(), MAX_SCOPES);
    }
}
