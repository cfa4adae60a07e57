//! An idle connection's place in its destination's idle list
//! (`Scheduler::park`), as a future that resolves when a job queued for
//! the destination wakes it.
//! Must never: stay in the list after its connection stopped waiting (it
//! leaves when dropped), or take a new place for each look at the queue
//! (that would move it to the front of the list).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::task::Poll;

use crate::schedule::{QueueKey, Scheduler};

/// A connection's place in its destination's idle list: taken at the
/// first wait, kept across waits, left when dropped.
pub(super) struct Parking<'a> {
    sched: &'a RefCell<Scheduler>,
    key: &'a QueueKey,
    id: u64,
    /// In the list, unless a job woke it (took it out) since.
    parked: Cell<bool>,
}

impl<'a> Parking<'a> {
    pub fn new(sched: &'a RefCell<Scheduler>, key: &'a QueueKey) -> Parking<'a> {
        let id = sched.borrow_mut().park_id();
        Parking {
            sched,
            key,
            id,
            parked: Cell::new(false),
        }
    }

    /// Resolves when a job queued for the destination wakes this
    /// connection.
    pub fn woken(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            let mut sched = self.sched.borrow_mut();
            if self.parked.get() && !sched.is_parked(self.key, self.id) {
                self.parked.set(false);
                return Poll::Ready(());
            }
            sched.park(self.key, self.id, cx.waker());
            self.parked.set(true);
            Poll::Pending
        })
    }
}

impl Drop for Parking<'_> {
    fn drop(&mut self) {
        if self.parked.get() {
            self.sched.borrow_mut().unpark(self.key, self.id);
        }
    }
}
