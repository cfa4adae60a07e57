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
pub mod id;
pub mod inspect;
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
