//! What the sessions of one listener on one shard share: the spool, the
//! listener's SMTP settings and TLS acceptor, the AUTH users, the shard's
//! delivery side, the clock, and the counts the listener admits by.
//! Must never: be shared with another shard (everything here is on one
//! core, behind `Rc` and `Cell`).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use super::idle::IdleSessions;
use crate::auth::Users;
use crate::clock::Clock;
use crate::config::Config;
use crate::dkim::SignerTable;
use crate::metrics::SessionMetrics;
use crate::outbound::Outbound;
use crate::smtp::server::ServerConfig;
use crate::spool::{DisplayId, ShardSpool};

/// What a reload replaces.
struct Settings {
    server: Arc<ServerConfig>,
    config: Arc<Config>,
    /// AUTH users; None when `[auth] users_file` is not set (AUTH fails).
    users: Option<Arc<Users>>,
    /// The DKIM signers, loaded once for every shard; read in place (an
    /// `Arc` clone per message would write a count all shards share).
    dkim: Arc<SignerTable>,
}

/// The context of every session of one listener on one shard.
pub struct SessionContext {
    pub shard: usize,
    pub spool: ShardSpool,
    /// The settings in force. A reload replaces them: a session takes its
    /// SMTP settings when it starts, the relay and pool rules at each
    /// client and message.
    settings: RefCell<Settings>,
    /// The listener's `name`, for the pool rules.
    pub listener: Option<String>,
    /// Set when the listener has a certificate: STARTTLS, or implicit TLS.
    pub tls: Option<futures_rustls::TlsAcceptor>,
    pub implicit_tls: bool,
    pub idle: IdleSessions,
    pub clock: Clock,
    /// The shard's delivery side; `None` when `[delivery] paused`.
    pub outbound: Option<Rc<Outbound>>,
    /// This shard's session counters.
    pub metrics: SessionMetrics,
    /// Where accounting records go, when `[accounting]` is on.
    pub accounting: Option<Rc<crate::accounting::ShardLog>>,
    storage_ok: Cell<bool>,
    stopping: Cell<bool>,
    open: Cell<usize>,
}

impl SessionContext {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        shard: usize,
        spool: ShardSpool,
        server: ServerConfig,
        config: Arc<Config>,
        listener: Option<String>,
        tls: Option<futures_rustls::TlsAcceptor>,
        implicit_tls: bool,
        users: Option<Arc<Users>>,
        dkim: Arc<SignerTable>,
        clock: Clock,
        outbound: Option<Rc<Outbound>>,
        accounting: Option<Rc<crate::accounting::ShardLog>>,
    ) -> SessionContext {
        SessionContext {
            shard,
            spool,
            settings: RefCell::new(Settings {
                server: Arc::new(server),
                config,
                users,
                dkim,
            }),
            listener,
            tls,
            implicit_tls,
            idle: IdleSessions::default(),
            clock,
            outbound,
            metrics: SessionMetrics::new(shard),
            accounting,
            storage_ok: Cell::new(true),
            stopping: Cell::new(false),
            open: Cell::new(0),
        }
    }

    /// The SMTP settings of the listener.
    pub fn server(&self) -> Arc<ServerConfig> {
        self.settings.borrow().server.clone()
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.settings.borrow().config.clone()
    }

    /// Calls `f` with the DKIM signers in force, borrowed in place.
    pub fn with_dkim<R>(&self, f: impl FnOnce(&SignerTable) -> R) -> R {
        f(&self.settings.borrow().dkim)
    }

    /// Puts new settings in force for the sessions that start from now.
    pub fn reload(
        &self,
        server: ServerConfig,
        config: Arc<Config>,
        users: Option<Arc<Users>>,
        dkim: Arc<SignerTable>,
    ) {
        *self.settings.borrow_mut() = Settings {
            server: Arc::new(server),
            config,
            users,
            dkim,
        };
    }

    /// False when the spool is below its free-space reserve or has failed.
    pub fn storage_available(&self) -> bool {
        self.storage_ok.get() && !self.spool.has_failed()
    }

    /// Looks again at the spool's free space against `min_free_space`.
    pub fn refresh_storage(&self) {
        let free = self.spool.free_space();
        self.storage_ok
            .set(free.is_none_or(|f| f >= self.config().spool.min_free_space));
    }

    pub fn stopping(&self) -> bool {
        self.stopping.get()
    }

    /// The shard stops: sessions answer 421 instead of waiting for more.
    pub fn stop(&self) {
        self.stopping.set(true);
    }

    /// Sessions open on this listener.
    pub fn open_sessions(&self) -> usize {
        self.open.get()
    }

    /// A session was admitted (`true`) or has ended (`false`).
    pub fn count_session(&self, opened: bool) {
        let n = self.open.get();
        self.open.set(if opened { n + 1 } else { n - 1 });
        match opened {
            true => self.metrics.sessions.increment(1.0),
            false => self.metrics.sessions.decrement(1.0),
        }
    }

    /// The id shown in "queued as" and `Received:`: shard and message id.
    pub fn display_id(&self, msg_id: u64) -> DisplayId {
        DisplayId::new(self.shard, msg_id)
    }

    /// True if the users file has `user` with this password. argon2 costs
    /// about 20 ms of CPU, so it runs on the AUTH check threads, never on
    /// the shard's core (glommio's blocking pool is pinned to it).
    pub async fn check_password(&self, user: &[u8], password: &[u8]) -> bool {
        let Some(users) = self.settings.borrow().users.clone() else {
            return false;
        };
        crate::auth_verifier::verify(users, user, password).await
    }
}
