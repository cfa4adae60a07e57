//! What an operator may do to a shard's queues, as the scheduler sees it:
//! pause and resume destinations, lift a suspension, make deferred jobs
//! due now, take jobs out (to bounce or delete them), and look at every
//! queue.
//!
//! These run when an operator asks, never per message: they may walk
//! every queue and the whole retry wheel. Pauses are kept as selections
//! and applied to a queue when it is created, so mail for a paused
//! destination that arrives later waits too.
//! Must never: lose a job (one taken out is handed to the caller), or read
//! a clock.

use std::collections::{HashMap, HashSet};

use super::{EgressId, Job, QueueKey, Scheduler};

/// Queues an operator names: those of one destination (or of every one),
/// on some sources (or on all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// `None`: every destination.
    pub destination: Option<Box<str>>,
    /// `None`: every source.
    pub sources: Option<Vec<EgressId>>,
}

impl Selection {
    /// True when `key`'s queue is one of those named.
    pub fn covers(&self, key: &QueueKey) -> bool {
        let destination = self
            .destination
            .as_deref()
            .is_none_or(|d| d.eq_ignore_ascii_case(&key.destination));
        let source = self
            .sources
            .as_ref()
            .is_none_or(|s| s.contains(&key.egress));
        destination && source
    }
}

/// One queue as an operator sees it (`petrel queue list`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueView {
    pub key: QueueKey,
    /// Jobs ready to go out now.
    pub ready: usize,
    /// Jobs waiting for a retry.
    pub deferred: usize,
    /// Distinct messages among both.
    pub messages: usize,
    pub connections: usize,
    /// No connection before this time (monotonic ms); 0: none.
    pub suspended_until: u64,
    pub paused: bool,
    /// When the oldest message waiting was received (wall ms).
    pub oldest_received_ms: Option<u64>,
}

impl QueueView {
    fn new(key: QueueKey) -> QueueView {
        QueueView {
            key,
            ready: 0,
            deferred: 0,
            messages: 0,
            connections: 0,
            suspended_until: 0,
            paused: false,
            oldest_received_ms: None,
        }
    }

    fn count(&mut self, job: &Job, seen: &mut HashSet<u64>) {
        if seen.insert(job.msg_id) {
            self.messages += 1;
        }
        let oldest = self.oldest_received_ms.get_or_insert(job.received_ms);
        *oldest = (*oldest).min(job.received_ms);
    }
}

impl Scheduler {
    /// Replaces the operator's pauses: queues they cover open no
    /// connection and hand out no job; queues they no longer cover go on.
    pub fn set_holds(&mut self, holds: Vec<Selection>) {
        self.holds = holds;
        let mut resumed = Vec::new();
        for (key, q) in &mut self.queues {
            let paused = self.holds.iter().any(|h| h.covers(key));
            if q.paused && !paused && !q.ready.is_empty() {
                resumed.push(key.clone());
            }
            q.paused = paused;
        }
        for key in resumed {
            self.mark_wanting(&key);
        }
    }

    /// Ends the suspensions of the queues `sel` names (an operator's
    /// resume, or a flush); how many were suspended.
    pub fn lift_suspensions(&mut self, sel: &Selection) -> usize {
        let before = self.suspended.len();
        self.suspended.retain(|(_, key)| !sel.covers(key));
        let mut wanting = Vec::new();
        for (key, q) in &mut self.queues {
            if sel.covers(key) && q.suspended_until != 0 {
                q.suspended_until = 0;
                if !q.ready.is_empty() {
                    wanting.push(key.clone());
                }
            }
        }
        for key in wanting {
            self.mark_wanting(&key);
        }
        before - self.suspended.len()
    }

    /// Makes the deferred jobs of the queues `sel` names due now, and
    /// ends those queues' suspensions; how many jobs.
    pub fn flush(&mut self, sel: &Selection) -> usize {
        let mut due = Vec::new();
        self.deferred
            .take_where(|(key, _)| sel.covers(key), &mut due);
        self.lift_suspensions(sel);
        let n = due.len();
        for (key, job) in due {
            self.enqueue(key, job);
        }
        n
    }

    /// Takes out every job, ready or deferred, that `pick` chooses (not
    /// those on a connection now); the caller settles each.
    pub fn take_jobs(&mut self, pick: impl Fn(&QueueKey, &Job) -> bool) -> Vec<(QueueKey, Job)> {
        let mut out = Vec::new();
        self.deferred.take_where(|(k, j)| pick(k, j), &mut out);
        let mut emptied = Vec::new();
        for (key, q) in &mut self.queues {
            let mut i = 0;
            while i < q.ready.len() {
                if pick(key, &q.ready[i]) {
                    if let Some(job) = q.ready.remove(i) {
                        out.push((key.clone(), job));
                    }
                } else {
                    i += 1;
                }
            }
            let idle = q.ready.is_empty() && q.connections == 0 && q.suspended_until == 0;
            if idle && q.idle.is_empty() {
                emptied.push(key.clone());
            }
        }
        for key in emptied {
            self.queues.remove(&key);
        }
        out
    }

    /// Every queue with a job waiting or a connection open, sorted by key.
    pub fn snapshot(&self) -> Vec<QueueView> {
        let mut views: HashMap<&QueueKey, (QueueView, HashSet<u64>)> = HashMap::new();
        let new = |key: &QueueKey| (QueueView::new(key.clone()), HashSet::new());
        for (key, q) in &self.queues {
            let (v, seen) = views.entry(key).or_insert_with(|| new(key));
            v.ready = q.ready.len();
            v.connections = q.connections;
            v.suspended_until = q.suspended_until;
            v.paused = q.paused;
            for job in &q.ready {
                v.count(job, seen);
            }
        }
        for (_, (key, job)) in self.deferred.iter() {
            let (v, seen) = views.entry(key).or_insert_with(|| {
                let mut fresh = new(key);
                fresh.0.paused = self.holds.iter().any(|h| h.covers(key));
                fresh
            });
            v.deferred += 1;
            v.count(job, seen);
        }
        let mut out: Vec<QueueView> = views
            .into_values()
            .map(|(v, _)| v)
            .filter(|v| v.ready + v.deferred + v.connections > 0)
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::super::{Limits, Scheduler};
    use super::*;

    fn key(source: EgressId, d: &str) -> QueueKey {
        QueueKey {
            egress: source,
            destination: Rc::from(d),
        }
    }

    fn job(id: u64, received_ms: u64) -> Job {
        Job {
            msg_id: id,
            rcpts: vec![0],
            attempts: 0,
            received_ms,
            pool: 0,
        }
    }

    fn on(destination: &str, sources: Option<Vec<EgressId>>) -> Selection {
        Selection {
            destination: Some(destination.into()),
            sources,
        }
    }

    #[test]
    fn a_selection_names_a_destination_on_some_sources_or_all() {
        let all = on("A.example", None);
        assert!(all.covers(&key(0, "a.example")));
        assert!(all.covers(&key(3, "a.example")));
        assert!(!all.covers(&key(0, "b.example")));
        let one = on("a.example", Some(vec![1]));
        assert!(one.covers(&key(1, "a.example")));
        assert!(!one.covers(&key(0, "a.example")));
        let every = Selection {
            destination: None,
            sources: None,
        };
        assert!(every.covers(&key(7, "anything.example")));
    }

    #[test]
    fn a_paused_queue_opens_nothing_and_hands_out_nothing_until_resumed() {
        let mut s = Scheduler::new(Limits::default(), 0);
        s.set_holds(vec![on("a.example", None)]);
        // A queue created after the pause is paused too.
        assert!(!s.enqueue(key(0, "a.example"), job(1, 0)));
        assert!(s.enqueue(key(0, "b.example"), job(2, 0)));
        assert_eq!(s.poll_connect(), Some(key(0, "b.example")));
        assert_eq!(s.poll_connect(), None);
        assert_eq!(s.next_job(&key(0, "a.example"), 0), None);
        s.set_holds(Vec::new());
        assert_eq!(s.poll_connect(), Some(key(0, "a.example")));
        assert_eq!(s.next_job(&key(0, "a.example"), 0), Some(job(1, 0)));
    }

    #[test]
    fn a_pause_narrowed_to_a_source_leaves_the_others_going() {
        let mut s = Scheduler::new(Limits::default(), 0);
        s.set_holds(vec![on("a.example", Some(vec![1]))]);
        assert!(!s.enqueue(key(1, "a.example"), job(1, 0)));
        assert!(s.enqueue(key(0, "a.example"), job(2, 0)));
    }

    #[test]
    fn flush_makes_deferred_jobs_due_and_lifts_the_suspension() {
        let mut s = Scheduler::new(Limits::default(), 0);
        let (a, b) = (key(0, "a.example"), key(0, "b.example"));
        s.defer(a.clone(), job(1, 0), 3_600_000);
        s.defer(b.clone(), job(2, 0), 3_600_000);
        s.suspend(&a, 3_600_000);
        s.advance(1_000);
        assert_eq!(s.poll_connect(), None);
        assert_eq!(s.flush(&on("a.example", None)), 1);
        assert_eq!(s.poll_connect(), Some(a.clone()));
        assert_eq!(s.poll_connect(), None, "b's job still waits");
        assert_eq!(s.deferred_len(), 1);
        assert_eq!(s.next_deadline(), Some(3_600_000));
    }

    #[test]
    fn lifting_a_suspension_lets_the_queue_connect_again() {
        let mut s = Scheduler::new(Limits::default(), 0);
        let a = key(0, "a.example");
        s.suspend(&a, 3_600_000);
        assert!(!s.enqueue(a.clone(), job(1, 0)));
        assert_eq!(s.poll_connect(), None);
        assert_eq!(s.lift_suspensions(&on("a.example", None)), 1);
        assert_eq!(s.poll_connect(), Some(a));
        assert_eq!(s.next_deadline(), None);
    }

    #[test]
    fn taken_jobs_leave_ready_queues_and_the_wheel() {
        let mut s = Scheduler::new(Limits::default(), 0);
        let (a, b) = (key(0, "a.example"), key(0, "b.example"));
        s.enqueue(a.clone(), job(1, 0));
        s.enqueue(a.clone(), job(2, 0));
        s.defer(a.clone(), job(3, 0), 60_000);
        s.enqueue(b.clone(), job(4, 0));
        let mut taken = s.take_jobs(|k, j| *k == a && j.msg_id != 2);
        taken.sort_by_key(|(_, j)| j.msg_id);
        let ids: Vec<u64> = taken.iter().map(|(_, j)| j.msg_id).collect();
        assert_eq!(ids, [1, 3]);
        assert_eq!(s.backlog(&a), 1);
        assert_eq!(s.backlog(&b), 1);
        assert_eq!(s.deferred_len(), 0);
    }

    #[test]
    fn the_snapshot_counts_jobs_messages_and_the_oldest_per_queue() {
        let mut s = Scheduler::new(Limits::default(), 0);
        let (a, b) = (key(0, "a.example"), key(1, "a.example"));
        s.set_holds(vec![on("a.example", Some(vec![1]))]);
        s.enqueue(a.clone(), job(1, 500));
        // Two parts of one message.
        s.enqueue(a.clone(), job(2, 300));
        s.enqueue(a.clone(), job(2, 300));
        s.defer(a.clone(), job(3, 100), 60_000);
        s.defer(b.clone(), job(4, 900), 60_000);
        s.suspend(&a, 5_000);
        let views = s.snapshot();
        assert_eq!(views.len(), 2);
        let va = &views[0];
        assert_eq!(va.key, a);
        assert_eq!((va.ready, va.deferred, va.messages), (3, 1, 3));
        assert_eq!(va.oldest_received_ms, Some(100));
        assert_eq!(va.suspended_until, 5_000);
        assert!(!va.paused);
        let vb = &views[1];
        assert_eq!((vb.ready, vb.deferred, vb.messages), (0, 1, 1));
        assert!(vb.paused, "a deferred job's queue shows the pause");
    }
}
