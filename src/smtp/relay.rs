//! Relay policy: may this client hand us mail for this recipient?
//!
//! Owns: the open-relay decision for one recipient.
//! Must never: let an untrusted client reach a non-local destination through
//! address tricks. Source routes, `%` hacks (`user%other@local`), `!` bang
//! paths, quoted local parts (which can hide an `@`), and address-literal
//! domains are all refused unless the client is trusted, because a later
//! stage or a downstream MTA might route on them.

use super::address::{DomainKind, Mailbox};

/// True when `rcpt` may be accepted: the client is trusted (relay allowed by
/// network or authenticated), or the address is plainly local.
pub fn may_accept(rcpt: &Mailbox<'_>, trusted: bool, local_domains: &[String]) -> bool {
    if trusted {
        return true;
    }
    if rcpt.source_route || rcpt.quoted {
        return false;
    }
    if rcpt.local.iter().any(|&b| matches!(b, b'%' | b'!' | b'@')) {
        return false;
    }
    match rcpt.domain_kind {
        // RFC 5321 4.1.1.3: <Postmaster> is always ours.
        DomainKind::None => true,
        DomainKind::Ipv4(_) | DomainKind::Ipv6(_) => false,
        DomainKind::Name => is_local_domain(rcpt.domain, local_domains),
    }
}

/// Domain names compare case-insensitively (ASCII only; U-labels must match
/// exactly, since IDNA mapping is not done here).
pub fn is_local_domain(domain: &[u8], local_domains: &[String]) -> bool {
    local_domains.iter().any(|d| {
        let d = d.strip_suffix('.').unwrap_or(d);
        d.as_bytes().eq_ignore_ascii_case(domain)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::address::{parse_path, ReversePath};

    fn check(path: &[u8], trusted: bool) -> bool {
        let locals = vec!["example.com".to_string(), "Local.Example.".to_string()];
        match parse_path(path, false, true) {
            Ok((ReversePath::Mailbox(m), _)) => may_accept(&m, trusted, &locals),
            other => panic!("bad test path {other:?}"),
        }
    }

    #[test]
    fn local_domains_accepted() {
        assert!(check(b"<u@example.com>", false));
        assert!(check(b"<u@EXAMPLE.COM>", false));
        assert!(check(b"<u@local.example>", false));
        assert!(check(b"<postmaster>", false));
    }

    #[test]
    fn remote_refused_unless_trusted() {
        assert!(!check(b"<u@remote.example>", false));
        assert!(check(b"<u@remote.example>", true));
    }

    #[test]
    fn address_tricks_refused_for_untrusted() {
        for p in [
            &b"<@example.com:u@example.com>"[..],
            b"<@example.com:u@remote.example>",
            b"<u%remote.example@example.com>",
            b"<remote.example!u@example.com>",
            b"<\"u@remote.example\"@example.com>",
            b"<\"u\"@example.com>",
            b"<u@[192.0.2.1]>",
            b"<u@[IPv6:::1]>",
        ] {
            assert!(!check(p, false), "{}", String::from_utf8_lossy(p));
            assert!(check(p, true), "{}", String::from_utf8_lossy(p));
        }
    }
}
