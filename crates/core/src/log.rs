//! The transparency log: every audit entry is a leaf of one RFC 6962 SHA-256
//! Merkle tree, published in the C2SP formats so that verifiers nobody here
//! wrote (Go's `sumdb/note` and `sumdb/tlog`, witnesses) check it unchanged.
//!
//! - [`Frontier`]: the right edge of the tree, all a writer needs to append a
//!   leaf and name the hashes to store (Go's "stored hashes": every complete
//!   subtree, indexed by `tlog::stored_hash_index`).
//! - Checkpoints (`c2sp.org/tlog-checkpoint`) signed as `c2sp.org/signed-note`
//!   with the log key, whose key name is the origin: [`sign_checkpoint`],
//!   [`LogVerifier::open`].
//! - Receipts (`c2sp.org/tlog-proof@v1`) carrying the entry as `extra`:
//!   [`Receipt`].
//! - Tile paths of `c2sp.org/tlog-tiles` and entry bundles.
//!
//! The tree math is `tlog_tiles` (a port of Go's `sumdb/tlog`), the notes are
//! `signed_note`: both from Cloudflare's CT log, so this module only fits them
//! to Amber.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{SigningKey, VerifyingKey};
use signed_note::{Note, NoteError, Signer as _, StandardVerifier, VerifierList};
pub use tlog_tiles::{EMPTY_HASH, HASH_SIZE, Hash};
use tlog_tiles::{check_record, check_tree, node_hash, record_hash, stored_hash_index};

/// Largest entry the log takes (entry bundles prefix each with a `u16`).
pub const MAX_ENTRY_BYTES: usize = 65_535;
/// Tiles are 2^8 hashes wide (C2SP tlog-tiles).
pub const TILE_HEIGHT: u8 = 8;
pub const TILE_WIDTH: u64 = 1 << TILE_HEIGHT;
/// First line of a receipt.
pub const PROOF_HEADER: &str = "c2sp.org/tlog-proof@v1";
/// No honest proof is longer: one hash per level of a 2^64-leaf tree.
const MAX_PROOF_HASHES: usize = 64;
/// The signed-note signature type of Ed25519 keys.
const ALG_ED25519: u8 = 0x01;

/// `SHA-256(0x00 || entry)`.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    record_hash(entry)
}

/// `SHA-256(0x01 || left || right)`.
pub fn parent_hash(left: Hash, right: Hash) -> Hash {
    node_hash(left, right)
}

pub fn hash_b64(hash: &Hash) -> String {
    B64.encode(hash.0)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LogError {
    #[error("malformed {0}")]
    Malformed(&'static str),
    #[error("checkpoint signature: {0}")]
    Signature(String),
    #[error("checkpoint is of log {found:?}, not {expected:?}")]
    Origin { expected: String, found: String },
    #[error("the inclusion proof does not lead to the checkpoint's root")]
    Inclusion,
    #[error("the consistency proof from size {old} to {new} does not hold: the log forked or was rewritten")]
    Consistency { old: u64, new: u64 },
    #[error("the log shrank from {held} to {seen} entries: a rolled-back history")]
    Shrank { held: u64, seen: u64 },
    #[error("two checkpoints of size {0} have different roots: a forked history")]
    Fork(u64),
}

/// The right edge of a tree of `size` leaves: the roots of its complete
/// subtrees, largest (leftmost) first, one for each bit set in `size`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Frontier {
    size: u64,
    roots: Vec<Hash>,
}

impl Frontier {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf; returns the hashes to store, as `(stored hash index,
    /// hash)`: the leaf, and every subtree it completes.
    pub fn push(&mut self, leaf: Hash) -> Vec<(u64, Hash)> {
        let n = self.size;
        let mut stored = vec![(stored_hash_index(0, n), leaf)];
        let mut hash = leaf;
        let mut level = 0u8;
        while (n >> level) & 1 == 1 {
            let left = self.roots.pop().expect("a root for every bit set in size");
            hash = node_hash(left, hash);
            level += 1;
            stored.push((stored_hash_index(level, n >> level), hash));
        }
        self.roots.push(hash);
        self.size += 1;
        stored
    }

    /// The tree's root hash (RFC 6962 MTH); the hash of nothing when empty.
    pub fn root(&self) -> Hash {
        let mut roots = self.roots.iter().rev();
        let Some(&last) = roots.next() else { return EMPTY_HASH };
        roots.fold(last, |right, &left| node_hash(left, right))
    }

    /// `size` as 8 bytes big-endian, then the roots.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.size.to_be_bytes().to_vec();
        for root in &self.roots {
            out.extend_from_slice(&root.0);
        }
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, LogError> {
        let malformed = || LogError::Malformed("tree frontier");
        let (size, rest) = bytes.split_at_checked(8).ok_or_else(malformed)?;
        let size = u64::from_be_bytes(size.try_into().expect("8 bytes"));
        if rest.len() != size.count_ones() as usize * HASH_SIZE {
            return Err(malformed());
        }
        let roots = rest.chunks_exact(HASH_SIZE).map(|c| Hash(c.try_into().expect("32 bytes"))).collect();
        Ok(Self { size, roots })
    }
}

/// The signed-note key name and id of a log key: `vkey` is
/// `<origin>+<hex id>+<base64(0x01 || public key)>`.
pub fn vkey(origin: &str, key: &VerifyingKey) -> String {
    signed_note::new_ed25519_verifier_key(origin, key)
}

fn key_id(origin: &str, key: &VerifyingKey) -> u32 {
    let mut encoded = vec![ALG_ED25519];
    encoded.extend_from_slice(key.as_bytes());
    signed_note::key_id(origin, &encoded)
}

/// Whether `origin` can name a log key (non-empty, no spaces or `+`).
pub fn is_valid_origin(origin: &str) -> bool {
    signed_note::is_key_name_valid(origin) && !origin.contains('\n') && origin.len() <= 256
}

struct NoteKey<'a> {
    origin: &'a str,
    key: &'a SigningKey,
}

impl signed_note::Signer for NoteKey<'_> {
    fn name(&self) -> &str {
        self.origin
    }
    fn key_id(&self) -> u32 {
        key_id(self.origin, &self.key.verifying_key())
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, ed25519_dalek::SignatureError> {
        use ed25519_dalek::Signer as _;
        Ok(self.key.sign(msg).to_bytes().to_vec())
    }
}

/// The checkpoint text of a tree: origin, size, base64 root, one per line.
pub fn checkpoint_text(origin: &str, size: u64, root: &Hash) -> String {
    format!("{origin}\n{size}\n{}\n", hash_b64(root))
}

/// A signed checkpoint note. Ed25519 is deterministic, so every replica
/// signing the same tree produces the same bytes.
pub fn sign_checkpoint(origin: &str, size: u64, root: &Hash, key: &SigningKey) -> String {
    let mut note =
        Note::new(checkpoint_text(origin, size, root).as_bytes(), &[]).expect("checkpoint text is a valid note");
    let signer = NoteKey { origin, key };
    debug_assert!(signer.name() == origin);
    note.add_sigs(&[&signer]).expect("origins are checked at start");
    String::from_utf8(note.to_bytes()).expect("notes are UTF-8")
}

/// A checkpoint whose signature was verified.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// The whole signed note, as received.
    pub note: String,
}

/// Verifies checkpoints of one log, given its `vkey`.
pub struct LogVerifier {
    origin: String,
    vkey: String,
}

impl fmt::Debug for LogVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.vkey)
    }
}

impl LogVerifier {
    pub fn new(vkey: &str) -> Result<Self, LogError> {
        let verifier = StandardVerifier::new(vkey).map_err(|e| LogError::Signature(format!("log key: {e}")))?;
        use signed_note::Verifier as _;
        Ok(Self { origin: verifier.name().to_owned(), vkey: vkey.to_owned() })
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Opens a signed note: its text, if the log key signed it.
    pub fn open_note(&self, note: &str) -> Result<String, LogError> {
        let parsed = Note::from_bytes(note.as_bytes()).map_err(|e| LogError::Signature(note_error(&e)))?;
        let verifier = StandardVerifier::new(&self.vkey).expect("checked in new");
        parsed.verify(&VerifierList::new(vec![Box::new(verifier)])).map_err(|e| LogError::Signature(note_error(&e)))?;
        String::from_utf8(parsed.text().to_vec()).map_err(|_| LogError::Malformed("note text"))
    }

    /// A checkpoint of this log, signed by its key.
    pub fn open(&self, note: &str) -> Result<Checkpoint, LogError> {
        let text = self.open_note(note)?;
        let parsed =
            tlog_tiles::Checkpoint::from_bytes(text.as_bytes()).map_err(|_| LogError::Malformed("checkpoint"))?;
        if parsed.origin() != self.origin {
            return Err(LogError::Origin { expected: self.origin.clone(), found: parsed.origin().to_owned() });
        }
        Ok(Checkpoint { origin: self.origin.clone(), size: parsed.size(), root: *parsed.hash(), note: note.to_owned() })
    }
}

/// Opens a checkpoint with whichever of `vkeys` (a log's active and retired
/// keys) signed it; returns it and that key.
pub fn open_with_any<'a>(vkeys: &'a [String], note: &str) -> Result<(Checkpoint, &'a str), LogError> {
    let mut last = LogError::Signature("no log key".into());
    for vkey in vkeys {
        match LogVerifier::new(vkey).and_then(|v| v.open(note)) {
            Ok(checkpoint) => return Ok((checkpoint, vkey)),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn note_error(e: &NoteError) -> String {
    match e {
        NoteError::UnverifiedNote => "not signed by the log key".into(),
        other => other.to_string(),
    }
}

/// Checks that `new` contains `old` as a prefix, with the consistency proof
/// `proof` (empty when the sizes are equal or `old` is empty).
pub fn check_consistency(old: &Checkpoint, new: &Checkpoint, proof: &[Hash]) -> Result<(), LogError> {
    if new.size < old.size {
        return Err(LogError::Shrank { held: old.size, seen: new.size });
    }
    if new.size == old.size {
        return if new.root == old.root { Ok(()) } else { Err(LogError::Fork(new.size)) };
    }
    if old.size == 0 {
        return Ok(());
    }
    if proof.len() > MAX_PROOF_HASHES {
        return Err(LogError::Consistency { old: old.size, new: new.size });
    }
    check_tree(&proof.to_vec(), new.size, new.root, old.size, old.root)
        .map_err(|_| LogError::Consistency { old: old.size, new: new.size })
}

/// Checks that leaf `index` of the tree `checkpoint` hashes to `leaf`.
pub fn check_inclusion(checkpoint: &Checkpoint, index: u64, leaf: Hash, proof: &[Hash]) -> Result<(), LogError> {
    if index >= checkpoint.size || proof.len() > MAX_PROOF_HASHES {
        return Err(LogError::Inclusion);
    }
    check_record(&proof.to_vec(), checkpoint.size, checkpoint.root, index, leaf).map_err(|_| LogError::Inclusion)
}

/// Proof hashes as served: one base64 hash per line.
pub fn proof_lines(proof: &[Hash]) -> String {
    proof.iter().map(|h| format!("{}\n", hash_b64(h))).collect()
}

pub fn parse_proof_lines(text: &str) -> Result<Vec<Hash>, LogError> {
    let hashes: Vec<Hash> = text
        .lines()
        .map(|line| Hash::parse_hash(line).map_err(|_| LogError::Malformed("proof hash")))
        .collect::<Result<_, _>>()?;
    if hashes.len() > MAX_PROOF_HASHES {
        return Err(LogError::Malformed("proof (too many hashes)"));
    }
    Ok(hashes)
}

/// A `c2sp.org/tlog-proof@v1`: an entry (`extra`), its index, the inclusion
/// proof and the checkpoint it leads to.
#[derive(Clone, Debug, PartialEq)]
pub struct Receipt {
    pub entry: Vec<u8>,
    pub index: u64,
    pub proof: Vec<Hash>,
    pub checkpoint: String,
}

impl Receipt {
    pub fn to_text(&self) -> String {
        let mut out = format!("{PROOF_HEADER}\nextra {}\nindex {}\n", B64.encode(&self.entry), self.index);
        out.push_str(&proof_lines(&self.proof));
        out.push('\n');
        out.push_str(&self.checkpoint);
        out
    }

    pub fn parse(text: &str) -> Result<Self, LogError> {
        let malformed = |what| LogError::Malformed(what);
        let rest =
            text.strip_prefix(PROOF_HEADER).and_then(|r| r.strip_prefix('\n')).ok_or(malformed("receipt header"))?;
        let (line, rest) = rest.split_once('\n').ok_or(malformed("receipt"))?;
        let extra = line.strip_prefix("extra ").ok_or(malformed("receipt (no entry in extra)"))?;
        let entry = B64.decode(extra).map_err(|_| malformed("receipt extra"))?;
        let (line, rest) = rest.split_once('\n').ok_or(malformed("receipt"))?;
        let index = line.strip_prefix("index ").ok_or(malformed("receipt index"))?;
        if index.is_empty() || (index.len() > 1 && index.starts_with('0')) || !index.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(malformed("receipt index"));
        }
        let index = index.parse().map_err(|_| malformed("receipt index"))?;
        // The proof's lines end at the first empty line (the note has one too).
        let (proof, checkpoint) = match rest.strip_prefix('\n') {
            Some(checkpoint) => ("", checkpoint),
            None => rest.split_once("\n\n").ok_or(malformed("receipt (no checkpoint)"))?,
        };
        Ok(Self { entry, index, proof: parse_proof_lines(proof)?, checkpoint: checkpoint.to_owned() })
    }

    /// Checks the checkpoint's signature and that the entry is leaf `index`
    /// of its tree; returns the checkpoint.
    pub fn verify(&self, log: &LogVerifier) -> Result<Checkpoint, LogError> {
        let checkpoint = log.open(&self.checkpoint)?;
        check_inclusion(&checkpoint, self.index, leaf_hash(&self.entry), &self.proof)?;
        Ok(checkpoint)
    }
}

/// A resource of the tlog-tiles layout under `tile/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TilePath {
    /// `tile/{level}/{index}[.p/{width}]`: `width` hashes of tree level
    /// `8 * level`, from `index * 256`.
    Hashes { level: u8, index: u64, width: u32 },
    /// `tile/entries/{index}[.p/{width}]`: entries `index * 256` onwards.
    Entries { index: u64, width: u32 },
}

impl TilePath {
    /// Parses the part after `tile/`, strictly: the one spelling of each
    /// tile (`N` in three-digit groups, all but the last with an `x`; `.p/W`
    /// only for 1 <= W < 256), as `path` writes it.
    pub fn parse(path: &str) -> Option<Self> {
        if path.len() > 64 {
            return None;
        }
        let (level, rest) = path.split_once('/')?;
        let (groups, width) = match rest.split_once(".p/") {
            Some((groups, width)) => {
                let w: u32 = width.parse().ok()?;
                (groups, (1..256).contains(&w).then_some(w)?)
            }
            None => (rest, 256),
        };
        let mut index: u64 = 0;
        let parts: Vec<&str> = groups.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            let digits = if i + 1 < parts.len() { part.strip_prefix('x')? } else { part };
            if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            index = index.checked_mul(1000)?.checked_add(digits.parse::<u64>().ok()?)?;
        }
        let tile = if level == "entries" {
            Self::Entries { index, width }
        } else {
            // A tree has at most 2^64 leaves: 8 levels of 8 bits.
            let level: u8 = level.parse().ok().filter(|l| *l <= 7)?;
            Self::Hashes { level, index, width }
        };
        (tile.path() == format!("tile/{path}")).then_some(tile)
    }

    pub fn path(&self) -> String {
        let (level, index, width) = match *self {
            Self::Hashes { level, index, width } => (level.to_string(), index, width),
            Self::Entries { index, width } => ("entries".to_owned(), index, width),
        };
        let mut n = format!("{:03}", index % 1000);
        let mut rest = index / 1000;
        while rest > 0 {
            n = format!("x{:03}/{n}", rest % 1000);
            rest /= 1000;
        }
        let partial = if u64::from(width) == TILE_WIDTH { String::new() } else { format!(".p/{width}") };
        format!("tile/{level}/{n}{partial}")
    }
}

/// The width a tile at `level`, `index` has in a tree of `size` leaves: 256
/// when full, less for the last partial one, 0 when it has no hash yet.
pub fn tile_width(size: u64, level: u8, index: u64) -> u32 {
    let shift = u32::from(level) * u32::from(TILE_HEIGHT);
    let hashes = size.checked_shr(shift).unwrap_or(0);
    let start = index.saturating_mul(TILE_WIDTH);
    if hashes <= start { 0 } else { (hashes - start).min(TILE_WIDTH) as u32 }
}

/// The stored hash indexes of a hash tile's hashes.
pub fn tile_hash_indexes(level: u8, index: u64, width: u32) -> Vec<u64> {
    let start = index * TILE_WIDTH;
    (0..u64::from(width)).map(|i| stored_hash_index(level * TILE_HEIGHT, start + i)).collect()
}

/// An entry bundle: each entry as a big-endian `u16` length and its bytes.
pub fn entry_bundle<'a>(entries: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in entries {
        let len = u16::try_from(entry.len()).expect("entries are at most 65,535 bytes");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(entry);
    }
    out
}

pub fn parse_entry_bundle(mut bytes: &[u8]) -> Result<Vec<Vec<u8>>, LogError> {
    let mut entries = Vec::new();
    while !bytes.is_empty() {
        let (len, rest) = bytes.split_at_checked(2).ok_or(LogError::Malformed("entry bundle"))?;
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        let (entry, rest) = rest.split_at_checked(len).ok_or(LogError::Malformed("entry bundle"))?;
        entries.push(entry.to_vec());
        bytes = rest;
    }
    Ok(entries)
}

/// Answers `read_hashes` from hashes fetched beforehand. Proofs are built in
/// two passes: [`needed_hashes`] names what a proof reads (the indexes do not
/// depend on the values), the caller fetches them from its store, then the
/// proof is built from them.
struct Fetched<'a> {
    indexes: &'a [u64],
    hashes: &'a [Hash],
}

impl tlog_tiles::HashReader for Fetched<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|i| {
                self.indexes
                    .iter()
                    .position(|x| x == i)
                    .map(|p| self.hashes[p])
                    .ok_or(tlog_tiles::Error::IndexesNotInTree)
            })
            .collect()
    }
}

/// Records the indexes a proof reads, answering with placeholders.
#[derive(Default)]
struct Recorder(std::cell::RefCell<Vec<u64>>);

impl tlog_tiles::HashReader for Recorder {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        self.0.borrow_mut().extend_from_slice(indexes);
        Ok(vec![EMPTY_HASH; indexes.len()])
    }
}

/// A proof to build: of leaf `index` in the tree of `size`, or of tree
/// `old` being a prefix of tree `size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProofRequest {
    Inclusion { index: u64, size: u64 },
    Consistency { old: u64, size: u64 },
}

impl ProofRequest {
    fn run(self, reader: &impl tlog_tiles::HashReader) -> Result<Vec<Hash>, tlog_tiles::Error> {
        match self {
            Self::Inclusion { index, size } => tlog_tiles::prove_record(size, index, reader),
            Self::Consistency { old: 0, .. } => Ok(Vec::new()),
            Self::Consistency { old, size } => tlog_tiles::prove_tree(size, old, reader),
        }
    }

    /// The stored hash indexes the proof reads. The caller checks the sizes
    /// against its tree first (`index < size`, `old <= size`).
    pub fn needed_hashes(self) -> Vec<u64> {
        let recorder = Recorder::default();
        // Only the sizes decide what is read; an error means nothing is.
        let _ = self.run(&recorder);
        recorder.0.into_inner()
    }

    /// Builds the proof from the hashes at `needed_hashes()`, in that order.
    pub fn build(self, hashes: &[Hash]) -> Result<Vec<Hash>, LogError> {
        let indexes = self.needed_hashes();
        self.run(&Fetched { indexes: &indexes, hashes }).map_err(|_| LogError::Malformed("proof request"))
    }
}

/// The root of a tree from its stored hashes: `tree_hash` in two passes.
pub fn root_indexes(size: u64) -> Vec<u64> {
    if size == 0 {
        return Vec::new();
    }
    let recorder = Recorder::default();
    let _ = tlog_tiles::tree_hash(size, &recorder);
    recorder.0.into_inner()
}

pub fn root_from(size: u64, hashes: &[Hash]) -> Result<Hash, LogError> {
    let indexes = root_indexes(size);
    tlog_tiles::tree_hash(size, &Fetched { indexes: &indexes, hashes }).map_err(|_| LogError::Malformed("tree"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A tree kept whole in memory, the way a store keeps it.
    fn tree(n: u64) -> (Frontier, HashMap<u64, Hash>) {
        let mut frontier = Frontier::default();
        let mut stored = HashMap::new();
        for i in 0..n {
            for (index, hash) in frontier.push(leaf_hash(format!("entry {i}").as_bytes())) {
                assert!(stored.insert(index, hash).is_none(), "a stored hash is written once");
            }
        }
        (frontier, stored)
    }

    fn fetch(stored: &HashMap<u64, Hash>, indexes: &[u64]) -> Vec<Hash> {
        indexes.iter().map(|i| stored[i]).collect()
    }

    struct Reader<'a>(&'a HashMap<u64, Hash>);
    impl tlog_tiles::HashReader for Reader<'_> {
        fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
            Ok(fetch(self.0, indexes))
        }
    }

    #[test]
    fn the_frontier_stores_what_go_stores_and_its_root_is_the_tree_hash() {
        let mut frontier = Frontier::default();
        let mut stored = HashMap::new();
        for i in 0..600u64 {
            let data = format!("entry {i}");
            let expected = tlog_tiles::stored_hashes(i, data.as_bytes(), &Reader(&stored)).unwrap();
            let got = frontier.push(leaf_hash(data.as_bytes()));
            assert_eq!(got.iter().map(|(_, h)| *h).collect::<Vec<_>>(), expected, "record {i}");
            assert_eq!(got[0].0, tlog_tiles::stored_hash_index(0, i));
            stored.extend(got);
            assert_eq!(frontier.root(), tlog_tiles::tree_hash(i + 1, &Reader(&stored)).unwrap());
            assert_eq!(Frontier::from_bytes(&frontier.to_bytes()).unwrap(), frontier);
        }
        assert_eq!(Frontier::default().root(), EMPTY_HASH);
    }

    #[test]
    fn proofs_built_in_two_passes_verify() {
        let (frontier, stored) = tree(300);
        let key = SigningKey::from_bytes(&[7; 32]);
        let log = LogVerifier::new(&vkey("example.org/log", &key.verifying_key())).unwrap();
        for size in [1u64, 2, 3, 255, 256, 257, 300] {
            let root = root_from(size, &fetch(&stored, &root_indexes(size))).unwrap();
            let note = sign_checkpoint("example.org/log", size, &root, &key);
            let checkpoint = log.open(&note).unwrap();
            for index in [0, size / 2, size - 1] {
                let request = ProofRequest::Inclusion { index, size };
                let proof = request.build(&fetch(&stored, &request.needed_hashes())).unwrap();
                let leaf = leaf_hash(format!("entry {index}").as_bytes());
                check_inclusion(&checkpoint, index, leaf, &proof).unwrap();
                assert!(check_inclusion(&checkpoint, index, leaf_hash(b"other"), &proof).is_err());
            }
            let full = log.open(&sign_checkpoint("example.org/log", 300, &frontier.root(), &key)).unwrap();
            let request = ProofRequest::Consistency { old: size, size: 300 };
            let proof = request.build(&fetch(&stored, &request.needed_hashes())).unwrap();
            check_consistency(&checkpoint, &full, &proof).unwrap();
            assert!(matches!(check_consistency(&full, &checkpoint, &proof), Err(LogError::Shrank { .. }) | Ok(())));
        }
    }

    #[test]
    fn the_c2sp_signed_note_example_verifies() {
        let vkey = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
        let note = "This is an example message.\n\n\u{2014} example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";
        let log = LogVerifier::new(vkey).unwrap();
        assert_eq!(log.open_note(note).unwrap(), "This is an example message.\n");
        let altered = note.replace("example message", "example massage");
        assert!(log.open_note(&altered).is_err());
    }

    #[test]
    fn receipts_round_trip_and_one_changed_bit_fails() {
        let (_, stored) = tree(5);
        let key = SigningKey::from_bytes(&[9; 32]);
        let log = LogVerifier::new(&vkey("amber.test/log", &key.verifying_key())).unwrap();
        let root = root_from(5, &fetch(&stored, &root_indexes(5))).unwrap();
        let request = ProofRequest::Inclusion { index: 3, size: 5 };
        let receipt = Receipt {
            entry: b"entry 3".to_vec(),
            index: 3,
            proof: request.build(&fetch(&stored, &request.needed_hashes())).unwrap(),
            checkpoint: sign_checkpoint("amber.test/log", 5, &root, &key),
        };
        let text = receipt.to_text();
        assert_eq!(Receipt::parse(&text).unwrap(), receipt);
        assert_eq!(receipt.verify(&log).unwrap().size, 5);
        let mut bad = receipt.clone();
        bad.proof[0].0[0] ^= 1;
        assert_eq!(bad.verify(&log), Err(LogError::Inclusion));
        let mut bad = receipt.clone();
        bad.index = 2;
        assert_eq!(bad.verify(&log), Err(LogError::Inclusion));
        let mut bad = receipt;
        bad.entry[0] ^= 1;
        assert_eq!(bad.verify(&log), Err(LogError::Inclusion));
    }

    #[test]
    fn tile_paths_have_one_spelling() {
        assert_eq!(TilePath::parse("0/000"), Some(TilePath::Hashes { level: 0, index: 0, width: 256 }));
        assert_eq!(
            TilePath::parse("1/x001/x234/067.p/8"),
            Some(TilePath::Hashes { level: 1, index: 1_234_067, width: 8 })
        );
        assert_eq!(TilePath::parse("entries/005.p/1"), Some(TilePath::Entries { index: 5, width: 1 }));
        for bad in
            ["0/0", "0/000.p/0", "0/000.p/256", "0/x000/001", "8/000", "0/1000", "entries/000.p/", "x/000", "0/000/"]
        {
            assert_eq!(TilePath::parse(bad), None, "{bad}");
        }
        for path in ["tile/0/x001/x234/067.p/8", "tile/entries/000", "tile/2/999"] {
            assert_eq!(TilePath::parse(path.strip_prefix("tile/").unwrap()).unwrap().path(), path);
        }
        assert_eq!(tile_width(257, 0, 0), 256);
        assert_eq!(tile_width(257, 0, 1), 1);
        assert_eq!(tile_width(257, 0, 2), 0);
        assert_eq!(tile_width(257, 1, 0), 1);
        assert_eq!(tile_width(65_536, 1, 0), 256);
        assert_eq!(tile_width(65_536, 2, 0), 1);
        assert_eq!(tile_width(u64::MAX, 7, 0), 255);
    }

    #[test]
    fn entry_bundles_round_trip() {
        let entries: Vec<Vec<u8>> = vec![b"a".to_vec(), vec![], vec![7; 65_535]];
        let bundle = entry_bundle(entries.iter().map(Vec::as_slice));
        assert_eq!(parse_entry_bundle(&bundle).unwrap(), entries);
        assert!(parse_entry_bundle(&bundle[..bundle.len() - 1]).is_err());
    }
}
