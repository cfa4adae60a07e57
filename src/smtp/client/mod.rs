//! The SMTP client session machine for outbound delivery (RFC 5321 with
//! PIPELINING, SIZE, 8BITMIME, SMTPUTF8, STARTTLS, DSN, ENHANCEDSTATUSCODES,
//! and CHUNKING/BINARYMIME when [`ClientConfig::chunking`] is set), and
//! its LMTP mode (RFC 2033, [`ClientConfig::lmtp`]) for hosted domains.
//!
//! Owns: the order of commands on one outbound connection (greeting, EHLO
//! or HELO, STARTTLS per [`TlsPolicy`], MAIL/RCPT/DATA transactions, RSET
//! between them, QUIT), reply parsing, dot-stuffing of the body, per-phase
//! timeouts, and the verdict for every recipient of a transaction.
//! Must never: do I/O or read the clock; emit a bare CR or LF; read
//! plaintext that arrived after the server's 220 to STARTTLS; leave a
//! recipient of a started transaction without an outcome, whatever the
//! server or the network does.
//!
//! # Driving it (quinn-proto style)
//!
//! Every call that can change the machine takes `now_ms`; bytes to send
//! are appended to the caller's `out`, which the I/O layer writes after
//! each call; events are polled after each call.
//!
//! ```ignore
//! let mut c = Client::new(cfg, now_ms());
//! let mut out = Vec::new();
//! loop {
//!     while let Some(ev) = c.poll_event() {
//!         match ev {
//!             Event::Ready | Event::TransactionDone => {
//!                 if ev == Event::TransactionDone { record(c.take_outcomes()); }
//!                 match next_message() {
//!                     Some(m) => c.start_transaction(&m.transaction(), now_ms(), &mut out)?,
//!                     None => c.quit(now_ms(), &mut out)?,
//!                 }
//!             }
//!             Event::StartTls => match handshake(&mut sock).await {
//!                 Ok(()) => c.tls_established(now_ms(), &mut out)?,
//!                 Err(_) => c.tls_failed(now_ms())?, // then see needs_plaintext_retry()
//!             },
//!             Event::SendBody => {
//!                 for chunk in body_chunks() {
//!                     c.encode_body(chunk, now_ms(), &mut out)?;
//!                     sock.write_all(&out).await?; out.clear();
//!                 }
//!                 c.finish_body(now_ms(), &mut out)?;
//!                 // Optional: the next message's commands in the same write.
//!                 if let Some(m) = peek_next_message() {
//!                     if c.pipeline_transaction(&m.transaction(), &mut out)? {
//!                         // Its events follow the current one's TransactionDone.
//!                     }
//!                 }
//!             }
//!             Event::TryNextHost | Event::Closed => { sock.write_all(&out).await; return; }
//!         }
//!     }
//!     sock.write_all(&out).await?; out.clear();
//!     match read_until(&mut sock, &mut inbuf, c.next_deadline()).await {
//!         Ok(0) | Err(_) => c.connection_lost(now_ms()),
//!         Ok(_) => { let n = c.handle_input(&inbuf, now_ms(), &mut out); inbuf.drain(..n); }
//!         Timeout => c.handle_timeout(now_ms()),
//!     }
//! }
//! ```
//!
//! A transaction started with [`Client::pipeline_transaction`] goes on the
//! wire right behind the current body (RFC 2920 3.1: message content may
//! open a group) and becomes the current one when the server has answered
//! the end of data: its `TransactionDone` comes after the first one's, and
//! `Ready` does not come in between. If the connection fails before that,
//! the server never saw a complete command of it that it could act on: it
//! is dropped without outcomes and [`Client::dropped_pipelined`] says so,
//! for the I/O layer to send it elsewhere.
//!
//! After [`Event::StartTls`] the unconsumed plaintext is discarded by the
//! machine (`handle_input` consumes it all) and must not be kept. During a
//! BDAT body, keep reading: chunk replies may arrive while chunks are fed.

mod body;
mod command;
mod ehlo;
mod encode;
mod failure;
pub mod fuzzing;
mod handshake;
mod reply;
#[cfg(test)]
mod tests;
mod transaction;

use std::collections::VecDeque;
use std::sync::Arc;

pub use super::params::Body;
pub use super::params::Ret;
pub use command::{notify, Transaction, TxRecipient};
pub use ehlo::Extensions;
pub use encode::BodyEncoder;
/// The reply framer, for the other dialogues petrel has as a client (the
/// LMTP probe of recipient verification).
pub(crate) use reply::{parse as parse_reply, Parsed as ParsedReply};
pub use reply::{EnhancedStatus, ServerReply};

use transaction::Tx;

/// When to use STARTTLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsPolicy {
    /// Use it when offered; a failed handshake is recorded in the outcomes
    /// of the plaintext retry ([`RcptOutcome::tls_failed_then_plaintext`]).
    #[default]
    Opportunistic,
    /// No TLS, no delivery: every transaction is deferred.
    Required,
    Disabled,
}

/// Time allowed for each reply, in ms. Defaults are RFC 5321 4.5.3.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub greeting_ms: u64,
    /// EHLO, HELO, STARTTLS, RSET and QUIT.
    pub command_ms: u64,
    pub mail_ms: u64,
    pub rcpt_ms: u64,
    /// Waiting for the 354 to DATA.
    pub data_init_ms: u64,
    /// Longest gap between body chunks handed to the machine.
    pub data_block_ms: u64,
    /// Waiting for the reply to the final `.`.
    pub data_end_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            greeting_ms: 300_000,
            command_ms: 300_000,
            mail_ms: 300_000,
            rcpt_ms: 300_000,
            data_init_ms: 120_000,
            data_block_ms: 180_000,
            data_end_ms: 600_000,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ClientConfig {
    /// Our name in EHLO/HELO.
    pub helo_name: String,
    pub tls: TlsPolicy,
    pub timeouts: Timeouts,
    /// Send bodies with BDAT (RFC 3030) when the server offers CHUNKING and
    /// PIPELINING. BINARYMIME bodies use BDAT whatever this says.
    pub chunking: bool,
    /// Speak LMTP (RFC 2033) instead: `LHLO` (no HELO fallback), bodies
    /// only with DATA, and after the end of data one reply per accepted
    /// recipient, in RCPT order, each that recipient's verdict.
    pub lmtp: bool,
}

/// What the I/O layer must act on; write `out` first in every case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The session is established: call `start_transaction` or `quit`.
    Ready,
    /// The server said 220 to STARTTLS: run the handshake, then call
    /// `tls_established` or `tls_failed`.
    StartTls,
    /// DATA got 354: call `encode_body` per chunk, then `finish_body`.
    SendBody,
    /// Every recipient has an outcome: `take_outcomes`, then
    /// `start_transaction` again or `quit` (unless a pipelined transaction
    /// is on its way: then its events follow).
    TransactionDone,
    /// The host failed before any transaction on this connection finished
    /// (bad greeting, 421, EHLO/HELO refused, timeout, connection lost):
    /// close, and try the next MX host.
    TryNextHost,
    /// The connection is over: close it.
    Closed,
}

/// What happened to one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeKind {
    Delivered,
    /// Retry later.
    Deferred,
    /// Bounce now.
    Failed,
}

/// The verdict for recipient `index` of the transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptOutcome {
    pub index: usize,
    pub kind: OutcomeKind,
    /// The server's reply, or a local one (`reply.local`) when the verdict
    /// came from here (timeout, SIZE, missing extension).
    pub reply: ServerReply,
    /// The message travelled over TLS.
    pub tls: bool,
    /// This connection is the plaintext retry after a failed handshake.
    pub tls_failed_then_plaintext: bool,
    /// An 8-bit body was sent to a server that did not offer 8BITMIME
    /// (RFC 6152 leaves it to us; we send it as is and record it).
    pub body_8bit_unannounced: bool,
}

/// The I/O layer called a method the machine was not waiting for, or
/// handed it an envelope that cannot be written as a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Misuse {
    #[error("client is not waiting for this call")]
    NotWaiting,
    #[error("envelope field contains CR, LF, NUL or a space in a parameter")]
    BadEnvelope,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Greeting,
    Ehlo,
    Helo,
    StartTls,
    /// The I/O layer runs the TLS handshake.
    AwaitTls,
    Ready,
    /// Commands of a transaction await replies.
    Transaction,
    /// The I/O layer feeds the body.
    Body,
    Quit,
    Closed,
}

/// One outbound SMTP connection.
#[derive(Debug)]
pub struct Client {
    cfg: Arc<ClientConfig>,
    phase: Phase,
    ext: Extensions,
    tls_active: bool,
    /// This connection replaces one whose TLS handshake failed.
    plaintext_retry: bool,
    plaintext_retry_needed: bool,
    /// Set when TLS is required but unavailable: every transaction gets
    /// this as its deferral, without a byte sent.
    refusal: Option<ServerReply>,
    /// Nothing more may be written (a failed handshake left the stream
    /// in an unknown state).
    broken: bool,
    tx: Option<Tx>,
    /// Sent behind `tx`'s body; becomes `tx` at its end-of-data reply.
    next: Option<Tx>,
    /// The connection failed while `next` waited: it was dropped unanswered.
    dropped_next: bool,
    /// The server may hold state of an unfinished transaction.
    needs_rset: bool,
    /// A transaction ended on this connection with the server's verdicts.
    completed_any: bool,
    encoder: BodyEncoder,
    /// One BDAT chunk's contents, reused, because the length goes first.
    scratch: Vec<u8>,
    deadline: Option<u64>,
    events: VecDeque<Event>,
    /// One entry per `TransactionDone` not yet taken, in order.
    outcomes: VecDeque<Vec<RcptOutcome>>,
    /// Why the connection ended early (421, bad greeting, timeout, ...).
    failure: Option<ServerReply>,
}

impl Client {
    /// A fresh TCP connection: the machine waits for the greeting.
    pub fn new(cfg: Arc<ClientConfig>, now_ms: u64) -> Self {
        let deadline = Some(now_ms.saturating_add(cfg.timeouts.greeting_ms));
        Client {
            cfg,
            phase: Phase::Greeting,
            ext: Extensions::default(),
            tls_active: false,
            plaintext_retry: false,
            plaintext_retry_needed: false,
            refusal: None,
            broken: false,
            tx: None,
            next: None,
            dropped_next: false,
            needs_rset: false,
            completed_any: false,
            encoder: BodyEncoder::new(),
            scratch: Vec::new(),
            deadline,
            events: VecDeque::new(),
            outcomes: VecDeque::new(),
            failure: None,
        }
    }

    /// A reconnection after `tls_failed` under the opportunistic policy:
    /// STARTTLS is not tried again, and every outcome records why.
    pub fn new_plaintext_retry(cfg: Arc<ClientConfig>, now_ms: u64) -> Self {
        let mut c = Client::new(cfg, now_ms);
        c.plaintext_retry = true;
        c
    }

    /// Parses replies in `input`; returns the octets used (keep the rest
    /// and pass it again with more). Commands to send land in `out`.
    pub fn handle_input(&mut self, input: &[u8], now_ms: u64, out: &mut Vec<u8>) -> usize {
        let mut pos = 0;
        loop {
            match self.phase {
                // Plaintext after the 220 to STARTTLS, or after the end, is
                // never read: it could be an injection (CVE-2011-0411).
                Phase::AwaitTls | Phase::Closed => return input.len(),
                // The server has nothing to say during a DATA body; what
                // it sends is read as the end-of-data reply. BDAT chunks
                // are answered one by one.
                Phase::Body if !self.tx.as_ref().is_some_and(|t| t.chunking) => return pos,
                _ => {}
            }
            let Some(rest) = input.get(pos..).filter(|r| !r.is_empty()) else {
                return pos;
            };
            match reply::parse(rest) {
                reply::Parsed::Incomplete => return pos,
                reply::Parsed::Malformed => {
                    self.protocol_error();
                    return input.len();
                }
                reply::Parsed::Reply { len, reply } => {
                    pos += len;
                    self.on_reply(reply, now_ms, out);
                }
            }
        }
    }

    fn on_reply(&mut self, r: ServerReply, now_ms: u64, out: &mut Vec<u8>) {
        // Only a successful EHLO's reply is read in full (its extensions),
        // and it goes nowhere else; every other reply may end up in a
        // status record, a notice and the logs, so it is cut to size here.
        let r = match (self.phase, r.class()) {
            (Phase::Ehlo, 2) => r,
            _ => r.bounded(),
        };
        if self.phase == Phase::Quit {
            self.close(Event::Closed);
            return;
        }
        // 421 may answer any command: the server is closing the channel.
        if r.code == 421 {
            self.connection_failed(r);
            return;
        }
        match self.phase {
            Phase::Greeting => self.on_greeting(r, now_ms, out),
            Phase::Ehlo => self.on_ehlo(r, now_ms, out),
            Phase::Helo => self.on_helo(r, now_ms, out),
            Phase::StartTls => self.on_starttls(r, now_ms, out),
            Phase::Transaction | Phase::Body => self.on_tx_reply(r, now_ms, out),
            // A reply nobody asked for: the two sides are out of step.
            _ => self.protocol_error(),
        }
    }

    /// The next event for the I/O layer, in order.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Outcomes of the transaction whose `TransactionDone` was polled last
    /// (empty if there is none).
    pub fn take_outcomes(&mut self) -> Vec<RcptOutcome> {
        self.outcomes.pop_front().unwrap_or_default()
    }

    /// True once the connection failed with a pipelined transaction not yet
    /// begun: it got no outcomes and may go out on another connection.
    pub fn dropped_pipelined(&self) -> bool {
        self.dropped_next
    }

    /// Sends QUIT; `Closed` follows its reply, a timeout or the loss of the
    /// connection. Only between transactions.
    pub fn quit(&mut self, now_ms: u64, out: &mut Vec<u8>) -> Result<(), Misuse> {
        if self.phase != Phase::Ready {
            return Err(Misuse::NotWaiting);
        }
        if self.broken {
            self.close(Event::Closed);
            return Ok(());
        }
        out.extend_from_slice(b"QUIT\r\n");
        self.phase = Phase::Quit;
        self.deadline = Some(now_ms.saturating_add(self.cfg.timeouts.command_ms));
        Ok(())
    }

    /// What the server offered in its last EHLO reply (empty after HELO).
    pub fn extensions(&self) -> &Extensions {
        &self.ext
    }

    pub fn is_tls_active(&self) -> bool {
        self.tls_active
    }

    /// After `tls_failed` under the opportunistic policy: reconnect to the
    /// same host with [`Client::new_plaintext_retry`].
    pub fn needs_plaintext_retry(&self) -> bool {
        self.plaintext_retry_needed
    }

    /// Why the connection ended before its time (after `TryNextHost` or an
    /// unplanned `Closed`): the server's reply or a local reason.
    pub fn failure(&self) -> Option<&ServerReply> {
        self.failure.as_ref()
    }

    /// Why every transaction on this connection will be deferred, if so.
    pub fn refusal(&self) -> Option<&ServerReply> {
        self.refusal.as_ref()
    }

    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// When `handle_timeout` should be called, if ever.
    pub fn next_deadline(&self) -> Option<u64> {
        self.deadline
    }

    /// Enters `Ready` and tells the I/O layer.
    fn ready(&mut self) {
        self.phase = Phase::Ready;
        self.deadline = None;
        self.events.push_back(Event::Ready);
    }

    /// Ends the connection with `event` (`Closed` or `TryNextHost`).
    fn close(&mut self, event: Event) {
        self.phase = Phase::Closed;
        self.deadline = None;
        self.events.push_back(event);
    }
}
