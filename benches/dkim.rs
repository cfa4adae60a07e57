//! dkim benchmark: the CPU cost of DKIM-signing one 1 KiB message (header
//! section and body hash included) with RSA-2048 and with Ed25519, the
//! median of many signatures, printed beside petrel's CPU per message at
//! 1 KiB without signing so the added cost can be read off.
//!
//! It calls `petrel::dkim::message::sign` the way a shard does at
//! reception: the message in two chunks (the `Received:` field, then the
//! client's), one table with the key. Run: `cargo bench --bench dkim`
//! (a few seconds; `--count N` signatures per algorithm, default 2000).

use std::time::Instant;

use petrel::config::Config;
use petrel::dkim::{keygen, message, Algorithm, SignerTable};

/// petrel's CPU per 1 KiB message without signing on the machine the
/// relay benchmark last ran on (benches/README.md), in microseconds.
const UNSIGNED_CPU_US: &str = "60-80";

fn message_1k() -> (Vec<u8>, Vec<u8>) {
    let received = b"Received: from client.example (client.example [192.0.2.7])\r\n\
        \tby mta.example with ESMTP id 0-1; Mon, 2 Mar 2026 10:00:00 +0000\r\n"
        .to_vec();
    let mut rest = b"From: Alice <alice@example.com>\r\nTo: bob@example.net\r\n\
        Subject: a one kilobyte message\r\nDate: Mon, 2 Mar 2026 10:00:00 +0000\r\n\
        Message-ID: <1@example.com>\r\n\r\n"
        .to_vec();
    while received.len() + rest.len() < 1024 {
        rest.extend_from_slice(b"The quick brown fox jumps over the lazy dog, again.\r\n");
    }
    (received, rest)
}

fn table(dir: &std::path::Path, algorithm: Algorithm) -> SignerTable {
    let key = keygen::generate(algorithm, 2048).expect("key");
    let path = dir.join(format!("{}.pem", algorithm.key_type()));
    std::fs::write(&path, key.pem).expect("write key");
    let text = format!(
        "[[dkim]]\ndomain = \"example.com\"\nselector = \"s\"\nprivate_key = {path:?}\nalgorithm = \"{}\"\n",
        algorithm.name()
    );
    let config = Config::from_str_named(&text, "bench").expect("config");
    SignerTable::load(&config).expect("table")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut count = 2000usize;
    while let Some(a) = args.next() {
        if a == "--count" {
            count = args.next().and_then(|n| n.parse().ok()).unwrap_or(count);
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (received, rest) = message_1k();
    let parts: [&[u8]; 2] = [&received, &rest];
    println!("DKIM signing, 1 KiB message, median of {count}:");
    for algorithm in [Algorithm::RsaSha256, Algorithm::Ed25519Sha256] {
        let table = table(dir.path(), algorithm);
        let mut times = Vec::with_capacity(count);
        for _ in 0..count {
            let start = Instant::now();
            let fields = message::sign(&table, &parts, 1_772_000_000).expect("sign");
            times.push(start.elapsed());
            assert!(fields.is_some_and(|f| f.starts_with("DKIM-Signature:")));
        }
        times.sort();
        let median = times[times.len() / 2];
        println!(
            "  {:<15} {:>8.1} us per message (unsigned: petrel uses about {UNSIGNED_CPU_US} us of CPU per 1 KiB message)",
            algorithm.name(),
            median.as_secs_f64() * 1e6
        );
    }
}
