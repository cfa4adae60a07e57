//! One segment file of a shard's spool: created preallocated, mapped shared
//! and writable. Its `map` and `store_kept` are where the spool's `unsafe`
//! lives.
//!
//! It owns the file and the mapping and nothing else; it must never write
//! past the preallocated size (space is reserved with fallocate up front, so
//! a store into the mapping can never raise SIGBUS for lack of disk space).

use std::fs::{File, OpenOptions};
use std::io::{IoSlice, Write};
use std::path::{Path, PathBuf};

use memmap2::{MmapMut, MmapOptions};
use rustix::fs::SeekFrom;
use rustix::io::Errno;
use spool_format::{segment_file_name, SegmentHeader};

use super::io::StorageIo;
use super::{ahead, io_err, SpoolError};

/// Suffix of a segment file still being built.
pub const TEMP_SUFFIX: &str = ".tmp";

/// A mapped segment file.
pub struct Segment {
    pub id: u64,
    /// The header's nonce, needed to check any record header in it.
    pub nonce: u64,
    pub path: PathBuf,
    pub file: File,
    pub map: MmapMut,
}

/// A fresh random nonce for a new segment header (getrandom(2)).
pub fn random_nonce() -> u64 {
    let mut b = [0u8; 8];
    let filled = rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty());
    if filled != Ok(8) {
        // Only a pre-3.17 kernel lacks getrandom; fall back to the clock and
        // pid, which still differ between segments and are not in any body.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        return t ^ (u64::from(std::process::id()) << 32);
    }
    u64::from_le_bytes(b)
}

/// fsyncs a directory so that a file created (or removed) in it survives a
/// crash.
pub fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir, "syncing directory"))
}

/// Bytes of a `len`-byte file up to the end of its last data extent: past
/// it the file is a hole (or preallocated and never written), which reads
/// as zeros. Recovery and `spool inspect` scan only this far, so they do
/// not read (and map in) the unwritten tail of every preallocated segment.
/// `len` when the file system cannot tell (no SEEK_DATA). Moves the file
/// offset: read with positioned reads afterwards.
pub fn data_len(file: &File, len: u64) -> u64 {
    let mut pos = 0;
    let mut end = 0;
    while pos < len {
        let data = match rustix::fs::seek(file, SeekFrom::Data(pos)) {
            Ok(data) => data,
            Err(Errno::NXIO) => break,
            Err(_) => return len,
        };
        let Ok(hole) = rustix::fs::seek(file, SeekFrom::Hole(data)) else {
            return len;
        };
        end = hole.min(len);
        pos = hole;
    }
    end
}

/// Stores `value` into `byte` even when it already holds it: the store is
/// what dirties the page, and a plain one could be optimised away.
#[allow(unsafe_code)]
fn store_kept(byte: &mut u8, value: u8) {
    // SAFETY: a `&mut u8` is valid, aligned and exclusive for a one-byte
    // write.
    unsafe { std::ptr::write_volatile(byte, value) }
}

#[allow(unsafe_code)]
fn map(file: &File, path: &Path) -> Result<MmapMut, SpoolError> {
    // SAFETY: the file is a segment this shard owns exclusively (one shard
    // per directory, and the daemon holds a lock on the spool), its length is
    // fixed by fallocate and never shrinks while mapped, so the mapping stays
    // valid and no other writer changes it under us.
    unsafe { MmapOptions::new().map_mut(file) }.map_err(io_err(path, "mapping segment"))
}

impl Segment {
    /// Creates, preallocates and maps a new segment, with its header written
    /// and the file and directory entry durable before it is returned.
    ///
    /// The file is built under a temporary name and renamed into place only
    /// once whole, so a crash at any point leaves either no segment or a
    /// complete empty one (recovery removes stray temporary files).
    pub fn create(
        io: &dyn StorageIo,
        dir: &Path,
        header: &SegmentHeader,
    ) -> Result<Segment, SpoolError> {
        let path = dir.join(segment_file_name(header.segment_id));
        let tmp = dir.join(format!(
            "{}{TEMP_SUFFIX}",
            segment_file_name(header.segment_id)
        ));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_err(&tmp, "creating segment"))?;
        let built = (|| {
            io.allocate(&file, &tmp, header.segment_size)
                .map_err(io_err(&tmp, "preallocating segment"))?;
            file.write_all(&header.encode())
                .map_err(io_err(&tmp, "writing segment header"))?;
            io.sync_new(&file, &tmp)
                .map_err(io_err(&tmp, "syncing new segment"))?;
            std::fs::rename(&tmp, &path).map_err(io_err(&path, "naming new segment"))?;
            sync_dir(dir)
        })();
        if let Err(e) = built {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let map = map(&file, &path)?;
        let seg = Segment {
            id: header.segment_id,
            nonce: header.nonce,
            path,
            file,
            map,
        };
        seg.prepare_for_appends();
        Ok(seg)
    }

    /// Turns off read-ahead on the mapping of the segment being appended
    /// to (`MADV_RANDOM`). With read-ahead, the write faults of a sequential
    /// append pull in ever larger folios (the zeros of the preallocated
    /// space), and every group commit then writes whole large folios back
    /// for a few new kilobytes: measured on ext4, fdatasync after 13 KB of
    /// appends grew from 0.3 ms to about 3.5 ms once some 30 MB had been
    /// appended, while it stays at 0.35 ms with read-ahead off. Only a
    /// hint: if it fails, appends are as correct, only slower.
    pub fn prepare_for_appends(&self) {
        if let Err(e) = self.map.advise(memmap2::Advice::Random) {
            tracing::warn!(segment = %self.path.display(), error = %e, "madvise(MADV_RANDOM) failed");
        }
    }

    /// Dirties the page-aligned range `[from, to)` of the mapping without
    /// changing its bytes, so that the next fdatasync writes its blocks
    /// (see `spool::ahead`). Only for space past the cursor.
    pub fn dirty_pages(&mut self, from: usize, to: usize) {
        assert!(from % ahead::PAGE == 0 && from <= to && to <= self.map.len());
        // MADV_POPULATE_WRITE (Linux 5.14) write-faults each page of the
        // range, as a store would, in one call, and changes no byte.
        if self
            .map
            .advise_range(memmap2::Advice::PopulateWrite, from, to - from)
            .is_ok()
        {
            return;
        }
        // Older kernels: store the zero each page already reads as.
        for page in (from..to).step_by(ahead::PAGE) {
            store_kept(&mut self.map[page], 0);
        }
    }

    /// Writes a record reserved with `SegmentCursor::reserve_external` at
    /// `offset` with `pwritev`: header, payload and padding in one call (the
    /// page cache it fills is the one the mapping shows). Unlike a copy into
    /// the mapping, it needs no page fault per page and no zeroing of the
    /// preallocated pages it overwrites.
    pub fn write_record(
        &self,
        io: &dyn StorageIo,
        offset: u32,
        rec: &spool_format::ExternalRecord,
        payload: &[u8],
    ) -> std::io::Result<()> {
        const ZEROS: [u8; spool_format::ALIGN] = [0; spool_format::ALIGN];
        let parts: [&[u8]; 3] = [&rec.header, payload, &ZEROS[..rec.padding]];
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut done = 0;
        while done < total {
            // Rebuild the slices past what is written (short writes are
            // rare: a signal, or a file system under pressure).
            let mut iov = [IoSlice::new(&[]); 3];
            let mut n = 0;
            let mut skip = done;
            for p in parts {
                if skip >= p.len() {
                    skip -= p.len();
                    continue;
                }
                iov[n] = IoSlice::new(&p[skip..]);
                skip = 0;
                n += 1;
            }
            let at = u64::from(offset) + done as u64;
            match io.pwritev(&self.file, &self.path, &iov[..n], at) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(written) => done += written,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Maps an existing segment read-write (recovery, then appends).
    pub fn open(path: &Path, id: u64) -> Result<Segment, SpoolError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err(path, "opening segment"))?;
        let len = file
            .metadata()
            .map_err(io_err(path, "reading segment size"))?
            .len();
        if len < spool_format::SEGMENT_HEADER_LEN as u64 || len > spool_format::MAX_SEGMENT_SIZE {
            return Err(SpoolError::BadSegment {
                path: path.to_path_buf(),
                why: format!("size {len} is outside the valid range"),
            });
        }
        let map = map(&file, path)?;
        // A segment with a bad header is still opened: recovery reports it
        // and copies it aside; nothing in it can be appended to or trusted.
        let nonce = SegmentHeader::decode(&map).map_or(0, |h| h.nonce);
        Ok(Segment {
            id,
            nonce,
            path: path.to_path_buf(),
            file,
            map,
        })
    }

    /// See [`data_len`]: how far recovery needs to scan this segment.
    pub fn data_len(&self) -> usize {
        data_len(&self.file, self.map.len() as u64) as usize
    }

    /// Flushes this segment's dirty pages and the metadata needed to read
    /// them back (blocking; the runtime calls the io_uring variant instead).
    pub fn sync_blocking(&self, io: &dyn StorageIo) -> Result<(), SpoolError> {
        io.sync_blocking(&self.file, &self.path)
            .map_err(io_err(&self.path, "syncing segment"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(id: u64) -> SegmentHeader {
        SegmentHeader {
            shard: 0,
            segment_id: id,
            segment_size: 4 << 20,
            created_ms: 0,
            nonce: 7,
            first_seq: 0,
        }
    }

    #[test]
    fn data_len_covers_every_written_byte_and_stops_at_the_unwritten_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(&super::super::io::Disk, dir.path(), &header(1)).unwrap();
        let header_only = seg.data_len();
        assert!(header_only >= spool_format::SEGMENT_HEADER_LEN);
        assert!(header_only <= seg.map.len());
        // Data written through the mapping (not yet synced) and far out.
        let at = 3 << 20;
        seg.map[at..at + 5].copy_from_slice(b"hello");
        let len = seg.data_len();
        assert!(len >= at + 5 && len <= seg.map.len(), "{len}");
        // Past data_len the file reads as zeros, so scanning stops there.
        assert!(seg.map[len..].iter().all(|&b| b == 0));
    }
}
