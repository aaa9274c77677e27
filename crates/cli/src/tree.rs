//! Local files: turning `PATH...` arguments into manifest entries, and hashing.
//!
//! A file argument contributes its file name; a directory contributes its
//! contents, with paths relative to it. Symbolic links are refused rather
//! than followed, so a push never picks up files from outside what was named.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use amber_core::Digest;
use amber_core::manifest::FilePath;
use blake3::hazmat::ChainingValue;
use rayon::prelude::*;

use crate::error::{CliError, Result};

/// Files at least this big are hashed with all cores, a block at a time
/// (reading blocks rather than mapping the file keeps memory flat).
const PARALLEL_HASH_THRESHOLD: u64 = 16 << 20;
const PARALLEL_HASH_BLOCK: usize = 8 << 20;
/// What each thread reads of a part at a time when planning parts.
const PLAN_BLOCK: usize = 1 << 20;

#[derive(Clone, Debug)]
pub struct LocalFile {
    pub path: FilePath,
    pub source: PathBuf,
    pub size: u64,
}

pub fn collect(inputs: &[PathBuf]) -> Result<Vec<LocalFile>> {
    let mut files: BTreeMap<String, LocalFile> = BTreeMap::new();
    for input in inputs {
        let meta =
            std::fs::symlink_metadata(input).map_err(|e| CliError::io(format!("reading {}", input.display()), e))?;
        if meta.is_dir() {
            walk(input, input, &mut files)?;
        } else if meta.is_file() {
            let name = input.file_name().and_then(|n| n.to_str()).ok_or_else(|| not_utf8(input))?;
            add(&mut files, name.to_owned(), input.clone(), meta.len())?;
        } else {
            return Err(CliError::Usage(format!("{} is not a regular file or directory", input.display())));
        }
    }
    if files.is_empty() {
        return Err(CliError::Usage("nothing to push: the paths hold no files".into()));
    }
    Ok(files.into_values().collect())
}

fn not_utf8(path: &Path) -> CliError {
    CliError::Usage(format!("{} is not valid UTF-8; manifest paths must be", path.display()))
}

fn add(files: &mut BTreeMap<String, LocalFile>, path: String, source: PathBuf, size: u64) -> Result<()> {
    let parsed: FilePath = path.parse().map_err(|e| CliError::Usage(format!("{path:?}: {e}")))?;
    if let Some(existing) = files.get(&path) {
        return Err(CliError::Usage(format!(
            "{path:?} would come from both {} and {}",
            existing.source.display(),
            source.display()
        )));
    }
    files.insert(path, LocalFile { path: parsed, source, size });
    Ok(())
}

fn walk(root: &Path, dir: &Path, files: &mut BTreeMap<String, LocalFile>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| CliError::io(format!("reading {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| CliError::io(format!("reading {}", dir.display()), e))?;
        let path = entry.path();
        let meta =
            std::fs::symlink_metadata(&path).map_err(|e| CliError::io(format!("reading {}", path.display()), e))?;
        if meta.is_dir() {
            walk(root, &path, files)?;
        } else if meta.is_file() {
            let relative = path.strip_prefix(root).expect("walked from root");
            let name = relative.to_str().ok_or_else(|| not_utf8(&path))?.replace(std::path::MAIN_SEPARATOR, "/");
            add(files, name, path.clone(), meta.len())?;
        } else {
            return Err(CliError::Usage(format!(
                "{} is a symbolic link or special file; refusing to push it",
                path.display()
            )));
        }
    }
    Ok(())
}

/// BLAKE3 of a file: big files on all cores, small ones in one pass.
pub fn hash_file(path: &Path, size: u64) -> Result<Digest> {
    use std::io::Read;
    let mut hasher = blake3::Hasher::new();
    let context = || format!("hashing {}", path.display());
    let mut file = std::fs::File::open(path).map_err(|e| CliError::io(context(), e))?;
    if size >= PARALLEL_HASH_THRESHOLD {
        let mut block = vec![0u8; PARALLEL_HASH_BLOCK];
        loop {
            let mut filled = 0;
            while filled < block.len() {
                match file.read(&mut block[filled..]).map_err(|e| CliError::io(context(), e))? {
                    0 => break,
                    n => filled += n,
                }
            }
            if filled == 0 {
                break;
            }
            hasher.update_rayon(&block[..filled]);
        }
    } else {
        std::io::copy(&mut file, &mut hasher).map_err(|e| CliError::io(context(), e))?;
    }
    Ok(hasher.finalize().into())
}

/// A file's digest and the BLAKE3 chaining value of each of its parts of
/// `part_size` bytes (a power of two of at least 1 KiB), for an upload in
/// parallel parts that the server checks on arrival: the parts are hashed
/// on all cores, each read a block at a time, so memory stays at a block a
/// thread whatever the part size.
pub fn plan_file(path: &Path, size: u64, part_size: u64) -> Result<(Digest, Vec<ChainingValue>)> {
    use blake3::hazmat::HasherExt;
    use std::os::unix::fs::FileExt;
    let context = || format!("hashing {}", path.display());
    let file = std::fs::File::open(path).map_err(|e| CliError::io(context(), e))?;
    let parts = amber_core::parts::part_count(size, part_size);
    let hashed: Vec<blake3::Hasher> = (0..parts)
        .into_par_iter()
        .map(|index| {
            let (start, end) = (index * part_size, ((index + 1) * part_size).min(size));
            let mut hasher = blake3::Hasher::new();
            hasher.set_input_offset(start);
            let mut block = vec![0u8; PLAN_BLOCK.min((end - start) as usize)];
            let mut at = start;
            while at < end {
                let want = block.len().min((end - at) as usize);
                let n = file.read_at(&mut block[..want], at).map_err(|e| CliError::io(context(), e))?;
                if n == 0 {
                    return Err(CliError::io(context(), "the file is shorter than when it was listed"));
                }
                hasher.update(&block[..n]);
                at += n as u64;
            }
            Ok(hasher)
        })
        .collect::<Result<_>>()?;
    let cvs: Vec<ChainingValue> = hashed.iter().map(|h| h.finalize_non_root()).collect();
    let digest = match hashed.as_slice() {
        [] => Digest::of(b""),
        [only] => only.finalize().into(),
        _ => amber_core::parts::merged_digest(size, part_size, &cvs).expect("two parts or more merge"),
    };
    Ok((digest, cvs))
}

/// Hashes every file, many at once.
pub fn hash_all(files: &[LocalFile]) -> Result<Vec<Digest>> {
    files.par_iter().map(|f| hash_file(&f.source, f.size)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Digests and values as `blake3` computes them whole, for zero, one and
    /// many parts, the last one short or full.
    #[test]
    fn a_planned_file_has_the_digest_of_its_bytes_and_each_part_checks() {
        let dir = std::env::temp_dir().join(format!("amber-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let part_size = 4096u64;
        for size in [0u64, 1, 4095, 4096, 4097, 8192, 3 * 4096 + 17, 100_000] {
            let bytes: Vec<u8> = (0..size).map(|i| (i * 131 % 251) as u8).collect();
            let path = dir.join(format!("f{size}"));
            std::fs::write(&path, &bytes).unwrap();
            let (digest, cvs) = plan_file(&path, size, part_size).unwrap();
            assert_eq!(digest, Digest::from(blake3::hash(&bytes)), "{size} bytes");
            assert_eq!(cvs.len() as u64, amber_core::parts::part_count(size, part_size));
            for (index, part) in bytes.chunks(part_size as usize).enumerate() {
                assert_eq!(
                    cvs[index],
                    amber_core::parts::part_cv(part, index as u64 * part_size),
                    "{size}: part {index}"
                );
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
