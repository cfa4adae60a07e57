//! The per-shard outbound scheduler: which recipients go out next, over how
//! many connections per destination, and when deferred ones come back.
//!
//! It owns the ready queues keyed by (egress source, destination), the
//! deferred timer wheel and the connection count of each destination. It
//! never does I/O and never reads the clock or a random source: time and
//! randomness are inputs, so every rule is tested on virtual time.
//!
//! Limits for the whole process: every shard delivers the messages of its
//! own spool (the bytes never cross cores), so a destination may have
//! queues on several shards. Each scheduler paces its own connections
//! (its window), and a connection may open only with a process-wide slot
//! for its destination (`outbound::slots`, one atomic counter per
//! destination, touched once per connection), so
//! `max_connections_per_destination` holds for the whole process.

mod operator;
pub mod retry;
pub mod wheel;

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::task::Waker;

pub use operator::{QueueView, Selection};
pub use retry::{RetryDecision, RetryPolicy};
pub use wheel::TimerWheel;

/// A dedicated source of outbound connections (an IP of a pool); 0 is the
/// default source.
pub type EgressId = u16;

/// What a queue delivers to: a recipient domain (via its MX hosts) or a
/// fixed relay (`host:port` from a `[[route]]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueKey {
    pub egress: EgressId,
    pub destination: Rc<str>,
}

/// Recipients of one message bound for one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub msg_id: u64,
    pub rcpts: Vec<u32>,
    /// Failed attempts so far.
    pub attempts: u32,
    pub received_ms: u64,
    /// The pool the message leaves through, as the spool records it.
    pub pool: u16,
}

/// Per-destination limits (`[delivery]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_connections_per_destination: usize,
    pub max_messages_per_connection: usize,
    /// Connections a destination starts with before success widens it.
    pub initial_connections: usize,
    /// Ready jobs each open connection is left to take by itself before
    /// the destination gets another connection.
    pub backlog_per_connection: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections_per_destination: 20,
            max_messages_per_connection: 1000,
            initial_connections: 5,
            backlog_per_connection: BACKLOG_PER_CONNECTION,
        }
    }
}

/// How many ready jobs justify another connection to a destination, per
/// connection already open. A connection that finds the next job ready
/// when it ends a body sends that job's commands in the same write, so a
/// few connections that always have a job waiting carry mail with half the
/// writes, reads and wake-ups of many connections that each find one. A
/// destination that is slow to answer builds a backlog, and gets more
/// connections as it does (up to its window and
/// `max_connections_per_destination`).
const BACKLOG_PER_CONNECTION: usize = 8;

/// A queue's own limits (its destination's shaping rule, or `Limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub max_connections: usize,
    pub max_messages_per_connection: usize,
}

/// How a queue's [`Caps`] are found when it is created.
pub type CapsOf = Box<dyn Fn(&QueueKey) -> Caps>;

#[derive(Debug)]
struct DestQueue {
    caps: Caps,
    ready: VecDeque<Job>,
    connections: usize,
    /// Connections currently allowed: grows with success, halves on failure.
    window: usize,
    /// In the `wanting` list already.
    listed: bool,
    /// Messages delivered since the window last grew.
    successes: usize,
    /// No connection before this time (the destination just failed).
    suspended_until: u64,
    /// An operator paused it: no connection until resumed.
    paused: bool,
    /// Connections waiting for a job, by park id; the last parked is woken
    /// first, so a burst goes to connections that were just busy and the
    /// ones left over idle out.
    idle: Vec<(u64, Waker)>,
}

impl DestQueue {
    /// Connections this destination should have for its backlog: one per
    /// `backlog_per_connection` ready jobs, within its window and the limit.
    fn wanted(&self, limits: &Limits) -> usize {
        let per = limits.backlog_per_connection.max(1);
        self.ready
            .len()
            .div_ceil(per)
            .min(self.window)
            .min(self.caps.max_connections)
    }
}

/// The queue of `key`, created with its caps, the initial window and
/// (when one of `holds` covers it) paused if new.
fn queue_in<'a>(
    queues: &'a mut HashMap<QueueKey, DestQueue>,
    limits: &Limits,
    caps_of: &CapsOf,
    holds: &[Selection],
    key: &QueueKey,
) -> &'a mut DestQueue {
    queues.entry(key.clone()).or_insert_with(|| {
        let caps = caps_of(key);
        DestQueue {
            caps,
            window: limits
                .initial_connections
                .clamp(1, caps.max_connections.max(1)),
            ready: VecDeque::new(),
            connections: 0,
            listed: false,
            successes: 0,
            suspended_until: 0,
            paused: holds.iter().any(|h| h.covers(key)),
            idle: Vec::new(),
        }
    })
}

/// Puts `key` (whose queue is `q`) on the `wanting` list unless it is on it.
fn list_wanting(wanting: &mut VecDeque<QueueKey>, q: &mut DestQueue, key: &QueueKey) {
    if !q.listed {
        q.listed = true;
        wanting.push_back(key.clone());
    }
}

/// The scheduler of one shard.
pub struct Scheduler {
    limits: Limits,
    caps_of: CapsOf,
    queues: HashMap<QueueKey, DestQueue>,
    deferred: TimerWheel<(QueueKey, Job)>,
    /// Queues that may want another connection, checked by `poll_connect`.
    wanting: VecDeque<QueueKey>,
    due: Vec<(QueueKey, Job)>,
    /// Suspended destinations and when they may be tried again; a handful
    /// at a time, so a list.
    suspended: Vec<(u64, QueueKey)>,
    now_ms: u64,
    /// The last id handed out by `park_id`.
    parks: u64,
    /// The operator's pauses, applied to each queue as it is created.
    holds: Vec<Selection>,
}

impl Scheduler {
    /// A scheduler whose queues all have the caps of `limits`.
    pub fn new(limits: Limits, now_ms: u64) -> Scheduler {
        let caps = Caps {
            max_connections: limits.max_connections_per_destination,
            max_messages_per_connection: limits.max_messages_per_connection,
        };
        Scheduler::with_caps(limits, now_ms, Box::new(move |_| caps))
    }

    /// Moves every job that waits (ready or deferred, not one on a
    /// connection) to the queue `to` names for it, keeping its due time: a
    /// reload that renumbers the egress sources. The queues it leaves keep
    /// their open connections, which find no more work there. Suspensions
    /// end: they were of sources by their old numbers (a backoff's is kept
    /// by name in the budget, and holds the queue again at its next
    /// connection).
    pub fn rekey(&mut self, to: impl Fn(&QueueKey, &Job) -> QueueKey) {
        self.deferred.for_each_mut(|(key, job)| *key = to(key, job));
        for (_, key) in std::mem::take(&mut self.suspended) {
            if let Some(q) = self.queues.get_mut(&key) {
                q.suspended_until = 0;
            }
        }
        let mut ready = Vec::new();
        for (key, q) in &mut self.queues {
            ready.extend(q.ready.drain(..).map(|job| (key.clone(), job)));
        }
        for (key, job) in ready {
            let key = to(&key, &job);
            self.enqueue(key, job);
        }
    }

    /// New limits and caps (a reload): every queue takes its caps again;
    /// open connections above a lower cap finish and are not replaced.
    pub fn set_caps(&mut self, limits: Limits, caps_of: CapsOf) {
        for (key, q) in self.queues.iter_mut() {
            q.caps = caps_of(key);
        }
        self.limits = limits;
        self.caps_of = caps_of;
    }

    /// A scheduler whose queues take their caps from `caps_of` (their
    /// destination's shaping rule), asked once per queue.
    pub fn with_caps(limits: Limits, now_ms: u64, caps_of: CapsOf) -> Scheduler {
        Scheduler {
            limits,
            caps_of,
            queues: HashMap::new(),
            deferred: TimerWheel::new(now_ms),
            wanting: VecDeque::new(),
            due: Vec::new(),
            suspended: Vec::new(),
            now_ms,
            parks: 0,
            holds: Vec::new(),
        }
    }

    fn queue(&mut self, key: &QueueKey) -> &mut DestQueue {
        queue_in(
            &mut self.queues,
            &self.limits,
            &self.caps_of,
            &self.holds,
            key,
        )
    }

    fn mark_wanting(&mut self, key: &QueueKey) {
        let q = queue_in(
            &mut self.queues,
            &self.limits,
            &self.caps_of,
            &self.holds,
            key,
        );
        list_wanting(&mut self.wanting, q, key);
    }

    /// Queues a job for delivery now, and wakes the connection to its
    /// destination that parked last, if one waits. True when no connection
    /// was woken and the destination wants another: `poll_connect` has
    /// one to give.
    pub fn enqueue(&mut self, key: QueueKey, job: Job) -> bool {
        // One lookup: this runs for every message received.
        let q = queue_in(
            &mut self.queues,
            &self.limits,
            &self.caps_of,
            &self.holds,
            &key,
        );
        q.ready.push_back(job);
        if q.paused {
            // It waits for the operator's resume.
            return false;
        }
        if let Some((_, w)) = q.idle.pop() {
            w.wake();
            return false;
        }
        let wants = q.connections < q.wanted(&self.limits) && q.suspended_until <= self.now_ms;
        list_wanting(&mut self.wanting, q, &key);
        wants
    }

    /// A fresh id for [`Scheduler::park`].
    pub fn park_id(&mut self) -> u64 {
        self.parks += 1;
        self.parks
    }

    /// An open connection to `key` waits for a job: the next `enqueue` for
    /// `key` wakes it (the last parked first). Parking again under the
    /// same id only refreshes the waker.
    pub fn park(&mut self, key: &QueueKey, id: u64, waker: &Waker) {
        let idle = &mut self.queue(key).idle;
        match idle.iter_mut().find(|(i, _)| *i == id) {
            Some((_, w)) => w.clone_from(waker),
            None => idle.push((id, waker.clone())),
        }
    }

    /// Whether park `id` still waits (it was not woken).
    pub fn is_parked(&self, key: &QueueKey, id: u64) -> bool {
        self.queues
            .get(key)
            .is_some_and(|q| q.idle.iter().any(|(i, _)| *i == id))
    }

    /// Withdraws park `id` (its connection stopped waiting).
    pub fn unpark(&mut self, key: &QueueKey, id: u64) {
        if let Some(q) = self.queues.get_mut(key) {
            q.idle.retain(|(i, _)| *i != id);
        }
    }

    /// Wakes every parked connection (the shard is stopping).
    pub fn wake_all_parked(&mut self) {
        for q in self.queues.values_mut() {
            for (_, w) in q.idle.drain(..) {
                w.wake();
            }
        }
    }

    /// Parks a job until `until_ms`.
    pub fn defer(&mut self, key: QueueKey, job: Job, until_ms: u64) {
        self.deferred.insert(until_ms, (key, job));
    }

    /// Moves deferred jobs that came due into their ready queues, and
    /// ends suspensions that are over.
    pub fn advance(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
        let mut i = 0;
        while i < self.suspended.len() {
            if self.suspended[i].0 <= now_ms {
                let (_, key) = self.suspended.swap_remove(i);
                let q = self.queue(&key);
                q.suspended_until = 0;
                if q.ready.is_empty() && q.connections == 0 {
                    self.queues.remove(&key);
                } else {
                    self.mark_wanting(&key);
                }
            } else {
                i += 1;
            }
        }
        let mut due = std::mem::take(&mut self.due);
        self.deferred.advance(now_ms, &mut due);
        for (key, job) in due.drain(..) {
            self.enqueue(key, job);
        }
        self.due = due;
    }

    /// When `advance` should run next.
    pub fn next_deadline(&self) -> Option<u64> {
        let suspended = self.suspended.iter().map(|s| s.0).min();
        match (self.deferred.next_due(), suspended) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Opens no connection to `key` before `until_ms`: every host of the
    /// destination just failed, so mail queued for it meanwhile waits
    /// instead of each message costing a connection attempt (like
    /// Postfix's dead destinations).
    pub fn suspend(&mut self, key: &QueueKey, until_ms: u64) {
        let q = self.queue(key);
        if q.suspended_until == 0 {
            self.suspended.push((until_ms, key.clone()));
        }
        let q = self.queue(key);
        q.suspended_until = q.suspended_until.max(until_ms);
        if let Some(s) = self.suspended.iter_mut().find(|s| s.1 == *key) {
            s.0 = s.0.max(until_ms);
        }
    }

    /// A destination that should get one more connection now, if any; the
    /// caller opens it and later reports `connection_closed`.
    pub fn poll_connect(&mut self) -> Option<QueueKey> {
        while let Some(key) = self.wanting.pop_front() {
            let Some(q) = self.queues.get_mut(&key) else {
                continue;
            };
            if q.suspended_until > self.now_ms || q.paused {
                // `advance` lists it again when the suspension ends, and
                // `set_holds` when the operator resumes it.
                q.listed = false;
                continue;
            }
            // Busy connections take the next jobs themselves when they are
            // done: another opens only for a backlog they leave.
            if q.connections < q.wanted(&self.limits) {
                q.connections += 1;
                // It may want yet another connection: look again next time.
                self.wanting.push_back(key.clone());
                return Some(key);
            }
            q.listed = false;
        }
        None
    }

    /// The next job for an open connection to `key` that has already
    /// carried `sent` messages; `None` means close (or idle) it.
    pub fn next_job(&mut self, key: &QueueKey, sent: usize) -> Option<Job> {
        let q = self.queues.get_mut(key)?;
        if sent >= q.caps.max_messages_per_connection || q.paused {
            return None;
        }
        q.ready.pop_front()
    }

    /// A connection to `key` ended; `ok` if it delivered without a
    /// connection-level failure. Success widens the window, failure halves
    /// it, like Postfix's destination concurrency.
    pub fn connection_closed(&mut self, key: &QueueKey, ok: bool) {
        let Some(q) = self.queues.get_mut(key) else {
            return;
        };
        let max = q.caps.max_connections.max(1);
        q.connections = q.connections.saturating_sub(1);
        q.window = if ok {
            (q.window + 1).min(max)
        } else {
            (q.window / 2).max(1)
        };
        let empty = q.ready.is_empty() && q.connections == 0 && q.suspended_until == 0;
        if empty {
            self.queues.remove(key);
        } else if !q.ready.is_empty() {
            self.mark_wanting(key);
        }
    }

    /// A message to `key` was accepted by the destination. The window
    /// grows by one after as many successes as it is wide (Postfix's
    /// positive feedback of 1/concurrency), so a busy destination gets
    /// more connections without waiting for one to close.
    pub fn delivered(&mut self, key: &QueueKey) {
        let Some(q) = self.queues.get_mut(key) else {
            return;
        };
        let max = q.caps.max_connections.max(1);
        q.successes += 1;
        if q.successes >= q.window && q.window < max {
            q.window += 1;
            q.successes = 0;
            if q.connections < q.wanted(&self.limits) {
                self.mark_wanting(key);
            }
        }
    }

    /// Jobs waiting to go out now for `key`.
    pub fn backlog(&self, key: &QueueKey) -> usize {
        self.queues.get(key).map_or(0, |q| q.ready.len())
    }

    /// Open connections to `key`.
    pub fn connections(&self, key: &QueueKey) -> usize {
        self.queues.get(key).map_or(0, |q| q.connections)
    }

    /// Deferred jobs, over all destinations.
    pub fn deferred_len(&self) -> usize {
        self.deferred.len()
    }
}

#[cfg(test)]
mod tests;
