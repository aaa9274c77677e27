//! A DSSE envelope from an untrusted server: parsing and verification with
//! a pinned key never panic, and nothing verifies without that key.
#![no_main]

use amber_core::dsse::Envelope;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = ed25519_key();
    if let Ok(envelope) = serde_json::from_slice::<Envelope>(data) {
        assert!(envelope.verify("application/vnd.amber.manifest.v1+json", &[key]).is_err());
        let _ = envelope.payload_bytes();
    }
});

fn ed25519_key() -> ed25519_dalek::VerifyingKey {
    ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key()
}
