//! What the limits of a source × destination are counted against, over
//! every shard: the egress source and either the destination (a domain
//! or a relay) or, when its MX hosts match an `mx` shaping rule, that
//! rule (an MX rollup: every domain hosted there shares one budget per
//! source). A budget's open connections are counted in `slots`; its
//! message and connection rates are GCRA buckets here, one `AtomicU64`
//! each in a process-wide table.
//! Must never: take a lock, or touch a bucket more than once per message
//! or connection.

use std::rc::Rc;
use std::sync::atomic::AtomicU64;

use crate::config::{Config, Shape};
use crate::schedule::EgressId;
use crate::shaping::rate::{self, Rate};
use crate::slot_table::SlotTable;

/// A source × destination's limits and the name they are counted under.
#[derive(Debug, Clone)]
pub struct Budget {
    pub source: EgressId,
    /// The destination, or `mx:` and the rule's pattern for a rollup.
    pub name: Rc<str>,
    pub shape: Shape,
}

/// Theoretical arrival times of the message-rate buckets.
static MESSAGE_RATE: SlotTable<AtomicU64> = SlotTable::new();
/// Theoretical arrival times of the connection-rate buckets.
static CONNECTION_RATE: SlotTable<AtomicU64> = SlotTable::new();

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
                return Budget {
                    source,
                    name: Rc::from(format!("mx:{pattern}")),
                    shape: config.shape(Some(rule)),
                };
            }
        }
        Budget {
            source,
            name: destination.clone(),
            shape: config.shape(config.shaping_for_domain(destination)),
        }
    }

    /// The bytes the process-wide tables hash: source, then name.
    pub fn key(&self) -> impl Iterator<Item = u8> + '_ {
        self.source
            .to_le_bytes()
            .into_iter()
            .chain(self.name.bytes())
    }

    /// Takes a token for one more message now, or says when one is free
    /// (always now without a message rate).
    pub fn take_message(&self, now_ms: u64) -> Result<(), u64> {
        take(&MESSAGE_RATE, self, self.shape.max_message_rate, now_ms)
    }

    /// The same for one more connection.
    pub fn take_connection(&self, now_ms: u64) -> Result<(), u64> {
        take(
            &CONNECTION_RATE,
            self,
            self.shape.max_connection_rate,
            now_ms,
        )
    }
}

/// Smooth, one at a time: a rate is never spent in a burst at the top of
/// its period.
const BURST: u32 = 1;

fn take(
    table: &'static SlotTable<AtomicU64>,
    b: &Budget,
    rate: Option<Rate>,
    now_ms: u64,
) -> Result<(), u64> {
    match rate {
        Some(rate) => rate::take(table.entry(b.key()), rate, BURST, now_ms),
        None => Ok(()),
    }
}
