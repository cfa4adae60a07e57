//! Segment and record headers: fixed layouts, little-endian, each protected by
//! its own CRC32C so a header can be trusted before anything it points to is
//! read.

use crate::{FORMAT_VERSION, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};

/// Magic at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"PETRLSEG";
/// Magic at the start of every record ("PTRL" in file order).
pub const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"PTRL");

const _: () = assert!(RECORD_HEADER_LEN == 32 && SEGMENT_HEADER_LEN == 64);

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The header at offset 0 of every segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub shard: u32,
    pub segment_id: u64,
    pub segment_size: u64,
    pub created_ms: u64,
    /// Random per segment, folded into every record header's checksum, so
    /// bytes inside a message body can never pass for a record of the log
    /// (recovery resynchronises by searching for headers after damage).
    pub nonce: u64,
    /// The shard's record sequence when the segment was created. Sequence
    /// numbers (and so message ids) stay unique across restarts even when
    /// every older segment has been reclaimed and this one is empty.
    pub first_seq: u64,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..12].copy_from_slice(&u32::from(FORMAT_VERSION).to_le_bytes());
        b[12..16].copy_from_slice(&self.shard.to_le_bytes());
        b[16..24].copy_from_slice(&self.segment_id.to_le_bytes());
        b[24..32].copy_from_slice(&self.segment_size.to_le_bytes());
        b[32..40].copy_from_slice(&self.created_ms.to_le_bytes());
        b[40..48].copy_from_slice(&self.nonce.to_le_bytes());
        b[48..56].copy_from_slice(&self.first_seq.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and verifies a segment header; `None` if anything is off.
    pub fn decode(b: &[u8]) -> Option<SegmentHeader> {
        let b = b.get(0..SEGMENT_HEADER_LEN)?;
        if b[0..8] != SEGMENT_MAGIC
            || le_u32(b, 8) != u32::from(FORMAT_VERSION)
            || b[56..60] != [0; 4]
            || le_u32(b, 60) != crc32c::crc32c(&b[0..60])
        {
            return None;
        }
        Some(SegmentHeader {
            shard: le_u32(b, 12),
            segment_id: le_u64(b, 16),
            segment_size: le_u64(b, 24),
            created_ms: le_u64(b, 32),
            nonce: le_u64(b, 40),
            first_seq: le_u64(b, 48),
        })
    }
}

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RecordKind {
    /// A piece of a message body (raw bytes, already dot-unstuffed).
    Chunk = 1,
    /// An archived [`crate::Envelope`]; commits a message and its chunks.
    Message = 2,
    /// A [`crate::StatusRecord`]: outcome for some recipients of a message.
    Status = 3,
}

impl RecordKind {
    pub fn from_u8(v: u8) -> Option<RecordKind> {
        match v {
            1 => Some(RecordKind::Chunk),
            2 => Some(RecordKind::Message),
            3 => Some(RecordKind::Status),
            _ => None,
        }
    }
}

/// The 32-byte header in front of every record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub kind: RecordKind,
    pub payload_len: u32,
    pub payload_crc: u32,
    pub seq: u64,
}

impl RecordHeader {
    pub fn encode(&self, nonce: u64) -> [u8; RECORD_HEADER_LEN] {
        let mut b = [0u8; RECORD_HEADER_LEN];
        b[0..4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
        b[4] = self.kind as u8;
        b[5] = FORMAT_VERSION;
        b[8..12].copy_from_slice(&self.payload_len.to_le_bytes());
        b[12..16].copy_from_slice(&self.payload_crc.to_le_bytes());
        b[16..24].copy_from_slice(&self.seq.to_le_bytes());
        let crc = header_crc(nonce, &b[0..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes a header whose own checksum holds for this segment's nonce;
    /// the payload is not checked.
    pub fn decode(b: &[u8], nonce: u64) -> Option<RecordHeader> {
        let b = b.get(0..RECORD_HEADER_LEN)?;
        if le_u32(b, 0) != RECORD_MAGIC
            || b[5] != FORMAT_VERSION
            || b[6..8] != [0, 0]
            || b[24..28] != [0; 4]
            || le_u32(b, 28) != header_crc(nonce, &b[0..28])
        {
            return None;
        }
        Some(RecordHeader {
            kind: RecordKind::from_u8(b[4])?,
            payload_len: le_u32(b, 8),
            payload_crc: le_u32(b, 12),
            seq: le_u64(b, 16),
        })
    }

    /// True when `b` starts with the record magic: a cheap pre-filter.
    pub fn has_magic(b: &[u8]) -> bool {
        b.len() >= 4 && le_u32(b, 0) == RECORD_MAGIC
    }
}

/// CRC32C of the segment nonce followed by the first 28 header bytes.
fn header_crc(nonce: u64, head: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&nonce.to_le_bytes()), head)
}

/// Writes a record's header in front of a payload the caller has already
/// placed at `dst[RECORD_HEADER_LEN..RECORD_HEADER_LEN + payload_len]`, and
/// zeroes the alignment padding after it. Returns the record's span.
///
/// The payload is written in place first so the body is copied only once
/// (from the receive buffer straight into the mapping).
pub fn seal_record(
    dst: &mut [u8],
    kind: RecordKind,
    seq: u64,
    payload_len: usize,
    nonce: u64,
) -> usize {
    let span = crate::record_span(payload_len);
    assert!(span <= dst.len(), "record does not fit its reservation");
    let payload = &dst[RECORD_HEADER_LEN..RECORD_HEADER_LEN + payload_len];
    let header = RecordHeader {
        kind,
        payload_len: payload_len as u32,
        payload_crc: crc32c::crc32c(payload),
        seq,
    };
    dst[RECORD_HEADER_LEN + payload_len..span].fill(0);
    dst[..RECORD_HEADER_LEN].copy_from_slice(&header.encode(nonce));
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_header_roundtrip_and_every_bit_flip_is_caught() {
        let h = RecordHeader {
            kind: RecordKind::Status,
            payload_len: 77,
            payload_crc: 0xdead_beef,
            seq: 42,
        };
        let b = h.encode(77);
        assert_eq!(RecordHeader::decode(&b, 77), Some(h));
        assert_eq!(
            RecordHeader::decode(&b, 78),
            None,
            "another segment's nonce"
        );
        for bit in 0..(RECORD_HEADER_LEN * 8) {
            let mut c = b;
            c[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(RecordHeader::decode(&c, 77), None, "bit {bit}");
        }
    }

    #[test]
    fn segment_header_roundtrip_and_corruption() {
        let h = SegmentHeader {
            shard: 3,
            segment_id: 9,
            segment_size: 1 << 20,
            created_ms: 1234,
            nonce: 99,
            first_seq: 12345,
        };
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Some(h));
        let mut c = b;
        c[20] ^= 4;
        assert_eq!(SegmentHeader::decode(&c), None);
        assert_eq!(SegmentHeader::decode(&b[..10]), None);
    }
}
