//! `[[dkim]]` and `[signing]`: defaults, the printed form, rejected values.

use super::tests::{assert_error, parse};
use crate::dkim::{Algorithm, Canon, DEFAULT_HEADERS};

const ENTRY: &str = "[[dkim]]\ndomain = \"Example.com\"\nselector = \"s2026\"\nprivate_key = \"/etc/petrel/dkim/example.com.s2026.pem\"\nalgorithm = \"rsa-sha256\"\n";

#[test]
fn an_entry_gets_the_defaults_and_prints_back() {
    let config = parse(ENTRY);
    let entry = &config.dkim[0];
    assert_eq!(entry.domain, "example.com");
    assert_eq!(entry.algorithm, Algorithm::RsaSha256);
    assert!(entry.sender_domains.is_empty());
    assert_eq!(entry.headers, DEFAULT_HEADERS);
    assert_eq!(entry.canonicalization.header, Canon::Relaxed);
    assert_eq!(entry.canonicalization.body, Canon::Relaxed);
    assert_eq!(entry.expire, None);
    assert!(config.signing.key_dir.is_none());
    let full = format!(
        "{ENTRY}sender_domains = [\"example.com\", \"news.example.com\"]\nheaders = [\"From\", \"Subject\"]\ncanonicalization = \"simple/relaxed\"\nexpire = \"7d\"\n[signing]\nkey_dir = \"/etc/petrel/dkim\"\n"
    );
    let config = parse(&full);
    let entry = &config.dkim[0];
    assert_eq!(entry.sender_domains, ["example.com", "news.example.com"]);
    assert_eq!(entry.headers, ["From", "Subject"]);
    assert_eq!(entry.canonicalization.to_string(), "simple/relaxed");
    assert_eq!(entry.expire.unwrap().0.as_secs(), 7 * 86400);
    assert_eq!(
        config.signing.key_dir.as_deref(),
        Some(std::path::Path::new("/etc/petrel/dkim"))
    );
    assert_eq!(config.signing.threads, 0, "signed on the shard by default");
    let printed = config.to_toml_string().unwrap();
    assert_eq!(parse(&printed), config);
    assert!(!parse("").to_toml_string().unwrap().contains("dkim"));
    assert!(!parse("").to_toml_string().unwrap().contains("[signing]"));
}

#[test]
fn signing_threads_print_back_and_are_bounded() {
    let config = parse("[signing]\nthreads = 4\n");
    assert_eq!(config.signing.threads, 4);
    assert!(config.signing.key_dir.is_none());
    let printed = config.to_toml_string().unwrap();
    assert!(
        printed.contains("[signing]\nkey_dir = \"\"\nthreads = 4\n"),
        "{printed}"
    );
    assert_eq!(parse(&printed), config);
    assert_error("[signing]\nthreads = 257\n", "2:11", "at most 256");
    assert_error("[signing]\nthreads = -1\n", "2:11", "");
}

#[test]
fn bad_entries_are_refused_at_their_place() {
    assert_error(
        &ENTRY.replace("rsa-sha256", "rsa-sha1"),
        "5:13",
        "is not one of",
    );
    assert_error(
        &format!("{ENTRY}canonicalization = \"relaxed\"\n"),
        "6:20",
        "is not one of",
    );
    assert_error(
        &ENTRY.replace("Example.com", "exa mple.com"),
        "2:10",
        "not a domain name",
    );
    assert_error(
        &format!("{ENTRY}headers = [\"To\", \"Subject\"]\n"),
        "6:11",
        "must include \"From\"",
    );
    assert_error(
        &format!("{ENTRY}headers = [\"From\", \"to\", \"To\"]\n"),
        "6:26",
        "listed twice",
    );
    assert_error(
        &format!("{ENTRY}sender_domains = [\"a.example\", \"A.example\"]\n"),
        "6:32",
        "listed twice",
    );
    assert_error(&format!("{ENTRY}expire = \"soon\"\n"), "6:10", "");
    assert_error(
        &format!("{ENTRY}key_dir = \"/x\"\n"),
        "6:1",
        "unknown field",
    );
    assert_error(
        "[[dkim]]\ndomain = \"example.com\"\n",
        "1:1",
        "missing field",
    );
}
