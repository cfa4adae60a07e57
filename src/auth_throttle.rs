//! The limit on failed AUTH attempts per client (an IPv4 address, or an
//! IPv6 network of `ipv6_prefix_length`), over all shards: after
//! `max_failures` failures within `failure_window`, further attempts get
//! 454 4.7.0 until the window has passed.
//!
//! Each client's count lives in one `AtomicU64` of a process-wide
//! [`SlotTable`] (keyed hash: two clients that share an entry share a
//! count, which only makes the limit stricter, and which ones do cannot be
//! worked out from outside). The arithmetic is pure, on a clock given by
//! the caller, so a test runs a window in microseconds.
//! Must never: block, allocate, or hold a count for a client who stopped
//! failing once its window has passed.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::listener::client_network;
use crate::slot_table::SlotTable;

/// Failed attempts per client, as `window start (s) << 32 | failures`.
static FAILURES: SlotTable<AtomicU64> = SlotTable::new();

/// The limit in force: `[auth] max_failures` and `failure_window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureLimit {
    /// 0: no limit.
    pub max_failures: u32,
    pub window: Duration,
}

impl FailureLimit {
    /// Whether a client whose count is `state` may try again at `now_s`.
    pub fn allows(&self, state: u64, now_s: u64) -> bool {
        self.max_failures == 0 || self.failures_at(state, now_s) < self.max_failures
    }

    /// The count after a failure at `now_s`: a window that has passed
    /// starts afresh with this failure.
    pub fn after_failure(&self, state: u64, now_s: u64) -> u64 {
        let failures = self.failures_at(state, now_s);
        let start = match failures {
            0 => now_s,
            _ => state >> 32,
        };
        (start & 0xffff_ffff) << 32 | u64::from(failures.saturating_add(1))
    }

    /// Failures that still count at `now_s`.
    fn failures_at(&self, state: u64, now_s: u64) -> u32 {
        let start = state >> 32;
        if now_s.saturating_sub(start) >= self.window.as_secs().max(1) {
            return 0;
        }
        (state & 0xffff_ffff) as u32
    }
}

/// The count of `ip` (by network for IPv6).
fn entry(ip: IpAddr, ipv6_prefix: u8) -> &'static AtomicU64 {
    match client_network(ip, ipv6_prefix) {
        IpAddr::V4(v4) => FAILURES.entry(v4.octets()),
        IpAddr::V6(v6) => FAILURES.entry(v6.octets()),
    }
}

/// Whether `ip` may try AUTH at `now_s`.
pub fn allows(limit: &FailureLimit, ip: IpAddr, ipv6_prefix: u8, now_s: u64) -> bool {
    limit.allows(entry(ip, ipv6_prefix).load(Ordering::Relaxed), now_s)
}

/// Counts a failed attempt of `ip` at `now_s`.
pub fn record_failure(limit: &FailureLimit, ip: IpAddr, ipv6_prefix: u8, now_s: u64) {
    let cell = entry(ip, ipv6_prefix);
    let _ = cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
        Some(limit.after_failure(s, now_s))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: FailureLimit = FailureLimit {
        max_failures: 3,
        window: Duration::from_secs(600),
    };

    #[test]
    fn failures_within_the_window_throttle_until_it_passes() {
        let mut state = 0;
        for now in [1000, 1001, 1002] {
            assert!(LIMIT.allows(state, now));
            state = LIMIT.after_failure(state, now);
        }
        assert!(!LIMIT.allows(state, 1003));
        assert!(!LIMIT.allows(state, 1599));
        // The window counts from the first failure.
        assert!(LIMIT.allows(state, 1600));
        let state = LIMIT.after_failure(state, 1600);
        assert!(LIMIT.allows(state, 1601));
    }

    #[test]
    fn no_limit_when_max_failures_is_zero() {
        let off = FailureLimit {
            max_failures: 0,
            ..LIMIT
        };
        let state = (0..100).fold(0, |s, _| off.after_failure(s, 5));
        assert!(off.allows(state, 5));
    }

    #[test]
    fn one_client_is_throttled_while_another_is_not() {
        let (bad, good) = (
            "192.0.2.201".parse().unwrap(),
            "192.0.2.202".parse().unwrap(),
        );
        for _ in 0..3 {
            record_failure(&LIMIT, bad, 64, 50);
        }
        assert!(!allows(&LIMIT, bad, 64, 51));
        assert!(allows(&LIMIT, good, 64, 51));
        // Another address of the same IPv6 /64 shares the count.
        let (v6, neighbour) = (
            "2001:db8:5::1".parse().unwrap(),
            "2001:db8:5::2".parse().unwrap(),
        );
        for _ in 0..3 {
            record_failure(&LIMIT, v6, 64, 50);
        }
        assert!(!allows(&LIMIT, neighbour, 64, 51));
    }
}
