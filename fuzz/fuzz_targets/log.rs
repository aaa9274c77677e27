//! What a client or the server parses of the transparency log from the other
//! side: receipts, proofs, checkpoint notes, tile paths, entry bundles and the
//! stored frontier never panic, and nothing verifies without the log key.
#![no_main]

use amber_core::log::{self as tlog, Frontier, LogVerifier, Receipt, TilePath};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let log = LogVerifier::new(&tlog::vkey("fuzz.example/log", &key.verifying_key())).unwrap();
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(receipt) = Receipt::parse(text) {
            assert!(receipt.verify(&log).is_err());
        }
        assert!(log.open(text).is_err());
        let _ = tlog::parse_proof_lines(text);
        if let Some(tile) = TilePath::parse(text) {
            assert_eq!(tile.path(), format!("tile/{text}"));
        }
    }
    let _ = tlog::parse_entry_bundle(data);
    let _ = Frontier::from_bytes(data);
});
