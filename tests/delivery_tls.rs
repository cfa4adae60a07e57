//! STARTTLS on the delivery path, petrel to petrel: one daemon relays to
//! another whose listener has a certificate, under each `[delivery] tls`
//! policy. The receiving daemon's `Received:` header says whether the
//! message came over TLS (`with ESMTPS`).

mod common;
#[path = "support/dns_server.rs"]
mod dns_server;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{contains, inspect, segment_bytes, send_message, total_queued, Daemon, TestCert};
use dns_server::{DnsServer, Zone};

const WAIT: Duration = Duration::from_secs(20);

/// The receiving side: delivery paused, STARTTLS with the test certificate.
fn receiver(dir: &Path, cert: &TestCert) -> Daemon {
    Daemon::start_plain(
        dir,
        &dir.join("rx-spool"),
        "shards = 1",
        &cert.listener_lines(),
        "",
    )
}

/// The sending side, relaying everything to `relay` under `delivery`.
fn sender(dir: &Path, relay: &str, delivery: &str, dns: Option<&DnsServer>) -> Daemon {
    let dns = match dns {
        Some(d) => format!("[dns]\nservers = [\"{}\"]\ntimeout = \"1s\"\n", d.addr()),
        None => String::new(),
    };
    Daemon::start_plain(
        dir,
        &dir.join("tx-spool"),
        "shards = 1",
        "",
        &format!(
            "{dns}[delivery]\nretry = [\"1s\"]\nidle_timeout = \"1s\"\n{delivery}\n\n\
             [[route]]\ndomain = \"*\"\nrelay = \"{relay}\"\n"
        ),
    )
}

fn send_one(d: &Daemon) {
    let mut c = d.connect();
    c.hello();
    send_message(
        &mut c,
        &["user@remote.test"],
        "Subject: tls\r\n\r\nover the wire\r\n",
    );
    c.cmd("QUIT", "221");
}

/// Waits until `spool` holds `n` queued messages.
fn wait_queued(spool: &Path, n: usize) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if total_queued(&inspect(spool)) == n {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn opportunistic_tls_encrypts_without_verifying() {
    let dir = tempfile::tempdir().unwrap();
    let cert = TestCert::new(dir.path());
    let rx = receiver(dir.path(), &cert);
    // An IP relay cannot match the certificate's names: opportunistic TLS
    // encrypts anyway.
    let tx = sender(dir.path(), &format!("127.0.0.1:{}", rx.port()), "", None);
    send_one(&tx);
    assert!(
        wait_queued(&dir.path().join("rx-spool"), 1),
        "{}",
        tx.stderr()
    );
    assert!(
        wait_queued(&dir.path().join("tx-spool"), 0),
        "{}",
        tx.stderr()
    );
    let rx_bytes = segment_bytes(&dir.path().join("rx-spool"));
    assert!(contains(&rx_bytes, b"with ESMTPS"), "not received over TLS");
    assert!(contains(&rx_bytes, b"over the wire"));
}

#[test]
fn required_tls_verifies_against_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    let cert = TestCert::new(dir.path());
    let rx = receiver(dir.path(), &cert);
    let dns = DnsServer::start(Zone::new().a("mta.example.test", "127.0.0.1"));
    let delivery = format!(
        "tls = \"required\"\ntls_ca_file = \"{}\"",
        cert.cert_path.display()
    );
    let tx = sender(
        dir.path(),
        &format!("mta.example.test:{}", rx.port()),
        &delivery,
        Some(&dns),
    );
    send_one(&tx);
    assert!(
        wait_queued(&dir.path().join("rx-spool"), 1),
        "{}",
        tx.stderr()
    );
    assert!(contains(
        &segment_bytes(&dir.path().join("rx-spool")),
        b"with ESMTPS"
    ));
}

#[test]
fn required_tls_defers_when_the_certificate_does_not_verify() {
    let dir = tempfile::tempdir().unwrap();
    let cert = TestCert::new(dir.path());
    let rx = receiver(dir.path(), &cert);
    // Verified against the CA, but the name (an IP) is not in the
    // certificate: no delivery, and the message stays queued.
    let delivery = format!(
        "tls = \"required\"\ntls_ca_file = \"{}\"",
        cert.cert_path.display()
    );
    let tx = sender(
        dir.path(),
        &format!("127.0.0.1:{}", rx.port()),
        &delivery,
        None,
    );
    send_one(&tx);
    let deadline = Instant::now() + WAIT;
    while !tx.stderr().contains("deferred") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = tx.stderr();
    assert!(log.contains("TLS handshake"), "{log}");
    assert!(log.contains("deferred"), "{log}");
    assert_eq!(total_queued(&inspect(&dir.path().join("rx-spool"))), 0);
    assert_eq!(total_queued(&inspect(&dir.path().join("tx-spool"))), 1);
}

#[test]
fn disabled_tls_sends_in_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let cert = TestCert::new(dir.path());
    let rx = receiver(dir.path(), &cert);
    let tx = sender(
        dir.path(),
        &format!("127.0.0.1:{}", rx.port()),
        "tls = \"disabled\"",
        None,
    );
    send_one(&tx);
    assert!(
        wait_queued(&dir.path().join("rx-spool"), 1),
        "{}",
        tx.stderr()
    );
    let rx_bytes = segment_bytes(&dir.path().join("rx-spool"));
    assert!(
        contains(&rx_bytes, b"with ESMTP "),
        "expected plaintext ESMTP"
    );
    assert!(!contains(&rx_bytes, b"with ESMTPS"));
}
