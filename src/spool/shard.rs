//! A shard's spool: appends into the active mapped segment, durability by
//! group commit, the queue index, and reclaiming segments.
//!
//! Bodies are written in place: the receive path hands a closure that fills
//! the record's payload area of the mapping directly (one copy, unstuffing on
//! the way). A body that is already whole in memory (`append_chunk`) goes to
//! the file with `pwritev` when it is large, which fills the same page cache
//! without a page fault per page. Only the envelope record commits a
//! message, and it resolves only once durable.
//! Must never: acknowledge a message before the sync that covers its
//! envelope, or take a lock on the append path.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::rc::Rc;

use spool_format::envelope::{access_envelope, ArchivedEnvelope, ChunkRef, Envelope};
use spool_format::recover::Applied;
use spool_format::{QueueIndex, RcptState, SegmentCursor, SegmentHeader};

use super::commit::{GroupCommit, Ticket};
use super::io::{StorageIo, SyncFiles};
use super::segment::Segment;
use super::SpoolError;

/// Chunks at least this large are written with `pwritev` rather than
/// copied through the mapping: past a few pages, faulting in (and zeroing)
/// each preallocated page costs more than the system call.
const WRITE_THROUGH_MIN: usize = 8192;

/// What a shard's spool is told at start-up.
#[derive(Debug, Clone)]
pub struct SpoolOptions {
    /// The shard's own directory (`<spool>/shard-N`).
    pub dir: PathBuf,
    pub shard: u32,
    pub segment_size: u64,
}

pub(crate) struct State {
    pub segments: BTreeMap<u64, Segment>,
    pub cursor: SegmentCursor,
    pub seq: u64,
    pub index: QueueIndex,
    /// Segments written since the last sync started.
    pub dirty: Vec<u64>,
    /// The space written ahead of the cursor (see `ahead`).
    pub ahead: super::ahead::Ahead,
    pub now_ms: u64,
    /// Segment id → messages being written that started in it. Reclaiming
    /// stops there: their chunks are not in the index until they commit.
    pub inflight: BTreeMap<u64, u32>,
    /// Messages with a status record appended but not yet applied to the
    /// index, or being delivered; compaction must not copy them (see
    /// `QueueIndex::insert_copy`).
    pub unapplied_status: HashMap<u64, u32>,
    /// The disk under the spool (see `io`).
    pub io: Rc<dyn StorageIo>,
}

pub(crate) struct Inner {
    pub opts: SpoolOptions,
    pub commit: GroupCommit,
    pub state: RefCell<State>,
    /// The sync task, awaited by [`ShardSpool::shutdown`].
    sync_task: RefCell<Option<glommio::task::JoinHandle<()>>>,
    /// Where each sync's time goes, once the shard says (metrics).
    sync_timer: RefCell<Option<(crate::clock::Clock, metrics::Histogram)>>,
}

/// Keeps the segments a message is being written into from being reclaimed
/// before its envelope commits. Take one before the first chunk.
pub struct WritePin {
    inner: Rc<Inner>,
    segment: u64,
}

impl Drop for WritePin {
    fn drop(&mut self) {
        let mut st = self.inner.state.borrow_mut();
        if let Some(n) = st.inflight.get_mut(&self.segment) {
            *n -= 1;
            if *n == 0 {
                st.inflight.remove(&self.segment);
            }
        }
    }
}

/// Handle to a shard's spool; cheap to clone, used only on its own shard.
#[derive(Clone)]
pub struct ShardSpool {
    pub(crate) inner: Rc<Inner>,
}

impl State {
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn mark_dirty(&mut self) {
        let id = self.cursor.segment_id;
        if self.dirty.last() != Some(&id) {
            self.dirty.push(id);
        }
    }

    /// Dirties the pages just ahead of the cursor, so that the coming
    /// sync converts their preallocated blocks (see `ahead`).
    fn write_ahead(&mut self) {
        let cur = self.cursor;
        let Some((from, to)) = self.ahead.plan(cur.segment_id, cur.pos, cur.size) else {
            return;
        };
        let Some(seg) = self.segments.get_mut(&cur.segment_id) else {
            return;
        };
        seg.dirty_pages(from, to);
        self.mark_dirty();
    }

    fn roll(&mut self, opts: &SpoolOptions) -> Result<(), SpoolError> {
        let header = SegmentHeader {
            shard: opts.shard,
            segment_id: super::next_segment_id(self.cursor.segment_id)?,
            segment_size: opts.segment_size,
            created_ms: self.now_ms,
            nonce: super::segment::random_nonce(),
            first_seq: self.seq,
        };
        let seg = Segment::create(&*self.io, &opts.dir, &header)?;
        self.cursor =
            SegmentCursor::resume(&header, spool_format::SEGMENT_HEADER_LEN, seg.map.len());
        self.segments.insert(seg.id, seg);
        Ok(())
    }

    /// Runs an append against the active segment, rolling once if it is full.
    fn append<T>(
        &mut self,
        opts: &SpoolOptions,
        mut f: impl FnMut(&mut SegmentCursor, &mut [u8]) -> Option<T>,
    ) -> Result<T, SpoolError> {
        for attempt in 0..2 {
            let id = self.cursor.segment_id;
            let mut cur = self.cursor;
            let seg = self.segments.get_mut(&id).ok_or(SpoolError::TooLarge)?;
            if let Some(v) = f(&mut cur, &mut seg.map[..]) {
                self.cursor = cur;
                self.mark_dirty();
                return Ok(v);
            }
            if attempt == 0 {
                self.roll(opts)?;
            }
        }
        Err(SpoolError::TooLarge)
    }

    /// The archived envelope of a queued message, read in place.
    pub fn envelope(&self, segment: u64, offset: u32) -> Option<&ArchivedEnvelope> {
        let seg = self.segments.get(&segment)?;
        let h = spool_format::RecordHeader::decode(seg.map.get(offset as usize..)?, seg.nonce)?;
        let start = offset as usize + spool_format::RECORD_HEADER_LEN;
        access_envelope(seg.map.get(start..start + h.payload_len as usize)?)
    }

    /// The bytes of a body chunk, read in place.
    pub fn chunk(&self, c: &ChunkRef) -> Option<&[u8]> {
        let seg = self.segments.get(&c.segment)?;
        let start = c.offset as usize + spool_format::RECORD_HEADER_LEN;
        seg.map.get(start..start + c.len as usize)
    }
}

impl ShardSpool {
    pub(crate) fn from_state(opts: SpoolOptions, state: State) -> ShardSpool {
        let spool = ShardSpool {
            inner: Rc::new(Inner {
                opts,
                commit: GroupCommit::default(),
                state: RefCell::new(state),
                sync_task: RefCell::new(None),
                sync_timer: RefCell::new(None),
            }),
        };
        let inner = spool.inner.clone();
        let task = glommio::spawn_local(sync_loop(inner)).detach();
        *spool.inner.sync_task.borrow_mut() = Some(task);
        spool
    }

    /// Records the time of each group commit's syncs into `histogram`, in
    /// seconds, read from `clock`.
    pub fn time_syncs(&self, clock: crate::clock::Clock, histogram: metrics::Histogram) {
        *self.inner.sync_timer.borrow_mut() = Some((clock, histogram));
    }

    /// Bytes of the segment files (each is preallocated whole).
    pub fn bytes(&self) -> u64 {
        let segments = self.inner.state.borrow().segments.len() as u64;
        segments.saturating_mul(self.inner.opts.segment_size)
    }

    pub fn options(&self) -> &SpoolOptions {
        &self.inner.opts
    }

    /// Free bytes for unprivileged writers on the spool's file system, if
    /// it can be told.
    pub fn free_space(&self) -> Option<u64> {
        let st = rustix::fs::statvfs(&self.inner.opts.dir).ok()?;
        Some(st.f_bavail * st.f_frsize)
    }

    /// Sets the time used for new segment headers and deferrals (unix ms);
    /// the runtime passes its clock in, the spool has none.
    pub fn set_now(&self, now_ms: u64) {
        self.inner.state.borrow_mut().now_ms = now_ms;
    }

    /// True once a sync has failed: the shard must stop accepting mail.
    pub fn has_failed(&self) -> bool {
        self.inner.commit.has_failed()
    }

    /// After a failed sync or `close`, nothing more goes into the mapping.
    fn refuses_appends(&self) -> bool {
        self.inner.commit.has_failed() || self.inner.commit.is_closed()
    }

    /// Protects the message about to be written from reclaiming.
    pub fn pin_for_write(&self) -> WritePin {
        let mut st = self.inner.state.borrow_mut();
        let segment = st.cursor.segment_id;
        *st.inflight.entry(segment).or_insert(0) += 1;
        WritePin {
            inner: self.inner.clone(),
            segment,
        }
    }

    /// Largest body chunk a single append may carry.
    pub fn max_chunk(&self) -> usize {
        (self.inner.opts.segment_size as usize / 4).min(1 << 20)
    }

    /// Appends a body chunk whose bytes `fill` writes straight into the
    /// mapping (at most `max_len` ≤ [`Self::max_chunk`] bytes; it returns
    /// how many). Not durable by itself: the envelope commit covers it.
    ///
    /// A fill that writes nothing leaves no record behind (`Ok(None)`).
    pub fn append_chunk_with(
        &self,
        max_len: usize,
        mut fill: impl FnMut(&mut [u8]) -> usize,
    ) -> Result<Option<ChunkRef>, SpoolError> {
        if self.refuses_appends() {
            return Err(SpoolError::SyncFailed);
        }
        if max_len > self.max_chunk() {
            return Err(SpoolError::TooLarge);
        }
        let mut st = self.inner.state.borrow_mut();
        let seq = st.next_seq();
        let mut filled = 0;
        let (segment, offset) = st.append(&self.inner.opts, |cur, buf| {
            let off =
                cur.append_with(buf, spool_format::RecordKind::Chunk, seq, max_len, |dst| {
                    filled = fill(dst);
                    filled
                })?;
            Some((cur.segment_id, off))
        })?;
        if filled == 0 {
            // Nothing was written: take the empty record back.
            if let Some(seg) = st.segments.get_mut(&segment) {
                let at = offset as usize;
                seg.map[at..at + spool_format::RECORD_HEADER_LEN].fill(0);
                st.cursor.pos = at;
            }
            return Ok(None);
        }
        Ok(Some(ChunkRef {
            segment,
            offset,
            len: filled as u32,
        }))
    }

    /// Reserves a message id before the message is written (so it can go
    /// into the `Received:` header); ids never repeat within a shard.
    pub fn allocate_msg_id(&self) -> u64 {
        self.inner.state.borrow_mut().next_seq()
    }

    /// Appends a whole chunk from a slice (not empty: an empty body simply
    /// has no chunks, and a chunk reference must name a real record).
    pub fn append_chunk(&self, data: &[u8]) -> Result<ChunkRef, SpoolError> {
        if data.len() >= WRITE_THROUGH_MIN {
            return self.write_chunk(data);
        }
        let c = self.append_chunk_with(data.len(), |dst| {
            dst[..data.len()].copy_from_slice(data);
            data.len()
        })?;
        c.ok_or(SpoolError::EmptyChunk)
    }

    /// [`Self::append_chunk`] for large chunks: `pwritev` instead of a
    /// copy through the mapping (see [`Segment::write_record`]).
    fn write_chunk(&self, data: &[u8]) -> Result<ChunkRef, SpoolError> {
        if self.refuses_appends() {
            return Err(SpoolError::SyncFailed);
        }
        if data.len() > self.max_chunk() {
            return Err(SpoolError::TooLarge);
        }
        let mut st = self.inner.state.borrow_mut();
        let st = &mut *st;
        let seq = st.next_seq();
        let (segment, offset, rec) = st.append(&self.inner.opts, |cur, _| {
            let (off, rec) = cur.reserve_external(spool_format::RecordKind::Chunk, seq, data)?;
            Some((cur.segment_id, off, rec))
        })?;
        let seg = st.segments.get_mut(&segment).ok_or(SpoolError::TooLarge)?;
        if let Err(e) = seg.write_record(&*st.io, offset, &rec, data) {
            // Take the reservation back; a header that may have reached the
            // page cache is wiped so that nothing passes for a record there.
            let at = offset as usize;
            seg.map[at..at + spool_format::RECORD_HEADER_LEN].fill(0);
            let path = seg.path.clone();
            st.cursor.pos = at;
            return Err(SpoolError::Io {
                path,
                what: "writing a body chunk",
                source: e,
            });
        }
        Ok(ChunkRef {
            segment,
            offset,
            len: data.len() as u32,
        })
    }

    /// Commits a message: appends its envelope (whose `body` names chunks
    /// appended before) and resolves once it is durable. Returns the
    /// message id, also written into `env.msg_id`.
    pub async fn commit_message(&self, env: &mut Envelope) -> Result<u64, SpoolError> {
        self.commit_envelope(env, false)
            .await?
            .ok_or(SpoolError::NotQueued(env.msg_id))
    }

    /// Appends an envelope and waits for it to be durable. A compaction
    /// `copy` is not written at all if the message has a status in flight or
    /// already left the queue (`Ok(None)`).
    async fn commit_envelope(
        &self,
        env: &mut Envelope,
        copy: bool,
    ) -> Result<Option<u64>, SpoolError> {
        if self.refuses_appends() {
            return Err(SpoolError::SyncFailed);
        }
        let _pin = self.pin_for_write();
        let (ticket, segment, offset) = {
            let mut st = self.inner.state.borrow_mut();
            if copy
                && (!st.index.messages.contains_key(&env.msg_id)
                    || st.unapplied_status.contains_key(&env.msg_id))
            {
                return Ok(None);
            }
            let seq = st.next_seq();
            if env.msg_id == 0 {
                env.msg_id = seq;
            }
            let (segment, offset) = st.append(&self.inner.opts, |cur, buf| {
                Some((cur.segment_id, cur.append_envelope(buf, seq, env)?))
            })?;
            (self.inner.commit.written(), segment, offset)
        };
        if !self.inner.commit.wait(ticket).await {
            return Err(SpoolError::SyncFailed);
        }
        // The index learns the message from the envelope we hold: what went
        // into the mapping is exactly its archive, so reading it back and
        // validating it again would only repeat work on every message.
        let index = &mut self.inner.state.borrow_mut().index;
        if copy {
            index.insert_copy(segment, offset, env);
        } else {
            index.insert_message(segment, offset, env);
        }
        Ok(Some(env.msg_id))
    }

    /// Records the outcome for some recipients of a message; resolves once
    /// durable, then updates the queue and reclaims segments it freed.
    pub async fn record_status(
        &self,
        msg_id: u64,
        state: RcptState,
        rcpts: &[u32],
        diagnostic: &[u8],
    ) -> Result<Applied, SpoolError> {
        let ticket = self.append_status(msg_id, state, rcpts, diagnostic)?;
        let durable = self.inner.commit.wait(ticket).await;
        self.status_durable(msg_id, state, rcpts, durable)
    }

    /// Appends a status record without waiting: the first half of
    /// [`Self::record_status`], for writers that batch many statuses
    /// behind one wait ([`Self::wait`]) and then call
    /// [`Self::status_durable`] for each, in order.
    pub fn append_status(
        &self,
        msg_id: u64,
        state: RcptState,
        rcpts: &[u32],
        diagnostic: &[u8],
    ) -> Result<Ticket, SpoolError> {
        if self.refuses_appends() {
            return Err(SpoolError::SyncFailed);
        }
        let mut st = self.inner.state.borrow_mut();
        let seq = st.next_seq();
        let now = st.now_ms;
        st.append(&self.inner.opts, |cur, buf| {
            cur.append_status(buf, seq, msg_id, state, now, rcpts, diagnostic)
        })?;
        *st.unapplied_status.entry(msg_id).or_insert(0) += 1;
        Ok(self.inner.commit.written())
    }

    /// Resolves once everything appended up to `ticket` is durable; false
    /// if the sync failed.
    pub async fn wait(&self, ticket: Ticket) -> bool {
        self.inner.commit.wait(ticket).await
    }

    /// The second half of [`Self::record_status`]: once the status record
    /// is `durable`, applies it to the queue and reclaims freed segments.
    pub fn status_durable(
        &self,
        msg_id: u64,
        state: RcptState,
        rcpts: &[u32],
        durable: bool,
    ) -> Result<Applied, SpoolError> {
        self.release(msg_id);
        if !durable {
            return Err(SpoolError::SyncFailed);
        }
        let applied =
            self.inner
                .state
                .borrow_mut()
                .index
                .apply(msg_id, state, rcpts.iter().copied());
        if matches!(applied, Applied::Finished { .. }) {
            // The status is durable and applied; a segment that could not
            // be removed now is retried at the next reclaim.
            if let Err(e) = self.reclaim() {
                tracing::error!(error = %e, "could not remove a finished spool segment");
            }
        }
        Ok(applied)
    }

    /// Keeps compaction from copying `msg_id` until [`Self::release`]: its
    /// envelope and chunks stay where a delivery in progress reads them.
    pub fn hold(&self, msg_id: u64) {
        *self
            .inner
            .state
            .borrow_mut()
            .unapplied_status
            .entry(msg_id)
            .or_insert(0) += 1;
    }

    /// The queue ID of one of this spool's messages.
    pub fn queue_id(&self, msg_id: u64) -> super::DisplayId {
        super::DisplayId::new(self.inner.opts.shard as usize, msg_id)
    }

    /// Ends one [`Self::hold`] (or one appended status).
    /// How many holds `msg_id` has: its connections, notices and status
    /// writes in progress.
    pub fn holds(&self, msg_id: u64) -> u32 {
        let st = self.inner.state.borrow();
        st.unapplied_status.get(&msg_id).copied().unwrap_or(0)
    }

    pub fn release(&self, msg_id: u64) {
        let mut st = self.inner.state.borrow_mut();
        if let Some(n) = st.unapplied_status.get_mut(&msg_id) {
            *n -= 1;
            if *n == 0 {
                st.unapplied_status.remove(&msg_id);
            }
        }
    }

    /// Deletes old segments that hold nothing queued, oldest first.
    pub fn reclaim(&self) -> Result<usize, SpoolError> {
        let mut st = self.inner.state.borrow_mut();
        let mut removed = 0;
        while let Some((&oldest, seg)) = st.segments.iter().next() {
            let writing = st.inflight.range(..=oldest).next().is_some();
            if oldest == st.cursor.segment_id || writing || st.index.pins.contains_key(&oldest) {
                break;
            }
            // Unlink first: a segment that could not be removed stays known
            // and is tried again on the next reclaim.
            std::fs::remove_file(&seg.path).map_err(|source| SpoolError::Io {
                path: seg.path.clone(),
                what: "removing finished segment",
                source,
            })?;
            st.segments.remove(&oldest);
            removed += 1;
            // Each unlink reaches the disk before the next one: an older
            // segment coming back after a crash, without the newer one that
            // held its messages' final statuses, would queue finished mail
            // again. Reclaims are rare (one per segment), so this is cheap.
            super::segment::sync_dir(&self.inner.opts.dir)?;
        }
        Ok(removed)
    }

    /// Runs `f` with read access to the spool state (queue index, mapping).
    pub(crate) fn with_state<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.inner.state.borrow())
    }

    /// Number of queued messages and pending recipients.
    pub fn queue_len(&self) -> usize {
        self.with_state(|s| s.index.messages.len())
    }

    /// Ids of the queued messages, in id order.
    pub fn queued_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.with_state(|s| s.index.messages.keys().copied().collect());
        ids.sort_unstable();
        ids
    }

    /// Ids of segments currently on disk.
    pub fn segment_ids(&self) -> Vec<u64> {
        self.with_state(|s| s.segments.keys().copied().collect())
    }

    /// A queued message's pending recipients (for delivery and tests).
    pub fn pending_recipients(&self, msg_id: u64) -> Option<Vec<u32>> {
        self.with_state(|s| {
            s.index
                .messages
                .get(&msg_id)
                .map(|m| m.pending.iter().collect())
        })
    }

    /// Reads a queued message's body back from the mapping.
    pub fn read_body(&self, msg_id: u64, out: &mut Vec<u8>) -> Result<(), SpoolError> {
        self.with_state(|s| {
            let m = s
                .index
                .messages
                .get(&msg_id)
                .ok_or(SpoolError::NotQueued(msg_id))?;
            let env = s
                .envelope(m.segment_id(), m.offset)
                .ok_or(SpoolError::NotQueued(msg_id))?;
            for c in env.body.iter().map(ChunkRef::from) {
                out.extend_from_slice(s.chunk(&c).ok_or(SpoolError::NotQueued(msg_id))?);
            }
            Ok(())
        })
    }

    /// Copies forward the messages that pin the oldest segment when they
    /// fill less than half of it, so that disk use follows the live queue.
    /// Returns how many messages were copied.
    pub async fn compact(&self) -> Result<usize, SpoolError> {
        let victims = self.compaction_victims();
        let mut copied = 0;
        for msg_id in victims {
            let _pin = self.pin_for_write();
            let Some((mut env, body)) = self.copy_out(msg_id) else {
                continue;
            };
            env.body.clear();
            for piece in body.chunks(self.max_chunk()) {
                let c = self.append_chunk(piece)?;
                env.body.push(c);
            }
            env.flags |= spool_format::envelope::flags::COPIED;
            if self.commit_envelope(&mut env, true).await?.is_some() {
                copied += 1;
            }
        }
        self.reclaim()?;
        Ok(copied)
    }

    fn compaction_victims(&self) -> Vec<u64> {
        self.with_state(|s| {
            let Some((&oldest, _)) = s.segments.iter().next() else {
                return Vec::new();
            };
            if oldest == s.cursor.segment_id {
                return Vec::new();
            }
            let mut live_bytes = 0u64;
            let mut ids = Vec::new();
            for (id, m) in &s.index.messages {
                if m.first_segment_id() == oldest {
                    let len = s
                        .envelope(m.segment_id(), m.offset)
                        .map_or(0, |e| e.body_len.to_native());
                    live_bytes += len + 512;
                    ids.push(*id);
                }
            }
            if live_bytes * 2 > self.inner.opts.segment_size {
                return Vec::new();
            }
            // Oldest first, and the same order on every run (the index is a
            // hash map): a simulation replays from its seed.
            ids.sort_unstable();
            ids
        })
    }

    /// An owned copy of a queued message with its current recipient states.
    fn copy_out(&self, msg_id: u64) -> Option<(Envelope, Vec<u8>)> {
        let mut body = Vec::new();
        self.read_body(msg_id, &mut body).ok()?;
        self.with_state(|s| {
            let m = s.index.messages.get(&msg_id)?;
            let a = s.envelope(m.segment_id(), m.offset)?;
            let mut env: Envelope = rkyv::deserialize::<Envelope, rkyv::rancor::Error>(a).ok()?;
            for (i, r) in env.recipients.iter_mut().enumerate() {
                let st = if !m.pending.contains(i as u32) {
                    RcptState::Delivered
                } else if m.attempts > 0 {
                    RcptState::Deferred {
                        until_ms: m.next_attempt_ms,
                        attempts: m.attempts,
                    }
                } else {
                    RcptState::Pending
                };
                r.set_state(st);
            }
            Some((env, body))
        })
    }

    /// Stops the sync task once idle; used at shutdown and in tests.
    pub fn close(&self) {
        self.inner.commit.close();
    }

    /// [`Self::close`], then waits for the sync task to finish and close its
    /// files. Without this, an executor that ends right after `close` never
    /// runs the task again: the spool's segments stay mapped and open, and
    /// the pages of deleted segments are never freed.
    pub async fn shutdown(&self) {
        self.close();
        let task = self.inner.sync_task.borrow_mut().take();
        if let Some(task) = task {
            task.await;
        }
    }

    /// Number of fdatasyncs issued so far.
    pub fn syncs(&self) -> u64 {
        self.inner.commit.syncs.get()
    }
}

/// The shard's single sync task: one fdatasync batch in flight at a time.
async fn sync_loop(inner: Rc<Inner>) {
    let io = inner.state.borrow().io.clone();
    let mut files = SyncFiles::new();
    while let Some(upto) = inner.commit.next_batch().await {
        let dirty: Vec<(u64, PathBuf)> = {
            let mut st = inner.state.borrow_mut();
            let st = &mut *st;
            st.write_ahead();
            let ids = std::mem::take(&mut st.dirty);
            ids.into_iter()
                .filter_map(|id| st.segments.get(&id).map(|s| (id, s.path.clone())))
                .collect()
        };
        let mut ok = true;
        let started = inner
            .sync_timer
            .borrow()
            .as_ref()
            .map(|(clock, _)| clock.monotonic_us());
        for (id, path) in dirty {
            if let Err(e) = io.sync(&mut files, id, &path).await {
                tracing::error!(segment = %path.display(), error = %e, "fdatasync failed; shard stops accepting mail");
                ok = false;
                break;
            }
        }
        if let (Some(started), Some((clock, histogram))) = (started, &*inner.sync_timer.borrow()) {
            histogram.record(clock.monotonic_us().saturating_sub(started) as f64 / 1e6);
        }
        inner.commit.completed(upto, ok);
        let gone: Vec<u64> = {
            let st = inner.state.borrow();
            files
                .keys()
                .filter(|id| !st.segments.contains_key(id))
                .copied()
                .collect()
        };
        for id in gone {
            close_file(files.remove(&id)).await;
        }
    }
    // Closed explicitly: a file dropped as the executor ends may never be
    // closed, and a reclaimed segment's pages stay in memory while open.
    for (_, f) in files.drain() {
        close_file(Some(f)).await;
    }
}

async fn close_file(file: Option<glommio::io::BufferedFile>) {
    if let Some(f) = file {
        if let Err(e) = f.close().await {
            tracing::warn!(error = %e, "closing a segment file");
        }
    }
}
