//! Process-wide connection counts per destination, so that
//! `max_connections_per_destination` holds for the whole process while
//! every shard delivers the messages in its own spool.
//!
//! A fixed table of atomic counters indexed by a hash of the destination:
//! two destinations that share a slot share a cap, which only ever makes
//! it stricter (with 65,536 slots, rare). A counter is touched once per
//! connection, never per message, so the hot path stays on its own core.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

const SLOTS: usize = 1 << 16;

fn table() -> &'static [AtomicU32] {
    static TABLE: OnceLock<Box<[AtomicU32]>> = OnceLock::new();
    TABLE.get_or_init(|| (0..SLOTS).map(|_| AtomicU32::new(0)).collect())
}

/// FNV-1a over the destination, case-insensitively.
fn slot_of(destination: &str) -> &'static AtomicU32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in destination.bytes() {
        h = (h ^ u64::from(b.to_ascii_lowercase())).wrapping_mul(0x100_0000_01b3);
    }
    &table()[(h >> 32) as usize % SLOTS]
}

/// One open (or opening) connection to a destination; released on drop.
pub struct ConnectionSlot(&'static AtomicU32);

impl ConnectionSlot {
    /// A slot if fewer than `max` connections to `destination` are open in
    /// the whole process.
    pub fn try_acquire(destination: &str, max: usize) -> Option<ConnectionSlot> {
        let counter = slot_of(destination);
        let max = u32::try_from(max).unwrap_or(u32::MAX);
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| ConnectionSlot(counter))
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_holds_across_threads_and_frees_on_drop() {
        let dest = "slots-test.example";
        let held: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        (0..10)
                            .filter_map(|_| ConnectionSlot::try_acquire(dest, 7))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(held.len(), 7);
        assert!(ConnectionSlot::try_acquire(dest, 7).is_none());
        drop(held);
        assert!(ConnectionSlot::try_acquire("SLOTS-TEST.example", 7).is_some());
    }
}
