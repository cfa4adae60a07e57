//! A small authoritative DNS server for tests.
//!
//! Serves a [`Zone`] built in the test over UDP and TCP on a 127.0.0.x
//! address, from background threads with std sockets (so it needs no
//! executor), and counts the queries it receives. Its replies echo the
//! question as received, case included, as 0x20 needs. It follows CNAMEs inside
//! the zone like an authoritative server, answers names it does not know
//! with NXDOMAIN, and puts an SOA in every negative answer so resolvers
//! can cache it (RFC 2308).
//!
//! It must never be used outside tests: it trusts its zone and answers
//! anything.
#![allow(dead_code)]

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// How the server polls its stop flag.
const POLL: Duration = Duration::from_millis(50);

fn name(s: &str) -> Name {
    let mut n = Name::from_ascii(s).unwrap_or_else(|e| panic!("bad test name {s:?}: {e}"));
    n.set_fqdn(true);
    n.to_lowercase()
}

/// The records a [`DnsServer`] serves, built with chained calls.
#[derive(Clone)]
pub struct Zone {
    records: Vec<Record>,
    nxdomain: HashSet<Name>,
    servfail: HashSet<Name>,
    truncate: HashSet<Name>,
    spoof: HashSet<Name>,
    ttl: u32,
    negative_ttl: u32,
    delay: Duration,
}

impl Default for Zone {
    fn default() -> Self {
        Zone::new()
    }
}

impl Zone {
    /// An empty zone; records get TTL 300 and negative answers 60 s.
    pub fn new() -> Self {
        Zone {
            records: Vec::new(),
            nxdomain: HashSet::new(),
            servfail: HashSet::new(),
            truncate: HashSet::new(),
            spoof: HashSet::new(),
            ttl: 300,
            negative_ttl: 60,
            delay: Duration::ZERO,
        }
    }

    /// The TTL of records added after this call.
    pub fn ttl(mut self, ttl: u32) -> Self {
        self.ttl = ttl;
        self
    }

    /// The SOA TTL and MINIMUM sent with negative answers.
    pub fn negative_ttl(mut self, ttl: u32) -> Self {
        self.negative_ttl = ttl;
        self
    }

    /// Waits this long before each reply.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    fn add(mut self, owner: &str, data: RData) -> Self {
        self.records
            .push(Record::from_rdata(name(owner), self.ttl, data));
        self
    }

    pub fn mx(self, domain: &str, preference: u16, host: &str) -> Self {
        self.add(domain, RData::MX(MX::new(preference, name(host))))
    }

    /// The RFC 7505 null MX: `domain MX 0 .`.
    pub fn null_mx(self, domain: &str) -> Self {
        self.add(domain, RData::MX(MX::new(0, Name::root())))
    }

    pub fn a(self, host: &str, ip: &str) -> Self {
        let ip: Ipv4Addr = ip.parse().unwrap_or_else(|_| panic!("bad IPv4 {ip}"));
        self.add(host, RData::A(A(ip)))
    }

    pub fn aaaa(self, host: &str, ip: &str) -> Self {
        let ip = ip.parse().unwrap_or_else(|_| panic!("bad IPv6 {ip}"));
        self.add(host, RData::AAAA(AAAA(ip)))
    }

    pub fn cname(self, alias: &str, target: &str) -> Self {
        self.add(alias, RData::CNAME(CNAME(name(target))))
    }

    /// Answers NXDOMAIN for `n` (also the default for unknown names).
    pub fn nxdomain(mut self, n: &str) -> Self {
        self.nxdomain.insert(name(n));
        self
    }

    /// Answers SERVFAIL for every query about `n`.
    pub fn servfail(mut self, n: &str) -> Self {
        self.servfail.insert(name(n));
        self
    }

    /// Over UDP, answers queries about `n` with TC set and no records.
    pub fn truncate(mut self, n: &str) -> Self {
        self.truncate.insert(name(n));
        self
    }

    /// Over UDP, precedes each reply about `n` with a copy whose id is
    /// wrong, as an off-path spoofer would send.
    pub fn spoof_first(mut self, n: &str) -> Self {
        self.spoof.insert(name(n));
        self
    }

    fn soa(&self) -> Record {
        let soa = SOA::new(
            name("ns.test"),
            name("hostmaster.test"),
            1,
            3600,
            600,
            86_400,
            self.negative_ttl,
        );
        Record::from_rdata(name("test"), self.negative_ttl, RData::SOA(soa))
    }
}

/// One query the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Lower case, without the trailing dot.
    pub name: String,
    pub rtype: RecordType,
    pub tcp: bool,
    /// The query's transaction id.
    pub id: u16,
    /// The name as the query spelt it (0x20 case bits kept).
    pub asked: String,
}

/// A running test server; stops when dropped.
pub struct DnsServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl DnsServer {
    /// Serves `zone` on 127.0.0.1 (UDP and TCP on the same port).
    pub fn start(zone: Zone) -> DnsServer {
        DnsServer::start_on(Ipv4Addr::LOCALHOST, zone)
    }

    /// Serves `zone` on `ip` (a 127.0.0.x address).
    pub fn start_on(ip: Ipv4Addr, zone: Zone) -> DnsServer {
        let (udp, tcp) = bind_pair(ip);
        let addr = udp.local_addr().expect("udp local addr");
        let zone = Arc::new(zone);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let ctx = Ctx {
            zone,
            seen: seen.clone(),
            stop: stop.clone(),
        };
        let udp_ctx = ctx.clone();
        let threads = vec![
            std::thread::spawn(move || serve_udp(udp, udp_ctx)),
            std::thread::spawn(move || serve_tcp(tcp, ctx)),
        ];
        DnsServer {
            addr,
            seen,
            stop,
            threads,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every query received so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Queries received so far (UDP and TCP).
    pub fn queries(&self) -> usize {
        self.seen().len()
    }

    /// Queries received for (name, rtype), over either transport.
    pub fn queries_for(&self, n: &str, rtype: RecordType) -> usize {
        let n = n.trim_end_matches('.').to_ascii_lowercase();
        self.seen()
            .iter()
            .filter(|s| s.name == n && s.rtype == rtype)
            .count()
    }

    /// Queries received over TCP.
    pub fn tcp_queries(&self) -> usize {
        self.seen().iter().filter(|s| s.tcp).count()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A UDP socket that is bound but never answers: a dead nameserver.
pub fn silent_udp(ip: Ipv4Addr) -> UdpSocket {
    UdpSocket::bind((ip, 0)).expect("bind silent udp")
}

fn bind_pair(ip: Ipv4Addr) -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = UdpSocket::bind((ip, 0)).expect("bind udp");
        let port = udp.local_addr().expect("udp addr").port();
        if let Ok(tcp) = TcpListener::bind((ip, port)) {
            return (udp, tcp);
        }
    }
    panic!("no port free for both UDP and TCP on {ip}");
}

#[derive(Clone)]
struct Ctx {
    zone: Arc<Zone>,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

fn serve_udp(socket: UdpSocket, ctx: Ctx) {
    socket.set_read_timeout(Some(POLL)).expect("udp timeout");
    let mut buf = [0u8; 4096];
    while !ctx.stop.load(Ordering::Relaxed) {
        let Ok((n, peer)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let Some(reply) = ctx.answer(&buf[..n], false) else {
            continue;
        };
        if ctx.spoofed(&buf[..n]) {
            let mut fake = reply.clone();
            fake[0] ^= 0x5a;
            let _ = socket.send_to(&fake, peer);
        }
        let _ = socket.send_to(&reply, peer);
    }
}

fn serve_tcp(listener: TcpListener, ctx: Ctx) {
    listener.set_nonblocking(true).expect("tcp nonblocking");
    while !ctx.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = serve_tcp_conn(stream, &ctx);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn serve_tcp_conn(mut stream: TcpStream, ctx: &Ctx) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len)?;
    let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut query)?;
    if let Some(reply) = ctx.answer(&query, true) {
        let len = u16::try_from(reply.len()).expect("reply fits TCP framing");
        stream.write_all(&len.to_be_bytes())?;
        stream.write_all(&reply)?;
    }
    Ok(())
}

impl Ctx {
    fn spoofed(&self, query: &[u8]) -> bool {
        let Ok(query) = Message::from_vec(query) else {
            return false;
        };
        let qname = query.queries().first().map(|q| q.name().to_lowercase());
        qname.is_some_and(|n| self.zone.spoof.contains(&n))
    }

    fn answer(&self, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
        let query = Message::from_vec(query).ok()?;
        let q = query.queries().first()?.clone();
        let qname = q.name().to_lowercase();
        if let Ok(mut seen) = self.seen.lock() {
            let name = qname.to_ascii().trim_end_matches('.').to_string();
            seen.push(Seen {
                name,
                rtype: q.query_type(),
                tcp,
                id: query.id(),
                asked: q.name().to_ascii(),
            });
        }
        if !self.zone.delay.is_zero() {
            std::thread::sleep(self.zone.delay);
        }
        let mut reply = Message::new();
        reply
            .set_id(query.id())
            .set_message_type(MessageType::Response)
            .set_op_code(OpCode::Query)
            .set_authoritative(true)
            .set_recursion_desired(query.recursion_desired())
            .set_recursion_available(true);
        reply.add_query(q.clone());
        self.fill(&mut reply, &qname, q.query_type(), tcp);
        reply.to_vec().ok()
    }

    fn fill(&self, reply: &mut Message, qname: &Name, rtype: RecordType, tcp: bool) {
        let zone = &self.zone;
        if zone.servfail.contains(qname) {
            reply.set_response_code(ResponseCode::ServFail);
            return;
        }
        if !tcp && zone.truncate.contains(qname) {
            reply.set_truncated(true);
            return;
        }
        let exists = zone.records.iter().any(|r| r.name() == qname);
        if zone.nxdomain.contains(qname) || !exists {
            reply.set_response_code(ResponseCode::NXDomain);
            reply.add_name_server(zone.soa());
            return;
        }
        let mut current = qname.clone();
        for _ in 0..8 {
            let matching: Vec<Record> = zone
                .records
                .iter()
                .filter(|r| r.name() == &current && r.record_type() == rtype)
                .cloned()
                .collect();
            if !matching.is_empty() {
                reply.add_answers(matching);
                return;
            }
            let cname = zone
                .records
                .iter()
                .find(|r| r.name() == &current && r.record_type() == RecordType::CNAME);
            let Some(cname) = cname else { break };
            reply.add_answer(cname.clone());
            let RData::CNAME(target) = cname.data() else {
                break;
            };
            current = target.0.clone();
        }
        if reply.answers().is_empty() {
            reply.add_name_server(zone.soa());
        }
    }
}

/// An unused address in 127.0.0.0/8 for a test, by index.
pub fn loopback(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

/// The IpAddr form of a dotted quad, for assertions.
pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|_| panic!("bad ip {s}"))
}
