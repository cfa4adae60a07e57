//! Errors of the DNS layer, grouped by what delivery does with them.
//!
//! Owns: the mapping from wire and transport failures to "defer" or
//! "give up". Must never: carry borrowed network data.

use std::fmt;

/// Why a lookup failed in a way that a later retry may fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TempReason {
    /// A server answered SERVFAIL.
    ServFail,
    /// A server answered REFUSED.
    Refused,
    /// A server answered with another error code (FORMERR, NOTIMP, ...).
    OtherRcode(u16),
    /// No server answered within the timeout.
    Timeout,
    /// A socket error (unreachable, connection refused, ...).
    Network,
    /// Replies were malformed or did not match the query.
    BadReply,
    /// A CNAME chain was longer than the bound or looped.
    CnameChain,
    /// The lookup that this one was waiting on went away.
    Abandoned,
    /// The OS's random source failed, so no unpredictable query id.
    Randomness,
}

impl fmt::Display for TempReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TempReason::ServFail => f.write_str("server failure (SERVFAIL)"),
            TempReason::Refused => f.write_str("query refused (REFUSED)"),
            TempReason::OtherRcode(code) => write!(f, "error response code {code}"),
            TempReason::Timeout => f.write_str("no answer from any nameserver"),
            TempReason::Network => f.write_str("network error talking to nameservers"),
            TempReason::BadReply => f.write_str("malformed or mismatched reply"),
            TempReason::CnameChain => f.write_str("CNAME chain too long"),
            TempReason::Abandoned => f.write_str("shared lookup abandoned"),
            TempReason::Randomness => f.write_str("the OS random source failed"),
        }
    }
}

/// A failed lookup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// Retry later: the answer may be different then (defer the mail).
    #[error("temporary DNS failure for {name}: {reason}")]
    Temporary { name: String, reason: TempReason },
    /// The name cannot be looked up at all (bad syntax, bad address literal).
    #[error("invalid domain name {0:?}")]
    InvalidName(String),
    /// A domain with non-ASCII labels that IDNA cannot convert.
    #[error("{0:?} is not a valid internationalised domain name")]
    InvalidIdn(String),
    /// No nameserver is configured and /etc/resolv.conf names none.
    #[error("no nameservers configured")]
    NoServers,
}

impl DnsError {
    /// True when delivery should defer rather than bounce.
    pub fn is_temporary(&self) -> bool {
        matches!(self, DnsError::Temporary { .. } | DnsError::NoServers)
    }

    pub(crate) fn temporary(name: &str, reason: TempReason) -> Self {
        DnsError::Temporary {
            name: name.trim_end_matches('.').to_string(),
            reason,
        }
    }
}
