//! The storage seam: the file operations the spool's logic asks of the
//! disk, behind one trait, so that a test can put a faulty disk under the
//! same logic the daemon runs.
//!
//! It covers what can fail on the way to durability: reserving a new
//! segment's space (fallocate, so also rolling to a new segment), writing
//! a record with `pwritev`, and fdatasync (the group commit's, and the
//! blocking one for new segments and recovery's tail cuts). Stores into
//! the mapping are not behind it: they only fill the page cache, and what
//! a sync does not cover is what a simulated power cut takes away.
//!
//! Each call is made once per batch (a sync per group commit, a `pwritev`
//! per large chunk, an fallocate per segment), never per byte, so a
//! dynamic call costs nothing measurable. [`Disk`] is the real thing.

use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::io::IoSlice;
use std::path::Path;
use std::pin::Pin;

use glommio::io::{BufferedFile, OpenOptions};

/// Files the group commit keeps open between syncs, by segment id.
pub type SyncFiles = HashMap<u64, BufferedFile>;

/// A future borrowed from the caller, run on the shard's executor.
pub type LocalFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// The file operations of the spool.
pub trait StorageIo {
    /// Reserves `len` bytes from offset 0 of a new segment file.
    fn allocate(&self, file: &File, path: &Path, len: u64) -> std::io::Result<()>;

    /// One `pwritev` at `offset`: may write less than asked (the caller
    /// loops), or fail.
    fn pwritev(
        &self,
        file: &File,
        path: &Path,
        iov: &[IoSlice<'_>],
        offset: u64,
    ) -> std::io::Result<usize>;

    /// A blocking fsync of a new segment, before it is named.
    fn sync_new(&self, file: &File, path: &Path) -> std::io::Result<()>;

    /// A blocking fdatasync (recovery's tail cuts).
    fn sync_blocking(&self, file: &File, path: &Path) -> std::io::Result<()>;

    /// The group commit's fdatasync of segment `id`, through the shard's
    /// io_uring; `files` is where it may keep the segment open.
    fn sync<'a>(
        &'a self,
        files: &'a mut SyncFiles,
        id: u64,
        path: &'a Path,
    ) -> LocalFuture<'a, std::io::Result<()>>;
}

/// The real disk.
#[derive(Debug, Default, Clone, Copy)]
pub struct Disk;

impl StorageIo for Disk {
    fn allocate(&self, file: &File, _path: &Path, len: u64) -> std::io::Result<()> {
        Ok(rustix::fs::fallocate(
            file,
            rustix::fs::FallocateFlags::empty(),
            0,
            len,
        )?)
    }

    fn pwritev(
        &self,
        file: &File,
        _path: &Path,
        iov: &[IoSlice<'_>],
        offset: u64,
    ) -> std::io::Result<usize> {
        Ok(rustix::io::pwritev(file, iov, offset)?)
    }

    fn sync_new(&self, file: &File, _path: &Path) -> std::io::Result<()> {
        file.sync_all()
    }

    fn sync_blocking(&self, file: &File, _path: &Path) -> std::io::Result<()> {
        file.sync_data()
    }

    fn sync<'a>(
        &'a self,
        files: &'a mut SyncFiles,
        id: u64,
        path: &'a Path,
    ) -> LocalFuture<'a, std::io::Result<()>> {
        Box::pin(async move {
            if let std::collections::hash_map::Entry::Vacant(e) = files.entry(id) {
                let mut opts = OpenOptions::new();
                opts.read(true).write(true);
                e.insert(
                    opts.buffered_open(path)
                        .await
                        .map_err(std::io::Error::from)?,
                );
            }
            match files.get(&id) {
                Some(f) => f.fdatasync().await.map_err(std::io::Error::from),
                None => Ok(()),
            }
        })
    }
}
