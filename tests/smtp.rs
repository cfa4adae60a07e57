//! The daemon over real TCP: `petrel run` with a temporary config on a free
//! port, spoken to in raw SMTP the way a client would, and the spool it
//! leaves behind read back with `petrel spool inspect`.

mod common;
#[path = "support/shard.rs"]
mod shard_support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{inspect, queued_id, send_message, tempdir, total_queued, Client, Daemon};

/// How long a freed connection slot may take to become usable again.
const SLOT_TIMEOUT: Duration = Duration::from_secs(10);

const BODY: &str = "From: a@client.test.example\r\nSubject: hi\r\n\r\nhello\r\n";

#[test]
fn accepted_mail_is_durable_and_survives_a_restart() {
    let dir = tempdir();
    let spool = dir.path().join("spool");
    let d = Daemon::start_plain(dir.path(), &spool, "shards = 1", "", "");
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

    let d = Daemon::start_plain(dir.path(), &spool, "shards = 1", "", "");
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
    let d = Daemon::start_plain(dir.path(), &spool, "shards = 1", "", "");
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
    let d = Daemon::start_plain(dir.path(), &dir.path().join("a"), "shards = 1", "", "");
    let mut c = d.connect();
    c.hello();
    c.cmd("MAIL FROM:<s@client.test.example>", "250 2.1.0");
    c.cmd("RCPT TO:<u@remote.test.example>", "250 2.1.5");
    c.cmd("QUIT", "221");
    d.stop();

    let d = Daemon::start_plain(
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
    let d = Daemon::start_plain(
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
    let d = Daemon::start_plain(
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
    let deadline = Instant::now() + SLOT_TIMEOUT;
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
    let d = Daemon::start_plain(dir.path(), &spool, "shards = 2", "", "");
    let port = d.port();
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

#[test]
fn an_idle_client_is_told_421_when_its_command_timeout_passes() {
    let dir = tempdir();
    let d = Daemon::start_plain(
        dir.path(),
        &dir.path().join("spool"),
        "shards = 1",
        "command_timeout = \"1s\"",
        "",
    );
    let mut c = d.connect();
    c.hello();
    let started = Instant::now();
    c.expect("421 4.4.2");
    c.expect_closed();
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "timed out early"
    );
    d.stop();
}

#[test]
fn sigterm_tells_idle_sessions_421_and_exits_promptly() {
    let dir = tempdir();
    let d = Daemon::start_plain(dir.path(), &dir.path().join("spool"), "shards = 1", "", "");
    let mut c = d.connect();
    c.hello();
    let started = Instant::now();
    let status = std::thread::scope(|s| {
        let stopper = s.spawn(|| d.terminate());
        c.expect("421 4.3.2");
        c.expect_closed();
        stopper.join().expect("terminate")
    });
    assert!(status.success(), "{status:?}");
    // Far below the 30 s grace period: the idle session did not hold it up.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn bdat_chunks_abandoned_by_rset_are_not_part_of_the_next_message() {
    let dir = tempdir();
    let spool = dir.path().join("spool");
    let d = Daemon::start_plain(dir.path(), &spool, "shards = 1", "", "");
    let mut c = d.connect();
    common::begin_transaction(&mut c);
    c.send("BDAT 12\r\nSTALE-CHUNK!");
    c.expect("250");
    c.cmd("RSET", "250");
    c.cmd("MAIL FROM:<a@example.test>", "250");
    c.cmd("RCPT TO:<b@example.test>", "250");
    c.send("BDAT 10 LAST\r\nFRESH-ONE\n");
    let reply = c.reply();
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    let id = queued_id(&reply);
    c.cmd("QUIT", "221");
    d.stop();
    assert_eq!(total_queued(&inspect(&spool)), 1);
    // The stored body is the second transaction's alone.
    let msg_id = u64::from_str_radix(&id[2..], 16).expect("hex id");
    let shard_dir = spool.join("shard-0");
    let body = shard_support::on_shard(move || async move {
        let opts = petrel::spool::SpoolOptions {
            dir: shard_dir,
            shard: 0,
            segment_size: 1 << 20,
        };
        let (s, _, _lock) = petrel::spool::recovery::open_shard(opts, 1).expect("open");
        let mut body = Vec::new();
        s.read_body(msg_id, &mut body).expect("body");
        s.close();
        body
    });
    assert!(common::contains(&body, b"FRESH-ONE"));
    assert!(
        !common::contains(&body, b"STALE-CHUNK!"),
        "{}",
        String::from_utf8_lossy(&body)
    );
}

#[test]
fn a_body_trickled_in_tiny_packets_is_not_one_record_per_packet() {
    let dir = tempdir();
    let spool = dir.path().join("spool");
    let d = Daemon::start_plain(dir.path(), &spool, "shards = 1", "", "");
    let mut c = d.connect();
    c.hello();
    c.cmd("MAIL FROM:<a@example.test>", "250");
    c.cmd("RCPT TO:<b@example.test>", "250");
    c.cmd("DATA", "354");
    for _ in 0..200 {
        c.send("xxxxxxxxxx");
        std::thread::sleep(Duration::from_millis(1));
    }
    c.send("\r\n.\r\n");
    let reply = c.reply();
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    c.cmd("QUIT", "221");
    d.stop();
    let report = inspect(&spool);
    let chunks: usize = report
        .lines()
        .filter_map(|l| l.split(" message, ").nth(1))
        .filter_map(|rest| rest.split(' ').next()?.parse::<usize>().ok())
        .sum();
    // The Received: header, and the body in as few pieces as arrived at
    // once: not one record per 10-byte packet.
    assert!(
        (2..=4).contains(&chunks),
        "{chunks} chunk records\n{report}"
    );
}
