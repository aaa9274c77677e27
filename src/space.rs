//! The free-space reserve of the data volume. Uploads stop at the reserve
//! (`507 insufficient_storage`), and metadata writes at half of it, so that
//! the metadata store is never the one to find the disk full: sled does not
//! recover from `ENOSPC` in the process that met it.
//!
//! Checks are one `statvfs` and run where blocking is allowed (the writer
//! threads of the file backend, sled's calls on the blocking pool).

use std::io;
use std::path::{Path, PathBuf};

use crate::config::FreeSpace;

/// Who asks: uploads keep the whole reserve free, metadata writes half.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    Upload,
    Metadata,
}

#[derive(Clone, Debug)]
pub struct SpaceReserve {
    path: PathBuf,
    reserve: FreeSpace,
}

/// Free space below the reserve.
#[derive(Debug, thiserror::Error)]
#[error("{available} bytes free on the data volume, below the reserve of {reserve}")]
pub struct LowSpace {
    pub available: u64,
    pub reserve: u64,
}

impl SpaceReserve {
    pub fn new(path: impl Into<PathBuf>, reserve: FreeSpace) -> Self {
        Self { path: path.into(), reserve }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes available to unprivileged writers, and the volume's size.
    pub fn free(&self) -> io::Result<(u64, u64)> {
        let stat = rustix::fs::statvfs(&self.path)?;
        let block = stat.f_frsize.max(1);
        Ok((stat.f_bavail.saturating_mul(block), stat.f_blocks.saturating_mul(block)))
    }

    /// Fails when less than the share of the reserve is free. A
    /// volume that cannot be asked passes: the write itself will tell.
    pub fn check(&self, purpose: Purpose) -> Result<(), LowSpace> {
        let Ok((available, total)) = self.free() else { return Ok(()) };
        let reserve = match purpose {
            Purpose::Upload => self.reserve.bytes(total),
            Purpose::Metadata => self.reserve.bytes(total) / 2,
        };
        if available < reserve { Err(LowSpace { available, reserve }) } else { Ok(()) }
    }
}

/// True when an I/O error says the volume is full.
pub fn is_full(err: &io::Error) -> bool {
    matches!(err.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
}
