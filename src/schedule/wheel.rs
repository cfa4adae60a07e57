//! A hashed timer wheel for deferred deliveries: insert and expiry cost
//! O(1) amortised whatever the queue size, so a million deferred messages
//! cost nothing until they come due.
//!
//! It owns only due times and opaque items; it never reads a clock: the
//! caller advances it with `now`.

use std::collections::VecDeque;

/// Milliseconds per slot: retries are scheduled in minutes, so a second
/// of lateness is noise.
const TICK_MS: u64 = 1_000;
/// Slots in the wheel (a power of two); later items wait extra rounds.
const SLOTS: usize = 4096;

struct Entry<T> {
    due_ms: u64,
    item: T,
}

/// Items waiting for a time.
pub struct TimerWheel<T> {
    slots: Vec<VecDeque<Entry<T>>>,
    /// The tick the wheel has advanced to (all earlier slots are empty).
    cursor: u64,
    len: usize,
}

impl<T> TimerWheel<T> {
    pub fn new(now_ms: u64) -> TimerWheel<T> {
        TimerWheel {
            slots: (0..SLOTS).map(|_| VecDeque::new()).collect(),
            cursor: now_ms / TICK_MS,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Schedules `item` for `due_ms` (the past means the next advance).
    pub fn insert(&mut self, due_ms: u64, item: T) {
        let tick = (due_ms / TICK_MS).max(self.cursor);
        self.slots[tick as usize % SLOTS].push_back(Entry { due_ms, item });
        self.len += 1;
    }

    /// Moves every item due at or before `now_ms` into `out`.
    pub fn advance(&mut self, now_ms: u64, out: &mut Vec<T>) {
        let target = now_ms / TICK_MS;
        // Walking more than one lap only revisits the same slots.
        let first = self.cursor.max(target.saturating_sub(SLOTS as u64 - 1));
        for tick in first..=target {
            let slot = &mut self.slots[tick as usize % SLOTS];
            let mut keep = slot.len();
            while keep > 0 {
                keep -= 1;
                let Some(e) = slot.pop_front() else { break };
                if e.due_ms <= now_ms {
                    self.len -= 1;
                    out.push(e.item);
                } else {
                    slot.push_back(e);
                }
            }
        }
        self.cursor = target;
    }

    /// Every item waiting, in no particular order (for an operator's
    /// listing: it walks the whole wheel).
    pub fn iter(&self) -> impl Iterator<Item = (u64, &T)> + '_ {
        self.slots
            .iter()
            .flat_map(|slot| slot.iter().map(|e| (e.due_ms, &e.item)))
    }

    /// Moves every item that `take` picks into `out`, whenever it is due
    /// (an operator's flush or removal: it walks the whole wheel).
    pub fn take_where(&mut self, mut take: impl FnMut(&T) -> bool, out: &mut Vec<T>) {
        for slot in &mut self.slots {
            let mut keep = slot.len();
            while keep > 0 {
                keep -= 1;
                let Some(e) = slot.pop_front() else { break };
                if take(&e.item) {
                    self.len -= 1;
                    out.push(e.item);
                } else {
                    slot.push_back(e);
                }
            }
        }
    }

    /// Runs `f` on every item waiting, in place (a reload renaming their
    /// queues: it walks the whole wheel).
    pub fn for_each_mut(&mut self, mut f: impl FnMut(&mut T)) {
        for slot in &mut self.slots {
            for e in slot.iter_mut() {
                f(&mut e.item);
            }
        }
    }

    /// A time at or before the earliest due item, for the caller's timer;
    /// `None` when empty. Cheap: it looks ahead at most one lap of slots.
    pub fn next_due(&self) -> Option<u64> {
        if self.len == 0 {
            return None;
        }
        for tick in self.cursor..self.cursor + SLOTS as u64 {
            let slot = &self.slots[tick as usize % SLOTS];
            if let Some(min) = slot.iter().map(|e| e.due_ms).min() {
                return Some(min.min((tick + 1) * TICK_MS));
            }
        }
        Some((self.cursor + SLOTS as u64) * TICK_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn items_come_out_when_due_not_before() {
        let mut w = TimerWheel::new(0);
        w.insert(5_500, "a");
        w.insert(1_000, "b");
        w.insert(10_000_000, "far"); // many laps ahead
        let mut out = Vec::new();
        w.advance(999, &mut out);
        assert!(out.is_empty());
        w.advance(5_499, &mut out);
        assert_eq!(out, vec!["b"]);
        w.advance(5_500, &mut out);
        assert_eq!(out, vec!["b", "a"]);
        out.clear();
        w.advance(9_999_999, &mut out);
        assert!(out.is_empty());
        assert_eq!(w.len(), 1);
        w.advance(10_000_000, &mut out);
        assert_eq!(out, vec!["far"]);
        assert!(w.is_empty());
    }

    #[test]
    fn taken_items_leave_the_wheel_whenever_they_were_due() {
        let mut w = TimerWheel::new(0);
        for (due, item) in [(5_000, 1), (9_000_000, 2), (7_000, 3), (12_000, 4)] {
            w.insert(due, item);
        }
        let mut out = Vec::new();
        w.take_where(|i| i % 2 == 0, &mut out);
        out.sort_unstable();
        assert_eq!(out, vec![2, 4]);
        assert_eq!(w.len(), 2);
        let mut left: Vec<(u64, i32)> = w.iter().map(|(d, i)| (d, *i)).collect();
        left.sort_unstable();
        assert_eq!(left, vec![(5_000, 1), (7_000, 3)]);
        out.clear();
        w.advance(20_000_000, &mut out);
        out.sort_unstable();
        assert_eq!(out, vec![1, 3]);
    }

    proptest! {
        #[test]
        fn wheel_matches_a_sorted_model(dues in prop::collection::vec(0u64..20_000_000, 0..200), steps in prop::collection::vec(1u64..3_000_000, 1..30)) {
            let mut w = TimerWheel::new(0);
            for (i, d) in dues.iter().enumerate() {
                w.insert(*d, i);
            }
            let mut now = 0;
            let mut seen = vec![false; dues.len()];
            for s in steps {
                now += s;
                if let Some(n) = w.next_due() {
                    let earliest = dues.iter().enumerate().filter(|(i, _)| !seen[*i]).map(|(_, d)| *d).min();
                    prop_assert!(earliest.is_some_and(|e| n <= e), "next_due {} after the earliest item", n);
                }
                let mut out = Vec::new();
                w.advance(now, &mut out);
                for i in out {
                    prop_assert!(dues[i] <= now);
                    prop_assert!(!seen[i]);
                    seen[i] = true;
                }
                for (i, d) in dues.iter().enumerate() {
                    prop_assert_eq!(seen[i], *d <= now, "item {} due {} now {}", i, d, now);
                }
            }
        }
    }
}
