//! What happens to recipients once a verdict is in: delivered ones are
//! recorded, failed ones bounce to the sender and are recorded, deferred
//! ones are recorded with their next attempt and parked in the scheduler
//! (or bounce once `max_age` has passed).
//!
//! Every recipient of a job taken from the scheduler passes through here
//! exactly once per attempt: that is how none is ever lost.
//! Must never: record a failure before its bounce is durable.

use std::time::Duration;

use spool_format::RcptState;

use super::delivery::{RcptReply, Verdicts};
use super::message::Current;
use super::notice::{self, Notice, Reported};
use super::report::{Outcome, Via};
use super::Outbound;
use crate::schedule::{Job, QueueKey, RetryDecision};
use crate::smtp::client::{RcptOutcome, ServerReply};

/// The same reply for each of `rcpts`.
fn replies(rcpts: &[u32], reply: &ServerReply) -> Vec<RcptReply> {
    rcpts
        .iter()
        .map(|&rcpt| RcptReply {
            rcpt,
            reply: reply.clone(),
        })
        .collect()
}

impl Outbound {
    /// The next job for a connection to `key` that has carried `sent`
    /// messages.
    pub(super) fn take_job(&self, key: &QueueKey, sent: usize) -> Option<Job> {
        self.sched.borrow_mut().next_job(key, sent)
    }

    /// Settles a finished transaction's outcomes and ends the hold `load`
    /// took. `success`: the notice NOTIFY=SUCCESS asks for; none when the
    /// server offered DSN and so takes it over (else we report "relayed"
    /// ourselves, RFC 3461 6.2.2, or "delivered" after a final delivery).
    pub(super) fn settle(
        &self,
        key: &QueueKey,
        cur: &Current,
        outcomes: &[RcptOutcome],
        via: &Via<'_>,
        success: Option<Notice>,
    ) {
        let Verdicts {
            delivered,
            delivered_reply,
            failed,
            deferred,
            deferred_reply,
        } = Verdicts::of(outcomes, |i| cur.rcpt_index(i));
        let msg_id = cur.job.msg_id;
        if let Some(r) = delivered_reply {
            self.sched.borrow_mut().delivered(key);
            self.report(
                msg_id,
                Outcome::Delivered,
                delivered.iter().map(|&i| (i, r)),
                via,
            );
            if let Some(notice) = success.filter(|_| cur.wants_success_notice()) {
                let reported = replies(&delivered, r);
                self.notify(msg_id, notice, reported, via, None);
            }
            self.finish(msg_id, RcptState::Delivered, delivered, r.text.clone());
        }
        if !failed.is_empty() {
            self.bounce(msg_id, failed, via);
        }
        if let Some(r) = deferred_reply {
            let job = Job {
                msg_id,
                rcpts: deferred,
                attempts: cur.job.attempts,
                received_ms: cur.job.received_ms,
                pool: cur.job.pool,
            };
            self.defer(key, job, r, via);
        }
        self.spool.release(msg_id);
    }

    /// After a host failed mid-transaction: recipients it refused for good
    /// are settled (bounced), and those an LMTP server had delivered before
    /// it failed are recorded; the others are returned, to try on the next
    /// host.
    pub(super) fn settle_failed_only(
        &self,
        cur: &Current,
        outcomes: &[RcptOutcome],
        via: &Via<'_>,
    ) -> Vec<u32> {
        let Verdicts {
            delivered,
            delivered_reply,
            failed,
            deferred,
            ..
        } = Verdicts::of_unfinished(outcomes, |i| cur.rcpt_index(i));
        let msg_id = cur.job.msg_id;
        if let Some(r) = delivered_reply {
            let rcpts = delivered.iter().map(|&i| (i, r));
            self.report(msg_id, Outcome::Delivered, rcpts, via);
            self.finish(msg_id, RcptState::Delivered, delivered, r.text.clone());
        }
        if !failed.is_empty() {
            self.bounce(msg_id, failed, via);
        }
        deferred
    }

    /// Bounces every recipient of a loaded message and ends its hold.
    pub(super) fn fail_current(&self, cur: &Current, reply: &ServerReply, via: &Via<'_>) {
        self.fail_job(&cur.job, reply, via);
        self.spool.release(cur.job.msg_id);
    }

    /// Bounces every recipient of a job with `reply`.
    pub(super) fn fail_job(&self, job: &Job, reply: &ServerReply, via: &Via<'_>) {
        self.bounce(job.msg_id, replies(&job.rcpts, reply), via);
    }

    /// Defers a job after a temporary failure, or bounces it when it is
    /// older than `max_age`. Retry times are wall time: the spool keeps
    /// them, next to the message's arrival.
    pub(super) fn defer(&self, key: &QueueKey, job: Job, reply: &ServerReply, via: &Via<'_>) {
        self.note_reply(key, reply);
        let now = self.clock.wall_ms();
        let attempts = job.attempts.saturating_add(1);
        let decision = self
            .retry
            .borrow()
            .decide(attempts, job.received_ms, now, self.random());
        match decision {
            RetryDecision::RetryAt(at) => {
                let retry_in_s = at.saturating_sub(now) / 1000;
                let rcpts = job.rcpts.iter().map(|&i| (i, reply));
                self.report(job.msg_id, Outcome::Deferred { retry_in_s }, rcpts, via);
                let state = RcptState::Deferred {
                    until_ms: at,
                    attempts,
                };
                self.finish(job.msg_id, state, job.rcpts.clone(), reply.text.clone());
                if self.delay_notice_due(&job, attempts, now) {
                    let until_unix = (job
                        .received_ms
                        .saturating_add(self.retry.borrow().max_age_ms)
                        / 1000) as i64;
                    let delayed = replies(&job.rcpts, reply);
                    self.notify(
                        job.msg_id,
                        Notice::Delayed { until_unix },
                        delayed,
                        via,
                        None,
                    );
                }
                let due = self.clock.monotonic_at(at);
                self.sched
                    .borrow_mut()
                    .defer(key.clone(), Job { attempts, ..job }, due);
            }
            RetryDecision::Expire => {
                let why = format!(
                    "delivery time expired after {}; last error: {}",
                    crate::config::duration::format(self.config().delivery.max_age.duration()),
                    String::from_utf8_lossy(&reply.text)
                );
                self.fail_job(&job, &ServerReply::local(554, (5, 4, 7), &why), via);
            }
        }
    }

    /// The destination cannot be reached now: defer `job` and everything
    /// ready for the destination, so that each is not tried in turn, and
    /// suspend it until `suspend_until_ms` (the delivery machine's
    /// choice): mail queued for it meanwhile waits rather than cost a
    /// connection attempt per message.
    pub(super) fn defer_destination(
        &self,
        key: &QueueKey,
        job: Job,
        reply: &ServerReply,
        suspend_until_ms: u64,
    ) {
        let via = Via::source(key.egress);
        self.defer(key, job, reply, &via);
        while let Some(job) = self.take_job(key, 0) {
            self.defer(key, job, reply, &via);
        }
        self.sched.borrow_mut().suspend(key, suspend_until_ms);
    }

    fn delay_notice_due(&self, job: &Job, attempts: u32, now: u64) -> bool {
        let after = self.config().delivery.delay_notice.map(|d| d.as_millis());
        delay_notice_due(
            after,
            &self.retry.borrow().schedule_ms,
            job.received_ms,
            attempts,
            now,
        )
    }

    /// Bounces `failed` to the sender (unless the sender or the
    /// recipients' NOTIFY forbid it), then records them as failed. A
    /// message gets one bounce per attempt, whatever its recipients'
    /// destinations and transactions: the first failure starts a bounce
    /// that waits until no connection carries the message any more and
    /// no failure has joined for [`BOUNCE_QUIET`] (at most
    /// [`BOUNCE_WAIT_MAX`]); failures meanwhile join it.
    pub(super) fn bounce(&self, msg_id: u64, failed: Vec<RcptReply>, via: &Via<'_>) {
        let rcpts = failed.iter().map(|f| (f.rcpt, &f.reply));
        self.report(msg_id, Outcome::Bounced, rcpts, via);
        let failed = Reported::all(failed, via);
        {
            let mut bounces = self.bounces.borrow_mut();
            if let Some(waiting) = bounces.get_mut(&msg_id) {
                waiting.extend(failed);
                return;
            }
            bounces.insert(msg_id, failed);
        }
        let Some(ob) = self.me.upgrade() else {
            return;
        };
        self.spool.hold(msg_id);
        self.running.set(self.running.get() + 1);
        let source = via.source;
        glommio::spawn_local(async move {
            ob.gather_bounce(msg_id).await;
            let failed = ob.bounces.borrow_mut().remove(&msg_id);
            let via = Via::source(source);
            let then = Some(RcptState::Failed);
            ob.send_notice(
                msg_id,
                Notice::Failed,
                failed.unwrap_or_default(),
                &via,
                then,
            )
            .await;
            ob.spool.release(msg_id);
            ob.running.set(ob.running.get() - 1);
        })
        .detach();
    }

    /// Waits until the bounce of `msg_id` has gathered what this attempt
    /// fails: no failure joined it for [`BOUNCE_QUIET`] and no connection
    /// holds the message, or [`BOUNCE_WAIT_MAX`] has passed, or delivery
    /// is stopping.
    async fn gather_bounce(&self, msg_id: u64) {
        let start = self.clock.monotonic_ms();
        let gathered = || self.bounces.borrow().get(&msg_id).map_or(0, Vec::len);
        let mut seen = gathered();
        loop {
            glommio::timer::sleep(BOUNCE_QUIET).await;
            let now = gathered();
            // The bounce's own hold is one; more are connections (or
            // notices) still carrying the message.
            let settled = now == seen && self.spool.holds(msg_id) <= 1;
            let waited = self.clock.monotonic_ms().saturating_sub(start);
            if settled || waited >= BOUNCE_WAIT_MAX.as_millis() as u64 || self.stopping.get() {
                return;
            }
            seen = now;
        }
    }

    /// Writes and queues a notice about `rcpts` in a task of its own; then
    /// records `then` for them, if given (a failure is recorded only once
    /// its bounce is durable, so a crash between the two can repeat the
    /// bounce but never lose it).
    fn notify(
        &self,
        msg_id: u64,
        notice: Notice,
        rcpts: Vec<RcptReply>,
        via: &Via<'_>,
        then: Option<RcptState>,
    ) {
        let Some(ob) = self.me.upgrade() else {
            return;
        };
        self.spool.hold(msg_id);
        self.running.set(self.running.get() + 1);
        let rcpts = Reported::all(rcpts, via);
        let (source, host, addr) = (via.source, via.host.map(str::to_owned), via.addr);
        glommio::spawn_local(async move {
            let via = Via {
                source,
                host: host.as_deref(),
                addr,
            };
            ob.send_notice(msg_id, notice, rcpts, &via, then).await;
            ob.spool.release(msg_id);
            ob.running.set(ob.running.get() - 1);
        })
        .detach();
    }

    /// Queues the notice, then records `then` for its recipients (each
    /// with its own reply).
    async fn send_notice(
        &self,
        msg_id: u64,
        notice: Notice,
        rcpts: Vec<Reported>,
        via: &Via<'_>,
        then: Option<RcptState>,
    ) {
        if let Err(e) = notice::send(self, msg_id, notice, &rcpts, via).await {
            tracing::error!(id = %self.queue_id(msg_id), error = %e,
                "could not queue a delivery status notice");
        }
        let Some(state) = then else {
            return;
        };
        for same in rcpts.chunk_by(|a, b| a.rcpt.reply.text == b.rcpt.reply.text) {
            let diagnostic = same[0].rcpt.reply.text.clone();
            let rcpts = same.iter().map(|f| f.rcpt.rcpt).collect();
            self.finish(msg_id, state, rcpts, diagnostic);
        }
    }
}

/// How long a bounce waits, after the last failure joined it, for more
/// of the same attempt's failures.
const BOUNCE_QUIET: Duration = Duration::from_millis(300);
/// The longest a bounce waits for its message's connections to finish.
const BOUNCE_WAIT_MAX: Duration = Duration::from_secs(60);

/// True when a deferral after `attempts` failed attempts, at `now`, is the
/// first one past `delay_notice_ms` since the message arrived: the attempt
/// before it (one retry step earlier) was still before the threshold. Once
/// per message, without storing anything.
fn delay_notice_due(
    delay_notice_ms: Option<u64>,
    schedule_ms: &[u64],
    received_ms: u64,
    attempts: u32,
    now: u64,
) -> bool {
    let Some(after) = delay_notice_ms else {
        return false;
    };
    let threshold = received_ms.saturating_add(after);
    if now < threshold {
        return false;
    }
    if attempts <= 1 {
        return true;
    }
    let i = (attempts as usize - 2).min(schedule_ms.len().saturating_sub(1));
    let previous_step = schedule_ms.get(i).copied().unwrap_or(0);
    now.saturating_sub(previous_step) < threshold
}

#[cfg(test)]
mod tests {
    use super::delay_notice_due;

    const MIN: u64 = 60_000;

    #[test]
    fn one_delay_notice_at_the_first_deferral_past_the_threshold() {
        let schedule = [5 * MIN, 10 * MIN, 20 * MIN, 40 * MIN, 60 * MIN];
        let notice = Some(30 * MIN);
        // Attempts at 0, 5, 15, 35, 75 minutes (each deferral counts one).
        let times = [0, 5 * MIN, 15 * MIN, 35 * MIN, 75 * MIN, 135 * MIN];
        let due: Vec<bool> = times
            .iter()
            .enumerate()
            .map(|(i, &t)| delay_notice_due(notice, &schedule, 0, i as u32 + 1, t))
            .collect();
        assert_eq!(due, [false, false, false, true, false, false]);
        assert!(!delay_notice_due(None, &schedule, 0, 4, 35 * MIN));
        // A message found late (after a long outage) gets one at once.
        assert!(delay_notice_due(notice, &schedule, 0, 1, 90 * MIN));
    }
}
