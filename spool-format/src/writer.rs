//! Appending records to a segment image held by the caller (the daemon's
//! memory mapping, or a buffer in tests). The cursor only tracks where the
//! next record goes; it never allocates and never reads back.

use crate::envelope::{encode_envelope, envelope_size_bound, ChunkRef, Envelope};
use crate::header::{seal_record, RecordKind, SegmentHeader};
use crate::status::{RcptState, StatusRecord};
use crate::{record_span, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};

/// The framing of a record written by the caller: its header, then the
/// payload, then `padding` zero bytes.
#[derive(Debug, Clone, Copy)]
pub struct ExternalRecord {
    pub header: [u8; RECORD_HEADER_LEN],
    pub padding: usize,
}

/// Write position inside one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentCursor {
    pub segment_id: u64,
    pub pos: usize,
    pub size: usize,
    pub nonce: u64,
}

impl SegmentCursor {
    /// Starts a fresh segment: writes its header into `buf`.
    pub fn start(buf: &mut [u8], header: &SegmentHeader) -> SegmentCursor {
        buf[..SEGMENT_HEADER_LEN].copy_from_slice(&header.encode());
        SegmentCursor {
            segment_id: header.segment_id,
            pos: SEGMENT_HEADER_LEN,
            size: buf.len(),
            nonce: header.nonce,
        }
    }

    /// Continues a segment found by recovery at its scanned end.
    pub fn resume(header: &SegmentHeader, end: usize, size: usize) -> SegmentCursor {
        SegmentCursor {
            segment_id: header.segment_id,
            pos: end,
            size,
            nonce: header.nonce,
        }
    }

    /// Largest payload a record appended now could carry.
    pub fn max_payload(&self) -> usize {
        self.size.saturating_sub(self.pos + RECORD_HEADER_LEN) & !(crate::ALIGN - 1)
    }

    /// Appends a record whose payload `fill` writes in place (at most
    /// `max_payload` bytes; it returns how many it wrote). Returns the
    /// record's offset, or `None` if `max_payload` does not fit.
    pub fn append_with(
        &mut self,
        buf: &mut [u8],
        kind: RecordKind,
        seq: u64,
        max_payload: usize,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> Option<u32> {
        self.try_append_with(buf, kind, seq, max_payload, |dst| Some(fill(dst)))
    }

    /// Like [`Self::append_with`], but `fill` may give up (`None`): then no
    /// header is sealed and the position does not move, so nothing that
    /// could pass for a record is left behind.
    pub fn try_append_with(
        &mut self,
        buf: &mut [u8],
        kind: RecordKind,
        seq: u64,
        max_payload: usize,
        fill: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> Option<u32> {
        if self.pos + record_span(max_payload) > self.size.min(buf.len()) {
            return None;
        }
        let at = self.pos;
        let area = &mut buf[at..at + record_span(max_payload)];
        let payload = &mut area[RECORD_HEADER_LEN..RECORD_HEADER_LEN + max_payload];
        let Some(n) = fill(payload) else {
            // A writer that gave up may have written part of its payload
            // (an envelope that did not fit at the end of a segment): wipe
            // it, or recovery would find garbage after the last record and
            // report a torn tail on every restart.
            payload.fill(0);
            return None;
        };
        assert!(n <= max_payload, "payload writer overran its reservation");
        self.pos += seal_record(area, kind, seq, n, self.nonce);
        Some(at as u32)
    }

    /// Reserves room for a record whose bytes the caller writes itself
    /// (through `pwrite`, say, instead of the mapping): moves the position
    /// past it and returns its offset with the whole record image except the
    /// payload — the sealed header and the zero padding after the payload.
    /// `None` if `payload` does not fit.
    pub fn reserve_external(
        &mut self,
        kind: RecordKind,
        seq: u64,
        payload: &[u8],
    ) -> Option<(u32, ExternalRecord)> {
        let span = record_span(payload.len());
        if self.pos + span > self.size {
            return None;
        }
        let header = crate::header::RecordHeader {
            kind,
            payload_len: payload.len() as u32,
            payload_crc: crc32c::crc32c(payload),
            seq,
        };
        let at = self.pos;
        self.pos += span;
        Some((
            at as u32,
            ExternalRecord {
                header: header.encode(self.nonce),
                padding: span - RECORD_HEADER_LEN - payload.len(),
            },
        ))
    }

    /// Appends a body chunk.
    pub fn append_chunk(&mut self, buf: &mut [u8], seq: u64, data: &[u8]) -> Option<ChunkRef> {
        let offset = self.append_with(buf, RecordKind::Chunk, seq, data.len(), |dst| {
            dst.copy_from_slice(data);
            data.len()
        })?;
        Some(ChunkRef {
            segment: self.segment_id,
            offset,
            len: data.len() as u32,
        })
    }

    /// Appends an envelope record (which commits the message).
    pub fn append_envelope(&mut self, buf: &mut [u8], seq: u64, env: &Envelope) -> Option<u32> {
        let bound = envelope_size_bound(env).min(self.max_payload());
        self.try_append_with(buf, RecordKind::Message, seq, bound, |dst| {
            encode_envelope(env, dst)
        })
    }

    /// Appends a status record.
    #[allow(clippy::too_many_arguments)]
    pub fn append_status(
        &mut self,
        buf: &mut [u8],
        seq: u64,
        msg_id: u64,
        state: RcptState,
        time_ms: u64,
        rcpts: &[u32],
        diagnostic: &[u8],
    ) -> Option<u32> {
        let len = StatusRecord::encoded_len(rcpts.len(), diagnostic.len());
        self.append_with(buf, RecordKind::Status, seq, len, |dst| {
            StatusRecord::encode_into(dst, msg_id, state, time_ms, rcpts, diagnostic);
            len
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Recipient;
    use crate::scan::{scan_segment, Tail};

    /// A record written by the caller from `reserve_external` is byte for
    /// byte the record `append_chunk` writes, for every padding length, and
    /// one that does not fit moves nothing.
    #[test]
    fn an_external_record_is_the_same_bytes_as_an_appended_one() {
        let header = SegmentHeader {
            shard: 0,
            segment_id: 1,
            segment_size: 4096,
            created_ms: 0,
            nonce: 77,
            first_seq: 0,
        };
        for len in 1..=48usize {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
            let mut a = vec![0xeeu8; 4096];
            let mut b = vec![0xeeu8; 4096];
            let mut ca = SegmentCursor::start(&mut a, &header);
            let mut cb = SegmentCursor::start(&mut b, &header);
            let r = ca.append_chunk(&mut a, 5, &data).expect("fits");
            let (off, rec) = cb
                .reserve_external(RecordKind::Chunk, 5, &data)
                .expect("fits");
            assert_eq!(off, r.offset);
            assert_eq!(ca.pos, cb.pos, "len {len}");
            let at = off as usize;
            let p = at + RECORD_HEADER_LEN;
            b[at..p].copy_from_slice(&rec.header);
            b[p..p + len].copy_from_slice(&data);
            b[p + len..p + len + rec.padding].fill(0);
            assert_eq!(a[..ca.pos], b[..cb.pos], "len {len}");
        }
        let mut buf = vec![0u8; 4096];
        let mut cur = SegmentCursor::start(&mut buf, &header);
        let before = cur.pos;
        assert!(cur
            .reserve_external(RecordKind::Chunk, 1, &[1u8; 4096])
            .is_none());
        assert_eq!(cur.pos, before);
    }

    #[test]
    fn an_envelope_that_does_not_fit_leaves_no_garbage_behind() {
        let header = SegmentHeader {
            shard: 0,
            segment_id: 1,
            segment_size: 4096,
            created_ms: 0,
            nonce: 9,
            first_seq: 0,
        };
        let mut buf = vec![0u8; 4096];
        let mut cur = SegmentCursor::start(&mut buf, &header);
        let env = Envelope {
            msg_id: 1,
            reverse_path: vec![b's'; 300],
            recipients: (0..20)
                .map(|i| Recipient::new(format!("r{i}@example.test").as_bytes(), 0, b""))
                .collect(),
            ..Envelope::default()
        };
        let mut seq = 0;
        while cur.append_envelope(&mut buf, seq + 1, &env).is_some() {
            seq += 1;
        }
        assert!(seq > 0, "at least one envelope fits");
        // The one that did not fit wrote nothing a scan could trip over.
        assert!(buf[cur.pos..].iter().all(|&b| b == 0));
        let scan = scan_segment(&buf, 0);
        assert_eq!(scan.tail, Tail::Clean);
        assert_eq!(scan.records.len(), seq as usize);
    }
}
