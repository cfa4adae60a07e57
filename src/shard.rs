//! One shard: a pinned executor that owns its spool, its listener sockets
//! (SO_REUSEPORT: the kernel spreads connections over the shards) and every
//! session it accepts.
//!
//! It must never share anything on the mail path with other shards; the only
//! cross-shard state is the per-client-IP connection table (atomic
//! counters) and the stop flag.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::panic::AssertUnwindSafe;

use futures_lite::FutureExt;
use nix::sys::socket;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use glommio::net::TcpListener;

use crate::auth::{Users, UsersError};
use crate::clock::Clock;
use crate::config::{Config, ListenerSection};
use crate::daemon::{recover_spool, TICK};
use crate::outbound::Outbound;
use crate::slot_table::SlotTable;
use crate::smtp::server::{PeerInfo, ServerConfig};
use crate::spool::{ShardSpool, SpoolError};
use crate::tls::TlsError;

/// Open connections per client IP over all shards.
static CONNECTIONS_PER_IP: SlotTable<AtomicU32> = SlotTable::new();

fn ip_slot(ip: IpAddr) -> &'static AtomicU32 {
    match ip {
        IpAddr::V4(v4) => CONNECTIONS_PER_IP.entry(v4.octets()),
        IpAddr::V6(v6) => CONNECTIONS_PER_IP.entry(v6.octets()),
    }
}

/// The sessions of a listener that are waiting for a command, so that a
/// stopping shard can end their reads at once (shutting down the read
/// side; the session then answers 421 itself) instead of waiting for their
/// idle timeout. Sessions in the middle of a message are left to finish.
#[derive(Default)]
pub struct Deadlines {
    entries: RefCell<Vec<Option<IdleEntry>>>,
    free: RefCell<Vec<usize>>,
}

/// The descriptor is kept raw: the socket moves into a TLS stream (at
/// STARTTLS, or at once for implicit TLS), and this table outlives every
/// session, so no borrow of it can be stored here; a duplicate descriptor
/// would do, but would double each session's share of RLIMIT_NOFILE.
#[derive(Clone, Copy)]
struct IdleEntry {
    fd: RawFd,
    /// Blocked in a read while waiting for a command.
    idle: bool,
}

impl Deadlines {
    pub fn register(&self, fd: RawFd) -> usize {
        let e = Some(IdleEntry { fd, idle: false });
        let mut entries = self.entries.borrow_mut();
        match self.free.borrow_mut().pop() {
            Some(i) => {
                entries[i] = e;
                i
            }
            None => {
                entries.push(e);
                entries.len() - 1
            }
        }
    }

    pub fn set_idle(&self, slot: usize, idle: bool) {
        if let Some(Some(e)) = self.entries.borrow_mut().get_mut(slot) {
            e.idle = idle;
        }
    }

    pub fn unregister(&self, slot: usize) {
        if let Some(e) = self.entries.borrow_mut().get_mut(slot) {
            *e = None;
            self.free.borrow_mut().push(slot);
        }
    }

    /// Ends the reads of every session waiting for a command.
    fn wake_idle(&self) {
        for e in self.entries.borrow_mut().iter_mut().flatten() {
            if e.idle {
                // The descriptor is still the session's socket: an entry is
                // idle only while the session is blocked reading from it,
                // and this runs on the same thread. Failure is harmless:
                // the session then ends at its idle timeout instead.
                let _ = socket::shutdown(e.fd, socket::Shutdown::Read);
                e.idle = false;
            }
        }
    }
}

/// A held connection slot; released on drop.
struct ConnSlot {
    ip: Option<&'static AtomicU32>,
    ctx: Rc<ShardCtx>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        if let Some(c) = self.ip {
            c.fetch_sub(1, Ordering::Relaxed);
        }
        self.ctx.active.set(self.ctx.active.get() - 1);
    }
}

/// A message id as shown to clients: two hex digits of shard, fourteen of
/// message id; formatted on the stack (it is on every message's path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisplayId([u8; 16]);

impl DisplayId {
    pub fn new(shard: usize, msg_id: u64) -> DisplayId {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        let mut b = [b'0'; 16];
        let v = ((shard as u64 & 0xFF) << 56) | (msg_id & 0x00FF_FFFF_FFFF_FFFF);
        for (i, d) in b.iter_mut().enumerate() {
            *d = HEX[((v >> (60 - 4 * i)) & 0xF) as usize];
        }
        DisplayId(b)
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("0000000000000000")
    }
}

/// What a shard's sessions share (all on this core).
pub struct ShardCtx {
    pub shard: usize,
    pub spool: ShardSpool,
    pub server: Arc<ServerConfig>,
    pub config: Arc<Config>,
    /// Set when the listener has a certificate: STARTTLS, or implicit TLS.
    pub tls: Option<futures_rustls::TlsAcceptor>,
    pub implicit_tls: bool,
    /// AUTH users; None when `[auth] users_file` is not set (AUTH fails).
    pub users: Option<Arc<Users>>,
    pub deadlines: Deadlines,
    pub clock: Clock,
    /// The shard's delivery side; `None` when `[delivery] paused`.
    pub outbound: Option<Rc<Outbound>>,
    storage_ok: Cell<bool>,
    stopping: Cell<bool>,
    active: Cell<usize>,
}

impl ShardCtx {
    /// False when the spool is below its free-space reserve or has failed.
    pub fn storage_available(&self) -> bool {
        self.storage_ok.get() && !self.spool.has_failed()
    }

    pub fn stopping(&self) -> bool {
        self.stopping.get()
    }

    /// The id shown in "queued as" and `Received:`: shard and message id.
    pub fn display_id(&self, msg_id: u64) -> DisplayId {
        DisplayId::new(self.shard, msg_id)
    }

    /// True if the users file has `user` with this password. argon2 costs
    /// about 20 ms of CPU, so it runs on the blocking pool, not the shard.
    pub async fn check_password(&self, user: &[u8], password: &[u8]) -> bool {
        let Some(users) = self.users.clone() else {
            return false;
        };
        let (user, password) = (user.to_vec(), password.to_vec());
        glommio::executor()
            .spawn_blocking(move || users.verify(&user, &password))
            .await
    }

    fn refresh_storage(&self) {
        let free = free_space(&self.spool.options().dir);
        self.storage_ok
            .set(free.is_none_or(|f| f >= self.config.spool.min_free_space));
    }
}

/// Free bytes for unprivileged writers on the spool's file system.
fn free_space(dir: &std::path::Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail * st.f_frsize)
}

fn server_config(config: &Config, l: &ListenerSection, tls: bool, auth: bool) -> ServerConfig {
    ServerConfig {
        hostname: config.server.hostname.clone(),
        max_message_size: l.max_message_size,
        max_recipients: l.max_recipients,
        max_errors: l.max_errors,
        // Implicit TLS is active from the start: nothing to offer.
        tls_available: tls && !l.implicit_tls,
        auth_available: auth,
        local_domains: Vec::new(),
        idle_timeout_ms: l.command_timeout.as_millis() as u64,
        data_timeout_ms: l.data_timeout.as_millis() as u64,
        session_timeout_ms: l.session_timeout.as_millis() as u64,
        min_data_rate: l.min_data_rate,
        ..ServerConfig::default()
    }
}

/// Why a shard could not start; the daemon prints it after the shard's
/// number.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    Users(#[from] UsersError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("listening on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: glommio::GlommioError<()>,
    },
    /// Delivery could not start (its resolver or its TLS client).
    #[error(transparent)]
    Delivery(#[from] crate::outbound::StartError),
}

/// Runs shard `shard` until the stop flag is set.
pub async fn run(
    shard: usize,
    config: Arc<Config>,
    stop: Arc<AtomicBool>,
    clock: Clock,
) -> Result<(), ShardError> {
    let (spool, _lock) = recover_spool(&config, shard, clock)?;
    let users = match &config.auth.users_file {
        Some(path) => {
            let users = Users::load(path)?;
            tracing::info!(shard, users = users.len(), file = %path.display(), "loaded AUTH users");
            Some(Arc::new(users))
        }
        None => None,
    };
    let outbound = if config.delivery.paused {
        tracing::info!(
            shard,
            "delivery is paused: mail is accepted and kept in the spool"
        );
        None
    } else {
        Some(Outbound::start(
            shard,
            spool.clone(),
            config.clone(),
            clock,
        )?)
    };
    let mut listeners = Vec::new();
    for l in &config.listener {
        let tls = match (&l.tls_cert, &l.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::load_acceptor(cert, key)?),
            _ => None,
        };
        let sock = TcpListener::bind(l.address).map_err(|source| ShardError::Listen {
            address: l.address,
            source,
        })?;
        let ctx = Rc::new(ShardCtx {
            shard,
            spool: spool.clone(),
            server: Arc::new(server_config(&config, l, tls.is_some(), users.is_some())),
            config: config.clone(),
            implicit_tls: l.implicit_tls && tls.is_some(),
            tls,
            users: users.clone(),
            deadlines: Deadlines::default(),
            clock,
            outbound: outbound.clone(),
            storage_ok: Cell::new(true),
            stopping: Cell::new(false),
            active: Cell::new(0),
        });
        ctx.refresh_storage();
        let task = glommio::spawn_local(accept_loop(sock, l.clone(), ctx.clone()));
        listeners.push((ctx, task));
    }
    tracing::info!(shard, listeners = listeners.len(), "shard ready");
    let mut ticks = 0u64;
    while !stop.load(Ordering::Relaxed) {
        glommio::timer::sleep(TICK).await;
        spool.set_now(clock.wall_ms());
        ticks += 1;
        if ticks % 10 == 0 {
            for (ctx, _) in &listeners {
                ctx.refresh_storage();
            }
        }
        if ticks % 600 == 0 {
            if let Err(e) = spool.compact().await {
                tracing::error!(shard, error = %e, "spool compaction failed");
            }
        }
    }
    shutdown(shard, &spool, outbound.as_deref(), listeners, clock).await;
    Ok(())
}

/// Stops accepting, lets sessions finish (bounded), then stops the spool.
async fn shutdown(
    shard: usize,
    spool: &ShardSpool,
    outbound: Option<&Outbound>,
    listeners: Vec<(Rc<ShardCtx>, glommio::Task<()>)>,
    clock: Clock,
) {
    let mut ctxs = Vec::with_capacity(listeners.len());
    for (ctx, task) in listeners {
        ctx.stopping.set(true);
        // Closes the listening socket now, so new clients are refused
        // rather than queued by the kernel while we drain.
        let _ = task.cancel().await;
        ctxs.push(ctx);
    }
    let deadline = clock.monotonic_ms() + 30_000;
    // Delivery stops opening connections; open ones finish the message
    // they are sending, then QUIT.
    let delivery = async {
        if let Some(ob) = outbound {
            ob.stop(deadline).await;
        }
    };
    let sessions = async {
        while ctxs.iter().any(|c| c.active.get() > 0) && clock.monotonic_ms() < deadline {
            // Sessions waiting for a command are told 421 now; those in the
            // middle of a message may finish it first.
            for ctx in &ctxs {
                ctx.deadlines.wake_idle();
            }
            glommio::timer::sleep(TICK).await;
        }
    };
    futures_lite::future::zip(delivery, sessions).await;
    spool.shutdown().await;
    tracing::info!(shard, "shard stopped");
}

async fn accept_loop(sock: TcpListener, l: ListenerSection, ctx: Rc<ShardCtx>) {
    loop {
        let stream = match sock.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                glommio::timer::sleep(TICK).await;
                continue;
            }
        };
        if ctx.stopping() {
            return;
        }
        let peer = stream.peer_addr().ok().map(|p| p.ip());
        let ip = peer.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let relay_allowed = ctx.config.relay.allows(ip);
        let Some(slot) = admit(&ctx, &l, peer, relay_allowed) else {
            glommio::spawn_local(refuse(stream)).detach();
            continue;
        };
        let _ = stream.set_nodelay(true);
        let c = ctx.clone();
        glommio::spawn_local(async move {
            let _slot = slot;
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
    ctx: &Rc<ShardCtx>,
    l: &ListenerSection,
    peer: Option<IpAddr>,
    relay_allowed: bool,
) -> Option<ConnSlot> {
    if ctx.active.get() >= l.max_connections {
        return None;
    }
    let counter = match peer {
        Some(ip) if !relay_allowed => {
            let c = ip_slot(ip);
            if c.fetch_add(1, Ordering::Relaxed) as usize >= l.max_connections_per_ip {
                c.fetch_sub(1, Ordering::Relaxed);
                return None;
            }
            Some(c)
        }
        _ => None,
    };
    ctx.active.set(ctx.active.get() + 1);
    Some(ConnSlot {
        ip: counter,
        ctx: ctx.clone(),
    })
}

async fn refuse(mut stream: glommio::net::TcpStream) {
    use futures_lite::AsyncWriteExt;
    let _ = stream
        .write_all(b"421 4.7.0 Too many connections, try again later\r\n")
        .await;
}

#[cfg(test)]
mod tests {
    use super::{DisplayId, ShardError};

    #[test]
    fn display_id_is_shard_then_message_in_hex() {
        assert_eq!(DisplayId::new(1, 0xABC).as_str(), "0100000000000ABC");
        assert_eq!(
            DisplayId::new(0x2F, 0x0012_3456_789A_BCDE).as_str(),
            format!("{:02X}{:014X}", 0x2F, 0x0012_3456_789A_BCDEu64)
        );
    }

    #[test]
    fn start_errors_print_what_they_wrap() {
        let e = ShardError::from(crate::outbound::StartError::from(
            crate::dns::DnsError::NoServers,
        ));
        assert_eq!(e.to_string(), "DNS resolver: no nameservers configured");
        let e = ShardError::Listen {
            address: std::net::SocketAddr::from(([127, 0, 0, 1], 25)),
            source: glommio::GlommioError::IoError(std::io::ErrorKind::AddrInUse.into()),
        };
        assert!(
            e.to_string().starts_with("listening on 127.0.0.1:25: "),
            "{e}"
        );
    }
}
