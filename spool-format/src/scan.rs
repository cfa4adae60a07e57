//! Recovery scan of one segment, written as a decision table:
//!
//! | at the scan position                         | decision                                      |
//! |----------------------------------------------|-----------------------------------------------|
//! | a valid record (header CRC, length fits, payload CRC, sequence increases) | keep it, move past it |
//! | a valid header (length fits, sequence increases) over a bad payload | a record cut short: search on after its span |
//! | anything else, and a valid record later      | damage: report the gap, resume at that record |
//! | anything else, nothing valid later, all zero | clean end: append here                        |
//! | anything else, nothing valid later, non-zero | torn tail: cut back here, report bytes dropped|
//!
//! The scan trusts nothing and never panics: every length is checked against
//! the slice before it is used.

use crate::header::{RecordHeader, SegmentHeader};
use crate::{record_span, ALIGN, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};

/// A record that passed every check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScannedRecord {
    pub offset: u32,
    pub header: RecordHeader,
}

impl ScannedRecord {
    /// The record's payload inside the scanned segment bytes.
    pub fn payload<'a>(&self, segment: &'a [u8]) -> &'a [u8] {
        let start = self.offset as usize + RECORD_HEADER_LEN;
        &segment[start..start + self.header.payload_len as usize]
    }
}

/// A region between valid records that held no valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damage {
    pub offset: u64,
    pub len: u64,
}

/// How the segment ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    /// Only zeros after the last record.
    Clean,
    /// Non-zero bytes after the last valid record (a write cut short by a
    /// crash); they are dropped and the segment is appended to at `end`.
    Torn { dropped_bytes: u64 },
}

/// Everything a scan learned about one segment.
#[derive(Debug, Clone)]
pub struct SegmentScan {
    /// `None` when the segment header is missing or corrupt.
    pub header: Option<SegmentHeader>,
    pub records: Vec<ScannedRecord>,
    /// Where the next record would go.
    pub end: usize,
    pub tail: Tail,
    pub damage: Vec<Damage>,
    /// Highest sequence number seen (or the `min_seq` passed in).
    pub last_seq: u64,
    /// Bytes the scan looked at (searched, or checksummed): at most a
    /// small multiple of the segment's length whatever it holds.
    pub work: u64,
}

impl SegmentScan {
    /// True when the segment needs an operator's attention (copied aside).
    pub fn is_damaged(&self) -> bool {
        self.header.is_none() || !self.damage.is_empty()
    }

    /// Finds the record starting at `offset`, if the scan kept one there.
    pub fn record_at(&self, offset: u32) -> Option<&ScannedRecord> {
        let i = self
            .records
            .binary_search_by_key(&offset, |r| r.offset)
            .ok()?;
        self.records.get(i)
    }
}

/// What the bytes at a scan position are.
enum Check {
    Valid(RecordHeader),
    /// A header whose own checksum holds over a payload whose checksum
    /// does not: a record the writer made (records never overlap) and that
    /// did not reach the disk whole. Nothing valid starts inside its span,
    /// so the search resumes after it: each byte is checksummed at most
    /// once, and re-syncing stays linear whatever the damage holds.
    Broken {
        span: usize,
    },
    /// No record the writer could have made: move on by one position.
    Invalid,
}

/// Checks the record at `pos`, adding the bytes it looked at to `work`.
fn check_at(bytes: &[u8], pos: usize, last_seq: u64, nonce: u64, work: &mut u64) -> Check {
    *work += RECORD_HEADER_LEN as u64;
    let Some(h) = bytes
        .get(pos..)
        .and_then(|b| RecordHeader::decode(b, nonce))
    else {
        return Check::Invalid;
    };
    let start = pos + RECORD_HEADER_LEN;
    // A length past the segment's end or an old sequence number: not a
    // record the writer made here (it writes only inside the segment, in
    // increasing order), so its length is not trusted to skip anything.
    let end = start.checked_add(h.payload_len as usize);
    let Some(payload) = end.and_then(|end| bytes.get(start..end)) else {
        return Check::Invalid;
    };
    if h.seq <= last_seq {
        return Check::Invalid;
    }
    *work += payload.len() as u64;
    if crc32c::crc32c(payload) != h.payload_crc {
        return Check::Broken {
            span: record_span(payload.len()),
        };
    }
    Check::Valid(h)
}

/// The next aligned position at or after `from` that holds a valid record.
fn find_next_valid(
    bytes: &[u8],
    from: usize,
    last_seq: u64,
    nonce: u64,
    work: &mut u64,
) -> Option<usize> {
    let magic = crate::header::RECORD_MAGIC.to_le_bytes();
    let finder = memchr::memmem::Finder::new(&magic);
    let mut at = from;
    while at < bytes.len() {
        let Some(found) = finder.find(&bytes[at..]) else {
            *work += (bytes.len() - at) as u64;
            return None;
        };
        *work += found as u64 + 1;
        let hit = at + found;
        at = hit + 1;
        if hit % ALIGN != 0 {
            continue;
        }
        match check_at(bytes, hit, last_seq, nonce, work) {
            Check::Valid(_) => return Some(hit),
            Check::Broken { span } => at = hit + span,
            Check::Invalid => {}
        }
    }
    None
}

/// Index one past the last non-zero byte of `bytes`, or 0 if all zero.
fn nonzero_len(bytes: &[u8]) -> usize {
    const BLOCK: usize = 4096;
    let mut end = bytes.len();
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        let block = &bytes[start..end];
        if block.iter().any(|&b| b != 0) {
            let last = block.iter().rposition(|&b| b != 0).unwrap_or(0);
            return start + last + 1;
        }
        end = start;
    }
    0
}

/// Scans a whole segment image. `min_seq` is the highest sequence number of
/// the segments before it: records must carry higher numbers.
pub fn scan_segment(bytes: &[u8], min_seq: u64) -> SegmentScan {
    let mut scan = SegmentScan {
        header: SegmentHeader::decode(bytes),
        records: Vec::new(),
        end: SEGMENT_HEADER_LEN.min(bytes.len()),
        tail: Tail::Clean,
        damage: Vec::new(),
        last_seq: min_seq,
        work: 0,
    };
    // Without a header there is no nonce to check records against: nothing
    // in the segment can be trusted, and all of it is reported as damage.
    let Some(nonce) = scan.header.map(|h| h.nonce) else {
        scan.damage.push(Damage {
            offset: 0,
            len: bytes.len() as u64,
        });
        scan.end = bytes.len();
        return scan;
    };
    let mut pos = SEGMENT_HEADER_LEN;
    while pos + RECORD_HEADER_LEN <= bytes.len() {
        let resume = match check_at(bytes, pos, scan.last_seq, nonce, &mut scan.work) {
            Check::Valid(h) => {
                scan.records.push(ScannedRecord {
                    offset: pos as u32,
                    header: h,
                });
                scan.last_seq = h.seq;
                pos += record_span(h.payload_len as usize);
                continue;
            }
            Check::Broken { span } => pos + span,
            Check::Invalid => pos + ALIGN,
        };
        match find_next_valid(bytes, resume, scan.last_seq, nonce, &mut scan.work) {
            Some(next) => {
                scan.damage.push(Damage {
                    offset: pos as u64,
                    len: (next - pos) as u64,
                });
                pos = next;
            }
            None => break,
        }
    }
    let end = pos.min(bytes.len());
    scan.end = end;
    let garbage = nonzero_len(&bytes[end..]);
    if garbage > 0 {
        scan.tail = Tail::Torn {
            dropped_bytes: garbage as u64,
        };
    }
    scan
}
