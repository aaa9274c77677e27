//! Property tests for every parser of untrusted input in `amber-core`: each
//! accepts exactly what it documents, never panics, and what it accepts
//! prints back as it came.

use std::str::FromStr;

use amber_core::dsse::{self, Envelope};
use amber_core::manifest::{FilePath, ManifestRequest};
use amber_core::token::{Grant, TokenId, TokenSecret};
use amber_core::{Digest, RepoName, RepoPattern, Tag};
use proptest::prelude::*;
use unicode_normalization::UnicodeNormalization;

/// Accepted input prints back exactly as given.
fn round_trips<T: FromStr + std::fmt::Display>(s: &str) -> bool {
    s.parse::<T>().map_or(true, |v| v.to_string() == s)
}

fn segment() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9._-]{0,20}".prop_filter("no ..", |s| !s.contains(".."))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn digests_are_blake3_and_64_lowercase_hex(s in "\\PC{0,80}|blake3:[0-9a-fA-F]{60,68}") {
        let valid = s.strip_prefix("blake3:").is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        prop_assert_eq!(s.parse::<Digest>().is_ok(), valid);
        prop_assert!(round_trips::<Digest>(&s));
    }

    #[test]
    fn every_digest_prints_and_parses(bytes in any::<[u8; 32]>()) {
        let digest = Digest::from_bytes(bytes);
        prop_assert_eq!(digest.to_string().parse::<Digest>().unwrap(), digest);
    }

    #[test]
    fn repository_names_follow_the_contract(s in "\\PC{0,40}|[a-zA-Z0-9._/-]{1,70}") {
        if let Ok(name) = s.parse::<RepoName>() {
            let (owner, rest) = name.as_str().split_once('/').unwrap();
            for part in [owner, rest] {
                prop_assert!((1..=64).contains(&part.len()));
                prop_assert!(part.as_bytes()[0].is_ascii_alphanumeric());
                prop_assert!(part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)));
                prop_assert!(!part.contains(".."));
            }
        }
        prop_assert!(round_trips::<RepoName>(&s));
    }

    #[test]
    fn generated_names_parse(owner in segment(), name in segment()) {
        let exact = format!("{}/{}", owner, name);
        let wildcard = format!("{}/*", owner);
        prop_assert!(exact.parse::<RepoName>().is_ok());
        prop_assert!(wildcard.parse::<RepoPattern>().is_ok());
    }

    #[test]
    fn patterns_and_tags_round_trip(s in "\\PC{0,40}|[a-zA-Z0-9._/*-]{1,140}") {
        prop_assert!(round_trips::<RepoPattern>(&s));
        prop_assert!(round_trips::<Tag>(&s));
        if let Ok(tag) = s.parse::<Tag>() {
            prop_assert!((1..=128).contains(&tag.as_str().len()));
            prop_assert!(tag.as_str().as_bytes()[0].is_ascii_alphanumeric());
        }
    }

    #[test]
    fn grants_parse_from_any_json(json in "\\PC{0,120}") {
        let _ = serde_json::from_str::<Grant>(&json);
        let _ = serde_json::from_str::<Vec<Grant>>(&json);
    }

    #[test]
    fn a_token_secret_with_any_one_character_changed_is_refused(index in 0usize..40, replacement in "[a-zA-Z0-9_]") {
        let secret = TokenSecret::generate(&mut rand::thread_rng());
        let text = secret.expose().to_owned();
        prop_assert_eq!(text.parse::<TokenSecret>().unwrap(), secret);
        let index = index % text.len();
        let mut changed = text.clone();
        changed.replace_range(index..=index, &replacement);
        if changed != text {
            prop_assert!(changed.parse::<TokenSecret>().is_err(), "{} was accepted", changed);
        }
    }

    #[test]
    fn token_secrets_and_ids_never_panic(s in "\\PC{0,80}") {
        let _ = s.parse::<TokenSecret>();
        prop_assert!(round_trips::<TokenId>(&s));
    }

    #[test]
    fn accepted_file_paths_unpack_inside_their_directory(s in "\\PC{0,40}|[a-zA-Z0-9 ./\\\\:]{1,40}") {
        if let Ok(path) = s.parse::<FilePath>() {
            let p = path.as_str();
            prop_assert!(!p.starts_with('/') && !p.contains('\\') && !p.contains(':'));
            prop_assert!(p.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != ".."));
            prop_assert!(p.nfc().eq(p.chars()));
            prop_assert!(!p.chars().any(char::is_control));
            let joined = std::path::Path::new("/out").join(p);
            prop_assert!(joined.starts_with("/out/"));
        }
    }

    #[test]
    fn manifest_requests_parse_or_fail_cleanly(json in "\\PC{0,200}") {
        if let Ok(request) = serde_json::from_str::<ManifestRequest>(&json) {
            let _ = request.normalise();
        }
    }

    #[test]
    fn envelopes_from_anywhere_never_verify_without_the_key(json in "\\PC{0,200}", payload in any::<Vec<u8>>()) {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let other = ed25519_dalek::SigningKey::from_bytes(&[8; 32]);
        if let Ok(envelope) = serde_json::from_str::<Envelope>(&json) {
            prop_assert!(envelope.verify("t", &[key.verifying_key()]).is_err());
        }
        let signed = dsse::sign("t", &payload, &key);
        prop_assert_eq!(signed.verify("t", &[key.verifying_key()]).unwrap(), payload);
        prop_assert!(signed.verify("t", &[other.verifying_key()]).is_err());
        prop_assert!(signed.verify("u", &[key.verifying_key()]).is_err());
    }
}

// The transparency log's formats, as a client or the server reads them.
proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn tile_paths_accept_exactly_the_spelling_they_print(
        s in "\\PC{0,40}|(entries|[0-9]{1,2})/(x[0-9]{3}/){0,3}[0-9]{1,4}(\\.p/[0-9]{1,3})?"
    ) {
        use amber_core::log::TilePath;
        if let Some(tile) = TilePath::parse(&s) {
            prop_assert_eq!(tile.path(), format!("tile/{s}"));
        }
    }

    #[test]
    fn every_tile_prints_and_parses(level in 0u8..8, index in 0u64..u64::MAX / 256, width in 1u32..=256, entries: bool) {
        use amber_core::log::TilePath;
        let tile = if entries { TilePath::Entries { index, width } } else { TilePath::Hashes { level, index, width } };
        let path = tile.path();
        prop_assert_eq!(TilePath::parse(path.strip_prefix("tile/").unwrap()), Some(tile));
    }

    #[test]
    fn receipts_and_notes_never_verify_without_the_log_key(s in "\\PC{0,300}|c2sp.org/tlog-proof@v1\nextra [A-Za-z0-9+/=]{0,40}\nindex [0-9]{1,3}\n([A-Za-z0-9+/]{43}=\n){0,3}\n\\PC{0,80}") {
        use amber_core::log::{LogVerifier, Receipt, vkey};
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let log = LogVerifier::new(&vkey("amber.test/log", &key.verifying_key())).unwrap();
        if let Ok(receipt) = Receipt::parse(&s) {
            prop_assert!(receipt.verify(&log).is_err());
            prop_assert_eq!(Receipt::parse(&receipt.to_text()).unwrap(), receipt);
        }
        prop_assert!(log.open(&s).is_err());
    }

    #[test]
    fn entry_bundles_and_frontiers_parse_or_refuse(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        use amber_core::log::{Frontier, entry_bundle, parse_entry_bundle};
        if let Ok(entries) = parse_entry_bundle(&bytes) {
            prop_assert_eq!(entry_bundle(entries.iter().map(Vec::as_slice)), bytes.clone());
        }
        if let Ok(frontier) = Frontier::from_bytes(&bytes) {
            prop_assert_eq!(frontier.to_bytes(), bytes);
        }
    }
}
