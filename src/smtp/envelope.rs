//! The envelope of the mail transaction being received: what the delivery
//! path needs besides the body (RFC 5321 reverse/forward paths, RFC 3461
//! DSN parameters, RFC 6152 BODY, RFC 6531 SMTPUTF8, RFC 1870 SIZE).
//!
//! Owns: copies of the accepted paths and parameters, in one byte arena
//! that is cleared (not freed) between transactions.
//! Must never: allocate per recipient in steady state, or hold anything the
//! session refused.

use super::params::{Body, MailParams, Notify, RcptParams, Ret};

/// A byte range in the arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Span {
    start: usize,
    end: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RecipientEntry {
    address: Span,
    notify: Option<Notify>,
    orcpt: Option<Span>,
    forward: bool,
}

/// One accepted recipient, borrowed from the envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recipient<'a> {
    /// `local@domain` as the client wrote it (no brackets, no source route);
    /// `Postmaster` alone for the domainless postmaster address.
    pub address: &'a [u8],
    pub notify: Option<Notify>,
    /// `addr-type;xtext`, still encoded.
    pub orcpt: Option<&'a [u8]>,
    /// An alias's target on another server: the mail is forwarded, and
    /// its envelope sender may be rewritten.
    pub forward: bool,
}

/// Envelope of the current transaction.
#[derive(Debug, Clone, Default)]
pub struct Envelope {
    arena: Vec<u8>,
    active: bool,
    reverse_path: Span,
    recipients: Vec<RecipientEntry>,
    ret: Option<Ret>,
    envid: Option<Span>,
    body: Body,
    smtputf8: bool,
    declared_size: Option<u64>,
}

impl Envelope {
    /// True between an accepted MAIL and the end of the transaction.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// The reverse path without brackets; empty for the null sender `<>`.
    pub fn reverse_path(&self) -> &[u8] {
        self.get(self.reverse_path)
    }

    pub fn recipient_count(&self) -> usize {
        self.recipients.len()
    }

    pub fn recipient(&self, index: usize) -> Option<Recipient<'_>> {
        self.recipients.get(index).map(|r| self.view(r))
    }

    pub fn recipients(&self) -> impl ExactSizeIterator<Item = Recipient<'_>> + '_ {
        self.recipients.iter().map(|r| self.view(r))
    }

    pub fn ret(&self) -> Option<Ret> {
        self.ret
    }

    /// ENVID, still xtext-encoded.
    pub fn envid(&self) -> Option<&[u8]> {
        self.envid.map(|s| self.get(s))
    }

    pub fn body(&self) -> Body {
        self.body
    }

    pub fn smtputf8(&self) -> bool {
        self.smtputf8
    }

    /// SIZE declared at MAIL, if any (RFC 1870).
    pub fn declared_size(&self) -> Option<u64> {
        self.declared_size
    }

    fn get(&self, s: Span) -> &[u8] {
        self.arena.get(s.start..s.end).unwrap_or_default()
    }

    fn view(&self, r: &RecipientEntry) -> Recipient<'_> {
        Recipient {
            address: self.get(r.address),
            notify: r.notify,
            orcpt: r.orcpt.map(|s| self.get(s)),
            forward: r.forward,
        }
    }

    fn store(&mut self, bytes: &[u8]) -> Span {
        let start = self.arena.len();
        self.arena.extend_from_slice(bytes);
        Span {
            start,
            end: self.arena.len(),
        }
    }

    /// Starts a transaction; `reverse_path` is empty for `<>`.
    pub(crate) fn begin(&mut self, reverse_path: &[u8], params: &MailParams<'_>) {
        self.clear();
        self.active = true;
        self.reverse_path = self.store(reverse_path);
        self.ret = params.ret;
        self.envid = params.envid.map(|e| self.store(e));
        self.body = params.body.unwrap_or_default();
        self.smtputf8 = params.smtputf8;
        self.declared_size = params.size;
    }

    /// Adds a recipient and returns its index.
    /// Whether `address` is a recipient already: the same local part and
    /// the same domain, the domain compared without regard to ASCII case
    /// (the local part is the destination's to interpret).
    pub fn has_recipient(&self, address: &[u8]) -> bool {
        let (local, domain) = split_address(address);
        self.recipients.iter().any(|r| {
            let (l, d) = split_address(self.get(r.address));
            l == local && d.eq_ignore_ascii_case(domain)
        })
    }

    pub(crate) fn add_recipient(&mut self, address: &[u8], params: &RcptParams<'_>) -> usize {
        self.add_target(address, params.notify, params.orcpt, false)
    }

    /// Adds a recipient a RCPT stands for (one of an alias's targets, a
    /// user's mailbox address) and returns its index.
    pub(crate) fn add_target(
        &mut self,
        address: &[u8],
        notify: Option<Notify>,
        orcpt: Option<&[u8]>,
        forward: bool,
    ) -> usize {
        let address = self.store(address);
        let orcpt = orcpt.map(|o| self.store(o));
        self.recipients.push(RecipientEntry {
            address,
            notify,
            orcpt,
            forward,
        });
        self.recipients.len() - 1
    }

    /// Ends the transaction, keeping the allocations for the next one.
    pub(crate) fn clear(&mut self) {
        self.arena.clear();
        self.recipients.clear();
        self.active = false;
        self.reverse_path = Span::default();
        self.ret = None;
        self.envid = None;
        self.body = Body::default();
        self.smtputf8 = false;
        self.declared_size = None;
    }
}

/// `local@domain` split at its last `@` (a quoted local part may hold
/// one); the whole address and no domain when there is none.
fn split_address(address: &[u8]) -> (&[u8], &[u8]) {
    match memchr::memrchr(b'@', address) {
        Some(at) => (&address[..at], &address[at + 1..]),
        None => (address, &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn begin_add_clear() {
        let mut e = Envelope::default();
        let params = MailParams {
            size: Some(10),
            ret: Some(Ret::Full),
            envid: Some(b"id+2B"),
            smtputf8: true,
            ..MailParams::default()
        };
        e.begin(b"a@b", &params);
        let rp = RcptParams {
            notify: Some(Notify::NEVER),
            orcpt: Some(b"rfc822;x@y"),
            any: true,
        };
        assert_eq!(e.add_recipient(b"x@y", &rp), 0);
        assert_eq!(e.add_recipient(b"z@y", &RcptParams::default()), 1);
        assert!(e.is_active());
        assert_eq!(e.reverse_path(), b"a@b");
        assert_eq!(e.envid(), Some(&b"id+2B"[..]));
        assert_eq!(e.declared_size(), Some(10));
        assert!(e.smtputf8());
        let r: Vec<_> = e.recipients().collect();
        assert_eq!(r[0].address, b"x@y");
        assert_eq!(r[0].orcpt, Some(&b"rfc822;x@y"[..]));
        assert_eq!(r[1].notify, None);
        let cap = e.arena.capacity();
        e.clear();
        assert!(!e.is_active() && e.recipient_count() == 0 && e.envid().is_none());
        assert_eq!(e.arena.capacity(), cap);
    }
}
