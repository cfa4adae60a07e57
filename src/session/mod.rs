//! The I/O side of one SMTP session: moves bytes between the socket, the
//! sans-IO session machine and the spool. It decides nothing about SMTP.
//! `context` is what a listener's sessions share, `idle` the list of those
//! waiting for a command.
//!
//! Body bytes go from the receive buffer into the spool mapping in one copy
//! (the machine unstuffs while writing into the chunk's payload area). A
//! reply to a message is written only after the spool says it is durable.
//! Must never: answer `250` to a message before the spool says it is
//! durable, or read the clock other than through the context's `Clock`.

use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{future, AsyncReadExt};
use futures_rustls::server::TlsStream;
use glommio::net::TcpStream;
use spool_format::envelope::{notify, BodyType, ChunkRef, Envelope as SpoolEnvelope, Recipient};

mod context;
mod dkim;
mod idle;
mod pool;

pub use context::SessionContext;
pub use idle::IdleSessions;

use crate::smtp::received::{format_date, DATE_LEN};
use crate::smtp::server::{Event, PeerInfo, Session, SpoolFailure, MIN_RECEIVE_BUFFER};
use crate::spool::params::stored_ret;
use crate::spool::shard::WritePin;
use crate::spool::DisplayId;
use crate::tls;
use crate::transport::{flush, Transport};

/// Receive buffer per session: big enough for the longest command line and
/// for large body reads.
const RECEIVE_BUFFER: usize = if MIN_RECEIVE_BUFFER > 64 * 1024 {
    MIN_RECEIVE_BUFFER
} else {
    64 * 1024
};

/// A message body being written to the spool.
struct BodySink {
    _pin: WritePin,
    msg_id: u64,
    chunks: Vec<ChunkRef>,
    len: u64,
    /// The spool refused a chunk: keep reading to stay in sync, answer 451.
    failed: bool,
    /// Small pieces of the body (BDAT chunks, the last bytes of a
    /// trickled DATA) gathered to be appended as one
    /// record: a record of each would cost its 32-byte header and padding
    /// per piece, and a chunk reference each.
    staged: Vec<u8>,
}

impl BodySink {
    /// Appends what is staged as one record.
    fn flush(&mut self, ctx: &SessionContext) {
        if !self.staged.is_empty() && !self.failed {
            let r = ctx.spool.append_chunk(&self.staged).map(Some);
            self.appended(r);
        }
        self.staged.clear();
    }

    /// Adds a chunk the spool took (or notes that it refused one).
    fn appended(&mut self, r: Result<Option<ChunkRef>, crate::spool::SpoolError>) {
        match r {
            Ok(Some(c)) => {
                self.len += u64::from(c.len);
                self.chunks.push(c);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "spool append failed; message will get 451");
                self.failed = true;
            }
        }
    }
}

/// Buffers of one connection, kept across the switch to TLS.
struct Buffers {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    out: Vec<u8>,
    scratch: Vec<u8>,
    /// This session's place in the listener's idle sessions.
    slot: usize,
    /// Reused for every message of the connection, so committing one does
    /// not allocate the envelope afresh.
    env: SpoolEnvelope,
    spare_chunks: Vec<ChunkRef>,
    spare_stage: Vec<u8>,
}

/// Takes the session out of the idle sessions before its socket closes.
struct Unregister<'a>(&'a SessionContext, usize);

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        self.0.idle.unregister(self.1);
    }
}

/// How a run over one transport ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Closed,
    StartTls,
}

/// Serves one connection until the client quits, a limit closes it, or
/// the shard stops.
pub async fn serve(stream: TcpStream, peer: PeerInfo, ctx: Rc<SessionContext>) {
    // A client that never reads its replies must not hold the session (and
    // its connection slot) forever in a blocked write.
    let connected = ctx.clock.monotonic_ms();
    let limit = Duration::from_millis(ctx.server().command_timeout_ms);
    if stream.set_write_timeout(Some(limit)).is_err() {
        return;
    }
    let slot = ctx.idle.register(stream.as_raw_fd());
    let _registered = Unregister(&ctx, slot);
    let mut b = Buffers {
        slot,
        buf: vec![0u8; RECEIVE_BUFFER],
        start: 0,
        end: 0,
        out: Vec::with_capacity(4096),
        scratch: Vec::new(),
        env: SpoolEnvelope::default(),
        spare_chunks: Vec::new(),
        spare_stage: Vec::with_capacity(STAGE),
    };
    if ctx.implicit_tls {
        let Some(mut tls) = handshake(&ctx, stream, connected).await else {
            return;
        };
        let info = tls::info(tls.get_ref().1);
        let mut s = Session::new(ctx.server(), peer, Some(info), ctx.clock.monotonic_ms());
        s.set_connected_at(connected);
        s.greeting(&mut b.out);
        drive(&mut tls, &mut s, &ctx, &mut b).await;
        return;
    }
    let mut stream = stream;
    let mut s = Session::new(ctx.server(), peer, None, connected);
    s.greeting(&mut b.out);
    if drive(&mut stream, &mut s, &ctx, &mut b).await != Outcome::StartTls {
        return;
    }
    // CVE-2011-0411: nothing the client sent before the handshake may be
    // read as a command after it.
    (b.start, b.end) = (0, 0);
    let Some(mut tls) = handshake(&ctx, stream, connected).await else {
        return;
    };
    if s.tls_established(tls::info(tls.get_ref().1), ctx.clock.monotonic_ms())
        .is_ok()
    {
        drive(&mut tls, &mut s, &ctx, &mut b).await;
    }
}

/// Runs the TLS handshake within `tls_handshake_timeout` as a whole (a
/// client dribbling a byte at a time would pass any limit per read) and
/// within what is left of the session's time since `connected`.
async fn handshake(
    ctx: &SessionContext,
    stream: TcpStream,
    connected: u64,
) -> Option<TlsStream<TcpStream>> {
    let acceptor = ctx.tls.clone()?;
    let server = ctx.server();
    let per_read = Duration::from_millis(server.command_timeout_ms);
    stream.set_read_timeout(Some(per_read)).ok()?;
    stream.set_write_timeout(Some(per_read)).ok()?;
    let session_end = connected.saturating_add(server.session_timeout_ms);
    let left = session_end.saturating_sub(ctx.clock.monotonic_ms());
    let limit = Duration::from_millis(server.tls_handshake_timeout_ms.min(left).max(1));
    let accept = async { Ok(acceptor.accept(stream).await) };
    match glommio::timer::timeout(limit, accept).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(
                limit_ms = limit.as_millis() as u64,
                "TLS handshake timed out"
            );
            None
        }
    }
}

/// Runs the session over one transport until it closes or asks for TLS.
async fn drive<S: Transport>(
    stream: &mut S,
    s: &mut Session,
    ctx: &SessionContext,
    b: &mut Buffers,
) -> Outcome {
    let mut sink: Option<BodySink> = None;
    loop {
        s.set_storage_available(ctx.storage_available());
        s.set_spool_failed(ctx.spool.has_failed());
        s.set_today(crate::hosted::srs::day_of(ctx.clock.wall_ms()));
        let now = ctx.clock.monotonic_ms();
        let pending = &b.buf[b.start..b.end];
        let hold_back = s.wants_body() && !s.body_input_ready(pending, MIN_CHUNK);
        let (used, event) = if hold_back && b.end < b.buf.len() {
            // Too little body to be worth a record of its own, and it
            // cannot end the body: read more first.
            (0, None)
        } else if s.wants_body() {
            body_step(
                s,
                ctx,
                &b.buf[b.start..b.end],
                &mut sink,
                &mut b.scratch,
                now,
                &mut b.out,
            )
        } else {
            let p = s.handle_input(&b.buf[b.start..b.end], now, &mut b.out);
            (p.consumed, p.event)
        };
        b.start += used;
        if sink.is_some() && !s.wants_body() && !s.envelope().is_active() {
            // The transaction ended without a message (RSET or EHLO between
            // BDAT chunks): release its write pin and partial chunks.
            sink = None;
        }
        match event {
            Some(Event::DataStart) => {
                let chunks = std::mem::take(&mut b.spare_chunks);
                let staged = std::mem::take(&mut b.spare_stage);
                sink = Some(open_sink(s, ctx, staged, chunks));
            }
            Some(Event::DataEnd) => {
                if let Some(k) = sink.as_mut() {
                    k.flush(ctx);
                    b.spare_stage = std::mem::take(&mut k.staged);
                }
                let reply = commit(s, ctx, sink.take(), &mut b.env).await;
                let _ = match reply {
                    Ok(id) => s.message_accepted(id.as_str(), &mut b.out),
                    Err(NotQueued::Spool(why)) => s.message_failed(why, &mut b.out),
                    Err(NotQueued::UnknownPool) => {
                        s.message_refused(&crate::smtp::reply::UNKNOWN_POOL, &mut b.out)
                    }
                };
                b.spare_chunks = std::mem::take(&mut b.env.body);
            }
            Some(Event::MessageRejected(_)) => sink = None,
            Some(Event::RcptVerify) => {
                let mut event = Some(Event::RcptVerify);
                while event == Some(Event::RcptVerify) {
                    event = verify_recipient(s, ctx, &mut b.out).await;
                }
                if event == Some(Event::Close) {
                    send(stream, &mut b.out, ctx).await;
                    return Outcome::Closed;
                }
            }
            Some(Event::AuthAttempt) => {
                let verdict = authenticate(s, ctx, &mut b.out).await;
                if verdict == Some(Event::Close) {
                    send(stream, &mut b.out, ctx).await;
                    return Outcome::Closed;
                }
            }
            Some(Event::StartTls) => {
                return match send(stream, &mut b.out, ctx).await && ctx.tls.is_some() {
                    true => Outcome::StartTls,
                    false => Outcome::Closed,
                };
            }
            Some(Event::Close) => {
                send(stream, &mut b.out, ctx).await;
                return Outcome::Closed;
            }
            Some(_) => {}
            None if used == 0 => {
                if !send(stream, &mut b.out, ctx).await {
                    return Outcome::Closed;
                }
                // Keep unconsumed input at the front, then read more.
                b.buf.copy_within(b.start..b.end, 0);
                b.end -= b.start;
                b.start = 0;
                let (buf, end) = (&mut b.buf, b.end);
                match read_more(stream, s, &mut buf[end..], &mut b.out, ctx, b.slot).await {
                    Some(n) => b.end += n,
                    None => {
                        send(stream, &mut b.out, ctx).await;
                        return Outcome::Closed;
                    }
                }
                if ctx.stopping() && !s.wants_body() && sink.is_none() {
                    b.out
                        .extend_from_slice(b"421 4.3.2 Service shutting down\r\n");
                    send(stream, &mut b.out, ctx).await;
                    return Outcome::Closed;
                }
            }
            None => {}
        }
    }
}

/// Answers an AUTH attempt: 454 4.7.0 if its client has failed too often
/// lately, else the password check's verdict, a failure only after
/// `[auth] failure_delay` (a timer: the shard's other sessions go on).
async fn authenticate(s: &mut Session, ctx: &SessionContext, out: &mut Vec<u8>) -> Option<Event> {
    let config = ctx.config();
    let limit = crate::auth_throttle::FailureLimit {
        max_failures: config.auth.max_failures,
        window: config.auth.failure_window,
    };
    let (ip, prefix) = (s.peer().ip, ctx.server().ipv6_prefix_length);
    let now_s = || ctx.clock.monotonic_ms() / 1000;
    if !crate::auth_throttle::allows(&limit, ip, prefix, now_s()) {
        return s.auth_throttled(out).ok().flatten();
    }
    let ok = match s.auth_credentials() {
        Some(c) => ctx.check_password(c.username, c.password).await,
        None => false,
    };
    if !ok {
        crate::auth_throttle::record_failure(&limit, ip, prefix, now_s());
        if !config.auth.failure_delay.is_zero() {
            glommio::timer::sleep(config.auth.failure_delay).await;
        }
    }
    s.auth_result(ok, out).ok().flatten()
}

/// Answers a RCPT's question about a mailbox of an LMTP-verified domain:
/// from this shard's cache of answers, or by asking the domain's LMTP
/// server (within `PROBE_TIMEOUT`; the shard's other sessions go on).
async fn verify_recipient(
    s: &mut Session,
    ctx: &SessionContext,
    out: &mut Vec<u8>,
) -> Option<Event> {
    use crate::hosted::{cache, probe};
    use crate::smtp::server::Verdict;
    let mailbox = s.verify_request()?.to_owned();
    let config = ctx.config();
    let domain = crate::hosted::split_address(&mailbox).and_then(|(_, d)| config.hosted_domain(d));
    let (Some(domain), now) = (domain, ctx.clock.monotonic_ms()) else {
        // The configuration changed under the session: ask again later.
        return s.rcpt_verified(Verdict::Unavailable, out).ok().flatten();
    };
    let cached = cache::with_shard_cache(|c| c.get(&mailbox, now));
    let verdict = match (cached, &domain.lmtp) {
        (Some(true), _) => Verdict::Exists,
        (Some(false), _) => Verdict::Unknown,
        (None, None) => Verdict::Unavailable,
        (None, Some(target)) => {
            let hostname = &config.server.hostname;
            let v = probe::probe(target, hostname, &mailbox, probe::PROBE_TIMEOUT).await;
            let exists = match v {
                probe::Verdict::Exists => true,
                probe::Verdict::Unknown => false,
                probe::Verdict::Unavailable(why) => {
                    tracing::warn!(mailbox = %mailbox, lmtp = %target, why = %why, "recipient not verified: 450");
                    return s.rcpt_verified(Verdict::Unavailable, out).ok().flatten();
                }
            };
            let ttl = domain.verify_cache.as_millis();
            let now = ctx.clock.monotonic_ms();
            cache::with_shard_cache(|c| c.put(&mailbox, exists, now, ttl));
            if exists {
                Verdict::Exists
            } else {
                Verdict::Unknown
            }
        }
    };
    s.rcpt_verified(verdict, out).ok().flatten()
}

/// Writes `out` to the client, counting the negative replies in it.
async fn send<S: Transport>(stream: &mut S, out: &mut Vec<u8>, ctx: &SessionContext) -> bool {
    ctx.metrics.count_replies(out);
    flush(stream, out).await
}

/// Reads once, bounded by the session's next deadline. `None`: write `out`
/// and close. When the shard stops, its sweep shuts down the read side of
/// sessions waiting for a command, so their read ends and they say 421.
async fn read_more<S: Transport>(
    stream: &mut S,
    s: &mut Session,
    into: &mut [u8],
    out: &mut Vec<u8>,
    ctx: &SessionContext,
    slot: usize,
) -> Option<usize> {
    if into.is_empty() {
        return None;
    }
    let now = ctx.clock.monotonic_ms();
    let wait = s.next_deadline().map(|d| d.saturating_sub(now).max(1));
    stream
        .set_read_deadline(wait.map(Duration::from_millis))
        .ok()?;
    ctx.idle.set_idle(slot, !s.wants_body());
    let read = stream.read(into).await;
    ctx.idle.set_idle(slot, false);
    match read {
        Ok(n) if n > 0 => Some(n),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            // The machine writes its 421 (idle, session, data rate) and says
            // whether to close; a data-rate window that passed is not one.
            match s.handle_timeout(ctx.clock.monotonic_ms(), out) {
                Some(Event::Close) => None,
                _ => Some(0),
            }
        }
        _ => {
            if ctx.stopping() {
                out.extend_from_slice(b"421 4.3.2 Service shutting down\r\n");
            }
            None
        }
    }
}

/// Body input smaller than this is held back until more arrives, unless it
/// may end the body (`Session::body_input_ready`): each append is a record
/// with a 32-byte header and padding, so a client trickling its body a few
/// bytes per packet would otherwise cost many times its size in spool and
/// chunk references.
const MIN_CHUNK: usize = 4096;

/// Staged body octets are appended once they would pass this many; with
/// pieces of under `MIN_CHUNK` each, every record but the last then holds
/// more than half of it, whatever the chunking.
const STAGE: usize = 2 * MIN_CHUNK;

/// Feeds body bytes into the sink's stage when they are few, else into a
/// new chunk of the spool mapping.
fn body_step(
    s: &mut Session,
    ctx: &SessionContext,
    input: &[u8],
    sink: &mut Option<BodySink>,
    scratch: &mut Vec<u8>,
    now: u64,
    out: &mut Vec<u8>,
) -> (usize, Option<Event>) {
    let max = input.len().min(ctx.spool.max_chunk());
    let mut prog = Default::default();
    let healthy = sink.as_ref().is_some_and(|k| !k.failed);
    let mut filled = false;
    if let Some(k) = sink.as_mut().filter(|_| healthy && max > 0) {
        let few = s.body_octets_in(input);
        if few < MIN_CHUNK {
            prog = stage(s, ctx, k, input, few, now, out);
            return (prog.consumed, prog.event);
        }
        // What is staged comes first in the body.
        k.flush(ctx);
    }
    if healthy && max > 0 {
        let r = ctx.spool.append_chunk_with(max, |dst| {
            filled = true;
            prog = s.receive_data(input, dst, now, out);
            prog.produced
        });
        if let Some(k) = sink.as_mut() {
            k.appended(r);
        }
    }
    if !filled {
        // Discard into scratch space so the session stays in sync.
        scratch.resize(max.max(1), 0);
        prog = s.receive_data(input, scratch, now, out);
    }
    (prog.consumed, prog.event)
}

/// Adds `few` body octets at the front of `input` to the sink's stage,
/// appending what was staged first if they would not fit.
fn stage(
    s: &mut Session,
    ctx: &SessionContext,
    k: &mut BodySink,
    input: &[u8],
    few: usize,
    now: u64,
    out: &mut Vec<u8>,
) -> crate::smtp::server::DataProgress {
    if k.staged.len() + few > STAGE {
        k.flush(ctx);
    }
    let at = k.staged.len();
    k.staged.resize(at + few, 0);
    let p = s.receive_data(input, &mut k.staged[at..], now, out);
    k.staged.truncate(at + p.produced);
    p
}

/// Starts a message: reserves its id and writes the `Received:` header as
/// the first chunk.
fn open_sink(
    s: &Session,
    ctx: &SessionContext,
    mut staged: Vec<u8>,
    mut chunks: Vec<ChunkRef>,
) -> BodySink {
    chunks.clear();
    let pin = ctx.spool.pin_for_write();
    let msg_id = ctx.spool.allocate_msg_id();
    let id = ctx.display_id(msg_id);
    let mut date = [0u8; DATE_LEN];
    let date = format_date((ctx.clock.wall_ms() / 1000) as i64, &mut date);
    staged.clear();
    s.write_received(&mut staged, None, id.as_str(), date);
    let mut sink = BodySink {
        _pin: pin,
        msg_id,
        chunks,
        len: 0,
        failed: false,
        staged,
    };
    // A chunk of its own: the pool header is looked for after it.
    sink.flush(ctx);
    sink
}

/// Why a message whose data is in was not queued.
enum NotQueued {
    Spool(SpoolFailure),
    /// It names an IP pool there is none of: 550 5.7.0.
    UnknownPool,
}

/// Builds the spool envelope and commits it; the id string on success.
async fn commit(
    s: &Session,
    ctx: &SessionContext,
    sink: Option<BodySink>,
    env: &mut SpoolEnvelope,
) -> Result<DisplayId, NotQueued> {
    let failed = || {
        NotQueued::Spool(if ctx.storage_available() {
            SpoolFailure::Io
        } else {
            SpoolFailure::NoSpace
        })
    };
    let Some(mut sink) = sink.filter(|k| !k.failed) else {
        return Err(failed());
    };
    let query = pool_query(s, ctx);
    let pool = match pool::choose(
        &ctx.config(),
        &ctx.spool,
        query,
        &mut sink.chunks,
        &mut sink.len,
    ) {
        Ok(pool) => pool,
        Err(pool::NoPool::Unknown(name)) => {
            let id = ctx.display_id(sink.msg_id);
            tracing::info!(id = id.as_str(), pool = %name, "refused: the message names an unknown IP pool");
            return Err(NotQueued::UnknownPool);
        }
        Err(pool::NoPool::Spool(e)) => {
            tracing::error!(error = %e, "spool append failed; answered 451");
            return Err(failed());
        }
    };
    // Read before signing puts its fields above the client's text: only
    // that text can carry the job ID.
    let job_id = job_id_of(ctx, &sink.chunks);
    // Signed after the pool header is cut (it is not sent), before the
    // commit: the signature is stored with the message.
    if let Err(e) = dkim::sign(ctx, sink.msg_id, &mut sink.chunks, &mut sink.len).await {
        tracing::error!(error = %e, "spool append failed; answered 451");
        return Err(failed());
    }
    let wall = ctx.clock.wall_ms();
    // Forwards whose sender is rewritten go in an envelope of their own
    // (the spool keeps one sender per message), naming the same body.
    let forward_sender = s.forward_sender();
    let own = forward_sender.as_ref().map(|_| false);
    fill_envelope(env, s, sink.msg_id, sink.len, wall, own);
    env.pool = pool;
    env.body = sink.chunks;
    let mut forwards = forward_sender.map(|sender| {
        let mut f = SpoolEnvelope::default();
        let msg_id = if env.recipients.is_empty() {
            sink.msg_id
        } else {
            0
        };
        fill_envelope(&mut f, s, msg_id, sink.len, wall, Some(true));
        f.reverse_path = sender;
        f.pool = pool;
        f.body = env.body.clone();
        f
    });
    let committed = match forwards.as_mut() {
        None => ctx.spool.commit_message(env).await.map(|_| ()),
        Some(f) if env.recipients.is_empty() => ctx.spool.commit_message(f).await.map(|_| ()),
        // Both appended before either waits: one sync covers the two. If
        // one failed and the other not, the client is told 451 and sends
        // again: its recipients may get the message twice, never none.
        Some(f) => {
            match future::zip(ctx.spool.commit_message(env), ctx.spool.commit_message(f)).await {
                (Ok(_), Ok(_)) => Ok(()),
                (Err(e), _) | (_, Err(e)) => Err(e),
            }
        }
    };
    if let Err(e) = committed {
        tracing::error!(error = %e, "spool commit failed; answered 451");
        return Err(NotQueued::Spool(SpoolFailure::Io));
    }
    let mut first = None;
    for e in [Some(&*env), forwards.as_ref()].into_iter().flatten() {
        if e.recipients.is_empty() {
            continue;
        }
        let id = ctx.display_id(e.msg_id);
        accepted(s, ctx, e, &id, job_id.as_deref());
        first.get_or_insert(id);
    }
    if let Some(f) = forwards {
        if env.recipients.is_empty() {
            // The caller keeps the body's chunk list for the next message.
            env.body = f.body;
        }
    }
    first.ok_or(NotQueued::Spool(SpoolFailure::Io))
}

/// The job ID the accounting log records for a message being received
/// (`[accounting] job_id_header`), when the log is on: read from the
/// client's text only, after the first chunk (this server's `Received:`
/// field).
fn job_id_of(ctx: &SessionContext, chunks: &[ChunkRef]) -> Option<String> {
    ctx.accounting.as_ref()?;
    let config = ctx.config();
    let name = config.accounting.job_id_header()?;
    let client = chunks.get(1..)?;
    ctx.spool.with_state(|st| {
        crate::smtp::header_field::stored_value_text(client.iter(), |c| st.chunk(c), name)
    })
}

/// What follows a message's commit: the count, the log line, its
/// accounting records, and the hand-over to delivery.
fn accepted(
    s: &Session,
    ctx: &SessionContext,
    env: &SpoolEnvelope,
    id: &DisplayId,
    job_id: Option<&str>,
) {
    ctx.metrics.received.increment(1);
    if ctx.config().log.messages {
        tracing::info!(
            id = %id,
            from = %String::from_utf8_lossy(&env.reverse_path),
            size = env.body_len,
            rcpts = env.recipients.len(),
            client = %s.peer().ip,
            user = s.authenticated_user().map(String::from_utf8_lossy).as_deref(),
            "accepted"
        );
    }
    if let Some(log) = &ctx.accounting {
        account_received(ctx, log, s, env, id, job_id);
    }
    if let Some(outbound) = &ctx.outbound {
        outbound.queue_new(env);
    }
}

/// One accounting record (`r`) per recipient of a message just accepted.
fn account_received(
    ctx: &SessionContext,
    log: &crate::accounting::ShardLog,
    s: &Session,
    env: &SpoolEnvelope,
    id: &DisplayId,
    job_id: Option<&str>,
) {
    use crate::accounting::{Record, RecordType};
    let config = ctx.config();
    let pool = config
        .pool
        .iter()
        .find(|p| spool_format::envelope::pool_id(&p.name) == env.pool)
        .map(|p| p.name.as_str());
    let at = env.received_ms / 1000;
    let from = String::from_utf8_lossy(&env.reverse_path);
    let mut client = [0u8; 48];
    let client = ip_text(s.peer().ip, &mut client);
    let env_id = (!env.envid.is_empty()).then(|| String::from_utf8_lossy(&env.envid));
    for r in &env.recipients {
        let rcpt = String::from_utf8_lossy(&r.address);
        let orcpt = (!r.orcpt.is_empty()).then(|| String::from_utf8_lossy(&r.orcpt));
        let mut record = Record::new(RecordType::Received, (at, at), &from, &rcpt, id.as_str());
        record.orcpt = orcpt.as_deref();
        record.src_mta = Some(client);
        record.dlv_size = Some(env.body_len);
        record.vmta_pool = pool;
        record.job_id = job_id;
        record.env_id = env_id.as_deref();
        log.record(&record);
    }
}

/// `ip` as text, written into `buf` (room for any IPv6 address).
fn ip_text(ip: std::net::IpAddr, buf: &mut [u8; 48]) -> &str {
    use std::io::Write;
    let mut room = &mut buf[..];
    // An address is at most 45 characters: it fits.
    let _ = write!(room, "{ip}");
    let len = 48 - room.len();
    std::str::from_utf8(&buf[..len]).unwrap_or_default()
}

/// What the pool rules look at: the sender's domain, the authenticated
/// user and the listener's name.
fn pool_query<'a>(s: &'a Session, ctx: &'a SessionContext) -> crate::config::PoolQuery<'a> {
    let sender = s.envelope().reverse_path();
    let domain = memchr::memrchr(b'@', sender).map(|at| &sender[at + 1..]);
    crate::config::PoolQuery {
        sender_domain: domain.and_then(|d| std::str::from_utf8(d).ok()),
        auth_user: s
            .authenticated_user()
            .and_then(|u| std::str::from_utf8(u).ok()),
        listener: ctx.listener.as_deref(),
    }
}

/// Copies the session's envelope into the reused spool envelope, keeping
/// the buffers it already has; with `forwards`, only the recipients that
/// are (`Some(true)`) or are not (`Some(false)`) forwards.
fn fill_envelope(
    env: &mut SpoolEnvelope,
    s: &Session,
    msg_id: u64,
    body_len: u64,
    received_ms: u64,
    forwards: Option<bool>,
) {
    let e = s.envelope();
    env.msg_id = msg_id;
    env.received_ms = received_ms;
    env.body_len = body_len;
    use spool_format::envelope::flags;
    let trusted = s.peer().relay_allowed || s.authenticated_user().is_some();
    env.flags =
        if e.smtputf8() { flags::SMTPUTF8 } else { 0 } | if trusted { 0 } else { flags::UNTRUSTED };
    env.body_type = BodyType::from(e.body()).into();
    env.ret = stored_ret(e.ret()).into();
    refill(&mut env.reverse_path, e.reverse_path());
    refill(&mut env.envid, e.envid().unwrap_or_default());
    let chosen = e
        .recipients()
        .filter(|r| forwards.is_none_or(|f| r.forward == f));
    let mut count = 0;
    for (i, r) in chosen.enumerate() {
        count = i + 1;
        if i == env.recipients.len() {
            env.recipients.push(Recipient::new(b"", 0, b""));
        }
        let dst = &mut env.recipients[i];
        refill(&mut dst.address, r.address);
        refill(&mut dst.orcpt, r.orcpt.unwrap_or_default());
        dst.notify = match r.notify {
            None => 0,
            Some(n) if n.0 == 0 => notify::NEVER,
            Some(n) => n.0,
        };
        dst.set_state(spool_format::RcptState::Pending);
    }
    env.recipients.truncate(count);
}

fn refill(dst: &mut Vec<u8>, src: &[u8]) {
    dst.clear();
    dst.extend_from_slice(src);
}

#[cfg(test)]
mod tests {
    use super::ip_text;

    #[test]
    fn client_addresses_are_written_whole() {
        let mut buf = [0u8; 48];
        for text in [
            "192.0.2.7",
            "255.255.255.255",
            "2001:db8::25",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:255.255.255.255",
        ] {
            let ip: std::net::IpAddr = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(ip_text(ip, &mut buf), ip.to_string());
        }
    }
}
