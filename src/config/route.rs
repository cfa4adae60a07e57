//! Where mail goes instead of the recipient domain's MX hosts: the
//! `[[route]]` entries, their domain patterns and relay hosts, and the
//! `host[:port]` text form they share with `[dns] servers`.
//!
//! This module owns those text forms in both directions and the matching of
//! a recipient domain against a route. It never resolves a name: a relay
//! given by name is looked up when mail is delivered.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// One `[[route]]`: mail for domains matching `domain` goes to `relay`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteSection {
    pub domain: RouteDomain,
    pub relay: RelayHost,
}

/// The recipient domains a route applies to. Names are lower-case and
/// carry neither a leading nor a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RouteDomain {
    /// `"*"`: every domain.
    Any,
    /// `"example.com"`: that domain and no other.
    Exact(String),
    /// `".example.com"`: every subdomain of example.com, not example.com
    /// itself.
    Subdomains(String),
}

/// A smart host: where a route sends mail, by address or by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RelayHost {
    /// An IP address as text (IPv6 without brackets) or a lower-case DNS
    /// name.
    pub host: String,
    pub port: u16,
}

/// Why a route's domain or relay could not be read; the text says what is
/// accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("invalid route domain {0:?}: expected \"*\" for any domain, a domain such as \"example.com\", or \".example.com\" for its subdomains")]
    Domain(String),
    #[error("invalid relay {text:?}: {reason}; expected \"host\", \"host:port\", \"[ipv6]:port\" or \"192.0.2.1:port\"")]
    Relay { text: String, reason: String },
}

impl RouteDomain {
    /// Whether mail for `domain` takes this route. Case does not matter,
    /// and a trailing dot on `domain` (the DNS root) is ignored.
    pub fn matches(&self, domain: &str) -> bool {
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        match self {
            RouteDomain::Any => true,
            RouteDomain::Exact(name) => domain.eq_ignore_ascii_case(name),
            RouteDomain::Subdomains(parent) => is_subdomain_of(domain, parent),
        }
    }
}

/// Whether `name` lies under `parent` (not `parent` itself), without
/// regard to case; neither may carry a trailing dot.
pub(super) fn is_subdomain_of(name: &str, parent: &str) -> bool {
    // At least one character and a dot before the parent.
    name.len() > parent.len() + 1 && {
        let (sub, tail) = name.as_bytes().split_at(name.len() - parent.len());
        sub.ends_with(b".") && tail.eq_ignore_ascii_case(parent.as_bytes())
    }
}

impl FromStr for RouteDomain {
    type Err = RouteError;

    fn from_str(text: &str) -> Result<RouteDomain, RouteError> {
        if text == "*" {
            return Ok(RouteDomain::Any);
        }
        let lower = text.to_ascii_lowercase();
        let (name, form): (&str, fn(String) -> RouteDomain) = match lower.strip_prefix('.') {
            Some(parent) => (parent, RouteDomain::Subdomains),
            None => (&lower, RouteDomain::Exact),
        };
        match is_domain_name(name) {
            true => Ok(form(name.to_owned())),
            false => Err(RouteError::Domain(text.to_owned())),
        }
    }
}

impl fmt::Display for RouteDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteDomain::Any => f.write_str("*"),
            RouteDomain::Exact(name) => f.write_str(name),
            RouteDomain::Subdomains(parent) => write!(f, ".{parent}"),
        }
    }
}

impl Serialize for RouteDomain {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl RelayHost {
    /// Reads `"host"`, `"host:port"`, `"[ipv6]:port"` or a bare IP address;
    /// `default_port` is the port when the text gives none.
    pub fn parse(text: &str, default_port: u16) -> Result<RelayHost, RouteError> {
        let fail = |reason: String| RouteError::Relay {
            text: text.to_owned(),
            reason,
        };
        let (host, port) = split_host_port(text).map_err(fail)?;
        let host = match host.parse::<IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) if is_host_name(host) => host.to_ascii_lowercase(),
            Err(_) => {
                return Err(fail(format!(
                    "{host:?} is neither an IP address nor a valid host name"
                )))
            }
        };
        Ok(RelayHost {
            host,
            port: port.unwrap_or(default_port),
        })
    }
}

impl fmt::Display for RelayHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host.contains(':') {
            true => write!(f, "[{}]:{}", self.host, self.port),
            false => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

impl Serialize for RelayHost {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Splits `"host:port"`, `"[ipv6]:port"`, `"[ipv6]"`, a bare IPv6 address
/// or a bare host into the host text and the port, if any. The host is not
/// checked here except inside brackets, where only IPv6 belongs.
pub(super) fn split_host_port(text: &str) -> Result<(&str, Option<u16>), String> {
    if let Some(rest) = text.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err("'[' without a closing ']'".to_owned());
        };
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(format!("{host:?} in brackets is not an IPv6 address"));
        }
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(parse_port(port)?))),
                None => Err("expected ':' and a port after ']'".to_owned()),
            },
        };
    }
    // Without brackets, an IPv6 address is all host: its colons are not a
    // port separator.
    if text.parse::<Ipv6Addr>().is_ok() {
        return Ok((text, None));
    }
    match text.rsplit_once(':') {
        Some((host, port)) => Ok((host, Some(parse_port(port)?))),
        None => Ok((text, None)),
    }
}

fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u64>() {
        Ok(port) => match u16::try_from(port) {
            Ok(port) if port > 0 => Ok(port),
            _ => Err(format!("port {port} is not between 1 and 65535")),
        },
        Err(_) => Err(format!("port {text:?} is not a number")),
    }
}

pub use crate::smtp::address::is_domain_name;

/// A domain name that cannot be mistaken for a mistyped IPv4 address: no
/// top-level domain is all digits, so `"192.0.2.300"` is an error rather
/// than a name to look up.
fn is_host_name(name: &str) -> bool {
    is_domain_name(name)
        && name
            .rsplit('.')
            .next()
            .is_some_and(|last| !last.bytes().all(|b| b.is_ascii_digit()))
}
