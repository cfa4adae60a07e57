//! Session side of each SMTP command: sequencing (503 5.5.1), policy, and
//! the transaction's envelope.
//!
//! Must never: accept a command out of order, or accept a recipient the
//! relay policy refuses.

use super::{Event, Session, State, MAX_BDAT_CHUNKS};
use crate::smtp::address::{DomainKind, ReversePath};
use crate::smtp::data::{BdatReceiver, DataReceiver, SizeLimit};
use crate::smtp::params::{Body, MailParams, RcptParams};
use crate::smtp::parse::{self, Command};
use crate::smtp::relay;
use crate::smtp::reply::{self, EhloOptions};

impl Session {
    /// Runs one complete command line.
    pub(super) fn command(&mut self, line: &[u8], out: &mut Vec<u8>) -> Option<Event> {
        let cmd = match parse::parse_command(line) {
            Ok(cmd) => cmd,
            Err(e) => return self.fail(e.into(), out),
        };
        match cmd {
            Command::Ehlo { domain } => {
                let event = self.helo(domain, true, out);
                self.junk(out).or(event)
            }
            Command::Helo { domain } => {
                let event = self.helo(domain, false, out);
                self.junk(out).or(event)
            }
            Command::Mail {
                reverse_path,
                params,
            } => self.mail(reverse_path, &params, out),
            Command::Rcpt {
                forward_path,
                params,
            } => self.rcpt(line, &forward_path, &params, out),
            Command::Data => self.data(out),
            Command::Bdat { size, last } => self.bdat(size, last, out),
            Command::Rset => {
                self.reset_transaction();
                self.junk_reply(reply::OK, out)
            }
            Command::Noop => self.junk_reply(reply::OK, out),
            Command::Vrfy => self.junk_reply(reply::VRFY, out),
            Command::Help => self.junk_reply(reply::HELP, out),
            Command::Quit => self.close(reply::BYE, out),
            Command::StartTls => self.starttls(out),
            Command::Auth { mechanism, initial } => self.auth(mechanism, initial, out),
        }
    }

    /// A command that moves no mail (EHLO, HELO, RSET, NOOP, VRFY, HELP),
    /// answered positively.
    fn junk_reply(&mut self, r: reply::Reply, out: &mut Vec<u8>) -> Option<Event> {
        r.write(out);
        self.junk(out)
    }

    /// Counts a command that moves no mail. Each costs a reply several
    /// times its own size (an EHLO reply is twenty times `EHLO x`), so
    /// beyond `max_junk_commands` since the last message accepted each one
    /// counts as an error, and the error limit ends a flood of them.
    fn junk(&mut self, out: &mut Vec<u8>) -> Option<Event> {
        self.junk_commands = self.junk_commands.saturating_add(1);
        if self.junk_commands <= self.cfg.max_junk_commands {
            return None;
        }
        self.count_error(out)
    }

    /// EHLO/HELO: (re)starts the session and ends any transaction.
    fn helo(&mut self, domain: &[u8], esmtp: bool, out: &mut Vec<u8>) -> Option<Event> {
        self.reset_transaction();
        self.helo.clear();
        self.helo.extend_from_slice(domain);
        self.greeted = true;
        self.esmtp = esmtp;
        if esmtp {
            let opts = EhloOptions {
                hostname: &self.cfg.hostname,
                max_message_size: self.cfg.max_message_size,
                starttls: self.cfg.tls_available && !self.tls_active,
                auth: self.cfg.auth_available && self.tls_active && !self.authenticated,
            };
            reply::write_ehlo(out, &opts);
        } else {
            reply::write_parts(out, 250, "", &[self.cfg.hostname.as_bytes()]);
        }
        Some(Event::Helo)
    }

    fn mail(
        &mut self,
        reverse_path: ReversePath<'_>,
        params: &MailParams<'_>,
        out: &mut Vec<u8>,
    ) -> Option<Event> {
        if !self.greeted {
            return self.fail(reply::BAD_SEQUENCE_HELO, out);
        }
        if self.envelope.is_active() {
            return self.fail(reply::BAD_SEQUENCE_NESTED_MAIL, out);
        }
        if params.any && !self.esmtp {
            return self.fail(reply::PARAMS_NEED_EHLO, out);
        }
        let (address, utf8) = match reverse_path {
            ReversePath::Null => (&b""[..], false),
            ReversePath::Mailbox(m) => (m.address, m.utf8),
        };
        if utf8 && !params.smtputf8 {
            return self.fail(reply::UTF8_NEEDS_SMTPUTF8, out);
        }
        if params.size.is_some_and(|s| s > self.cfg.max_message_size) {
            return self.fail(reply::MESSAGE_TOO_BIG, out);
        }
        if self.spool_failed {
            return self.fail(reply::SPOOL_ERROR, out);
        }
        if !self.storage_available {
            // Our condition, not the client's fault: not counted.
            return self.reply(reply::NO_STORAGE, out);
        }
        self.envelope.begin(address, params);
        reply::SENDER_OK.write(out);
        Some(Event::MailFrom)
    }

    fn rcpt(
        &mut self,
        line: &[u8],
        rcpt: &crate::smtp::address::Mailbox<'_>,
        params: &RcptParams<'_>,
        out: &mut Vec<u8>,
    ) -> Option<Event> {
        if !self.envelope.is_active() {
            return self.fail(reply::BAD_SEQUENCE_NEED_MAIL, out);
        }
        if params.any && !self.esmtp {
            return self.fail(reply::PARAMS_NEED_EHLO, out);
        }
        if rcpt.utf8 && !self.envelope.smtputf8() {
            return self.fail(reply::UTF8_NEEDS_SMTPUTF8, out);
        }
        let trusted = self.peer.relay_allowed || self.authenticated;
        if !relay::may_accept(rcpt, trusted, &self.cfg.local_domains) {
            return self.fail(reply::RELAY_DENIED, out);
        }
        // The domainless <Postmaster> (RFC 5321 4.5.1) is the operator's
        // mailbox, or no one's: never an address to bounce at.
        let postmaster = rcpt.domain_kind == DomainKind::None;
        if postmaster && self.cfg.postmaster.is_empty() {
            return self.fail(reply::NO_POSTMASTER, out);
        }
        if let Some(event) = self.hosted_rcpt(line, rcpt, params, out) {
            return event;
        }
        if self.envelope.has_recipient(stored_address(&self.cfg, rcpt)) {
            return self.reply(reply::DUPLICATE_RECIPIENT, out);
        }
        if self.envelope.recipient_count() >= self.cfg.max_recipients {
            // RFC 5321 4.5.3.1.10: the client retries the excess later.
            return self.reply(reply::TOO_MANY_RECIPIENTS, out);
        }
        let index = self
            .envelope
            .add_recipient(stored_address(&self.cfg, rcpt), params);
        reply::RECIPIENT_OK.write(out);
        Some(Event::RcptTo { index })
    }

    /// The 503 reply for a body command in the wrong state, if any.
    fn body_refusal(&self) -> Option<reply::Reply> {
        if !self.envelope.is_active() {
            Some(reply::BAD_SEQUENCE_NEED_MAIL)
        } else if self.envelope.recipient_count() == 0 {
            Some(reply::BAD_SEQUENCE_NEED_RCPT)
        } else {
            None
        }
    }

    fn data(&mut self, out: &mut Vec<u8>) -> Option<Event> {
        let refusal = self.body_refusal().or(if self.bdat_started {
            Some(reply::BAD_SEQUENCE_DATA_AFTER_BDAT)
        } else if self.envelope.body() == Body::BinaryMime {
            Some(reply::BAD_SEQUENCE_BINARYMIME)
        } else {
            None
        });
        if let Some(r) = refusal {
            return self.fail(r, out);
        }
        self.state = State::Data(DataReceiver::new(self.cfg.max_message_size));
        self.start_rate_window();
        reply::START_DATA.write(out);
        Some(Event::DataStart)
    }

    /// BDAT: the chunk octets follow the line whatever we answer, so a
    /// refused chunk is still read (and discarded) before the refusal.
    fn bdat(&mut self, size: u64, last: bool, out: &mut Vec<u8>) -> Option<Event> {
        if let Some(r) = self.body_refusal() {
            return self.bdat_refuse(size, r, out);
        }
        let first = !self.bdat_started;
        if first {
            self.bdat_started = true;
            self.bdat_chunks = 0;
            self.bdat_limit = SizeLimit::new(self.cfg.max_message_size);
            // One window for the whole message: were it restarted at each
            // BDAT, a byte per chunk just inside each window would hold
            // the session for as long as the client liked.
            self.start_rate_window();
        }
        self.bdat_chunks += 1;
        if self.bdat_chunks > MAX_BDAT_CHUNKS {
            // 552 (RFC 5321: storage allocation exceeded) with 5.3.4 (RFC
            // 3463: a per-message limit of this system): each chunk costs
            // a reply and a place in the message's bookkeeping, so their
            // number is a limit of the message like its size. The
            // transaction is over (RFC 3030: no further chunks may follow
            // a refused one); its chunk is read and discarded first.
            self.reset_transaction();
            return self.bdat_refuse(size, reply::TOO_MANY_CHUNKS, out);
        }
        self.state = State::Bdat {
            rx: BdatReceiver::new(size),
            last,
        };
        Some(if first {
            Event::DataStart
        } else {
            Event::ChunkStart
        })
    }

    /// Refuses a BDAT chunk once its `size` octets have been read.
    fn bdat_refuse(&mut self, size: u64, r: reply::Reply, out: &mut Vec<u8>) -> Option<Event> {
        if size == 0 {
            return self.fail(r, out);
        }
        self.state = State::BdatDiscard {
            rx: BdatReceiver::discarding(size),
            reply: r,
        };
        None
    }

    fn starttls(&mut self, out: &mut Vec<u8>) -> Option<Event> {
        let refusal = if !self.cfg.tls_available {
            Some(reply::TLS_UNAVAILABLE)
        } else if self.tls_active {
            Some(reply::TLS_ACTIVE)
        } else if !self.greeted {
            Some(reply::BAD_SEQUENCE_HELO)
        } else if self.envelope.is_active() {
            Some(reply::BAD_SEQUENCE_IN_TRANSACTION)
        } else {
            None
        };
        if let Some(r) = refusal {
            return self.fail(r, out);
        }
        reply::READY_TLS.write(out);
        self.state = State::AwaitTls;
        Some(Event::StartTls)
    }
}

/// The address a recipient is kept as: the operator's mailbox for the
/// domainless `<Postmaster>`, else as the client wrote it.
fn stored_address<'a>(
    cfg: &'a super::ServerConfig,
    rcpt: &crate::smtp::address::Mailbox<'a>,
) -> &'a [u8] {
    match rcpt.domain_kind {
        DomainKind::None => &cfg.postmaster,
        _ => rcpt.address,
    }
}
