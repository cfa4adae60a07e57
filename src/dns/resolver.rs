//! The per-shard resolver: cache, shared queries, retries across servers.
//!
//! Owns: the order in which nameservers are asked (each server in turn, for
//! `rounds` rounds), the fall-back to TCP on truncation, following aliases
//! across queries, and filling an [`MxPlan`] with addresses. Must never:
//! read the clock except through the [`Clock`] it was given, or be shared
//! across shards (it is `!Send`; each shard builds its own).

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use hickory_proto::rr::{Name, RecordType};

use super::cache::{Cache, CacheLimits};
use super::error::{DnsError, TempReason};
use super::idn::to_ascii;
use super::inflight::{InFlight, Role};
use super::mx::{address_literal, literal_plan, mx_plan, MxAnswer, MxHost, MxPlan};
use super::os_random::OsRandom;
use super::resolv_conf::read_system_nameservers;
use super::rng::XorShift;
use super::transport::{self, ExchangeError, Question};
use super::wire::{
    build_query, letters, parse_name, with_case, CaseMatch, Outcome, Parsed, WireError,
};

/// Milliseconds on a monotonic clock; tests pass a virtual one.
pub type Clock = Rc<dyn Fn() -> u64>;

/// Aliases followed across separate queries for one lookup.
const MAX_ALIAS_QUERIES: usize = 8;

/// How a [`Resolver`] talks to its nameservers.
#[derive(Debug, Clone)]
pub struct ResolverConfig {
    /// Asked in order; empty means "from /etc/resolv.conf" in
    /// [`Resolver::system`].
    pub servers: Vec<SocketAddr>,
    /// How long to wait for each server's reply.
    pub timeout: Duration,
    /// How many times the whole server list is tried.
    pub rounds: u32,
    pub cache: CacheLimits,
    /// 0x20: ask with the name's letters in random case and take only a
    /// reply that echoes that case.
    pub randomize_case: bool,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            servers: Vec::new(),
            timeout: Duration::from_secs(2),
            rounds: 2,
            cache: CacheLimits::default(),
            randomize_case: true,
        }
    }
}

struct Inner {
    config: ResolverConfig,
    clock: Clock,
    /// MX shuffles (seeded, so tests replay them).
    rng: RefCell<XorShift>,
    /// Transaction ids and 0x20 case bits: never from the seed.
    os_random: RefCell<OsRandom>,
    cache: RefCell<Cache>,
    inflight: InFlight,
    queries_sent: Cell<u64>,
    /// Each query's result, once the shard says (metrics).
    metrics: RefCell<Option<crate::metrics::DnsMetrics>>,
}

/// A caching stub resolver for one shard. Cloning shares the cache.
#[derive(Clone)]
pub struct Resolver {
    inner: Rc<Inner>,
}

impl Resolver {
    /// A resolver asking `config.servers`, reading time from `clock`, with
    /// MX shuffles drawn from `seed`; transaction ids come from the OS's
    /// CSPRNG whatever the seed.
    pub fn new(config: ResolverConfig, clock: Clock, seed: u64) -> Result<Self, DnsError> {
        if config.servers.is_empty() {
            return Err(DnsError::NoServers);
        }
        let cache = Cache::new(config.cache);
        Ok(Resolver {
            inner: Rc::new(Inner {
                config,
                clock,
                rng: RefCell::new(XorShift::new(seed)),
                os_random: RefCell::new(OsRandom::default()),
                cache: RefCell::new(cache),
                inflight: InFlight::default(),
                queries_sent: Cell::new(0),
                metrics: RefCell::new(None),
            }),
        })
    }

    /// A resolver for the daemon: servers from `config` or else from
    /// /etc/resolv.conf, the daemon's monotonic clock, and a random seed.
    pub fn system(
        mut config: ResolverConfig,
        clock: crate::clock::Clock,
    ) -> Result<Self, DnsError> {
        if config.servers.is_empty() {
            config.servers = read_system_nameservers();
        }
        // The seed only orders equal-preference MX hosts; RandomState is
        // seeded from the OS, so shards and restarts differ.
        let seed = RandomState::new().hash_one(std::process::id());
        Resolver::new(config, Rc::new(move || clock.monotonic_ms()), seed)
    }

    /// Counts each query's result into `metrics` from now on.
    pub fn count_into(&self, metrics: crate::metrics::DnsMetrics) {
        *self.inner.metrics.borrow_mut() = Some(metrics);
    }

    /// Queries sent to nameservers so far (UDP and TCP attempts).
    pub fn queries_sent(&self) -> u64 {
        self.inner.queries_sent.get()
    }

    /// The delivery plan for a recipient domain, each host with its
    /// addresses (IPv4 first). Hosts without addresses are left out.
    pub async fn resolve_mx(&self, domain: &str) -> Result<MxPlan, DnsError> {
        if let Some(literal) = address_literal(domain) {
            return literal.map(|addr| literal_plan(domain, addr));
        }
        // The A-label form also names an implicit MX host (for TLS).
        let domain = &*to_ascii(domain)?;
        let name = parse_name(domain)?;
        let answer = match self.lookup(&name, RecordType::MX).await? {
            Outcome::Mx(records) => MxAnswer::Records(records),
            Outcome::NxDomain => MxAnswer::NxDomain,
            // NODATA, or (from a broken server) addresses for an MX query.
            _ => MxAnswer::NoData,
        };
        let seed = self.inner.rng.borrow_mut().next_u64();
        match mx_plan(domain, &answer, seed) {
            MxPlan::Hosts(hosts) => self.fill_addresses(hosts).await,
            other => Ok(other),
        }
    }

    /// Looks up every host's addresses at once (one round trip, not one
    /// per host) and keeps the hosts that have some, in plan order.
    async fn fill_addresses(&self, hosts: Vec<MxHost>) -> Result<MxPlan, DnsError> {
        let lookups: Vec<_> = hosts
            .iter()
            .map(|host| {
                let (resolver, name) = (self.clone(), host.name.clone());
                glommio::spawn_local(async move { resolver.lookup_ip(&name).await })
            })
            .collect();
        let mut resolved = Vec::with_capacity(hosts.len());
        let mut temporary = None;
        for (mut host, lookup) in hosts.into_iter().zip(lookups) {
            match lookup.await {
                Ok(addrs) if !addrs.is_empty() => {
                    host.addrs = addrs;
                    resolved.push(host);
                }
                Ok(_) => {}
                // One host failing does not stop delivery to the others.
                Err(e) => temporary = temporary.or(Some(e)),
            }
        }
        match (resolved.is_empty(), temporary) {
            (false, _) => Ok(MxPlan::Hosts(resolved)),
            (true, Some(e)) if e.is_temporary() => Err(e),
            (true, _) => Ok(MxPlan::NoAddresses),
        }
    }

    /// The A and AAAA addresses of `host`, IPv4 first. Empty when the name
    /// does not exist or has no addresses.
    pub async fn lookup_ip(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        let name = parse_name(host)?;
        let (v4, v6) = futures_lite::future::zip(
            self.lookup(&name, RecordType::A),
            self.lookup(&name, RecordType::AAAA),
        )
        .await;
        let mut addrs = Vec::new();
        let mut error = None;
        for result in [v4, v6] {
            match result {
                Ok(Outcome::Addrs(found)) => addrs.extend(found),
                Ok(_) => {}
                Err(e) => error = error.or(Some(e)),
            }
        }
        match error {
            Some(e) if addrs.is_empty() => Err(e),
            _ => Ok(addrs),
        }
    }

    /// The outcome for (name, rtype), following aliases across queries.
    pub async fn lookup(&self, name: &Name, rtype: RecordType) -> Result<Outcome, DnsError> {
        let mut current = name.clone();
        for _ in 0..MAX_ALIAS_QUERIES {
            match self.lookup_one(&current, rtype).await? {
                Outcome::Alias(target) => current = target,
                outcome => return Ok(outcome),
            }
        }
        Err(DnsError::temporary(
            &name.to_ascii(),
            TempReason::CnameChain,
        ))
    }

    /// One (name, rtype) from the cache, from a query in flight, or asked.
    async fn lookup_one(&self, name: &Name, rtype: RecordType) -> Result<Outcome, DnsError> {
        let inner = &self.inner;
        if let Some(hit) = inner.cache.borrow_mut().get(name, rtype, (inner.clock)()) {
            return Ok(hit);
        }
        let leader = match inner.inflight.join(name, rtype) {
            Role::Waiter(waiter) => return waiter.await,
            Role::Leader(leader) => leader,
        };
        let result = self.ask_servers(name, rtype).await;
        let outcome = result.map(|parsed| {
            let now = (inner.clock)();
            inner.cache.borrow_mut().insert(name, rtype, &parsed, now);
            parsed.outcome
        });
        leader.finish(&outcome);
        outcome
    }

    /// Each server in turn, `rounds` times, until one gives a usable reply.
    async fn ask_servers(&self, name: &Name, rtype: RecordType) -> Result<Parsed, DnsError> {
        let config = &self.inner.config;
        let mut last = TempReason::Timeout;
        for _ in 0..config.rounds.max(1) {
            for &server in &config.servers {
                match self.ask(server, name, rtype).await {
                    Ok(parsed) => return Ok(parsed),
                    Err(reason) => last = reason,
                }
            }
        }
        Err(DnsError::temporary(&name.to_ascii(), last))
    }

    /// One server: UDP, then TCP if the reply was truncated.
    async fn ask(
        &self,
        server: SocketAddr,
        name: &Name,
        rtype: RecordType,
    ) -> Result<Parsed, TempReason> {
        let id =
            (self.inner.os_random.borrow_mut().next_u16()).map_err(|_| TempReason::Randomness)?;
        let (asked, case) = self.as_asked(name)?;
        let bytes = build_query(id, &asked, rtype).map_err(|_| TempReason::BadReply)?;
        let q = Question {
            bytes: &bytes,
            id,
            name: &asked,
            rtype,
            case,
        };
        let timeout = self.inner.config.timeout;
        self.count_query();
        let result = match transport::udp(server, &q, timeout).await {
            Err(ExchangeError::Wire(WireError::Truncated)) => {
                self.count_query();
                transport::tcp(server, &q, timeout).await.map_err(reason)
            }
            other => other.map_err(reason),
        };
        if let Some(m) = &*self.inner.metrics.borrow() {
            use crate::metrics::DnsResult;
            m.count(match &result {
                Ok(p) if p.outcome == Outcome::NxDomain => DnsResult::NxDomain,
                Ok(p) if p.outcome == Outcome::NoData => DnsResult::NoData,
                Ok(_) => DnsResult::Answer,
                Err(TempReason::ServFail) => DnsResult::ServFail,
                Err(TempReason::Timeout) => DnsResult::Timeout,
                Err(_) => DnsResult::Error,
            });
        }
        result
    }

    /// `name` as a query spells it: with random case bits (0x20) when
    /// configured, which the reply's question must then echo.
    fn as_asked<'n>(&self, name: &'n Name) -> Result<(Cow<'n, Name>, CaseMatch), TempReason> {
        if !self.inner.config.randomize_case {
            return Ok((Cow::Borrowed(name), CaseMatch::Any));
        }
        // A name has at most 255 octets, so 4 words cover every letter.
        let mut bits = [0u64; 4];
        let words = letters(name).div_ceil(64).min(bits.len());
        let mut random = self.inner.os_random.borrow_mut();
        for word in &mut bits[..words] {
            *word = random.next_u64().map_err(|_| TempReason::Randomness)?;
        }
        let asked = with_case(name, &bits[..words]).map_err(|_| TempReason::BadReply)?;
        Ok((Cow::Owned(asked), CaseMatch::Exact))
    }

    fn count_query(&self) {
        let sent = &self.inner.queries_sent;
        sent.set(sent.get() + 1);
    }
}

fn reason(e: ExchangeError) -> TempReason {
    match e {
        ExchangeError::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => TempReason::Timeout,
        ExchangeError::Io(_) => TempReason::Network,
        ExchangeError::Wire(WireError::ServFail) => TempReason::ServFail,
        ExchangeError::Wire(WireError::Refused) => TempReason::Refused,
        ExchangeError::Wire(WireError::Rcode(code)) => TempReason::OtherRcode(code),
        ExchangeError::Wire(WireError::CnameChain) => TempReason::CnameChain,
        ExchangeError::Wire(_) => TempReason::BadReply,
    }
}
