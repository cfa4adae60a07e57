//! The resolver against a test DNS server on loopback, inside glommio.

#[path = "support/dns_server.rs"]
mod dns_server;
#[path = "support/shard.rs"]
mod shard_support;

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use dns_server::{ip, loopback, silent_udp, DnsServer, Seen, Zone};
use petrel::dns::{
    CacheLimits, DnsError, HostKind, MxPlan, RecordType, Resolver, ResolverConfig, TempReason,
    MAX_MX_HOSTS,
};

fn run<G, F>(test: G)
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = ()> + 'static,
{
    shard_support::on_shard(test);
}

/// A resolver on a virtual clock that the test moves by hand.
struct Fixture {
    resolver: Resolver,
    clock: Rc<Cell<u64>>,
}

impl Fixture {
    fn new(servers: Vec<SocketAddr>, seed: u64) -> Self {
        Fixture::with(servers, seed, Duration::from_secs(2))
    }

    fn with(servers: Vec<SocketAddr>, seed: u64, timeout: Duration) -> Self {
        let clock = Rc::new(Cell::new(1_000u64));
        let read = clock.clone();
        let config = ResolverConfig {
            servers,
            timeout,
            rounds: 2,
            cache: CacheLimits::default(),
            randomize_case: true,
        };
        let resolver = Resolver::new(config, Rc::new(move || read.get()), seed).expect("resolver");
        Fixture { resolver, clock }
    }

    fn advance_s(&self, s: u64) {
        self.clock.set(self.clock.get() + s * 1000);
    }
}

fn hosts(plan: &MxPlan) -> Vec<String> {
    match plan {
        MxPlan::Hosts(hosts) => hosts.iter().map(|h| h.name.clone()).collect(),
        other => panic!("expected hosts, got {other:?}"),
    }
}

#[test]
fn mx_hosts_in_preference_order_with_ipv4_first() {
    let zone = Zone::new()
        .mx("example.test", 20, "mx2.example.test")
        .mx("example.test", 10, "mx1.example.test")
        .mx("example.test", 30, "mx3.example.test")
        .aaaa("mx1.example.test", "::1")
        .a("mx1.example.test", "127.0.0.2")
        .a("mx2.example.test", "127.0.0.3")
        .a("mx3.example.test", "127.0.0.4");
    let server = DnsServer::start(zone);
    let addr = server.addr();
    run(move || async move {
        let f = Fixture::new(vec![addr], 1);
        let plan = f.resolver.resolve_mx("Example.TEST").await.expect("plan");
        assert_eq!(
            hosts(&plan),
            ["mx1.example.test", "mx2.example.test", "mx3.example.test"]
        );
        let MxPlan::Hosts(h) = plan else {
            unreachable!()
        };
        assert_eq!(h[0].addrs, vec![ip("127.0.0.2"), ip("::1")]);
        assert_eq!(h[0].kind, HostKind::Mx);
        assert_eq!(h[2].addrs, vec![ip("127.0.0.4")]);
    });
    drop(server);
}

#[test]
fn equal_preferences_shuffled_by_seed() {
    let mut zone = Zone::new()
        .mx("many.test", 5, "first.many.test")
        .a("first.many.test", "127.0.0.9");
    for i in 0..6 {
        let host = format!("h{i}.many.test");
        zone = zone.mx("many.test", 10, &host).a(&host, "127.0.0.10");
    }
    let server = DnsServer::start(zone);
    let addr = server.addr();
    run(move || async move {
        let order = |seed| async move {
            let f = Fixture::new(vec![addr], seed);
            hosts(&f.resolver.resolve_mx("many.test").await.expect("plan"))
        };
        let a = order(1).await;
        let b = order(2).await;
        assert_eq!(a[0], "first.many.test");
        assert_eq!(b[0], "first.many.test");
        assert_eq!(a.len(), 7);
        assert_ne!(a, b, "different seeds should give different orders");
        assert_eq!(order(1).await, a, "the same seed gives the same order");
    });
}

#[test]
fn implicit_mx_null_mx_and_nxdomain() {
    let zone = Zone::new()
        .a("bare.test", "127.0.0.5")
        .null_mx("nullmx.test")
        .a("nullmx.test", "127.0.0.6")
        .nxdomain("nope.test");
    let server = DnsServer::start(zone);
    let addr = server.addr();
    run(move || async move {
        let f = Fixture::new(vec![addr], 1);
        let plan = f.resolver.resolve_mx("bare.test").await.expect("implicit");
        let MxPlan::Hosts(h) = plan else {
            panic!("implicit MX expected")
        };
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].kind, HostKind::Implicit);
        assert_eq!(h[0].addrs, vec![ip("127.0.0.5")]);
        assert_eq!(
            f.resolver.resolve_mx("nullmx.test").await,
            Ok(MxPlan::NullMx)
        );
        assert_eq!(
            f.resolver.resolve_mx("nope.test").await,
            Ok(MxPlan::NoSuchDomain)
        );
        assert_eq!(
            f.resolver.resolve_mx("unknown.test").await,
            Ok(MxPlan::NoSuchDomain)
        );
    });
    // The null MX answer needs no address lookups.
    assert_eq!(server.queries_for("nullmx.test", RecordType::A), 0);
}

#[test]
fn servfail_is_temporary() {
    let server = DnsServer::start(Zone::new().servfail("broken.test"));
    let addr = server.addr();
    run(move || async move {
        let f = Fixture::new(vec![addr], 1);
        let err = f
            .resolver
            .resolve_mx("broken.test")
            .await
            .expect_err("servfail");
        assert!(err.is_temporary());
        assert_eq!(
            err,
            DnsError::Temporary {
                name: "broken.test".into(),
                reason: TempReason::ServFail
            }
        );
    });
    // Two rounds over the one server, and failures are not cached.
    assert_eq!(server.queries_for("broken.test", RecordType::MX), 2);
}

#[test]
fn truncated_udp_reply_is_retried_over_tcp() {
    let mut zone = Zone::new().truncate("big.test");
    for i in 0..40 {
        let host = format!("mx{i:02}.big.test");
        zone = zone.mx("big.test", 10 + i, &host).a(&host, "127.0.0.7");
    }
    let server = DnsServer::start(zone);
    let addr = server.addr();
    run(move || async move {
        let f = Fixture::new(vec![addr], 1);
        let plan = f.resolver.resolve_mx("big.test").await.expect("plan");
        let names = hosts(&plan);
        // All 40 arrived over TCP; the plan keeps the best MAX_MX_HOSTS.
        assert_eq!(names.len(), MAX_MX_HOSTS);
        assert_eq!(names[0], "mx00.big.test");
        assert_eq!(
            names[MAX_MX_HOSTS - 1],
            format!("mx{:02}.big.test", MAX_MX_HOSTS - 1)
        );
    });
    assert_eq!(server.tcp_queries(), 1);
    assert_eq!(server.queries_for("big.test", RecordType::MX), 2);
}

#[test]
fn dead_first_server_falls_over_to_the_second() {
    let dead = silent_udp(loopback(1));
    let server = DnsServer::start(Zone::new().a("host.test", "127.0.0.8"));
    let servers = vec![dead.local_addr().expect("dead addr"), server.addr()];
    run(move || async move {
        let f = Fixture::with(servers, 1, Duration::from_millis(300));
        let addrs = f.resolver.lookup_ip("host.test").await.expect("addrs");
        assert_eq!(addrs, vec![ip("127.0.0.8")]);
    });
    drop(dead);
}

#[test]
fn no_answer_from_any_server_is_a_timeout() {
    let dead = silent_udp(loopback(1));
    let servers = vec![dead.local_addr().expect("dead addr")];
    run(move || async move {
        let f = Fixture::with(servers, 1, Duration::from_millis(200));
        let err = f
            .resolver
            .resolve_mx("example.test")
            .await
            .expect_err("timeout");
        assert!(
            matches!(
                err,
                DnsError::Temporary {
                    reason: TempReason::Timeout,
                    ..
                }
            ),
            "{err:?}"
        );
    });
    drop(dead);
}

#[test]
fn answers_are_cached_for_their_ttl() {
    let server = DnsServer::start(Zone::new().ttl(60).a("cached.test", "127.0.0.11"));
    let addr = server.addr();
    let (tx, rx) = std::sync::mpsc::channel();
    run(move || async move {
        let f = Fixture::new(vec![addr], 1);
        let first = f.resolver.lookup_ip("cached.test").await.expect("first");
        tx.send(("after first", f.resolver.queries_sent())).ok();
        f.advance_s(59);
        assert_eq!(
            f.resolver.lookup_ip("CACHED.test").await.expect("second"),
            first
        );
        tx.send(("after cached", f.resolver.queries_sent())).ok();
        f.advance_s(1);
        assert_eq!(
            f.resolver.lookup_ip("cached.test").await.expect("third"),
            first
        );
        tx.send(("after expiry", f.resolver.queries_sent())).ok();
    });
    let counts: Vec<(&str, u64)> = rx.iter().collect();
    // A and AAAA: the AAAA NODATA is cached by the SOA minimum (60 s).
    assert_eq!(
        counts,
        [("after first", 2), ("after cached", 2), ("after expiry", 4)]
    );
    assert_eq!(server.queries_for("cached.test", RecordType::A), 2);
}

#[test]
fn negative_answers_are_cached_by_soa_minimum() {
    let server = DnsServer::start(Zone::new().negative_ttl(30).nxdomain("gone.test"));
    let addr = server.addr();
    let (tx, rx) = std::sync::mpsc::channel();
    run(move || async move {
        let f = Fixture::new(vec![addr], 1);
        for step in 0..3 {
            let plan = f.resolver.resolve_mx("gone.test").await.expect("plan");
            assert_eq!(plan, MxPlan::NoSuchDomain);
            tx.send(f.resolver.queries_sent()).ok();
            f.advance_s(if step == 0 { 29 } else { 1 });
        }
    });
    assert_eq!(rx.iter().collect::<Vec<_>>(), [1, 1, 2]);
    assert_eq!(server.queries(), 2);
}

#[test]
fn concurrent_lookups_share_one_query() {
    // TTL 0: nothing is cached, so only sharing can explain a single query.
    let zone = Zone::new()
        .ttl(0)
        .delay(Duration::from_millis(100))
        .a("shared.test", "127.0.0.12");
    let server = DnsServer::start(zone);
    let addr = server.addr();
    run(move || async move {
        let f = Fixture::new(vec![addr], 1);
        let (r1, r2) = (f.resolver.clone(), f.resolver.clone());
        let t1 = glommio::spawn_local(async move { r1.lookup_ip("shared.test").await });
        let t2 = glommio::spawn_local(async move { r2.lookup_ip("shared.test").await });
        let (a, b) = futures_lite::future::zip(t1, t2).await;
        assert_eq!(a.expect("first"), vec![ip("127.0.0.12")]);
        assert_eq!(b.expect("second"), vec![ip("127.0.0.12")]);
    });
    assert_eq!(server.queries_for("shared.test", RecordType::A), 1);
    assert_eq!(server.queries_for("shared.test", RecordType::AAAA), 1);
}

#[test]
fn cname_to_mx_host_and_address_literals() {
    let zone = Zone::new()
        .mx("alias.test", 10, "mail.alias.test")
        .cname("mail.alias.test", "real.test")
        .a("real.test", "127.0.0.13");
    let server = DnsServer::start(zone);
    let addr = server.addr();
    run(move || async move {
        let f = Fixture::new(vec![addr], 1);
        let plan = f.resolver.resolve_mx("alias.test").await.expect("plan");
        let MxPlan::Hosts(h) = plan else {
            panic!("hosts expected")
        };
        assert_eq!(h[0].addrs, vec![ip("127.0.0.13")]);
        let literal = f
            .resolver
            .resolve_mx("[127.0.0.14]")
            .await
            .expect("literal");
        let MxPlan::Hosts(h) = literal else {
            panic!("literal expected")
        };
        assert_eq!(
            (h[0].kind, h[0].addrs.clone()),
            (HostKind::Literal, vec![ip("127.0.0.14")])
        );
        let bad = f.resolver.resolve_mx("[127.0.0.300]").await;
        assert!(matches!(bad, Err(DnsError::InvalidName(_))));
        let sent = f.resolver.queries_sent();
        assert!(f.resolver.resolve_mx("[IPv6:::1]").await.is_ok());
        assert_eq!(f.resolver.queries_sent(), sent, "literals need no DNS");
    });
}

#[test]
fn a_resolver_needs_a_server() {
    let config = ResolverConfig::default();
    let clock: petrel::dns::Clock = Rc::new(|| 0);
    assert!(matches!(
        Resolver::new(config, clock, 1),
        Err(DnsError::NoServers)
    ));
}

#[test]
fn a_reply_with_the_wrong_id_is_ignored() {
    let zone = Zone::new()
        .spoof_first("spoofed.test")
        .a("spoofed.test", "127.0.0.15");
    let server = DnsServer::start(zone);
    let addr = server.addr();
    run(move || async move {
        // A long timeout: a loaded machine must not make the resolver ask
        // again for want of time; a spoof taken for an answer (or for a
        // failure) would make it ask again at once.
        let f = Fixture::with(vec![addr], 1, Duration::from_secs(20));
        let addrs = f.resolver.lookup_ip("spoofed.test").await.expect("addrs");
        assert_eq!(addrs, vec![ip("127.0.0.15")]);
    });
    assert_eq!(server.queries_for("spoofed.test", RecordType::A), 1);
}

#[test]
fn resolvers_with_the_same_seed_send_different_query_ids() {
    // TTL 0: every lookup is a fresh query.
    let server = DnsServer::start(Zone::new().ttl(0).a("ids.test", "127.0.0.16"));
    let addr = server.addr();
    run(move || async move {
        for _ in 0..2 {
            let f = Fixture::new(vec![addr], 7);
            for _ in 0..4 {
                let addrs = f.resolver.lookup_ip("ids.test").await.expect("addrs");
                assert_eq!(addrs, vec![ip("127.0.0.16")]);
            }
        }
    });
    let ids: Vec<u16> = server
        .seen()
        .iter()
        .filter(|s| s.rtype == RecordType::A)
        .map(|s| s.id)
        .collect();
    assert_eq!(ids.len(), 8);
    // A seeded generator would repeat its sequence for the second resolver.
    assert_ne!(ids[..4], ids[4..], "ids {ids:?}");
}

#[test]
fn lookups_with_random_case_work_and_spell_the_name_in_mixed_case() {
    let zone = Zone::new()
        .ttl(0)
        .mx("mixedcase.example.test", 10, "mail.mixedcase.example.test")
        .a("mail.mixedcase.example.test", "127.0.0.17");
    let server = DnsServer::start(zone);
    let addr = server.addr();
    run(move || async move {
        let f = Fixture::new(vec![addr], 1);
        for _ in 0..3 {
            let plan = f.resolver.resolve_mx("mixedcase.example.test").await;
            let MxPlan::Hosts(h) = plan.expect("plan") else {
                panic!("hosts expected")
            };
            assert_eq!(h[0].addrs, vec![ip("127.0.0.17")]);
        }
    });
    let mx: Vec<Seen> = server
        .seen()
        .into_iter()
        .filter(|s| s.rtype == RecordType::MX)
        .collect();
    // Each lookup asked once: no reply was refused for its case.
    assert_eq!(mx.len(), 3);
    // 24 letters all lower case by chance: 2^-24 per query.
    for s in &mx {
        assert!(s.asked.bytes().any(|b| b.is_ascii_uppercase()), "{s:?}");
        assert_eq!(s.asked.to_ascii_lowercase(), "mixedcase.example.test.");
    }
    assert_ne!(mx[0].asked, mx[1].asked, "each query draws its own case");
}

/// A UDP nameserver on `ip` that answers each query about a name with
/// the A record `127.0.0.18`, but first sends the junk `junk` makes (and
/// sends no answer at all when `answer` is false). Counts queries.
struct JunkServer {
    addr: SocketAddr,
    queries: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl JunkServer {
    fn start(ip: std::net::Ipv4Addr, junk: fn(&[u8], &[u8]) -> Vec<Vec<u8>>, answer: bool) -> Self {
        use std::sync::atomic::Ordering;
        let socket = std::net::UdpSocket::bind((ip, 0)).expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        let addr = socket.local_addr().expect("addr");
        let queries = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (count, halt) = (queries.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !halt.load(Ordering::Relaxed) {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                count.fetch_add(1, Ordering::Relaxed);
                let reply = junk_answer(&buf[..n]);
                for datagram in junk(&buf[..n], &reply) {
                    let _ = socket.send_to(&datagram, peer);
                }
                if answer {
                    let _ = socket.send_to(&reply, peer);
                    continue;
                }
                // Junk until the resolver gives up on this query.
                while !halt.load(Ordering::Relaxed) && socket.peek_from(&mut [0u8; 1]).is_err() {
                    let _ = socket.send_to(b"\x00junk", peer);
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        });
        JunkServer {
            addr,
            queries,
            stop,
            thread: Some(thread),
        }
    }

    fn queries(&self) -> usize {
        self.queries.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for JunkServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The right answer to `query`: its question echoed, and for an A query
/// the address 127.0.0.18.
fn junk_answer(query: &[u8]) -> Vec<u8> {
    use hickory_proto::op::{Message, MessageType};
    use hickory_proto::rr::{rdata::A, RData, Record};
    let query = Message::from_vec(query).expect("query");
    let mut reply = Message::new();
    reply
        .set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_recursion_desired(true);
    let q = query.queries()[0].clone();
    if q.query_type() == RecordType::A {
        let a = RData::A(A("127.0.0.18".parse().expect("ip")));
        reply.add_answer(Record::from_rdata(q.name().clone(), 60, a));
    }
    reply.add_query(q);
    reply.to_vec().expect("reply")
}

/// Ten datagrams that are not the reply: wrong ids, wrong questions (one
/// only in its case), garbage.
fn ten_junk_datagrams(query: &[u8], reply: &[u8]) -> Vec<Vec<u8>> {
    let mut junk = Vec::new();
    for flip in 1..=4u8 {
        let mut wrong_id = reply.to_vec();
        wrong_id[1] ^= flip;
        junk.push(wrong_id);
    }
    let question = hickory_proto::op::Message::from_vec(query).expect("query");
    let name = question.queries()[0].name().to_ascii();
    for other in ["other.test.", "junk.example.", &name.to_ascii_lowercase()] {
        let mut m = hickory_proto::op::Message::from_vec(reply).expect("reply");
        let mut q = m.queries()[0].clone();
        q.set_name(hickory_proto::rr::Name::from_ascii(other).expect("name"));
        m.queries_mut()[0] = q;
        junk.push(m.to_vec().expect("junk"));
    }
    junk.extend([vec![], b"\xff\xfe".to_vec(), vec![0u8; 700]]);
    junk
}

#[test]
fn ten_junk_datagrams_before_the_answer_do_not_fail_the_lookup() {
    let server = JunkServer::start(loopback(19), ten_junk_datagrams, true);
    let addr = server.addr;
    run(move || async move {
        // Long enough that only junk, never the clock, can fail it.
        let f = Fixture::with(vec![addr], 1, Duration::from_secs(20));
        let name = petrel::dns::parse_name("junk.example.test").expect("name");
        let outcome = f.resolver.lookup(&name, RecordType::A).await;
        assert_eq!(
            outcome,
            Ok(petrel::dns::Outcome::Addrs(vec![ip("127.0.0.18")]))
        );
    });
    assert_eq!(server.queries(), 1, "answered on the first try");
}

#[test]
fn endless_junk_ends_the_lookup_at_its_timeout() {
    let server = JunkServer::start(loopback(20), |_, _| Vec::new(), false);
    let addr = server.addr;
    run(move || async move {
        let f = Fixture::with(vec![addr], 1, Duration::from_millis(300));
        let name = petrel::dns::parse_name("flood.example.test").expect("name");
        let lookup = async { Some(f.resolver.lookup(&name, RecordType::A).await) };
        let safety_net = async {
            glommio::timer::sleep(Duration::from_secs(60)).await;
            None
        };
        let outcome = futures_lite::future::or(lookup, safety_net).await;
        let err = outcome.expect("the lookup ends").expect_err("no answer");
        // Junk neither aborted an exchange early (that is BadReply) nor
        // kept it alive: each round ended at its deadline.
        assert_eq!(
            err,
            DnsError::Temporary {
                name: "flood.example.test".into(),
                reason: TempReason::Timeout
            }
        );
    });
    assert_eq!(server.queries(), 2, "one query per round");
}
