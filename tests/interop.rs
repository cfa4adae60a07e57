//! Interoperability with real SMTP clients no one here wrote: Postfix's
//! smtp-source and swaks, from Debian's packages, which `.ci/run` installs
//! and then runs these tests with `--ignored`.

mod common;

use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{
    inspect, live_and_pending, tempdir, total_queued, users_file, Daemon, Listener, TestCert,
};

const SMTP_SOURCE: &str = "/usr/sbin/smtp-source";
const SWAKS: &str = "/usr/bin/swaks";

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
    assert!(
        Path::new(program).exists(),
        "{program} is missing: install Debian's postfix and swaks (.ci/run does)"
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
    let mut child = match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!("cannot run {program}: {e}"),
    };
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
