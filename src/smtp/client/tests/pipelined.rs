//! Transactions pipelined behind the previous body (RFC 2920 3.1): one
//! write for the end of a body and the next MAIL/RCPT/DATA, events in
//! order, and what a failure does to the one not yet begun.

use super::*;
use OutcomeKind::{Deferred, Delivered, Failed};

const MAIL: &str = "MAIL FROM:<s@example.org> SIZE=100\r\n";

/// A client that has delivered one message and is sending a second body.
fn in_second_body(r: &[TxRecipient<'_>]) -> H {
    let mut h = H::ready(EHLO_PIPELINING);
    for _ in 0..2 {
        h.start(&tx(r));
        h.feed(b"250 ok\r\n250 ok\r\n354 go\r\n");
        assert_eq!(h.take_events(), [Event::SendBody]);
        if h.c.completed_any {
            break;
        }
        h.body(&[b"x\r\n"]);
        h.feed(b"250 ok\r\n");
        assert_eq!(h.take_events(), [Event::TransactionDone]);
        assert_eq!(h.verdicts(), [(Delivered, 250)]);
    }
    h
}

/// The second body has ended and a third transaction (to the same
/// recipient) is pipelined behind it.
fn one_pipelined() -> H {
    let r = [rcpt("a@x.test")];
    let mut h = in_second_body(&r);
    h.body(&[b"two\r\n"]);
    assert_eq!(h.c.pipeline_transaction(&tx(&r), &mut h.out), Ok(true));
    h
}

#[test]
fn the_next_commands_follow_the_body_in_one_write() {
    let r = [rcpt("a@x.test")];
    let mut h = in_second_body(&r);
    let r2 = [rcpt("b@x.test"), rcpt("c@x.test")];
    assert_eq!(h.c.encode_body(b"two\r\n", 0, &mut h.out), Ok(()));
    assert_eq!(h.c.finish_body(0, &mut h.out), Ok(()));
    assert_eq!(h.c.pipeline_transaction(&tx(&r2), &mut h.out), Ok(true));
    assert_eq!(
        h.sent(),
        format!("two\r\n.\r\n{MAIL}RCPT TO:<b@x.test>\r\nRCPT TO:<c@x.test>\r\nDATA\r\n")
    );
    // Only one may wait behind the current body.
    assert_eq!(h.c.pipeline_transaction(&tx(&r2), &mut h.out), Ok(false));
    assert!(h.out.is_empty());

    // The end-of-data reply ends the second message; the third's replies
    // follow in the same read.
    h.feed(b"250 2.0.0 two\r\n250 ok\r\n250 ok\r\n550 5.1.1 no c\r\n354 go\r\n");
    assert_eq!(h.take_events(), [Event::TransactionDone, Event::SendBody]);
    assert_eq!(h.verdicts(), [(Delivered, 250)]);
    assert!(!h.c.is_ready());
    h.body(&[b"three\r\n"]);
    h.feed(b"250 2.0.0 three\r\n");
    assert_eq!(h.take_events(), [Event::TransactionDone]);
    assert_eq!(h.verdicts(), [(Delivered, 250), (Failed, 550)]);
    assert!(h.c.is_ready());
    assert!(!h.c.dropped_pipelined());
}

#[test]
fn a_pipelined_transaction_refused_at_mail_ends_in_the_same_read() {
    let mut h = one_pipelined();
    h.sent();
    h.feed(b"250 ok\r\n550 5.7.1 sender refused\r\n503 5.5.1 no\r\n503 5.5.1 no\r\n");
    // One event per transaction, outcomes taken in the same order.
    assert_eq!(
        h.take_events(),
        [Event::TransactionDone, Event::TransactionDone]
    );
    assert_eq!(h.verdicts(), [(Delivered, 250)]);
    assert_eq!(h.verdicts(), [(Failed, 550)]);
    assert!(h.c.take_outcomes().is_empty());
    assert!(h.c.is_ready());
    // The server holds a MAIL state that never ended: RSET first.
    assert!(h
        .start(&tx(&[rcpt("a@x.test")]))
        .starts_with("RSET\r\nMAIL FROM:"));
}

#[test]
fn a_connection_lost_before_the_verdict_drops_the_pipelined_one() {
    let mut h = one_pipelined();
    h.c.connection_lost(0);
    assert_eq!(h.take_events(), [Event::TransactionDone, Event::Closed]);
    assert_eq!(h.verdicts(), [(Deferred, 451)]);
    // The third message got no outcome: it never began.
    assert!(h.c.take_outcomes().is_empty());
    assert!(h.c.dropped_pipelined());
}

#[test]
fn a_failure_after_the_verdict_defers_the_promoted_one() {
    let mut h = one_pipelined();
    h.feed(b"250 ok\r\n421 4.3.2 closing\r\n");
    assert_eq!(
        h.take_events(),
        [
            Event::TransactionDone,
            Event::TransactionDone,
            Event::Closed
        ]
    );
    assert_eq!(h.verdicts(), [(Delivered, 250)]);
    assert_eq!(h.verdicts(), [(Deferred, 421)]);
    assert!(!h.c.dropped_pipelined());
}

#[test]
fn not_before_a_first_transaction_ended_nor_without_pipelining() {
    let r = [rcpt("a@x.test")];
    // First transaction on the connection: a failure must leave one
    // message in hand for the next host.
    let mut h = H::ready(EHLO_PIPELINING);
    h.start(&tx(&r));
    h.feed(b"250 ok\r\n250 ok\r\n354 go\r\n");
    h.body(&[b"one\r\n"]);
    assert_eq!(h.c.pipeline_transaction(&tx(&r), &mut h.out), Ok(false));
    assert!(h.out.is_empty());

    // Lock-step server.
    let mut h = H::ready(EHLO_LOCKSTEP);
    for _ in 0..2 {
        h.start(&tx(&r));
        h.feed(b"250 ok\r\n");
        h.feed(b"250 ok\r\n");
        h.feed(b"354 go\r\n");
        h.body(&[b"x\r\n"]);
        assert_eq!(h.c.pipeline_transaction(&tx(&r), &mut h.out), Ok(false));
        h.feed(b"250 ok\r\n");
        h.take_events();
        h.verdicts();
    }

    // Not while the body is still being fed.
    let mut h = in_second_body(&r);
    assert_eq!(h.c.pipeline_transaction(&tx(&r), &mut h.out), Ok(false));
}

#[test]
fn an_envelope_decided_here_is_not_pipelined() {
    let r = [rcpt("a@x.test")];
    let mut h = in_second_body(&r);
    h.body(&[b"two\r\n"]);
    let mut big = tx(&r);
    big.size = 5000; // over SIZE 1000
    assert_eq!(h.c.pipeline_transaction(&big, &mut h.out), Ok(false));
    let bad = [rcpt("a@x.test\r\nRSET")];
    assert_eq!(
        h.c.pipeline_transaction(&tx(&bad), &mut h.out),
        Err(Misuse::BadEnvelope)
    );
    assert!(h.out.is_empty());
}

#[test]
fn the_end_of_data_timeout_still_holds() {
    let r = [rcpt("a@x.test")];
    let mut h = in_second_body(&r);
    h.body(&[b"two\r\n"]);
    let deadline = h.c.next_deadline().expect("waits for the verdict");
    assert_eq!(h.c.pipeline_transaction(&tx(&r), &mut h.out), Ok(true));
    assert_eq!(h.c.next_deadline(), Some(deadline));
    h.c.handle_timeout(deadline);
    assert_eq!(h.take_events(), [Event::TransactionDone, Event::Closed]);
    assert_eq!(h.verdicts(), [(Deferred, 451)]);
    assert!(h.c.dropped_pipelined());
}
