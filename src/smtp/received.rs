//! The `Received:` trace header (RFC 5321 4.4, RFC 3848 protocol names)
//! and an RFC 5322 date formatter.
//!
//! Owns: the text of the trace header we prepend to each message.
//! Must never: read the clock (the caller passes the time) or copy client
//! text into the header without it having passed the command parser (which
//! guarantees no CR, LF or NUL).

use std::net::IpAddr;

/// TLS facts for the trace header; rustls names are `&'static str`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsInfo {
    /// e.g. `TLSv1.3`
    pub protocol: &'static str,
    /// e.g. `TLS13_AES_256_GCM_SHA384`
    pub cipher: &'static str,
}

/// The pieces of one `Received:` header.
#[derive(Debug, Clone, Copy)]
pub struct ReceivedInfo<'a> {
    /// The EHLO/HELO argument.
    pub helo: &'a [u8],
    /// Reverse DNS name of the client, if it was verified.
    pub rdns: Option<&'a str>,
    pub ip: IpAddr,
    /// Our host name.
    pub hostname: &'a str,
    pub tls: Option<TlsInfo>,
    /// EHLO (true) or HELO (false).
    pub esmtp: bool,
    pub authenticated: bool,
    /// Queue id.
    pub id: &'a str,
    /// Set only when the message has exactly one recipient, so a copy for
    /// one recipient does not reveal the others.
    pub recipient: Option<&'a [u8]>,
    /// RFC 5322 date, see [`format_date`].
    pub date: &'a str,
}

/// RFC 3848 `with` protocol name.
fn protocol(r: &ReceivedInfo<'_>) -> &'static str {
    match (r.esmtp, r.tls.is_some(), r.authenticated) {
        (false, _, _) => "SMTP",
        (true, false, false) => "ESMTP",
        (true, true, false) => "ESMTPS",
        (true, false, true) => "ESMTPA",
        (true, true, true) => "ESMTPSA",
    }
}

/// Appends the header, folded, with CRLF line ends.
pub fn write_received(out: &mut Vec<u8>, r: &ReceivedInfo<'_>) {
    out.extend_from_slice(b"Received: from ");
    // RFC 5321 4.4: the `from` clause is a domain or an address literal.
    // Any other EHLO argument goes into the comment, quoted, so that its
    // `(`, `)`, `;` or 8-bit bytes cannot pass for trace fields of ours.
    let helo_ok = is_helo_name(r.helo);
    if helo_ok {
        out.extend_from_slice(r.helo);
    } else {
        write_ip_literal(out, r.ip);
    }
    out.extend_from_slice(b" (");
    if !helo_ok {
        out.extend_from_slice(b"helo=");
        write_comment_text(out, r.helo);
        out.push(b' ');
    }
    if let Some(name) = r.rdns {
        out.extend_from_slice(name.as_bytes());
        out.push(b' ');
    }
    write_ip_literal(out, r.ip);
    out.push(b')');
    if let Some(tls) = r.tls {
        out.extend_from_slice(b"\r\n\t(using ");
        out.extend_from_slice(tls.protocol.as_bytes());
        out.extend_from_slice(b" with cipher ");
        out.extend_from_slice(tls.cipher.as_bytes());
        out.push(b')');
    }
    out.extend_from_slice(b"\r\n\tby ");
    out.extend_from_slice(r.hostname.as_bytes());
    out.extend_from_slice(b" (petrel) with ");
    out.extend_from_slice(protocol(r).as_bytes());
    out.extend_from_slice(b" id ");
    out.extend_from_slice(r.id.as_bytes());
    if let Some(rcpt) = r.recipient {
        out.extend_from_slice(b"\r\n\tfor <");
        out.extend_from_slice(rcpt);
        out.push(b'>');
    }
    out.extend_from_slice(b"; ");
    out.extend_from_slice(r.date.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `[192.0.2.7]` or `[IPv6:2001:db8::7]`.
fn write_ip_literal(out: &mut Vec<u8>, ip: IpAddr) {
    // Writing into a Vec cannot fail.
    let _ = match ip {
        IpAddr::V4(ip) => std::io::Write::write_fmt(out, format_args!("[{ip}]")),
        IpAddr::V6(ip) => std::io::Write::write_fmt(out, format_args!("[IPv6:{ip}]")),
    };
}

/// Whether an EHLO argument can stand in the `from` clause as given: a
/// domain name, or an address literal that parses.
fn is_helo_name(helo: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(helo) else {
        return false;
    };
    match text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        Some(literal) => match literal.get(..5) {
            Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => {
                literal[5..].parse::<std::net::Ipv6Addr>().is_ok()
            }
            _ => literal.parse::<std::net::Ipv4Addr>().is_ok(),
        },
        None => super::address::is_domain_name(text.strip_suffix('.').unwrap_or(text)),
    }
}

/// `text` as the inside of an RFC 5322 comment: `(`, `)` and `\` as
/// quoted pairs, bytes outside printable ASCII as `\xNN`.
fn write_comment_text(out: &mut Vec<u8>, text: &[u8]) {
    for &b in text {
        match b {
            b'(' | b')' | b'\\' => out.extend_from_slice(&[b'\\', b]),
            0x21..=0x7e => out.push(b),
            _ => {
                let _ = std::io::Write::write_fmt(out, format_args!("\\x{b:02X}"));
            }
        }
    }
}

/// Length of `Thu, 01 Jan 1970 00:00:00 +0000`.
pub const DATE_LEN: usize = 31;

/// Formats unix seconds as an RFC 5322 date in UTC into `buf`.
pub fn format_date(unix_secs: i64, buf: &mut [u8; DATE_LEN]) -> &str {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let weekday = days.rem_euclid(7) as usize;
    buf.copy_from_slice(b"Thu, 01 Jan 1970 00:00:00 +0000");
    buf[0..3].copy_from_slice(DAYS[weekday]);
    two(&mut buf[5..7], day);
    buf[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    let y = year.clamp(0, 9999);
    two(&mut buf[12..14], y / 100);
    two(&mut buf[14..16], y % 100);
    two(&mut buf[17..19], secs / 3600);
    two(&mut buf[20..22], secs / 60 % 60);
    two(&mut buf[23..25], secs % 60);
    // Only ASCII was written.
    std::str::from_utf8(buf).unwrap_or("Thu, 01 Jan 1970 00:00:00 +0000")
}

fn two(dst: &mut [u8], v: i64) {
    dst[0] = b'0' + (v / 10 % 10) as u8;
    dst[1] = b'0' + (v % 10) as u8;
}

/// Howard Hinnant's days-to-civil algorithm: (year, month 1..=12, day 1..=31).
pub(crate) fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(secs: i64) -> String {
        let mut b = [0u8; DATE_LEN];
        format_date(secs, &mut b).to_string()
    }

    #[test]
    fn dates() {
        assert_eq!(date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(date(1_700_000_000), "Tue, 14 Nov 2023 22:13:20 +0000");
        assert_eq!(date(4_102_444_799), "Thu, 31 Dec 2099 23:59:59 +0000");
        assert_eq!(date(-1), "Wed, 31 Dec 1969 23:59:59 +0000");
    }

    fn info(tls: Option<TlsInfo>, authenticated: bool) -> ReceivedInfo<'static> {
        ReceivedInfo {
            helo: b"client.example",
            rdns: Some("mail.client.example"),
            ip: IpAddr::from([192, 0, 2, 7]),
            hostname: "mx.example.net",
            tls,
            esmtp: true,
            authenticated,
            id: "Q1",
            recipient: Some(b"u@example.net"),
            date: "Tue, 14 Nov 2023 22:13:20 +0000",
        }
    }

    #[test]
    fn an_ehlo_argument_that_is_no_name_cannot_forge_trace_fields() {
        let forged = b"x)\r\n\tby\xc3\xa9;(victim.example";
        for (helo, from, comment) in [
            (&b"client.example"[..], "client.example", ""),
            (b"client.example.", "client.example.", ""),
            (b"[192.0.2.7]", "[192.0.2.7]", ""),
            (b"[IPv6:2001:db8::7]", "[IPv6:2001:db8::7]", ""),
            (b"[192.0.2.300]", "[192.0.2.7]", "helo=[192.0.2.300] "),
            (b"a(b)c;d", "[192.0.2.7]", "helo=a\\(b\\)c;d "),
            (b"back\\slash", "[192.0.2.7]", "helo=back\\\\slash "),
            (
                forged,
                "[192.0.2.7]",
                "helo=x\\)\\x0D\\x0A\\x09by\\xC3\\xA9;\\(victim.example ",
            ),
        ] {
            let mut r = info(None, false);
            r.helo = helo;
            let mut out = Vec::new();
            write_received(&mut out, &r);
            let text = String::from_utf8(out).unwrap_or_default();
            let expected =
                format!("Received: from {from} ({comment}mail.client.example [192.0.2.7])\r\n");
            assert!(text.starts_with(&expected), "{text:?} for {helo:?}");
            let first_line = text.lines().next().unwrap_or_default();
            assert!(first_line.is_ascii(), "{first_line:?}");
            // One comment, balanced: nothing of the client's closes it.
            let unescaped = first_line.replace("\\(", "").replace("\\)", "");
            assert_eq!(unescaped.matches('(').count(), 1, "{first_line}");
            assert_eq!(unescaped.matches(')').count(), 1, "{first_line}");
        }
    }

    #[test]
    fn plain_received() {
        let mut out = Vec::new();
        write_received(&mut out, &info(None, false));
        assert_eq!(
            String::from_utf8(out).unwrap_or_default(),
            "Received: from client.example (mail.client.example [192.0.2.7])\r\n\
             \tby mx.example.net (petrel) with ESMTP id Q1\r\n\
             \tfor <u@example.net>; Tue, 14 Nov 2023 22:13:20 +0000\r\n"
        );
    }

    #[test]
    fn tls_auth_ipv6_received() {
        let tls = TlsInfo {
            protocol: "TLSv1.3",
            cipher: "TLS13_AES_128_GCM_SHA256",
        };
        let mut r = info(Some(tls), true);
        r.ip = "2001:db8::1".parse().unwrap_or(r.ip);
        r.rdns = None;
        r.recipient = None;
        let mut out = Vec::new();
        write_received(&mut out, &r);
        let s = String::from_utf8(out).unwrap_or_default();
        assert!(s.starts_with("Received: from client.example ([IPv6:2001:db8::1])\r\n"));
        assert!(s.contains("\t(using TLSv1.3 with cipher TLS13_AES_128_GCM_SHA256)\r\n"));
        assert!(s.contains("with ESMTPSA id Q1; Tue"));
        r.esmtp = false;
        assert_eq!(protocol(&r), "SMTP");
    }
}
