//! Delivery end to end: `petrel run` sends what it spooled to scripted test
//! MX hosts (tests/support/smtp_server.rs) that it finds through a test DNS
//! server (tests/support/dns_server.rs), and each test checks what arrived
//! where: MX order and fallback, bounces (RFC 3464) at the sender's MX,
//! retries and expiry, DSN parameters, connection reuse, the per-destination
//! connection limit across shards, a restart, and smart-host routes.
//!
//! Every MX host of a test listens on one port on its own 127.0.0.x address
//! (never 127.0.0.1, the daemon's own address, which would be a mail loop).
//! The sender's domain has an MX at 127.0.0.4 so bounces can be seen.
//! Waits are polls with deadlines, never fixed sleeps on the success path.

mod common;
#[path = "support/dns_server.rs"]
mod dns_server;
#[path = "support/smtp_server.rs"]
mod smtp_server;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    common_port, queued, queued_id, send_message, tempdir, wait_log, wait_queue_empty, Client,
    Daemon,
};
use dns_server::{loopback, DnsServer, Zone};
use hickory_proto::rr::RecordType;
use smtp_server::{Cmd, Received, Script, SmtpServer};

/// How long a message may take to reach a test MX (including a retry or
/// two at 1 s, on a busy machine).
const ARRIVAL: Duration = Duration::from_secs(12);
/// How long to keep looking for a message that must not come.
const QUIET: Duration = Duration::from_millis(1500);

/// The envelope sender `common::send_message` uses.
const SENDER: &str = "sender@client.test.example";
const SENDER_DOMAIN: &str = "client.test.example";
/// The sender's MX host, where bounces arrive: 127.0.0.4.
const BOUNCE_HOST: u8 = 4;

const BODY: &str = "From: Sender <sender@client.test.example>\r\n\
                    To: Someone <someone@example.test>\r\n\
                    Subject: delivery test\r\n\
                    Message-ID: <delivery-test@client.test.example>\r\n\
                    \r\n\
                    body-marker line\r\n\
                    ..a line that starts with a dot\r\n";

fn host(n: u8) -> IpAddr {
    IpAddr::V4(loopback(n))
}

/// One test's network: the DNS server, the shared MX port, the spool.
struct Net {
    dir: tempfile::TempDir,
    spool: PathBuf,
    dns: DnsServer,
    port: u16,
}

impl Net {
    /// Serves `zone` plus the sender's MX (at 127.0.0.4); `hosts` are the
    /// other 127.0.0.x addresses the test's MX hosts use.
    fn new(zone: Zone, hosts: &[u8]) -> Net {
        let zone = zone
            .mx(SENDER_DOMAIN, 10, "bounce-mx.test.example")
            .a("bounce-mx.test.example", "127.0.0.4");
        let mut all = hosts.to_vec();
        all.push(BOUNCE_HOST);
        let port = common_port(&all);
        let dns = DnsServer::start_on(loopback(53), zone);
        let dir = tempdir();
        let spool = dir.path().join("spool");
        Net {
            dir,
            spool,
            dns,
            port,
        }
    }

    /// A test MX on 127.0.0.`n`.
    fn server(&self, n: u8, script: Script) -> SmtpServer {
        SmtpServer::start(host(n), self.port, script)
    }

    /// The sender's MX, accepting everything.
    fn bounce_server(&self) -> SmtpServer {
        self.server(BOUNCE_HOST, Script::accept())
    }

    /// `[dns]` and `[delivery]` for this network, with `overrides` taking
    /// the place of the defaults below (or added).
    fn config(&self, overrides: &[(&str, &str)]) -> String {
        delivery_config(self.dns.addr(), self.port, overrides)
    }

    fn daemon(&self, shards: usize, extra: &str) -> Daemon {
        Daemon::start_plain(
            self.dir.path(),
            &self.spool,
            &format!("shards = {shards}"),
            "",
            extra,
        )
    }
}

/// A network where `domain` has one MX host, `mx.<domain>`, at 127.0.0.2.
fn one_mx(domain: &str) -> Net {
    let mx = format!("mx.{domain}");
    Net::new(Zone::new().mx(domain, 10, &mx).a(&mx, "127.0.0.2"), &[2])
}

/// A network where `domain` has two MX hosts: `primary.<domain>` (10) at
/// 127.0.0.2 and `backup.<domain>` (20) at 127.0.0.3, listed in the zone
/// backup first if `worst_first`.
fn primary_and_backup(domain: &str, worst_first: bool) -> Net {
    let primary = format!("primary.{domain}");
    let backup = format!("backup.{domain}");
    let zone = if worst_first {
        Zone::new().mx(domain, 20, &backup).mx(domain, 10, &primary)
    } else {
        Zone::new().mx(domain, 10, &primary).mx(domain, 20, &backup)
    };
    let zone = zone.a(&primary, "127.0.0.2").a(&backup, "127.0.0.3");
    Net::new(zone, &[2, 3])
}

fn delivery_config(dns: SocketAddr, port: u16, overrides: &[(&str, &str)]) -> String {
    let port = port.to_string();
    let mut keys: Vec<(&str, &str)> = vec![
        ("port", &port),
        ("max_connections_per_destination", "20"),
        ("max_messages_per_connection", "1000"),
        ("retry", "[\"1s\"]"),
        ("max_age", "\"5d\""),
        ("tls", "\"opportunistic\""),
        ("idle_timeout", "\"1s\""),
        ("connect_timeout", "\"2s\""),
        ("command_timeout", "\"10s\""),
    ];
    for &(k, v) in overrides {
        match keys.iter_mut().find(|(key, _)| *key == k) {
            Some(entry) => entry.1 = v,
            None => keys.push((k, v)),
        }
    }
    let mut out = format!("[dns]\nservers = [\"{dns}\"]\ntimeout = \"1s\"\n\n[delivery]\n");
    for (k, v) in keys {
        out.push_str(&format!("{k} = {v}\n"));
    }
    out
}

/// One transaction with raw `MAIL FROM:` and `RCPT TO:` arguments (paths
/// in angle brackets, parameters after them); returns the queue id.
fn send_raw(c: &mut Client, mail: &str, rcpts: &[&str], body: &str) -> String {
    c.cmd(&format!("MAIL FROM:{mail}"), "250");
    for r in rcpts {
        c.cmd(&format!("RCPT TO:{r}"), "250");
    }
    c.cmd("DATA", "354");
    c.send(body);
    c.send(".\r\n");
    queued_id(&c.reply())
}

/// Connects, sends one message from `SENDER` to `rcpts`, and quits.
fn send_one(d: &Daemon, rcpts: &[&str]) -> String {
    let mut c = d.connect();
    c.hello();
    let id = send_message(&mut c, rcpts, BODY);
    c.cmd("QUIT", "221");
    id
}

/// Same, with raw envelope arguments.
fn send_one_raw(d: &Daemon, mail: &str, rcpts: &[&str], body: &str) -> String {
    let mut c = d.connect();
    c.hello();
    let id = send_raw(&mut c, mail, rcpts, body);
    c.cmd("QUIT", "221");
    id
}

/// Waits until `server` has seen a MAIL command.
fn wait_first_attempt(server: &SmtpServer, d: &Daemon) {
    let deadline = Instant::now() + ARRIVAL;
    while server.transactions() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(server.transactions() >= 1, "no attempt: {}", d.stderr());
}

/// Waits for `n` messages at `server`; panics with the daemon's log if
/// fewer came.
fn expect_messages(server: &SmtpServer, n: usize, d: &Daemon, what: &str) -> Vec<Received> {
    let got = server.wait_for_messages(n, ARRIVAL);
    assert!(
        got.len() >= n,
        "{what}: {} of {n} messages arrived at {}; daemon log:\n{}",
        got.len(),
        server.addr(),
        d.stderr()
    );
    got
}

/// The message text with folded header lines joined back.
fn unfolded(m: &Received) -> String {
    m.text().replace("\r\n ", " ").replace("\r\n\t", " ")
}

/// Checks that a message is a delivery status notification from `<>` to
/// `SENDER`, reporting `rcpt` as failed with `status`; returns its text
/// (unfolded).
fn check_bounce(m: &Received, rcpt: &str, status: &str) -> String {
    assert_eq!(m.mail_from, "", "a bounce comes from the null sender");
    assert_eq!(m.rcpt_to, [SENDER], "a bounce goes to the sender");
    assert!(!m.bare_lf_or_cr, "bare CR or LF in the bounce");
    let text = unfolded(m);
    for needle in [
        "multipart/report".to_string(),
        "report-type=delivery-status".to_string(),
        "message/delivery-status".to_string(),
        "Reporting-MTA: dns; mx.test.example".to_string(),
        "Action: failed".to_string(),
        format!("Status: {status}"),
        format!("Final-Recipient: rfc822; {rcpt}"),
    ] {
        assert!(
            text.contains(&needle),
            "{needle:?} missing from the bounce:\n{text}"
        );
    }
    text
}

/// Sends one message to `rcpt`, which cannot be delivered through `zone`
/// (`hosts` are addresses its MX hosts may use, none of them listening),
/// and waits for the one bounce: checked to report `rcpt` with `status`,
/// and returned (unfolded).
fn lone_bounce(
    zone: Zone,
    hosts: &[u8],
    overrides: &[(&str, &str)],
    rcpt: &str,
    status: &str,
) -> String {
    let net = Net::new(zone, hosts);
    let bounces = net.bounce_server();
    let d = net.daemon(1, &net.config(overrides));
    send_one(&d, &[rcpt]);
    let got = expect_messages(&bounces, 1, &d, "bounce");
    let text = check_bounce(&got[0], rcpt, status);
    wait_queue_empty(&d, &net.spool, ARRIVAL);
    assert_eq!(bounces.messages().len(), 1, "one notice");
    finish(d);
    text
}

/// The daemon must not have panicked on any shard.
fn assert_no_panic(d: &Daemon) {
    let log = d.stderr();
    assert!(!log.contains("panicked"), "the daemon panicked:\n{log}");
}

/// Ends a test: no panic in the log, then a clean exit on SIGTERM.
fn finish(d: Daemon) {
    assert_no_panic(&d);
    d.stop();
}

// ---------------------------------------------------------------------
// MX hosts
// ---------------------------------------------------------------------

#[test]
fn mx_preference_is_followed() {
    // Listed worst first: the order must come from the preferences.
    let net = primary_and_backup("pref.test.example", true);
    let primary = net.server(2, Script::accept());
    let backup = net.server(3, Script::accept());
    let d = net.daemon(1, &net.config(&[]));
    send_one(&d, &["user@pref.test.example"]);

    let got = expect_messages(&primary, 1, &d, "primary MX");
    assert_eq!(got[0].rcpt_to, ["user@pref.test.example"]);
    assert_eq!(got[0].mail_from, SENDER);
    wait_queue_empty(&d, &net.spool, ARRIVAL);
    assert_eq!(backup.connections(), 0, "the backup MX was not needed");
    assert!(
        primary.violations().is_empty(),
        "{:?}",
        primary.violations()
    );
    finish(d);
}

#[test]
fn mx_backup_takes_over_when_the_primary_says_421() {
    let net = primary_and_backup("busy.test.example", false);
    let primary = net.server(2, Script::accept().greeting("421 4.3.2 busy, try later"));
    let backup = net.server(3, Script::accept());
    let d = net.daemon(1, &net.config(&[]));
    send_one(&d, &["user@busy.test.example"]);

    let got = expect_messages(&backup, 1, &d, "backup MX");
    assert_eq!(got[0].rcpt_to, ["user@busy.test.example"]);
    assert!(
        primary.connections() >= 1,
        "the primary MX was not tried first"
    );
    assert!(primary.messages().is_empty());
    wait_queue_empty(&d, &net.spool, ARRIVAL);
    assert_eq!(backup.messages().len(), 1, "delivered more than once");
    assert!(backup.violations().is_empty(), "{:?}", backup.violations());
    finish(d);
}

#[test]
fn mx_backup_takes_over_when_the_primary_is_down() {
    // Nothing listens on 127.0.0.2: connections are refused.
    let net = primary_and_backup("down.test.example", false);
    let backup = net.server(3, Script::accept());
    let d = net.daemon(1, &net.config(&[]));
    send_one(&d, &["user@down.test.example"]);

    let got = expect_messages(&backup, 1, &d, "backup MX");
    assert_eq!(got[0].rcpt_to, ["user@down.test.example"]);
    wait_queue_empty(&d, &net.spool, ARRIVAL);
    assert_eq!(backup.messages().len(), 1, "delivered more than once");
    finish(d);
}

#[test]
fn mx_backup_takes_over_when_the_primary_drops_mid_transaction() {
    // The primary refuses one recipient for good, then drops the
    // connection at the end of the data: that recipient bounces with the
    // primary's reply, and the other goes on to the backup MX at once
    // rather than waiting for a retry.
    let domain = "halfway.test.example";
    let net = primary_and_backup(domain, false);
    let primary = net.server(
        2,
        Script::accept()
            .reject_rcpt("gone@", "550 5.1.1 no such user here")
            .drop_after(Cmd::DataEnd),
    );
    let backup = net.server(3, Script::accept());
    let bounces = net.bounce_server();
    let d = net.daemon(1, &net.config(&[]));
    let ok = format!("user@{domain}");
    let gone = format!("gone@{domain}");
    send_one(&d, &[&ok, &gone]);

    let got = expect_messages(&backup, 1, &d, "backup MX");
    assert_eq!(got[0].rcpt_to, [ok]);
    let b = bounces.wait_for_messages(1, ARRIVAL);
    assert_eq!(
        b.len(),
        1,
        "no bounce for the refused recipient: {}",
        d.stderr()
    );
    let text = check_bounce(&b[0], &gone, "5.1.1");
    assert!(text.contains("no such user here"), "{text}");
    wait_queue_empty(&d, &net.spool, ARRIVAL);
    assert!(primary.connections() >= 1 && primary.messages().is_empty());
    assert_eq!(backup.messages().len(), 1, "delivered more than once");
    finish(d);
}

#[test]
fn implicit_mx_is_the_domains_address() {
    let zone = Zone::new().a("implicit.test.example", "127.0.0.2");
    let net = Net::new(zone, &[2]);
    let mx = net.server(2, Script::accept());
    let d = net.daemon(1, &net.config(&[]));
    send_one(&d, &["user@implicit.test.example"]);

    let got = expect_messages(&mx, 1, &d, "implicit MX");
    assert_eq!(got[0].rcpt_to, ["user@implicit.test.example"]);
    wait_queue_empty(&d, &net.spool, ARRIVAL);
    finish(d);
}

// ---------------------------------------------------------------------
// Bounces
// ---------------------------------------------------------------------

#[test]
fn null_mx_bounces_5_1_10() {
    let zone = Zone::new().null_mx("nullmx.test.example");
    let rcpt = "user@nullmx.test.example";
    let text = lone_bounce(zone, &[], &[], rcpt, "5.1.10");
    assert!(text.contains("Subject: delivery test"), "{text}");
}

#[test]
fn nxdomain_bounces_5_1_2() {
    // nowhere.test.example is not in the zone: NXDOMAIN.
    let rcpt = "user@nowhere.test.example";
    lone_bounce(Zone::new(), &[], &[], rcpt, "5.1.2");
}

#[test]
fn mx_pointing_back_at_this_server_bounces_5_4_6() {
    // 127.0.0.1 is the daemon's own listener address.
    let zone = Zone::new()
        .mx("loop.test.example", 10, "mx.loop.test.example")
        .a("mx.loop.test.example", "127.0.0.1");
    lone_bounce(zone, &[], &[], "user@loop.test.example", "5.4.6");
}

#[test]
fn dns_servfail_defers_and_does_not_bounce() {
    let zone = Zone::new().servfail("servfail.test.example");
    let net = Net::new(zone, &[]);
    let bounces = net.bounce_server();
    let d = net.daemon(1, &net.config(&[]));
    send_one(&d, &["user@servfail.test.example"]);

    // Two queries per attempt ([dns] attempts = 2): the fifth means the
    // first two attempts were settled (deferred) and a retry is under way.
    let lookups = || net.dns.queries_for("servfail.test.example", RecordType::MX);
    let deadline = Instant::now() + Duration::from_secs(6);
    while lookups() < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(lookups() >= 5, "no retried MX lookup: {}", d.stderr());
    assert_eq!(queued(&net.spool), Some(1), "{}", d.stderr());
    assert!(bounces.messages().is_empty(), "SERVFAIL is temporary");
    finish(d);
}

#[test]
fn rcpt_5xx_bounces_with_the_remote_reply() {
    let net = one_mx("rcpt.test.example");
    let mx = net.server(
        2,
        Script::accept().reject_rcpt("bad", "550 5.1.1 mailbox unknown-xyzzy here"),
    );
    let bounces = net.bounce_server();
    let d = net.daemon(1, &net.config(&[]));
    send_one(&d, &["good@rcpt.test.example", "bad@rcpt.test.example"]);

    let got = expect_messages(&mx, 1, &d, "accepted recipient");
    assert_eq!(got[0].rcpt_to, ["good@rcpt.test.example"]);
    let got = expect_messages(&bounces, 1, &d, "bounce");
    let text = check_bounce(&got[0], "bad@rcpt.test.example", "5.1.1");
    assert!(
        text.contains("Diagnostic-Code: smtp; 550 5.1.1 mailbox unknown-xyzzy here"),
        "the remote reply is not in the Diagnostic-Code:\n{text}"
    );
    assert!(
        text.contains("Remote-MTA: dns; mx.rcpt.test.example"),
        "{text}"
    );
    assert!(
        !text.contains("Final-Recipient: rfc822; good@rcpt.test.example"),
        "the delivered recipient is reported as failed:\n{text}"
    );
    // The original message is returned (RET not given: all of it).
    for needle in [
        "Subject: delivery test",
        "Message-ID: <delivery-test@client.test.example>",
    ] {
        assert!(text.contains(needle), "{needle:?} not returned:\n{text}");
    }
    wait_queue_empty(&d, &net.spool, ARRIVAL);
    assert_eq!(mx.messages().len(), 1);
    assert_eq!(bounces.messages().len(), 1);
    assert!(mx.violations().is_empty(), "{:?}", mx.violations());
    assert!(
        bounces.violations().is_empty(),
        "{:?}",
        bounces.violations()
    );
    finish(d);
}

#[test]
fn one_queue_id_names_the_message_in_the_reply_the_log_the_header_and_the_bounce() {
    let net = one_mx("id.test.example");
    let mx = net.server(
        2,
        Script::accept().reject_rcpt("bad", "550 5.1.1 no such user"),
    );
    let bounces = net.bounce_server();
    let d = net.daemon(1, &net.config(&[]));
    let id = send_one(&d, &["good@id.test.example", "bad@id.test.example"]);
    assert_eq!(id.len(), 16, "{id}");
    let got = expect_messages(&mx, 1, &d, "the delivered recipient");
    assert!(
        unfolded(&got[0]).contains(&format!("id {id}")),
        "Received: names it"
    );
    let bounce = expect_messages(&bounces, 1, &d, "the bounce");
    let text = unfolded(&bounce[0]);
    assert!(text.contains(&format!("X-Petrel-Queue-ID: {id}")), "{text}");
    assert!(
        text.contains(&format!("Queue ID of your message: {id}")),
        "{text}"
    );
    wait_queue_empty(&d, &net.spool, ARRIVAL);
    // One line when accepted, one per recipient's outcome, each with the
    // ID; the notice's own lines name the original too.
    let log = d.stderr();
    let lines = |word: &str| {
        log.lines()
            .filter(|l| l.contains(&format!("id={id}")) && l.contains(word))
            .count()
    };
    assert_eq!(lines(" accepted "), 1, "{log}");
    assert_eq!(lines(" delivered "), 1, "{log}");
    assert_eq!(lines(" bounced "), 1, "{log}");
    let delivered = log.lines().find(|l| l.contains(" delivered ")).unwrap();
    for field in [
        "to=\"good@id.test.example\"",
        "from=\"sender@client.test.example\"",
        "relay=mx.id.test.example[127.0.0.2]",
        "source=default",
    ] {
        assert!(delivered.contains(field), "{field} in {delivered}");
    }
    assert!(!log.contains("msg_id="), "{log}");
    finish(d);

    // With per-message lines off, neither line is written.
    let quiet = net.daemon(1, &(net.config(&[]) + "[log]\nmessages = false\n"));
    let id = send_one(&quiet, &["again@id.test.example"]);
    expect_messages(&mx, 2, &quiet, "the second message");
    wait_queue_empty(&quiet, &net.spool, ARRIVAL);
    assert!(!quiet.stderr().contains(&id), "{}", quiet.stderr());
    finish(quiet);
}

#[test]
fn data_5xx_bounces_every_recipient() {
    let net = one_mx("data5.test.example");
    let mx = net.server(
        2,
        Script::accept().reply_to(Cmd::DataEnd, "554 5.7.1 content rejected-plugh"),
    );
    let bounces = net.bounce_server();
    let d = net.daemon(1, &net.config(&[]));
    send_one(&d, &["one@data5.test.example", "two@data5.test.example"]);

    let got = expect_messages(&bounces, 1, &d, "bounce");
    let text = check_bounce(&got[0], "one@data5.test.example", "5.7.1");
    assert!(
        text.contains("Final-Recipient: rfc822; two@data5.test.example"),
        "{text}"
    );
    assert!(text.contains("content rejected-plugh"), "{text}");
    wait_queue_empty(&d, &net.spool, ARRIVAL);
    assert!(mx.messages().is_empty());
    assert_eq!(mx.transactions(), 1, "a 5xx is not retried");
    assert_eq!(bounces.messages().len(), 1, "one notice for both");
    finish(d);
}

// ---------------------------------------------------------------------
// Retries
// ---------------------------------------------------------------------

/// Sends one message to `user@<domain>`, whose MX behaves as `first` for
/// the first attempt and accepts from then on; checks that the message
/// came once, on a later attempt, with no bounce.
fn delivered_on_retry(domain: &str, first: Script) {
    let net = one_mx(domain);
    let mx = net.server(2, first);
    let bounces = net.bounce_server();
    // A short idle time, so that the retry comes on a new connection (the
    // script only changes for new ones).
    let d = net.daemon(1, &net.config(&[("idle_timeout", "\"200ms\"")]));
    let rcpt = format!("user@{domain}");
    send_one(&d, &[&rcpt]);

    wait_first_attempt(&mx, &d);
    mx.set_script(Script::accept());

    // The retry comes within ARRIVAL only because the test's retry step
    // is 1s: when a deferred job comes due is the scheduler's, tested on
    // virtual time (`schedule::tests`).
    let got = expect_messages(&mx, 1, &d, "retried message");
    assert_eq!(got[0].rcpt_to, [rcpt]);
    assert!(mx.transactions() >= 2, "the first attempt did not succeed");
    wait_queue_empty(&d, &net.spool, ARRIVAL);
    assert_eq!(mx.messages().len(), 1, "recorded exactly once");
    assert!(bounces.messages().is_empty(), "a temporary failure bounced");
    finish(d);
}

#[test]
fn retry_after_451_then_success() {
    let first = Script::accept().reply_to(Cmd::DataEnd, "451 4.3.0 later");
    delivered_on_retry("retry.test.example", first);
}

#[test]
fn dropped_after_data_end_is_retried_and_delivered_once() {
    // No reply to the end of data: the message is not delivered, so it is
    // tried again (and the server recorded nothing the first time).
    let first = Script::accept().drop_after(Cmd::DataEnd);
    delivered_on_retry("drop.test.example", first);
}

#[test]
fn a_connection_lost_mid_transaction_defers_and_bounces_nothing() {
    // The server holds its reply to MAIL until three messages are queued,
    // then drops the connection at the end of the first one's data. The
    // messages queued behind it were never sent: they must wait for the
    // retry like the one in flight, not be refused on the dead connection.
    let domain = "midway.test.example";
    let net = one_mx(domain);
    let first = Script::accept()
        .delay(Cmd::Mail, Duration::from_millis(500))
        .drop_after(Cmd::DataEnd);
    let mx = net.server(2, first);
    let bounces = net.bounce_server();
    let d = net.daemon(1, &net.config(&[("idle_timeout", "\"200ms\"")]));
    let rcpt = format!("user@{domain}");
    let mut c = d.connect();
    c.hello();
    for _ in 0..3 {
        send_message(&mut c, &[&rcpt], BODY);
    }
    c.cmd("QUIT", "221");

    wait_first_attempt(&mx, &d);
    mx.set_script(Script::accept());
    let got = expect_messages(&mx, 3, &d, "messages after the dropped connection");
    assert!(got.iter().all(|m| m.rcpt_to == [rcpt.clone()]));
    wait_queue_empty(&d, &net.spool, ARRIVAL);
    assert_eq!(mx.messages().len(), 3, "each recorded exactly once");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        bounces.messages().is_empty(),
        "a message bounced after a lost connection: {}",
        bounces.messages()[0].text()
    );
    finish(d);
}

#[test]
fn bounce_5_4_7_after_max_age() {
    // The only MX never answers: nothing listens on 127.0.0.2.
    let zone = Zone::new()
        .mx("expire.test.example", 10, "mx.expire.test.example")
        .a("mx.expire.test.example", "127.0.0.2");
    let overrides = [("max_age", "\"3s\""), ("retry", "[\"1s\"]")];
    let rcpt = "user@expire.test.example";
    // Not before max_age: the retry policy's tests check that on
    // virtual time (`schedule::retry`).
    let text = lone_bounce(zone, &[2], &overrides, rcpt, "5.4.7");
    assert!(
        text.contains("Diagnostic-Code: X-Petrel;"),
        "a local reason is not an SMTP reply:\n{text}"
    );
}

#[test]
fn always_451_bounces_5_4_7_after_max_age() {
    let net = one_mx("greylist.test.example");
    let mx = net.server(
        2,
        Script::accept().reply_to(Cmd::DataEnd, "451 4.7.1 greylisted-frob"),
    );
    let bounces = net.bounce_server();
    let d = net.daemon(
        1,
        &net.config(&[
            ("max_age", "\"3s\""),
            ("retry", "[\"1s\"]"),
            ("idle_timeout", "\"200ms\""),
        ]),
    );
    send_one(&d, &["user@greylist.test.example"]);

    let got = expect_messages(&bounces, 1, &d, "expiry bounce");
    let text = check_bounce(&got[0], "user@greylist.test.example", "5.4.7");
    assert!(
        text.contains("greylisted-frob"),
        "the last error is not reported:\n{text}"
    );
    assert!(mx.transactions() >= 2, "retried before expiry");
    assert!(mx.messages().is_empty());
    wait_queue_empty(&d, &net.spool, ARRIVAL);
    finish(d);
}

// ---------------------------------------------------------------------
// DSN parameters (RFC 3461)
// ---------------------------------------------------------------------

fn dsn_net() -> Net {
    one_mx("dsn.test.example")
}

fn dsn_script() -> Script {
    Script::accept().reject_rcpt("reject", "550 5.1.1 no such mailbox-quux")
}

/// Sends one message with `RET=HDRS ENVID=xyz` to
/// `<local>@dsn.test.example` with `NOTIFY=FAILURE ORCPT=rfc822;a@b`.
fn send_with_dsn(d: &Daemon, local: &str) {
    send_one_raw(
        d,
        &format!("<{SENDER}> RET=HDRS ENVID=xyz"),
        &[&format!(
            "<{local}@dsn.test.example> NOTIFY=FAILURE ORCPT=rfc822;a@b"
        )],
        BODY,
    );
}

#[test]
fn dsn_parameters_are_passed_on() {
    let net = dsn_net();
    let mx = net.server(2, dsn_script());
    let d = net.daemon(1, &net.config(&[]));
    send_with_dsn(&d, "ok");

    let got = expect_messages(&mx, 1, &d, "message with DSN parameters");
    let m = &got[0];
    let mail = m.mail_params.to_ascii_uppercase();
    assert!(mail.contains("RET=HDRS"), "MAIL parameters {mail:?}");
    assert!(m.mail_params.contains("ENVID=xyz"), "{:?}", m.mail_params);
    assert_eq!(m.rcpt_to, ["ok@dsn.test.example"]);
    let rcpt = &m.rcpt_params[0];
    assert!(
        rcpt.to_ascii_uppercase().contains("NOTIFY=FAILURE"),
        "RCPT parameters {rcpt:?}"
    );
    assert!(
        rcpt.contains("ORCPT=rfc822;a@b"),
        "RCPT parameters {rcpt:?}"
    );
    assert!(mx.violations().is_empty(), "{:?}", mx.violations());
    wait_queue_empty(&d, &net.spool, ARRIVAL);
    finish(d);
}

#[test]
fn dsn_parameters_are_left_out_when_not_advertised() {
    let net = dsn_net();
    let mx = net.server(2, dsn_script().no_dsn());
    let d = net.daemon(1, &net.config(&[]));
    send_with_dsn(&d, "ok");
    let got = expect_messages(&mx, 1, &d, "message to a server without DSN");
    assert!(!got[0].mail_params.contains("ENVID"), "{:?}", got[0]);
    assert_eq!(got[0].rcpt_params, [""]);
    assert!(mx.violations().is_empty(), "{:?}", mx.violations());
    wait_queue_empty(&d, &net.spool, ARRIVAL);
    finish(d);
}

#[test]
fn dsn_bounce_has_envid_orcpt_and_only_headers() {
    let net = dsn_net();
    let _mx = net.server(2, dsn_script());
    let bounces = net.bounce_server();
    let d = net.daemon(1, &net.config(&[]));
    send_with_dsn(&d, "reject");

    let got = expect_messages(&bounces, 1, &d, "bounce");
    let text = check_bounce(&got[0], "reject@dsn.test.example", "5.1.1");
    for needle in [
        "Original-Envelope-Id: xyz",
        "Original-Recipient: rfc822; a@b",
        "text/rfc822-headers",
        "Subject: delivery test",
        "no such mailbox-quux",
    ] {
        assert!(text.contains(needle), "{needle:?} missing:\n{text}");
    }
    assert!(
        !text.contains("body-marker"),
        "RET=HDRS returned the body:\n{text}"
    );
    wait_queue_empty(&d, &net.spool, ARRIVAL);
    finish(d);
}

#[test]
fn no_bounce_for_notify_never_or_the_null_sender() {
    let net = dsn_net();
    let mx = net.server(2, dsn_script());
    let bounces = net.bounce_server();
    let d = net.daemon(1, &net.config(&[]));
    let mut c = d.connect();
    c.hello();
    send_raw(
        &mut c,
        &format!("<{SENDER}>"),
        &["<reject-never@dsn.test.example> NOTIFY=NEVER"],
        BODY,
    );
    send_raw(&mut c, "<>", &["<reject-null@dsn.test.example>"], BODY);
    // A control: the same failure with no parameters does bounce, so the
    // silence above is not the bounce path being broken.
    send_raw(
        &mut c,
        &format!("<{SENDER}>"),
        &["<reject-control@dsn.test.example>"],
        BODY,
    );
    c.cmd("QUIT", "221");

    let got = expect_messages(&bounces, 1, &d, "control bounce");
    check_bounce(&got[0], "reject-control@dsn.test.example", "5.1.1");
    wait_queue_empty(&d, &net.spool, ARRIVAL);
    // Every failure is settled, so any notice would be queued by now; give
    // one the time to be delivered.
    std::thread::sleep(QUIET);
    let got = bounces.messages();
    assert_eq!(
        got.len(),
        1,
        "bounces: {:?}",
        got.iter().map(|m| m.text()).collect::<Vec<_>>()
    );
    assert_eq!(mx.transactions(), 3, "each message tried once");
    // The log names each notice it queues: only the control's.
    assert!(
        d.stderr().matches("notice queued").count() <= 1,
        "{}",
        d.stderr()
    );
    finish(d);
}

// ---------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------

/// Sends `n` messages to `u0@domain`, `u1@domain`, … over one client
/// connection, one after another.
fn send_burst(d: &Daemon, domain: &str, n: usize) {
    let mut c = d.connect();
    c.hello();
    for i in 0..n {
        send_message(&mut c, &[&format!("u{i}@{domain}")], BODY);
    }
    c.cmd("QUIT", "221");
}

/// How many of `got` each connection carried, by connection.
fn per_connection<'a>(
    got: impl IntoIterator<Item = &'a Received>,
) -> std::collections::BTreeMap<usize, usize> {
    let mut n = std::collections::BTreeMap::new();
    for m in got {
        *n.entry(m.connection).or_insert(0usize) += 1;
    }
    n
}

/// Sends 30 messages to one domain quickly over one client connection,
/// with `max_connections_per_destination = limit`; checks each arrived
/// once, intact and cleanly sent, and returns how many messages each
/// connection carried.
fn thirty_messages(limit: &str) -> std::collections::BTreeMap<usize, usize> {
    let net = one_mx("reuse.test.example");
    let mx = net.server(2, Script::accept());
    let d = net.daemon(
        1,
        &net.config(&[("max_connections_per_destination", limit)]),
    );
    let mut c = d.connect();
    c.hello();
    for i in 0..30 {
        let body = format!("Subject: reuse {i}\r\n\r\nline one\r\n.. dot {i}\r\n");
        send_message(&mut c, &[&format!("u{i}@reuse.test.example")], &body);
    }
    c.cmd("QUIT", "221");

    let got = expect_messages(&mx, 30, &d, "reused connections");
    for m in &got {
        assert!(!m.bare_lf_or_cr, "{m:?}");
    }
    let per_connection = per_connection(&got);
    // Each arrived once, intact (the dot-stuffing undone by the server).
    let mut seen: Vec<usize> = got
        .iter()
        .filter_map(|m| {
            let text = m.text();
            let i: usize = text
                .split("Subject: reuse ")
                .nth(1)?
                .split("\r\n")
                .next()?
                .parse()
                .ok()?;
            assert!(
                text.ends_with(&format!("\r\n\r\nline one\r\n. dot {i}")),
                "{text:?}"
            );
            assert_eq!(m.rcpt_to, [format!("u{i}@reuse.test.example")]);
            Some(i)
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..30).collect::<Vec<_>>());
    assert!(mx.violations().is_empty(), "{:?}", mx.violations());
    wait_queue_empty(&d, &net.spool, ARRIVAL);
    assert_eq!(mx.messages().len(), 30, "some message arrived twice");
    assert_eq!(mx.connections(), per_connection.len(), "idle connections");
    finish(d);
    per_connection
}

#[test]
fn one_connection_carries_many_messages() {
    let per_connection = thirty_messages("1");
    assert!(
        per_connection.len() <= 2,
        "30 messages took {} connections: {per_connection:?}",
        per_connection.len()
    );
}

#[test]
fn connections_are_reused_when_several_are_allowed() {
    // The window opens with successes (as Postfix's destination
    // concurrency does), so a burst may use a few connections, each
    // carrying several messages.
    let per_connection = thirty_messages("20");
    assert!(
        per_connection.len() <= 10,
        "30 messages took {} connections: {per_connection:?}",
        per_connection.len()
    );
    assert!(
        per_connection.values().any(|&n| n >= 3),
        "no connection carried several messages: {per_connection:?}"
    );
}

#[test]
fn a_backlog_gets_another_connection_only_when_the_open_ones_leave_enough() {
    // A slow destination and a burst of twelve: the first connection is
    // busy with the first message while the other eleven queue. They are
    // worth one more connection (eight queued jobs each), not eleven: the
    // two take the rest in turn, their transactions pipelined.
    let net = one_mx("backlog.test.example");
    let mx = net.server(
        2,
        Script::accept().delay(Cmd::DataEnd, Duration::from_millis(300)),
    );
    let d = net.daemon(1, &net.config(&[("max_connections_per_destination", "20")]));
    send_burst(&d, "backlog.test.example", 12);
    let per_connection = per_connection(&expect_messages(&mx, 12, &d, "a backlog"));
    assert!(
        per_connection.len() <= 2,
        "12 messages took {} connections: {per_connection:?}",
        per_connection.len()
    );
    assert!(mx.violations().is_empty(), "{:?}", mx.violations());
    finish(d);
}

#[test]
fn a_trickle_goes_to_the_connection_idle_last_and_the_surplus_ones_close() {
    // A burst to a slow destination opens a few connections. Then one
    // message at a time, each once the last is delivered: each wakes the
    // connection that became idle last, so one carries them all and the
    // others wait out idle_timeout (were the trickle shared among them,
    // each would get a message more often than that and stay open).
    let domain = "trickle.test.example";
    let net = one_mx(domain);
    let mx = net.server(
        2,
        Script::accept().delay(Cmd::DataEnd, Duration::from_millis(200)),
    );
    let d = net.daemon(
        1,
        &net.config(&[
            ("max_connections_per_destination", "20"),
            ("idle_timeout", "\"2s\""),
        ]),
    );
    send_burst(&d, domain, 30);
    let burst = per_connection(&expect_messages(&mx, 30, &d, "the burst"));
    assert!(burst.len() >= 2, "the burst took one connection: {burst:?}");

    let mut c = d.connect();
    c.hello();
    for i in 0..10 {
        send_message(&mut c, &[&format!("t{i}@{domain}")], BODY);
        std::thread::sleep(Duration::from_millis(500));
    }
    c.cmd("QUIT", "221");
    let got = expect_messages(&mx, 40, &d, "the trickle");
    let carriers = per_connection(got.iter().filter(|m| m.rcpt_to[0].starts_with('t')));
    assert_eq!(
        carriers.len(),
        1,
        "the trickle was spread over connections {carriers:?} (burst: {burst:?})"
    );
    assert!(mx.violations().is_empty(), "{:?}", mx.violations());
    finish(d);
}

#[test]
fn max_messages_per_connection_is_kept() {
    let net = one_mx("permsg.test.example");
    let mx = net.server(2, Script::accept());
    let d = net.daemon(1, &net.config(&[("max_messages_per_connection", "3")]));
    send_burst(&d, "permsg.test.example", 10);
    let per_connection = per_connection(&expect_messages(&mx, 10, &d, "limited connections"));
    assert!(
        per_connection.values().all(|&n| n <= 3),
        "messages per connection: {per_connection:?}"
    );
    assert!(mx.violations().is_empty(), "{:?}", mx.violations());
    finish(d);
}

#[test]
fn per_destination_limit_holds_across_shards() {
    const MAX: usize = 3;
    const CLIENTS: usize = 12;
    const PER_CLIENT: usize = 5;
    let net = one_mx("limit.test.example");
    let mx = net.server(
        2,
        Script::accept().delay(Cmd::DataEnd, Duration::from_millis(100)),
    );
    let d = net.daemon(
        2,
        &net.config(&[
            ("max_connections_per_destination", "3"),
            // Connections stay open while their shard has work (no
            // per-connection limit), so few close mid-test: a session the
            // test server has not yet seen close would count along with
            // the connection that took its slot.
            ("idle_timeout", "\"1s\""),
        ]),
    );
    send_over_clients(&d, "limit.test.example", CLIENTS, PER_CLIENT);

    let total = CLIENTS * PER_CLIENT;
    let got = expect_messages(&mx, total, &d, "limited destination");
    assert_eq!(got.len(), total);
    let max = mx.max_concurrent();
    assert!(
        max <= MAX,
        "{max} connections at once, limit {MAX}; daemon log:\n{}",
        d.stderr()
    );
    assert!(mx.violations().is_empty(), "{:?}", mx.violations());
    wait_queue_empty(&d, &net.spool, ARRIVAL);
    assert_eq!(mx.messages().len(), total);
    finish(d);
}

#[test]
fn an_idle_connection_does_not_starve_the_other_shard() {
    // One connection allowed to the destination in the whole process, and
    // an idle time far beyond the test's patience. Once a shard's
    // connection has delivered and sits idle, mail that another shard
    // holds for the same destination must still go out: the idle
    // connection hands the slot over (how soon is the delivery machine's
    // rule, tested on virtual time in `outbound::delivery`).
    let net = one_mx("starve.test.example");
    let mx = net.server(2, Script::accept());
    let d = net.daemon(
        2,
        &net.config(&[
            ("max_connections_per_destination", "1"),
            ("idle_timeout", "\"1h\""),
        ]),
    );
    send_one(&d, &["first@starve.test.example"]);
    expect_messages(&mx, 1, &d, "first message");
    // Each message on a new client connection, so the kernel spreads them
    // over the shards: the slot changes hands whenever one lands on the
    // shard without it.
    for i in 0..30 {
        send_one(&d, &[&format!("m{i}@starve.test.example")]);
        let got = mx.wait_for_messages(i + 2, ARRIVAL);
        assert_eq!(
            got.len(),
            i + 2,
            "message {i} waited for the other shard's idle connection \
             to give up the destination's only slot; spool:\n{}\n{}",
            common::inspect(&net.spool),
            d.stderr()
        );
    }
    finish(d);
}

// ---------------------------------------------------------------------
// Restart, routes
// ---------------------------------------------------------------------

#[test]
fn restart_resumes_the_queue_without_resending() {
    let zone = Zone::new()
        .mx("up.test.example", 10, "mx.up.test.example")
        .a("mx.up.test.example", "127.0.0.2")
        .mx("later.test.example", 10, "mx.later.test.example")
        .a("mx.later.test.example", "127.0.0.3");
    let net = Net::new(zone, &[2, 3]);
    let up = net.server(2, Script::accept());
    let config = net.config(&[]);
    let d = net.daemon(1, &config);
    send_one(&d, &["user@up.test.example"]);
    expect_messages(&up, 1, &d, "before the restart");
    send_one(&d, &["user@later.test.example"]);
    // Let it try (and defer) at least once before the restart; the log
    // line is only a convenience, so its absence is no failure.
    wait_log(&d, "deferred", Duration::from_secs(5));
    assert_no_panic(&d);
    d.stop();

    let later = net.server(3, Script::accept());
    let d = net.daemon(1, &config);
    let got = expect_messages(&later, 1, &d, "after the restart");
    assert_eq!(got[0].rcpt_to, ["user@later.test.example"]);
    wait_queue_empty(&d, &net.spool, ARRIVAL);
    std::thread::sleep(QUIET);
    assert_eq!(up.messages().len(), 1, "delivered again after the restart");
    assert_eq!(later.messages().len(), 1);
    finish(d);
}

#[test]
fn smart_host_route_needs_no_dns() {
    let dir = tempdir();
    let spool = dir.path().join("spool");
    let relay = SmtpServer::start(host(9), 0, Script::accept());
    // Nothing answers DNS at this address: a lookup would time out.
    let dns: SocketAddr = "127.0.0.54:9".parse().expect("address");
    let unused_port = common_port(&[2]);
    let extra = format!(
        "{}\n[[route]]\ndomain = \"*\"\nrelay = \"{}\"\n",
        delivery_config(dns, unused_port, &[]),
        relay.addr()
    );
    let d = Daemon::start_plain(dir.path(), &spool, "shards = 1", "", &extra);
    send_one(&d, &["someone@anywhere.example", "other@elsewhere.example"]);

    let got = expect_messages(&relay, 1, &d, "smart host");
    let mut rcpts: Vec<String> = got.iter().flat_map(|m| m.rcpt_to.clone()).collect();
    // Both domains share the route, so they may share one transaction.
    let deadline = Instant::now() + ARRIVAL;
    while rcpts.len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        rcpts = relay
            .messages()
            .iter()
            .flat_map(|m| m.rcpt_to.clone())
            .collect();
    }
    rcpts.sort();
    assert_eq!(
        rcpts,
        ["other@elsewhere.example", "someone@anywhere.example"]
    );
    assert_eq!(got[0].mail_from, SENDER);
    wait_queue_empty(&d, &spool, ARRIVAL);
    assert!(relay.violations().is_empty(), "{:?}", relay.violations());
    finish(d);
}

#[test]
fn a_connection_closed_by_the_server_while_idle_is_reopened_not_deferred() {
    let net = one_mx("stale.test.example");
    let mx = net.server(2, Script::accept().close_after_message());
    // A deferral would wait a minute: the second message arriving within
    // the test's bound shows the stale connection was replaced, not
    // failed.
    let d = net.daemon(
        1,
        &net.config(&[
            ("idle_timeout", "\"10s\""),
            ("retry", "[\"60s\"]"),
            ("max_connections_per_destination", "1"),
        ]),
    );
    send_one(&d, &["first@stale.test.example"]);
    expect_messages(&mx, 1, &d, "the first message");
    // The connection now idles, closed at the server's end.
    std::thread::sleep(Duration::from_millis(300));
    send_one(&d, &["second@stale.test.example"]);
    let got = expect_messages(&mx, 2, &d, "the second message after the close");
    assert_eq!(got[1].rcpt_to, ["second@stale.test.example"]);
    assert!(!d.stderr().contains("deferred"), "{}", d.stderr());
    assert_eq!(mx.connections(), 2);
    finish(d);
}

#[test]
fn sigkill_during_delivery_loses_nothing() {
    let net = one_mx("crash.test.example");
    // Slow enough that the kill lands with deliveries on the wire.
    let mx = net.server(
        2,
        Script::accept().delay(Cmd::DataEnd, Duration::from_millis(15)),
    );
    let config = net.config(&[("max_connections_per_destination", "4")]);
    let d = net.daemon(2, &config);
    const N: usize = 120;
    let mut c = d.connect();
    c.hello();
    for i in 0..N {
        send_message(
            &mut c,
            &[&format!("u{i}@crash.test.example")],
            &format!("Subject: crash {i}\r\n\r\nmessage {i}\r\n"),
        );
    }
    c.cmd("QUIT", "221");
    // Kill (SIGKILL, on drop) once some but not all have gone out.
    let deadline = Instant::now() + ARRIVAL;
    while mx.messages().len() < N / 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let before = mx.messages().len();
    assert!(
        before < N,
        "all delivered before the kill; slow the MX down"
    );
    drop(d);

    let d = net.daemon(2, &config);
    let deadline = Instant::now() + Duration::from_secs(30);
    let missing = |got: &[Received]| {
        let seen: std::collections::HashSet<String> =
            got.iter().flat_map(|m| m.rcpt_to.clone()).collect();
        (0..N)
            .filter(|i| !seen.contains(&format!("u{i}@crash.test.example")))
            .count()
    };
    while missing(&mx.messages()) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = mx.messages();
    assert_eq!(missing(&got), 0, "acknowledged mail lost across SIGKILL");
    // Only what was on the wire at the kill may come twice.
    // (four connections, and statuses not yet durable in one batch).
    assert!(
        got.len() <= N + 12,
        "{} deliveries for {N} messages",
        got.len()
    );
    wait_queue_empty(&d, &net.spool, ARRIVAL);
    finish(d);
}

// ---------------------------------------------------------------------
// Egress sources and pools
// ---------------------------------------------------------------------

/// Two sources, 127.0.0.5 (EHLO mta5…) and 127.0.0.6 (EHLO mta6…), in
/// pools `a` (only .5), `b` (only .6) and `both` (.5 weight 3, .6 weight
/// 1); then `selection`, a `[pool_selection]` body.
fn egress_config(selection: &str) -> String {
    format!(
        "[[source]]\nname = \"ip5\"\naddress = \"127.0.0.5\"\nehlo = \"mta5.test.example\"\n\n\
         [[source]]\nname = \"ip6\"\naddress = \"127.0.0.6\"\nehlo = \"mta6.test.example\"\n\n\
         [[pool]]\nname = \"a\"\nsources = [{{ source = \"ip5\" }}]\n\n\
         [[pool]]\nname = \"b\"\nsources = [{{ source = \"ip6\" }}]\n\n\
         [[pool]]\nname = \"both\"\nsources = [{{ source = \"ip5\", weight = 3 }}, {{ source = \"ip6\", weight = 1 }}]\n\n\
         [pool_selection]\n{selection}\n"
    )
}

/// The message with `header` (a whole header line, or "") among its
/// headers.
fn body_with(header: &str) -> String {
    format!("{header}{BODY}")
}

#[test]
fn a_pools_weights_show_in_the_addresses_mail_leaves_from() {
    let net = one_mx("weights.test.example");
    let mx = net.server(2, Script::accept());
    let config = net.config(&[]) + &egress_config("default = \"both\"");
    let d = net.daemon(1, &config);
    for i in 0..40 {
        send_one(&d, &[&format!("user{i}@weights.test.example")]);
    }
    let got = expect_messages(&mx, 40, &d, "messages from the pool");
    let from = |n: u8| got.iter().filter(|m| m.peer == host(n)).count();
    assert_eq!((from(5), from(6)), (30, 10), "weights 3:1 over 40 messages");
    for m in &got {
        let expected = if m.peer == host(5) {
            "mta5.test.example"
        } else {
            "mta6.test.example"
        };
        assert_eq!(m.helo, expected, "each source says its own name in EHLO");
    }
    finish(d);
}

#[test]
fn the_pool_header_chooses_the_pool_and_is_removed() {
    let net = one_mx("header.test.example");
    let mx = net.server(2, Script::accept());
    let config = net.config(&[]) + &egress_config("default = \"a\"");
    let d = net.daemon(1, &config);
    let rcpt = "<user@header.test.example>";
    send_one_raw(
        &d,
        &format!("<{SENDER}>"),
        &[rcpt],
        &body_with("X-Petrel-Pool: b\r\n"),
    );
    send_one_raw(&d, &format!("<{SENDER}>"), &[rcpt], &body_with(""));
    let got = expect_messages(&mx, 2, &d, "both messages");
    let with: Vec<&Received> = got.iter().filter(|m| m.peer == host(6)).collect();
    assert_eq!(with.len(), 1, "the header sent one message through pool b");
    assert_eq!(
        got.iter().filter(|m| m.peer == host(5)).count(),
        1,
        "the other went through the default pool"
    );
    for m in &got {
        assert!(
            !m.text().to_ascii_lowercase().contains("x-petrel-pool"),
            "the header reached the MX:\n{}",
            m.text()
        );
        assert!(m.text().contains("body-marker line"), "{}", m.text());
    }
    finish(d);
}

#[test]
fn a_message_naming_an_unknown_pool_is_refused_at_the_end_of_data() {
    let net = one_mx("unknown.test.example");
    let mx = net.server(2, Script::accept());
    let config = net.config(&[]) + &egress_config("default = \"a\"");
    let d = net.daemon(1, &config);
    let mut c = d.connect();
    c.hello();
    c.cmd(&format!("MAIL FROM:<{SENDER}>"), "250");
    c.cmd("RCPT TO:<user@unknown.test.example>", "250");
    c.cmd("DATA", "354");
    c.send(&body_with("X-Petrel-Pool: no-such-pool\r\n"));
    c.send(".\r\n");
    let reply = c.reply();
    assert!(reply.starts_with("550 5.7.0 "), "{reply}");
    // The session goes on: the next message is taken.
    send_message(&mut c, &["user@unknown.test.example"], BODY);
    c.cmd("QUIT", "221");
    let got = expect_messages(&mx, 1, &d, "the second message");
    assert_eq!(got[0].peer, host(5));
    std::thread::sleep(QUIET);
    assert_eq!(mx.messages().len(), 1, "the refused message was sent");
    finish(d);
}

#[test]
fn an_unknown_pool_goes_to_the_default_pool_when_configured_so() {
    let net = one_mx("lenient.test.example");
    let mx = net.server(2, Script::accept());
    let config = net.config(&[]) + &egress_config("default = \"b\"\nunknown = \"default\"");
    let d = net.daemon(1, &config);
    let rcpt = "<user@lenient.test.example>";
    send_one_raw(
        &d,
        &format!("<{SENDER}>"),
        &[rcpt],
        &body_with("X-Petrel-Pool: typo\r\n"),
    );
    let got = expect_messages(&mx, 1, &d, "the message");
    assert_eq!(got[0].peer, host(6));
    assert!(!got[0].text().contains("X-Petrel-Pool"));
    finish(d);
}

#[test]
fn rules_choose_the_pool_by_sender_domain() {
    let net = one_mx("rules.test.example");
    let mx = net.server(2, Script::accept());
    let selection = format!(
        "default = \"a\"\nrules = [{{ sender_domain = \"{SENDER_DOMAIN}\", pool = \"b\" }}]"
    );
    let config = net.config(&[]) + &egress_config(&selection);
    let d = net.daemon(1, &config);
    send_one(&d, &["user@rules.test.example"]);
    send_one_raw(
        &d,
        "<other@elsewhere.test.example>",
        &["<user@rules.test.example>"],
        BODY,
    );
    let got = expect_messages(&mx, 2, &d, "both messages");
    let peer_of = |from: &str| got.iter().find(|m| m.mail_from == from).map(|m| m.peer);
    assert_eq!(peer_of(SENDER), Some(host(6)), "the sender's domain rule");
    assert_eq!(
        peer_of("other@elsewhere.test.example"),
        Some(host(5)),
        "the default pool"
    );
    finish(d);
}

// ---------------------------------------------------------------------
// Shaping per source and destination
// ---------------------------------------------------------------------

/// Sends `per_client` messages to `domain` over each of `clients` client
/// connections, so that both shards' listeners get some.
fn send_over_clients(d: &Daemon, domain: &str, clients: usize, per_client: usize) {
    for k in 0..clients {
        let mut c = d.connect();
        c.hello();
        for i in 0..per_client {
            send_message(&mut c, &[&format!("c{k}m{i}@{domain}")], BODY);
        }
        c.cmd("QUIT", "221");
    }
}

#[test]
fn a_shaping_rules_max_connections_holds_across_shards() {
    let net = one_mx("shaped.test.example");
    let mx = net.server(
        2,
        Script::accept().delay(Cmd::DataEnd, Duration::from_millis(100)),
    );
    let rule = "[[shaping]]\ndomain = \"shaped.test.example\"\nmax_connections = 2\n";
    let d = net.daemon(2, &(net.config(&[]) + rule));
    send_over_clients(&d, "shaped.test.example", 12, 5);
    let got = expect_messages(&mx, 60, &d, "shaped destination");
    assert_eq!(got.len(), 60);
    let max = mx.max_overlapping_deliveries();
    assert!(
        max <= 2,
        "{max} deliveries at once, rule's limit 2:\n{}",
        d.stderr()
    );
    finish(d);
}

#[test]
fn a_message_rate_holds_over_the_window() {
    const N: usize = 16;
    let net = one_mx("rate.test.example");
    let mx = net.server(2, Script::accept());
    let rule = "[[shaping]]\ndomain = \"rate.test.example\"\nmax_message_rate = \"10/s\"\n";
    let d = net.daemon(2, &(net.config(&[]) + rule));
    send_over_clients(&d, "rate.test.example", 4, N / 4);
    let mut got = expect_messages(&mx, N, &d, "rate-limited messages");
    got.sort_by_key(|m| m.at);
    // 10 a second over both shards, one at a time: the first message may
    // leave at once, each of the others 100 ms after the one before.
    let span = got[N - 1].at - got[0].at;
    let least = Duration::from_millis(100 * (N as u64 - 1));
    assert!(
        span + Duration::from_millis(150) >= least,
        "{N} messages in {span:?}: faster than 10/s"
    );
    for w in got.windows(11) {
        let took = w[10].at - w[0].at;
        assert!(
            took + Duration::from_millis(150) >= Duration::from_secs(1),
            "11 messages within {took:?}"
        );
    }
    finish(d);
}

#[test]
fn a_rate_slower_than_an_idle_wait_closes_the_connection_between_messages() {
    let net = one_mx("slow.rate.test.example");
    let mx = net.server(2, Script::accept());
    let rule = "[[shaping]]\ndomain = \"slow.rate.test.example\"\nmax_message_rate = \"40/min\"\n";
    let config = net.config(&[("idle_timeout", "\"500ms\"")]) + rule;
    let d = net.daemon(1, &config);
    for i in 0..3 {
        send_one(&d, &[&format!("user{i}@slow.rate.test.example")]);
    }
    let mut got = expect_messages(&mx, 3, &d, "slowly rated messages");
    got.sort_by_key(|m| m.at);
    assert!(
        got[2].at - got[0].at + Duration::from_millis(150) >= Duration::from_millis(3_000),
        "faster than 40/min: {:?}",
        got.iter().map(|m| m.at).collect::<Vec<_>>()
    );
    // 1.5 s between messages, idle connections close after 0.5 s: each
    // message waits in its queue, on no connection, and gets its own.
    assert_eq!(mx.connections(), 3, "{}", d.stderr());
    wait_queue_empty(&d, &net.spool, ARRIVAL);
    assert!(!d.stderr().contains("deferred"), "{}", d.stderr());
    finish(d);
}

#[test]
fn an_mx_rollup_shares_one_budget_over_its_domains() {
    let zone = Zone::new()
        .mx("one.rollup.test.example", 10, "mx1.hosting.test.example")
        .mx("two.rollup.test.example", 10, "mx2.hosting.test.example")
        .a("mx1.hosting.test.example", "127.0.0.2")
        .a("mx2.hosting.test.example", "127.0.0.2");
    let net = Net::new(zone, &[2]);
    let mx = net.server(
        2,
        Script::accept().delay(Cmd::DataEnd, Duration::from_millis(150)),
    );
    let rule = "[[shaping]]\nmx = \"*.hosting.test.example\"\nmax_connections = 1\n";
    let d = net.daemon(1, &(net.config(&[]) + rule));
    send_burst(&d, "one.rollup.test.example", 8);
    send_burst(&d, "two.rollup.test.example", 8);
    let got = expect_messages(&mx, 16, &d, "both domains' messages");
    assert_eq!(got.len(), 16);
    assert_eq!(
        mx.max_overlapping_deliveries(),
        1,
        "two domains under one MX rule got more than its one connection"
    );
    finish(d);
}

#[test]
fn a_rules_recipients_per_transaction_splits_a_message() {
    let net = one_mx("split.test.example");
    let mx = net.server(2, Script::accept());
    let rule = "[[shaping]]\ndomain = \"split.test.example\"\nmax_recipients_per_transaction = 2\n";
    let d = net.daemon(1, &(net.config(&[]) + rule));
    let rcpts: Vec<String> = (0..5).map(|i| format!("r{i}@split.test.example")).collect();
    let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    send_one(&d, &rcpts);
    let got = expect_messages(&mx, 3, &d, "three transactions");
    let mut sizes: Vec<usize> = got.iter().map(|m| m.rcpt_to.len()).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [1, 2, 2]);
    finish(d);
}

// ---------------------------------------------------------------------
// Backoff
// ---------------------------------------------------------------------

#[test]
fn a_matching_421_suspends_that_destination_while_others_keep_flowing() {
    let zone = Zone::new()
        .mx(
            "busy.backoff.test.example",
            10,
            "mx.busy.backoff.test.example",
        )
        .a("mx.busy.backoff.test.example", "127.0.0.2")
        .mx(
            "calm.backoff.test.example",
            10,
            "mx.calm.backoff.test.example",
        )
        .a("mx.calm.backoff.test.example", "127.0.0.3");
    let net = Net::new(zone, &[2, 3]);
    let busy = net.server(
        2,
        Script::accept().greeting("421 4.7.0 too many connections from your IP"),
    );
    let calm = net.server(3, Script::accept());
    let rule = "[[backoff]]\ncode = 421\nreply = \"too many connections\"\naction = \"suspend\"\nduration = \"1h\"\n";
    let d = net.daemon(1, &(net.config(&[]) + rule));
    send_burst(&d, "busy.backoff.test.example", 5);
    assert!(
        wait_log(&d, "backoff: suspended", ARRIVAL),
        "{}",
        d.stderr()
    );
    // The other destination is not held back.
    send_burst(&d, "calm.backoff.test.example", 5);
    expect_messages(&calm, 5, &d, "the other destination's messages");
    // More mail for the suspended one costs no connection attempt, and
    // nothing is deferred or bounced for the suspension.
    send_burst(&d, "busy.backoff.test.example", 5);
    std::thread::sleep(QUIET);
    assert_eq!(
        busy.connections(),
        1,
        "connections after the suspension:\n{}",
        d.stderr()
    );
    assert_eq!(queued(&net.spool), Some(10), "{}", d.stderr());
    let log = d.stderr();
    assert_eq!(
        log.matches("backoff: suspended").count(),
        1,
        "logged once:\n{log}"
    );
    assert!(log.contains("too many connections from your IP"), "{log}");
    assert!(
        !log.contains("deferred"),
        "a suspended message was deferred:\n{log}"
    );
    finish(d);
}

#[test]
fn mail_for_an_ipv6_only_destination_leaves_from_the_pools_ipv6_source() {
    let zone = Zone::new()
        .mx("six.test.example", 10, "mx.six.test.example")
        .aaaa("mx.six.test.example", "::1");
    let net = Net::new(zone, &[]);
    let mx = SmtpServer::start(
        IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        net.port,
        Script::accept(),
    );
    let config = net.config(&[])
        + "[[source]]\nname = \"v4\"\naddress = \"127.0.0.5\"\n\n\
           [[source]]\nname = \"v6\"\naddress = \"::1\"\n\n\
           [[pool]]\nname = \"mixed\"\nsources = [{ source = \"v4\", weight = 3 }, { source = \"v6\" }]\n";
    let d = net.daemon(1, &config);
    for i in 0..4 {
        send_one(&d, &[&format!("user{i}@six.test.example")]);
    }
    let got = expect_messages(&mx, 4, &d, "the IPv6-only destination's messages");
    assert!(
        got.iter()
            .all(|m| m.peer == IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)),
        "{:?}",
        got.iter().map(|m| m.peer).collect::<Vec<_>>()
    );
    wait_queue_empty(&d, &net.spool, ARRIVAL);
    assert!(
        d.stderr()
            .contains("mail moves to another source of its pool"),
        "{}",
        d.stderr()
    );
    assert!(!d.stderr().contains("deferred"), "{}", d.stderr());
    finish(d);
}

/// Today's UTC date, `YYYY-MM-DD`, as a warm-up schedule names it.
fn today() -> String {
    let out = Command::new("date")
        .args(["-u", "+%F"])
        .output()
        .expect("date");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Sources ip5 (in warm-up from today with `daily`) and ip6, and a pool
/// of `members` (`both`: ip5 and ip6 alike, `ip5`: ip5 alone).
fn warmup_config(net: &Net, daily: &str, members: &str) -> String {
    let members = match members {
        "both" => "[{ source = \"ip5\" }, { source = \"ip6\" }]",
        _ => "[{ source = \"ip5\" }]",
    };
    net.config(&[])
        + &format!(
            "[[source]]\nname = \"ip5\"\naddress = \"127.0.0.5\"\n\
             warmup = {{ start = \"{}\", daily = {daily} }}\n\n\
             [[source]]\nname = \"ip6\"\naddress = \"127.0.0.6\"\n\n\
             [[pool]]\nname = \"p\"\nsources = {members}\n",
            today()
        )
}

#[test]
fn a_spent_warmup_budget_moves_traffic_to_the_other_source_also_after_a_restart() {
    let net = one_mx("warmup.test.example");
    let mx = net.server(2, Script::accept());
    let config = warmup_config(&net, "[5, 5]", "both");
    let d = net.daemon(2, &config);
    send_over_clients(&d, "warmup.test.example", 6, 5);
    let got = expect_messages(&mx, 30, &d, "messages of the first run");
    let from = |got: &[Received], n: u8| got.iter().filter(|m| m.peer == host(n)).count();
    assert_eq!(
        (from(&got, 5), from(&got, 6)),
        (5, 25),
        "ip5 sends its budget of the day over both shards, ip6 the rest:\n{}",
        d.stderr()
    );
    assert!(
        d.stderr().contains("warm-up budget of the day spent"),
        "{}",
        d.stderr()
    );
    wait_queue_empty(&d, &net.spool, ARRIVAL);
    assert!(!d.stderr().contains("deferred"), "{}", d.stderr());
    d.stop();
    // The count of the day survives the restart: ip5 sends no more today.
    let d = net.daemon(2, &config);
    for i in 0..10 {
        send_one(&d, &[&format!("again{i}@warmup.test.example")]);
    }
    let got = expect_messages(&mx, 40, &d, "messages after the restart");
    assert_eq!(
        (from(&got, 5), from(&got, 6)),
        (5, 35),
        "after the restart:\n{}",
        d.stderr()
    );
    finish(d);
}

#[test]
fn mail_waits_for_the_next_day_when_no_source_of_its_pool_has_warmup_budget_left() {
    let net = one_mx("waits.warmup.test.example");
    let mx = net.server(2, Script::accept());
    let d = net.daemon(1, &warmup_config(&net, "[3, 10]", "ip5"));
    for i in 0..5 {
        send_one(&d, &[&format!("user{i}@waits.warmup.test.example")]);
    }
    expect_messages(&mx, 3, &d, "the day's budget");
    std::thread::sleep(QUIET);
    assert_eq!(mx.messages().len(), 3, "{}", d.stderr());
    // The other two wait in the queue: no deferral, no bounce, and no
    // connection attempt while they wait.
    assert_eq!(queued(&net.spool), Some(2), "{}", d.stderr());
    let connections = mx.connections();
    send_one(&d, &["late@waits.warmup.test.example"]);
    std::thread::sleep(QUIET);
    assert_eq!(mx.connections(), connections, "{}", d.stderr());
    let log = d.stderr();
    assert!(log.contains("warm-up budget of the day spent"), "{log}");
    assert!(!log.contains("deferred"), "{log}");
    finish(d);
}

#[test]
fn a_reroute_rule_moves_a_suspended_sources_mail_to_the_other_source() {
    let net = one_mx("reroute.test.example");
    let mx = net.server(
        2,
        Script::accept().greeting_for(host(5), "421 4.7.0 too many connections from your IP"),
    );
    let rule = "[[backoff]]\ncode = 421\nreply = \"too many connections\"\naction = \"suspend\"\n\
                duration = \"1h\"\nreroute = true\n";
    let config = net.config(&[])
        + "[[source]]\nname = \"ip5\"\naddress = \"127.0.0.5\"\n\n\
           [[source]]\nname = \"ip6\"\naddress = \"127.0.0.6\"\n\n\
           [[pool]]\nname = \"p\"\nsources = [{ source = \"ip5\" }, { source = \"ip6\" }]\n"
        + rule;
    let d = net.daemon(1, &config);
    for i in 0..10 {
        send_one(&d, &[&format!("user{i}@reroute.test.example")]);
    }
    let got = expect_messages(&mx, 10, &d, "the rerouted messages");
    assert!(
        got.iter().all(|m| m.peer == host(6)),
        "{:?}\n{}",
        got.iter().map(|m| m.peer).collect::<Vec<_>>(),
        d.stderr()
    );
    wait_queue_empty(&d, &net.spool, ARRIVAL);
    // New mail avoids the suspended source (its queue waits an hour).
    for i in 0..6 {
        send_one(&d, &[&format!("later{i}@reroute.test.example")]);
    }
    expect_messages(&mx, 16, &d, "mail sent during the suspension");
    let log = d.stderr();
    assert_eq!(log.matches("backoff: suspended").count(), 1, "{log}");
    assert!(
        log.contains("suspended by a backoff: mail moves to the pool's other sources"),
        "{log}"
    );
    assert!(!log.contains("deferred"), "{log}");
    finish(d);
}

/// The body of `GET path` on the admin endpoint at `port`: status line
/// and body.
fn admin_get(port: u16, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("admin endpoint");
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    )
}

/// The value of the sample of `metric` whose labels include `labels`,
/// summed over the others (shards); histograms give their count.
fn metric(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(buckets) => {
                buckets.iter().map(|b| b.count).fold(0.0, f64::max)
            }
            prometheus_parse::Value::Summary(_) => f64::NAN,
        })
        .sum()
}

#[test]
fn metrics_count_the_traffic_sent() {
    let net = one_mx("metrics.test.example");
    let mx = net.server(
        2,
        Script::accept().reject_rcpt("bad", "550 5.1.1 no such user"),
    );
    let bounces = net.bounce_server();
    let port = common::free_port();
    let config = net.config(&[]) + &format!("[admin]\naddress = \"127.0.0.1:{port}\"\n");
    let d = net.daemon(2, &config);
    for i in 0..3 {
        send_one(
            &d,
            &[
                &format!("good{i}@metrics.test.example"),
                &format!("bad{i}@metrics.test.example"),
            ],
        );
    }
    let mut c = d.connect();
    c.hello();
    c.cmd("FROBNICATE", "500");
    c.cmd("QUIT", "221");
    expect_messages(&mx, 3, &d, "the delivered recipients");
    expect_messages(&bounces, 3, &d, "the bounces");
    wait_queue_empty(&d, &net.spool, ARRIVAL);
    std::thread::sleep(Duration::from_millis(300));

    let (status, body) = admin_get(port, "/metrics");
    assert_eq!(status, "HTTP/1.0 200 OK", "{body}");
    let scrape =
        prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("parse");
    let m = |name: &str, labels: &[(&str, &str)]| metric(&scrape, name, labels);
    assert_eq!(m("petrel_messages_received_total", &[]), 3.0, "{body}");
    // The three bounces are delivered too.
    assert_eq!(
        m(
            "petrel_recipients_total",
            &[("result", "delivered"), ("source", "default")]
        ),
        6.0,
        "{body}"
    );
    assert_eq!(
        m("petrel_recipients_total", &[("result", "bounced")]),
        3.0,
        "{body}"
    );
    assert_eq!(
        m("petrel_recipients_total", &[("result", "deferred")]),
        0.0,
        "{body}"
    );
    assert_eq!(m("petrel_queue_recipients", &[]), 0.0, "{body}");
    assert_eq!(
        m("petrel_smtp_rejections_total", &[("code", "500")]),
        1.0,
        "{body}"
    );
    assert_eq!(m("petrel_delivery_seconds", &[]), 9.0, "{body}");
    assert!(m("petrel_spool_sync_seconds", &[]) >= 3.0, "{body}");
    assert!(m("petrel_spool_bytes", &[]) > 0.0, "{body}");
    assert!(
        m("petrel_dns_queries_total", &[("result", "answer")]) > 0.0,
        "{body}"
    );
    assert_eq!(
        m("petrel_smtp_sessions", &[("direction", "in")]),
        0.0,
        "{body}"
    );
    assert_eq!(
        m("petrel_backoff_active", &[("action", "suspend")]),
        0.0,
        "{body}"
    );
    // Every metric petrel names is exported, and only those.
    let base = |name: &str| {
        let histogram = |n: &str| petrel::metrics::NAMES.contains(&n);
        match (name.strip_suffix("_count"), name.strip_suffix("_sum")) {
            (Some(n), _) | (_, Some(n)) if histogram(n) => n.to_owned(),
            _ => name.to_owned(),
        }
    };
    let exported: std::collections::BTreeSet<String> =
        scrape.samples.iter().map(|s| base(&s.metric)).collect();
    let exported: std::collections::BTreeSet<&str> = exported.iter().map(String::as_str).collect();
    let named: std::collections::BTreeSet<&str> = petrel::metrics::NAMES.iter().copied().collect();
    assert_eq!(exported, named, "{body}");
    // Both shards count under their own label.
    assert!(body.contains("shard=\"1\""), "{body}");

    let (status, _) = admin_get(port, "/nothing");
    assert_eq!(status, "HTTP/1.0 404 Not Found");
    finish(d);
}

#[test]
fn a_reload_puts_a_new_route_in_force_without_dropping_a_session_and_a_bad_one_is_refused() {
    let net = Net::new(Zone::new(), &[2, 3]);
    let (first, second) = (
        net.server(2, Script::accept()),
        net.server(3, Script::accept()),
    );
    let route = |n: u8| {
        format!(
            "[[route]]\ndomain = \"reload.test.example\"\nrelay = \"127.0.0.{n}:{}\"\n",
            net.port
        )
    };
    let d = net.daemon(2, &(net.config(&[]) + &route(2)));
    send_one(&d, &["one@reload.test.example"]);
    expect_messages(&first, 1, &d, "before the reload");
    // A session open across the reload goes on.
    let mut open = d.connect();
    open.hello();

    let text = std::fs::read_to_string(&d.config_path).unwrap();
    std::fs::write(&d.config_path, text.replace(&route(2), &route(3))).unwrap();
    d.signal("HUP");
    assert!(
        wait_log(&d, "reload: configuration applied", ARRIVAL),
        "{}",
        d.stderr()
    );
    std::thread::sleep(Duration::from_millis(300));
    send_message(&mut open, &["two@reload.test.example"], BODY);
    open.cmd("QUIT", "221");
    send_one(&d, &["three@reload.test.example"]);
    let got = expect_messages(&second, 2, &d, "after the reload");
    assert!(got.iter().any(|m| m.rcpt_to == ["two@reload.test.example"]));
    assert_eq!(first.messages().len(), 1, "{}", d.stderr());

    // A file that does not parse is refused; the running one stays.
    let good = std::fs::read_to_string(&d.config_path).unwrap();
    std::fs::write(
        &d.config_path,
        format!("{good}\n[delivery]\nmax_age = \"forever\"\n"),
    )
    .unwrap();
    d.signal("HUP");
    assert!(wait_log(&d, "reload refused", ARRIVAL), "{}", d.stderr());
    let log = d.stderr();
    let refused = log.lines().find(|l| l.contains("reload refused")).unwrap();
    assert!(
        refused.contains(&d.config_path.display().to_string()),
        "{refused}"
    );
    send_one(&d, &["four@reload.test.example"]);
    expect_messages(&second, 3, &d, "after the refused reload");
    // A setting only a restart applies is named.
    std::fs::write(&d.config_path, good.replace("shards = 2", "shards = 1")).unwrap();
    d.signal("HUP");
    assert!(
        wait_log(&d, "take effect at the next restart", ARRIVAL),
        "{}",
        d.stderr()
    );
    assert!(d.stderr().contains("[server] shards"), "{}", d.stderr());
    finish(d);
}

#[test]
fn the_accounting_log_has_one_record_per_recipient_event_with_its_fields() {
    let net = one_mx("acct.test.example");
    let mx = net.server(
        2,
        Script::accept().reject_rcpt("bad", "550 5.1.1 no such user here"),
    );
    let bounces = net.bounce_server();
    let path = net.dir.path().join("acct.csv");
    let config = net.config(&[]) + &format!("[accounting]\npath = \"{}\"\n", path.display());
    let d = net.daemon(1, &config);
    let body = format!("X-Job-Id: spring-sale-42\r\n{BODY}");
    let id = send_one_raw(
        &d,
        &format!("<{SENDER}>"),
        &["<good@acct.test.example>", "<bad@acct.test.example>"],
        &body,
    );
    expect_messages(&mx, 1, &d, "the delivered recipient");
    expect_messages(&bounces, 1, &d, "the bounce");
    wait_queue_empty(&d, &net.spool, ARRIVAL);
    // A stop writes out what is left.
    finish(d);

    let mut reader = csv::Reader::from_path(&path).expect("accounting log");
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(header[0], "type");
    let col = |name: &str| header.iter().position(|h| h == name).expect(name);
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let mine: Vec<&csv::StringRecord> = rows.iter().filter(|r| r[col("queueId")] == id).collect();
    let kinds: Vec<(&str, &str)> = mine
        .iter()
        .map(|r| (&r[col("type")], &r[col("rcpt")]))
        .collect();
    assert_eq!(
        kinds,
        [
            ("r", "good@acct.test.example"),
            ("r", "bad@acct.test.example"),
            ("d", "good@acct.test.example"),
            ("b", "bad@acct.test.example"),
        ],
        "{rows:?}"
    );
    for r in &mine {
        assert_eq!(&r[col("orig")], SENDER);
        assert_eq!(&r[col("jobId")], "spring-sale-42");
        assert!(r[col("dlvSize")].parse::<u64>().unwrap() > 0);
        assert!(r[col("timeQueued")].parse::<u64>().unwrap() > 1_700_000_000);
    }
    let (received, delivered, bounced) = (mine[0], mine[2], mine[3]);
    assert_eq!(&received[col("srcMta")], "127.0.0.1");
    assert_eq!(&delivered[col("dsnAction")], "relayed");
    assert_eq!(&delivered[col("dsnMta")], "mx.acct.test.example");
    assert_eq!(&delivered[col("dlvDestinationIp")], "127.0.0.2");
    assert_eq!(&delivered[col("vmta")], "default");
    assert_eq!(&delivered[col("vmtaPool")], "default");
    assert_eq!(&bounced[col("dsnAction")], "failed");
    assert_eq!(&bounced[col("dsnStatus")], "5.1.1");
    assert_eq!(&bounced[col("bounceCat")], "bad-mailbox");
    assert!(
        bounced[col("dsnDiag")].starts_with("smtp;550 5.1.1 no such user here"),
        "{:?}",
        &bounced[col("dsnDiag")]
    );
}

#[test]
fn a_reload_of_sources_and_pools_moves_waiting_mail_to_the_new_source() {
    let net = one_mx("repool.test.example");
    // 127.0.0.5 is refused for now: its mail waits for a retry.
    let mx = net.server(
        2,
        Script::accept().greeting_for(host(5), "451 4.3.0 not from this address"),
    );
    let sources = |first: u8, second: u8| {
        format!(
            "[[source]]\nname = \"ip{first}\"\naddress = \"127.0.0.{first}\"\n\n\
             [[source]]\nname = \"ip{second}\"\naddress = \"127.0.0.{second}\"\n\n"
        )
    };
    let pool =
        |member: u8| format!("[[pool]]\nname = \"p\"\nsources = [{{ source = \"ip{member}\" }}]\n");
    let before = sources(5, 6) + &pool(5);
    let admin = common::free_port();
    let config = net.config(&[("retry", "[\"1h\"]")])
        + &format!("[admin]\naddress = \"127.0.0.1:{admin}\"\n")
        + &before;
    let d = net.daemon(2, &config);
    // Waiting messages per source, as the queue API lists them.
    let waiting_by_source = || {
        let (_, body) = admin_get(admin, "/queue");
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let mut by: Vec<(String, u64)> = v["queues"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|q| {
                let source = q["source"].as_str().unwrap_or("").to_owned();
                (source, q["messages"].as_u64().unwrap_or(0))
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        by.sort();
        by
    };
    for i in 0..3 {
        send_one(&d, &[&format!("user{i}@repool.test.example")]);
    }
    assert!(wait_log(&d, " deferred ", ARRIVAL), "{}", d.stderr());
    std::thread::sleep(QUIET);
    assert!(mx.messages().is_empty());
    assert_eq!(
        waiting_by_source(),
        [("ip5".to_owned(), 3)],
        "{}",
        d.stderr()
    );

    // The sources renumbered (ip6 first) and the pool now of ip6 alone.
    let text = std::fs::read_to_string(&d.config_path).unwrap();
    let after = sources(6, 5) + &pool(6);
    std::fs::write(&d.config_path, text.replace(&before, &after)).unwrap();
    d.signal("HUP");
    assert!(
        wait_log(&d, "sources and pools in force", ARRIVAL),
        "{}",
        d.stderr()
    );
    // The waiting mail moved to ip6: deferred mail keeps its retry time,
    // mail that waited behind ip5's failure is tried from ip6 at once.
    let deadline = Instant::now() + ARRIVAL;
    loop {
        let waiting = waiting_by_source();
        assert!(
            waiting.iter().all(|(source, _)| source == "ip6"),
            "{waiting:?}\n{}",
            d.stderr()
        );
        let waiting: u64 = waiting.iter().map(|(_, n)| n).sum();
        if waiting + mx.messages().len() as u64 == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "mail lost track of:\n{}",
            d.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(mx.messages().iter().all(|m| m.peer == host(6)));
    let text = d.stderr();
    assert!(!text.contains("take effect at the next restart"), "{text}");
    let before_new = mx.messages().len();
    for i in 0..2 {
        send_one(&d, &[&format!("new{i}@repool.test.example")]);
    }
    let got = expect_messages(&mx, before_new + 2, &d, "new mail after the reload");
    assert!(
        got.iter().all(|m| m.peer == host(6)),
        "{:?}",
        got.iter().map(|m| m.peer).collect::<Vec<_>>()
    );
    finish(d);
}

// ---------------------------------------------------------------------
// Backscatter: what a client outside the relay networks can make petrel
// send
// ---------------------------------------------------------------------

/// `[relay]` with no networks: every client is a stranger.
const NO_RELAY: &str = "[relay]\nnetworks = []\n";

/// A daemon for `net` with `[server] postmaster` set to `postmaster`
/// (none when empty) and `extra` after the network's config.
fn daemon_with_postmaster(net: &Net, postmaster: &str, extra: &str) -> Daemon {
    let server = match postmaster {
        "" => "shards = 1".to_owned(),
        p => format!("shards = 1\npostmaster = \"{p}\""),
    };
    let config = format!("{}\n{extra}", net.config(&[]));
    Daemon::start_plain(net.dir.path(), &net.spool, &server, "", &config)
}

#[test]
fn postmaster_is_refused_without_a_mailbox_and_delivered_once_to_it_with_one() {
    let net = one_mx("ops.test.example");
    let mx = net.server(2, Script::accept());
    let d = daemon_with_postmaster(&net, "", NO_RELAY);
    let mut c = d.connect();
    c.hello();
    c.cmd(&format!("MAIL FROM:<{SENDER}>"), "250");
    let refused = c.cmd("RCPT TO:<postmaster>", "550 5.1.1");
    assert!(refused.contains("[server] postmaster"), "{refused}");
    c.cmd("RCPT TO:<ops@ops.test.example>", "554 5.7.1");
    c.cmd("QUIT", "221");
    finish(d);

    let d = daemon_with_postmaster(&net, "ops@ops.test.example", NO_RELAY);
    let mut c = d.connect();
    c.hello();
    c.cmd(&format!("MAIL FROM:<{SENDER}>"), "250");
    for _ in 0..1000 {
        c.cmd("RCPT TO:<Postmaster>", "250 2.1.5");
    }
    c.cmd("DATA", "354");
    c.send(BODY);
    c.send(".\r\n");
    queued_id(&c.reply());
    c.cmd("QUIT", "221");
    let got = expect_messages(&mx, 1, &d, "mail for postmaster");
    assert_eq!(got[0].rcpt_to, ["ops@ops.test.example"], "one recipient");
    wait_queue_empty(&d, &net.spool, ARRIVAL);
    std::thread::sleep(QUIET);
    assert_eq!(mx.messages().len(), 1, "delivered once");
    finish(d);
}

#[test]
fn a_strangers_message_bounces_with_its_headers_only() {
    let net = one_mx("ops.test.example");
    let _mx = net.server(
        2,
        Script::accept().reject_rcpt("ops", "550 5.1.1 no such mailbox here"),
    );
    let bounces = net.bounce_server();
    let d = daemon_with_postmaster(&net, "ops@ops.test.example", NO_RELAY);
    send_one_raw(&d, &format!("<{SENDER}> RET=FULL"), &["<postmaster>"], BODY);
    let got = expect_messages(&bounces, 1, &d, "bounce");
    let text = check_bounce(&got[0], "ops@ops.test.example", "5.1.1");
    assert!(text.contains("text/rfc822-headers"), "{text}");
    assert!(text.contains("Subject: delivery test"), "{text}");
    assert!(
        !text.contains("body-marker"),
        "a stranger's content went back out:\n{text}"
    );
    wait_queue_empty(&d, &net.spool, ARRIVAL);
    finish(d);
}

#[test]
fn one_bounce_per_attempt_lists_every_failed_recipient() {
    let zone = Zone::new()
        .mx("many.test.example", 10, "mx.many.test.example")
        .a("mx.many.test.example", "127.0.0.2")
        .mx("other.test.example", 10, "mx.other.test.example")
        .a("mx.other.test.example", "127.0.0.3");
    let net = Net::new(zone, &[2, 3]);
    let refuse = || Script::accept().reject_rcpt("nobody", "550 5.1.1 no such user");
    let (many, other) = (net.server(2, refuse()), net.server(3, refuse()));
    let bounces = net.bounce_server();
    let d = net.daemon(1, &net.config(&[]));
    // 200 recipients of one destination take two transactions (100 each);
    // 50 more go to another destination.
    let rcpts: Vec<String> = (0..200)
        .map(|i| format!("nobody{i}@many.test.example"))
        .chain((0..50).map(|i| format!("nobody{i}@other.test.example")))
        .collect();
    let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    send_one(&d, &rcpts);
    let got = expect_messages(&bounces, 1, &d, "bounce");
    wait_queue_empty(&d, &net.spool, ARRIVAL);
    std::thread::sleep(QUIET);
    assert_eq!(bounces.messages().len(), 1, "one bounce for the attempt");
    assert!(many.transactions() >= 2 && other.transactions() >= 1);
    let text = unfolded(&got[0]);
    assert_eq!(text.matches("Final-Recipient: rfc822; nobody").count(), 250);
    for r in ["nobody199@many.test.example", "nobody49@other.test.example"] {
        assert!(
            text.contains(&format!("Final-Recipient: rfc822; {r}")),
            "{r}"
        );
    }
    assert!(text.contains("Remote-MTA: dns; mx.other.test.example"));
    assert!(text.contains("Remote-MTA: dns; mx.many.test.example"));
    finish(d);
}

// ---------------------------------------------------------------------
// Hostile or mistaken destinations
// ---------------------------------------------------------------------

#[test]
fn an_attempt_tries_at_most_max_mx_addresses_over_all_mx_hosts() {
    // mx1 (10) has two addresses, mx2 (20) three: with a limit of 3, both
    // of mx1's and one of mx2's are tried (mx2's come in any order).
    let (mx1, mx2) = ("mx1.many.test.example", "mx2.many.test.example");
    let zone = Zone::new()
        .mx("many.test.example", 10, mx1)
        .mx("many.test.example", 20, mx2)
        .a(mx1, "127.0.0.11")
        .a(mx1, "127.0.0.12")
        .a(mx2, "127.0.0.13")
        .a(mx2, "127.0.0.14")
        .a(mx2, "127.0.0.15");
    let net = Net::new(zone, &[11, 12, 13, 14, 15]);
    let servers: Vec<SmtpServer> = (11..=15)
        .map(|n| net.server(n, Script::accept().greeting("421 4.3.2 busy")))
        .collect();
    let d = net.daemon(1, &net.config(&[("max_mx_addresses", "3")]));
    send_one(&d, &["user@many.test.example"]);
    assert!(
        wait_log(&d, "as many as [delivery] max_mx_addresses allows", ARRIVAL),
        "no deferral naming the limit: {}",
        d.stderr()
    );
    let tried: Vec<usize> = servers.iter().map(SmtpServer::connections).collect();
    assert!(tried[0] >= 1 && tried[1] >= 1, "{tried:?}");
    assert_eq!(
        tried[2..].iter().filter(|&&n| n > 0).count(),
        1,
        "one address of mx2, not more: {tried:?}"
    );
    let log = d.stderr();
    assert!(
        log.contains("tried 3 of the mail exchangers' addresses"),
        "{log}"
    );
    assert_eq!(queued(&net.spool), Some(1), "deferred, not bounced: {log}");
    finish(d);
}

#[test]
fn a_huge_remote_reply_is_stored_bounced_and_logged_cut_to_size_and_escaped() {
    let net = one_mx("huge.test.example");
    // A short first line, then 400 KB: the cut falls in the second line.
    let mut lines = vec!["550 5.1.1 no such user".to_string()];
    lines.extend((0..100).map(|_| format!("550 5.1.1 {}", "x".repeat(4000))));
    lines.push("550 5.1.1 end of the huge reply".into());
    let mx = net.server(2, Script::accept().reply_to(Cmd::Rcpt, &lines.join("\n")));
    let bounces = net.bounce_server();
    let acct = net.dir.path().join("acct.csv");
    let config = net.config(&[]) + &format!("\n[accounting]\npath = \"{}\"\n", acct.display());
    let d = net.daemon(1, &config);
    send_one(&d, &["user@huge.test.example"]);
    let got = expect_messages(&bounces, 1, &d, "bounce");
    let text = check_bounce(&got[0], "user@huge.test.example", "5.1.1");
    wait_queue_empty(&d, &net.spool, ARRIVAL);
    assert!(mx.connections() >= 1);
    let long = "x".repeat(1100);
    // The notice carries the first kilobyte, marked as cut.
    assert!(text.contains("550-5.1.1 xxx"), "{text}");
    assert!(text.contains("[...]"), "{text}");
    assert!(!text.contains(&long), "the whole reply is in the notice");
    // So does the status record in the spool.
    let spool = common::segment_bytes(&net.spool);
    assert!(
        common::contains(&spool, b"550-5.1.1 xxx"),
        "no status record"
    );
    assert!(
        !common::contains(&spool, long.as_bytes()),
        "the whole reply is stored"
    );
    // The log line is one line, bounded, with the line breaks escaped.
    let log = d.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("bounced") && l.contains("5.1.1"))
        .unwrap_or_else(|| panic!("no bounced line: {log}"));
    assert!(line.contains("\\r\\n550-5.1.1 xxx"), "{line}");
    assert!(line.len() < 4096, "{} bytes", line.len());
    assert!(!log.contains('\r'), "a raw CR in the log");
    assert!(
        !log.lines().any(|l| l.starts_with("550")),
        "a reply line of its own in the log"
    );
    // And the accounting record (written out at the stop at the latest):
    // no reply line of its own either.
    finish(d);
    let records = std::fs::read_to_string(&acct).expect("accounting log");
    assert!(records.contains("\\r\\n550-5.1.1"), "{records}");
    assert!(!records.lines().any(|l| l.starts_with("550")), "{records}");
    assert!(
        !records.contains(&long),
        "the whole reply is in the accounting log"
    );
}

#[test]
fn destination_names_are_forgotten_once_their_mail_is_gone() {
    let mx = "mx.names.test.example";
    let domains: Vec<String> = (0..20)
        .map(|i| format!("d{i}.names.test.example"))
        .collect();
    let zone = domains
        .iter()
        .fold(Zone::new(), |z, d| z.mx(d, 10, mx))
        .a(mx, "127.0.0.2");
    let net = Net::new(zone, &[2]);
    let server = net.server(2, Script::accept());
    let port = common::free_port();
    let config = net.config(&[]) + &format!("[admin]\naddress = \"127.0.0.1:{port}\"\n");
    let d = net.daemon(1, &config);
    let rcpts: Vec<String> = domains.iter().map(|d| format!("user@{d}")).collect();
    let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    send_one(&d, &rcpts);
    expect_messages(&server, 20, &d, "one message per domain");
    wait_queue_empty(&d, &net.spool, ARRIVAL);
    let names = || {
        let (status, body) = admin_get(port, "/metrics");
        assert_eq!(status, "HTTP/1.0 200 OK", "{body}");
        let scrape =
            prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("parse");
        metric(&scrape, "petrel_delivery_destinations", &[])
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut now = names();
    while now > 0.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        now = names();
    }
    assert_eq!(now, 0.0, "destination names kept: {}", d.stderr());
    finish(d);
}

/// A `[[route]]` that takes bounces to the sender's MX (127.0.0.4) on
/// `port`: a relay is never refused nor taken for this server.
fn bounces_by_route(port: u16) -> String {
    format!("[[route]]\ndomain = \"{SENDER_DOMAIN}\"\nrelay = \"127.0.0.4:{port}\"\n\n")
}

#[test]
fn with_a_wildcard_listener_an_mx_on_loopback_bounces_5_4_6_instead_of_looping() {
    // The MX is 127.0.0.9 on the port of a listener on 0.0.0.0: mail sent
    // there would come back in, from loopback (a relay network), again
    // and again.
    let zone = Zone::new()
        .mx("wild.test.example", 10, "mx.wild.test.example")
        .a("mx.wild.test.example", "127.0.0.9");
    let net = Net::new(zone, &[]);
    let bounces = net.bounce_server();
    let wild = common::free_port();
    let extra = format!("[[listener]]\naddress = \"0.0.0.0:{wild}\"\n\n")
        + &bounces_by_route(net.port)
        + &delivery_config(net.dns.addr(), wild, &[]);
    let d = net.daemon(1, &extra);
    send_one(&d, &["user@wild.test.example"]);
    let got = expect_messages(&bounces, 1, &d, "bounce");
    let text = check_bounce(&got[0], "user@wild.test.example", "5.4.6");
    assert!(text.contains("loops back to myself"), "{text}");
    wait_queue_empty(&d, &net.spool, ARRIVAL);
    let log = d.stderr();
    let accepted = log
        .lines()
        .filter(|l| l.contains("accepted") && l.contains("rcpts="))
        .count();
    assert_eq!(accepted, 1, "mail came back in: {log}");
    finish(d);
}

#[test]
fn refuse_private_mx_bounces_an_mx_on_loopback_5_4_4() {
    let net = one_mx("private.test.example");
    let mx = net.server(2, Script::accept());
    let bounces = net.bounce_server();
    let extra = bounces_by_route(net.port) + &net.config(&[("refuse_private_mx", "true")]);
    let d = net.daemon(1, &extra);
    send_one(&d, &["user@private.test.example"]);
    let got = expect_messages(&bounces, 1, &d, "bounce");
    let text = check_bounce(&got[0], "user@private.test.example", "5.4.4");
    assert!(text.contains("refuse_private_mx"), "{text}");
    assert_eq!(mx.connections(), 0, "the private MX was tried");
    finish(d);
}

// ---------------------------------------------------------------------
// Internationalised domains
// ---------------------------------------------------------------------

#[test]
fn mail_to_a_u_label_domain_goes_to_the_mx_of_its_a_label() {
    // The zone knows the domain only by its A-label.
    let net = one_mx("xn--bcher-kva.example");
    let mx = net.server(2, Script::accept());
    let d = net.daemon(1, &net.config(&[]));
    let mail = format!("<{SENDER}> SMTPUTF8");
    send_one_raw(&d, &mail, &["<user@bücher.example>"], BODY);
    let got = expect_messages(&mx, 1, &d, "the MX of xn--bcher-kva.example");
    assert_eq!(got[0].rcpt_to, ["user@bücher.example"]);
    wait_queue_empty(&d, &net.spool, ARRIVAL);
    assert!(net.dns.queries_for("xn--bcher-kva.example", RecordType::MX) >= 1);
    assert!(mx.violations().is_empty(), "{:?}", mx.violations());
    finish(d);
}

#[test]
fn a_domain_that_is_no_valid_internationalised_name_bounces_5_1_2() {
    let net = Net::new(Zone::new(), &[]);
    let bounces = net.bounce_server();
    let d = net.daemon(1, &net.config(&[]));
    // A label may not begin with a combining mark (UTS 46).
    let rcpt = "user@\u{301}bücher.example";
    let mail = format!("<{SENDER}> SMTPUTF8");
    send_one_raw(&d, &mail, &[&format!("<{rcpt}>")], BODY);
    let got = expect_messages(&bounces, 1, &d, "bounce");
    assert_eq!(got[0].rcpt_to, [SENDER], "a bounce goes to the sender");
    let text = unfolded(&got[0]);
    assert!(text.contains("Status: 5.1.2"), "{text}");
    assert!(
        text.contains("not a valid internationalised domain name"),
        "{text}"
    );
    wait_queue_empty(&d, &net.spool, ARRIVAL);
    finish(d);
}
