//! Shared by the SMTP, TLS and interop tests: the daemon started on free ports
//! with a temporary config, a blocking SMTP client that can switch to TLS,
//! a self-signed certificate made in the test, a users file made with
//! `petrel passwd`, and the spool read back with `petrel spool inspect`.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// Generous: the machine may be busy building or running other tests.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// A self-signed certificate for `localhost` and `mta.example.test`, its
/// PEM files on disk, and client configs that trust it.
pub struct TestCert {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    roots: Arc<RootCertStore>,
}

impl TestCert {
    pub fn new(dir: &Path) -> TestCert {
        let names = vec!["localhost".to_string(), "mta.example.test".to_string()];
        let certified = match rcgen::generate_simple_self_signed(names) {
            Ok(c) => c,
            Err(e) => panic!("rcgen: {e}"),
        };
        let cert_path = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        write(&cert_path, certified.cert.pem().as_bytes());
        write(&key_path, certified.key_pair.serialize_pem().as_bytes());
        let mut roots = RootCertStore::empty();
        if let Err(e) = roots.add(certified.cert.der().clone()) {
            panic!("root store: {e}");
        }
        TestCert {
            cert_path,
            key_path,
            roots: Arc::new(roots),
        }
    }

    /// The `[[listener]]` lines naming the certificate and key.
    pub fn listener_lines(&self) -> String {
        format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
            self.cert_path.display(),
            self.key_path.display()
        )
    }

    /// A client config trusting only this certificate, offering `versions`.
    pub fn client_config(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config =
            match ClientConfig::builder_with_provider(provider).with_protocol_versions(versions) {
                Ok(b) => b
                    .with_root_certificates(self.roots.clone())
                    .with_no_client_auth(),
                Err(e) => panic!("client config: {e}"),
            };
        Arc::new(config)
    }

    /// TLS 1.3 and 1.2, whichever the server prefers.
    pub fn any_version(&self) -> Arc<ClientConfig> {
        self.client_config(&[&rustls::version::TLS13, &rustls::version::TLS12])
    }
}

pub fn write(path: &Path, data: &[u8]) {
    if let Err(e) = std::fs::write(path, data) {
        panic!("{}: {e}", path.display());
    }
}

/// A users file with `user` and `password`, made by `petrel passwd`.
pub fn users_file(dir: &Path, user: &str, password: &str) -> PathBuf {
    let path = dir.join("users");
    let mut child = match Command::new(env!("CARGO_BIN_EXE_petrel"))
        .arg("passwd")
        .arg(user)
        .arg("--file")
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!("cannot run petrel passwd: {e}"),
    };
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(format!("{password}\n").as_bytes());
    }
    let out = match child.wait_with_output() {
        Ok(out) => out,
        Err(e) => panic!("waiting for petrel passwd: {e}"),
    };
    assert!(
        out.status.success(),
        "petrel passwd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// One `[[listener]]` of a daemon: the lines after its address, and
/// whether it speaks TLS from the first byte.
pub struct Listener {
    pub lines: String,
    pub implicit_tls: bool,
}

impl Listener {
    pub fn plain(lines: &str) -> Listener {
        Listener {
            lines: lines.to_string(),
            implicit_tls: false,
        }
    }

    pub fn implicit(lines: &str) -> Listener {
        Listener {
            lines: format!("implicit_tls = true\n{lines}"),
            implicit_tls: true,
        }
    }
}

std::thread_local! {
    /// `[spool] segment_size` of the daemons this thread starts.
    static SEGMENT_SIZE: std::cell::Cell<u64> = const { std::cell::Cell::new(1 << 20) };
}

/// Runs `start` with the daemons it starts given segments of `size`
/// bytes (1 MiB otherwise): for messages larger than that.
pub fn with_segment_size<R>(size: u64, start: impl FnOnce() -> R) -> R {
    let before = SEGMENT_SIZE.with(|s| s.replace(size));
    let out = start();
    SEGMENT_SIZE.with(|s| s.set(before));
    out
}

/// A running `petrel run`; killed on drop so a failed test leaves nothing.
pub struct Daemon {
    child: Option<Child>,
    /// One port per listener, in the order given.
    pub ports: Vec<u16>,
    stderr_path: PathBuf,
    /// The file it was started with (and reloads from).
    pub config_path: PathBuf,
}

impl Daemon {
    /// Starts the daemon with one `[[listener]]` per entry of `listeners`,
    /// each on a free port, `server` in `[server]` and `extra` appended.
    /// Delivery is paused unless `extra` has a `[delivery]` table.
    /// `tls` is needed to probe implicit-TLS listeners.
    pub fn start(
        dir: &Path,
        spool: &Path,
        server: &str,
        listeners: &[Listener],
        extra: &str,
        tls: Option<&TestCert>,
    ) -> Daemon {
        let mut last_error = String::new();
        for attempt in 0..5 {
            let ports: Vec<u16> = listeners.iter().map(|_| free_port()).collect();
            let mut daemon =
                Daemon::spawn(dir, spool, server, listeners, extra, ports, attempt, &[]);
            let deadline = Instant::now() + START_TIMEOUT;
            let mut ready = vec![false; listeners.len()];
            loop {
                if let Some(status) = daemon.try_wait() {
                    last_error = format!("exited early ({status}): {}", daemon.stderr());
                    break;
                }
                for (i, l) in listeners.iter().enumerate() {
                    if !ready[i] {
                        ready[i] = if l.implicit_tls {
                            let Some(cert) = tls else {
                                panic!("an implicit-TLS listener needs the test certificate");
                            };
                            probe_tls(daemon.ports[i], cert)
                        } else {
                            probe(daemon.ports[i])
                        };
                    }
                }
                if ready.iter().all(|r| *r) {
                    return daemon;
                }
                if Instant::now() > deadline {
                    panic!(
                        "petrel did not accept on {:?}: {}",
                        daemon.ports,
                        daemon.stderr()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            // Most likely someone else took a port: try other ones.
        }
        panic!("petrel would not start: {last_error}");
    }

    /// Writes the config for `listeners` on `ports` (as [`Daemon::start`]
    /// describes) and runs `petrel run` with it and with `env` added, without
    /// waiting for it to accept. The service manager's variables of the test's
    /// own environment are not passed on.
    #[allow(clippy::too_many_arguments)]
    pub fn spawn(
        dir: &Path,
        spool: &Path,
        server: &str,
        listeners: &[Listener],
        extra: &str,
        ports: Vec<u16>,
        attempt: usize,
        env: &[(&str, &OsStr)],
    ) -> Daemon {
        let mut config = format!(
            "[server]\nhostname = \"mx.test.example\"\n{server}\n\n\
             [spool]\npath = \"{}\"\nsegment_size = {}\nmin_free_space = 0\n\n",
            spool.display(),
            SEGMENT_SIZE.with(std::cell::Cell::get)
        );
        for (l, port) in listeners.iter().zip(&ports) {
            config.push_str(&format!(
                "[[listener]]\naddress = \"127.0.0.1:{port}\"\n{}\n\n",
                l.lines
            ));
        }
        config.push_str(extra);
        config.push('\n');
        // Many daemons run at once: none serves the admin endpoint on its
        // fixed default port unless the test asks.
        if !extra.contains("[admin]") {
            config.push_str("[admin]\naddress = \"\"\n");
        }
        // Tests that do not deliver keep what they send in the spool.
        if !extra.contains("[delivery]") {
            config.push_str("[delivery]\npaused = true\n");
        }
        let config_path = dir.join(format!("petrel-{}-{attempt}.toml", ports[0]));
        write(&config_path, config.as_bytes());
        let stderr_path = dir.join(format!("petrel-{}-{attempt}.stderr", ports[0]));
        let stderr = match std::fs::File::create(&stderr_path) {
            Ok(f) => f,
            Err(e) => panic!("{}: {e}", stderr_path.display()),
        };
        let mut command = Command::new(env!("CARGO_BIN_EXE_petrel"));
        command
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        for var in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            command.env_remove(var);
        }
        command.envs(env.iter().copied());
        let child = match command.spawn() {
            Ok(c) => c,
            Err(e) => panic!("spawn petrel: {e}"),
        };
        Daemon {
            child: Some(child),
            ports,
            stderr_path,
            config_path,
        }
    }

    /// Starts the daemon with a single plaintext listener whose lines
    /// after the address are `listener`.
    pub fn start_plain(
        dir: &Path,
        spool: &Path,
        server: &str,
        listener: &str,
        extra: &str,
    ) -> Daemon {
        Daemon::start(
            dir,
            spool,
            server,
            &[Listener::plain(listener)],
            extra,
            None,
        )
    }

    pub fn port(&self) -> u16 {
        self.ports[0]
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.port())
    }

    /// Sends the daemon `signal` (a name `kill` knows, such as "HUP").
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} {pid}");
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(status) => status,
            Err(e) => panic!("try_wait: {e}"),
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// SIGTERM, then wait for the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        let Some(mut child) = self.child.take() else {
            panic!("no child");
        };
        let pid = child.id() as libc::pid_t;
        // SAFETY: the pid is our own child, not yet waited for.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill SIGTERM");
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) => {}
                Err(e) => panic!("try_wait: {e}"),
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
    pub fn stop(self) {
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

pub fn free_port() -> u16 {
    let l = match TcpListener::bind("127.0.0.1:0") {
        Ok(l) => l,
        Err(e) => panic!("bind 127.0.0.1:0: {e}"),
    };
    match l.local_addr() {
        Ok(a) => a.port(),
        Err(e) => panic!("local_addr: {e}"),
    }
}

/// Whether a full plaintext session (greeting, QUIT) works on the port.
fn probe(port: u16) -> bool {
    let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let mut c = Client::from_conn(Conn::Plain(stream));
    quit_after_greeting(&mut c)
}

/// Whether a TLS handshake and a session over it work on the port.
fn probe_tls(port: u16, cert: &TestCert) -> bool {
    let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let Ok(conn) = tls_handshake(stream, cert.any_version()) else {
        return false;
    };
    let mut c = Client::from_conn(Conn::Tls(Box::new(conn)));
    quit_after_greeting(&mut c)
}

fn quit_after_greeting(c: &mut Client) -> bool {
    match c.try_reply() {
        Some(greeting) if greeting.starts_with("220") => {}
        _ => return false,
    }
    if c.try_send(b"QUIT\r\n").is_err() {
        return false;
    }
    let _ = c.try_reply();
    true
}

/// A client-side TLS handshake for "localhost", run to completion.
pub fn tls_handshake(
    mut sock: TcpStream,
    config: Arc<ClientConfig>,
) -> Result<StreamOwned<ClientConnection, TcpStream>, String> {
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let mut conn = ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).map_err(|e| e.to_string())?;
    }
    // Send anything still queued (e.g. the client Finished).
    while conn.wants_write() {
        conn.complete_io(&mut sock).map_err(|e| e.to_string())?;
    }
    Ok(StreamOwned::new(conn, sock))
}

/// A connection, plaintext or TLS.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// An SMTP client on a blocking socket.
pub struct Client {
    reader: BufReader<Conn>,
}

impl Client {
    pub fn connect(port: u16) -> Client {
        Client::from_conn(Conn::Plain(tcp(port)))
    }

    /// Connects and runs the TLS handshake first (implicit TLS).
    pub fn connect_tls(port: u16, config: Arc<ClientConfig>) -> Client {
        match tls_handshake(tcp(port), config) {
            Ok(s) => Client::from_conn(Conn::Tls(Box::new(s))),
            Err(e) => panic!("TLS handshake on {port}: {e}"),
        }
    }

    pub fn from_conn(conn: Conn) -> Client {
        Client {
            reader: BufReader::new(conn),
        }
    }

    /// The TLS session, if there is one.
    pub fn tls(&self) -> Option<&ClientConnection> {
        match self.reader.get_ref() {
            Conn::Plain(_) => None,
            Conn::Tls(s) => Some(&s.conn),
        }
    }

    /// After `220` to STARTTLS: the handshake, on the same socket. Nothing
    /// may have arrived after the 220.
    pub fn upgrade(self, config: Arc<ClientConfig>) -> Client {
        assert!(
            self.reader.buffer().is_empty(),
            "plaintext after the STARTTLS reply: {:?}",
            String::from_utf8_lossy(self.reader.buffer())
        );
        let Conn::Plain(sock) = self.reader.into_inner() else {
            panic!("TLS already active");
        };
        match tls_handshake(sock, config) {
            Ok(s) => Client::from_conn(Conn::Tls(Box::new(s))),
            Err(e) => panic!("TLS handshake after STARTTLS: {e}"),
        }
    }

    fn try_send(&mut self, data: &[u8]) -> std::io::Result<()> {
        let w = self.reader.get_mut();
        w.write_all(data)?;
        w.flush()
    }

    pub fn send(&mut self, data: &str) {
        self.send_bytes(data.as_bytes());
    }

    pub fn send_bytes(&mut self, data: &[u8]) {
        if let Err(e) = self.try_send(data) {
            panic!("write: {e}");
        }
    }

    /// One complete reply, multi-line ones joined with `\n`, or `None` on
    /// EOF, error or a malformed line.
    pub fn try_reply(&mut self) -> Option<String> {
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

    pub fn reply(&mut self) -> String {
        match self.try_reply() {
            Some(r) => r,
            None => panic!("no complete reply from the server"),
        }
    }

    /// Reads a reply and checks its beginning.
    pub fn expect(&mut self, prefix: &str) -> String {
        let r = self.reply();
        assert!(r.starts_with(prefix), "expected {prefix:?}, got {r:?}");
        r
    }

    /// Sends a command line and checks the reply.
    pub fn cmd(&mut self, line: &str, prefix: &str) -> String {
        self.send(&format!("{line}\r\n"));
        self.expect(prefix)
    }

    /// Greeting and EHLO, which must offer PIPELINING.
    pub fn hello(&mut self) {
        self.expect("220");
        let ehlo = self.cmd("EHLO client.test.example", "250");
        assert!(ehlo.contains("PIPELINING"), "{ehlo}");
    }

    /// True if no reply byte has arrived yet (looked at without waiting).
    pub fn nothing_pending(&mut self) -> bool {
        if !self.reader.buffer().is_empty() {
            return false;
        }
        let sock = match self.reader.get_ref() {
            Conn::Plain(s) => s,
            Conn::Tls(s) => &s.sock,
        };
        sock.set_nonblocking(true).expect("nonblocking");
        let mut byte = [0u8; 1];
        let read = self.reader.get_mut().read(&mut byte);
        matches!(read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// Waits for the server to close the connection (EOF).
    pub fn expect_closed(&mut self) {
        let mut rest = String::new();
        match self.reader.read_line(&mut rest) {
            Ok(0) => {}
            Ok(_) => panic!("expected the connection closed, got {rest:?}"),
            Err(e) => panic!("expected the connection closed: {e}"),
        }
    }
}

fn tcp(port: u16) -> TcpStream {
    let stream = match TcpStream::connect(("127.0.0.1", port)) {
        Ok(s) => s,
        Err(e) => panic!("connect to {port}: {e}"),
    };
    for r in [
        stream.set_read_timeout(Some(IO_TIMEOUT)),
        stream.set_write_timeout(Some(IO_TIMEOUT)),
        // Small writes go out as they are made, as a trickling client's do.
        stream.set_nodelay(true),
    ] {
        if let Err(e) = r {
            panic!("socket timeout: {e}");
        }
    }
    stream
}

/// Whether an EHLO reply lists `keyword` as one of its lines.
pub fn advertises(ehlo: &str, keyword: &str) -> bool {
    ehlo.lines()
        .skip(1)
        .any(|l| l.get(4..).is_some_and(|k| k == keyword))
}

/// The queue id in `250 2.0.0 Ok: queued as <id>`, checked for its form.
/// Greeting, EHLO, and a transaction from a@ to b@example.test begun.
pub fn begin_transaction(c: &mut Client) {
    c.hello();
    c.cmd("MAIL FROM:<a@example.test>", "250");
    c.cmd("RCPT TO:<b@example.test>", "250");
}

pub fn queued_id(reply: &str) -> String {
    let Some(id) = reply.strip_prefix("250 2.0.0 Ok: queued as ") else {
        panic!("not a queued reply: {reply:?}");
    };
    assert_eq!(id.len(), 16, "{reply:?}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{reply:?}");
    id.to_string()
}

/// One whole transaction, one command at a time; returns the queue id.
pub fn send_message(c: &mut Client, rcpts: &[&str], body: &str) -> String {
    c.cmd("MAIL FROM:<sender@client.test.example>", "250 2.1.0");
    for r in rcpts {
        c.cmd(&format!("RCPT TO:<{r}>"), "250 2.1.5");
    }
    c.cmd("DATA", "354");
    c.send(body);
    c.send(".\r\n");
    queued_id(&c.reply())
}

pub fn inspect(spool: &Path) -> String {
    let out = match Command::new(env!("CARGO_BIN_EXE_petrel"))
        .args(["spool", "inspect"])
        .arg(spool)
        .output()
    {
        Ok(out) => out,
        Err(e) => panic!("run spool inspect: {e}"),
    };
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "spool inspect failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

pub fn total_queued(report: &str) -> usize {
    let Some(n) = report
        .lines()
        .find_map(|l| l.strip_prefix("total queued messages: "))
    else {
        panic!("no total in {report}");
    };
    match n.trim().parse() {
        Ok(n) => n,
        Err(e) => panic!("{n:?}: {e}"),
    }
}

/// Live messages and pending recipients summed over the shards'
/// `messages: N live (M recipients pending)` lines.
pub fn live_and_pending(report: &str) -> (usize, usize) {
    let (mut live, mut pending) = (0, 0);
    for line in report.lines() {
        let Some(rest) = line.trim().strip_prefix("messages: ") else {
            continue;
        };
        let Some((n, rest)) = rest.split_once(" live (") else {
            panic!("unexpected line {line:?}");
        };
        let Some((m, _)) = rest.split_once(" recipients pending)") else {
            panic!("unexpected line {line:?}");
        };
        live += n
            .parse::<usize>()
            .unwrap_or_else(|e| panic!("{line:?}: {e}"));
        pending += m
            .parse::<usize>()
            .unwrap_or_else(|e| panic!("{line:?}: {e}"));
    }
    (live, pending)
}

/// The bytes of every `*.seg` file under `<spool>/shard-0/`.
pub fn segment_bytes(spool: &Path) -> Vec<u8> {
    let dir = spool.join("shard-0");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) => panic!("{}: {e}", dir.display()),
    };
    let mut all = Vec::new();
    let mut found = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "seg") {
            found += 1;
            match std::fs::read(&path) {
                Ok(bytes) => all.extend_from_slice(&bytes),
                Err(e) => panic!("{}: {e}", path.display()),
            }
        }
    }
    assert!(found > 0, "no *.seg file in {}", dir.display());
    all
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

pub fn tempdir() -> tempfile::TempDir {
    match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    }
}

/// A port free on every one of the 127.0.0.`hosts` addresses, so all the
/// MX hosts of a test (and those left down) share `[delivery] port`.
///
/// Taken below the kernel's ephemeral range (32768 and up), which bind(0)
/// and outgoing connections draw from: between this check and the test
/// servers binding it, nothing else can be handed the port. Each call in
/// this process tries ports no earlier call tried.
pub fn common_port(hosts: &[u8]) -> u16 {
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = std::process::id().wrapping_mul(7919) % SPAN;
    for _ in 0..500 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + (base + n) % SPAN) as u16;
        let free = hosts
            .iter()
            .map(|&h| TcpListener::bind((Ipv4Addr::new(127, 0, 0, h), port)))
            .collect::<Result<Vec<_>, _>>()
            .is_ok();
        if free {
            return port;
        }
    }
    panic!("no port free on all of 127.0.0.{hosts:?}");
}

/// The queued message count from `petrel spool inspect`, or `None` if the
/// report could not be had (a segment deleted while it was being read).
pub fn queued(spool: &Path) -> Option<usize> {
    let out = Command::new(env!("CARGO_BIN_EXE_petrel"))
        .args(["spool", "inspect"])
        .arg(spool)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !text.contains("total queued messages: ") {
        return None;
    }
    Some(total_queued(&text))
}

/// Waits until the spool holds no queued message; panics with the last
/// count and the daemon's log if it does not within `timeout`.
pub fn wait_queue_empty(d: &Daemon, spool: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        let n = queued(spool);
        if n == Some(0) {
            return;
        }
        if n.is_some() {
            last = n;
        }
        if Instant::now() > deadline {
            panic!(
                "queue not empty after {timeout:?} (last count {last:?}); daemon log:\n{}",
                d.stderr()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the daemon's log contains `needle`.
pub fn wait_log(d: &Daemon, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if d.stderr().contains(needle) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
