//! What each recipient's outcome tells the operator: one log line per
//! recipient delivered, deferred or bounced (unless `[log] messages` is
//! off), each naming the message by the queue ID its client was given.
//!
//! Owns: the outcome lines and what they say (the queue ID, sender,
//! recipient, relay, source, delay and reply). It is called once per
//! outcome by `outcome`, after the verdict and before the spool forgets
//! the message.
//! Must never: change what happens to a recipient, or hold the spool
//! state across an await.

use std::fmt;
use std::net::SocketAddr;

use super::Outbound;
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
    /// Failed by the operator with no notice.
    Deleted,
}

impl Outcome {
    fn word(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Deferred { .. } => "deferred",
            Outcome::Bounced => "bounced",
            Outcome::Deleted => "deleted",
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
    /// message `msg_id`.
    pub(super) fn report<'r>(
        &self,
        msg_id: u64,
        outcome: Outcome,
        rcpts: impl IntoIterator<Item = (u32, &'r ServerReply)>,
        via: &Via<'_>,
    ) {
        let id = self.queue_id(msg_id);
        let source = &self.egress.source(via.source).name;
        let now = self.clock.wall_ms();
        let (result, retry_in_s) = match outcome {
            Outcome::Delivered => (Result3::Delivered, None),
            Outcome::Deferred { retry_in_s } => (Result3::Deferred, Some(retry_in_s)),
            // Counted as failed: the recipient leaves the queue undelivered.
            Outcome::Bounced | Outcome::Deleted => (Result3::Bounced, None),
        };
        let log = self.config.log.messages;
        self.spool.with_state(|s| {
            let env = s
                .index
                .messages
                .get(&msg_id)
                .and_then(|m| s.envelope(m.segment_id(), m.offset));
            let from = env.map(|e| String::from_utf8_lossy(&e.reverse_path));
            let from = from.as_deref().unwrap_or("");
            let delay_ms = env.map_or(0, |e| now.saturating_sub(e.received_ms.to_native()));
            let delay_s = delay_ms as f64 / 1000.0;
            let pool = self
                .egress
                .pool_index(env.map_or(0, |e| e.pool.to_native()));
            let mut n = 0;
            for (i, reply) in rcpts {
                n += 1;
                if result != Result3::Deferred {
                    self.metrics.delivery_seconds.record(delay_s);
                }
                if !log {
                    continue;
                }
                let to = env
                    .and_then(|e| e.recipients.get(i as usize))
                    .map(|r| String::from_utf8_lossy(&r.address));
                tracing::info!(
                    id = %id,
                    from,
                    to = to.as_deref().unwrap_or(""),
                    relay = %Relay(via),
                    source = %source,
                    delay_s,
                    retry_in_s,
                    reply = %String::from_utf8_lossy(&reply.text),
                    "{}",
                    outcome.word()
                );
            }
            let m = &self.metrics;
            m.recipients(result, usize::from(via.source), pool, n);
            if result != Result3::Deferred {
                m.queue.decrement(n as f64);
            }
        });
    }
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
