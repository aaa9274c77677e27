//! Token secrets, ids, actions and grants.
//!
//! A secret is `amber_` + 30 base62 characters of randomness (178 bits) + a
//! 6-character base62 CRC32 of those 30 characters. The fixed prefix lets secret
//! scanners find leaked tokens (the scheme GitHub uses); the checksum rejects
//! typos and garbage before any store lookup. The server keeps only
//! [`TokenSecret::hash`], a keyed BLAKE3: the secret itself is never stored.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::name::RepoPattern;

pub const SECRET_PREFIX: &str = "amber_";
const RANDOM_LEN: usize = 30;
const CHECKSUM_LEN: usize = 6;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// BLAKE3 key-derivation context: ties stored hashes to this use and version.
const HASH_CONTEXT: &str = "amber 2026 token secret hash v1";

/// A bearer secret. `Debug` is redacted so it cannot leak through logs.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSecret(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("not an Amber token (expected amber_ followed by 36 characters)")]
    Malformed,
    #[error("token checksum does not match (mistyped or truncated token)")]
    Checksum,
}

fn base62_checksum(random: &str) -> String {
    let mut n = crc32fast::hash(random.as_bytes());
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl TokenSecret {
    pub fn generate(rng: &mut impl Rng) -> Self {
        let random: String = (0..RANDOM_LEN).map(|_| BASE62[rng.gen_range(0..BASE62.len())] as char).collect();
        let checksum = base62_checksum(&random);
        Self(format!("{SECRET_PREFIX}{random}{checksum}"))
    }

    /// The secret itself, for showing once to its owner.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What the server stores and looks up by.
    pub fn hash(&self) -> [u8; 32] {
        blake3::derive_key(HASH_CONTEXT, self.0.as_bytes())
    }
}

impl FromStr for TokenSecret {
    type Err = SecretError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let body = s.strip_prefix(SECRET_PREFIX).ok_or(SecretError::Malformed)?;
        if body.len() != RANDOM_LEN + CHECKSUM_LEN || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(SecretError::Malformed);
        }
        let (random, checksum) = body.split_at(RANDOM_LEN);
        if base62_checksum(random) != checksum {
            return Err(SecretError::Checksum);
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret(<redacted>)")
    }
}

/// A token's public identifier: `tok_` + 24 lowercase hex characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenId(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("token id must be tok_ followed by 24 lowercase hex characters")]
pub struct TokenIdError;

impl TokenId {
    pub fn generate(rng: &mut impl Rng) -> Self {
        let bytes: [u8; 12] = rng.r#gen();
        Self(format!("tok_{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TokenId {
    type Err = TokenIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s.strip_prefix("tok_").ok_or(TokenIdError)?;
        if hex.len() == 24 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self(s.to_owned()))
        } else {
            Err(TokenIdError)
        }
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl Serialize for TokenId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TokenId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What a grant permits. `Admin` does not imply `Push` or `Pull`, nor the reverse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Pull,
    Push,
    Admin,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pull => "pull",
            Self::Push => "push",
            Self::Admin => "admin",
        })
    }
}

/// Actions on the repositories a pattern names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub repos: RepoPattern,
    pub actions: Vec<Action>,
}

/// The verified claims of the ID token a token was minted from: which run,
/// of which repository at which commit. Taken from the ID token the server
/// verified, never from the client. Every value is the claim as the issuer
/// wrote it; a claim the issuer did not send is left out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CiIdentity {
    /// The issuer's URL (`iss`).
    pub issuer: String,
    /// The publisher that matched.
    pub publisher: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_owner_id: Option<String>,
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_workflow_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_attempt: Option<String>,
    /// GitLab's job within the pipeline (`run_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// `sub`, for a generic issuer (GitHub's and GitLab's are left out: they
    /// restate the claims above).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

/// Who made a change: a token, or an operator at the server (`amberd` commands).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub token_id: Option<TokenId>,
    pub token_name: Option<String>,
}

impl Actor {
    pub fn operator() -> Self {
        Self { token_id: None, token_name: Some("amberd (local operator)".into()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_parse_and_typos_do_not() {
        let mut rng = rand::thread_rng();
        let secret = TokenSecret::generate(&mut rng);
        let s = secret.expose().to_owned();
        assert_eq!(s.len(), SECRET_PREFIX.len() + 36);
        assert_eq!(s.parse::<TokenSecret>().unwrap(), secret);
        let mut typo = s.clone().into_bytes();
        typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
        assert_eq!(String::from_utf8(typo).unwrap().parse::<TokenSecret>(), Err(SecretError::Checksum));
        assert_eq!(s[..s.len() - 1].parse::<TokenSecret>(), Err(SecretError::Malformed));
        assert_eq!("ghp_x".parse::<TokenSecret>(), Err(SecretError::Malformed));
        assert!(!format!("{secret:?}").contains(&s[6..]));
    }

    #[test]
    fn token_ids() {
        let id = TokenId::generate(&mut rand::thread_rng());
        assert_eq!(id.as_str().parse::<TokenId>().unwrap(), id);
        assert!("tok_XYZ".parse::<TokenId>().is_err());
    }
}
