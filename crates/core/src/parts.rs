//! A blob uploaded in parts, each checked on arrival against the blob's
//! BLAKE3 digest through the hash's tree.
//!
//! With a power-of-two part size, every part is a whole subtree of BLAKE3's
//! tree (the last may be shorter, and is the tree's rightmost subtree), so the
//! chaining values of the parts, which a client gets while hashing the file,
//! merge to the digest. A plan is checked once, before any data (the values
//! merge to the digest); then each part's bytes, hashed at its offset, must
//! give its value. A blob of one part has no interior values: its part is
//! checked against the digest itself.

use std::ops::Range;

use blake3::hazmat::{ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root};

use crate::Digest;

/// The smallest part size a plan takes (and every size is a power of two).
pub const MIN_PART_SIZE: u64 = 1 << 20;
/// The most parts a plan takes: 10 000, as S3's multipart uploads.
pub const MAX_PARTS: u64 = 10_000;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("part_size must be a power of two of at least {MIN_PART_SIZE} bytes, not {0}")]
    PartSize(u64),
    #[error(
        "a blob of {length} bytes in parts of {part_size} has {expected} parts; {given} chaining values were given"
    )]
    Count { length: u64, part_size: u64, expected: u64, given: usize },
    #[error("a blob of {length} bytes in parts of {part_size} has {parts} parts; at most {MAX_PARTS} are taken")]
    TooManyParts { length: u64, part_size: u64, parts: u64 },
    #[error("the chaining values do not merge to {0}")]
    Mismatch(Digest),
}

/// A checked plan: the blob's length, its part size and each part's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartPlan {
    digest: Digest,
    length: u64,
    part_size: u64,
    cvs: Vec<ChainingValue>,
}

impl PartPlan {
    /// Checks that `cvs` (one per part, in order) merge to `digest` for a
    /// blob of `length` bytes cut every `part_size` bytes.
    pub fn new(digest: Digest, length: u64, part_size: u64, cvs: Vec<ChainingValue>) -> Result<Self, PlanError> {
        if part_size < MIN_PART_SIZE || !part_size.is_power_of_two() {
            return Err(PlanError::PartSize(part_size));
        }
        Self::checked(digest, length, part_size, cvs)
    }

    /// [`Self::new`] for any power-of-two part size of at least a chunk (tests).
    fn checked(digest: Digest, length: u64, part_size: u64, cvs: Vec<ChainingValue>) -> Result<Self, PlanError> {
        debug_assert!(part_size.is_power_of_two() && part_size >= blake3::CHUNK_LEN as u64);
        let parts = part_count(length, part_size);
        if parts > MAX_PARTS {
            return Err(PlanError::TooManyParts { length, part_size, parts });
        }
        if cvs.len() as u64 != parts {
            return Err(PlanError::Count { length, part_size, expected: parts, given: cvs.len() });
        }
        // Zero or one part: nothing to merge; the part (if any) is checked
        // against the digest when it arrives.
        if parts >= 2 && merged_digest(length, part_size, &cvs) != Some(digest) {
            return Err(PlanError::Mismatch(digest));
        }
        if parts == 0 && Digest::of(b"") != digest {
            return Err(PlanError::Mismatch(digest));
        }
        Ok(Self { digest, length, part_size, cvs })
    }

    pub fn parts(&self) -> u64 {
        self.cvs.len() as u64
    }

    pub fn part_size(&self) -> u64 {
        self.part_size
    }

    /// The bytes of part `index` within the blob.
    pub fn range(&self, index: u64) -> Range<u64> {
        let start = index * self.part_size;
        start..(start + self.part_size).min(self.length)
    }

    /// A hasher for part `index`, to be fed exactly its bytes.
    pub fn part(&self, index: u64) -> PartHasher {
        self.slot(index).hasher()
    }

    /// What checking part `index` needs, to be kept with the part's upload.
    pub fn slot(&self, index: u64) -> PartSlot {
        let range = self.range(index);
        PartSlot {
            digest: self.digest,
            part_size: self.part_size,
            parts: self.parts(),
            index,
            length: range.end - range.start,
            cv: self.cvs[index as usize],
        }
    }
}

/// One part of a checked plan: where it lies and the value it must hash to.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartSlot {
    /// The blob's digest.
    pub digest: Digest,
    pub part_size: u64,
    /// How many parts the blob has.
    pub parts: u64,
    pub index: u64,
    /// This part's length.
    pub length: u64,
    #[serde(with = "hex_cv")]
    pub cv: ChainingValue,
}

impl PartSlot {
    /// Where the part starts in the blob.
    pub fn offset(&self) -> u64 {
        self.index * self.part_size
    }

    /// A hasher for the part, to be fed exactly its bytes.
    pub fn hasher(&self) -> PartHasher {
        let mut hasher = blake3::Hasher::new();
        hasher.set_input_offset(self.offset());
        let expected = if self.parts == 1 { Expected::Root(self.digest, self.cv) } else { Expected::Subtree(self.cv) };
        PartHasher { hasher, expected, length: self.length, fed: 0 }
    }
}

mod hex_cv {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(cv: &[u8; 32], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(blake3::Hash::from_bytes(*cv).to_hex().as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(deserializer)?;
        blake3::Hash::from_hex(text).map(|hash| *hash.as_bytes()).map_err(serde::de::Error::custom)
    }
}

/// The digest that the values of a blob's parts (two or more) merge to;
/// `None` for fewer parts, whose digest is the hash of the bytes themselves.
/// `part_size` is a power of two of at least a chunk (1 KiB).
pub fn merged_digest(length: u64, part_size: u64, cvs: &[ChainingValue]) -> Option<Digest> {
    let sound = part_size.is_power_of_two() && part_size >= blake3::CHUNK_LEN as u64;
    (sound && cvs.len() >= 2 && cvs.len() as u64 == part_count(length, part_size))
        .then(|| Digest::from(root(cvs, length, part_size)))
}

/// How many parts of `part_size` a blob of `length` bytes has.
pub fn part_count(length: u64, part_size: u64) -> u64 {
    length.div_ceil(part_size)
}

/// The chaining value of the part `part` that starts `offset` bytes into its
/// blob (what a client computes for each part while hashing the file);
/// `offset` is a multiple of the part size, and `part` is not empty.
pub fn part_cv(part: &[u8], offset: u64) -> ChainingValue {
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(offset);
    hasher.update(part);
    hasher.finalize_non_root()
}

enum Expected {
    Subtree(ChainingValue),
    /// The only part: its root hash is the digest (and its value the one given).
    Root(Digest, ChainingValue),
}

/// Hashes one part as it arrives.
pub struct PartHasher {
    hasher: blake3::Hasher,
    expected: Expected,
    /// The part's length, and how much was fed (more than the part is never
    /// hashed: the tree's hasher must not be fed past its subtree).
    length: u64,
    fed: u64,
}

impl PartHasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.fed = self.fed.saturating_add(bytes.len() as u64);
        if self.fed <= self.length {
            self.hasher.update(bytes);
        }
    }

    /// True when the bytes fed were the part the plan describes.
    pub fn matches(&self) -> bool {
        if self.fed != self.length {
            return false;
        }
        match &self.expected {
            Expected::Subtree(cv) => self.hasher.finalize_non_root() == *cv,
            Expected::Root(digest, cv) => {
                Digest::from(self.hasher.finalize()) == *digest && self.hasher.finalize_non_root() == *cv
            }
        }
    }
}

/// The root of `cvs`, at least two parts of a blob of `length` bytes.
fn root(cvs: &[ChainingValue], length: u64, part_size: u64) -> blake3::Hash {
    let (left, right, left_len) = split(cvs, length, part_size);
    merge_subtrees_root(&subtree(left, left_len, part_size), &subtree(right, length - left_len, part_size), Mode::Hash)
}

/// The chaining value of the subtree over `cvs`, `length` bytes in all.
fn subtree(cvs: &[ChainingValue], length: u64, part_size: u64) -> ChainingValue {
    if let [only] = cvs {
        return *only;
    }
    let (left, right, left_len) = split(cvs, length, part_size);
    merge_subtrees_non_root(
        &subtree(left, left_len, part_size),
        &subtree(right, length - left_len, part_size),
        Mode::Hash,
    )
}

/// BLAKE3's split of a subtree: the left holds the largest power-of-two
/// number of chunks that leaves the right at least one byte. A power-of-two
/// part size divides it whenever there are two parts or more.
fn split(cvs: &[ChainingValue], length: u64, part_size: u64) -> (&[ChainingValue], &[ChainingValue], u64) {
    let left_len = blake3::hazmat::left_subtree_len(length);
    let (left, right) = cvs.split_at((left_len / part_size) as usize);
    (left, right, left_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn plan_of(bytes: &[u8], part_size: u64) -> Vec<ChainingValue> {
        bytes.chunks(part_size as usize).enumerate().map(|(i, p)| part_cv(p, i as u64 * part_size)).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The values of a blob's parts merge to `blake3::hash` of it, each
        /// part checks, and any other value or byte is refused.
        #[test]
        fn parts_merge_to_the_digest_and_each_part_checks(
            bytes in prop::collection::vec(any::<u8>(), 0..40_000),
            k in 10u32..14,
        ) {
            let (part_size, length) = (1u64 << k, bytes.len());
            let digest = Digest::from(blake3::hash(&bytes));
            let cvs = plan_of(&bytes, part_size);
            let plan = PartPlan::checked(digest, length as u64, part_size, cvs.clone()).unwrap();
            for index in 0..plan.parts() {
                let range = plan.range(index);
                let mut part = plan.part(index);
                part.update(&bytes[range.start as usize..range.end as usize]);
                prop_assert!(part.matches());
                let mut wrong = plan.part(index);
                let mut altered = bytes[range.start as usize..range.end as usize].to_vec();
                altered[0] ^= 1;
                wrong.update(&altered);
                prop_assert!(!wrong.matches());
            }
            if cvs.len() >= 2 {
                let mut swapped = cvs.clone();
                swapped.swap(0, 1);
                prop_assert_eq!(
                    PartPlan::checked(digest, length as u64, part_size, swapped),
                    Err(PlanError::Mismatch(digest))
                );
                let other = Digest::of(b"another blob");
                prop_assert_eq!(PartPlan::checked(other, length as u64, part_size, cvs), Err(PlanError::Mismatch(other)));
            }
        }
    }

    #[test]
    fn a_plan_names_its_part_size_count_and_limit() {
        let digest = Digest::of(b"");
        assert_eq!(PartPlan::new(digest, 0, 3 << 20, vec![]), Err(PlanError::PartSize(3 << 20)));
        assert_eq!(PartPlan::new(digest, 0, 1 << 19, vec![]), Err(PlanError::PartSize(1 << 19)));
        assert!(PartPlan::new(digest, 0, 1 << 20, vec![]).is_ok(), "a zero-byte blob has no parts");
        assert!(matches!(
            PartPlan::new(digest, 3 << 20, 1 << 20, vec![[0; 32]; 2]),
            Err(PlanError::Count { expected: 3, given: 2, .. })
        ));
        assert!(matches!(
            PartPlan::new(digest, 10_001 << 20, 1 << 20, vec![]),
            Err(PlanError::TooManyParts { parts: 10_001, .. })
        ));
    }

    #[test]
    fn one_part_is_checked_against_the_digest_itself() {
        let bytes: Vec<u8> = (0..5000u32).map(|i| (i * 31 % 251) as u8).collect();
        let digest = Digest::from(blake3::hash(&bytes));
        let plan = PartPlan::checked(digest, 5000, 8192, plan_of(&bytes, 8192)).unwrap();
        let mut part = plan.part(0);
        part.update(&bytes);
        assert!(part.matches());
        let wrong = PartPlan::checked(Digest::of(b"x"), 5000, 8192, plan_of(&bytes, 8192)).unwrap();
        let mut part = wrong.part(0);
        part.update(&bytes);
        assert!(!part.matches(), "one part's bytes must hash to the digest");
        let (mut short, mut long) = (plan.part(0), plan.part(0));
        short.update(&bytes[..4999]);
        long.update(&bytes);
        long.update(b"!");
        assert!(!short.matches() && !long.matches(), "a part of another length never matches");
        assert!(!plan.part(0).matches(), "nothing fed");
    }
}
