//! `petrel queue` end to end: a daemon delivering to scripted test MX
//! hosts (tests/support/smtp_server.rs) found through a test DNS server,
//! and each queue command run as an operator would, checked by what the
//! test MX hosts then see (or do not see): a pause holds mail (across a
//! restart too) until a resume, a resume lifts a backoff's suspension, a
//! flush retries deferred mail now, a bounce sends the sender a notice, a
//! delete sends nothing, and list and show report what waits.
//!
//! Waits are polls with deadlines; "nothing arrives" is checked over a
//! quiet spell, never by a timed assertion.

mod common;
#[path = "support/dns_server.rs"]
mod dns_server;
#[path = "support/smtp_server.rs"]
mod smtp_server;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{common_port, free_port, send_message, tempdir, Daemon};
use dns_server::{loopback, DnsServer, Zone};
use serde_json::Value;
use smtp_server::{Cmd, Received, Script, SmtpServer};

/// How long a message may take to reach a test MX.
const ARRIVAL: Duration = Duration::from_secs(12);
/// How long to keep looking for a message that must not come.
const QUIET: Duration = Duration::from_millis(1500);

const SENDER: &str = "sender@client.test.example";
const SENDER_DOMAIN: &str = "client.test.example";
/// The sender's MX host, where bounces arrive: 127.0.0.4.
const BOUNCE_HOST: u8 = 4;
/// The destination every test sends to; its MX is 127.0.0.2.
const DEST: &str = "queue.test.example";

const BODY: &str = "From: Sender <sender@client.test.example>\r\n\
                    To: Someone <someone@queue.test.example>\r\n\
                    Subject: queue test\r\n\
                    \r\n\
                    body-marker line\r\n";

/// One test's world: DNS with `DEST`'s MX at 127.0.0.2 and the sender's
/// at 127.0.0.4, the MX port, the spool, the admin port, and a config
/// file for `petrel queue`.
struct Net {
    dir: tempfile::TempDir,
    spool: PathBuf,
    dns: DnsServer,
    port: u16,
    admin: u16,
    cli_config: PathBuf,
}

impl Net {
    fn new() -> Net {
        let zone = Zone::new()
            .mx(DEST, 10, "mx.queue.test.example")
            .a("mx.queue.test.example", "127.0.0.2")
            .mx(SENDER_DOMAIN, 10, "bounce-mx.test.example")
            .a("bounce-mx.test.example", "127.0.0.4");
        let port = common_port(&[2, BOUNCE_HOST]);
        let dns = DnsServer::start_on(loopback(53), zone);
        let dir = tempdir();
        let spool = dir.path().join("spool");
        let admin = free_port();
        let cli_config = dir.path().join("cli.toml");
        common::write(
            &cli_config,
            format!("[admin]\naddress = \"127.0.0.1:{admin}\"\n").as_bytes(),
        );
        Net {
            dir,
            spool,
            dns,
            port,
            admin,
            cli_config,
        }
    }

    fn server(&self, n: u8, script: Script) -> SmtpServer {
        SmtpServer::start(IpAddr::V4(loopback(n)), self.port, script)
    }

    fn bounce_server(&self) -> SmtpServer {
        self.server(BOUNCE_HOST, Script::accept())
    }

    /// A daemon of `shards` shards delivering through this network, with
    /// `[delivery] retry` = `retry` and `extra` added.
    fn daemon(&self, shards: usize, retry: &str, extra: &str) -> Daemon {
        let config = format!(
            "[dns]\nservers = [\"{}\"]\ntimeout = \"1s\"\n\n\
             [delivery]\nport = {}\nretry = {retry}\nmax_age = \"5d\"\ntls = \"opportunistic\"\n\
             idle_timeout = \"200ms\"\nconnect_timeout = \"2s\"\ncommand_timeout = \"10s\"\n\n\
             [admin]\naddress = \"127.0.0.1:{}\"\n\n{extra}",
            self.dns.addr(),
            self.port,
            self.admin,
        );
        Daemon::start_plain(
            self.dir.path(),
            &self.spool,
            &format!("shards = {shards}"),
            "",
            &config,
        )
    }

    /// Runs `petrel queue ARGS` against the daemon: success, stdout,
    /// stderr.
    fn queue(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_petrel"))
            .arg("queue")
            .arg("--config")
            .arg(&self.cli_config)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("petrel queue: {e}"));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `petrel queue ARGS` that must succeed; its stdout.
    fn ok(&self, d: &Daemon, args: &[&str]) -> String {
        let (ok, out, err) = self.queue(args);
        assert!(
            ok,
            "petrel queue {args:?} failed: {err}\ndaemon log:\n{}",
            d.stderr()
        );
        out
    }

    /// `petrel queue --json ARGS`, parsed.
    fn json(&self, d: &Daemon, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ok(d, &all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// The row of `DEST` in `petrel queue list --json`, if there is one.
    fn row(&self, d: &Daemon) -> Option<Value> {
        let list = self.json(d, &["list"]);
        list["queues"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["destination"] == DEST).cloned())
    }
}

/// Connects, sends one message from `SENDER` to `rcpts`, and quits;
/// returns its queue ID.
fn send_one(d: &Daemon, rcpts: &[&str]) -> String {
    let mut c = d.connect();
    c.hello();
    let id = send_message(&mut c, rcpts, BODY);
    c.cmd("QUIT", "221");
    id
}

fn expect_messages(server: &SmtpServer, n: usize, d: &Daemon, what: &str) -> Vec<Received> {
    let got = server.wait_for_messages(n, ARRIVAL);
    assert!(
        got.len() >= n,
        "{what}: {} of {n} messages arrived; daemon log:\n{}",
        got.len(),
        d.stderr()
    );
    got
}

/// Nothing arrives at `server` over a quiet spell.
fn expect_none(server: &SmtpServer, d: &Daemon, what: &str) {
    std::thread::sleep(QUIET);
    assert!(
        server.messages().is_empty(),
        "{what} arrived; daemon log:\n{}",
        d.stderr()
    );
}

fn finish(d: Daemon) {
    let log = d.stderr();
    assert!(!log.contains("panicked"), "the daemon panicked:\n{log}");
    d.stop();
}

fn rcpt(n: usize) -> String {
    format!("user{n}@{DEST}")
}

#[test]
fn a_pause_holds_mail_across_a_restart_until_resume() {
    let net = Net::new();
    let mx = net.server(2, Script::accept());
    let d = net.daemon(2, "[\"1s\"]", "");
    let out = net.ok(&d, &["pause", DEST]);
    assert!(out.contains("paused queue.test.example"), "{out}");
    send_one(&d, &[&rcpt(1)]);
    send_one(&d, &[&rcpt(2)]);
    expect_none(&mx, &d, "mail for a paused destination");
    let row = net.row(&d).expect("the paused destination is listed");
    assert_eq!(row["state"], "paused", "{row}");
    assert_eq!(row["messages"], 2, "{row}");
    let table = net.ok(&d, &["list"]);
    assert!(table.contains("paused: queue.test.example"), "{table}");
    assert!(
        common::wait_log(&d, "action=\"pause\"", ARRIVAL),
        "{}",
        d.stderr()
    );
    finish(d);

    let kept = std::fs::read_to_string(net.spool.join("paused")).unwrap_or_default();
    assert!(kept.lines().any(|l| l == DEST), "{kept}");
    let d = net.daemon(2, "[\"1s\"]", "");
    expect_none(&mx, &d, "mail for a destination paused before the restart");
    let out = net.ok(&d, &["resume", DEST]);
    assert!(out.contains("1 pause(s) ended"), "{out}");
    expect_messages(&mx, 2, &d, "mail after the resume");
    common::wait_queue_empty(&d, &net.spool, ARRIVAL);
    finish(d);
}

#[test]
fn resume_lifts_a_backoff_suspension() {
    let net = Net::new();
    let busy = net.server(
        2,
        Script::accept().greeting("421 4.7.0 too many connections from your IP"),
    );
    let rule = "[[backoff]]\ncode = 421\nreply = \"too many connections\"\naction = \"suspend\"\nduration = \"1h\"\n";
    let d = net.daemon(1, "[\"1h\"]", rule);
    send_one(&d, &[&rcpt(1)]);
    assert!(
        common::wait_log(&d, "backoff: suspended", ARRIVAL),
        "{}",
        d.stderr()
    );
    // The provider lifts its block; without a resume the mail would wait
    // the rule's hour.
    busy.set_script(Script::accept());
    expect_none(&busy, &d, "mail for a suspended destination");
    let row = net.row(&d).expect("the suspended destination is listed");
    assert_eq!(row["state"], "suspended", "{row}");
    let out = net.ok(&d, &["resume", DEST]);
    assert!(out.contains("suspension(s) lifted"), "{out}");
    expect_messages(&busy, 1, &d, "mail after the resume");
    common::wait_queue_empty(&d, &net.spool, ARRIVAL);
    finish(d);
}

#[test]
fn flush_retries_deferred_mail_now() {
    let net = Net::new();
    let mx = net.server(
        2,
        Script::accept().reply_to(Cmd::DataEnd, "451 4.3.0 try later"),
    );
    let d = net.daemon(1, "[\"1h\"]", "");
    send_one(&d, &[&rcpt(1)]);
    assert!(common::wait_log(&d, "deferred", ARRIVAL), "{}", d.stderr());
    mx.set_script(Script::accept());
    // The connection that was told 451 idles out first.
    let deadline = Instant::now() + ARRIVAL;
    let row = loop {
        let row = net.row(&d).expect("the deferred mail is listed");
        if row["connections"] == 0 || Instant::now() > deadline {
            break row;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(row["deferred"], 1, "{row}");
    assert_eq!(row["state"], "deferred", "{row}");
    assert!(
        row["last_reply"]
            .as_str()
            .is_some_and(|r| r.contains("try later")),
        "{row}"
    );
    expect_none(&mx, &d, "mail deferred for an hour");
    let out = net.ok(&d, &["flush"]);
    assert!(out.contains("1 deferred"), "{out}");
    expect_messages(&mx, 1, &d, "flushed mail");
    common::wait_queue_empty(&d, &net.spool, ARRIVAL);
    finish(d);
}

#[test]
fn bounce_sends_the_sender_a_notice_and_removes_the_mail() {
    let net = Net::new();
    let mx = net.server(2, Script::accept());
    let bounces = net.bounce_server();
    let d = net.daemon(1, "[\"1s\"]", "");
    net.ok(&d, &["pause", DEST]);
    send_one(&d, &[&rcpt(1), &rcpt(2)]);
    let out = net.ok(&d, &["bounce", DEST]);
    assert!(out.contains("2 recipient(s)"), "{out}");
    let got = expect_messages(&bounces, 1, &d, "the notice");
    assert_eq!(got[0].mail_from, "");
    assert_eq!(got[0].rcpt_to, [SENDER]);
    let text = got[0].text().replace("\r\n ", " ");
    assert!(text.contains("Action: failed"), "{text}");
    assert!(text.contains("bounced by the operator"), "{text}");
    common::wait_queue_empty(&d, &net.spool, ARRIVAL);
    net.ok(&d, &["resume", DEST]);
    expect_none(&mx, &d, "bounced mail");
    finish(d);
}

#[test]
fn delete_removes_the_mail_with_no_notice_and_logs_each_recipient() {
    let net = Net::new();
    let mx = net.server(2, Script::accept());
    let bounces = net.bounce_server();
    let d = net.daemon(1, "[\"1s\"]", "");
    net.ok(&d, &["pause", DEST]);
    let kept = send_one(&d, &[&rcpt(1)]);
    let gone = send_one(&d, &[&rcpt(2), &rcpt(3)]);
    let out = net.ok(&d, &["delete", &gone]);
    assert!(out.contains("2 recipient(s)"), "{out}");
    assert!(common::wait_log(&d, "deleted", ARRIVAL), "{}", d.stderr());
    let log = d.stderr();
    for r in [rcpt(2), rcpt(3)] {
        assert!(
            log.lines()
                .any(|l| l.contains(&gone) && l.contains(&r) && l.contains("deleted")),
            "no log line for {r} of {gone}:\n{log}"
        );
    }
    net.ok(&d, &["resume", DEST]);
    let got = expect_messages(&mx, 1, &d, "the message not deleted");
    assert_eq!(got[0].rcpt_to, [rcpt(1)]);
    common::wait_queue_empty(&d, &net.spool, ARRIVAL);
    expect_none(&bounces, &d, "a notice for deleted mail");
    assert_eq!(mx.messages().len(), 1, "deleted mail was delivered");
    let (ok, _, err) = net.queue(&["show", &kept]);
    assert!(!ok && err.contains("404"), "{err}");
    finish(d);
}

#[test]
fn list_and_show_report_what_waits() {
    let net = Net::new();
    let _mx = net.server(2, Script::accept());
    let d = net.daemon(2, "[\"1s\"]", "");
    net.ok(&d, &["pause", DEST]);
    let first = send_one(&d, &[&rcpt(1), &rcpt(2)]);
    send_one(&d, &[&rcpt(3)]);
    let row = net.row(&d).expect("listed");
    assert_eq!(row["messages"], 2, "{row}");
    assert_eq!(row["source"], "default", "{row}");
    let shown = net.json(&d, &["show", &first]);
    assert_eq!(shown["id"], first.as_str());
    assert_eq!(shown["sender"], SENDER);
    assert_eq!(shown["pool"], "default");
    // The body as kept: what was sent, and the Received: field added.
    assert!(
        shown["size"]
            .as_u64()
            .is_some_and(|n| n > BODY.len() as u64),
        "{shown}"
    );
    let rcpts: Vec<(String, String)> = shown["recipients"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| (r["address"].to_string(), r["state"].to_string()))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        rcpts,
        [
            (format!("\"{}\"", rcpt(1)), "\"pending\"".to_owned()),
            (format!("\"{}\"", rcpt(2)), "\"pending\"".to_owned())
        ]
    );
    let text = net.ok(&d, &["show", &first]);
    assert!(text.contains(&format!("sender:       {SENDER}")), "{text}");
    let (ok, _, err) = net.queue(&["show", "0000000000FFFFFF"]);
    assert!(!ok, "an unknown ID");
    assert!(
        err.contains("HTTP 404") && err.contains("no message"),
        "{err}"
    );
    let (ok, _, err) = net.queue(&["pause", DEST, "--source", "nowhere"]);
    assert!(
        !ok && err.contains("HTTP 400") && err.contains("unknown source"),
        "{err}"
    );
    finish(d);
}

#[test]
fn the_client_says_when_the_daemon_is_not_there() {
    let net = Net::new();
    let (ok, out, err) = net.queue(&["list"]);
    assert!(!ok && out.is_empty());
    assert!(
        err.starts_with("petrel queue: cannot reach the daemon's admin endpoint at 127.0.0.1:"),
        "{err}"
    );
}
