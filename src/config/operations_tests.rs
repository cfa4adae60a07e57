//! `[log]` and `[admin]`: defaults, the printed form, rejected values.

use super::tests::{assert_error, parse};

#[test]
fn defaults_log_every_message_and_serve_admin_on_loopback() {
    let config = parse("");
    assert!(config.log.messages);
    assert_eq!(
        config.admin.address,
        Some("127.0.0.1:9925".parse().unwrap())
    );
    let allowed = |ip: &str| {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        config
            .admin
            .allow
            .iter()
            .any(|n| super::network::contains(n, ip))
    };
    assert!(allowed("127.0.0.1") && allowed("::1"));
    assert!(!allowed("192.0.2.1"));
}

#[test]
fn log_and_admin_are_set_and_print_back() {
    let config = parse(
        "[log]\nmessages = false\n[admin]\naddress = \"[::1]:9999\"\nallow = [\"10.0.0.0/8\"]\n",
    );
    assert!(!config.log.messages);
    assert_eq!(config.admin.address, Some("[::1]:9999".parse().unwrap()));
    assert_eq!(config.admin.allow.len(), 1);
    let off = parse("[admin]\naddress = \"\"\n");
    assert_eq!(off.admin.address, None);
    for c in [config, off] {
        let text = c.to_toml_string().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parse(&text), c, "{text}");
    }
}

#[test]
fn bad_log_and_admin_values_are_refused_at_their_place() {
    assert_error(
        "[admin]\naddress = \"localhost\"\n",
        "2:11",
        "invalid admin address",
    );
    assert_error("[admin]\nallow = [\"10.0.0.0/33\"]\n", "2:10", "");
    assert_error("[log]\nmessages = \"no\"\n", "2:12", "invalid type");
    assert_error("[log]\nlevel = \"debug\"\n", "2:1", "unknown field `level`");
}
