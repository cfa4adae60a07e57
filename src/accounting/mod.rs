//! The accounting log: one record per event in a message's life (received,
//! delivered, bounced, deferred, delay notice sent), appended as CSV or
//! JSON lines to a file rotated by size and by time, for the tools that
//! bill, report and clean lists.
//!
//! Owns: the record and its rendering (`record`), the bounce categories
//! (`category`), and the shards' batches and the writer thread with its
//! file (`writer`).
//! Must never: stall a shard or affect mail. Shards render records into a
//! [`ShardLog`] of their own and post the lines in batches through a
//! [`Recorder`] that drops (and counts) what the writer cannot take; a
//! file that cannot be written pauses the log, not delivery.

pub mod category;
pub mod record;
pub mod writer;

pub use category::{BounceCategory, CategoryRule, CategoryRules, StatusPattern};
pub use record::{DsnStatus, Format, Record, RecordType, FIELDS};
pub use writer::{Recorder, Rotation, ShardLog};

use std::thread::JoinHandle;

use crate::clock::Clock;
use std::path::Path;

/// The running log: the writer thread and the handle shards clone.
#[derive(Debug)]
pub struct Accounting {
    recorder: Recorder,
    thread: JoinHandle<()>,
}

impl Accounting {
    /// Opens the file and starts the writer thread; none when `[accounting]
    /// path` is empty (the log is off). Fails when the file cannot be
    /// opened at all (a missing directory, no permission) or the thread
    /// cannot start; a file that opens but cannot be written (a full disk)
    /// starts the log paused.
    ///
    /// Call it from a thread that is not pinned to a CPU (the daemon's main
    /// thread): the writer inherits its creator's CPU affinity, and must
    /// not compete with a shard for its core.
    /// `path` empty: no log.
    pub fn start(
        path: &Path,
        format: Format,
        rotation: Rotation,
    ) -> std::io::Result<Option<Accounting>> {
        if path.as_os_str().is_empty() {
            return Ok(None);
        }
        let (recorder, rx) = writer::channel(writer::CHANNEL_CAPACITY, format);
        let clock = Clock::new();
        let mut sink = writer::Sink::new(
            path.to_owned(),
            format,
            rotation,
            recorder.counters().clone(),
            clock.wall_ms(),
        );
        sink.start(clock.wall_ms())?;
        let thread = std::thread::Builder::new()
            .name("accounting".into())
            .spawn(move || writer::run(sink, rx, clock))?;
        Ok(Some(Accounting { recorder, thread }))
    }

    /// A handle for a shard (see [`ShardLog`]).
    pub fn recorder(&self) -> Recorder {
        self.recorder.clone()
    }

    /// Writes what is queued, flushes and ends the writer thread. Records
    /// posted after this are dropped.
    pub fn stop(self) {
        self.recorder.send_stop();
        if self.thread.join().is_err() {
            tracing::error!("the accounting writer thread panicked");
        }
    }

    /// Records dropped because the channel was full (the writer behind).
    pub fn dropped(&self) -> u64 {
        self.recorder.dropped()
    }

    /// Records lost while the file could not be written.
    pub fn lost(&self) -> u64 {
        self.recorder.lost()
    }

    /// Whether the log is paused (its file cannot be written).
    pub fn paused(&self) -> bool {
        self.recorder.paused()
    }
}

#[cfg(test)]
mod tests;
