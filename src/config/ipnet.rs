//! IP networks in CIDR notation (`"127.0.0.0/8"`, `"::1/128"`, or a bare
//! address meaning a single host), as used by `[relay] networks`.
//!
//! Matching treats an IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, which is
//! what a dual-stack socket reports for an IPv4 client) as the IPv4 address
//! it carries, so a network written in IPv4 form matches either way.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IP network: an address with its host bits zero and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix_len: u8,
}

/// Why a network could not be parsed or built.
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

impl IpNet {
    /// Builds a network; the address must have no bits set past the prefix,
    /// because `10.1.2.3/8` is usually a typo for something narrower.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<IpNet, IpNetError> {
        let max = max_prefix_len(addr);
        if prefix_len > max {
            return Err(IpNetError::PrefixTooLong {
                text: format!("{addr}/{prefix_len}"),
                prefix_len,
                max,
            });
        }
        let net = IpNet {
            addr: mask(addr, prefix_len),
            prefix_len,
        };
        if net.addr != addr {
            return Err(IpNetError::HostBitsSet {
                text: format!("{addr}/{prefix_len}"),
                suggestion: net,
            });
        }
        Ok(net)
    }

    /// The network address (host bits zero).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The number of leading bits that identify the network.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `ip` is inside this network, looking through IPv4-mapped
    /// IPv6 addresses in both directions.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            (IpAddr::V6(_), IpAddr::V4(v4)) => IpAddr::V6(v4.to_ipv6_mapped()),
            _ => ip,
        };
        mask(ip, self.prefix_len) == self.addr
    }
}

fn max_prefix_len(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// Zeroes every bit after the first `prefix_len`; `prefix_len` must not
/// exceed the address width (checked by callers).
fn mask(addr: IpAddr, prefix_len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let kept = bits.checked_shr(32 - u32::from(prefix_len)).unwrap_or(0);
            let masked = kept.checked_shl(32 - u32::from(prefix_len)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(masked))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let kept = bits.checked_shr(128 - u32::from(prefix_len)).unwrap_or(0);
            let masked = kept.checked_shl(128 - u32::from(prefix_len)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(masked))
        }
    }
}

impl FromStr for IpNet {
    type Err = IpNetError;

    fn from_str(text: &str) -> Result<IpNet, IpNetError> {
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
        IpNet::new(addr, prefix_len)
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl Serialize for IpNet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(text: &str) -> IpNet {
        match text.parse() {
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
                bad.parse::<IpNet>(),
                Err(IpNetError::Syntax(bad.to_owned())),
                "{bad:?}"
            );
        }
        assert!(matches!(
            "10.0.0.0/33".parse::<IpNet>(),
            Err(IpNetError::PrefixTooLong { max: 32, .. })
        ));
        assert!(matches!(
            "::/129".parse::<IpNet>(),
            Err(IpNetError::PrefixTooLong { max: 128, .. })
        ));
        assert_eq!(
            "10.1.2.3/8".parse::<IpNet>().map_err(|e| e.to_string()),
            Err(
                "invalid network \"10.1.2.3/8\": host bits are set; did you mean \"10.0.0.0/8\"?"
                    .to_owned()
            )
        );
    }

    #[test]
    fn contains_respects_the_prefix() {
        let loopback = net("127.0.0.0/8");
        assert!(loopback.contains(ip("127.0.0.1")));
        assert!(loopback.contains(ip("127.255.255.255")));
        assert!(!loopback.contains(ip("128.0.0.1")));
        assert!(net("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(net("2001:db8::/32").contains(ip("2001:db8:ffff::1")));
        assert!(!net("2001:db8::/32").contains(ip("2001:db9::1")));
        // ::/0 is every address, including IPv4 clients seen as v4-mapped.
        assert!(net("::/0").contains(ip("192.0.2.1")));
    }

    #[test]
    fn v4_mapped_addresses_match_v4_networks_and_back() {
        assert!(net("127.0.0.0/8").contains(ip("::ffff:127.0.0.1")));
        assert!(!net("127.0.0.0/8").contains(ip("::1")));
        assert!(
            !net("127.0.0.0/8").contains(ip("::127.0.0.1")),
            "v4-compatible is not v4-mapped"
        );
        assert!(net("::ffff:0:0/96").contains(ip("192.0.2.1")));
        assert!(!net("::1/128").contains(ip("127.0.0.1")));
    }

    #[test]
    fn toml_round_trip() {
        #[derive(Deserialize, Serialize)]
        struct Doc {
            networks: Vec<IpNet>,
        }
        let doc: Doc = match toml::from_str("networks = [\"10.0.0.0/8\", \"::1\"]") {
            Ok(doc) => doc,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(doc.networks, vec![net("10.0.0.0/8"), net("::1/128")]);
        let text = toml::to_string(&doc).unwrap_or_default();
        assert!(text.contains("\"::1/128\""), "{text}");
    }

    proptest! {
        #[test]
        fn every_v4_network_contains_its_own_range(bits: u32, prefix_len in 0u8..=32) {
            let network = IpNet::new(mask(IpAddr::V4(Ipv4Addr::from(bits)), prefix_len), prefix_len);
            let network = match network { Ok(n) => n, Err(e) => panic!("{e}") };
            prop_assert!(network.contains(IpAddr::V4(Ipv4Addr::from(bits))));
            prop_assert!(network.contains(IpAddr::V6(Ipv4Addr::from(bits).to_ipv6_mapped())));
            prop_assert_eq!(network.to_string().parse::<IpNet>(), Ok(network));
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,48}") {
            let _ = text.parse::<IpNet>();
        }
    }
}
