//! Tombstones: the signed record that a tag's availability ended. The binding
//! stays in history; the tombstone says when and why it was retired, so that a
//! deploy tool can tell a retired artifact from a tampered one. Signed with
//! the manifest key, as a DSSE envelope; its digest is the BLAKE3 of the
//! payload bytes, as for manifests.

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::digest::Digest;
use crate::dsse::{DsseError, Envelope};
use crate::name::{RepoName, Tag};
use crate::token::Actor;

pub const PAYLOAD_TYPE: &str = "application/vnd.amber.tombstone.v1+json";
pub const SCHEMA: &str = "amber.tombstone.v1";

/// Why a tag expired: by a retention policy's run, or by an operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    Policy,
    Operator,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Policy => "policy",
            Self::Operator => "operator",
        })
    }
}

/// The signed payload. Field order is the serialised order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TombstonePayload {
    pub schema: String,
    pub repository: RepoName,
    pub tag: Tag,
    /// The manifest the tag was bound to.
    pub manifest: Digest,
    #[serde(with = "time::serde::rfc3339")]
    pub bound_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expired_at: OffsetDateTime,
    pub reason: Reason,
    /// The digest of the policy that expired it; null for an operator.
    pub policy: Option<Digest>,
    pub expired_by: Actor,
    /// The operator's words, for an operator expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl TombstonePayload {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("tombstones always serialise")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TombstoneError {
    #[error(transparent)]
    Signature(#[from] DsseError),
    #[error("payload is not an {SCHEMA} tombstone: {0}")]
    Payload(String),
    #[error("tombstone is for {found}, expected {expected}")]
    WrongSubject { expected: String, found: String },
}

/// Verifies a tombstone with pinned keys and checks it retires `repository`
/// and, when given, `tag` (else any tag bound to `manifest`).
pub fn verify(
    envelope: &Envelope,
    keys: &[VerifyingKey],
    repository: &RepoName,
    tag: Option<&Tag>,
    manifest: Option<&Digest>,
) -> Result<TombstonePayload, TombstoneError> {
    let bytes = envelope.verify(PAYLOAD_TYPE, keys)?;
    let payload: TombstonePayload =
        serde_json::from_slice(&bytes).map_err(|e| TombstoneError::Payload(e.to_string()))?;
    if payload.schema != SCHEMA {
        return Err(TombstoneError::Payload(format!("schema is {:?}", payload.schema)));
    }
    let subject_ok = &payload.repository == repository
        && tag.is_none_or(|t| t == &payload.tag)
        && manifest.is_none_or(|m| m == &payload.manifest);
    if !subject_ok {
        let expected = match (tag, manifest) {
            (Some(t), _) => format!("{repository}:{t}"),
            (None, Some(m)) => format!("{repository}@{m}"),
            (None, None) => repository.to_string(),
        };
        let found = format!("{}:{}@{}", payload.repository, payload.tag, payload.manifest);
        return Err(TombstoneError::WrongSubject { expected, found });
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dsse;
    use ed25519_dalek::SigningKey;

    fn payload() -> TombstonePayload {
        TombstonePayload {
            schema: SCHEMA.into(),
            repository: "acme/web".parse().unwrap(),
            tag: "v1".parse().unwrap(),
            manifest: Digest::of(b"m"),
            bound_at: OffsetDateTime::UNIX_EPOCH,
            expired_at: OffsetDateTime::UNIX_EPOCH + time::Duration::days(3),
            reason: Reason::Policy,
            policy: Some(Digest::of(b"p")),
            expired_by: Actor::operator(),
            note: None,
        }
    }

    #[test]
    fn verifies_its_subject_only() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let envelope = dsse::sign(PAYLOAD_TYPE, &payload().to_bytes(), &key);
        let keys = [key.verifying_key()];
        let repo: RepoName = "acme/web".parse().unwrap();
        let v1: Tag = "v1".parse().unwrap();
        assert_eq!(verify(&envelope, &keys, &repo, Some(&v1), None).unwrap(), payload());
        assert!(verify(&envelope, &keys, &repo, None, Some(&Digest::of(b"m"))).is_ok());
        let v2: Tag = "v2".parse().unwrap();
        assert!(matches!(verify(&envelope, &keys, &repo, Some(&v2), None), Err(TombstoneError::WrongSubject { .. })));
        let other: RepoName = "acme/api".parse().unwrap();
        assert!(verify(&envelope, &keys, &other, None, None).is_err());
        let manifest = dsse::sign(crate::manifest::PAYLOAD_TYPE, &payload().to_bytes(), &key);
        assert!(matches!(verify(&manifest, &keys, &repo, None, None), Err(TombstoneError::Signature(_))));
    }
}
