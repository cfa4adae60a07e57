//! Rebuilding the queue from scanned segments, and keeping it current as
//! records are appended. The same code runs at start-up and in the daemon, so
//! what recovery rebuilds is by construction what the daemon had.
//!
//! Memory holds only this index: a few dozen bytes per queued message. The
//! envelopes and bodies stay in the segments.

use std::collections::{BTreeMap, HashMap};

use crate::envelope::{access_envelope, ArchivedEnvelope, ChunkRef, EnvelopeView};
use crate::header::RecordKind;
use crate::scan::SegmentScan;
use crate::status::{RcptState, StatusRecord};

/// Which recipients of a message still need delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingSet {
    /// Up to 64 recipients: one bit each.
    Inline(u64),
    /// More recipients: one bit each, on the heap (a thin pointer, so the
    /// set stays 16 bytes).
    #[allow(clippy::box_collection)]
    Heap(Box<Vec<u64>>),
}

impl PendingSet {
    fn all(n: u32) -> PendingSet {
        if n <= 64 {
            PendingSet::Inline(if n == 64 { u64::MAX } else { (1u64 << n) - 1 })
        } else {
            let words = n.div_ceil(64) as usize;
            let mut v = vec![u64::MAX; words];
            if n % 64 != 0 {
                v[words - 1] = (1u64 << (n % 64)) - 1;
            }
            PendingSet::Heap(Box::new(v))
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

/// The in-memory index entry of one queued message: 48 bytes, so that with
/// its key and the hash table's slack a queued message costs under 128.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    /// Segment and offset of the (latest copy of the) envelope record.
    /// Segment ids are stored in 32 bits: a shard creates one segment at a
    /// time, numbered from 1.
    pub segment: u32,
    pub offset: u32,
    pub rcpt_count: u32,
    /// Oldest segment holding any part of the message (its first chunk).
    pub first_segment: u32,
    /// Earliest time to try again (unix ms); 0 means now.
    pub next_attempt_ms: u64,
    pub attempts: u32,
    /// Every chunk the envelope names was found (recovery only).
    body_ok: bool,
    pub pending: PendingSet,
}

const _: () = assert!(std::mem::size_of::<QueuedMessage>() <= 48);

impl QueuedMessage {
    /// The envelope's segment id.
    pub fn segment_id(&self) -> u64 {
        u64::from(self.segment)
    }

    /// The oldest segment id the message pins.
    pub fn first_segment_id(&self) -> u64 {
        u64::from(self.first_segment)
    }
}

fn seg32(id: u64) -> u32 {
    u32::try_from(id).unwrap_or(u32::MAX)
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
    /// Segment id → number of queued messages whose oldest part is in it.
    /// Segments are reclaimed oldest first and never past a pinned one, so
    /// the oldest part is the only one to pin: one entry per message,
    /// whatever segment ids an envelope names.
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
    /// Each envelope's chunks are checked as the scan meets it (in log
    /// order, so the lookups stay cache-friendly), but a message is dropped
    /// only if its final copy lacks a body: an old copy may point at chunks
    /// in a segment already reclaimed. A copy without its body never
    /// replaces one with it.
    pub fn recover(segments: &[RecoveredSegment<'_>]) -> QueueIndex {
        let mut q = QueueIndex::default();
        for seg in segments {
            q.max_seq = q.max_seq.max(seg.scan.last_seq);
            for rec in &seg.scan.records {
                let payload = rec.payload(seg.bytes);
                let ok = match rec.header.kind {
                    RecordKind::Chunk => true,
                    RecordKind::Message => match access_envelope(payload) {
                        Some(env) => {
                            let body_ok = body_present(segments, env);
                            q.insert(seg.id, rec.offset, env, body_ok);
                            true
                        }
                        None => false,
                    },
                    RecordKind::Status => StatusRecord::decode(payload)
                        .map(|st| q.apply_status(&st))
                        .is_some(),
                };
                if !ok {
                    q.damaged_messages += 1;
                }
            }
        }
        q.drop_messages_with_missing_body();
        q
    }

    fn drop_messages_with_missing_body(&mut self) {
        let broken: Vec<u64> = self
            .messages
            .iter()
            .filter(|(_, m)| !m.body_ok)
            .map(|(id, _)| *id)
            .collect();
        for id in broken {
            if let Some(m) = self.messages.remove(&id) {
                self.pin(m.first_segment_id(), -1);
                self.damaged_messages += 1;
            }
        }
    }

    fn pin(&mut self, first: u64, delta: i64) {
        let e = self.pins.entry(first).or_insert(0);
        *e = (i64::from(*e) + delta).max(0) as u32;
        if *e == 0 {
            self.pins.remove(&first);
        }
    }

    /// Adds a committed message (or a newer copy of a queued one).
    pub fn insert_message(&mut self, segment: u64, offset: u32, env: &impl EnvelopeView) {
        self.insert(segment, offset, env, true);
    }

    fn insert(&mut self, segment: u64, offset: u32, env: &impl EnvelopeView, body_ok: bool) {
        // A copy whose chunks did not all reach the disk (its envelope's
        // page was written back before theirs, and the power went before
        // the sync) never replaces a whole one: it was not durable, and it
        // carries no state the log does not already hold before it.
        if !body_ok && self.messages.get(&env.msg_id()).is_some_and(|m| m.body_ok) {
            return;
        }
        let n = env.recipient_count() as u32;
        let mut pending = PendingSet::all(n);
        let (mut next_ms, mut attempts) = (0u64, 0u32);
        for (i, state) in env.recipient_states().enumerate() {
            match state {
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
        // Pinned as stored, so that unpinning finds the same entry.
        let first = env.chunk_segments().min().unwrap_or(segment).min(segment);
        let first_segment = u64::from(seg32(first));
        let msg_id = env.msg_id();
        if let Some(old) = self.messages.remove(&msg_id) {
            // A copy made by compaction: states already finished stay finished.
            self.pin(old.first_segment_id(), -1);
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
        self.pin(first_segment, 1);
        self.messages.insert(
            msg_id,
            QueuedMessage {
                segment: seg32(segment),
                offset,
                rcpt_count: n,
                first_segment: seg32(first_segment),
                next_attempt_ms: next_ms,
                attempts,
                body_ok,
                pending,
            },
        );
    }

    /// Adds a compaction copy to the live queue, unless the message finished
    /// while it was being copied (finished is final). Recovery needs no such
    /// check: the writer never appends a copy after a status that finished
    /// the message, so in the log every copy precedes its finishing status.
    pub fn insert_copy(&mut self, segment: u64, offset: u32, env: &impl EnvelopeView) -> bool {
        if !self.messages.contains_key(&env.msg_id()) {
            return false;
        }
        self.insert_message(segment, offset, env);
        true
    }

    /// Applies a status record to the queue.
    pub fn apply_status(&mut self, st: &StatusRecord<'_>) -> Applied {
        self.apply(st.msg_id, st.state, st.rcpts.iter())
    }

    /// Applies an outcome for some recipients of a message: what a status
    /// record says, given directly by the writer that just made it durable.
    pub fn apply(
        &mut self,
        msg_id: u64,
        state: RcptState,
        rcpts: impl IntoIterator<Item = u32>,
    ) -> Applied {
        let Some(m) = self.messages.get_mut(&msg_id) else {
            return Applied::Unknown;
        };
        match state {
            RcptState::Delivered | RcptState::Failed => {
                for r in rcpts {
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
        let (first_segment, segment) = (m.first_segment_id(), m.segment_id());
        self.messages.remove(&msg_id);
        self.pin(first_segment, -1);
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

/// True when every chunk the envelope names is a valid chunk record.
fn body_present(segments: &[RecoveredSegment<'_>], env: &ArchivedEnvelope) -> bool {
    env.body.iter().map(ChunkRef::from).all(|c| {
        segments
            .iter()
            .rev()
            .find(|g| g.id == c.segment)
            .and_then(|g| g.scan.record_at(c.offset))
            .is_some_and(|r| r.header.kind == RecordKind::Chunk && r.header.payload_len == c.len)
    })
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
        assert!(std::mem::size_of::<QueuedMessage>() <= 48);
    }
}
