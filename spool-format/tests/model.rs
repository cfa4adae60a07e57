//! The spool against a simple model: random appends, status records,
//! compaction copies, segment reclaiming and a crash at a random byte; what
//! recovery rebuilds must equal the model at the last record that survived.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use rkyv::util::AlignedVec;
use spool_format::envelope::{access_envelope, flags, Envelope, Recipient};
use spool_format::header::RecordKind;
use spool_format::{
    scan_segment, QueueIndex, RcptState, RecoveredSegment, SegmentCursor, SegmentHeader,
    StatusRecord, Tail,
};

const SEG: usize = 16 * 1024;

#[derive(Debug, Clone)]
enum Op {
    Message { rcpts: u8, body: usize },
    Status { pick: usize, mask: u8, state: u8 },
    Compact,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1u8..6, 0usize..5000).prop_map(|(rcpts, body)| Op::Message { rcpts, body }),
        (any::<usize>(), any::<u8>(), 0u8..3).prop_map(|(pick, mask, state)| Op::Status {
            pick,
            mask,
            state
        }),
        Just(Op::Compact),
    ]
}

/// The model: committed messages and their recipients' states.
type Model = BTreeMap<u64, Vec<RcptState>>;

struct Spool {
    segments: BTreeMap<u64, AlignedVec<16>>,
    cursor: SegmentCursor,
    seq: u64,
    live: QueueIndex,
    /// Everything before this position is durable: a crash cannot cut it.
    durable: (u64, usize),
    last_record: usize,
}

impl Spool {
    fn new() -> Spool {
        let mut s = Spool {
            segments: BTreeMap::new(),
            cursor: SegmentCursor {
                segment_id: 0,
                pos: 0,
                size: 0,
                nonce: 0,
            },
            seq: 0,
            live: QueueIndex::default(),
            durable: (0, 0),
            last_record: 0,
        };
        s.roll();
        s
    }

    fn roll(&mut self) {
        let id = self.cursor.segment_id + 1;
        let mut buf = AlignedVec::<16>::new();
        buf.resize(SEG, 0);
        let h = SegmentHeader {
            shard: 0,
            segment_id: id,
            segment_size: SEG as u64,
            created_ms: 1,
            nonce: id * 7919,
            first_seq: self.seq,
        };
        self.cursor = SegmentCursor::start(&mut buf, &h);
        self.segments.insert(id, buf);
    }

    /// Where the last record's checksummed bytes end (its padding is not
    /// covered, so a crash that only touches padding loses nothing).
    fn content_end(&self) -> (u64, usize) {
        let seg = &self.segments[&self.cursor.segment_id];
        match spool_format::RecordHeader::decode(&seg[self.last_record..], self.cursor.nonce) {
            Some(h) => (
                self.cursor.segment_id,
                self.last_record + 32 + h.payload_len as usize,
            ),
            None => (self.cursor.segment_id, self.cursor.pos),
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn buf(&mut self) -> &mut [u8] {
        self.segments
            .get_mut(&self.cursor.segment_id)
            .expect("current segment")
    }

    /// Appends with a roll when the record does not fit.
    fn append<T>(
        &mut self,
        mut f: impl FnMut(&mut SegmentCursor, &mut [u8], u64) -> Option<T>,
    ) -> T {
        let seq = self.next_seq();
        for _ in 0..2 {
            let mut cur = self.cursor;
            self.last_record = cur.pos;
            let r = f(&mut cur, self.buf(), seq);
            self.cursor = cur;
            if let Some(r) = r {
                return r;
            }
            self.roll();
        }
        panic!("record larger than a segment");
    }

    fn write_message(&mut self, env: &mut Envelope, body: &[u8]) {
        env.body.clear();
        for piece in body.chunks(1500) {
            let c = self.append(|cur, buf, seq| cur.append_chunk(buf, seq, piece));
            env.body.push(c);
        }
        let env2 = env.clone();
        let off = self.append(|cur, buf, seq| cur.append_envelope(buf, seq, &env2));
        let seg = self.cursor.segment_id;
        let bytes = &self.segments[&seg][off as usize + 32..];
        let a = access_envelope(
            &bytes[..spool_format::envelope::envelope_size_bound(env).min(bytes.len())],
        )
        .or_else(|| {
            let h = spool_format::RecordHeader::decode(
                &self.segments[&seg][off as usize..],
                self.cursor.nonce,
            )
            .expect("header");
            access_envelope(&bytes[..h.payload_len as usize])
        })
        .expect("just written");
        self.live.insert_message(seg, off, a);
    }

    fn status(&mut self, msg_id: u64, state: RcptState, rcpts: &[u32]) {
        self.append(|cur, buf, seq| {
            cur.append_status(buf, seq, msg_id, state, 7, rcpts, b"250 ok")
        });
        let mut p = vec![0u8; StatusRecord::encoded_len(rcpts.len(), 6)];
        StatusRecord::encode_into(&mut p, msg_id, state, 7, rcpts, b"250 ok");
        self.live
            .apply_status(&StatusRecord::decode(&p).expect("valid"));
    }

    /// Deletes old segments that hold nothing live, oldest first. As in the
    /// daemon, the copies that unpinned them are made durable first.
    fn reclaim(&mut self) {
        self.durable = (self.cursor.segment_id, self.cursor.pos);
        while let Some((&oldest, _)) = self.segments.iter().next() {
            if oldest == self.cursor.segment_id || self.live.pins.contains_key(&oldest) {
                break;
            }
            self.segments.remove(&oldest);
        }
    }
}

fn recover(segments: &BTreeMap<u64, AlignedVec<16>>) -> QueueIndex {
    let mut last = 0;
    let scans: Vec<_> = segments
        .iter()
        .map(|(&id, b)| {
            let s = scan_segment(b, last);
            last = s.last_seq;
            (id, s)
        })
        .collect();
    let segs: Vec<_> = scans
        .iter()
        .map(|(id, s)| RecoveredSegment {
            id: *id,
            bytes: &segments[id],
            scan: s,
        })
        .collect();
    QueueIndex::recover(&segs)
}

fn unfinished(model: &Model) -> BTreeMap<u64, Vec<u32>> {
    model
        .iter()
        .map(|(id, r)| {
            (
                *id,
                (0..r.len() as u32)
                    .filter(|&i| !r[i as usize].is_finished())
                    .collect::<Vec<_>>(),
            )
        })
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

fn queue_of(q: &QueueIndex) -> BTreeMap<u64, Vec<u32>> {
    q.messages
        .iter()
        .map(|(id, m)| (*id, m.pending.iter().collect()))
        .collect()
}

fn run_op(sp: &mut Spool, model: &mut Model, ids: &mut Vec<u64>, op: &Op) {
    match *op {
        Op::Message { rcpts, body } => {
            let id = sp.seq + 1;
            let mut env = Envelope {
                msg_id: id,
                reverse_path: b"s@x.test".to_vec(),
                body_len: body as u64,
                ..Default::default()
            };
            env.recipients = (0..rcpts)
                .map(|i| Recipient::new(format!("r{i}@y.test").as_bytes(), 0, b""))
                .collect();
            let bytes: Vec<u8> = (0..body).map(|i| (i % 251) as u8).collect();
            sp.write_message(&mut env, &bytes);
            model.insert(id, vec![RcptState::Pending; rcpts as usize]);
            ids.push(id);
        }
        Op::Status { pick, mask, state } => {
            let live: Vec<u64> = unfinished(model).into_keys().collect();
            if live.is_empty() {
                return;
            }
            let id = live[pick % live.len()];
            let n = model[&id].len() as u32;
            let rcpts: Vec<u32> = (0..n).filter(|i| mask & (1 << i) != 0).collect();
            let st = match state {
                0 => RcptState::Delivered,
                1 => RcptState::Failed,
                _ => RcptState::Deferred {
                    until_ms: 1000 + pick as u64 % 99,
                    attempts: 1,
                },
            };
            sp.status(id, st, &rcpts);
            for r in rcpts {
                let s = &mut model.get_mut(&id).expect("live")[r as usize];
                *s = s.merge(st);
            }
        }
        Op::Compact => {
            // Copy forward the live message that pins the oldest segment.
            let Some(m) = sp
                .live
                .messages
                .iter()
                .min_by_key(|(_, m)| (m.first_segment, m.segment))
                .map(|(id, m)| (*id, m.clone()))
            else {
                return;
            };
            let (id, qm) = m;
            let seg = &sp.segments[&qm.segment_id()];
            let h = spool_format::RecordHeader::decode(
                &seg[qm.offset as usize..],
                SegmentHeader::decode(seg).expect("seg header").nonce,
            )
            .expect("live header");
            let a = access_envelope(&seg[qm.offset as usize + 32..][..h.payload_len as usize])
                .expect("live env");
            let mut env: Envelope =
                rkyv::deserialize::<Envelope, rkyv::rancor::Error>(a).expect("deser");
            let mut body = Vec::new();
            for c in &env.body {
                let s = &sp.segments[&c.segment];
                body.extend_from_slice(&s[c.offset as usize + 32..][..c.len as usize]);
            }
            env.flags |= flags::COPIED;
            for (i, r) in env.recipients.iter_mut().enumerate() {
                r.set_state(model[&id][i]);
            }
            sp.write_message(&mut env, &body);
            sp.reclaim();
        }
    }
    let _ = RecordKind::Chunk;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn recovery_equals_model_after_crash(ops in prop::collection::vec(op(), 1..60), cut in any::<u64>(), garbage in any::<bool>()) {
        let mut sp = Spool::new();
        let mut model = Model::new();
        let mut ids = Vec::new();
        // Snapshot of the model after each op, with the write position it ended at.
        let mut snaps: Vec<((u64, usize), Model)> = vec![((sp.cursor.segment_id, sp.cursor.pos), model.clone())];
        for op in &ops {
            run_op(&mut sp, &mut model, &mut ids, op);
            snaps.push((sp.content_end(), model.clone()));
            prop_assert_eq!(queue_of(&sp.live), unfinished(&model));
        }
        // Clean restart: recovery rebuilds exactly the live queue.
        prop_assert_eq!(queue_of(&recover(&sp.segments)), unfinished(&model));

        // Crash: cut the last segment at a random byte after its header.
        let last = sp.cursor.segment_id;
        let end = sp.cursor.pos;
        let floor = if sp.durable.0 == last { sp.durable.1.max(64) } else { 64 };
        let at = floor + (cut as usize % (end - floor + 1));
        let buf = sp.segments.get_mut(&last).expect("last");
        // Bytes the crash left as they were (padding zeros, say) do not count as cut.
        let mut intact = at;
        for (i, b) in buf[at..end].iter_mut().enumerate() {
            let new = if garbage { (i as u8).wrapping_mul(31).wrapping_add(7) } else { 0 };
            if *b == new && intact == at + i {
                intact += 1;
            }
            *b = new;
        }
        let expected = snaps.iter().rev().find(|((s, p), _)| *s < last || (*s == last && *p <= intact)).map(|(_, m)| m.clone()).unwrap_or_default();
        let rec = recover(&sp.segments);
        prop_assert_eq!(queue_of(&rec), unfinished(&expected));
        prop_assert_eq!(rec.damaged_messages, 0);
    }
}

#[test]
fn queue_index_bytes_per_message() {
    // 10,000 single-recipient messages: measure the index's heap per message.
    let mut sp = Spool::new();
    let mut model = Model::new();
    let mut ids = Vec::new();
    for _ in 0..2000 {
        run_op(
            &mut sp,
            &mut model,
            &mut ids,
            &Op::Message { rcpts: 1, body: 10 },
        );
    }
    let q = &sp.live;
    let per = (q.messages.capacity()
        * (std::mem::size_of::<(u64, spool_format::QueuedMessage)>() + 1))
        / q.messages.len();
    println!("index bytes per queued message: {per}");
    assert!(per <= 128, "{per} bytes per message");
}

#[test]
fn tail_detection_reports_garbage() {
    let mut sp = Spool::new();
    let mut model = Model::new();
    let mut ids = Vec::new();
    run_op(
        &mut sp,
        &mut model,
        &mut ids,
        &Op::Message {
            rcpts: 2,
            body: 100,
        },
    );
    let id = sp.cursor.segment_id;
    let pos = sp.cursor.pos;
    let seg = sp.segments.get_mut(&id).expect("seg");
    seg[pos + 3] = 0x55;
    let s = scan_segment(seg, 0);
    assert_eq!(s.end, pos);
    assert_eq!(s.tail, Tail::Torn { dropped_bytes: 4 });
    let _: HashMap<u8, u8> = HashMap::new();
}
