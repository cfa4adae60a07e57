//! Tests for the DATA and BDAT receivers.

use super::*;
use proptest::prelude::*;

/// Feeds `input` in pieces of `step` octets with a generous `dst`.
fn run(input: &[u8], step: usize, max: u64) -> (Vec<u8>, usize, Option<BodyOutcome>) {
    let mut rx = DataReceiver::new(max);
    let mut out = Vec::new();
    let mut dst = vec![0u8; input.len() + 8];
    let mut pos = 0;
    while pos < input.len() {
        let end = (pos + step.max(1)).min(input.len());
        let mut piece = &input[pos..end];
        while !piece.is_empty() {
            let p = rx.receive(piece, &mut dst);
            out.extend_from_slice(&dst[..p.produced]);
            pos += p.consumed;
            piece = &piece[p.consumed..];
            if p.done {
                return (out, pos, Some(rx.outcome()));
            }
            assert!(p.consumed > 0 || p.produced > 0, "no progress");
        }
    }
    (out, pos, None)
}

fn whole(input: &[u8]) -> (Vec<u8>, usize, Option<BodyOutcome>) {
    run(input, input.len(), u64::MAX)
}

#[test]
fn simple_message() {
    let (out, used, end) = whole(b"Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n");
    assert_eq!(out, b"Subject: x\r\n\r\nhello\r\n");
    assert_eq!(used, 24);
    assert_eq!(end, Some(BodyOutcome::Accepted));
}

#[test]
fn empty_message() {
    let (out, used, end) = whole(b".\r\n");
    assert!(out.is_empty());
    assert_eq!(used, 3);
    assert_eq!(end, Some(BodyOutcome::Accepted));
}

#[test]
fn dot_unstuffing() {
    let (out, _, end) = whole(b"..x\r\n.\r\n");
    assert_eq!(out, b".x\r\n");
    assert_eq!(end, Some(BodyOutcome::Accepted));
    let (out, _, _) = whole(b"a\r\n...\r\n..\r\n.\r\n");
    assert_eq!(out, b"a\r\n..\r\n.\r\n");
    // A dot inside a line is data.
    let (out, _, _) = whole(b"a.b\r\n x.\r\n.\r\n");
    assert_eq!(out, b"a.b\r\n x.\r\n");
}

#[test]
fn terminator_split_at_every_point() {
    let msg = b"line one\r\n..two\r\n.\r\nMAIL FROM:<a@b>\r\n";
    let expect = whole(msg);
    for step in 1..msg.len() {
        assert_eq!(run(msg, step, u64::MAX), expect, "step {step}");
    }
}

#[test]
fn smuggling_sequences_do_not_end_data() {
    for seq in [
        &b"\n.\n"[..],
        b"\r.\r",
        b"\n.\r\n",
        b"\r\n.\n",
        b"\r.\r\n",
        b"\n.\r",
        b"\r\n.\r",
        b"\r\n.\rX",
    ] {
        let mut msg = b"Subject: hi\r\n\r\nbody".to_vec();
        msg.extend_from_slice(seq);
        msg.extend_from_slice(b"MAIL FROM:<evil@example.com>\r\n");
        let (_, used, end) = whole(&msg);
        assert_eq!(end, None, "{seq:?} ended DATA");
        assert_eq!(used, msg.len());
        // The real end then finds the message rejected.
        msg.extend_from_slice(b"\r\n.\r\n");
        let (_, used, end) = whole(&msg);
        assert_eq!(end, Some(BodyOutcome::BareCrLf), "{seq:?}");
        assert_eq!(used, msg.len());
    }
}

#[test]
fn bare_lf_and_cr_flagged() {
    assert_eq!(whole(b"a\nb\r\n.\r\n").2, Some(BodyOutcome::BareCrLf));
    assert_eq!(whole(b"a\rb\r\n.\r\n").2, Some(BodyOutcome::BareCrLf));
    assert_eq!(whole(b"a\r\r\n.\r\n").2, Some(BodyOutcome::BareCrLf));
    assert_eq!(whole(b"\n.\r\n").2, None);
    // After a bare LF the next dot is not at a line start.
    assert_eq!(whole(b".\n.\r\n").2, None);
    assert_eq!(whole(b".\n\r\n.\r\n").2, Some(BodyOutcome::BareCrLf));
}

#[test]
fn size_limit_discards_but_finds_end() {
    let msg = b"0123456789\r\n0123456789\r\n.\r\nNOOP\r\n";
    let (out, used, end) = run(msg, 5, 15);
    assert_eq!(end, Some(BodyOutcome::TooBig));
    assert_eq!(used, msg.len() - 6);
    assert_eq!(out, &msg[..15]);
    // Exactly at the limit is fine.
    let (out, _, end) = run(b"12345\r\n.\r\n", 3, 7);
    assert_eq!(end, Some(BodyOutcome::Accepted));
    assert_eq!(out, b"12345\r\n");
    assert_eq!(run(b"123456\r\n.\r\n", 3, 7).2, Some(BodyOutcome::TooBig));
}

#[test]
fn small_destination_makes_progress() {
    let msg = b"ab\r\n..c\r\n.\r\n";
    let mut rx = DataReceiver::new(u64::MAX);
    let mut out = Vec::new();
    let mut pos = 0;
    let mut dst = [0u8; 1];
    while !rx.is_done() {
        let p = rx.receive(&msg[pos..], &mut dst);
        out.extend_from_slice(&dst[..p.produced]);
        pos += p.consumed;
        assert!(p.consumed + p.produced > 0);
    }
    assert_eq!(out, b"ab\r\n.c\r\n");
    assert_eq!(pos, msg.len());
    // An empty destination is "no room", not an error.
    let mut rx = DataReceiver::new(u64::MAX);
    assert_eq!(rx.receive(b"abc", &mut []), BodyProgress::default());
}

#[test]
fn bdat_counts_and_copies() {
    let mut limit = SizeLimit::new(100);
    let mut rx = BdatReceiver::new(5);
    let mut dst = [0u8; 16];
    let p = rx.receive(b"ab\r\n.", &mut dst, &mut limit);
    assert_eq!(
        p,
        BodyProgress {
            consumed: 5,
            produced: 5,
            done: true
        }
    );
    assert_eq!(&dst[..5], b"ab\r\n.");
    let mut rx = BdatReceiver::new(4);
    let p = rx.receive(b"xy", &mut dst, &mut limit);
    assert_eq!(
        p,
        BodyProgress {
            consumed: 2,
            produced: 2,
            done: false
        }
    );
    let p = rx.receive(b"zwQUIT", &mut dst, &mut limit);
    assert_eq!(
        p,
        BodyProgress {
            consumed: 2,
            produced: 2,
            done: true
        }
    );
    assert_eq!(limit.counted(), 9);
}

#[test]
fn bdat_over_limit_and_discard() {
    let mut limit = SizeLimit::new(3);
    let mut rx = BdatReceiver::new(5);
    let mut dst = [0u8; 16];
    let p = rx.receive(b"12345", &mut dst, &mut limit);
    assert_eq!(
        p,
        BodyProgress {
            consumed: 5,
            produced: 3,
            done: true
        }
    );
    assert!(limit.is_over());
    let mut limit = SizeLimit::new(100);
    let mut rx = BdatReceiver::discarding(3);
    let p = rx.receive(b"abcdef", &mut dst, &mut limit);
    assert_eq!(
        p,
        BodyProgress {
            consumed: 3,
            produced: 0,
            done: true
        }
    );
    assert_eq!(limit.counted(), 0);
}

proptest! {
    #[test]
    fn split_anywhere_same_result(
        body in proptest::collection::vec(prop_oneof![
            Just(b'\r'), Just(b'\n'), Just(b'.'), Just(b'a'), any::<u8>()
        ], 0..200),
        step in 1usize..20,
        max in 0u64..300,
    ) {
        let mut msg = body;
        msg.extend_from_slice(b"\r\n.\r\n");
        let one = run(&msg, msg.len(), max);
        prop_assert!(one.2.is_some());
        prop_assert_eq!(run(&msg, step, max), one);
    }

    #[test]
    fn end_only_after_crlf_dot_crlf(
        body in proptest::collection::vec(prop_oneof![
            Just(b'\r'), Just(b'\n'), Just(b'.'), Just(b'x')
        ], 0..100),
    ) {
        let (_, used, end) = whole(&body);
        if end.is_some() {
            let consumed = &body[..used];
            prop_assert!(consumed.ends_with(b"\r\n.\r\n") || consumed == b".\r\n");
            // No earlier complete terminator exists.
            let first = consumed.windows(5).position(|w| w == b"\r\n.\r\n");
            prop_assert!(first.is_none_or(|p| p + 5 == used) || consumed.starts_with(b".\r\n"));
        } else {
            prop_assert!(!body.starts_with(b".\r\n"));
            prop_assert!(!body.windows(5).any(|w| w == b"\r\n.\r\n"));
        }
    }
}
