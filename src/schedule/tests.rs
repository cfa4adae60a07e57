//! Scheduler rules on virtual time.

use super::*;

fn key(d: &str) -> QueueKey {
    QueueKey {
        egress: 0,
        destination: Rc::from(d),
    }
}

fn job(id: u64) -> Job {
    Job {
        msg_id: id,
        rcpts: vec![0],
        attempts: 0,
        received_ms: 0,
        pool: 0,
    }
}

#[test]
fn connections_grow_with_the_window_up_to_the_limit() {
    let limits = Limits {
        max_connections_per_destination: 3,
        initial_connections: 2,
        backlog_per_connection: 1,
        ..Limits::default()
    };
    let mut s = Scheduler::new(limits, 0);
    let k = key("example.test");
    s.enqueue(k.clone(), job(1));
    assert_eq!(s.poll_connect(), Some(k.clone()));
    assert_eq!(s.poll_connect(), None, "one job needs one connection");
    for i in 2..10 {
        s.enqueue(k.clone(), job(i));
    }
    assert_eq!(s.poll_connect(), Some(k.clone()));
    assert_eq!(s.poll_connect(), None, "initial window is 2");
    s.connection_closed(&k, true);
    // Success widened the window to 3, and a slot is free again.
    assert_eq!(s.poll_connect(), Some(k.clone()));
    assert_eq!(s.poll_connect(), Some(k.clone()));
    assert_eq!(s.connections(&k), 3);
    assert_eq!(
        s.poll_connect(),
        None,
        "max_connections_per_destination is 3"
    );
}

#[test]
fn failures_halve_the_window() {
    let limits = Limits {
        max_connections_per_destination: 8,
        initial_connections: 8,
        backlog_per_connection: 1,
        ..Limits::default()
    };
    let mut s = Scheduler::new(limits, 0);
    let k = key("slow.test");
    for i in 0..20 {
        s.enqueue(k.clone(), job(i));
    }
    while s.poll_connect().is_some() {}
    assert_eq!(s.connections(&k), 8);
    for _ in 0..8 {
        s.connection_closed(&k, false);
    }
    let mut opened = 0;
    while s.poll_connect().is_some() {
        opened += 1;
    }
    assert_eq!(opened, 1, "eight failures shrink the window to one");
}

#[test]
fn a_connection_is_reused_up_to_its_message_limit() {
    let limits = Limits {
        max_messages_per_connection: 2,
        ..Limits::default()
    };
    let mut s = Scheduler::new(limits, 0);
    let k = key("a.test");
    for i in 0..3 {
        s.enqueue(k.clone(), job(i));
    }
    assert_eq!(s.next_job(&k, 0).map(|j| j.msg_id), Some(0));
    assert_eq!(s.next_job(&k, 1).map(|j| j.msg_id), Some(1));
    assert_eq!(s.next_job(&k, 2), None);
    assert_eq!(s.backlog(&k), 1);
}

#[test]
fn deferred_jobs_return_when_due() {
    let mut s = Scheduler::new(Limits::default(), 0);
    let k = key("later.test");
    s.defer(k.clone(), job(7), 300_000);
    assert_eq!(s.deferred_len(), 1);
    assert!(s.next_deadline().is_some_and(|d| d <= 300_000));
    s.advance(299_999);
    assert_eq!(s.poll_connect(), None);
    s.advance(300_000);
    assert_eq!(s.poll_connect(), Some(k.clone()));
    assert_eq!(s.next_job(&k, 0).map(|j| j.msg_id), Some(7));
    assert_eq!(s.deferred_len(), 0);
}

#[test]
fn the_limit_holds_under_random_traffic() {
    // A seeded random mix of arrivals, openings and closings: the number of
    // open connections of a destination never exceeds the limit.
    let limits = Limits {
        max_connections_per_destination: 4,
        initial_connections: 2,
        ..Limits::default()
    };
    let mut s = Scheduler::new(limits, 0);
    let keys = [key("a.test"), key("b.test"), key("c.test")];
    let mut open: Vec<QueueKey> = Vec::new();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for step in 0..20_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        match x % 3 {
            0 => {
                let k = keys[(x >> 8) as usize % 3].clone();
                if s.enqueue(k.clone(), job(step)) {
                    // It said a connection is wanted: the dispatcher gets one.
                    open.push(s.poll_connect().expect("a wanted connection"));
                }
            }
            1 => {
                if let Some(k) = s.poll_connect() {
                    open.push(k);
                }
            }
            _ => {
                if !open.is_empty() {
                    let k = open.swap_remove((x >> 8) as usize % open.len());
                    let _ = s.next_job(&k, 0);
                    s.connection_closed(&k, x & 1 == 0);
                }
            }
        }
        for k in &keys {
            let n = open.iter().filter(|o| *o == k).count();
            assert_eq!(n, s.connections(k));
            assert!(n <= 4, "step {step}: {n} connections to {}", k.destination);
        }
    }
}

#[test]
fn deliveries_widen_the_window_while_connections_stay_open() {
    let limits = Limits {
        max_connections_per_destination: 4,
        initial_connections: 2,
        backlog_per_connection: 1,
        ..Limits::default()
    };
    let mut s = Scheduler::new(limits, 0);
    let k = key("busy.test");
    for i in 0..10 {
        s.enqueue(k.clone(), job(i));
    }
    assert_eq!(s.poll_connect(), Some(k.clone()));
    assert_eq!(s.poll_connect(), Some(k.clone()));
    assert_eq!(s.poll_connect(), None);
    s.delivered(&k);
    assert_eq!(s.poll_connect(), None, "one success of a window of 2");
    s.delivered(&k);
    assert_eq!(s.poll_connect(), Some(k.clone()), "the window grew to 3");
    assert_eq!(s.poll_connect(), None);
    for _ in 0..3 {
        s.delivered(&k);
    }
    assert_eq!(s.poll_connect(), Some(k.clone()), "the window grew to 4");
    for _ in 0..10 {
        s.delivered(&k);
    }
    assert_eq!(s.poll_connect(), None, "never above the limit");
    assert_eq!(s.connections(&k), 4);
}

#[test]
fn a_suspended_destination_gets_no_connection_until_it_ends() {
    let limits = Limits {
        initial_connections: 2,
        backlog_per_connection: 1,
        ..Limits::default()
    };
    let mut s = Scheduler::new(limits, 0);
    let k = key("down.test");
    s.enqueue(k.clone(), job(1));
    assert_eq!(s.poll_connect(), Some(k.clone()));
    s.suspend(&k, 60_000);
    s.connection_closed(&k, false);
    // Mail keeps arriving while the destination is down.
    for i in 2..100 {
        s.enqueue(k.clone(), job(i));
    }
    s.advance(59_000);
    assert_eq!(s.poll_connect(), None);
    assert_eq!(s.next_deadline(), Some(60_000));
    s.advance(60_000);
    assert_eq!(s.poll_connect(), Some(k.clone()), "one try when it ends");
    assert_eq!(s.poll_connect(), None, "the failure halved the window to 1");
    assert_eq!(s.backlog(&k), 99, "all still queued");
}

#[test]
fn an_empty_suspended_destination_is_forgotten_when_it_ends() {
    let mut s = Scheduler::new(Limits::default(), 0);
    let k = key("gone.test");
    s.enqueue(k.clone(), job(1));
    assert_eq!(s.poll_connect(), Some(k.clone()));
    assert_eq!(s.next_job(&k, 0), Some(job(1)));
    s.suspend(&k, 1_000);
    s.connection_closed(&k, false);
    s.advance(1_000);
    assert_eq!(s.next_deadline(), None);
    assert_eq!(s.poll_connect(), None);
    s.enqueue(k.clone(), job(2));
    assert_eq!(s.poll_connect(), Some(k));
}

#[test]
fn another_connection_opens_only_for_the_backlog_the_open_ones_leave() {
    let limits = Limits {
        max_connections_per_destination: 20,
        initial_connections: 20,
        backlog_per_connection: 4,
        ..Limits::default()
    };
    let mut s = Scheduler::new(limits, 0);
    let k = key("bulk.test");
    assert!(
        s.enqueue(k.clone(), job(0)),
        "the first job wants a connection"
    );
    assert_eq!(s.poll_connect(), Some(k.clone()));
    assert_eq!(s.poll_connect(), None);
    for i in 1..4 {
        assert!(
            !s.enqueue(k.clone(), job(i)),
            "job {i} waits for the open one"
        );
    }
    assert_eq!(s.poll_connect(), None, "four jobs for one connection");
    assert!(
        s.enqueue(k.clone(), job(4)),
        "the fifth is more than one takes"
    );
    assert_eq!(s.poll_connect(), Some(k.clone()));
    assert_eq!(s.poll_connect(), None);
    for i in 5..40 {
        s.enqueue(k.clone(), job(i));
    }
    while s.poll_connect().is_some() {}
    assert_eq!(s.connections(&k), 10, "40 ready jobs, 4 per connection");
    // The open connections drain the queue: none is added meanwhile.
    for i in 0..40 {
        assert_eq!(s.next_job(&k, 0).map(|j| j.msg_id), Some(i));
        assert_eq!(s.poll_connect(), None);
    }
}

/// A waker that counts its wakes.
struct CountingWaker(std::sync::atomic::AtomicUsize);

impl std::task::Wake for CountingWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

fn counting_waker() -> (std::sync::Arc<CountingWaker>, Waker) {
    let c = std::sync::Arc::new(CountingWaker(0.into()));
    (c.clone(), Waker::from(c))
}

fn wakes(c: &CountingWaker) -> usize {
    c.0.load(std::sync::atomic::Ordering::Relaxed)
}

#[test]
fn a_job_wakes_the_connection_that_parked_last_and_only_it() {
    let mut s = Scheduler::new(Limits::default(), 0);
    let k = key("idle.test");
    let other = key("other.test");
    s.enqueue(k.clone(), job(0));
    assert_eq!(s.poll_connect(), Some(k.clone()));
    assert_eq!(s.poll_connect(), None);
    assert_eq!(s.next_job(&k, 0), Some(job(0)));
    let (first, first_waker) = counting_waker();
    let (last, last_waker) = counting_waker();
    let (a, b) = (s.park_id(), s.park_id());
    s.park(&k, a, &first_waker);
    s.park(&k, b, &last_waker);
    s.park(&k, b, &last_waker);
    assert!(s.is_parked(&k, a) && s.is_parked(&k, b));

    s.enqueue(other.clone(), job(1));
    assert_eq!((wakes(&first), wakes(&last)), (0, 0), "another destination");

    assert!(
        !s.enqueue(k.clone(), job(2)),
        "a parked connection takes it"
    );
    assert_eq!((wakes(&first), wakes(&last)), (0, 1));
    assert!(!s.is_parked(&k, b));
    assert!(s.is_parked(&k, a));

    s.unpark(&k, a);
    assert!(!s.is_parked(&k, a));
    s.enqueue(k.clone(), job(3));
    assert_eq!(wakes(&first), 0, "an unparked connection is not woken");
}

#[test]
fn stopping_wakes_every_parked_connection() {
    let mut s = Scheduler::new(Limits::default(), 0);
    let keys = [key("a.test"), key("b.test")];
    let (c, w) = counting_waker();
    for k in &keys {
        s.enqueue(k.clone(), job(0));
        assert_eq!(s.poll_connect(), Some(k.clone()));
        let id = s.park_id();
        s.park(k, id, &w);
    }
    s.wake_all_parked();
    assert_eq!(wakes(&c), 2);
    assert!(keys
        .iter()
        .all(|k| !s.is_parked(k, 1) && !s.is_parked(k, 2)));
}

#[test]
fn rekeyed_jobs_keep_their_due_time_and_old_suspensions_end() {
    let mut s = Scheduler::new(Limits::default(), 0);
    let (old, new) = (
        key("a.example"),
        QueueKey {
            egress: 1,
            ..key("a.example")
        },
    );
    s.enqueue(old.clone(), job(1));
    s.defer(old.clone(), job(2), 60_000);
    s.suspend(&old, 3_600_000);
    s.rekey(|k, _| QueueKey {
        egress: 1,
        ..k.clone()
    });
    assert_eq!(s.backlog(&old), 0);
    assert_eq!(s.backlog(&new), 1);
    assert_eq!(
        s.poll_connect(),
        Some(new.clone()),
        "not held by the old suspension"
    );
    assert_eq!(
        s.next_deadline(),
        Some(60_000),
        "the deferred job keeps its time"
    );
    s.advance(60_000);
    assert_eq!(s.backlog(&new), 2);
    assert_eq!(s.backlog(&old), 0);
}
