//! One outbound connection task, the I/O driver of a [`Delivery`]:
//! resolves the hosts, takes a process-wide slot of its budget (egress
//! source × destination or MX rollup), performs each [`Step`] the machine
//! returns (connect, bounce, defer, finish) once the budget's connection
//! rate allows, and drives the sans-IO SMTP client over TCP (and TLS after
//! STARTTLS) from the source's address, taking messages from the scheduler
//! while the machine allows and as fast as the budget's message rate does.
//!
//! It decides nothing: SMTP is the client machine's, which host, when to
//! retry in plaintext, when to idle, close or hand the slot over are the
//! delivery machine's, the limits are the budget's, and what each verdict
//! does is `Outbound::settle`'s. A limit is waited for with a timer while
//! the message waits in its queue or in hand, never in a busy loop.
//! It owns the rule that a job taken from the scheduler is always given
//! back settled or queued.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use futures_lite::AsyncReadExt;
use glommio::net::TcpStream;

use super::budget::Budget;
use super::delivery::{Delivery, Ended, Policy, Step};
use super::destination::{self, Myself};
use super::egress::Egress;
use super::message::{Current, Loaded};
use super::notice::Notice;
use super::parking::Parking;
use super::report::Via;
use super::slots::{ConnectionSlot, SlotWaiter};
use super::Outbound;
use crate::local::unix::UnixTransport;
use crate::schedule::{EgressId, Job, QueueKey};
use crate::shaping::warmup::next_midnight_ms;
use crate::smtp::client::{Client, Event, Misuse, ServerReply};
use crate::transport::{flush, Transport};

/// How long a connection task waits between tries for a process-wide slot.
const SLOT_WAIT: Duration = Duration::from_millis(20);
/// Outgoing bytes gathered before a write while sending a body.
const WRITE_BATCH: usize = 64 * 1024;
const READ_BUFFER: usize = 16 * 1024;

/// Runs one connection's worth of deliveries to `key`.
pub async fn run(ob: Rc<Outbound>, key: QueueKey) {
    ob.metrics().sessions.increment(1.0);
    let ok = match destination::hosted(&key.destination) {
        Some(destination::Hosted::Maildir(domain)) => {
            super::maildir_run::run(&ob, &key, domain).await
        }
        _ => deliver(&ob, &key).await,
    };
    ob.metrics().sessions.decrement(1.0);
    ob.sched.borrow_mut().connection_closed(&key, ok);
    ob.running.set(ob.running.get() - 1);
    ob.work.notify();
}

/// A budget, and one of its process-wide connection slots, held for the
/// whole run, with the sources as they were when the run started.
struct Lease {
    budget: Budget,
    slot: ConnectionSlot,
    egress: Rc<Egress>,
    /// The destination is a hosted domain's LMTP server: LMTP, from the
    /// machine's own address, without STARTTLS.
    lmtp: bool,
    /// Its Unix socket, when it listens on one.
    unix: Option<PathBuf>,
}

/// A process-wide slot of `budget`, waiting while other connections hold
/// them all; `None` when the shard stops meanwhile.
async fn lease(ob: &Outbound, budget: Budget, egress: Rc<Egress>) -> Option<Lease> {
    let mut waiter = None;
    loop {
        if ob.stopping.get() {
            return None;
        }
        let max = budget.max_connections(ob.clock.monotonic_ms());
        if let Some(slot) = ConnectionSlot::try_acquire(&budget, max) {
            return Some(Lease {
                budget,
                slot,
                egress,
                lmtp: false,
                unix: None,
            });
        }
        // Holders on other shards see this and hand the slot over.
        waiter.get_or_insert_with(|| SlotWaiter::new(&budget));
        glommio::timer::sleep(SLOT_WAIT).await;
    }
}

/// True when `budget` sends nothing now: a backoff suspends it, or its
/// source's warm-up budget for the day is spent. When the suspension's
/// rule reroutes, or the warm-up is spent, the job in hand and the
/// queue's jobs move to another source of their pool where one can send;
/// `key`'s queue here is held until then when any job stays in it (one
/// left empty stays open, so that a retry that comes due in it moves on
/// too).
fn held_back(ob: &Outbound, key: &QueueKey, budget: &Budget, job: &mut Option<Job>) -> bool {
    let now = ob.clock.monotonic_ms();
    let (until, moves) = match budget.suspended_until(now) {
        Some(until) => (
            until,
            budget.rerouted(now).then_some("suspended by a backoff"),
        ),
        None => {
            let wall = ob.clock.wall_ms();
            if !budget.warmup_spent(wall) {
                return false;
            }
            let midnight = ob.clock.monotonic_at(next_midnight_ms(wall));
            (midnight, Some("warm-up budget of the day spent"))
        }
    };
    let stayed = match moves {
        Some(why) => move_elsewhere(ob, key, budget, job, until, why),
        None => 1,
    };
    if stayed > 0 {
        ob.sched.borrow_mut().suspend(key, until);
    }
    true
}

/// Moves the job in hand and `key`'s queued jobs to another source of
/// their pool that `budget`'s destination is open to (neither suspended
/// nor out of warm-up budget); those with none stay in `key`'s queue.
/// New mail to the destination avoids `key`'s source until `until`. How
/// many stayed.
fn move_elsewhere(
    ob: &Outbound,
    key: &QueueKey,
    budget: &Budget,
    job: &mut Option<Job>,
    until: u64,
    why: &str,
) -> usize {
    let (now, wall) = (ob.clock.monotonic_ms(), ob.clock.wall_ms());
    // Whether each source is open, found once per source.
    let open: RefCell<HashMap<EgressId, bool>> = RefCell::default();
    let fits = |id: EgressId| {
        id != key.egress
            && *open.borrow_mut().entry(id).or_insert_with(|| {
                let other = budget.for_source(&ob.config(), id);
                other.suspended_until(now).is_none() && !other.warmup_spent(wall)
            })
    };
    let queued: Vec<Job> = std::iter::from_fn(|| ob.take_job(key, 0)).collect();
    let (mut moved, mut stayed) = (0usize, 0usize);
    for j in job.take().into_iter().chain(queued) {
        let to = ob.egress().choose_where(j.pool, &key.destination, fits);
        let to_key = QueueKey {
            egress: to.unwrap_or(key.egress),
            destination: key.destination.clone(),
        };
        match to {
            Some(_) => moved += 1,
            None => stayed += 1,
        }
        ob.enqueue(to_key, j);
    }
    let egress = ob.egress();
    if egress.avoid(key.egress, &key.destination, until, now) || moved > 0 {
        let source = &egress.source(key.egress).name;
        let seconds = until.saturating_sub(now) / 1000;
        tracing::info!(%source, destination = %key.destination, budget = %budget.name,
            moved, stayed, seconds, "{why}: mail moves to the pool's other sources");
    }
    stayed
}

/// True when `budget`'s rates next allow a connection and its first
/// message later than the delivery machine waits with a slot held: the
/// queue waits until then instead, holding nothing.
fn rate_held(ob: &Outbound, key: &QueueKey, budget: &Budget, plan: &Delivery) -> bool {
    let now = ob.clock.monotonic_ms();
    let at = budget.free_at(now);
    if plan.waits_for_token(now, at) {
        return false;
    }
    ob.sched.borrow_mut().suspend(key, at);
    true
}

/// Waits until `take` gives a token (a rate's next one); false when the
/// shard stops meanwhile. A timer, never a busy loop.
async fn token(ob: &Outbound, take: impl Fn(u64) -> Result<(), u64>) -> bool {
    loop {
        let now = ob.clock.monotonic_ms();
        let Err(at) = take(now) else {
            return true;
        };
        if ob.stopping.get() {
            return false;
        }
        glommio::timer::sleep(Duration::from_millis(at.saturating_sub(now).max(1))).await;
    }
}

/// Performs the steps of one delivery run; true unless the destination
/// failed at the connection level.
async fn deliver(ob: &Rc<Outbound>, key: &QueueKey) -> bool {
    // The hosts first: an `mx` shaping rule decides the budget from them
    // (the resolver caches them for the connections that follow).
    // The configuration and the sources in force when the run starts serve
    // the whole run: a reload cannot change the address it sends from.
    let (config, egress) = (ob.config(), ob.egress());
    let me = Myself {
        hostname: &config.server.hostname,
        addrs: &ob.my_addrs,
        refuse_private: config.delivery.refuse_private_mx,
    };
    let port = config.delivery.port;
    let resolver = ob.resolver();
    let lmtp = destination::hosted(&key.destination);
    let (hops, unix) = match lmtp {
        Some(destination::Hosted::Lmtp(domain)) => {
            match destination::resolve_lmtp(&config, &resolver, domain).await {
                Ok((hops, unix)) => (Ok(hops), unix),
                Err(e) => (Err(e), None),
            }
        }
        _ => (
            destination::resolve(&resolver, &key.destination, port, &me).await,
            None,
        ),
    };
    let names = hops.iter().flatten().map(|h| h.name.as_str());
    let budget = Budget::of(&config, key.egress, &key.destination, names);
    ob.warmup_seen
        .note(&budget, &egress.source(key.egress).name);
    let Some(mut lease) = lease(ob, budget, egress.clone()).await else {
        return true;
    };
    (lease.lmtp, lease.unix) = (lmtp.is_some(), unix);
    let Some(job) = ob.take_job(key, 0) else {
        return true;
    };
    let source = egress.source(key.egress);
    let policy = Policy::of(&config.delivery, &lease.budget.shape);
    // An LMTP server is reached from the machine's own address.
    let bind = source.address.filter(|_| !lease.lmtp);
    let mut plan = Delivery::new(policy, bind);
    let mut step = plan.resolved(hops, ob.clock.monotonic_ms());
    let mut job = Some(job);
    loop {
        match step {
            Step::Connect { .. } if held_back(ob, key, &lease.budget, &mut job) => {
                // Suspended: the job waits in its queue, which waits too.
                step = Step::Finish { ok: true };
            }
            Step::Connect { .. } if rate_held(ob, key, &lease.budget, &plan) => {
                step = Step::Finish { ok: true };
            }
            Step::Connect { .. } if !token(ob, |now| lease.budget.take_connection(now)).await => {
                step = Step::Finish { ok: true };
            }
            Step::Connect { addr, plaintext } => {
                let mut conn = Conn::new(ob, key, &lease, &mut plan, addr, job.take(), plaintext);
                let ended = conn.run().await;
                job = conn.job_in_hand();
                let rate_hold = conn.rate_hold;
                log_failure(&plan, addr, &ended);
                if let Ended::HostFailed(reply) = &ended {
                    ob.back_off(key, &lease.budget, reply);
                }
                step = plan.connection_ended(ended, job.is_some(), ob.clock.monotonic_ms());
                if held_back(ob, key, &lease.budget, &mut job) {
                    // A backoff or a spent warm-up, not a failure: the
                    // job waits in a queue, with no deferral.
                    step = Step::Finish { ok: true };
                } else if let (Some(at), Some(_)) = (rate_hold, &job) {
                    // The message rate's next token is far off: the job
                    // waits in its queue until then, not on a connection.
                    ob.sched.borrow_mut().suspend(key, at);
                    step = Step::Finish { ok: true };
                }
            }
            Step::Bounce(reply) => {
                tracing::info!(destination = %key.destination,
                    reason = %reply.logged(), "bouncing the destination's queue");
                let queued = std::iter::from_fn(|| ob.take_job(key, 0));
                for j in job.into_iter().chain(queued) {
                    ob.fail_job(&j, &reply, &Via::source(key.egress));
                }
                return true;
            }
            Step::Defer {
                reply,
                suspend_until_ms,
            } => {
                if let Some(j) = job {
                    ob.defer_destination(key, j, &reply, suspend_until_ms);
                }
                return false;
            }
            Step::OtherSource {
                reply,
                suspend_until_ms,
            } => return move_to_other_sources(ob, key, job, &reply, suspend_until_ms),
            Step::Finish { ok } => {
                if let Some(j) = job {
                    // Never started and nowhere else to go: the queue
                    // keeps it.
                    ob.enqueue(key.clone(), j);
                }
                return ok;
            }
        }
    }
}

/// The source of `key` reaches no address of its destination: the job in
/// hand and the queue's jobs move to a source of their pool that can,
/// each to its own pool's; those whose pool has none are deferred with
/// `reply`. True when none was deferred.
fn move_to_other_sources(
    ob: &Outbound,
    key: &QueueKey,
    job: Option<Job>,
    reply: &ServerReply,
    suspend_until_ms: u64,
) -> bool {
    let queued: Vec<Job> = std::iter::from_fn(|| ob.take_job(key, 0)).collect();
    let (mut deferred, mut logged) = (false, false);
    for j in job.into_iter().chain(queued) {
        match ob
            .egress()
            .other_family(j.pool, &key.destination, key.egress)
        {
            Some(to) => {
                if !std::mem::replace(&mut logged, true) {
                    tracing::info!(destination = %key.destination,
                        from = %ob.egress().source(key.egress).name, to = %ob.egress().source(to).name,
                        reason = %reply.logged(), "mail moves to another source of its pool");
                }
                let moved = QueueKey {
                    egress: to,
                    destination: key.destination.clone(),
                };
                ob.enqueue(moved, j);
            }
            None => {
                deferred = true;
                ob.defer_destination(key, j, reply, suspend_until_ms);
            }
        }
    }
    !deferred
}

/// Logs why a host is left behind, as the machine moves on.
fn log_failure(plan: &Delivery, addr: SocketAddr, ended: &Ended) {
    let host = plan.host();
    match ended {
        Ended::Closed => {}
        Ended::Stale => {
            tracing::debug!(host, %addr, "connection closed by the server while idle; reconnecting")
        }
        Ended::TlsFailed {
            why,
            plaintext_allowed: true,
        } => tracing::warn!(host, %addr, error = %why,
            "TLS handshake failed; delivering to this host in plaintext (opportunistic TLS)"),
        Ended::TlsFailed { why, .. } => {
            tracing::info!(host, %addr, error = %why, "TLS handshake failed")
        }
        Ended::ConnectFailed(why) => {
            tracing::info!(host, %addr, reason = %why, "host failed; trying the next")
        }
        Ended::HostFailed(reply) => tracing::info!(host, %addr,
            reason = %reply.logged(), "host failed; trying the next"),
    }
}

/// Why `drive` returned.
enum Driven {
    StartTls,
    End(Ended),
}

/// What `next_transaction` did.
enum NextTx {
    Started,
    /// Nothing to send: QUIT.
    Nothing,
    /// The server closed (or started closing) the connection while it
    /// idled: reconnect with the job in hand rather than fail it.
    Stale,
}

struct Conn<'a> {
    ob: &'a Rc<Outbound>,
    key: &'a QueueKey,
    lease: &'a Lease,
    plan: &'a mut Delivery,
    addr: SocketAddr,
    client: Client,
    out: Vec<u8>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The message whose transaction is on the wire (or next to start).
    cur: Option<Box<Current>>,
    /// The message whose commands went out behind `cur`'s body.
    next: Option<Box<Current>>,
    /// A message loaded to go behind `cur` that the client would not
    /// pipeline: it starts after `cur`'s verdict.
    held: Option<Box<Current>>,
    /// A job handed over from a failed host, not yet loaded.
    first: Option<Job>,
    spare: Option<Box<Current>>,
    /// `next_job` waited for work since the last transaction.
    idled: bool,
    /// The connection closed because the message rate's next token, due
    /// then, was further off than an idle wait.
    rate_hold: Option<u64>,
}

impl<'a> Conn<'a> {
    fn new(
        ob: &'a Rc<Outbound>,
        key: &'a QueueKey,
        lease: &'a Lease,
        plan: &'a mut Delivery,
        addr: SocketAddr,
        first: Option<Job>,
        plaintext: bool,
    ) -> Conn<'a> {
        let now = ob.clock.monotonic_ms();
        let config = match lease.lmtp {
            true => ob.lmtp_client.clone(),
            false => lease.egress.source(key.egress).client.clone(),
        };
        let client = if plaintext {
            Client::new_plaintext_retry(config, now)
        } else {
            Client::new(config, now)
        };
        Conn {
            ob,
            key,
            lease,
            plan,
            addr,
            client,
            out: Vec::with_capacity(4096),
            buf: vec![0; READ_BUFFER],
            start: 0,
            end: 0,
            cur: None,
            next: None,
            held: None,
            first,
            spare: None,
            idled: false,
            rate_hold: None,
        }
    }

    /// The shard stops, or a backoff suspends the budget: no more messages
    /// on this connection.
    fn ending(&self) -> bool {
        self.ob.stopping.get() || self.lease.budget.suspended_until(self.now()).is_some()
    }

    /// The next job of this connection's queue. None once a reload has
    /// rebuilt the sources: the queue's number may name another source
    /// now, whose mail must not leave from this one's address.
    fn take_job(&self, sent: usize) -> Option<Job> {
        if !Rc::ptr_eq(&self.lease.egress, &self.ob.egress.borrow()) {
            return None;
        }
        self.ob.take_job(self.key, sent)
    }

    /// This connection's source, host and address.
    fn via(&self) -> Via<'_> {
        Via {
            source: self.key.egress,
            host: Some(self.plan.host()),
            addr: Some(self.addr),
        }
    }

    /// Monotonic time, for the machines' deadlines.
    fn now(&self) -> u64 {
        self.ob.clock.monotonic_ms()
    }

    async fn run(&mut self) -> Ended {
        let timeout = self.ob.config().delivery.connect_timeout.duration();
        if let Some(path) = &self.lease.unix {
            return self.run_unix(path, timeout).await;
        }
        let bind = (self.lease.egress.source(self.key.egress).address).filter(|_| !self.lease.lmtp);
        let connected = match bind {
            Some(local) => TcpStream::connect_from_timeout(local, self.addr, timeout).await,
            None => TcpStream::connect_timeout(self.addr, timeout).await,
        };
        let stream = match connected {
            Ok(s) => s,
            Err(e) => return Ended::ConnectFailed(e.to_string()),
        };
        let _ = stream.set_nodelay(true);
        let _ = stream.set_write_timeout(Some(self.ob.config().delivery.data_timeout.duration()));
        let mut stream = stream;
        match self.drive(&mut stream).await {
            Driven::End(e) => return e,
            Driven::StartTls => {}
        }
        let Some(connector) = self.ob.tls.clone() else {
            return self.tls_failed("TLS is disabled".to_owned());
        };
        let name = super::tls::server_name(self.plan.host(), self.addr.ip());
        let handshake = connector.connect(name, stream);
        let timeout = self.ob.config().delivery.command_timeout.duration();
        let tls = futures_lite::future::or(async { Some(handshake.await) }, async {
            glommio::timer::sleep(timeout).await;
            None
        })
        .await;
        let mut tls = match tls {
            Some(Ok(t)) => t,
            Some(Err(e)) => return self.tls_failed(e.to_string()),
            None => return self.tls_failed("timeout".to_owned()),
        };
        let _ = self.client.tls_established(self.now(), &mut self.out);
        self.start = 0;
        self.end = 0;
        match self.drive(&mut tls).await {
            Driven::End(e) => e,
            // A second STARTTLS cannot happen (the machine never asks).
            Driven::StartTls => Ended::HostFailed(ServerReply::local(
                451,
                (4, 5, 0),
                "STARTTLS requested twice",
            )),
        }
    }

    /// A connection to an LMTP server's Unix socket (never with TLS: the
    /// client machine's LMTP settings have it off).
    async fn run_unix(&mut self, path: &Path, timeout: Duration) -> Ended {
        let mut stream = match UnixTransport::connect(path, timeout).await {
            Ok(s) => s,
            Err(e) => return Ended::ConnectFailed(e.to_string()),
        };
        match self.drive(&mut stream).await {
            Driven::End(e) => e,
            Driven::StartTls => self.tls_failed("no TLS over a Unix socket".to_owned()),
        }
    }

    /// The handshake failed: the client machine's TLS policy says whether
    /// the plaintext retry is allowed.
    fn tls_failed(&mut self, why: String) -> Ended {
        let _ = self.client.tls_failed(self.now());
        Ended::TlsFailed {
            why,
            plaintext_allowed: self.client.needs_plaintext_retry(),
        }
    }

    /// The job this connection holds and did not settle, if any. A
    /// pipelined message still waiting goes back to the queue.
    fn job_in_hand(&mut self) -> Option<Job> {
        if let Some(next) = self.next.take() {
            self.give_back(next);
        }
        let mut loaded = [self.cur.take(), self.held.take()].into_iter().flatten();
        let keep = match self.first.take() {
            Some(j) => Some(j),
            None => loaded.next().map(|c| {
                self.ob.spool.release(c.job.msg_id);
                c.job
            }),
        };
        for c in loaded {
            self.give_back(c);
        }
        keep
    }

    /// Returns a loaded message that was never attempted to the queue, for
    /// the next connection to take (no attempt is counted).
    fn give_back(&mut self, c: Box<Current>) {
        self.ob.spool.release(c.job.msg_id);
        self.ob.enqueue(self.key.clone(), c.job.clone());
        self.spare = Some(c);
    }

    /// Loads the next message and starts its transaction, once the
    /// budget's message rate allows it.
    async fn next_transaction<S: Transport>(&mut self, stream: &S) -> NextTx {
        loop {
            let cur = match self.next_loaded(stream).await {
                Ok(c) => c,
                Err(end) => return end,
            };
            let budget = &self.lease.budget;
            let now = self.now();
            let rated = match budget.take_message(now) {
                Ok(()) => true,
                Err(at) if self.plan.waits_for_token(now, at) => {
                    token(self.ob, |now| budget.take_message(now)).await
                }
                Err(at) => {
                    self.rate_hold = Some(at);
                    false
                }
            };
            if !rated || !budget.take_warmup(|| self.ob.clock.wall_ms()) {
                // Stopping, the next token far off, or the warm-up budget
                // of the day spent: it stays in hand, and `deliver` says
                // where it waits.
                self.held = Some(cur);
                return NextTx::Nothing;
            }
            let started = cur.with_transaction(|tx| {
                self.client.start_transaction(tx, self.now(), &mut self.out)
            });
            match started {
                Ok(()) => {
                    self.cur = Some(cur);
                    return NextTx::Started;
                }
                Err(e) => self.unsendable(cur, e),
            }
        }
    }

    /// The message to send next: one held behind the last body, else the
    /// next job loaded; `Err` when there is none or the connection is stale.
    async fn next_loaded<S: Transport>(&mut self, stream: &S) -> Result<Box<Current>, NextTx> {
        if let Some(c) = self.held.take() {
            if self.ob.stopping.get() {
                // Stopping: it stays in hand and goes back to the queue.
                self.held = Some(c);
                return Err(NextTx::Nothing);
            }
            return Ok(c);
        }
        loop {
            let job = match self.first.take() {
                Some(j) => j,
                None => self.next_job().await.ok_or(NextTx::Nothing)?,
            };
            if std::mem::take(&mut self.idled) && stream.peer_is_closing() {
                self.first = Some(job);
                return Err(NextTx::Stale);
            }
            if let Some(c) = self.load(job) {
                return Ok(c);
            }
        }
    }

    /// `job` loaded from the spool, if anything of it is left to send; a
    /// looping message is bounced here.
    fn load(&mut self, job: Job) -> Option<Box<Current>> {
        match Current::load(&self.ob.spool, job, self.spare.take()) {
            Loaded::Ready(c) => Some(c),
            Loaded::Looping(c, reply) => {
                self.ob
                    .fail_current(&c, &reply, &Via::source(self.key.egress));
                self.spare = Some(c);
                None
            }
            Loaded::Nothing => None,
        }
    }

    /// An envelope that cannot be written as commands can never be sent:
    /// bounce it rather than loop on it.
    fn unsendable(&mut self, cur: Box<Current>, e: Misuse) {
        let why = format!("envelope cannot be sent: {e}");
        let reply = ServerReply::local(550, (5, 1, 3), &why);
        self.ob
            .fail_current(&cur, &reply, &Via::source(self.key.egress));
        self.spare = Some(cur);
    }

    /// Right after a body, when the machine allows it and another message
    /// is ready: its commands go out in the same write as the end of the
    /// body, and the server's verdict on this message and its replies to
    /// them come back together (RFC 2920 3.1), saving a round trip per
    /// message.
    fn pipeline_next(&mut self) {
        let (contested, stopping) = (self.lease.slot.contested(), self.ending());
        if !self
            .plan
            .may_pipeline(contested, stopping, self.client.can_pipeline())
        {
            return;
        }
        let Some(job) = self.take_job(self.plan.sent() + 1) else {
            return;
        };
        let Some(next) = self.load(job) else {
            return;
        };
        let budget = &self.lease.budget;
        if budget.take_message(self.now()).is_err()
            || !budget.take_warmup(|| self.ob.clock.wall_ms())
        {
            // Held back by the message rate (or the warm-up budget): it
            // starts after this verdict, when `next_transaction` has its
            // token.
            self.held = Some(next);
            return;
        }
        let pipelined =
            next.with_transaction(|tx| self.client.pipeline_transaction(tx, &mut self.out));
        match pipelined {
            Ok(true) => self.next = Some(next),
            Ok(false) => self.held = Some(next),
            Err(e) => self.unsendable(next, e),
        }
    }

    /// After `Ready` or `TransactionDone`: the next transaction, or QUIT,
    /// or the end of a stale connection.
    async fn after_ready<S: Transport>(&mut self, stream: &S) -> Option<Driven> {
        match self.next_transaction(stream).await {
            NextTx::Started => None,
            NextTx::Nothing => {
                let _ = self.client.quit(self.now(), &mut self.out);
                None
            }
            NextTx::Stale => Some(Driven::End(Ended::Stale)),
        }
    }

    /// The next job for this connection, idling for one as long as the
    /// delivery machine says.
    async fn next_job(&mut self) -> Option<Job> {
        // One place in the destination's idle list for the whole wait, so
        // that the looks for contention do not move it to the front.
        let parking = Parking::new(&self.ob.sched, self.key);
        loop {
            let (contested, stopping) = (self.lease.slot.contested(), self.ending());
            if !self.plan.may_take(contested, stopping) {
                return None;
            }
            if let Some(j) = self.take_job(self.plan.sent()) {
                self.plan.took();
                return Some(j);
            }
            let now = self.now();
            let wake = self.plan.idle(now, contested)?;
            // Wake for a job, or now and then to look for contention.
            self.idled = true;
            let left = Duration::from_millis(wake.saturating_sub(now));
            futures_lite::future::or(parking.woken(), glommio::timer::sleep(left)).await;
        }
    }

    /// Settles the outcomes of the transaction that just ended.
    fn settle(&mut self) {
        let outcomes = self.client.take_outcomes();
        if let Some(cur) = self.cur.take() {
            if !outcomes.is_empty() {
                // NOTIFY=SUCCESS: an LMTP server's 250 is the delivery
                // itself; a server offering DSN reports it on.
                let notice = match (self.lease.lmtp, self.client.extensions().dsn) {
                    (true, _) => Some(Notice::Delivered),
                    (false, true) => None,
                    (false, false) => Some(Notice::Relayed),
                };
                self.ob
                    .settle(self.key, &cur, &outcomes, &self.via(), notice);
                for o in &outcomes {
                    if self.ob.back_off(self.key, &self.lease.budget, &o.reply) {
                        break;
                    }
                }
                self.plan.settled();
                self.spare = Some(cur);
            } else {
                self.cur = Some(cur);
            }
        }
    }

    /// After `TryNextHost`: recipients refused for good are settled; the
    /// rest stays in hand for the next host.
    fn settle_partial(&mut self) {
        let outcomes = self.client.take_outcomes();
        if outcomes.is_empty() {
            return;
        }
        if let Some(mut cur) = self.cur.take() {
            let keep = self.ob.settle_failed_only(&cur, &outcomes, &self.via());
            if keep.is_empty() {
                self.ob.spool.release(cur.job.msg_id);
                self.spare = Some(cur);
            } else {
                cur.job.rcpts = keep;
                self.cur = Some(cur);
            }
        }
    }

    async fn drive<S: Transport>(&mut self, stream: &mut S) -> Driven {
        loop {
            while let Some(ev) = self.client.poll_event() {
                match ev {
                    Event::Ready => {
                        if let Some(end) = self.after_ready(stream).await {
                            return end;
                        }
                    }
                    Event::TransactionDone => {
                        self.settle();
                        if let Some(next) = self.next.take() {
                            if !self.client.dropped_pipelined() {
                                // Its replies and events follow.
                                self.cur = Some(next);
                                continue;
                            }
                            self.give_back(next);
                        }
                        // After a failure the connection is closing: its
                        // last event follows.
                        if self.client.is_ready() {
                            if let Some(end) = self.after_ready(stream).await {
                                return end;
                            }
                        }
                    }
                    Event::StartTls => {
                        if !flush(stream, &mut self.out).await {
                            self.client.connection_lost(self.now());
                            continue;
                        }
                        return Driven::StartTls;
                    }
                    Event::SendBody => {
                        if !self.send_body(stream).await {
                            self.client.connection_lost(self.now());
                        }
                    }
                    Event::TryNextHost => {
                        let _ = flush(stream, &mut self.out).await;
                        self.settle_partial();
                        let reason = self.client.failure().cloned().unwrap_or_else(|| {
                            ServerReply::local(451, (4, 4, 2), "connection failed")
                        });
                        return Driven::End(Ended::HostFailed(reason));
                    }
                    Event::Closed => {
                        let _ = flush(stream, &mut self.out).await;
                        self.settle();
                        return Driven::End(Ended::Closed);
                    }
                }
            }
            if !flush(stream, &mut self.out).await {
                self.client.connection_lost(self.now());
                continue;
            }
            self.read(stream).await;
        }
    }

    async fn send_body<S: Transport>(&mut self, stream: &mut S) -> bool {
        let Some(cur) = self.cur.as_ref() else {
            return false;
        };
        for c in &cur.chunks {
            let now = self.ob.clock.monotonic_ms();
            let encoded = self.ob.spool.with_state(|s| match s.chunk(c) {
                Some(bytes) => self.client.encode_body(bytes, now, &mut self.out).is_ok(),
                None => false,
            });
            if !encoded {
                // The chunk is gone (it cannot be while the message is
                // held): end the connection so the message is deferred.
                return false;
            }
            if self.out.len() >= WRITE_BATCH && !flush(stream, &mut self.out).await {
                return false;
            }
        }
        let _ = self.client.finish_body(self.now(), &mut self.out);
        self.pipeline_next();
        true
    }

    async fn read<S: Transport>(&mut self, stream: &mut S) {
        let now = self.now();
        let wait = self
            .client
            .next_deadline()
            .map(|d| Duration::from_millis(d.saturating_sub(now).max(1)));
        if stream.set_read_deadline(wait).is_err() {
            self.client.connection_lost(now);
            return;
        }
        if self.end == self.buf.len() {
            if self.start == 0 {
                // A reply line longer than the buffer: grow it (replies
                // are bounded by the machine's parser).
                self.buf.resize(self.buf.len() * 2, 0);
            } else {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
        }
        match stream.read(&mut self.buf[self.end..]).await {
            Ok(0) => self.client.connection_lost(self.now()),
            Ok(n) => {
                self.end += n;
                let used = self.client.handle_input(
                    &self.buf[self.start..self.end],
                    self.now(),
                    &mut self.out,
                );
                self.start += used;
                if self.start == self.end {
                    self.start = 0;
                    self.end = 0;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                self.client.handle_timeout(self.now())
            }
            Err(_) => self.client.connection_lost(self.now()),
        }
    }
}
