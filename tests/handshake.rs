//! The time a client may take before its session starts: the TLS
//! handshake as a whole, and the session's own limit counted from connect.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{tempdir, Daemon, Listener, TestCert};

/// An implicit-TLS daemon with `lines` in its listener.
fn implicit_tls_daemon(dir: &std::path::Path, cert: &TestCert, lines: &str) -> Daemon {
    Daemon::start(
        dir,
        &dir.join("spool"),
        "shards = 1",
        &[Listener::implicit(&format!(
            "{}{lines}",
            cert.listener_lines()
        ))],
        "",
        Some(cert),
    )
}

/// The bytes of a real ClientHello for the test certificate.
fn client_hello(cert: &TestCert) -> Vec<u8> {
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut conn =
        rustls::ClientConnection::new(cert.any_version(), name).expect("client connection");
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).expect("write_tls");
    }
    hello
}

/// True once the server has closed the connection (a read sees EOF or an
/// error other than "nothing yet").
fn closed(sock: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match sock.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[test]
fn a_handshake_dribbled_a_byte_at_a_time_is_cut_off() {
    let dir = tempdir();
    let cert = TestCert::new(dir.path());
    let d = implicit_tls_daemon(dir.path(), &cert, "tls_handshake_timeout = \"1s\"\n");
    let hello = client_hello(&cert);
    let mut sock = TcpStream::connect(("127.0.0.1", d.port())).expect("connect");
    sock.set_nodelay(true).expect("nodelay");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    // A byte every 100 ms: far apart enough for no per-read limit to end
    // it, and the whole hello would take many times the deadline.
    for (i, byte) in hello.iter().enumerate() {
        if sock.write_all(&[*byte]).is_err() || closed(&mut sock) {
            assert!(i < hello.len() / 2, "closed only after {i} bytes");
            return;
        }
    }
    panic!("the whole ClientHello was dribbled in and the connection is still open");
}

#[test]
fn session_timeout_counts_from_connect_not_from_the_handshake() {
    let dir = tempdir();
    let cert = TestCert::new(dir.path());
    let d = implicit_tls_daemon(
        dir.path(),
        &cert,
        "session_timeout = \"1s\"\ntls_handshake_timeout = \"1m\"\n",
    );
    let sock = TcpStream::connect(("127.0.0.1", d.port())).expect("connect");
    sock.set_read_timeout(Some(common::IO_TIMEOUT))
        .expect("read timeout");
    // The session's whole time passes before the client says anything.
    std::thread::sleep(Duration::from_millis(1500));
    let greeted = common::tls_handshake(sock, cert.any_version())
        .ok()
        .and_then(|tls| {
            let mut c = common::Client::from_conn(common::Conn::Tls(Box::new(tls)));
            c.try_reply()
        });
    assert!(
        greeted.as_deref().is_none_or(|r| !r.starts_with("220")),
        "a session was started after its time had passed: {greeted:?}"
    );
}
