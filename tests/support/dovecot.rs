//! A private Dovecot for tests: the mailbox server of hosted domains.
//!
//! [`Dovecot::start`] writes a throwaway config in a temp dir and runs
//! `dovecot -F -c FILE` as a child process (no system service): its own
//! `base_dir`, state and log in that dir, `passwd-file` users with
//! plaintext passwords, mailboxes at `maildir:ROOT/%d/%n` (so petrel's
//! Maildir layout `<maildir_root>/<local part>/` with
//! `maildir_root = ROOT/<domain>` is what Dovecot reads), POP3, IMAP and
//! LMTP on loopback ports above 1024 and LMTP on a Unix socket too. It is
//! killed on drop; every failure prints its log.
//!
//! Running as root: Dovecot's IMAP, POP3 and LMTP processes refuse to
//! touch mail as root ("Mail access not allowed for root", whatever
//! `first_valid_uid` says), and as root the master would switch to a mail
//! user that cannot read the files the tests (root) write. So under root
//! the whole of Dovecot runs "rootless" as the `dovecot` user the package
//! creates, started through `setpriv` with the file-access capabilities
//! (`CAP_DAC_OVERRIDE`, `CAP_DAC_READ_SEARCH`, `CAP_FOWNER`) kept as
//! ambient ones: it reads and changes the root-owned mail and temp dir as
//! they are, as a mail user owning them would, and can do nothing else a
//! root process could. Rootless, nothing switches user, so
//! `default_internal_user` and `default_login_user` are that same user and
//! the services that would chroot (anvil, the login processes) do not.
//! Under any other user Dovecot runs as that user, the same way.
//!
//! A mailbox that refuses mail for good is a user with a 1-byte quota
//! (the quota plugin): LMTP answers `552 5.2.2 ... Quota exceeded`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;

pub const DOVECOT: &str = "/usr/sbin/dovecot";
const SETPRIV: &str = "/usr/bin/setpriv";
/// Where every private Dovecot listens; the ports tell them apart.
pub const HOST: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);
/// Generous: the machine may be busy building or running other tests.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// A mailbox user: `name` is the whole address, which is also the login.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub password: String,
    /// Delivery to this mailbox is refused for good (a quota of 1 byte).
    pub refuses: bool,
}

impl User {
    pub fn new(name: &str, password: &str) -> User {
        User {
            name: name.to_string(),
            password: password.to_string(),
            refuses: false,
        }
    }

    /// A user whose mailbox Dovecot refuses every message for.
    pub fn refusing(name: &str, password: &str) -> User {
        User {
            refuses: true,
            ..User::new(name, password)
        }
    }

    /// Its line in the passwd-file: `user:{PLAIN}password:uid:gid:gecos:
    /// home:shell:extra`. No uid or gid: mail is accessed as the user
    /// Dovecot runs as (see the module comment).
    fn passwd_line(&self) -> String {
        let extra = if self.refuses {
            "userdb_quota_rule=*:storage=1B"
        } else {
            ""
        };
        format!("{}:{{PLAIN}}{}::::::{extra}\n", self.name, self.password)
    }
}

/// A running private Dovecot and where it listens.
pub struct Dovecot {
    dir: tempfile::TempDir,
    pub imap_port: u16,
    pub pop3_port: u16,
    pub lmtp_port: u16,
    child: Option<Child>,
}

impl Dovecot {
    /// Starts Dovecot with `users`, on free ports, and waits until every
    /// listener greets. Panics (with its log) if it will not start; a
    /// missing Dovecot is a failure, never a skip.
    pub fn start(users: &[User]) -> Dovecot {
        assert!(
            Path::new(DOVECOT).exists(),
            "{DOVECOT} is missing: install Debian's dovecot-core, dovecot-imapd, \
             dovecot-pop3d and dovecot-lmtpd (.ci/run does)"
        );
        let dir = common::tempdir();
        let mut users_text = String::new();
        for u in users {
            users_text.push_str(&u.passwd_line());
        }
        common::write(&dir.path().join("users"), users_text.as_bytes());
        for name in ["run", "state", "mail"] {
            create_dir(&dir.path().join(name));
        }
        let mut d = Dovecot {
            dir,
            imap_port: 0,
            pop3_port: 0,
            lmtp_port: 0,
            child: None,
        };
        let mut last = String::new();
        for _ in 0..5 {
            let host = [HOST.octets()[3]];
            d.imap_port = common::common_port(&host);
            d.pop3_port = common::common_port(&host);
            d.lmtp_port = common::common_port(&host);
            common::write(&d.config_path(), d.config().as_bytes());
            match d.try_run() {
                Ok(()) => return d,
                // Most likely a port was taken meanwhile: try other ones.
                Err(e) => last = e,
            }
        }
        panic!("dovecot would not start: {last}");
    }

    /// Stops Dovecot (SIGTERM, then waits for it to exit); its mail, ports
    /// and config stay for [`Dovecot::start_again`].
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            panic!("dovecot is not running");
        };
        let pid = rustix::process::Pid::from_child(&child);
        if let Err(e) = rustix::process::kill_process(pid, rustix::process::Signal::TERM) {
            panic!("SIGTERM to dovecot: {e}");
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) => {}
                Err(e) => panic!("try_wait: {e}"),
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("dovecot did not exit after SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Its processes are gone when none of its listeners answers.
        let deadline = Instant::now() + STOP_TIMEOUT;
        while self.greetings().iter().any(|g| *g) {
            assert!(
                Instant::now() < deadline,
                "dovecot's listeners still answer after it exited:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts it again after [`Dovecot::stop`], on the same ports and
    /// paths, with the same users and mail.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "dovecot is already running");
        if let Err(e) = self.try_run() {
            panic!("dovecot would not start again: {e}");
        }
    }

    /// Spawns Dovecot and waits for all of its listeners; on failure it is
    /// killed and the error carries its log.
    fn try_run(&mut self) -> Result<(), String> {
        let out = match std::fs::File::create(self.path("dovecot.out")) {
            Ok(f) => f,
            Err(e) => panic!("dovecot.out: {e}"),
        };
        let err = match out.try_clone() {
            Ok(f) => f,
            Err(e) => panic!("{e}"),
        };
        let mut command = if rustix::process::geteuid().is_root() {
            let caps = "+dac_override,+dac_read_search,+fowner";
            let mut c = Command::new(SETPRIV);
            c.args(["--reuid=dovecot", "--regid=dovecot", "--clear-groups"])
                .arg(format!("--inh-caps={caps}"))
                .arg(format!("--ambient-caps={caps}"))
                .arg(DOVECOT);
            c
        } else {
            Command::new(DOVECOT)
        };
        command
            .arg("-F")
            .arg("-c")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        self.child = match command.spawn() {
            Ok(c) => Some(c),
            Err(e) => panic!("cannot run dovecot: {e}"),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(format!("exited early ({status}):\n{}", self.log()));
            }
            if self.greetings().iter().all(|g| *g) {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!("no answer on its ports:\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether POP3, IMAP and LMTP on TCP and on the socket each greet.
    fn greetings(&self) -> [bool; 4] {
        let tcp = |port, greeting: &str| match TcpStream::connect((HOST, port)) {
            Ok(s) => s.set_read_timeout(Some(IO_TIMEOUT)).is_ok() && greets(s, greeting),
            Err(_) => false,
        };
        let unix = match UnixStream::connect(self.lmtp_socket()) {
            Ok(s) => s.set_read_timeout(Some(IO_TIMEOUT)).is_ok() && greets(s, "220 "),
            Err(_) => false,
        };
        [
            tcp(self.pop3_port, "+OK"),
            tcp(self.imap_port, "* OK"),
            tcp(self.lmtp_port, "220 "),
            unix,
        ]
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config_path(&self) -> PathBuf {
        self.path("dovecot.conf")
    }

    /// `ROOT`: mailboxes are `ROOT/<domain>/<local part>/`.
    pub fn mail_root(&self) -> PathBuf {
        self.path("mail")
    }

    /// What petrel's `maildir_root` for `domain` is: `ROOT/<domain>`.
    pub fn maildir_root(&self, domain: &str) -> PathBuf {
        self.mail_root().join(domain)
    }

    /// The Unix socket LMTP listens on.
    pub fn lmtp_socket(&self) -> PathBuf {
        self.path("run").join("lmtp")
    }

    pub fn pop3_addr(&self) -> SocketAddr {
        SocketAddr::from((HOST, self.pop3_port))
    }

    pub fn imap_addr(&self) -> SocketAddr {
        SocketAddr::from((HOST, self.imap_port))
    }

    pub fn lmtp_addr(&self) -> SocketAddr {
        SocketAddr::from((HOST, self.lmtp_port))
    }

    /// Its log and what it wrote to stdout and stderr.
    pub fn log(&self) -> String {
        let read = |name| std::fs::read_to_string(self.path(name)).unwrap_or_default();
        format!(
            "--- dovecot.log\n{}--- dovecot stdout/stderr\n{}",
            read("dovecot.log"),
            read("dovecot.out")
        )
    }

    /// The whole config; see the module comment for the why of the users.
    pub fn config(&self) -> String {
        let user = if rustix::process::geteuid().is_root() {
            "dovecot".to_string()
        } else {
            current_user()
        };
        let dir = self.dir.path().display();
        format!(
            "# A private Dovecot for petrel's tests; nothing here is a system one.\n\
             protocols = imap pop3 lmtp\n\
             instance_name = petrel-test\n\
             base_dir = {dir}/run\n\
             state_dir = {dir}/state\n\
             log_path = {dir}/dovecot.log\n\
             # Rootless: every process runs as the user Dovecot was started as.\n\
             default_internal_user = {user}\n\
             default_internal_group = {user}\n\
             default_login_user = {user}\n\
             # Loopback only, so no TLS, and LOGIN/USER+PASS in plain text.\n\
             ssl = no\n\
             disable_plaintext_auth = no\n\
             auth_mechanisms = plain login\n\
             # user+tag@domain is user@domain's, as a common setup has it.\n\
             recipient_delimiter = +\n\
             mail_location = maildir:{dir}/mail/%d/%n\n\
             mail_plugins = quota\n\
             plugin {{\n  quota = maildir:User quota\n}}\n\
             passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN {dir}/users\n}}\n\
             userdb {{\n  driver = passwd-file\n  args = {dir}/users\n}}\n\
             # Chrooting needs root, which a rootless Dovecot does not have.\n\
             service anvil {{\n  chroot =\n}}\n\
             service imap-login {{\n  chroot =\n  inet_listener imap {{\n    \
             address = {HOST}\n    port = {imap}\n  }}\n}}\n\
             service pop3-login {{\n  chroot =\n  inet_listener pop3 {{\n    \
             address = {HOST}\n    port = {pop3}\n  }}\n}}\n\
             service lmtp {{\n  inet_listener lmtp {{\n    address = {HOST}\n    \
             port = {lmtp}\n  }}\n  unix_listener lmtp {{\n    mode = 0666\n  }}\n}}\n",
            imap = self.imap_port,
            pop3 = self.pop3_port,
            lmtp = self.lmtp_port,
        )
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.stop()));
            self.kill();
        }
    }
}

fn create_dir(path: &Path) {
    if let Err(e) = std::fs::create_dir_all(path) {
        panic!("{}: {e}", path.display());
    }
}

fn current_user() -> String {
    let out = match Command::new("id").arg("-un").output() {
        Ok(out) => out,
        Err(e) => panic!("id -un: {e}"),
    };
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Whether the first line read from `stream` begins with `greeting`.
fn greets<S: Read>(stream: S, greeting: &str) -> bool {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    matches!(reader.read_line(&mut line), Ok(n) if n > 0) && line.starts_with(greeting)
}

/// A minimal LMTP client (RFC 2033) over TCP or a Unix socket: one
/// transaction, strict about every reply.
pub struct Lmtp<S: Read + Write> {
    reader: BufReader<S>,
}

impl Lmtp<TcpStream> {
    pub fn tcp(addr: SocketAddr) -> Lmtp<TcpStream> {
        let stream = match TcpStream::connect(addr) {
            Ok(s) => s,
            Err(e) => panic!("connect to LMTP at {addr}: {e}"),
        };
        let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
        Lmtp::greeted(stream)
    }
}

impl Lmtp<UnixStream> {
    pub fn unix(path: &Path) -> Lmtp<UnixStream> {
        let stream = match UnixStream::connect(path) {
            Ok(s) => s,
            Err(e) => panic!("connect to LMTP at {}: {e}", path.display()),
        };
        let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
        Lmtp::greeted(stream)
    }
}

impl<S: Read + Write> Lmtp<S> {
    fn greeted(stream: S) -> Lmtp<S> {
        let mut l = Lmtp {
            reader: BufReader::new(stream),
        };
        l.expect("220");
        l.send(b"LHLO client.test.example\r\n");
        l.expect("250");
        l
    }

    fn send(&mut self, bytes: &[u8]) {
        if let Err(e) = self.reader.get_mut().write_all(bytes) {
            panic!("LMTP write: {e}");
        }
    }

    /// One reply, its lines joined with `\n`.
    fn reply(&mut self) -> String {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if let Err(e) = self.reader.read_line(&mut line) {
                panic!("LMTP read: {e}");
            }
            let Some(text) = line.strip_suffix("\r\n") else {
                panic!("LMTP reply line not ended by CRLF: {line:?}");
            };
            let more = text.as_bytes().get(3) == Some(&b'-');
            lines.push(text.to_string());
            if !more {
                return lines.join("\n");
            }
        }
    }

    fn expect(&mut self, code: &str) -> String {
        let r = self.reply();
        assert!(r.starts_with(code), "LMTP: expected {code}, got {r:?}");
        r
    }

    /// Sends `message` (CRLF lines, ending in CRLF) from `from` to `rcpts`,
    /// all of which must be accepted at RCPT; returns the reply for each
    /// recipient after the data (RFC 2033 4.2), in order.
    pub fn deliver(mut self, from: &str, rcpts: &[&str], message: &[u8]) -> Vec<String> {
        self.send(format!("MAIL FROM:<{from}>\r\n").as_bytes());
        self.expect("250");
        for r in rcpts {
            self.send(format!("RCPT TO:<{r}>\r\n").as_bytes());
            self.expect("250");
        }
        self.send(b"DATA\r\n");
        self.expect("354");
        self.send(&dot_stuff(message));
        self.send(b".\r\n");
        let replies = rcpts.iter().map(|_| self.reply()).collect();
        self.send(b"QUIT\r\n");
        self.expect("221");
        replies
    }

    /// The reply to `RCPT TO:<rcpt>` after a `MAIL FROM:<>`.
    pub fn rcpt_reply(mut self, rcpt: &str) -> String {
        self.send(b"MAIL FROM:<>\r\n");
        self.expect("250");
        self.send(format!("RCPT TO:<{rcpt}>\r\n").as_bytes());
        self.reply()
    }
}

/// RFC 5321 4.5.2: a line that begins with a dot gets another one.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 16);
    let mut at_line_start = true;
    for &b in message {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    out
}
