//! What a hostile client gets for its input, over real TCP: spool bytes
//! per body byte whatever the BDAT chunking, and reply bytes per command
//! byte for floods of commands that move no mail.

mod common;

use common::{begin_transaction, inspect, tempdir, Client, Daemon};

/// Body octets of each test message.
const BODY_LEN: usize = 8000;

/// `used` bytes and chunk records over the spool's segments, from
/// `petrel spool inspect`.
fn spool_use(report: &str) -> (usize, usize) {
    let (mut used, mut chunks) = (0, 0);
    for line in report.lines().filter(|l| l.trim().starts_with("segment ")) {
        let field = |after: &str, before: &str| -> usize {
            let Some(rest) = line.split(after).nth(1) else {
                panic!("no {after:?} in {line:?}");
            };
            let n = rest.split(before).next().unwrap_or_default();
            n.parse().unwrap_or_else(|e| panic!("{line:?}: {e}"))
        };
        used += field(", used ", ",");
        chunks += field(" message, ", " chunk");
    }
    (used, chunks)
}

/// Sends one message of `BODY_LEN` octets in BDAT chunks of `chunk`
/// octets (pipelined in batches), then reports the spool's use.
fn spool_use_for_chunking(chunk: usize) -> (usize, usize) {
    let dir = tempdir();
    let spool = dir.path().join("spool");
    let d = Daemon::start_plain(dir.path(), &spool, "shards = 1", "", "");
    let mut c = d.connect();
    begin_transaction(&mut c);
    let body: Vec<u8> = (0..BODY_LEN).map(|i| b'a' + (i % 26) as u8).collect();
    let pieces: Vec<&[u8]> = body.chunks(chunk).collect();
    for (n, batch) in pieces.chunks(256).enumerate() {
        let mut wire = Vec::new();
        for (i, piece) in batch.iter().enumerate() {
            let last = n * 256 + i + 1 == pieces.len();
            let verb = if last { " LAST" } else { "" };
            wire.extend_from_slice(format!("BDAT {}{verb}\r\n", piece.len()).as_bytes());
            wire.extend_from_slice(piece);
        }
        c.send_bytes(&wire);
        for _ in batch {
            c.expect("250 2.0.0");
        }
    }
    c.cmd("QUIT", "221");
    d.stop();
    spool_use(&inspect(&spool))
}

#[test]
fn spool_bytes_per_body_byte_stay_small_for_any_bdat_chunking() {
    // One chunk: the segment header, envelope and Received: header are the
    // fixed cost of a message; what is left is the body's.
    let (whole, _) = spool_use_for_chunking(BODY_LEN);
    let fixed = whole - BODY_LEN;
    for chunk in [1, 3, 100, 1000, 4095, 4097, 5000] {
        let (used, chunks) = spool_use_for_chunking(chunk);
        let per_byte = (used - fixed) as f64 / BODY_LEN as f64;
        assert!(
            per_byte < 1.1,
            "BDAT {chunk}: {per_byte:.2} spool bytes per body byte ({used} used)"
        );
        // The message's chunk references (held in memory until it is
        // committed) do not grow with the number of BDAT commands.
        assert!(chunks <= 6, "BDAT {chunk}: {chunks} chunk records");
    }
}

/// Pipelines `line` in batches of 64 until the server closes the
/// connection; the octets sent and received.
fn flood(d: &Daemon, line: &str) -> (usize, usize, String) {
    let mut c = d.connect();
    let greeting = c.expect("220");
    let (mut sent, mut received) = (0, greeting.len() + 2);
    let batch = line.repeat(64);
    let mut last = String::new();
    // A safety net far above where the session must end.
    for _ in 0..1000 {
        c.send_bytes(batch.as_bytes());
        sent += batch.len();
        for _ in 0..64 {
            match c.try_reply() {
                Some(r) => {
                    // Lines were joined with one `\n` for their two-octet CRLF.
                    received += r.len() + r.lines().count() + 1;
                    last = r;
                }
                None => return (sent, received, last),
            }
        }
    }
    panic!("the session was never closed; last reply {last:?}");
}

#[test]
fn floods_of_commands_that_move_no_mail_end_the_session() {
    let dir = tempdir();
    let spool = dir.path().join("spool");
    let d = Daemon::start_plain(dir.path(), &spool, "shards = 1", "", "");
    for line in ["EHLO x\r\n", "NOOP\r\n", "HELP\r\n"] {
        let (sent, received, last) = flood(&d, line);
        assert!(
            last.starts_with("421 4.7.0"),
            "{line:?}: the session ended with {last:?}"
        );
        // 100 free commands and 20 counted as errors: a bounded answer to a
        // flood of any length (64 KiB of EHLO once drew 1.2 MB).
        assert!(
            received <= 20 * 1024,
            "{line:?}: {received} bytes of replies"
        );
        assert!(
            sent <= 2 * 1024,
            "{line:?}: {sent} bytes read before closing"
        );
    }
    let mut c: Client = d.connect();
    c.hello();
}
