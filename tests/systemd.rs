//! petrel under systemd: the unit passes `systemd-analyze verify`, and the
//! daemon speaks the notify protocol on the socket named by NOTIFY_SOCKET
//! (here a datagram socket the test binds): READY=1 only once every shard
//! accepts, STOPPING=1 at SIGTERM, WATCHDOG=1 pings when WATCHDOG_USEC
//! asks for them.

mod common;

use std::ffi::OsStr;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{free_port, tempdir, Client, Daemon, Listener, START_TIMEOUT};

const UNIT: &str = include_str!("../systemd/petrel.service");

/// The `[Service]` settings of the unit as `(key, value)` pairs.
fn service_settings(unit: &str) -> Vec<(&str, &str)> {
    let mut section = "";
    let mut settings = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if section == "[Service]" && !line.starts_with('#') {
            if let Some((key, value)) = line.split_once('=') {
                settings.push((key, value));
            }
        }
    }
    settings
}

#[test]
fn the_unit_is_a_notify_service_with_a_watchdog_and_a_reload() {
    let settings = service_settings(UNIT);
    for wanted in [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("WatchdogSec", "30s"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
    ] {
        assert!(settings.contains(&wanted), "{wanted:?} not in {settings:?}");
    }
}

/// The unit as installed, with its program at the path the build left it
/// (verify checks that ExecStart= names an executable).
fn unit_for_this_build() -> String {
    let mut unit = String::new();
    for line in UNIT.lines() {
        match line.strip_prefix("ExecStart=/usr/local/bin/petrel ") {
            Some(args) => unit.push_str(&format!(
                "ExecStart={} {args}",
                env!("CARGO_BIN_EXE_petrel")
            )),
            None => unit.push_str(line),
        }
        unit.push('\n');
    }
    assert_ne!(
        unit,
        format!("{UNIT}\n"),
        "no ExecStart= of /usr/local/bin/petrel"
    );
    unit
}

#[test]
fn systemd_analyze_verify_finds_nothing_in_the_unit() {
    let dir = tempdir();
    let path = dir.path().join("petrel.service");
    common::write(&path, unit_for_this_build().as_bytes());
    let out = match Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var_os("CI").is_none(),
                "systemd-analyze is missing (.ci/run installs the systemd package)"
            );
            eprintln!("systemd-analyze is not installed: the unit was not verified");
            return;
        }
        Err(e) => panic!("running systemd-analyze: {e}"),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "systemd-analyze verify: {text}");
    // Lines about other units (the targets it is ordered after) are the
    // system's business; none may be about this one or its program.
    let ours: Vec<&str> = text.lines().filter(|l| l.contains("petrel")).collect();
    assert!(ours.is_empty(), "systemd-analyze verify: {text}");
}

/// A notify socket in `dir`, as a service manager would bind it.
fn notify_socket(dir: &Path) -> (std::path::PathBuf, UnixDatagram) {
    let path = dir.join("notify");
    let socket = match UnixDatagram::bind(&path) {
        Ok(s) => s,
        Err(e) => panic!("bind {}: {e}", path.display()),
    };
    // Short reads, so that a daemon that exits is noticed between them.
    if let Err(e) = socket.set_read_timeout(Some(Duration::from_millis(200))) {
        panic!("socket timeout: {e}");
    }
    (path, socket)
}

/// Reads notifications until one has the line `wanted`, and returns every
/// line read; `None` if the daemon exited first.
fn wait_for(socket: &UnixDatagram, daemon: &mut Daemon, wanted: &str) -> Option<Vec<String>> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut lines = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match socket.recv(&mut buf) {
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                lines.extend(text.lines().map(str::to_string));
                if text.lines().any(|l| l == wanted) {
                    return Some(lines);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("reading the notify socket: {e}"),
        }
        if daemon.try_wait().is_some() {
            return None;
        }
        assert!(
            Instant::now() < deadline,
            "no {wanted} within {START_TIMEOUT:?}; got {lines:?}: {}",
            daemon.stderr()
        );
    }
}

/// Starts petrel with two shards and `env`, and waits for READY=1; retries
/// on other ports when the daemon exits first (another process took the
/// port). Returns the daemon and the lines read until READY=1.
fn start_until_ready(
    dir: &Path,
    socket: &UnixDatagram,
    env: &[(&str, &OsStr)],
) -> (Daemon, Vec<String>) {
    let spool = dir.join("spool");
    let mut last_error = String::new();
    for attempt in 0..5 {
        let ports = vec![free_port()];
        let listeners = [Listener::plain("")];
        let mut daemon = Daemon::spawn(
            dir,
            &spool,
            "shards = 2",
            &listeners,
            "",
            ports,
            attempt,
            env,
        );
        match wait_for(socket, &mut daemon, "READY=1") {
            Some(lines) => return (daemon, lines),
            None => last_error = daemon.stderr(),
        }
    }
    panic!("petrel would not start: {last_error}");
}

#[test]
fn ready_once_every_shard_accepts_and_stopping_at_sigterm() {
    let dir = tempdir();
    let (path, socket) = notify_socket(dir.path());
    let env = [("NOTIFY_SOCKET", path.as_os_str())];
    let (daemon, lines) = start_until_ready(dir.path(), &socket, &env);
    assert!(
        lines.iter().any(|l| l.starts_with("STATUS=")),
        "no STATUS= with READY=1: {lines:?}"
    );
    // Once READY=1 is sent the port accepts at the first attempt, whichever
    // shard the connection lands on.
    for _ in 0..4 {
        let mut c = Client::connect(daemon.port());
        c.expect("220");
        c.cmd("QUIT", "221");
    }
    // A reload says RELOADING=1 (with the monotonic time systemd wants),
    // then READY=1 again.
    let mut daemon = daemon;
    daemon.signal("HUP");
    let reload = wait_for(&socket, &mut daemon, "READY=1").expect("READY=1 after the reload");
    assert!(reload.iter().any(|l| l == "RELOADING=1"), "{reload:?}");
    assert!(
        reload.iter().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{reload:?}"
    );
    daemon.stop();
    let mut after = Vec::new();
    let mut buf = [0u8; 4096];
    // The daemon has exited: whatever it sent is queued on the socket.
    while let Ok(n) = socket.recv(&mut buf) {
        after.extend(
            String::from_utf8_lossy(&buf[..n])
                .lines()
                .map(str::to_string),
        );
    }
    assert!(after.iter().any(|l| l == "STOPPING=1"), "{after:?}");
    // No watchdog was asked for, so none was pinged.
    assert!(
        !lines.iter().chain(&after).any(|l| l == "WATCHDOG=1"),
        "{lines:?} {after:?}"
    );
}

#[test]
fn watchdog_pings_when_watchdog_usec_is_set() {
    let dir = tempdir();
    let (path, socket) = notify_socket(dir.path());
    // No WATCHDOG_PID: it would have to be the daemon's own pid, unknown
    // before the spawn; without it the watchdog is meant for the process
    // that reads WATCHDOG_USEC. 2 s: a ping every second.
    let env = [
        ("NOTIFY_SOCKET", path.as_os_str()),
        ("WATCHDOG_USEC", OsStr::new("2000000")),
    ];
    let (mut daemon, _) = start_until_ready(dir.path(), &socket, &env);
    for _ in 0..2 {
        if wait_for(&socket, &mut daemon, "WATCHDOG=1").is_none() {
            panic!("petrel exited: {}", daemon.stderr());
        }
    }
    daemon.stop();
}

/// Runs `systemd-analyze` with `args`; `None` (after saying so) when it is
/// not installed, which CI does not allow.
fn systemd_analyze(args: &[&OsStr]) -> Option<(bool, String)> {
    match Command::new("systemd-analyze").args(args).output() {
        Ok(out) => Some((
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var_os("CI").is_none(),
                "systemd-analyze is missing (.ci/run installs the systemd package)"
            );
            eprintln!("systemd-analyze is not installed: the unit was not checked");
            None
        }
        Err(e) => panic!("running systemd-analyze: {e}"),
    }
}

/// The exposure `systemd-analyze security` gives: "→ Overall exposure
/// level for petrel.service: 1.6 OK".
fn exposure(text: &str) -> Option<f64> {
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))?;
    let (_, rest) = line.split_once(": ")?;
    rest.split_whitespace().next()?.parse().ok()
}

#[test]
fn the_exposure_parser_reads_the_overall_level() {
    let text =
        "✗ UMask= Files created 0.1\n\n→ Overall exposure level for petrel.service: 3.5 OK 🙂\n";
    assert_eq!(exposure(text), Some(3.5));
    assert_eq!(exposure("no such line"), None);
}

#[test]
fn systemd_analyze_security_rates_the_sandbox_at_most_2() {
    let dir = tempdir();
    let path = dir.path().join("petrel.service");
    common::write(&path, unit_for_this_build().as_bytes());
    let Some((ok, text)) = systemd_analyze(&[
        OsStr::new("security"),
        OsStr::new("--offline=yes"),
        path.as_os_str(),
    ]) else {
        return;
    };
    assert!(ok, "systemd-analyze security: {text}");
    let level = exposure(&text).unwrap_or_else(|| panic!("no exposure level in: {text}"));
    assert!(level <= 2.0, "exposure {level} above 2.0:\n{text}");
}

#[test]
fn the_sandbox_keeps_io_uring_the_notify_socket_and_the_listener_ports() {
    let settings = service_settings(UNIT);
    let has = |k: &str, v: &str| settings.contains(&(k, v));
    let filters: Vec<&str> = settings
        .iter()
        .filter(|(k, _)| *k == "SystemCallFilter")
        .map(|(_, v)| *v)
        .collect();
    assert!(
        filters[0].starts_with("@system-service")
            && ["io_uring_setup", "io_uring_enter", "io_uring_register"]
                .iter()
                .all(|c| filters[0].split(' ').any(|w| w == *c)),
        "{filters:?}"
    );
    // Denied groups must not take away what petrel calls: pinning and
    // raising RLIMIT_MEMLOCK are allowed again after the deny list.
    let deny = filters.iter().position(|f| f.starts_with('~'));
    let again = filters
        .iter()
        .position(|f| f.contains("sched_setaffinity") && f.contains("setrlimit"));
    assert!(
        matches!((deny, again), (Some(d), Some(a)) if a > d),
        "{filters:?}"
    );
    let families = settings
        .iter()
        .find(|(k, _)| *k == "RestrictAddressFamilies")
        .map(|(_, v)| *v)
        .unwrap_or("");
    for family in ["AF_INET", "AF_INET6", "AF_UNIX"] {
        assert!(families.split(' ').any(|f| f == family), "{families}");
    }
    for port in ["25", "465", "587", "9925"] {
        assert!(has("SocketBindAllow", &format!("tcp:{port}")), "{port}");
    }
    assert!(has("SocketBindDeny", "any"));
    let memlock = settings
        .iter()
        .find(|(k, _)| *k == "LimitMEMLOCK")
        .map(|(_, v)| *v);
    assert_eq!(memlock, Some("2G"), "bounded, and room for the shards");
}

/// Why `systemd-run` cannot start a sandboxed service here, if it cannot.
fn no_service_manager() -> Option<String> {
    if !Path::new("/run/systemd/system").is_dir() {
        return Some(
            "systemd is not the service manager (no /run/systemd/system; a container?)".into(),
        );
    }
    if !rustix::process::geteuid().is_root() {
        return Some("not root: a system service cannot be started".into());
    }
    match Command::new("systemd-run").arg("--version").output() {
        Ok(out) if out.status.success() => None,
        _ => Some("systemd-run is not installed".into()),
    }
}

/// The unit's sandbox as `systemd-run` properties, with the listener port
/// `port` allowed in place of the shipped ones, and `dir` writable.
fn sandbox_properties(port: u16, dir: &Path) -> Vec<String> {
    let skip = [
        "ExecStart",
        "ExecStartPre",
        "User",
        "Group",
        "ReadWritePaths",
        "ConfigurationDirectory",
        "SocketBindAllow",
        "Restart",
        "RestartSec",
        "WatchdogSec",
        "TimeoutStartSec",
        "AmbientCapabilities",
        "CapabilityBoundingSet",
        "Environment",
        "ProtectHome",
        "PrivateTmp",
    ];
    let mut props: Vec<String> = service_settings(UNIT)
        .into_iter()
        .filter(|(k, _)| !skip.contains(k))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    props.push(format!("SocketBindAllow=tcp:{port}"));
    props.push(format!("ReadWritePaths={}", dir.display()));
    props
}

#[test]
fn petrel_runs_under_the_units_sandbox_with_systemd_run() {
    if let Some(why) = no_service_manager() {
        eprintln!("COULD NOT RUN petrel under the unit's sandbox: {why}; only the unit's settings and its security rating were checked");
        return;
    }
    let dir = tempdir();
    let port = free_port();
    let spool = dir.path().join("spool");
    let config = dir.path().join("petrel.toml");
    common::write(
        &config,
        format!(
            "[server]\nhostname = \"mx.test.example\"\nshards = 1\n\n[spool]\npath = \"{}\"\nsegment_size = 1048576\nmin_free_space = 0\n\n[[listener]]\naddress = \"127.0.0.1:{port}\"\n\n[admin]\naddress = \"\"\n\n[delivery]\npaused = true\n",
            spool.display()
        )
        .as_bytes(),
    );
    let unit = format!("petrel-sandbox-test-{port}");
    let mut run = Command::new("systemd-run");
    run.arg(format!("--unit={unit}")).arg("--collect");
    for p in sandbox_properties(port, dir.path()) {
        run.arg("-p").arg(p);
    }
    run.arg(env!("CARGO_BIN_EXE_petrel"))
        .args(["run", "--config"])
        .arg(&config);
    let out = run.output().expect("systemd-run");
    assert!(
        out.status.success(),
        "systemd-run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Type=notify: systemd-run returns once READY=1 came, so the shard's
    // io_uring ring is up and the listener accepts.
    let mut c = Client::connect(port);
    c.expect("220");
    c.cmd("EHLO client.test.example", "250");
    c.cmd("QUIT", "221");
    let reload = Command::new("systemctl").args(["reload", &unit]).status();
    let stop = Command::new("systemctl").args(["stop", &unit]).status();
    assert!(
        reload.is_ok_and(|s| s.success()),
        "reload under the sandbox"
    );
    assert!(stop.is_ok_and(|s| s.success()), "stop under the sandbox");
}
