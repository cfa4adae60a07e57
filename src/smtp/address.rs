//! Mailbox and path syntax (RFC 5321 4.1.2, RFC 6531 for UTF-8).
//!
//! Owns: deciding whether `<...>` is a well-formed path, and borrowing the
//! pieces a policy needs (local part, domain, what kind of domain, whether a
//! source route or quoting was used).
//! Must never: copy or allocate (every piece is a slice of the input), or
//! accept a path that a later stage could read differently (e.g. a quoted
//! local part is reported as quoted so relay checks can refuse it).

use std::net::{Ipv4Addr, Ipv6Addr};

/// RFC 5321 4.5.3.1.1.
pub const MAX_LOCAL_PART: usize = 64;
/// RFC 5321 4.5.3.1.2.
pub const MAX_DOMAIN: usize = 255;
/// RFC 5321 4.5.3.1.3, counting the angle brackets.
pub const MAX_PATH: usize = 256;
/// RFC 1035 2.3.4.
const MAX_LABEL: usize = 63;

/// Why a path was refused; mapped to 501 5.1.7 (sender) / 501 5.1.3 (recipient).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("malformed address")]
    Malformed,
    #[error("local part longer than 64 octets")]
    LocalPartTooLong,
    #[error("domain longer than 255 octets")]
    DomainTooLong,
    #[error("path longer than 256 octets")]
    PathTooLong,
    #[error("null path not allowed here")]
    NullNotAllowed,
}

/// What follows the `@`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainKind {
    /// A host name (possibly with U-labels).
    Name,
    /// `[1.2.3.4]`
    Ipv4(Ipv4Addr),
    /// `[IPv6:...]`
    Ipv6(Ipv6Addr),
    /// `<Postmaster>` without a domain (RFC 5321 4.1.1.3), RCPT only.
    None,
}

/// A mailbox borrowed from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mailbox<'a> {
    /// `local@domain` as written, without brackets or source route.
    pub address: &'a [u8],
    /// The local part as written (quotes and backslashes included).
    pub local: &'a [u8],
    /// The domain as written (brackets included for literals); empty for
    /// a bare `<Postmaster>`.
    pub domain: &'a [u8],
    pub domain_kind: DomainKind,
    /// A source route `@a,@b:` preceded the mailbox and was dropped.
    pub source_route: bool,
    /// The local part was a quoted-string.
    pub quoted: bool,
    /// The address contains non-ASCII (UTF-8) octets: needs SMTPUTF8.
    pub utf8: bool,
}

/// A reverse path: the null sender `<>` or a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReversePath<'a> {
    Null,
    Mailbox(Mailbox<'a>),
}

/// Parses a path starting at `input[0] == b'<'`, returning it and the rest
/// of the input after `>`. `allow_null` permits `<>` (MAIL only);
/// `allow_postmaster` permits a domainless `<Postmaster>` (RCPT only).
pub fn parse_path(
    input: &[u8],
    allow_null: bool,
    allow_postmaster: bool,
) -> Result<(ReversePath<'_>, &[u8]), AddressError> {
    let mut c = Cursor { s: input, pos: 0 };
    if !c.eat(b'<') {
        return Err(AddressError::Malformed);
    }
    if c.eat(b'>') {
        return if allow_null {
            Ok((ReversePath::Null, &input[2..]))
        } else {
            Err(AddressError::NullNotAllowed)
        };
    }
    let source_route = c.peek() == Some(b'@');
    if source_route {
        skip_source_route(&mut c)?;
    }
    let mut mailbox = parse_mailbox(&mut c, allow_postmaster && !source_route)?;
    if !c.eat(b'>') {
        return Err(AddressError::Malformed);
    }
    if c.pos > MAX_PATH {
        return Err(AddressError::PathTooLong);
    }
    mailbox.source_route = source_route;
    Ok((ReversePath::Mailbox(mailbox), &input[c.pos..]))
}

/// Byte cursor over the path; every accessor is bounds-checked.
struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }
    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        if hit {
            self.pos += 1;
        }
        hit
    }
    fn bump(&mut self) {
        self.pos += 1;
    }
}

/// `A-d-l ":"` where `A-d-l = At-domain *( "," At-domain )`. RFC 5321
/// lets us ignore the route; only the final mailbox matters.
fn skip_source_route(c: &mut Cursor<'_>) -> Result<(), AddressError> {
    loop {
        if !c.eat(b'@') {
            return Err(AddressError::Malformed);
        }
        let start = c.pos;
        parse_domain_name(c)?;
        if c.pos - start > MAX_DOMAIN {
            return Err(AddressError::DomainTooLong);
        }
        if c.eat(b':') {
            return Ok(());
        }
        if !c.eat(b',') {
            return Err(AddressError::Malformed);
        }
    }
}

fn parse_mailbox<'a>(
    c: &mut Cursor<'a>,
    allow_postmaster: bool,
) -> Result<Mailbox<'a>, AddressError> {
    let start = c.pos;
    let quoted = c.peek() == Some(b'"');
    if quoted {
        parse_quoted_string(c)?;
    } else {
        parse_dot_string(c)?;
    }
    let local = &c.s[start..c.pos];
    if local.len() > MAX_LOCAL_PART {
        return Err(AddressError::LocalPartTooLong);
    }
    let (domain, domain_kind) = if c.eat(b'@') {
        let dstart = c.pos;
        let kind = parse_domain(c)?;
        (&c.s[dstart..c.pos], kind)
    } else if allow_postmaster && !quoted && local.eq_ignore_ascii_case(b"postmaster") {
        (&c.s[c.pos..c.pos], DomainKind::None)
    } else {
        return Err(AddressError::Malformed);
    };
    if domain.len() > MAX_DOMAIN {
        return Err(AddressError::DomainTooLong);
    }
    let address = &c.s[start..c.pos];
    let utf8 = !address.is_ascii();
    if utf8 && std::str::from_utf8(address).is_err() {
        return Err(AddressError::Malformed);
    }
    Ok(Mailbox {
        address,
        local,
        domain,
        domain_kind,
        source_route: false,
        quoted,
        utf8,
    })
}

/// RFC 5322 atext plus RFC 6531 UTF8-non-ascii.
pub fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b >= 0x80 || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

/// `Dot-string = Atom *("." Atom)`.
fn parse_dot_string(c: &mut Cursor<'_>) -> Result<(), AddressError> {
    loop {
        let start = c.pos;
        while c.peek().is_some_and(is_atext) {
            c.bump();
        }
        if c.pos == start {
            return Err(AddressError::Malformed);
        }
        if !c.eat(b'.') {
            return Ok(());
        }
    }
}

/// `Quoted-string = DQUOTE *QcontentSMTP DQUOTE`.
fn parse_quoted_string(c: &mut Cursor<'_>) -> Result<(), AddressError> {
    c.bump();
    loop {
        match c.peek() {
            Some(b'"') => {
                c.bump();
                return Ok(());
            }
            Some(b'\\') => {
                c.bump();
                match c.peek() {
                    Some(32..=126) => c.bump(),
                    _ => return Err(AddressError::Malformed),
                }
            }
            // qtextSMTP: %d32-33 / %d35-91 / %d93-126 / UTF8-non-ascii
            Some(32..=126) | Some(0x80..=0xff) => c.bump(),
            _ => return Err(AddressError::Malformed),
        }
    }
}

/// `Domain / address-literal`.
fn parse_domain(c: &mut Cursor<'_>) -> Result<DomainKind, AddressError> {
    if c.peek() == Some(b'[') {
        parse_address_literal(c)
    } else {
        parse_domain_name(c).map(|()| DomainKind::Name)
    }
}

/// `sub-domain *("." sub-domain)`; a sub-domain is `Let-dig [Ldh-str]` or a
/// U-label (non-ASCII octets are allowed wherever a letter is).
fn parse_domain_name(c: &mut Cursor<'_>) -> Result<(), AddressError> {
    let is_let_dig = |b: u8| b.is_ascii_alphanumeric() || b >= 0x80;
    loop {
        let start = c.pos;
        while c.peek().is_some_and(|b| is_let_dig(b) || b == b'-') {
            c.bump();
        }
        let label = &c.s[start..c.pos];
        match (label.first(), label.last()) {
            (Some(&f), Some(&l)) if is_let_dig(f) && is_let_dig(l) => {}
            _ => return Err(AddressError::Malformed),
        }
        if label.len() > MAX_LABEL {
            return Err(AddressError::Malformed);
        }
        if !c.eat(b'.') {
            return Ok(());
        }
    }
}

/// `"[" ( IPv4-address-literal / IPv6-address-literal ) "]"`. General
/// address literals name no transport we can use, so they are refused.
fn parse_address_literal(c: &mut Cursor<'_>) -> Result<DomainKind, AddressError> {
    c.bump();
    let rest = &c.s[c.pos..];
    let end = memchr::memchr(b']', rest).ok_or(AddressError::Malformed)?;
    let inner = &rest[..end];
    let kind = if inner.len() > 5 && inner[..5].eq_ignore_ascii_case(b"IPv6:") {
        let text = std::str::from_utf8(&inner[5..]).map_err(|_| AddressError::Malformed)?;
        DomainKind::Ipv6(text.parse().map_err(|_| AddressError::Malformed)?)
    } else {
        let text = std::str::from_utf8(inner).map_err(|_| AddressError::Malformed)?;
        DomainKind::Ipv4(text.parse().map_err(|_| AddressError::Malformed)?)
    };
    c.pos += end + 1;
    Ok(kind)
}

/// A domain name as it may stand in EHLO, `Received:` or a route:
/// dot-separated labels of letters, digits and inner hyphens.
pub fn is_domain_name(name: &str) -> bool {
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    name.len() <= 253 && name.split('.').all(label_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailbox(s: &[u8]) -> Result<Mailbox<'_>, AddressError> {
        match parse_path(s, true, true)? {
            (ReversePath::Mailbox(m), _) => Ok(m),
            (ReversePath::Null, _) => Err(AddressError::NullNotAllowed),
        }
    }

    #[test]
    fn simple_mailbox() {
        let m = mailbox(b"<user@example.com> SIZE=1").unwrap();
        assert_eq!(m.address, b"user@example.com");
        assert_eq!(m.local, b"user");
        assert_eq!(m.domain, b"example.com");
        assert_eq!(m.domain_kind, DomainKind::Name);
        assert!(!m.source_route && !m.quoted && !m.utf8);
        let (_, rest) = parse_path(b"<a@b> X", false, false).unwrap();
        assert_eq!(rest, b" X");
    }

    #[test]
    fn null_path_only_when_allowed() {
        assert_eq!(parse_path(b"<>", true, false).unwrap().0, ReversePath::Null);
        assert_eq!(
            parse_path(b"<>", false, false).unwrap_err(),
            AddressError::NullNotAllowed
        );
    }

    #[test]
    fn source_route_is_dropped_and_reported() {
        let m = mailbox(b"<@a.example,@b.example:user@d.example>").unwrap();
        assert_eq!(m.address, b"user@d.example");
        assert_eq!(m.domain, b"d.example");
        assert!(m.source_route);
    }

    #[test]
    fn bad_source_routes() {
        for p in [
            &b"<@a:>"[..],
            b"<@:u@d>",
            b"<@a,u@d>",
            b"<@a;u@d>",
            b"<@a,@:u@d>",
        ] {
            assert_eq!(mailbox(p).unwrap_err(), AddressError::Malformed, "{p:?}");
        }
    }

    #[test]
    fn quoted_local_part() {
        let m = mailbox(br#"<"a@b c\"d"@example.com>"#).unwrap();
        assert!(m.quoted);
        assert_eq!(m.local, br#""a@b c\"d""#);
        assert!(mailbox(b"<\"unterminated@example.com>").is_err());
        assert!(mailbox(b"<\"a\x01\"@example.com>").is_err());
    }

    #[test]
    fn address_literals() {
        let m = mailbox(b"<u@[192.0.2.1]>").unwrap();
        assert_eq!(m.domain_kind, DomainKind::Ipv4(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(m.domain, b"[192.0.2.1]");
        let m = mailbox(b"<u@[IPv6:2001:db8::1]>").unwrap();
        assert!(matches!(m.domain_kind, DomainKind::Ipv6(_)));
        for p in [
            &b"<u@[300.1.1.1]>"[..],
            b"<u@[IPv6:zz]>",
            b"<u@[x:y]>",
            b"<u@[1.2.3.4>",
        ] {
            assert_eq!(mailbox(p).unwrap_err(), AddressError::Malformed, "{p:?}");
        }
    }

    #[test]
    fn malformed_addresses() {
        for p in [
            &b"<user>"[..],
            b"<@>",
            b"<user@>",
            b"<@example.com>",
            b"<.user@example.com>",
            b"<user.@example.com>",
            b"<us..er@example.com>",
            b"<user@-example.com>",
            b"<user@example-.com>",
            b"<user@example..com>",
            b"<user@example.com.>",
            b"<user@exa_mple.com>",
            b"<user@example.com",
            b"user@example.com",
            b"<user@example.com x>",
            b"<us er@example.com>",
            b"<user@\xff\xfe>",
        ] {
            assert!(mailbox(p).is_err(), "{:?}", String::from_utf8_lossy(p));
        }
    }

    #[test]
    fn utf8_mailbox() {
        let m = mailbox("<用户@例子.广告>".as_bytes()).unwrap();
        assert!(m.utf8);
    }

    #[test]
    fn length_limits() {
        let local = "a".repeat(64);
        assert!(mailbox(format!("<{local}@example.com>").as_bytes()).is_ok());
        let local = "a".repeat(65);
        assert_eq!(
            mailbox(format!("<{local}@example.com>").as_bytes()).unwrap_err(),
            AddressError::LocalPartTooLong
        );
        let label = "a".repeat(63);
        let domain = [label.as_str(); 4].join(".") + ".com";
        assert_eq!(
            mailbox(format!("<u@{domain}>").as_bytes()).unwrap_err(),
            AddressError::DomainTooLong
        );
        let domain = [label.as_str(); 3].join(".") + "." + &"b".repeat(60);
        let path = format!("<{}@{domain}>", "x".repeat(64));
        assert!(path.len() > MAX_PATH && domain.len() <= MAX_DOMAIN);
        assert_eq!(
            mailbox(path.as_bytes()).unwrap_err(),
            AddressError::PathTooLong
        );
        let long_label = format!("<u@{}.com>", "a".repeat(64));
        assert!(mailbox(long_label.as_bytes()).is_err());
    }

    #[test]
    fn postmaster_without_domain() {
        let m = mailbox(b"<PostMaster>").unwrap();
        assert_eq!(m.domain_kind, DomainKind::None);
        assert!(parse_path(b"<postmaster>", true, false).is_err());
        assert!(mailbox(b"<@a:postmaster>").is_err());
    }
}
