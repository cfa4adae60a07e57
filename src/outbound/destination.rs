//! Where a recipient's mail goes: the destination a queue is keyed by, and
//! the hosts (with addresses) a connection to that destination tries.
//!
//! A destination is the recipient's domain, lower-cased (delivered to its
//! MX hosts), or `relay:host:port` for a `[[route]]` smart host. Domains
//! cannot contain `:`, so the two never collide.

use std::net::IpAddr;

use crate::config::Config;
use crate::dns::{DnsError, MxPlan, Resolver};
use crate::dsn::Status;

const RELAY_PREFIX: &str = "relay:";

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

/// Who we are, to recognise an MX that points back at this server.
pub struct Myself<'a> {
    pub hostname: &'a str,
    pub addrs: &'a [IpAddr],
}

impl Myself<'_> {
    fn is(&self, hop: &Hop) -> bool {
        hop.name.eq_ignore_ascii_case(self.hostname)
            || hop.addrs.iter().any(|a| self.addrs.contains(a))
    }
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
    match hops.iter().position(|h| me.is(h)) {
        Some(0) => Err(permanent(
            (5, 4, 6),
            format!("mail for {destination} loops back to myself"),
        )),
        Some(n) => Ok(hops.into_iter().take(n).collect()),
        None => Ok(hops),
    }
}

async fn resolve_relay(resolver: &Resolver, relay: &str) -> Result<Vec<Hop>, NoRoute> {
    let (host, port) = relay
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        .ok_or_else(|| NoRoute::Temporary(format!("bad relay {relay:?}")))?;
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
