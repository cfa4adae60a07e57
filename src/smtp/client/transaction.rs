//! One mail transaction: MAIL, RCPTs, DATA (pipelined or in lock-step)
//! or BDAT, the end-of-data reply, and a verdict per recipient. The body
//! itself is in `body.rs`.
//!
//! Owns: which command is sent when, which reply answers which command,
//! and the checks that fail a transaction before a byte is sent (SIZE,
//! SMTPUTF8, BINARYMIME, TLS required).
//! Must never: send DATA when no recipient was accepted, send the body
//! before a 354, or call a recipient delivered on anything but a 2xx to
//! the end of data after a 2xx to its RCPT.

use super::command::{write_mail, write_rcpt, Transaction};
use super::reply::ServerReply;
use super::{Body, Client, Event, Misuse, OutcomeKind, Phase, RcptOutcome};

/// A command whose reply is awaited, in the order sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cmd {
    Rset,
    Mail,
    Rcpt(usize),
    Data,
    EndOfData,
    /// A BDAT chunk that is not the last.
    Bdat,
    BdatLast,
    /// `.` ending an empty body after a 354 nobody could use (RFC 2920 3.1).
    AbortDot,
    /// LMTP: the end of data's reply for recipient `i` (RFC 2033 4.2: one
    /// per recipient accepted at RCPT, in RCPT order).
    LmtpRcpt(usize),
}

#[derive(Debug)]
pub(super) enum RcptState {
    Pending,
    /// RCPT got 2xx; the verdict comes with the end of data.
    Accepted,
    Decided(OutcomeKind, ServerReply),
}

#[derive(Debug)]
pub(super) struct Tx {
    /// Command lines made at the start, so lock-step needs no copy of the
    /// caller's envelope; `cmds` holds each command's range in it.
    lines: Vec<u8>,
    pub(super) cmds: Vec<(Cmd, usize, usize)>,
    pub(super) sent: usize,
    replied: usize,
    rcpts: Vec<RcptState>,
    mail_refused: bool,
    body_8bit_unannounced: bool,
    /// The end-of-data reply came: the server holds no transaction state.
    ended_cleanly: bool,
    /// The body goes as BDAT chunks (RFC 3030) instead of DATA.
    pub(super) chunking: bool,
    /// BODY=BINARYMIME: BDAT chunks carry the octets untouched.
    pub(super) binary: bool,
    pub(super) body_started: bool,
    pub(super) body_done: bool,
    /// A BDAT chunk was refused: RFC 3030 2 forbids sending more.
    pub(super) bdat_failed: bool,
}

impl Tx {
    pub(super) fn awaited(&self) -> Option<Cmd> {
        self.cmds.get(self.replied).map(|c| c.0)
    }

    fn accepted(&self) -> usize {
        let accepted = |s: &&RcptState| matches!(s, RcptState::Accepted);
        self.rcpts.iter().filter(accepted).count()
    }

    fn push(&mut self, cmd: Cmd, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.lines.len();
        write(&mut self.lines);
        self.cmds.push((cmd, start, self.lines.len()));
    }

    /// In lock-step, stop before RCPTs nobody will use (MAIL refused) and
    /// before a DATA nobody will use (no RCPT accepted).
    fn is_over(&self) -> bool {
        let idle = self.sent == self.replied;
        match self.awaited() {
            // BDAT: the body starts once every RCPT is answered, and the
            // transaction lasts until it ends.
            None if self.chunking && self.body_started => self.body_done,
            None if self.chunking => self.mail_refused || self.accepted() == 0,
            None => true,
            Some(Cmd::Rcpt(_)) => idle && self.mail_refused,
            Some(Cmd::Data) => idle && (self.mail_refused || self.accepted() == 0),
            Some(_) => false,
        }
    }

    /// LMTP: the replies that end the data, one per recipient accepted.
    pub(super) fn await_lmtp_replies(&mut self) {
        let accepted = (self.rcpts.iter().enumerate())
            .filter(|(_, s)| matches!(s, RcptState::Accepted))
            .map(|(i, _)| (Cmd::LmtpRcpt(i), 0, 0));
        let cmds: Vec<_> = accepted.collect();
        self.cmds.extend(cmds);
    }

    /// Records `r` for every recipient still waiting in `from`'s state.
    fn decide(&mut self, from: fn(&RcptState) -> bool, r: &ServerReply) {
        let Some(kind) = kind_of(r) else { return };
        for s in self.rcpts.iter_mut().filter(|s| from(s)) {
            *s = RcptState::Decided(kind, r.clone());
        }
    }

    /// Handles a reply to MAIL, RCPT or the end of data; false when the
    /// code makes no sense for the command.
    fn on_reply(&mut self, cmd: Cmd, r: &ServerReply) -> bool {
        let known = kind_of(r).is_some();
        match cmd {
            Cmd::Rset | Cmd::AbortDot => true,
            Cmd::Mail if r.is_positive() => true,
            Cmd::Mail => {
                self.mail_refused = true;
                self.decide(|s| matches!(s, RcptState::Pending), r);
                known
            }
            // After a refused MAIL, RCPT replies (503s) say nothing new.
            Cmd::Rcpt(_) if self.mail_refused => true,
            Cmd::Rcpt(i) => match (self.rcpts.get_mut(i), kind_of(r)) {
                (Some(s), Some(OutcomeKind::Delivered)) => {
                    *s = RcptState::Accepted;
                    true
                }
                (Some(s), Some(kind)) => {
                    *s = RcptState::Decided(kind, r.clone());
                    true
                }
                _ => false,
            },
            Cmd::Bdat if r.is_positive() => true,
            Cmd::Bdat => {
                if !self.bdat_failed {
                    self.bdat_failed = true;
                    self.decide(|s| matches!(s, RcptState::Accepted), r);
                }
                known
            }
            Cmd::EndOfData | Cmd::BdatLast => {
                // After a refused chunk the server's state is unclear: RSET.
                self.ended_cleanly = !self.bdat_failed;
                self.decide(|s| matches!(s, RcptState::Accepted), r);
                known
            }
            Cmd::LmtpRcpt(i) => {
                // The transaction is over once the last of them is in.
                self.ended_cleanly = self.replied == self.cmds.len();
                match (self.rcpts.get_mut(i), kind_of(r)) {
                    (Some(s), Some(kind)) => {
                        *s = RcptState::Decided(kind, r.clone());
                        true
                    }
                    _ => false,
                }
            }
            Cmd::Data => false,
        }
    }
}

/// 2xx delivered (or accepted), 4xx deferred, 5xx failed; 3xx is no verdict.
fn kind_of(r: &ServerReply) -> Option<OutcomeKind> {
    match r.class() {
        2 => Some(OutcomeKind::Delivered),
        4 => Some(OutcomeKind::Deferred),
        5 => Some(OutcomeKind::Failed),
        _ => None,
    }
}

impl Client {
    /// Starts sending `t`. Checks that need no server (TLS refusal, SIZE,
    /// SMTPUTF8, BINARYMIME) decide every recipient at once: then
    /// `TransactionDone` is queued and nothing is written.
    pub fn start_transaction(
        &mut self,
        t: &Transaction<'_>,
        now_ms: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), Misuse> {
        if self.phase != Phase::Ready {
            return Err(Misuse::NotWaiting);
        }
        if !t.is_writable() {
            return Err(Misuse::BadEnvelope);
        }
        if let Some((kind, reply)) = self.precheck(t) {
            let decided = (0..t.recipients.len())
                .map(|index| self.outcome(index, kind, reply.clone(), false))
                .collect();
            self.outcomes.push_back(decided);
            self.events.push_back(Event::TransactionDone);
            return Ok(());
        }
        self.tx = Some(self.build_tx(t));
        self.phase = Phase::Transaction;
        self.send_more(now_ms, out);
        Ok(())
    }

    /// Whether [`Client::pipeline_transaction`] could take a transaction now
    /// (before looking at the transaction itself).
    pub fn can_pipeline(&self) -> bool {
        let waiting_for_verdict = self.phase == Phase::Transaction
            && (self.tx.as_ref()).is_some_and(|tx| tx.body_done && !tx.chunking);
        waiting_for_verdict
            && self.ext.pipelining
            && self.completed_any
            && self.next.is_none()
            && !self.broken
    }

    /// Sends `t`'s commands right behind the body just finished, before
    /// its end-of-data reply (RFC 2920 3.1). `Ok(false)` when that cannot
    /// be done now, and nothing was written: the server does not offer
    /// PIPELINING, the body went as BDAT, one transaction is already
    /// waiting, no transaction has ended on this connection yet (a failure
    /// then means trying the next host, with one message in hand), or `t`
    /// would be decided without the server; call `start_transaction` after
    /// `TransactionDone` instead. Its replies are awaited within the
    /// current end-of-data deadline, so it takes no time of its own.
    pub fn pipeline_transaction(
        &mut self,
        t: &Transaction<'_>,
        out: &mut Vec<u8>,
    ) -> Result<bool, Misuse> {
        if !self.can_pipeline() {
            return Ok(false);
        }
        if !t.is_writable() {
            return Err(Misuse::BadEnvelope);
        }
        if self.precheck(t).is_some() || self.uses_bdat(t) {
            return Ok(false);
        }
        let mut next = self.build_tx(t);
        for &(_, start, end) in &next.cmds {
            out.extend_from_slice(next.lines.get(start..end).unwrap_or(&[]));
        }
        next.sent = next.cmds.len();
        self.next = Some(next);
        Ok(true)
    }

    fn precheck(&self, t: &Transaction<'_>) -> Option<(OutcomeKind, ServerReply)> {
        use OutcomeKind::{Deferred, Failed};
        if let Some(r) = &self.refusal {
            return Some((Deferred, r.clone()));
        }
        if t.needs_smtputf8() && !self.ext.smtputf8 {
            let why = "SMTPUTF8 required but not offered by the remote server";
            return Some((Failed, ServerReply::local(553, (5, 6, 7), why)));
        }
        // BINARYMIME needs BDAT (RFC 3030 3), which we only send pipelined.
        let e = &self.ext;
        if t.body == Body::BinaryMime && !(e.binary_mime && e.chunking && e.pipelining) {
            let why = "binary body requires BINARYMIME and CHUNKING";
            return Some((Failed, ServerReply::local(554, (5, 6, 3), why)));
        }
        match self.ext.size {
            Some(max) if max > 0 && t.size > max => {
                let why = format!("message too big for remote ({} > SIZE {max})", t.size);
                Some((Failed, ServerReply::local(552, (5, 3, 4), &why)))
            }
            _ => None,
        }
    }

    fn build_tx(&mut self, t: &Transaction<'_>) -> Tx {
        let ext = self.ext;
        let mut tx = Tx {
            lines: Vec::with_capacity(64 + 48 * t.recipients.len()),
            cmds: Vec::with_capacity(t.recipients.len() + 3),
            sent: 0,
            replied: 0,
            rcpts: t.recipients.iter().map(|_| RcptState::Pending).collect(),
            mail_refused: false,
            body_8bit_unannounced: t.body == Body::EightBitMime && !ext.eight_bit_mime,
            ended_cleanly: false,
            chunking: self.uses_bdat(t),
            binary: t.body == Body::BinaryMime,
            body_started: false,
            body_done: false,
            bdat_failed: false,
        };
        if std::mem::take(&mut self.needs_rset) {
            tx.push(Cmd::Rset, |o| o.extend_from_slice(b"RSET\r\n"));
        }
        tx.push(Cmd::Mail, |o| write_mail(o, t, &ext));
        for (i, r) in t.recipients.iter().enumerate() {
            tx.push(Cmd::Rcpt(i), |o| write_rcpt(o, r, &ext));
        }
        if !tx.chunking {
            tx.push(Cmd::Data, |o| o.extend_from_slice(b"DATA\r\n"));
        }
        tx
    }

    /// BDAT only with PIPELINING: in lock-step every chunk would wait for
    /// its reply, which the `SendBody` loop of the I/O layer cannot do.
    fn uses_bdat(&self, t: &Transaction<'_>) -> bool {
        let e = &self.ext;
        // LMTP bodies go with DATA: its per-recipient replies end it.
        !self.cfg.lmtp
            && e.chunking
            && e.pipelining
            && (self.cfg.chunking || t.body == Body::BinaryMime)
    }

    /// PIPELINING: everything not yet written, in one write (RFC 2920).
    /// Lock-step: the next command once the previous one is answered.
    fn send_more(&mut self, now_ms: u64, out: &mut Vec<u8>) {
        let pipelining = self.ext.pipelining;
        let Some(tx) = self.tx.as_mut() else { return };
        while tx.sent < tx.cmds.len() && (pipelining || tx.sent == tx.replied) {
            let (_, start, end) = tx.cmds[tx.sent];
            out.extend_from_slice(tx.lines.get(start..end).unwrap_or(&[]));
            tx.sent += 1;
        }
        let awaited = tx.awaited();
        self.deadline = awaited.map(|c| now_ms.saturating_add(self.timeout_for(c)));
    }

    fn timeout_for(&self, cmd: Cmd) -> u64 {
        let t = &self.cfg.timeouts;
        match cmd {
            Cmd::Rset => t.command_ms,
            Cmd::Mail => t.mail_ms,
            Cmd::Rcpt(_) => t.rcpt_ms,
            Cmd::Data => t.data_init_ms,
            Cmd::Bdat => t.data_block_ms,
            Cmd::EndOfData | Cmd::BdatLast | Cmd::AbortDot | Cmd::LmtpRcpt(_) => t.data_end_ms,
        }
    }

    pub(super) fn on_tx_reply(&mut self, r: ServerReply, now_ms: u64, out: &mut Vec<u8>) {
        let Some(tx) = self.tx.as_mut() else {
            return self.protocol_error();
        };
        // A reply to a command not sent yet: the server is out of step.
        let cmd = match tx.awaited() {
            Some(cmd) if tx.replied < tx.sent => cmd,
            _ => return self.protocol_error(),
        };
        tx.replied += 1;
        if cmd == Cmd::Data {
            return self.on_data_reply(r, now_ms, out);
        }
        if !tx.on_reply(cmd, &r) {
            return self.protocol_error();
        }
        self.advance(now_ms, out);
    }

    fn on_data_reply(&mut self, r: ServerReply, now_ms: u64, out: &mut Vec<u8>) {
        let Some(tx) = self.tx.as_mut() else { return };
        if r.code == 354 {
            if tx.mail_refused || tx.accepted() == 0 {
                // RFC 2920 3.1: the server took DATA although nobody is
                // left to deliver to; end an empty body and ignore its reply.
                out.extend_from_slice(b".\r\n");
                tx.cmds.push((Cmd::AbortDot, 0, 0));
                tx.sent = tx.cmds.len();
                return self.send_more(now_ms, out);
            }
            return self.start_body(now_ms);
        }
        if !matches!(r.class(), 4 | 5) {
            return self.protocol_error();
        }
        // With nobody accepted this is the expected 554/503 (RFC 2920);
        // otherwise the accepted recipients share DATA's refusal.
        if !tx.mail_refused {
            tx.decide(|s| matches!(s, RcptState::Accepted), &r);
        }
        self.advance(now_ms, out);
    }

    pub(super) fn advance(&mut self, now_ms: u64, out: &mut Vec<u8>) {
        // Replies to BDAT chunks while the body is still being fed.
        if self.phase == Phase::Body {
            return;
        }
        if let Some(tx) = self.tx.take_if(|tx| tx.is_over()) {
            return self.finish_tx(tx, None, false, now_ms);
        }
        let bdat_body_due = (self.tx.as_ref())
            .is_some_and(|tx| tx.chunking && !tx.body_started && tx.awaited().is_none());
        if bdat_body_due {
            return self.start_body(now_ms);
        }
        self.send_more(now_ms, out);
    }

    /// Turns every recipient into an outcome. `cause` (a connection
    /// failure) defers whoever has no verdict yet; without one the
    /// transaction ended normally and the connection is ready again, or
    /// goes on with the pipelined transaction. `TransactionDone` is queued
    /// unless `quiet` (the outcomes then wait for `TryNextHost`).
    pub(super) fn finish_tx(
        &mut self,
        tx: Tx,
        cause: Option<&ServerReply>,
        quiet: bool,
        now_ms: u64,
    ) {
        let unplanned =
            || ServerReply::local(451, (4, 4, 0), "transaction ended without a verdict");
        let unannounced = tx.body_8bit_unannounced;
        let decided = (tx.rcpts.into_iter().enumerate())
            .map(|(index, state)| match state {
                RcptState::Decided(kind, reply) => self.outcome(index, kind, reply, unannounced),
                RcptState::Pending | RcptState::Accepted => {
                    let reply = cause.cloned().unwrap_or_else(unplanned);
                    self.outcome(index, OutcomeKind::Deferred, reply, unannounced)
                }
            })
            .collect();
        self.outcomes.push_back(decided);
        if !quiet {
            self.events.push_back(Event::TransactionDone);
        }
        if cause.is_some() {
            return;
        }
        self.needs_rset = !tx.ended_cleanly;
        self.completed_any = true;
        match self.next.take() {
            Some(next) => {
                // Its commands went out behind the body: their replies
                // come next.
                self.deadline = next
                    .awaited()
                    .map(|c| now_ms.saturating_add(self.timeout_for(c)));
                self.tx = Some(next);
                self.phase = Phase::Transaction;
            }
            None => {
                self.phase = Phase::Ready;
                self.deadline = None;
            }
        }
    }

    fn outcome(
        &self,
        index: usize,
        kind: OutcomeKind,
        reply: ServerReply,
        unannounced: bool,
    ) -> RcptOutcome {
        RcptOutcome {
            index,
            kind,
            reply,
            tls: self.tls_active,
            tls_failed_then_plaintext: self.plaintext_retry,
            body_8bit_unannounced: unannounced,
        }
    }
}
