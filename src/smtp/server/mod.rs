//! The SMTP server session machine (RFC 5321 with PIPELINING, SIZE,
//! 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES, CHUNKING, DSN, STARTTLS, AUTH).
//!
//! Owns: the order of commands, the replies, the envelope of the current
//! transaction, relay policy, error and time limits.
//! Must never: do I/O or read the clock. The I/O layer feeds bytes and
//! `now_ms`, writes what lands in `out`, and acts on [`Event`]s; the machine
//! waits (consumes nothing) while the I/O layer owes it an answer (spool
//! result, auth result, TLS handshake).
//!
//! Driving order, quinn-proto style: `greeting`; then loop
//! `handle_input` (command mode) or `receive_data` (after `DataStart` /
//! `ChunkStart`, until the body ends), writing `out` after each batch;
//! `handle_timeout` when `next_deadline` passes.

mod auth;
mod body;
mod commands;
#[cfg(test)]
mod tests;
mod verify;

use std::net::IpAddr;
use std::sync::Arc;

use super::data::{BdatReceiver, BodyOutcome, DataReceiver, SizeLimit};
use super::envelope::Envelope;
use super::parse::{self, Line};
use super::received::{self, ReceivedInfo};
use super::recipients::{RecipientTable, Target};
use super::reply::{self, Reply};

pub use super::received::TlsInfo;
pub use verify::Verdict;

/// The receive buffer must hold this much unconsumed input: the longest
/// line the session waits for (an AUTH line, RFC 4954 4) must fit whole.
pub const MIN_RECEIVE_BUFFER: usize = parse::MAX_AUTH_LINE;

/// BDAT chunks one message may come in; the next is refused with
/// 552 5.3.4 and ends the transaction. Far more than any client sends
/// (a 10 MB message in 1 KB chunks), few enough that a message sent a
/// byte per chunk stays small.
pub const MAX_BDAT_CHUNKS: u32 = 10_000;

/// Session limits and what to advertise. Defaults follow RFC 5321 4.5.3.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Our name in the greeting, EHLO reply and `Received:`.
    pub hostname: String,
    /// Largest message body accepted (SIZE), in octets.
    pub max_message_size: u64,
    /// Recipients per transaction; the excess gets 452 4.5.3.
    pub max_recipients: usize,
    /// Negative replies before the session is closed with 421 4.7.0.
    pub max_errors: u32,
    /// Commands that move no mail (EHLO, HELO, RSET, NOOP, VRFY, HELP)
    /// allowed between accepted messages before each counts as an error.
    pub max_junk_commands: u32,
    /// A certificate is loaded: advertise STARTTLS on plaintext sessions.
    pub tls_available: bool,
    /// AUTH is enabled; advertised only once TLS is active.
    pub auth_available: bool,
    /// Domains we accept mail for from anyone (relay policy).
    pub local_domains: Vec<String>,
    /// The recipients of the hosted domains: every RCPT for one of them,
    /// from any client, is resolved through it.
    pub recipients: Option<Arc<dyn RecipientTable>>,
    /// Where mail for the domainless `<Postmaster>` goes (`[server]
    /// postmaster`); empty: nowhere, and such a recipient is refused.
    pub postmaster: Vec<u8>,
    /// Time allowed between client input, in ms (RFC 5321 4.5.3.2.7: 5 min).
    pub command_timeout_ms: u64,
    /// Time allowed between body octets during DATA/BDAT, in ms (RFC 5321
    /// 4.5.3.2.5: 3 min per data block; 10 min is the usual server value).
    pub data_timeout_ms: u64,
    /// Longest a whole session may last, in ms, from connect.
    pub session_timeout_ms: u64,
    /// Longest a TLS handshake may take as a whole, in ms (used by the I/O
    /// layer, which runs the handshake).
    pub tls_handshake_timeout_ms: u64,
    /// IPv6 clients are one client per network of this prefix length for
    /// the limits kept per client (used by the I/O layer).
    pub ipv6_prefix_length: u8,
    /// Minimum body transfer rate during DATA/BDAT, octets per second
    /// (0 disables), measured over `data_rate_window_ms`.
    pub min_data_rate: u64,
    pub data_rate_window_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            hostname: "localhost".into(),
            max_message_size: 50 * 1024 * 1024,
            max_recipients: 1000,
            max_errors: 20,
            max_junk_commands: 100,
            tls_available: false,
            auth_available: false,
            local_domains: Vec::new(),
            recipients: None,
            postmaster: Vec::new(),
            command_timeout_ms: 300_000,
            data_timeout_ms: 600_000,
            session_timeout_ms: 3_600_000,
            tls_handshake_timeout_ms: 10_000,
            ipv6_prefix_length: 64,
            min_data_rate: 256,
            data_rate_window_ms: 30_000,
        }
    }
}

/// Who is on the other end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerInfo {
    pub ip: IpAddr,
    /// The client's network may relay anywhere (e.g. our own submitters).
    pub relay_allowed: bool,
}

/// What the I/O layer must act on. Data lives in the session (see
/// [`Session::envelope`], [`Session::auth_credentials`]), so events are `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// EHLO/HELO accepted; name in [`Session::helo_name`].
    Helo,
    /// MAIL accepted; see [`Session::envelope`].
    MailFrom,
    /// RCPT accepted as recipient `index` of the envelope.
    RcptTo { index: usize },
    /// A body begins (DATA, or the first BDAT chunk): open a spool sink and
    /// call [`Session::receive_data`] until the body or chunk ends.
    DataStart,
    /// A further BDAT chunk begins; the sink stays open: call `receive_data`.
    ChunkStart,
    /// A BDAT chunk (not LAST) is complete; back to `handle_input`.
    ChunkEnd,
    /// The body is complete and acceptable: make it durable, then call
    /// `message_accepted` or `message_failed`. Input waits until then.
    DataEnd,
    /// The body ended but was refused (reply written); drop the sink.
    MessageRejected(BodyOutcome),
    /// 220 written; everything pipelined after STARTTLS was discarded. Run
    /// the handshake, then call `tls_established` (or close on failure).
    StartTls,
    /// Check [`Session::auth_credentials`], then call `auth_result`.
    AuthAttempt,
    /// A RCPT waits for the LMTP server of its domain: ask it whether
    /// [`Session::verify_request`] exists, then call `rcpt_verified`.
    /// Input (pipelined commands too) waits until then.
    RcptVerify,
    /// Write `out`, then close the connection.
    Close,
}

/// Result of [`Session::handle_input`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Input octets used; keep the rest and pass it again with more.
    pub consumed: usize,
    pub event: Option<Event>,
}

/// Result of [`Session::receive_data`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DataProgress {
    pub consumed: usize,
    /// Body octets written at the front of `dst`.
    pub produced: usize,
    pub event: Option<Event>,
}

/// Why the spool could not take a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpoolFailure {
    /// Write or sync error: 451 4.3.0.
    Io,
    /// Out of space: 452 4.3.1.
    NoSpace,
}

/// The I/O layer called a method the session was not waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("session is not waiting for this call")]
pub struct Misuse;

/// Credentials from AUTH, for the I/O layer to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthCredentials<'a> {
    pub authzid: &'a [u8],
    pub username: &'a [u8],
    pub password: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SaslStep {
    PlainResponse,
    LoginUser,
    LoginPassword,
}

#[derive(Debug, Clone)]
enum State {
    Command,
    /// Skipping the rest of an overlong line; `after_cr` carries a CR seen
    /// at the end of the previous read.
    DiscardLine {
        after_cr: bool,
    },
    Sasl(SaslStep),
    AwaitAuth,
    /// A RCPT waits for a verdict on a mailbox (`RcptVerify`).
    AwaitVerify,
    Data(DataReceiver),
    Bdat {
        rx: BdatReceiver,
        last: bool,
    },
    /// A refused BDAT chunk is swallowed, then `reply` is sent.
    BdatDiscard {
        rx: BdatReceiver,
        reply: Reply,
    },
    AwaitSpool,
    AwaitTls,
    Closed,
}

/// One SMTP server session.
#[derive(Debug)]
pub struct Session {
    cfg: Arc<ServerConfig>,
    peer: PeerInfo,
    tls: Option<TlsInfo>,
    tls_active: bool,
    state: State,
    helo: Vec<u8>,
    greeted: bool,
    esmtp: bool,
    authenticated: bool,
    /// The user AUTH accepted; empty before.
    auth_user: Vec<u8>,
    envelope: Envelope,
    /// BDAT size accounting across the chunks of one message.
    bdat_limit: SizeLimit,
    bdat_started: bool,
    /// BDAT commands of the current message.
    bdat_chunks: u32,
    /// Commands that moved no mail since the last message accepted.
    junk_commands: u32,
    storage_available: bool,
    spool_failed: bool,
    errors: u32,
    /// Decoded SASL response, `authzid NUL username NUL password`.
    sasl: Vec<u8>,
    started_ms: u64,
    last_input_ms: u64,
    rate_window_start_ms: u64,
    rate_window_bytes: u64,
    /// The SRS day number (set by the I/O layer, which owns the clock).
    today: u32,
    /// The RCPT line waiting for `RcptVerify`, run again with the answer.
    pending_rcpt: Vec<u8>,
    /// The mailbox `RcptVerify` asks about.
    verify_mailbox: String,
    /// The answers for the RCPT being resolved: mailbox, exists.
    verify_answers: Vec<(String, bool)>,
    /// What the last RCPT resolved into (reused).
    targets: Vec<Target>,
}

impl Session {
    /// `tls_active` is true for implicit TLS (port 465) connections.
    pub fn new(cfg: Arc<ServerConfig>, peer: PeerInfo, tls: Option<TlsInfo>, now_ms: u64) -> Self {
        let max = cfg.max_message_size;
        Session {
            cfg,
            peer,
            tls_active: tls.is_some(),
            tls,
            state: State::Command,
            helo: Vec::new(),
            greeted: false,
            esmtp: false,
            authenticated: false,
            auth_user: Vec::new(),
            envelope: Envelope::default(),
            bdat_limit: SizeLimit::new(max),
            bdat_started: false,
            bdat_chunks: 0,
            junk_commands: 0,
            storage_available: true,
            spool_failed: false,
            errors: 0,
            sasl: Vec::new(),
            started_ms: now_ms,
            last_input_ms: now_ms,
            rate_window_start_ms: now_ms,
            rate_window_bytes: 0,
            today: 0,
            pending_rcpt: Vec::new(),
            verify_mailbox: String::new(),
            verify_answers: Vec::new(),
            targets: Vec::new(),
        }
    }

    /// The connection was made at `ms`, before this session began (an
    /// implicit-TLS handshake came first): the session's time counts from
    /// then.
    pub fn set_connected_at(&mut self, ms: u64) {
        self.started_ms = self.started_ms.min(ms);
    }

    /// Writes the 220 greeting.
    pub fn greeting(&mut self, out: &mut Vec<u8>) {
        reply::write_parts(
            out,
            220,
            "",
            &[self.cfg.hostname.as_bytes(), b" ESMTP petrel"],
        );
    }

    /// Processes command-mode input until it runs out, a command is
    /// incomplete, or an event needs the I/O layer. Call again with the
    /// unconsumed rest after handling the event.
    pub fn handle_input(&mut self, input: &[u8], now_ms: u64, out: &mut Vec<u8>) -> Progress {
        if let Some(event) = self.check_timeout(now_ms, out) {
            return Progress {
                consumed: 0,
                event: Some(event),
            };
        }
        if !input.is_empty() {
            self.last_input_ms = now_ms;
        }
        let mut pos = 0;
        while pos < input.len() {
            let rest = &input[pos..];
            let (used, event) = match &mut self.state {
                State::Command => self.command_line(rest, out),
                State::Sasl(step) => {
                    let step = *step;
                    self.sasl_line(step, rest, out)
                }
                State::DiscardLine { after_cr } => {
                    let after_cr = *after_cr;
                    self.discard_line(rest, after_cr, out)
                }
                State::BdatDiscard { rx, reply } => {
                    let (rx, r) = (*rx, *reply);
                    self.bdat_discard(rx, r, rest, out)
                }
                // Discarding keeps plaintext from reaching the TLS layer and
                // anything sent after QUIT from being read.
                State::AwaitTls | State::Closed => (rest.len(), None),
                State::Data(_)
                | State::Bdat { .. }
                | State::AwaitAuth
                | State::AwaitVerify
                | State::AwaitSpool => (0, None),
            };
            pos += used;
            if event.is_some() {
                if event == Some(Event::StartTls) {
                    // CVE-2011-0411: nothing pipelined after STARTTLS may
                    // be read as if it had come over TLS.
                    pos = input.len();
                }
                return Progress {
                    consumed: pos,
                    event,
                };
            }
            if used == 0 {
                break;
            }
        }
        Progress {
            consumed: pos,
            event: None,
        }
    }

    /// Frames and runs one command line; returns octets used (0 if the line
    /// is incomplete).
    fn command_line(&mut self, rest: &[u8], out: &mut Vec<u8>) -> (usize, Option<Event>) {
        match parse::next_line(rest, parse::line_limit(rest)) {
            Line::Complete { content, len } => (len, self.command(content, out)),
            Line::Incomplete => (0, None),
            Line::TooLong => self.discard_line(rest, false, out),
        }
    }

    /// Swallows an overlong line up to its CRLF, then refuses it.
    fn discard_line(
        &mut self,
        rest: &[u8],
        after_cr: bool,
        out: &mut Vec<u8>,
    ) -> (usize, Option<Event>) {
        let first_ends = after_cr && rest.first() == Some(&b'\n');
        let end = if first_ends {
            Some(0)
        } else {
            memchr::memchr_iter(b'\n', rest).find(|&i| i > 0 && rest[i - 1] == b'\r')
        };
        match end {
            Some(i) => {
                self.state = State::Command;
                (i + 1, self.fail(parse::ParseError::LineTooLong.into(), out))
            }
            None => {
                self.state = State::DiscardLine {
                    after_cr: rest.last() == Some(&b'\r'),
                };
                (rest.len(), None)
            }
        }
    }

    /// Writes a reply that does not count as a client error.
    fn reply(&mut self, r: Reply, out: &mut Vec<u8>) -> Option<Event> {
        r.write(out);
        None
    }

    /// Writes a negative reply and counts it; too many closes the session.
    fn fail(&mut self, r: Reply, out: &mut Vec<u8>) -> Option<Event> {
        r.write(out);
        self.count_error(out)
    }

    /// Counts an error (its reply written); too many closes the session.
    fn count_error(&mut self, out: &mut Vec<u8>) -> Option<Event> {
        self.errors += 1;
        if self.errors >= self.cfg.max_errors {
            return self.close(reply::TOO_MANY_ERRORS, out);
        }
        None
    }

    fn close(&mut self, r: Reply, out: &mut Vec<u8>) -> Option<Event> {
        r.write(out);
        self.state = State::Closed;
        self.envelope.clear();
        Some(Event::Close)
    }

    /// Ends the mail transaction (RSET, HELO/EHLO, end of message).
    fn reset_transaction(&mut self) {
        self.envelope.clear();
        self.bdat_started = false;
        self.bdat_chunks = 0;
        self.bdat_limit = SizeLimit::new(self.cfg.max_message_size);
    }

    /// The spool failed (a sync error): MAIL is answered 451 4.3.0 until
    /// the daemon is restarted.
    pub fn set_spool_failed(&mut self, failed: bool) {
        self.spool_failed = failed;
    }

    /// False: the spool is below its free-space reserve (MAIL gets 452 4.3.1).
    pub fn set_storage_available(&mut self, available: bool) {
        self.storage_available = available;
    }

    /// The envelope of the current transaction (valid at `DataEnd`).
    /// Who the client is.
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The EHLO/HELO argument; empty before one was accepted.
    pub fn helo_name(&self) -> &[u8] {
        &self.helo
    }

    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// The user name AUTH accepted, if the client authenticated.
    pub fn authenticated_user(&self) -> Option<&[u8]> {
        self.authenticated.then_some(self.auth_user.as_slice())
    }

    pub fn is_tls_active(&self) -> bool {
        self.tls_active
    }

    /// True while body octets must go through `receive_data`.
    pub fn wants_body(&self) -> bool {
        matches!(self.state, State::Data(_) | State::Bdat { .. })
    }

    /// Whether body input should go to `receive_data` now, or wait until
    /// more has arrived. Each call can become a spool record, so input
    /// under `min` octets waits, unless it may end the body: in DATA, it
    /// could complete `<CRLF>.<CRLF>` (it contains `.<CRLF>`, or starts
    /// with the rest of a terminator begun in earlier input: `<LF>` or
    /// `<CRLF>`); in BDAT, it is all the chunk still lacks.
    pub fn body_input_ready(&self, input: &[u8], min: usize) -> bool {
        if input.len() >= min {
            return true;
        }
        match &self.state {
            State::Data(_) => {
                input.starts_with(b"\n")
                    || input.starts_with(b"\r\n")
                    || memchr::memmem::find(input, b".\r\n").is_some()
            }
            State::Bdat { rx, .. } => input.len() as u64 >= rx.remaining(),
            _ => true,
        }
    }

    /// How many octets at the front of `input` belong to the body part
    /// being received (in BDAT, no more than the chunk still lacks; in
    /// DATA, all of it, since unstuffing only shrinks it).
    pub fn body_octets_in(&self, input: &[u8]) -> usize {
        match &self.state {
            State::Bdat { rx, .. } => {
                usize::try_from(rx.remaining()).map_or(input.len(), |r| r.min(input.len()))
            }
            _ => input.len(),
        }
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Negative replies so far.
    pub fn error_count(&self) -> u32 {
        self.errors
    }

    /// Writes the `Received:` header for the current message. `rdns` is the
    /// client's verified reverse name, `date` an RFC 5322 date
    /// ([`received::format_date`]).
    pub fn write_received(&self, out: &mut Vec<u8>, rdns: Option<&str>, id: &str, date: &str) {
        let recipient = match self.envelope.recipient_count() {
            1 => self.envelope.recipient(0).map(|r| r.address),
            _ => None,
        };
        received::write_received(
            out,
            &ReceivedInfo {
                helo: &self.helo,
                rdns,
                ip: self.peer.ip,
                hostname: &self.cfg.hostname,
                tls: self.tls,
                esmtp: self.esmtp,
                authenticated: self.authenticated,
                id,
                recipient,
                date,
            },
        );
    }

    /// The inactivity limit of the current state: body transfer has its own.
    fn idle_limit_ms(&self) -> u64 {
        match self.state {
            State::Data(_) | State::Bdat { .. } | State::BdatDiscard { .. } => {
                self.cfg.data_timeout_ms
            }
            _ => self.cfg.command_timeout_ms,
        }
    }

    /// The data rate is measured from the start of a body to its end,
    /// including the commands between BDAT chunks.
    fn measuring_rate(&self) -> bool {
        self.cfg.min_data_rate > 0
            && (self.wants_body() || (self.bdat_started && matches!(self.state, State::Command)))
    }

    /// When `handle_timeout` should be called next, if ever.
    pub fn next_deadline(&self) -> Option<u64> {
        let idle = self.last_input_ms.saturating_add(self.idle_limit_ms());
        let whole = self.started_ms.saturating_add(self.cfg.session_timeout_ms);
        match self.state {
            // The I/O layer owes us an answer: its own time, not the client's.
            State::Closed | State::AwaitSpool | State::AwaitAuth | State::AwaitVerify => None,
            _ if self.measuring_rate() => {
                let window = self
                    .rate_window_start_ms
                    .saturating_add(self.cfg.data_rate_window_ms);
                Some(idle.min(whole).min(window))
            }
            _ => Some(idle.min(whole)),
        }
    }

    /// Closes with 421 4.4.2 if a deadline has passed.
    pub fn handle_timeout(&mut self, now_ms: u64, out: &mut Vec<u8>) -> Option<Event> {
        self.check_timeout(now_ms, out)
    }

    fn check_timeout(&mut self, now_ms: u64, out: &mut Vec<u8>) -> Option<Event> {
        let deadline = self.next_deadline()?;
        if now_ms < deadline {
            return None;
        }
        let idle = self.last_input_ms.saturating_add(self.idle_limit_ms());
        let whole = self.started_ms.saturating_add(self.cfg.session_timeout_ms);
        if now_ms >= idle || now_ms >= whole {
            return self.close(reply::TIMEOUT, out);
        }
        self.check_data_rate(now_ms, out)
    }
}
