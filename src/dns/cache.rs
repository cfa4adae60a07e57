//! The answer cache, keyed by (name, record type).
//!
//! Owns: how long answers live (their TTL, capped by `max_ttl_s`; negative
//! answers per RFC 2308, capped by `max_negative_ttl_s`) and the bound on
//! entries (the oldest insertion is evicted first). Must never: read the
//! clock (time comes in as `now_ms`) or grow past `max_entries`.

use std::collections::{BTreeMap, HashMap};

use hickory_proto::rr::{Name, RecordType};

use super::wire::{Outcome, Parsed};

/// Limits of a [`Cache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    pub max_entries: usize,
    /// Upper bound on the lifetime of a positive answer, in seconds.
    pub max_ttl_s: u32,
    /// Upper bound on the lifetime of NXDOMAIN/NODATA, in seconds.
    pub max_negative_ttl_s: u32,
}

impl Default for CacheLimits {
    fn default() -> Self {
        CacheLimits {
            max_entries: 10_000,
            max_ttl_s: 86_400,
            max_negative_ttl_s: 3_600,
        }
    }
}

type Key = (Name, RecordType);

struct Entry {
    outcome: Outcome,
    expires_ms: u64,
    seq: u64,
}

/// A bounded TTL cache of lookup outcomes.
pub struct Cache {
    limits: CacheLimits,
    entries: HashMap<Key, Entry>,
    /// Insertion order, for evicting the oldest entry.
    order: BTreeMap<u64, Key>,
    next_seq: u64,
}

impl Cache {
    pub fn new(limits: CacheLimits) -> Self {
        Cache {
            limits,
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The cached outcome, if still fresh at `now_ms`; an expired one is
    /// dropped.
    pub fn get(&mut self, name: &Name, rtype: RecordType, now_ms: u64) -> Option<Outcome> {
        let key = (name.clone(), rtype);
        let entry = self.entries.get(&key)?;
        if now_ms < entry.expires_ms {
            return Some(entry.outcome.clone());
        }
        self.remove(&key);
        None
    }

    /// Stores a reply received at `now_ms`. A zero lifetime stores nothing.
    pub fn insert(&mut self, name: &Name, rtype: RecordType, parsed: &Parsed, now_ms: u64) {
        let negative = matches!(parsed.outcome, Outcome::NoData | Outcome::NxDomain);
        let cap = if negative {
            self.limits.max_negative_ttl_s
        } else {
            self.limits.max_ttl_s
        };
        let ttl_s = parsed.ttl.min(cap);
        if ttl_s == 0 || self.limits.max_entries == 0 {
            return;
        }
        let key = (name.clone(), rtype);
        self.remove(&key);
        while self.entries.len() >= self.limits.max_entries {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, key.clone());
        let expires_ms = now_ms.saturating_add(u64::from(ttl_s) * 1000);
        let outcome = parsed.outcome.clone();
        self.entries.insert(
            key,
            Entry {
                outcome,
                expires_ms,
                seq,
            },
        );
    }

    fn remove(&mut self, key: &Key) {
        if let Some(old) = self.entries.remove(key) {
            self.order.remove(&old.seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn name(s: &str) -> Name {
        super::super::parse_name(s).unwrap()
    }

    fn addrs(ttl: u32) -> Parsed {
        Parsed {
            outcome: Outcome::Addrs(vec![IpAddr::from([127, 0, 0, 2])]),
            ttl,
        }
    }

    fn limits(max_entries: usize) -> CacheLimits {
        CacheLimits {
            max_entries,
            max_ttl_s: 100,
            max_negative_ttl_s: 10,
        }
    }

    #[test]
    fn honours_ttl_and_cap() {
        let mut c = Cache::new(limits(10));
        c.insert(&name("a.test"), RecordType::A, &addrs(5), 1_000);
        assert!(c.get(&name("A.test"), RecordType::A, 5_999).is_some());
        assert!(c.get(&name("a.test"), RecordType::AAAA, 2_000).is_none());
        assert!(c.get(&name("a.test"), RecordType::A, 6_000).is_none());
        assert!(c.is_empty());
        c.insert(&name("b.test"), RecordType::A, &addrs(1_000_000), 0);
        assert!(c.get(&name("b.test"), RecordType::A, 99_999).is_some());
        assert!(c.get(&name("b.test"), RecordType::A, 100_000).is_none());
    }

    #[test]
    fn negative_answers_use_their_own_cap_and_zero_is_not_stored() {
        let mut c = Cache::new(limits(10));
        let nx = Parsed {
            outcome: Outcome::NxDomain,
            ttl: 3_600,
        };
        c.insert(&name("n.test"), RecordType::MX, &nx, 0);
        assert_eq!(
            c.get(&name("n.test"), RecordType::MX, 9_999),
            Some(Outcome::NxDomain)
        );
        assert!(c.get(&name("n.test"), RecordType::MX, 10_000).is_none());
        c.insert(&name("z.test"), RecordType::A, &addrs(0), 0);
        assert!(c.is_empty());
    }

    #[test]
    fn evicts_oldest_insertion_at_the_bound() {
        let mut c = Cache::new(limits(2));
        c.insert(&name("1.test"), RecordType::A, &addrs(50), 0);
        c.insert(&name("2.test"), RecordType::A, &addrs(50), 0);
        c.insert(&name("1.test"), RecordType::A, &addrs(50), 0); // refreshed: now newest
        c.insert(&name("3.test"), RecordType::A, &addrs(50), 0);
        assert_eq!(c.len(), 2);
        assert!(c.get(&name("2.test"), RecordType::A, 1).is_none());
        assert!(c.get(&name("1.test"), RecordType::A, 1).is_some());
        assert!(c.get(&name("3.test"), RecordType::A, 1).is_some());
    }
}
