use super::*;

pub(super) fn parse(text: &str) -> Config {
    match Config::from_str_named(text, "test.toml") {
        Ok(config) => config,
        Err(e) => panic!("{e}"),
    }
}

/// The error text for `text`, which must be rejected.
fn error(text: &str) -> String {
    match Config::from_str_named(text, "test.toml") {
        Ok(config) => panic!("accepted: {config:?}"),
        Err(e) => e.to_string(),
    }
}

/// `config` as `petrel check` prints it.
pub(super) fn printed(config: &Config) -> String {
    config.to_toml_string().unwrap_or_else(|e| panic!("{e}"))
}

/// `config` prints with each of `parts`, and the print reads back to the
/// same config and the same print.
pub(super) fn assert_prints_and_reads_back(config: &Config, parts: &[&str]) {
    let text = printed(config);
    for part in parts {
        assert!(text.contains(part), "{part:?} missing from:\n{text}");
    }
    let again = parse(&text);
    assert_eq!(&again, config, "{text}");
    assert_eq!(printed(&again), text);
}

pub(super) fn assert_error(text: &str, location: &str, contains: &str) {
    let message = error(text);
    assert!(
        message.starts_with(&format!("test.toml:{location}: ")),
        "expected test.toml:{location}: in {message:?}"
    );
    assert!(
        message.contains(contains),
        "expected {contains:?} in {message:?}"
    );
}

#[test]
fn embedded_default_is_valid() {
    let config = Config::embedded_default();
    assert_eq!(config.spool.path, PathBuf::from("./petrel-spool"));
    assert_eq!(config.server.shards, 0);
    assert!(!config.server.hostname.is_empty());
    assert_eq!(
        config.listener,
        vec![ListenerSection::with_defaults(
            ([127, 0, 0, 1], 2525).into()
        )]
    );
    let loopback: Vec<String> = config
        .relay
        .networks
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(loopback, ["127.0.0.0/8", "::1/128"]);
    assert_eq!(config.auth.users_file, None);
    assert!(!config.delivery.paused, "the embedded default delivers");
    assert!(config.route.is_empty());
}

#[test]
fn an_empty_file_gets_the_file_defaults() {
    let config = parse("");
    assert_eq!(config.spool.path, PathBuf::from(DEFAULT_SPOOL_PATH));
    assert_eq!(config.spool.segment_size, 256 << 20);
    assert_eq!(config.spool.min_free_space, 1 << 30);
    assert!(
        config.listener.is_empty(),
        "listeners are only what the file lists"
    );
    assert_eq!(config.relay.networks.len(), 2);
    assert!(!config.delivery.paused);
}

#[test]
fn every_key_is_read() {
    let config = parse(
        r#"
[server]
hostname = "mta.example.test"
shards = 2
[spool]
path = "/srv/spool"
segment_size = 1048576
min_free_space = 0
[[listener]]
address = "[::1]:25"
tls_cert = "/etc/petrel/cert.pem"
tls_key = "/etc/petrel/key.pem"
implicit_tls = true
max_message_size = 1000
max_recipients = 100
max_errors = 3
command_timeout = "30s"
data_timeout = 60
session_timeout = "1h"
min_data_rate = 0
max_connections = 10
max_connections_per_ip = 5
[[listener]]
address = "0.0.0.0:587"
[relay]
networks = ["10.0.0.0/8"]
[auth]
users_file = "/etc/petrel/users"
[delivery]
paused = false
"#,
    );
    assert_eq!(config.server.hostname, "mta.example.test");
    assert_eq!(config.effective_shards(8), 2);
    assert_eq!(config.spool.segment_size, 1 << 20);
    let first = &config.listener[0];
    assert_eq!(
        first.address,
        "[::1]:25"
            .parse::<SocketAddr>()
            .unwrap_or_else(|e| panic!("{e}"))
    );
    assert!(first.implicit_tls);
    assert_eq!(first.tls_key, Some(PathBuf::from("/etc/petrel/key.pem")));
    assert_eq!(
        (
            first.max_message_size,
            first.max_recipients,
            first.max_errors
        ),
        (1000, 100, 3)
    );
    assert_eq!(first.command_timeout, Duration::from_secs(30));
    assert_eq!(first.data_timeout, Duration::from_secs(60));
    assert_eq!(
        (
            first.min_data_rate,
            first.max_connections,
            first.max_connections_per_ip
        ),
        (0, 10, 5)
    );
    assert_eq!(config.listener[1].max_recipients, 1000);
    assert_eq!(config.relay.networks[0].to_string(), "10.0.0.0/8");
    assert_eq!(
        config.auth.users_file,
        Some(PathBuf::from("/etc/petrel/users"))
    );
    assert!(!config.delivery.paused);
}

#[test]
fn printed_settings_parse_back_to_the_same_config() {
    let ca = ca_file();
    for config in [
        Config::embedded_default(),
        parse("[[listener]]\naddress = \"127.0.0.1:25\"\ntls_cert = \"c\"\ntls_key = \"k\"\n[auth]\nusers_file = \"u\""),
        parse(&delivery_keys_text(ca.path())),
    ] {
        let text = match config.to_toml_string() {
            Ok(text) => text,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(parse(&text), config, "{text}");
    }
}

#[test]
fn shards_zero_means_one_per_cpu() {
    let config = parse("");
    assert_eq!(config.effective_shards(6), 6);
    assert_eq!(config.effective_shards(0), 1);
}

#[test]
fn unknown_keys_are_errors_at_their_line() {
    assert_error(
        "[server]\nshards = 1\nshard = 2\n",
        "3:1",
        "unknown field `shard`",
    );
    assert_error("[servr]\n", "1:2", "unknown field `servr`");
    assert_error(
        "[[listener]]\naddress = \"127.0.0.1:25\"\n  max_recipient = 200\n",
        "3:3",
        "unknown field `max_recipient`",
    );
}

#[test]
fn syntax_and_type_errors_are_located() {
    assert_error("[server]\nshards = \"two\"\n", "2:10", "invalid type");
    assert_error("[server]\nshards = -1\n", "2:10", "");
    assert_error("[server\n", "1:8", "");
    assert_error(
        "[[listener]]\naddress = \"127.0.0.1:25\"\ncommand_timeout = \"5 minutes\"\n",
        "3:19",
        "invalid duration \"5 minutes\"",
    );
}

#[test]
fn bad_values_are_errors_at_their_value() {
    assert_error(
        "[[listener]]\naddress = \"127.0.0.1:25\"\nmax_recipients = 50\n",
        "3:18",
        "max_recipients = 50 is below the minimum of 100",
    );
    assert_error(
        "[[listener]]\naddress = \"localhost:25\"\n",
        "2:11",
        "invalid listener address \"localhost:25\"",
    );
    assert_error(
        "[relay]\nnetworks = [\"127.0.0.0/8\", \"10.1.2.3/8\"]\n",
        "2:28",
        "host bits are set",
    );
    assert_error(
        "[server]\nhostname = \"bad_name\"\n",
        "2:12",
        "not a valid domain name",
    );
    assert_error(
        "[spool]\nsegment_size = 1048577\n",
        "2:16",
        "multiple of 4096",
    );
    assert_error("[spool]\nsegment_size = 4096\n", "2:16", "between 1048576");
    // Record offsets inside a segment are 32-bit.
    assert_error(
        "[spool]\nsegment_size = 4294967296\n",
        "2:16",
        "4 GiB - 4 KiB",
    );
    assert_error("[spool]\npath = \"\"\n", "2:8", "path is empty");
    assert_error(
        "[[listener]]\naddress = \"127.0.0.1:25\"\ndata_timeout = \"0s\"\n",
        "3:16",
        "longer than zero",
    );
    assert_error(
        "[[listener]]\naddress = \"127.0.0.1:25\"\nmax_connections = 0\n",
        "3:19",
        "below the minimum of 1",
    );
    assert_error(
        "[spool]\nsegment_size = 1048576\n[[listener]]\naddress = \"127.0.0.1:25\"\nmax_message_size = 2000000\n",
        "5:20",
        "below [spool] segment_size",
    );
}

#[test]
fn tls_settings_must_be_complete() {
    assert_error(
        "[[listener]]\naddress = \"127.0.0.1:25\"\ntls_cert = \"/c.pem\"\n",
        "3:12",
        "tls_cert is set but tls_key is not",
    );
    assert_error(
        "[[listener]]\naddress = \"127.0.0.1:25\"\ntls_key = \"/k.pem\"\n",
        "3:11",
        "tls_key is set but tls_cert is not",
    );
    assert_error(
        "[[listener]]\naddress = \"127.0.0.1:25\"\nimplicit_tls = true\n",
        "3:16",
        "implicit_tls = true needs tls_cert",
    );
}

#[test]
fn listener_needs_an_address_and_a_unique_one() {
    assert_error(
        "[[listener]]\nmax_errors = 5\n",
        "1:1",
        "missing field `address`",
    );
    assert_error(
        "[[listener]]\naddress = \"127.0.0.1:25\"\n[[listener]]\naddress = \"127.0.0.1:25\"\n",
        "4:11",
        "already used by an earlier [[listener]]",
    );
}

#[test]
fn read_errors_name_the_file() {
    let message = match Config::load(Path::new("/nonexistent/petrel.toml")) {
        Ok(_) => panic!("loaded a missing file"),
        Err(e) => e.to_string(),
    };
    assert!(
        message.starts_with("/nonexistent/petrel.toml: cannot read: "),
        "{message}"
    );
}

#[test]
fn line_col_counts_characters_from_one() {
    let text = "a = 1\nbé = 2\n";
    assert_eq!(line_col(text, 0), (1, 1));
    assert_eq!(line_col(text, 6), (2, 1));
    assert_eq!(line_col(text, 9), (2, 3), "é is one column");
    assert_eq!(line_col(text, 8), (2, 2), "inside a character rounds down");
    assert_eq!(line_col(text, 999), (3, 1));
}

/// A readable file to stand in for a CA bundle.
fn ca_file() -> tempfile::NamedTempFile {
    match tempfile::NamedTempFile::new() {
        Ok(file) => file,
        Err(e) => panic!("{e}"),
    }
}

/// Every `[dns]`, `[delivery]` and `[[route]]` key set to something other
/// than its default.
fn delivery_keys_text(ca_file: &Path) -> String {
    format!(
        r#"
[server]
hostname = "mta.example.test"
[dns]
servers = ["127.0.0.1:5353", "192.0.2.53", "[::1]:53", "2001:db8::53"]
timeout = "500ms"
attempts = 3
randomize_case = false
[delivery]
paused = true
port = 2525
max_connections_per_destination = 4
max_messages_per_connection = 50
retry = ["1m", 120]
max_age = "2d"
tls = "required"
tls_ca_file = {ca_file:?}
connect_timeout = "10s"
command_timeout = "1m"
data_timeout = "2m"
idle_timeout = "1s"
delay_notice = "4h"
helo_name = "Out.Example.test"
[[route]]
domain = "Example.COM"
relay = "smarthost.example.net"
[[route]]
domain = ".example.org"
relay = "[2001:db8::25]:587"
[[route]]
domain = "*"
relay = "127.0.0.1:2526"
"#
    )
}

fn secs(n: u64) -> DurationSetting {
    DurationSetting(Duration::from_secs(n))
}

fn relay(host: &str, port: u16) -> RelayHost {
    RelayHost {
        host: host.to_owned(),
        port,
    }
}

#[test]
fn delivery_dns_and_routes_have_defaults() {
    let config = parse("[server]\nhostname = \"mta.example.test\"\n");
    assert_eq!(config.dns.servers, Vec::<SocketAddr>::new());
    assert_eq!(config.dns.timeout(), Duration::from_secs(2));
    assert_eq!(config.dns.attempts, 2);
    assert!(config.dns.randomize_case);
    let delivery = &config.delivery;
    assert!(!delivery.paused);
    assert_eq!(delivery.port, 25);
    assert_eq!(delivery.max_connections_per_destination, 20);
    assert_eq!(delivery.max_messages_per_connection, 1000);
    let minutes = [5, 10, 20, 40, 60, 120, 240].map(|m| secs(m * 60));
    assert_eq!(delivery.retry, minutes);
    assert_eq!(delivery.max_age.duration(), Duration::from_secs(5 * 86_400));
    assert_eq!(delivery.tls, OutboundTls::Opportunistic);
    assert_eq!(delivery.tls_ca_file, None);
    assert_eq!(
        (
            delivery.connect_timeout,
            delivery.command_timeout,
            delivery.data_timeout,
            delivery.idle_timeout
        ),
        (secs(30), secs(300), secs(600), secs(5))
    );
    assert_eq!(delivery.delay_notice, None);
    assert_eq!(delivery.helo_name, "mta.example.test", "[server] hostname");
    assert_eq!(
        *delivery,
        DeliverySection::with_defaults("mta.example.test".into())
    );
    assert!(config.route.is_empty());
    assert!(config.route_for("example.com").is_none(), "MX hosts, then");
}

#[test]
fn every_delivery_key_is_read() {
    let ca = ca_file();
    let config = parse(&delivery_keys_text(ca.path()));
    let servers: Vec<String> = config.dns.servers.iter().map(ToString::to_string).collect();
    assert_eq!(
        servers,
        [
            "127.0.0.1:5353",
            "192.0.2.53:53",
            "[::1]:53",
            "[2001:db8::53]:53"
        ]
    );
    assert_eq!(config.dns.timeout(), Duration::from_millis(500));
    assert_eq!(config.dns.attempts, 3);
    assert!(!config.dns.randomize_case);
    let delivery = &config.delivery;
    assert!(delivery.paused);
    assert_eq!(delivery.port, 2525);
    assert_eq!(
        (
            delivery.max_connections_per_destination,
            delivery.max_messages_per_connection
        ),
        (4, 50)
    );
    assert_eq!(delivery.retry, [secs(60), secs(120)]);
    assert_eq!(delivery.max_age, secs(2 * 86_400));
    assert_eq!(delivery.tls, OutboundTls::Required);
    assert_eq!(delivery.tls_ca_file.as_deref(), Some(ca.path()));
    assert_eq!(
        (
            delivery.connect_timeout,
            delivery.command_timeout,
            delivery.data_timeout,
            delivery.idle_timeout
        ),
        (secs(10), secs(60), secs(120), secs(1))
    );
    assert_eq!(delivery.delay_notice, Some(secs(4 * 3600)));
    assert_eq!(delivery.helo_name, "Out.Example.test");
    assert_eq!(
        config.route,
        [
            RouteSection {
                domain: RouteDomain::Exact("example.com".into()),
                relay: relay("smarthost.example.net", 2525),
            },
            RouteSection {
                domain: RouteDomain::Subdomains("example.org".into()),
                relay: relay("2001:db8::25", 587),
            },
            RouteSection {
                domain: RouteDomain::Any,
                relay: relay("127.0.0.1", 2526),
            },
        ]
    );
}

#[test]
fn tls_modes_are_the_three_words() {
    for (word, mode) in [
        ("opportunistic", OutboundTls::Opportunistic),
        ("required", OutboundTls::Required),
        ("disabled", OutboundTls::Disabled),
    ] {
        let config = parse(&format!("[delivery]\ntls = \"{word}\"\n"));
        assert_eq!(config.delivery.tls, mode);
    }
    assert_error(
        "[delivery]\ntls = \"sometimes\"\n",
        "2:7",
        "expected one of `opportunistic`, `required`, `disabled`",
    );
}

#[test]
fn bad_delivery_values_are_errors_at_their_value() {
    for (text, location, contains) in [
        ("[delivery]\nretry = []\n", "2:9", "retry is empty"),
        (
            "[delivery]\nretry = [\"5m\", \"0s\"]\n",
            "2:16",
            "each retry interval must be longer than zero",
        ),
        (
            "[delivery]\nretry = [\"5 m\"]\n",
            "2:10",
            "invalid duration \"5 m\"",
        ),
        (
            "[delivery]\n\nmax_connections_per_destination = 0\n",
            "3:35",
            "max_connections_per_destination = 0 is below the minimum of 1",
        ),
        (
            "[delivery]\nmax_messages_per_connection = 0\n",
            "2:31",
            "below the minimum of 1",
        ),
        (
            "[delivery]\nport = 0\n",
            "2:8",
            "port = 0 must be between 1 and 65535",
        ),
        (
            "[delivery]\nport = 70000\n",
            "2:8",
            "port = 70000 must be between 1 and 65535",
        ),
        (
            "[delivery]\nmax_age = 0\n",
            "2:11",
            "max_age must be longer",
        ),
        (
            "[delivery]\nidle_timeout = \"0ms\"\n",
            "2:16",
            "idle_timeout must be longer than zero",
        ),
        (
            "[delivery]\nmax_age = \"1d\"\ndelay_notice = \"1d\"\n",
            "3:16",
            "delay_notice = \"1d\" must be longer than zero and shorter than max_age (\"1d\")",
        ),
        (
            "[delivery]\ndelay_notice = \"6d\"\n",
            "2:16",
            "shorter than max_age (\"5d\")",
        ),
        ("[delivery]\ndelay_notice = 0\n", "2:16", "longer than zero"),
        (
            "[delivery]\nhelo_name = \"bad_name\"\n",
            "2:13",
            "helo_name \"bad_name\" is not a valid domain name",
        ),
        (
            "[delivery]\ntls_ca_file = \"/nonexistent/ca.pem\"\n",
            "2:15",
            "tls_ca_file \"/nonexistent/ca.pem\" cannot be read",
        ),
        (
            "[delivery]\ntls_ca_file = \"/\"\n",
            "2:15",
            "is not a regular file",
        ),
        ("[delivery]\npaused = 1\n", "2:10", "invalid type"),
        (
            "[delivery]\nretries = [\"5m\"]\n",
            "2:1",
            "unknown field `retries`",
        ),
    ] {
        assert_error(text, location, contains);
    }
}

#[test]
fn bad_dns_values_are_errors_at_their_value() {
    for (text, location, contains) in [
        (
            "[dns]\nservers = [\"127.0.0.1\", \"ns.example.com\"]\n",
            "2:25",
            "invalid DNS server \"ns.example.com\": \"ns.example.com\" is not an IP address",
        ),
        (
            "[dns]\nservers = [\"127.0.0.1:0\"]\n",
            "2:12",
            "port 0 is not between 1 and 65535",
        ),
        (
            "[dns]\nservers = [\"[::1:53\"]\n",
            "2:12",
            "without a closing ']'",
        ),
        (
            "[dns]\ntimeout = \"0s\"\n",
            "2:11",
            "timeout must be longer than zero",
        ),
        (
            "[dns]\nattempts = 0\n",
            "2:12",
            "attempts = 0 must be between 1 and 10",
        ),
        (
            "[dns]\nattempts = 11\n",
            "2:12",
            "attempts = 11 must be between 1 and 10",
        ),
        ("[dns]\nserver = []\n", "2:1", "unknown field `server`"),
    ] {
        assert_error(text, location, contains);
    }
}

#[test]
fn bad_routes_are_errors_at_their_value() {
    for (text, location, contains) in [
        (
            "[[route]]\ndomain = \"*\"\nrelay = \"host:99999\"\n",
            "3:9",
            "invalid relay \"host:99999\": port 99999 is not between 1 and 65535",
        ),
        (
            "[[route]]\ndomain = \"*\"\nrelay = \"host:smtp\"\n",
            "3:9",
            "port \"smtp\" is not a number",
        ),
        (
            "[[route]]\ndomain = \"*\"\nrelay = \"192.0.2.300\"\n",
            "3:9",
            "neither an IP address nor a valid host name",
        ),
        (
            "[[route]]\ndomain = \"*\"\nrelay = \"[mx.example.com]:25\"\n",
            "3:9",
            "in brackets is not an IPv6 address",
        ),
        (
            "[[route]]\ndomain = \"*\"\nrelay = \"\"\n",
            "3:9",
            "invalid relay \"\"",
        ),
        (
            "[[route]]\ndomain = \"*.example.com\"\nrelay = \"mx\"\n",
            "2:10",
            "\".example.com\" for its subdomains",
        ),
        (
            "[[route]]\ndomain = \"example..com\"\nrelay = \"mx\"\n",
            "2:10",
            "invalid route domain",
        ),
        (
            "[[route]]\ndomain = \"*\"\nrelay = \"mx\"\nport = 25\n",
            "4:1",
            "unknown field `port`",
        ),
        (
            "[[route]]\ndomain = \"*\"\n",
            "1:1",
            "missing field `relay`",
        ),
        (
            "[[route]]\ndomain = \"a.test\"\nrelay = \"mx\"\n[[route]]\nrelay = \"mx\"\n",
            "4:1",
            "missing field `domain`",
        ),
    ] {
        assert_error(text, location, contains);
    }
}

#[test]
fn relay_forms_and_the_default_port() {
    let route_to = |relay: &str, extra: &str| {
        let config = parse(&format!(
            "{extra}\n[[route]]\ndomain = \"*\"\nrelay = \"{relay}\"\n"
        ));
        config.route[0].relay.clone()
    };
    assert_eq!(route_to("MX.Example.NET", ""), relay("mx.example.net", 25));
    assert_eq!(
        route_to("mx.example.net", "[delivery]\nport = 2525"),
        relay("mx.example.net", 2525),
        "no port in the relay: [delivery] port"
    );
    assert_eq!(
        route_to("mx.example.net:587", ""),
        relay("mx.example.net", 587)
    );
    assert_eq!(route_to("192.0.2.1:26", ""), relay("192.0.2.1", 26));
    assert_eq!(route_to("192.0.2.1", ""), relay("192.0.2.1", 25));
    assert_eq!(route_to("[2001:DB8::1]:26", ""), relay("2001:db8::1", 26));
    assert_eq!(route_to("[::1]", ""), relay("::1", 25));
    assert_eq!(route_to("::1", ""), relay("::1", 25));
    assert_eq!(relay("::1", 25).to_string(), "[::1]:25");
    assert_eq!(relay("mx.test", 26).to_string(), "mx.test:26");
}

#[test]
fn route_domains_match_in_their_three_forms() {
    let any = RouteDomain::Any;
    let exact = RouteDomain::Exact("example.com".into());
    let subdomains = RouteDomain::Subdomains("example.com".into());
    for (domain, want) in [
        ("example.com", [true, true, false]),
        ("EXAMPLE.com.", [true, true, false]),
        ("mail.example.com", [true, false, true]),
        ("a.b.Example.COM.", [true, false, true]),
        ("badexample.com", [true, false, false]),
        (".example.com", [true, false, false]),
        ("example.com.au", [true, false, false]),
        ("example.org", [true, false, false]),
        ("é.example.com", [true, false, true]),
    ] {
        let got = [&any, &exact, &subdomains].map(|route| route.matches(domain));
        assert_eq!(got, want, "{domain}");
    }
    for (text, domain) in [
        ("*", any),
        ("Example.Com", exact),
        (".example.COM", subdomains),
    ] {
        let parsed: RouteDomain = match text.parse() {
            Ok(parsed) => parsed,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(parsed, domain);
        assert_eq!(parsed.to_string(), text.to_ascii_lowercase());
    }
}

#[test]
fn the_first_matching_route_wins() {
    let config = parse(
        r#"
[[route]]
domain = "vip.example.com"
relay = "fast.example.net"
[[route]]
domain = ".example.com"
relay = "sub.example.net"
[[route]]
domain = "example.com"
relay = "exact.example.net"
[[route]]
domain = "*"
relay = "default.example.net"
"#,
    );
    let relay_for = |domain: &str| {
        config
            .route_for(domain)
            .map(|route| route.relay.host.as_str())
    };
    assert_eq!(relay_for("vip.example.com"), Some("fast.example.net"));
    assert_eq!(relay_for("VIP.example.com."), Some("fast.example.net"));
    assert_eq!(relay_for("www.example.com"), Some("sub.example.net"));
    assert_eq!(relay_for("example.com"), Some("exact.example.net"));
    assert_eq!(relay_for("example.org"), Some("default.example.net"));
    let without_catch_all = parse("[[route]]\ndomain = \"example.com\"\nrelay = \"mx\"\n");
    assert!(without_catch_all.route_for("example.org").is_none());
}

#[test]
fn printed_settings_show_the_delivery_keys() {
    let defaults = printed(&parse("[server]\nhostname = \"mta.example.test\"\n"));
    for line in [
        "[dns]\nservers = []\ntimeout = \"2s\"\nattempts = 2\nrandomize_case = true\n",
        "[delivery]\npaused = false\nport = 25\n",
        "max_connections_per_destination = 20\n",
        "max_messages_per_connection = 1000\n",
        "retry = [\"5m\", \"10m\", \"20m\", \"40m\", \"1h\", \"2h\", \"4h\"]\n",
        "max_age = \"5d\"\n",
        "tls = \"opportunistic\"\n",
        "connect_timeout = \"30s\"\n",
        "command_timeout = \"5m\"\n",
        "data_timeout = \"10m\"\n",
        "idle_timeout = \"5s\"\n",
        "helo_name = \"mta.example.test\"\n",
    ] {
        assert!(
            defaults.contains(line),
            "{line:?} missing from:\n{defaults}"
        );
    }
    for absent in ["tls_ca_file", "delay_notice", "[[route]]"] {
        assert!(!defaults.contains(absent), "{absent} in:\n{defaults}");
    }
    let ca = ca_file();
    let set = printed(&parse(&delivery_keys_text(ca.path())));
    for line in [
        "servers = [\"127.0.0.1:5353\", \"192.0.2.53:53\", \"[::1]:53\", \"[2001:db8::53]:53\"]\n",
        "timeout = \"500ms\"\n",
        "retry = [\"1m\", \"2m\"]\n",
        "tls = \"required\"\n",
        &format!("tls_ca_file = {:?}\n", ca.path()),
        "delay_notice = \"4h\"\n",
        "[[route]]\ndomain = \"example.com\"\nrelay = \"smarthost.example.net:2525\"\n",
        "[[route]]\ndomain = \".example.org\"\nrelay = \"[2001:db8::25]:587\"\n",
        "[[route]]\ndomain = \"*\"\nrelay = \"127.0.0.1:2526\"\n",
    ] {
        assert!(set.contains(line), "{line:?} missing from:\n{set}");
    }
}

#[test]
fn postmaster_is_a_mailbox_and_its_absence_a_warning() {
    let config = parse("[server]\npostmaster = \"ops@example.com\"\n");
    assert_eq!(config.server.postmaster, "ops@example.com");
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
    assert_prints_and_reads_back(&config, &["postmaster = \"ops@example.com\""]);
    let unset = parse("");
    assert_eq!(unset.server.postmaster, "");
    let warnings = unset.warnings();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("[server] postmaster"), "{warnings:?}");
    assert!(Config::embedded_default().warnings().len() == 1);
    for bad in [
        "postmaster",
        "ops@[192.0.2.1]",
        "a b@example.com",
        "<ops@example.com>",
    ] {
        assert_error(
            &format!("[server]\npostmaster = \"{bad}\"\n"),
            "2:14",
            "is not a mailbox with a domain",
        );
    }
}

#[test]
fn limits_on_hostile_clients_have_defaults_and_are_checked() {
    let config = Config::from_str_named(
        "[[listener]]\naddress = \"127.0.0.1:25\"\n[auth]\nmax_failures = 0\nfailure_delay = \"0s\"\n",
        "test.toml",
    )
    .expect("config");
    let l = &config.listener[0];
    assert_eq!(l.max_junk_commands, 100);
    assert_eq!(l.tls_handshake_timeout, Duration::from_secs(10));
    assert_eq!(l.ipv6_prefix_length, 64);
    assert_eq!(config.auth.max_failures, 0);
    assert_eq!(config.auth.failure_window, Duration::from_secs(600));
    assert_eq!(config.auth.failure_delay, Duration::ZERO);
    assert_error(
        "[[listener]]\naddress = \"127.0.0.1:25\"\nipv6_prefix_length = 0\n",
        "3:22",
        "ipv6_prefix_length = 0",
    );
    assert_error(
        "[[listener]]\naddress = \"127.0.0.1:25\"\ntls_handshake_timeout = \"0s\"\n",
        "3:25",
        "tls_handshake_timeout",
    );
    assert_error(
        "[[listener]]\naddress = \"127.0.0.1:25\"\nmax_junk_commands = 0\n",
        "3:21",
        "max_junk_commands = 0",
    );
}
