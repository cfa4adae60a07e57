//! The control channel from the daemon's own threads (the admin endpoint)
//! to each shard: requests go to a shard's inbox, and each carries the
//! sender its answer goes back on.
//!
//! It owns the channel and the rule that a shard never waits for it: a
//! shard looks at its inbox between turns (`serve`, a small task polling
//! every `POLL`) and answers at once; only the asking thread waits, and
//! only until its deadline.
//! Must never: block a shard, or carry message bodies.
//!
//! To add a kind of request (a reload, say): add a variant to
//! [`Control`] carrying its own reply sender, an `ask_*` method on
//! [`Controls`] built on `ask`, and its arm in `serve`.

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::outbound::Outbound;
use crate::queue::api::{QueueAnswer, QueueRequest};
use crate::spool::ShardSpool;

/// How often a shard looks at its inbox.
pub const POLL: Duration = Duration::from_millis(50);

/// One request to a shard.
#[derive(Debug)]
pub enum Control {
    /// A queue operation (`petrel queue …`).
    Queue {
        request: QueueRequest,
        reply: Sender<QueueAnswer>,
    },
}

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("shard {0} does not exist")]
    NoShard(usize),
    #[error("shard {shard} did not answer within {seconds} s")]
    Timeout { shard: usize, seconds: u64 },
    #[error("shard {0} has stopped")]
    Stopped(usize),
}

/// The daemon's side: one inbox per shard. Cheap to clone, and `Send`.
#[derive(Clone)]
pub struct Controls {
    inboxes: Vec<Sender<Control>>,
}

/// A shard's side: its inbox.
pub struct ShardControl {
    inbox: Receiver<Control>,
}

/// The channels of `shards` shards.
pub fn channels(shards: usize) -> (Controls, Vec<ShardControl>) {
    let (inboxes, receivers) = (0..shards)
        .map(|_| mpsc::channel())
        .unzip::<_, _, Vec<_>, Vec<_>>();
    let shard_side = receivers
        .into_iter()
        .map(|inbox| ShardControl { inbox })
        .collect();
    (Controls { inboxes }, shard_side)
}

impl Controls {
    pub fn shards(&self) -> usize {
        self.inboxes.len()
    }

    /// Sends `request` to each of `shards` and waits for every answer,
    /// until `timeout` in all; the answers in the order of `shards`.
    pub fn ask_queues(
        &self,
        shards: &[usize],
        request: &QueueRequest,
        timeout: Duration,
    ) -> Result<Vec<QueueAnswer>, ControlError> {
        self.ask(shards, timeout, |reply| Control::Queue {
            request: request.clone(),
            reply,
        })
    }

    /// Sends `request` to every shard without waiting for the answers
    /// (at start-up, before the shards run).
    pub fn post_queues(&self, request: &QueueRequest) {
        for inbox in &self.inboxes {
            let (reply, _) = mpsc::channel();
            let _ = inbox.send(Control::Queue {
                request: request.clone(),
                reply,
            });
        }
    }

    /// Sends what `make` builds around a reply sender to each of
    /// `shards` (all first, so they work at once), then gathers the
    /// answers.
    fn ask<T>(
        &self,
        shards: &[usize],
        timeout: Duration,
        make: impl Fn(Sender<T>) -> Control,
    ) -> Result<Vec<T>, ControlError> {
        let deadline = Instant::now() + timeout;
        let mut pending = Vec::with_capacity(shards.len());
        for &shard in shards {
            let inbox = self
                .inboxes
                .get(shard)
                .ok_or(ControlError::NoShard(shard))?;
            let (reply, answer) = mpsc::channel();
            inbox
                .send(make(reply))
                .map_err(|_| ControlError::Stopped(shard))?;
            pending.push((shard, answer));
        }
        let mut answers = Vec::with_capacity(shards.len());
        for (shard, answer) in pending {
            let wait = deadline.saturating_duration_since(Instant::now());
            match answer.recv_timeout(wait) {
                Ok(a) => answers.push(a),
                Err(RecvTimeoutError::Timeout) => {
                    return Err(ControlError::Timeout {
                        shard,
                        seconds: timeout.as_secs(),
                    })
                }
                Err(RecvTimeoutError::Disconnected) => return Err(ControlError::Stopped(shard)),
            }
        }
        Ok(answers)
    }
}

impl ShardControl {
    /// The next request waiting, without waiting for one.
    pub fn try_next(&self) -> Option<Control> {
        self.inbox.try_recv().ok()
    }
}

/// What a shard needs to answer its inbox. `outbound` is `None` when
/// delivery is paused in the config: queue requests are then answered
/// from the spool alone.
pub struct Answerer {
    pub shard: usize,
    pub outbound: Option<Rc<Outbound>>,
    pub spool: ShardSpool,
    pub config: Arc<Config>,
}

impl Answerer {
    /// Answers every request waiting in `control`'s inbox, now.
    pub fn answer_waiting(&self, control: &ShardControl) {
        while let Some(c) = control.try_next() {
            match c {
                Control::Queue { request, reply } => {
                    let answer = match &self.outbound {
                        Some(ob) => ob.answer(&request),
                        None => crate::outbound::operator::answer_from_spool(
                            &self.spool,
                            &self.config,
                            self.shard,
                            &request,
                        ),
                    };
                    // The asker may have given up: nothing to do then.
                    let _ = reply.send(answer);
                }
            }
        }
    }

    /// A shard's control task: answers its inbox every `POLL` until the
    /// stop flag is set.
    pub async fn serve(self, control: ShardControl, stop: Arc<AtomicBool>) {
        while !stop.load(Ordering::Relaxed) {
            self.answer_waiting(&control);
            glommio::timer::sleep(POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shard_asked_answers_in_order_and_a_silent_one_times_out() {
        let (controls, shards) = channels(2);
        let answerers: Vec<_> = shards
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                std::thread::spawn(move || {
                    // Shard 1 answers only its first request, and keeps
                    // the others' senders (silent, not stopped).
                    let mut unanswered = Vec::new();
                    while let Ok(Control::Queue { reply, .. }) = s.inbox.recv() {
                        if i == 0 || unanswered.is_empty() {
                            let _ = reply.send(QueueAnswer::Count(i));
                        }
                        unanswered.push(reply);
                    }
                })
            })
            .collect();
        let all = controls.ask_queues(&[1, 0], &QueueRequest::List, Duration::from_secs(5));
        assert_eq!(all, Ok(vec![QueueAnswer::Count(1), QueueAnswer::Count(0)]));
        let again = controls.ask_queues(&[0, 1], &QueueRequest::List, Duration::from_millis(50));
        assert_eq!(
            again,
            Err(ControlError::Timeout {
                shard: 1,
                seconds: 0
            })
        );
        assert_eq!(
            controls.ask_queues(&[2], &QueueRequest::List, Duration::from_millis(50)),
            Err(ControlError::NoShard(2))
        );
        drop(controls);
        for a in answerers {
            a.join().unwrap();
        }
    }
}
