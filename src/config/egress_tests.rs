//! `[[source]]`, `[[pool]]`, `[pool_selection]` and listener names: their
//! defaults, the printed form, and every rejected value at its place.

use super::egress::{DEFAULT_POOL_HEADER, DEFAULT_POOL_NAME};
use super::tests::{assert_error, parse};
use super::*;

const TWO_SOURCES: &str = r#"
[delivery]
helo_name = "mta.example.test"
[[source]]
name = "ip1"
address = "127.0.0.2"
ehlo = "mta1.example.test"
[[source]]
name = "ip2"
address = "::1"
"#;

/// Two sources, three pools, named listeners and one rule of each kind.
fn full_text() -> String {
    format!(
        r#"
[[listener]]
name = "submission"
address = "127.0.0.1:2587"
[[listener]]
address = "127.0.0.1:2525"
{TWO_SOURCES}
[[pool]]
name = "newsletters"
sources = [{{ source = "ip1", weight = 3 }}, {{ source = "ip2" }}]
[[pool]]
name = "transactional"
sources = [{{ source = "ip2", weight = 1 }}]
[[pool]]
name = "default"
sources = [{{ source = "ip1" }}]
[pool_selection]
header = "X-Mail-Class"
unknown = "default"
rules = [
  {{ sender_domain = "News.Example.COM", pool = "newsletters" }},
  {{ auth_user = "billing", pool = "transactional" }},
  {{ listener = "submission", pool = "transactional" }},
]
"#
    )
}

fn member(source: &str, weight: u32) -> PoolMember {
    PoolMember {
        source: source.to_owned(),
        weight,
    }
}

#[test]
fn without_sources_nothing_is_selected() {
    let config = parse("[[listener]]\naddress = \"127.0.0.1:25\"\n");
    assert!(config.source.is_empty() && config.pool.is_empty());
    assert_eq!(config.pool_selection.default, "");
    assert_eq!(config.pool_selection.header, DEFAULT_POOL_HEADER);
    assert_eq!(
        config.pool_selection.header_name(),
        None,
        "header left alone"
    );
    assert_eq!(config.default_pool(), None);
    assert_eq!(config.listener[0].name, None);
    let text = config.to_toml_string().unwrap_or_else(|e| panic!("{e}"));
    assert!(!text.contains("pool_selection"), "{text}");
    assert_eq!(parse(&text), config, "{text}");
}

#[test]
fn sources_without_pools_make_one_default_pool() {
    let config = parse(TWO_SOURCES);
    let addresses: Vec<String> = config
        .source
        .iter()
        .map(|s| s.address.to_string())
        .collect();
    assert_eq!(addresses, ["127.0.0.2", "::1"]);
    assert_eq!(config.source[0].ehlo, "mta1.example.test");
    assert_eq!(
        config.source[1].ehlo, "mta.example.test",
        "[delivery] helo_name"
    );
    assert_eq!(
        config.pool,
        vec![PoolSection {
            name: DEFAULT_POOL_NAME.to_owned(),
            sources: vec![member("ip1", 1), member("ip2", 1)],
        }]
    );
    let selection = &config.pool_selection;
    assert_eq!(selection.default, "default");
    assert_eq!(selection.header_name(), Some("X-Petrel-Pool"));
    assert_eq!(selection.unknown, UnknownPool::Reject);
    assert!(selection.rules.is_empty());
    assert_eq!(config.source("ip2").map(|s| s.name.as_str()), Some("ip2"));
}

#[test]
fn ehlo_defaults_to_the_hostname_through_helo_name() {
    let config = parse("[server]\nhostname = \"host.example.test\"\n[[source]]\nname = \"a\"\naddress = \"127.0.0.3\"\n");
    assert_eq!(config.source[0].ehlo, "host.example.test");
}

#[test]
fn the_default_pool_is_named_default_else_the_first() {
    let config = parse(&full_text());
    assert_eq!(config.pool_selection.default, "default");
    let first = parse(&format!(
        "{TWO_SOURCES}[[pool]]\nname = \"b\"\nsources = [{{ source = \"ip2\" }}]\n[[pool]]\nname = \"a\"\nsources = [{{ source = \"ip1\" }}]\n"
    ));
    assert_eq!(first.pool_selection.default, "b");
    assert_eq!(first.default_pool().map(|p| p.name.as_str()), Some("b"));
    let chosen = parse(&format!(
        "{TWO_SOURCES}[pool_selection]\ndefault = \"default\"\nheader = \"\"\n"
    ));
    assert_eq!(chosen.pool_selection.default, "default");
    assert_eq!(
        chosen.pool_selection.header_name(),
        None,
        "\"\" turns it off"
    );
}

#[test]
fn every_egress_key_is_read() {
    let config = parse(&full_text());
    assert_eq!(config.listener[0].name.as_deref(), Some("submission"));
    assert_eq!(config.listener[1].name, None);
    assert_eq!(
        config.pool("newsletters").map(|p| p.sources.clone()),
        Some(vec![member("ip1", 3), member("ip2", 1)])
    );
    let selection = &config.pool_selection;
    assert_eq!(selection.header, "X-Mail-Class");
    assert_eq!(selection.unknown, UnknownPool::Default);
    let matchers: Vec<(&PoolMatcher, &str)> = selection
        .rules
        .iter()
        .map(|rule| (&rule.matcher, rule.pool.as_str()))
        .collect();
    assert_eq!(
        matchers,
        [
            (
                &PoolMatcher::SenderDomain("news.example.com".into()),
                "newsletters"
            ),
            (&PoolMatcher::AuthUser("billing".into()), "transactional"),
            (&PoolMatcher::Listener("submission".into()), "transactional"),
        ]
    );
}

#[test]
fn printed_egress_settings_parse_back_to_the_same_config() {
    let no_header = format!("{TWO_SOURCES}[pool_selection]\nheader = \"\"\n");
    for config in [parse(TWO_SOURCES), parse(&full_text()), parse(&no_header)] {
        let text = config.to_toml_string().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parse(&text), config, "{text}");
    }
    let text = parse(&full_text())
        .to_toml_string()
        .unwrap_or_else(|e| panic!("{e}"));
    for line in [
        "name = \"submission\"",
        "sender_domain = \"news.example.com\"",
        "unknown = \"default\"",
        "ehlo = \"mta.example.test\"",
        "weight = 3",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
}

#[test]
fn rules_go_by_kind_then_the_default_pool() {
    let config = parse(&full_text());
    let selection = &config.pool_selection;
    let pool = |sender_domain, auth_user, listener| {
        selection.pool_by_rules(PoolQuery {
            sender_domain,
            auth_user,
            listener,
        })
    };
    assert_eq!(pool(None, None, None), "default");
    assert_eq!(pool(Some("NEWS.example.com"), None, None), "newsletters");
    assert_eq!(pool(Some("sub.news.example.com"), None, None), "default");
    assert_eq!(
        pool(
            Some("news.example.com"),
            Some("billing"),
            Some("submission")
        ),
        "newsletters",
        "the sender domain comes first"
    );
    assert_eq!(
        pool(Some("other.test"), Some("billing"), None),
        "transactional"
    );
    assert_eq!(
        pool(None, Some("Billing"), None),
        "default",
        "users are exact"
    );
    assert_eq!(pool(None, None, Some("submission")), "transactional");
}

#[test]
fn a_header_naming_no_pool_follows_unknown() {
    let lenient = parse(&full_text());
    assert_eq!(
        lenient.header_pool(" transactional "),
        HeaderPool::Pool("transactional")
    );
    assert_eq!(lenient.header_pool("nope"), HeaderPool::Pool("default"));
    let strict = parse(TWO_SOURCES);
    assert_eq!(strict.header_pool("default"), HeaderPool::Pool("default"));
    assert_eq!(strict.header_pool("Default"), HeaderPool::Reject);
}

#[test]
fn unknown_egress_keys_are_errors() {
    assert_error(
        "[[source]]\nname = \"a\"\naddress = \"127.0.0.2\"\nhelo = \"x.test\"\n",
        "4:1",
        "unknown field `helo`",
    );
    assert_error(
        &format!("{TWO_SOURCES}[pool_selection]\nrule = []\n"),
        "12:1",
        "unknown field `rule`",
    );
    assert_error(
        &format!(
            "{TWO_SOURCES}[[pool]]\nname = \"p\"\nsources = [{{ source = \"ip1\", wieght = 2 }}]\n"
        ),
        "13:30",
        "unknown field `wieght`",
    );
}

#[test]
fn bad_sources_are_errors_at_their_value() {
    let source = |name: &str, address: &str| {
        format!("[[source]]\nname = \"{name}\"\naddress = \"{address}\"\n")
    };
    assert_error(
        &format!(
            "{}{}",
            source("ip1", "127.0.0.2"),
            source("ip1", "127.0.0.3")
        ),
        "5:8",
        "name \"ip1\" is already used by an earlier [[source]]",
    );
    assert_error(
        &source("ip 1", "127.0.0.2"),
        "2:8",
        "source name \"ip 1\" is not valid",
    );
    assert_error(
        &source("", "127.0.0.2"),
        "2:8",
        "source name \"\" is not valid",
    );
    assert_error(
        &source("a", "mta.example.com"),
        "3:11",
        "invalid source address",
    );
    for (address, why) in [
        ("0.0.0.0", "is unspecified"),
        ("::", "is unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("255.255.255.255", "broadcast"),
    ] {
        assert_error(&source("a", address), "3:11", why);
    }
    assert_error(
        &format!("{}ehlo = \"bad_name\"\n", source("a", "127.0.0.2")),
        "4:8",
        "ehlo \"bad_name\" is not a valid domain name",
    );
    assert_error(
        "[[source]]\naddress = \"127.0.0.2\"\n",
        "1:1",
        "missing field `name`",
    );
}

#[test]
fn bad_pools_are_errors_at_their_value() {
    let pool =
        |sources: &str| format!("{TWO_SOURCES}[[pool]]\nname = \"p\"\nsources = {sources}\n");
    assert_error(
        &pool("[{ source = \"ip3\" }]"),
        "13:23",
        "source \"ip3\" is not the name of a [[source]]",
    );
    assert_error(
        &pool("[{ source = \"ip1\", weight = 0 }]"),
        "13:39",
        "weight = 0 must be between 1 and 10000",
    );
    assert_error(
        &pool("[{ source = \"ip1\", weight = 10001 }]"),
        "13:39",
        "between 1 and 10000",
    );
    assert_error(&pool("[]"), "13:11", "pool \"p\" has no sources");
    assert_error(
        &pool("[{ source = \"ip1\" }, { source = \"ip1\", weight = 2 }]"),
        "13:43",
        "source \"ip1\" is already in this pool",
    );
    assert_error(
        &format!(
            "{}[[pool]]\nname = \"p\"\nsources = [{{ source = \"ip2\" }}]\n",
            pool("[{ source = \"ip1\" }]")
        ),
        "15:8",
        "name \"p\" is already used by an earlier [[pool]]",
    );
    assert_error(
        &format!("{TWO_SOURCES}[[pool]]\nname = \"a b\"\nsources = [{{ source = \"ip1\" }}]\n"),
        "12:8",
        "pool name \"a b\" is not valid",
    );
}

#[test]
fn pools_and_selection_need_sources() {
    assert_error(
        "[delivery]\nport = 25\n\n[[pool]]\nname = \"p\"\nsources = [{ source = \"ip1\" }]\n",
        "4:1",
        "[[pool]] needs at least one [[source]]",
    );
    assert_error(
        "[pool_selection]\nunknown = \"default\"\n",
        "1:1",
        "[pool_selection] needs at least one [[source]]",
    );
}

#[test]
fn bad_selections_are_errors_at_their_value() {
    let selection = |keys: &str| format!("{TWO_SOURCES}[pool_selection]\n{keys}\n");
    assert_error(
        &selection("default = \"bulk\""),
        "12:11",
        "default = \"bulk\" is not the name of a [[pool]]",
    );
    assert_error(
        &selection("unknown = \"drop\""),
        "12:11",
        "unknown variant `drop`",
    );
    for bad in ["X Pool", "X-Pool:", "X-P\u{f6}ol"] {
        assert_error(
            &selection(&format!("header = \"{bad}\"")),
            "12:10",
            "is not a valid header field name",
        );
    }
    let rules = |rules: &str| selection(&format!("rules = [{rules}]"));
    assert_error(
        &rules("{ pool = \"default\" }"),
        "12:10",
        "a rule needs a matcher",
    );
    assert_error(
        &rules("{ sender_domain = \"a.test\", auth_user = \"u\", pool = \"default\" }"),
        "12:50",
        "gives both sender_domain and auth_user",
    );
    assert_error(
        &rules("{ auth_user = \"u\", pool = \"bulk\" }"),
        "12:36",
        "pool = \"bulk\" is not the name of a [[pool]]",
    );
    assert_error(
        &rules("{ sender_domain = \"A.test\", pool = \"default\" }, { sender_domain = \"a.TEST\", pool = \"default\" }"),
        "12:76",
        "an earlier rule already matches sender_domain = \"a.TEST\"",
    );
    assert_error(
        &rules("{ listener = \"submission\", pool = \"default\" }"),
        "12:23",
        "listener \"submission\" is not the name of a [[listener]]",
    );
    assert_error(
        &rules("{ sender_domain = \"a b\", pool = \"default\" }"),
        "12:28",
        "not a valid domain name",
    );
    assert_error(
        &rules("{ auth_user = \"a:b\", pool = \"default\" }"),
        "12:24",
        "user name contains ':'",
    );
    assert_error(
        &rules("{ listener = \"l\" }"),
        "12:10",
        "missing field `pool`",
    );
}

#[test]
fn listener_names_are_valid_and_unique() {
    let listener = |name: &str, port: u16| {
        format!("[[listener]]\nname = \"{name}\"\naddress = \"127.0.0.1:{port}\"\n")
    };
    assert_error(
        &format!("{}{}", listener("mx", 25), listener("mx", 26)),
        "5:8",
        "name \"mx\" is already used by an earlier [[listener]]",
    );
    assert_error(
        &listener("m x", 25),
        "2:8",
        "listener name \"m x\" is not valid",
    );
}

#[test]
fn two_pools_with_one_spool_id_are_refused() {
    // Two names whose 16-bit ids collide, found among generated names of
    // varied lengths (CRC is linear, so names that differ only in a few
    // like bytes rarely collide; these are not alike).
    let mut seen = std::collections::HashMap::new();
    let (first, second) = (1..200_000u64)
        .map(|i| format!("p{}", i.wrapping_mul(2_654_435_761) % 1_000_000_007))
        .find_map(|name| {
            let id = spool_format::envelope::pool_id(&name);
            seen.insert(id, name.clone()).map(|earlier| (earlier, name))
        })
        .expect("a collision among 200,000 names");
    let text = format!(
        "{TWO_SOURCES}[[pool]]\nname = \"{first}\"\nsources = [{{ source = \"ip1\" }}]\n\
         [[pool]]\nname = \"{second}\"\nsources = [{{ source = \"ip2\" }}]\n"
    );
    assert_error(&text, "15:8", "have the same id in the spool");
}

#[test]
fn a_source_carries_its_warmup_schedule() {
    let text = "[[source]]\nname = \"ip1\"\naddress = \"127.0.0.2\"\n\
                warmup = { start = \"2026-12-01\", daily = [500, 1000, 2500] }\n\
                [[source]]\nname = \"ip2\"\naddress = \"127.0.0.3\"\n";
    let config = parse(text);
    let warmup = config.source[0].warmup.as_deref().expect("warmup");
    assert_eq!(warmup.start, "2026-12-01");
    assert_eq!(warmup.daily, vec![500, 1000, 2500]);
    assert_eq!(warmup.budget(warmup.start_day + 1), Some(1000));
    assert_eq!(config.source[1].warmup, None, "a source is warm by default");
    let printed = config.to_toml_string().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(parse(&printed), config, "{printed}");
}

#[test]
fn a_bad_warmup_is_refused_at_its_value() {
    let source = "[[source]]\nname = \"ip1\"\naddress = \"127.0.0.2\"\n";
    assert_error(
        &format!("{source}warmup = {{ start = \"2026-12-32\", daily = [5] }}\n"),
        "4:20",
        "no such day",
    );
    assert_error(
        &format!("{source}warmup = {{ start = \"12/01/2026\", daily = [5] }}\n"),
        "4:20",
        "YYYY-MM-DD",
    );
    assert_error(
        &format!("{source}warmup = {{ start = \"2026-12-01\", daily = [] }}\n"),
        "4:42",
        "daily is empty",
    );
    assert_error(
        &format!("{source}warmup = {{ start = \"2026-12-01\", daily = [5, 0] }}\n"),
        "4:46",
        "0 messages",
    );
    assert_error(
        &format!("{source}warmup = {{ start = \"2026-12-01\" }}\n"),
        "4:10",
        "missing field `daily`",
    );
    assert_error(
        &format!("{source}warmup = {{ start = \"2026-12-01\", daily = [5], days = 3 }}\n"),
        "4:47",
        "unknown field `days`",
    );
}
