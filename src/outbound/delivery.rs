//! The decisions of delivering to one destination, as a sans-IO machine:
//! one [`Delivery`] per connection task, fed what happened (the hosts
//! resolved, how a connection ended, whether another shard waits for the
//! destination's slot, the time) and answering what to do next (connect
//! to this address, in plaintext or not; take another message or idle or
//! close; pipeline the next message or not; bounce or defer the
//! destination and suspend it until when).
//!
//! Owns: host and address fallback in MX order (skipping addresses of the
//! other family than the egress source's, and at most `max_addresses` of
//! them per run), the plaintext retry after
//! a failed TLS handshake (when the policy allows it), the reconnection of
//! a connection the server closed while idle, the fair share of a
//! contested connection slot, the idle timeout and the per-connection
//! message limit, the suspension of a destination whose hosts all failed,
//! and the sorting of a transaction's outcomes into delivered, failed and
//! deferred recipients.
//! Must never: do I/O, spawn, sleep or read the clock (`now_ms` is an
//! input, so every rule runs on virtual time in its tests); give up on a
//! job in hand without saying what becomes of it (every [`Step`] that ends
//! a run says whether the job is bounced, deferred or given back).

use std::net::{IpAddr, SocketAddr};

use super::destination::{Hop, NoRoute};
use crate::config::{DeliverySection, Shape};
use crate::smtp::client::{OutcomeKind, RcptOutcome, ServerReply};

/// Messages a connection carries before it hands a contested slot over
/// to a connection task waiting for it on another shard.
pub const FAIR_SHARE: usize = 50;
/// How often an idle connection looks whether another shard wants its
/// slot.
pub const CONTENTION_POLL_MS: u64 = 50;
/// Longest pause of a destination whose hosts all failed.
pub const SUSPEND_MAX_MS: u64 = 60_000;

/// The limits a [`Delivery`] keeps (`[delivery]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub max_messages_per_connection: usize,
    /// How long an open connection waits for another message.
    pub idle_timeout_ms: u64,
    /// How long a destination whose hosts all failed gets no connection.
    pub suspend_ms: u64,
    /// Addresses a run tries, over all the hosts (`max_mx_addresses`).
    pub max_addresses: usize,
}

impl Policy {
    /// The policy of `[delivery]` and a destination's `shape`: a
    /// destination that failed is suspended until its first retry step,
    /// at most [`SUSPEND_MAX_MS`].
    pub fn of(d: &DeliverySection, shape: &Shape) -> Policy {
        let first_retry = d.retry.first().map_or(SUSPEND_MAX_MS, |r| r.as_millis());
        Policy {
            max_messages_per_connection: shape.max_messages_per_connection,
            idle_timeout_ms: d.idle_timeout.as_millis(),
            suspend_ms: first_retry.min(SUSPEND_MAX_MS),
            max_addresses: d.max_mx_addresses,
        }
    }
}

/// What the connection task does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Open a connection to `addr` of [`Delivery::host`]; `plaintext`:
    /// without STARTTLS (the retry after a failed handshake).
    Connect { addr: SocketAddr, plaintext: bool },
    /// No host will ever take the destination's mail: bounce the job in
    /// hand and every job queued for the destination with `reply`.
    Bounce(ServerReply),
    /// No host can be reached now: defer the job in hand and every job
    /// ready for the destination with `reply`, and open no connection to
    /// it before `suspend_until_ms`.
    Defer {
        reply: ServerReply,
        suspend_until_ms: u64,
    },
    /// The source can reach none of the destination's addresses (they are
    /// all of the other family): its mail goes to a source of its pool
    /// that can, or, when the pool has none, is deferred as for `Defer`.
    OtherSource {
        reply: ServerReply,
        suspend_until_ms: u64,
    },
    /// The run is over; a job still in hand goes back to the queue. `ok`:
    /// no connection-level failure (the destination's window may widen).
    Finish { ok: bool },
}

/// How one connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// QUIT, or the server closed after settling what it was given.
    Closed,
    /// The TCP connection could not be opened.
    ConnectFailed(String),
    /// The TLS handshake failed; `plaintext_allowed`: the TLS policy lets
    /// the message go in plaintext to this host instead.
    TlsFailed {
        why: String,
        plaintext_allowed: bool,
    },
    /// The server closed the connection while it idled between messages.
    Stale,
    /// The host failed before finishing a transaction (a 421, a lost
    /// connection, a timeout), with the reply that says why.
    HostFailed(ServerReply),
}

/// A recipient and the reply that decided its fate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptReply {
    pub rcpt: u32,
    pub reply: ServerReply,
}

/// The decisions of one connection task to one destination.
#[derive(Debug)]
pub struct Delivery {
    policy: Policy,
    /// The address connections bind to; `None` for the machine's own,
    /// which reaches either family.
    source: Option<IpAddr>,
    hops: Vec<Hop>,
    /// The host and the address of it being tried.
    hop: usize,
    addr: usize,
    plaintext: bool,
    last_failure: ServerReply,
    /// Connections that ended, over all the hosts.
    attempts: usize,
    /// Addresses connected to (a reconnection to the same one, after an
    /// idle close or for the plaintext retry, is not another).
    tried: usize,
    /// Messages settled by this run, over all the hosts it tried (the
    /// per-connection limit and the fair share count across them).
    sent: usize,
    /// The end of the current idle wait, from its first look.
    idle_until: Option<u64>,
}

impl Delivery {
    /// The decisions of a run from `source` (`None`: the machine's own
    /// address).
    pub fn new(policy: Policy, source: Option<IpAddr>) -> Delivery {
        Delivery {
            policy,
            source,
            hops: Vec::new(),
            hop: 0,
            addr: 0,
            plaintext: false,
            last_failure: ServerReply::local(451, (4, 4, 1), "no host could be reached"),
            attempts: 0,
            tried: 0,
            sent: 0,
            idle_until: None,
        }
    }

    /// The hosts of the destination are known (or are not): the first
    /// step of a run.
    pub fn resolved(&mut self, hops: Result<Vec<Hop>, NoRoute>, now_ms: u64) -> Step {
        match hops {
            Ok(hops) => {
                self.hops = hops;
                self.hop = 0;
                self.addr = 0;
                self.plaintext = false;
                self.connect_or_defer(now_ms)
            }
            Err(NoRoute::Permanent { status, reason }) => {
                Step::Bounce(ServerReply::local(550, status.parts(), &reason))
            }
            Err(NoRoute::Temporary(reason)) => {
                self.last_failure = ServerReply::local(451, (4, 4, 3), &reason);
                self.defer(now_ms)
            }
        }
    }

    /// The host a [`Step::Connect`] is to (for TLS, logs and reports).
    pub fn host(&self) -> &str {
        self.hops.get(self.hop).map_or("", |h| h.name.as_str())
    }

    /// A connection ended; `holding`: it left a job in hand, unsettled.
    pub fn connection_ended(&mut self, ended: Ended, holding: bool, now_ms: u64) -> Step {
        self.attempts += 1;
        let failure = match ended {
            Ended::Closed => return Step::Finish { ok: true },
            Ended::Stale => return self.connect_again(),
            Ended::TlsFailed {
                plaintext_allowed: true,
                ..
            } => {
                self.plaintext = true;
                return self.connect_again();
            }
            Ended::TlsFailed { why, .. } => ServerReply::local(
                451,
                (4, 7, 10),
                &format!("TLS handshake with {} failed: {why}", self.here()),
            ),
            Ended::ConnectFailed(why) => ServerReply::local(
                451,
                (4, 4, 1),
                &format!("connect to {}: {why}", self.here()),
            ),
            Ended::HostFailed(reply) => reply,
        };
        self.last_failure = failure;
        if !holding {
            // Everything in hand was settled before the host failed; the
            // scheduler still has the rest.
            return Step::Finish { ok: true };
        }
        self.addr += 1;
        self.plaintext = false;
        self.connect_or_defer(now_ms)
    }

    /// Whether the connection may take another message now: not when
    /// stopping, nor when another shard waits for the slot and this run
    /// has had its fair share.
    pub fn may_take(&self, contested: bool, stopping: bool) -> bool {
        let had_its_share = contested && self.sent >= FAIR_SHARE;
        !stopping && !had_its_share
    }

    /// Whether to wait for a rate's next token, free at `free_at`, with
    /// the connection (or the slot) held: yes when it comes within an
    /// idle wait; a longer one closes the connection, and the queue waits
    /// for the token instead, holding nothing.
    pub fn waits_for_token(&self, now_ms: u64, free_at: u64) -> bool {
        free_at.saturating_sub(now_ms) <= self.policy.idle_timeout_ms
    }

    /// A message was taken: the idle wait, if any, is over.
    pub fn took(&mut self) {
        self.idle_until = None;
    }

    /// No message is ready: the time to look again, or `None` to close
    /// (idle for `idle_timeout`, at its message limit, or its slot wanted
    /// by another shard, which must not wait for an idle connection).
    pub fn idle(&mut self, now_ms: u64, contested: bool) -> Option<u64> {
        let until = *self
            .idle_until
            .get_or_insert(now_ms.saturating_add(self.policy.idle_timeout_ms));
        if contested || now_ms >= until || self.sent >= self.policy.max_messages_per_connection {
            return None;
        }
        Some(until.min(now_ms.saturating_add(CONTENTION_POLL_MS)))
    }

    /// Whether the next message's commands may go out behind the body on
    /// the wire now (counting that body's message as carried).
    pub fn may_pipeline(&self, contested: bool, stopping: bool, can_pipeline: bool) -> bool {
        let in_flight = self.sent + 1;
        let has_its_share = contested && in_flight >= FAIR_SHARE;
        can_pipeline && !stopping && !has_its_share
    }

    /// Messages settled so far, the scheduler's count for this connection.
    pub fn sent(&self) -> usize {
        self.sent
    }

    /// A transaction's outcomes were settled.
    pub fn settled(&mut self) {
        self.sent += 1;
    }

    fn here(&self) -> String {
        match self.current() {
            Some(addr) => format!("{}[{}]", self.host(), addr),
            None => self.host().to_owned(),
        }
    }

    fn current(&self) -> Option<SocketAddr> {
        let hop = self.hops.get(self.hop)?;
        let ip = *hop.addrs.get(self.addr)?;
        Some(SocketAddr::new(ip, hop.port))
    }

    /// Whether a connection from the source can reach `addr`.
    fn reachable(&self, addr: SocketAddr) -> bool {
        self.source
            .is_none_or(|s| s.is_ipv4() == addr.ip().is_ipv4())
    }

    fn connect_again(&self) -> Step {
        match self.current() {
            Some(addr) => Step::Connect {
                addr,
                plaintext: self.plaintext,
            },
            None => Step::Finish { ok: true },
        }
    }

    /// The current address, else the next one the source can reach,
    /// else the destination is deferred.
    fn connect_or_defer(&mut self, now_ms: u64) -> Step {
        let mut skipped = 0;
        while self.hop < self.hops.len() {
            match self.current() {
                Some(addr) if self.reachable(addr) => {
                    if self.tried >= self.policy.max_addresses {
                        self.last_failure = self.limit_failure();
                        return self.defer(now_ms);
                    }
                    self.tried += 1;
                    return Step::Connect {
                        addr,
                        plaintext: self.plaintext,
                    };
                }
                Some(_) => {
                    skipped += 1;
                    self.addr += 1;
                }
                None => {
                    self.hop += 1;
                    self.addr = 0;
                }
            }
        }
        if skipped > 0 && self.attempts == 0 {
            self.last_failure = self.family_failure();
            return Step::OtherSource {
                reply: self.last_failure.clone(),
                suspend_until_ms: now_ms.saturating_add(self.policy.suspend_ms),
            };
        }
        self.defer(now_ms)
    }

    /// Why a run that tried as many addresses as it may is deferred: the
    /// limit, and what the last one said.
    fn limit_failure(&self) -> ServerReply {
        let last = &self.last_failure;
        let status = match last.status {
            Some(s) if s.class == 4 => (s.class, s.subject, s.detail),
            _ => (4, 4, 1),
        };
        let why = format!(
            "tried {} of the mail exchangers' addresses, as many as [delivery] max_mx_addresses allows; the last: {}",
            self.tried,
            String::from_utf8_lossy(&last.text)
        );
        ServerReply::local(451, status, &why)
    }

    /// Why a destination none of whose addresses the source can reach is
    /// deferred.
    fn family_failure(&self) -> ServerReply {
        let (theirs, source) = match self.source {
            Some(s) if s.is_ipv4() => ("IPv6", s),
            Some(s) => ("IPv4", s),
            None => return self.last_failure.clone(),
        };
        let why = format!(
            "the destination has only {theirs} addresses, which source {source} cannot reach"
        );
        ServerReply::local(451, (4, 4, 4), &why)
    }

    fn defer(&self, now_ms: u64) -> Step {
        Step::Defer {
            reply: self.last_failure.clone(),
            suspend_until_ms: now_ms.saturating_add(self.policy.suspend_ms),
        }
    }
}

/// A transaction's outcomes sorted by what becomes of each recipient.
#[derive(Debug, Default)]
pub struct Verdicts<'a> {
    pub delivered: Vec<u32>,
    /// The first delivered recipient's reply (recorded for all of them).
    pub delivered_reply: Option<&'a ServerReply>,
    pub failed: Vec<RcptReply>,
    pub deferred: Vec<u32>,
    /// The first deferred recipient's reply (recorded for all of them).
    pub deferred_reply: Option<&'a ServerReply>,
}

impl<'a> Verdicts<'a> {
    /// Sorts the outcomes of a finished transaction; `rcpt` maps a
    /// transaction's recipient index to the envelope's.
    pub fn of(outcomes: &'a [RcptOutcome], rcpt: impl Fn(usize) -> Option<u32>) -> Verdicts<'a> {
        Verdicts::sorted(outcomes, rcpt, |kind| kind)
    }

    /// Sorts the outcomes of a transaction the host failed in the middle
    /// of: recipients it refused for good fail; those it delivered (only
    /// an LMTP server gives a recipient its verdict before the transaction
    /// ends) are delivered; the others stay for the next host, as
    /// `deferred`.
    pub fn of_unfinished(
        outcomes: &'a [RcptOutcome],
        rcpt: impl Fn(usize) -> Option<u32>,
    ) -> Verdicts<'a> {
        Verdicts::sorted(outcomes, rcpt, |kind| kind)
    }

    fn sorted(
        outcomes: &'a [RcptOutcome],
        rcpt: impl Fn(usize) -> Option<u32>,
        kind: impl Fn(OutcomeKind) -> OutcomeKind,
    ) -> Verdicts<'a> {
        let mut v = Verdicts::default();
        for o in outcomes {
            let Some(i) = rcpt(o.index) else {
                continue;
            };
            match kind(o.kind) {
                OutcomeKind::Delivered => {
                    v.delivered.push(i);
                    v.delivered_reply.get_or_insert(&o.reply);
                }
                OutcomeKind::Failed => v.failed.push(RcptReply {
                    rcpt: i,
                    reply: o.reply.clone(),
                }),
                OutcomeKind::Deferred => {
                    v.deferred.push(i);
                    v.deferred_reply.get_or_insert(&o.reply);
                }
            }
        }
        v
    }
}

#[cfg(test)]
mod tests;
