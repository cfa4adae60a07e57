//! Fuzzing harness for the SMTP client's reply parser, shared by the
//! cargo-fuzz target `client_reply` (a thin shim) and the unit tests, so it
//! builds and runs on stable.
//!
//! Must never: be used by the daemon; it panics on purpose when an
//! invariant breaks, which is how a fuzzer reports a finding.

use super::reply::{parse, Parsed};
use super::Extensions;

/// Frames every reply in `data`: each one found is a valid code with its
/// whole text inside the input, framing it again alone gives the same
/// reply, no shorter input frames it, and the EHLO reading of it never
/// panics.
pub fn client_reply(data: &[u8]) {
    let mut rest = data;
    // Each reply takes at least one byte; the bound is a backstop.
    for _ in 0..=data.len() {
        let (len, reply) = match parse(rest) {
            Parsed::Reply { len, reply } => (len, reply),
            Parsed::Incomplete | Parsed::Malformed => return,
        };
        assert!(
            len > 0 && len <= rest.len(),
            "reply length outside the input"
        );
        assert!((200..=559).contains(&reply.code), "code {}", reply.code);
        // Lines are joined by CRLF, so at most twice the framed bytes.
        assert!(
            reply.text.len() <= 2 * len,
            "text far longer than the reply"
        );
        if let Some(st) = reply.status {
            assert_eq!(u16::from(st.class), reply.code / 100);
        }
        match parse(&rest[..len]) {
            Parsed::Reply {
                len: again,
                reply: r,
            } => {
                assert_eq!(again, len);
                assert_eq!(r.text, reply.text);
            }
            other => panic!("the reply alone framed as {other:?}"),
        }
        assert!(
            !matches!(parse(&rest[..len - 1]), Parsed::Reply { .. }),
            "a cut reply was framed whole"
        );
        let _ = Extensions::parse(&reply);
        rest = &rest[len..];
    }
    panic!("more replies than bytes");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harness_runs_over_seeded_inputs() {
        let words: [&[u8]; 10] = [
            b"250",
            b"-",
            b" ",
            b"\r\n",
            b"\n",
            b"2.0.0",
            b"PIPELINING",
            b"SIZE 10",
            b"451 4.3.0",
            b"x",
        ];
        for data in crate::smtp::fuzzing::seeded_inputs(0x5a7, &words, 24, 400) {
            client_reply(&data);
        }
        client_reply(b"250-mx.test\r\n250-SIZE 100\r\n250 8BITMIME\r\n554 5.7.1 no\r\n");
    }
}
