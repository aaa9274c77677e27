//! DSSE envelopes signed with Ed25519.
//!
//! The signature covers the DSSE pre-authentication encoding (PAE):
//! `"DSSEv1" SP len(type) SP type SP len(payload) SP payload`, lengths in ASCII
//! decimal. The payload travels base64-encoded (standard alphabet, padded), so
//! verifiers sign and check the exact bytes, never a re-serialisation.
//! A key id is derived from the public key: the first 16 bytes of its BLAKE3,
//! in hex, so it cannot be chosen to impersonate another key. Attestations
//! carry the id stock verifiers compute instead ([`sslib_key_id`]); either
//! names the key it was derived from, and [`Envelope::verify`] takes both.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// Base64 of the payload bytes.
    pub payload: String,
    pub signatures: Vec<EnvelopeSignature>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    pub keyid: String,
    /// Base64 of the 64-byte Ed25519 signature over the PAE.
    pub sig: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DsseError {
    #[error("envelope payloadType is {0:?}, expected {1:?}")]
    PayloadType(String, &'static str),
    #[error("envelope payload or signature is not valid base64")]
    Encoding,
    #[error("no signature from a pinned key (key ids seen: {0})")]
    UnknownKey(String),
    #[error("signature by key {0} does not verify")]
    BadSignature(String),
}

/// The DSSE pre-authentication encoding: the bytes that are actually signed.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {} {} ", payload_type.len(), payload_type, payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

pub fn key_id(key: &VerifyingKey) -> String {
    blake3::hash(key.as_bytes()).to_hex()[..32].to_owned()
}

/// The key id securesystemslib (and so in-toto and TUF tooling) computes
/// for an Ed25519 key: the sha256 of the canonical JSON of
/// `{"keytype": "ed25519", "keyval": {"public": HEX}, "scheme": "ed25519"}`.
pub fn sslib_key_id(key: &VerifyingKey) -> String {
    use sha2::Digest as _;
    let hex: String = key.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
    // Canonical JSON: keys sorted, no white space; nothing here needs escaping.
    let canonical = format!(r#"{{"keytype":"ed25519","keyval":{{"public":"{hex}"}},"scheme":"ed25519"}}"#);
    sha2::Sha256::digest(canonical.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `keyid` names `key`, by either of its ids.
pub fn names(keyid: &str, key: &VerifyingKey) -> bool {
    keyid == key_id(key) || keyid == sslib_key_id(key)
}

pub fn sign(payload_type: &str, payload: &[u8], key: &SigningKey) -> Envelope {
    sign_as(payload_type, payload, key, &key_id(&key.verifying_key()))
}

/// Signs with `keyid` naming the key (one of its two ids).
pub fn sign_as(payload_type: &str, payload: &[u8], key: &SigningKey, keyid: &str) -> Envelope {
    let signature = key.sign(&pae(payload_type, payload));
    Envelope {
        payload_type: payload_type.to_owned(),
        payload: B64.encode(payload),
        signatures: vec![EnvelopeSignature { keyid: keyid.to_owned(), sig: B64.encode(signature.to_bytes()) }],
    }
}

impl Envelope {
    pub fn payload_bytes(&self) -> Result<Vec<u8>, DsseError> {
        B64.decode(&self.payload).map_err(|_| DsseError::Encoding)
    }

    /// Checks the payload type and that at least one signature is by a pinned key
    /// and verifies; any signature by a pinned key that fails is an error. Returns
    /// the payload bytes.
    pub fn verify(&self, expected_type: &'static str, keys: &[VerifyingKey]) -> Result<Vec<u8>, DsseError> {
        if self.payload_type != expected_type {
            return Err(DsseError::PayloadType(self.payload_type.clone(), expected_type));
        }
        let payload = self.payload_bytes()?;
        let message = pae(&self.payload_type, &payload);
        let mut verified = false;
        for signature in &self.signatures {
            let Some(key) = keys.iter().find(|k| names(&signature.keyid, k)) else {
                continue;
            };
            let bytes: [u8; 64] =
                B64.decode(&signature.sig).ok().and_then(|b| b.try_into().ok()).ok_or(DsseError::Encoding)?;
            key.verify_strict(&message, &ed25519_dalek::Signature::from_bytes(&bytes))
                .map_err(|_| DsseError::BadSignature(signature.keyid.clone()))?;
            verified = true;
        }
        if verified {
            Ok(payload)
        } else {
            let seen: Vec<&str> = self.signatures.iter().map(|s| s.keyid.as_str()).collect();
            Err(DsseError::UnknownKey(seen.join(", ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_dsse_spec_example() {
        // From the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
    }

    #[test]
    fn sign_then_verify_and_reject_tampering() {
        let key = SigningKey::generate(&mut rand::thread_rng());
        let other = SigningKey::generate(&mut rand::thread_rng());
        let env = sign("t", b"{\"a\":1}", &key);
        assert_eq!(env.verify("t", &[key.verifying_key()]).unwrap(), b"{\"a\":1}");
        assert!(matches!(env.verify("t", &[other.verifying_key()]), Err(DsseError::UnknownKey(_))));
        assert!(matches!(env.verify("u", &[key.verifying_key()]), Err(DsseError::PayloadType(..))));

        let mut flipped = env.clone();
        flipped.payload = B64.encode(b"{\"a\":2}");
        assert!(matches!(flipped.verify("t", &[key.verifying_key()]), Err(DsseError::BadSignature(_))));

        let mut bad_sig = env;
        let mut sig = B64.decode(&bad_sig.signatures[0].sig).unwrap();
        sig[0] ^= 1;
        bad_sig.signatures[0].sig = B64.encode(sig);
        assert!(matches!(bad_sig.verify("t", &[key.verifying_key()]), Err(DsseError::BadSignature(_))));
    }
}
