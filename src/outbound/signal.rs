//! A wake-up for the dispatcher of one shard: a destination wants another
//! connection, a connection ended, or the shard stops. (Idle connections
//! wait in their destination's queue instead: `Scheduler::park`.)
//!
//! Single-threaded (it lives on one executor), so it needs no atomics.
//! Must never: be shared across shards.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub struct Signal {
    generation: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
}

impl Signal {
    /// Wakes every task waiting now.
    pub fn notify(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// Resolves at the next [`Signal::notify`] after this call.
    pub fn notified(&self) -> Notified<'_> {
        Notified {
            signal: self,
            seen: self.generation.get(),
        }
    }
}

pub struct Notified<'a> {
    signal: &'a Signal,
    seen: u64,
}

impl Future for Notified<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.generation.get() != self.seen {
            return Poll::Ready(());
        }
        let mut waiters = self.signal.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notify_after_the_call_wakes_and_one_before_does_not() {
        let s = Signal::default();
        s.notify();
        let mut f = std::pin::pin!(s.notified());
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(f.as_mut().poll(&mut cx).is_pending());
        s.notify();
        assert!(f.as_mut().poll(&mut cx).is_ready());
    }
}
