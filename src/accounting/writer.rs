//! The accounting log's writer: each shard renders its records into lines
//! of its own ([`ShardLog`]) and posts them in batches into a channel;
//! one unpinned thread owns the file, appends, flushes, rotates, and rides
//! out a disk that cannot be written.
//!
//! Owns: the [`Recorder`] handle (posting never blocks: a full channel
//! drops the batch and counts its records), the shard's batch and when it
//! goes, the file and its rotation, and the pause while writes fail. The decisions (is a flush or a rotation due,
//! what is the rotated file called) are plain functions of `now`, so tests
//! run them on virtual time; only [`run`] reads the clock.
//! Must never: block or slow a shard, hold up mail when the disk fails, or
//! log more than one error line per pause.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

use super::record::{header, Format, Lines, Record};
use crate::clock::Clock;

/// Batches the channel holds before [`Recorder::send`] drops them: with
/// [`BATCH_BYTES`] each, seconds of a busy server's events while the writer
/// waits on the disk.
pub const CHANNEL_CAPACITY: usize = 1024;
/// Rendered bytes a shard gathers before it posts them; it posts what it
/// has at every housekeeping tick too.
pub const BATCH_BYTES: usize = 32 << 10;
/// The longest a record waits in memory before it is written.
pub const FLUSH_INTERVAL_MS: u64 = 1000;
/// How often the writer takes what the shards have posted: at a busy
/// server's rate of records, a few batches each time, far below the
/// channel's [`CHANNEL_CAPACITY`].
pub const POLL_INTERVAL_MS: u64 = 50;
/// Rendered bytes that are written at once, without waiting for the
/// interval.
pub const FLUSH_BYTES: usize = 64 << 10;
/// How often a paused log tries its file again.
pub const RETRY_INTERVAL_MS: u64 = 5000;
/// Rendered bytes a paused log keeps for when it resumes; records beyond
/// are lost (and counted).
pub const PAUSED_BUFFER_LIMIT: usize = 1 << 20;

/// What the shards send the writer; `Stop` is sent once.
pub(super) enum Message {
    /// Whole lines, and how many records they are.
    Batch(Vec<u8>, u64),
    /// Write what is queued and end (from [`super::Accounting::stop`]).
    Stop,
}

/// Counters shared by the writer and every [`Recorder`].
#[derive(Debug, Default)]
pub(super) struct Counters {
    dropped: AtomicU64,
    lost: AtomicU64,
    paused: AtomicBool,
}

impl Counters {
    pub(super) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub(super) fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    pub(super) fn paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }
}

/// A shard's handle on the accounting log: cheap to clone, `Send`, and
/// never blocks.
#[derive(Debug, Clone)]
pub struct Recorder {
    tx: SyncSender<Message>,
    counters: Arc<Counters>,
    format: Format,
}

/// A recorder and the writer's end of its channel of `capacity` batches.
pub(super) fn channel(capacity: usize, format: Format) -> (Recorder, Receiver<Message>) {
    let (tx, rx) = mpsc::sync_channel(capacity);
    let counters = Arc::default();
    let recorder = Recorder {
        tx,
        counters,
        format,
    };
    (recorder, rx)
}

impl Recorder {
    /// Queues `records` rendered records for the log; when the channel is
    /// full (the writer is behind) or the log has stopped, drops them and
    /// counts them.
    pub fn send(&self, lines: Vec<u8>, records: u64) {
        if self.tx.try_send(Message::Batch(lines, records)).is_err() {
            self.counters.dropped.fetch_add(records, Ordering::Relaxed);
        }
    }

    /// How records are rendered.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Records dropped because the channel was full or closed.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped()
    }

    /// Records the writer could not keep while its file could not be
    /// written.
    pub fn lost(&self) -> u64 {
        self.counters.lost()
    }

    /// Whether writes are failing (the log is paused).
    pub fn paused(&self) -> bool {
        self.counters.paused()
    }

    pub(super) fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Asks the writer to finish; waits for room in the channel, so only
    /// for [`super::Accounting::stop`], never on a shard.
    pub(super) fn send_stop(&self) {
        // A writer that has already ended has nothing left to finish.
        let _ = self.tx.send(Message::Stop);
    }
}

/// A shard's end of the log: records are rendered at once into the
/// shard's own lines, which go to the writer when [`BATCH_BYTES`] have
/// gathered, at [`ShardLog::flush`] (every housekeeping tick) and when
/// the shard lets go of it. Per record: no allocation, no message, no
/// memory another core frees.
pub struct ShardLog {
    recorder: Recorder,
    lines: RefCell<Lines>,
}

impl ShardLog {
    pub fn new(recorder: Recorder) -> ShardLog {
        let lines = Lines::new(recorder.format, BATCH_BYTES);
        ShardLog {
            recorder,
            lines: RefCell::new(lines),
        }
    }

    /// Adds `record` to the log.
    pub fn record(&self, record: &Record<'_>) {
        let mut lines = self.lines.borrow_mut();
        if let Err(error) = lines.push(record) {
            // What the batch held may end in half a line: it goes with it.
            let lost = lines.discard(BATCH_BYTES) + 1;
            self.recorder
                .counters
                .lost
                .fetch_add(lost, Ordering::Relaxed);
            tracing::warn!(%error, queue_id = record.queue_id, lost, "accounting record not rendered");
            return;
        }
        if lines.len() >= BATCH_BYTES {
            if let Some((bytes, records)) = lines.take(BATCH_BYTES) {
                self.recorder.send(bytes, records);
            }
        }
    }

    /// Posts what has gathered.
    pub fn flush(&self) {
        let taken = self.lines.borrow_mut().take(BATCH_BYTES);
        if let Some((bytes, records)) = taken {
            self.recorder.send(bytes, records);
        }
    }
}

impl Drop for ShardLog {
    fn drop(&mut self) {
        if let Some((bytes, records)) = self.lines.get_mut().take(0) {
            self.recorder.send(bytes, records);
        }
    }
}

/// When the current file is renamed away and a fresh one opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Bytes; the file is rotated once it reaches this size.
    pub size: u64,
    /// Milliseconds since the file was opened; 0 = never.
    pub interval_ms: u64,
}

impl Rotation {
    /// Whether a file of `size` bytes, opened at `opened_ms`, is rotated at
    /// `now_ms`.
    pub fn due(&self, size: u64, opened_ms: u64, now_ms: u64) -> bool {
        size >= self.size
            || (self.interval_ms > 0 && now_ms.saturating_sub(opened_ms) >= self.interval_ms)
    }
}

/// `YYYYMMDDTHHMMSS` in UTC.
pub fn utc_stamp(unix_secs: u64) -> String {
    let secs = i64::try_from(unix_secs).unwrap_or(i64::MAX);
    let (days, in_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = crate::smtp::received::civil_from_days(days);
    let (hour, minute, second) = (in_day / 3600, in_day / 60 % 60, in_day % 60);
    format!("{year:04}{month:02}{day:02}T{hour:02}{minute:02}{second:02}")
}

/// The name `path` is renamed to at `now_ms`: `<path>.<utc_stamp>`, or
/// with `.1`, `.2`, ... added when `taken` says that name is in use.
pub fn rotated_path(path: &Path, now_ms: u64, taken: impl Fn(&Path) -> bool) -> PathBuf {
    let mut base = path.as_os_str().to_owned();
    base.push(".");
    base.push(utc_stamp(now_ms / 1000));
    let mut candidate = PathBuf::from(&base);
    let mut counter = 0u64;
    while taken(&candidate) {
        counter += 1;
        let mut name = base.clone();
        name.push(format!(".{counter}"));
        candidate = PathBuf::from(name);
    }
    candidate
}

/// The open file and what rotation needs to know of it.
struct OpenFile {
    file: File,
    size: u64,
    opened_ms: u64,
}

impl OpenFile {
    /// Appends `bytes`; on failure cuts the file back to what it held, so
    /// the retry does not leave half a line before the whole one.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self.file.write_all(bytes) {
            Ok(()) => {
                self.size += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Best effort: a device such as /dev/full cannot be cut.
                let _ = self.file.set_len(self.size);
                Err(e)
            }
        }
    }
}

/// The writer's state; every method takes `now_ms` (wall milliseconds).
pub(super) struct Sink {
    path: PathBuf,
    rotation: Rotation,
    format: Format,
    counters: Arc<Counters>,
    file: Option<OpenFile>,
    /// Rendered, not yet written.
    pending: Vec<u8>,
    /// Records in `pending`.
    pending_records: u64,
    paused_limit: usize,
    last_flush_ms: u64,
    /// While paused: when to try the file again.
    retry_at_ms: Option<u64>,
}

impl Sink {
    pub(super) fn new(
        path: PathBuf,
        format: Format,
        rotation: Rotation,
        counters: Arc<Counters>,
        now_ms: u64,
    ) -> Sink {
        Sink {
            path,
            rotation,
            format,
            counters,
            file: None,
            pending: Vec::with_capacity(FLUSH_BYTES * 2),
            pending_records: 0,
            paused_limit: PAUSED_BUFFER_LIMIT,
            last_flush_ms: now_ms,
            retry_at_ms: None,
        }
    }

    /// Opens the file before the writer starts: a path that cannot be
    /// opened at all (no such directory, no permission) is an error to
    /// report at startup. A failing write only pauses the log.
    pub(super) fn start(&mut self, now_ms: u64) -> io::Result<()> {
        OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.path)?;
        self.flush(now_ms);
        Ok(())
    }

    /// Adds `records` rendered records to the pending bytes; writes them
    /// when enough have gathered.
    pub(super) fn append(&mut self, lines: &[u8], records: u64, now_ms: u64) {
        let paused = self.retry_at_ms.is_some();
        if paused && self.pending.len() >= self.paused_limit {
            self.counters.lost.fetch_add(records, Ordering::Relaxed);
            return;
        }
        self.pending.extend_from_slice(lines);
        self.pending_records += records;
        if !paused && self.pending.len() >= FLUSH_BYTES {
            self.flush(now_ms);
        }
    }

    /// Flushes when the interval has passed, or retries a paused log.
    pub(super) fn tick(&mut self, now_ms: u64) {
        if now_ms >= self.next_wake_ms() {
            self.flush(now_ms);
        }
    }

    /// When [`Sink::tick`] has something to do: retry a paused log, flush,
    /// or rotate the file for its age.
    pub(super) fn next_wake_ms(&self) -> u64 {
        if let Some(retry_at) = self.retry_at_ms {
            return retry_at;
        }
        let flush = self.last_flush_ms.saturating_add(FLUSH_INTERVAL_MS);
        let rotate = match (&self.file, self.rotation.interval_ms) {
            (Some(open), interval) if interval > 0 => open.opened_ms.saturating_add(interval),
            _ => u64::MAX,
        };
        flush.min(rotate)
    }

    /// The last flush, at stop; what still cannot be written is lost.
    pub(super) fn finish(&mut self, now_ms: u64) {
        self.flush(now_ms);
        if self.retry_at_ms.is_some() {
            let lost = std::mem::take(&mut self.pending_records);
            self.counters.lost.fetch_add(lost, Ordering::Relaxed);
            self.pending.clear();
        }
    }

    /// Writes the pending bytes and rotates when due; pauses on an error,
    /// resumes on the first success after one.
    fn flush(&mut self, now_ms: u64) {
        self.last_flush_ms = now_ms;
        match self.write_pending(now_ms) {
            Err(error) => self.pause(now_ms, &error),
            Ok(()) if self.retry_at_ms.take().is_some() => {
                self.counters.paused.store(false, Ordering::Relaxed);
                tracing::warn!(path = %self.path.display(), lost_total = self.counters.lost(),
                    "accounting log resumed");
            }
            Ok(()) => {}
        }
    }

    fn write_pending(&mut self, now_ms: u64) -> io::Result<()> {
        let mut open = match self.file.take() {
            Some(open) => open,
            None => self.open(now_ms)?,
        };
        if !self.pending.is_empty() {
            open.append(&self.pending)?;
            self.pending.clear();
            self.pending_records = 0;
        }
        if self.rotation.due(open.size, open.opened_ms, now_ms) {
            drop(open);
            let to = rotated_path(&self.path, now_ms, |p| p.symlink_metadata().is_ok());
            std::fs::rename(&self.path, &to)?;
            open = self.open(now_ms)?;
        }
        self.file = Some(open);
        Ok(())
    }

    /// Opens (or creates) the file for appending; a new one starts with
    /// the header line.
    fn open(&mut self, now_ms: u64) -> io::Result<OpenFile> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.path)?;
        let mut open = OpenFile {
            size: file.metadata()?.len(),
            file,
            opened_ms: now_ms,
        };
        if open.size == 0 {
            open.append(&header(self.format))?;
        }
        Ok(open)
    }

    fn pause(&mut self, now_ms: u64, error: &io::Error) {
        self.file = None;
        self.retry_at_ms = Some(now_ms.saturating_add(RETRY_INTERVAL_MS));
        if !self.counters.paused.swap(true, Ordering::Relaxed) {
            tracing::error!(path = %self.path.display(), %error,
                "accounting log paused: cannot write; retrying every {}s, keeping up to {} KiB of records meanwhile; mail is not affected",
                RETRY_INTERVAL_MS / 1000, self.paused_limit >> 10);
        }
    }
}

/// The writer thread: every [`POLL_INTERVAL_MS`] (or sooner, when a
/// flush or a retry is due) it takes the batches the shards have posted;
/// a flush at least every [`FLUSH_INTERVAL_MS`]; and at [`Message::Stop`]
/// (or when every sender is gone) what is queued, then the last flush.
/// It never waits in the channel: a receiver asleep there is woken by the
/// sender, and that would be a system call on a shard for every batch.
pub(super) fn run(mut sink: Sink, rx: Receiver<Message>, clock: Clock) {
    'run: loop {
        loop {
            match rx.try_recv() {
                Ok(Message::Batch(lines, records)) => {
                    sink.append(&lines, records, clock.wall_ms());
                }
                Ok(Message::Stop) | Err(TryRecvError::Disconnected) => break 'run,
                Err(TryRecvError::Empty) => break,
            }
        }
        sink.tick(clock.wall_ms());
        let wait = sink.next_wake_ms().saturating_sub(clock.wall_ms());
        std::thread::sleep(Duration::from_millis(wait.clamp(1, POLL_INTERVAL_MS)));
    }
    while let Ok(message) = rx.try_recv() {
        if let Message::Batch(lines, records) = message {
            sink.append(&lines, records, clock.wall_ms());
        }
    }
    sink.finish(clock.wall_ms());
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
