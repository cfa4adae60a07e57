//! LMTP mode (RFC 2033): LHLO, no HELO fallback, and one reply per
//! accepted recipient after the data, each deciding its recipient.

use super::*;
use OutcomeKind::{Deferred, Delivered, Failed};

const LHLO_REPLY: &[u8] = b"250-lmtp.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n\
250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250 SMTPUTF8\r\n";

fn lmtp() -> H {
    let mut h = H::with(ClientConfig {
        lmtp: true,
        ..H::config(TlsPolicy::Disabled)
    });
    assert_eq!(h.feed(b"220 lmtp.test LMTP\r\n"), "LHLO client.test\r\n");
    h.feed(LHLO_REPLY);
    assert_eq!(h.take_events(), [Event::Ready]);
    h
}

/// Sends a transaction to `r`, every RCPT accepted, up to the end of its
/// body.
fn sent_to_all(h: &mut H, r: &[TxRecipient<'_>]) {
    h.start(&tx(r));
    let accepted = "250 ok\r\n".repeat(r.len() + 1) + "354 go\r\n";
    h.feed(accepted.as_bytes());
    assert_eq!(h.take_events(), [Event::SendBody]);
    h.body(&[b"x\r\n"]);
}

#[test]
fn two_accepted_recipients_get_a_verdict_each_in_rcpt_order() {
    let mut h = lmtp();
    let r = [rcpt("a@x.test"), rcpt("b@x.test")];
    assert_eq!(
        h.start(&tx(&r)),
        "MAIL FROM:<s@example.org>\r\nRCPT TO:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n"
    );
    h.feed(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n250 2.1.5 ok\r\n354 go\r\n");
    assert_eq!(h.take_events(), [Event::SendBody]);
    // CHUNKING is offered, but an LMTP body goes with DATA.
    assert_eq!(
        h.body(&[b"Subject: x\r\n\r\nhi\r\n"]),
        "Subject: x\r\n\r\nhi\r\n.\r\n"
    );
    // The first verdict alone decides nothing yet.
    h.feed(b"250 2.0.0 <a@x.test> Saved\r\n");
    assert!(h.take_events().is_empty());
    assert!(!h.c.is_ready());
    h.feed(b"452 4.2.2 <b@x.test> Mailbox is full\r\n");
    assert_eq!(h.take_events(), [Event::TransactionDone]);
    let o = h.c.take_outcomes();
    assert_eq!(
        o.iter().map(|x| (x.kind, x.reply.code)).collect::<Vec<_>>(),
        [(Delivered, 250), (Deferred, 452)]
    );
    assert_eq!(o[1].reply.text, b"452 4.2.2 <b@x.test> Mailbox is full");
    // The server holds no transaction: the next one needs no RSET.
    assert!(h.c.is_ready());
    let r = [rcpt("c@x.test")];
    assert!(h.start(&tx(&r)).starts_with("MAIL FROM:"));
}

#[test]
fn a_permanent_verdict_fails_only_its_recipient() {
    let mut h = lmtp();
    let r = [rcpt("a@x.test"), rcpt("b@x.test")];
    sent_to_all(&mut h, &r);
    h.feed(b"552 5.2.2 <a@x.test> Quota exceeded\r\n250 2.0.0 <b@x.test> Saved\r\n");
    assert_eq!(h.take_events(), [Event::TransactionDone]);
    assert_eq!(h.verdicts(), [(Failed, 552), (Delivered, 250)]);
}

#[test]
fn only_recipients_accepted_at_rcpt_get_a_reply_after_the_data() {
    let mut h = lmtp();
    let r = [rcpt("a@x.test"), rcpt("nobody@x.test"), rcpt("c@x.test")];
    h.start(&tx(&r));
    h.feed(b"250 ok\r\n250 ok\r\n550 5.1.1 unknown\r\n250 ok\r\n354 go\r\n");
    h.take_events();
    h.body(&[b"x\r\n"]);
    // Two replies, for a and c.
    h.feed(b"250 2.0.0 a saved\r\n");
    assert!(h.take_events().is_empty());
    h.feed(b"451 4.3.0 c: temporary failure\r\n");
    assert_eq!(h.take_events(), [Event::TransactionDone]);
    assert_eq!(
        h.verdicts(),
        [(Delivered, 250), (Failed, 550), (Deferred, 451)]
    );
}

#[test]
fn a_lost_connection_between_the_replies_keeps_the_verdicts_given() {
    let mut h = lmtp();
    let r = [rcpt("a@x.test"), rcpt("b@x.test")];
    sent_to_all(&mut h, &r);
    h.feed(b"250 2.0.0 a saved\r\n");
    h.c.connection_lost(h.now);
    assert_eq!(h.take_events(), [Event::TryNextHost]);
    let o = h.c.take_outcomes();
    assert_eq!(o[0].kind, Delivered);
    assert_eq!(o[1].kind, Deferred);
    assert_eq!(
        String::from_utf8_lossy(&o[1].reply.text),
        "connection lost after end of data"
    );
}

#[test]
fn lhlo_refused_is_a_failed_host_not_a_helo() {
    let mut h = H::with(ClientConfig {
        lmtp: true,
        ..H::config(TlsPolicy::Disabled)
    });
    h.feed(b"220 lmtp.test\r\n");
    assert_eq!(h.feed(b"500 5.5.1 what\r\n"), "QUIT\r\n");
    assert_eq!(h.take_events(), [Event::TryNextHost]);
    assert_eq!(h.c.failure().map(|r| r.code), Some(500));
}

#[test]
fn a_pipelined_next_message_waits_behind_every_verdict() {
    let mut h = lmtp();
    let r = [rcpt("a@x.test"), rcpt("b@x.test")];
    sent_to_all(&mut h, &r);
    h.feed(b"250 a\r\n250 b\r\n");
    assert_eq!(h.take_events(), [Event::TransactionDone]);
    h.c.take_outcomes();
    // A second message, its commands behind the body.
    let r2 = [rcpt("c@x.test")];
    h.start(&tx(&r2));
    h.feed(b"250 ok\r\n250 ok\r\n354 go\r\n");
    h.take_events();
    h.body(&[b"y\r\n"]);
    let r3 = [rcpt("d@x.test")];
    assert_eq!(h.c.pipeline_transaction(&tx(&r3), &mut h.out), Ok(true));
    h.sent();
    // c's verdict, then the next transaction's replies.
    h.feed(b"250 c saved\r\n250 ok\r\n250 ok\r\n354 go\r\n");
    assert_eq!(h.take_events(), [Event::TransactionDone, Event::SendBody]);
    assert_eq!(h.verdicts(), [(Delivered, 250)]);
}
