//! The daemon's clocks, read here and passed down as values: nothing
//! below the runtime layer reads the time itself, so protocol machines,
//! the scheduler and the delivery decisions run on virtual time in tests.
//!
//! Two clocks for two jobs. Monotonic time (milliseconds since the clock
//! was made) drives every deadline and timer: a step of the system clock
//! must not cut a read short or keep a destination suspended for an hour.
//! Wall time (unix milliseconds) is only for stamps: `Received:` and
//! `Date:`, arrival times, DSNs, spool records, and retry times, which are
//! kept in the spool and must mean the same after a restart.
//! Must never: be read inside a sans-IO machine (they take `now_ms`).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Both clocks. Copied into each shard; every copy agrees.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            origin: Instant::now(),
        }
    }

    /// Monotonic milliseconds, for deadlines and timers.
    pub fn monotonic_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// Monotonic microseconds, for timing work that takes less than a
    /// millisecond (a sync, for the metrics).
    pub fn monotonic_us(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }

    /// Unix milliseconds, for stamps.
    pub fn wall_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    /// The monotonic time at which the wall clock will read `wall_ms`, as
    /// far as can be told now (a time already past maps to now): how a
    /// retry time kept in the spool becomes a timer.
    pub fn monotonic_at(&self, wall_ms: u64) -> u64 {
        let (mono, wall) = (self.monotonic_ms(), self.wall_ms());
        mono.saturating_add(wall_ms.saturating_sub(wall))
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_future_wall_time_maps_to_as_far_ahead_and_a_past_one_to_now() {
        let clock = Clock::new();
        let (mono, wall) = (clock.monotonic_ms(), clock.wall_ms());
        let ahead = clock.monotonic_at(wall + 60_000) - mono;
        assert!((59_000..=61_000).contains(&ahead), "{ahead}");
        let past = clock.monotonic_at(wall.saturating_sub(60_000));
        assert!(past >= mono && past - mono < 1_000, "{past} vs {mono}");
        assert!(clock.monotonic_ms() >= mono);
    }
}
