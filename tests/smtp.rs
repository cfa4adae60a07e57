//! The daemon over real TCP: `petrel run` with a temporary config on a free
//! port, spoken to in raw SMTP the way a client would, and the spool it
//! leaves behind read back with `petrel spool inspect`.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Generous: the machine may be busy building or running other tests.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const START_TIMEOUT: Duration = Duration::from_secs(30);
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `petrel run`; killed on drop so a failed test leaves nothing.
struct Daemon {
    child: Option<Child>,
    port: u16,
    stderr_path: PathBuf,
}

impl Daemon {
    /// Starts the daemon on a free port with `extra` appended to a config
    /// whose spool is `spool`. `listener` is the body of the `[[listener]]`
    /// table after its address.
    fn start(dir: &Path, spool: &Path, server: &str, listener: &str, extra: &str) -> Daemon {
        let mut last_error = String::new();
        for attempt in 0..5 {
            let port = free_port();
            let config = format!(
                "[server]\nhostname = \"mx.test.example\"\n{server}\n\
                 [spool]\npath = \"{}\"\nsegment_size = 1048576\nmin_free_space = 0\n\n\
                 [[listener]]\naddress = \"127.0.0.1:{port}\"\n{listener}\n\n{extra}\n",
                spool.display()
            );
            let config_path = dir.join(format!("petrel-{port}-{attempt}.toml"));
            std::fs::write(&config_path, config).expect("write config");
            let stderr_path = dir.join(format!("petrel-{port}-{attempt}.stderr"));
            let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
            let child = Command::new(env!("CARGO_BIN_EXE_petrel"))
                .arg("run")
                .arg("--config")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .expect("spawn petrel");
            let mut daemon = Daemon {
                child: Some(child),
                port,
                stderr_path,
            };
            let deadline = Instant::now() + START_TIMEOUT;
            loop {
                if let Some(status) = daemon.try_wait() {
                    last_error = format!("exited early ({status}): {}", daemon.stderr());
                    break;
                }
                if daemon.probe() {
                    return daemon;
                }
                if Instant::now() > deadline {
                    panic!("petrel did not accept on {port}: {}", daemon.stderr());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            // Most likely someone else took the port: try another one.
        }
        panic!("petrel would not start: {last_error}");
    }

    /// Whether a full session (greeting, QUIT, close) works on the port.
    fn probe(&self) -> bool {
        let Ok(stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
        let mut c = Client::from_stream(stream);
        let Some(greeting) = c.try_reply() else {
            return false;
        };
        if !greeting.starts_with("220") {
            return false;
        }
        c.send("QUIT\r\n");
        let _ = c.try_reply();
        true
    }

    fn connect(&self) -> Client {
        Client::connect(self.port)
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("try_wait"))
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// SIGTERM, then wait for the exit status.
    fn terminate(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("child");
        let pid = child.id() as libc::pid_t;
        // SAFETY: the pid is our own child, not yet waited for.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill SIGTERM");
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("petrel did not exit after SIGTERM: {}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, and the exit must be clean.
    fn stop(self) {
        let stderr_path = self.stderr_path.clone();
        let status = self.terminate();
        let stderr = std::fs::read_to_string(stderr_path).unwrap_or_default();
        assert_eq!(status.code(), Some(0), "exit after SIGTERM: {stderr}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// An SMTP client on a blocking socket.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
        Client::from_stream(stream)
    }

    fn from_stream(stream: TcpStream) -> Client {
        let writer = stream.try_clone().expect("clone stream");
        Client {
            reader: BufReader::new(stream),
            writer,
        }
    }

    fn send(&mut self, data: &str) {
        self.send_bytes(data.as_bytes());
    }

    fn send_bytes(&mut self, data: &[u8]) {
        self.writer.write_all(data).expect("write");
    }

    /// One complete reply, multi-line ones joined with `\n`, or `None` on
    /// EOF, error or a malformed line.
    fn try_reply(&mut self) -> Option<String> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            let line = line.strip_suffix("\r\n")?.to_string();
            if line.len() < 3 {
                return None;
            }
            let last = line.len() == 3 || line.as_bytes()[3] == b' ';
            lines.push(line);
            if last {
                return Some(lines.join("\n"));
            }
        }
    }

    fn reply(&mut self) -> String {
        match self.try_reply() {
            Some(r) => r,
            None => panic!("no complete reply from the server"),
        }
    }

    /// Reads a reply and checks its beginning.
    fn expect(&mut self, prefix: &str) -> String {
        let r = self.reply();
        assert!(r.starts_with(prefix), "expected {prefix:?}, got {r:?}");
        r
    }

    /// Sends a command line and checks the reply.
    fn cmd(&mut self, line: &str, prefix: &str) -> String {
        self.send(&format!("{line}\r\n"));
        self.expect(prefix)
    }

    /// Greeting and EHLO.
    fn hello(&mut self) {
        self.expect("220");
        let ehlo = self.cmd("EHLO client.test.example", "250");
        assert!(ehlo.contains("PIPELINING"), "{ehlo}");
    }

    /// Waits for the server to close the connection (EOF).
    fn expect_closed(&mut self) {
        let mut rest = String::new();
        match self.reader.read_line(&mut rest) {
            Ok(0) => {}
            Ok(_) => panic!("expected the connection closed, got {rest:?}"),
            Err(e) => panic!("expected the connection closed: {e}"),
        }
    }
}

/// The queue id in `250 2.0.0 Ok: queued as <id>`, checked for its form.
fn queued_id(reply: &str) -> String {
    let Some(id) = reply.strip_prefix("250 2.0.0 Ok: queued as ") else {
        panic!("not a queued reply: {reply:?}");
    };
    assert_eq!(id.len(), 16, "{reply:?}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{reply:?}");
    id.to_string()
}

/// One whole transaction, one command at a time; returns the queue id.
fn send_message(c: &mut Client, rcpts: &[&str], body: &str) -> String {
    c.cmd("MAIL FROM:<sender@client.test.example>", "250 2.1.0");
    for r in rcpts {
        c.cmd(&format!("RCPT TO:<{r}>"), "250 2.1.5");
    }
    c.cmd("DATA", "354");
    c.send(body);
    c.send(".\r\n");
    queued_id(&c.reply())
}

fn inspect(spool: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_petrel"))
        .args(["spool", "inspect"])
        .arg(spool)
        .output()
        .expect("run spool inspect");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "spool inspect failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn total_queued(report: &str) -> usize {
    let Some(n) = report
        .lines()
        .find_map(|l| l.strip_prefix("total queued messages: "))
    else {
        panic!("no total in {report}");
    };
    n.trim().parse().expect("a number")
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

const BODY: &str = "From: a@client.test.example\r\nSubject: hi\r\n\r\nhello\r\n";

#[test]
fn accepted_mail_is_durable_and_survives_a_restart() {
    let dir = tempdir();
    let spool = dir.path().join("spool");
    let d = Daemon::start(dir.path(), &spool, "shards = 1", "", "");
    let mut c = d.connect();
    c.hello();
    let first = send_message(
        &mut c,
        &["one@remote.test.example", "two@remote.test.example"],
        BODY,
    );
    c.cmd("QUIT", "221");
    d.stop();

    let report = inspect(&spool);
    assert_eq!(total_queued(&report), 1, "{report}");
    assert!(
        report.contains("messages: 1 live (2 recipients pending)"),
        "{report}"
    );

    let d = Daemon::start(dir.path(), &spool, "shards = 1", "", "");
    let mut c = d.connect();
    c.hello();
    let second = send_message(&mut c, &["three@remote.test.example"], BODY);
    assert_ne!(first, second);
    c.cmd("QUIT", "221");
    d.stop();

    let report = inspect(&spool);
    assert_eq!(total_queued(&report), 2, "{report}");
    assert!(
        report.contains("messages: 2 live (3 recipients pending)"),
        "{report}"
    );
}

#[test]
fn pipelined_commands_and_many_messages_in_one_session() {
    let dir = tempdir();
    let spool = dir.path().join("spool");
    let d = Daemon::start(dir.path(), &spool, "shards = 1", "", "");
    let mut c = d.connect();
    c.hello();

    // One write, four replies in order.
    c.send(
        "MAIL FROM:<s@client.test.example>\r\nRCPT TO:<a@remote.test.example>\r\n\
         RCPT TO:<b@remote.test.example>\r\nDATA\r\n",
    );
    c.expect("250 2.1.0");
    c.expect("250 2.1.5");
    c.expect("250 2.1.5");
    c.expect("354");
    // A dot-stuffed line does not end the message.
    c.send("Subject: dots\r\n\r\n..x\r\n.\r\n");
    let mut ids = HashSet::new();
    ids.insert(queued_id(&c.reply()));

    // Ten more, each pipelined whole; RSET between some.
    for i in 0..10 {
        if i % 3 == 1 {
            c.send("MAIL FROM:<abandoned@client.test.example>\r\nRSET\r\n");
            c.expect("250 2.1.0");
            c.expect("250");
        }
        c.send(&format!(
            "MAIL FROM:<s@client.test.example>\r\nRCPT TO:<r{i}@remote.test.example>\r\n\
             DATA\r\nSubject: {i}\r\n\r\nbody {i}\r\n.\r\n"
        ));
        c.expect("250 2.1.0");
        c.expect("250 2.1.5");
        c.expect("354");
        let id = queued_id(&c.reply());
        assert!(ids.insert(id.clone()), "id {id} given twice");
    }
    assert_eq!(ids.len(), 11);
    c.cmd("QUIT", "221");
    d.stop();
    let report = inspect(&spool);
    assert_eq!(total_queued(&report), 11, "{report}");
    assert!(report.contains("(12 recipients pending)"), "{report}");
}

#[test]
fn relay_is_allowed_only_from_relay_networks() {
    let dir = tempdir();
    // Default networks include loopback.
    let d = Daemon::start(dir.path(), &dir.path().join("a"), "shards = 1", "", "");
    let mut c = d.connect();
    c.hello();
    c.cmd("MAIL FROM:<s@client.test.example>", "250 2.1.0");
    c.cmd("RCPT TO:<u@remote.test.example>", "250 2.1.5");
    c.cmd("QUIT", "221");
    d.stop();

    let d = Daemon::start(
        dir.path(),
        &dir.path().join("b"),
        "shards = 1",
        "",
        "[relay]\nnetworks = [\"10.0.0.0/8\"]\n",
    );
    let mut c = d.connect();
    c.hello();
    c.cmd("MAIL FROM:<s@client.test.example>", "250 2.1.0");
    c.cmd("RCPT TO:<u@remote.test.example>", "554 5.7.1");
    // With no accepted recipient there is nothing to send.
    c.cmd("DATA", "5");
    c.cmd("QUIT", "221");
    d.stop();
}

#[test]
fn limits_on_lines_recipients_size_and_bare_line_endings() {
    let dir = tempdir();
    let spool = dir.path().join("spool");
    let d = Daemon::start(
        dir.path(),
        &spool,
        "shards = 1",
        "max_message_size = 4096\nmax_recipients = 100\nmax_errors = 100",
        "",
    );
    let mut c = d.connect();
    c.hello();
    let ehlo = c.cmd("EHLO client.test.example", "250");
    assert!(ehlo.contains("SIZE 4096"), "{ehlo}");

    // A command line beyond 512 octets.
    let long = format!("NOOP {}", "x".repeat(600));
    c.cmd(&long, "500 5.5.2");
    c.cmd("NOOP", "250");

    // 100 recipients are fine, the 101st is not.
    c.cmd("MAIL FROM:<s@client.test.example>", "250 2.1.0");
    let mut rcpts = String::new();
    for i in 0..101 {
        rcpts.push_str(&format!("RCPT TO:<r{i}@remote.test.example>\r\n"));
    }
    c.send(&rcpts);
    for i in 0..100 {
        let r = c.reply();
        assert!(r.starts_with("250 2.1.5"), "rcpt {i}: {r}");
    }
    c.expect("452 4.5.3");
    c.cmd("DATA", "354");
    c.send(BODY);
    c.send(".\r\n");
    queued_id(&c.reply());

    // Too big: refused at the end of data, and the session goes on.
    c.cmd("MAIL FROM:<s@client.test.example>", "250 2.1.0");
    c.cmd("RCPT TO:<u@remote.test.example>", "250 2.1.5");
    c.cmd("DATA", "354");
    let line = format!("{}\r\n", "y".repeat(70));
    for _ in 0..100 {
        c.send(&line);
    }
    c.send(".\r\n");
    c.expect("552 5.3.4");
    c.cmd("NOOP", "250");

    // A bare LF in the body.
    c.cmd("MAIL FROM:<s@client.test.example>", "250 2.1.0");
    c.cmd("RCPT TO:<u@remote.test.example>", "250 2.1.5");
    c.cmd("DATA", "354");
    c.send("Subject: lf\r\n\r\na\nb\r\n.\r\n");
    c.expect("550 5.5.2");
    c.cmd("NOOP", "250");

    // Smuggling: `\n.\n` does not end the data, so the MAIL after it is
    // body, not a command. One message ends at the real `\r\n.\r\n`; it
    // carries bare LFs, so it is refused as a whole.
    c.cmd("MAIL FROM:<s@client.test.example>", "250 2.1.0");
    c.cmd("RCPT TO:<u@remote.test.example>", "250 2.1.5");
    c.cmd("DATA", "354");
    c.send(
        "Subject: smuggle\r\n\r\nhello\n.\nMAIL FROM:<x@y>\r\nRCPT TO:<v@remote.test.example>\r\n\
         DATA\r\nevil\r\n.\r\n",
    );
    c.expect("550 5.5.2");
    // The next reply is the NOOP's: nothing answered the smuggled commands.
    c.cmd("NOOP", "250 2.0.0");
    // And no transaction is open: RCPT needs a new MAIL.
    c.cmd("RCPT TO:<u@remote.test.example>", "503");
    c.cmd("QUIT", "221");
    d.stop();

    // Only the one with 100 recipients is queued (a smuggled one would be
    // a second message).
    let report = inspect(&spool);
    assert_eq!(total_queued(&report), 1, "{report}");
}

#[test]
fn connections_per_ip_are_capped_outside_relay_networks() {
    let dir = tempdir();
    let d = Daemon::start(
        dir.path(),
        &dir.path().join("spool"),
        "shards = 1",
        "max_connections_per_ip = 2",
        "[relay]\nnetworks = [\"10.0.0.0/8\"]\n",
    );
    // The startup probe's session may still be closing on the server.
    std::thread::sleep(Duration::from_millis(300));
    let mut a = d.connect();
    a.expect("220");
    let mut b = d.connect();
    b.expect("220");
    let mut c = d.connect();
    c.expect("421 4.7.0");
    c.expect_closed();
    // Closing one frees its slot.
    a.cmd("QUIT", "221");
    a.expect_closed();
    drop(a);
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let mut e = d.connect();
        let r = e.reply();
        if r.starts_with("220") {
            break;
        }
        assert!(r.starts_with("421 4.7.0"), "{r}");
        assert!(Instant::now() < deadline, "slot never freed");
        std::thread::sleep(Duration::from_millis(50));
    }
    b.cmd("NOOP", "250");
    drop(b);
    d.stop();
}

#[test]
fn two_shards_take_concurrent_mail() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        println!("only {cpus} CPU: two_shards_take_concurrent_mail skipped");
        return;
    }
    let dir = tempdir();
    let spool = dir.path().join("spool");
    let d = Daemon::start(dir.path(), &spool, "shards = 2", "", "");
    let port = d.port;
    let threads: Vec<_> = (0..20)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = Client::connect(port);
                c.hello();
                let mut ids = Vec::new();
                for m in 0..5 {
                    let body = format!("Subject: {t}/{m}\r\n\r\nfrom thread {t}\r\n");
                    ids.push(send_message(&mut c, &["u@remote.test.example"], &body));
                }
                c.cmd("QUIT", "221");
                ids
            })
        })
        .collect();
    let mut ids = HashSet::new();
    for t in threads {
        for id in t.join().expect("client thread") {
            assert!(ids.insert(id.clone()), "id {id} given twice");
        }
    }
    assert_eq!(ids.len(), 100);
    d.stop();
    let report = inspect(&spool);
    assert_eq!(total_queued(&report), 100, "{report}");
    assert!(report.contains("shard 1"), "{report}");
}
