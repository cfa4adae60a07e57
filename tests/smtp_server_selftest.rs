//! The scripted test MX in tests/support/smtp_server.rs, spoken to with a
//! plain TcpStream, so the delivery tests can trust what it records.

mod common;
#[path = "support/smtp_server.rs"]
mod smtp_server;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use common::{Client, Conn};
use smtp_server::{Cmd, Script, SmtpServer};

const TIMEOUT: Duration = Duration::from_secs(2);

fn server(script: Script) -> SmtpServer {
    SmtpServer::start(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 0, script)
}

/// The SMTP client the daemon tests use, on a plain socket to `addr`.
fn connect(addr: SocketAddr) -> Client {
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect to test MX");
    stream
        .set_read_timeout(Some(TIMEOUT))
        .expect("read timeout");
    Client::from_conn(Conn::Plain(stream))
}

/// Connects and reads the greeting, which must be a 220.
fn greeted(addr: SocketAddr) -> Client {
    let mut c = connect(addr);
    c.expect("220");
    c
}

fn assert_closed(c: &mut Client) {
    assert_eq!(c.try_reply(), None, "the server should have closed");
}

#[test]
fn accept_records_a_pipelined_transaction() {
    let mx = server(Script::accept());
    let mut c = greeted(mx.addr());
    let ehlo = c.cmd("EHLO client.test", "250");
    for keyword in [
        "PIPELINING",
        "SIZE",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "DSN",
        "SMTPUTF8",
    ] {
        assert!(ehlo.contains(keyword), "{keyword} missing from {ehlo:?}");
    }
    assert!(!ehlo.contains("CHUNKING"), "{ehlo}");
    c.send(concat!(
        "MAIL FROM:<a@client.test> BODY=8BITMIME SIZE=100\r\n",
        "RCPT TO:<b@remote.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@remote.test\r\n",
        "RCPT TO:<c@remote.test>\r\n",
        "DATA\r\n",
    ));
    for code in ["250", "250", "250", "354"] {
        c.expect(code);
    }
    c.send("Subject: dots\r\n\r\n..leading\r\n.\r\n");
    c.expect("250");
    c.cmd("QUIT", "221");
    assert_closed(&mut c);

    let got = mx.wait_for_messages(1, TIMEOUT);
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(m.mail_from, "a@client.test");
    assert_eq!(m.mail_params, "BODY=8BITMIME SIZE=100");
    assert_eq!(m.rcpt_to, ["b@remote.test", "c@remote.test"]);
    assert_eq!(
        m.rcpt_params,
        ["NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@remote.test", ""]
    );
    assert_eq!(m.text(), "Subject: dots\r\n\r\n.leading");
    assert!(!m.bare_lf_or_cr && !m.bdat && !m.tls);
    assert_eq!(m.connection, 0);
    assert_eq!((mx.connections(), mx.transactions()), (1, 1));
    assert_eq!(mx.violations(), Vec::<String>::new());
}

#[test]
fn reject_rcpt_refuses_only_matching_recipients() {
    let mx = server(Script::accept().reject_rcpt("nobody", "550 5.1.1 no such user"));
    let mut c = greeted(mx.addr());
    c.cmd("EHLO client.test", "250");
    c.cmd("MAIL FROM:<>", "250");
    let refused = c.cmd("RCPT TO:<nobody@remote.test>", "550");
    assert_eq!(refused, "550 5.1.1 no such user");
    c.cmd("DATA", "554");
    c.cmd("RCPT TO:<someone@remote.test>", "250");
    c.cmd("DATA", "354");
    c.send("hi\r\n.\r\n");
    c.expect("250");

    let got = mx.wait_for_messages(1, TIMEOUT);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].mail_from, "");
    assert_eq!(got[0].rcpt_to, ["someone@remote.test"]);
}

#[test]
fn drop_after_rcpt_closes_without_a_reply() {
    let mx = server(Script::accept().drop_after(Cmd::Rcpt));
    let mut c = greeted(mx.addr());
    c.cmd("EHLO client.test", "250");
    c.cmd("MAIL FROM:<a@client.test>", "250");
    c.send("RCPT TO:<b@remote.test>\r\n");
    assert_closed(&mut c);
    assert!(mx.messages().is_empty());
}

#[test]
fn a_421_greeting_closes_and_a_554_greeting_serves_only_quit() {
    let mx = server(Script::accept().greeting("421 4.3.2 busy"));
    let mut c = connect(mx.addr());
    assert_eq!(c.try_reply().as_deref(), Some("421 4.3.2 busy"));
    assert_closed(&mut c);

    mx.set_script(Script::accept().greeting("554 5.7.1 no service"));
    let mut c = connect(mx.addr());
    c.expect("554");
    c.cmd("EHLO client.test", "503");
    c.cmd("MAIL FROM:<a@client.test>", "503");
    c.cmd("QUIT", "221");
    assert_closed(&mut c);
    assert_eq!(mx.connections(), 2);
}

#[test]
fn a_421_reply_closes_the_connection() {
    let mx = server(Script::accept().reply_to(Cmd::Mail, "421 4.7.0 closing"));
    let mut c = greeted(mx.addr());
    c.cmd("EHLO client.test", "250");
    c.cmd("MAIL FROM:<a@client.test>", "421");
    assert_closed(&mut c);
}

#[test]
fn max_concurrent_counts_sessions_open_together() {
    let mx = server(Script::accept().hold_connections(Duration::from_millis(150)));
    let mut first = connect(mx.addr());
    let mut second = connect(mx.addr());
    first.expect("220");
    second.expect("220");
    first.cmd("QUIT", "221");
    second.cmd("QUIT", "221");
    assert_eq!(mx.connections(), 2);
    assert_eq!(mx.max_concurrent(), 2);
}

#[test]
fn one_connection_carries_several_transactions_and_rset() {
    let mx = server(Script::accept());
    let mut c = greeted(mx.addr());
    c.cmd("RCPT TO:<b@remote.test>", "503");
    c.cmd("MAIL FROM:<a@client.test>", "503");
    c.cmd("EHLO client.test", "250");
    c.cmd("DATA", "503");
    for n in 1..=2 {
        c.cmd(&format!("MAIL FROM:<a{n}@client.test>"), "250");
        c.cmd("MAIL FROM:<again@client.test>", "503");
        c.cmd(&format!("RCPT TO:<b{n}@remote.test>"), "250");
        c.cmd("DATA", "354");
        c.send(&format!("message {n}\r\n.\r\n"));
        c.expect("250");
        c.cmd("MAIL FROM:<abandoned@client.test>", "250");
        c.cmd("RCPT TO:<x@remote.test>", "250");
        c.cmd("RSET", "250");
    }
    c.cmd("QUIT", "221");

    let got = mx.wait_for_messages(2, TIMEOUT);
    let summary: Vec<(&str, &str, String)> = got
        .iter()
        .map(|m| (m.mail_from.as_str(), m.rcpt_to[0].as_str(), m.text()))
        .collect();
    assert_eq!(
        summary,
        [
            ("a1@client.test", "b1@remote.test", "message 1".to_string()),
            ("a2@client.test", "b2@remote.test", "message 2".to_string()),
        ]
    );
    assert_eq!(mx.transactions(), 7);
    assert_eq!(mx.violations(), Vec::<String>::new());
}

#[test]
fn bdat_chunks_make_one_message() {
    let mx = server(Script::accept().chunking());
    let mut c = greeted(mx.addr());
    assert!(c.cmd("EHLO client.test", "250").contains("CHUNKING"));
    c.send(concat!(
        "MAIL FROM:<a@client.test>\r\n",
        "RCPT TO:<b@remote.test>\r\n",
        "BDAT 7\r\n.hello ",
        "BDAT 9 LAST\r\nworld\r\n\r\n",
    ));
    for code in ["250", "250", "250", "250"] {
        c.expect(code);
    }
    c.cmd("QUIT", "221");

    let got = mx.wait_for_messages(1, TIMEOUT);
    assert_eq!(got.len(), 1);
    // No dot-unstuffing in BDAT; only the final CRLF comes off.
    assert_eq!(got[0].text(), ".hello world\r\n");
    assert!(got[0].bdat);
    assert_eq!(mx.violations(), Vec::<String>::new());
}

#[test]
fn failed_end_of_data_is_not_recorded_until_the_script_changes() {
    let mx = server(Script::accept().reply_to(Cmd::DataEnd, "451 4.3.0 try later"));
    for code in ["451", "250"] {
        let mut c = greeted(mx.addr());
        c.cmd("EHLO client.test", "250");
        c.cmd("MAIL FROM:<a@client.test>", "250");
        c.cmd("RCPT TO:<b@remote.test>", "250");
        c.cmd("DATA", "354");
        c.send("body\r\n.\r\n");
        c.expect(code);
        c.cmd("QUIT", "221");
        mx.set_script(Script::accept());
    }
    let got = mx.wait_for_messages(1, TIMEOUT);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].connection, 1);
    assert_eq!(mx.transactions(), 2);
}

#[test]
fn protocol_slips_are_noted() {
    let mx = server(Script::accept().no_pipelining().no_dsn());
    let mut c = greeted(mx.addr());
    c.cmd("EHLO client.test", "250");
    c.cmd("MAIL FROM: <a@client.test>", "501");
    c.send("MAIL FROM:<a@client.test>\r\nRCPT TO:<b@remote.test> NOTIFY=NEVER\r\n");
    c.expect("250");
    c.expect("555");
    c.cmd("RCPT TO:<b@remote.test>", "250");
    c.cmd("DATA", "354");
    c.send("bare\nline\r\n.\r\n");
    c.expect("250");

    let got = mx.wait_for_messages(1, TIMEOUT);
    assert!(got[0].bare_lf_or_cr);
    let violations = mx.violations().join("\n");
    for slip in [
        "MAIL syntax",
        "MAIL was followed",
        "NOTIFY=NEVER",
        "bare CR or LF",
    ] {
        assert!(
            violations.contains(slip),
            "{slip} missing from:\n{violations}"
        );
    }
}

#[test]
fn garbage_gets_replies_and_an_overlong_line_a_close() {
    let mx = server(Script::accept());
    let mut c = greeted(mx.addr());
    c.send_bytes(b"\xff\xfe\r\n");
    c.expect("500");
    c.cmd("STARTTLS", "500");
    c.cmd("BDAT 3 LAST", "500");
    c.send(&"x".repeat(5000));
    c.expect("500");
    assert_closed(&mut c);
    assert_eq!(mx.violations().len(), 4, "{:?}", mx.violations());
}
