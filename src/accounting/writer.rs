//! The accounting log's writer: a channel the shards post records into,
//! and one unpinned thread that owns the file, renders, appends, flushes,
//! rotates, and rides out a disk that cannot be written.
//!
//! Owns: the [`Recorder`] handle (posting never blocks: a full channel
//! drops the record and counts it), the file and its rotation, and the
//! pause while writes fail. The decisions (is a flush or a rotation due,
//! what is the rotated file called) are plain functions of `now`, so tests
//! run them on virtual time; only [`run`] reads the clock.
//! Must never: block or slow a shard, hold up mail when the disk fails, or
//! log more than one error line per pause.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

use super::record::{Format, Record, Renderer};
use crate::clock::Clock;

/// Records the channel holds before [`Recorder::record`] drops them: a few
/// seconds of a busy server's events while the writer waits on the disk.
pub const CHANNEL_CAPACITY: usize = 8192;
/// The longest a record waits in memory before it is written.
pub const FLUSH_INTERVAL_MS: u64 = 1000;
/// Rendered bytes that are written at once, without waiting for the
/// interval.
pub const FLUSH_BYTES: usize = 64 << 10;
/// How often a paused log tries its file again.
pub const RETRY_INTERVAL_MS: u64 = 5000;
/// Rendered bytes a paused log keeps for when it resumes; records beyond
/// are lost (and counted).
pub const PAUSED_BUFFER_LIMIT: usize = 1 << 20;

/// What the shards send the writer. Records travel by value: the
/// channel's slots are allocated once, where a box would cost a shard an
/// allocation per record; `Stop` is sent once.
#[allow(clippy::large_enum_variant)]
pub(super) enum Message {
    Record(Record),
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
}

/// A recorder and the writer's end of its channel of `capacity` records.
pub(super) fn channel(capacity: usize) -> (Recorder, Receiver<Message>) {
    let (tx, rx) = mpsc::sync_channel(capacity);
    let counters = Arc::default();
    (Recorder { tx, counters }, rx)
}

impl Recorder {
    /// Queues `record` for the log; when the channel is full (the writer
    /// is behind) or the log has stopped, drops it and counts it.
    pub fn record(&self, record: Record) {
        if self.tx.try_send(Message::Record(record)).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
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
    renderer: Renderer,
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
            renderer: Renderer::new(format),
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

    /// Renders `record` into the pending bytes; writes them when enough
    /// have gathered.
    pub(super) fn append(&mut self, record: &Record, now_ms: u64) {
        let paused = self.retry_at_ms.is_some();
        if paused && self.pending.len() >= self.paused_limit {
            self.counters.lost.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let before = self.pending.len();
        if let Err(error) = self.renderer.record(record, &mut self.pending) {
            self.pending.truncate(before);
            self.counters.lost.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%error, queue_id = %record.queue_id, "accounting record not rendered");
            return;
        }
        self.pending_records += 1;
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
            let mut header = Vec::new();
            self.renderer
                .header(&mut header)
                .map_err(io::Error::other)?;
            open.append(&header)?;
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

/// How long the writer sleeps between two drains of its queue. It never
/// waits on the queue itself: a reader asleep on it would have to be woken
/// by the shard that sends, a system call on the mail path for every
/// record. Records wait at most this long; the queue holds far more than
/// arrive meanwhile.
const DRAIN_INTERVAL: Duration = Duration::from_millis(20);

/// The writer thread: the records queued, every [`DRAIN_INTERVAL`]; a
/// flush at least every [`FLUSH_INTERVAL_MS`]; and at [`Message::Stop`]
/// (or when every sender is gone) what is queued, then the last flush.
pub(super) fn run(mut sink: Sink, rx: Receiver<Message>, clock: Clock) {
    loop {
        let now = clock.wall_ms();
        let mut stop = false;
        loop {
            match rx.try_recv() {
                Ok(Message::Record(record)) => sink.append(&record, now),
                Ok(Message::Stop) | Err(TryRecvError::Disconnected) => {
                    stop = true;
                    break;
                }
                Err(TryRecvError::Empty) => break,
            }
        }
        sink.tick(clock.wall_ms());
        if stop {
            break;
        }
        let wait = sink.next_wake_ms().saturating_sub(clock.wall_ms());
        std::thread::sleep(DRAIN_INTERVAL.min(Duration::from_millis(wait.max(1))));
    }
    while let Ok(message) = rx.try_recv() {
        if let Message::Record(record) = message {
            sink.append(&record, clock.wall_ms());
        }
    }
    sink.finish(clock.wall_ms());
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
