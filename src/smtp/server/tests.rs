//! Session tests: byte strings in, replies and events out, on virtual time.

use super::*;
use crate::smtp::params::{Notify, Ret};
use proptest::prelude::*;

const EHLO: &[u8] = b"EHLO client.example\r\n";
const TLS: TlsInfo = TlsInfo {
    protocol: "TLSv1.3",
    cipher: "TLS13_AES_128_GCM_SHA256",
};

fn config() -> ServerConfig {
    ServerConfig {
        hostname: "mx.test".into(),
        max_message_size: 100,
        max_recipients: 3,
        max_errors: 6,
        tls_available: true,
        auth_available: true,
        local_domains: vec!["example.com".into()],
        ..ServerConfig::default()
    }
}

/// A client driving one session, answering events the way a simple I/O
/// layer would.
struct Client {
    s: Session,
    out: Vec<u8>,
    pending: Vec<u8>,
    now: u64,
    body: Vec<u8>,
    events: Vec<Event>,
    /// Answer DataEnd with `message_accepted("Q1")` at once.
    auto_spool: bool,
    /// Answer StartTls with `tls_established` at once.
    auto_tls: bool,
    /// Destination room per `receive_data` call.
    dst_len: usize,
    /// Answers to `RcptVerify` by mailbox; a mailbox not here leaves the
    /// session waiting.
    verdicts: Vec<(&'static str, Verdict)>,
}

impl Client {
    fn with(cfg: ServerConfig, relay_allowed: bool, tls: Option<TlsInfo>) -> Self {
        let peer = PeerInfo {
            ip: IpAddr::from([192, 0, 2, 9]),
            relay_allowed,
        };
        let mut s = Session::new(Arc::new(cfg), peer, tls, 0);
        let mut out = Vec::new();
        s.greeting(&mut out);
        Client {
            s,
            out,
            pending: Vec::new(),
            now: 0,
            body: Vec::new(),
            events: Vec::new(),
            auto_spool: true,
            auto_tls: true,
            dst_len: 7,
            verdicts: Vec::new(),
        }
    }

    fn new() -> Self {
        Self::with(config(), false, None)
    }

    fn take(&mut self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut self.out)).into_owned()
    }

    /// Sends bytes and returns everything the server wrote.
    fn send(&mut self, input: &[u8]) -> String {
        self.pending.extend_from_slice(input);
        self.pump();
        self.take()
    }

    fn pump(&mut self) {
        loop {
            let (consumed, progress, event) = if self.s.wants_body() {
                let mut dst = vec![0u8; self.dst_len];
                let p = self
                    .s
                    .receive_data(&self.pending, &mut dst, self.now, &mut self.out);
                self.body.extend_from_slice(&dst[..p.produced]);
                (p.consumed, p.consumed + p.produced, p.event)
            } else {
                let p = self.s.handle_input(&self.pending, self.now, &mut self.out);
                (p.consumed, p.consumed, p.event)
            };
            self.pending.drain(..consumed);
            if let Some(e) = event {
                self.events.push(e);
                if !self.on_event(e) {
                    return;
                }
            } else if progress == 0 {
                return;
            }
        }
    }

    fn on_event(&mut self, e: Event) -> bool {
        match e {
            Event::DataEnd if self.auto_spool => {
                assert_eq!(self.s.message_accepted("Q1", &mut self.out), Ok(()));
            }
            Event::StartTls if self.auto_tls => {
                assert_eq!(self.s.tls_established(TLS, self.now), Ok(()));
            }
            Event::AuthAttempt => {
                let ok = self
                    .s
                    .auth_credentials()
                    .is_some_and(|c| c.username == b"user" && c.password == b"pass");
                let r = self.s.auth_result(ok, &mut self.out);
                return !matches!(r, Ok(Some(Event::Close)));
            }
            Event::RcptVerify => {
                let asked = self.s.verify_request().unwrap_or_default();
                let Some(&(_, v)) = self.verdicts.iter().find(|(m, _)| *m == asked) else {
                    return false;
                };
                let r = self.s.rcpt_verified(v, &mut self.out);
                return match r {
                    Ok(Some(e)) => {
                        self.events.push(e);
                        self.on_event(e)
                    }
                    Ok(None) => true,
                    Err(_) => false,
                };
            }
            Event::Close => return false,
            _ => {}
        }
        true
    }
}

#[path = "verify_tests.rs"]
mod verify_tests;

/// A session that has said EHLO, with its greeting and EHLO reply dropped.
fn greeted() -> Client {
    let mut c = Client::new();
    c.send(EHLO);
    c
}

fn lines(s: &str) -> Vec<&str> {
    s.split_terminator("\r\n").collect()
}

#[test]
fn greeting_and_ehlo() {
    let mut c = Client::new();
    assert_eq!(c.take(), "220 mx.test ESMTP petrel\r\n");
    let r = c.send(EHLO);
    assert_eq!(
        lines(&r),
        [
            "250-mx.test",
            "250-PIPELINING",
            "250-SIZE 100",
            "250-8BITMIME",
            "250-SMTPUTF8",
            "250-ENHANCEDSTATUSCODES",
            "250-CHUNKING",
            "250-DSN",
            "250 STARTTLS"
        ]
    );
    assert_eq!(c.events, [Event::Helo]);
    assert_eq!(c.s.helo_name(), b"client.example");
}

#[test]
fn ehlo_without_tls_certificate_has_no_starttls() {
    let cfg = ServerConfig {
        tls_available: false,
        ..config()
    };
    let mut c = Client::with(cfg, false, None);
    let r = c.send(EHLO);
    assert!(r.ends_with("250 DSN\r\n"), "{r}");
    assert!(!r.contains("STARTTLS") && !r.contains("AUTH"));
}

#[test]
fn ehlo_over_tls_offers_auth_not_starttls() {
    let mut c = Client::with(config(), false, Some(TLS));
    let r = c.send(EHLO);
    assert!(r.ends_with("250-DSN\r\n250 AUTH PLAIN LOGIN\r\n"), "{r}");
    assert!(!r.contains("STARTTLS"));
    let cfg = ServerConfig {
        auth_available: false,
        ..config()
    };
    let mut c = Client::with(cfg, false, Some(TLS));
    assert!(!c.send(EHLO).contains("AUTH"));
}

#[test]
fn helo_reply() {
    let mut c = Client::new();
    c.take();
    assert_eq!(c.send(b"HELO client\r\n"), "250 mx.test\r\n");
}

#[test]
fn sequencing_errors() {
    let mut c = Client::new();
    c.take();
    assert_eq!(
        c.send(b"MAIL FROM:<a@b.example>\r\n"),
        "503 5.5.1 Error: send HELO/EHLO first\r\n"
    );
    c.send(EHLO);
    assert_eq!(
        c.send(b"RCPT TO:<u@example.com>\r\n"),
        "503 5.5.1 Error: need MAIL command\r\n"
    );
    assert_eq!(
        c.send(b"DATA\r\n"),
        "503 5.5.1 Error: need MAIL command\r\n"
    );
    assert_eq!(c.send(b"MAIL FROM:<a@b.example>\r\n"), "250 2.1.0 Ok\r\n");
    assert_eq!(
        c.send(b"DATA\r\n"),
        "503 5.5.1 Error: need RCPT command\r\n"
    );
    assert_eq!(
        c.send(b"MAIL FROM:<a@b.example>\r\n"),
        "503 5.5.1 Error: nested MAIL command\r\n"
    );
    assert_eq!(c.s.error_count(), 5);
}

#[test]
fn full_transaction_pipelined() {
    let mut c = greeted();
    c.events.clear();
    let r = c.send(
        b"MAIL FROM:<a@b.example> SIZE=20 RET=HDRS ENVID=e1\r\n\
          RCPT TO:<u@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;u@example.com\r\n\
          RCPT TO:<v@EXAMPLE.com>\r\nDATA\r\n\
          Subject: t\r\n\r\n..dot\r\n.\r\nQUIT\r\n",
    );
    assert_eq!(
        lines(&r),
        [
            "250 2.1.0 Ok",
            "250 2.1.5 Ok",
            "250 2.1.5 Ok",
            "354 End data with <CR><LF>.<CR><LF>",
            "250 2.0.0 Ok: queued as Q1",
            "221 2.0.0 Bye"
        ]
    );
    assert_eq!(c.body, b"Subject: t\r\n\r\n.dot\r\n");
    assert_eq!(
        c.events,
        [
            Event::MailFrom,
            Event::RcptTo { index: 0 },
            Event::RcptTo { index: 1 },
            Event::DataStart,
            Event::DataEnd,
            Event::Close
        ]
    );
    assert!(c.s.is_closed());
}

#[test]
fn envelope_holds_dsn_parameters_at_data_end() {
    let mut c = greeted();
    c.auto_spool = false;
    c.send(
        b"MAIL FROM:<a@b.example> SIZE=20 RET=HDRS ENVID=e1 BODY=8BITMIME\r\n\
          RCPT TO:<u@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;u@example.com\r\n\
          RCPT TO:<v@example.com>\r\nDATA\r\nhi\r\n.\r\n",
    );
    assert_eq!(c.events.last(), Some(&Event::DataEnd));
    let e = c.s.envelope();
    assert_eq!(e.reverse_path(), b"a@b.example");
    assert_eq!(e.declared_size(), Some(20));
    assert_eq!(e.ret(), Some(Ret::Headers));
    assert_eq!(e.envid(), Some(&b"e1"[..]));
    assert_eq!(e.body(), crate::smtp::params::Body::EightBitMime);
    let r: Vec<_> = e.recipients().collect();
    assert_eq!(r[0].address, b"u@example.com");
    assert_eq!(r[0].notify, Some(Notify(Notify::SUCCESS | Notify::FAILURE)));
    assert_eq!(r[0].orcpt, Some(&b"rfc822;u@example.com"[..]));
    assert_eq!(r[1].notify, None);
}

#[test]
fn replies_wait_for_the_spool() {
    let mut c = greeted();
    c.auto_spool = false;
    let r = c.send(b"MAIL FROM:<>\r\nRCPT TO:<u@example.com>\r\nDATA\r\nx\r\n.\r\nNOOP\r\n");
    assert!(
        r.ends_with("354 End data with <CR><LF>.<CR><LF>\r\n"),
        "{r}"
    );
    // NOOP is held until the message is durable, so replies stay in order.
    assert_eq!(c.pending, b"NOOP\r\n");
    assert_eq!(c.s.next_deadline(), None);
    assert_eq!(c.s.message_accepted("ABC", &mut c.out), Ok(()));
    assert_eq!(
        c.send(b""),
        "250 2.0.0 Ok: queued as ABC\r\n250 2.0.0 Ok\r\n"
    );
}

#[test]
fn spool_failures() {
    for (why, text) in [
        (
            SpoolFailure::Io,
            "451 4.3.0 Error: queue file write error\r\n",
        ),
        (
            SpoolFailure::NoSpace,
            "452 4.3.1 Insufficient system storage\r\n",
        ),
    ] {
        let mut c = greeted();
        c.auto_spool = false;
        c.send(b"MAIL FROM:<>\r\nRCPT TO:<u@example.com>\r\nDATA\r\nx\r\n.\r\n");
        assert_eq!(c.s.message_failed(why, &mut c.out), Ok(()));
        assert_eq!(c.take(), text);
        // The transaction is over.
        assert!(c.send(b"RCPT TO:<u@example.com>\r\n").starts_with("503 "));
    }
}

#[test]
fn a_message_refused_at_the_end_of_data_ends_its_transaction() {
    let mut c = greeted();
    c.auto_spool = false;
    c.send(b"MAIL FROM:<>\r\nRCPT TO:<u@example.com>\r\nDATA\r\nx\r\n.\r\n");
    let refused = crate::smtp::reply::UNKNOWN_POOL;
    assert_eq!(c.s.message_refused(&refused, &mut c.out), Ok(()));
    assert!(c.take().starts_with("550 5.7.0 "));
    assert!(c.send(b"RCPT TO:<u@example.com>\r\n").starts_with("503 "));
    assert_eq!(c.s.message_refused(&refused, &mut c.out), Err(Misuse));
}

#[test]
fn misuse_is_reported() {
    let mut c = greeted();
    assert_eq!(c.s.message_accepted("x", &mut c.out), Err(Misuse));
    assert_eq!(
        c.s.message_failed(SpoolFailure::Io, &mut c.out),
        Err(Misuse)
    );
    assert_eq!(c.s.auth_result(true, &mut c.out), Err(Misuse));
    assert_eq!(c.s.tls_established(TLS, 0), Err(Misuse));
    assert!(c.out.is_empty());
}

#[test]
fn null_sender_only_in_mail() {
    let mut c = greeted();
    assert_eq!(c.send(b"MAIL FROM:<>\r\n"), "250 2.1.0 Ok\r\n");
    assert_eq!(c.s.envelope().reverse_path(), b"");
    assert_eq!(
        c.send(b"RCPT TO:<>\r\n"),
        "501 5.1.3 Bad recipient address syntax\r\n"
    );
}

#[test]
fn bad_addresses() {
    let mut c = greeted();
    assert_eq!(
        c.send(b"MAIL FROM:<a@@b>\r\n"),
        "501 5.1.7 Bad sender address syntax\r\n"
    );
    c.send(b"MAIL FROM:<a@b.example>\r\n");
    let long = format!("RCPT TO:<{}@example.com>\r\n", "x".repeat(65));
    assert_eq!(c.send(long.as_bytes()), "501 5.1.3 Local part too long\r\n");
    assert_eq!(
        c.send(b"RCPT TO:<u@example.com> FOO=1\r\n"),
        "555 5.5.4 Unsupported parameter\r\n"
    );
    assert_eq!(
        c.send(b"RCPT TO:u@example.com\r\n"),
        "501 5.5.4 Syntax: RCPT TO:<address> [parameters]\r\n"
    );
}

#[test]
fn relay_denied_for_untrusted_client() {
    let mut c = greeted();
    c.send(b"MAIL FROM:<a@b.example>\r\n");
    for rcpt in [
        &b"<u@remote.example>"[..],
        b"<@example.com:u@remote.example>",
        b"<@remote.example:u@example.com>",
        b"<u%remote.example@example.com>",
        b"<remote!u@example.com>",
        b"<\"u@remote.example\"@example.com>",
        b"<u@[192.0.2.1]>",
    ] {
        let mut line = b"RCPT TO:".to_vec();
        line.extend_from_slice(rcpt);
        line.extend_from_slice(b"\r\n");
        c.s.errors = 0;
        assert_eq!(
            c.send(&line),
            "554 5.7.1 Relay access denied\r\n",
            "{rcpt:?}"
        );
    }
    // <Postmaster> is local to every server, but this one names no
    // mailbox for it: refused, never accepted to bounce later.
    c.s.errors = 0;
    assert_eq!(
        c.send(b"RCPT TO:<Postmaster>\r\n"),
        "550 5.1.1 <postmaster> has no mailbox on this server: its operator must set [server] postmaster\r\n"
    );
    assert_eq!(c.s.envelope().recipient_count(), 0);
}

#[test]
fn postmaster_is_the_configured_mailbox_for_any_client() {
    let cfg = ServerConfig {
        postmaster: b"ops@example.net".to_vec(),
        ..config()
    };
    let mut c = Client::with(cfg, false, None);
    c.send(EHLO);
    c.send(b"MAIL FROM:<a@b.example>\r\n");
    assert_eq!(c.send(b"RCPT TO:<postmaster>\r\n"), "250 2.1.5 Ok\r\n");
    let stored: Vec<&[u8]> = c.s.envelope().recipients().map(|r| r.address).collect();
    assert_eq!(stored, [&b"ops@example.net"[..]]);
    // Once is enough; and the mailbox itself is no relay for this
    // untrusted client.
    assert_eq!(
        c.send(b"RCPT TO:<PostMaster>\r\nRCPT TO:<ops@example.net>\r\n"),
        "250 2.1.5 Ok (duplicate recipient, accepted once)\r\n\
         554 5.7.1 Relay access denied\r\n"
    );
    assert_eq!(c.s.envelope().recipient_count(), 1);
}

#[test]
fn a_recipient_given_twice_is_accepted_once() {
    let mut c = Client::with(config(), true, None);
    c.send(EHLO);
    c.send(b"MAIL FROM:<a@b.example>\r\n");
    let mut input = Vec::new();
    for _ in 0..1000 {
        input.extend_from_slice(b"RCPT TO:<u@remote.example>\r\n");
    }
    let replies = c.send(&input);
    assert_eq!(lines(&replies).len(), 1000);
    assert_eq!(c.s.envelope().recipient_count(), 1);
    assert_eq!(c.s.errors, 0, "a duplicate is no error");
    // The domain compares without case, the local part as written; a
    // duplicate does not count against max_recipients (3).
    assert_eq!(
        c.send(b"RCPT TO:<u@REMOTE.example>\r\n"),
        "250 2.1.5 Ok (duplicate recipient, accepted once)\r\n"
    );
    assert_eq!(
        c.send(b"RCPT TO:<U@remote.example>\r\n"),
        "250 2.1.5 Ok\r\n"
    );
    assert_eq!(
        c.send(b"RCPT TO:<v@remote.example>\r\n"),
        "250 2.1.5 Ok\r\n"
    );
    assert_eq!(c.s.envelope().recipient_count(), 3);
}

#[test]
fn relay_allowed_for_trusted_network() {
    let mut c = Client::with(config(), true, None);
    c.send(EHLO);
    c.send(b"MAIL FROM:<a@b.example>\r\n");
    assert_eq!(
        c.send(b"RCPT TO:<u@remote.example>\r\n"),
        "250 2.1.5 Ok\r\n"
    );
    assert_eq!(
        c.send(b"RCPT TO:<@x.example:u@y.example>\r\n"),
        "250 2.1.5 Ok\r\n"
    );
    assert_eq!(
        c.s.envelope().recipient(1).map(|r| r.address),
        Some(&b"u@y.example"[..])
    );
}

#[test]
fn too_many_recipients_keeps_earlier_ones() {
    let mut c = greeted();
    c.send(b"MAIL FROM:<a@b.example>\r\n");
    let r = c.send(
        b"RCPT TO:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\n\
          RCPT TO:<d@example.com>\r\nRCPT TO:<e@example.com>\r\n",
    );
    assert_eq!(
        lines(&r),
        [
            "250 2.1.5 Ok",
            "250 2.1.5 Ok",
            "250 2.1.5 Ok",
            "452 4.5.3 Too many recipients",
            "452 4.5.3 Too many recipients"
        ]
    );
    assert_eq!(c.s.envelope().recipient_count(), 3);
    assert_eq!(c.s.error_count(), 0);
    assert!(c.send(b"DATA\r\nx\r\n.\r\n").ends_with("queued as Q1\r\n"));
}

#[test]
fn declared_size_over_limit() {
    let mut c = greeted();
    assert_eq!(
        c.send(b"MAIL FROM:<a@b.example> SIZE=101\r\n"),
        "552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    );
    assert_eq!(
        c.send(b"MAIL FROM:<a@b.example> SIZE=100\r\n"),
        "250 2.1.0 Ok\r\n"
    );
}

#[test]
fn storage_reserve_refuses_mail() {
    let mut c = greeted();
    c.s.set_storage_available(false);
    assert_eq!(
        c.send(b"MAIL FROM:<a@b.example>\r\n"),
        "452 4.3.1 Insufficient system storage\r\n"
    );
    c.s.set_storage_available(true);
    assert_eq!(c.send(b"MAIL FROM:<a@b.example>\r\n"), "250 2.1.0 Ok\r\n");
}

#[test]
fn oversized_body_rejected_and_session_in_sync() {
    let mut c = greeted();
    let mut msg = b"MAIL FROM:<a@b.example>\r\nRCPT TO:<u@example.com>\r\nDATA\r\n".to_vec();
    msg.extend_from_slice(&[b'x'; 150]);
    msg.extend_from_slice(b"\r\n.\r\nNOOP\r\n");
    let r = c.send(&msg);
    assert!(
        r.ends_with("354 End data with <CR><LF>.<CR><LF>\r\n552 5.3.4 Message size exceeds fixed maximum message size\r\n250 2.0.0 Ok\r\n"),
        "{r}"
    );
    assert_eq!(c.body.len(), 100);
    assert_eq!(
        c.events.last(),
        Some(&Event::MessageRejected(BodyOutcome::TooBig))
    );
    assert!(!c.s.envelope().is_active());
}

#[test]
fn bare_lf_in_body_rejected_at_end() {
    let mut c = greeted();
    let r = c.send(
        b"MAIL FROM:<a@b.example>\r\nRCPT TO:<u@example.com>\r\nDATA\r\n\
          a\nb\r\n.\r\nNOOP\r\n",
    );
    assert!(
        r.ends_with("550 5.5.2 Message contains bare CR or LF\r\n250 2.0.0 Ok\r\n"),
        "{r}"
    );
    assert!(c
        .events
        .contains(&Event::MessageRejected(BodyOutcome::BareCrLf)));
}

#[test]
fn smuggled_commands_stay_in_the_body() {
    for sep in [&b"\n.\n"[..], b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\r.\r\n"] {
        let mut c = greeted();
        let mut msg =
            b"MAIL FROM:<a@b.example>\r\nRCPT TO:<u@example.com>\r\nDATA\r\nhello".to_vec();
        msg.extend_from_slice(sep);
        msg.extend_from_slice(
            b"MAIL FROM:<evil@x.example>\r\nRCPT TO:<v@example.com>\r\nDATA\r\nevil\r\n.\r\n",
        );
        let r = c.send(&msg);
        // One message, refused; no reply to the smuggled commands.
        assert!(r.ends_with("354 End data with <CR><LF>.<CR><LF>\r\n550 5.5.2 Message contains bare CR or LF\r\n"), "{sep:?}: {r}");
        assert!(!c.events.contains(&Event::DataEnd));
        assert_eq!(
            c.events.iter().filter(|e| **e == Event::MailFrom).count(),
            1
        );
    }
}

#[test]
fn overlong_command_line() {
    let mut c = greeted();
    let mut line = b"NOOP ".to_vec();
    line.extend_from_slice(&[b'a'; 600]);
    // Split the line (and its CRLF) over reads to test the discard state.
    assert_eq!(c.send(&line), "");
    assert_eq!(c.send(b"bbb\r"), "");
    assert_eq!(
        c.send(b"\nNOOP\r\n"),
        "500 5.5.2 Error: line too long\r\n250 2.0.0 Ok\r\n"
    );
    // Just within the limit is fine.
    let ok = format!("NOOP {}\r\n", "a".repeat(505));
    assert_eq!(c.send(ok.as_bytes()), "250 2.0.0 Ok\r\n");
}

#[test]
fn bad_characters_in_commands() {
    let mut c = greeted();
    assert_eq!(
        c.send(b"NO\0OP\r\n"),
        "500 5.5.2 Error: bare CR, LF or NUL in command\r\n"
    );
    assert_eq!(
        c.send(b"NOOP\nNOOP\r\n"),
        "500 5.5.2 Error: bare CR, LF or NUL in command\r\n"
    );
    assert_eq!(
        c.send(b"NO\rOP\r\n"),
        "500 5.5.2 Error: bare CR, LF or NUL in command\r\n"
    );
    // A bare LF alone never completes a command.
    assert_eq!(c.send(b"NOOP\n"), "");
}

#[test]
fn unknown_command_and_simple_verbs() {
    let mut c = greeted();
    assert_eq!(
        c.send(b"XYZZY\r\n"),
        "500 5.5.2 Error: command not recognized\r\n"
    );
    assert_eq!(c.send(b"NOOP\r\n"), "250 2.0.0 Ok\r\n");
    assert!(c.send(b"VRFY bob\r\n").starts_with("252 2.5.0 "));
    assert!(c.send(b"HELP\r\n").starts_with("214 2.0.0 "));
    assert_eq!(c.send(b"RSET\r\n"), "250 2.0.0 Ok\r\n");
}

#[test]
fn too_many_errors_closes() {
    let mut c = greeted();
    let r = c.send(&b"BAD\r\n".repeat(10));
    let l = lines(&r);
    assert_eq!(l.len(), 7);
    assert_eq!(l[6], "421 4.7.0 Too many errors, closing connection");
    assert_eq!(c.events.last(), Some(&Event::Close));
    assert!(c.s.is_closed());
    assert_eq!(c.send(b"NOOP\r\n"), "");
}

#[test]
fn rset_and_helo_end_transaction() {
    let mut c = greeted();
    c.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<u@example.com>\r\n");
    c.send(b"RSET\r\n");
    assert!(c
        .send(b"RCPT TO:<u@example.com>\r\n")
        .starts_with("503 5.5.1"));
    c.send(b"MAIL FROM:<a@b.example>\r\n");
    c.send(EHLO);
    assert!(!c.s.envelope().is_active());
    assert!(c.send(b"DATA\r\n").starts_with("503 5.5.1"));
}

#[test]
fn quit_closes_and_ignores_rest() {
    let mut c = greeted();
    assert_eq!(c.send(b"QUIT\r\nNOOP\r\n"), "221 2.0.0 Bye\r\n");
    assert!(c.s.is_closed());
    assert_eq!(c.s.next_deadline(), None);
}

#[test]
fn starttls_discards_pipelined_input_and_resets() {
    let mut c = greeted();
    c.auto_tls = false;
    let r = c.send(b"STARTTLS\r\nMAIL FROM:<a@b.example>\r\n");
    assert_eq!(r, "220 2.0.0 Ready to start TLS\r\n");
    assert_eq!(c.events.last(), Some(&Event::StartTls));
    assert!(c.pending.is_empty(), "pipelined plaintext must be dropped");
    assert_eq!(c.s.tls_established(TLS, 5), Ok(()));
    assert!(c.s.is_tls_active());
    // Pre-EHLO state: the client must greet again.
    assert!(c
        .send(b"MAIL FROM:<a@b.example>\r\n")
        .starts_with("503 5.5.1"));
    let r = c.send(EHLO);
    assert!(
        !r.contains("STARTTLS") && r.contains("AUTH PLAIN LOGIN"),
        "{r}"
    );
    assert_eq!(
        c.send(b"STARTTLS\r\n"),
        "503 5.5.1 Error: TLS already active\r\n"
    );
}

#[test]
fn starttls_refusals() {
    let cfg = ServerConfig {
        tls_available: false,
        ..config()
    };
    let mut c = Client::with(cfg, false, None);
    c.send(EHLO);
    assert_eq!(
        c.send(b"STARTTLS\r\n"),
        "502 5.5.1 Error: STARTTLS not available\r\n"
    );
    let mut c = greeted();
    c.send(b"MAIL FROM:<a@b.example>\r\n");
    assert!(c.send(b"STARTTLS\r\n").starts_with("503 5.5.1"));
}

#[test]
fn auth_needs_tls() {
    let mut c = greeted();
    assert_eq!(
        c.send(b"AUTH PLAIN AHVzZXIAcGFzcw==\r\n"),
        "538 5.7.11 Encryption required for requested authentication mechanism\r\n"
    );
}

fn tls_greeted() -> Client {
    let mut c = Client::with(config(), false, Some(TLS));
    c.send(EHLO);
    c
}

#[test]
fn auth_plain_success_allows_relay() {
    let mut c = tls_greeted();
    // base64("\0user\0pass")
    assert_eq!(
        c.send(b"AUTH PLAIN AHVzZXIAcGFzcw==\r\n"),
        "235 2.7.0 Authentication successful\r\n"
    );
    assert!(c.s.is_authenticated());
    assert_eq!(c.s.authenticated_user(), Some(&b"user"[..]));
    assert_eq!(
        c.send(b"AUTH PLAIN AHVzZXIAcGFzcw==\r\n"),
        "503 5.5.1 Error: already authenticated\r\n"
    );
    c.send(b"MAIL FROM:<a@b.example>\r\n");
    assert_eq!(
        c.send(b"RCPT TO:<u@remote.example>\r\n"),
        "250 2.1.5 Ok\r\n"
    );
}

#[test]
fn auth_plain_without_initial_response() {
    let mut c = tls_greeted();
    assert_eq!(c.send(b"AUTH PLAIN\r\n"), "334 \r\n");
    assert_eq!(
        c.send(b"AHVzZXIAd3Jvbmc=\r\n"),
        "535 5.7.8 Authentication credentials invalid\r\n"
    );
    assert!(!c.s.is_authenticated());
    assert_eq!(c.s.authenticated_user(), None);
    assert_eq!(c.s.auth_credentials(), None);
}

#[test]
fn auth_login_flow() {
    let mut c = tls_greeted();
    assert_eq!(c.send(b"AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6\r\n");
    assert_eq!(c.send(b"dXNlcg==\r\n"), "334 UGFzc3dvcmQ6\r\n");
    assert_eq!(
        c.send(b"cGFzcw==\r\n"),
        "235 2.7.0 Authentication successful\r\n"
    );
    let mut c = tls_greeted();
    assert_eq!(c.send(b"AUTH LOGIN dXNlcg==\r\n"), "334 UGFzc3dvcmQ6\r\n");
    assert_eq!(
        c.send(b"cGFzcw==\r\n"),
        "235 2.7.0 Authentication successful\r\n"
    );
}

#[test]
fn auth_credentials_exposed_once() {
    let mut c = Client::with(config(), false, Some(TLS));
    c.send(EHLO);
    let mut out = Vec::new();
    let p = c.s.handle_input(b"AUTH PLAIN YQB1AHA=\r\n", 0, &mut out);
    assert_eq!(p.event, Some(Event::AuthAttempt));
    let creds = c.s.auth_credentials();
    assert_eq!(
        creds,
        Some(AuthCredentials {
            authzid: b"a",
            username: b"u",
            password: b"p"
        })
    );
    assert_eq!(c.s.auth_result(true, &mut out), Ok(None));
    assert_eq!(c.s.auth_credentials(), None);
    assert!(c.s.sasl.is_empty());
}

#[test]
fn auth_errors() {
    let mut c = tls_greeted();
    assert_eq!(
        c.send(b"AUTH LOGIN\r\n*\r\n"),
        "334 VXNlcm5hbWU6\r\n501 5.0.0 Authentication canceled\r\n"
    );
    assert_eq!(
        c.send(b"AUTH PLAIN !!!!\r\n"),
        "501 5.5.2 Cannot decode response\r\n"
    );
    assert_eq!(
        c.send(b"AUTH PLAIN dXNlcg==\r\n"),
        "501 5.5.2 Cannot decode response\r\n"
    );
    assert_eq!(
        c.send(b"AUTH CRAM-MD5\r\n"),
        "504 5.5.4 Unrecognized authentication type\r\n"
    );
    let cfg = ServerConfig {
        auth_available: false,
        ..config()
    };
    let mut c = Client::with(cfg, false, Some(TLS));
    c.send(EHLO);
    assert_eq!(
        c.send(b"AUTH PLAIN\r\n"),
        "502 5.5.1 Error: authentication not enabled\r\n"
    );
}

#[test]
fn bdat_chunks() {
    let mut c = greeted();
    c.events.clear();
    let r = c.send(
        b"MAIL FROM:<a@b.example> BODY=BINARYMIME\r\nRCPT TO:<u@example.com>\r\n\
          BDAT 5\r\nab\r\n.BDAT 3 LAST\r\nxyzNOOP\r\n",
    );
    assert_eq!(
        lines(&r),
        [
            "250 2.1.0 Ok",
            "250 2.1.5 Ok",
            "250 2.0.0 Ok: chunk received",
            "250 2.0.0 Ok: queued as Q1",
            "250 2.0.0 Ok"
        ]
    );
    assert_eq!(c.body, b"ab\r\n.xyz");
    assert_eq!(
        c.events,
        [
            Event::MailFrom,
            Event::RcptTo { index: 0 },
            Event::DataStart,
            Event::ChunkEnd,
            Event::ChunkStart,
            Event::DataEnd
        ]
    );
}

#[test]
fn bdat_zero_last() {
    let mut c = greeted();
    let r = c.send(b"MAIL FROM:<>\r\nRCPT TO:<u@example.com>\r\nBDAT 2\r\nabBDAT 0 LAST\r\n");
    assert!(
        r.ends_with("250 2.0.0 Ok: chunk received\r\n250 2.0.0 Ok: queued as Q1\r\n"),
        "{r}"
    );
    assert_eq!(c.body, b"ab");
}

#[test]
fn bdat_refused_chunk_is_discarded() {
    let mut c = greeted();
    let r = c.send(b"BDAT 10\r\nQUIT\r\nQUITNOOP\r\n");
    assert_eq!(r, "503 5.5.1 Error: need MAIL command\r\n250 2.0.0 Ok\r\n");
    assert!(!c.s.is_closed());
    assert_eq!(
        c.send(b"BDAT 0 LAST\r\n"),
        "503 5.5.1 Error: need MAIL command\r\n"
    );
}

#[test]
fn bdat_over_size_limit() {
    let mut c = greeted();
    let mut msg = b"MAIL FROM:<>\r\nRCPT TO:<u@example.com>\r\nBDAT 80\r\n".to_vec();
    msg.extend_from_slice(&[b'x'; 80]);
    msg.extend_from_slice(b"BDAT 30 LAST\r\n");
    msg.extend_from_slice(&[b'y'; 30]);
    msg.extend_from_slice(b"NOOP\r\n");
    let r = c.send(&msg);
    assert!(r.ends_with("250 2.0.0 Ok: chunk received\r\n552 5.3.4 Message size exceeds fixed maximum message size\r\n250 2.0.0 Ok\r\n"), "{r}");
    assert!(!c.events.contains(&Event::DataEnd));
}

#[test]
fn data_after_bdat_and_binarymime_rules() {
    let mut c = greeted();
    c.send(b"MAIL FROM:<>\r\nRCPT TO:<u@example.com>\r\nBDAT 1\r\nx");
    assert_eq!(
        c.send(b"DATA\r\n"),
        "503 5.5.1 Error: DATA not allowed after BDAT\r\n"
    );
    let mut c = greeted();
    c.send(b"MAIL FROM:<> BODY=BINARYMIME\r\nRCPT TO:<u@example.com>\r\n");
    assert_eq!(
        c.send(b"DATA\r\n"),
        "503 5.5.1 Error: BODY=BINARYMIME requires BDAT\r\n"
    );
}

#[test]
fn helo_session_refuses_esmtp_parameters() {
    let mut c = Client::new();
    c.send(b"HELO client\r\n");
    assert_eq!(
        c.send(b"MAIL FROM:<a@b.example> SIZE=10\r\n"),
        "555 5.5.4 Error: parameters require EHLO\r\n"
    );
    assert_eq!(c.send(b"MAIL FROM:<a@b.example>\r\n"), "250 2.1.0 Ok\r\n");
}

#[test]
fn utf8_addresses_need_smtputf8() {
    let mut c = greeted();
    let mail = "MAIL FROM:<用户@例子.example>\r\n";
    assert_eq!(
        c.send(mail.as_bytes()),
        "553 5.6.7 Non-ASCII address requires SMTPUTF8\r\n"
    );
    let mail = "MAIL FROM:<用户@例子.example> SMTPUTF8\r\n";
    assert_eq!(c.send(mail.as_bytes()), "250 2.1.0 Ok\r\n");
    let rcpt = "RCPT TO:<用户@example.com>\r\n";
    assert_eq!(c.send(rcpt.as_bytes()), "250 2.1.5 Ok\r\n");
    let mut c = greeted();
    c.send(b"MAIL FROM:<a@b.example>\r\n");
    assert!(c.send(rcpt.as_bytes()).starts_with("553 5.6.7"));
}

#[test]
fn idle_timeout() {
    let mut c = greeted();
    assert_eq!(c.s.next_deadline(), Some(300_000));
    c.now = 100_000;
    c.send(b"NOOP\r\n");
    assert_eq!(c.s.next_deadline(), Some(400_000));
    assert_eq!(c.s.handle_timeout(399_999, &mut c.out), None);
    assert_eq!(c.s.handle_timeout(400_000, &mut c.out), Some(Event::Close));
    assert_eq!(
        c.take(),
        "421 4.4.2 Error: timeout exceeded, closing connection\r\n"
    );
    assert!(c.s.is_closed());
}

#[test]
fn session_time_limit() {
    let cfg = ServerConfig {
        session_timeout_ms: 1000,
        ..config()
    };
    let mut c = Client::with(cfg, false, None);
    c.now = 999;
    c.send(EHLO);
    assert_eq!(c.s.next_deadline(), Some(1000));
    c.now = 1000;
    assert!(c.send(b"NOOP\r\n").starts_with("421 4.4.2"));
}

/// A greeted session that wants 100 octets/s over windows of 10 s.
fn rate_checked() -> Client {
    let cfg = ServerConfig {
        min_data_rate: 100,
        data_rate_window_ms: 10_000,
        ..config()
    };
    let mut c = Client::with(cfg, false, None);
    c.send(EHLO);
    c
}

#[test]
fn slow_data_is_cut_off() {
    let mut c = rate_checked();
    c.send(b"MAIL FROM:<>\r\nRCPT TO:<u@example.com>\r\nDATA\r\n");
    assert_eq!(c.s.next_deadline(), Some(10_000));
    c.now = 5_000;
    c.send(&[b'a'; 50]);
    c.now = 10_000;
    let r = c.send(b"b");
    assert_eq!(
        r,
        "421 4.4.2 Error: data rate below minimum, timeout, closing connection\r\n"
    );
    assert!(c.s.is_closed());
}

#[test]
fn fast_data_passes_the_rate_check() {
    let cfg = ServerConfig {
        min_data_rate: 1,
        data_rate_window_ms: 10_000,
        max_message_size: 1000,
        ..config()
    };
    let mut c = Client::with(cfg, false, None);
    c.send(EHLO);
    c.send(b"MAIL FROM:<>\r\nRCPT TO:<u@example.com>\r\nDATA\r\n");
    c.now = 9_000;
    c.send(&[b'a'; 20]);
    assert_eq!(c.s.handle_timeout(10_000, &mut c.out), None);
    assert_eq!(c.s.next_deadline(), Some(20_000));
    c.now = 12_000;
    assert!(c.send(b"\r\n.\r\n").ends_with("queued as Q1\r\n"));
}

#[test]
fn received_header_from_session() {
    let mut c = Client::with(config(), false, Some(TLS));
    c.send(EHLO);
    c.send(b"AUTH PLAIN AHVzZXIAcGFzcw==\r\nMAIL FROM:<>\r\nRCPT TO:<u@example.com>\r\n");
    let mut out = Vec::new();
    c.s.write_received(&mut out, None, "Q9", "Thu, 01 Jan 1970 00:00:00 +0000");
    let h = String::from_utf8_lossy(&out);
    assert!(
        h.starts_with("Received: from client.example ([192.0.2.9])\r\n"),
        "{h}"
    );
    assert!(
        h.contains("with ESMTPSA id Q9\r\n\tfor <u@example.com>;"),
        "{h}"
    );
}

/// Feeds `input` in pieces cut at `cuts`, returning all output.
fn run_split(input: &[u8], cuts: &[usize], dst_len: usize) -> (String, Vec<u8>, Vec<Event>) {
    let mut c = Client::new();
    c.dst_len = dst_len;
    let mut out = c.take();
    let mut last = 0;
    for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
        let cut = cut.clamp(last, input.len());
        out += &c.send(&input[last..cut]);
        last = cut;
    }
    (out, c.body, c.events)
}

const TRANSCRIPT: &[u8] =
    b"EHLO c\r\nMAIL FROM:<a@b.example> SIZE=50\r\nRCPT TO:<u@example.com>\r\n\
    DATA\r\nSubject: x\r\n\r\n..a\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<v@example.com>\r\nBDAT 4\r\n\
    \r\n.\r\nBDAT 2 LAST\r\nokNOOP\r\nBAD\r\nQUIT\r\n";

#[test]
fn transcript_split_at_every_point() {
    let whole = run_split(TRANSCRIPT, &[], 4096);
    assert!(whole
        .0
        .ends_with("500 5.5.2 Error: command not recognized\r\n221 2.0.0 Bye\r\n"));
    for cut in 0..TRANSCRIPT.len() {
        assert_eq!(run_split(TRANSCRIPT, &[cut], 4096), whole, "cut at {cut}");
    }
}

/// Protocol fragments that reach deep states quickly.
const PARTS: [&[u8]; 15] = [
    b"EHLO x\r\n",
    b"MAIL FROM:<a@b.c>\r\n",
    b"RCPT TO:<u@example.com>\r\n",
    b"DATA\r\n",
    b"BDAT 3\r\n",
    b"BDAT 1 LAST\r\n",
    b"\r\n.\r\n",
    b"STARTTLS\r\n",
    b"AUTH PLAIN\r\n",
    b"AHVzZXIAcGFzcw==\r\n",
    b"RSET\r\n",
    b"\n.\n",
    b"abc",
    b"\r",
    b"\n",
];

proptest! {
    #[test]
    fn transcript_split_anywhere(mut cuts in proptest::collection::vec(0usize..400, 0..12), dst in 1usize..64) {
        cuts.sort_unstable();
        let whole = run_split(TRANSCRIPT, &[], 4096);
        prop_assert_eq!(run_split(TRANSCRIPT, &cuts, dst), whole);
    }

    #[test]
    fn session_never_panics(input in proptest::collection::vec(any::<u8>(), 0..600)) {
        crate::smtp::fuzzing::smtp_server(&input);
    }

    #[test]
    fn session_never_panics_on_commands(picks in proptest::collection::vec(0usize..PARTS.len(), 0..40)) {
        let input: Vec<u8> = picks.iter().flat_map(|&i| PARTS[i].iter().copied()).collect();
        crate::smtp::fuzzing::smtp_server(&input);
    }
}

#[test]
fn body_transfer_has_its_own_inactivity_limit() {
    let cfg = ServerConfig {
        min_data_rate: 0,
        command_timeout_ms: 1_000,
        data_timeout_ms: 5_000,
        ..config()
    };
    let mut c = Client::with(cfg, false, None);
    c.send(EHLO);
    c.send(b"MAIL FROM:<>\r\nRCPT TO:<u@example.com>\r\nDATA\r\n");
    assert_eq!(c.s.next_deadline(), Some(5_000));
    assert_eq!(c.s.handle_timeout(4_999, &mut c.out), None);
    assert_eq!(c.s.handle_timeout(5_000, &mut c.out), Some(Event::Close));
}

#[test]
fn failed_spool_answers_451_at_mail() {
    let mut c = greeted();
    c.s.set_spool_failed(true);
    assert!(c
        .send(b"MAIL FROM:<a@example.com>\r\n")
        .starts_with("451 4.3.0"));
    c.s.set_spool_failed(false);
    assert!(c.send(b"MAIL FROM:<a@example.com>\r\n").starts_with("250"));
}

#[test]
fn small_body_input_waits_unless_it_may_end_the_body() {
    let cfg = ServerConfig {
        max_message_size: 100_000,
        ..config()
    };
    let mut c = Client::with(cfg.clone(), false, None);
    c.send(EHLO);
    c.send(b"MAIL FROM:<>\r\nRCPT TO:<u@example.com>\r\nDATA\r\n");
    assert!(!c.s.body_input_ready(b"", 16));
    assert!(!c.s.body_input_ready(b"abc", 16));
    assert!(!c.s.body_input_ready(b"abc\r\n.\r", 16));
    assert!(c.s.body_input_ready(b"0123456789abcdef", 16));
    assert!(c.s.body_input_ready(b"abc\r\n.\r\n", 16));
    assert!(c.s.body_input_ready(b"\n", 16));
    assert!(c.s.body_input_ready(b"\r\nMAIL", 16));
    let mut b = Client::with(cfg, false, None);
    b.send(EHLO);
    b.send(b"MAIL FROM:<>\r\nRCPT TO:<u@example.com>\r\nBDAT 5 LAST\r\n");
    assert!(!b.s.body_input_ready(b"abcd", 16));
    assert!(b.s.body_input_ready(b"abcde", 16));
}

#[test]
fn bdat_chunks_per_message_are_capped() {
    let cfg = ServerConfig {
        max_message_size: 1 << 20,
        ..config()
    };
    let mut c = Client::with(cfg, false, None);
    c.send(EHLO);
    c.send(b"MAIL FROM:<>\r\nRCPT TO:<u@example.com>\r\n");
    let chunks = b"BDAT 1\r\nx".repeat(MAX_BDAT_CHUNKS as usize);
    let r = c.send(&chunks);
    assert_eq!(
        r.matches("250 2.0.0 Ok: chunk received").count(),
        MAX_BDAT_CHUNKS as usize
    );
    let r = c.send(b"BDAT 3 LAST\r\nxyzRCPT TO:<u@example.com>\r\n");
    assert_eq!(
        r,
        "552 5.3.4 Too many BDAT chunks for one message\r\n503 5.5.1 Error: need MAIL command\r\n"
    );
    assert!(!c.events.contains(&Event::DataEnd));
    // The next message starts with a count of its own.
    let r = c.send(b"MAIL FROM:<>\r\nRCPT TO:<u@example.com>\r\nBDAT 1\r\nyBDAT 1 LAST\r\nz");
    assert!(
        r.ends_with("chunk received\r\n250 2.0.0 Ok: queued as Q1\r\n"),
        "{r}"
    );
}

#[test]
fn one_rate_window_spans_all_bdat_chunks_of_a_message() {
    let mut c = rate_checked();
    c.send(b"MAIL FROM:<>\r\nRCPT TO:<u@example.com>\r\nBDAT 1\r\nx");
    // Between chunks, the window still runs.
    assert_eq!(c.s.next_deadline(), Some(10_000));
    c.now = 6_000;
    assert!(c.send(b"BDAT 1\r\nx").ends_with("chunk received\r\n"));
    c.now = 10_000;
    assert_eq!(
        c.send(b"BDAT 1\r\nx"),
        "421 4.4.2 Error: data rate below minimum, timeout, closing connection\r\n"
    );
    assert!(c.s.is_closed());
}

#[test]
fn commands_that_move_no_mail_count_as_errors_beyond_their_limit() {
    let cfg = ServerConfig {
        max_junk_commands: 3,
        max_errors: 4,
        ..config()
    };
    let mut c = Client::with(cfg, false, None);
    c.send(b"EHLO a\r\nNOOP\r\nRSET\r\n");
    assert_eq!(c.s.error_count(), 0);
    c.send(b"HELP\r\nVRFY x\r\n");
    assert_eq!(c.s.error_count(), 2);
    // A message accepted starts the count again.
    c.send(b"MAIL FROM:<>\r\nRCPT TO:<u@example.com>\r\nDATA\r\nx\r\n.\r\n");
    c.send(b"NOOP\r\nNOOP\r\nNOOP\r\n");
    assert_eq!(c.s.error_count(), 2);
    let r = c.send(b"EHLO a\r\nEHLO a\r\nNOOP\r\n");
    assert!(
        r.ends_with("421 4.7.0 Too many errors, closing connection\r\n"),
        "{r}"
    );
    assert!(c.s.is_closed());
}

#[test]
fn session_time_counts_from_connect() {
    let cfg = ServerConfig {
        session_timeout_ms: 1000,
        ..config()
    };
    let peer = PeerInfo {
        ip: IpAddr::from([192, 0, 2, 9]),
        relay_allowed: false,
    };
    // The handshake of an implicit-TLS connection took 900 ms.
    let mut s = Session::new(Arc::new(cfg), peer, Some(TLS), 900);
    s.set_connected_at(0);
    assert_eq!(s.next_deadline(), Some(1000));
}

#[test]
fn a_throttled_auth_attempt_gets_454_and_counts_as_an_error() {
    let mut c = tls_greeted();
    let p =
        c.s.handle_input(b"AUTH PLAIN AHVzZXIAcGFzcw==\r\n", 0, &mut c.out);
    assert_eq!(p.event, Some(Event::AuthAttempt));
    assert_eq!(c.s.auth_throttled(&mut c.out), Ok(None));
    assert_eq!(
        c.take(),
        "454 4.7.0 Too many failed authentications, try again later\r\n"
    );
    assert_eq!(c.s.error_count(), 1);
    assert!(!c.s.is_authenticated());
    assert!(c.s.auth_credentials().is_none());
    assert_eq!(c.s.auth_throttled(&mut c.out), Err(Misuse));
}
