//! What RCPT asks of the recipient tables of the domains hosted here:
//! the outcome types, and the trait the tables (`hosted`) implement, so
//! the SMTP machine knows no config.

use super::xtext;

/// One envelope recipient a RCPT stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub address: Vec<u8>,
    /// Reached through an alias and on another server: a forward, whose
    /// envelope sender may be rewritten.
    pub forward: bool,
}

/// What became of a RCPT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Not an address of ours: the relay policy decides.
    NotHosted,
    /// The targets are in the output (none was refused).
    Resolved,
    /// The LMTP server of `mailbox`'s domain must say whether it exists.
    NeedsProbe { mailbox: String },
}

/// Why a RCPT was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No such user (`address` is the one found unknown, which may be an
    /// alias's target): 550 5.1.1.
    Unknown { address: String },
    /// An alias names itself through others: 550 5.4.6.
    Loop { alias: String },
    /// Aliases nested too deep, or naming too many addresses: 550 5.4.6.
    TooDeep,
    /// A rewritten sender (`SRS0=`) that is not ours or too old: 550 5.1.1.
    BadSrs { why: String },
}

/// The recipients of the hosted domains.
pub trait RecipientTable: std::fmt::Debug + Send + Sync {
    /// Resolves `address` (`local@domain`, as the client wrote it) into
    /// `out` (cleared first), on SRS day `today`, with the LMTP servers'
    /// `answers` so far (mailbox, exists).
    fn resolve(
        &self,
        address: &str,
        today: u32,
        answers: &[(String, bool)],
        out: &mut Vec<Target>,
    ) -> Result<Resolution, Refusal>;

    /// The envelope sender the servers that forwarded mail goes to see,
    /// for `sender` on SRS day `today`: `None` to keep it as it is.
    fn forward_sender(&self, sender: &[u8], today: u32) -> Option<Vec<u8>>;
}

/// The ORCPT value (RFC 3461 4.2) recording `address` as the client gave
/// it: `rfc822;` and its xtext for an ASCII address, `utf-8;` and its
/// utf-8-addr-xtext (RFC 6533) otherwise.
pub fn orcpt_of(address: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(address.len() + 8);
    if address.is_ascii() {
        out.extend_from_slice(b"rfc822;");
        xtext::push_xtext(&mut out, address);
    } else {
        out.extend_from_slice(b"utf-8;");
        xtext::push_utf8_addr_xtext(&mut out, address);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orcpt_values() {
        assert_eq!(
            orcpt_of(b"A+b=c@example.org"),
            b"rfc822;A+2Bb+3Dc@example.org"
        );
        assert_eq!(
            orcpt_of("jö@example.org".as_bytes()),
            b"utf-8;j\\x{F6}@example.org"
        );
    }
}
