//! petrel's metrics: their names, their help texts, the Prometheus
//! recorder they are kept in, and the handles a shard counts with.
//!
//! Every metric is registered once, when a shard (or the spool, the
//! resolver, a listener) starts, and kept as a handle: counting is then
//! one atomic operation on a value that only that shard touches (each
//! carries a `shard` label), never a registry lookup or a lock on the
//! mail path. Label values are bounded: shard, source, pool, result,
//! reply code, direction; never a recipient or a domain.
//! Must never: be read on the hot path, or let a scrape make a shard wait
//! (the admin endpoint renders from the recorder on its own thread).

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const MESSAGES_RECEIVED: &str = "petrel_messages_received_total";
pub const RECIPIENTS: &str = "petrel_recipients_total";
pub const QUEUE_RECIPIENTS: &str = "petrel_queue_recipients";
pub const DELIVERY_DESTINATIONS: &str = "petrel_delivery_destinations";
pub const SMTP_SESSIONS: &str = "petrel_smtp_sessions";
pub const SMTP_REJECTIONS: &str = "petrel_smtp_rejections_total";
pub const SPOOL_BYTES: &str = "petrel_spool_bytes";
pub const SPOOL_SYNC_SECONDS: &str = "petrel_spool_sync_seconds";
pub const DELIVERY_SECONDS: &str = "petrel_delivery_seconds";
pub const DNS_QUERIES: &str = "petrel_dns_queries_total";
pub const BACKOFF_ACTIVE: &str = "petrel_backoff_active";
pub const ACCOUNTING_PAUSED: &str = "petrel_accounting_paused";
pub const ACCOUNTING_LOST: &str = "petrel_accounting_lost_records_total";
pub const DKIM_SIGNATURES: &str = "petrel_dkim_signatures_total";
pub const DKIM_SIGNED_ON_SHARD: &str = "petrel_dkim_signed_on_shard_total";

/// Every metric petrel exports, by name.
pub const NAMES: &[&str] = &[
    MESSAGES_RECEIVED,
    RECIPIENTS,
    QUEUE_RECIPIENTS,
    DELIVERY_DESTINATIONS,
    SMTP_SESSIONS,
    SMTP_REJECTIONS,
    SPOOL_BYTES,
    SPOOL_SYNC_SECONDS,
    DELIVERY_SECONDS,
    DNS_QUERIES,
    BACKOFF_ACTIVE,
    ACCOUNTING_PAUSED,
    ACCOUNTING_LOST,
    DKIM_SIGNATURES,
    DKIM_SIGNED_ON_SHARD,
];

/// Upper bounds of the spool sync histogram: 50 µs to 1 s.
const SYNC_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];
/// Upper bounds of the delivery time histogram: 100 ms to 5 days.
const DELIVERY_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0,
    432000.0,
];

/// Builds the recorder and makes it the process's: from then on every
/// handle registered counts into it. The handle renders the text a scrape
/// gets. `None` when a recorder was installed already (a second daemon in
/// one process, which only tests do).
pub fn install() -> Option<PrometheusHandle> {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(SPOOL_SYNC_SECONDS.into()), SYNC_BUCKETS)
        .ok()?
        .set_buckets_for_metric(Matcher::Full(DELIVERY_SECONDS.into()), DELIVERY_BUCKETS)
        .ok()?;
    let handle = builder.install_recorder().ok()?;
    describe();
    Some(handle)
}

/// The help texts, in the order of [`NAMES`].
fn describe() {
    describe_counter!(
        MESSAGES_RECEIVED,
        Unit::Count,
        "Messages accepted (answered 250 after the spool made them durable)."
    );
    describe_counter!(
        RECIPIENTS,
        Unit::Count,
        "Recipient outcomes: delivered, deferred (an attempt that will be retried) or bounced, by source and pool."
    );
    describe_gauge!(
        QUEUE_RECIPIENTS,
        Unit::Count,
        "Recipients in the queue: received or deferred, not yet delivered or bounced."
    );
    describe_gauge!(
        DELIVERY_DESTINATIONS,
        Unit::Count,
        "Destinations a shard's delivery side knows by name: those with mail queued, deferred or in flight, or other state."
    );
    describe_gauge!(
        SMTP_SESSIONS,
        Unit::Count,
        "Open SMTP sessions: in = clients connected to a listener, out = delivery connections."
    );
    describe_counter!(
        SMTP_REJECTIONS,
        Unit::Count,
        "Replies of 400 and above sent to SMTP clients, by reply code."
    );
    describe_gauge!(
        SPOOL_BYTES,
        Unit::Bytes,
        "Bytes of the spool's segment files."
    );
    describe_histogram!(
        SPOOL_SYNC_SECONDS,
        Unit::Seconds,
        "Time of one group commit's fdatasync."
    );
    describe_histogram!(
        DELIVERY_SECONDS,
        Unit::Seconds,
        "Time from reception to a recipient's final outcome (delivered or bounced)."
    );
    describe_counter!(
        DNS_QUERIES,
        Unit::Count,
        "Delivery's DNS lookups, by result."
    );
    describe_gauge!(
        BACKOFF_ACTIVE,
        Unit::Count,
        "Source x destination budgets under a backoff now, by action (suspend, throttle)."
    );
    describe_gauge!(
        ACCOUNTING_PAUSED,
        Unit::Count,
        "1 while the accounting log cannot be written (a full disk): records are lost, mail is not."
    );
    describe_counter!(
        ACCOUNTING_LOST,
        Unit::Count,
        "Accounting records not written: while the log was paused, or when its queue was full."
    );
    describe_counter!(
        DKIM_SIGNATURES,
        Unit::Count,
        "Messages DKIM-signed at reception (signed), and those a signing key matched but that could not be signed and went unsigned (failed)."
    );
    describe_counter!(
        DKIM_SIGNED_ON_SHARD,
        Unit::Count,
        "Messages signed on the shard that received them although [signing] threads is set, because the signing threads' queue was full."
    );
}

/// A shard's label value.
fn shard_label(shard: usize) -> String {
    shard.to_string()
}

/// What a shard's SMTP sessions count: messages accepted, sessions open,
/// and the negative replies they sent, by code.
pub struct SessionMetrics {
    pub received: metrics::Counter,
    pub sessions: metrics::Gauge,
    /// Messages DKIM-signed, and those that could not be.
    pub dkim_signed: metrics::Counter,
    pub dkim_failed: metrics::Counter,
    /// Messages signed here because the signing threads' queue was full.
    pub dkim_on_shard: metrics::Counter,
    shard: String,
    /// One counter per reply code seen, found by a short scan (a session
    /// sends a handful of codes).
    rejections: std::cell::RefCell<Vec<(u16, metrics::Counter)>>,
}

impl SessionMetrics {
    pub fn new(shard: usize) -> SessionMetrics {
        let shard = shard_label(shard);
        SessionMetrics {
            received: metrics::counter!(MESSAGES_RECEIVED, "shard" => shard.clone()),
            sessions: metrics::gauge!(SMTP_SESSIONS, "shard" => shard.clone(), "direction" => "in"),
            dkim_signed: metrics::counter!(DKIM_SIGNATURES, "shard" => shard.clone(), "result" => "signed"),
            dkim_failed: metrics::counter!(DKIM_SIGNATURES, "shard" => shard.clone(), "result" => "failed"),
            dkim_on_shard: metrics::counter!(DKIM_SIGNED_ON_SHARD, "shard" => shard.clone()),
            shard,
            rejections: std::cell::RefCell::new(Vec::new()),
        }
    }

    /// Counts the negative replies in `out`, bytes about to go to a
    /// client (whole reply lines).
    pub fn count_replies(&self, out: &[u8]) {
        rejection_codes(out, |code| {
            let mut rejections = self.rejections.borrow_mut();
            match rejections.iter().find(|(c, _)| *c == code) {
                Some((_, counter)) => counter.increment(1),
                None => {
                    let code_label = code.to_string();
                    let counter = metrics::counter!(SMTP_REJECTIONS,
                        "shard" => self.shard.clone(), "code" => code_label);
                    counter.increment(1);
                    rejections.push((code, counter));
                }
            }
        });
    }
}

/// Calls `f` with the code of each reply in `out` that is 400 or above:
/// once per reply, at its last line (`NNN ` rather than `NNN-`).
pub fn rejection_codes(out: &[u8], mut f: impl FnMut(u16)) {
    // Where each line starts: at 0 and after each LF (found by memchr,
    // not byte by byte: this runs on every reply a session sends).
    let starts = std::iter::once(0).chain(memchr::memchr_iter(b'\n', out).map(|lf| lf + 1));
    for start in starts {
        let [a @ b'4'..=b'5', b @ b'0'..=b'9', c @ b'0'..=b'9', b' ', ..] = out[start..] else {
            continue;
        };
        f(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'));
    }
}

/// Delivery's outcomes, by result, source and pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Result3 {
    Delivered = 0,
    Deferred = 1,
    Bounced = 2,
}

const RESULTS: [&str; 3] = ["delivered", "deferred", "bounced"];

/// What a shard's delivery counts.
pub struct DeliveryMetrics {
    /// `[result][source][pool]`, flattened.
    recipients: Vec<metrics::Counter>,
    sources: usize,
    pools: usize,
    pub queue: metrics::Gauge,
    /// The destination names the shard keeps.
    pub destinations: metrics::Gauge,
    pub sessions: metrics::Gauge,
    pub delivery_seconds: metrics::Histogram,
}

impl DeliveryMetrics {
    /// The handles of `shard`, one recipient counter per result × source
    /// × pool of the names given.
    pub fn new(shard: usize, sources: &[&str], pools: &[&str]) -> DeliveryMetrics {
        let shard = shard_label(shard);
        let mut recipients = Vec::with_capacity(3 * sources.len() * pools.len());
        for result in RESULTS {
            for source in sources {
                for pool in pools {
                    recipients.push(metrics::counter!(RECIPIENTS,
                        "shard" => shard.clone(), "result" => result,
                        "source" => source.to_string(), "pool" => pool.to_string()));
                }
            }
        }
        DeliveryMetrics {
            recipients,
            sources: sources.len(),
            pools: pools.len(),
            queue: metrics::gauge!(QUEUE_RECIPIENTS, "shard" => shard.clone()),
            destinations: metrics::gauge!(DELIVERY_DESTINATIONS, "shard" => shard.clone()),
            sessions: metrics::gauge!(SMTP_SESSIONS, "shard" => shard.clone(), "direction" => "out"),
            delivery_seconds: metrics::histogram!(DELIVERY_SECONDS, "shard" => shard),
        }
    }

    /// Counts `n` recipients of `result` from source `source` of pool
    /// `pool` (indexes, as the handles were made).
    pub fn recipients(&self, result: Result3, source: usize, pool: usize, n: u64) {
        let i = (result as usize * self.sources + source.min(self.sources - 1)) * self.pools
            + pool.min(self.pools - 1);
        if let Some(c) = self.recipients.get(i) {
            c.increment(n);
        }
    }
}

/// A shard's spool: the time of its syncs and the size of its files.
pub struct SpoolMetrics {
    pub syncs: metrics::Histogram,
    pub bytes: metrics::Gauge,
}

impl SpoolMetrics {
    pub fn new(shard: usize) -> SpoolMetrics {
        let shard = shard_label(shard);
        SpoolMetrics {
            syncs: metrics::histogram!(SPOOL_SYNC_SECONDS, "shard" => shard.clone()),
            bytes: metrics::gauge!(SPOOL_BYTES, "shard" => shard),
        }
    }
}

/// The resolver's queries to nameservers, by result.
pub struct DnsMetrics {
    counters: [metrics::Counter; 6],
}

/// What became of one query to a nameserver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsResult {
    Answer = 0,
    NxDomain = 1,
    NoData = 2,
    ServFail = 3,
    Timeout = 4,
    Error = 5,
}

impl DnsMetrics {
    pub fn new(shard: usize) -> DnsMetrics {
        let shard = shard_label(shard);
        let counter = |result: &'static str| metrics::counter!(DNS_QUERIES, "shard" => shard.clone(), "result" => result);
        DnsMetrics {
            counters: [
                counter("answer"),
                counter("nxdomain"),
                counter("nodata"),
                counter("servfail"),
                counter("timeout"),
                counter("error"),
            ],
        }
    }

    pub fn count(&self, result: DnsResult) {
        self.counters[result as usize].increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_are_the_last_lines_of_replies_of_400_and_above() {
        let mut codes = Vec::new();
        let out = b"250 2.1.0 Ok\r\n550-5.1.1 no such\r\n550 5.1.1 user\r\n\
                    421 4.3.2 closing\r\n354 go on\r\n503 5.5.1 bad sequence\r\n600 x\r\n";
        rejection_codes(out, |c| codes.push(c));
        assert_eq!(codes, [550, 421, 503]);
        let mut none = Vec::new();
        rejection_codes(b"250-PIPELINING\r\n250 SIZE\r\n", |c| none.push(c));
        assert!(none.is_empty());
        let mut first = Vec::new();
        rejection_codes(b"554 5.7.1 no\r\n", |c| first.push(c));
        rejection_codes(b"452 4.5.3 too many", |c| first.push(c));
        assert_eq!(
            first,
            [554, 452],
            "the first line, and one without its line end"
        );
    }
}
