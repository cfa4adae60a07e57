//! Timeouts in every phase, lost connections: each deadline is where the
//! configuration puts it, and everyone in flight ends up deferred.

use super::*;
use OutcomeKind::{Deferred, Delivered, Failed};

/// Distinct values, so a test can tell which timeout was armed.
fn short() -> ClientConfig {
    ClientConfig {
        timeouts: Timeouts {
            greeting_ms: 10,
            command_ms: 20,
            mail_ms: 30,
            rcpt_ms: 40,
            data_init_ms: 50,
            data_block_ms: 60,
            data_end_ms: 70,
        },
        ..H::config(TlsPolicy::Opportunistic)
    }
}

fn ready_short(ehlo: &[u8]) -> H {
    let mut h = H::with(short());
    h.feed(b"220 mx.test\r\n");
    h.feed(ehlo);
    assert_eq!(h.take_events(), [Event::Ready]);
    h
}

/// Checks that nothing fires just before `deadline` and that the timeout
/// fires at it.
fn expire(h: &mut H, deadline: u64) -> Vec<Event> {
    assert_eq!(h.c.next_deadline(), Some(deadline));
    let mut events = h.take_events();
    h.c.handle_timeout(deadline - 1);
    assert!(h.take_events().is_empty(), "fired early");
    h.c.handle_timeout(deadline);
    assert_eq!(h.c.next_deadline(), None);
    assert!(h.c.is_closed());
    assert_eq!(h.sent(), "");
    events.extend(h.take_events());
    events
}

fn reason(h: &mut H) -> Vec<(OutcomeKind, String)> {
    (h.c.take_outcomes().iter())
        .map(|o| (o.kind, String::from_utf8_lossy(&o.reply.text).into_owned()))
        .collect()
}

#[test]
fn rfc_defaults() {
    let t = Timeouts::default();
    assert_eq!(
        (
            t.greeting_ms,
            t.mail_ms,
            t.rcpt_ms,
            t.data_init_ms,
            t.data_block_ms,
            t.data_end_ms
        ),
        (300_000, 300_000, 300_000, 120_000, 180_000, 600_000)
    );
    assert_eq!(H::new().c.next_deadline(), Some(300_000));
}

#[test]
fn greeting_ehlo_starttls_timeouts_try_next_host() {
    let mut h = H::with(short());
    assert_eq!(expire(&mut h, 10), [Event::TryNextHost]);

    let mut h = H::with(short());
    h.now = 5;
    h.feed(b"220 mx.test\r\n");
    assert_eq!(expire(&mut h, 25), [Event::TryNextHost]);

    let mut h = H::with(short());
    h.feed(b"220 mx.test\r\n");
    h.now = 7;
    assert_eq!(h.feed(b"250-mx.test\r\n250 STARTTLS\r\n"), "STARTTLS\r\n");
    assert_eq!(expire(&mut h, 27), [Event::TryNextHost]);
}

#[test]
fn each_transaction_phase_has_its_timeout() {
    let r = [rcpt("a@x.test")];
    // (replies before the timeout, deadline, reason)
    let cases: [(&[u8], u64, &str); 3] = [
        (b"", 130, "timeout after MAIL FROM"),
        (b"250 ok\r\n", 140, "timeout after RCPT TO"),
        (b"250 ok\r\n250 ok\r\n", 150, "timeout after DATA"),
    ];
    for (replies, deadline, why) in cases {
        let mut h = ready_short(EHLO_LOCKSTEP);
        h.now = 100;
        h.start(&tx(&r));
        h.feed(replies);
        assert_eq!(expire(&mut h, deadline), [Event::TryNextHost]);
        assert_eq!(reason(&mut h), [(Deferred, why.to_string())]);
    }
}

#[test]
fn data_block_and_end_of_data_timeouts() {
    let r = [rcpt("a@x.test"), rcpt("b@x.test")];
    let mut h = ready_short(EHLO_PIPELINING);
    h.start(&tx(&r));
    h.now = 400;
    h.feed(b"250 ok\r\n250 ok\r\n550 no\r\n354 go\r\n");
    assert_eq!(h.c.next_deadline(), Some(460));
    h.now = 450;
    assert_eq!(h.c.encode_body(b"x", 450, &mut h.out), Ok(()));
    assert_eq!(h.sent(), "x");
    let events = expire(&mut h, 510);
    assert_eq!(events, [Event::SendBody, Event::TryNextHost]);
    let why = "timeout while sending the message body".to_string();
    assert_eq!(reason(&mut h), [(Deferred, why), (Failed, "550 no".into())]);

    let mut h = ready_short(EHLO_PIPELINING);
    h.start(&tx(&r));
    h.feed(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n");
    h.now = 500;
    h.body(&[b"x"]);
    expire(&mut h, 570);
    let why = "timeout after end of data".to_string();
    assert_eq!(reason(&mut h), [(Deferred, why.clone()), (Deferred, why)]);
}

#[test]
fn rset_and_quit_timeouts() {
    let r = [rcpt("a@x.test")];
    let mut h = ready_short(EHLO_PIPELINING);
    h.start(&tx(&r));
    h.feed(b"250 ok\r\n550 no\r\n554 no\r\n");
    assert_eq!(h.verdicts(), [(Failed, 550)]);
    h.now = 1000;
    assert!(h.start(&tx(&r)).starts_with("RSET\r\n"));
    // RSET and MAIL pipelined: RSET's reply is awaited first.
    let events = expire(&mut h, 1020);
    // A transaction finished before on this connection: no next host.
    assert_eq!(
        events,
        [
            Event::TransactionDone,
            Event::TransactionDone,
            Event::Closed
        ]
    );
    assert_eq!(reason(&mut h), [(Deferred, "timeout after RSET".into())]);

    let mut h = ready_short(EHLO_PIPELINING);
    h.now = 2000;
    assert_eq!(h.c.quit(2000, &mut h.out), Ok(()));
    assert_eq!(h.sent(), "QUIT\r\n");
    assert_eq!(expire(&mut h, 2020), [Event::Closed]);
}

#[test]
fn connection_lost_during_body_defers_accepted() {
    let r = [rcpt("a@x.test"), rcpt("b@x.test")];
    let mut h = ready_short(EHLO_PIPELINING);
    h.start(&tx(&r));
    h.feed(b"250 ok\r\n250 ok\r\n550 no\r\n354 go\r\n");
    h.c.connection_lost(0);
    assert_eq!(h.take_events(), [Event::SendBody, Event::TryNextHost]);
    let why = "connection lost while sending the message body".to_string();
    assert_eq!(reason(&mut h), [(Deferred, why), (Failed, "550 no".into())]);
    // Further calls are harmless.
    h.c.connection_lost(0);
    h.c.handle_timeout(u64::MAX);
    assert!(h.take_events().is_empty());
}

#[test]
fn connection_lost_after_end_of_data_is_deferred_not_delivered() {
    let r = [rcpt("a@x.test")];
    let mut h = ready_short(EHLO_PIPELINING);
    h.start(&tx(&r));
    h.feed(b"250 ok\r\n250 ok\r\n354 go\r\n");
    h.body(&[b"x"]);
    // Half a reply is no verdict.
    assert_eq!(h.c.handle_input(b"250 2.0.0 queu", 0, &mut h.out), 0);
    h.c.connection_lost(0);
    assert_eq!(
        reason(&mut h),
        [(Deferred, "connection lost after end of data".into())]
    );
}

#[test]
fn connection_lost_in_other_phases() {
    let mut h = H::new();
    h.c.connection_lost(0);
    assert_eq!(h.take_events(), [Event::TryNextHost]);

    let mut h = ready_short(EHLO_PIPELINING);
    h.c.connection_lost(0);
    assert_eq!(h.take_events(), [Event::TryNextHost]);

    let r = [rcpt("a@x.test")];
    let mut h = ready_short(EHLO_PIPELINING);
    h.start(&tx(&r));
    h.feed(b"250 ok\r\n250 ok\r\n354 go\r\n");
    h.body(&[b"x"]);
    h.feed(b"250 ok\r\n");
    assert_eq!(h.verdicts(), [(Delivered, 250)]);
    h.take_events();
    h.c.connection_lost(0);
    assert_eq!(h.take_events(), [Event::Closed]);

    let mut h = ready_short(EHLO_PIPELINING);
    assert_eq!(h.c.quit(0, &mut h.out), Ok(()));
    h.c.connection_lost(0);
    assert_eq!(h.take_events(), [Event::Closed]);
}
