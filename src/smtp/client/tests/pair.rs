//! The client against the real server machine, in memory, on a virtual
//! clock (quinn-proto's `Pair`): bytes go both ways until neither side
//! has anything left to say. A `Vec` stands in for the spool.

use super::*;
use crate::smtp::params::{Notify, Ret};
use crate::smtp::server::{self, PeerInfo, ServerConfig, Session, TlsInfo};
use std::net::IpAddr;

const TLS: TlsInfo = TlsInfo {
    protocol: "TLSv1.3",
    cipher: "TLS13_AES_128_GCM_SHA256",
};

/// What the server had at `DataEnd`, before the envelope was cleared.
#[derive(Debug, Default, Clone)]
struct Received {
    reverse_path: Vec<u8>,
    recipients: Vec<Vec<u8>>,
    notify: Vec<Option<Notify>>,
    orcpt: Vec<Option<Vec<u8>>>,
    ret: Option<Ret>,
    envid: Option<Vec<u8>>,
    body: Vec<u8>,
}

struct Pair {
    client: Client,
    server: Session,
    to_server: Vec<u8>,
    to_client: Vec<u8>,
    now: u64,
    /// Body chunks the client sends at `SendBody`.
    body: Vec<Vec<u8>>,
    spool: Vec<u8>,
    received: Vec<Received>,
    client_events: Vec<Event>,
    server_closed: bool,
}

impl Pair {
    fn new(client: ClientConfig, server: ServerConfig) -> Self {
        let peer = PeerInfo {
            ip: IpAddr::from([192, 0, 2, 1]),
            relay_allowed: false,
        };
        let mut s = Session::new(Arc::new(server), peer, None, 0);
        let mut to_client = Vec::new();
        s.greeting(&mut to_client);
        Pair {
            client: Client::new(Arc::new(client), 0),
            server: s,
            to_server: Vec::new(),
            to_client,
            now: 0,
            body: Vec::new(),
            spool: Vec::new(),
            received: Vec::new(),
            client_events: Vec::new(),
            server_closed: false,
        }
    }

    fn server_config() -> ServerConfig {
        ServerConfig {
            hostname: "mx.example.com".into(),
            local_domains: vec!["example.com".into()],
            ..ServerConfig::default()
        }
    }

    /// Exchanges bytes until both sides are idle.
    fn run(&mut self) {
        for _ in 0..10_000 {
            let server = self.step_server();
            let client = self.step_client();
            if !server && !client {
                return;
            }
        }
        panic!("pair did not settle");
    }

    fn step_server(&mut self) -> bool {
        if self.server_closed || self.to_server.is_empty() {
            return false;
        }
        let (used, made, event) = if self.server.wants_body() {
            // A small destination, so bodies arrive over several calls.
            let mut dst = [0u8; 16];
            let p =
                self.server
                    .receive_data(&self.to_server, &mut dst, self.now, &mut self.to_client);
            self.spool.extend_from_slice(&dst[..p.produced]);
            (p.consumed, p.produced, p.event)
        } else {
            let p = self
                .server
                .handle_input(&self.to_server, self.now, &mut self.to_client);
            (p.consumed, 0, p.event)
        };
        self.to_server.drain(..used);
        if let Some(e) = event {
            self.on_server_event(e);
        }
        used > 0 || made > 0 || event.is_some()
    }

    fn on_server_event(&mut self, e: server::Event) {
        match e {
            server::Event::DataStart => self.spool.clear(),
            server::Event::DataEnd => {
                self.received.push(self.snapshot());
                let r = self.server.message_accepted("ID", &mut self.to_client);
                assert_eq!(r, Ok(()));
            }
            server::Event::StartTls => {
                assert_eq!(self.server.tls_established(TLS, self.now), Ok(()));
            }
            server::Event::Close => self.server_closed = true,
            _ => {}
        }
    }

    fn snapshot(&self) -> Received {
        let env = self.server.envelope();
        Received {
            reverse_path: env.reverse_path().to_vec(),
            recipients: env.recipients().map(|r| r.address.to_vec()).collect(),
            notify: env.recipients().map(|r| r.notify).collect(),
            orcpt: env
                .recipients()
                .map(|r| r.orcpt.map(<[u8]>::to_vec))
                .collect(),
            ret: env.ret(),
            envid: env.envid().map(<[u8]>::to_vec),
            body: self.spool.clone(),
        }
    }

    fn step_client(&mut self) -> bool {
        let used = self
            .client
            .handle_input(&self.to_client, self.now, &mut self.to_server);
        self.to_client.drain(..used);
        let mut any = used > 0;
        while let Some(e) = self.client.poll_event() {
            any = true;
            self.client_events.push(e);
            match e {
                Event::SendBody => {
                    for chunk in &self.body {
                        let r = self
                            .client
                            .encode_body(chunk, self.now, &mut self.to_server);
                        assert_eq!(r, Ok(()));
                    }
                    assert_eq!(
                        self.client.finish_body(self.now, &mut self.to_server),
                        Ok(())
                    );
                }
                Event::StartTls => {
                    assert_eq!(
                        self.client.tls_established(self.now, &mut self.to_server),
                        Ok(())
                    );
                }
                _ => {}
            }
        }
        any
    }

    fn send(&mut self, t: &Transaction<'_>, body: &[&[u8]]) -> Vec<RcptOutcome> {
        self.body = body.iter().map(|c| c.to_vec()).collect();
        let r = self
            .client
            .start_transaction(t, self.now, &mut self.to_server);
        assert_eq!(r, Ok(()));
        self.run();
        assert_eq!(self.client_events.last(), Some(&Event::TransactionDone));
        self.client.take_outcomes()
    }

    fn connect(&mut self) {
        self.run();
        assert_eq!(self.client_events, [Event::Ready]);
        self.client_events.clear();
    }
}

fn kinds(o: &[RcptOutcome]) -> Vec<OutcomeKind> {
    o.iter().map(|x| x.kind).collect()
}

#[test]
fn three_recipients_one_refused_by_relay_policy() {
    let mut p = Pair::new(H::config(TlsPolicy::Opportunistic), Pair::server_config());
    p.connect();
    assert!(p.client.extensions().pipelining && p.client.extensions().chunking);
    let r = [
        rcpt("a@example.com"),
        rcpt("b@elsewhere.test"),
        rcpt("c@example.com"),
    ];
    let body: [&[u8]; 3] = [b"Subject: hi\r\n\r\n.leading dot\n", b"bare\rCR\r", b"\n."];
    let o = p.send(&tx(&r), &body);
    use OutcomeKind::{Delivered, Failed};
    assert_eq!(kinds(&o), [Delivered, Failed, Delivered]);
    assert_eq!(o[1].reply.text, b"554 5.7.1 Relay access denied");
    assert_eq!(o[0].reply.text, b"250 2.0.0 Ok: queued as ID");
    let got = &p.received[0];
    assert_eq!(got.reverse_path, b"s@example.org");
    assert_eq!(
        got.recipients,
        [b"a@example.com".to_vec(), b"c@example.com".to_vec()]
    );
    assert_eq!(
        got.body,
        b"Subject: hi\r\n\r\n.leading dot\r\nbare\r\nCR\r\n.\r\n".to_vec()
    );

    // Reuse: a second message on the same connection, then QUIT.
    let r2 = [rcpt("d@example.com")];
    let o = p.send(&tx(&r2), &[b"second\r\n"]);
    assert_eq!(kinds(&o), [Delivered]);
    assert_eq!(p.received[1].body, b"second\r\n");
    assert_eq!(p.client.quit(p.now, &mut p.to_server), Ok(()));
    p.run();
    assert_eq!(p.client_events.last(), Some(&Event::Closed));
    assert!(p.server_closed);
}

#[test]
fn all_refused_then_rset_keeps_both_sides_in_step() {
    let mut p = Pair::new(H::config(TlsPolicy::Opportunistic), Pair::server_config());
    p.connect();
    let r = [rcpt("x@elsewhere.test"), rcpt("y@elsewhere.test")];
    let o = p.send(&tx(&r), &[b"never sent"]);
    assert_eq!(kinds(&o), [OutcomeKind::Failed, OutcomeKind::Failed]);
    assert!(p.received.is_empty());
    assert!(!p.client_events.contains(&Event::SendBody));
    let r2 = [rcpt("a@example.com")];
    let o = p.send(&tx(&r2), &[b"ok"]);
    assert_eq!(kinds(&o), [OutcomeKind::Delivered]);
    assert_eq!(p.received[0].body, b"ok\r\n");
}

#[test]
fn dsn_parameters_reach_the_server() {
    let mut p = Pair::new(H::config(TlsPolicy::Opportunistic), Pair::server_config());
    p.connect();
    let r = [TxRecipient {
        address: b"a@example.com",
        notify: notify::FAILURE | notify::DELAY,
        orcpt: b"rfc822;a+2B@example.com",
    }];
    let mut t = tx(&r);
    t.ret = Some(Ret::Headers);
    t.envid = b"ENV1";
    t.body = Body::EightBitMime;
    let o = p.send(&t, &["caf\u{e9}".as_bytes()]);
    assert_eq!(kinds(&o), [OutcomeKind::Delivered]);
    assert!(!o[0].body_8bit_unannounced);
    let got = &p.received[0];
    assert_eq!(got.notify, [Some(Notify(Notify::FAILURE | Notify::DELAY))]);
    assert_eq!(got.orcpt, [Some(b"rfc822;a+2B@example.com".to_vec())]);
    assert_eq!(
        (got.ret, got.envid.as_deref()),
        (Some(Ret::Headers), Some(&b"ENV1"[..]))
    );
}

#[test]
fn starttls_with_the_server() {
    let server = ServerConfig {
        tls_available: true,
        ..Pair::server_config()
    };
    let mut p = Pair::new(H::config(TlsPolicy::Required), server);
    p.run();
    assert_eq!(p.client_events, [Event::StartTls, Event::Ready]);
    assert!(p.client.is_tls_active() && p.server.is_tls_active());
    p.client_events.clear();
    let r = [rcpt("a@example.com")];
    let o = p.send(&tx(&r), &[b"secret"]);
    assert!(o[0].tls && o[0].kind == OutcomeKind::Delivered);
}

#[test]
fn server_size_limit_is_honoured_before_sending() {
    let server = ServerConfig {
        max_message_size: 50,
        ..Pair::server_config()
    };
    let mut p = Pair::new(H::config(TlsPolicy::Opportunistic), server);
    p.connect();
    let r = [rcpt("a@example.com")];
    let mut t = tx(&r);
    t.size = 51;
    let o = p.send(&t, &[b"x"]);
    assert_eq!(kinds(&o), [OutcomeKind::Failed]);
    assert!(o[0].reply.local);
    assert!(p.to_server.is_empty() && p.received.is_empty());
}

#[test]
fn silent_server_times_out_on_the_virtual_clock() {
    let mut p = Pair::new(H::config(TlsPolicy::Opportunistic), Pair::server_config());
    p.connect();
    let r = [rcpt("a@example.com")];
    p.client
        .start_transaction(&tx(&r), 0, &mut p.to_server)
        .ok();
    // The server never reads: its input is lost on the way.
    p.to_server.clear();
    let deadline = p.client.next_deadline().unwrap_or(0);
    assert_eq!(deadline, 300_000);
    p.client.handle_timeout(deadline);
    let events: Vec<_> = std::iter::from_fn(|| p.client.poll_event()).collect();
    assert_eq!(events, [Event::TryNextHost]);
    assert_eq!(kinds(&p.client.take_outcomes()), [OutcomeKind::Deferred]);
}

#[test]
fn bdat_with_the_server() {
    let client = ClientConfig {
        chunking: true,
        ..H::config(TlsPolicy::Opportunistic)
    };
    let mut p = Pair::new(client, Pair::server_config());
    p.connect();
    let r = [rcpt("a@example.com"), rcpt("b@elsewhere.test")];
    let o = p.send(&tx(&r), &[b"Subject: x\r\n\r\n.dot\n", b"end"]);
    assert_eq!(kinds(&o), [OutcomeKind::Delivered, OutcomeKind::Failed]);
    assert_eq!(p.received[0].body, b"Subject: x\r\n\r\n.dot\r\nend\r\n");
    assert!(p.client_events.contains(&Event::SendBody));
}
