//! Transactions: exact byte sequences, per-recipient verdicts, RSET and
//! connection reuse, checks made before sending.

use super::*;
use OutcomeKind::{Deferred, Delivered, Failed};

#[test]
fn pipelined_transaction_is_one_write() {
    let mut h = H::ready(EHLO_PIPELINING);
    let r = [rcpt("a@x.test"), rcpt("b@x.test")];
    assert_eq!(
        h.start(&tx(&r)),
        "MAIL FROM:<s@example.org> SIZE=100\r\nRCPT TO:<a@x.test>\r\n\
         RCPT TO:<b@x.test>\r\nDATA\r\n"
    );
    assert_eq!(
        h.feed(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n250 2.1.5 ok\r\n"),
        ""
    );
    assert!(h.take_events().is_empty());
    assert_eq!(h.feed(b"354 go\r\n"), "");
    assert_eq!(h.take_events(), [Event::SendBody]);
    assert_eq!(
        h.body(&[b"Subject: x\r\n\r\n.hi\r\n"]),
        "Subject: x\r\n\r\n..hi\r\n.\r\n"
    );
    h.feed(b"250 2.0.0 Ok: queued as Q1\r\n");
    assert_eq!(h.take_events(), [Event::TransactionDone]);
    let o = h.c.take_outcomes();
    assert_eq!(o.len(), 2);
    assert!(o
        .iter()
        .all(|x| x.kind == Delivered && x.reply.text == b"250 2.0.0 Ok: queued as Q1"));
    assert!(h.c.is_ready());
}

#[test]
fn lockstep_sends_one_command_per_reply() {
    let mut h = H::ready(EHLO_LOCKSTEP);
    let r = [rcpt("a@x.test"), rcpt("b@x.test")];
    assert_eq!(h.start(&tx(&r)), "MAIL FROM:<s@example.org>\r\n");
    assert_eq!(h.feed(b"250 ok\r\n"), "RCPT TO:<a@x.test>\r\n");
    assert_eq!(h.feed(b"250 ok\r\n"), "RCPT TO:<b@x.test>\r\n");
    assert_eq!(h.feed(b"250 ok\r\n"), "DATA\r\n");
    assert_eq!(h.feed(b"354 go\r\n"), "");
    assert_eq!(h.take_events(), [Event::SendBody]);
    h.body(&[b"x"]);
    h.feed(b"250 ok\r\n");
    assert_eq!(h.verdicts(), [(Delivered, 250), (Delivered, 250)]);
}

#[test]
fn partial_rcpt_acceptance() {
    let mut h = H::ready(EHLO_PIPELINING);
    let r = [rcpt("a@x.test"), rcpt("b@x.test"), rcpt("c@x.test")];
    h.start(&tx(&r));
    h.feed(
        b"250 ok\r\n250 ok\r\n550 5.1.1 <b@x.test> unknown\r\n451 4.2.0 greylisted\r\n354 go\r\n",
    );
    h.body(&[b"x"]);
    h.feed(b"250 ok\r\n");
    let o = h.c.take_outcomes();
    let kinds: Vec<_> = o.iter().map(|x| x.kind).collect();
    assert_eq!(kinds, [Delivered, Failed, Deferred]);
    assert_eq!(o[1].reply.text, b"550 5.1.1 <b@x.test> unknown");
    assert_eq!(
        o[1].reply.status.map(|s| s.to_string()),
        Some("5.1.1".into())
    );
    assert_eq!(o[2].reply.code, 451);
}

#[test]
fn all_rejected_pipelined_no_body_then_rset() {
    let mut h = H::ready(EHLO_PIPELINING);
    let r = [rcpt("a@x.test"), rcpt("b@x.test")];
    h.start(&tx(&r));
    assert_eq!(
        h.feed(b"250 ok\r\n550 no\r\n550 no\r\n554 5.5.1 no valid recipients\r\n"),
        ""
    );
    assert_eq!(h.take_events(), [Event::TransactionDone]);
    assert_eq!(h.verdicts(), [(Failed, 550), (Failed, 550)]);
    // The next transaction clears the server's state first.
    let r2 = [rcpt("c@x.test")];
    assert_eq!(
        h.start(&tx(&r2)),
        "RSET\r\nMAIL FROM:<s@example.org> SIZE=100\r\nRCPT TO:<c@x.test>\r\nDATA\r\n"
    );
    h.feed(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n");
    h.body(&[b"x"]);
    h.feed(b"250 ok\r\n");
    assert_eq!(h.verdicts(), [(Delivered, 250)]);
}

#[test]
fn all_rejected_lockstep_sends_no_data() {
    let mut h = H::ready(EHLO_LOCKSTEP);
    let r = [rcpt("a@x.test")];
    h.start(&tx(&r));
    h.feed(b"250 ok\r\n");
    assert_eq!(h.feed(b"450 4.2.1 mailbox busy\r\n"), "", "no DATA");
    assert_eq!(h.take_events(), [Event::TransactionDone]);
    assert_eq!(h.verdicts(), [(Deferred, 450)]);
    assert_eq!(h.start(&tx(&r)), "RSET\r\n");
    assert_eq!(h.feed(b"250 ok\r\n"), "MAIL FROM:<s@example.org>\r\n");
}

#[test]
fn data_accepted_with_nobody_to_deliver_to_ends_empty() {
    let mut h = H::ready(EHLO_PIPELINING);
    let r = [rcpt("a@x.test")];
    h.start(&tx(&r));
    assert_eq!(h.feed(b"250 ok\r\n550 no\r\n354 go\r\n"), ".\r\n");
    assert!(h.take_events().is_empty());
    h.feed(b"554 no recipients\r\n");
    assert_eq!(h.take_events(), [Event::TransactionDone]);
    assert_eq!(h.verdicts(), [(Failed, 550)]);
}

#[test]
fn end_of_data_4xx_and_5xx() {
    for (reply, kind) in [
        (&b"452 4.3.1 full\r\n"[..], Deferred),
        (b"554 5.7.1 spam\r\n", Failed),
    ] {
        let mut h = H::ready(EHLO_PIPELINING);
        let r = [rcpt("a@x.test"), rcpt("b@x.test")];
        h.start(&tx(&r));
        h.feed(b"250 ok\r\n250 ok\r\n550 no\r\n354 go\r\n");
        h.body(&[b"x\r\n"]);
        h.feed(reply);
        assert_eq!(h.verdicts(), [(kind, reply_code(reply)), (Failed, 550)]);
        // The end-of-data reply ends the server's transaction: no RSET.
        assert!(h.start(&tx(&r)).starts_with("MAIL "));
    }
}

fn reply_code(r: &[u8]) -> u16 {
    r[..3].iter().fold(0, |a, &d| a * 10 + u16::from(d - b'0'))
}

#[test]
fn data_refused_with_recipients_accepted() {
    let mut h = H::ready(EHLO_PIPELINING);
    let r = [rcpt("a@x.test")];
    h.start(&tx(&r));
    h.feed(b"250 ok\r\n250 ok\r\n451 4.3.0 try later\r\n");
    assert_eq!(h.verdicts(), [(Deferred, 451)]);
    assert!(h.start(&tx(&r)).starts_with("RSET\r\n"));
}

#[test]
fn mail_refused_pipelined_decides_everyone() {
    let mut h = H::ready(EHLO_PIPELINING);
    let r = [rcpt("a@x.test"), rcpt("b@x.test")];
    h.start(&tx(&r));
    h.feed(b"553 5.1.8 bad sender\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need MAIL\r\n");
    let o = h.c.take_outcomes();
    assert!(o
        .iter()
        .all(|x| x.kind == Failed && x.reply.text == b"553 5.1.8 bad sender"));
}

#[test]
fn mail_refused_lockstep_sends_no_rcpt() {
    let mut h = H::ready(EHLO_LOCKSTEP);
    let r = [rcpt("a@x.test")];
    h.start(&tx(&r));
    assert_eq!(h.feed(b"451 4.3.0 later\r\n"), "");
    assert_eq!(h.verdicts(), [(Deferred, 451)]);
}

#[test]
fn size_too_big_fails_without_sending() {
    let mut h = H::ready(EHLO_PIPELINING);
    let r = [rcpt("a@x.test"), rcpt("b@x.test")];
    let mut t = tx(&r);
    t.size = 1001;
    assert_eq!(h.start(&t), "");
    assert_eq!(h.take_events(), [Event::TransactionDone]);
    let o = h.c.take_outcomes();
    assert_eq!(o.len(), 2);
    assert!(o.iter().all(|x| x.kind == Failed
        && x.reply.status.map(|s| s.to_string()) == Some("5.3.4".into())
        && x.reply.local));
    t.size = 1000;
    assert!(h
        .start(&t)
        .starts_with("MAIL FROM:<s@example.org> SIZE=1000\r\n"));
}

#[test]
fn smtputf8_needed_but_not_offered() {
    let mut h = H::ready(EHLO_LOCKSTEP);
    let r = [rcpt("j\u{f6}rg@x.test")];
    assert_eq!(h.start(&tx(&r)), "");
    let o = h.c.take_outcomes();
    assert_eq!(o[0].kind, Failed);
    assert_eq!(
        o[0].reply.status.map(|s| s.to_string()),
        Some("5.6.7".into())
    );
    let mut h = H::ready(EHLO_PIPELINING);
    let mut t = tx(&r);
    t.smtputf8 = true;
    assert!(h
        .start(&t)
        .starts_with("MAIL FROM:<s@example.org> SIZE=100 SMTPUTF8\r\n"));
}

#[test]
fn binary_body_fails_5_6_3() {
    let mut h = H::ready(EHLO_PIPELINING);
    let r = [rcpt("a@x.test")];
    let mut t = tx(&r);
    t.body = Body::BinaryMime;
    assert_eq!(h.start(&t), "");
    let o = h.c.take_outcomes();
    assert_eq!(
        o[0].reply.status.map(|s| s.to_string()),
        Some("5.6.3".into())
    );
}

#[test]
fn eight_bit_body_with_and_without_8bitmime() {
    let r = [rcpt("a@x.test")];
    let mut t = tx(&r);
    t.body = Body::EightBitMime;
    let mut h = H::ready(EHLO_PIPELINING);
    assert!(h
        .start(&t)
        .starts_with("MAIL FROM:<s@example.org> SIZE=100 BODY=8BITMIME\r\n"));
    let mut h = H::ready(b"250-mx.test\r\n250 PIPELINING\r\n");
    assert!(h.start(&t).starts_with("MAIL FROM:<s@example.org>\r\n"));
    h.feed(b"250 ok\r\n250 ok\r\n354 go\r\n");
    h.body(&["caf\u{e9}".as_bytes()]);
    h.feed(b"250 ok\r\n");
    let o = h.c.take_outcomes();
    assert!(o[0].body_8bit_unannounced);
    assert_eq!(o[0].kind, Delivered);
}

#[test]
fn dsn_parameters_only_when_offered() {
    let r = [TxRecipient {
        address: b"a@x.test",
        notify: notify::FAILURE | notify::DELAY,
        orcpt: b"rfc822;a@x.test",
    }];
    let mut t = tx(&r);
    t.ret = Some(Ret::Headers);
    t.envid = b"E1";
    let mut h = H::ready(EHLO_PIPELINING);
    assert_eq!(
        h.start(&t),
        "MAIL FROM:<s@example.org> SIZE=100 RET=HDRS ENVID=E1\r\n\
         RCPT TO:<a@x.test> NOTIFY=FAILURE,DELAY ORCPT=rfc822;a@x.test\r\nDATA\r\n"
    );
    let mut h = H::ready(EHLO_LOCKSTEP);
    assert_eq!(h.start(&t), "MAIL FROM:<s@example.org>\r\n");
    assert_eq!(h.feed(b"250 ok\r\n"), "RCPT TO:<a@x.test>\r\n");
}

#[test]
fn connection_reuse_then_quit() {
    let mut h = H::ready(EHLO_PIPELINING);
    let r = [rcpt("a@x.test")];
    for _ in 0..3 {
        assert!(h.start(&tx(&r)).starts_with("MAIL "));
        h.feed(b"250 ok\r\n250 ok\r\n354 go\r\n");
        h.body(&[b"x"]);
        h.feed(b"250 ok\r\n");
        assert_eq!(h.take_events(), [Event::SendBody, Event::TransactionDone]);
        assert_eq!(h.verdicts(), [(Delivered, 250)]);
    }
    assert_eq!(h.c.quit(0, &mut h.out), Ok(()));
    assert_eq!(h.sent(), "QUIT\r\n");
    h.feed(b"221 2.0.0 bye\r\n");
    assert_eq!(h.take_events(), [Event::Closed]);
}

#[test]
fn replies_out_of_turn_end_the_connection() {
    // A reply while idle.
    let mut h = H::ready(EHLO_PIPELINING);
    h.feed(b"250 surprise\r\n");
    assert_eq!(h.take_events(), [Event::TryNextHost]);
    // Lock-step, all in one read: 2xx to DATA is not a 354.
    let mut h = H::ready(EHLO_LOCKSTEP);
    let r = [rcpt("a@x.test")];
    h.start(&tx(&r));
    h.feed(b"250 ok\r\n250 ok\r\n250 extra\r\n");
    assert_eq!(h.take_events(), [Event::TryNextHost]);
    let o = h.c.take_outcomes();
    assert_eq!(
        (o[0].kind, o[0].reply.status.map(|s| s.to_string())),
        (Deferred, Some("4.5.0".into()))
    );
    // The same, pipelined.
    let mut h = H::ready(EHLO_PIPELINING);
    h.start(&tx(&r));
    h.feed(b"250 ok\r\n250 ok\r\n250 ok\r\n");
    assert_eq!(h.verdicts(), [(Deferred, 451)]);
}

#[test]
fn reply_421_mid_transaction_defers_the_rest() {
    let mut h = H::ready(EHLO_PIPELINING);
    let r = [rcpt("a@x.test"), rcpt("b@x.test"), rcpt("c@x.test")];
    h.start(&tx(&r));
    h.feed(b"250 ok\r\n250 ok\r\n550 no\r\n421 4.4.2 shutting down\r\n");
    assert_eq!(h.take_events(), [Event::TryNextHost]);
    let o = h.c.take_outcomes();
    assert_eq!(o[0].kind, Deferred);
    assert_eq!(o[0].reply.text, b"421 4.4.2 shutting down");
    assert_eq!(o[1].kind, Failed);
    assert_eq!(o[2].kind, Deferred);
}

#[test]
fn after_a_finished_transaction_failures_close_instead() {
    let mut h = H::ready(EHLO_PIPELINING);
    let r = [rcpt("a@x.test")];
    h.start(&tx(&r));
    h.feed(b"250 ok\r\n250 ok\r\n354 go\r\n");
    h.body(&[]);
    h.feed(b"250 ok\r\n");
    h.take_events();
    h.feed(b"421 4.4.2 idle too long\r\n");
    assert_eq!(h.take_events(), [Event::Closed]);
}

#[test]
fn calls_out_of_turn_are_misuse() {
    let mut h = H::ready(EHLO_PIPELINING);
    let r = [rcpt("a@x.test")];
    let mut out = Vec::new();
    assert_eq!(h.c.encode_body(b"x", 0, &mut out), Err(Misuse::NotWaiting));
    assert_eq!(h.c.finish_body(0, &mut out), Err(Misuse::NotWaiting));
    let bad = [rcpt("a@x.test>\r\nRSET")];
    assert_eq!(
        h.c.start_transaction(&tx(&bad), 0, &mut out),
        Err(Misuse::BadEnvelope)
    );
    h.start(&tx(&r));
    assert_eq!(
        h.c.start_transaction(&tx(&r), 0, &mut out),
        Err(Misuse::NotWaiting)
    );
    assert_eq!(h.c.quit(0, &mut out), Err(Misuse::NotWaiting));
    assert!(out.is_empty());
}

#[test]
fn a_huge_reply_is_kept_cut_to_size() {
    let mut h = H::ready(EHLO_PIPELINING);
    let r = [rcpt("a@x.test")];
    h.start(&tx(&r));
    let mut huge = Vec::new();
    for _ in 0..100 {
        huge.extend_from_slice(b"550-5.1.1 ");
        huge.extend_from_slice(&[b'x'; 4000]);
        huge.extend_from_slice(b"\r\n");
    }
    huge.extend_from_slice(b"550 5.1.1 no such user\r\n");
    h.feed(b"250 ok\r\n");
    h.feed(&huge);
    h.feed(b"554 5.5.1 no valid recipients\r\n");
    let o = h.c.take_outcomes();
    assert_eq!(o.len(), 1);
    assert_eq!(o[0].kind, Failed);
    assert_eq!(o[0].reply.code, 550);
    assert_eq!(
        o[0].reply.status.map(|s| s.to_string()),
        Some("5.1.1".into())
    );
    assert!(o[0].reply.text.len() <= reply::MAX_KEPT_REPLY);
    assert!(o[0].reply.text.ends_with(reply::CUT_MARK));
}
