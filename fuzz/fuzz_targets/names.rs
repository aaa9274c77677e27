//! Digests, repository names and patterns, tags, token secrets and ids,
//! file paths: each either refuses the input or prints it back unchanged.
#![no_main]

use std::str::FromStr;

use amber_core::manifest::FilePath;
use amber_core::{Digest, RepoName, RepoPattern, Tag, TokenId, TokenSecret};
use libfuzzer_sys::fuzz_target;

fn round_trips<T: FromStr + std::fmt::Display>(s: &str) {
    if let Ok(value) = s.parse::<T>() {
        assert_eq!(value.to_string(), s);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    round_trips::<Digest>(s);
    round_trips::<RepoName>(s);
    round_trips::<RepoPattern>(s);
    round_trips::<Tag>(s);
    round_trips::<TokenId>(s);
    round_trips::<FilePath>(s);
    let _ = s.parse::<TokenSecret>();
});
