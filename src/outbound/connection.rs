//! One outbound connection task: takes a process-wide slot for its
//! destination, resolves the hosts, and drives the sans-IO SMTP client over
//! TCP (and TLS after STARTTLS), taking messages from the scheduler until
//! the destination has none left, the per-connection limit is reached, or
//! the shard stops.
//!
//! It decides nothing about SMTP: the client machine does. It owns the
//! fallback across MX hosts, the hand-over of every outcome (to
//! `Outbound::settle`), and the rule that a job taken from the scheduler
//! is always given back settled.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::destination::{self, Hop, Myself, NoRoute};
use super::message::{Current, Loaded};
use super::slots::{ConnectionSlot, SlotWaiter};
use super::Outbound;
use crate::daemon::now_ms;
use crate::schedule::{Job, QueueKey};
use crate::session::Transport;
use crate::smtp::client::{Client, Event, Misuse, ServerReply};

/// How long a connection task waits between tries for a process-wide slot.
const SLOT_WAIT: Duration = Duration::from_millis(20);
/// How often an idle connection looks whether another shard wants its slot.
const CONTENTION_POLL: Duration = Duration::from_millis(50);
/// Messages a connection carries before it hands a contested slot over.
const FAIR_SHARE: usize = 50;
/// Outgoing bytes gathered before a write while sending a body.
const WRITE_BATCH: usize = 64 * 1024;
const READ_BUFFER: usize = 16 * 1024;

/// Runs one connection's worth of deliveries to `key`.
pub async fn run(ob: Rc<Outbound>, key: QueueKey) {
    let ok = deliver(&ob, &key).await;
    ob.sched.borrow_mut().connection_closed(&key, ok);
    ob.running.set(ob.running.get() - 1);
    ob.work.notify();
}

/// True unless the destination failed at the connection level.
async fn deliver(ob: &Rc<Outbound>, key: &QueueKey) -> bool {
    let max = ob.config.delivery.max_connections_per_destination;
    let mut waiter = None;
    let slot = loop {
        if let Some(s) = ConnectionSlot::try_acquire(&key.destination, max) {
            break s;
        }
        if ob.stopping.get() {
            return true;
        }
        // Holders on other shards see this and hand the slot over after
        // their current message.
        waiter.get_or_insert_with(|| SlotWaiter::new(&key.destination));
        glommio::timer::sleep(SLOT_WAIT).await;
    };
    drop(waiter);
    if ob.stopping.get() {
        return true;
    }
    let Some(job) = ob.take_job(key, 0) else {
        return true;
    };
    let me = Myself {
        hostname: &ob.config.server.hostname,
        addrs: &ob.my_addrs,
    };
    let hops = match destination::resolve(
        &ob.resolver,
        &key.destination,
        ob.config.delivery.port,
        &me,
    )
    .await
    {
        Ok(h) => h,
        Err(NoRoute::Permanent { status, reason }) => {
            tracing::info!(destination = %key.destination, %reason, "bouncing the destination's queue");
            let reply = ServerReply::local(550, status.parts(), &reason);
            ob.fail_job(&job, &reply, None);
            while let Some(job) = ob.take_job(key, 0) {
                ob.fail_job(&job, &reply, None);
            }
            return true;
        }
        Err(NoRoute::Temporary(reason)) => {
            let reply = ServerReply::local(451, (4, 4, 3), &reason);
            ob.defer_destination(key, job, &reply);
            return false;
        }
    };
    let mut job = Some(job);
    let mut last_failure = ServerReply::local(451, (4, 4, 1), "no host could be reached");
    let mut sent = 0;
    for hop in &hops {
        for &ip in &hop.addrs {
            let addr = SocketAddr::new(ip, hop.port);
            let mut plaintext_retry = false;
            loop {
                let mut conn =
                    Conn::new(ob, key, &slot, hop, addr, job.take(), sent, plaintext_retry);
                let end = conn.run().await;
                sent = conn.sent;
                job = conn.job_in_hand();
                match end {
                    End::Done => {
                        if let Some(j) = job {
                            // Never started and nowhere else to go: the
                            // queue keeps it.
                            ob.enqueue(key.clone(), j);
                        }
                        return true;
                    }
                    End::PlaintextRetry => plaintext_retry = true,
                    End::Reconnect => {}
                    End::TryNext(reason) => {
                        tracing::info!(destination = %key.destination, host = %hop.name, %addr,
                            reason = %String::from_utf8_lossy(&reason.text), "host failed; trying the next");
                        last_failure = reason;
                        break;
                    }
                }
            }
            if job.is_none() {
                // Everything in hand was settled before the host failed;
                // the scheduler still has the rest.
                return true;
            }
        }
    }
    match job {
        Some(job) => ob.defer_destination(key, job, &last_failure),
        None => return true,
    }
    false
}

/// How a connection ended.
enum End {
    /// Its work is settled (or given back): nothing more to do here.
    Done,
    /// The TLS handshake failed under the opportunistic policy: connect
    /// again without STARTTLS.
    PlaintextRetry,
    /// The connection went stale while idle: connect to the same host
    /// again with the job in hand.
    Reconnect,
    /// The host failed before finishing any transaction: try the next one
    /// with the job in hand.
    TryNext(ServerReply),
}

enum Step {
    StartTls,
    End(End),
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
    slot: &'a ConnectionSlot,
    hop: &'a Hop,
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
    /// Messages settled on this destination by this task (the per
    /// connection limit counts across the hosts it tried).
    sent: usize,
    spare: Option<Box<Current>>,
    /// The TCP socket, to look for a close while idle.
    fd: Option<std::os::fd::RawFd>,
    /// `next_job` waited for work since the last transaction.
    idled: bool,
}

impl<'a> Conn<'a> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        ob: &'a Rc<Outbound>,
        key: &'a QueueKey,
        slot: &'a ConnectionSlot,
        hop: &'a Hop,
        addr: SocketAddr,
        first: Option<Job>,
        sent: usize,
        plaintext_retry: bool,
    ) -> Conn<'a> {
        let now = now_ms();
        let client = if plaintext_retry {
            Client::new_plaintext_retry(ob.client.clone(), now)
        } else {
            Client::new(ob.client.clone(), now)
        };
        Conn {
            ob,
            key,
            slot,
            hop,
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
            sent,
            spare: None,
            fd: None,
            idled: false,
        }
    }

    async fn run(&mut self) -> End {
        let timeout = self.ob.config.delivery.connect_timeout.duration();
        let stream = match TcpStream::connect_timeout(self.addr, timeout).await {
            Ok(s) => s,
            Err(e) => {
                let why = format!("connect to {}[{}]: {e}", self.hop.name, self.addr);
                return End::TryNext(ServerReply::local(451, (4, 4, 1), &why));
            }
        };
        let _ = stream.set_nodelay(true);
        self.fd = Some(std::os::fd::AsRawFd::as_raw_fd(&stream));
        let _ = stream.set_write_timeout(Some(self.ob.config.delivery.data_timeout.duration()));
        let mut stream = stream;
        match self.drive(&mut stream).await {
            Step::End(e) => return e,
            Step::StartTls => {}
        }
        let Some(connector) = self.ob.tls.clone() else {
            return self.tls_failed("TLS is disabled".to_owned());
        };
        let name = super::tls::server_name(&self.hop.name, self.addr.ip());
        let handshake = connector.connect(name, stream);
        let timeout = self.ob.config.delivery.command_timeout.duration();
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
        let _ = self.client.tls_established(now_ms(), &mut self.out);
        self.start = 0;
        self.end = 0;
        match self.drive(&mut tls).await {
            Step::End(e) => e,
            // A second STARTTLS cannot happen (the machine never asks).
            Step::StartTls => End::TryNext(ServerReply::local(
                451,
                (4, 5, 0),
                "STARTTLS requested twice",
            )),
        }
    }

    /// The handshake failed: opportunistic TLS reconnects in plaintext
    /// (the machine records it in the outcomes); required TLS tries the
    /// next host, and defers when none is left.
    fn tls_failed(&mut self, why: String) -> End {
        let _ = self.client.tls_failed(now_ms());
        if self.client.needs_plaintext_retry() {
            tracing::warn!(host = %self.hop.name, addr = %self.addr, error = %why,
                "TLS handshake failed; delivering to this host in plaintext (opportunistic TLS)");
            return End::PlaintextRetry;
        }
        tracing::info!(host = %self.hop.name, addr = %self.addr, error = %why, "TLS handshake failed");
        let reason = format!(
            "TLS handshake with {}[{}] failed: {why}",
            self.hop.name, self.addr
        );
        End::TryNext(ServerReply::local(451, (4, 7, 10), &reason))
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

    /// Loads the next message and starts its transaction.
    async fn next_transaction(&mut self) -> NextTx {
        loop {
            let cur = match self.next_loaded().await {
                Ok(c) => c,
                Err(end) => return end,
            };
            let started = cur
                .with_transaction(|tx| self.client.start_transaction(tx, now_ms(), &mut self.out));
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
    async fn next_loaded(&mut self) -> Result<Box<Current>, NextTx> {
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
            if std::mem::take(&mut self.idled) && self.fd.is_some_and(peer_is_closing) {
                tracing::debug!(host = %self.hop.name, addr = %self.addr,
                    "connection closed by the server while idle; reconnecting");
                self.first = Some(job);
                return Err(NextTx::Stale);
            }
            let spare = self.spare.take();
            if let Loaded::Ready(c) = self.ob.load(job, spare) {
                return Ok(c);
            }
        }
    }

    /// An envelope that cannot be written as commands can never be sent:
    /// bounce it rather than loop on it.
    fn unsendable(&mut self, cur: Box<Current>, e: Misuse) {
        let why = format!("envelope cannot be sent: {e}");
        let reply = ServerReply::local(550, (5, 1, 3), &why);
        self.ob.fail_current(&cur, &reply, None);
        self.spare = Some(cur);
    }

    /// Right after a body: when another message is ready, its commands go
    /// out in the same write as the end of the body, and the server's
    /// verdict on this message and its replies to them come back together
    /// (RFC 2920 3.1), saving a round trip per message. The limits of the
    /// connection count the message in flight.
    fn pipeline_next(&mut self) {
        let in_flight = self.sent + 1;
        if self.ob.stopping.get()
            || !self.client.can_pipeline()
            || (self.slot.contested() && in_flight >= FAIR_SHARE)
        {
            return;
        }
        let Some(job) = self.ob.take_job(self.key, in_flight) else {
            return;
        };
        let spare = self.spare.take();
        let Loaded::Ready(next) = self.ob.load(job, spare) else {
            return;
        };
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
    async fn after_ready(&mut self) -> Option<Step> {
        match self.next_transaction().await {
            NextTx::Started => None,
            NextTx::Nothing => {
                let _ = self.client.quit(now_ms(), &mut self.out);
                None
            }
            NextTx::Stale => Some(Step::End(End::Reconnect)),
        }
    }

    /// The next job for this connection, waiting up to `idle_timeout` for
    /// one to be queued. When a connection task elsewhere waits for this
    /// destination's slot, the slot is handed over instead of idling on
    /// it, and after [`FAIR_SHARE`] messages even when busy.
    async fn next_job(&mut self) -> Option<Job> {
        let idle = self.ob.config.delivery.idle_timeout.duration();
        let until = now_ms() + idle.as_millis() as u64;
        // One place in the destination's idle list for the whole wait, so
        // that the looks for contention do not move it to the front.
        let parking = Parking::new(self.ob, self.key);
        loop {
            if self.ob.stopping.get() {
                return None;
            }
            let contested = self.slot.contested();
            if contested && self.sent >= FAIR_SHARE {
                return None;
            }
            if let Some(j) = self.ob.take_job(self.key, self.sent) {
                return Some(j);
            }
            let now = now_ms();
            if contested
                || now >= until
                || self.sent >= self.ob.config.delivery.max_messages_per_connection
            {
                return None;
            }
            // Wake for a job, or now and then to look for contention.
            self.idled = true;
            let left = Duration::from_millis(until - now).min(CONTENTION_POLL);
            futures_lite::future::or(parking.woken(), glommio::timer::sleep(left)).await;
        }
    }

    /// Settles the outcomes of the transaction that just ended.
    fn settle(&mut self) {
        let outcomes = self.client.take_outcomes();
        if let Some(cur) = self.cur.take() {
            if !outcomes.is_empty() {
                self.sent += 1;
                let dsn = self.client.extensions().dsn;
                self.ob
                    .settle(self.key, &cur, &outcomes, &self.hop.name, dsn);
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
            let keep = self.ob.settle_failed_only(&cur, &outcomes, &self.hop.name);
            if keep.is_empty() {
                self.ob.spool.release(cur.job.msg_id);
                self.spare = Some(cur);
            } else {
                cur.job.rcpts = keep;
                self.cur = Some(cur);
            }
        }
    }

    async fn drive<S: Transport>(&mut self, stream: &mut S) -> Step {
        loop {
            while let Some(ev) = self.client.poll_event() {
                match ev {
                    Event::Ready => {
                        if let Some(step) = self.after_ready().await {
                            return step;
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
                            if let Some(step) = self.after_ready().await {
                                return step;
                            }
                        }
                    }
                    Event::StartTls => {
                        if !flush(stream, &mut self.out).await {
                            self.client.connection_lost(now_ms());
                            continue;
                        }
                        return Step::StartTls;
                    }
                    Event::SendBody => {
                        if !self.send_body(stream).await {
                            self.client.connection_lost(now_ms());
                        }
                    }
                    Event::TryNextHost => {
                        let _ = flush(stream, &mut self.out).await;
                        self.settle_partial();
                        let reason = self.client.failure().cloned().unwrap_or_else(|| {
                            ServerReply::local(451, (4, 4, 2), "connection failed")
                        });
                        return Step::End(End::TryNext(reason));
                    }
                    Event::Closed => {
                        let _ = flush(stream, &mut self.out).await;
                        self.settle();
                        return Step::End(End::Done);
                    }
                }
            }
            if !flush(stream, &mut self.out).await {
                self.client.connection_lost(now_ms());
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
            let encoded = self.ob.spool.with_state(|s| match s.chunk(c) {
                Some(bytes) => self
                    .client
                    .encode_body(bytes, now_ms(), &mut self.out)
                    .is_ok(),
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
        let _ = self.client.finish_body(now_ms(), &mut self.out);
        self.pipeline_next();
        true
    }

    async fn read<S: Transport>(&mut self, stream: &mut S) {
        let now = now_ms();
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
            Ok(0) => self.client.connection_lost(now_ms()),
            Ok(n) => {
                self.end += n;
                let used = self.client.handle_input(
                    &self.buf[self.start..self.end],
                    now_ms(),
                    &mut self.out,
                );
                self.start += used;
                if self.start == self.end {
                    self.start = 0;
                    self.end = 0;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                self.client.handle_timeout(now_ms())
            }
            Err(_) => self.client.connection_lost(now_ms()),
        }
    }
}

/// An idle connection's place in its destination's idle list
/// (`Scheduler::park`): taken at the first wait, kept across waits, left
/// when dropped.
struct Parking<'a> {
    ob: &'a Outbound,
    key: &'a QueueKey,
    id: u64,
    /// In the list, unless a job woke it (took it out) since.
    parked: std::cell::Cell<bool>,
}

impl<'a> Parking<'a> {
    fn new(ob: &'a Outbound, key: &'a QueueKey) -> Parking<'a> {
        let id = ob.sched.borrow_mut().park_id();
        Parking {
            ob,
            key,
            id,
            parked: std::cell::Cell::new(false),
        }
    }

    /// Resolves when a job queued for the destination wakes this
    /// connection.
    fn woken(&self) -> impl std::future::Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            let mut sched = self.ob.sched.borrow_mut();
            if self.parked.get() && !sched.is_parked(self.key, self.id) {
                self.parked.set(false);
                return std::task::Poll::Ready(());
            }
            sched.park(self.key, self.id, cx.waker());
            self.parked.set(true);
            std::task::Poll::Pending
        })
    }
}

impl Drop for Parking<'_> {
    fn drop(&mut self) {
        if self.parked.get() {
            self.ob.sched.borrow_mut().unpark(self.key, self.id);
        }
    }
}

/// True when the peer closed the socket or sent something unasked (a 421
/// before closing, a TLS alert): either way the connection is ending.
#[allow(unsafe_code)]
fn peer_is_closing(fd: std::os::fd::RawFd) -> bool {
    let mut b = 0u8;
    // SAFETY: peeks at most one byte into a local; the descriptor is the
    // connection's open socket.
    let n = unsafe {
        libc::recv(
            fd,
            (&mut b as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n >= 0 {
        return true;
    }
    let e = std::io::Error::last_os_error().kind();
    !matches!(
        e,
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
    )
}

async fn flush<S: Transport>(stream: &mut S, out: &mut Vec<u8>) -> bool {
    if out.is_empty() {
        return true;
    }
    let ok = stream.write_all(out).await.is_ok() && stream.flush().await.is_ok();
    out.clear();
    ok
}
