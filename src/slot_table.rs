//! Process-wide tables of counters indexed by a hash of a key, for limits
//! that must hold over all shards without a lock: connections per client
//! IP (`shard`) and connections per destination (`outbound::slots`).
//!
//! A table has a fixed 65,536 entries: two keys that share an entry share
//! a count, which only ever makes a cap stricter. The hash is keyed with a
//! random per-process key, so which keys share an entry cannot be worked
//! out from outside to make one client's traffic count against another's.
//! It must never block or allocate after its first use, since it is
//! touched once per connection on every shard.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

/// Entries in every table.
const SLOTS: usize = 1 << 16;

/// A table of `T` (atomic counters), built on first use.
pub struct SlotTable<T: 'static> {
    table: OnceLock<(RandomState, Box<[T]>)>,
}

impl<T: Default + 'static> SlotTable<T> {
    pub const fn new() -> SlotTable<T> {
        SlotTable {
            table: OnceLock::new(),
        }
    }

    /// The entry counting `key`, given as its bytes.
    pub fn entry(&'static self, key: impl IntoIterator<Item = u8>) -> &'static T {
        let (hash_key, entries) = self.table.get_or_init(|| {
            (
                RandomState::new(),
                (0..SLOTS).map(|_| T::default()).collect(),
            )
        });
        &entries[slot(hash_key, key)]
    }
}

/// The entry of `key` in a table hashed with `hash_key`.
fn slot(hash_key: &RandomState, key: impl IntoIterator<Item = u8>) -> usize {
    let mut hasher = hash_key.build_hasher();
    for b in key {
        hasher.write_u8(b);
    }
    hasher.finish() as usize % SLOTS
}

impl<T: 'static> SlotTable<T> {
    /// Every entry, for a report over the whole table (empty before its
    /// first use).
    pub fn entries(&'static self) -> &'static [T] {
        self.table.get().map_or(&[], |(_, entries)| &entries[..])
    }
}

impl<T: Default + 'static> Default for SlotTable<T> {
    fn default() -> SlotTable<T> {
        SlotTable::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    static TABLE: SlotTable<AtomicU32> = SlotTable::new();

    #[test]
    fn one_key_is_one_entry() {
        let a = TABLE.entry(*b"key-a");
        a.fetch_add(1, Ordering::Relaxed);
        assert!(std::ptr::eq(a, TABLE.entry(*b"key-a")));
        assert_eq!(TABLE.entry(*b"key-a").load(Ordering::Relaxed), 1);
        let in_use = (0..1000u32)
            .map(|i| TABLE.entry(i.to_be_bytes()) as *const AtomicU32)
            .collect::<std::collections::HashSet<_>>();
        // About 8 of 1,000 keys share an entry on average.
        assert!(in_use.len() > 950, "keys spread over the table");
    }

    #[test]
    fn where_a_key_goes_depends_on_the_process_key() {
        // Two processes (two hash keys) put some of the same keys in
        // different entries: which keys share an entry cannot be worked
        // out from outside.
        let (one, other) = (RandomState::new(), RandomState::new());
        let moved = (0..64u32)
            .filter(|i| slot(&one, i.to_be_bytes()) != slot(&other, i.to_be_bytes()))
            .count();
        assert!(moved > 60, "{moved} of 64 keys placed differently");
    }
}
