//! dkim benchmark: the CPU cost of DKIM-signing one 1 KiB message (header
//! section and body hash included) with RSA-2048 and with Ed25519, the
//! median of many signatures, printed beside petrel's CPU per message at
//! 1 KiB without signing so the added cost can be read off.
//!
//! It calls `petrel::dkim::message::sign` the way a shard does at
//! reception: the message in two chunks (the `Received:` field, then the
//! client's), one table with the key. Then Ed25519 again with 10,000
//! signing domains in a `[signing] key_dir`, each message from the next
//! domain, next to one domain: what a platform that signs for its
//! customers pays for the size of its table. Run: `cargo bench --bench
//! dkim` (a few seconds; `--count N` signatures per case, default 2000).

use std::time::Instant;

use petrel::config::Config;
use petrel::dkim::{keygen, message, Algorithm, SignerTable};

/// petrel's CPU per 1 KiB message without signing on the machine the
/// relay benchmark last ran on (benches/README.md), in microseconds.
const UNSIGNED_CPU_US: &str = "60-80";

/// Signing domains in the key directory case.
const MANY_DOMAINS: usize = 10_000;

fn message_1k(from_domain: &str) -> (Vec<u8>, Vec<u8>) {
    let received = b"Received: from client.example (client.example [192.0.2.7])\r\n\
        \tby mta.example with ESMTP id 0-1; Mon, 2 Mar 2026 10:00:00 +0000\r\n"
        .to_vec();
    let mut rest = format!(
        "From: Alice <alice@{from_domain}>\r\nTo: bob@example.net\r\n\
        Subject: a one kilobyte message\r\nDate: Mon, 2 Mar 2026 10:00:00 +0000\r\n\
        Message-ID: <1@{from_domain}>\r\n\r\n"
    )
    .into_bytes();
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

/// A `[signing] key_dir` under `dir` with an Ed25519 key for each of
/// `domains`, loaded as the daemon loads it.
fn key_dir_table(dir: &std::path::Path, domains: &[String]) -> SignerTable {
    let keys = dir.join("keys");
    for domain in domains {
        let key = keygen::generate(Algorithm::Ed25519Sha256, 0).expect("key");
        std::fs::create_dir_all(keys.join(domain)).expect("mkdir");
        std::fs::write(keys.join(domain).join("s.pem"), key.pem).expect("write key");
    }
    let text = format!("[signing]\nkey_dir = {keys:?}\n");
    let config = Config::from_str_named(&text, "bench").expect("config");
    let table = SignerTable::load(&config).expect("table");
    assert_eq!(table.len(), domains.len());
    table
}

/// The median time to sign `count` messages, taken from `messages` in turn.
fn median_sign(table: &SignerTable, messages: &[(Vec<u8>, Vec<u8>)], count: usize) -> f64 {
    let mut times = Vec::with_capacity(count);
    for i in 0..count {
        let (received, rest) = &messages[i % messages.len()];
        let parts: [&[u8]; 2] = [received, rest];
        let start = Instant::now();
        let fields = message::sign(table, &parts, 1_772_000_000).expect("sign");
        times.push(start.elapsed());
        assert!(fields.is_some_and(|f| f.starts_with("DKIM-Signature:")));
    }
    times.sort();
    times[times.len() / 2].as_secs_f64() * 1e6
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
    let one = [message_1k("example.com")];
    println!("DKIM signing, 1 KiB message, median of {count}:");
    for algorithm in [Algorithm::RsaSha256, Algorithm::Ed25519Sha256] {
        let table = table(dir.path(), algorithm);
        let median = median_sign(&table, &one, count);
        println!(
            "  {:<15} {:>8.1} us per message (unsigned: petrel uses about {UNSIGNED_CPU_US} us of CPU per 1 KiB message)",
            algorithm.name(),
            median
        );
    }
    let domains: Vec<String> = (0..MANY_DOMAINS).map(|i| format!("d{i}.example")).collect();
    let many = key_dir_table(dir.path(), &domains);
    let messages: Vec<_> = domains.iter().map(|d| message_1k(d)).collect();
    // The same table for both rows: one domain's mail, then every domain's.
    let single = median_sign(&many, &messages[..1], count);
    let rotating = median_sign(&many, &messages, count.max(MANY_DOMAINS));
    println!("ed25519-sha256 from a key_dir of {MANY_DOMAINS} domains:");
    println!("  mail of 1 domain        {single:>8.1} us per message");
    println!(
        "  mail of all {MANY_DOMAINS}    {rotating:>8.1} us per message ({:+.1}%)",
        (rotating / single - 1.0) * 100.0
    );
}
