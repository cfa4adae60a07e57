//! Process-wide connection counts per budget (egress source × destination
//! or MX rollup), so that its `max_connections` holds for the whole
//! process while every shard delivers the messages in its own spool.
//!
//! A [`SlotTable`] of atomic counters indexed by a hash of the budget: two
//! budgets that share a slot share a cap, which only ever makes it
//! stricter (with 65,536 slots, rare). A counter is touched once per
//! connection, never per message, so the hot path stays on its own core.
//!
//! Each entry also counts the connection tasks waiting for it, so that a
//! connection holding a slot gives it up when another shard needs it
//! (instead of idling on it, or keeping it for all its messages).

use std::sync::atomic::{AtomicU32, Ordering};

use super::budget::Budget;
use crate::slot_table::SlotTable;

#[derive(Default)]
struct Entry {
    open: AtomicU32,
    waiting: AtomicU32,
}

static TABLE: SlotTable<Entry> = SlotTable::new();

/// Budget names are lower-case already (destinations and MX patterns).
fn slot_of(budget: &Budget) -> &'static Entry {
    TABLE.entry(budget.key())
}

/// One open (or opening) connection to a destination; released on drop.
pub struct ConnectionSlot(&'static Entry);

impl ConnectionSlot {
    /// A slot if fewer than `max` connections of `budget` are open in
    /// the whole process.
    pub fn try_acquire(budget: &Budget, max: usize) -> Option<ConnectionSlot> {
        let entry = slot_of(budget);
        let max = u32::try_from(max).unwrap_or(u32::MAX);
        entry
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| ConnectionSlot(entry))
    }

    /// Another connection task is waiting for a slot of this destination.
    pub fn contested(&self) -> bool {
        self.0.waiting.load(Ordering::Acquire) > 0
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection task waiting for a slot of a destination; makes holders
/// see [`ConnectionSlot::contested`] until dropped.
pub struct SlotWaiter(&'static Entry);

impl SlotWaiter {
    pub fn new(budget: &Budget) -> SlotWaiter {
        let entry = slot_of(budget);
        entry.waiting.fetch_add(1, Ordering::AcqRel);
        SlotWaiter(entry)
    }
}

impl Drop for SlotWaiter {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::schedule::EgressId;
    use std::rc::Rc;

    fn budget(source: EgressId, destination: &str) -> Budget {
        let config = Config::from_str_named(
            "[[source]]\nname = \"a\"\naddress = \"127.0.0.2\"\n[[source]]\nname = \"b\"\naddress = \"127.0.0.3\"\n",
            "test.toml",
        )
        .expect("config");
        Budget::of(&config, source, &Rc::from(destination), [])
    }

    #[test]
    fn the_cap_holds_across_threads_and_frees_on_drop() {
        let dest = "slots-test.example";
        let held: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        let b = budget(0, dest);
                        (0..10)
                            .filter_map(|_| ConnectionSlot::try_acquire(&b, 7))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(held.len(), 7);
        assert!(ConnectionSlot::try_acquire(&budget(0, dest), 7).is_none());
        // Another source has a budget of its own.
        assert!(ConnectionSlot::try_acquire(&budget(1, dest), 7).is_some());
        drop(held);
        assert!(ConnectionSlot::try_acquire(&budget(0, dest), 7).is_some());
    }

    #[test]
    fn a_waiter_makes_the_holders_see_contention() {
        let b = budget(0, "contested.example");
        let held = ConnectionSlot::try_acquire(&b, 1).unwrap();
        assert!(!held.contested());
        let waiter = SlotWaiter::new(&b);
        assert!(held.contested());
        drop(waiter);
        assert!(!held.contested());
    }
}
