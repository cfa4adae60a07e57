//! A shard's answers to an operator's queue requests (`petrel queue`,
//! through the admin endpoint and the control channel): the list of its
//! queues, one message, pauses, resumes, flushes, bounces and deletes.
//!
//! Owns: turning a request into scheduler operations and verdicts, and
//! the log line of each recipient bounced or deleted. It runs between the
//! shard's turns, never on the mail path.
//! Must never: take a job from a connection (only waiting jobs are
//! touched), or settle a job any other way than every job is settled
//! (`outcome`): a bounce goes through the notice, a delete is a failure
//! recorded with no notice.

use spool_format::RcptState;

use super::budget;
use super::report::{Outcome, Via};
use super::Outbound;
use crate::config::Config;
use crate::queue::api::{
    state_of, MessageView, QueueAnswer, QueueRequest, QueueRow, RecipientView, Scope, Target,
};
use crate::schedule::{EgressId, Job, QueueKey, Selection};
use crate::smtp::client::ServerReply;
use crate::spool::ShardSpool;

/// Last replies kept per queue, at most.
pub(super) const MAX_LAST_REPLIES: usize = 4096;

/// What a recipient bounced by the operator is told.
const BOUNCED: &str = "bounced by the operator (petrel queue bounce)";
/// What the spool records for a recipient deleted by the operator.
const DELETED: &str = "deleted by the operator (petrel queue delete), no notice sent";

impl Outbound {
    /// Answers one request.
    pub fn answer(&self, request: &QueueRequest) -> QueueAnswer {
        match request {
            QueueRequest::List => QueueAnswer::List(self.list()),
            QueueRequest::Show(msg_id) => {
                QueueAnswer::Show(show(&self.spool, &self.config(), self.shard, *msg_id))
            }
            QueueRequest::Pauses(pauses) => {
                *self.pauses.borrow_mut() = pauses.clone();
                self.reapply_pauses();
                QueueAnswer::Count(pauses.len())
            }
            QueueRequest::Resume(scope) => QueueAnswer::Count(self.resume(scope)),
            QueueRequest::Flush(scope) => {
                let n = self.sched.borrow_mut().flush(&self.selection(scope));
                self.work.notify();
                QueueAnswer::Count(n)
            }
            QueueRequest::Bounce(target) => QueueAnswer::Count(self.bounce_waiting(target)),
            QueueRequest::Delete(target) => QueueAnswer::Count(self.delete_waiting(target)),
        }
    }

    /// The queues `scope` names, with its source and pool resolved (an
    /// unknown name selects no source).
    /// Holds the queues the operator's pauses name, in the numbering of
    /// the sources in force.
    pub(super) fn reapply_pauses(&self) {
        let pauses = self.pauses.borrow().clone();
        let holds = pauses.iter().map(|p| self.selection(p)).collect();
        self.sched.borrow_mut().set_holds(holds);
        self.work.notify();
    }

    fn selection(&self, scope: &Scope) -> Selection {
        let egress = self.egress();
        let mut sources: Option<Vec<EgressId>> = None;
        if let Some(name) = &scope.source {
            sources = Some(egress.source_id(name).into_iter().collect());
        }
        if let Some(name) = &scope.pool {
            let members = egress.pool_sources(name).unwrap_or_default();
            sources = Some(match sources {
                Some(s) => s.into_iter().filter(|id| members.contains(id)).collect(),
                None => members.to_vec(),
            });
        }
        Selection {
            destination: scope.destination.as_deref().map(Box::from),
            sources,
        }
    }

    /// Lifts the suspensions of `scope`'s queues here and the backoff
    /// suspensions of its sources × destination everywhere; how many.
    fn resume(&self, scope: &Scope) -> usize {
        let sel = self.selection(scope);
        // An MX rollup's budget (`mx:PATTERN`) is no queue's name: which
        // destinations it holds is known only from their MX hosts, so
        // every queue of its sources may try again (one still held finds
        // out at its next connection, quietly).
        let rollup = scope
            .destination
            .as_deref()
            .is_some_and(|d| d.starts_with("mx:"));
        let queues = match rollup {
            true => Selection {
                destination: None,
                sources: sel.sources.clone(),
            },
            false => sel.clone(),
        };
        let mut n = self.sched.borrow_mut().lift_suspensions(&queues);
        if let Some(destination) = &scope.destination {
            let now = self.clock.monotonic_ms();
            let picked = |id: EgressId| sel.sources.as_ref().is_none_or(|s| s.contains(&id));
            let egress = self.egress();
            for id in 0..egress.source_count() {
                let Ok(id) = EgressId::try_from(id) else {
                    break;
                };
                let name = &egress.source(id).name;
                if picked(id) && budget::lift_suspension(name, destination, now) {
                    n += 1;
                }
            }
            egress.unavoid(destination, picked);
        }
        self.work.notify();
        n
    }

    /// The waiting jobs `target` names, taken out of the scheduler.
    fn take_waiting(&self, target: &Target) -> Vec<(QueueKey, Job)> {
        let mut sched = self.sched.borrow_mut();
        match target {
            Target::Queues(scope) => {
                let sel = self.selection(scope);
                sched.take_jobs(|key, _| sel.covers(key))
            }
            Target::Message(id) => sched.take_jobs(|_, job| job.msg_id == *id),
        }
    }

    /// Bounces every waiting recipient `target` names, with a notice to
    /// each sender; how many recipients.
    fn bounce_waiting(&self, target: &Target) -> usize {
        let reply = ServerReply::local(554, (5, 0, 0), BOUNCED);
        let mut n = 0;
        for (key, job) in self.take_waiting(target) {
            n += job.rcpts.len();
            self.fail_job(&job, &reply, &Via::source(key.egress));
        }
        n
    }

    /// Records every waiting recipient `target` names as failed, with no
    /// notice, and logs each; how many recipients.
    fn delete_waiting(&self, target: &Target) -> usize {
        let reply = ServerReply::local(554, (5, 0, 0), DELETED);
        let mut n = 0;
        for (key, job) in self.take_waiting(target) {
            n += job.rcpts.len();
            let rcpts = job.rcpts.iter().map(|&i| (i, &reply));
            self.report(
                job.msg_id,
                Outcome::Deleted,
                rcpts,
                &Via::source(key.egress),
            );
            self.finish(job.msg_id, RcptState::Failed, job.rcpts, reply.text.clone());
        }
        n
    }

    /// Remembers the reply that last deferred mail of `key` (bounded: a
    /// queue not yet known is skipped when the table is full).
    pub(super) fn note_reply(&self, key: &QueueKey, reply: &ServerReply) {
        let mut replies = self.last_replies.borrow_mut();
        let full = replies.len() >= MAX_LAST_REPLIES;
        // One line, as the log has it: `petrel queue` prints it in a table.
        let text = || reply.logged().to_string().into_boxed_str();
        match replies.get_mut(key) {
            Some(kept) if kept.as_bytes() == reply.text => {}
            Some(kept) => *kept = text(),
            None if full => {}
            None => {
                replies.insert(key.clone(), text());
            }
        }
    }

    /// This shard's queues.
    fn list(&self) -> Vec<QueueRow> {
        let (now, wall) = (self.clock.monotonic_ms(), self.clock.wall_ms());
        let views = self.sched.borrow().snapshot();
        let mut replies = self.last_replies.borrow_mut();
        // Queues with nothing waiting forget their last reply.
        replies.retain(|k, _| views.iter().any(|v| v.key == *k));
        views
            .into_iter()
            .map(|v| {
                let suspended_s = v.suspended_until.saturating_sub(now).div_ceil(1000);
                let oldest = v.oldest_received_ms.unwrap_or(wall);
                QueueRow {
                    destination: v.key.destination.to_string(),
                    source: self.egress().source(v.key.egress).name.clone(),
                    messages: v.messages,
                    ready: v.ready,
                    deferred: v.deferred,
                    connections: v.connections,
                    oldest_s: wall.saturating_sub(oldest) / 1000,
                    state: state_of(v.paused, suspended_s > 0, v.ready, v.connections).to_owned(),
                    suspended_s,
                    last_reply: replies.get(&v.key).map(|t| t.to_string()),
                }
            })
            .collect()
    }
}

/// The answer of a shard whose delivery is paused in the config: its
/// spool can still show a message; there are no queues to act on.
pub fn answer_from_spool(
    spool: &ShardSpool,
    config: &Config,
    shard: usize,
    request: &QueueRequest,
) -> QueueAnswer {
    match request {
        QueueRequest::List => QueueAnswer::List(Vec::new()),
        QueueRequest::Show(msg_id) => QueueAnswer::Show(show(spool, config, shard, *msg_id)),
        _ => QueueAnswer::Count(0),
    }
}

/// Message `msg_id` of the spool as an operator sees it.
fn show(spool: &ShardSpool, config: &Config, shard: usize, msg_id: u64) -> Option<MessageView> {
    spool.with_state(|s| {
        let m = s.index.messages.get(&msg_id)?;
        let env = s.envelope(m.segment_id(), m.offset)?;
        let recipients = env
            .recipients
            .iter()
            .enumerate()
            .map(|(i, r)| RecipientView {
                address: String::from_utf8_lossy(&r.address).into_owned(),
                state: if m.pending.contains(i as u32) {
                    "pending"
                } else {
                    "done"
                }
                .to_owned(),
            })
            .collect();
        Some(MessageView {
            id: crate::spool::DisplayId::new(shard, msg_id).to_string(),
            sender: String::from_utf8_lossy(&env.reverse_path).into_owned(),
            size: env.body_len.to_native(),
            received_ms: env.received_ms.to_native(),
            pool: pool_name(config, env.pool.to_native()),
            attempts: m.attempts,
            next_attempt_ms: m.next_attempt_ms,
            recipients,
        })
    })
}

/// The name of the pool the spool records as `id` (0: the default pool).
fn pool_name(config: &Config, id: u16) -> String {
    let default = || match config.pool_selection.default.as_str() {
        "" => "default".to_owned(),
        name => name.to_owned(),
    };
    if id == 0 {
        return default();
    }
    config
        .pool
        .iter()
        .find(|p| spool_format::envelope::pool_id(&p.name) == id)
        .map_or_else(default, |p| p.name.clone())
}
