use super::*;

fn parse(text: &str) -> Config {
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

fn assert_error(text: &str, location: &str, contains: &str) {
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
    assert!(config.delivery.paused);
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
    assert!(config.delivery.paused);
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
    for config in [Config::embedded_default(), parse("[[listener]]\naddress = \"127.0.0.1:25\"\ntls_cert = \"c\"\ntls_key = \"k\"\n[auth]\nusers_file = \"u\"")] {
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
