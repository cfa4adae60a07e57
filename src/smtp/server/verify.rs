//! Session side of RCPT for the hosted domains: the recipient tables
//! resolve the address into the envelope recipients it stands for; a
//! mailbox only the domain's LMTP server knows pauses the machine
//! (`Event::RcptVerify`) until the I/O layer brings the answer, and the
//! RCPT is then run again with it.
//!
//! Must never: accept a recipient the tables refuse, or read input while
//! a verdict is owed (pipelined commands wait their turn).

use std::borrow::Cow;

use super::{Event, Misuse, Session, State};
use crate::smtp::address::{DomainKind, Mailbox};
use crate::smtp::params::RcptParams;
use crate::smtp::recipients::{orcpt_of, Refusal, Resolution};
use crate::smtp::{relay, reply};

/// What the LMTP server said about the mailbox of `RcptVerify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Exists,
    Unknown,
    /// A 4xx, or no answer: the RCPT gets 450 4.2.0.
    Unavailable,
}

impl Session {
    /// Sets the SRS day number (days since 1970, modulo 1024): the I/O
    /// layer owns the wall clock.
    pub fn set_today(&mut self, day: u32) {
        self.today = day;
    }

    /// The envelope sender of the forwarded recipients of the current
    /// transaction when it is not the transaction's own (SRS): `None`
    /// when there are none, or their sender is kept.
    pub fn forward_sender(&self) -> Option<Vec<u8>> {
        if !self.envelope.recipients().any(|r| r.forward) {
            return None;
        }
        let table = self.cfg.recipients.as_ref()?;
        table.forward_sender(self.envelope.reverse_path(), self.today)
    }

    /// The mailbox the pending `RcptVerify` asks about.
    pub fn verify_request(&self) -> Option<&str> {
        matches!(self.state, State::AwaitVerify).then_some(self.verify_mailbox.as_str())
    }

    /// The I/O layer's answer to `RcptVerify`: the RCPT is run again with
    /// it, which may ask about another mailbox (an alias with several
    /// targets on LMTP-verified domains).
    pub fn rcpt_verified(
        &mut self,
        verdict: Verdict,
        out: &mut Vec<u8>,
    ) -> Result<Option<Event>, Misuse> {
        if !matches!(self.state, State::AwaitVerify) {
            return Err(Misuse);
        }
        self.state = State::Command;
        let exists = match verdict {
            Verdict::Exists => true,
            Verdict::Unknown => false,
            Verdict::Unavailable => {
                self.verify_answers.clear();
                return Ok(self.fail(reply::VERIFY_UNAVAILABLE, out));
            }
        };
        let mailbox = std::mem::take(&mut self.verify_mailbox);
        self.verify_answers.push((mailbox, exists));
        let line = std::mem::take(&mut self.pending_rcpt);
        let event = self.command(&line, out);
        self.pending_rcpt = line;
        Ok(event)
    }

    /// RCPT for an address the recipient tables know: `None` when they do
    /// not (the relay policy has decided), else the RCPT's outcome.
    pub(super) fn hosted_rcpt(
        &mut self,
        line: &[u8],
        rcpt: &Mailbox<'_>,
        params: &RcptParams<'_>,
        out: &mut Vec<u8>,
    ) -> Option<Option<Event>> {
        if rcpt.domain_kind != DomainKind::Name {
            return None;
        }
        let table = self.cfg.recipients.clone()?;
        let Ok(address) = std::str::from_utf8(rcpt.address) else {
            // No user of ours has a name that is not UTF-8.
            let ours = relay::is_local_domain(rcpt.domain, &self.cfg.local_domains);
            return ours.then(|| self.fail(reply::UNKNOWN_USER, out));
        };
        let mut targets = std::mem::take(&mut self.targets);
        let resolved = table.resolve(address, self.today, &self.verify_answers, &mut targets);
        let event = match resolved {
            Ok(Resolution::NotHosted) => None,
            Ok(Resolution::NeedsProbe { mailbox }) => {
                self.pending_rcpt.clear();
                self.pending_rcpt.extend_from_slice(line);
                self.verify_mailbox = mailbox;
                self.state = State::AwaitVerify;
                // The answers so far are kept for the run that follows.
                self.targets = targets;
                return Some(Some(Event::RcptVerify));
            }
            Ok(Resolution::Resolved) => Some(self.add_targets(rcpt, params, out, &targets)),
            Err(refusal) => Some(self.refuse_rcpt(address, &refusal, out)),
        };
        self.targets = targets;
        self.verify_answers.clear();
        event
    }

    /// Adds what a RCPT resolved into, each with the ORCPT of the address
    /// the client gave (its own ORCPT if it sent one).
    fn add_targets(
        &mut self,
        rcpt: &Mailbox<'_>,
        params: &RcptParams<'_>,
        out: &mut Vec<u8>,
        targets: &[crate::smtp::recipients::Target],
    ) -> Option<Event> {
        let fresh = targets
            .iter()
            .filter(|t| !self.envelope.has_recipient(&t.address))
            .count();
        if fresh == 0 {
            return self.reply(reply::DUPLICATE_RECIPIENT, out);
        }
        if self.envelope.recipient_count() + fresh > self.cfg.max_recipients {
            // RFC 5321 4.5.3.1.10: the client retries the excess later.
            return self.reply(reply::TOO_MANY_RECIPIENTS, out);
        }
        let original = match params.orcpt {
            Some(o) => Cow::Borrowed(o),
            None => Cow::Owned(orcpt_of(rcpt.address)),
        };
        let mut first = None;
        for t in targets {
            if self.envelope.has_recipient(&t.address) {
                continue;
            }
            let orcpt = (params.orcpt.is_some() || t.address != rcpt.address).then_some(&*original);
            let index = self
                .envelope
                .add_target(&t.address, params.notify, orcpt, t.forward);
            first.get_or_insert(index);
        }
        reply::RECIPIENT_OK.write(out);
        first.map(|index| Event::RcptTo { index })
    }

    fn refuse_rcpt(
        &mut self,
        address: &str,
        refusal: &Refusal,
        out: &mut Vec<u8>,
    ) -> Option<Event> {
        let r = match refusal {
            Refusal::Unknown { .. } | Refusal::BadSrs { .. } => reply::UNKNOWN_USER,
            Refusal::Loop { alias } => {
                tracing::warn!(
                    rcpt = address,
                    alias = alias.as_str(),
                    "alias loop: recipient refused"
                );
                reply::ALIAS_LOOP
            }
            Refusal::TooDeep => {
                tracing::warn!(
                    rcpt = address,
                    "alias expansion too deep or too large: recipient refused"
                );
                reply::ALIAS_TOO_DEEP
            }
        };
        if let Refusal::Unknown { address: target } = refusal {
            if target != address {
                tracing::warn!(
                    rcpt = address,
                    target = target.as_str(),
                    "an alias names an unknown local user: recipient refused"
                );
            }
        }
        self.fail(r, out)
    }
}
