//! Warm-up: how much a new egress source may send per destination on
//! each UTC day of its schedule, and the counts of the current day.
//!
//! Owns: the schedule (a start date and a budget per day), the civil
//! date arithmetic it needs, the count of one source × destination on
//! the current UTC day (one atomic word that every shard takes from,
//! rolling over at midnight), and the text form of the counts that the
//! caller keeps across a restart.
//! Must never: read the clock or do I/O (the caller passes wall time and
//! stores the snapshot); give a day more than its budget, also when
//! shards take from it at once.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Warmup {
    /// The start date as written, `YYYY-MM-DD`.
    pub start: String,
    /// The start date in days since 1970-01-01 (UTC).
    #[serde(skip)]
    pub start_day: i64,
    pub daily: Vec<u64>,
}

impl Warmup {
    /// A schedule starting on `start` (`"2026-12-01"`).
    pub fn new(start: &str, daily: Vec<u64>) -> Result<Warmup, DateError> {
        Ok(Warmup {
            start_day: parse_date(start)?,
            start: start.to_owned(),
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

/// A UTC day in the high bits of a count cell, the day's count in the
/// low ones.
const COUNT_BITS: u32 = 40;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
/// Days a cell can hold: 2^24 days after 1970 is far past any clock.
const DAY_MAX: u64 = (1 << (64 - COUNT_BITS)) - 1;

fn pack(day: u64, count: u64) -> u64 {
    (day.min(DAY_MAX) << COUNT_BITS) | count.min(COUNT_MASK)
}

fn unpack(cell: u64) -> (u64, u64) {
    (cell >> COUNT_BITS, cell & COUNT_MASK)
}

/// The day of `now_wall_ms`, as a cell holds it.
fn cell_day(now_wall_ms: u64) -> u64 {
    (now_wall_ms / DAY_MS).min(DAY_MAX)
}

/// The first millisecond of the UTC day after that of `now_wall_ms`:
/// when a spent budget is fresh again.
pub fn next_midnight_ms(now_wall_ms: u64) -> u64 {
    (now_wall_ms / DAY_MS + 1).saturating_mul(DAY_MS)
}

/// The count cell of one source × destination: the UTC day it counts and
/// the messages sent that day, in one atomic word, so that every shard
/// takes from one budget without a lock.
pub struct DailyCount<'a>(pub &'a AtomicU64);

impl DailyCount<'_> {
    /// Counts one message at `now_wall_ms` if `warmup` gives the day room:
    /// whether it may be sent. A new UTC day starts from zero; a wall
    /// clock stepped back over midnight keeps counting against the later
    /// day rather than hand out yesterday's budget again. Nothing is
    /// counted once the schedule is over (the source is warm).
    pub fn try_take(&self, warmup: &Warmup, now_wall_ms: u64) -> bool {
        let today = cell_day(now_wall_ms);
        let mut seen = self.0.load(Ordering::Relaxed);
        loop {
            let (day, count) = match unpack(seen) {
                (day, count) if day >= today => (day, count),
                _ => (today, 0),
            };
            let Some(budget) = warmup.budget(day as i64) else {
                return true;
            };
            if count >= budget {
                return false;
            }
            let next = pack(day, count + 1);
            match self
                .0
                .compare_exchange_weak(seen, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(current) => seen = current,
            }
        }
    }

    /// What is left of the day's budget at `now_wall_ms`; `None` for no
    /// limit.
    pub fn remaining(&self, warmup: &Warmup, now_wall_ms: u64) -> Option<u64> {
        let today = cell_day(now_wall_ms);
        let (day, count) = match unpack(self.0.load(Ordering::Relaxed)) {
            (day, count) if day >= today => (day, count),
            _ => (today, 0),
        };
        Some(warmup.budget(day as i64)?.saturating_sub(count))
    }

    /// The day counted and its count, for a snapshot.
    pub fn read(&self) -> (u64, u64) {
        unpack(self.0.load(Ordering::Relaxed))
    }

    /// Adds what a snapshot says was sent on `day`: a later day, or more
    /// on the same day, wins over what the cell holds.
    pub fn restore(&self, day: u64, count: u64) {
        self.0.fetch_max(pack(day, count), Ordering::Relaxed);
    }
}

/// One line of a snapshot of the counts: what `source` sent to
/// `destination` on `day` (days since 1970-01-01).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    pub day: u64,
    pub count: u64,
    pub source: String,
    pub destination: String,
}

/// Why a snapshot of counts could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("warm-up counts, line {line}: {reason}")]
pub struct SnapshotError {
    line: usize,
    reason: &'static str,
}

/// The first line of a snapshot.
const SNAPSHOT_HEADER: &str = "petrel warmup-counts 1";

/// The counts as text: a header, then one `DAY COUNT SOURCE DESTINATION`
/// line each, sorted so that equal counts give equal text. Names hold
/// no spaces or line breaks (source names are checked, destinations are
/// domains or `mx:` patterns).
pub fn snapshot<'a>(counts: impl IntoIterator<Item = &'a Counted>) -> String {
    let mut lines: Vec<String> = counts
        .into_iter()
        .filter(|c| c.count > 0)
        .map(|c| format!("{} {} {} {}", c.day, c.count, c.source, c.destination))
        .collect();
    lines.sort_unstable();
    let mut text = format!("{SNAPSHOT_HEADER}\n");
    for line in lines {
        let _ = writeln!(text, "{line}");
    }
    text
}

/// The lines of a snapshot; an error for the first line that is wrong.
pub fn parse_snapshot(text: &str) -> Result<Vec<Counted>, SnapshotError> {
    let fail = |line, reason| SnapshotError { line, reason };
    let mut lines = text.lines();
    if lines.next() != Some(SNAPSHOT_HEADER) {
        return Err(fail(1, "not a warm-up counts header"));
    }
    let mut counts = Vec::new();
    for (i, line) in lines.enumerate() {
        let mut fields = line.split(' ');
        let mut number = |reason| {
            fields
                .next()
                .and_then(|f| f.parse::<u64>().ok())
                .ok_or(fail(i + 2, reason))
        };
        let day = number("bad day")?;
        let count = number("bad count")?;
        let (Some(source), Some(destination), None) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(fail(i + 2, "expected DAY COUNT SOURCE DESTINATION"));
        };
        if source.is_empty() || destination.is_empty() {
            return Err(fail(i + 2, "empty name"));
        }
        counts.push(Counted {
            day,
            count,
            source: source.to_owned(),
            destination: destination.to_owned(),
        });
    }
    Ok(counts)
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
        let (w, gmail, yahoo) = (schedule(), AtomicU64::new(0), AtomicU64::new(0));
        let (gmail, yahoo) = (DailyCount(&gmail), DailyCount(&yahoo));
        let last = at("2026-12-01", 23, 59, 59, 999);
        assert_eq!(gmail.remaining(&w, last), Some(2));
        assert!(gmail.try_take(&w, at("2026-12-01", 0, 0, 0, 0)));
        assert!(gmail.try_take(&w, last));
        assert!(!gmail.try_take(&w, last));
        assert_eq!(gmail.remaining(&w, last), Some(0));
        // Each destination has a budget of its own.
        assert!(yahoo.try_take(&w, last));
        let midnight = at("2026-12-02", 0, 0, 0, 0);
        assert_eq!(midnight, last + 1);
        assert_eq!(next_midnight_ms(last), midnight);
        assert_eq!(next_midnight_ms(midnight), midnight + DAY_MS);
        assert_eq!(gmail.remaining(&w, midnight), Some(5));
        for _ in 0..5 {
            assert!(gmail.try_take(&w, midnight));
        }
        assert!(!gmail.try_take(&w, midnight));
        // A wall clock stepped back over midnight gets no second budget.
        assert!(!gmail.try_take(&w, last));
        assert_eq!(gmail.remaining(&w, last), Some(0));
        // After the schedule, no limit and nothing counted.
        let warm = at("2026-12-04", 12, 0, 0, 0);
        assert!((0..1_000).all(|_| gmail.try_take(&w, warm)));
        assert_eq!(gmail.remaining(&w, warm), None);
    }

    #[test]
    fn shards_taking_at_once_never_exceed_the_budget() {
        let w = Warmup::new("2026-12-01", vec![10_000]).unwrap();
        let cell = AtomicU64::new(0);
        let noon = at("2026-12-01", 12, 0, 0, 0);
        let taken: usize = std::thread::scope(|s| {
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        (0..5_000)
                            .filter(|_| DailyCount(&cell).try_take(&w, noon))
                            .count()
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).sum()
        });
        assert_eq!(taken, 10_000);
        assert_eq!(DailyCount(&cell).read(), (20_788, 10_000));
    }

    #[test]
    fn counts_survive_a_restart_on_the_same_day() {
        let noon = at("2026-12-02", 12, 0, 0, 0);
        let w = schedule();
        let (gmail, yahoo) = (AtomicU64::new(0), AtomicU64::new(0));
        for _ in 0..2 {
            assert!(DailyCount(&gmail).try_take(&w, noon));
        }
        assert!(DailyCount(&yahoo).try_take(&w, noon));
        let counted = |cell: &AtomicU64, destination: &str| {
            let (day, count) = DailyCount(cell).read();
            Counted {
                day,
                count,
                source: "ip1".to_owned(),
                destination: destination.to_owned(),
            }
        };
        let counts = [
            counted(&yahoo, "yahoo.com"),
            counted(&gmail, "mx:*.google.com"),
            counted(&AtomicU64::new(0), "never.example"),
        ];
        let text = snapshot(&counts);
        assert_eq!(
            text,
            "petrel warmup-counts 1\n20789 1 ip1 yahoo.com\n20789 2 ip1 mx:*.google.com\n"
        );
        let read = parse_snapshot(&text).unwrap();
        assert_eq!(read, counts[..2].to_vec());
        // Restored into fresh cells: the same day goes on where it stopped.
        let after = AtomicU64::new(0);
        DailyCount(&after).restore(read[1].day, read[1].count);
        assert_eq!(DailyCount(&after).remaining(&w, noon + 3_600_000), Some(3));
        // A cell that counted more since is not set back.
        DailyCount(&after).restore(read[1].day, 1);
        assert_eq!(DailyCount(&after).remaining(&w, noon), Some(3));
        // A snapshot of yesterday is spent: today starts afresh.
        assert_eq!(DailyCount(&after).remaining(&w, noon + DAY_MS), Some(10));
    }

    #[test]
    fn a_damaged_snapshot_is_refused_at_its_line() {
        for (text, line) in [
            ("", 1),
            ("petrel warmup-counts 2\n", 1),
            (
                "petrel warmup-counts 1\n20789 2 ip1 gmail.com\n20789 x ip1 a\n",
                3,
            ),
            ("petrel warmup-counts 1\n20789 2\n", 2),
            ("petrel warmup-counts 1\n20789 -2 ip1 gmail.com\n", 2),
            ("petrel warmup-counts 1\n20789 2 ip1 gmail.com extra\n", 2),
            ("petrel warmup-counts 1\n20789 2 ip1 \n", 2),
        ] {
            let err = parse_snapshot(text).unwrap_err();
            assert!(
                err.to_string().contains(&format!("line {line}:")),
                "{text:?}: {err}"
            );
        }
    }
}
