//! Torn and corrupted writes: for the last record, cut or corrupt the segment
//! at every byte offset; recovery keeps exactly the records before it. Damage
//! before the tail is reported and the records after it are kept.

use rkyv::util::AlignedVec;
use spool_format::{scan_segment, SegmentCursor, SegmentHeader, Tail};

fn segment_with(records: usize) -> (AlignedVec<16>, Vec<usize>, usize) {
    let mut buf = AlignedVec::<16>::new();
    buf.resize(8192, 0);
    let h = SegmentHeader {
        shard: 0,
        segment_id: 1,
        segment_size: 8192,
        created_ms: 0,
        nonce: 5,
        first_seq: 0,
    };
    let mut cur = SegmentCursor::start(&mut buf, &h);
    let mut starts = Vec::new();
    for i in 0..records {
        starts.push(cur.pos);
        let data: Vec<u8> = (0..(37 + i * 11)).map(|b| (b as u8) | 1).collect();
        cur.append_chunk(&mut buf, i as u64 + 1, &data)
            .expect("fits");
    }
    (buf, starts, cur.pos)
}

#[test]
fn truncating_the_last_record_at_every_offset_keeps_the_ones_before() {
    let (buf, starts, end) = segment_with(4);
    let last = starts[3];
    for cut in last..end {
        let mut b = buf.clone();
        b[cut..].fill(0);
        let s = scan_segment(&b, 0);
        let kept = if cut >= last + 32 + 37 + 33 { 4 } else { 3 };
        assert_eq!(s.records.len(), kept, "cut at {cut}");
        assert!(s.damage.is_empty());
        if kept == 3 {
            assert_eq!(s.end, last, "cut at {cut}");
            let expect_torn = cut > last;
            assert_eq!(
                matches!(s.tail, Tail::Torn { .. }),
                expect_torn,
                "cut at {cut}"
            );
        }
    }
}

#[test]
fn corrupting_any_byte_of_the_last_record_drops_only_it() {
    let (buf, starts, end) = segment_with(4);
    let last = starts[3];
    let content_end = last + 32 + 37 + 33;
    for at in last..content_end {
        let mut b = buf.clone();
        b[at] ^= 0x5a;
        let s = scan_segment(&b, 0);
        assert_eq!(s.records.len(), 3, "corrupt at {at}");
        assert_eq!(s.end, last);
        assert!(
            matches!(s.tail, Tail::Torn { dropped_bytes } if dropped_bytes as usize <= end - last)
        );
        assert!(s.damage.is_empty());
    }
}

#[test]
fn damage_before_the_tail_is_reported_and_later_records_kept() {
    let (buf, starts, _) = segment_with(5);
    for at in starts[1]..starts[2] {
        let mut b = buf.clone();
        b[at] ^= 0xff;
        let s = scan_segment(&b, 0);
        let offsets: Vec<usize> = s.records.iter().map(|r| r.offset as usize).collect();
        if offsets.len() == 5 {
            continue; // the flipped byte was alignment padding, which carries no data
        }
        assert_eq!(
            offsets,
            vec![starts[0], starts[2], starts[3], starts[4]],
            "corrupt at {at}"
        );
        assert_eq!(s.damage.len(), 1);
        assert_eq!(s.damage[0].offset as usize, starts[1]);
        assert_eq!(s.tail, Tail::Clean);
    }
}

#[test]
fn arbitrary_bytes_never_panic() {
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for len in [0usize, 1, 31, 63, 64, 65, 200, 4096] {
        for _ in 0..50 {
            let b: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let s = scan_segment(&b, 0);
            assert!(s.records.is_empty());
        }
    }
}
