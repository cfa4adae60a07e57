//! Where a recipient's mail goes: the destination a queue is keyed by, and
//! the hosts (with addresses) a connection to that destination tries.
//!
//! A destination is the recipient's domain, lower-cased (delivered to its
//! MX hosts), `relay:host:port` for a `[[route]]` smart host, or, for a
//! domain hosted here (`[[domain]]`), `maildir:domain` (written by petrel
//! into its users' Maildirs) or `lmtp:domain` (handed to its LMTP server).
//! Domains cannot contain `:`, so these never collide.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use crate::config::{Config, LmtpTarget, LocalDelivery};
use crate::dns::{DnsError, MxPlan, Resolver};
use crate::dsn::Status;

const RELAY_PREFIX: &str = "relay:";
const MAILDIR_PREFIX: &str = "maildir:";
const LMTP_PREFIX: &str = "lmtp:";

/// A destination delivered here rather than to other servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hosted<'a> {
    /// Into the Maildirs of this hosted domain.
    Maildir(&'a str),
    /// To the LMTP server of this hosted domain.
    Lmtp(&'a str),
}

/// Which hosted domain `destination` delivers to, and how; `None` for mail
/// to other servers.
pub fn hosted(destination: &str) -> Option<Hosted<'_>> {
    if let Some(domain) = destination.strip_prefix(MAILDIR_PREFIX) {
        return Some(Hosted::Maildir(domain));
    }
    destination.strip_prefix(LMTP_PREFIX).map(Hosted::Lmtp)
}

/// The domain of `local@domain` (after the last `@`), or "" if none.
pub fn recipient_domain(address: &[u8]) -> &[u8] {
    match memchr::memrchr(b'@', address) {
        Some(at) => &address[at + 1..],
        None => b"",
    }
}

/// The destination of a recipient address, written into `out` (reused, so
/// grouping a message's recipients allocates nothing per recipient).
pub fn destination_of(config: &Config, address: &[u8], out: &mut String) {
    out.clear();
    let domain = String::from_utf8_lossy(recipient_domain(address));
    let domain = domain.trim_end_matches('.');
    if let Some(d) = config.hosted_domain(domain) {
        out.push_str(match d.delivery {
            LocalDelivery::Maildir => MAILDIR_PREFIX,
            LocalDelivery::Lmtp => LMTP_PREFIX,
        });
        out.push_str(&d.name);
        return;
    }
    match config.route_for(domain) {
        Some(route) => {
            use std::fmt::Write;
            // Writing into a String cannot fail.
            let _ = write!(
                out,
                "{RELAY_PREFIX}{}:{}",
                route.relay.host, route.relay.port
            );
        }
        None => {
            out.extend(domain.chars().map(|c| c.to_ascii_lowercase()));
        }
    }
}

/// A host to connect to, in the order to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// The MX or relay host name (for TLS and bounces).
    pub name: String,
    pub addrs: Vec<IpAddr>,
    pub port: u16,
}

/// Why no host can be tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoRoute {
    /// Bounce every recipient of the destination.
    Permanent { status: Status, reason: String },
    /// Defer them.
    Temporary(String),
}

fn permanent(class_subject_detail: (u8, u16, u16), reason: String) -> NoRoute {
    let (c, s, d) = class_subject_detail;
    NoRoute::Permanent {
        status: Status::new(c, s, d).unwrap_or(Status::LOOP_DETECTED),
        reason,
    }
}

/// The addresses mail to which reaches this server: those its listeners
/// name and, when one listens on a wildcard address (`0.0.0.0`, `::`),
/// every address of the machine's interfaces and all of loopback.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelfAddrs {
    addrs: Vec<IpAddr>,
    /// A listener is on a wildcard address: 127.0.0.0/8, `::1` and the
    /// unspecified addresses reach it too.
    wildcard: bool,
}

impl SelfAddrs {
    /// The addresses of `listeners`; with a wildcard one, the interfaces'
    /// too (enumerated now: an address added later is not known).
    pub fn of(listeners: impl IntoIterator<Item = IpAddr>) -> SelfAddrs {
        let mut me = SelfAddrs::default();
        for ip in listeners {
            match ip.is_unspecified() {
                true => me.wildcard = true,
                false => me.addrs.push(ip.to_canonical()),
            }
        }
        if me.wildcard {
            match interface_addrs() {
                Ok(addrs) => me.addrs.extend(addrs),
                Err(e) => tracing::warn!(error = %e,
                    "the machine's interface addresses are unknown: an MX pointing at one of them is not seen as a mail loop (loopback still is)"),
            }
        }
        me.addrs.sort_unstable();
        me.addrs.dedup();
        me
    }

    /// Whether mail sent to `ip` comes back here.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.addrs.contains(&ip) || (self.wildcard && (ip.is_loopback() || ip.is_unspecified()))
    }
}

/// The addresses of the machine's network interfaces.
fn interface_addrs() -> nix::Result<Vec<IpAddr>> {
    Ok(nix::ifaddrs::getifaddrs()?
        .filter_map(|i| {
            let a = i.address?;
            let ip = match (a.as_sockaddr_in(), a.as_sockaddr_in6()) {
                (Some(v4), _) => IpAddr::V4(*std::net::SocketAddrV4::from(*v4).ip()),
                (_, Some(v6)) => IpAddr::V6(v6.ip()),
                _ => return None,
            };
            Some(ip.to_canonical())
        })
        .collect())
}

/// Who we are, to recognise an MX that points back at this server.
pub struct Myself<'a> {
    pub hostname: &'a str,
    pub addrs: &'a SelfAddrs,
    /// `[delivery] refuse_private_mx`.
    pub refuse_private: bool,
}

impl Myself<'_> {
    fn is(&self, hop: &Hop) -> bool {
        hop.name.eq_ignore_ascii_case(self.hostname)
            || hop.addrs.iter().any(|&a| self.addrs.contains(a))
    }
}

/// An address no MX on the public internet has: private (RFC 1918, IPv6
/// unique local), loopback, link-local, unspecified, or shared address
/// space (RFC 6598).
pub fn is_private(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let shared = v4.octets()[0] == 100 && v4.octets()[1] & 0xC0 == 64;
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || shared
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_unique_local()
                || v6.is_unicast_link_local()
        }
    }
}

/// `hops` without their private addresses (and without the hosts left
/// with none), or why none is left.
fn public_only(destination: &str, mut hops: Vec<Hop>) -> Result<Vec<Hop>, NoRoute> {
    for hop in &mut hops {
        hop.addrs.retain(|&a| !is_private(a));
    }
    hops.retain(|h| !h.addrs.is_empty());
    if hops.is_empty() {
        return Err(permanent(
            (5, 4, 4),
            format!(
                "the mail exchangers of {destination} have only private, loopback or link-local addresses, which [delivery] refuse_private_mx refuses"
            ),
        ));
    }
    Ok(hops)
}

/// The hosts to try for `destination`, best first.
pub async fn resolve(
    resolver: &Resolver,
    destination: &str,
    mx_port: u16,
    me: &Myself<'_>,
) -> Result<Vec<Hop>, NoRoute> {
    if let Some(relay) = destination.strip_prefix(RELAY_PREFIX) {
        return resolve_relay(resolver, relay).await;
    }
    let plan = resolver
        .resolve_mx(destination)
        .await
        .map_err(|e| dns_failure(destination, e))?;
    let hosts = match plan {
        MxPlan::Hosts(hosts) => hosts,
        MxPlan::NullMx => {
            return Err(permanent(
                (5, 1, 10),
                format!("{destination} does not accept mail (null MX)"),
            ))
        }
        MxPlan::NoSuchDomain => {
            return Err(permanent(
                (5, 1, 2),
                format!("domain {destination} does not exist"),
            ))
        }
        MxPlan::NoAddresses => {
            return Err(NoRoute::Temporary(format!(
                "no address found for any mail exchanger of {destination}"
            )))
        }
    };
    let hops: Vec<Hop> = hosts
        .into_iter()
        .map(|h| Hop {
            name: h.name,
            addrs: h.addrs,
            port: mx_port,
        })
        .collect();
    // RFC 5321 5.1: hosts no better than ourselves are not tried; the
    // best MX being ourselves is a loop.
    let hops = match hops.iter().position(|h| me.is(h)) {
        Some(0) => {
            return Err(permanent(
                (5, 4, 6),
                format!("mail for {destination} loops back to myself"),
            ))
        }
        Some(n) => hops.into_iter().take(n).collect(),
        None => hops,
    };
    match me.refuse_private {
        true => public_only(destination, hops),
        false => Ok(hops),
    }
}

/// The LMTP server of hosted `domain` as a host to try (its name resolved
/// as a relay's), with the socket's path when it is a Unix socket (the
/// hop is then a placeholder the connection does not use).
pub async fn resolve_lmtp(
    config: &Config,
    resolver: &Resolver,
    domain: &str,
) -> Result<(Vec<Hop>, Option<PathBuf>), NoRoute> {
    let target = config.hosted_domain(domain).and_then(|d| match d.delivery {
        LocalDelivery::Lmtp => d.lmtp.as_ref(),
        LocalDelivery::Maildir => None,
    });
    match target {
        // Mail queued before a reload changed the domain: the next
        // attempt goes where the domain's mail goes now.
        None => Err(NoRoute::Temporary(format!(
            "{domain} is no longer delivered over LMTP here"
        ))),
        Some(LmtpTarget::Tcp(relay)) => {
            Ok((resolve_host(resolver, &relay.host, relay.port).await?, None))
        }
        Some(LmtpTarget::Unix(path)) => {
            let hop = Hop {
                name: format!("unix:{}", path.display()),
                addrs: vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)],
                port: 0,
            };
            Ok((vec![hop], Some(path.clone())))
        }
    }
}

async fn resolve_relay(resolver: &Resolver, relay: &str) -> Result<Vec<Hop>, NoRoute> {
    let (host, port) = relay
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        .ok_or_else(|| NoRoute::Temporary(format!("bad relay {relay:?}")))?;
    resolve_host(resolver, host, port).await
}

/// A smart host or LMTP server: an address, or a name resolved.
async fn resolve_host(resolver: &Resolver, host: &str, port: u16) -> Result<Vec<Hop>, NoRoute> {
    let addrs = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => match resolver.lookup_ip(host).await {
            Ok(a) if !a.is_empty() => a,
            Ok(_) => {
                // A smart host that does not resolve is a configuration
                // problem here, not the sender's: defer, never bounce.
                return Err(NoRoute::Temporary(format!(
                    "relay host {host} has no address"
                )));
            }
            Err(e) => return Err(NoRoute::Temporary(e.to_string())),
        },
    };
    Ok(vec![Hop {
        name: host.to_owned(),
        addrs,
        port,
    }])
}

fn dns_failure(destination: &str, e: DnsError) -> NoRoute {
    if e.is_temporary() {
        NoRoute::Temporary(e.to_string())
    } else {
        permanent((5, 1, 2), format!("{destination}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn with_a_wildcard_listener_loopback_and_the_interfaces_are_myself() {
        let me = SelfAddrs::of([ip("0.0.0.0")]);
        for mine in [
            "127.0.0.1",
            "127.3.2.1",
            "::1",
            "0.0.0.0",
            "::",
            "::ffff:127.0.0.9",
        ] {
            assert!(me.contains(ip(mine)), "{mine}");
        }
        assert!(!me.contains(ip("192.0.2.7")));
        // Every address of the machine's interfaces is myself too.
        for a in interface_addrs().unwrap() {
            assert!(me.contains(a), "{a}");
        }
    }

    #[test]
    fn with_specific_listeners_only_their_addresses_are_myself() {
        let me = SelfAddrs::of([ip("127.0.0.1"), ip("192.0.2.1")]);
        assert!(me.contains(ip("127.0.0.1")));
        assert!(me.contains(ip("192.0.2.1")));
        assert!(!me.contains(ip("127.0.0.2")));
        assert!(!me.contains(ip("0.0.0.0")));
    }

    #[test]
    fn private_addresses() {
        for private in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.1.1",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_private(ip(private)), "{private}");
        }
        for public in ["192.0.2.1", "8.8.8.8", "100.128.0.1", "2001:db8::1"] {
            assert!(!is_private(ip(public)), "{public}");
        }
    }

    #[test]
    fn refused_private_addresses_leave_the_public_ones_or_bounce_5_4_4() {
        let hop = |name: &str, addrs: &[&str]| Hop {
            name: name.to_owned(),
            addrs: addrs.iter().map(|a| ip(a)).collect(),
            port: 25,
        };
        let hops = vec![
            hop("a", &["10.0.0.1"]),
            hop("b", &["127.0.0.2", "192.0.2.9"]),
        ];
        assert_eq!(
            public_only("x.example", hops),
            Ok(vec![hop("b", &["192.0.2.9"])])
        );
        match public_only("x.example", vec![hop("a", &["127.0.0.2"])]) {
            Err(NoRoute::Permanent { status, .. }) => assert_eq!(status.parts(), (5, 4, 4)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn domain_is_after_the_last_at() {
        assert_eq!(recipient_domain(b"a@b@Example.COM"), b"Example.COM");
        assert_eq!(recipient_domain(b"postmaster"), b"");
    }

    #[test]
    fn destinations_are_lower_case_domains_or_relays() {
        let config = Config::embedded_default();
        let mut out = String::new();
        destination_of(&config, b"user@Mail.Example.ORG.", &mut out);
        assert_eq!(out, "mail.example.org");
        let config = Config::from_str_named(
            "[[route]]\ndomain = \".example.org\"\nrelay = \"127.0.0.9:2526\"\n",
            "test.toml",
        )
        .unwrap();
        destination_of(&config, b"user@mail.example.org", &mut out);
        assert_eq!(out, "relay:127.0.0.9:2526");
        destination_of(&config, b"user@example.org", &mut out);
        assert_eq!(out, "example.org");
    }
}
