//! Rebuilding the queue from scanned segments, and keeping it current as
//! records are appended. The same code runs at start-up and in the daemon, so
//! what recovery rebuilds is by construction what the daemon had.
//!
//! Memory holds only this index: a few dozen bytes per queued message. The
//! envelopes and bodies stay in the segments.

use std::collections::{BTreeMap, HashMap};

use crate::envelope::{access_envelope, ArchivedEnvelope};
use crate::header::RecordKind;
use crate::scan::SegmentScan;
use crate::status::{RcptState, StatusRecord};

/// Which recipients of a message still need delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingSet {
    /// Up to 64 recipients: one bit each.
    Inline(u64),
    /// More recipients: one bit each, on the heap.
    Heap(Box<[u64]>),
}

impl PendingSet {
    fn all(n: u32) -> PendingSet {
        if n <= 64 {
            PendingSet::Inline(if n == 64 { u64::MAX } else { (1u64 << n) - 1 })
        } else {
            let words = n.div_ceil(64) as usize;
            let mut v = vec![u64::MAX; words].into_boxed_slice();
            if n % 64 != 0 {
                v[words - 1] = (1u64 << (n % 64)) - 1;
            }
            PendingSet::Heap(v)
        }
    }

    fn words_mut(&mut self) -> &mut [u64] {
        match self {
            PendingSet::Inline(w) => std::slice::from_mut(w),
            PendingSet::Heap(v) => v,
        }
    }

    fn words(&self) -> &[u64] {
        match self {
            PendingSet::Inline(w) => std::slice::from_ref(w),
            PendingSet::Heap(v) => v,
        }
    }

    pub fn contains(&self, i: u32) -> bool {
        let w = self.words();
        w.get(i as usize / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    pub fn remove(&mut self, i: u32) {
        if let Some(w) = self.words_mut().get_mut(i as usize / 64) {
            *w &= !(1 << (i % 64));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.words().iter().all(|&w| w == 0)
    }

    pub fn count(&self) -> u32 {
        self.words().iter().map(|w| w.count_ones()).sum()
    }

    /// Indexes of the pending recipients, in order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.words().iter().enumerate().flat_map(|(wi, &w)| {
            (0..64u32)
                .filter(move |b| w & (1 << b) != 0)
                .map(move |b| wi as u32 * 64 + b)
        })
    }
}

/// The in-memory index entry of one queued message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    /// Segment and offset of the (latest copy of the) envelope record.
    pub segment: u64,
    pub offset: u32,
    pub rcpt_count: u32,
    /// Oldest segment holding any part of the message (its first chunk).
    pub first_segment: u64,
    /// Earliest time to try again (unix ms); 0 means now.
    pub next_attempt_ms: u64,
    pub attempts: u32,
    pub pending: PendingSet,
}

/// Outcome of applying a status record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The message is not (or no longer) in the queue.
    Unknown,
    /// Some recipients remain.
    StillQueued,
    /// Every recipient is finished; the message left the queue.
    Finished { first_segment: u64, segment: u64 },
}

/// The queue of unfinished messages of one shard.
#[derive(Debug, Default)]
pub struct QueueIndex {
    pub messages: HashMap<u64, QueuedMessage>,
    /// Segment id → number of queued messages with some part in it. A
    /// segment with no entry here holds nothing live.
    pub pins: BTreeMap<u64, u32>,
    /// Messages whose envelope or body could not be read back.
    pub damaged_messages: u64,
    /// Highest record sequence number seen.
    pub max_seq: u64,
}

/// A segment as seen by recovery: its id, bytes and scan.
pub struct RecoveredSegment<'a> {
    pub id: u64,
    pub bytes: &'a [u8],
    pub scan: &'a SegmentScan,
}

impl QueueIndex {
    /// Rebuilds the queue from segments given in ascending id order.
    ///
    /// Bodies are checked after the whole log is applied: an old copy of a
    /// message may point at chunks in a segment already reclaimed, and only
    /// the copy that stays queued has to be whole.
    pub fn recover(segments: &[RecoveredSegment<'_>]) -> QueueIndex {
        let mut q = QueueIndex::default();
        for seg in segments {
            q.max_seq = q.max_seq.max(seg.scan.last_seq);
            for rec in &seg.scan.records {
                let payload = rec.payload(seg.bytes);
                let ok = match rec.header.kind {
                    RecordKind::Chunk => true,
                    RecordKind::Message => access_envelope(payload)
                        .map(|env| q.insert_message(seg.id, rec.offset, env))
                        .is_some(),
                    RecordKind::Status => StatusRecord::decode(payload)
                        .map(|st| q.apply_status(&st))
                        .is_some(),
                };
                if !ok {
                    q.damaged_messages += 1;
                }
            }
        }
        q.drop_messages_with_missing_body(segments);
        q
    }

    fn drop_messages_with_missing_body(&mut self, segments: &[RecoveredSegment<'_>]) {
        let find = |id: u64| segments.iter().find(|g| g.id == id);
        let chunk_ok = |s: u64, off: u32, len: u32| {
            find(s)
                .and_then(|g| g.scan.record_at(off))
                .is_some_and(|r| r.header.kind == RecordKind::Chunk && r.header.payload_len == len)
        };
        let broken: Vec<u64> = self
            .messages
            .iter()
            .filter(|(_, m)| {
                let env = find(m.segment)
                    .and_then(|g| g.scan.record_at(m.offset).map(|r| r.payload(g.bytes)))
                    .and_then(access_envelope);
                !env.is_some_and(|env| {
                    env.body.iter().all(|c| {
                        chunk_ok(
                            c.segment.to_native(),
                            c.offset.to_native(),
                            c.len.to_native(),
                        )
                    })
                })
            })
            .map(|(id, _)| *id)
            .collect();
        for id in broken {
            if let Some(m) = self.messages.remove(&id) {
                self.pin(m.first_segment, m.segment, -1);
                self.damaged_messages += 1;
            }
        }
    }

    fn pin(&mut self, first: u64, last: u64, delta: i64) {
        for s in first..=last {
            let e = self.pins.entry(s).or_insert(0);
            *e = (i64::from(*e) + delta).max(0) as u32;
            if *e == 0 {
                self.pins.remove(&s);
            }
        }
    }

    /// Adds a committed message (or a newer copy of a queued one).
    pub fn insert_message(&mut self, segment: u64, offset: u32, env: &ArchivedEnvelope) {
        let n = env.recipients.len() as u32;
        let mut pending = PendingSet::all(n);
        let (mut next_ms, mut attempts) = (0u64, 0u32);
        for (i, r) in env.recipients.iter().enumerate() {
            match r.rcpt_state() {
                s if s.is_finished() => pending.remove(i as u32),
                RcptState::Deferred {
                    until_ms,
                    attempts: a,
                } => {
                    next_ms = next_ms.max(until_ms);
                    attempts = attempts.max(a);
                }
                _ => {}
            }
        }
        let first_segment = env
            .body
            .iter()
            .map(|c| c.segment.to_native())
            .min()
            .unwrap_or(segment)
            .min(segment);
        let msg_id = env.msg_id.to_native();
        if let Some(old) = self.messages.remove(&msg_id) {
            // A copy made by compaction: states already finished stay finished.
            self.pin(old.first_segment, old.segment, -1);
            for i in 0..n {
                if !old.pending.contains(i) {
                    pending.remove(i);
                }
            }
            next_ms = next_ms.max(old.next_attempt_ms);
            attempts = attempts.max(old.attempts);
        }
        if pending.is_empty() {
            return;
        }
        self.pin(first_segment, segment, 1);
        self.messages.insert(
            msg_id,
            QueuedMessage {
                segment,
                offset,
                rcpt_count: n,
                first_segment,
                next_attempt_ms: next_ms,
                attempts,
                pending,
            },
        );
    }

    /// Adds a compaction copy to the live queue, unless the message finished
    /// while it was being copied (finished is final). Recovery needs no such
    /// check: the writer never appends a copy after a status that finished
    /// the message, so in the log every copy precedes its finishing status.
    pub fn insert_copy(&mut self, segment: u64, offset: u32, env: &ArchivedEnvelope) -> bool {
        if !self.messages.contains_key(&env.msg_id.to_native()) {
            return false;
        }
        self.insert_message(segment, offset, env);
        true
    }

    /// Applies a status record to the queue.
    pub fn apply_status(&mut self, st: &StatusRecord<'_>) -> Applied {
        let Some(m) = self.messages.get_mut(&st.msg_id) else {
            return Applied::Unknown;
        };
        match st.state {
            RcptState::Delivered | RcptState::Failed => {
                for r in st.rcpts.iter() {
                    m.pending.remove(r);
                }
            }
            RcptState::Deferred { until_ms, attempts } => {
                m.next_attempt_ms = until_ms;
                m.attempts = m.attempts.max(attempts);
            }
            RcptState::Pending => {}
        }
        if !m.pending.is_empty() {
            return Applied::StillQueued;
        }
        let (first_segment, segment) = (m.first_segment, m.segment);
        self.messages.remove(&st.msg_id);
        self.pin(first_segment, segment, -1);
        Applied::Finished {
            first_segment,
            segment,
        }
    }

    /// Recipients still pending, over all queued messages.
    pub fn pending_recipients(&self) -> u64 {
        self.messages
            .values()
            .map(|m| u64::from(m.pending.count()))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_set_sizes() {
        for n in [1u32, 5, 63, 64, 65, 130, 1000] {
            let mut p = PendingSet::all(n);
            assert_eq!(p.count(), n);
            assert!(p.contains(n - 1) && !p.contains(n));
            for i in 0..n {
                p.remove(i);
            }
            assert!(p.is_empty());
        }
    }

    #[test]
    fn queued_message_is_small() {
        // Memory per queued message is a stated target (<= 128 bytes with
        // the hash table's own overhead).
        assert!(std::mem::size_of::<QueuedMessage>() <= 64);
    }
}
