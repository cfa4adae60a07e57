//! The spool runtime: each shard's append-only log of segment files, mapped
//! into memory, with group commit.
//!
//! It owns the segment files of one shard, the queue index, and the rule
//! that an append is acknowledged only once an fdatasync covering it has
//! completed. It must never acknowledge what is not durable, never retry a
//! failed sync (the kernel may have dropped the pages), and never take a
//! lock on the append path: one shard, one thread, one spool.
//!
//! The on-disk format belongs to the `spool-format` crate.

pub mod ahead;
pub mod commit;
pub mod faulty;
pub mod filesystem;
pub mod id;
pub mod inspect;
pub mod io;
pub mod params;
pub mod recovery;
pub mod segment;
pub mod shard;

use std::path::PathBuf;

pub use id::DisplayId;
pub use shard::{ShardSpool, SpoolOptions};

/// Why a spool operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("segment {}: {why}", path.display())]
    BadSegment { path: PathBuf, why: String },
    #[error("an earlier fdatasync failed; the spool accepts nothing until restart")]
    SyncFailed,
    #[error("message too large for a segment")]
    TooLarge,
    #[error("an empty body chunk")]
    EmptyChunk,
    #[error("message {0:x} is not queued")]
    NotQueued(u64),
    #[error("segment id {0} leaves no next id: the last a spool may use is {max}", max = spool_format::MAX_SEGMENT_ID)]
    SegmentIdsExhausted(u64),
}

/// The id of the segment after `id`, if the spool may use one.
pub(crate) fn next_segment_id(id: u64) -> Result<u64, SpoolError> {
    id.checked_add(1)
        .filter(|&next| next <= spool_format::MAX_SEGMENT_ID)
        .ok_or(SpoolError::SegmentIdsExhausted(id))
}

/// Maps an I/O error to a [`SpoolError`] naming the file and the operation.
pub(crate) fn io_err<'a>(
    path: &'a std::path::Path,
    what: &'static str,
) -> impl FnOnce(std::io::Error) -> SpoolError + 'a {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        what,
        source,
    }
}
