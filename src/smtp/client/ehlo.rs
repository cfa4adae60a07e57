//! The service extensions a server lists in its EHLO reply (RFC 5321 4.1.1.1).
//!
//! Owns: turning EHLO reply lines into the set of extensions we act on.
//! Must never: fail on an extension it does not know (servers list many),
//! or trust anything before the reply to the latest EHLO (after STARTTLS
//! the list starts over).

use super::reply::ServerReply;

/// What the server offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Extensions {
    pub pipelining: bool,
    /// `SIZE n`; `Some(0)` means offered without a limit (RFC 1870).
    pub size: Option<u64>,
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
    pub starttls: bool,
    pub chunking: bool,
    pub binary_mime: bool,
    pub dsn: bool,
    pub enhanced_status_codes: bool,
}

impl Extensions {
    /// Reads the lines after the greeting line of an EHLO reply.
    pub fn parse(reply: &ServerReply) -> Self {
        let mut ext = Extensions::default();
        for line in reply.lines().skip(1) {
            let mut words = line
                .get(4..)
                .unwrap_or(&[])
                .split(|&b| b == b' ')
                .filter(|w| !w.is_empty());
            let Some(keyword) = words.next() else {
                continue;
            };
            ext.set(keyword, words.next());
        }
        ext
    }

    fn set(&mut self, keyword: &[u8], arg: Option<&[u8]>) {
        let is = |name: &[u8]| keyword.eq_ignore_ascii_case(name);
        if is(b"PIPELINING") {
            self.pipelining = true;
        } else if is(b"SIZE") {
            // A malformed limit is read as "no limit announced": the server
            // will still refuse what it cannot take, with a reply we record.
            self.size = Some(arg.and_then(parse_u64).unwrap_or(0));
        } else if is(b"8BITMIME") {
            self.eight_bit_mime = true;
        } else if is(b"SMTPUTF8") {
            self.smtputf8 = true;
        } else if is(b"STARTTLS") {
            self.starttls = true;
        } else if is(b"CHUNKING") {
            self.chunking = true;
        } else if is(b"BINARYMIME") {
            self.binary_mime = true;
        } else if is(b"DSN") {
            self.dsn = true;
        } else if is(b"ENHANCEDSTATUSCODES") {
            self.enhanced_status_codes = true;
        }
    }
}

fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0u64, |a, &d| {
        a.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ehlo(text: &[u8]) -> Extensions {
        let reply = ServerReply {
            code: 250,
            status: None,
            text: text.to_vec(),
            local: false,
        };
        Extensions::parse(&reply)
    }

    #[test]
    fn all_known_extensions() {
        let e = ehlo(
            b"250-mx.example greets you\r\n250-pipelining\r\n250-SIZE 1000\r\n\
              250-8BITMIME\r\n250-SMTPUTF8\r\n250-STARTTLS\r\n250-CHUNKING\r\n\
              250-BINARYMIME\r\n250-DSN\r\n250-X-UNKNOWN foo\r\n250 ENHANCEDSTATUSCODES",
        );
        assert_eq!(
            e,
            Extensions {
                pipelining: true,
                size: Some(1000),
                eight_bit_mime: true,
                smtputf8: true,
                starttls: true,
                chunking: true,
                binary_mime: true,
                dsn: true,
                enhanced_status_codes: true,
            }
        );
    }

    #[test]
    fn greeting_line_is_not_an_extension() {
        let e = ehlo(b"250-PIPELINING\r\n250 SIZE");
        assert!(!e.pipelining);
        assert_eq!(e.size, Some(0));
    }

    #[test]
    fn bad_size_means_no_limit() {
        assert_eq!(
            ehlo(b"250-h\r\n250 SIZE 99999999999999999999999").size,
            Some(0)
        );
        assert_eq!(ehlo(b"250-h\r\n250 SIZE x").size, Some(0));
        assert_eq!(ehlo(b"250 h").size, None);
    }
}
