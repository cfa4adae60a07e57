//! The body encoder against the server's DATA receiver: whatever the body
//! and however it is cut into chunks, the receiver gets it back with line
//! ends made CRLF, and the stream never holds a bare CR or LF.

use super::*;
use crate::smtp::data::{BodyOutcome, DataReceiver};
use proptest::prelude::*;

/// What the receiver should see: every CRLF, lone CR and lone LF becomes
/// CRLF, and a last line without an end gets one.
fn normalized(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 2);
    let mut i = 0;
    while let Some(&b) = body.get(i) {
        match b {
            b'\r' if body.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            _ => out.push(b),
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Encodes `body` cut at `cuts` (positions, any order).
fn encode(body: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut points: Vec<usize> = cuts.iter().map(|&c| c % (body.len() + 1)).collect();
    points.push(0);
    points.push(body.len());
    points.sort_unstable();
    let mut e = BodyEncoder::new();
    let mut out = Vec::new();
    for w in points.windows(2) {
        e.encode(&body[w[0]..w[1]], &mut out);
    }
    e.finish(&mut out);
    out
}

fn has_bare_cr_or_lf(s: &[u8]) -> bool {
    s.iter().enumerate().any(|(i, &b)| match b {
        b'\r' => s.get(i + 1) != Some(&b'\n'),
        b'\n' => i == 0 || s[i - 1] != b'\r',
        _ => false,
    })
}

fn receive(stream: &[u8]) -> (Vec<u8>, usize, bool, BodyOutcome) {
    let mut rx = DataReceiver::new(u64::MAX);
    let mut dst = vec![0u8; stream.len()];
    let p = rx.receive(stream, &mut dst);
    dst.truncate(p.produced);
    (dst, p.consumed, p.done, rx.outcome())
}

fn body_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        Just(b'.'),
        Just(b'\r'),
        Just(b'\n'),
        Just(b'a'),
        Just(0xe9u8),
        any::<u8>(),
    ];
    proptest::collection::vec(byte, 0..200)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn server_receiver_gets_the_body_back(
        body in body_bytes(),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let stream = encode(&body, &cuts);
        prop_assert!(!has_bare_cr_or_lf(&stream));
        let (got, consumed, done, outcome) = receive(&stream);
        prop_assert!(done, "end of data not found");
        prop_assert_eq!(consumed, stream.len(), "data ended early");
        prop_assert_eq!(outcome, BodyOutcome::Accepted);
        prop_assert_eq!(got, normalized(&body));
    }

    #[test]
    fn chunking_does_not_change_the_stream(
        body in body_bytes(),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        prop_assert_eq!(encode(&body, &cuts), encode(&body, &[]));
    }
}

#[test]
fn every_single_split_point() {
    let body = b".a\r\n.\r\n\r.\n.\r\r\n..x\n";
    let whole = encode(body, &[]);
    for cut in 0..=body.len() {
        assert_eq!(encode(body, &[cut]), whole, "cut at {cut}");
    }
    let (got, _, done, _) = receive(&whole);
    assert!(done);
    assert_eq!(got, normalized(body));
}

#[test]
fn body_through_the_client_is_the_encoder_output() {
    let mut h = H::ready(EHLO_PIPELINING);
    let r = [rcpt("a@x.test")];
    h.start(&tx(&r));
    h.feed(b"250 ok\r\n250 ok\r\n354 go\r\n");
    let sent = h.body(&[b"a\r", b"\n.", b"b\n", b"."]);
    assert_eq!(sent, "a\r\n..b\r\n..\r\n.\r\n");
}
