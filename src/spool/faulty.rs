//! A seeded faulty disk for the storage seam (see `io`), for simulation
//! tests: the real spool logic runs on real files (on a RAM file system in
//! tests), while this disk decides which operations fail and what a power
//! cut leaves behind.
//!
//! It models the page cache and the platter separately. Every segment file
//! has a *durable image*, replaced by the file's bytes on each successful
//! sync and on nothing else; [`FaultyDisk::power_cut`] puts every file
//! back to its image, optionally keeping some pages (or the first sectors
//! of a page) written since, as a disk that wrote back part of its cache
//! before the power went. A failed sync leaves the image as it was: the
//! pages it was asked to write are lost at the next cut, as the kernel may
//! drop them after reporting the error.
//!
//! Directory operations (naming a new segment, removing a finished one)
//! are taken as durable at once: the spool syncs the directory right after
//! each. Faults are drawn from a seeded generator, so a schedule replays
//! exactly from its seed. Never used by the daemon.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::io::IoSlice;
use std::path::{Path, PathBuf};

use super::io::{Disk, LocalFuture, StorageIo, SyncFiles};

/// Sectors: the smallest unit a torn page is cut at.
const SECTOR: usize = 512;
/// Pages: the unit the page cache writes back.
const PAGE: usize = 4096;

/// How often each fault happens, in parts per thousand of the calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// The group commit's fdatasync fails with `EIO`.
    pub sync_eio: u32,
    /// Preallocating a new segment (rolling to it) fails with `ENOSPC`.
    pub allocate_enospc: u32,
    /// A `pwritev` writes only part of what it was given.
    pub short_write: u32,
    /// A `pwritev` fails with `EIO`, writing nothing.
    pub write_eio: u32,
}

/// What the faulty disk has done so far (for a simulation's report).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub syncs: u64,
    pub failed_syncs: u64,
    pub failed_allocations: u64,
    pub short_writes: u64,
    pub failed_writes: u64,
    pub power_cuts: u64,
}

struct State {
    rng: u64,
    faults: Faults,
    /// Segment path (its final name) → bytes as last made durable.
    durable: HashMap<PathBuf, Vec<u8>>,
    counts: FaultCounts,
}

/// The seeded faulty disk.
pub struct FaultyDisk {
    state: RefCell<State>,
}

/// The name a segment has once built: a file being built is durable under
/// the name it is about to take.
fn final_path(path: &Path) -> PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    match name.strip_suffix(super::segment::TEMP_SUFFIX) {
        Some(base) => path.with_file_name(base),
        None => path.to_path_buf(),
    }
}

fn is_segment_file(path: &Path) -> bool {
    let name = final_path(path);
    name.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| spool_format::parse_segment_file_name(n).is_some())
}

impl FaultyDisk {
    pub fn new(seed: u64, faults: Faults) -> FaultyDisk {
        FaultyDisk {
            state: RefCell::new(State {
                // Never zero: xorshift stays at zero once there.
                rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
                faults,
                durable: HashMap::new(),
                counts: FaultCounts::default(),
            }),
        }
    }

    /// Changes the fault rates from now on.
    pub fn set_faults(&self, faults: Faults) {
        self.state.borrow_mut().faults = faults;
    }

    pub fn counts(&self) -> FaultCounts {
        self.state.borrow().counts
    }

    /// The next number of the seeded generator (xorshift64*).
    pub fn next_u64(&self) -> u64 {
        let mut st = self.state.borrow_mut();
        let mut x = st.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        st.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `permille` / 1000.
    fn happens(&self, permille: impl Fn(&Faults) -> u32) -> bool {
        let p = permille(&self.state.borrow().faults);
        p > 0 && self.below(1000) < u64::from(p)
    }

    /// Makes what the file holds now its durable image.
    fn make_durable(&self, path: &Path) -> std::io::Result<()> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            // Removed (reclaimed) meanwhile: nothing of it to keep.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut st = self.state.borrow_mut();
        st.counts.syncs += 1;
        st.durable.insert(final_path(path), bytes);
        Ok(())
    }

    /// Cuts the power under the spool in `dir` (which must be closed and
    /// dropped): every segment file goes back to its durable image; with
    /// `tear`, pages written since the last sync each survive with even
    /// odds, some only in part. What is left is durable from then on; a
    /// file never synced is gone.
    pub fn power_cut(&self, dir: &Path, tear: bool) -> std::io::Result<()> {
        self.state.borrow_mut().counts.power_cuts += 1;
        let mut kept = HashMap::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if !is_segment_file(&path) {
                continue;
            }
            let image = self.state.borrow().durable.get(&final_path(&path)).cloned();
            let Some(mut image) = image else {
                std::fs::remove_file(&path)?;
                continue;
            };
            if tear {
                let now = std::fs::read(&path)?;
                self.tear(&mut image, &now);
            }
            std::fs::write(&path, &image)?;
            kept.insert(final_path(&path), image);
        }
        self.state.borrow_mut().durable = kept;
        Ok(())
    }

    /// Lets some of the pages of `now` that differ from `image` through.
    fn tear(&self, image: &mut [u8], now: &[u8]) {
        let len = image.len().min(now.len());
        for start in (0..len).step_by(PAGE) {
            let end = (start + PAGE).min(len);
            if image[start..end] == now[start..end] || self.below(2) == 0 {
                continue;
            }
            // One page in four only in part: its first sectors.
            let cut = if self.below(4) == 0 {
                start + SECTOR * self.below(((end - start) / SECTOR) as u64) as usize
            } else {
                end
            };
            image[start..cut].copy_from_slice(&now[start..cut]);
        }
    }
}

impl StorageIo for FaultyDisk {
    fn allocate(&self, file: &File, path: &Path, len: u64) -> std::io::Result<()> {
        if self.happens(|f| f.allocate_enospc) {
            self.state.borrow_mut().counts.failed_allocations += 1;
            return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
        }
        Disk.allocate(file, path, len)
    }

    fn pwritev(
        &self,
        file: &File,
        path: &Path,
        iov: &[IoSlice<'_>],
        offset: u64,
    ) -> std::io::Result<usize> {
        if self.happens(|f| f.write_eio) {
            self.state.borrow_mut().counts.failed_writes += 1;
            return Err(std::io::Error::from_raw_os_error(libc::EIO));
        }
        let total: usize = iov.iter().map(|s| s.len()).sum();
        if total < 2 || !self.happens(|f| f.short_write) {
            return Disk.pwritev(file, path, iov, offset);
        }
        // Only the first `n` bytes, from the first slice.
        let first = iov
            .iter()
            .find(|s| !s.is_empty())
            .map_or(&[][..], |s| &s[..]);
        let n = 1 + self.below(first.len().saturating_sub(1).max(1) as u64) as usize;
        self.state.borrow_mut().counts.short_writes += 1;
        Disk.pwritev(
            file,
            path,
            &[IoSlice::new(&first[..n.min(first.len())])],
            offset,
        )
    }

    fn sync_new(&self, _file: &File, path: &Path) -> std::io::Result<()> {
        self.make_durable(path)
    }

    fn sync_blocking(&self, _file: &File, path: &Path) -> std::io::Result<()> {
        self.make_durable(path)
    }

    fn sync<'a>(
        &'a self,
        _files: &'a mut SyncFiles,
        _id: u64,
        path: &'a Path,
    ) -> LocalFuture<'a, std::io::Result<()>> {
        Box::pin(async move {
            if self.happens(|f| f.sync_eio) {
                self.state.borrow_mut().counts.failed_syncs += 1;
                return Err(std::io::Error::from_raw_os_error(libc::EIO));
            }
            self.make_durable(path)
        })
    }
}
