//! Nameservers from /etc/resolv.conf, when `[dns] servers` is not set.
//!
//! Owns: parsing `nameserver` lines (other directives are ignored). Must
//! never: fail on a malformed line; such lines are skipped.

use std::net::{IpAddr, SocketAddr};

pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// The `nameserver` addresses in `text`, in order, on port 53. Scoped IPv6
/// addresses (`fe80::1%eth0`) are skipped: resolving the interface name to
/// an index is not worth the code for a link-local resolver.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            if words.next() != Some("nameserver") {
                return None;
            }
            let addr: IpAddr = words.next()?.parse().ok()?;
            Some(SocketAddr::new(addr, 53))
        })
        .collect()
}

/// The system's nameservers; empty when the file is missing or names none.
pub fn read_system_nameservers() -> Vec<SocketAddr> {
    std::fs::read_to_string(RESOLV_CONF)
        .map(|text| parse_resolv_conf(&text))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nameserver_lines() {
        let text = "# generated\nsearch example.com\nnameserver 10.0.0.1\n\
                    nameserver   2001:db8::53 # comment\n;nameserver 10.9.9.9\n\
                    nameserver fe80::1%eth0\nnameserver bogus\nnameserver\n\
                    options timeout:1\n\tnameserver 10.0.0.2\n";
        let got = parse_resolv_conf(text);
        let want: Vec<SocketAddr> = vec![
            "10.0.0.1:53".parse().unwrap(),
            "[2001:db8::53]:53".parse().unwrap(),
            "10.0.0.2:53".parse().unwrap(),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn empty_and_garbage_give_nothing() {
        assert!(parse_resolv_conf("").is_empty());
        assert!(parse_resolv_conf("\u{0}\u{ff}nameserverx 1.2.3.4\n").is_empty());
    }
}
