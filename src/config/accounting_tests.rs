//! `[accounting]` and `[[accounting.category]]`: their defaults, the rules
//! they build, the printed form, and every rejected value at its place.

use super::tests::{assert_error, assert_prints_and_reads_back, parse, printed};
use super::*;
use crate::accounting::{BounceCategory, Format, Rotation};

/// Every key, and rules of each condition.
const ACCOUNTING: &str = r#"
[accounting]
path = "/var/log/petrel/acct.csv"
format = "json"
rotate_size = 1048576
rotate_interval = "6h"
job_id_header = "X-Campaign"
[[accounting.category]]
category = "inactive-mailbox"
code = 550
enhanced = "5.1.1"
reply = "(?i)mailbox unavailable"
[[accounting.category]]
category = "spam-related"
reply = "(?i)\\bcloudmark\\b"
[[accounting.category]]
category = "policy-related"
enhanced = "4.7.0"
"#;

#[test]
fn without_the_section_the_log_is_off() {
    let config = parse("");
    let accounting = &config.accounting;
    assert!(!accounting.enabled());
    assert_eq!(accounting.path, PathBuf::new());
    assert_eq!(accounting.format, Format::Csv);
    assert_eq!(accounting.rotate_size, 1_073_741_824);
    assert_eq!(accounting.rotate_interval.as_millis(), 86_400_000);
    assert_eq!(accounting.job_id_header(), Some("X-Job-Id"));
    assert!(accounting.category.is_empty());
    assert!(!Config::embedded_default().accounting.enabled());
    let text = printed(&config);
    assert!(
        text.contains("[accounting]\npath = \"\"\nformat = \"csv\"\nrotate_size = 1073741824\nrotate_interval = \"1d\"\njob_id_header = \"X-Job-Id\"\n"),
        "{text}"
    );
    assert!(!text.contains("[[accounting.category]]"), "{text}");
}

#[test]
fn every_accounting_key_is_read() {
    let config = parse(ACCOUNTING);
    let accounting = &config.accounting;
    assert!(accounting.enabled());
    assert_eq!(accounting.path, PathBuf::from("/var/log/petrel/acct.csv"));
    assert_eq!(accounting.format, Format::Json);
    assert_eq!(
        accounting.rotation(),
        Rotation {
            size: 1 << 20,
            interval_ms: 6 * 3_600_000
        }
    );
    assert_eq!(accounting.job_id_header(), Some("X-Campaign"));
    let first = &accounting.category[0];
    assert_eq!(first.category, BounceCategory::InactiveMailbox);
    assert_eq!(first.conditions.code, Some(550));
    assert_eq!(first.conditions.enhanced, Some((5, 1, 1)));
    assert_eq!(
        first.conditions.reply.as_deref(),
        Some("(?i)mailbox unavailable")
    );
    let off = parse("[accounting]\nrotate_interval = 0\njob_id_header = \"\"\n");
    assert_eq!(off.accounting.rotation().interval_ms, 0, "never by time");
    assert_eq!(off.accounting.job_id_header(), None);
}

#[test]
fn the_files_category_rules_come_before_the_shipped_ones() {
    let rules = parse(ACCOUNTING).accounting.category_rules();
    let unavailable = b"550 5.1.1 mailbox unavailable";
    assert_eq!(
        rules.categorize(550, Some((5, 1, 1)), unavailable),
        BounceCategory::InactiveMailbox
    );
    assert_eq!(
        rules.categorize(550, Some((5, 1, 1)), b"550 5.1.1 no such user"),
        BounceCategory::BadMailbox,
        "the shipped table where the file's rules do not match"
    );
    assert_eq!(
        rules.categorize(550, Some((5, 7, 1)), b"550 5.7.1 blocked by Cloudmark"),
        BounceCategory::SpamRelated
    );
    assert_eq!(
        rules.categorize(421, Some((4, 7, 0)), b"421 4.7.0 spam suspected"),
        BounceCategory::PolicyRelated,
        "the file's rule before the shipped spam text"
    );
    let shipped = parse("").accounting.category_rules();
    assert_eq!(
        shipped.categorize(421, Some((4, 7, 0)), b"421 4.7.0 spam suspected"),
        BounceCategory::SpamRelated
    );
}

#[test]
fn printed_accounting_reads_back_the_same() {
    assert_prints_and_reads_back(
        &parse(ACCOUNTING),
        &[
            "[accounting]\npath = \"/var/log/petrel/acct.csv\"\nformat = \"json\"\nrotate_size = 1048576\nrotate_interval = \"6h\"\njob_id_header = \"X-Campaign\"\n",
            "[[accounting.category]]\ncategory = \"inactive-mailbox\"\ncode = 550\nenhanced = \"5.1.1\"\nreply = \"(?i)mailbox unavailable\"\n",
            "[[accounting.category]]\ncategory = \"policy-related\"\nenhanced = \"4.7.0\"\n",
        ],
    );
    assert_prints_and_reads_back(&parse(""), &["[accounting]\npath = \"\"\n"]);
}

#[test]
fn bad_accounting_values_are_errors_at_their_value() {
    let section = |body: &str| format!("[accounting]\n{body}");
    let rule = |body: &str| format!("[[accounting.category]]\n{body}");
    for (text, location, contains) in [
        (
            section("format = \"xml\"\n"),
            "2:10",
            "unknown format \"xml\": expected \"csv\" or \"json\"",
        ),
        (
            section("rotate_size = 1048575\n"),
            "2:15",
            "rotate_size = 1048575 is below the minimum of 1048576 (1 MiB)",
        ),
        (section("rotate_size = -1\n"), "2:15", "invalid value"),
        (
            section("rotate_interval = \"30s\"\n"),
            "2:19",
            "rotate_interval = \"30s\" is too short: 0 (never) or at least \"1m\"",
        ),
        (
            section("rotate_interval = \"1.5h\"\n"),
            "2:19",
            "invalid duration",
        ),
        (
            section("job_id_header = \"X Job\"\n"),
            "2:17",
            "job_id_header \"X Job\" is not a valid header field name",
        ),
        (
            section("job_id_header = \"X-Job:\"\n"),
            "2:17",
            "is not a valid header field name",
        ),
        (section("rotate = 5\n"), "2:1", "unknown field `rotate`"),
        (section("path = 5\n"), "2:8", "invalid type"),
        (
            rule("code = 550\n"),
            "1:1",
            "needs a category: one of \"bad-mailbox\", \"bad-domain\"",
        ),
        (
            rule("category = \"bad_mailbox\"\ncode = 550\n"),
            "2:12",
            "unknown category \"bad_mailbox\": expected one of \"bad-mailbox\"",
        ),
        (
            rule("category = \"other\"\n"),
            "1:1",
            "needs at least one of code, enhanced or reply",
        ),
        (
            rule("category = \"other\"\ncode = 250\n"),
            "3:8",
            "code = 250 must be between 400 and 599",
        ),
        (
            rule("category = \"other\"\nenhanced = \"5.1\"\n"),
            "3:12",
            "invalid enhanced status \"5.1\"",
        ),
        (
            rule("category = \"other\"\nenhanced = \"2.0.0\"\n"),
            "3:12",
            "is of class 2: a category rule matches only class 4 or 5",
        ),
        (
            rule("category = \"other\"\ncode = 450\nenhanced = \"5.1.1\"\n"),
            "4:12",
            "is of class 5 but code = 450 is of class 4",
        ),
        (
            rule("category = \"other\"\nreply = \"(unclosed\"\n"),
            "3:9",
            "does not compile: unclosed group",
        ),
        (
            rule("category = \"other\"\nreply = \"\"\n"),
            "3:9",
            "reply is empty",
        ),
        (
            rule("category = \"other\"\naction = \"suspend\"\n"),
            "3:1",
            "unknown field `action`",
        ),
    ] {
        assert_error(&text, location, contains);
    }
}
