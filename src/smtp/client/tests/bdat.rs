//! CHUNKING: BDAT framing, refused chunks, BINARYMIME.

use super::*;
use OutcomeKind::{Delivered, Failed};

const EHLO_CHUNKING: &[u8] = b"250-mx.test\r\n250-PIPELINING\r\n250-CHUNKING\r\n\
250-BINARYMIME\r\n250 8BITMIME\r\n";

fn chunking_client() -> H {
    let mut h = H::with(ClientConfig {
        chunking: true,
        ..H::config(TlsPolicy::Opportunistic)
    });
    h.feed(b"220 mx.test\r\n");
    h.feed(EHLO_CHUNKING);
    assert_eq!(h.take_events(), [Event::Ready]);
    h
}

#[test]
fn bdat_chunks_without_stuffing() {
    let mut h = chunking_client();
    let r = [rcpt("a@x.test")];
    assert_eq!(
        h.start(&tx(&r)),
        "MAIL FROM:<s@example.org>\r\nRCPT TO:<a@x.test>\r\n"
    );
    h.feed(b"250 ok\r\n250 ok\r\n");
    assert_eq!(h.take_events(), [Event::SendBody]);
    let mut out = Vec::new();
    assert_eq!(h.c.encode_body(b".a\n", 0, &mut out), Ok(()));
    assert_eq!(h.c.encode_body(b"", 0, &mut out), Ok(()));
    assert_eq!(h.c.encode_body(b"b\r", 0, &mut out), Ok(()));
    // A chunk's reply may come while the body is still being fed.
    h.feed(b"250 2.0.0 chunk ok\r\n");
    assert!(h.take_events().is_empty());
    assert_eq!(h.c.finish_body(0, &mut out), Ok(()));
    assert_eq!(
        String::from_utf8_lossy(&out),
        "BDAT 4\r\n.a\r\nBDAT 2\r\nb\rBDAT 1 LAST\r\n\n"
    );
    h.feed(b"250 2.0.0 chunk ok\r\n250 2.0.0 queued\r\n");
    assert_eq!(h.take_events(), [Event::TransactionDone]);
    assert_eq!(h.verdicts(), [(Delivered, 250)]);
    assert!(h.start(&tx(&r)).starts_with("MAIL "), "no RSET after LAST");
}

#[test]
fn refused_chunk_stops_the_body() {
    let mut h = chunking_client();
    let r = [rcpt("a@x.test"), rcpt("b@x.test")];
    h.start(&tx(&r));
    h.feed(b"250 ok\r\n250 ok\r\n550 no\r\n");
    h.take_events();
    assert_eq!(h.body(&[b"one"]), "BDAT 3\r\noneBDAT 2 LAST\r\n\r\n");
    h.feed(b"552 5.3.4 too big\r\n");
    assert!(h.take_events().is_empty(), "LAST is still unanswered");
    h.feed(b"503 5.5.1 no transaction\r\n");
    assert_eq!(h.take_events(), [Event::TransactionDone]);
    assert_eq!(h.verdicts(), [(Failed, 552), (Failed, 550)]);
    assert!(h.start(&tx(&r)).starts_with("RSET\r\n"));
}

#[test]
fn refused_chunk_before_finish() {
    let mut h = chunking_client();
    let r = [rcpt("a@x.test")];
    h.start(&tx(&r));
    h.feed(b"250 ok\r\n250 ok\r\n");
    let mut out = Vec::new();
    assert_eq!(h.c.encode_body(b"one", 0, &mut out), Ok(()));
    h.feed(b"451 4.3.0 disk\r\n");
    assert_eq!(h.c.encode_body(b"two", 0, &mut out), Ok(()));
    assert_eq!(h.c.finish_body(0, &mut out), Ok(()));
    assert_eq!(out, b"BDAT 3\r\none");
    assert_eq!(h.take_events(), [Event::SendBody, Event::TransactionDone]);
    assert_eq!(h.verdicts(), [(OutcomeKind::Deferred, 451)]);
}

#[test]
fn nobody_accepted_sends_no_bdat() {
    let mut h = chunking_client();
    let r = [rcpt("a@x.test")];
    h.start(&tx(&r));
    assert_eq!(h.feed(b"250 ok\r\n550 no\r\n"), "");
    assert_eq!(h.take_events(), [Event::TransactionDone]);
    assert_eq!(h.verdicts(), [(Failed, 550)]);
}

#[test]
fn binary_body_goes_untouched() {
    let mut h = H::ready(EHLO_CHUNKING);
    let r = [rcpt("a@x.test")];
    let mut t = tx(&r);
    t.body = Body::BinaryMime;
    assert!(h
        .start(&t)
        .starts_with("MAIL FROM:<s@example.org> BODY=BINARYMIME\r\n"));
    h.feed(b"250 ok\r\n250 ok\r\n");
    assert_eq!(h.body(&[b"\0\n.\r"]), "BDAT 4\r\n\0\n.\rBDAT 0 LAST\r\n");
    h.feed(b"250 ok\r\n250 ok\r\n");
    assert_eq!(h.verdicts(), [(Delivered, 250)]);
}

#[test]
fn chunking_off_uses_data() {
    let mut h = H::ready(EHLO_CHUNKING);
    let r = [rcpt("a@x.test")];
    assert!(h.start(&tx(&r)).ends_with("DATA\r\n"));
}
