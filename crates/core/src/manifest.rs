//! Manifests: what a client asks to publish, the payload the server signs, and
//! offline verification of a signed manifest.
//!
//! The payload bytes are produced once, by the server, signed as a DSSE
//! envelope and never re-serialised; the manifest digest is the BLAKE3 of
//! those bytes. Files are sorted by path so that the same set of files always
//! yields the same comparison on retry.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;

use crate::digest::Digest;
use crate::dsse::{DsseError, Envelope};
use crate::name::{RepoName, Tag};
use crate::token::TokenId;

pub const SCHEMA: &str = "amber.manifest.v1";
pub const PAYLOAD_TYPE: &str = "application/vnd.amber.manifest.v1+json";
const MAX_PATH_LEN: usize = 4096;

/// A file path inside a manifest, one that unpacks the same on Linux, macOS
/// and Windows: relative and normalised (`/`-separated, no empty, `.` or `..`
/// segment), NFC Unicode without control, bidi or Windows-forbidden
/// characters (`\\ : * ? " < > |`, so no drive letter), no segment that starts
/// or ends with a space or ends with a dot, and no Windows device name.
/// Uniqueness without regard to case is a property of the whole manifest
/// ([`ManifestRequest::normalise`], [`verify`]).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FilePath(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("file path {0}")]
pub struct FilePathError(&'static str);

/// Bidirectional formatting characters: they make a name display as another.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Names Windows reserves for devices, with or without an extension.
fn is_windows_device(segment: &str) -> bool {
    let stem = segment.split('.').next().unwrap_or("").trim_end().to_ascii_uppercase();
    matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$")
        || (stem.len() == 4
            && (stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.as_bytes()[3].is_ascii_digit()
            && stem.as_bytes()[3] != b'0')
}

fn check_path(s: &str) -> Result<(), FilePathError> {
    use unicode_normalization::UnicodeNormalization;
    let fail = |reason| Err(FilePathError(reason));
    if s.is_empty() || s.len() > MAX_PATH_LEN {
        return fail("must be 1 to 4096 bytes");
    }
    if s.chars().any(|c| c.is_control() || is_bidi_control(c)) {
        return fail("may not contain control or bidirectional formatting characters");
    }
    if s.chars().any(|c| matches!(c, '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|')) {
        return fail(
            "may not contain \\ : * ? \" < > | (a drive letter or backslash does not unpack the same everywhere)",
        );
    }
    if !s.nfc().eq(s.chars()) {
        return fail("must be in Unicode normalisation form C (NFC)");
    }
    for segment in s.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return fail("must be relative and normalised: no leading /, no empty, . or .. segments");
        }
        if segment.starts_with(' ') || segment.ends_with(' ') || segment.ends_with('.') {
            return fail("segments may not start or end with a space, or end with a dot");
        }
        if is_windows_device(segment) {
            return fail("segments may not be Windows device names (CON, NUL, COM1, ...)");
        }
    }
    Ok(())
}

/// Fails when two paths differ only in case (or a path is a directory of
/// another that way): they would be one file on macOS and Windows.
pub fn check_portable(files: &[FileEntry]) -> Result<(), ManifestError> {
    let folded = |p: &FilePath| p.as_str().to_lowercase();
    let mut seen = BTreeSet::new();
    for file in files {
        if !seen.insert(folded(&file.path)) {
            return Err(ManifestError::DuplicatePath(file.path.clone()));
        }
    }
    for file in files {
        let path = folded(&file.path);
        let mut prefix = path.as_str();
        while let Some((parent, _)) = prefix.rsplit_once('/') {
            if seen.contains(parent) {
                return Err(ManifestError::PathConflict(file.path.clone()));
            }
            prefix = parent;
        }
    }
    Ok(())
}

impl FilePath {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for FilePath {
    type Err = FilePathError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        check_path(s).map(|()| Self(s.to_owned()))
    }
}

impl fmt::Display for FilePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for FilePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl Serialize for FilePath {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for FilePath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub path: FilePath,
    pub digest: Digest,
    pub size: u64,
}

/// What a client sends to `PUT .../tags/{tag}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestRequest {
    pub files: Vec<FileEntry>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("file path {0} appears more than once (paths are compared without regard to case)")]
    DuplicatePath(FilePath),
    #[error("file path {0} is also used as a directory (paths are compared without regard to case)")]
    PathConflict(FilePath),
    #[error("a manifest lists at least one file")]
    Empty,
}

impl ManifestRequest {
    /// Sorts files by path and rejects duplicates and file/directory clashes, so
    /// that a manifest can always be written out as a directory tree.
    pub fn normalise(mut self) -> Result<Self, ManifestError> {
        if self.files.is_empty() {
            return Err(ManifestError::Empty);
        }
        self.files.sort_by(|a, b| a.path.cmp(&b.path));
        check_portable(&self.files)?;
        Ok(self)
    }
}

/// Who pushed a manifest, as the server knows it from the token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushedBy {
    pub token_id: TokenId,
    pub token_name: String,
    pub pipeline: Option<String>,
    /// The CI run that pushed, as verified from its ID token (trusted
    /// publishing); absent for a token an operator created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ci: Option<crate::token::CiIdentity>,
}

/// The signed statement: the server's facts plus the client's files and annotations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestPayload {
    pub schema: String,
    pub repository: RepoName,
    pub tag: Tag,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub pushed_by: PushedBy,
    pub files: Vec<FileEntry>,
    pub annotations: BTreeMap<String, String>,
    /// The OCI manifest this binding is, when it was pushed through `/v2/`:
    /// its files are that manifest's layers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci: Option<OciRef>,
}

/// An OCI manifest, named in an Amber manifest: its digest (the hash of its
/// bytes, `sha256:<hex>` or as pushed) and media type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciRef {
    pub digest: String,
    pub media_type: String,
}

impl ManifestPayload {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a manifest payload always serialises")
    }

    /// True when `request` (normalised) publishes exactly these files and annotations.
    pub fn same_content(&self, request: &ManifestRequest) -> bool {
        self.files == request.files && self.annotations == request.annotations
    }
}

/// What a verifier asked for: a tag, or a manifest digest (then any tag).
#[derive(Clone, Debug)]
pub enum Expected {
    Tag(Tag),
    Digest(Digest),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error(transparent)]
    Signature(#[from] DsseError),
    #[error("payload is not an {SCHEMA} manifest: {0}")]
    Payload(String),
    #[error("manifest is for repository {found}, expected {expected}")]
    WrongRepository { expected: RepoName, found: RepoName },
    #[error("manifest is for tag {found}, expected {expected}")]
    WrongTag { expected: Tag, found: Tag },
    #[error("manifest digest is {found}, expected {expected}")]
    WrongDigest { expected: Digest, found: Digest },
}

/// A manifest whose signature, repository and tag (or digest) checked out.
#[derive(Clone, Debug)]
pub struct VerifiedManifest {
    pub digest: Digest,
    pub payload: ManifestPayload,
}

/// Verifies an envelope with pinned keys only: trusts nothing from the server.
pub fn verify(
    envelope: &Envelope,
    keys: &[VerifyingKey],
    repository: &RepoName,
    expected: &Expected,
) -> Result<VerifiedManifest, VerifyError> {
    let bytes = envelope.verify(PAYLOAD_TYPE, keys)?;
    let digest = Digest::of(&bytes);
    let payload: ManifestPayload = serde_json::from_slice(&bytes).map_err(|e| VerifyError::Payload(e.to_string()))?;
    if payload.schema != SCHEMA {
        return Err(VerifyError::Payload(format!("schema is {:?}", payload.schema)));
    }
    if &payload.repository != repository {
        return Err(VerifyError::WrongRepository { expected: repository.clone(), found: payload.repository });
    }
    match expected {
        Expected::Tag(tag) if &payload.tag != tag => {
            return Err(VerifyError::WrongTag { expected: tag.clone(), found: payload.tag });
        }
        Expected::Digest(want) if *want != digest => {
            return Err(VerifyError::WrongDigest { expected: *want, found: digest });
        }
        _ => {}
    }
    check_portable(&payload.files).map_err(|e| VerifyError::Payload(e.to_string()))?;
    Ok(VerifiedManifest { digest, payload })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dsse;
    use base64::Engine;
    use ed25519_dalek::SigningKey;

    fn file(path: &str) -> FileEntry {
        FileEntry { path: path.parse().unwrap(), digest: Digest::of(path.as_bytes()), size: 1 }
    }

    #[test]
    fn file_paths() {
        for good in ["a", "a/b.txt", "dir/sub/file", ".hidden", "a..b"] {
            assert!(good.parse::<FilePath>().is_ok(), "{good}");
        }
        for bad in ["", "/abs", "a/", "a//b", "./a", "a/./b", "../x", "a/../b", "..", "a\\b", "a\0b", "a\nb"] {
            assert!(bad.parse::<FilePath>().is_err(), "{bad:?}");
        }
        // What unpacks differently on macOS or Windows.
        for bad in [
            "C:/x",
            "c:x",
            "a/b:stream",
            "e\u{301}",        // NFD of é
            "gpj.\u{202E}exe", // right-to-left override
            " lead",
            "trail ",
            "dir/trail.",
            "NUL",
            "dir/com1.txt",
            "a|b",
        ] {
            assert!(bad.parse::<FilePath>().is_err(), "{bad:?}");
        }
        for good in ["\u{e9}", "CONSOLE", "com0", "lpt", "a b", ".config", "x.y.z", "日本/語"] {
            assert!(good.parse::<FilePath>().is_ok(), "{good:?}");
        }
    }

    #[test]
    fn paths_are_unique_without_regard_to_case() {
        let twins = ManifestRequest { files: vec![file("README"), file("readme")], annotations: BTreeMap::new() };
        assert!(matches!(twins.normalise(), Err(ManifestError::DuplicatePath(_))));
        let clash = ManifestRequest { files: vec![file("Dir/a"), file("dir")], annotations: BTreeMap::new() };
        assert!(matches!(clash.normalise(), Err(ManifestError::PathConflict(_))));
    }

    #[test]
    fn normalise_sorts_and_rejects_clashes() {
        let req = ManifestRequest { files: vec![file("b"), file("a")], annotations: BTreeMap::new() };
        let req = req.normalise().unwrap();
        assert_eq!(req.files[0].path.as_str(), "a");
        let dup = ManifestRequest { files: vec![file("a"), file("a")], annotations: BTreeMap::new() };
        assert!(matches!(dup.normalise(), Err(ManifestError::DuplicatePath(_))));
        let clash = ManifestRequest { files: vec![file("a/b/c"), file("a/b")], annotations: BTreeMap::new() };
        assert!(matches!(clash.normalise(), Err(ManifestError::PathConflict(_))));
    }

    fn signed(key: &SigningKey) -> (Envelope, Digest) {
        let payload = ManifestPayload {
            schema: SCHEMA.into(),
            repository: "acme/web".parse().unwrap(),
            tag: "1.0".parse().unwrap(),
            created_at: OffsetDateTime::UNIX_EPOCH,
            pushed_by: PushedBy {
                token_id: "tok_000000000000000000000000".parse().unwrap(),
                token_name: "ci".into(),
                pipeline: None,
                ci: None,
            },
            files: vec![file("a")],
            annotations: BTreeMap::new(),
            oci: None,
        };
        let bytes = payload.to_bytes();
        (dsse::sign(PAYLOAD_TYPE, &bytes, key), Digest::of(&bytes))
    }

    #[test]
    fn verify_checks_key_repository_tag_and_digest() {
        let key = SigningKey::generate(&mut rand::thread_rng());
        let keys = [key.verifying_key()];
        let (env, digest) = signed(&key);
        let repo: RepoName = "acme/web".parse().unwrap();
        let ok = verify(&env, &keys, &repo, &Expected::Tag("1.0".parse().unwrap())).unwrap();
        assert_eq!(ok.digest, digest);
        verify(&env, &keys, &repo, &Expected::Digest(digest)).unwrap();

        let err = |r: Result<VerifiedManifest, VerifyError>| r.unwrap_err();
        assert!(matches!(
            err(verify(&env, &keys, &"acme/api".parse().unwrap(), &Expected::Tag("1.0".parse().unwrap()))),
            VerifyError::WrongRepository { .. }
        ));
        assert!(matches!(
            err(verify(&env, &keys, &repo, &Expected::Tag("2.0".parse().unwrap()))),
            VerifyError::WrongTag { .. }
        ));
        assert!(matches!(
            err(verify(&env, &keys, &repo, &Expected::Digest(Digest::of(b"x")))),
            VerifyError::WrongDigest { .. }
        ));

        let other = SigningKey::generate(&mut rand::thread_rng());
        assert!(matches!(
            err(verify(&env, &[other.verifying_key()], &repo, &Expected::Digest(digest))),
            VerifyError::Signature(DsseError::UnknownKey(_))
        ));

        let mut flipped = env;
        let mut bytes = base64::engine::general_purpose::STANDARD.decode(&flipped.payload).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 1;
        flipped.payload = base64::engine::general_purpose::STANDARD.encode(bytes);
        assert!(matches!(
            err(verify(&flipped, &keys, &repo, &Expected::Digest(digest))),
            VerifyError::Signature(DsseError::BadSignature(_))
        ));
    }
}
