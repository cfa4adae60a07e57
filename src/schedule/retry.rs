//! When a deferred recipient is tried again, and when it is given up.
//!
//! Pure arithmetic over the configured schedule: the caller passes `now`,
//! the message's arrival time and a random word for jitter.
//! Must never: schedule a retry past `max_age`.

/// The retry policy: `[delivery] retry` and `max_age`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before attempt n+1 after n failures; the last repeats.
    pub schedule_ms: Vec<u64>,
    /// A message older than this is bounced instead of retried.
    pub max_age_ms: u64,
    /// Spread each delay by up to this fraction (per mille) either way, so
    /// a destination's backlog does not come due all at once.
    pub jitter_permille: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        const MIN: u64 = 60_000;
        RetryPolicy {
            schedule_ms: [5, 10, 20, 40, 60, 120, 240]
                .iter()
                .map(|m| m * MIN)
                .collect(),
            max_age_ms: 5 * 24 * 60 * MIN,
            jitter_permille: 100,
        }
    }
}

/// What to do with a recipient after a temporary failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    RetryAt(u64),
    /// Too old: bounce it ("5.4.7 delivery time expired").
    Expire,
}

impl RetryPolicy {
    /// After `attempts` failed attempts (1 = the first failed), at `now_ms`,
    /// for a message that arrived at `received_ms`.
    pub fn decide(
        &self,
        attempts: u32,
        received_ms: u64,
        now_ms: u64,
        random: u64,
    ) -> RetryDecision {
        let expires = received_ms.saturating_add(self.max_age_ms);
        if now_ms >= expires {
            return RetryDecision::Expire;
        }
        let i = (attempts.max(1) as usize - 1).min(self.schedule_ms.len().saturating_sub(1));
        let base = self.schedule_ms.get(i).copied().unwrap_or(300_000);
        let span = base * self.jitter_permille / 1000;
        let jitter = if span == 0 {
            0
        } else {
            random % (2 * span + 1)
        };
        let at = now_ms + base - span + jitter;
        // The last attempt happens at expiry, not after it.
        RetryDecision::RetryAt(at.min(expires))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    #[test]
    fn follows_the_schedule_then_repeats_the_last_step() {
        let p = RetryPolicy {
            jitter_permille: 0,
            ..RetryPolicy::default()
        };
        let at = |n| match p.decide(n, 0, 1_000, 7) {
            RetryDecision::RetryAt(t) => t - 1_000,
            RetryDecision::Expire => 0,
        };
        assert_eq!(at(1), 5 * MIN);
        assert_eq!(at(2), 10 * MIN);
        assert_eq!(at(5), 60 * MIN);
        assert_eq!(at(7), 240 * MIN);
        assert_eq!(at(30), 240 * MIN);
    }

    #[test]
    fn jitter_stays_within_bounds_and_varies() {
        let p = RetryPolicy::default();
        let mut seen = std::collections::HashSet::new();
        for r in 0..1000u64 {
            let RetryDecision::RetryAt(t) =
                p.decide(1, 0, 0, r.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            else {
                panic!("expired");
            };
            assert!((270_000..=330_000).contains(&t), "{t}");
            seen.insert(t);
        }
        assert!(seen.len() > 100);
    }

    #[test]
    fn expires_at_max_age_and_never_schedules_past_it() {
        let p = RetryPolicy {
            jitter_permille: 0,
            ..RetryPolicy::default()
        };
        let age = p.max_age_ms;
        assert_eq!(p.decide(3, 0, age, 0), RetryDecision::Expire);
        assert_eq!(p.decide(9, 0, age - MIN, 0), RetryDecision::RetryAt(age));
    }
}
