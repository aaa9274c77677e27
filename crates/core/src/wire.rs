//! Request and response bodies of HTTP API v1, shared by server and client.
//! Fields may be added, never removed or renamed.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::digest::Digest;
use crate::name::{RepoName, Tag};
use crate::token::{Grant, TokenId};

/// `{"error": {"code", "message", "detail"?}}`: every error response.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    /// Machine-readable specifics, e.g. the missing blobs of `manifest_blob_unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

/// The body of `410`/`409 tag_expired`: the error and, next to it, the
/// signed tombstone.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExpiredBody {
    pub error: ErrorDetail,
    pub tombstone: crate::dsse::Envelope,
}

/// `PUT .../tags/{tag}/hold` and `POST .../tags/{tag}/expire`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasonRequest {
    pub reason: String,
}

/// A tag's state as the hold and release routes answer it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TagStatus {
    pub repository: crate::name::RepoName,
    pub tag: Tag,
    pub digest: Digest,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub state: TagState,
    pub held: bool,
    /// Why it is held, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_reason: Option<String>,
}

/// A retention policy as sent to `PUT /v1/retention/{owner}/{name}`; every
/// field optional. Serialised in this field order (alphabetical), absent
/// fields left out: the canonical JSON its digest is taken over.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub untagged_days: Option<u32>,
}

/// A stored policy: where it applies (`owner/name` or `owner/*`), the policy
/// with its defaults filled in, and its digest.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PolicyInfo {
    pub scope: crate::name::RepoPattern,
    pub policy: RetentionPolicy,
    pub digest: Digest,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// The answer to `PUT /v1/retention/...`: the stored policy and what a run
/// would do now.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PolicySet {
    #[serde(flatten)]
    pub info: PolicyInfo,
    pub plan: RetentionPlan,
}

/// `GET /v1/retention/{owner}/{name}`: the policy in effect for a repository.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EffectivePolicy {
    pub repository: crate::name::RepoName,
    #[serde(flatten)]
    pub info: PolicyInfo,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedExpiry {
    pub repository: crate::name::RepoName,
    pub tag: Tag,
    pub manifest: Digest,
    #[serde(with = "time::serde::rfc3339")]
    pub bound_at: OffsetDateTime,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedUnlink {
    pub repository: crate::name::RepoName,
    pub digest: Digest,
    pub size: u64,
}

/// What a retention run would do (a plan) or did (a report).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPlan {
    pub expire: Vec<PlannedExpiry>,
    pub unlink: Vec<PlannedUnlink>,
}

/// Answer to a blob upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobInfo {
    pub digest: Digest,
    pub size: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MissingRequest {
    pub digests: Vec<Digest>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MissingResponse {
    pub missing: Vec<Digest>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    pub name: String,
    #[serde(default)]
    pub pipeline: Option<String>,
    pub grants: Vec<Grant>,
    /// Lifetime in seconds; the server's default when absent, never above its maximum.
    #[serde(default)]
    pub expires_in: Option<u64>,
}

/// A token as anyone may see it: never the secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: TokenId,
    pub name: String,
    pub pipeline: Option<String>,
    pub grants: Vec<Grant>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub last_used_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub revoked_at: Option<OffsetDateTime>,
    /// The token this one replaced by rotation.
    #[serde(default)]
    pub rotated_from: Option<TokenId>,
    /// The token that replaced this one by rotation (this one then expires after its grace).
    #[serde(default)]
    pub rotated_to: Option<TokenId>,
    /// For a token minted by trusted publishing: the verified claims of the
    /// ID token it was exchanged for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ci: Option<crate::token::CiIdentity>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateTokenRequest {
    /// How long the old secret keeps working, in seconds (default 3600; 0 ends it now).
    #[serde(default)]
    pub grace_seconds: Option<u64>,
}

/// One page of tokens, in id order; `next` is the cursor for the following page.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenList {
    pub tokens: Vec<TokenInfo>,
    pub next: Option<String>,
}

/// `201` answer to token creation: the token's fields and, once, its secret.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub info: TokenInfo,
    pub token: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    Active,
    Retired,
}

/// What a key signs: manifests (and tombstones, and the audit chain's DSSE
/// checkpoint), or the transparency log's checkpoints. A key signs one only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyPurpose {
    #[default]
    Manifest,
    Log,
}

impl KeyPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manifest => "manifest",
            Self::Log => "log",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKeyInfo {
    pub keyid: String,
    pub algorithm: String,
    /// Base64 of the 32 raw Ed25519 public key bytes.
    pub public_key: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub status: KeyStatus,
    /// Missing in key files written before the log: those are manifest keys.
    #[serde(default)]
    pub purpose: KeyPurpose,
    /// A log key's C2SP verifier key: `<origin>+<hex id>+<base64(0x01 || key)>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vkey: Option<String>,
    /// A manifest key's id as securesystemslib computes it (the sha256 of
    /// its canonical JSON): the `keyid` of attestations' signatures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sslib_keyid: Option<String>,
    /// The key as PEM (SubjectPublicKeyInfo), for `cosign --key` and
    /// `openssl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_pem: Option<String>,
}

/// `GET /v1/keys`, and the pinned-key file `amberd keys export` writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyList {
    pub keys: Vec<PublicKeyInfo>,
    /// The witnesses the store asks to cosign its log, as a witness policy
    /// (`amber pull --witness-policy` syntax), when it has any: pinned with
    /// the keys, so that a deploy tool pins one file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness_policy: Option<String>,
}

impl KeyList {
    /// The manifest keys, with ids recomputed from the key bytes (never
    /// trusted from the file). Entries that are not valid Ed25519 keys are an
    /// error. A log key never verifies a manifest.
    pub fn verifying_keys(&self) -> Result<Vec<ed25519_dalek::VerifyingKey>, String> {
        use base64::Engine;
        self.keys
            .iter()
            .filter(|k| k.purpose == KeyPurpose::Manifest)
            .map(|k| {
                let bytes: [u8; 32] = base64::engine::general_purpose::STANDARD
                    .decode(&k.public_key)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| format!("key {} is not 32 bytes of base64", k.keyid))?;
                ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|e| format!("key {}: {e}", k.keyid))
            })
            .collect()
    }
}

impl KeyList {
    /// The verifier keys of the log keys: active first, then retired ones,
    /// whose checkpoints still verify.
    pub fn log_vkeys(&self) -> Vec<String> {
        let mut keys: Vec<&PublicKeyInfo> = self.keys.iter().filter(|k| k.purpose == KeyPurpose::Log).collect();
        keys.sort_by_key(|k| k.status != KeyStatus::Active);
        keys.into_iter().filter_map(|k| k.vkey.clone()).collect()
    }
}

/// A tag's availability: `expired` is final, and its name is never bound again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TagState {
    #[default]
    Live,
    Expired,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TagEntry {
    pub tag: Tag,
    pub digest: Digest,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(default)]
    pub state: TagState,
    #[serde(default)]
    pub held: bool,
    /// Who pushed the manifest it is bound to (from its signed payload; the
    /// console shows it, a verifier reads the envelope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed_by: Option<crate::manifest::PushedBy>,
}

/// One page of tags, in name order; `next` is the cursor for the following page.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TagList {
    pub tags: Vec<TagEntry>,
    pub next: Option<String>,
}

/// One repository as `GET /v1/repos` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoSummary {
    pub name: RepoName,
    /// Tags bound in it, whatever their state.
    pub tags: u64,
    /// Tags not expired.
    #[serde(default)]
    pub live_tags: u64,
    /// Blobs linked in it.
    #[serde(default)]
    pub blobs: u64,
    /// The sizes of the blobs linked in it, added up.
    pub bytes: u64,
    /// When a blob was last linked or a tag bound in it.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_push_at: Option<OffsetDateTime>,
}

/// `GET /v1/repos`: the repositories the caller may pull, in name order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoList {
    pub repositories: Vec<RepoSummary>,
    pub next: Option<String>,
}

/// `GET /v1/storage`: what the store holds and what waits to be reclaimed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageReport {
    /// Blob links in every repository (a blob linked in two counts twice),
    /// and their sizes added up.
    #[serde(default)]
    pub links: u64,
    #[serde(default)]
    pub linked_bytes: u64,
    /// Digests no repository links, waiting for their grace to pass.
    pub pending_reclaim: u64,
    pub pending_reclaim_bytes: u64,
    /// Blobs found corrupt or missing, kept out of every answer.
    pub quarantined: u64,
}

/// `POST /v1/reclaim/run`: what a reclaim run did, and what still waits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReclaimReport {
    /// False when another run (on any replica) was under way: nothing done.
    pub ran: bool,
    pub deleted: u64,
    pub bytes_freed: u64,
    /// Digests no repository links, waiting for their grace to pass.
    pub pending: u64,
    pub pending_bytes: u64,
}

/// What a run does: each kind has at most one active run in the whole store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    Retention,
    Reclaim,
    Scrub,
    Fsck,
}

impl RunKind {
    pub const ALL: [RunKind; 4] = [Self::Retention, Self::Reclaim, Self::Scrub, Self::Fsck];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retention => "retention",
            Self::Reclaim => "reclaim",
            Self::Scrub => "scrub",
            Self::Fsck => "fsck",
        }
    }

    /// What `done` and `planned` count in a run of this kind.
    pub fn unit(self) -> &'static str {
        match self {
            Self::Retention => "repositories",
            Self::Reclaim | Self::Scrub | Self::Fsck => "blobs",
        }
    }
}

impl std::fmt::Display for RunKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RunKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not a kind of run (retention, reclaim, scrub, fsck)"))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Running,
    Done,
    Failed,
}

/// How far a run is.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunProgress {
    /// What `done` and `planned` count (`repositories`, `blobs`).
    pub unit: String,
    pub done: u64,
    /// How many there are to do, when known.
    pub planned: Option<u64>,
    /// Bytes read, deleted or verified so far.
    pub bytes: u64,
    pub elapsed_seconds: f64,
    /// `done` a second, over the run so far.
    pub rate: f64,
}

/// A run of retention, reclaim, a scrub pass or fsck: `POST` starts it
/// (`202`), `GET /v1/runs/{id}` follows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub id: String,
    pub kind: RunKind,
    pub state: RunState,
    /// Who started it (a token's name, or the schedule).
    pub started_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// When the run last said it was alive; a running run silent for long
    /// is abandoned (its replica stopped) and shown as failed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<OffsetDateTime>,
    pub progress: RunProgress,
    /// Once done: what the run did (what `POST …/run` answered before runs
    /// were jobs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<serde_json::Value>,
    /// Once failed: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /v1/runs`: the most recent runs, newest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunList {
    pub runs: Vec<RunInfo>,
}
