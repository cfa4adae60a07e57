//! The on-disk format of the petrel spool, owned in one place so that the
//! daemon, the offline `petrel spool inspect` tool and the tests all read the
//! same bytes the same way. `SPEC.md` beside this crate describes it byte by
//! byte.
//!
//! This crate does no I/O: it encodes records into caller-provided byte
//! slices (the daemon passes its memory mapping) and scans byte slices back
//! into records. It must never panic on any byte content.
#![forbid(unsafe_code)]

pub mod envelope;
pub mod fuzzing;
pub mod header;
pub mod recover;
pub mod scan;
pub mod status;
pub mod writer;

pub use envelope::{ArchivedEnvelope, BodyType, ChunkRef, Envelope, Recipient, Ret};
pub use header::{RecordHeader, RecordKind, SegmentHeader};
pub use recover::{Applied, PendingSet, QueueIndex, QueuedMessage, RecoveredSegment};
pub use scan::{scan_segment, Damage, ScannedRecord, SegmentScan, Tail};
pub use status::{RcptState, StatusRecord};
pub use writer::{ExternalRecord, SegmentCursor};

/// Records start on this boundary so archived envelopes can be read in place.
pub const ALIGN: usize = 16;
/// Size of the segment header at the start of every segment file.
pub const SEGMENT_HEADER_LEN: usize = 64;
/// Size of every record header.
pub const RECORD_HEADER_LEN: usize = 32;
/// The largest segment: record offsets inside a segment are stored as u32.
pub const MAX_SEGMENT_SIZE: u64 = 1 << 32;
/// The largest segment id: the queue index stores segment ids in 32 bits.
pub const MAX_SEGMENT_ID: u64 = u32::MAX as u64;
/// Format version written into segment and record headers.
pub const FORMAT_VERSION: u8 = 1;

/// Rounds `n` up to the record alignment.
pub const fn align_up(n: usize) -> usize {
    (n + ALIGN - 1) & !(ALIGN - 1)
}

/// Bytes a record with `payload_len` payload bytes occupies in a segment.
pub const fn record_span(payload_len: usize) -> usize {
    RECORD_HEADER_LEN + align_up(payload_len)
}

/// File name of a segment inside a shard directory.
pub fn segment_file_name(segment_id: u64) -> String {
    format!("{segment_id:016x}.seg")
}

/// Parses a segment file name back into its id.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".seg")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// Name of a shard's directory inside the spool directory.
pub fn shard_dir_name(shard: u32) -> String {
    format!("shard-{shard}")
}

/// Parses a shard directory name back into its number.
pub fn parse_shard_dir_name(name: &str) -> Option<u32> {
    name.strip_prefix("shard-")?.parse().ok()
}
