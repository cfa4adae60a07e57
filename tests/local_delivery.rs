//! Delivery for hosted domains end to end: `petrel run` takes mail from a
//! trusted client (loopback is in `[relay] networks`) for a `[[domain]]`
//! and writes it into Maildirs, or hands it to an LMTP server (a small
//! scripted one here, over TCP and over a Unix socket). The sender is a
//! user of another hosted Maildir domain, so that the bounces petrel
//! sends land in a Maildir where the test can read them, with no DNS.
//! Waits are polls with deadlines, never fixed sleeps on the success path.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_port, send_message, tempdir, wait_queue_empty, Daemon};

const ARRIVAL: Duration = Duration::from_secs(15);
/// The envelope sender `common::send_message` uses, a user of the hosted
/// Maildir domain `client.test.example`.
const SENDER_DOMAIN: &str = "client.test.example";
const BODY: &str = "From: Sender <sender@client.test.example>\r\n\
                    Subject: local delivery\r\n\
                    \r\n\
                    body-marker line\r\n\
                    ..a line that starts with a dot\r\n";
/// `BODY` as stored: dot-unstuffed.
const STORED: &str = "From: Sender <sender@client.test.example>\r\n\
                      Subject: local delivery\r\n\
                      \r\n\
                      body-marker line\r\n\
                      .a line that starts with a dot\r\n";

/// `[delivery]` with a quick retry, and the senders' Maildir domain.
fn config(root: &Path, domains: &str) -> String {
    format!(
        "[dns]\nservers = [\"127.0.0.1:9\"]\ntimeout = \"1s\"\n\n\
         [delivery]\nretry = [\"1s\"]\nidle_timeout = \"1s\"\nconnect_timeout = \"2s\"\n\
         command_timeout = \"5s\"\n\n\
         [[domain]]\nname = \"{SENDER_DOMAIN}\"\ndelivery = \"maildir\"\n\
         maildir_root = \"{}\"\nverify = \"none\"\n\n{domains}",
        root.join("senders").display()
    )
}

fn maildir_domain(name: &str, root: &Path) -> String {
    format!(
        "[[domain]]\nname = \"{name}\"\ndelivery = \"maildir\"\nmaildir_root = \"{}\"\n\
         verify = \"none\"\nmaildir_mode = \"0640\"\n\n",
        root.display()
    )
}

fn lmtp_domain(name: &str, target: &str) -> String {
    format!("[[domain]]\nname = \"{name}\"\ndelivery = \"lmtp\"\nlmtp = \"{target}\"\nverify = \"none\"\n\n")
}

/// One test's directories and daemon.
struct Setup {
    dir: tempfile::TempDir,
    spool: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempdir();
        let spool = dir.path().join("spool");
        std::fs::create_dir_all(dir.path().join("senders")).unwrap();
        Setup { dir, spool }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn daemon(&self, domains: &str) -> Daemon {
        let extra = config(self.dir.path(), domains);
        Daemon::start_plain(self.dir.path(), &self.spool, "shards = 2", "", &extra)
    }

    /// The files in `<root>/<user>/new/`, waiting until there are `n`.
    fn wait_files(&self, maildir: &Path, n: usize) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + ARRIVAL;
        loop {
            let files = files_in(&maildir.join("new"));
            if files.len() >= n || Instant::now() > deadline {
                return files;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The bounces that reached the sender.
    fn bounces(&self, n: usize) -> Vec<String> {
        let files = self.wait_files(&self.path("senders/sender"), n);
        files
            .iter()
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect()
    }
}

fn files_in(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    names.sort();
    names.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

fn send(d: &Daemon, rcpts: &[&str], body: &str) -> String {
    let mut c = d.connect();
    c.hello();
    let id = send_message(&mut c, rcpts, body);
    c.cmd("QUIT", "221");
    id
}

#[test]
fn mail_for_a_maildir_domain_lands_in_new_with_return_path_and_delivered_to() {
    let s = Setup::new();
    let root = s.path("mail");
    std::fs::create_dir(&root).unwrap();
    let d = s.daemon(&maildir_domain("example.org", &root));
    send(&d, &["Alice@Example.ORG", "bob@example.org"], BODY);
    for user in ["alice", "bob"] {
        let files = s.wait_files(&root.join(user), 1);
        assert_eq!(files.len(), 1, "{user}: {}", d.stderr());
        let text = String::from_utf8(files[0].clone()).unwrap();
        let want = format!(
            "Return-Path: <sender@client.test.example>\r\nDelivered-To: {user}@example.org\r\n"
        );
        assert!(text.starts_with(&want), "{text:?}");
        // The message as spooled: the Received: petrel added, then the
        // body exactly, dots unstuffed, CRLF line ends.
        let rest = &text[want.len()..];
        assert!(rest.starts_with("Received: "), "{rest:?}");
        assert!(rest.ends_with(STORED), "{rest:?}");
        use std::os::unix::fs::PermissionsExt;
        let new = root.join(user).join("new");
        let name = std::fs::read_dir(&new).unwrap().next().unwrap().unwrap();
        let mode = name.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        let size = format!(",S={}", files[0].len());
        assert!(name.file_name().to_string_lossy().ends_with(&size));
        assert!(files_in(&root.join(user).join("tmp")).is_empty());
    }
    wait_queue_empty(&d, &s.spool, ARRIVAL);
}

#[test]
fn mail_already_delivered_to_the_mailbox_is_a_loop_and_bounces_5_4_6() {
    let s = Setup::new();
    let root = s.path("mail");
    std::fs::create_dir(&root).unwrap();
    let d = s.daemon(&maildir_domain("example.org", &root));
    let looped = format!("Delivered-To: alice@example.org\r\n{BODY}");
    send(&d, &["alice@example.org"], &looped);
    let bounces = s.bounces(1);
    assert_eq!(bounces.len(), 1, "{}", d.stderr());
    assert!(bounces[0].contains("5.4.6"), "{}", bounces[0]);
    assert!(bounces[0].contains("mail loop"), "{}", bounces[0]);
    wait_queue_empty(&d, &s.spool, ARRIVAL);
    assert!(files_in(&root.join("alice/new")).is_empty());
}

#[test]
fn a_missing_maildir_root_defers_then_delivers_once_it_exists() {
    let s = Setup::new();
    let root = s.path("late");
    let d = s.daemon(&maildir_domain("example.org", &root));
    // Made at start; gone (an unmounted volume, say) by the time mail comes.
    std::fs::remove_dir(&root).unwrap();
    send(&d, &["alice@example.org"], BODY);
    assert!(
        common::wait_log(&d, "does not exist", ARRIVAL),
        "{}",
        d.stderr()
    );
    assert!(common::queued(&s.spool).unwrap_or(0) >= 1);
    std::fs::create_dir(&root).unwrap();
    assert_eq!(s.wait_files(&root.join("alice"), 1).len(), 1);
    wait_queue_empty(&d, &s.spool, ARRIVAL);
}

/// What the scripted LMTP server answers a recipient after the data.
struct Rule {
    rcpt: String,
    reply: String,
    /// How many times more; then the recipient is delivered.
    times: usize,
}

/// A recipient and the message delivered to it.
type Delivered = (String, Vec<u8>);

/// A small LMTP server (RFC 2033) on TCP or a Unix socket: LHLO, MAIL,
/// RCPT, DATA with one reply per recipient, RSET, QUIT.
#[derive(Clone, Default)]
struct LmtpServer {
    /// Recipient and message, for each delivery.
    delivered: Arc<Mutex<Vec<Delivered>>>,
    rules: Arc<Mutex<Vec<Rule>>>,
    transactions: Arc<AtomicUsize>,
}

impl LmtpServer {
    fn tcp(port: u16) -> LmtpServer {
        let l = TcpListener::bind(("127.0.0.2", port)).unwrap();
        LmtpServer::accepting(move || {
            let s = l.accept().ok()?.0;
            Some((BufReader::new(s.try_clone().ok()?), s))
        })
    }

    fn unix(path: &Path) -> LmtpServer {
        let l = UnixListener::bind(path).unwrap();
        LmtpServer::accepting(move || {
            let s = l.accept().ok()?.0;
            Some((BufReader::new(s.try_clone().ok()?), s))
        })
    }

    /// Serves each connection `accept` gives on a thread of its own.
    fn accepting<R: BufRead + Send + 'static, W: Write + Send + 'static>(
        mut accept: impl FnMut() -> Option<(R, W)> + Send + 'static,
    ) -> LmtpServer {
        let me = LmtpServer::default();
        let server = me.clone();
        std::thread::spawn(move || {
            while let Some((r, w)) = accept() {
                let server = server.clone();
                std::thread::spawn(move || server.serve(r, w));
            }
        });
        me
    }

    fn rule(&self, rcpt: &str, reply: &str, times: usize) {
        self.rules.lock().unwrap().push(Rule {
            rcpt: rcpt.into(),
            reply: reply.into(),
            times,
        });
    }

    fn verdict(&self, rcpt: &str) -> Option<String> {
        let mut rules = self.rules.lock().unwrap();
        let rule = rules.iter_mut().find(|r| r.rcpt == rcpt && r.times > 0)?;
        rule.times -= 1;
        Some(rule.reply.clone())
    }

    fn serve(&self, mut r: impl BufRead, mut w: impl Write) {
        let _ = w.write_all(b"220 lmtp.test LMTP ready\r\n");
        let mut rcpts: Vec<String> = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let upper = line.to_ascii_uppercase();
            let reply = if upper.starts_with("LHLO ") {
                "250-lmtp.test\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250 8BITMIME\r\n"
                    .to_owned()
            } else if upper.starts_with("MAIL FROM:") {
                rcpts.clear();
                "250 2.1.0 Ok\r\n".to_owned()
            } else if upper.starts_with("RCPT TO:<") {
                let addr = line[9..].split('>').next().unwrap_or("").to_owned();
                rcpts.push(addr);
                "250 2.1.5 Ok\r\n".to_owned()
            } else if upper.starts_with("DATA") {
                let _ = w.write_all(b"354 go\r\n");
                let data = read_data(&mut r);
                self.transactions.fetch_add(1, Ordering::SeqCst);
                let mut replies = String::new();
                for rcpt in rcpts.drain(..) {
                    match self.verdict(&rcpt) {
                        Some(v) => replies.push_str(&format!("{v}\r\n")),
                        None => {
                            replies.push_str(&format!("250 2.0.0 <{rcpt}> Saved\r\n"));
                            self.delivered.lock().unwrap().push((rcpt, data.clone()));
                        }
                    }
                }
                replies
            } else if upper.starts_with("QUIT") {
                let _ = w.write_all(b"221 2.0.0 Bye\r\n");
                return;
            } else {
                "250 2.0.0 Ok\r\n".to_owned()
            };
            if w.write_all(reply.as_bytes()).is_err() {
                return;
            }
        }
    }

    fn wait_delivered(&self, n: usize) -> Vec<Delivered> {
        let deadline = Instant::now() + ARRIVAL;
        loop {
            let d = self.delivered.lock().unwrap().clone();
            if d.len() >= n || Instant::now() > deadline {
                return d;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The data up to `.`, unstuffed.
fn read_data(r: &mut impl BufRead) -> Vec<u8> {
    let mut data = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line).unwrap_or(0) == 0 || line == b".\r\n" {
            return data;
        }
        let l = if line.starts_with(b".") {
            &line[1..]
        } else {
            &line[..]
        };
        data.extend_from_slice(l);
    }
}

#[test]
fn lmtp_over_tcp_delivers_defers_and_bounces_each_recipient_by_its_own_reply() {
    let s = Setup::new();
    let port = free_port();
    let lmtp = LmtpServer::tcp(port);
    lmtp.rule(
        "full@example.org",
        "452 4.2.2 <full@example.org> Mailbox is full",
        1,
    );
    lmtp.rule(
        "gone@example.org",
        "550 5.1.1 <gone@example.org> User doesn't exist: gone",
        99,
    );
    let d = s.daemon(&lmtp_domain("example.org", &format!("127.0.0.2:{port}")));
    send(
        &d,
        &["alice@example.org", "full@example.org", "gone@example.org"],
        BODY,
    );
    // alice at once, full after its retry; gone never.
    let delivered = lmtp.wait_delivered(2);
    let mut who: Vec<&str> = delivered.iter().map(|(r, _)| r.as_str()).collect();
    who.sort();
    assert_eq!(
        who,
        ["alice@example.org", "full@example.org"],
        "{}",
        d.stderr()
    );
    for (_, data) in &delivered {
        let text = String::from_utf8_lossy(data);
        // The LMTP server adds Return-Path and Delivered-To; petrel does not.
        assert!(text.starts_with("Received: "), "{text:?}");
        assert!(!text.contains("Delivered-To:") && !text.contains("Return-Path:"));
        assert!(text.ends_with(STORED), "{text:?}");
    }
    assert!(lmtp.transactions.load(Ordering::SeqCst) >= 2);
    let bounces = s.bounces(1);
    assert_eq!(bounces.len(), 1, "{}", d.stderr());
    assert!(
        bounces[0].contains("User doesn't exist: gone"),
        "{}",
        bounces[0]
    );
    assert!(bounces[0].contains("gone@example.org"));
    assert!(!bounces[0].contains("Final-Recipient: rfc822; alice@example.org"));
    wait_queue_empty(&d, &s.spool, ARRIVAL);
}

#[test]
fn lmtp_over_a_unix_socket_delivers() {
    let s = Setup::new();
    let sock = s.path("lmtp.sock");
    let lmtp = LmtpServer::unix(&sock);
    let d = s.daemon(&lmtp_domain(
        "example.org",
        &format!("unix:{}", sock.display()),
    ));
    send(&d, &["alice@example.org", "bob@example.org"], BODY);
    let delivered = lmtp.wait_delivered(2);
    assert_eq!(delivered.len(), 2, "{}", d.stderr());
    assert!(delivered
        .iter()
        .all(|(_, m)| m.ends_with(STORED.as_bytes())));
    wait_queue_empty(&d, &s.spool, ARRIVAL);
}

#[test]
fn an_lmtp_server_that_is_down_defers_then_gets_the_mail() {
    let s = Setup::new();
    let port = free_port();
    let d = s.daemon(&lmtp_domain("example.org", &format!("127.0.0.2:{port}")));
    let id = send(&d, &["alice@example.org"], BODY);
    assert!(common::wait_log(&d, "deferred", ARRIVAL), "{}", d.stderr());
    assert!(d.stderr().contains(&id));
    assert!(common::queued(&s.spool).unwrap_or(0) >= 1);
    let lmtp = LmtpServer::tcp(port);
    assert_eq!(lmtp.wait_delivered(1).len(), 1, "{}", d.stderr());
    wait_queue_empty(&d, &s.spool, ARRIVAL);
    assert!(s.bounces(0).is_empty());
}

/// A message of about 8 KiB that names `marker` in its subject and last
/// line, as the client sends it (no line starts with a dot).
fn marked(marker: &str) -> String {
    let mut m = format!("From: <sender@client.test.example>\r\nSubject: {marker}\r\n\r\n");
    for i in 0..100 {
        m.push_str(&format!(
            "{marker} line {i:03} of padding padding padding padding\r\n"
        ));
    }
    m.push_str(&format!("end {marker}\r\n"));
    m
}

#[test]
fn a_sigkill_during_maildir_deliveries_loses_nothing_and_leaves_no_partial_file_in_new() {
    let s = Setup::new();
    let root = s.path("mail");
    std::fs::create_dir(&root).unwrap();
    let domains = maildir_domain("example.org", &root);
    let mut d = s.daemon(&domains);
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let port = d.port();
    let senders: Vec<_> = (0..4)
        .map(|t| {
            let acked = acked.clone();
            std::thread::spawn(move || {
                let mut c = common::Client::connect(port);
                c.hello();
                for n in 0.. {
                    let marker = format!("marker-{t}-{n}");
                    let rcpt = format!("u{}@example.org", n % 3);
                    // Panics once the daemon is gone: the thread ends.
                    send_message(&mut c, &[&rcpt], &marked(&marker));
                    acked.lock().unwrap().push(marker);
                }
            })
        })
        .collect();
    // Kill it while acknowledged mail is still being written.
    let deadline = Instant::now() + ARRIVAL;
    let delivered = || {
        (0..3)
            .map(|u| files_in(&root.join(format!("u{u}/new"))).len())
            .sum::<usize>()
    };
    while (acked.lock().unwrap().len() < 150 || delivered() < 20) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    d.signal("KILL");
    while d.try_wait().is_none() {
        std::thread::sleep(Duration::from_millis(10));
    }
    for s in senders {
        let _ = s.join();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 150, "too few acknowledged: {}", acked.len());
    let d = s.daemon(&domains);
    wait_queue_empty(&d, &s.spool, Duration::from_secs(60));
    // Every file in new/ is whole: the headers petrel adds, its Received:,
    // then one message exactly as sent.
    let mut found = std::collections::HashMap::<String, usize>::new();
    for u in 0..3 {
        for f in files_in(&root.join(format!("u{u}/new"))) {
            let text = String::from_utf8(f).unwrap();
            let want = format!(
                "Return-Path: <sender@client.test.example>\r\nDelivered-To: u{u}@example.org\r\nReceived: "
            );
            assert!(text.starts_with(&want), "{text:?}");
            let marker = text
                .split("Subject: ")
                .nth(1)
                .and_then(|r| r.split("\r\n").next())
                .unwrap()
                .to_owned();
            let body = marked(&marker);
            assert!(
                text.ends_with(&body),
                "partial or altered file for {marker}"
            );
            *found.entry(marker).or_default() += 1;
        }
    }
    for marker in &acked {
        assert!(found.contains_key(marker), "{marker} acknowledged but lost");
    }
    // Duplicates may exist (a file in new/ whose delivered status was not
    // yet durable), but nothing is there that was never sent.
    assert!(found.len() >= acked.len());
}
