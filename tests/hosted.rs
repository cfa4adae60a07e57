//! Hosted domains, the receiving side: who is a recipient here. `petrel
//! run` on loopback with `[[domain]]`s whose users come from a users file
//! or from asking an LMTP server (a small scripted one below), an alias
//! file, and a capture SMTP server (tests/support/smtp_server.rs) behind
//! `[[route]]`s for the domains mail is forwarded or relayed to.
//!
//! No client is in the relay networks: every session is a stranger's.
//! The hosted domains hand their mail to the scripted LMTP server, which
//! answers every message 451, so what was accepted for local users stays
//! queued and `petrel queue show` tells what the envelope holds.

mod common;
#[path = "support/smtp_server.rs"]
mod smtp_server;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{common_port, free_port, queued_id, tempdir, wait_log, Client, Daemon};
use smtp_server::{Script, SmtpServer};

/// How long a forward may take to reach the capture server.
const ARRIVAL: Duration = Duration::from_secs(15);
const SENDER: &str = "sender@sender.test";
const BODY: &str = "From: <sender@sender.test>\r\nSubject: hosted\r\n\r\nhosted-body-marker\r\n";

/// An LMTP server that knows `users` (mailbox addresses) and logs every
/// RCPT it is asked in a transaction that sends no data (a verification);
/// every message gets 451 (one per recipient), so nothing is delivered.
struct Lmtp {
    addr: SocketAddr,
    asked: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Lmtp {
    fn start(ip: Ipv4Addr, users: &[&str]) -> Lmtp {
        let listener = TcpListener::bind((ip, 0)).expect("bind LMTP");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("addr");
        let users: Arc<Vec<String>> = Arc::new(users.iter().map(|u| u.to_string()).collect());
        let asked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (asked.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (users, asked) = (users.clone(), a.clone());
                        let w = conn.try_clone().expect("clone");
                        std::thread::spawn(move || serve_lmtp(conn, w, &users, &asked));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Lmtp { addr, asked, stop }
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().expect("lock").clone()
    }
}

impl Drop for Lmtp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve_lmtp(conn: impl Read, mut w: impl Write, users: &[String], asked: &Mutex<Vec<String>>) {
    let mut r = BufReader::new(conn);
    let _ = w.write_all(b"220 lmtp.test LMTP ready\r\n");
    let mut line = String::new();
    let mut in_data = false;
    // The RCPTs of the transaction under way: a verification's when it
    // ends without data, a delivery's when data follows.
    let mut pending: Vec<String> = Vec::new();
    let mut accepted = 0;
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            asked.lock().expect("lock").append(&mut pending);
            return;
        }
        let cmd = line.trim_end();
        if in_data {
            if cmd == "." {
                in_data = false;
                let verdicts = "451 4.3.0 not today\r\n".repeat(accepted);
                let _ = w.write_all(verdicts.as_bytes());
                accepted = 0;
            }
            continue;
        }
        let upper = cmd.to_ascii_uppercase();
        let reply = if upper.starts_with("LHLO") {
            "250-lmtp.test\r\n250 PIPELINING\r\n".to_owned()
        } else if let Some(rest) = upper.strip_prefix("RCPT TO:<") {
            let mailbox = cmd[9..9 + rest.find('>').unwrap_or(0)].to_owned();
            let known = users.contains(&mailbox);
            pending.push(mailbox);
            match known {
                true => {
                    accepted += 1;
                    "250 2.1.5 ok\r\n".to_owned()
                }
                false => "550 5.1.1 no such user\r\n".to_owned(),
            }
        } else if upper == "DATA" {
            in_data = true;
            pending.clear();
            "354 go\r\n".to_owned()
        } else if upper == "QUIT" {
            asked.lock().expect("lock").append(&mut pending);
            let _ = w.write_all(b"221 bye\r\n");
            return;
        } else {
            if upper == "RSET" || upper.starts_with("MAIL") {
                asked.lock().expect("lock").append(&mut pending);
                accepted = 0;
            }
            "250 ok\r\n".to_owned()
        };
        if w.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// A daemon hosting example.org (users file), example.net (asks the LMTP
/// server) and example.com (an LMTP server that is down), with the alias
/// file `aliases`, forwarding to partner.test and relaying to sender.test
/// through the capture server.
struct Site {
    dir: tempfile::TempDir,
    users: PathBuf,
    aliases: PathBuf,
    lmtp: Lmtp,
    capture: SmtpServer,
    d: Daemon,
}

fn site(aliases: &str) -> Site {
    let dir = tempdir();
    let spool = dir.path().join("spool");
    let users = dir.path().join("users");
    std::fs::write(
        &users,
        "# staff\nalice\nbob@example.org:$argon2id$v=19$not-checked-here\n",
    )
    .expect("users");
    let alias_file = dir.path().join("aliases");
    std::fs::write(&alias_file, aliases).expect("aliases");
    let lmtp = Lmtp::start(Ipv4Addr::new(127, 0, 0, 5), &["dave@example.net"]);
    let port = common_port(&[3]);
    let capture = SmtpServer::start(Ipv4Addr::new(127, 0, 0, 3).into(), port, Script::accept());
    let down = free_port();
    let extra = format!(
        "[relay]\nnetworks = []\n\n\
         [dns]\nservers = [\"127.0.0.1:{down}\"]\ntimeout = \"1s\"\n\n\
         [delivery]\nretry = [\"1s\"]\nconnect_timeout = \"2s\"\n\n\
         [admin]\naddress = \"127.0.0.1:{admin}\"\n\n\
         [[domain]]\nname = \"example.org\"\ndelivery = \"lmtp\"\nlmtp = \"{lmtp}\"\nusers_file = {users:?}\n\n\
         [[domain]]\nname = \"example.net\"\ndelivery = \"lmtp\"\nlmtp = \"{lmtp}\"\nverify = \"lmtp\"\n\n\
         [[domain]]\nname = \"example.com\"\ndelivery = \"lmtp\"\nlmtp = \"127.0.0.1:{down}\"\nverify = \"lmtp\"\n\n\
         [aliases]\nfile = {alias_file:?}\n\n\
         [[route]]\ndomain = \"partner.test\"\nrelay = \"127.0.0.3:{port}\"\n\n\
         [[route]]\ndomain = \"sender.test\"\nrelay = \"127.0.0.3:{port}\"\n",
        admin = free_port(),
        lmtp = lmtp.addr,
    );
    let d = Daemon::start_plain(dir.path(), &spool, "shards = 1", "", &extra);
    Site {
        dir,
        users,
        aliases: alias_file,
        lmtp,
        capture,
        d,
    }
}

impl Site {
    fn client(&self) -> Client {
        let mut c = self.d.connect();
        c.hello();
        c
    }

    /// `petrel queue show ID`: the sender and the recipients' addresses.
    fn show(&self, id: &str) -> (String, Vec<String>) {
        let out = Command::new(env!("CARGO_BIN_EXE_petrel"))
            .args(["queue", "--config"])
            .arg(&self.d.config_path)
            .args(["show", id])
            .output()
            .expect("petrel queue");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let field = |l: &str, name: &str| l.strip_prefix(name).map(|v| v.trim().to_owned());
        let sender = text
            .lines()
            .find_map(|l| field(l, "sender:"))
            .unwrap_or_default();
        let rcpts = text
            .lines()
            .filter_map(|l| field(l, "recipient:"))
            .map(|r| r.split(' ').next().unwrap_or_default().to_owned())
            .collect();
        (sender, rcpts)
    }
}

/// Sends BODY after the envelope already given; the queue id.
fn data(c: &mut Client) -> String {
    c.cmd("DATA", "354");
    c.send(BODY);
    c.send(".\r\n");
    queued_id(&c.reply())
}

#[test]
fn strangers_reach_hosted_users_by_tag_and_case_and_cannot_relay() {
    let s = site("");
    let mut c = s.client();
    c.cmd(&format!("MAIL FROM:<{SENDER}>"), "250");
    c.cmd("RCPT TO:<someone@elsewhere.test>", "554 5.7.1");
    c.cmd("RCPT TO:<carol@example.org>", "550 5.1.1");
    // The address tricks stay refused for a hosted domain too.
    c.cmd("RCPT TO:<alice%elsewhere.test@example.org>", "554 5.7.1");
    c.cmd("RCPT TO:<\"alice\"@example.org>", "554 5.7.1");
    c.cmd("RCPT TO:<@example.org:alice@example.org>", "554 5.7.1");
    c.cmd("RCPT TO:<Alice@Example.ORG>", "250 2.1.5");
    c.cmd("RCPT TO:<bob+news@example.org>", "250 2.1.5");
    c.cmd("RCPT TO:<ALICE+x@example.org>", "250 2.1.5 Ok (duplicate");
    let id = data(&mut c);
    c.cmd("QUIT", "221");
    let (sender, rcpts) = s.show(&id);
    assert_eq!(sender, SENDER);
    assert_eq!(rcpts, ["alice@example.org", "bob@example.org"]);
}

#[test]
fn lmtp_verification_asks_once_and_refuses_unknown_users_at_rcpt() {
    let s = site("");
    let mut c = s.client();
    c.cmd("MAIL FROM:<>", "250");
    c.cmd("RCPT TO:<Dave+x@example.net>", "250 2.1.5");
    c.cmd("RCPT TO:<eve@example.net>", "550 5.1.1");
    c.cmd("RCPT TO:<dave@example.com>", "450 4.2.0");
    // Pipelined after a RCPT that waits for the LMTP server.
    c.send("RSET\r\nMAIL FROM:<>\r\nRCPT TO:<eve@example.net>\r\nRCPT TO:<dave@example.net>\r\n");
    c.expect("250");
    c.expect("250");
    c.expect("550 5.1.1");
    c.expect("250 2.1.5");
    let id = data(&mut c);
    let (_, rcpts) = s.show(&id);
    assert_eq!(rcpts, ["dave@example.net"]);
    // Answers are remembered for verify_cache (60 s): each mailbox was
    // asked about once, as its mailbox address.
    let asked = s.lmtp.asked();
    let probes: Vec<&String> = asked
        .iter()
        .filter(|m| m.ends_with("example.net"))
        .collect();
    assert_eq!(probes, ["dave@example.net", "eve@example.net"], "{asked:?}");
}

#[test]
fn an_alias_reaches_local_and_remote_and_the_forward_carries_the_srs_sender() {
    let s = site("sales@example.org: alice@example.org, bob@partner.test\n");
    let mut c = s.client();
    c.cmd(&format!("MAIL FROM:<{SENDER}>"), "250");
    c.cmd("RCPT TO:<Sales+q3@example.org>", "250 2.1.5");
    let id = data(&mut c);
    let (sender, rcpts) = s.show(&id);
    assert_eq!(
        (sender.as_str(), rcpts),
        (SENDER, vec!["alice@example.org".to_owned()])
    );
    let got = s.capture.wait_for_messages(1, ARRIVAL);
    assert_eq!(got.len(), 1, "the forward: {}", s.d.stderr());
    let fwd = &got[0];
    assert_eq!(fwd.rcpt_to, ["bob@partner.test"]);
    assert!(fwd.mail_from.starts_with("SRS0="), "{}", fwd.mail_from);
    assert!(
        fwd.mail_from
            .ends_with("=sender.test=sender@mx.test.example"),
        "{}",
        fwd.mail_from
    );
    assert!(fwd.text().contains("hosted-body-marker"), "{}", fwd.text());
    assert!(
        fwd.rcpt_params[0].contains("ORCPT=rfc822;Sales+2Bq3@example.org"),
        "{:?}",
        fwd.rcpt_params
    );

    // The remote server bounces it: the bounce to the SRS address comes
    // home from anyone and is relayed to the original sender.
    let srs = fwd.mail_from.clone();
    let mut c = s.client();
    c.cmd("MAIL FROM:<>", "250");
    let tampered = srs.replacen("=sender@", "=mallory@", 1);
    c.cmd(&format!("RCPT TO:<{tampered}>"), "550 5.1.1");
    c.cmd("RCPT TO:<nobody@mx.test.example>", "550 5.1.1");
    c.cmd(&format!("RCPT TO:<{srs}>"), "250 2.1.5");
    data(&mut c);
    let got = s.capture.wait_for_messages(2, ARRIVAL);
    assert_eq!(got.len(), 2, "the bounce: {}", s.d.stderr());
    assert_eq!(got[1].rcpt_to, [SENDER]);
    assert_eq!(got[1].mail_from, "");
}

#[test]
fn alias_cycles_are_refused_at_rcpt_and_logged() {
    let s = site(
        "loop1@example.org: loop2@example.org\nloop2@example.org: alice@example.org, loop1@example.org\n\
         list@example.org: alice@example.org, gone@example.org\n",
    );
    let mut c = s.client();
    c.cmd("MAIL FROM:<>", "250");
    c.cmd("RCPT TO:<loop1@example.org>", "550 5.4.6");
    c.cmd("RCPT TO:<list@example.org>", "550 5.1.1");
    assert!(
        wait_log(&s.d, "alias loop", Duration::from_secs(5)),
        "{}",
        s.d.stderr()
    );
}

#[test]
fn reload_reads_the_tables_again_and_keeps_them_when_a_file_is_broken() {
    let s = site("");
    let mut c = s.client();
    c.cmd("MAIL FROM:<>", "250");
    c.cmd("RCPT TO:<carol@example.org>", "550 5.1.1");
    c.cmd("QUIT", "221");
    std::fs::write(&s.users, "alice\ncarol\n").expect("users");
    std::fs::write(&s.aliases, "info@example.org: carol@example.org\n").expect("aliases");
    s.d.signal("HUP");
    assert!(wait_log(
        &s.d,
        "reload: configuration applied",
        Duration::from_secs(10)
    ));
    // A shard takes the reload at its next tick: retry until it is in.
    let accepted = (0..100).any(|_| {
        let mut c = s.client();
        c.cmd("MAIL FROM:<>", "250");
        c.send("RCPT TO:<info@example.org>\r\n");
        let ok = c.reply().starts_with("250");
        std::thread::sleep(Duration::from_millis(50));
        ok
    });
    assert!(accepted, "{}", s.d.stderr());
    std::fs::write(&s.aliases, "info@example.org carol@example.org\n").expect("aliases");
    s.d.signal("HUP");
    let why = format!("{}:1: expected", s.aliases.display());
    assert!(
        wait_log(&s.d, &why, Duration::from_secs(10)),
        "{}",
        s.d.stderr()
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut c = s.client();
    c.cmd("MAIL FROM:<>", "250");
    c.cmd("RCPT TO:<info@example.org>", "250 2.1.5");
    c.cmd("RCPT TO:<carol@example.org>", "250 2.1.5 Ok (duplicate");
    let _ = &s.dir;
}

#[test]
fn check_names_the_line_of_a_bad_alias_file_and_users_file() {
    let dir = tempdir();
    let aliases = dir.path().join("aliases");
    let users = dir.path().join("users");
    std::fs::write(
        &aliases,
        "# ok\nsales@example.org: alice@example.org\nsales@example.org: bob@example.org\n",
    )
    .expect("aliases");
    std::fs::write(&users, "alice\n").expect("users");
    let config = dir.path().join("petrel.toml");
    let text = |users: &Path| {
        format!(
            "[spool]\npath = {:?}\n[[domain]]\nname = \"example.org\"\ndelivery = \"lmtp\"\nlmtp = \"127.0.0.1:24\"\n\
             users_file = {users:?}\n[aliases]\nfile = {aliases:?}\n",
            dir.path().join("spool")
        )
    };
    std::fs::write(&config, text(&users)).expect("config");
    let check = || {
        let out = Command::new(env!("CARGO_BIN_EXE_petrel"))
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .expect("petrel check");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = check();
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "{}:3: sales@example.org is already an alias on line 2",
            aliases.display()
        )),
        "{err}"
    );
    std::fs::write(&aliases, "sales@example.org: alice@example.org\n").expect("aliases");
    std::fs::write(&users, "alice\nno body\n").expect("users");
    let (ok, err) = check();
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "{}:2: \"no body\" is not a user name",
            users.display()
        )),
        "{err}"
    );
    std::fs::write(&users, "alice\n").expect("users");
    let (ok, err) = check();
    assert!(ok, "{err}");
    assert!(
        !dir.path().join("spool/srs-secret").exists(),
        "check makes nothing"
    );
}

#[test]
fn lmtp_verification_over_a_unix_socket() {
    let dir = tempdir();
    let socket = dir.path().join("lmtp.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    let asked = Arc::new(Mutex::new(Vec::new()));
    let a = asked.clone();
    std::thread::spawn(move || {
        let users = vec!["dave@example.net".to_owned()];
        for conn in listener.incoming().flatten() {
            let w = conn.try_clone().expect("clone");
            serve_lmtp(conn, w, &users, &a);
        }
    });
    let extra = format!(
        "[relay]\nnetworks = []\n\n[[domain]]\nname = \"example.net\"\ndelivery = \"lmtp\"\n\
         lmtp = \"unix:{}\"\nverify = \"lmtp\"\n",
        socket.display()
    );
    let d = Daemon::start_plain(
        dir.path(),
        &dir.path().join("spool"),
        "shards = 1",
        "",
        &extra,
    );
    let mut c = d.connect();
    c.hello();
    c.cmd("MAIL FROM:<>", "250");
    c.cmd("RCPT TO:<dave@example.net>", "250 2.1.5");
    c.cmd("RCPT TO:<eve@example.net>", "550 5.1.1");
    assert_eq!(
        *asked.lock().expect("lock"),
        ["dave@example.net", "eve@example.net"]
    );
    c.cmd("QUIT", "221");
}
