//! What happens to recipients once a verdict is in: delivered ones are
//! recorded, failed ones bounce to the sender and are recorded, deferred
//! ones are recorded with their next attempt and parked in the scheduler
//! (or bounce once `max_age` has passed).
//!
//! Every recipient of a job taken from the scheduler passes through here
//! exactly once per attempt: that is how none is ever lost.

use spool_format::RcptState;

use super::message::Current;
use super::Outbound;
use crate::daemon::now_ms;
use crate::schedule::{Job, QueueKey, RetryDecision};
use crate::smtp::client::{OutcomeKind, RcptOutcome, ServerReply};

/// A recipient that failed for good, with the reply that said so.
pub(super) struct Failure {
    pub rcpt: u32,
    pub reply: ServerReply,
}

impl Outbound {
    /// The next job for a connection to `key` that has carried `sent`
    /// messages.
    pub(super) fn take_job(&self, key: &QueueKey, sent: usize) -> Option<Job> {
        self.sched.borrow_mut().next_job(key, sent)
    }

    /// Settles a finished transaction's outcomes and ends the hold `load`
    /// took.
    pub(super) fn settle(
        &self,
        key: &QueueKey,
        cur: &Current,
        outcomes: &[RcptOutcome],
        remote: &str,
    ) {
        let index: Vec<u32> = cur.rcpt_indices().collect();
        let mut delivered = Vec::new();
        let mut failed = Vec::new();
        let mut deferred = Vec::new();
        let mut defer_reply = None;
        let mut delivered_reply = None;
        for o in outcomes {
            let Some(&rcpt) = index.get(o.index) else {
                continue;
            };
            match o.kind {
                OutcomeKind::Delivered => {
                    delivered.push(rcpt);
                    delivered_reply.get_or_insert(&o.reply);
                }
                OutcomeKind::Failed => failed.push(Failure {
                    rcpt,
                    reply: o.reply.clone(),
                }),
                OutcomeKind::Deferred => {
                    deferred.push(rcpt);
                    defer_reply.get_or_insert(&o.reply);
                }
            }
        }
        let msg_id = cur.job.msg_id;
        if let Some(r) = delivered_reply {
            self.sched.borrow_mut().delivered(key);
            tracing::debug!(msg_id, remote, recipients = delivered.len(), "delivered");
            self.finish(msg_id, RcptState::Delivered, delivered, r.text.clone());
        }
        if !failed.is_empty() {
            self.bounce(msg_id, failed, Some(remote));
        }
        if let Some(r) = defer_reply {
            let job = Job {
                rcpts: deferred,
                ..cur.job.clone()
            };
            self.defer(key, job, r);
        }
        self.spool.release(msg_id);
    }

    /// After a host failed mid-transaction: recipients it refused for good
    /// are settled (bounced); the others are returned, to try on the next
    /// host.
    pub(super) fn settle_failed_only(
        &self,
        cur: &Current,
        outcomes: &[RcptOutcome],
        remote: &str,
    ) -> Vec<u32> {
        let index: Vec<u32> = cur.rcpt_indices().collect();
        let mut failed = Vec::new();
        let mut keep = Vec::new();
        for o in outcomes {
            let Some(&rcpt) = index.get(o.index) else {
                continue;
            };
            match o.kind {
                OutcomeKind::Failed => failed.push(Failure {
                    rcpt,
                    reply: o.reply.clone(),
                }),
                // No transaction completed, so nothing was delivered.
                OutcomeKind::Deferred | OutcomeKind::Delivered => keep.push(rcpt),
            }
        }
        if !failed.is_empty() {
            self.bounce(cur.job.msg_id, failed, Some(remote));
        }
        keep
    }

    /// Bounces every recipient of a loaded message and ends its hold.
    pub(super) fn fail_current(&self, cur: &Current, reply: &ServerReply, remote: Option<&str>) {
        self.fail_job(cur.job.clone(), reply, remote);
        self.spool.release(cur.job.msg_id);
    }

    /// Bounces every recipient of a job with `reply`.
    pub(super) fn fail_job(&self, job: Job, reply: &ServerReply, remote: Option<&str>) {
        let failed = job
            .rcpts
            .iter()
            .map(|&rcpt| Failure {
                rcpt,
                reply: reply.clone(),
            })
            .collect();
        self.bounce(job.msg_id, failed, remote);
    }

    /// Defers a job after a temporary failure, or bounces it when it is
    /// older than `max_age`.
    pub(super) fn defer(&self, key: &QueueKey, job: Job, reply: &ServerReply) {
        let now = now_ms();
        let attempts = job.attempts.saturating_add(1);
        match self
            .retry
            .decide(attempts, job.received_ms, now, self.random())
        {
            RetryDecision::RetryAt(at) => {
                tracing::info!(msg_id = job.msg_id, destination = %key.destination, attempts,
                    retry_in_s = at.saturating_sub(now) / 1000,
                    reason = %String::from_utf8_lossy(&reply.text), "deferred");
                let state = RcptState::Deferred {
                    until_ms: at,
                    attempts,
                };
                self.finish(job.msg_id, state, job.rcpts.clone(), reply.text.clone());
                self.sched
                    .borrow_mut()
                    .defer(key.clone(), Job { attempts, ..job }, at);
            }
            RetryDecision::Expire => {
                let why = format!(
                    "delivery time expired after {}; last error: {}",
                    crate::config::duration::format(self.config.delivery.max_age.duration()),
                    String::from_utf8_lossy(&reply.text)
                );
                self.fail_job(job, &ServerReply::local(554, (5, 4, 7), &why), None);
            }
        }
    }

    /// The destination cannot be reached now: defer `job` and everything
    /// ready for the destination, so that each is not tried in turn.
    pub(super) fn defer_destination(&self, key: &QueueKey, job: Job, reply: &ServerReply) {
        self.defer(key, job, reply);
        while let Some(job) = self.take_job(key, 0) {
            self.defer(key, job, reply);
        }
    }

    /// Writes a notice to the sender for `failed` (unless the sender or the
    /// recipients' NOTIFY forbid it), then records them as failed.
    pub(super) fn bounce(&self, msg_id: u64, failed: Vec<Failure>, remote: Option<&str>) {
        let Some(ob) = self.me.upgrade() else {
            return;
        };
        for f in &failed {
            tracing::info!(msg_id, remote, rcpt = f.rcpt,
                reason = %String::from_utf8_lossy(&f.reply.text), "bounced");
        }
        self.spool.hold(msg_id);
        self.running.set(self.running.get() + 1);
        let remote = remote.map(str::to_owned);
        glommio::spawn_local(async move {
            if let Err(e) = super::bounce::send(&ob, msg_id, &failed, remote.as_deref()).await {
                tracing::error!(msg_id, error = %e, "could not queue a bounce notice");
            }
            let diagnostic = failed
                .first()
                .map(|f| f.reply.text.clone())
                .unwrap_or_default();
            let rcpts = failed.into_iter().map(|f| f.rcpt).collect();
            ob.finish(msg_id, RcptState::Failed, rcpts, diagnostic);
            ob.spool.release(msg_id);
            ob.running.set(ob.running.get() - 1);
        })
        .detach();
    }
}
