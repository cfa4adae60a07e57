//! Fuzzing harness for recovery: arbitrary bytes as a segment image must
//! scan and rebuild a queue without panicking, and everything the scan
//! keeps must really be inside the image. The cargo-fuzz target in
//! `fuzz/` is a thin shim over this, so it is also run by unit tests.

use crate::{scan_segment, QueueIndex, RecoveredSegment, RECORD_HEADER_LEN};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SegmentCursor, SegmentHeader};

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
