//! `[[shaping]]` and the `[delivery]` shaping keys: their defaults, the
//! choice of the most specific rule, the printed form, and every rejected
//! value at its place.

use super::tests::{assert_error, parse, printed};
use super::*;
use crate::shaping::rate::Rate;

/// Every new `[delivery]` key set, and rules of each matcher form.
const RULES: &str = r#"
[delivery]
max_connections_per_destination = 8
max_messages_per_connection = 200
max_message_rate = "300/min"
max_connection_rate = "20/sec"
max_recipients_per_transaction = 50
[[shaping]]
domain = "Gmail.COM."
max_connections = 10
max_messages_per_connection = 100
max_message_rate = "600/min"
max_connection_rate = "30/min"
max_recipients_per_transaction = 1000
[[shaping]]
domain = ".example.com"
max_message_rate = "10/s"
[[shaping]]
domain = ".mail.example.com"
max_connections = 2
[[shaping]]
mx = "*.google.com"
max_connections = 40
[[shaping]]
mx = "*.l.google.com"
max_connections = 30
[[shaping]]
mx = "MX1.Example.NET."
max_recipients_per_transaction = 1
[[shaping]]
mx = "mx2.example.net"
"#;

fn rate(text: &str) -> Rate {
    Rate::parse(text).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn without_shaping_keys_there_is_no_limit_but_the_old_ones() {
    let config = parse("");
    let delivery = &config.delivery;
    assert_eq!(delivery.max_message_rate, None);
    assert_eq!(delivery.max_connection_rate, None);
    assert_eq!(delivery.max_recipients_per_transaction, 100);
    assert!(config.shaping.is_empty());
    assert_eq!(config.shaping_for_domain("gmail.com"), None);
    assert_eq!(config.shaping_for_mx(["gmail-smtp-in.l.google.com"]), None);
    assert_eq!(
        config.shape(None),
        Shape {
            max_connections: 20,
            max_messages_per_connection: 1000,
            max_message_rate: None,
            max_connection_rate: None,
            max_recipients_per_transaction: 100,
        }
    );
    let text = printed(&config);
    for line in [
        "max_message_rate = \"\"\n",
        "max_connection_rate = \"\"\n",
        "max_recipients_per_transaction = 100\n",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    assert!(!text.contains("[[shaping]]"), "{text}");
    // An explicit "" is the default, no limit.
    let empty = parse("[delivery]\nmax_message_rate = \"\"\nmax_connection_rate = \"\"\n");
    assert_eq!(empty, config);
}

#[test]
fn every_shaping_key_is_read() {
    let config = parse(RULES);
    let delivery = &config.delivery;
    assert_eq!(delivery.max_message_rate, Some(rate("300/min")));
    assert_eq!(delivery.max_connection_rate, Some(rate("20/s")));
    assert_eq!(delivery.max_recipients_per_transaction, 50);
    assert_eq!(
        config.shaping[0],
        ShapingSection {
            matcher: ShapingMatch::Domain("gmail.com".into()),
            max_connections: Some(10),
            max_messages_per_connection: Some(100),
            max_message_rate: Some(rate("600/min")),
            max_connection_rate: Some(rate("30/min")),
            max_recipients_per_transaction: Some(1000),
        }
    );
    let matchers: Vec<&ShapingMatch> = config.shaping.iter().map(|s| &s.matcher).collect();
    assert_eq!(
        matchers[1..],
        [
            &ShapingMatch::Domain(".example.com".into()),
            &ShapingMatch::Domain(".mail.example.com".into()),
            &ShapingMatch::Mx("*.google.com".into()),
            &ShapingMatch::Mx("*.l.google.com".into()),
            &ShapingMatch::Mx("mx1.example.net".into()),
            &ShapingMatch::Mx("mx2.example.net".into()),
        ]
    );
    let last = &config.shaping[6];
    assert_eq!(
        (last.max_connections, last.max_message_rate),
        (None, None),
        "omitted: none"
    );
}

#[test]
fn a_rule_takes_what_it_omits_from_delivery() {
    let config = parse(RULES);
    assert_eq!(
        config.shape(Some(0)),
        Shape {
            max_connections: 10,
            max_messages_per_connection: 100,
            max_message_rate: Some(rate("600/min")),
            max_connection_rate: Some(rate("30/min")),
            max_recipients_per_transaction: 1000,
        }
    );
    let delivery = Shape {
        max_connections: 8,
        max_messages_per_connection: 200,
        max_message_rate: Some(rate("300/min")),
        max_connection_rate: Some(rate("20/s")),
        max_recipients_per_transaction: 50,
    };
    assert_eq!(config.shape(None), delivery);
    assert_eq!(config.shape(Some(6)), delivery, "a rule with no limits");
    assert_eq!(config.shape(Some(99)), delivery, "no such rule");
    assert_eq!(
        config.shape(Some(1)),
        Shape {
            max_message_rate: Some(rate("10/s")),
            ..delivery
        }
    );
    assert_eq!(
        config.shape(Some(5)),
        Shape {
            max_recipients_per_transaction: 1,
            ..delivery
        }
    );
}

#[test]
fn the_exact_domain_rule_wins_then_the_longest_parent() {
    let config = parse(RULES);
    for (domain, want) in [
        ("gmail.com", Some(0)),
        ("GMAIL.com.", Some(0)),
        ("mail.gmail.com", None),
        ("example.com", None),
        ("www.example.com", Some(1)),
        ("Mail.Example.com", Some(1)),
        ("eu.mail.example.com", Some(2)),
        ("a.b.mail.example.com.", Some(2)),
        ("badexample.com", None),
        ("google.com", None),
        ("", None),
    ] {
        assert_eq!(config.shaping_for_domain(domain), want, "{domain}");
    }
    // The exact rule wins wherever it stands in the file.
    let config = parse(
        "[[shaping]]\ndomain = \".example.com\"\n[[shaping]]\ndomain = \"mail.example.com\"\n",
    );
    assert_eq!(config.shaping_for_domain("mail.example.com"), Some(1));
    assert_eq!(config.shaping_for_domain("x.mail.example.com"), Some(0));
}

#[test]
fn the_most_specific_mx_pattern_wins() {
    let config = parse(RULES);
    let rule = |hosts: &[&str]| config.shaping_for_mx(hosts.iter().copied());
    assert_eq!(rule(&["gmail-smtp-in.l.google.com."]), Some(4));
    assert_eq!(rule(&["aspmx2.googlemail.com"]), None);
    assert_eq!(rule(&["smtp.google.com"]), Some(3));
    assert_eq!(rule(&["google.com"]), None, "a wildcard is hosts under it");
    assert_eq!(rule(&["smtp.google.com", "ALT1.L.google.com"]), Some(4));
    assert_eq!(rule(&["alt1.l.google.com", "mx1.example.net"]), Some(5));
    assert_eq!(rule(&["Mx1.Example.Net."]), Some(5));
    assert_eq!(rule(&["mx3.example.net"]), None);
    assert_eq!(rule(&[]), None);
    // Between equals, the earlier rule, whatever order DNS gives.
    assert_eq!(rule(&["mx2.example.net", "mx1.example.net"]), Some(5));
    assert_eq!(rule(&["mx1.example.net", "mx2.example.net"]), Some(5));
    // domain rules are not MX patterns, and the other way round.
    assert_eq!(config.shaping_for_domain("mx1.example.net"), None);
    assert_eq!(rule(&["gmail.com", "www.example.com"]), None);
}

#[test]
fn printed_shaping_reads_back_the_same() {
    let config = parse(RULES);
    let text = printed(&config);
    for line in [
        "max_message_rate = \"300/min\"\n",
        "max_connection_rate = \"20/s\"\n",
        "max_recipients_per_transaction = 50\n",
        "[[shaping]]\ndomain = \"gmail.com\"\nmax_connections = 10\nmax_messages_per_connection = 100\nmax_message_rate = \"600/min\"\nmax_connection_rate = \"30/min\"\nmax_recipients_per_transaction = 1000\n",
        "[[shaping]]\ndomain = \".example.com\"\nmax_message_rate = \"10/s\"\n",
        "[[shaping]]\nmx = \"*.google.com\"\nmax_connections = 40\n",
        "[[shaping]]\nmx = \"mx2.example.net\"\n",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    assert_eq!(parse(&text), config, "{text}");
}

#[test]
fn bad_shaping_values_are_errors_at_their_value() {
    for (text, location, contains) in [
        (
            "[[shaping]]\nmax_connections = 3\n",
            "1:1",
            "a [[shaping]] rule needs a matcher: domain (a recipient domain) or mx",
        ),
        (
            "[[shaping]]\ndomain = \"a.test\"\nmx = \"mx.a.test\"\n",
            "3:6",
            "gives both domain and mx: split it into two rules",
        ),
        (
            "[[shaping]]\ndomain = \"a.test\"\n[[shaping]]\ndomain = \"A.test.\"\n",
            "4:10",
            "an earlier [[shaping]] rule already matches domain = \"A.test.\": rules may not overlap",
        ),
        (
            "[[shaping]]\nmx = \"*.a.test\"\n[[shaping]]\nmx = \"*.A.TEST\"\n",
            "4:6",
            "rules may not overlap",
        ),
        (
            "[[shaping]]\ndomain = \"\"\n",
            "2:10",
            "domain is empty: expected a recipient domain such as \"gmail.com\"",
        ),
        (
            "[[shaping]]\ndomain = \"*\"\n",
            "2:10",
            "set the [delivery] limits instead",
        ),
        (
            "[[shaping]]\ndomain = \"*.example.com\"\n",
            "2:10",
            "invalid shaping domain \"*.example.com\"",
        ),
        (
            "[[shaping]]\ndomain = \"exa mple.com\"\n",
            "2:10",
            "invalid shaping domain",
        ),
        ("[[shaping]]\nmx = \"\"\n", "2:6", "mx is empty"),
        (
            "[[shaping]]\nmx = \"mx*.google.com\"\n",
            "2:6",
            "has a '*' that is not a leading \"*.\"",
        ),
        (
            "[[shaping]]\nmx = \"*\"\n",
            "2:6",
            "has a '*' that is not a leading \"*.\"",
        ),
        (
            "[[shaping]]\nmx = \"*.*.google.com\"\n",
            "2:6",
            "has a '*' that is not a leading \"*.\"",
        ),
        (
            "[[shaping]]\nmx = \".google.com\"\n",
            "2:6",
            "invalid mx pattern \".google.com\"",
        ),
        (
            "[[shaping]]\ndomain = \"a.test\"\nmax_message_rate = \"600/fortnight\"\n",
            "3:20",
            "invalid rate \"600/fortnight\": unknown unit",
        ),
        (
            "[[shaping]]\ndomain = \"a.test\"\nmax_connection_rate = \"0/s\"\n",
            "3:23",
            "a rate of 0 sends nothing",
        ),
        (
            "[[shaping]]\ndomain = \"a.test\"\nmax_message_rate = \"\"\n",
            "3:20",
            "omit the key to use [delivery] max_message_rate",
        ),
        (
            "[[shaping]]\ndomain = \"a.test\"\nmax_connections = 0\n",
            "3:19",
            "max_connections = 0 is below the minimum of 1",
        ),
        (
            "[[shaping]]\ndomain = \"a.test\"\nmax_messages_per_connection = 0\n",
            "3:31",
            "max_messages_per_connection = 0 is below the minimum of 1",
        ),
        (
            "[[shaping]]\ndomain = \"a.test\"\nmax_recipients_per_transaction = 1001\n",
            "3:34",
            "max_recipients_per_transaction = 1001 must be between 1 and 1000",
        ),
        (
            "[[shaping]]\ndomain = \"a.test\"\nmax_rate = \"1/s\"\n",
            "3:1",
            "unknown field `max_rate`",
        ),
        (
            "[delivery]\nmax_message_rate = \"300\"\n",
            "2:20",
            "invalid rate \"300\": there is no '/' before the unit",
        ),
        (
            "[delivery]\nmax_connection_rate = \"1.5/s\"\n",
            "2:23",
            "does not start with a whole number",
        ),
        (
            "[delivery]\nmax_recipients_per_transaction = 0\n",
            "2:34",
            "max_recipients_per_transaction = 0 must be between 1 and 1000",
        ),
        (
            "[delivery]\nmax_message_rate = 300\n",
            "2:20",
            "invalid type",
        ),
    ] {
        assert_error(text, location, contains);
    }
}
