//! Replies from the remote server: framing of (multi-line) replies, code
//! validation, enhanced status codes (RFC 3463), and the owned record kept
//! for bounces and accounting.
//!
//! Owns: deciding whether bytes from the server are a reply, not yet a
//! reply, or garbage.
//! Must never: accept a reply whose lines disagree on the code, or wait
//! without limit for a line or a reply that never ends (both are bounded,
//! so a hostile server cannot grow our buffers).

use std::fmt;

/// Longest reply line accepted; RFC 5321 4.5.3.1.5 says 512, real servers
/// send a little more, so be generous but bounded.
pub const MAX_REPLY_LINE: usize = 4096;
/// Most lines in one reply (an EHLO reply has a dozen).
pub const MAX_REPLY_LINES: usize = 128;
/// Most bytes of a reply's text kept once it has been acted on (every
/// reply but a successful EHLO's, which is read for its extensions): what
/// status records, notices, logs and accounting records carry. A server
/// may send 128 lines of 4 KiB; no diagnostic needs more than this.
pub const MAX_KEPT_REPLY: usize = 1024;
/// Ends a reply text cut at [`MAX_KEPT_REPLY`].
pub const CUT_MARK: &[u8] = b" [...]";

/// `class.subject.detail` (RFC 3463).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnhancedStatus {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// One reply, owned: it outlives the receive buffer and goes into bounces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerReply {
    pub code: u16,
    /// From the first line, when it carries one of the code's class.
    pub status: Option<EnhancedStatus>,
    /// Remote replies: every line verbatim (code included), joined by CRLF,
    /// without the final CRLF. Local replies: the reason alone.
    pub text: Vec<u8>,
    /// Made up here (timeout, connection lost, missing extension), not sent
    /// by the server.
    pub local: bool,
}

impl ServerReply {
    pub fn local(code: u16, status: (u8, u16, u16), reason: &str) -> Self {
        ServerReply {
            code,
            status: Some(EnhancedStatus {
                class: status.0,
                subject: status.1,
                detail: status.2,
            }),
            text: reason.as_bytes().to_vec(),
            local: true,
        }
    }

    /// 2, 3, 4 or 5.
    pub fn class(&self) -> u16 {
        self.code / 100
    }

    pub fn is_positive(&self) -> bool {
        self.class() == 2
    }

    /// The reply with its text cut to at most [`MAX_KEPT_REPLY`] bytes, at
    /// the start of a UTF-8 character and before a line break, and ending
    /// with [`CUT_MARK`] when anything was cut.
    pub fn bounded(mut self) -> Self {
        if self.text.len() > MAX_KEPT_REPLY {
            let mut end = MAX_KEPT_REPLY - CUT_MARK.len();
            // Back to the first byte of a character (at most 3 steps).
            while end > 0 && self.text[end] & 0xC0 == 0x80 {
                end -= 1;
            }
            while end > 0 && matches!(self.text[end - 1], b'\r' | b'\n') {
                end -= 1;
            }
            self.text.truncate(end);
            self.text.extend_from_slice(CUT_MARK);
        }
        self
    }

    /// The text as one log line: see [`Escaped`].
    pub fn logged(&self) -> Escaped<'_> {
        Escaped(&self.text)
    }

    /// The lines of the reply (one for a local reply).
    pub fn lines(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.text
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
    }
}

/// Bytes from a remote server as text for one log line: CR and LF as `\r`
/// and `\n`, a backslash as `\\`, other control characters and bytes
/// that are not UTF-8 as `\xNN`; so a server cannot forge log lines or
/// fields.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            // Runs of characters that need no escape are written whole.
            let text = chunk.valid();
            let mut from = 0;
            for (at, c) in text.char_indices() {
                let escape = match c {
                    '\r' => "\\r",
                    '\n' => "\\n",
                    '\\' => "\\\\",
                    c if c.is_control() => "",
                    _ => continue,
                };
                f.write_str(&text[from..at])?;
                from = at + c.len_utf8();
                if escape.is_empty() {
                    for b in c.encode_utf8(&mut [0; 4]).bytes() {
                        write!(f, "\\x{b:02x}")?;
                    }
                } else {
                    f.write_str(escape)?;
                }
            }
            f.write_str(&text[from..])?;
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
pub(crate) enum Parsed {
    /// More input is needed.
    Incomplete,
    /// Not an SMTP reply: the connection cannot be trusted any more.
    Malformed,
    Reply {
        len: usize,
        reply: ServerReply,
    },
}

/// Frames the first reply in `buf`. Lines end with LF; a CR before it is
/// dropped (servers are strict about CRLF, but a lone LF from a server
/// harms nothing and is common enough to accept).
pub(crate) fn parse(buf: &[u8]) -> Parsed {
    let mut pos = 0;
    let mut code = None;
    for _ in 0..MAX_REPLY_LINES {
        let rest = buf.get(pos..).unwrap_or(&[]);
        let window = &rest[..rest.len().min(MAX_REPLY_LINE)];
        let Some(nl) = memchr::memchr(b'\n', window) else {
            return if rest.len() >= MAX_REPLY_LINE {
                Parsed::Malformed
            } else {
                Parsed::Incomplete
            };
        };
        let line = strip_cr(&rest[..nl]);
        let Some((c, last)) = line_code(line) else {
            return Parsed::Malformed;
        };
        if code.is_some_and(|prev| prev != c) {
            return Parsed::Malformed;
        }
        code = Some(c);
        pos += nl + 1;
        if last {
            return Parsed::Reply {
                len: pos,
                reply: build(c, &buf[..pos]),
            };
        }
    }
    Parsed::Malformed
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The code of one line and whether it is the last line of the reply.
/// RFC 5321 4.2: codes are 2xx to 5xx with a second digit of 0 to 5.
fn line_code(line: &[u8]) -> Option<(u16, bool)> {
    let d = line.get(..3)?;
    if !(b'2'..=b'5').contains(&d[0]) || !(b'0'..=b'5').contains(&d[1]) || !d[2].is_ascii_digit() {
        return None;
    }
    let code = d.iter().fold(0u16, |a, &b| a * 10 + u16::from(b - b'0'));
    match line.get(3) {
        // RFC 5321 4.2.1 allows a bare code as the last line.
        None | Some(b' ') => Some((code, true)),
        Some(b'-') => Some((code, false)),
        Some(_) => None,
    }
}

fn build(code: u16, raw: &[u8]) -> ServerReply {
    let mut text = Vec::with_capacity(raw.len());
    for (i, line) in raw
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        if i > 0 {
            text.extend_from_slice(b"\r\n");
        }
        text.extend_from_slice(strip_cr(line));
    }
    let first = text.split(|&b| b == b'\r').next().unwrap_or(&[]);
    let status = parse_status(first.get(4..).unwrap_or(&[]), code / 100);
    ServerReply {
        code,
        status,
        text,
        local: false,
    }
}

/// An enhanced status at the start of `text`, if its class matches the
/// reply's (RFC 2034 3: otherwise it is not one).
fn parse_status(text: &[u8], class: u16) -> Option<EnhancedStatus> {
    let word = text.split(|&b| b == b' ').next()?;
    EnhancedStatus::parse(word).filter(|status| u16::from(status.class) == class)
}

impl EnhancedStatus {
    /// `class.subject.detail` and nothing else (RFC 3463): a class of 2, 4
    /// or 5, a subject and a detail of one to three digits.
    pub fn parse(word: &[u8]) -> Option<EnhancedStatus> {
        let mut parts = word.split(|&b| b == b'.');
        let class = number(parts.next()?, 1)?;
        let subject = number(parts.next()?, 3)?;
        let detail = number(parts.next()?, 3)?;
        if parts.next().is_some() || !matches!(class, 2 | 4 | 5) {
            return None;
        }
        Some(EnhancedStatus {
            class: class as u8,
            subject,
            detail,
        })
    }
}

fn number(digits: &[u8], max_len: usize) -> Option<u16> {
    if digits.is_empty() || digits.len() > max_len || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0u16, |a, &b| a * 10 + u16::from(b - b'0')),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(buf: &[u8]) -> (usize, ServerReply) {
        match parse(buf) {
            Parsed::Reply { len, reply } => (len, reply),
            other => panic!("not a reply: {other:?}"),
        }
    }

    #[test]
    fn single_line_with_status() {
        let (len, r) = reply(b"550 5.1.1 No such user\r\nrest");
        assert_eq!(len, 24);
        assert_eq!(r.code, 550);
        assert_eq!(r.status.map(|s| s.to_string()), Some("5.1.1".into()));
        assert_eq!(r.text, b"550 5.1.1 No such user");
        assert!(!r.local);
    }

    #[test]
    fn multi_line_kept_verbatim() {
        let (len, r) = reply(b"250-mx.example\r\n250-SIZE 10\r\n250 DSN\r\n");
        assert_eq!(len, 38);
        assert_eq!(r.text, b"250-mx.example\r\n250-SIZE 10\r\n250 DSN");
        assert_eq!(r.lines().count(), 3);
        assert_eq!(r.status, None);
    }

    #[test]
    fn incomplete_until_last_line() {
        assert!(matches!(parse(b"250-a\r\n250"), Parsed::Incomplete));
        assert!(matches!(parse(b"250-a\r\n"), Parsed::Incomplete));
        assert!(matches!(parse(b""), Parsed::Incomplete));
        assert!(matches!(parse(b"25"), Parsed::Incomplete));
    }

    #[test]
    fn malformed_replies() {
        for bad in [
            &b"hello\r\n"[..],
            b"250-a\r\n251 b\r\n",
            b"650 x\r\n",
            b"190 x\r\n",
            b"260 x\r\n",
            b"25x y\r\n",
            b"250x\r\n",
        ] {
            assert!(matches!(parse(bad), Parsed::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn limits_on_line_and_lines() {
        let long = vec![b'a'; MAX_REPLY_LINE + 1];
        assert!(matches!(parse(&long), Parsed::Malformed));
        let many = b"250-x\r\n".repeat(MAX_REPLY_LINES + 1);
        assert!(matches!(parse(&many), Parsed::Malformed));
    }

    #[test]
    fn status_class_must_match() {
        assert_eq!(reply(b"450 5.1.1 x\r\n").1.status, None);
        assert_eq!(reply(b"250 2.1.5\r\n").1.status.map(|s| s.detail), Some(5));
        assert_eq!(reply(b"250 2.1000.5 x\r\n").1.status, None);
        assert_eq!(reply(b"250\r\n").1.text, b"250");
    }

    #[test]
    fn a_long_reply_is_cut_at_a_character_and_marked() {
        // "é" is two bytes: the cut must not split one.
        let mut raw = b"550-".to_vec();
        raw.extend("é".repeat(600).as_bytes());
        raw.extend_from_slice(b"\r\n550 end\r\n");
        let r = reply(&raw).1.bounded();
        assert!(r.text.len() <= MAX_KEPT_REPLY, "{}", r.text.len());
        assert!(r.text.ends_with(CUT_MARK));
        let kept = &r.text[..r.text.len() - CUT_MARK.len()];
        let kept = std::str::from_utf8(kept).expect("cut at a character");
        assert!(kept.starts_with("550-éé") && kept.ends_with('é'), "{kept}");
        // A short one is left alone.
        let short = reply(b"550 5.1.1 no\r\n").1;
        assert_eq!(short.clone().bounded(), short);
    }

    #[test]
    fn a_cut_never_leaves_half_a_line_break() {
        // Lines of 509 bytes with their CRLF: the cut falls right after
        // the second line's CRLF, which must go too.
        let line = format!("451-{}\r\n", "a".repeat(503));
        let mut raw = line.repeat(3).into_bytes();
        raw.extend_from_slice(b"451 end\r\n");
        let text = reply(&raw).1.bounded().text;
        assert!(text.len() <= MAX_KEPT_REPLY);
        let kept = &text[..text.len() - CUT_MARK.len()];
        assert_eq!(
            kept.len(),
            2 * 509 - 2,
            "{:?}",
            String::from_utf8_lossy(kept)
        );
        assert!(kept.ends_with(b"aaaa"));
    }

    #[test]
    fn logged_text_has_no_control_characters() {
        let r = reply(b"550-a\\b\t\x1b[31m\xff\r\n550 \xc3\xa9 end\r\n").1;
        assert_eq!(
            r.logged().to_string(),
            "550-a\\\\b\\x09\\x1b[31m\\xff\\r\\n550 é end"
        );
        // A two-byte control character, and text on both sides of each.
        let r = reply("451 a\u{85}b\\c é\r\n".as_bytes()).1;
        assert_eq!(r.logged().to_string(), "451 a\\xc2\\x85b\\\\c é");
    }

    #[test]
    fn bare_lf_accepted() {
        let (len, r) = reply(b"220 hi\n");
        assert_eq!((len, r.code), (7, 220));
    }
}
