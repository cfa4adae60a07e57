//! The service manager's notify protocol (`sd_notify`): `READY=1` once
//! every shard listens, `STOPPING=1` when a stop begins, `RELOADING=1`
//! around a reload, and `WATCHDOG=1` pings sent only while every shard
//! still turns.
//!
//! It owns the shards' heartbeats (one counter per shard, bumped by the
//! shard itself) and the thread that waits for the shards to listen and
//! then reads the heartbeats. Without `NOTIFY_SOCKET` in the environment
//! (a terminal, the tests) every message is dropped unsent and no thread
//! is started.
//! Must never: make a shard wait (a shard stores to its own counter and
//! sends once on a channel), send a message from the mail path, or ping
//! the watchdog while a shard has stopped turning: a wedged shard holds
//! mail that no one serves, and a restart is what frees it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

/// How often a shard beats and the watch looks: a tenth of a second.
const TICK: Duration = Duration::from_millis(100);

/// Ticks a watchdog period must span at least for a shard's heartbeat to
/// move in every period even when its timer runs late.
const MIN_PERIOD_TICKS: u32 = 10;

/// Tells the service manager that petrel accepts mail: at start once every
/// shard listens, and after a reload.
pub fn ready() {
    send(&[NotifyState::Ready, NotifyState::Status("accepting mail")]);
}

/// Tells the service manager that a reload has begun; [`ready`] ends it.
/// The monotonic time goes with it, as systemd 253 and later require
/// (without it they fail the reload).
pub fn reloading() {
    let status = NotifyState::Status("reloading the configuration");
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now, status]),
        Err(e) => {
            tracing::warn!(error = %e, "reading the monotonic clock for the service manager");
            send(&[NotifyState::Reloading, status]);
        }
    }
}

/// Tells the service manager that a stop has begun.
pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: finishing sessions"),
    ]);
}

/// Sends one datagram; a failure is logged, never fatal (the service
/// manager then judges petrel by its exit or its start timeout).
fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "notifying the service manager");
    }
}

/// Whether a service manager listens for notifications.
fn manager_listens() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// One shard's heartbeat, alone on its cache line: each shard writes only
/// its own.
#[repr(align(64))]
#[derive(Default)]
struct Beat(AtomicU64);

/// Every shard's heartbeat, indexed by shard.
struct Heartbeats(Box<[Beat]>);

impl Heartbeats {
    fn read(&self) -> Vec<u64> {
        self.0.iter().map(|b| b.0.load(Ordering::Relaxed)).collect()
    }
}

/// What one look at the heartbeats decides.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every shard's heartbeat moved since the last look.
    Ping,
    /// This shard's did not (the lowest-numbered, when several).
    Stuck(usize),
}

/// The watchdog rule: ping only if every shard's heartbeat moved between
/// the two looks.
pub fn verdict(previous: &[u64], current: &[u64]) -> Verdict {
    match previous.iter().zip(current).position(|(p, c)| p == c) {
        Some(shard) => Verdict::Stuck(shard),
        None => Verdict::Ping,
    }
}

/// The daemon's side: made before the shards start, it hands each shard
/// its [`ShardWatch`].
pub struct Watch {
    beats: Arc<Heartbeats>,
    listening: Sender<usize>,
    watchdog: bool,
}

/// A shard's side: it says once that it listens, and keeps its heartbeat
/// moving while the watchdog is on.
#[derive(Clone)]
pub struct ShardWatch {
    shard: usize,
    beats: Arc<Heartbeats>,
    listening: Sender<usize>,
    watchdog: bool,
}

impl Watch {
    /// Starts the notify thread when a service manager listens: it sends
    /// `READY=1` once `shards` shards have said they listen, then, if the
    /// manager asked for a watchdog, pings it at half its interval while
    /// every shard turns. It ends when `stop` is set.
    pub fn start(shards: usize, stop: Arc<AtomicBool>) -> Watch {
        let beats = Arc::new(Heartbeats((0..shards).map(|_| Beat::default()).collect()));
        let (listening, rx) = mpsc::channel();
        let interval = manager_listens()
            .then(sd_notify::watchdog_enabled)
            .flatten();
        if manager_listens() {
            let thread_beats = beats.clone();
            let spawned = std::thread::Builder::new()
                .name("petrel-notify".into())
                .spawn(move || supervise(&rx, &thread_beats, interval, &stop));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "starting the notify thread: the service manager will not hear READY=1");
            }
        }
        Watch {
            beats,
            listening,
            watchdog: interval.is_some(),
        }
    }

    /// What shard `shard` keeps.
    pub fn shard(&self, shard: usize) -> ShardWatch {
        ShardWatch {
            shard,
            beats: self.beats.clone(),
            listening: self.listening.clone(),
            watchdog: self.watchdog,
        }
    }
}

impl ShardWatch {
    /// Every listener of this shard is bound and accepting.
    pub fn listening(&self) {
        // Without a notify thread nobody receives, and nobody needs to.
        let _ = self.listening.send(self.shard);
    }

    /// Bumps this shard's heartbeat every tick until `stop` is set; with
    /// no watchdog it returns at once. A task of its own, so that
    /// housekeeping waiting on a long compaction still counts as turning,
    /// while a shard whose executor is blocked does not.
    pub async fn beat(&self, stop: &AtomicBool) {
        if !self.watchdog {
            return;
        }
        let Some(beat) = self.beats.0.get(self.shard) else {
            return;
        };
        while !stop.load(Ordering::Relaxed) {
            glommio::timer::sleep(TICK).await;
            beat.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The notify thread: `READY=1`, then the watchdog if one is asked for.
fn supervise(
    listening: &Receiver<usize>,
    beats: &Heartbeats,
    interval: Option<Duration>,
    stop: &AtomicBool,
) {
    if !wait_listening(listening, beats.0.len(), stop) {
        return;
    }
    tracing::info!(shards = beats.0.len(), "every shard listens");
    ready();
    if let Some(interval) = interval {
        keep_watch(beats, interval / 2, stop);
    }
}

/// Waits until `shards` shards have said they listen; false if the stop
/// came first (a shard that fails to start sets it).
fn wait_listening(listening: &Receiver<usize>, shards: usize, stop: &AtomicBool) -> bool {
    let mut seen = 0;
    while seen < shards {
        match listening.recv_timeout(TICK) {
            Ok(_) => seen += 1,
            Err(RecvTimeoutError::Timeout) if !stop.load(Ordering::SeqCst) => {}
            Err(_) => return false,
        }
    }
    true
}

/// Pings the watchdog every `period` while every shard's heartbeat moves;
/// names a shard once when it stops turning.
fn keep_watch(beats: &Heartbeats, period: Duration, stop: &AtomicBool) {
    let ticks = (period.as_millis() / TICK.as_millis()).max(1);
    if ticks < u128::from(MIN_PERIOD_TICKS) {
        tracing::warn!(
            period_ms = period.as_millis(),
            "the watchdog interval is short for shard heartbeats every {} ms: a busy shard may miss a ping; use WatchdogSec=2s or more",
            TICK.as_millis()
        );
    }
    let mut previous = beats.read();
    let mut stuck = None;
    loop {
        for _ in 0..ticks {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(TICK);
        }
        let current = beats.read();
        match verdict(&previous, &current) {
            Verdict::Ping => {
                if let Some(shard) = stuck.take() {
                    tracing::warn!(shard, "shard turns again: watchdog pings resume");
                }
                send(&[NotifyState::Watchdog]);
            }
            Verdict::Stuck(shard) => {
                if stuck != Some(shard) {
                    tracing::error!(
                        shard,
                        "shard stopped turning: no more watchdog pings, the service manager will restart petrel"
                    );
                }
                stuck = Some(shard);
            }
        }
        previous = current;
    }
}

#[cfg(test)]
mod tests {
    use super::{verdict, Verdict};

    #[test]
    fn every_shard_moved_pings() {
        assert_eq!(verdict(&[0, 5, 9], &[1, 6, 200]), Verdict::Ping);
        assert_eq!(verdict(&[], &[]), Verdict::Ping);
    }

    #[test]
    fn a_shard_that_did_not_move_is_named() {
        assert_eq!(verdict(&[3, 5, 9], &[4, 5, 10]), Verdict::Stuck(1));
        assert_eq!(verdict(&[0], &[0]), Verdict::Stuck(0));
    }

    #[test]
    fn the_first_of_several_stuck_shards_is_named() {
        assert_eq!(verdict(&[1, 2, 3, 4], &[2, 2, 4, 4]), Verdict::Stuck(1));
    }

    #[test]
    fn a_wrapped_counter_still_counts_as_moved() {
        assert_eq!(verdict(&[u64::MAX], &[0]), Verdict::Ping);
    }
}
