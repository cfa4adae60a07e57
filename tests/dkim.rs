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
    let (_dir, d) = signs_with_every_matching_key("");
    assert_eq!(threads_named(d.pid(), "petrel-dkim"), 0);
    d.stop();
}

#[test]
fn relayed_mail_signed_on_the_signing_threads_verifies_the_same() {
    let (_dir, d) = signs_with_every_matching_key("[signing]\nthreads = 2\n");
    assert_eq!(threads_named(d.pid(), "petrel-dkim"), 2);
    d.stop();
}

/// The threads of process `pid` named `name`.
fn threads_named(pid: u32, name: &str) -> usize {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc");
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == name)
        .count()
}

/// Relays a message an RSA and an Ed25519 key sign and one no key signs
/// through a daemon with `more` config, and checks what arrives; the
/// daemon, still running, and its directory.
fn signs_with_every_matching_key(more: &str) -> (tempfile::TempDir, common::Daemon) {
    let dir = tempdir();
    let keys = dir.path().join("keys");
    let rsa = dkim::keygen(&keys, "rsa", "example.com", "r2026");
    let ed = dkim::keygen(&keys, "ed25519", "example.com", "e2026");
    let relay = SmtpServer::start(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 0, Script::accept());
    let d = dkim::daemon_with(dir.path(), &[&rsa, &ed], &relay, "", more);
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
    (dir, d)
}

/// Sends one message from alice@example.com and returns it as the
/// relay got it, the `n`th to arrive there.
fn relay_next(d: &common::Daemon, relay: &SmtpServer, n: usize) -> dkim::Captured {
    let mut c = d.connect();
    c.hello();
    let message = format!("From: alice@example.com\r\nSubject: message {n}\r\n\r\nHello\r\n");
    dkim::send(&mut c, "alice@example.com", "", message.as_bytes());
    c.cmd("QUIT", "221");
    dkim::captured(relay, n).remove(n - 1)
}

/// Whether the only signature of `m` verifies with `key`.
fn verifies_with(m: &dkim::Captured, key: &dkim::Key) -> bool {
    assert_eq!(
        m.signatures.len(),
        1,
        "{}",
        String::from_utf8_lossy(&m.message)
    );
    petrel::dkim::verify::verify(&m.signatures[0], &m.header, &m.body, &key.public).is_ok()
}

#[test]
fn a_reload_signs_with_the_new_key_and_a_broken_key_keeps_the_running_one() {
    let dir = tempdir();
    let a = dkim::keygen(&dir.path().join("a"), "ed25519", "example.com", "s1");
    let b = dkim::keygen(&dir.path().join("b"), "ed25519", "example.com", "s1");
    let live = dir.path().join("live.pem");
    std::fs::copy(&a.path, &live).unwrap();
    let entry = format!(
        "[[dkim]]\ndomain = \"example.com\"\nselector = \"s1\"\n\
         private_key = {live:?}\nalgorithm = \"ed25519-sha256\"\n"
    );
    let relay = SmtpServer::start(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 0, Script::accept());
    let d = dkim::daemon_with(dir.path(), &[], &relay, "", &entry);
    let first = relay_next(&d, &relay, 1);
    assert!(verifies_with(&first, &a));
    assert!(!verifies_with(&first, &b), "the check can fail");

    std::fs::copy(&b.path, &live).unwrap();
    d.signal("HUP");
    assert!(
        common::wait_log(&d, "reload: configuration applied", dkim::ARRIVAL),
        "{}",
        d.stderr()
    );
    // Each shard takes the new keys at its next tick: until then mail is
    // still signed with A; from then on with B, and never again with A.
    let mut n = 2;
    while !verifies_with(&relay_next(&d, &relay, n), &b) {
        assert!(n < 50, "key B never signed: {}", d.stderr());
        n += 1;
    }
    let after = relay_next(&d, &relay, n + 1);
    assert!(verifies_with(&after, &b) && !verifies_with(&after, &a));

    // A key file that no longer parses: the reload is refused, says why
    // and where, and B goes on signing.
    std::fs::write(&live, "not a key\n").unwrap();
    d.signal("HUP");
    assert!(
        common::wait_log(&d, "reload refused", dkim::ARRIVAL),
        "{}",
        d.stderr()
    );
    let log = d.stderr();
    let refused = log.lines().find(|l| l.contains("reload refused")).unwrap();
    assert!(
        refused.contains(&live.display().to_string()) && refused.contains("no private key"),
        "{refused}"
    );
    let kept = relay_next(&d, &relay, n + 2);
    assert!(verifies_with(&kept, &b) && !verifies_with(&kept, &a));
    d.stop();
}

/// The value of counter `name` whose `result` is `result` in the admin
/// endpoint's `/metrics` at `port`.
fn counter(port: u16, name: &str, result: &str) -> f64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("admin endpoint");
    write!(s, "GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("metrics parse");
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && s.labels.get("result") == Some(result))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) => v,
            _ => panic!("{name} is not a counter"),
        })
        .sum()
}

#[test]
fn a_message_that_cannot_be_signed_goes_out_unsigned_logged_and_counted() {
    // The one failure a message can cause: a header section over 1 MiB,
    // which is not copied to be signed. It takes segments over 1 MiB.
    let dir = tempdir();
    let key = dkim::keygen(&dir.path().join("keys"), "ed25519", "example.com", "s1");
    let relay = SmtpServer::start(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 0, Script::accept());
    let admin = common::free_port();
    let d = common::with_segment_size(8 << 20, || {
        dkim::daemon_with(
            dir.path(),
            &[&key],
            &relay,
            "max_message_size = 4000000",
            &format!("[admin]\naddress = \"127.0.0.1:{admin}\"\n"),
        )
    });
    let mut c = d.connect();
    c.hello();
    let mut message = b"From: alice@example.com\r\nSubject: huge header\r\n".to_vec();
    let filler = [b'x'; 900];
    for i in 0..1200 {
        message.extend_from_slice(format!("X-Filler-{i}: ").as_bytes());
        message.extend_from_slice(&filler);
        message.extend_from_slice(b"\r\n");
    }
    message.extend_from_slice(b"\r\nbody\r\n");
    let id = dkim::send(&mut c, "alice@example.com", "", &message);
    // A message that can be signed, for the other count.
    let small = b"From: alice@example.com\r\nSubject: small\r\n\r\nHi\r\n";
    dkim::send(&mut c, "alice@example.com", "", small);
    c.cmd("QUIT", "221");
    let got = dkim::captured(&relay, 2);
    let huge = got
        .iter()
        .find(|m| m.body == b"body\r\n")
        .expect("the huge message");
    assert!(huge.signatures.is_empty(), "it goes unsigned");
    assert!(huge.message.starts_with(b"Received: "));
    assert!(huge.message.ends_with(&message), "and otherwise unchanged");
    let log = d.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("DKIM signing failed"))
        .unwrap_or_else(|| panic!("no failure logged: {log}"));
    assert!(line.contains(&id) && line.contains("longer than"), "{line}");
    let count = |result| counter(admin, "petrel_dkim_signatures_total", result);
    assert_eq!((count("failed"), count("signed")), (1.0, 1.0));
    d.stop();
}
