//! Client tests: byte strings in, commands and events out, on virtual time.
//! This file holds the harness and the session setup (greeting, EHLO/HELO,
//! STARTTLS); transactions, timeouts, the body encoder and the pairing
//! with the real server machine live in the submodules.

mod bdat;
mod body;
mod failures;
mod lmtp;
mod pair;
mod pipelined;
mod transaction;

use super::*;

pub(super) const EHLO_PIPELINING: &[u8] = b"250-mx.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n\
250-8BITMIME\r\n250-SMTPUTF8\r\n250-DSN\r\n250 ENHANCEDSTATUSCODES\r\n";
pub(super) const EHLO_LOCKSTEP: &[u8] = b"250-mx.test\r\n250 8BITMIME\r\n";
const EHLO_TLS: &[u8] = b"250-mx.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n";

/// One client machine and everything it produced.
pub(super) struct H {
    pub c: Client,
    pub out: Vec<u8>,
    pub now: u64,
    pub events: Vec<Event>,
}

impl H {
    pub fn with(cfg: ClientConfig) -> Self {
        H {
            c: Client::new(Arc::new(cfg), 0),
            out: Vec::new(),
            now: 0,
            events: Vec::new(),
        }
    }

    pub fn config(tls: TlsPolicy) -> ClientConfig {
        ClientConfig {
            helo_name: "client.test".into(),
            tls,
            timeouts: Timeouts::default(),
            chunking: false,
            lmtp: false,
        }
    }

    pub fn new() -> Self {
        Self::with(Self::config(TlsPolicy::Opportunistic))
    }

    /// A client past greeting and EHLO with `ehlo` as the reply.
    pub fn ready(ehlo: &[u8]) -> Self {
        let mut h = H::new();
        assert_eq!(h.feed(b"220 mx.test ESMTP\r\n"), "EHLO client.test\r\n");
        h.feed(ehlo);
        assert_eq!(h.take_events(), [Event::Ready]);
        h
    }

    /// Feeds `input` whole; returns what the client wrote.
    pub fn feed(&mut self, input: &[u8]) -> String {
        let used = self.c.handle_input(input, self.now, &mut self.out);
        assert_eq!(used, input.len(), "input left over");
        self.collect();
        self.sent()
    }

    pub fn collect(&mut self) {
        while let Some(e) = self.c.poll_event() {
            self.events.push(e);
        }
    }

    pub fn take_events(&mut self) -> Vec<Event> {
        self.collect();
        std::mem::take(&mut self.events)
    }

    pub fn sent(&mut self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut self.out)).into_owned()
    }

    pub fn start(&mut self, t: &Transaction<'_>) -> String {
        assert_eq!(self.c.start_transaction(t, self.now, &mut self.out), Ok(()));
        self.collect();
        self.sent()
    }

    pub fn body(&mut self, chunks: &[&[u8]]) -> String {
        for chunk in chunks {
            assert_eq!(self.c.encode_body(chunk, self.now, &mut self.out), Ok(()));
        }
        assert_eq!(self.c.finish_body(self.now, &mut self.out), Ok(()));
        self.sent()
    }

    /// (kind, code) per recipient, in order.
    pub fn verdicts(&mut self) -> Vec<(OutcomeKind, u16)> {
        let o = self.c.take_outcomes();
        assert!(o.iter().enumerate().all(|(i, r)| r.index == i));
        o.iter().map(|r| (r.kind, r.reply.code)).collect()
    }
}

pub(super) fn rcpt(address: &'static str) -> TxRecipient<'static> {
    TxRecipient {
        address: address.as_bytes(),
        notify: 0,
        orcpt: b"",
    }
}

pub(super) fn tx<'a>(recipients: &'a [TxRecipient<'a>]) -> Transaction<'a> {
    Transaction {
        reverse_path: b"s@example.org",
        recipients,
        size: 100,
        body: Body::SevenBit,
        smtputf8: false,
        ret: None,
        envid: b"",
    }
}

#[test]
fn greeting_ehlo_ready() {
    let h = H::ready(EHLO_PIPELINING);
    let e = h.c.extensions();
    assert!(e.pipelining && e.eight_bit_mime && e.smtputf8 && e.dsn);
    assert_eq!(e.size, Some(1000));
    assert!(h.c.is_ready());
    assert_eq!(h.c.next_deadline(), None);
}

#[test]
fn ehlo_refused_falls_back_to_helo() {
    let mut h = H::new();
    h.feed(b"220 old.test\r\n");
    assert_eq!(h.feed(b"502 5.5.2 What?\r\n"), "HELO client.test\r\n");
    assert_eq!(h.feed(b"250 old.test\r\n"), "");
    assert_eq!(h.take_events(), [Event::Ready]);
    assert_eq!(*h.c.extensions(), Extensions::default());
}

#[test]
fn helo_refused_tries_next_host() {
    let mut h = H::new();
    h.feed(b"220 old.test\r\n");
    h.feed(b"500 no\r\n");
    assert_eq!(h.feed(b"550 go away\r\n"), "QUIT\r\n");
    assert_eq!(h.take_events(), [Event::TryNextHost]);
    assert!(h.c.is_closed());
}

#[test]
fn ehlo_4xx_tries_next_host() {
    let mut h = H::new();
    h.feed(b"220 mx.test\r\n");
    assert_eq!(h.feed(b"451 busy\r\n"), "QUIT\r\n");
    assert_eq!(h.take_events(), [Event::TryNextHost]);
}

#[test]
fn bad_greetings_try_next_host() {
    for (greeting, wrote) in [
        (&b"421 4.3.2 too busy\r\n"[..], ""),
        (b"554 no service\r\n", "QUIT\r\n"),
        (b"450 later\r\n", "QUIT\r\n"),
        (b"220-first\r\n221 second\r\n", ""),
        (b"SSH-2.0-OpenSSH\r\n", ""),
    ] {
        let mut h = H::new();
        assert_eq!(h.feed(greeting), wrote, "{greeting:?}");
        assert_eq!(h.take_events(), [Event::TryNextHost], "{greeting:?}");
        assert!(h.c.is_closed());
        // Closed: everything further is discarded.
        assert_eq!(h.feed(b"220 late\r\n"), "");
    }
}

/// The EHLO reply split into two reads at every byte, and fed one byte
/// at a time, gives the same extensions.
#[test]
fn multi_line_reply_split_at_every_byte() {
    let whole = *H::ready(EHLO_PIPELINING).c.extensions();
    for split in 0..=EHLO_PIPELINING.len() {
        let mut h = H::new();
        h.feed(b"220 mx.test\r\n");
        let mut pending = EHLO_PIPELINING[..split].to_vec();
        let used = h.c.handle_input(&pending, 0, &mut h.out);
        assert_eq!(
            used,
            if split == EHLO_PIPELINING.len() {
                split
            } else {
                0
            }
        );
        pending.drain(..used);
        pending.extend_from_slice(&EHLO_PIPELINING[split..]);
        let used = h.c.handle_input(&pending, 0, &mut h.out);
        assert_eq!(used, pending.len());
        assert_eq!(h.take_events(), [Event::Ready], "split {split}");
        assert_eq!(*h.c.extensions(), whole);
    }
    let mut h = H::new();
    h.feed(b"220 mx.test\r\n");
    let mut pending = Vec::new();
    for &b in EHLO_PIPELINING {
        pending.push(b);
        let used = h.c.handle_input(&pending, 0, &mut h.out);
        pending.drain(..used);
    }
    assert!(pending.is_empty());
    assert_eq!(h.take_events(), [Event::Ready]);
    assert_eq!(*h.c.extensions(), whole);
}

#[test]
fn starttls_then_ehlo_again() {
    let mut h = H::new();
    h.feed(b"220 mx.test\r\n");
    assert_eq!(h.feed(EHLO_TLS), "STARTTLS\r\n");
    // Plaintext pipelined after the 220 is an injection: discarded.
    assert_eq!(h.feed(b"220 go ahead\r\n250 injected\r\n"), "");
    assert_eq!(h.take_events(), [Event::StartTls]);
    assert_eq!(h.c.next_deadline(), None);
    assert_eq!(h.c.tls_established(5, &mut h.out), Ok(()));
    assert_eq!(h.sent(), "EHLO client.test\r\n");
    assert_eq!(*h.c.extensions(), Extensions::default());
    // STARTTLS offered again over TLS is not taken twice.
    assert_eq!(h.feed(EHLO_TLS), "");
    assert_eq!(h.take_events(), [Event::Ready]);
    assert!(h.c.is_tls_active() && h.c.extensions().pipelining);
    let r = [rcpt("a@x.test")];
    h.start(&tx(&r));
    h.feed(b"250 ok\r\n250 ok\r\n354 go\r\n");
    h.body(&[b"hi"]);
    h.feed(b"250 queued\r\n");
    let o = h.c.take_outcomes();
    assert!(o[0].tls && !o[0].tls_failed_then_plaintext);
}

#[test]
fn starttls_refused_opportunistic_goes_on_in_plaintext() {
    let mut h = H::new();
    h.feed(b"220 mx.test\r\n");
    h.feed(EHLO_TLS);
    assert_eq!(h.feed(b"454 4.7.0 TLS not available\r\n"), "");
    assert_eq!(h.take_events(), [Event::Ready]);
    assert!(h.c.refusal().is_none() && !h.c.is_tls_active());
}

#[test]
fn starttls_refused_required_defers() {
    let mut h = H::with(H::config(TlsPolicy::Required));
    h.feed(b"220 mx.test\r\n");
    h.feed(EHLO_TLS);
    h.feed(b"454 4.7.0 TLS not available\r\n");
    assert_eq!(h.take_events(), [Event::Ready]);
    let r = [rcpt("a@x.test")];
    assert_eq!(h.start(&tx(&r)), "");
    assert_eq!(h.verdicts(), [(OutcomeKind::Deferred, 451)]);
}

#[test]
fn tls_required_but_not_offered_defers_everything() {
    let mut h = H::with(H::config(TlsPolicy::Required));
    h.feed(b"220 mx.test\r\n");
    assert_eq!(h.feed(EHLO_PIPELINING), "");
    assert_eq!(h.take_events(), [Event::Ready]);
    let r = [rcpt("a@x.test"), rcpt("b@x.test")];
    assert_eq!(h.start(&tx(&r)), "", "nothing may be sent in plaintext");
    assert_eq!(h.take_events(), [Event::TransactionDone]);
    let o = h.c.take_outcomes();
    assert_eq!(o.len(), 2);
    for x in &o {
        assert_eq!(x.kind, OutcomeKind::Deferred);
        assert_eq!(x.reply.text, b"TLS required but not offered");
        assert_eq!(x.reply.status.map(|s| s.to_string()), Some("4.7.10".into()));
        assert!(x.reply.local);
    }
    assert!(h.c.is_ready());
    assert_eq!(h.c.quit(0, &mut h.out), Ok(()));
    assert_eq!(h.sent(), "QUIT\r\n");
}

#[test]
fn tls_failed_opportunistic_needs_plaintext_reconnect() {
    let mut h = H::new();
    h.feed(b"220 mx.test\r\n");
    h.feed(EHLO_TLS);
    h.feed(b"220 go ahead\r\n");
    assert_eq!(h.c.tls_failed(0), Ok(()));
    assert_eq!(h.take_events(), [Event::StartTls, Event::Closed]);
    assert!(h.c.needs_plaintext_retry() && h.c.is_closed());
    assert_eq!(h.sent(), "", "nothing more on the broken stream");

    let cfg = Arc::new(H::config(TlsPolicy::Opportunistic));
    let mut h2 = H::new();
    h2.c = Client::new_plaintext_retry(cfg, 0);
    h2.feed(b"220 mx.test\r\n");
    assert_eq!(h2.feed(EHLO_TLS), "", "no second STARTTLS attempt");
    assert_eq!(h2.take_events(), [Event::Ready]);
    let r = [rcpt("a@x.test")];
    h2.start(&tx(&r));
    h2.feed(b"250 ok\r\n250 ok\r\n354 go\r\n");
    h2.body(&[]);
    h2.feed(b"250 ok\r\n");
    let o = h2.c.take_outcomes();
    assert!(o[0].tls_failed_then_plaintext && !o[0].tls);
    assert_eq!(o[0].kind, OutcomeKind::Delivered);
}

#[test]
fn tls_failed_required_defers_and_writes_nothing() {
    let mut h = H::with(H::config(TlsPolicy::Required));
    h.feed(b"220 mx.test\r\n");
    h.feed(EHLO_TLS);
    h.feed(b"220 go ahead\r\n");
    assert_eq!(h.c.tls_failed(0), Ok(()));
    assert_eq!(h.take_events(), [Event::StartTls, Event::Ready]);
    let r = [rcpt("a@x.test")];
    assert_eq!(h.start(&tx(&r)), "");
    assert_eq!(h.verdicts(), [(OutcomeKind::Deferred, 451)]);
    assert_eq!(h.c.quit(0, &mut h.out), Ok(()));
    assert_eq!(h.sent(), "");
    assert_eq!(h.take_events(), [Event::TransactionDone, Event::Closed]);
}

#[test]
fn tls_disabled_never_starts_tls() {
    let mut h = H::with(H::config(TlsPolicy::Disabled));
    h.feed(b"220 mx.test\r\n");
    assert_eq!(h.feed(EHLO_TLS), "");
    assert_eq!(h.take_events(), [Event::Ready]);
}

#[test]
fn tls_calls_out_of_turn_are_misuse() {
    let mut h = H::ready(EHLO_PIPELINING);
    assert_eq!(h.c.tls_established(0, &mut h.out), Err(Misuse::NotWaiting));
    assert_eq!(h.c.tls_failed(0), Err(Misuse::NotWaiting));
    let mut fresh = H::new();
    assert_eq!(fresh.c.quit(0, &mut fresh.out), Err(Misuse::NotWaiting));
}
