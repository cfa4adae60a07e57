//! A listener on one shard: its socket (SO_REUSEPORT, so the kernel
//! spreads a `[[listener]]`'s connections over the shards), the accept
//! loop, and admission.
//!
//! Owns: accepting connections, the relay decision for each client (made
//! once, here), the caps on open sessions per shard and per client IP
//! (the one cross-shard state here: a process-wide table of atomic
//! counters), the `421` beyond them, and a session task for each client
//! admitted.
//! Must never: block the shard, count relay clients against the per-IP
//! cap, or let a session's panic take the shard and its other sessions
//! down.

use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_lite::FutureExt;
use glommio::net::TcpListener;

use crate::config::{Config, ListenerSection};
use crate::hosted::Recipients;
use crate::reload::Loaded;
use crate::session::SessionContext;
use crate::slot_table::SlotTable;
use crate::smtp::recipients::RecipientTable;
use crate::smtp::server::{PeerInfo, ServerConfig};
use crate::tls::TlsError;

/// How long the accept loop waits after a failed accept (out of
/// descriptors, say) before it tries again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Open connections per client IP over all shards.
static CONNECTIONS_PER_IP: SlotTable<AtomicU32> = SlotTable::new();

fn ip_slot(ip: IpAddr, ipv6_prefix: u8) -> &'static AtomicU32 {
    match client_network(ip, ipv6_prefix) {
        IpAddr::V4(v4) => CONNECTIONS_PER_IP.entry(v4.octets()),
        IpAddr::V6(v6) => CONNECTIONS_PER_IP.entry(v6.octets()),
    }
}

/// What a client is counted as by the per-IP limits: its IPv4 address
/// (also when it comes IPv4-mapped), or the first `ipv6_prefix` bits of
/// its IPv6 address. One host is commonly given a whole /64, so counting
/// single IPv6 addresses would give it billions of quotas.
pub fn client_network(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ipnet::Ipv6Net::new(v6, ipv6_prefix.min(128))
                .map_or(ip, |net| IpAddr::V6(net.network())),
        },
    }
}

/// Why a listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("listening on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: glommio::GlommioError<()>,
    },
}

/// The TLS acceptor of a `[[listener]]`, when it has a certificate.
pub fn acceptor(l: &ListenerSection) -> Result<Option<futures_rustls::TlsAcceptor>, TlsError> {
    match (&l.tls_cert, &l.tls_key) {
        (Some(cert), Some(key)) => crate::tls::load_acceptor(cert, key).map(Some),
        _ => Ok(None),
    }
}

/// The SMTP server settings of a `[[listener]]`.
pub fn server_config(
    config: &Config,
    l: &ListenerSection,
    tls: bool,
    auth: bool,
    recipients: &Arc<Recipients>,
) -> ServerConfig {
    // The hosted domains and the domain of rewritten senders: mail for
    // them is not relaying.
    let local_domains = recipients.local_domains();
    ServerConfig {
        hostname: config.server.hostname.clone(),
        max_message_size: l.max_message_size,
        max_recipients: l.max_recipients,
        max_errors: l.max_errors,
        max_junk_commands: l.max_junk_commands,
        // Implicit TLS is active from the start: nothing to offer.
        tls_available: tls && !l.implicit_tls,
        auth_available: auth,
        local_domains: local_domains.clone(),
        recipients: match local_domains.is_empty() {
            true => None,
            false => Some(recipients.clone() as Arc<dyn RecipientTable>),
        },
        postmaster: config.server.postmaster.as_bytes().to_vec(),
        command_timeout_ms: l.command_timeout.as_millis() as u64,
        data_timeout_ms: l.data_timeout.as_millis() as u64,
        session_timeout_ms: l.session_timeout.as_millis() as u64,
        tls_handshake_timeout_ms: l.tls_handshake_timeout.as_millis() as u64,
        ipv6_prefix_length: l.ipv6_prefix_length,
        min_data_rate: l.min_data_rate,
        ..ServerConfig::default()
    }
}

/// A listener accepting on this shard.
pub struct Listener {
    sessions: Rc<SessionContext>,
    /// Its settings as started (a listener's own keys need a restart).
    section: ListenerSection,
    accepting: glommio::Task<()>,
}

impl Listener {
    /// Binds `l.address` and starts accepting, each session with
    /// `sessions` as its context.
    pub fn start(l: &ListenerSection, sessions: SessionContext) -> Result<Listener, ListenerError> {
        let sock = TcpListener::bind(l.address).map_err(|source| ListenerError::Listen {
            address: l.address,
            source,
        })?;
        let sessions = Rc::new(sessions);
        sessions.refresh_storage();
        let accepting = glommio::spawn_local(accept_loop(sock, l.clone(), sessions.clone()));
        Ok(Listener {
            sessions,
            section: l.clone(),
            accepting,
        })
    }

    /// Puts a reloaded configuration, its AUTH users, DKIM keys and
    /// recipient tables in force for the sessions that start from now
    /// (the listener's own settings stay). `config` is the shard's own
    /// copy of `loaded.config`.
    pub fn reload(&self, config: Arc<Config>, loaded: &Loaded) {
        let tls = self.sessions.tls.is_some();
        let (users, dkim) = (loaded.users.clone(), loaded.dkim.clone());
        let auth = users.is_some();
        let server = server_config(&config, &self.section, tls, auth, &loaded.recipients);
        self.sessions.reload(server, config, users, dkim);
    }

    /// What its sessions share.
    pub fn sessions(&self) -> &SessionContext {
        &self.sessions
    }

    /// Stops accepting and closes the listening socket now, so that new
    /// clients are refused rather than queued by the kernel while the
    /// open sessions finish; returns what they share, to drain them.
    pub async fn close(self) -> Rc<SessionContext> {
        self.sessions.stop();
        let _ = self.accepting.cancel().await;
        self.sessions
    }
}

/// A session admitted under the caps; released on drop.
struct Admitted {
    ip: Option<&'static AtomicU32>,
    sessions: Rc<SessionContext>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(c) = self.ip {
            c.fetch_sub(1, Ordering::Relaxed);
        }
        self.sessions.count_session(false);
    }
}

async fn accept_loop(sock: TcpListener, l: ListenerSection, sessions: Rc<SessionContext>) {
    loop {
        let stream = match sock.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                glommio::timer::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        if sessions.stopping() {
            return;
        }
        let peer = stream.peer_addr().ok().map(|p| p.ip());
        let ip = peer.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let relay_allowed = sessions.config().relay.allows(ip);
        let Some(admitted) = admit(&sessions, &l, peer, relay_allowed) else {
            sessions.metrics.count_replies(TOO_MANY);
            glommio::spawn_local(refuse(stream)).detach();
            continue;
        };
        let _ = stream.set_nodelay(true);
        let c = sessions.clone();
        glommio::spawn_local(async move {
            let _admitted = admitted;
            let session = crate::session::serve(stream, PeerInfo { ip, relay_allowed }, c);
            // A bug in one session must not take the shard and its other
            // sessions down; what they acknowledged is durable either way.
            if AssertUnwindSafe(session).catch_unwind().await.is_err() {
                tracing::error!(%ip, "session panicked; connection dropped");
            }
        })
        .detach();
    }
}

/// Applies the per-shard and per-IP connection caps; clients in the relay
/// networks (`relay_allowed`) are not counted per IP.
fn admit(
    sessions: &Rc<SessionContext>,
    l: &ListenerSection,
    peer: Option<IpAddr>,
    relay_allowed: bool,
) -> Option<Admitted> {
    if sessions.open_sessions() >= l.max_connections {
        return None;
    }
    let counter = match peer {
        Some(ip) if !relay_allowed => {
            let c = ip_slot(ip, l.ipv6_prefix_length);
            if c.fetch_add(1, Ordering::Relaxed) as usize >= l.max_connections_per_ip {
                c.fetch_sub(1, Ordering::Relaxed);
                return None;
            }
            Some(c)
        }
        _ => None,
    };
    sessions.count_session(true);
    Some(Admitted {
        ip: counter,
        sessions: sessions.clone(),
    })
}

/// What a client beyond the caps is told before the connection closes.
const TOO_MANY: &[u8] = b"421 4.7.0 Too many connections, try again later\r\n";

async fn refuse(mut stream: glommio::net::TcpStream) {
    use futures_lite::AsyncWriteExt;
    let _ = stream.write_all(TOO_MANY).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn ipv6_clients_are_counted_by_network() {
        let (a, b) = (ip("2001:db8:1:2::1"), ip("2001:db8:1:2:ffff:1:2:3"));
        let elsewhere = ip("2001:db8:1:3::1");
        assert_eq!(client_network(a, 64), client_network(b, 64));
        assert_ne!(client_network(a, 64), client_network(elsewhere, 64));
        assert_eq!(client_network(a, 48), client_network(elsewhere, 48));
        assert_ne!(client_network(a, 128), client_network(b, 128));
        // Two addresses of one /64 share the per-IP count.
        assert!(std::ptr::eq(ip_slot(a, 64), ip_slot(b, 64)));
    }

    #[test]
    fn ipv4_clients_are_counted_by_address_also_when_mapped() {
        let v4 = ip("192.0.2.7");
        assert_eq!(client_network(v4, 64), v4);
        assert_eq!(client_network(ip("::ffff:192.0.2.7"), 64), v4);
        assert_ne!(client_network(ip("192.0.2.8"), 64), v4);
    }
}
