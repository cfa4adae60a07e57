//! DKIM signing end to end: `petrel run` with `[[dkim]]` keys made by
//! `petrel dkim keygen` relays mail to a capturing test server, and each
//! captured message's signatures are checked with ring's verifier, the
//! public key taken from the DNS record keygen printed. (The interop
//! tests check the same mail with dkimpy, a verifier no one here wrote.)

mod common;
#[path = "support/dkim.rs"]
mod dkim;
#[path = "support/smtp_server.rs"]
mod smtp_server;

use std::net::{IpAddr, Ipv4Addr};

use common::tempdir;
use smtp_server::{Script, SmtpServer};

fn tag(tags: &[(String, String)], name: &str) -> String {
    tags.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

#[test]
fn relayed_mail_is_signed_with_every_matching_key_and_verifies() {
    let dir = tempdir();
    let keys = dir.path().join("keys");
    let rsa = dkim::keygen(&keys, "rsa", "example.com", "r2026");
    let ed = dkim::keygen(&keys, "ed25519", "example.com", "e2026");
    let relay = SmtpServer::start(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 0, Script::accept());
    let d = dkim::daemon(dir.path(), &[&rsa, &ed], &relay);
    let mut c = d.connect();
    c.hello();
    let signed = b"From: Alice <alice@news.example.com>\r\n\
        To: rcpt@example.net\r\n\
        Subject: signed\r\n\
        X-Petrel-Note: not signed\r\n\
        \r\n\
        Hello\r\n\
        ..a line that starts with a dot\r\n";
    dkim::send(&mut c, "alice@news.example.com", "", signed);
    let unsigned = b"From: bob@other.example\r\nSubject: unsigned\r\n\r\nHi\r\n";
    dkim::send(&mut c, "bob@other.example", "", unsigned);
    c.cmd("QUIT", "221");

    let got = dkim::captured(&relay, 2);
    let find = |subject: &str| {
        got.iter()
            .find(|m| {
                m.client_header()
                    .windows(subject.len())
                    .any(|w| w == subject.as_bytes())
            })
            .unwrap_or_else(|| panic!("no message with {subject}"))
    };
    let m = find("Subject: signed");
    assert_eq!(
        m.signatures.len(),
        2,
        "{}",
        String::from_utf8_lossy(&m.message)
    );
    assert!(
        m.message.starts_with(b"DKIM-Signature:"),
        "signatures come first"
    );
    assert!(
        m.body
            .ends_with(b"Hello\r\n.a line that starts with a dot\r\n"),
        "the body is unstuffed in the store and stuffed on the wire"
    );
    for (field, key) in m.signatures.iter().zip([&rsa, &ed]) {
        let tags = petrel::dkim::verify::verify(field, &m.header, &m.body, &key.public)
            .unwrap_or_else(|e| panic!("{}: {e}\n{field}", key.algorithm));
        assert_eq!(tag(&tags, "d"), "example.com");
        assert_eq!(tag(&tags, "s"), key.selector);
        assert_eq!(tag(&tags, "a"), key.algorithm);
        assert_eq!(tag(&tags, "c"), "relaxed/relaxed");
        assert_eq!(tag(&tags, "h"), "From:From:To:Subject");
        // A changed body or header does not verify.
        assert!(petrel::dkim::verify::verify(field, &m.header, b"Hello\r\n", &key.public).is_err());
        let forged = String::from_utf8_lossy(&m.header).replace("Subject: signed", "Subject: x");
        assert!(
            petrel::dkim::verify::verify(field, forged.as_bytes(), &m.body, &key.public).is_err()
        );
    }
    let m = find("Subject: unsigned");
    assert!(
        m.signatures.is_empty(),
        "{}",
        String::from_utf8_lossy(&m.message)
    );
    assert!(m.message.starts_with(b"Received: "));
    assert_eq!(
        m.client_header(),
        b"From: bob@other.example\r\nSubject: unsigned\r\n\r\n"
    );
    assert_eq!(m.body, b"Hi\r\n");
    d.stop();
}
