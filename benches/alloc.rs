//! alloc benchmark: heap allocations per accepted message on the receive
//! path, counted by a global allocator that wraps the daemon's (mimalloc).
//!
//! It runs the daemon in this process (`petrel::daemon::run`, one shard,
//! delivery paused, a fresh spool under `PETREL_BENCH_DIR`, default
//! `./target`) and sends plain SMTP from a client thread that allocates
//! nothing in its measured loop: pre-built command and message bytes, one
//! reused reply buffer. Every allocation counted between the two readings
//! is therefore the daemon's (its shard thread and the runtime under it).
//!
//! Two runs: 20,000 1 KiB messages over one connection (after 2,000 for
//! warm-up), and 1,000 messages with a new connection each (connection
//! set-up and teardown included). Run it with
//! `cargo bench --bench alloc`; `benches/README.md` says what the figures
//! mean.

use std::alloc::{GlobalAlloc, Layout};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: Counting = Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static ALLOC_BYTES: AtomicU64 = AtomicU64::new(0);
static FREES: AtomicU64 = AtomicU64::new(0);
static FREE_BYTES: AtomicU64 = AtomicU64::new(0);

struct Counting;

impl Counting {
    fn count_alloc(size: usize) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        ALLOC_BYTES.fetch_add(size as u64, Ordering::Relaxed);
    }

    fn count_free(size: usize) {
        FREES.fetch_add(1, Ordering::Relaxed);
        FREE_BYTES.fetch_add(size as u64, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed to mimalloc unchanged; the counters are only
// arithmetic on the sizes of the layouts given.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::count_alloc(layout.size());
        mimalloc::MiMalloc.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::count_alloc(layout.size());
        mimalloc::MiMalloc.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        Self::count_free(layout.size());
        mimalloc::MiMalloc.dealloc(ptr, layout)
    }

    // A realloc counts as a free of the old block and an allocation of the
    // new one: it is a call into the allocator all the same.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::count_free(layout.size());
        Self::count_alloc(new_size);
        mimalloc::MiMalloc.realloc(ptr, layout, new_size)
    }
}

#[derive(Clone, Copy)]
struct Counters {
    allocs: u64,
    alloc_bytes: u64,
    frees: u64,
    free_bytes: u64,
}

impl Counters {
    fn now() -> Counters {
        Counters {
            allocs: ALLOCS.load(Ordering::SeqCst),
            alloc_bytes: ALLOC_BYTES.load(Ordering::SeqCst),
            frees: FREES.load(Ordering::SeqCst),
            free_bytes: FREE_BYTES.load(Ordering::SeqCst),
        }
    }

    fn since(self, before: Counters) -> Counters {
        Counters {
            allocs: self.allocs - before.allocs,
            alloc_bytes: self.alloc_bytes - before.alloc_bytes,
            frees: self.frees - before.frees,
            free_bytes: self.free_bytes - before.free_bytes,
        }
    }
}

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const WARM_UP: u64 = 2_000;
const MEASURED: u64 = 20_000;
const PER_CONNECTION: u64 = 1_000;
const BODY_SIZE: usize = 1024;

fn main() {
    if let Err(e) = run() {
        eprintln!("alloc bench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Res<()> {
    // Blocked here, SIGTERM is inherited blocked by every thread, so only
    // the daemon's signal waiter takes the one sent at the end.
    block_sigterm()?;
    let base = std::env::var_os("PETREL_BENCH_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&base)?;
    let tmp = tempfile::Builder::new()
        .prefix("petrel-alloc-bench-")
        .tempdir_in(&base)?;
    let addr = free_port()?;
    let config = petrel::config::Config::from_str_named(&config_text(&tmp, addr), "bench")?;
    let plan = petrel::preflight::Plan {
        shards: 1,
        cpus: vec![0],
        io_memory: 1 << 20,
        helper_cpus: vec![0],
    };
    let daemon =
        std::thread::spawn(move || petrel::daemon::run(config, Default::default(), plan, None));
    wait_for_port(addr)?;
    let client = Client::new(BODY_SIZE);

    let mut conn = client.open(addr)?;
    client.send_messages(&mut conn, WARM_UP)?;
    let (one, one_secs) = measure(|| client.send_messages(&mut conn, MEASURED))?;
    client.close(conn)?;

    let (many, many_secs) = measure(|| {
        for _ in 0..PER_CONNECTION {
            let mut c = client.open(addr)?;
            client.send_messages(&mut c, 1)?;
            client.close(c)?;
        }
        Ok(())
    })?;

    stop_daemon()?;
    match daemon.join() {
        Ok(result) => result.map_err(|e| format!("daemon: {e}"))?,
        Err(_) => return Err("the daemon thread panicked".into()),
    }
    let queued = WARM_UP + MEASURED + PER_CONNECTION;
    println!(
        "alloc bench: {BODY_SIZE}-byte bodies ({} bytes on the wire), one shard, spool under {}",
        client.message.len(),
        base.display()
    );
    print_row("one connection", MEASURED, one, one_secs);
    print_row("new connection each", PER_CONNECTION, many, many_secs);
    println!("({queued} messages queued in all; counts include every thread of the process)");
    Ok(())
}

fn measure(f: impl FnOnce() -> Res<()>) -> Res<(Counters, f64)> {
    let before = Counters::now();
    let started = Instant::now();
    f()?;
    let secs = started.elapsed().as_secs_f64();
    Ok((Counters::now().since(before), secs))
}

fn print_row(label: &str, messages: u64, c: Counters, secs: f64) {
    let per = |v: u64| v as f64 / messages as f64;
    let retained = c.alloc_bytes as f64 - c.free_bytes as f64;
    println!(
        "{label:<20} {messages:>6} msgs: {:>7.2} allocs/msg, {:>9.1} bytes allocated/msg, \
         {:>7.2} frees/msg, {:>7.1} bytes retained/msg, {:>6.0} msg/s",
        per(c.allocs),
        per(c.alloc_bytes),
        per(c.frees),
        retained / messages as f64,
        messages as f64 / secs
    );
}

fn config_text(tmp: &tempfile::TempDir, addr: SocketAddr) -> String {
    format!(
        r#"
[server]
hostname = "bench.example.test"
shards = 1

[spool]
path = "{}"
min_free_space = 0
segment_size = 67108864

[[listener]]
address = "{addr}"

[relay]
networks = ["127.0.0.0/8"]

[delivery]
paused = true
{ops}"#,
        tmp.path().join("spool").display(),
        ops = ops_text(tmp)
    )
}

/// With `OPS=on` in the environment: the admin endpoint (so metrics are
/// kept) and the accounting log, as an operator runs them; else neither.
fn ops_text(tmp: &tempfile::TempDir) -> String {
    if std::env::var("OPS").as_deref() != Ok("on") {
        return "\n[admin]\naddress = \"\"\n".to_owned();
    }
    format!(
        "\n[admin]\naddress = \"127.0.0.1:0\"\n\n[accounting]\npath = \"{}\"\n",
        tmp.path().join("acct.csv").display()
    )
}

/// A port that was free a moment ago (the daemon binds it next).
fn free_port() -> Res<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

fn wait_for_port(addr: SocketAddr) -> Res<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(s) = TcpStream::connect(addr) {
            drop(s);
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("the daemon did not listen on {addr} within 10 s").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn block_sigterm() -> Res<()> {
    // SAFETY: sigset_t is plain data; the calls only write the set we own
    // and change this thread's mask.
    let rc = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc).into());
    }
    Ok(())
}

fn stop_daemon() -> Res<()> {
    // SAFETY: sending a signal to our own process has no memory effects.
    if unsafe { libc::kill(libc::getpid(), libc::SIGTERM) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

/// A plain SMTP client (no pipelining) whose commands and message are built
/// once, so that sending allocates nothing.
struct Client {
    ehlo: &'static [u8],
    mail: &'static [u8],
    rcpt: &'static [u8],
    data: &'static [u8],
    quit: &'static [u8],
    /// Header, body and the final CRLF.CRLF.
    message: Vec<u8>,
}

struct Conn {
    stream: TcpStream,
    /// Reused for every reply; never grows past its first capacity.
    reply: Vec<u8>,
}

impl Client {
    fn new(body_size: usize) -> Client {
        let mut message = b"From: <from@example.test>\r\nTo: <to@example.test>\r\n\
            Subject: alloc bench\r\nMessage-ID: <alloc@example.test>\r\n\r\n"
            .to_vec();
        // Lines of up to 78 characters and CRLF, adding up to body_size.
        let mut left = body_size;
        while left > 0 {
            let n = left.clamp(3, 80);
            message.extend(std::iter::repeat_n(b'x', n - 2));
            message.extend_from_slice(b"\r\n");
            left = left.saturating_sub(n);
        }
        message.extend_from_slice(b".\r\n");
        Client {
            ehlo: b"EHLO client.example.test\r\n",
            mail: b"MAIL FROM:<from@example.test>\r\n",
            rcpt: b"RCPT TO:<to@example.test>\r\n",
            data: b"DATA\r\n",
            quit: b"QUIT\r\n",
            message,
        }
    }

    fn open(&self, addr: SocketAddr) -> Res<Conn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        let mut conn = Conn {
            stream,
            reply: Vec::with_capacity(4096),
        };
        conn.expect(b'2')?;
        conn.command(self.ehlo, b'2')?;
        Ok(conn)
    }

    fn send_messages(&self, conn: &mut Conn, count: u64) -> Res<()> {
        for _ in 0..count {
            conn.command(self.mail, b'2')?;
            conn.command(self.rcpt, b'2')?;
            conn.command(self.data, b'3')?;
            conn.command(&self.message, b'2')?;
        }
        Ok(())
    }

    fn close(&self, mut conn: Conn) -> Res<()> {
        conn.command(self.quit, b'2')
    }
}

impl Conn {
    fn command(&mut self, bytes: &[u8], class: u8) -> Res<()> {
        self.stream.write_all(bytes)?;
        self.expect(class)
    }

    /// Reads one reply, single- or multi-line, and checks its first digit.
    fn expect(&mut self, class: u8) -> Res<()> {
        self.reply.clear();
        let mut start = 0; // where the line being read begins
        loop {
            let len = self.reply.len();
            if len == self.reply.capacity() {
                return Err("reply longer than the read buffer".into());
            }
            // Filled up to its capacity (no allocation) so that the read
            // can land in the spare part.
            self.reply.resize(self.reply.capacity(), 0);
            let n = self.stream.read(&mut self.reply[len..])?;
            self.reply.truncate(len + n);
            if n == 0 {
                return Err("the server closed the connection".into());
            }
            while let Some(end) = memchr::memmem::find(&self.reply[start..], b"\r\n") {
                let line = &self.reply[start..start + end];
                if line.len() < 4 || line[3] == b' ' {
                    if line.first() != Some(&class) {
                        let text = String::from_utf8_lossy(line);
                        return Err(format!("unexpected reply: {text}").into());
                    }
                    return Ok(());
                }
                start += end + 2;
            }
        }
    }
}
