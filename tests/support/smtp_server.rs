//! A scripted SMTP server for tests: a stand-in for a remote MX host.
//!
//! Listens on a 127.0.0.x address with std sockets and one thread per
//! session (so it needs no executor) and behaves as a [`Script`] says:
//! fixed replies per command or per recipient, dropped connections, slow
//! replies, missing extensions, BDAT. It is strict where RFC 5321 is (only
//! CRLF ends a line, commands in sequence, parameters only for extensions
//! it advertised) and notes every way a client broke the protocol in
//! [`SmtpServer::violations`], so a delivery test can assert that petrel's
//! client is clean as well as that the mail arrived.
//!
//! It must never be used outside tests: it keeps every message in memory
//! and trusts its script. It never panics on what a client sends; it
//! replies or closes.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often sessions and the listener look at the stop flag.
const POLL: Duration = Duration::from_millis(20);
/// A client that does not read its replies cannot hold a session forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a closing session reads what the client still sends, so the
/// close is a FIN after the last reply and not a reset that could eat it.
const LINGER: Duration = Duration::from_millis(200);
/// Advertised in SIZE; a larger message is refused with 552.
pub const MAX_MESSAGE_SIZE: usize = 32 * 1024 * 1024;
/// Longer command lines get 500 and a closed connection.
pub const MAX_COMMAND_LINE: usize = 4096;
/// RFC 5321 4.5.3.1.6: a text line is at most 998 octets before its CRLF.
const MAX_TEXT_LINE: usize = 998;
/// RCPT commands past this many in one transaction get 452.
pub const MAX_RECIPIENTS: usize = 1000;
const HOSTNAME: &str = "mx.test";

/// The points in a session that a [`Script`] can change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cmd {
    /// The 220 sent when a connection opens.
    Greeting,
    Ehlo,
    Helo,
    Mail,
    Rcpt,
    /// The DATA command itself (the 354).
    Data,
    /// The end of the message: after CRLF.CRLF, or after `BDAT n LAST`.
    DataEnd,
    /// Each BDAT chunk, once its octets are read.
    Bdat,
    Rset,
    Quit,
}

/// What the server does, built with chained calls from [`Script::accept`].
/// Fixed replies take the place of the server's success reply; commands
/// out of sequence or with bad syntax still get 503/501/555.
#[derive(Debug, Clone)]
pub struct Script {
    replies: HashMap<Cmd, String>,
    rcpt_rejects: Vec<(String, String)>,
    drops: HashSet<Cmd>,
    delays: HashMap<Cmd, Duration>,
    extensions: Extensions,
    hold: Duration,
    close_after_message: bool,
    /// Greetings for connections from one address, before `replies`'.
    greetings_for: Vec<(IpAddr, String)>,
}

#[derive(Debug, Clone, Copy)]
struct Extensions {
    pipelining: bool,
    eightbitmime: bool,
    dsn: bool,
    smtputf8: bool,
    chunking: bool,
}

impl Default for Script {
    fn default() -> Self {
        Script::accept()
    }
}

impl Script {
    /// A well-behaved MX: 220, EHLO with PIPELINING, SIZE, 8BITMIME,
    /// ENHANCEDSTATUSCODES, DSN and SMTPUTF8, 250 to everything, 354 to
    /// DATA, 250 at the end of data, 221 to QUIT.
    pub fn accept() -> Script {
        Script {
            replies: HashMap::new(),
            rcpt_rejects: Vec::new(),
            drops: HashSet::new(),
            delays: HashMap::new(),
            extensions: Extensions {
                pipelining: true,
                eightbitmime: true,
                dsn: true,
                smtputf8: true,
                chunking: false,
            },
            hold: Duration::ZERO,
            close_after_message: false,
            greetings_for: Vec::new(),
        }
    }

    /// The greeting, e.g. "421 4.3.2 busy" (sent, then the connection is
    /// closed) or "554 no service" (then every command but QUIT gets 503,
    /// RFC 5321 3.1).
    pub fn greeting(self, reply: &str) -> Script {
        self.reply_to(Cmd::Greeting, reply)
    }

    /// The greeting to connections from `peer` only, e.g. a provider's
    /// "421 too many connections from your IP" to one egress source.
    pub fn greeting_for(mut self, peer: IpAddr, reply: &str) -> Script {
        self.greetings_for.push((peer, reply.to_string()));
        self
    }

    /// A fixed reply to `cmd` when it is valid, e.g. `(Cmd::Rcpt, "550 5.1.1
    /// no such user")` or `(Cmd::DataEnd, "451 4.3.0 try later")`. A 421
    /// reply closes the connection after it is sent. Lines of a multi-line
    /// reply are separated by `\n` ("250 a\n250 b"); the dashes are added.
    pub fn reply_to(mut self, cmd: Cmd, reply: &str) -> Script {
        self.replies.insert(cmd, reply.to_string());
        self
    }

    /// A RCPT whose address contains `address_substring` gets `reply`;
    /// the first match wins, and it takes precedence over `reply_to`.
    pub fn reject_rcpt(mut self, address_substring: &str, reply: &str) -> Script {
        self.rcpt_rejects
            .push((address_substring.to_string(), reply.to_string()));
        self
    }

    /// Closes the connection without a reply when `cmd` arrives; for
    /// `DataEnd` and `Bdat`, once the whole body or chunk has been read.
    pub fn drop_after(mut self, cmd: Cmd) -> Script {
        self.drops.insert(cmd);
        self
    }

    /// Waits `d` before replying to `cmd`.
    pub fn delay(mut self, cmd: Cmd, d: Duration) -> Script {
        self.delays.insert(cmd, d);
        self
    }

    /// Answers EHLO with 502, so the client has to fall back to HELO.
    pub fn no_ehlo(self) -> Script {
        self.reply_to(Cmd::Ehlo, "502 5.5.1 EHLO not implemented")
    }

    pub fn no_pipelining(mut self) -> Script {
        self.extensions.pipelining = false;
        self
    }

    pub fn no_dsn(mut self) -> Script {
        self.extensions.dsn = false;
        self
    }

    pub fn no_8bitmime(mut self) -> Script {
        self.extensions.eightbitmime = false;
        self
    }

    pub fn no_smtputf8(mut self) -> Script {
        self.extensions.smtputf8 = false;
        self
    }

    /// Also advertises CHUNKING and takes `BDAT n [LAST]` (RFC 3030).
    pub fn chunking(mut self) -> Script {
        self.extensions.chunking = true;
        self
    }

    /// Closes the connection right after accepting a message (as a server
    /// whose idle timeout is very short would, once the client idles).
    pub fn close_after_message(mut self) -> Script {
        self.close_after_message = true;
        self
    }

    /// Keeps each session open at least `d` before the greeting, so a test
    /// can see how many connections the client opens at once.
    pub fn hold_connections(mut self, d: Duration) -> Script {
        self.hold = d;
        self
    }
}

/// A message the server accepted (250 at the end of data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The reverse-path, inside the angle brackets ("" for the null path).
    pub mail_from: String,
    /// What followed `MAIL FROM:<..> `, as sent.
    pub mail_params: String,
    /// Accepted recipients only, inside the angle brackets, in order.
    pub rcpt_to: Vec<String>,
    /// The parameters of each accepted RCPT, as sent.
    pub rcpt_params: Vec<String>,
    /// The message without its last CRLF: for DATA, the unstuffed text
    /// before CRLF.CRLF; for BDAT, the chunks joined, less one trailing
    /// CRLF. So the same message reads the same whichever way it came.
    pub data: Vec<u8>,
    /// Whether the body held a CR or LF that was not part of a CRLF.
    pub bare_lf_or_cr: bool,
    /// Whether it came by BDAT rather than DATA.
    pub bdat: bool,
    /// Index of the connection it came on, from 0 in accept order.
    pub connection: usize,
    /// The client's address on that connection.
    pub peer: IpAddr,
    /// The name the client gave in its last EHLO or HELO.
    pub helo: String,
    /// When the server accepted it (its 250 to the end of data).
    pub at: std::time::Instant,
    /// Always false: the server has no STARTTLS yet.
    pub tls: bool,
}

impl Received {
    /// `data` as text, for assertions.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

/// A running test MX; stops when dropped (closes its listener, ends every
/// session and joins their threads).
pub struct SmtpServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    listener: Option<JoinHandle<()>>,
}

impl SmtpServer {
    /// Listens on `addr`:`port` (port 0: any free one); panics if it cannot.
    pub fn start(addr: IpAddr, port: u16, script: Script) -> SmtpServer {
        let wanted = SocketAddr::new(addr, port);
        let listener = TcpListener::bind(wanted)
            .unwrap_or_else(|e| panic!("test SMTP server cannot bind {wanted}: {e}"));
        listener
            .set_nonblocking(true)
            .expect("test SMTP server: non-blocking listener");
        let addr = listener.local_addr().expect("test SMTP server address");
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            script: Mutex::new(script),
            log: Mutex::new(Log::default()),
        });
        let for_thread = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("smtp-mx {addr}"))
            .spawn(move || listen(listener, for_thread))
            .expect("spawn test SMTP server");
        SmtpServer {
            addr,
            shared,
            listener: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The messages accepted so far, in order.
    pub fn messages(&self) -> Vec<Received> {
        self.shared.log().messages.clone()
    }

    /// Waits until `n` messages are in, or `timeout`; returns what there is
    /// then, for the test to assert on.
    pub fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.messages();
            if messages.len() >= n || Instant::now() >= deadline {
                return messages;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.log().connections
    }

    /// The most sessions that were open at the same time.
    pub fn max_concurrent(&self) -> usize {
        self.shared.log().max_open
    }

    /// MAIL commands received so far, accepted or not.
    /// The most messages that waited for their end-of-data reply at once:
    /// overlapping deliveries (unlike `max_concurrent`, a session that is
    /// closing does not count).
    pub fn max_overlapping_deliveries(&self) -> usize {
        self.shared.log().max_deciding
    }

    pub fn transactions(&self) -> usize {
        self.shared.log().transactions
    }

    /// Each way a client broke the protocol so far ("connection 0: ..."):
    /// bad syntax, bare CR or LF, parameters or BDAT that were not
    /// advertised, commands sent before their reply when that is not
    /// allowed, over-long lines. Empty for a clean client.
    pub fn violations(&self) -> Vec<String> {
        self.shared.log().violations.clone()
    }

    /// Changes the script for connections accepted from now on.
    pub fn set_script(&self, script: Script) {
        *self.shared.script() = script;
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.listener.take() {
            let _ = thread.join();
        }
    }
}

struct Shared {
    stop: AtomicBool,
    script: Mutex<Script>,
    log: Mutex<Log>,
}

#[derive(Default)]
struct Log {
    messages: Vec<Received>,
    connections: usize,
    open: usize,
    max_open: usize,
    deciding: usize,
    max_deciding: usize,
    transactions: usize,
    violations: Vec<String>,
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    // A panicking test thread must not take the server's bookkeeping down
    // with it, so a poisoned lock is used as it is.
    fn log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn script(&self) -> MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a new session open and returns its connection index.
    fn open(&self) -> usize {
        let mut log = self.log();
        let index = log.connections;
        log.connections += 1;
        log.open += 1;
        log.max_open = log.max_open.max(log.open);
        index
    }
}

/// Counts a session closed however its thread ends.
/// A message between its end of data and the reply to it; counted in
/// `Log::deciding` while it lives.
struct Deciding<'a>(&'a Shared);

impl<'a> Deciding<'a> {
    fn new(shared: &'a Shared) -> Deciding<'a> {
        let mut log = shared.log();
        log.deciding += 1;
        log.max_deciding = log.max_deciding.max(log.deciding);
        Deciding(shared)
    }
}

impl Drop for Deciding<'_> {
    fn drop(&mut self) {
        self.0.log().deciding -= 1;
    }
}

struct OpenSession(Arc<Shared>);

impl Drop for OpenSession {
    fn drop(&mut self) {
        self.0.log().open -= 1;
    }
}

fn listen(listener: TcpListener, shared: Arc<Shared>) {
    let mut sessions: Vec<JoinHandle<()>> = Vec::new();
    while !shared.stopped() {
        let Ok((stream, peer)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let script = shared.script().clone();
        let open = OpenSession(shared.clone());
        let connection = shared.open();
        sessions.retain(|t| !t.is_finished());
        let spawned = std::thread::Builder::new()
            .name(format!("smtp-mx session {connection}"))
            .spawn(move || Session::new(stream, peer.ip(), script, connection, open).run());
        // If no thread can be had, the stream and its count were dropped
        // with the closure: the client sees the connection close.
        if let Ok(thread) = spawned {
            sessions.push(thread);
        }
    }
    drop(listener);
    for thread in sessions {
        let _ = thread.join();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Go,
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Greeted; waiting for EHLO or HELO.
    Fresh,
    /// The greeting was a refusal: only QUIT is served.
    Refused,
    /// Between transactions.
    Ready,
    /// After MAIL.
    Mail,
    /// After at least one accepted RCPT.
    Rcpt,
    /// After a BDAT chunk that was not the last.
    Bdat,
}

#[derive(Default)]
struct Transaction {
    mail_from: String,
    mail_params: String,
    rcpt_to: Vec<String>,
    rcpt_params: Vec<String>,
    body: Vec<u8>,
    oversize: bool,
}

impl Transaction {
    fn append(&mut self, bytes: &[u8]) {
        if self.oversize || self.body.len() + bytes.len() > MAX_MESSAGE_SIZE {
            self.oversize = true;
        } else {
            self.body.extend_from_slice(bytes);
        }
    }

    fn smtputf8(&self) -> bool {
        params_have(&self.mail_params, "SMTPUTF8")
    }
}

struct Session {
    stream: TcpStream,
    /// Bytes read and not yet consumed.
    input: Vec<u8>,
    script: Script,
    open: OpenSession,
    connection: usize,
    peer: IpAddr,
    helo: String,
    state: State,
    /// EHLO (not HELO) was accepted, so the extensions are in effect.
    esmtp: bool,
    tx: Transaction,
}

impl Session {
    fn new(
        stream: TcpStream,
        peer: IpAddr,
        script: Script,
        connection: usize,
        open: OpenSession,
    ) -> Self {
        Session {
            stream,
            input: Vec::new(),
            script,
            open,
            connection,
            peer,
            helo: String::new(),
            state: State::Fresh,
            esmtp: false,
            tx: Transaction::default(),
        }
    }

    fn shared(&self) -> &Shared {
        &self.open.0
    }

    fn run(mut self) {
        // An error is the client going away or the server stopping; either
        // way the session is over.
        if let Ok(Flow::Close) = self.serve() {
            self.close();
        }
    }

    fn serve(&mut self) -> io::Result<Flow> {
        self.stream.set_nonblocking(false)?;
        self.stream.set_read_timeout(Some(POLL))?;
        self.stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        self.pause(self.script.hold)?;
        if self.greet()? == Flow::Close {
            return Ok(Flow::Close);
        }
        loop {
            let line = self.read_line(MAX_COMMAND_LINE)?;
            if self.command(line)? == Flow::Close {
                return Ok(Flow::Close);
            }
        }
    }

    /// Sends FIN, then reads until the client closes too (or a moment
    /// passes), so that replies already sent are not lost to a reset.
    fn close(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
        let deadline = Instant::now() + LINGER;
        let mut sink = [0u8; 4096];
        while Instant::now() < deadline && !self.shared().stopped() {
            match self.stream.read(&mut sink) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if would_block(&e) => {}
                Err(_) => return,
            }
        }
    }

    fn violation(&self, what: &str) {
        let note = format!("connection {}: {what}", self.connection);
        self.shared().log().violations.push(note);
    }

    /// Sleeps `d`, a little at a time so the server can stop meanwhile.
    fn pause(&self, d: Duration) -> io::Result<()> {
        let deadline = Instant::now() + d;
        loop {
            if self.shared().stopped() {
                return Err(io::Error::other("test SMTP server stopped"));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            std::thread::sleep(left.min(POLL));
        }
    }

    /// Reads more input; an error at end of stream or when stopped.
    fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if self.shared().stopped() {
                return Err(io::Error::other("test SMTP server stopped"));
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    self.input.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                Err(e) if would_block(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The next line without its CRLF (only CRLF ends a line), or None if
    /// more than `max` octets came without one.
    fn read_line(&mut self, max: usize) -> io::Result<Option<Vec<u8>>> {
        let mut from = 0;
        loop {
            if let Some(at) = find_crlf(&self.input[from..]) {
                let end = from + at;
                let line = self.input[..end].to_vec();
                self.input.drain(..end + 2);
                return Ok(Some(line));
            }
            if self.input.len() > max {
                return Ok(None);
            }
            from = self.input.len().saturating_sub(1);
            self.fill()?;
        }
    }

    /// Consumes `size` octets, into the message if `keep`.
    fn take_chunk(&mut self, mut size: u64, keep: bool) -> io::Result<()> {
        loop {
            let n = usize::try_from(size)
                .unwrap_or(usize::MAX)
                .min(self.input.len());
            if keep {
                self.tx.append(&self.input[..n]);
            }
            self.input.drain(..n);
            size -= n as u64;
            if size == 0 {
                return Ok(());
            }
            self.fill()?;
        }
    }

    fn send(&mut self, reply: &str) -> io::Result<Flow> {
        self.stream.write_all(&render(reply))?;
        self.stream.flush()?;
        Ok(if code(reply) == 421 {
            Flow::Close
        } else {
            Flow::Go
        })
    }

    /// What the script says when `cmd` arrives: drop the connection, or
    /// wait before the reply.
    fn arrive(&self, cmd: Cmd) -> io::Result<Flow> {
        if self.script.drops.contains(&cmd) {
            return Ok(Flow::Close);
        }
        if let Some(d) = self.script.delays.get(&cmd) {
            self.pause(*d)?;
        }
        Ok(Flow::Go)
    }

    fn fixed(&self, cmd: Cmd) -> Option<String> {
        self.script.replies.get(&cmd).cloned()
    }

    fn extensions(&self) -> Option<Extensions> {
        self.esmtp.then_some(self.script.extensions)
    }

    fn reset(&mut self) {
        self.tx = Transaction::default();
        if self.state != State::Fresh {
            self.state = State::Ready;
        }
    }

    fn greet(&mut self) -> io::Result<Flow> {
        if self.arrive(Cmd::Greeting)? == Flow::Close {
            return Ok(Flow::Close);
        }
        let for_peer = self
            .script
            .greetings_for
            .iter()
            .find(|(p, _)| *p == self.peer);
        let reply = for_peer
            .map(|(_, reply)| reply.clone())
            .or_else(|| self.fixed(Cmd::Greeting))
            .unwrap_or_else(|| format!("220 {HOSTNAME} ESMTP test server"));
        if code(&reply) >= 400 {
            self.state = State::Refused;
        }
        self.send(&reply)
    }

    fn command(&mut self, line: Option<Vec<u8>>) -> io::Result<Flow> {
        let Some(line) = line else {
            self.violation("command line without CRLF in 4096 octets");
            self.send("500 5.5.2 line too long")?;
            return Ok(Flow::Close);
        };
        if line.contains(&b'\r') || line.contains(&b'\n') {
            self.violation("bare CR or LF in a command line");
            return self.send("500 5.5.2 bare CR or LF in command");
        }
        let Ok(text) = String::from_utf8(line) else {
            self.violation("command line is not UTF-8");
            return self.send("500 5.5.2 command is not UTF-8");
        };
        let (verb, arg) = text.split_once(' ').unwrap_or((&text, ""));
        let verb = verb.to_ascii_uppercase();
        if self.state == State::Refused && verb != "QUIT" {
            return self.send("503 5.5.1 no service here, only QUIT");
        }
        self.check_group(&verb);
        match verb.as_str() {
            "EHLO" => self.hello(Cmd::Ehlo, arg),
            "HELO" => self.hello(Cmd::Helo, arg),
            "MAIL" => self.mail(arg),
            "RCPT" => self.rcpt(arg),
            "DATA" => self.data(arg),
            "BDAT" => self.bdat(arg),
            "RSET" => self.rset(arg),
            "QUIT" => self.quit(),
            "NOOP" => self.send("250 2.0.0 Ok"),
            "VRFY" => self.send("252 2.5.0 Cannot VRFY user"),
            _ => {
                self.violation(&format!("unrecognized command {verb:?}"));
                self.send("500 5.5.2 command unrecognized")
            }
        }
    }

    /// Notes input that came before this command's reply when it should
    /// not have (RFC 2920: without PIPELINING nothing may; with it, EHLO,
    /// DATA, QUIT, NOOP and VRFY must end a group). BDAT checks after its
    /// chunk.
    fn check_group(&self, verb: &str) {
        if self.input.is_empty() || verb == "BDAT" {
            return;
        }
        let pipelining = self.extensions().is_some_and(|e| e.pipelining);
        let last_only = matches!(verb, "EHLO" | "HELO" | "DATA" | "QUIT" | "NOOP" | "VRFY");
        if last_only || !pipelining {
            self.violation(&format!(
                "{verb} was followed by more input before its reply"
            ));
        }
    }

    fn hello(&mut self, cmd: Cmd, arg: &str) -> io::Result<Flow> {
        if self.arrive(cmd)? == Flow::Close {
            return Ok(Flow::Close);
        }
        if arg.trim().is_empty() {
            self.violation("EHLO/HELO without a domain");
            return self.send("501 5.5.4 syntax: EHLO domain");
        }
        let reply = match self.fixed(cmd) {
            Some(reply) => reply,
            None if cmd == Cmd::Ehlo => self.ehlo_reply(arg),
            None => format!("250 {HOSTNAME}"),
        };
        if is_positive(&reply) {
            self.tx = Transaction::default();
            self.state = State::Ready;
            self.esmtp = cmd == Cmd::Ehlo;
            self.helo = arg.trim().to_owned();
        }
        self.send(&reply)
    }

    fn ehlo_reply(&self, client: &str) -> String {
        let ext = self.script.extensions;
        let mut lines = vec![
            format!("250 {HOSTNAME} greets {client}"),
            format!("250 SIZE {MAX_MESSAGE_SIZE}"),
            "250 ENHANCEDSTATUSCODES".to_string(),
        ];
        let optional = [
            (ext.pipelining, "PIPELINING"),
            (ext.eightbitmime, "8BITMIME"),
            (ext.dsn, "DSN"),
            (ext.smtputf8, "SMTPUTF8"),
            (ext.chunking, "CHUNKING"),
        ];
        for (on, keyword) in optional {
            if on {
                lines.push(format!("250 {keyword}"));
            }
        }
        lines.join("\n")
    }

    fn mail(&mut self, arg: &str) -> io::Result<Flow> {
        self.shared().log().transactions += 1;
        if self.arrive(Cmd::Mail)? == Flow::Close {
            return Ok(Flow::Close);
        }
        match self.state {
            State::Ready => {}
            State::Fresh => return self.send("503 5.5.1 send EHLO or HELO first"),
            _ => return self.send("503 5.5.1 nested MAIL command"),
        }
        let Some((path, params)) = parse_path(arg, "FROM:") else {
            self.violation(&format!("MAIL syntax: {arg:?}"));
            return self.send("501 5.5.4 syntax: MAIL FROM:<address> [parameters]");
        };
        if let Some(reply) = self.check_params(&params, false) {
            return self.send(reply);
        }
        if !path.is_ascii() && !params_have(&params, "SMTPUTF8") {
            self.violation("UTF-8 reverse-path without SMTPUTF8");
            return self.send("553 5.6.7 UTF-8 address needs SMTPUTF8");
        }
        let reply = self.fixed(Cmd::Mail).unwrap_or("250 2.1.0 Ok".into());
        if is_positive(&reply) {
            self.tx = Transaction {
                mail_from: path,
                mail_params: params,
                ..Transaction::default()
            };
            self.state = State::Mail;
        }
        self.send(&reply)
    }

    fn rcpt(&mut self, arg: &str) -> io::Result<Flow> {
        if self.arrive(Cmd::Rcpt)? == Flow::Close {
            return Ok(Flow::Close);
        }
        if !matches!(self.state, State::Mail | State::Rcpt) {
            return self.send("503 5.5.1 need MAIL before RCPT");
        }
        let parsed = parse_path(arg, "TO:").filter(|(path, _)| !path.is_empty());
        let Some((path, params)) = parsed else {
            self.violation(&format!("RCPT syntax: {arg:?}"));
            return self.send("501 5.5.4 syntax: RCPT TO:<address> [parameters]");
        };
        if let Some(reply) = self.check_params(&params, true) {
            return self.send(reply);
        }
        if !path.is_ascii() && !self.tx.smtputf8() {
            self.violation("UTF-8 forward-path without SMTPUTF8");
            return self.send("553 5.6.7 UTF-8 address needs SMTPUTF8");
        }
        if self.tx.rcpt_to.len() >= MAX_RECIPIENTS {
            return self.send("452 4.5.3 too many recipients");
        }
        let rejected = self
            .script
            .rcpt_rejects
            .iter()
            .find(|(s, _)| path.contains(s.as_str()));
        let reply = rejected
            .map(|(_, reply)| reply.clone())
            .or_else(|| self.fixed(Cmd::Rcpt))
            .unwrap_or("250 2.1.5 Ok".into());
        if is_positive(&reply) {
            self.tx.rcpt_to.push(path);
            self.tx.rcpt_params.push(params);
            self.state = State::Rcpt;
        }
        self.send(&reply)
    }

    /// The reply for a parameter the server did not advertise or cannot
    /// take, if there is one.
    fn check_params(&self, params: &str, rcpt: bool) -> Option<&'static str> {
        let ext = self.extensions();
        for param in params.split(' ').filter(|p| !p.is_empty()) {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            let key = key.to_ascii_uppercase();
            let value = value.to_ascii_uppercase();
            let known = match (rcpt, key.as_str(), ext) {
                (_, _, None) => false,
                (false, "SIZE", _) => value.parse::<u64>().is_ok(),
                (false, "BODY", Some(e)) => {
                    e.eightbitmime && (value == "7BIT" || value == "8BITMIME")
                }
                (false, "SMTPUTF8", Some(e)) => e.smtputf8 && value.is_empty(),
                (false, "RET" | "ENVID", Some(e)) | (true, "NOTIFY" | "ORCPT", Some(e)) => e.dsn,
                _ => false,
            };
            if !known {
                self.violation(&format!("parameter {param:?} was not advertised"));
                return Some("555 5.5.4 parameter not recognized");
            }
            if key == "SIZE"
                && value
                    .parse::<u64>()
                    .is_ok_and(|n| n > MAX_MESSAGE_SIZE as u64)
            {
                return Some("552 5.3.4 message size exceeds fixed maximum");
            }
        }
        None
    }

    fn data(&mut self, arg: &str) -> io::Result<Flow> {
        if self.arrive(Cmd::Data)? == Flow::Close {
            return Ok(Flow::Close);
        }
        if !arg.is_empty() {
            self.violation("DATA with an argument");
            return self.send("501 5.5.4 syntax: DATA");
        }
        match self.state {
            State::Rcpt => {}
            State::Mail => return self.send("554 5.5.1 no valid recipients"),
            _ => return self.send("503 5.5.1 need MAIL and RCPT before DATA"),
        }
        let reply = self
            .fixed(Cmd::Data)
            .unwrap_or("354 End data with <CR><LF>.<CR><LF>".into());
        let go_ahead = (300..400).contains(&code(&reply));
        let flow = self.send(&reply)?;
        if !go_ahead {
            return Ok(flow);
        }
        self.receive_data()
    }

    /// Reads the text up to CRLF.CRLF, taking off stuffed dots.
    fn receive_data(&mut self) -> io::Result<Flow> {
        let mut long_line = false;
        loop {
            let Some(line) = self.read_line(MAX_MESSAGE_SIZE)? else {
                self.violation("message without CRLF.CRLF within the size limit");
                self.send("552 5.3.4 message too big")?;
                return Ok(Flow::Close);
            };
            if line == b"." {
                break;
            }
            let text = line.strip_prefix(b".").unwrap_or(&line);
            long_line |= text.len() > MAX_TEXT_LINE;
            self.tx.append(text);
            self.tx.append(b"\r\n");
        }
        if long_line {
            self.violation("message line longer than 998 octets");
        }
        self.end_of_data(false)
    }

    fn bdat(&mut self, arg: &str) -> io::Result<Flow> {
        if !self.extensions().is_some_and(|e| e.chunking) {
            self.violation("BDAT without CHUNKING advertised");
            return self.send("500 5.5.1 command unrecognized");
        }
        let Some((size, last)) = parse_bdat(arg) else {
            // The chunk's length is unknown, so the stream cannot be
            // followed any further.
            self.violation(&format!("BDAT syntax: {arg:?}"));
            self.send("501 5.5.4 syntax: BDAT size [LAST]")?;
            return Ok(Flow::Close);
        };
        let in_sequence = matches!(self.state, State::Rcpt | State::Bdat);
        self.take_chunk(size, in_sequence)?;
        if !self.input.is_empty() && !self.extensions().is_some_and(|e| e.pipelining) {
            self.violation("BDAT was followed by more input before its reply");
        }
        if self.arrive(Cmd::Bdat)? == Flow::Close {
            return Ok(Flow::Close);
        }
        if !in_sequence {
            return self.send("503 5.5.1 need MAIL and RCPT before BDAT");
        }
        let chunk_reply = self.fixed(Cmd::Bdat);
        if let Some(failed) = chunk_reply.as_deref().filter(|r| !is_positive(r)) {
            // RFC 3030: a failed chunk fails the transaction; chunks
            // already pipelined behind it are read and refused with 503.
            let failed = failed.to_string();
            self.reset();
            return self.send(&failed);
        }
        if last {
            return self.end_of_data(true);
        }
        self.state = State::Bdat;
        let reply = chunk_reply.unwrap_or_else(|| format!("250 2.0.0 {size} octets received"));
        self.send(&reply)
    }

    fn end_of_data(&mut self, bdat: bool) -> io::Result<Flow> {
        // From the end of the data to the reply, the message is in this
        // server's hands: how many are at once is how many deliveries
        // overlap, which a closing session never counts in.
        let deciding = Deciding::new(self.shared());
        let arrived = self.arrive(Cmd::DataEnd)?;
        drop(deciding);
        if arrived == Flow::Close {
            return Ok(Flow::Close);
        }
        let reply = if self.tx.oversize {
            "552 5.3.4 message too big".to_string()
        } else if let Some(reply) = self.fixed(Cmd::DataEnd) {
            reply
        } else {
            format!(
                "250 2.0.0 Ok: queued as {}",
                self.shared().log().messages.len() + 1
            )
        };
        let accepted = is_positive(&reply);
        if accepted {
            self.record(bdat);
        }
        self.reset();
        let flow = self.send(&reply)?;
        if accepted && self.script.close_after_message {
            return Ok(Flow::Close);
        }
        Ok(flow)
    }

    fn record(&mut self, bdat: bool) {
        let tx = std::mem::take(&mut self.tx);
        let mut data = tx.body;
        if data.ends_with(b"\r\n") {
            data.truncate(data.len() - 2);
        }
        let bare_lf_or_cr = has_bare_cr_or_lf(&data);
        if bare_lf_or_cr {
            self.violation("bare CR or LF in the message");
        }
        let received = Received {
            mail_from: tx.mail_from,
            mail_params: tx.mail_params,
            rcpt_to: tx.rcpt_to,
            rcpt_params: tx.rcpt_params,
            data,
            bare_lf_or_cr,
            bdat,
            connection: self.connection,
            peer: self.peer,
            helo: self.helo.clone(),
            at: std::time::Instant::now(),
            tls: false,
        };
        self.shared().log().messages.push(received);
    }

    fn rset(&mut self, arg: &str) -> io::Result<Flow> {
        if self.arrive(Cmd::Rset)? == Flow::Close {
            return Ok(Flow::Close);
        }
        if !arg.is_empty() {
            self.violation("RSET with an argument");
            return self.send("501 5.5.4 syntax: RSET");
        }
        let reply = self.fixed(Cmd::Rset).unwrap_or("250 2.0.0 Ok".into());
        if is_positive(&reply) {
            self.reset();
        }
        self.send(&reply)
    }

    fn quit(&mut self) -> io::Result<Flow> {
        if self.arrive(Cmd::Quit)? == Flow::Close {
            return Ok(Flow::Close);
        }
        let reply = self.fixed(Cmd::Quit).unwrap_or("221 2.0.0 Bye".into());
        self.send(&reply)?;
        Ok(Flow::Close)
    }
}

fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

fn find_crlf(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|w| w == b"\r\n")
}

/// A CR not followed by LF, or an LF not preceded by CR.
fn has_bare_cr_or_lf(data: &[u8]) -> bool {
    data.iter().enumerate().any(|(i, &b)| match b {
        b'\r' => data.get(i + 1) != Some(&b'\n'),
        b'\n' => i == 0 || data[i - 1] != b'\r',
        _ => false,
    })
}

/// The reply code, or 0 if the text does not start with one.
fn code(reply: &str) -> u16 {
    reply.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0)
}

fn is_positive(reply: &str) -> bool {
    (200..300).contains(&code(reply))
}

/// A reply on the wire: `\n` separates lines, and every line but the last
/// gets a dash after its code.
fn render(reply: &str) -> Vec<u8> {
    let lines: Vec<&str> = reply
        .split('\n')
        .map(|l| l.trim_end_matches('\r'))
        .collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let start = out.len();
        out.extend_from_slice(line.as_bytes());
        if matches!(out.get(start + 3), Some(b' ' | b'-')) {
            out[start + 3] = if i + 1 < lines.len() { b'-' } else { b' ' };
        }
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// `FROM:<path> params` (or `TO:`), strictly: no space before `<`, one
/// space before the parameters.
fn parse_path(arg: &str, keyword: &str) -> Option<(String, String)> {
    let head = arg.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = arg[keyword.len()..].strip_prefix('<')?;
    let end = rest.find('>')?;
    let (path, after) = (&rest[..end], &rest[end + 1..]);
    if path.contains(['<', ' ']) {
        return None;
    }
    let params = if after.is_empty() {
        ""
    } else {
        after.strip_prefix(' ')?
    };
    Some((path.to_string(), params.to_string()))
}

fn params_have(params: &str, keyword: &str) -> bool {
    params.split(' ').any(|p| p.eq_ignore_ascii_case(keyword))
}

/// `size` or `size LAST`.
fn parse_bdat(arg: &str) -> Option<(u64, bool)> {
    let mut words = arg.split(' ');
    let size = words
        .next()
        .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))?;
    let size = size.parse().ok()?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return None,
    };
    words.next().is_none().then_some((size, last))
}
