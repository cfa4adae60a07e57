//! Recovery against crafted records (valid checksums around hostile
//! fields) and records cut short. Segment ids an envelope names cannot
//! make recovery pin a range of segments, re-syncing after damage does
//! work linear in the segment's size, no length field makes recovery
//! allocate, and a compaction copy whose chunks never reached the disk
//! leaves the whole older copy queued.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use rkyv::util::AlignedVec;
use spool_format::envelope::{ChunkRef, Envelope, Recipient};
use spool_format::{
    scan_segment, QueueIndex, RecordHeader, RecordKind, RecoveredSegment, SegmentCursor,
    SegmentHeader, SegmentScan, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
};

/// Counts the bytes this thread allocates, so a test can bound them.
struct Counting;

thread_local! {
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is passed to the system allocator unchanged; the
// count is a thread-local `Cell` of a const-initialised integer, which
// neither allocates nor needs a destructor.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATED.try_with(|a| a.set(a.get() + layout.size()));
        // SAFETY: the caller's layout contract is forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocated() -> usize {
    ALLOCATED.with(Cell::get)
}

const NONCE: u64 = 0x5eed;

fn header(id: u64, size: usize) -> SegmentHeader {
    SegmentHeader {
        shard: 0,
        segment_id: id,
        segment_size: size as u64,
        created_ms: 0,
        nonce: NONCE,
        first_seq: 0,
    }
}

fn blank(id: u64, size: usize) -> (AlignedVec<16>, SegmentCursor) {
    let mut buf = AlignedVec::<16>::new();
    buf.resize(size, 0);
    let cur = SegmentCursor::start(&mut buf, &header(id, size));
    (buf, cur)
}

/// Writes a record header at `pos` whose own checksum holds, claiming
/// `payload_len` bytes with checksum `payload_crc`.
fn forge(buf: &mut [u8], pos: usize, kind: RecordKind, seq: u64, len: u32, crc: u32) {
    let h = RecordHeader {
        kind,
        payload_len: len,
        payload_crc: crc,
        seq,
    };
    buf[pos..pos + RECORD_HEADER_LEN].copy_from_slice(&h.encode(NONCE));
}

/// Writes a whole valid record (header and payload) at `pos`.
fn forge_valid(buf: &mut [u8], pos: usize, kind: RecordKind, seq: u64, payload: &[u8]) {
    let start = pos + RECORD_HEADER_LEN;
    buf[start..start + payload.len()].copy_from_slice(payload);
    let crc = crc32c::crc32c(payload);
    forge(buf, pos, kind, seq, payload.len() as u32, crc);
}

/// Scans one segment and rebuilds the queue from it alone.
fn recover_one(id: u64, bytes: &[u8]) -> (SegmentScan, QueueIndex) {
    let scan = scan_segment(bytes, 0);
    let segs = [RecoveredSegment {
        id,
        bytes,
        scan: &scan,
    }];
    let q = QueueIndex::recover(&segs);
    (scan, q)
}

fn envelope(msg_id: u64, body: Vec<ChunkRef>) -> Envelope {
    Envelope {
        msg_id,
        reverse_path: b"s@x.test".to_vec(),
        recipients: vec![Recipient::new(b"r@y.test", 0, b"")],
        body,
        ..Default::default()
    }
}

#[test]
fn an_envelope_far_from_its_chunks_pins_one_segment() {
    // A chunk in segment 1, and an envelope a million segments later that
    // names it: the message spans every id between.
    let (mut first, mut cur) = blank(1, 4096);
    let chunk = cur.append_chunk(&mut first, 1, b"body").expect("fits");
    let far = 1_000_000;
    let (mut last, mut cur) = blank(far, 4096);
    cur.append_envelope(&mut last, 2, &envelope(2, vec![chunk]))
        .expect("fits");
    let scans = [scan_segment(&first, 0), scan_segment(&last, 1)];
    let segs = [
        RecoveredSegment {
            id: 1,
            bytes: &first,
            scan: &scans[0],
        },
        RecoveredSegment {
            id: far,
            bytes: &last,
            scan: &scans[1],
        },
    ];
    let q = QueueIndex::recover(&segs);
    assert_eq!(q.messages.len(), 1);
    assert_eq!(q.pins.len(), 1, "one entry, not one per segment id spanned");
    assert_eq!(q.pins.get(&1), Some(&1));
}

#[test]
fn envelopes_naming_extreme_segment_ids_recover_without_overflow() {
    for named in [0, u64::from(u32::MAX), u64::from(u32::MAX) + 1, u64::MAX] {
        let (mut buf, mut cur) = blank(7, 4096);
        let chunk = ChunkRef {
            segment: named,
            offset: u32::MAX,
            len: u32::MAX,
        };
        cur.append_envelope(&mut buf, 1, &envelope(1, vec![chunk]))
            .expect("fits");
        let (_, q) = recover_one(7, &buf);
        // Its body is nowhere: dropped, counted, nothing left pinned.
        assert!(q.messages.is_empty(), "segment {named}");
        assert_eq!(q.damaged_messages, 1, "segment {named}");
        assert!(q.pins.is_empty(), "segment {named}");
    }
}

#[test]
fn resyncing_after_damage_is_linear_in_the_segment_size() {
    // A damaged region full of record headers whose own checksums hold,
    // each claiming a payload that runs to just before the one valid
    // record at the end, with a payload checksum that does not: checking
    // each one in turn would checksum the region once per header.
    let size = 64 << 10;
    let (mut buf, _) = blank(1, size);
    let valid_at = size - 4096;
    let mut pos = SEGMENT_HEADER_LEN;
    let mut forged = 0;
    while pos + RECORD_HEADER_LEN <= valid_at {
        let len = (valid_at - pos - RECORD_HEADER_LEN) as u32;
        forge(
            &mut buf,
            pos,
            RecordKind::Chunk,
            1 + pos as u64,
            len,
            0xdead,
        );
        pos += RECORD_HEADER_LEN;
        forged += 1;
    }
    forge_valid(&mut buf, valid_at, RecordKind::Chunk, 1 << 40, b"kept");
    let scan = scan_segment(&buf, 0);
    assert!(forged > 1000);
    assert_eq!(scan.records.len(), 1, "the valid record after the damage");
    assert_eq!(scan.records[0].offset as usize, valid_at);
    assert!(scan.is_damaged());
    assert!(
        scan.work <= 4 * size as u64,
        "{} bytes of work for a {size}-byte segment",
        scan.work
    );
}

#[test]
fn scattered_broken_records_are_each_checksummed_once() {
    // Headers that hold over payloads that do not, one after another, with
    // valid records between: each is skipped past as a whole.
    let size = 256 << 10;
    let (mut buf, _) = blank(1, size);
    let mut pos = SEGMENT_HEADER_LEN;
    let mut seq = 1;
    let mut valid = 0;
    while pos + 2048 < size {
        forge(&mut buf, pos, RecordKind::Chunk, seq, 992, 1);
        pos += RECORD_HEADER_LEN + 992;
        seq += 1;
        forge_valid(&mut buf, pos, RecordKind::Chunk, seq, &[7; 480]);
        pos += RECORD_HEADER_LEN + 480;
        seq += 1;
        valid += 1;
    }
    let scan = scan_segment(&buf, 0);
    assert_eq!(scan.records.len(), valid);
    assert_eq!(scan.damage.len(), valid);
    assert!(scan.work <= 3 * size as u64, "{}", scan.work);
}

#[test]
fn hostile_lengths_in_valid_records_allocate_nothing_in_proportion() {
    // A status record claiming four billion recipients and a diagnostic
    // of four gigabytes, in a 64-byte payload with a valid checksum; an
    // envelope payload of noise; a header claiming four gigabytes.
    let size = 16 << 10;
    let (mut buf, _) = blank(1, size);
    let mut status = vec![0u8; 64];
    status[0..8].copy_from_slice(&1u64.to_le_bytes());
    status[8] = 1;
    status[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
    status[28..32].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut pos = SEGMENT_HEADER_LEN;
    forge_valid(&mut buf, pos, RecordKind::Status, 1, &status);
    pos += RECORD_HEADER_LEN + 64;
    let noise: Vec<u8> = (0..512u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    forge_valid(&mut buf, pos, RecordKind::Message, 2, &noise);
    pos += RECORD_HEADER_LEN + 512;
    forge(&mut buf, pos, RecordKind::Message, 3, u32::MAX, 0);
    let before = allocated();
    let (scan, q) = recover_one(1, &buf);
    let used = allocated() - before;
    assert_eq!(scan.records.len(), 2);
    assert_eq!(q.damaged_messages, 2);
    assert!(used < 64 << 10, "{used} bytes allocated");
}

#[test]
fn a_copy_whose_chunks_were_lost_leaves_the_whole_message_queued() {
    // A message, then its compaction copy (chunk, then envelope) whose
    // chunk never reached the disk: page write-back has no order, so the
    // copy's envelope can land without it.
    let (mut buf, mut cur) = blank(1, 8192);
    let first = cur.append_chunk(&mut buf, 1, b"the body").expect("fits");
    let mut env = envelope(5, vec![first]);
    env.recipients.push(Recipient::new(b"b@y.test", 0, b""));
    let original = cur.append_envelope(&mut buf, 5, &env).expect("fits");
    let copied = cur.append_chunk(&mut buf, 6, b"the body").expect("fits");
    env.body = vec![copied];
    env.flags = spool_format::envelope::flags::COPIED;
    cur.append_envelope(&mut buf, 7, &env).expect("fits");
    let lost = copied.offset as usize;
    buf[lost..lost + 48].fill(0);
    let (_, q) = recover_one(1, &buf);
    let m = q.messages.get(&5).expect("the message is still queued");
    assert_eq!(m.offset, original, "at its whole copy");
    assert_eq!(m.pending.count(), 2);
    assert_eq!(q.pins.get(&1), Some(&1));
}
