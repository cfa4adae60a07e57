//! Interoperability with real SMTP peers no one here wrote: Postfix's
//! smtp-source and swaks as clients, Postfix's smtp-sink as the server petrel
//! delivers to and dnsmasq as its DNS, Prometheus' promtool reading the
//! metrics, dkimpy (python3-dkim) verifying petrel's DKIM signatures, from
//! Debian's packages, which
//! `.ci/run` installs and then runs these tests with `--ignored`. A missing
//! program fails the test: these must never pass without their peer.

mod common;
#[path = "support/dkim.rs"]
mod dkim;
#[path = "support/smtp_server.rs"]
mod smtp_server;

use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{
    inspect, live_and_pending, tempdir, total_queued, users_file, Daemon, Listener, TestCert,
};

const SMTP_SOURCE: &str = "/usr/sbin/smtp-source";
const SMTP_SINK: &str = "/usr/sbin/smtp-sink";
const DNSMASQ: &str = "/usr/sbin/dnsmasq";
const SWAKS: &str = "/usr/bin/swaks";
const PROMTOOL: &str = "/usr/bin/promtool";
/// Debian's Python, which python3-dkim installs dkimpy for.
const PYTHON: &str = "/usr/bin/python3";

/// Generous: a loaded two-core machine may be building other things.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

const USER: &str = "bob";
const PASSWORD: &str = "secret";

/// What a peer program did: its exit status and its output.
struct Run {
    status: ExitStatus,
    output: String,
}

/// Runs `program args` with output to files in `dir`, killing it if it
/// takes longer than `RUN_TIMEOUT`.
fn run(dir: &Path, program: &str, args: &[String]) -> Run {
    let (mut child, out_path) = spawn(dir, program, args);
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => panic!("try_wait: {e}"),
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let output = std::fs::read_to_string(&out_path).unwrap_or_default();
            panic!("{program} {args:?} did not finish: {output}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = String::from_utf8_lossy(&std::fs::read(&out_path).unwrap_or_default()).into();
    Run { status, output }
}

/// Starts `program args` with stdout and stderr to one file in `dir`;
/// returns the child and that file. A missing program is a failure.
fn spawn(dir: &Path, program: &str, args: &[String]) -> (Child, PathBuf) {
    assert!(
        Path::new(program).exists(),
        "{program} is missing: install Debian's postfix, swaks and dnsmasq (.ci/run does)"
    );
    let name = Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let out_path = dir.join(format!("{name}.{}.out", common::free_port()));
    let out = match std::fs::File::create(&out_path) {
        Ok(f) => f,
        Err(e) => panic!("{}: {e}", out_path.display()),
    };
    let err = match out.try_clone() {
        Ok(f) => f,
        Err(e) => panic!("{e}"),
    };
    match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
    {
        Ok(c) => (c, out_path),
        Err(e) => panic!("cannot run {program}: {e}"),
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A daemon with one plaintext listener, relaying for loopback.
fn plain_daemon(dir: &Path, spool: &Path) -> Daemon {
    Daemon::start(
        dir,
        spool,
        "shards = 1",
        &[Listener::plain("")],
        "[relay]\nnetworks = [\"127.0.0.0/8\", \"::1/128\"]\n",
        None,
    )
}

/// A daemon with a STARTTLS listener and an implicit-TLS one, AUTH, and
/// relaying only for a network the test client is not in.
fn tls_daemon(dir: &Path, spool: &Path, cert: &TestCert) -> Daemon {
    let users = users_file(dir, USER, PASSWORD);
    Daemon::start(
        dir,
        spool,
        "shards = 1",
        &[
            Listener::plain(&cert.listener_lines()),
            Listener::implicit(&cert.listener_lines()),
        ],
        &format!(
            "[relay]\nnetworks = [\"10.0.0.0/8\"]\n\n[auth]\nusers_file = \"{}\"\n",
            users.display()
        ),
        Some(cert),
    )
}

#[test]
#[ignore = "needs Debian's postfix and swaks; run by .ci/run"]
fn smtp_source_many_sessions_new_connection_per_message() {
    let dir = tempdir();
    let spool = dir.path().join("spool");
    let d = plain_daemon(dir.path(), &spool);
    let r = run(
        dir.path(),
        SMTP_SOURCE,
        &args(&[
            "-s",
            "10",
            "-m",
            "200",
            "-c",
            "-f",
            "from@example.test",
            "-t",
            "to@example.test",
            &format!("127.0.0.1:{}", d.port()),
        ]),
    );
    assert!(r.status.success(), "smtp-source: {}", r.output);
    d.stop();
    let report = inspect(&spool);
    assert_eq!(total_queued(&report), 200, "{report}");
    assert_eq!(live_and_pending(&report), (200, 200), "{report}");
}

#[test]
#[ignore = "needs Debian's postfix and swaks; run by .ci/run"]
fn smtp_source_reused_connections_and_many_recipients() {
    let dir = tempdir();
    let spool = dir.path().join("spool");
    let d = plain_daemon(dir.path(), &spool);
    let port = d.port();
    // -d: many messages per connection; -r 5: five recipients each.
    let r = run(
        dir.path(),
        SMTP_SOURCE,
        &args(&[
            "-s",
            "5",
            "-m",
            "100",
            "-d",
            "-r",
            "5",
            "-c",
            "-f",
            "from@example.test",
            "-t",
            "to@example.test",
            &format!("127.0.0.1:{port}"),
        ]),
    );
    assert!(r.status.success(), "smtp-source: {}", r.output);
    // Bigger messages (100 KiB) over reused connections.
    let r = run(
        dir.path(),
        SMTP_SOURCE,
        &args(&[
            "-s",
            "4",
            "-m",
            "20",
            "-d",
            "-l",
            "102400",
            "-f",
            "from@example.test",
            "-t",
            "to@example.test",
            &format!("127.0.0.1:{port}"),
        ]),
    );
    assert!(r.status.success(), "smtp-source: {}", r.output);
    d.stop();
    let report = inspect(&spool);
    assert_eq!(total_queued(&report), 120, "{report}");
    assert_eq!(live_and_pending(&report), (120, 520), "{report}");
}

fn swaks_args(port: u16, password: &str, extra: &[&str]) -> Vec<String> {
    let mut a = args(&[
        "--server",
        &format!("127.0.0.1:{port}"),
        "--helo",
        "client.example.test",
        "--from",
        "a@b.test",
        "--to",
        "x@remote.test",
        "--auth",
        "PLAIN",
        "--auth-user",
        USER,
        "--auth-password",
        password,
        "--timeout",
        "120",
    ]);
    a.extend(args(extra));
    a
}

#[test]
#[ignore = "needs Debian's postfix and swaks; run by .ci/run"]
fn swaks_starttls_auth_and_pipelining() {
    let dir = tempdir();
    let spool = dir.path().join("spool");
    let cert = TestCert::new(dir.path());
    let d = tls_daemon(dir.path(), &spool, &cert);
    let port = d.port();

    let r = run(
        dir.path(),
        SWAKS,
        &swaks_args(port, PASSWORD, &["--tls", "--pipeline"]),
    );
    assert!(r.status.success(), "swaks: {}", r.output);
    assert!(r.output.contains("TLS started"), "{}", r.output);
    assert!(r.output.contains("235 2.7.0"), "{}", r.output);
    // Pipelined: RCPT and DATA go out before MAIL's reply comes back.
    assert!(
        r.output
            .contains(" ~> MAIL FROM:<a@b.test>\n ~> RCPT TO:<x@remote.test>\n ~> DATA\n"),
        "{}",
        r.output
    );
    assert!(
        r.output.contains("250 2.0.0 Ok: queued as "),
        "{}",
        r.output
    );
    // The ID swaks printed is the one petrel's log names the message by.
    let id = r
        .output
        .split("queued as ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_default();
    assert_eq!(id.len(), 16, "{}", r.output);
    let log = d.stderr();
    assert!(
        log.lines()
            .any(|l| l.contains("accepted") && l.contains(&format!("id={id}"))),
        "no accepted line with id={id}:\n{log}"
    );

    // A wrong password: swaks fails, and nothing more is queued.
    let r = run(
        dir.path(),
        SWAKS,
        &swaks_args(port, "wrong", &["--tls", "--pipeline"]),
    );
    assert!(!r.status.success(), "swaks: {}", r.output);
    assert!(r.output.contains("535 5.7.8"), "{}", r.output);

    // Without TLS the relay is closed and AUTH is not offered.
    let r = run(
        dir.path(),
        SWAKS,
        &args(&[
            "--server",
            &format!("127.0.0.1:{port}"),
            "--from",
            "a@b.test",
            "--to",
            "x@remote.test",
            "--timeout",
            "120",
        ]),
    );
    assert!(!r.status.success(), "swaks: {}", r.output);
    assert!(r.output.contains("554 5.7.1"), "{}", r.output);

    d.stop();
    let report = inspect(&spool);
    assert_eq!(total_queued(&report), 1, "{report}");
}

#[test]
#[ignore = "needs Debian's postfix and swaks; run by .ci/run"]
fn swaks_implicit_tls() {
    let dir = tempdir();
    let spool = dir.path().join("spool");
    let cert = TestCert::new(dir.path());
    let d = tls_daemon(dir.path(), &spool, &cert);
    let implicit = d.ports[1];

    // TLS on connect, then ESMTP with AUTH.
    let r = run(
        dir.path(),
        SWAKS,
        &swaks_args(implicit, PASSWORD, &["--tlsc", "--pipeline"]),
    );
    assert!(r.status.success(), "swaks: {}", r.output);
    assert!(r.output.contains("TLS started"), "{}", r.output);
    assert!(!r.output.contains("STARTTLS"), "{}", r.output);

    // The same by protocol name: SSMTPA is TLS on connect with AUTH.
    let r = run(
        dir.path(),
        SWAKS,
        &swaks_args(implicit, PASSWORD, &["--protocol", "SSMTPA"]),
    );
    assert!(r.status.success(), "swaks: {}", r.output);
    assert!(r.output.contains("TLS started"), "{}", r.output);

    d.stop();
    let report = inspect(&spool);
    assert_eq!(total_queued(&report), 2, "{report}");
}

// Delivery to real peers: smtp-sink as the receiving server, dnsmasq as
// the DNS that names it.

/// How long the mail may take to reach smtp-sink once petrel has it.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a peer may take to start listening.
const PEER_START_TIMEOUT: Duration = Duration::from_secs(20);

/// Loopback addresses of the peers; their ports are free ones.
const DNS_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 21);
const MX_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 22);
const SENDER_MX_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 23);

const SENDER: &str = "from@example.test";
const RECIPIENT: &str = "rcpt@interop.test";

/// A peer program running in the background, killed on drop so that a
/// failed test leaves nothing running.
struct Peer {
    child: Child,
    out_path: PathBuf,
}

impl Peer {
    fn start(dir: &Path, program: &str, args: &[String]) -> Peer {
        let (child, out_path) = spawn(dir, program, args);
        Peer { child, out_path }
    }

    /// Its stdout and stderr so far.
    fn output(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.out_path).unwrap_or_default()).into()
    }

    fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_tcp_port(ip: Ipv4Addr) -> u16 {
    match TcpListener::bind((ip, 0)).and_then(|l| l.local_addr()) {
        Ok(a) => a.port(),
        Err(e) => panic!("bind {ip}:0: {e}"),
    }
}

fn free_udp_port(ip: Ipv4Addr) -> u16 {
    match UdpSocket::bind((ip, 0)).and_then(|s| s.local_addr()) {
        Ok(a) => a.port(),
        Err(e) => panic!("bind udp {ip}:0: {e}"),
    }
}

/// Polls `done` until it holds (true) or `timeout` has passed (false).
fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn set_mode(path: &Path, mode: u32) {
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
        panic!("chmod {}: {e}", path.display());
    }
}

/// Postfix's smtp-sink on `ip` and a free port: it answers SMTP, counts
/// the messages it receives (`-c`) and writes each transaction to a file
/// of its own (`-d`).
struct Sink {
    peer: Peer,
    addr: String,
    dumps: PathBuf,
}

impl Sink {
    /// `flags` go before the common ones, e.g. `-f RCPT` to reject every
    /// recipient with a 5xx.
    fn start(dir: &Path, ip: Ipv4Addr, flags: &[&str]) -> Sink {
        let dumps = dir.join(format!("dumps-{ip}"));
        if let Err(e) = std::fs::create_dir(&dumps) {
            panic!("{}: {e}", dumps.display());
        }
        // As root, smtp-sink must switch to another user (-u), which then
        // writes the dumps.
        let user: &[&str] = if is_root() {
            set_mode(dir, 0o755);
            set_mode(&dumps, 0o777);
            &["-u", "nobody"]
        } else {
            &[]
        };
        let template = format!("{}/%M.", dumps.display());
        let mut last_output = String::new();
        for _ in 0..5 {
            let addr = format!("{ip}:{}", free_tcp_port(ip));
            let mut list = user.to_vec();
            list.extend_from_slice(flags);
            list.extend_from_slice(&["-c", "-d", &template, &addr, "100"]);
            let mut peer = Peer::start(dir, SMTP_SINK, &args(&list));
            wait_until(PEER_START_TIMEOUT, || {
                peer.exited() || TcpStream::connect(&addr).is_ok()
            });
            if !peer.exited() && TcpStream::connect(&addr).is_ok() {
                return Sink { peer, addr, dumps };
            }
            // Most likely someone else took the port: try another one.
            last_output = peer.output();
        }
        panic!("smtp-sink would not start on {ip}: {last_output}");
    }

    /// Messages received so far, from the `-c` counters
    /// (`sess=N quit=N mesg=N`, one update per `\r`).
    fn messages(&self) -> usize {
        self.peer
            .output()
            .split_whitespace()
            .filter_map(|f| f.strip_prefix("mesg=")?.parse().ok())
            .max()
            .unwrap_or(0)
    }

    /// The text of every transaction dumped so far.
    fn dumps(&self) -> Vec<String> {
        let entries = match std::fs::read_dir(&self.dumps) {
            Ok(e) => e,
            Err(e) => panic!("{}: {e}", self.dumps.display()),
        };
        entries
            .flatten()
            .map(|e| String::from_utf8_lossy(&std::fs::read(e.path()).unwrap_or_default()).into())
            .collect()
    }
}

/// dnsmasq on `DNS_IP` and a free UDP port, answering only from `records`
/// (its own options, e.g. `--mx-host=...`) and forwarding nothing.
struct Dns {
    peer: Peer,
    server: String,
}

impl Dns {
    fn start(dir: &Path, records: &[String]) -> Dns {
        let mut last_output = String::new();
        for _ in 0..5 {
            let port = free_udp_port(DNS_IP);
            // --no-daemon: foreground, no pid file, no change of user.
            let mut list = args(&[
                "--no-daemon",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--log-queries",
                "--bind-interfaces",
                &format!("--listen-address={DNS_IP}"),
                &format!("--port={port}"),
            ]);
            list.extend_from_slice(records);
            let mut peer = Peer::start(dir, DNSMASQ, &list);
            // It reports "started" once its sockets are bound.
            wait_until(PEER_START_TIMEOUT, || {
                peer.exited() || peer.output().contains("started, version")
            });
            if !peer.exited() && peer.output().contains("started, version") {
                return Dns {
                    peer,
                    server: format!("{DNS_IP}:{port}"),
                };
            }
            last_output = peer.output();
        }
        panic!("dnsmasq would not start on {DNS_IP}: {last_output}");
    }
}

/// As many shards as there are CPUs, up to two: delivery across shards,
/// on any machine.
fn delivery_shards() -> String {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get().min(2));
    format!("shards = {n}")
}

/// A daemon relaying for loopback that delivers: `delivery` holds its
/// `[dns]`, `[delivery]` and `[[route]]` tables.
fn delivering_daemon(dir: &Path, spool: &Path, delivery: &str) -> Daemon {
    assert!(delivery.contains("[delivery]"), "{delivery}");
    Daemon::start(
        dir,
        spool,
        &delivery_shards(),
        &[Listener::plain("")],
        &format!("[relay]\nnetworks = [\"127.0.0.0/8\"]\n\n{delivery}"),
        None,
    )
}

/// Sends `count` messages from `SENDER` to `RECIPIENT` with smtp-source, in
/// 10 sessions with a new connection per message.
fn send_messages(dir: &Path, d: &Daemon, count: usize) {
    let r = run(
        dir,
        SMTP_SOURCE,
        &args(&[
            "-s",
            "10",
            "-m",
            &count.to_string(),
            "-f",
            SENDER,
            "-t",
            RECIPIENT,
            &format!("127.0.0.1:{}", d.port()),
        ]),
    );
    assert!(r.status.success(), "smtp-source: {}", r.output);
}

/// Sends `count` messages through `d` with smtp-source, waits until `sink`
/// has received them and petrel's spool has nothing left queued, then
/// stops `d` and checks that its spool stays empty. `peers` tells what the
/// peers said if the mail does not arrive.
fn deliver_all(
    dir: &Path,
    d: Daemon,
    spool: &Path,
    sink: &Sink,
    count: usize,
    peers: &dyn Fn() -> String,
) {
    send_messages(dir, &d, count);
    let delivered = wait_until(DELIVERY_TIMEOUT, || sink.messages() >= count);
    assert!(
        delivered,
        "smtp-sink has {} of {count} messages after {DELIVERY_TIMEOUT:?}\n\
         petrel: {}\n{}\n{}",
        sink.messages(),
        d.stderr(),
        inspect(spool),
        peers()
    );
    // The status record follows the sink's 250 closely.
    let finished = wait_until(DELIVERY_TIMEOUT, || total_queued(&inspect(spool)) == 0);
    assert!(finished, "still queued: {}", inspect(spool));
    d.stop();
    assert_eq!(total_queued(&inspect(spool)), 0);
}

/// Checks that the sink got each message smtp-source sent exactly once,
/// from `SENDER` to `RECIPIENT`, with the Received header petrel added.
fn assert_delivered_once(sink: &Sink, count: usize) {
    assert_eq!(sink.messages(), count, "{}", sink.peer.output());
    let dumps = sink.dumps();
    assert_eq!(dumps.len(), count);
    let mut ids = std::collections::HashSet::new();
    for text in &dumps {
        assert!(
            text.contains(&format!("X-Mail-Args: <{SENDER}>\n"))
                && text.contains(&format!("X-Rcpt-Args: <{RECIPIENT}>\n")),
            "{text}"
        );
        assert!(
            text.contains("\tby mx.test.example (petrel) with ")
                && text.contains(&format!("\tfor <{RECIPIENT}>; ")),
            "no Received header from petrel: {text}"
        );
        let id = text.lines().find(|l| l.starts_with("Message-Id: "));
        assert!(ids.insert(id.map(str::to_owned)), "twice: {text}");
    }
}

#[test]
#[ignore = "needs Debian's postfix and dnsmasq; run by .ci/run"]
fn dnsmasq_mx_to_smtp_sink() {
    let dir = tempdir();
    let spool = dir.path().join("spool");
    let sink = Sink::start(dir.path(), MX_IP, &[]);
    let Some((_, sink_port)) = sink.addr.rsplit_once(':') else {
        panic!("{}", sink.addr);
    };
    let dns = Dns::start(
        dir.path(),
        &[
            "--mx-host=interop.test,mx.interop.test,10".to_string(),
            format!("--host-record=mx.interop.test,{MX_IP}"),
        ],
    );
    // No route: the MX of interop.test, on the sink's port.
    let d = delivering_daemon(
        dir.path(),
        &spool,
        &format!(
            "[dns]\nservers = [\"{}\"]\n\n[delivery]\nport = {sink_port}\n",
            dns.server
        ),
    );
    deliver_all(dir.path(), d, &spool, &sink, 200, &|| {
        format!(
            "smtp-sink: {}\ndnsmasq: {}",
            sink.peer.output(),
            dns.peer.output()
        )
    });
    assert_delivered_once(&sink, 200);
    // Names are asked in random case (0x20), which dnsmasq echoes.
    let queries = dns.peer.output();
    assert!(
        queries
            .to_ascii_lowercase()
            .contains("query[mx] interop.test"),
        "{queries}"
    );
}

#[test]
#[ignore = "needs Debian's postfix; run by .ci/run"]
fn smtp_sink_as_relay_with_route() {
    let dir = tempdir();
    let spool = dir.path().join("spool");
    let sink = Sink::start(dir.path(), MX_IP, &[]);
    // A smart host for every domain: no DNS at all.
    let d = delivering_daemon(
        dir.path(),
        &spool,
        &format!(
            "[delivery]\npaused = false\n\n[[route]]\ndomain = \"*\"\nrelay = \"{}\"\n",
            sink.addr
        ),
    );
    deliver_all(dir.path(), d, &spool, &sink, 200, &|| {
        format!("smtp-sink: {}", sink.peer.output())
    });
    assert_delivered_once(&sink, 200);
}

#[test]
#[ignore = "needs Debian's postfix; run by .ci/run"]
fn smtp_sink_5xx_bounces_to_the_sender() {
    let dir = tempdir();
    let spool = dir.path().join("spool");
    // interop.test rejects every recipient with 500 5.3.0; the bounces go
    // to the sender's domain, which has a sink of its own.
    let rejecting = Sink::start(dir.path(), MX_IP, &["-f", "RCPT"]);
    let sender_mx = Sink::start(dir.path(), SENDER_MX_IP, &[]);
    let d = delivering_daemon(
        dir.path(),
        &spool,
        &format!(
            "[delivery]\npaused = false\n\n\
             [[route]]\ndomain = \"interop.test\"\nrelay = \"{}\"\n\n\
             [[route]]\ndomain = \"*\"\nrelay = \"{}\"\n",
            rejecting.addr, sender_mx.addr
        ),
    );
    deliver_all(dir.path(), d, &spool, &sender_mx, 20, &|| {
        format!(
            "rejecting smtp-sink: {}\nsender's smtp-sink: {}",
            rejecting.peer.output(),
            sender_mx.peer.output()
        )
    });
    assert_eq!(rejecting.messages(), 0, "{}", rejecting.peer.output());
    assert_eq!(sender_mx.messages(), 20, "{}", sender_mx.peer.output());
    for text in sender_mx.dumps() {
        for line in [
            "X-Mail-Args: <>\n".to_string(),
            format!("X-Rcpt-Args: <{SENDER}>"),
            "Content-Type: multipart/report; report-type=delivery-status;".to_string(),
            format!("Final-Recipient: rfc822; {RECIPIENT}\n"),
            "Action: failed\n".to_string(),
            "Status: 5.3.0\n".to_string(),
            "Diagnostic-Code: smtp; 500 5.3.0 Error: command failed\n".to_string(),
        ] {
            assert!(text.contains(&line), "no {line:?} in {text}");
        }
    }
}

#[test]
#[ignore = "needs Debian's prometheus (promtool) and swaks; run by .ci/run"]
fn promtool_accepts_the_metrics_after_traffic() {
    use std::io::{Read, Write};
    let dir = tempdir();
    let spool = dir.path().join("spool");
    let admin = common::free_port();
    let d = Daemon::start(
        dir.path(),
        &spool,
        "shards = 2",
        &[Listener::plain("")],
        &format!(
            "[relay]\nnetworks = [\"127.0.0.0/8\"]\n[admin]\naddress = \"127.0.0.1:{admin}\"\n"
        ),
        None,
    );
    let port = d.port().to_string();
    let r = run(
        dir.path(),
        SWAKS,
        &args(&[
            "--server",
            "127.0.0.1",
            "--port",
            &port,
            "--from",
            "a@b.test",
            "--to",
            "x@remote.test",
        ]),
    );
    assert!(r.status.success(), "swaks: {}", r.output);
    let mut s = TcpStream::connect(("127.0.0.1", admin)).expect("admin endpoint");
    write!(s, "GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    assert!(body.contains("petrel_messages_received_total"), "{text}");
    let metrics = dir.path().join("metrics.txt");
    std::fs::write(&metrics, body).unwrap();
    let check = run(
        dir.path(),
        "/bin/sh",
        &args(&[
            "-c",
            &format!("{PROMTOOL} check metrics < {}", metrics.display()),
        ]),
    );
    assert!(check.status.success(), "promtool: {}\n{body}", check.output);
    assert!(check.output.trim().is_empty(), "promtool: {}", check.output);
    d.stop();
}

/// Verifies every `DKIM-Signature` of a message with dkimpy, the public
/// keys handed to it as the TXT records `petrel dkim keygen` printed (by
/// name, `<selector>._domainkey.<domain>`); prints one line per signature.
const DKIMPY_VERIFY: &str = r#"
import sys, dkim
message = open(sys.argv[1], "rb").read()
count = int(sys.argv[2])
records = dict(zip(sys.argv[3::2], sys.argv[4::2]))
def txt(name, timeout=5):
    name = name.decode() if isinstance(name, bytes) else name
    record = records.get(name.rstrip("."))
    return record.encode() if record is not None else None
d = dkim.DKIM(message)
ok = count > 0
for i in range(count):
    good = d.verify(idx=i, dnsfunc=txt)
    print("signature", i, "verifies" if good else "FAILS")
    ok = ok and good
sys.exit(0 if ok else 1)
"#;

/// Sends `message` (dot-stuffed, ending in CRLF) from `alice@example.com`
/// through a petrel that signs for example.com with an RSA and an Ed25519
/// key, captures it, and has dkimpy verify it; returns what arrived.
fn dkimpy_verifies(mail_params: &str, message: &[u8]) -> dkim::Captured {
    let dir = tempdir();
    let keys = dir.path().join("keys");
    let rsa = dkim::keygen(&keys, "rsa", "example.com", "r2026");
    let ed = dkim::keygen(&keys, "ed25519", "example.com", "e2026");
    let m = dkim::relay_one(
        dir.path(),
        &[&rsa, &ed],
        "alice@example.com",
        mail_params,
        message,
    );
    assert_eq!(
        m.signatures.len(),
        2,
        "{}",
        String::from_utf8_lossy(&m.message)
    );
    let path = dir.path().join("captured.eml");
    std::fs::write(&path, &m.message).unwrap();
    let mut call = vec!["-c".to_owned(), DKIMPY_VERIFY.to_owned()];
    call.push(path.display().to_string());
    call.push(m.signatures.len().to_string());
    for key in [&rsa, &ed] {
        call.push(format!("{}._domainkey.{}", key.selector, key.domain));
        call.push(key.record.clone());
    }
    let r = run(dir.path(), PYTHON, &call);
    assert!(
        r.status.success() && r.output.matches("verifies").count() == 2,
        "dkimpy: {}\n{}",
        r.output,
        String::from_utf8_lossy(&m.message)
    );
    m
}

#[test]
#[ignore = "needs Debian's python3-dkim; run by .ci/run"]
fn dkimpy_verifies_rsa_and_ed25519_signatures_on_one_message() {
    let m = dkimpy_verifies(
        "",
        b"From: Alice <alice@example.com>\r\nTo: rcpt@example.net\r\n\
          Subject: two signatures\r\nDate: Mon, 2 Mar 2026 10:00:00 +0000\r\n\
          Message-ID: <1@example.com>\r\n\r\nHello\r\n",
    );
    assert!(m.signatures[0].contains("a=rsa-sha256"));
    assert!(m.signatures[1].contains("a=ed25519-sha256"));
}

#[test]
#[ignore = "needs Debian's python3-dkim; run by .ci/run"]
fn dkimpy_verifies_a_message_with_a_long_folded_header() {
    let mut message = b"From: Alice <alice@example.com>\r\nTo: a@example.net,\r\n".to_vec();
    for i in 0..60 {
        message.extend_from_slice(format!("\t  recipient-{i}@example.net,\r\n").as_bytes());
    }
    message.extend_from_slice(
        b" last@example.net\r\nSubject: folded\r\n   over   lines\r\n\r\nHi\r\n",
    );
    let m = dkimpy_verifies("", &message);
    assert!(m.header.len() > 1500, "the header is long");
}

#[test]
#[ignore = "needs Debian's python3-dkim; run by .ci/run"]
fn dkimpy_verifies_an_8bit_body() {
    let text = "From: alice@example.com\r\nSubject: 8-bit\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
         Grüße, café, 日本語\r\n";
    let message = [text.as_bytes(), b"\xff\xfe is not even UTF-8\r\n"].concat();
    let m = dkimpy_verifies(" BODY=8BITMIME", &message);
    assert!(m.body.iter().any(|&b| b >= 0x80));
}

#[test]
#[ignore = "needs Debian's python3-dkim; run by .ci/run"]
fn dkimpy_verifies_a_body_with_lines_starting_with_a_dot() {
    let m = dkimpy_verifies(
        "",
        b"From: alice@example.com\r\nSubject: dots\r\n\r\n..one dot\r\n...two dots\r\n..\r\nend\r\n",
    );
    assert_eq!(m.body, b".one dot\r\n..two dots\r\n.\r\nend\r\n");
}

#[test]
#[ignore = "needs Debian's python3-dkim; run by .ci/run"]
fn a_message_whose_from_domain_has_no_key_arrives_unsigned_and_unchanged() {
    let dir = tempdir();
    let rsa = dkim::keygen(&dir.path().join("keys"), "rsa", "example.com", "r2026");
    let header = b"From: Bob <bob@example.org>\r\nTo: rcpt@example.net\r\n\
                   Subject:  spaced\t and\r\n folded \r\nX-Other: kept\r\n\r\n";
    let message = [header.as_slice(), b"Body\r\n"].concat();
    let m = dkim::relay_one(dir.path(), &[&rsa], "bob@example.org", "", &message);
    assert!(
        m.signatures.is_empty(),
        "{}",
        String::from_utf8_lossy(&m.message)
    );
    assert!(m.message.starts_with(b"Received: "));
    assert_eq!(m.client_header(), header);
    assert_eq!(m.body, b"Body\r\n");
    // dkimpy sees no signature to verify.
    let path = dir.path().join("captured.eml");
    std::fs::write(&path, &m.message).unwrap();
    let script = "import sys, dkim; sys.exit(0 if dkim.verify(open(sys.argv[1], 'rb').read()) is False else 1)";
    let r = run(
        dir.path(),
        PYTHON,
        &args(&["-c", script, &path.display().to_string()]),
    );
    assert!(r.status.success(), "dkimpy: {}", r.output);
}
