//! What the limits of a source × destination are counted against, over
//! every shard: the egress source and either the destination (a domain
//! or a relay) or, when its MX hosts match an `mx` shaping rule, that
//! rule (an MX rollup: every domain hosted there shares one budget per
//! source). A budget's open connections are counted in `slots`; its
//! message and connection rates are GCRA buckets here, one `AtomicU64`
//! each in a process-wide table; so are its backoffs (a suspension, a
//! throttle), so that a provider's "slow down" seen by one shard holds
//! on every shard, and the day's count of a source in warm-up.
//! Must never: take a lock, or touch a bucket more than once per message
//! or connection; let a backoff be shortened by a later, shorter one.

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::config::{Config, Shape};
use crate::schedule::EgressId;
use crate::shaping::backoff::{BackoffAction, BackoffRule};
use crate::shaping::rate::{self, Rate};
use crate::shaping::warmup::{DailyCount, Warmup};
use crate::slot_table::SlotTable;

/// A source × destination's limits and the name they are counted under.
#[derive(Debug, Clone)]
pub struct Budget {
    pub source: EgressId,
    /// The source's name, which the process-wide tables key on: the same
    /// on every shard, and across a reload that renumbers the sources.
    pub source_name: Rc<str>,
    /// The destination, or `mx:` and the rule's pattern for a rollup.
    pub name: Rc<str>,
    pub shape: Shape,
    /// The source's warm-up schedule, if it is in one.
    warmup: Option<Arc<Warmup>>,
    /// Its cells in the process-wide tables, found once: a message touches
    /// them without hashing the budget again.
    cells: Cells,
}

/// A budget's entries in the tables below.
#[derive(Debug, Clone, Copy)]
struct Cells {
    message_rate: &'static AtomicU64,
    connection_rate: &'static AtomicU64,
    suspended: &'static AtomicU64,
    /// Until when a suspension that moves the mail elsewhere holds.
    rerouted: &'static AtomicU64,
    throttled: &'static AtomicU64,
    /// The day's warm-up count.
    sent_today: &'static AtomicU64,
}

/// Theoretical arrival times of the message-rate buckets.
static MESSAGE_RATE: SlotTable<AtomicU64> = SlotTable::new();
/// Theoretical arrival times of the connection-rate buckets.
static CONNECTION_RATE: SlotTable<AtomicU64> = SlotTable::new();
/// Until when (monotonic ms) a budget is suspended; 0 or past: it is not.
static SUSPENDED: SlotTable<AtomicU64> = SlotTable::new();
/// Until when (monotonic ms) a suspension of a `reroute` rule holds.
static REROUTED: SlotTable<AtomicU64> = SlotTable::new();
/// The UTC day and the messages sent that day, of a source in warm-up
/// (`shaping::warmup::DailyCount`).
static SENT_TODAY: SlotTable<AtomicU64> = SlotTable::new();
/// A budget's throttle: until when (monotonic ms) in the high 48 bits,
/// the factor in thousandths in the low 16.
static THROTTLED: SlotTable<AtomicU64> = SlotTable::new();

/// A backoff a rule set (or lengthened) on a budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackedOff {
    pub action: BackoffAction,
    pub until_ms: u64,
}

impl Budget {
    /// The budget of mail from `source` to `destination` whose MX hosts
    /// are `mx_hosts` (empty for a relay): an `mx` rule's when one
    /// matches, else the destination's own, with the limits of its
    /// `domain` rule or of `[delivery]`.
    pub fn of<'a>(
        config: &Config,
        source: EgressId,
        destination: &Rc<str>,
        mx_hosts: impl IntoIterator<Item = &'a str>,
    ) -> Budget {
        if let Some(rule) = config.shaping_for_mx(mx_hosts) {
            if let crate::config::ShapingMatch::Mx(pattern) = &config.shaping[rule].matcher {
                let name = Rc::from(format!("mx:{pattern}"));
                return Budget::new(config, source, name, config.shape(Some(rule)));
            }
        }
        let shape = config.shape(config.shaping_for_domain(destination));
        Budget::new(config, source, destination.clone(), shape)
    }

    /// The same destination's budget from another source.
    pub fn for_source(&self, config: &Config, source: EgressId) -> Budget {
        Budget::new(config, source, self.name.clone(), self.shape)
    }

    fn new(config: &Config, source: EgressId, name: Rc<str>, shape: Shape) -> Budget {
        let source_name = source_name(config, source);
        let cells = Cells {
            message_rate: MESSAGE_RATE.entry(key(source_name, &name)),
            connection_rate: CONNECTION_RATE.entry(key(source_name, &name)),
            suspended: SUSPENDED.entry(key(source_name, &name)),
            rerouted: REROUTED.entry(key(source_name, &name)),
            throttled: THROTTLED.entry(key(source_name, &name)),
            sent_today: sent_today(source_name, &name),
        };
        let warmup = config
            .source
            .get(usize::from(source))
            .and_then(|s| s.warmup.clone());
        Budget {
            source,
            source_name: Rc::from(source_name),
            name,
            shape,
            warmup,
            cells,
        }
    }

    /// The bytes the process-wide tables hash: source, then name.
    pub fn key(&self) -> impl Iterator<Item = u8> + '_ {
        key(&self.source_name, &self.name)
    }

    /// Takes a token for one more message now, or says when one is free
    /// (always now without a message rate).
    pub fn take_message(&self, now_ms: u64) -> Result<(), u64> {
        let rate = self.throttled(self.shape.max_message_rate, now_ms);
        take(self.cells.message_rate, rate, now_ms)
    }

    /// When the next connection and its first message may go, without
    /// taking either: `now_ms` when both may now.
    pub fn free_at(&self, now_ms: u64) -> u64 {
        let at = |cell, rate: Option<Rate>| match self.throttled(rate, now_ms) {
            Some(rate) => rate::free_at(cell, rate, BURST, now_ms),
            None => now_ms,
        };
        at(self.cells.message_rate, self.shape.max_message_rate).max(at(
            self.cells.connection_rate,
            self.shape.max_connection_rate,
        ))
    }

    /// The same for one more connection.
    pub fn take_connection(&self, now_ms: u64) -> Result<(), u64> {
        let rate = self.throttled(self.shape.max_connection_rate, now_ms);
        take(self.cells.connection_rate, rate, now_ms)
    }

    /// The connections the budget allows now: its cap, scaled by a
    /// throttle (at least one).
    pub fn max_connections(&self, now_ms: u64) -> usize {
        let cap = self.shape.max_connections;
        match self.throttle(now_ms) {
            Some(factor) => ((cap as f64 * factor) as usize).max(1),
            None => cap,
        }
    }

    /// Until when the budget is suspended, if it is.
    pub fn suspended_until(&self, now_ms: u64) -> Option<u64> {
        let until = self.cells.suspended.load(Ordering::Relaxed);
        (until > now_ms).then_some(until)
    }

    /// True while a suspension of a `reroute` rule holds: the waiting
    /// mail moves to another source of its pool.
    pub fn rerouted(&self, now_ms: u64) -> bool {
        self.cells.rerouted.load(Ordering::Relaxed) > now_ms
    }

    /// Counts one more message against the source's warm-up budget for
    /// the day: whether it may be sent (always, out of warm-up). The wall
    /// clock is read only in warm-up.
    pub fn take_warmup(&self, wall_ms: impl FnOnce() -> u64) -> bool {
        match &self.warmup {
            Some(w) => DailyCount(self.cells.sent_today).try_take(w, wall_ms()),
            None => true,
        }
    }

    /// True when the source's warm-up budget for the day is spent.
    pub fn warmup_spent(&self, wall_ms: u64) -> bool {
        self.warmup
            .as_ref()
            .is_some_and(|w| DailyCount(self.cells.sent_today).remaining(w, wall_ms) == Some(0))
    }

    /// The cell of the day's count, when the source is in warm-up: what
    /// the warm-up store keeps across a restart.
    pub fn warmup_cell(&self) -> Option<&'static AtomicU64> {
        self.warmup.as_ref().map(|_| self.cells.sent_today)
    }

    /// The factor a throttle scales the budget by now, if one holds.
    fn throttle(&self, now_ms: u64) -> Option<f64> {
        let packed = self.cells.throttled.load(Ordering::Relaxed);
        let (until, milli) = (packed >> 16, packed & 0xFFFF);
        (until > now_ms && milli > 0).then(|| milli as f64 / 1000.0)
    }

    fn throttled(&self, rate: Option<Rate>, now_ms: u64) -> Option<Rate> {
        match (rate, self.throttle(now_ms)) {
            (Some(rate), Some(factor)) => Some(rate.scaled(factor)),
            (rate, _) => rate,
        }
    }

    /// Applies `rule` from `now_ms` on, over every shard: a suspension or
    /// a throttle until `now_ms` + its duration. What it set or
    /// lengthened, to be logged once; `None` when one as long already
    /// held (another connection saw the same reply first).
    pub fn back_off(&self, rule: &BackoffRule, now_ms: u64) -> Option<BackedOff> {
        let until = now_ms.saturating_add(rule.duration_ms);
        let lengthened = match rule.action {
            BackoffAction::Suspend => {
                if rule.reroute {
                    self.cells.rerouted.fetch_max(until, Ordering::Relaxed);
                }
                self.cells.suspended.fetch_max(until, Ordering::Relaxed) < until
            }
            BackoffAction::Throttle { factor } => {
                let milli = ((factor * 1000.0).round() as u64).clamp(1, 999);
                throttle_until(self.cells.throttled, milli, until, now_ms)
            }
        };
        lengthened.then_some(BackedOff {
            action: rule.action,
            until_ms: until,
        })
    }
}

/// Sets a throttle cell to `milli` thousandths until `until`, keeping the
/// slower factor and the later end of one that holds; false when nothing
/// changed.
fn throttle_until(cell: &AtomicU64, milli: u64, until: u64, now_ms: u64) -> bool {
    let mut seen = cell.load(Ordering::Relaxed);
    loop {
        let (old_until, old_milli) = (seen >> 16, seen & 0xFFFF);
        let active = old_until > now_ms && old_milli > 0;
        let (new_milli, new_until) = match active {
            true => (milli.min(old_milli), until.max(old_until)),
            false => (milli, until),
        };
        if active && new_until == old_until && new_milli == old_milli {
            return false;
        }
        let packed = (new_until << 16) | new_milli;
        match cell.compare_exchange_weak(seen, packed, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return true,
            Err(current) => seen = current,
        }
    }
}

/// The name of source `source` of `config` (`default` without
/// `[[source]]`): what the tables key on.
pub fn source_name(config: &Config, source: EgressId) -> &str {
    config
        .source
        .get(usize::from(source))
        .map_or("default", |s| s.name.as_str())
}

/// The bytes a budget's entries are found by: the source's name, a byte
/// no name holds, then the budget's name.
fn key<'a>(source: &'a str, name: &'a str) -> impl Iterator<Item = u8> + 'a {
    source.bytes().chain([0]).chain(name.bytes())
}

/// Ends a backoff's suspension of `source` × `name` (a destination, or
/// `mx:` and a rule's pattern) for every shard: an operator's resume,
/// when a provider lifted its block early. True when one held.
pub fn lift_suspension(source: &str, name: &str, now_ms: u64) -> bool {
    REROUTED
        .entry(key(source, name))
        .store(0, Ordering::Relaxed);
    SUSPENDED
        .entry(key(source, name))
        .swap(0, Ordering::Relaxed)
        > now_ms
}

/// How many budgets a backoff holds at `now_ms`: suspended, throttled.
/// A scan of two tables of 65,536 words (budgets that share an entry
/// count once): for a metrics scrape, never for the mail path.
pub fn active_backoffs(now_ms: u64) -> (usize, usize) {
    let suspended = SUSPENDED
        .entries()
        .iter()
        .filter(|c| c.load(Ordering::Relaxed) > now_ms)
        .count();
    let throttled = THROTTLED
        .entries()
        .iter()
        .filter(|c| {
            let packed = c.load(Ordering::Relaxed);
            packed >> 16 > now_ms && packed & 0xFFFF > 0
        })
        .count();
    (suspended, throttled)
}

/// The warm-up count cell of `source` × `name` (a destination or an MX
/// rollup), for the budget and for restoring a snapshot.
pub fn sent_today(source: &str, name: &str) -> &'static AtomicU64 {
    SENT_TODAY.entry(key(source, name))
}

/// Smooth, one at a time: a rate is never spent in a burst at the top of
/// its period.
const BURST: u32 = 1;

fn take(tat: &AtomicU64, rate: Option<Rate>, now_ms: u64) -> Result<(), u64> {
    match rate {
        Some(rate) => rate::take(tat, rate, BURST, now_ms),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(name: &str) -> Budget {
        Budget::of(&Config::embedded_default(), 0, &Rc::from(name), [])
    }

    fn rule(action: BackoffAction, duration_ms: u64) -> BackoffRule {
        BackoffRule {
            code: Some(421),
            enhanced: None,
            text: None,
            action,
            duration_ms,
            reroute: false,
        }
    }

    #[test]
    fn a_suspension_holds_until_its_end_and_is_never_shortened() {
        let b = budget("suspend.budget.example");
        let long = rule(BackoffAction::Suspend, 60_000);
        let short = rule(BackoffAction::Suspend, 1_000);
        assert_eq!(b.suspended_until(1_000), None);
        let set = b.back_off(&long, 1_000).expect("set");
        assert_eq!(set.until_ms, 61_000);
        assert_eq!(
            b.back_off(&short, 2_000),
            None,
            "a shorter one changes nothing"
        );
        assert_eq!(b.suspended_until(60_999), Some(61_000));
        assert_eq!(b.suspended_until(61_000), None);
        // Another source's budget for the same destination is free.
        let config = Config::from_str_named(
            "[[source]]\nname = \"a\"\naddress = \"127.0.0.2\"\n[[source]]\nname = \"b\"\naddress = \"127.0.0.3\"\n",
            "test.toml",
        )
        .expect("config");
        let other = Budget::of(&config, 1, &Rc::from("suspend.budget.example"), []);
        assert_eq!(other.suspended_until(2_000), None);
    }

    #[test]
    fn a_throttle_scales_the_connection_cap_and_the_slower_factor_wins() {
        let b = budget("throttle.budget.example");
        let cap = b.shape.max_connections;
        let half = rule(BackoffAction::Throttle { factor: 0.5 }, 10_000);
        let tenth = rule(BackoffAction::Throttle { factor: 0.1 }, 5_000);
        assert!(b.back_off(&half, 0).is_some());
        assert_eq!(b.max_connections(1), (cap / 2).max(1));
        assert!(
            b.back_off(&tenth, 0).is_some(),
            "a slower factor changes it"
        );
        assert_eq!(b.max_connections(1), (cap / 10).max(1));
        assert_eq!(b.max_connections(10_000), cap, "over at its (later) end");
    }

    #[test]
    fn a_reroute_rule_marks_its_suspension() {
        let b = budget("reroute.budget.example");
        let plain = rule(BackoffAction::Suspend, 1_000);
        assert!(b.back_off(&plain, 0).is_some());
        assert!(!b.rerouted(1), "a rule without reroute");
        let reroute = BackoffRule {
            reroute: true,
            ..rule(BackoffAction::Suspend, 5_000)
        };
        assert!(b.back_off(&reroute, 0).is_some());
        assert!(b.rerouted(4_999) && b.suspended_until(4_999).is_some());
        assert!(!b.rerouted(5_000));
    }

    #[test]
    fn a_source_in_warmup_takes_its_days_budget_over_every_budget_of_it() {
        let text = "[[source]]\nname = \"new\"\naddress = \"127.0.0.2\"\n\
                    warmup = { start = \"2026-12-01\", daily = [2] }\n\
                    [[source]]\nname = \"warm\"\naddress = \"127.0.0.3\"\n";
        let config = Config::from_str_named(text, "test.toml").expect("config");
        let dest: Rc<str> = Rc::from("warmup.budget.example");
        let new = Budget::of(&config, 0, &dest, []);
        let warm = new.for_source(&config, 1);
        assert!(warm.warmup_cell().is_none() && new.warmup_cell().is_some());
        let noon = 20_788 * 86_400_000 + 43_200_000;
        assert!(!new.warmup_spent(noon));
        // Another connection's budget of the same pair shares the count.
        let again = Budget::of(&config, 0, &dest, []);
        assert!(new.take_warmup(|| noon) && again.take_warmup(|| noon));
        assert!(!new.take_warmup(|| noon) && new.warmup_spent(noon));
        assert!(again.warmup_spent(noon));
        assert!((0..100).all(|_| warm.take_warmup(|| panic!("no clock out of warm-up"))));
        assert!(!warm.warmup_spent(noon));
        assert!(!new.warmup_spent(noon + 86_400_000), "fresh the next day");
    }
}
