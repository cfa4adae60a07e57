//! Outbound delivery for one shard: turns queued recipients into SMTP
//! transactions to their destinations, and every outcome into a status
//! record (delivered, bounced with a notice to the sender, or deferred to
//! a later retry).
//!
//! Each shard delivers the messages in its own spool, through its own
//! scheduler, resolver and connections: the message bytes never leave the
//! core that received them. The limits that must hold for the whole
//! process (connections, rates and backoffs of an egress source ×
//! destination) are process-wide atomics per budget (`budget`, `slots`),
//! touched once per connection or message.
//!
//! Pieces: `egress` (the sources and pools, and the choice of a source),
//! `budget` (a source × destination's limits), `delivery` (the sans-IO decisions of a connection task: host
//! fallback, plaintext retry, idling, slot hand-over, suspension, what
//! each outcome means), `connection` (the I/O driver of `delivery` and of
//! the sans-IO `smtp::client`), `destination` (routes and MX hosts),
//! `message` (a message in flight, copied out of the mapping), `outcome`
//! (what each verdict does to the spool, the scheduler and the sender),
//! `status` (batched status records), `notice` (delivery status
//! notifications), `slots` (process-wide connection counts), `parking`
//! (an idle connection waiting for its destination's next job), `signal`
//! (wake-ups for new work), `tls` (client TLS settings), `warmup` (the
//! day's warm-up counts kept across a restart).
//! [`Outbound`]'s own methods are here (start, queueing, stop) and in
//! `outcome` (settling verdicts), nowhere else.
//! Must never: lose a recipient (every job taken from the scheduler ends
//! as delivered, failed or deferred, or goes back to its queue), bounce to
//! the null sender, or send a message on before its envelope is durable.

mod budget;
mod connection;
mod delivery;
pub mod destination;
pub mod egress;
mod maildir_run;
mod message;
mod notice;
pub mod operator;
mod outcome;
mod parking;
mod report;
mod signal;
pub mod slots;
mod status;
pub mod tls;
pub mod warmup;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use spool_format::envelope::Envelope;
use spool_format::RcptState;

use crate::clock::Clock;
use crate::config::{Config, OutboundTls};
use crate::dns::{Resolver, ResolverConfig, XorShift};
use crate::schedule::{self, Job, Limits, QueueKey, RetryPolicy, Scheduler};
use crate::shaping::backoff::{first_match, BackoffAction, BackoffRule};
use crate::smtp::client::{ClientConfig, ServerReply, Timeouts, TlsPolicy};
use crate::spool::ShardSpool;

pub use budget::active_backoffs;
use signal::Signal;
use status::StatusWriter;

/// How often the dispatcher looks at the retry wheel when nothing wakes it.
const DISPATCH_TICK: Duration = Duration::from_millis(500);
/// How often the destination names nothing refers to any more are
/// forgotten.
const FORGET_NAMES_MS: u64 = 5_000;

/// Why a shard's delivery side could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("DNS resolver: {0}")]
    Resolver(#[from] crate::dns::DnsError),
    #[error(transparent)]
    Tls(#[from] tls::TlsSetupError),
}

/// One shard's delivery machinery.
pub struct Outbound {
    /// Itself, for the tasks it spawns.
    me: Weak<Outbound>,
    shard: usize,
    spool: ShardSpool,
    /// This shard's copy of the configuration; a reload replaces it.
    config: RefCell<Arc<Config>>,
    /// Monotonic time for the scheduler, the delivery machine and the
    /// client; wall time for the stamps and retry times in the spool.
    clock: Clock,
    /// The sources mail leaves from, each with its SMTP client settings.
    egress: RefCell<Rc<egress::Egress>>,
    /// The SMTP client settings each source's are made from (for a
    /// reload that rebuilds the sources).
    client: ClientConfig,
    /// The client settings of connections to hosted domains' LMTP
    /// servers: LMTP, without STARTTLS (a mailbox server on this machine
    /// or network).
    lmtp_client: Arc<ClientConfig>,
    /// Delivery into hosted domains' Maildirs.
    maildirs: maildir_run::Maildirs,
    /// The file's `[[backoff]]` rules, then the shipped ones (when
    /// `default_backoff`), compiled once (and at a reload).
    backoff: RefCell<(Vec<BackoffRule>, Vec<BackoffRule>)>,
    /// For STARTTLS: unverified (opportunistic) or verified (required).
    tls: Option<futures_rustls::TlsConnector>,
    retry: RefCell<RetryPolicy>,
    resolver: RefCell<Resolver>,
    sched: RefCell<Scheduler>,
    /// Wakes the dispatcher: a destination wants another connection, a
    /// connection ended, or the shard stops.
    work: Signal,
    statuses: Rc<StatusWriter>,
    stopping: Cell<bool>,
    /// Connection tasks running (including those waiting for a slot).
    running: Cell<usize>,
    /// The addresses that reach this server: an MX pointing at one of
    /// them is a loop.
    my_addrs: destination::SelfAddrs,
    rng: RefCell<XorShift>,
    /// One `Rc<str>` per destination, shared by its queue keys; a name
    /// nothing else holds (no job queued or deferred, no connection, no
    /// source choice, avoidance or remembered reply) is forgotten every
    /// [`FORGET_NAMES_MS`], so the table holds the destinations with mail
    /// or state, not every domain ever seen.
    names: RefCell<HashSet<Rc<str>>>,
    /// When (monotonic ms) the names were last looked over.
    names_forgotten_at: Cell<u64>,
    /// Notices written, for unique Message-IDs.
    notices: Cell<u64>,
    /// Failed recipients of each message gathered for its one bounce
    /// (see `outcome::Outbound::bounce`).
    bounces: RefCell<HashMap<u64, Vec<notice::Reported>>>,
    /// The reply that last deferred mail of each queue, for the
    /// operator's list (at most `operator::MAX_LAST_REPLIES`).
    last_replies: RefCell<HashMap<QueueKey, Box<str>>>,
    /// Warm-up count cells handed to the store that keeps them.
    warmup_seen: warmup::Seen,
    /// The operator's pauses last heard of, applied again when a reload
    /// renumbers the sources they name.
    pauses: RefCell<Arc<Vec<crate::queue::api::Scope>>>,
    /// This shard's delivery counters.
    metrics: RefCell<Rc<crate::metrics::DeliveryMetrics>>,
    /// Where accounting records go, when `[accounting]` is on.
    accounting: Option<Rc<crate::accounting::ShardLog>>,
    /// The bounce categories of the accounting records (rebuilt at a
    /// reload: they compile patterns).
    categories: RefCell<crate::accounting::CategoryRules>,
}

impl Outbound {
    /// Builds the shard's delivery side, queues what the spool holds, and
    /// starts dispatching.
    pub fn start(
        shard: usize,
        spool: ShardSpool,
        config: Arc<Config>,
        clock: Clock,
        accounting: Option<Rc<crate::accounting::ShardLog>>,
    ) -> Result<Rc<Outbound>, StartError> {
        let d = &config.delivery;
        let resolver = resolver_of(&config, clock)?;
        let tls = match d.tls {
            OutboundTls::Disabled => None,
            OutboundTls::Opportunistic => Some(tls::unverified()?),
            OutboundTls::Required => Some(tls::verified(d.tls_ca_file.as_deref())?),
        };
        let command_ms = d.command_timeout.as_millis();
        let data_ms = d.data_timeout.as_millis();
        let client = ClientConfig {
            helo_name: d.helo_name.clone(),
            tls: match d.tls {
                OutboundTls::Opportunistic => TlsPolicy::Opportunistic,
                OutboundTls::Required => TlsPolicy::Required,
                OutboundTls::Disabled => TlsPolicy::Disabled,
            },
            timeouts: Timeouts {
                greeting_ms: command_ms,
                command_ms,
                mail_ms: command_ms,
                rcpt_ms: command_ms,
                data_init_ms: command_ms,
                data_block_ms: data_ms,
                data_end_ms: data_ms,
            },
            chunking: false,
            lmtp: false,
        };
        let (limits, retry) = (limits_of(&config), retry_of(&config));
        let now = clock.monotonic_ms();
        let seed = std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            (shard, clock.wall_ms()),
        );
        resolver.count_into(crate::metrics::DnsMetrics::new(shard));
        let egress = egress::Egress::new(&config, &client);
        let metrics = crate::metrics::DeliveryMetrics::new(
            shard,
            &egress.source_names(),
            &egress.pool_names(),
        );
        let ob = Rc::new_cyclic(|me| Outbound {
            me: me.clone(),
            shard,
            statuses: StatusWriter::start(spool.clone()),
            spool,
            egress: RefCell::new(Rc::new(egress)),
            lmtp_client: Arc::new(ClientConfig {
                lmtp: true,
                tls: TlsPolicy::Disabled,
                chunking: false,
                ..client.clone()
            }),
            maildirs: maildir_run::Maildirs::default(),
            client,
            metrics: RefCell::new(Rc::new(metrics)),
            pauses: RefCell::default(),
            accounting,
            categories: RefCell::new(config.accounting.category_rules()),
            backoff: RefCell::new((config.backoff_rules(), config.shipped_backoff())),
            tls: tls.map(futures_rustls::TlsConnector::from),
            retry: RefCell::new(retry),
            resolver: RefCell::new(resolver),
            sched: RefCell::new(Scheduler::with_caps(limits, now, caps_of(&config))),
            work: Signal::default(),
            stopping: Cell::new(false),
            running: Cell::new(0),
            my_addrs: destination::SelfAddrs::of(config.listener.iter().map(|l| l.address.ip())),
            rng: RefCell::new(XorShift::new(seed)),
            names: RefCell::new(HashSet::new()),
            names_forgotten_at: Cell::new(now),
            notices: Cell::new(0),
            bounces: RefCell::default(),
            last_replies: RefCell::new(HashMap::new()),
            warmup_seen: warmup::Seen::default(),
            config: RefCell::new(config),
            clock,
        });
        let queued = ob.load_queue();
        if queued > 0 {
            tracing::info!(
                shard,
                messages = queued,
                "delivery resumes the spooled queue"
            );
        }
        glommio::spawn_local(dispatch(ob.clone())).detach();
        Ok(ob)
    }

    /// The configuration in force.
    fn egress(&self) -> Rc<egress::Egress> {
        self.egress.borrow().clone()
    }

    fn metrics(&self) -> Rc<crate::metrics::DeliveryMetrics> {
        self.metrics.borrow().clone()
    }

    fn config(&self) -> Arc<Config> {
        self.config.borrow().clone()
    }

    /// The resolver in force (a reload may replace it).
    fn resolver(&self) -> Resolver {
        self.resolver.borrow().clone()
    }

    fn name(&self, destination: &str) -> Rc<str> {
        let mut names = self.names.borrow_mut();
        if let Some(n) = names.get(destination) {
            return n.clone();
        }
        let n: Rc<str> = Rc::from(destination);
        names.insert(n.clone());
        self.metrics().destinations.set(names.len() as f64);
        n
    }

    /// Forgets the destination names nothing refers to any more, and the
    /// last replies of queues that are gone (a remembered reply alone
    /// does not keep its destination). A name still held stays, so two
    /// `Rc`s never carry the same destination.
    fn forget_names(&self) {
        let mut replies = self.last_replies.borrow_mut();
        let mut remembered: HashMap<*const u8, usize> = HashMap::new();
        for key in replies.keys() {
            *remembered
                .entry(Rc::as_ptr(&key.destination).cast())
                .or_default() += 1;
        }
        replies.retain(|key, _| {
            let own = remembered
                .get(&Rc::as_ptr(&key.destination).cast())
                .copied()
                .unwrap_or(0);
            // The names table's reference, and the remembered replies'.
            Rc::strong_count(&key.destination) > 1 + own
        });
        drop(replies);
        let mut names = self.names.borrow_mut();
        names.retain(|n| Rc::strong_count(n) > 1);
        if names.capacity() > 4 * names.len().max(64) {
            names.shrink_to_fit();
        }
        self.metrics().destinations.set(names.len() as f64);
    }

    fn random(&self) -> u64 {
        self.rng.borrow_mut().next_u64()
    }

    /// Puts `config` in force (a reload): routes, shaping, backoff rules,
    /// retries, delivery limits, DNS servers, sources and pools. Connection
    /// runs already under way finish with the configuration and the source
    /// they started with; outbound TLS keeps its settings until a restart
    /// (the daemon says so when they changed).
    pub fn reload(&self, config: Arc<Config>) {
        let old = self.config();
        if (&old.source, &old.pool, &old.pool_selection)
            != (&config.source, &config.pool, &config.pool_selection)
        {
            self.reload_egress(&config);
        }
        if config.dns != self.config().dns {
            match resolver_of(&config, self.clock) {
                Ok(resolver) => {
                    resolver.count_into(crate::metrics::DnsMetrics::new(self.shard));
                    *self.resolver.borrow_mut() = resolver;
                }
                Err(e) => tracing::error!(shard = self.shard, error = %e,
                    "reload: the new DNS settings give no resolver; the old one stays"),
            }
        }
        *self.backoff.borrow_mut() = (config.backoff_rules(), config.shipped_backoff());
        *self.categories.borrow_mut() = config.accounting.category_rules();
        *self.retry.borrow_mut() = retry_of(&config);
        self.sched
            .borrow_mut()
            .set_caps(limits_of(&config), caps_of(&config));
        *self.config.borrow_mut() = config;
        // Queues whose caps grew may want connections now.
        self.work.notify();
    }

    /// New sources and pools: every waiting job moves to the queue of the
    /// source of the same name when its pool still has it, else to a
    /// source of its pool chosen again; the delivery metrics and the
    /// operator's pauses follow the new numbering.
    fn reload_egress(&self, config: &Config) {
        let (old, new) = (
            self.egress(),
            Rc::new(egress::Egress::new(config, &self.client)),
        );
        let now = self.clock.monotonic_ms();
        self.sched.borrow_mut().rekey(|key, job| {
            let same = new
                .source_id(&old.source(key.egress).name)
                .filter(|&id| new.pool_has(job.pool, id));
            QueueKey {
                egress: same.unwrap_or_else(|| new.choose(job.pool, &key.destination, now)),
                destination: key.destination.clone(),
            }
        });
        let metrics = crate::metrics::DeliveryMetrics::new(
            self.shard,
            &new.source_names(),
            &new.pool_names(),
        );
        *self.metrics.borrow_mut() = Rc::new(metrics);
        *self.egress.borrow_mut() = new;
        self.reapply_pauses();
        tracing::info!(
            shard = self.shard,
            "reload: sources and pools in force; waiting mail follows them"
        );
    }

    /// Queues the recipients of a message just committed to the spool.
    pub fn queue_new(&self, env: &Envelope) {
        self.queue_recipients(
            env.msg_id,
            env.received_ms,
            0,
            0,
            env.pool,
            env.recipients
                .iter()
                .enumerate()
                .map(|(i, r)| (i as u32, &r.address[..])),
        );
    }

    /// Groups recipients by destination into jobs of at most
    /// their shape's `max_recipients_per_transaction`, queued now or at
    /// `not_before_ms`
    /// (wall time, as the spool keeps it), each on a source of `pool`.
    fn queue_recipients<'a>(
        &self,
        msg_id: u64,
        received_ms: u64,
        attempts: u32,
        not_before_ms: u64,
        pool: u16,
        rcpts: impl Iterator<Item = (u32, &'a [u8])>,
    ) {
        let config = self.config();
        let mut groups: Vec<(Rc<str>, Vec<u32>)> = Vec::new();
        let mut dest = String::new();
        for (i, address) in rcpts {
            destination::destination_of(&config, address, &mut dest);
            match groups.iter_mut().find(|(d, _)| **d == *dest) {
                Some((_, v)) => v.push(i),
                None => groups.push((self.name(&dest), vec![i])),
            }
        }
        let later =
            (not_before_ms > self.clock.wall_ms()).then(|| self.clock.monotonic_at(not_before_ms));
        let now = self.clock.monotonic_ms();
        let queued: usize = groups.iter().map(|(_, r)| r.len()).sum();
        self.metrics().queue.increment(queued as f64);
        for (destination, rcpts) in groups {
            let shape = config.shape(config.shaping_for_domain(&destination));
            for part in rcpts.chunks(shape.max_recipients_per_transaction.max(1)) {
                let key = QueueKey {
                    egress: self.egress().choose(pool, &destination, now),
                    destination: destination.clone(),
                };
                let job = Job {
                    msg_id,
                    rcpts: part.to_vec(),
                    attempts,
                    received_ms,
                    pool,
                };
                match later {
                    Some(at) => self.sched.borrow_mut().defer(key, job, at),
                    None => self.enqueue(key, job),
                }
            }
        }
    }

    /// Queues a job for delivery now: a parked connection to its
    /// destination takes it, else the dispatcher hears when the
    /// destination wants another connection.
    fn enqueue(&self, key: QueueKey, job: Job) {
        if self.sched.borrow_mut().enqueue(key, job) {
            self.work.notify();
        }
    }

    /// Queues every pending recipient the spool holds (at start-up).
    fn load_queue(&self) -> usize {
        let spool = self.spool.clone();
        spool.with_state(|s| {
            let mut n = 0;
            for (&msg_id, m) in &s.index.messages {
                let Some(env) = s.envelope(m.segment_id(), m.offset) else {
                    continue;
                };
                let received = env.received_ms.to_native();
                let rcpts = m
                    .pending
                    .iter()
                    .filter_map(|i| env.recipients.get(i as usize).map(|r| (i, &r.address[..])));
                let (at, pool) = (m.next_attempt_ms, env.pool.to_native());
                self.queue_recipients(msg_id, received, m.attempts, at, pool, rcpts);
                n += 1;
            }
            n
        })
    }

    /// Stops opening connections and lets open ones finish their current
    /// transaction; resolves when every connection and status record is
    /// done, or at `deadline_ms` (monotonic).
    pub async fn stop(&self, deadline_ms: u64) {
        self.stopping.set(true);
        self.work.notify();
        self.sched.borrow_mut().wake_all_parked();
        while (self.running.get() > 0 || self.statuses.outstanding() > 0)
            && self.clock.monotonic_ms() < deadline_ms
        {
            glommio::timer::sleep(Duration::from_millis(20)).await;
        }
        if self.running.get() > 0 {
            tracing::warn!(
                shard = self.shard,
                connections = self.running.get(),
                "delivery connections still open at shutdown; their messages stay queued"
            );
        }
    }

    /// Backs `budget` off when `reply` (a remote one) matches a backoff
    /// rule, and logs it once: a suspension also holds `key`'s queue here
    /// (other shards see it in the budget at their next connection or
    /// message). True when the budget is suspended now.
    fn back_off(&self, key: &QueueKey, budget: &budget::Budget, reply: &ServerReply) -> bool {
        if reply.local || reply.is_positive() {
            return false;
        }
        let rules = self.backoff.borrow();
        let (operator, shipped) = &*rules;
        let Some(rule) = first_match(operator, shipped, reply) else {
            return false;
        };
        let now = self.clock.monotonic_ms();
        let Some(done) = budget.back_off(rule, now) else {
            return budget.suspended_until(now).is_some();
        };
        let egress = self.egress();
        let source = &egress.source(budget.source).name;
        let text = reply.logged();
        let seconds = rule.duration_ms / 1000;
        match done.action {
            BackoffAction::Suspend => {
                tracing::warn!(source = %source, destination = %budget.name, seconds,
                    reply = %text, "backoff: suspended");
                self.sched.borrow_mut().suspend(key, done.until_ms);
                true
            }
            BackoffAction::Throttle { factor } => {
                tracing::warn!(source = %source, destination = %budget.name, seconds, factor,
                    reply = %text, "backoff: throttled");
                false
            }
        }
    }

    /// Records the outcome for recipients that are finished.
    fn finish(&self, msg_id: u64, state: RcptState, rcpts: Vec<u32>, diagnostic: Vec<u8>) {
        self.statuses.push(msg_id, state, rcpts, diagnostic);
    }
}

/// The resolver of `[dns]`.
fn resolver_of(config: &Config, clock: Clock) -> Result<Resolver, crate::dns::DnsError> {
    Resolver::system(
        ResolverConfig {
            servers: config.dns.servers.clone(),
            timeout: config.dns.timeout(),
            rounds: config.dns.attempts,
            randomize_case: config.dns.randomize_case,
            ..ResolverConfig::default()
        },
        clock,
    )
}

/// The scheduler's limits of `[delivery]`.
fn limits_of(config: &Config) -> Limits {
    Limits {
        max_connections_per_destination: config.delivery.max_connections_per_destination,
        max_messages_per_connection: config.delivery.max_messages_per_connection,
        ..Limits::default()
    }
}

/// The retry schedule and `max_age` of `[delivery]`.
fn retry_of(config: &Config) -> RetryPolicy {
    RetryPolicy {
        schedule_ms: config
            .delivery
            .retry
            .iter()
            .map(|r| r.as_millis())
            .collect(),
        max_age_ms: config.delivery.max_age.as_millis(),
        ..RetryPolicy::default()
    }
}

/// A queue's caps: those of its destination's `domain` shaping rule, or
/// of `[delivery]`.
fn caps_of(config: &Arc<Config>) -> schedule::CapsOf {
    let config = config.clone();
    Box::new(move |key| {
        let shape = config.shape(config.shaping_for_domain(&key.destination));
        schedule::Caps {
            max_connections: shape.max_connections,
            max_messages_per_connection: shape.max_messages_per_connection,
        }
    })
}

/// Opens connections as the scheduler asks, and moves due retries back
/// into the ready queues.
async fn dispatch(ob: Rc<Outbound>) {
    loop {
        if ob.stopping.get() {
            return;
        }
        let now = ob.clock.monotonic_ms();
        ob.spool.set_now(ob.clock.wall_ms());
        ob.sched.borrow_mut().advance(now);
        if now.saturating_sub(ob.names_forgotten_at.get()) >= FORGET_NAMES_MS {
            ob.names_forgotten_at.set(now);
            ob.forget_names();
        }
        loop {
            let key = ob.sched.borrow_mut().poll_connect();
            let Some(key) = key else { break };
            ob.running.set(ob.running.get() + 1);
            glommio::spawn_local(connection::run(ob.clone(), key)).detach();
        }
        let wait = ob
            .sched
            .borrow()
            .next_deadline()
            .map_or(DISPATCH_TICK, |d| {
                Duration::from_millis(d.saturating_sub(now))
            })
            .clamp(Duration::from_millis(5), DISPATCH_TICK);
        futures_lite::future::or(ob.work.notified(), glommio::timer::sleep(wait)).await;
    }
}
