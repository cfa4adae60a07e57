//! Recovery scan of one segment, written as a decision table:
//!
//! | at the scan position                         | decision                                      |
//! |----------------------------------------------|-----------------------------------------------|
//! | a valid record (header CRC, length fits, payload CRC, sequence increases) | keep it, move past it |
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

/// Checks the record at `pos`; `None` if any check fails.
fn valid_record_at(bytes: &[u8], pos: usize, last_seq: u64, nonce: u64) -> Option<RecordHeader> {
    let h = RecordHeader::decode(bytes.get(pos..)?, nonce)?;
    let start = pos + RECORD_HEADER_LEN;
    let payload = bytes.get(start..start.checked_add(h.payload_len as usize)?)?;
    if h.seq <= last_seq || crc32c::crc32c(payload) != h.payload_crc {
        return None;
    }
    Some(h)
}

/// The next aligned position at or after `from` that holds a valid record.
fn find_next_valid(bytes: &[u8], from: usize, last_seq: u64, nonce: u64) -> Option<usize> {
    let magic = crate::header::RECORD_MAGIC.to_le_bytes();
    let finder = memchr::memmem::Finder::new(&magic);
    let mut at = from;
    while at < bytes.len() {
        let hit = at + finder.find(&bytes[at..])?;
        if hit % ALIGN == 0 && valid_record_at(bytes, hit, last_seq, nonce).is_some() {
            return Some(hit);
        }
        at = hit + 1;
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
        if let Some(h) = valid_record_at(bytes, pos, scan.last_seq, nonce) {
            scan.records.push(ScannedRecord {
                offset: pos as u32,
                header: h,
            });
            scan.last_seq = h.seq;
            pos += record_span(h.payload_len as usize);
            continue;
        }
        match find_next_valid(bytes, pos + ALIGN, scan.last_seq, nonce) {
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
