//! MX selection per RFC 5321 section 5.1 and RFC 7505 (null MX).
//!
//! Owns: turning an MX answer into the ordered list of hosts to try, and
//! recognising address literals (`[192.0.2.1]`, `[IPv6:2001:db8::1]`).
//! Must never: do I/O or draw its own randomness; the shuffle among equal
//! preferences takes a seed so that it replays in tests.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::Name;

use super::rng::XorShift;
use super::DnsError;

/// MX hosts kept in a plan (the best ones after sorting): a bound on the
/// address lookups and connection attempts one domain can cause.
pub const MAX_MX_HOSTS: usize = 20;

/// One MX record as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxRecord {
    pub preference: u16,
    /// Lower-case, fully qualified; the root name for a null MX.
    pub exchange: Name,
}

/// What the MX query for a domain said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxAnswer {
    Records(Vec<MxRecord>),
    /// NOERROR without MX records: the domain itself is the implicit MX.
    NoData,
    NxDomain,
}

/// Where a host in the plan came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    /// Named by an MX record.
    Mx,
    /// The domain itself, because it has no MX records (RFC 5321 5.1).
    Implicit,
    /// An address literal in the recipient's domain.
    Literal,
}

/// A host to deliver to, in the order to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxHost {
    /// Host name without the trailing dot (the literal itself for literals).
    pub name: String,
    pub preference: u16,
    pub kind: HostKind,
    /// IPv4 addresses first, then IPv6. Empty until resolved.
    pub addrs: Vec<IpAddr>,
}

/// The delivery plan for a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxPlan {
    /// Hosts in the order to try; each has at least one address once the
    /// resolver has filled them in.
    Hosts(Vec<MxHost>),
    /// The domain accepts no mail (RFC 7505): bounce with 5.1.10.
    NullMx,
    /// The domain does not exist: bounce with 5.1.2.
    NoSuchDomain,
    /// MX hosts (or the implicit MX) exist but none has an address; the
    /// caller decides (usually bounce with 5.4.4 after retries).
    NoAddresses,
}

/// The plan for `domain` from its MX answer. Hosts come sorted by
/// preference, shuffled among equal preferences with `seed`, at most
/// [`MAX_MX_HOSTS`] of them, without addresses.
pub fn mx_plan(domain: &str, answer: &MxAnswer, seed: u64) -> MxPlan {
    match answer {
        MxAnswer::NxDomain => MxPlan::NoSuchDomain,
        MxAnswer::NoData => MxPlan::Hosts(vec![MxHost {
            name: trim_dot(domain).to_ascii_lowercase(),
            preference: 0,
            kind: HostKind::Implicit,
            addrs: Vec::new(),
        }]),
        MxAnswer::Records(records) => from_records(records, seed),
    }
}

fn from_records(records: &[MxRecord], seed: u64) -> MxPlan {
    // A root exchange is never a delivery target. RFC 7505 defines the null
    // MX as the single record "0 ."; a domain whose only targets are "."
    // (whatever the preference) cannot receive mail either.
    let mut usable: Vec<&MxRecord> = records.iter().filter(|r| !r.exchange.is_root()).collect();
    if usable.is_empty() {
        return MxPlan::NullMx;
    }
    usable.sort_by_key(|r| r.preference);
    let mut hosts: Vec<MxHost> = Vec::with_capacity(usable.len());
    for r in usable {
        let name = trim_dot(&r.exchange.to_ascii()).to_ascii_lowercase();
        // Sorted, so the first occurrence of a name has its best preference.
        if hosts.iter().all(|h| h.name != name) {
            hosts.push(MxHost {
                name,
                preference: r.preference,
                kind: HostKind::Mx,
                addrs: Vec::new(),
            });
        }
    }
    shuffle_equal_preferences(&mut hosts, seed);
    hosts.truncate(MAX_MX_HOSTS);
    MxPlan::Hosts(hosts)
}

/// Fisher-Yates within each run of equal preference (RFC 5321 5.1: "the
/// sender-SMTP MUST randomize them to spread the load").
fn shuffle_equal_preferences(hosts: &mut [MxHost], seed: u64) {
    let mut rng = XorShift::new(seed);
    let mut start = 0;
    while start < hosts.len() {
        let pref = hosts[start].preference;
        let len = hosts[start..]
            .iter()
            .take_while(|h| h.preference == pref)
            .count();
        let group = &mut hosts[start..start + len];
        for i in (1..group.len()).rev() {
            group.swap(i, rng.below(i + 1));
        }
        start += len;
    }
}

fn trim_dot(name: &str) -> &str {
    name.strip_suffix('.').unwrap_or(name)
}

/// Recognises an address literal domain (RFC 5321 4.1.3): `None` for an
/// ordinary domain, the address for a valid literal, an error for a
/// bracketed string that is not one.
pub fn address_literal(domain: &str) -> Option<Result<IpAddr, DnsError>> {
    let inner = domain.strip_prefix('[')?;
    let invalid = || DnsError::InvalidName(domain.to_string());
    let Some(inner) = inner.strip_suffix(']') else {
        return Some(Err(invalid()));
    };
    let parsed = match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => inner[5..]
            .parse::<Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| invalid()),
        _ => inner
            .parse::<Ipv4Addr>()
            .map(IpAddr::V4)
            .map_err(|_| invalid()),
    };
    Some(parsed)
}

/// The plan for an address literal: that one address.
pub(crate) fn literal_plan(domain: &str, addr: IpAddr) -> MxPlan {
    MxPlan::Hosts(vec![MxHost {
        name: domain.to_string(),
        preference: 0,
        kind: HostKind::Literal,
        addrs: vec![addr],
    }])
}

#[cfg(test)]
#[path = "mx_tests.rs"]
mod tests;
