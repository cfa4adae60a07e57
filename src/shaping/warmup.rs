//! Warm-up: how much a new egress source may send per destination on
//! each UTC day of its schedule, and the counts of the current day.
//!
//! Owns: the schedule (a start date and a budget per day), the civil
//! date arithmetic it needs, the per-destination counts of the current
//! UTC day with their rollover at midnight, and the text form of those
//! counts that the caller keeps across a restart.
//! Must never: read the clock or do I/O (the caller passes wall time and
//! stores the snapshot); give a day more than its budget, also across a
//! restart; be shared between shards (a destination's counts live on the
//! shard that owns the destination, so they need no lock).

use std::collections::HashMap;
use std::fmt::{Display, Write as _};
use std::hash::Hash;
use std::str::FromStr;

const DAY_MS: u64 = 86_400_000;

/// Why a date could not be parsed; the text says what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid date {text:?}: {reason}; write a calendar date as YYYY-MM-DD, e.g. \"2026-12-01\""
)]
pub struct DateError {
    text: String,
    reason: &'static str,
}

/// The days from 1970-01-01 to a date of the proleptic Gregorian
/// calendar (negative before it). Howard Hinnant's `days_from_civil`:
/// counting years from March puts the leap day last, so a month's first
/// day is a closed formula.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Parses `"2026-12-01"` into days since 1970-01-01. Only that form: a
/// date that could be read two ways (`12/01/2026`) is refused.
pub fn parse_date(text: &str) -> Result<i64, DateError> {
    let fail = |reason| DateError {
        text: text.to_owned(),
        reason,
    };
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(fail("it is not of the form YYYY-MM-DD"));
    }
    let number = |range: std::ops::Range<usize>| {
        let digits = &text[range];
        if digits.bytes().all(|c| c.is_ascii_digit()) {
            digits.parse::<u32>().ok()
        } else {
            None
        }
    };
    let (Some(year), Some(month), Some(day)) = (number(0..4), number(5..7), number(8..10)) else {
        return Err(fail("year, month and day must be digits"));
    };
    let year = i64::from(year);
    if !(1..=12).contains(&month) {
        return Err(fail("there is no such month"));
    }
    if day == 0 || day > days_in_month(year, month) {
        return Err(fail("there is no such day in that month"));
    }
    Ok(days_from_civil(year, month, day))
}

/// The UTC day (days since 1970-01-01) of a wall time in unix
/// milliseconds.
pub fn utc_day(wall_ms: u64) -> i64 {
    i64::try_from(wall_ms / DAY_MS).unwrap_or(i64::MAX)
}

/// A source's warm-up schedule: `daily[0]` is the budget of the start
/// date (day 1), `daily[1]` of the day after, and so on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warmup {
    /// Days since 1970-01-01 (UTC).
    pub start_day: i64,
    pub daily: Vec<u64>,
}

impl Warmup {
    /// A schedule starting on `start` (`"2026-12-01"`).
    pub fn new(start: &str, daily: Vec<u64>) -> Result<Warmup, DateError> {
        Ok(Warmup {
            start_day: parse_date(start)?,
            daily,
        })
    }

    /// The budget of `day` (days since 1970-01-01), or `None` for no
    /// limit. Before the start date a source gets day 1's budget (it is
    /// no warmer for being early); after the last listed day it is warm.
    pub fn budget(&self, day: i64) -> Option<u64> {
        let index = day.saturating_sub(self.start_day).max(0);
        usize::try_from(index)
            .ok()
            .and_then(|i| self.daily.get(i))
            .copied()
    }
}

/// Why a snapshot of counts could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("warm-up counts, line {line}: {reason}")]
pub struct SnapshotError {
    line: usize,
    reason: &'static str,
}

/// The first line of a snapshot, then the day.
const SNAPSHOT_HEADER: &str = "warmup-counts 1 day ";

/// What each destination (`K`) was sent on the current UTC day under one
/// source's schedule.
#[derive(Debug, Clone)]
pub struct DailyCounts<K> {
    warmup: Warmup,
    /// The UTC day the counts are of.
    day: i64,
    counts: HashMap<K, u64>,
}

impl<K: Eq + Hash> DailyCounts<K> {
    pub fn new(warmup: Warmup) -> DailyCounts<K> {
        DailyCounts {
            warmup,
            day: i64::MIN,
            counts: HashMap::new(),
        }
    }

    /// Counts one message to `key` at `now_wall_ms` (unix milliseconds)
    /// if the day's budget has room: whether it may be sent.
    pub fn try_take(&mut self, key: K, now_wall_ms: u64) -> bool {
        let day = self.roll(now_wall_ms);
        let budget = self.warmup.budget(day);
        let count = self.counts.entry(key).or_insert(0);
        if budget.is_some_and(|b| *count >= b) {
            return false;
        }
        *count += 1;
        true
    }

    /// What is left of `key`'s budget at `now_wall_ms`, `None` for no
    /// limit: for choosing a source without taking from it.
    pub fn remaining(&self, key: &K, now_wall_ms: u64) -> Option<u64> {
        let day = utc_day(now_wall_ms).max(self.day);
        let budget = self.warmup.budget(day)?;
        let sent = if day == self.day {
            self.counts.get(key).copied().unwrap_or(0)
        } else {
            0
        };
        Some(budget.saturating_sub(sent))
    }

    /// Moves to the day of `now_wall_ms` if it is a later one (a fresh
    /// budget at UTC midnight); the day counted. A wall clock stepped back
    /// over midnight keeps counting against the later day rather than
    /// hand out yesterday's budget again.
    fn roll(&mut self, now_wall_ms: u64) -> i64 {
        let day = utc_day(now_wall_ms);
        if day > self.day {
            self.day = day;
            self.counts.clear();
        }
        self.day
    }
}

impl<K: Eq + Hash + Display + FromStr> DailyCounts<K> {
    /// The counts as text, one `COUNT KEY` line a destination after a
    /// header with the day, so a restart on the same day goes on where it
    /// stopped. The key comes last so that it may hold spaces; it must
    /// not hold a line break. Lines are sorted, so equal counts give equal
    /// text.
    pub fn snapshot(&self) -> String {
        let mut lines: Vec<String> = self
            .counts
            .iter()
            .filter(|(_, &n)| n > 0)
            .map(|(key, n)| format!("{n} {key}"))
            .collect();
        lines.sort_unstable();
        let mut text = format!("{SNAPSHOT_HEADER}{}\n", self.day);
        for line in lines {
            let _ = writeln!(text, "{line}");
        }
        text
    }

    /// Adds the counts of `snapshot` if it is of the UTC day of
    /// `now_wall_ms`; a snapshot of an earlier day is spent and changes
    /// nothing. Nothing changes either when any line is wrong.
    pub fn restore(&mut self, snapshot: &str, now_wall_ms: u64) -> Result<(), SnapshotError> {
        let fail = |line, reason| SnapshotError { line, reason };
        let mut lines = snapshot.lines();
        let day: i64 = lines
            .next()
            .and_then(|l| l.strip_prefix(SNAPSHOT_HEADER))
            .and_then(|d| d.parse().ok())
            .ok_or(fail(1, "not a warm-up counts header"))?;
        let mut restored = Vec::new();
        for (i, line) in lines.enumerate() {
            let (n, key) = line.split_once(' ').ok_or(fail(i + 2, "no count"))?;
            let n: u64 = n.parse().map_err(|_| fail(i + 2, "bad count"))?;
            let key = key.parse().map_err(|_| fail(i + 2, "bad key"))?;
            restored.push((key, n));
        }
        if self.roll(now_wall_ms) == day {
            for (key, n) in restored {
                let count = self.counts.entry(key).or_insert(0);
                *count = count.saturating_add(n);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::received::civil_from_days;

    /// Unix milliseconds of a UTC date and time of day.
    fn at(date: &str, h: u64, m: u64, s: u64, ms: u64) -> u64 {
        let day = u64::try_from(parse_date(date).unwrap()).unwrap();
        day * DAY_MS + ((h * 60 + m) * 60 + s) * 1_000 + ms
    }

    fn schedule() -> Warmup {
        Warmup::new("2026-12-01", vec![2, 5, 10]).unwrap()
    }

    #[test]
    fn dates_are_days_since_1970() {
        for (date, days) in [
            ("1970-01-01", 0),
            ("1969-12-31", -1),
            ("2000-02-29", 11_016),
            ("2000-03-01", 11_017),
            ("2024-02-29", 19_782),
            ("2026-12-01", 20_788),
            ("2026-12-31", 20_818),
            ("2027-01-01", 20_819),
        ] {
            assert_eq!(parse_date(date), Ok(days), "{date}");
        }
    }

    #[test]
    fn days_and_civil_dates_agree_both_ways() {
        for days in -800_000..800_000 {
            let (y, m, d) = civil_from_days(days);
            let (m, d) = (u32::try_from(m).unwrap(), u32::try_from(d).unwrap());
            assert!(d <= days_in_month(y, m), "{y}-{m}-{d}");
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn bad_dates_say_what_is_accepted() {
        for (text, reason) in [
            ("2026-12-1", "form YYYY-MM-DD"),
            ("12/01/2026", "form YYYY-MM-DD"),
            ("2026-12-01T00:00", "form YYYY-MM-DD"),
            ("2026-1a-01", "digits"),
            ("+026-12-01", "digits"),
            ("2026-13-01", "no such month"),
            ("2026-00-01", "no such month"),
            ("2026-02-29", "no such day"),
            ("1900-02-29", "no such day"),
            ("2026-04-31", "no such day"),
            ("2026-12-00", "no such day"),
        ] {
            let err = parse_date(text).unwrap_err().to_string();
            assert!(err.contains(reason), "{text}: {err}");
            assert!(err.contains("\"2026-12-01\""), "{err}");
        }
        assert!(parse_date("2400-02-29").is_ok());
    }

    #[test]
    fn budgets_follow_the_schedule_then_end() {
        let w = schedule();
        let start = w.start_day;
        assert_eq!(w.budget(start - 30), Some(2), "early: day 1's budget");
        assert_eq!(w.budget(start - 1), Some(2));
        assert_eq!(w.budget(start), Some(2));
        assert_eq!(w.budget(start + 1), Some(5));
        assert_eq!(w.budget(start + 2), Some(10));
        assert_eq!(w.budget(start + 3), None, "warm after the last day");
        assert_eq!(w.budget(i64::MAX), None);
        assert_eq!(w.budget(i64::MIN), Some(2));
        let none = Warmup::new("2026-12-01", vec![]).unwrap();
        assert_eq!(none.budget(start), None);
    }

    #[test]
    fn a_budget_spent_before_midnight_is_fresh_at_midnight() {
        let mut counts = DailyCounts::new(schedule());
        let last = at("2026-12-01", 23, 59, 59, 999);
        assert!(counts.try_take("gmail.com", at("2026-12-01", 0, 0, 0, 0)));
        assert!(counts.try_take("gmail.com", last));
        assert!(!counts.try_take("gmail.com", last));
        assert_eq!(counts.remaining(&"gmail.com", last), Some(0));
        // Each destination has a budget of its own.
        assert!(counts.try_take("yahoo.com", last));
        let midnight = at("2026-12-02", 0, 0, 0, 0);
        assert_eq!(midnight, last + 1);
        assert_eq!(counts.remaining(&"gmail.com", midnight), Some(5));
        for _ in 0..5 {
            assert!(counts.try_take("gmail.com", midnight));
        }
        assert!(!counts.try_take("gmail.com", midnight));
        // A wall clock stepped back over midnight gets no second budget.
        assert!(!counts.try_take("gmail.com", last));
        // After the schedule, no limit.
        let warm = at("2026-12-04", 12, 0, 0, 0);
        assert!((0..1_000).all(|_| counts.try_take("gmail.com", warm)));
        assert_eq!(counts.remaining(&"gmail.com", warm), None);
    }

    #[test]
    fn counts_survive_a_restart_on_the_same_day() {
        let noon = at("2026-12-02", 12, 0, 0, 0);
        let mut before: DailyCounts<String> = DailyCounts::new(schedule());
        for key in ["gmail.com", "gmail.com", "mail.example org", "yahoo.com"] {
            assert!(before.try_take(key.to_owned(), noon));
        }
        let text = before.snapshot();
        assert_eq!(
            text,
            format!(
                "warmup-counts 1 day {}\n1 mail.example org\n1 yahoo.com\n2 gmail.com\n",
                20_789
            )
        );
        let mut after: DailyCounts<String> = DailyCounts::new(schedule());
        after.restore(&text, noon + 3_600_000).unwrap();
        let gmail = "gmail.com".to_owned();
        assert_eq!(after.remaining(&gmail, noon), Some(3));
        assert_eq!(
            after.remaining(&"mail.example org".to_owned(), noon),
            Some(4)
        );
        assert_eq!(after.snapshot(), text);
        // A snapshot of yesterday is spent: today starts afresh.
        let mut tomorrow: DailyCounts<String> = DailyCounts::new(schedule());
        tomorrow.restore(&text, noon + DAY_MS).unwrap();
        assert_eq!(tomorrow.remaining(&gmail, noon + DAY_MS), Some(10));
    }

    #[test]
    fn a_damaged_snapshot_changes_nothing() {
        let noon = at("2026-12-02", 12, 0, 0, 0);
        for (text, line) in [
            ("", 1),
            ("counts 1 day 20789\n", 1),
            ("warmup-counts 1 day x\n", 1),
            (
                "warmup-counts 1 day 20789\n2 gmail.com\nthree yahoo.com\n",
                3,
            ),
            ("warmup-counts 1 day 20789\n2\n", 2),
            ("warmup-counts 1 day 20789\n-2 gmail.com\n", 2),
        ] {
            let mut counts: DailyCounts<String> = DailyCounts::new(schedule());
            let err = counts.restore(text, noon).unwrap_err();
            assert!(
                err.to_string().contains(&format!("line {line}:")),
                "{text:?}: {err}"
            );
            assert_eq!(counts.remaining(&"gmail.com".to_owned(), noon), Some(5));
        }
    }
}
