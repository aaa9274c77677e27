//! The audit log's entry format and its offline verifier.
//!
//! Each entry is a JSON object (`EntryBody`) stored as the exact bytes that were
//! hashed: `hash = BLAKE3(bytes)`, and each body names the previous entry's hash
//! (`prev`, all zeros for the first) and its own sequence number, starting at 1.
//! The server also keeps a checkpoint: a DSSE envelope, signed with its
//! manifest key, over the sequence number and hash of the chain head. Editing,
//! deleting or reordering any entry breaks a link or the checkpoint.

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::digest::Digest;
use crate::dsse::{DsseError, Envelope};
use crate::name::{RepoName, Tag};
pub use crate::token::Actor;
use crate::token::{Grant, TokenId};

pub const CHECKPOINT_PAYLOAD_TYPE: &str = "application/vnd.amber.audit-checkpoint.v1+json";
pub const CHECKPOINT_SCHEMA: &str = "amber.audit.checkpoint.v1";
/// `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened. Never carries a secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    TokenCreated {
        token_id: TokenId,
        name: String,
        pipeline: Option<String>,
        grants: Vec<Grant>,
        #[serde(with = "time::serde::rfc3339")]
        expires_at: OffsetDateTime,
    },
    TokenRotated {
        token_id: TokenId,
        new_token_id: TokenId,
        grace_seconds: u64,
    },
    TokenRevoked {
        token_id: TokenId,
    },
    BlobPushed {
        repository: RepoName,
        digest: Digest,
        size: u64,
    },
    ManifestPushed {
        repository: RepoName,
        digest: Digest,
    },
    TagBound {
        repository: RepoName,
        tag: Tag,
        digest: Digest,
    },
    /// An OCI manifest stored through `/v2/` (named by its OCI digest, the
    /// hash of its bytes); one pushed by tag is also bound, as any tag.
    OciManifestPushed {
        repository: RepoName,
        digest: String,
        media_type: String,
    },
    KeyRotated {
        keyid: String,
    },
    /// A tag's availability ended; `tombstone` is the digest of the signed
    /// tombstone's payload.
    TagExpired {
        repository: RepoName,
        tag: Tag,
        manifest: Digest,
        tombstone: Digest,
        reason: crate::tombstone::Reason,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        policy: Option<Digest>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    TagHeld {
        repository: RepoName,
        tag: Tag,
        reason: String,
    },
    TagReleased {
        repository: RepoName,
        tag: Tag,
    },
    /// A blob link no live manifest referenced was removed by retention.
    BlobUnlinked {
        repository: RepoName,
        digest: Digest,
        size: u64,
    },
    /// A reclaim run deleted the stored bytes of these digests, which no
    /// repository linked for longer than the grace.
    BlobsReclaimed {
        digests: Vec<Digest>,
        bytes: u64,
    },
    /// The scrub (or a read) found a stored blob that does not hash to its
    /// digest (`mismatch`) or is gone (`missing`); it is quarantined.
    BlobCorrupt {
        digest: Digest,
        reason: String,
    },
    /// An upload replaced a quarantined blob's bytes with ones that hash right.
    BlobRepaired {
        digest: Digest,
    },
    /// A witness refused the log's history as inconsistent with what it
    /// saw (`422`), or holds a larger tree of it: it is asked nothing more.
    WitnessAlarm {
        witness: String,
        reason: String,
    },
    /// A retention policy was stored (the whole policy, defaults filled in).
    RetentionPolicySet {
        scope: crate::name::RepoPattern,
        policy: crate::wire::RetentionPolicy,
        digest: Digest,
    },
    RetentionPolicyDeleted {
        scope: crate::name::RepoPattern,
        digest: Digest,
    },
    /// A publisher (trust policy for CI ID tokens) was created; the whole
    /// configuration.
    PublisherCreated {
        publisher: crate::oidc::Publisher,
    },
    PublisherDeleted {
        publisher: crate::oidc::Publisher,
    },
    /// An ID token was exchanged for a token: the verified claims, the key
    /// that signed it and the token minted.
    TokenExchanged {
        token_id: TokenId,
        publisher: String,
        kid: String,
        jti: String,
        ci: crate::oidc::CiIdentity,
        grants: Vec<Grant>,
        #[serde(with = "time::serde::rfc3339")]
        expires_at: OffsetDateTime,
    },
    RequestDenied {
        method: String,
        route: String,
        status: u16,
        reason: String,
        /// How many denials this entry stands for: repeats of one kind within
        /// a second are recorded together. Omitted when 1.
        #[serde(default = "one", skip_serializing_if = "is_one")]
        count: u64,
        /// The repositories the denied requests named, at most 16 (a client
        /// naming a new repository in each request is still one kind).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        repositories: Vec<String>,
        /// The client's address, when it presented no valid token.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client: Option<String>,
    },
}

fn one() -> u64 {
    1
}

// serde passes the field by reference.
fn is_one(n: &u64) -> bool {
    *n == 1
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryBody {
    pub seq: u64,
    /// Hex BLAKE3 of the previous entry's bytes.
    pub prev: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub actor: Actor,
    pub event: Event,
    /// 32 random bytes, hex: the entry's leaf hash in the transparency log
    /// reveals nothing that can be guessed. Absent in entries from before
    /// the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
}

/// An entry as served: its hash and the exact bytes (as a JSON string) that hash to it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub hash: String,
    pub entry: String,
    /// Its leaf's index in the transparency log: `seq - 1`.
    #[serde(default)]
    pub log_index: u64,
}

/// `GET /v1/audit`: a page of entries and the latest signed checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Pass as `after` for the next page; null on the last page.
    pub next: Option<u64>,
    pub checkpoint: Option<Envelope>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub schema: String,
    pub seq: u64,
    pub hash: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

pub fn entry_hash(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    #[error("entry {seq}: {reason}")]
    Entry { seq: u64, reason: String },
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error("checkpoint signature: {0}")]
    Signature(#[from] DsseError),
}

/// What a verified chain holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainSummary {
    pub entries: u64,
    pub head: String,
}

/// Walks the whole chain in order and checks every hash and link, then that the
/// checkpoint is signed by one of `keys` and names the chain's head.
pub struct ChainVerifier {
    expected_seq: u64,
    prev: String,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self { expected_seq: 1, prev: GENESIS.to_owned() }
    }
}

impl ChainVerifier {
    pub fn push(&mut self, entry: &AuditEntry) -> Result<EntryBody, ChainError> {
        let fail = |reason: String| ChainError::Entry { seq: entry.seq, reason };
        if entry.seq != self.expected_seq {
            return Err(ChainError::Entry {
                seq: self.expected_seq,
                reason: format!("missing or out of order (found entry {} in its place)", entry.seq),
            });
        }
        let actual = entry_hash(entry.entry.as_bytes());
        if actual != entry.hash {
            return Err(fail(format!(
                "content does not hash to its recorded hash (edited?): {actual} != {}",
                entry.hash
            )));
        }
        let body: EntryBody = serde_json::from_str(&entry.entry).map_err(|e| fail(format!("unreadable: {e}")))?;
        if body.seq != entry.seq {
            return Err(fail(format!("body says it is entry {}", body.seq)));
        }
        if body.prev != self.prev {
            return Err(fail("does not link to the entry before it (deleted or reordered entries)".into()));
        }
        self.expected_seq += 1;
        self.prev = entry.hash.clone();
        Ok(body)
    }

    pub fn finish(self, checkpoint: Option<&Envelope>, keys: &[VerifyingKey]) -> Result<ChainSummary, ChainError> {
        let entries = self.expected_seq - 1;
        let Some(envelope) = checkpoint else {
            return if entries == 0 {
                Ok(ChainSummary { entries, head: self.prev })
            } else {
                Err(ChainError::Checkpoint("missing".into()))
            };
        };
        let payload = envelope.verify(CHECKPOINT_PAYLOAD_TYPE, keys)?;
        let checkpoint: Checkpoint =
            serde_json::from_slice(&payload).map_err(|e| ChainError::Checkpoint(format!("unreadable: {e}")))?;
        if checkpoint.schema != CHECKPOINT_SCHEMA {
            return Err(ChainError::Checkpoint(format!("schema is {:?}", checkpoint.schema)));
        }
        if checkpoint.seq != entries {
            return Err(ChainError::Entry {
                seq: checkpoint.seq.max(entries),
                reason: format!(
                    "the signed checkpoint covers {} entries but the log has {entries} (entries deleted from the end?)",
                    checkpoint.seq
                ),
            });
        }
        if checkpoint.hash != self.prev {
            return Err(ChainError::Entry {
                seq: entries,
                reason: "does not match the signed checkpoint (edited?)".into(),
            });
        }
        Ok(ChainSummary { entries, head: self.prev })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dsse;

    fn chain(n: u64) -> Vec<AuditEntry> {
        let mut prev = GENESIS.to_owned();
        (1..=n)
            .map(|seq| {
                let body = EntryBody {
                    seq,
                    prev: prev.clone(),
                    at: OffsetDateTime::UNIX_EPOCH,
                    actor: Actor::operator(),
                    event: Event::KeyRotated { keyid: format!("k{seq}") },
                    salt: None,
                };
                let entry = serde_json::to_string(&body).unwrap();
                let hash = entry_hash(entry.as_bytes());
                prev = hash.clone();
                AuditEntry { seq, hash, entry, log_index: seq - 1 }
            })
            .collect()
    }

    fn checkpoint(entries: &[AuditEntry], key: &ed25519_dalek::SigningKey) -> Envelope {
        let last = entries.last().unwrap();
        let cp = Checkpoint {
            schema: CHECKPOINT_SCHEMA.into(),
            seq: last.seq,
            hash: last.hash.clone(),
            created_at: OffsetDateTime::UNIX_EPOCH,
        };
        dsse::sign(CHECKPOINT_PAYLOAD_TYPE, &serde_json::to_vec(&cp).unwrap(), key)
    }

    fn verify(
        entries: &[AuditEntry],
        cp: &Envelope,
        key: &ed25519_dalek::SigningKey,
    ) -> Result<ChainSummary, ChainError> {
        let mut v = ChainVerifier::default();
        for e in entries {
            v.push(e)?;
        }
        v.finish(Some(cp), &[key.verifying_key()])
    }

    #[test]
    fn detects_edits_deletions_and_reordering() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let entries = chain(5);
        let cp = checkpoint(&entries, &key);
        assert_eq!(verify(&entries, &cp, &key).unwrap().entries, 5);

        let mut edited = entries.clone();
        edited[2].entry = edited[2].entry.replace("k3", "k9");
        assert!(matches!(verify(&edited, &cp, &key), Err(ChainError::Entry { seq: 3, .. })));

        let mut deleted = entries.clone();
        deleted.remove(1);
        assert!(matches!(verify(&deleted, &cp, &key), Err(ChainError::Entry { seq: 2, .. })));

        let mut truncated = entries.clone();
        truncated.pop();
        assert!(matches!(verify(&truncated, &cp, &key), Err(ChainError::Entry { seq: 5, .. })));

        let mut swapped = entries.clone();
        swapped.swap(1, 2);
        assert!(verify(&swapped, &cp, &key).is_err());

        let other = ed25519_dalek::SigningKey::from_bytes(&[2; 32]);
        assert!(matches!(verify(&entries, &cp, &other), Err(ChainError::Signature(_))));
    }
}
