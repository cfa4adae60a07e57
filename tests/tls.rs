//! STARTTLS, implicit TLS and AUTH against the running daemon, with a
//! certificate made in the test and a users file made by `petrel passwd`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    advertises, contains, inspect, queued_id, segment_bytes, tempdir, total_queued, users_file,
    write, Client, Daemon, Listener, TestCert,
};

const USER: &str = "bob";
const PASSWORD: &str = "correct horse battery staple";

/// base64 without line breaks (RFC 4648 alphabet, padded).
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn plain_response(user: &str, password: &str) -> String {
    base64(format!("\0{user}\0{password}").as_bytes())
}

/// A daemon with one STARTTLS listener and AUTH, relaying only for a
/// network the test client is not in.
fn start_tls_daemon(dir: &Path, spool: &Path, cert: &TestCert) -> Daemon {
    let users = users_file(dir, USER, PASSWORD);
    Daemon::start(
        dir,
        spool,
        "shards = 1",
        &[Listener::plain(&cert.listener_lines())],
        &format!(
            "[relay]\nnetworks = [\"10.0.0.0/8\"]\n\n[auth]\nusers_file = \"{}\"\n",
            users.display()
        ),
        Some(cert),
    )
}

/// STARTTLS on a fresh connection; returns the client over TLS, greeted
/// again with EHLO, and that EHLO reply.
fn starttls(d: &Daemon, config: std::sync::Arc<rustls::ClientConfig>) -> (Client, String) {
    let mut c = d.connect();
    c.expect("220");
    c.cmd("EHLO client.test.example", "250");
    c.cmd("STARTTLS", "220 2.0.0");
    let mut c = c.upgrade(config);
    let ehlo = c.cmd("EHLO client.test.example", "250");
    (c, ehlo)
}

#[test]
fn starttls_then_auth_lets_the_client_relay() {
    let dir = tempdir();
    let spool = dir.path().join("spool");
    let cert = TestCert::new(dir.path());
    let d = start_tls_daemon(dir.path(), &spool, &cert);

    // Plaintext: STARTTLS offered, AUTH neither offered nor accepted.
    let mut c = d.connect();
    c.expect("220");
    let ehlo = c.cmd("EHLO client.test.example", "250");
    assert!(advertises(&ehlo, "STARTTLS"), "{ehlo}");
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    c.cmd(
        &format!("AUTH PLAIN {}", plain_response(USER, PASSWORD)),
        "538 5.7.11",
    );
    // Not trusted, not authenticated: no relaying.
    c.cmd("MAIL FROM:<s@client.test.example>", "250 2.1.0");
    c.cmd("RCPT TO:<u@remote.test.example>", "554 5.7.1");
    c.cmd("RSET", "250");

    // Over TLS 1.3, verifying the certificate: AUTH offered, STARTTLS not.
    c.cmd("STARTTLS", "220 2.0.0");
    let mut c = c.upgrade(cert.client_config(&[&rustls::version::TLS13]));
    assert_eq!(
        c.tls().and_then(|t| t.protocol_version()),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let ehlo = c.cmd("EHLO client.test.example", "250");
    assert!(advertises(&ehlo, "AUTH PLAIN LOGIN"), "{ehlo}");
    assert!(!advertises(&ehlo, "STARTTLS"), "{ehlo}");
    c.cmd("STARTTLS", "503 5.5.1");

    // TLS alone does not open the relay.
    c.cmd("MAIL FROM:<s@client.test.example>", "250 2.1.0");
    c.cmd("RCPT TO:<u@remote.test.example>", "554 5.7.1");
    c.cmd("RSET", "250");

    // Wrong password, then the right one.
    c.cmd(
        &format!("AUTH PLAIN {}", plain_response(USER, "wrong")),
        "535 5.7.8",
    );
    c.cmd(
        &format!("AUTH PLAIN {}", plain_response("nobody", PASSWORD)),
        "535 5.7.8",
    );
    c.cmd(
        &format!("AUTH PLAIN {}", plain_response(USER, PASSWORD)),
        "235 2.7.0",
    );
    c.cmd(
        &format!("AUTH PLAIN {}", plain_response(USER, PASSWORD)),
        "503 5.5.1",
    );

    c.cmd("MAIL FROM:<s@client.test.example>", "250 2.1.0");
    c.cmd("RCPT TO:<u@remote.test.example>", "250 2.1.5");
    c.cmd("DATA", "354");
    c.send("From: s@client.test.example\r\nSubject: tls\r\n\r\nover TLS\r\n.\r\n");
    queued_id(&c.reply());
    c.cmd("QUIT", "221");
    drop(c);
    d.stop();

    let report = inspect(&spool);
    assert_eq!(total_queued(&report), 1, "{report}");
    let segments = segment_bytes(&spool);
    assert!(contains(&segments, b"(using TLSv1.3 with cipher "));
    assert!(contains(&segments, b"(petrel) with ESMTPSA id "));
    assert!(contains(&segments, b"\r\n\r\nover TLS\r\n"));
}

#[test]
fn auth_login_over_starttls() {
    let dir = tempdir();
    let spool = dir.path().join("spool");
    let cert = TestCert::new(dir.path());
    let d = start_tls_daemon(dir.path(), &spool, &cert);

    let (mut c, _) = starttls(&d, cert.any_version());
    c.cmd("AUTH LOGIN", "334 VXNlcm5hbWU6");
    c.cmd(&base64(USER.as_bytes()), "334 UGFzc3dvcmQ6");
    c.cmd(&base64(b"nope"), "535 5.7.8");
    c.cmd("AUTH LOGIN", "334 VXNlcm5hbWU6");
    c.cmd(&base64(USER.as_bytes()), "334 UGFzc3dvcmQ6");
    c.cmd(&base64(PASSWORD.as_bytes()), "235 2.7.0");
    c.cmd("MAIL FROM:<s@client.test.example>", "250 2.1.0");
    c.cmd("RCPT TO:<u@remote.test.example>", "250 2.1.5");
    c.cmd("QUIT", "221");
    drop(c);
    d.stop();
}

/// CVE-2011-0411: a command pipelined in the same packet as STARTTLS must
/// not be answered over TLS as if the client had sent it there.
#[test]
fn commands_injected_after_starttls_are_not_answered() {
    let dir = tempdir();
    let spool = dir.path().join("spool");
    let cert = TestCert::new(dir.path());
    let d = start_tls_daemon(dir.path(), &spool, &cert);

    let mut c = d.connect();
    c.expect("220");
    c.cmd("EHLO client.test.example", "250");
    c.send("STARTTLS\r\nRSET\r\n");
    c.expect("220 2.0.0");
    // `upgrade` also checks that no plaintext reply to RSET followed.
    let mut c = c.upgrade(cert.any_version());
    // The first reply over TLS is the EHLO's, not the RSET's `250 2.0.0 Ok`.
    let ehlo = c.cmd("EHLO client.test.example", "250-");
    assert!(advertises(&ehlo, "AUTH PLAIN LOGIN"), "{ehlo}");
    c.cmd("NOOP", "250 2.0.0");

    // Injected mail transaction: none of it may take effect after the
    // handshake.
    let mut c2 = d.connect();
    c2.expect("220");
    c2.cmd("EHLO client.test.example", "250");
    c2.send("STARTTLS\r\nMAIL FROM:<injected@client.test.example>\r\n");
    c2.expect("220 2.0.0");
    let mut c2 = c2.upgrade(cert.any_version());
    c2.cmd("EHLO client.test.example", "250-");
    // No transaction is open: RCPT needs a MAIL first.
    c2.cmd("RCPT TO:<u@client.test.example>", "503 5.5.1");
    c2.cmd("QUIT", "221");
    c.cmd("QUIT", "221");
    drop((c, c2));
    d.stop();
}

#[test]
fn implicit_tls_listener_greets_over_tls() {
    let dir = tempdir();
    let spool = dir.path().join("spool");
    let cert = TestCert::new(dir.path());
    let users = users_file(dir.path(), USER, PASSWORD);
    let d = Daemon::start(
        dir.path(),
        &spool,
        "shards = 1",
        &[Listener::implicit(&cert.listener_lines())],
        &format!(
            "[relay]\nnetworks = [\"10.0.0.0/8\"]\n\n[auth]\nusers_file = \"{}\"\n",
            users.display()
        ),
        Some(&cert),
    );

    let mut c = Client::connect_tls(d.port(), cert.client_config(&[&rustls::version::TLS13]));
    c.expect("220 ");
    let ehlo = c.cmd("EHLO client.test.example", "250");
    assert!(!advertises(&ehlo, "STARTTLS"), "{ehlo}");
    assert!(advertises(&ehlo, "AUTH PLAIN LOGIN"), "{ehlo}");
    // Refused, whether as "not available" (502) or "already active" (503).
    c.cmd("STARTTLS", "50");
    c.cmd(
        &format!("AUTH PLAIN {}", plain_response(USER, PASSWORD)),
        "235 2.7.0",
    );
    c.cmd("MAIL FROM:<s@client.test.example>", "250 2.1.0");
    c.cmd("RCPT TO:<u@remote.test.example>", "250 2.1.5");
    c.cmd("DATA", "354");
    c.send("Subject: implicit\r\n\r\nhi\r\n.\r\n");
    queued_id(&c.reply());
    c.cmd("QUIT", "221");
    drop(c);

    // A plaintext client gets no greeting: the server waits for a
    // ClientHello, and gives up on what is not one.
    let mut p = d.connect();
    p.send("EHLO client.test.example\r\n");
    if let Some(r) = p.try_reply() {
        panic!("plaintext reply on an implicit-TLS listener: {r:?}");
    }
    drop(p);
    d.stop();

    let report = inspect(&spool);
    assert_eq!(total_queued(&report), 1, "{report}");
    let segments = segment_bytes(&spool);
    assert!(contains(&segments, b"(using TLSv1.3 with cipher "));
    assert!(contains(&segments, b"(petrel) with ESMTPSA id "));
}

#[test]
fn tls_1_2_works() {
    let dir = tempdir();
    let spool = dir.path().join("spool");
    let cert = TestCert::new(dir.path());
    let d = start_tls_daemon(dir.path(), &spool, &cert);

    let (mut c, ehlo) = starttls(&d, cert.client_config(&[&rustls::version::TLS12]));
    assert_eq!(
        c.tls().and_then(|t| t.protocol_version()),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert!(advertises(&ehlo, "AUTH PLAIN LOGIN"), "{ehlo}");
    c.cmd(
        &format!("AUTH PLAIN {}", plain_response(USER, PASSWORD)),
        "235 2.7.0",
    );
    c.cmd("MAIL FROM:<s@client.test.example>", "250 2.1.0");
    c.cmd("RCPT TO:<u@remote.test.example>", "250 2.1.5");
    c.cmd("DATA", "354");
    c.send("Subject: tls12\r\n\r\nhi\r\n.\r\n");
    queued_id(&c.reply());
    c.cmd("QUIT", "221");
    drop(c);
    d.stop();

    assert_eq!(total_queued(&inspect(&spool)), 1);
    let segments = segment_bytes(&spool);
    assert!(contains(&segments, b"(using TLSv1.2 with cipher "));
    assert!(contains(&segments, b"(petrel) with ESMTPSA id "));
}

#[test]
fn a_missing_certificate_file_stops_the_daemon() {
    let dir = tempdir();
    let cert = TestCert::new(dir.path());
    let missing = dir.path().join("no-such-cert.pem");
    let config = dir.path().join("petrel.toml");
    write(
        &config,
        format!(
            "[server]\nhostname = \"mx.test.example\"\nshards = 1\n\n\
             [spool]\npath = \"{}\"\nmin_free_space = 0\n\n\
             [admin]\naddress = \"\"\n\n\
             [[listener]]\naddress = \"127.0.0.1:{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            dir.path().join("spool").display(),
            common::free_port(),
            missing.display(),
            cert.key_path.display()
        )
        .as_bytes(),
    );
    let mut child = match Command::new(env!("CARGO_BIN_EXE_petrel"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!("spawn petrel: {e}"),
    };
    // It must exit by itself; kill it if it does not, and fail.
    let deadline = Instant::now() + common::START_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("petrel kept running with a missing certificate");
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("try_wait: {e}"),
        }
    }
    let out = match child.wait_with_output() {
        Ok(out) => out,
        Err(e) => panic!("wait: {e}"),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&missing.display().to_string()),
        "the error does not name the file: {stderr}"
    );
}

/// An implicit-TLS daemon on two shards with AUTH and `auth` added to its
/// `[auth]` section.
fn start_auth_daemon(dir: &Path, cert: &TestCert, auth: &str) -> Daemon {
    let users = users_file(dir, USER, PASSWORD);
    Daemon::start(
        dir,
        &dir.join("spool"),
        "shards = 2",
        &[Listener::implicit(&cert.listener_lines())],
        &format!("[auth]\nusers_file = \"{}\"\n{auth}", users.display()),
        Some(cert),
    )
}

/// A TLS client of `d` connecting from the loopback address `src`, greeted
/// and past EHLO.
fn client_from(d: &Daemon, cert: &TestCert, src: [u8; 4]) -> Client {
    use rustix::net::{AddressFamily, SocketType};
    let fd = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).expect("socket");
    let from = std::net::SocketAddrV4::new(src.into(), 0);
    rustix::net::bind(&fd, &from).expect("bind the source address");
    let to = std::net::SocketAddrV4::new([127, 0, 0, 1].into(), d.port());
    rustix::net::connect(&fd, &to).expect("connect");
    let sock = std::net::TcpStream::from(fd);
    sock.set_read_timeout(Some(common::IO_TIMEOUT))
        .expect("read timeout");
    let tls = common::tls_handshake(sock, cert.any_version()).expect("TLS handshake");
    let mut c = Client::from_conn(common::Conn::Tls(Box::new(tls)));
    c.hello();
    c
}

fn auth_plain(c: &mut Client, password: &str) -> String {
    c.send(&format!(
        "AUTH PLAIN {}\r\n",
        plain_response(USER, password)
    ));
    c.reply()
}

#[test]
fn failed_auth_from_one_ip_is_throttled_while_another_ip_authenticates() {
    let dir = tempdir();
    let cert = TestCert::new(dir.path());
    let d = start_auth_daemon(
        dir.path(),
        &cert,
        "max_failures = 2\nfailure_delay = \"0s\"\n",
    );
    // Separate connections, which may land on either shard.
    for _ in 0..2 {
        let mut c = client_from(&d, &cert, [127, 0, 0, 1]);
        assert!(auth_plain(&mut c, "wrong").starts_with("535 5.7.8"));
    }
    let mut c = client_from(&d, &cert, [127, 0, 0, 1]);
    let r = auth_plain(&mut c, PASSWORD);
    assert!(r.starts_with("454 4.7.0"), "even the right password: {r}");
    let mut other = client_from(&d, &cert, [127, 0, 0, 2]);
    let r = auth_plain(&mut other, PASSWORD);
    assert!(r.starts_with("235 2.7.0"), "another client: {r}");
}

#[test]
fn a_failed_auth_is_counted_before_its_delayed_reply() {
    let dir = tempdir();
    let cert = TestCert::new(dir.path());
    let d = start_auth_daemon(
        dir.path(),
        &cert,
        "max_failures = 1\nfailure_delay = \"1h\"\n",
    );
    let mut failing = client_from(&d, &cert, [127, 0, 0, 3]);
    failing.send(&format!("AUTH PLAIN {}\r\n", plain_response(USER, "wrong")));
    // Once the failure is counted, the same client is refused...
    let mut refused = false;
    for _ in 0..50 {
        let mut probe = client_from(&d, &cert, [127, 0, 0, 3]);
        let r = auth_plain(&mut probe, PASSWORD);
        if r.starts_with("454 4.7.0") {
            refused = true;
            break;
        }
        assert!(r.starts_with("235"), "{r}");
    }
    assert!(refused, "the failure was never counted");
    // ...while the failed attempt itself is still waiting for its 535.
    assert!(
        failing.nothing_pending(),
        "the failed attempt was answered without its delay"
    );
}
