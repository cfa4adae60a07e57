//! Group commit: appends wait for the next fdatasync that covers them.
//!
//! Appends bump a write counter; a single sync task per shard waits for the
//! counter to move, takes a snapshot of it, syncs every dirty segment, and
//! then declares everything up to the snapshot durable. Whatever was
//! appended while a sync ran rides the next one, so one sync is in flight at
//! a time and its cost is shared by every append of the batch.
//!
//! A failed sync is final: every waiter gets the error, and so does every
//! later append (the kernel may have dropped the dirty pages, and a retried
//! fsync can report success without them).
//! Must never: retry a failed sync, or declare durable what a sync did
//! not cover.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::task::{Poll, Waker};

use futures_lite::future::poll_fn;

/// Shared state between appenders and the sync task of one shard.
#[derive(Default)]
pub struct GroupCommit {
    written: Cell<u64>,
    durable: Cell<u64>,
    failed: Cell<bool>,
    closed: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
    syncer: RefCell<Option<Waker>>,
    /// Number of syncs issued, and appends they covered (for metrics).
    pub syncs: Cell<u64>,
}

/// The ticket of one append: durable once the sync position passes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u64);

impl GroupCommit {
    /// Registers an append that has been written to the mapping.
    pub fn written(&self) -> Ticket {
        let t = self.written.get() + 1;
        self.written.set(t);
        if let Some(w) = self.syncer.borrow_mut().take() {
            w.wake();
        }
        Ticket(t)
    }

    pub fn has_failed(&self) -> bool {
        self.failed.get()
    }

    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Resolves once the ticket is durable; `false` if a sync failed first.
    pub fn wait(&self, t: Ticket) -> impl Future<Output = bool> + '_ {
        poll_fn(move |cx| {
            if self.durable.get() >= t.0 {
                return Poll::Ready(true);
            }
            if self.failed.get() || self.closed.get() {
                return Poll::Ready(false);
            }
            self.waiters.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
    }

    /// The sync task: waits for work, returns the position a sync started
    /// now would cover, or `None` once closed.
    pub fn next_batch(&self) -> impl Future<Output = Option<u64>> + '_ {
        poll_fn(move |cx| {
            if self.closed.get() || self.failed.get() {
                return Poll::Ready(None);
            }
            let w = self.written.get();
            if w > self.durable.get() {
                return Poll::Ready(Some(w));
            }
            *self.syncer.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
    }

    /// Called by the sync task when a sync covering `upto` finished.
    pub fn completed(&self, upto: u64, ok: bool) {
        if ok {
            self.durable.set(self.durable.get().max(upto));
            self.syncs.set(self.syncs.get() + 1);
        } else {
            self.failed.set(true);
        }
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// Stops the sync task after its current batch; pending waiters fail.
    pub fn close(&self) {
        self.closed.set(true);
        if let Some(w) = self.syncer.borrow_mut().take() {
            w.wake();
        }
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// Appends written but not yet durable (the batch fill level).
    pub fn in_flight(&self) -> u64 {
        self.written.get() - self.durable.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;
    use std::pin::pin;
    use std::task::Context;

    #[test]
    fn appends_resolve_only_after_a_covering_sync() {
        let gc = GroupCommit::default();
        let t1 = gc.written();
        let mut cx = Context::from_waker(Waker::noop());
        let mut w1 = pin!(gc.wait(t1));
        assert!(w1.as_mut().poll(&mut cx).is_pending());
        let batch = block_on(gc.next_batch()).expect("work");
        assert_eq!(batch, 1);
        let t2 = gc.written(); // arrives while the sync runs: next batch
        gc.completed(batch, true);
        assert_eq!(w1.as_mut().poll(&mut cx), Poll::Ready(true));
        let mut w2 = pin!(gc.wait(t2));
        assert!(w2.as_mut().poll(&mut cx).is_pending());
        assert_eq!(block_on(gc.next_batch()), Some(2));
    }

    #[test]
    fn a_failed_sync_fails_every_waiter_and_later_appends() {
        let gc = GroupCommit::default();
        let t1 = gc.written();
        let b = block_on(gc.next_batch()).expect("work");
        gc.completed(b, false);
        assert!(!block_on(gc.wait(t1)));
        let t2 = gc.written();
        assert!(!block_on(gc.wait(t2)));
        assert!(gc.has_failed());
        assert_eq!(block_on(gc.next_batch()), None);
    }
}
