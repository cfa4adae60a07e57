//! Hosted domains against a real mailbox server no one here wrote: a
//! private Dovecot (tests/support/dovecot.rs) that petrel delivers to over
//! LMTP or whose Maildirs it writes, read back over POP3 and IMAP
//! (tests/support/mail_readers.rs). First the harness's own checks, then
//! petrel end to end, driven only through its config file, SMTP and the
//! admin API.
//!
//! Dovecot comes from Debian's packages, which `.ci/run` installs and then
//! runs these tests with `--ignored`. A missing Dovecot fails the test:
//! these must never pass without it.

mod common;
#[path = "support/dovecot.rs"]
mod dovecot;
#[path = "support/mail_readers.rs"]
mod mail_readers;
#[path = "support/smtp_server.rs"]
mod smtp_server;

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{inspect, tempdir, total_queued, Client, Conn, Daemon};
use dovecot::{Dovecot, Lmtp, User};
use mail_readers::{Imap, Pop3};
use smtp_server::{Script, SmtpServer};

const PASSWORD: &str = "secret";
/// The LMTP domain, served by Dovecot.
const LMTP_DOMAIN: &str = "example.org";
/// The Maildir domain, written by petrel, read by Dovecot.
const MAILDIR_DOMAIN: &str = "example.net";
const SENDER: &str = "sender@client.test.example";
const SENDER_DOMAIN: &str = "client.test.example";
/// A remote domain: mail for it goes by `[[route]]` to a capture server.
const REMOTE_DOMAIN: &str = "partner.test.example";
/// The SMTP client's address: not in the `[relay] networks` petrel is
/// given, so what it may send is what anyone outside may send.
const OUTSIDER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 9);
/// How long a message may take to reach a mailbox or a capture server.
const ARRIVAL: Duration = Duration::from_secs(20);

/// The message every test sends: an 8-bit line and a line that begins
/// with a dot, which SMTP, LMTP and POP3 each stuff and unstuff.
const HEADER: &str = "From: Sender <sender@client.test.example>\r\n\
                      Subject: hosted domain test\r\n\
                      Message-ID: <hosted-1@client.test.example>\r\n\
                      MIME-Version: 1.0\r\n\
                      Content-Type: text/plain; charset=utf-8\r\n\
                      Content-Transfer-Encoding: 8bit\r\n";
const BODY: &str = "first line\r\n\
                    caf\u{e9} na\u{ef}ve \u{fc}ber 8-bit line\r\n\
                    .a line that begins with a dot\r\n\
                    ..and one with two\r\n\
                    last line\r\n";

fn message(to: &str) -> String {
    format!("{HEADER}To: <{to}>\r\n\r\n{BODY}")
}

/// The header section (up to and with its blank line) and the body.
fn split(message: &[u8]) -> (String, &[u8]) {
    let Some(at) = message.windows(4).position(|w| w == b"\r\n\r\n") else {
        panic!(
            "no header/body boundary in {:?}",
            String::from_utf8_lossy(message)
        );
    };
    (
        String::from_utf8_lossy(&message[..at + 4]).into_owned(),
        &message[at + 4..],
    )
}

/// The body is `BODY`, byte for byte.
fn assert_body(message: &[u8], what: &str) {
    let (header, body) = split(message);
    assert_eq!(
        String::from_utf8_lossy(body),
        BODY,
        "{what}: body differs; header:\n{header}"
    );
    assert_eq!(body, BODY.as_bytes(), "{what}: body differs in bytes");
}

/// A header field of `header` whose name is `name` (any case), unfolded
/// no further than its first line.
fn field<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split("\r\n").find(|l| {
        l.len() > name.len()
            && l.as_bytes()[name.len()] == b':'
            && l[..name.len()].eq_ignore_ascii_case(name)
    })
}

/// Everything in `user`'s INBOX, read by POP3 and by IMAP: both must
/// hold `n` messages, and the same bytes.
fn read_back(d: &Dovecot, user: &str, n: usize) -> Vec<Vec<u8>> {
    let mut imap = Imap::login(d.imap_addr(), user, PASSWORD);
    let by_imap = imap.all("INBOX");
    imap.logout();
    let mut pop3 = Pop3::login(d.pop3_addr(), user, PASSWORD);
    let by_pop3 = pop3.all();
    pop3.quit();
    assert_eq!(by_imap.len(), n, "{user}: IMAP messages; {}", d.log());
    assert_eq!(
        by_pop3, by_imap,
        "{user}: POP3 and IMAP read different messages"
    );
    by_imap
}

/// Waits until `user`'s INBOX holds `n` messages (asking IMAP).
fn wait_mailbox(d: &Dovecot, user: &str, n: usize, what: &dyn Fn() -> String) {
    let deadline = Instant::now() + ARRIVAL;
    loop {
        let mut imap = Imap::login(d.imap_addr(), user, PASSWORD);
        let got = imap.select("INBOX");
        imap.logout();
        if got >= n {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{user}: {got} of {n} messages arrived\n{}\n{}",
                what(),
                d.log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------
// The harness itself: Dovecot, LMTP straight from the test, POP3 and IMAP.

#[test]
#[ignore = "needs Debian's Dovecot; run by .ci/run"]
fn harness_lmtp_over_tcp_and_unix_socket_reads_back_by_pop3_and_imap() {
    let alice = format!("alice@{LMTP_DOMAIN}");
    let d = Dovecot::start(&[User::new(&alice, PASSWORD)]);
    let over_tcp = Lmtp::tcp(d.lmtp_addr()).deliver(SENDER, &[&alice], message(&alice).as_bytes());
    assert!(over_tcp[0].starts_with("250 2.0.0"), "{over_tcp:?}");
    let over_unix =
        Lmtp::unix(&d.lmtp_socket()).deliver(SENDER, &[&alice], message(&alice).as_bytes());
    assert!(over_unix[0].starts_with("250 2.0.0"), "{over_unix:?}");
    for (i, m) in read_back(&d, &alice, 2).iter().enumerate() {
        assert_body(m, &format!("message {i}"));
        let (header, _) = split(m);
        // What Dovecot adds over LMTP, which the petrel tests rely on.
        assert_eq!(
            field(&header, "Return-Path"),
            Some(format!("Return-Path: <{SENDER}>").as_str()),
            "{header}"
        );
        let delivered = field(&header, "Delivered-To").unwrap_or_default();
        assert!(delivered.contains(&alice), "{header}");
        assert!(
            header.ends_with(&format!("To: <{alice}>\r\n\r\n")),
            "{header}"
        );
    }
}

#[test]
#[ignore = "needs Debian's Dovecot; run by .ci/run"]
fn harness_file_placed_in_maildir_new_reads_back_by_pop3_and_imap() {
    let alice = format!("alice@{LMTP_DOMAIN}");
    let d = Dovecot::start(&[User::new(&alice, PASSWORD)]);
    let maildir = d.maildir_root(LMTP_DOMAIN).join("alice");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).expect("maildir");
    }
    let placed = format!("Return-Path: <{SENDER}>\r\n{}", message(&alice));
    common::write(
        &maildir.join("new").join("1700000000.M1P1.test"),
        placed.as_bytes(),
    );
    let got = read_back(&d, &alice, 1);
    assert_eq!(
        String::from_utf8_lossy(&got[0]),
        placed,
        "the file as placed"
    );
    assert_eq!(got[0], placed.as_bytes());
}

#[test]
#[ignore = "needs Debian's Dovecot; run by .ci/run"]
fn harness_refusing_mailbox_gets_552_and_unknown_user_550() {
    let full = format!("full@{LMTP_DOMAIN}");
    let d = Dovecot::start(&[User::refusing(&full, PASSWORD)]);
    let replies = Lmtp::tcp(d.lmtp_addr()).deliver(SENDER, &[&full], message(&full).as_bytes());
    assert!(replies[0].starts_with("552 5.2.2"), "{replies:?}");
    let unknown = Lmtp::tcp(d.lmtp_addr()).rcpt_reply(&format!("nobody@{LMTP_DOMAIN}"));
    assert!(unknown.starts_with("550 5.1.1"), "{unknown}");
}

#[test]
#[ignore = "needs Debian's Dovecot; run by .ci/run"]
fn harness_stops_and_starts_again_on_the_same_ports_with_the_same_mail() {
    let alice = format!("alice@{LMTP_DOMAIN}");
    let mut d = Dovecot::start(&[User::new(&alice, PASSWORD)]);
    let ports = (d.imap_port, d.pop3_port, d.lmtp_port);
    Lmtp::tcp(d.lmtp_addr()).deliver(SENDER, &[&alice], message(&alice).as_bytes());
    d.stop();
    assert!(
        TcpStream::connect(d.lmtp_addr()).is_err(),
        "LMTP still answers after the stop"
    );
    d.start_again();
    assert_eq!((d.imap_port, d.pop3_port, d.lmtp_port), ports);
    Lmtp::unix(&d.lmtp_socket()).deliver(SENDER, &[&alice], message(&alice).as_bytes());
    for m in read_back(&d, &alice, 2) {
        assert_body(&m, "after the restart");
    }
}

// ---------------------------------------------------------------------------
// petrel as the MX of hosted domains, with Dovecot holding the mailboxes.

/// One test's world: a temp dir, petrel's spool, the Dovecot, and the
/// port of the scripted servers that stand in for other hosts.
struct World {
    dir: tempfile::TempDir,
    spool: PathBuf,
    dovecot: Dovecot,
    /// Where `[[route]]` relays are: 127.0.0.3 (the remote domain) and
    /// 127.0.0.4 (the sender's domain, where bounces go).
    relay_port: u16,
    admin_port: u16,
}

impl World {
    fn new(users: &[User]) -> World {
        let dir = tempdir();
        let spool = dir.path().join("spool");
        World {
            dir,
            spool,
            dovecot: Dovecot::start(users),
            relay_port: common::common_port(&[3, 4]),
            admin_port: common::free_port(),
        }
    }

    /// A `[[domain]]` delivered over LMTP to the Dovecot, at `lmtp`.
    fn lmtp_domain(&self, name: &str, lmtp: &str, verify: &str) -> String {
        format!(
            "[[domain]]\nname = \"{name}\"\ndelivery = \"lmtp\"\nlmtp = \"{lmtp}\"\n\
             verify = \"{verify}\"\n{}\n",
            self.users_line(name, verify)
        )
    }

    /// A `[[domain]]` petrel writes Maildirs for, where Dovecot reads.
    fn maildir_domain(&self, name: &str, verify: &str) -> String {
        format!(
            "[[domain]]\nname = \"{name}\"\ndelivery = \"maildir\"\n\
             maildir_root = \"{}\"\nverify = \"{verify}\"\n{}\n",
            self.dovecot.maildir_root(name).display(),
            self.users_line(name, verify)
        )
    }

    fn users_line(&self, domain: &str, verify: &str) -> String {
        if verify == "users" {
            format!("users_file = \"{}\"\n", self.users_file(domain).display())
        } else {
            String::new()
        }
    }

    /// `users_file` for `domain`: the AUTH users file's format (made by
    /// `petrel passwd`), one line per whole address.
    fn users_file(&self, domain: &str) -> PathBuf {
        self.dir
            .path()
            .join(format!("users-{domain}"))
            .join("users")
    }

    /// Adds `address` to its domain's users file.
    fn add_user(&self, address: &str) {
        let Some((_, domain)) = address.split_once('@') else {
            panic!("not an address: {address}");
        };
        let dir = self.dir.path().join(format!("users-{domain}"));
        if let Err(e) = std::fs::create_dir_all(&dir) {
            panic!("{}: {e}", dir.display());
        }
        common::users_file(&dir, address, PASSWORD);
    }

    /// `lmtp = "HOST:PORT"` of the Dovecot.
    fn lmtp_tcp(&self) -> String {
        self.dovecot.lmtp_addr().to_string()
    }

    /// `lmtp = "unix:PATH"` of the Dovecot.
    fn lmtp_unix(&self) -> String {
        format!("unix:{}", self.dovecot.lmtp_socket().display())
    }

    /// A `[[route]]` for `domain` to the scripted server at 127.0.0.`host`.
    fn route(&self, domain: &str, host: u8) -> String {
        format!(
            "[[route]]\ndomain = \"{domain}\"\nrelay = \"127.0.0.{host}:{}\"\n\n",
            self.relay_port
        )
    }

    fn server(&self, host: u8) -> SmtpServer {
        SmtpServer::start(
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, host)),
            self.relay_port,
            Script::accept(),
        )
    }

    /// petrel relaying only for 127.0.0.1, delivering (retries an hour
    /// apart, so only a flush retries within a test), with its admin
    /// endpoint, and `extra` (the domains, aliases and routes).
    fn petrel(&self, extra: &str) -> Daemon {
        let config = format!(
            "[relay]\nnetworks = [\"127.0.0.1/32\"]\n\n\
             [delivery]\nretry = [\"1h\"]\nmax_age = \"5d\"\nconnect_timeout = \"2s\"\n\
             command_timeout = \"10s\"\nidle_timeout = \"200ms\"\n\n\
             [admin]\naddress = \"127.0.0.1:{}\"\n\n{extra}",
            self.admin_port
        );
        Daemon::start_plain(self.dir.path(), &self.spool, "shards = 1", "", &config)
    }

    /// `petrel queue ARGS` against the daemon's admin endpoint; stdout.
    fn queue(&self, d: &Daemon, args: &[&str]) -> String {
        let cli = self.dir.path().join("cli.toml");
        common::write(
            &cli,
            format!("[admin]\naddress = \"127.0.0.1:{}\"\n", self.admin_port).as_bytes(),
        );
        let out = Command::new(env!("CARGO_BIN_EXE_petrel"))
            .arg("queue")
            .arg("--config")
            .arg(&cli)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("petrel queue: {e}"));
        assert!(
            out.status.success(),
            "petrel queue {args:?}: {}\ndaemon log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            d.stderr()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// An SMTP client connected to petrel from `OUTSIDER`, which is not in
/// its relay networks.
fn outsider(d: &Daemon) -> Client {
    use rustix::net::{bind, connect, socket, AddressFamily, SocketType};
    let fd = match socket(AddressFamily::INET, SocketType::STREAM, None) {
        Ok(fd) => fd,
        Err(e) => panic!("socket: {e}"),
    };
    if let Err(e) = bind(&fd, &SocketAddrV4::new(OUTSIDER, 0)) {
        panic!("bind {OUTSIDER}: {e}");
    }
    if let Err(e) = connect(&fd, &SocketAddrV4::new(Ipv4Addr::LOCALHOST, d.port())) {
        panic!("connect to petrel on {}: {e}", d.port());
    }
    let stream = TcpStream::from(fd);
    for r in [
        stream.set_read_timeout(Some(common::IO_TIMEOUT)),
        stream.set_write_timeout(Some(common::IO_TIMEOUT)),
    ] {
        if let Err(e) = r {
            panic!("socket timeout: {e}");
        }
    }
    let mut c = Client::from_conn(Conn::Plain(stream));
    c.hello();
    c
}

/// One message from `SENDER` to `rcpts` (each must be accepted), sent by
/// an outsider; returns the queue id.
fn send(d: &Daemon, rcpts: &[&str], message: &str) -> String {
    let mut c = outsider(d);
    c.cmd(&format!("MAIL FROM:<{SENDER}> BODY=8BITMIME"), "250");
    for r in rcpts {
        let reply = c.cmd(&format!("RCPT TO:<{r}>"), "2");
        assert!(reply.starts_with("250"), "RCPT {r}: {reply}");
    }
    c.cmd("DATA", "354");
    c.send_bytes(&dovecot::dot_stuff(message.as_bytes()));
    c.send(".\r\n");
    let id = common::queued_id(&c.reply());
    c.cmd("QUIT", "221");
    id
}

/// The reply an outsider gets to `RCPT TO:<rcpt>`.
fn rcpt_reply(d: &Daemon, rcpt: &str) -> String {
    let mut c = outsider(d);
    c.cmd(&format!("MAIL FROM:<{SENDER}>"), "250");
    c.send(&format!("RCPT TO:<{rcpt}>\r\n"));
    let reply = c.reply();
    c.cmd("QUIT", "221");
    reply
}

/// The header fields named `name` in `header`.
fn fields<'a>(header: &'a str, name: &str) -> Vec<&'a str> {
    header
        .split("\r\n")
        .filter(|l| field(l, name).is_some())
        .collect()
}

/// The one `Received:` petrel wrote: from the outsider, by petrel.
fn assert_petrels_received(header: &str) {
    let ours: Vec<&str> = header
        .split("\r\nReceived: ")
        .skip(1)
        .filter(|f| f.contains("by mx.test.example"))
        .collect();
    assert_eq!(ours.len(), 1, "petrel's Received: in\n{header}");
    assert!(
        ours[0].contains(&format!("[{OUTSIDER}]")),
        "petrel's Received: names the client\n{header}"
    );
}

/// One `Return-Path:` with the envelope sender, one `Delivered-To:` with
/// `rcpt`, and petrel's own `Received:`.
fn assert_delivery_header(message: &[u8], rcpt: &str) {
    let (header, _) = split(message);
    assert_eq!(
        fields(&header, "Return-Path"),
        [format!("Return-Path: <{SENDER}>")],
        "{header}"
    );
    let delivered_to = fields(&header, "Delivered-To");
    assert_eq!(delivered_to.len(), 1, "{header}");
    assert!(delivered_to[0].contains(rcpt), "{header}");
    assert_petrels_received(&header);
}

/// Delivery by petrel, then a mailbox with `n` messages, read back.
fn delivered(w: &World, d: &Daemon, user: &str, n: usize) -> Vec<Vec<u8>> {
    wait_mailbox(&w.dovecot, user, n, &|| {
        format!("petrel log:\n{}", d.stderr())
    });
    common::wait_queue_empty(d, &w.spool, ARRIVAL);
    read_back(&w.dovecot, user, n)
}

#[test]
#[ignore = "needs Debian's Dovecot; run by .ci/run"]
fn harness_outsider_is_outside_the_relay_networks() {
    let w = World::new(&[]);
    let d = w.petrel("");
    let remote = format!("someone@{REMOTE_DOMAIN}");
    let reply = rcpt_reply(&d, &remote);
    assert!(reply.starts_with("554 5.7.1"), "{reply}");
    // The same RCPT from 127.0.0.1, in the relay networks, is taken.
    let mut c = d.connect();
    c.hello();
    c.cmd(&format!("MAIL FROM:<{SENDER}>"), "250");
    c.cmd(&format!("RCPT TO:<{remote}>"), "250");
    c.cmd("QUIT", "221");
    d.stop();
}

#[test]
#[ignore = "needs Debian's Dovecot; run by .ci/run"]
fn lmtp_domain_mail_reaches_pop3_and_imap_byte_identical() {
    let alice = format!("alice@{LMTP_DOMAIN}");
    let w = World::new(&[User::new(&alice, PASSWORD)]);
    let d = w.petrel(&w.lmtp_domain(LMTP_DOMAIN, &w.lmtp_tcp(), "lmtp"));
    send(&d, &[&alice], &message(&alice));
    let got = delivered(&w, &d, &alice, 1);
    assert_body(&got[0], "over LMTP");
    // Dovecot adds Return-Path: and Delivered-To: over LMTP, and petrel
    // must not add its own.
    assert_delivery_header(&got[0], &alice);
    d.stop();
}

#[test]
#[ignore = "needs Debian's Dovecot; run by .ci/run"]
fn maildir_domain_mail_is_read_by_dovecot_byte_identical() {
    let alice = format!("alice@{MAILDIR_DOMAIN}");
    let w = World::new(&[User::new(&alice, PASSWORD)]);
    w.add_user(&alice);
    let d = w.petrel(&w.maildir_domain(MAILDIR_DOMAIN, "users"));
    send(&d, &[&alice], &message(&alice));
    let got = delivered(&w, &d, &alice, 1);
    assert_body(&got[0], "by Maildir");
    // petrel is the final delivery agent here: it adds both.
    assert_delivery_header(&got[0], &alice);
    // Written where Dovecot looks: <maildir_root>/<local part>/, and no
    // file left in tmp/.
    let maildir = w.dovecot.maildir_root(MAILDIR_DOMAIN).join("alice");
    let in_tmp = std::fs::read_dir(maildir.join("tmp")).map(|d| d.count());
    assert!(matches!(in_tmp, Ok(0)), "{}: {in_tmp:?}", maildir.display());
    d.stop();
}

#[test]
#[ignore = "needs Debian's Dovecot; run by .ci/run"]
fn unknown_user_is_refused_at_rcpt_by_the_users_file() {
    let alice = format!("alice@{MAILDIR_DOMAIN}");
    let w = World::new(&[User::new(&alice, PASSWORD)]);
    w.add_user(&alice);
    let d = w.petrel(&w.maildir_domain(MAILDIR_DOMAIN, "users"));
    let reply = rcpt_reply(&d, &format!("nobody@{MAILDIR_DOMAIN}"));
    assert!(reply.starts_with("550 5.1.1"), "{reply}");
    let reply = rcpt_reply(&d, &alice);
    assert!(reply.starts_with("250"), "{reply}");
    // Still no relaying for an outsider.
    let reply = rcpt_reply(&d, &format!("someone@{REMOTE_DOMAIN}"));
    assert!(reply.starts_with('5'), "{reply}");
    assert_eq!(total_queued(&inspect(&w.spool)), 0);
    d.stop();
}

#[test]
#[ignore = "needs Debian's Dovecot; run by .ci/run"]
fn unknown_user_is_refused_at_rcpt_by_asking_dovecot_over_lmtp() {
    let alice = format!("alice@{LMTP_DOMAIN}");
    let w = World::new(&[User::new(&alice, PASSWORD)]);
    let d = w.petrel(&w.lmtp_domain(LMTP_DOMAIN, &w.lmtp_unix(), "lmtp"));
    let reply = rcpt_reply(&d, &format!("nobody@{LMTP_DOMAIN}"));
    assert!(reply.starts_with("550 5.1.1"), "{reply}");
    let reply = rcpt_reply(&d, &alice);
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(total_queued(&inspect(&w.spool)), 0);
    d.stop();
}

#[test]
#[ignore = "needs Debian's Dovecot; run by .ci/run"]
fn sub_address_lands_in_the_users_mailbox() {
    let lmtp_alice = format!("alice@{LMTP_DOMAIN}");
    let maildir_alice = format!("alice@{MAILDIR_DOMAIN}");
    let w = World::new(&[
        User::new(&lmtp_alice, PASSWORD),
        User::new(&maildir_alice, PASSWORD),
    ]);
    w.add_user(&lmtp_alice);
    w.add_user(&maildir_alice);
    let d = w.petrel(&format!(
        "{}{}",
        w.lmtp_domain(LMTP_DOMAIN, &w.lmtp_tcp(), "users"),
        w.maildir_domain(MAILDIR_DOMAIN, "users")
    ));
    for alice in [&lmtp_alice, &maildir_alice] {
        let tagged = alice.replacen('@', "+news@", 1);
        send(&d, &[&tagged], &message(&tagged));
        let got = delivered(&w, &d, alice, 1);
        assert_body(&got[0], &tagged);
    }
    let root = w.dovecot.maildir_root(MAILDIR_DOMAIN);
    assert!(
        !root.join("alice+news").exists(),
        "a Maildir for the tagged address"
    );
    d.stop();
}

#[test]
#[ignore = "needs Debian's Dovecot; run by .ci/run"]
fn alias_to_a_remote_address_is_relayed_with_srs() {
    let alice = format!("alice@{LMTP_DOMAIN}");
    let sales = format!("sales@{LMTP_DOMAIN}");
    let carol = format!("carol@{REMOTE_DOMAIN}");
    let w = World::new(&[User::new(&alice, PASSWORD)]);
    let remote = w.server(3);
    let aliases = w.dir.path().join("aliases");
    common::write(&aliases, format!("{sales}: {alice}, {carol}\n").as_bytes());
    let d = w.petrel(&format!(
        "{}[aliases]\nfile = \"{}\"\n\n{}",
        w.lmtp_domain(LMTP_DOMAIN, &w.lmtp_tcp(), "lmtp"),
        aliases.display(),
        w.route(REMOTE_DOMAIN, 3)
    ));
    send(&d, &[&sales], &message(&sales));
    let got = remote.wait_for_messages(1, ARRIVAL);
    assert_eq!(got.len(), 1, "relayed to {carol}; log:\n{}", d.stderr());
    assert_eq!(got[0].rcpt_to, std::slice::from_ref(&carol));
    let from = &got[0].mail_from;
    assert!(
        from.starts_with("SRS0=") && from != SENDER,
        "envelope sender not rewritten: {from:?}"
    );
    assert!(from.contains(SENDER_DOMAIN), "{from:?}");
    let (_, body) = split(&got[0].data);
    // The capture server keeps the body less its last CRLF.
    assert_eq!(
        body,
        BODY.as_bytes().strip_suffix(b"\r\n").unwrap_or_default()
    );
    let local = delivered(&w, &d, &alice, 1);
    assert_body(&local[0], "the alias's local member");
    d.stop();
}

#[test]
#[ignore = "needs Debian's Dovecot; run by .ci/run"]
fn dovecot_down_defers_then_delivers_after_it_is_up_and_the_queue_flushed() {
    let alice = format!("alice@{LMTP_DOMAIN}");
    let mut w = World::new(&[User::new(&alice, PASSWORD)]);
    w.add_user(&alice);
    let d = w.petrel(&w.lmtp_domain(LMTP_DOMAIN, &w.lmtp_tcp(), "users"));
    w.dovecot.stop();
    send(&d, &[&alice], &message(&alice));
    assert!(
        common::wait_log(&d, "deferred", ARRIVAL),
        "no deferral; log:\n{}",
        d.stderr()
    );
    assert_eq!(total_queued(&inspect(&w.spool)), 1, "{}", d.stderr());
    w.dovecot.start_again();
    let out = w.queue(&d, &["flush"]);
    assert!(out.contains("1 deferred"), "{out}");
    let got = delivered(&w, &d, &alice, 1);
    assert_body(&got[0], "after the flush");
    d.stop();
}

#[test]
#[ignore = "needs Debian's Dovecot; run by .ci/run"]
fn mailbox_dovecot_refuses_bounces_to_the_sender_with_its_reply() {
    let full = format!("full@{LMTP_DOMAIN}");
    let w = World::new(&[User::refusing(&full, PASSWORD)]);
    let senders_mx = w.server(4);
    let d = w.petrel(&format!(
        "{}{}",
        w.lmtp_domain(LMTP_DOMAIN, &w.lmtp_tcp(), "lmtp"),
        w.route(SENDER_DOMAIN, 4)
    ));
    send(&d, &[&full], &message(&full));
    let got = senders_mx.wait_for_messages(1, ARRIVAL);
    assert_eq!(got.len(), 1, "no bounce; log:\n{}", d.stderr());
    assert_eq!(got[0].mail_from, "", "a bounce is from <>");
    assert_eq!(got[0].rcpt_to, [SENDER.to_string()]);
    let text = got[0].text();
    assert!(text.contains(&full), "{text}");
    assert!(text.contains("552 5.2.2"), "Dovecot's reply: {text}");
    assert!(text.contains("Quota exceeded"), "Dovecot's reply: {text}");
    // It returns the message's header (no body: the sender is outside).
    assert!(
        text.contains("<hosted-1@client.test.example>"),
        "the bounce names the message: {text}"
    );
    common::wait_queue_empty(&d, &w.spool, ARRIVAL);
    d.stop();
}
