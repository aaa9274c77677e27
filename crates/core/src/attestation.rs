//! in-toto attestations of a binding: Statements v1 in DSSE envelopes, with
//! the SLSA predicates the server issues (Provenance v1, Verification
//! Summary v1), and the Sigstore bundle v0.3 that carries one envelope with
//! a public-key hint. The server makes them; the client reads and checks
//! them offline. Formats as the in-toto attestation framework, SLSA and
//! Sigstore write them, so that stock verifiers check them too.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::dsse::{self, Envelope};

/// The DSSE payload type of an in-toto Statement.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// `_type` of a Statement v1.
pub const STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";
/// SLSA Provenance v1.
pub const PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";
/// SLSA Verification Summary v1.
pub const VSA_V1: &str = "https://slsa.dev/verification_summary/v1";
/// The Sigstore bundle media type (v0.3).
pub const BUNDLE_V03: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

/// An in-toto Statement v1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    #[serde(rename = "_type")]
    pub statement_type: String,
    pub subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: serde_json::Value,
}

/// What a statement is about: a file by its path, or the manifest by its
/// reference, with its digests (hex, no algorithm prefix).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    pub name: String,
    pub digest: SubjectDigest,
}

/// sha256 first: stock verifiers know no BLAKE3 and skip what they do not
/// know. sha256 is absent only for a manifest that has none (a `/v1/` one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectDigest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub blake3: String,
}

impl Statement {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a statement serialises")
    }
}

/// Why an attestation does not check.
#[derive(Debug, thiserror::Error)]
pub enum AttestationError {
    #[error(transparent)]
    Envelope(#[from] dsse::DsseError),
    #[error("the payload is not an in-toto Statement v1: {0}")]
    Statement(String),
}

/// Checks `envelope` against the pinned `keys` and returns its statement.
pub fn verify(envelope: &Envelope, keys: &[VerifyingKey]) -> Result<Statement, AttestationError> {
    let payload = envelope.verify(PAYLOAD_TYPE, keys)?;
    let statement: Statement =
        serde_json::from_slice(&payload).map_err(|e| AttestationError::Statement(e.to_string()))?;
    if statement.statement_type != STATEMENT_V1 {
        return Err(AttestationError::Statement(format!("_type is {:?}", statement.statement_type)));
    }
    if statement.subject.is_empty() {
        return Err(AttestationError::Statement("it has no subject".into()));
    }
    Ok(statement)
}

/// A Sigstore bundle v0.3 of `envelope`: the envelope and the hint of the
/// key that signed it, no certificate and no entry in Sigstore's logs (the
/// store's own transparency log and receipts prove its history). The hint
/// names the key; the signatures carry no `keyid` (optional in DSSE), as
/// `cosign verify-blob-attestation --bundle` skips a signature whose key id
/// is not the one it computes for the key it was given.
pub fn bundle(envelope: &Envelope) -> serde_json::Value {
    let hint = envelope.signatures.first().map_or("", |s| s.keyid.as_str());
    serde_json::json!({
        "mediaType": BUNDLE_V03,
        "verificationMaterial": {
            "publicKey": {"hint": hint},
            "tlogEntries": [],
            "timestampVerificationData": {"rfc3161Timestamps": []},
        },
        "dsseEnvelope": {
            "payload": envelope.payload,
            "payloadType": envelope.payload_type,
            "signatures": envelope.signatures.iter()
                .map(|s| serde_json::json!({"sig": s.sig}))
                .collect::<Vec<_>>(),
        },
    })
}

/// The envelope a Sigstore bundle carries, its signatures named by the
/// bundle's key hint where they carry no key id.
pub fn envelope_of_bundle(bundle: &serde_json::Value) -> Option<Envelope> {
    if bundle["mediaType"] != BUNDLE_V03 {
        return None;
    }
    let mut envelope = bundle["dsseEnvelope"].clone();
    let hint = bundle["verificationMaterial"]["publicKey"]["hint"].clone();
    for signature in envelope["signatures"].as_array_mut()? {
        if signature.get("keyid").is_none_or(|k| k.as_str() == Some("")) {
            signature["keyid"] = hint.clone();
        }
    }
    serde_json::from_value(envelope).ok()
}

/// The statement an envelope carries, unchecked (for listing what a store
/// served; [`verify`] is what checks).
pub fn statement_of(envelope: &Envelope) -> Option<Statement> {
    let bytes = B64.decode(&envelope.payload).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn statement() -> Statement {
        Statement {
            statement_type: STATEMENT_V1.into(),
            subject: vec![Subject {
                name: "a.txt".into(),
                digest: SubjectDigest { sha256: Some("00".repeat(32)), blake3: "11".repeat(32) },
            }],
            predicate_type: VSA_V1.into(),
            predicate: serde_json::json!({"verificationResult": "PASSED"}),
        }
    }

    #[test]
    fn sha256_comes_first_and_a_signed_statement_verifies() {
        let text = String::from_utf8(statement().to_bytes()).unwrap();
        assert!(text.find("sha256").unwrap() < text.find("blake3").unwrap(), "{text}");
        let key = SigningKey::generate(&mut rand::thread_rng());
        let envelope =
            dsse::sign_as(PAYLOAD_TYPE, &statement().to_bytes(), &key, &dsse::sslib_key_id(&key.verifying_key()));
        assert_eq!(verify(&envelope, &[key.verifying_key()]).unwrap(), statement());
        let carried = envelope_of_bundle(&bundle(&envelope)).unwrap();
        assert_eq!(carried, envelope);
        let other = SigningKey::generate(&mut rand::thread_rng());
        assert!(verify(&envelope, &[other.verifying_key()]).is_err());
    }
}
