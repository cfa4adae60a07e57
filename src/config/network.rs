//! `[relay] networks` entries: CIDR notation (`"127.0.0.0/8"`, `"::1/128"`)
//! or a bare address meaning a single host, parsed into [`IpNet`] with the
//! config's own error messages, and matched against client addresses.
//!
//! Matching treats an IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, which is
//! what a dual-stack socket reports for an IPv4 client) as the IPv4 address
//! it carries, so a network written in IPv4 form matches either way.
//! It never resolves names: an entry is an address or it is an error.

use std::net::IpAddr;

pub use ipnet::IpNet;

/// Why a network could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpNetError {
    #[error("invalid network {0:?}: expected an IP address or CIDR such as \"192.0.2.0/24\" or \"2001:db8::/32\"")]
    Syntax(String),
    #[error("invalid network {text:?}: prefix length {prefix_len} is longer than {max}")]
    PrefixTooLong {
        text: String,
        prefix_len: u8,
        max: u8,
    },
    #[error("invalid network {text:?}: host bits are set; did you mean \"{suggestion}\"?")]
    HostBitsSet { text: String, suggestion: IpNet },
}

/// Builds a network; the address must have no bits set past the prefix,
/// because `10.1.2.3/8` is usually a typo for something narrower.
pub fn network(addr: IpAddr, prefix_len: u8) -> Result<IpNet, IpNetError> {
    let text = || format!("{addr}/{prefix_len}");
    let net = IpNet::new(addr, prefix_len).map_err(|_| IpNetError::PrefixTooLong {
        text: text(),
        prefix_len,
        max: max_prefix_len(addr),
    })?;
    if net.trunc() != net {
        return Err(IpNetError::HostBitsSet {
            text: text(),
            suggestion: net.trunc(),
        });
    }
    Ok(net)
}

/// Parses a network as `[relay] networks` accepts it.
pub fn parse_network(text: &str) -> Result<IpNet, IpNetError> {
    let syntax = || IpNetError::Syntax(text.to_owned());
    let (addr_text, prefix_text) = match text.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (text, None),
    };
    let addr: IpAddr = addr_text.parse().map_err(|_| syntax())?;
    let prefix_len = match prefix_text {
        // Only plain decimal digits: "+8" or " 8" would parse as u8 but
        // are not CIDR.
        Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse().map_err(|_| syntax())?
        }
        Some(_) => return Err(syntax()),
        None => max_prefix_len(addr),
    };
    network(addr, prefix_len)
}

fn max_prefix_len(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// Whether `ip` is inside `net`, looking through IPv4-mapped IPv6
/// addresses in both directions (`::/0` is every client, IPv4 ones too).
pub fn contains(net: &IpNet, ip: IpAddr) -> bool {
    match (net, ip.to_canonical()) {
        (IpNet::V6(v6net), IpAddr::V4(v4)) => v6net.contains(&v4.to_ipv6_mapped()),
        (net, ip) => net.contains(&ip),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    fn net(text: &str) -> IpNet {
        match parse_network(text) {
            Ok(net) => net,
            Err(e) => panic!("{text}: {e}"),
        }
    }

    fn ip(text: &str) -> IpAddr {
        match text.parse() {
            Ok(ip) => ip,
            Err(e) => panic!("{text}: {e}"),
        }
    }

    #[test]
    fn parses_cidr_and_bare_addresses() {
        assert_eq!(net("127.0.0.0/8").to_string(), "127.0.0.0/8");
        assert_eq!(net("::1/128").to_string(), "::1/128");
        assert_eq!(net("192.0.2.7").to_string(), "192.0.2.7/32");
        assert_eq!(net("2001:db8::").to_string(), "2001:db8::/128");
        assert_eq!(net("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(net("::/0").to_string(), "::/0");
    }

    #[test]
    fn rejects_bad_syntax_and_host_bits() {
        for bad in [
            "",
            "/8",
            "127.0.0.0/",
            "127.0.0.0/+8",
            "127.0.0.0/ 8",
            "localhost",
            "127.0.0.0/8/8",
            "1.2.3/24",
        ] {
            assert_eq!(
                parse_network(bad),
                Err(IpNetError::Syntax(bad.to_owned())),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse_network("10.0.0.0/33"),
            Err(IpNetError::PrefixTooLong { max: 32, .. })
        ));
        assert!(matches!(
            parse_network("::/129"),
            Err(IpNetError::PrefixTooLong { max: 128, .. })
        ));
        assert_eq!(
            parse_network("10.0.0.0/33").map_err(|e| e.to_string()),
            Err("invalid network \"10.0.0.0/33\": prefix length 33 is longer than 32".to_owned())
        );
        assert_eq!(
            parse_network("10.1.2.3/8").map_err(|e| e.to_string()),
            Err(
                "invalid network \"10.1.2.3/8\": host bits are set; did you mean \"10.0.0.0/8\"?"
                    .to_owned()
            )
        );
    }

    #[test]
    fn contains_respects_the_prefix() {
        let loopback = net("127.0.0.0/8");
        assert!(contains(&loopback, ip("127.0.0.1")));
        assert!(contains(&loopback, ip("127.255.255.255")));
        assert!(!contains(&loopback, ip("128.0.0.1")));
        assert!(contains(&net("0.0.0.0/0"), ip("203.0.113.9")));
        assert!(contains(&net("2001:db8::/32"), ip("2001:db8:ffff::1")));
        assert!(!contains(&net("2001:db8::/32"), ip("2001:db9::1")));
        // ::/0 is every address, including IPv4 clients seen as v4-mapped.
        assert!(contains(&net("::/0"), ip("192.0.2.1")));
    }

    #[test]
    fn v4_mapped_addresses_match_v4_networks_and_back() {
        assert!(contains(&net("127.0.0.0/8"), ip("::ffff:127.0.0.1")));
        assert!(!contains(&net("127.0.0.0/8"), ip("::1")));
        assert!(
            !contains(&net("127.0.0.0/8"), ip("::127.0.0.1")),
            "v4-compatible is not v4-mapped"
        );
        assert!(contains(&net("::ffff:0:0/96"), ip("192.0.2.1")));
        assert!(contains(&net("::ffff:0:0/96"), ip("::ffff:192.0.2.1")));
        assert!(!contains(&net("::1/128"), ip("127.0.0.1")));
    }

    #[test]
    fn serializes_as_cidr_text() {
        #[derive(serde::Serialize)]
        struct Doc {
            networks: Vec<IpNet>,
        }
        let doc = Doc {
            networks: vec![net("10.0.0.0/8"), net("::1")],
        };
        let text = toml::to_string(&doc).unwrap_or_default();
        assert!(text.contains("\"10.0.0.0/8\""), "{text}");
        assert!(text.contains("\"::1/128\""), "{text}");
    }

    proptest! {
        #[test]
        fn every_v4_network_contains_its_own_range(bits: u32, prefix_len in 0u8..=32) {
            let addr = IpAddr::V4(Ipv4Addr::from(bits));
            let network = match IpNet::new(addr, prefix_len) {
                Ok(n) => n.trunc(),
                Err(e) => panic!("{e}"),
            };
            prop_assert!(contains(&network, addr));
            prop_assert!(contains(&network, IpAddr::V6(Ipv4Addr::from(bits).to_ipv6_mapped())));
            prop_assert_eq!(parse_network(&network.to_string()), Ok(network));
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,48}") {
            let _ = parse_network(&text);
        }
    }
}
