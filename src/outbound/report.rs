//! What each recipient's outcome tells the operator: one log line per
//! recipient delivered, deferred or bounced (unless `[log] messages` is
//! off), each naming the message by the queue ID its client was given;
//! the delivery metrics; and one accounting record per outcome (and per
//! delay notice) when `[accounting]` is on.
//!
//! Owns: the outcome lines and what they say (the queue ID, sender,
//! recipient, relay, source, delay and reply), and the fields of the
//! delivery side's accounting records. It is called once per
//! outcome by `outcome`, after the verdict and before the spool forgets
//! the message.
//! Must never: change what happens to a recipient, or hold the spool
//! state across an await.

use std::fmt::{self, Write as _};
use std::net::SocketAddr;

use super::Outbound;
use spool_format::envelope::ChunkRef;

use crate::accounting::{DsnStatus, Record, RecordType};
use crate::metrics::Result3;
use crate::schedule::EgressId;
use crate::smtp::client::ServerReply;
use crate::spool::DisplayId;

/// Which way a connection went: the source it left from and, when one
/// was open, the host and address it reached.
#[derive(Debug, Clone, Copy)]
pub struct Via<'a> {
    pub source: EgressId,
    pub host: Option<&'a str>,
    pub addr: Option<SocketAddr>,
}

impl Via<'_> {
    /// No connection: only the source the mail was to leave from.
    pub fn source(source: EgressId) -> Via<'static> {
        Via {
            source,
            host: None,
            addr: None,
        }
    }
}

/// A recipient's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Tried again in this many seconds.
    Deferred {
        retry_in_s: u64,
    },
    Bounced,
    /// A delay notice went to the sender (for the accounting log only).
    DelayNotice,
    /// Failed by the operator with no notice.
    Deleted,
}

impl Outcome {
    fn word(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Deferred { .. } => "deferred",
            Outcome::Bounced => "bounced",
            Outcome::DelayNotice => "delay notice",
            Outcome::Deleted => "deleted",
        }
    }

    fn record_type(self) -> RecordType {
        match self {
            Outcome::Delivered => RecordType::Delivered,
            Outcome::Deferred { .. } => RecordType::Deferred,
            // Both leave the queue undelivered.
            Outcome::Bounced | Outcome::Deleted => RecordType::Bounced,
            Outcome::DelayNotice => RecordType::Delayed,
        }
    }
}

/// The relay as Postfix writes it: `host[address]:port`, or `none`.
struct Relay<'a>(&'a Via<'a>);

impl fmt::Display for Relay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0.host, self.0.addr) {
            (Some(h), Some(a)) => write!(f, "{h}[{}]:{}", a.ip(), a.port()),
            (Some(h), None) => f.write_str(h),
            (None, Some(a)) => write!(f, "[{}]:{}", a.ip(), a.port()),
            (None, None) => f.write_str("none"),
        }
    }
}

impl Outbound {
    /// The queue ID of one of this shard's messages.
    pub(super) fn queue_id(&self, msg_id: u64) -> DisplayId {
        self.spool.queue_id(msg_id)
    }

    /// Reports `outcome` for each of `rcpts` (envelope index and reply) of
    /// message `msg_id`: a log line (unless `[log] messages` is off), the
    /// metrics and an accounting record (when the log is on). A delay
    /// notice gets only its accounting record.
    pub(super) fn report<'r>(
        &self,
        msg_id: u64,
        outcome: Outcome,
        rcpts: impl IntoIterator<Item = (u32, &'r ServerReply)>,
        via: &Via<'_>,
    ) {
        let id = self.queue_id(msg_id);
        let egress = self.egress();
        let source = egress.source(via.source);
        let now = self.clock.wall_ms();
        let (result, retry_in_s) = match outcome {
            Outcome::Delivered => (Some(Result3::Delivered), None),
            Outcome::Deferred { retry_in_s } => (Some(Result3::Deferred), Some(retry_in_s)),
            // Counted as failed: the recipient leaves the queue undelivered.
            Outcome::Bounced | Outcome::Deleted => (Some(Result3::Bounced), None),
            Outcome::DelayNotice => (None, None),
        };
        let config = self.config();
        let log = config.log.messages && result.is_some();
        let accounting = self.accounting.as_ref();
        self.spool.with_state(|s| {
            let env = s
                .index
                .messages
                .get(&msg_id)
                .and_then(|m| s.envelope(m.segment_id(), m.offset));
            let from = env.map(|e| String::from_utf8_lossy(&e.reverse_path));
            let from = from.as_deref().unwrap_or("");
            let received_ms = env.map_or(now, |e| e.received_ms.to_native());
            let delay_s = now.saturating_sub(received_ms) as f64 / 1000.0;
            let pool = egress.pool_index(env.map_or(0, |e| e.pool.to_native()));
            // What every record of this message shares.
            let shared = accounting.map(|_| {
                let job_id = config.accounting.job_id_header().and_then(|name| {
                    let chunk = |c| s.chunk(&ChunkRef::from(c));
                    crate::smtp::header_field::stored_value_text(env?.body.iter(), chunk, name)
                });
                Shared {
                    job_id,
                    env_id: env
                        .filter(|e| !e.envid.is_empty())
                        .map(|e| String::from_utf8_lossy(&e.envid)),
                    size: env.map(|e| e.body_len.to_native()),
                }
            });
            let pool_name = egress.pool_name(pool);
            // `smtp;` and the reply, for each record in turn.
            let mut diag = String::with_capacity(if accounting.is_some() { 128 } else { 0 });
            let mut n = 0;
            for (i, reply) in rcpts {
                n += 1;
                if matches!(result, Some(Result3::Delivered | Result3::Bounced)) {
                    self.metrics().delivery_seconds.record(delay_s);
                }
                let rcpt = env.and_then(|e| e.recipients.get(i as usize));
                let to = rcpt.map(|r| String::from_utf8_lossy(&r.address));
                if let (Some(log), Some(shared)) = (accounting, &shared) {
                    let mut r = Record::new(
                        outcome.record_type(),
                        (now / 1000, received_ms / 1000),
                        from,
                        to.as_deref().unwrap_or(""),
                        id.as_str(),
                    );
                    let orcpt = rcpt
                        .filter(|r| !r.orcpt.is_empty())
                        .map(|r| String::from_utf8_lossy(&r.orcpt));
                    r.orcpt = orcpt.as_deref();
                    r.dsn_status = reply.status.map(|s| DsnStatus {
                        class: s.class,
                        subject: s.subject,
                        detail: s.detail,
                    });
                    diag.clear();
                    diag.push_str("smtp;");
                    // One line, as in the log: a reply's line breaks and
                    // control characters escaped.
                    let _ = write!(diag, "{}", reply.logged());
                    r.dsn_diag = Some(&diag);
                    r.dsn_mta = via.host;
                    if matches!(outcome, Outcome::Bounced | Outcome::Deferred { .. }) {
                        let status = reply.status.map(|s| (s.class, s.subject, s.detail));
                        let rules = self.categories.borrow();
                        r.bounce_cat = Some(rules.categorize(reply.code, status, &reply.text));
                    }
                    r.dlv_source_ip = source.address;
                    r.dlv_destination_ip = via.addr.map(|a| a.ip());
                    r.dlv_size = shared.size;
                    r.vmta = Some(&source.name);
                    r.vmta_pool = Some(pool_name);
                    r.job_id = shared.job_id.as_deref();
                    r.env_id = shared.env_id.as_deref();
                    log.record(&r);
                }
                if !log {
                    continue;
                }
                tracing::info!(
                    id = %id,
                    from,
                    to = to.as_deref().unwrap_or(""),
                    relay = %Relay(via),
                    source = %source.name,
                    delay_s,
                    retry_in_s,
                    reply = %reply.logged(),
                    "{}",
                    outcome.word()
                );
            }
            if let Some(result) = result {
                let m = self.metrics();
                m.recipients(result, usize::from(via.source), pool, n);
                if result != Result3::Deferred {
                    m.queue.decrement(n as f64);
                }
            }
        });
    }
}

/// What the accounting records of one message share.
struct Shared<'a> {
    job_id: Option<String>,
    env_id: Option<std::borrow::Cow<'a, str>>,
    size: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relay_reads_as_host_address_and_port() {
        let addr: SocketAddr = "192.0.2.7:25".parse().unwrap();
        let six: SocketAddr = "[2001:db8::7]:25".parse().unwrap();
        let via = |host, addr| Via {
            source: 0,
            host,
            addr,
        };
        let text = |v: Via<'_>| Relay(&v).to_string();
        assert_eq!(
            text(via(Some("mx.example"), Some(addr))),
            "mx.example[192.0.2.7]:25"
        );
        assert_eq!(
            text(via(Some("mx.example"), Some(six))),
            "mx.example[2001:db8::7]:25"
        );
        assert_eq!(text(via(Some("mx.example"), None)), "mx.example");
        assert_eq!(text(via(None, None)), "none");
    }
}
