//! Sharing one query among concurrent lookups of the same (name, type).
//!
//! Owns: the map of lookups in flight on this shard and the hand-over of
//! the result to waiters. Must never: leave a waiter hanging; a leader
//! that is dropped before finishing wakes its waiters with an error.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use hickory_proto::rr::{Name, RecordType};

use super::error::{DnsError, TempReason};
use super::wire::Outcome;

type Key = (Name, RecordType);
type LookupResult = Result<Outcome, DnsError>;

#[derive(Default)]
struct Slot {
    result: Option<LookupResult>,
    wakers: Vec<Waker>,
}

/// Lookups in flight, shared by the tasks of one shard.
#[derive(Default)]
pub(crate) struct InFlight {
    map: RefCell<HashMap<Key, Rc<RefCell<Slot>>>>,
}

/// What a lookup should do: run the query, or wait for the one running.
pub(crate) enum Role<'a> {
    Leader(Leader<'a>),
    Waiter(Waiter),
}

impl InFlight {
    pub(crate) fn join(&self, name: &Name, rtype: RecordType) -> Role<'_> {
        let key = (name.clone(), rtype);
        let mut map = self.map.borrow_mut();
        if let Some(slot) = map.get(&key) {
            return Role::Waiter(Waiter { slot: slot.clone() });
        }
        let slot = Rc::new(RefCell::new(Slot::default()));
        map.insert(key.clone(), slot.clone());
        Role::Leader(Leader {
            owner: self,
            key,
            slot,
            done: false,
        })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.borrow().len()
    }
}

/// The lookup that runs the query; it must call [`Leader::finish`].
pub(crate) struct Leader<'a> {
    owner: &'a InFlight,
    key: Key,
    slot: Rc<RefCell<Slot>>,
    done: bool,
}

impl Leader<'_> {
    /// Publishes the result to every waiter and forgets the entry.
    pub(crate) fn finish(mut self, result: &LookupResult) {
        self.publish(result.clone());
    }

    fn publish(&mut self, result: LookupResult) {
        self.done = true;
        self.owner.map.borrow_mut().remove(&self.key);
        let wakers = {
            let mut slot = self.slot.borrow_mut();
            slot.result = Some(result);
            std::mem::take(&mut slot.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        if !self.done {
            let name = self.key.0.to_ascii();
            self.publish(Err(DnsError::temporary(&name, TempReason::Abandoned)));
        }
    }
}

/// A future resolving to the leader's result.
pub(crate) struct Waiter {
    slot: Rc<RefCell<Slot>>,
}

impl Future for Waiter {
    type Output = LookupResult;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<LookupResult> {
        let mut slot = self.slot.borrow_mut();
        if let Some(result) = &slot.result {
            return Poll::Ready(result.clone());
        }
        if !slot.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            slot.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future;

    fn name() -> Name {
        super::super::parse_name("x.test").unwrap()
    }

    #[test]
    fn waiters_get_the_leaders_result() {
        let f = InFlight::default();
        let Role::Leader(leader) = f.join(&name(), RecordType::A) else {
            panic!("first lookup must lead");
        };
        let Role::Waiter(mut w) = f.join(&name(), RecordType::A) else {
            panic!("second lookup must wait");
        };
        assert!(matches!(f.join(&name(), RecordType::MX), Role::Leader(_)));
        assert!(future::block_on(future::poll_once(&mut w)).is_none());
        leader.finish(&Ok(Outcome::NxDomain));
        assert_eq!(future::block_on(w), Ok(Outcome::NxDomain));
        assert_eq!(f.len(), 0);
    }

    #[test]
    fn dropped_leader_fails_waiters() {
        let f = InFlight::default();
        let leader = f.join(&name(), RecordType::A);
        let Role::Waiter(w) = f.join(&name(), RecordType::A) else {
            panic!("second lookup must wait");
        };
        drop(leader);
        assert!(future::block_on(w).is_err_and(|e| e.is_temporary()));
        assert_eq!(f.len(), 0);
    }
}
