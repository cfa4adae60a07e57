//! Message and connection rates (`"300/min"`) and the generic cell rate
//! algorithm (GCRA) that holds one over every shard without a lock.
//!
//! A bucket is one `AtomicU64`, the theoretical arrival time (TAT) of the
//! next token in microseconds of the caller's monotonic clock; a shard
//! takes a token by compare-and-swap on it, so a bucket costs one cache
//! line, touched once per message or connection. A bucket starts at 0,
//! which reads as "idle for long": the full burst is available.
//!
//! Owns: the text form of a rate, its emission interval, and the
//! decision to take a token now or say when one will be free.
//! Must never: read the clock, block, take a lock or allocate on the
//! path that takes a token; let a bucket give out more than `burst` back
//! to back, or more than the rate over time, however many threads take
//! from it at once.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a rate could not be parsed; the text says what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid rate {text:?}: {reason}; write a whole number above 0, a '/' and a unit (s, sec, min, minute, h, hour, d, day), e.g. \"300/min\" or \"20/s\"")]
pub struct RateError {
    text: String,
    reason: &'static str,
}

/// The units a rate may be given in, and their length in milliseconds.
const UNITS: [(&str, u64); 8] = [
    ("s", 1_000),
    ("sec", 1_000),
    ("min", 60_000),
    ("minute", 60_000),
    ("h", 3_600_000),
    ("hour", 3_600_000),
    ("d", 86_400_000),
    ("day", 86_400_000),
];

/// The smallest factor [`Rate::scaled`] applies: a throttle that slows a
/// path to a thousandth is as good as a suspension, which is the tool for
/// stopping it.
pub const MIN_SCALE: f64 = 0.001;

/// `count` events per `per_ms` milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per_ms: u64,
}

impl Rate {
    /// Parses `"300/min"`-style text. A bare number, a zero count, a
    /// fraction or spaces are refused rather than guessed at: a rate that
    /// silently means something else gets a sender blocked.
    pub fn parse(text: &str) -> Result<Rate, RateError> {
        let fail = |reason| RateError {
            text: text.to_owned(),
            reason,
        };
        let (digits, unit) = text
            .split_once('/')
            .ok_or_else(|| fail("there is no '/' before the unit"))?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(fail("it does not start with a whole number"));
        }
        let per_ms = UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, ms)| *ms)
            .ok_or_else(|| fail("unknown unit"))?;
        let count: u32 = digits.parse().map_err(|_| fail("number too large"))?;
        if count == 0 {
            return Err(fail("a rate of 0 sends nothing"));
        }
        Ok(Rate { count, per_ms })
    }

    /// The time between two events at this rate, in microseconds, rounded
    /// up so that a bucket never runs faster than the rate (`7/s` is one
    /// event every 142,858 µs: a few events an hour slower, never faster).
    pub fn interval_us(&self) -> u64 {
        let span = u128::from(self.per_ms) * 1_000;
        let count = u128::from(self.count.max(1));
        u64::try_from(span.div_ceil(count)).unwrap_or(u64::MAX)
    }

    /// This rate slowed by `factor` (0.5: half as fast), for a path that a
    /// backoff rule throttles. The factor is held to [`MIN_SCALE`]..=1 (a
    /// NaN counts as the smallest): a throttle only ever slows a path.
    pub fn scaled(&self, factor: f64) -> Rate {
        let factor = if factor.is_nan() {
            MIN_SCALE
        } else {
            factor.clamp(MIN_SCALE, 1.0)
        };
        // The count stays, the period stretches: a count of 1 cannot be
        // halved, a period can.
        let per_ms = (self.per_ms as f64 / factor).round() as u64;
        Rate {
            count: self.count,
            per_ms: per_ms.max(self.per_ms),
        }
    }
}

impl FromStr for Rate {
    type Err = RateError;

    fn from_str(text: &str) -> Result<Rate, RateError> {
        Rate::parse(text)
    }
}

impl fmt::Display for Rate {
    /// The short name of the period's unit (`300/min`), else the period
    /// in milliseconds (`300/120000ms`, a scaled rate), which
    /// [`Rate::parse`] does not take back: only a rule makes one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The short name of each unit comes first in `UNITS`.
        match UNITS.iter().find(|(_, ms)| *ms == self.per_ms) {
            Some((name, _)) => write!(f, "{}/{name}", self.count),
            None => write!(f, "{}/{}ms", self.count, self.per_ms),
        }
    }
}

/// How far ahead of now the TAT may run and still admit an event: the
/// burst, and the clock's resolution. A time of `t` ms is anywhere in
/// [t, t + 1) ms, so an event due within it is on time; without that, a
/// caller on whole milliseconds would lose the fraction at every event
/// (`7/s` sent at 143 ms steps) and could never send more than one event
/// per millisecond.
fn tolerance_us(rate: Rate, burst: u32) -> u64 {
    rate.interval_us()
        .saturating_mul(u64::from(burst.max(1) - 1))
        .saturating_add(999)
}

/// When the bucket `tat` will next admit an event, without taking it:
/// `now_ms` when it would now.
pub fn free_at(tat: &AtomicU64, rate: Rate, burst: u32, now_ms: u64) -> u64 {
    let tolerance = tolerance_us(rate, burst);
    let now = now_ms.saturating_mul(1_000);
    let arrival = tat.load(Ordering::Relaxed).max(now);
    match arrival - now > tolerance {
        true => (arrival - tolerance).div_ceil(1_000),
        false => now_ms,
    }
}

/// Takes one token from the bucket `tat` at `now_ms`: `Ok` when the event
/// may happen now, or `Err` with the earliest time (in the caller's
/// milliseconds) at which a token will be free. `burst`: how many events
/// may go back to back after a long idle (0 counts as 1).
///
/// Relaxed ordering is enough: the TAT is the only data the bucket
/// shares, and compare-and-swap on one location sees every other
/// thread's update to it in one order.
pub fn take(tat: &AtomicU64, rate: Rate, burst: u32, now_ms: u64) -> Result<(), u64> {
    let interval = rate.interval_us();
    let tolerance = tolerance_us(rate, burst);
    let now = now_ms.saturating_mul(1_000);
    let mut current = tat.load(Ordering::Relaxed);
    loop {
        let arrival = current.max(now);
        if arrival - now > tolerance {
            // Whole milliseconds, rounded up: at that time it succeeds.
            return Err((arrival - tolerance).div_ceil(1_000));
        }
        let next = arrival.saturating_add(interval);
        match tat.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return Ok(()),
            Err(seen) => current = seen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;

    const HOUR_MS: u64 = 3_600_000;

    fn rate(text: &str) -> Rate {
        Rate::parse(text).unwrap()
    }

    #[test]
    fn rates_parse_with_each_unit() {
        for (text, count, per_ms) in [
            ("300/min", 300, 60_000),
            ("300/minute", 300, 60_000),
            ("20/s", 20, 1_000),
            ("20/sec", 20, 1_000),
            ("10000/h", 10_000, 3_600_000),
            ("10000/hour", 10_000, 3_600_000),
            ("500/d", 500, 86_400_000),
            ("500/day", 500, 86_400_000),
            ("4294967295/s", u32::MAX, 1_000),
        ] {
            assert_eq!(rate(text), Rate { count, per_ms }, "{text}");
        }
        assert_eq!(
            "20/s".parse::<Rate>(),
            Ok(Rate {
                count: 20,
                per_ms: 1_000
            })
        );
    }

    #[test]
    fn bad_rates_say_what_is_accepted() {
        for (text, reason) in [
            ("0/s", "a rate of 0"),
            ("300/fortnight", "unknown unit"),
            ("300/M", "unknown unit"),
            ("300/", "unknown unit"),
            ("300", "no '/'"),
            ("/min", "whole number"),
            ("1.5/s", "whole number"),
            ("-1/s", "whole number"),
            ("+1/s", "whole number"),
            (" 3/s", "whole number"),
            ("3/ s", "unknown unit"),
            ("4294967296/s", "too large"),
            ("99999999999999999999/s", "too large"),
            ("", "no '/'"),
        ] {
            let err = Rate::parse(text).unwrap_err().to_string();
            assert!(err.contains(reason), "{text:?}: {err}");
            assert!(err.contains("\"300/min\""), "{err}");
            assert!(
                err.contains("s, sec, min, minute, h, hour, d, day"),
                "{err}"
            );
        }
    }

    #[test]
    fn rates_print_as_written() {
        for text in ["300/min", "20/s", "10000/h", "500/d"] {
            assert_eq!(rate(text).to_string(), text);
        }
        assert_eq!(rate("20/sec").to_string(), "20/s");
        assert_eq!(rate("300/min").scaled(0.5).to_string(), "300/120000ms");
    }

    #[test]
    fn the_interval_rounds_up() {
        assert_eq!(rate("300/min").interval_us(), 200_000);
        assert_eq!(rate("7/s").interval_us(), 142_858);
        assert_eq!(rate("4294967295/s").interval_us(), 1);
    }

    /// The most a greedy sender gets in `[0, until_ms)`: it takes again at
    /// once after a success and waits exactly as told after a refusal.
    fn greedy(rate: Rate, burst: u32, until_ms: u64) -> u64 {
        let tat = AtomicU64::new(0);
        let (mut now, mut sent) = (0, 0);
        while now < until_ms {
            match take(&tat, rate, burst, now) {
                Ok(()) => sent += 1,
                Err(at) => {
                    assert!(at > now, "a refusal names a later time");
                    now = at;
                }
            }
        }
        sent
    }

    #[test]
    fn a_steady_rate_holds_over_an_hour() {
        for (text, per_hour) in [("300/min", 18_000), ("7/s", 25_200), ("10000/h", 10_000)] {
            let sent = greedy(rate(text), 1, HOUR_MS);
            assert!(sent.abs_diff(per_hour) <= 1, "{text}: {sent} in an hour");
        }
        // Faster than the clock ticks: several events per millisecond.
        let sent = greedy(rate("20000/s"), 1, 1_000);
        assert!(sent.abs_diff(20_000) <= 1, "20000/s: {sent} in a second");
        // A burst adds its size once, not per period.
        let sent = greedy(rate("300/min"), 50, HOUR_MS);
        assert!(sent.abs_diff(18_000 + 49) <= 1, "{sent}");
    }

    #[test]
    fn a_long_idle_gives_no_more_than_the_burst() {
        let tat = AtomicU64::new(0);
        let r = rate("60/min");
        assert_eq!(greedy(r, 5, 10_000), 5 + 9);
        let later = 10 * HOUR_MS;
        for _ in 0..5 {
            assert_eq!(take(&tat, r, 5, later), Ok(()));
        }
        assert_eq!(take(&tat, r, 5, later), Err(later + 1_000));
        assert_eq!(take(&tat, r, 5, later + 999), Err(later + 1_000));
        assert_eq!(take(&tat, r, 5, later + 1_000), Ok(()));
        // A burst of 0 is a burst of 1.
        let tat = AtomicU64::new(0);
        assert_eq!(take(&tat, r, 0, later), Ok(()));
        assert_eq!(take(&tat, r, 0, later), Err(later + 1_000));
    }

    #[test]
    fn a_refusal_names_the_millisecond_in_which_a_token_falls_due() {
        let tat = AtomicU64::new(0);
        let r = rate("7/s");
        assert_eq!(take(&tat, r, 1, 0), Ok(()));
        // The next token falls due at 142.858 ms: within millisecond 142.
        assert_eq!(take(&tat, r, 1, 100), Err(142));
        assert_eq!(take(&tat, r, 1, 141), Err(142));
        assert_eq!(take(&tat, r, 1, 142), Ok(()));
        // The one after at 285.716 ms, not 142 + 143: no fraction is lost.
        assert_eq!(take(&tat, r, 1, 142), Err(285));
        assert_eq!(take(&tat, r, 1, 285), Ok(()));
    }

    #[test]
    fn two_threads_on_one_bucket_never_exceed_the_rate() {
        const BURST: u32 = 3;
        const INTERVAL_MS: u64 = 10;
        const ATTEMPTS_PER_MS: usize = 4;
        const UNTIL_MS: u64 = 60_000;
        let r = rate("100/s");
        let tat = AtomicU64::new(0);
        // The virtual clock: each millisecond is handed out several times,
        // to whichever thread asks next, so the threads race on every
        // token and may see the time a little out of order, as shards do.
        let tick = AtomicUsize::new(0);
        let sent = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let now = (tick.fetch_add(1, Ordering::Relaxed) / ATTEMPTS_PER_MS) as u64;
                        if now >= UNTIL_MS {
                            break;
                        }
                        if take(&tat, r, BURST, now).is_ok() {
                            mine.push(now);
                        }
                    }
                    sent.lock().unwrap().extend(mine);
                });
            }
        });
        let mut sent = sent.into_inner().unwrap();
        sent.sort_unstable();
        let want = UNTIL_MS / INTERVAL_MS + u64::from(BURST) - 1;
        assert!(sent.len() as u64 <= want, "{} sent", sent.len());
        assert!(
            sent.len() as u64 + 2 >= want,
            "tokens lost: {} sent",
            sent.len()
        );
        // Any m + 1 events span at least (m + 1 - burst) intervals.
        for m in [BURST as usize, 10, 100, 1_000] {
            for w in sent.windows(m + 1) {
                let span = w[m] - w[0];
                assert!(
                    span >= (m as u64 + 1 - u64::from(BURST)) * INTERVAL_MS,
                    "{w:?}"
                );
            }
        }
    }

    #[test]
    fn a_scaled_rate_is_slower() {
        let r = rate("300/min");
        assert_eq!(
            r.scaled(0.5),
            Rate {
                count: 300,
                per_ms: 120_000
            }
        );
        let sent = greedy(r.scaled(0.5), 1, HOUR_MS);
        assert!(sent.abs_diff(9_000) <= 1, "{sent}");
        // A throttle never speeds a path up, and nonsense slows it most.
        assert_eq!(r.scaled(2.0), r);
        assert_eq!(r.scaled(1.0), r);
        assert_eq!(
            r.scaled(0.0),
            Rate {
                count: 300,
                per_ms: 60_000_000
            }
        );
        assert_eq!(r.scaled(f64::NAN), r.scaled(MIN_SCALE));
    }

    #[test]
    fn free_at_says_when_take_will_succeed_without_taking() {
        let tat = AtomicU64::new(0);
        let r = rate("10/h");
        assert_eq!(free_at(&tat, r, 1, 5_000), 5_000, "free now");
        assert_eq!(free_at(&tat, r, 1, 5_000), 5_000, "and nothing taken");
        assert_eq!(take(&tat, r, 1, 5_000), Ok(()));
        let at = free_at(&tat, r, 1, 5_000);
        assert_eq!(take(&tat, r, 1, 5_000), Err(at));
        assert_eq!(at, 5_000 + 360_000, "one interval on");
        assert_eq!(take(&tat, r, 1, at - 1), Err(at));
        assert_eq!(take(&tat, r, 1, at), Ok(()));
    }
}
