//! OCI digests: `sha256:`, `sha512:` and `blake3:` (the algorithms the image
//! spec registers). A blob pushed through `/v2/` is read once and stored
//! once, under BLAKE3, its sha256 (and sha512) computed in the same pass
//! (`crate::push::hashes`).

use std::fmt;

use amber_core::Digest;
use sha2::Digest as _;

use crate::error::ApiError;
use crate::push::hashes::Sums;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Sha256,
    Sha512,
    Blake3,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
            Self::Blake3 => "blake3",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Self::Sha512 => 128,
            _ => 64,
        }
    }
}

/// A digest as an OCI client names content.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OciDigest {
    pub algorithm: Algorithm,
    hex: String,
}

impl OciDigest {
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let invalid = |why: &str| ApiError::DigestInvalid(format!("{:?}: {why}", crate::error::bounded(text)));
        let (algorithm, hex) = text.split_once(':').ok_or_else(|| invalid("a digest is ALGORITHM:HEX"))?;
        let algorithm = match algorithm {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            "blake3" => Algorithm::Blake3,
            _ => return Err(invalid("the algorithm is one of sha256, sha512, blake3")),
        };
        if hex.len() != algorithm.hex_len() || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(invalid("the hex part has the algorithm's length, in lowercase"));
        }
        Ok(Self { algorithm, hex: hex.to_owned() })
    }

    /// The digest of `bytes` under `algorithm`.
    pub fn of(algorithm: Algorithm, bytes: &[u8]) -> Self {
        let hex = match algorithm {
            Algorithm::Sha256 => format!("{:x}", sha2::Sha256::digest(bytes)),
            Algorithm::Sha512 => format!("{:x}", sha2::Sha512::digest(bytes)),
            Algorithm::Blake3 => blake3::hash(bytes).to_hex().to_string(),
        };
        Self { algorithm, hex }
    }

    pub fn sha256_hex(hex: String) -> Self {
        Self { algorithm: Algorithm::Sha256, hex }
    }

    /// The BLAKE3 digest itself, when this is one.
    pub fn blake3(&self) -> Option<Digest> {
        (self.algorithm == Algorithm::Blake3).then(|| format!("blake3:{}", self.hex).parse().ok()).flatten()
    }
}

impl fmt::Display for OciDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

/// The OCI digests of a tapped body (`crate::push::hashes`).
pub struct Tapped {
    pub sha256: OciDigest,
    pub sha512: Option<OciDigest>,
}

impl From<Sums> for Tapped {
    fn from(sums: Sums) -> Self {
        Self {
            sha256: OciDigest::sha256_hex(sums.sha256),
            sha512: sums.sha512.map(|hex| OciDigest { algorithm: Algorithm::Sha512, hex }),
        }
    }
}

impl Tapped {
    /// The digest under `algorithm`, if computed (BLAKE3 is the store's own).
    pub fn get(&self, algorithm: Algorithm) -> Option<&OciDigest> {
        match algorithm {
            Algorithm::Sha256 => Some(&self.sha256),
            Algorithm::Sha512 => self.sha512.as_ref(),
            Algorithm::Blake3 => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_registered_algorithms_only() {
        let sha = OciDigest::of(Algorithm::Sha256, b"");
        assert_eq!(sha.to_string(), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(OciDigest::parse(&sha.to_string()).unwrap(), sha);
        let b3 = OciDigest::of(Algorithm::Blake3, b"x");
        assert_eq!(b3.blake3(), Some(Digest::of(b"x")));
        for bad in ["sha256:E3B0", "md5:00", "sha256", "sha512:e3b0", &sha.to_string().to_uppercase()] {
            assert!(OciDigest::parse(bad).is_err(), "{bad}");
        }
    }
}
