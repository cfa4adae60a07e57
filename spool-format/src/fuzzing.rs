//! Fuzzing harness for recovery: arbitrary bytes as a segment image must
//! scan and rebuild a queue without panicking, and everything the scan
//! keeps must really be inside the image. The cargo-fuzz target in
//! `fuzz/` is a thin shim over this, so it is also run by unit tests.

use crate::{
    record_span, scan_segment, QueueIndex, RecordHeader, RecordKind, RecoveredSegment,
    SegmentHeader, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
};

/// Scans `data` as one segment (aligned copy) and recovers a queue from it.
pub fn spool_scan(data: &[u8]) {
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(data.len());
    aligned.extend_from_slice(data);
    let scan = scan_segment(&aligned, 0);
    for r in &scan.records {
        let end = r.offset as usize + RECORD_HEADER_LEN + r.header.payload_len as usize;
        assert!(end <= aligned.len(), "kept a record past the end");
    }
    assert!(scan.end <= aligned.len().max(crate::SEGMENT_HEADER_LEN));
    let segs = [RecoveredSegment {
        id: 1,
        bytes: &aligned,
        scan: &scan,
    }];
    let _ = QueueIndex::recover(&segs);
}

/// Segment size of [`spool_records`]: one fuzz input fills at most this.
const RECORDS_SEGMENT: usize = 64 << 10;

/// Builds a segment of records with valid checksums from `data`, so that
/// the fuzzer's bytes reach envelope and status decoding rather than stop
/// at a checksum. `data` is a series of records: a kind byte (message,
/// chunk or status, by its value mod 3), a length byte, and that many
/// payload bytes. The scan must keep every one of them, in order, with
/// no damage; recovery must then rebuild a queue without panicking, with
/// no more messages than message records.
pub fn spool_records(data: &[u8]) {
    let nonce = 0x0f0f;
    let mut seg = rkyv::util::AlignedVec::<16>::with_capacity(RECORDS_SEGMENT);
    seg.resize(RECORDS_SEGMENT, 0);
    let header = SegmentHeader {
        shard: 0,
        segment_id: 1,
        segment_size: RECORDS_SEGMENT as u64,
        created_ms: 0,
        nonce,
        first_seq: 0,
    };
    seg[..SEGMENT_HEADER_LEN].copy_from_slice(&header.encode());
    let (mut pos, mut rest, mut seq) = (SEGMENT_HEADER_LEN, data, 0u64);
    let mut written = Vec::new();
    while let [kind, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (payload, after) = tail.split_at(len);
        if pos + record_span(len) > seg.len() {
            break;
        }
        let kind =
            [RecordKind::Message, RecordKind::Chunk, RecordKind::Status][usize::from(*kind % 3)];
        seq += 1;
        let h = RecordHeader {
            kind,
            payload_len: len as u32,
            payload_crc: crc32c::crc32c(payload),
            seq,
        };
        seg[pos..pos + RECORD_HEADER_LEN].copy_from_slice(&h.encode(nonce));
        seg[pos + RECORD_HEADER_LEN..pos + RECORD_HEADER_LEN + len].copy_from_slice(payload);
        written.push((pos as u32, h));
        pos += record_span(len);
        rest = after;
    }
    let scan = scan_segment(&seg, 0);
    let kept: Vec<(u32, RecordHeader)> =
        scan.records.iter().map(|r| (r.offset, r.header)).collect();
    assert_eq!(kept, written, "the scan lost or invented a record");
    assert!(scan.damage.is_empty() && scan.end == pos);
    let segs = [RecoveredSegment {
        id: 1,
        bytes: &seg,
        scan: &scan,
    }];
    let q = QueueIndex::recover(&segs);
    let messages = written
        .iter()
        .filter(|(_, h)| h.kind == RecordKind::Message)
        .count();
    assert!(q.messages.len() <= messages);
    assert!(q.pins.len() <= q.messages.len());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SegmentCursor, SegmentHeader};

    #[test]
    fn records_harness_runs_over_seeded_inputs() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        // A real envelope's archive among the inputs, so decoding is
        // reached past its validation too.
        let env = crate::envelope::Envelope {
            msg_id: 2,
            recipients: vec![crate::envelope::Recipient::new(b"r@x.test", 0, b"")],
            ..Default::default()
        };
        let mut archive = vec![0u8; crate::envelope::envelope_size_bound(&env)];
        let n = crate::envelope::encode_envelope(&env, &mut archive).expect("fits");
        for round in 0..300 {
            let len = (next() % 600) as usize;
            let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 4 == 0 && n < 256 {
                let mut framed = vec![0, n as u8];
                framed.extend_from_slice(&archive[..n]);
                framed.extend_from_slice(&data);
                data = framed;
            }
            spool_records(&data);
        }
    }

    #[test]
    fn harness_runs_on_valid_and_mangled_segments() {
        let mut buf = rkyv::util::AlignedVec::<16>::new();
        buf.resize(4096, 0);
        let h = SegmentHeader {
            shard: 0,
            segment_id: 1,
            segment_size: 4096,
            created_ms: 0,
            nonce: 3,
            first_seq: 0,
        };
        let mut cur = SegmentCursor::start(&mut buf, &h);
        cur.append_chunk(&mut buf, 1, b"hello").expect("fits");
        spool_scan(&buf);
        for i in (0..200).step_by(7) {
            let mut b = buf.to_vec();
            b[i] ^= 0xA5;
            spool_scan(&b);
            spool_scan(&b[..i]);
        }
    }
}
