//! The shard's status writer: outcomes of deliveries become status records
//! in the spool, many behind one fdatasync.
//!
//! Connections hand it outcomes and go on with their next message; a
//! recipient whose outcome is lost in a crash before its record is durable
//! is simply delivered again after restart (the only duplicate an MTA may
//! make). Each message is held against compaction from hand-over until its
//! record is in the log.
//! Must never: let a connection wait for a status record's sync.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use spool_format::RcptState;

use super::signal::Signal;
use crate::spool::ShardSpool;

/// Status records appended behind one wait, at most.
const BATCH: usize = 1024;

struct Update {
    msg_id: u64,
    state: RcptState,
    rcpts: Vec<u32>,
    diagnostic: Vec<u8>,
}

pub struct StatusWriter {
    spool: ShardSpool,
    queue: RefCell<VecDeque<Update>>,
    signal: Signal,
    /// Updates handed over and not yet applied.
    outstanding: std::cell::Cell<usize>,
}

impl StatusWriter {
    pub fn start(spool: ShardSpool) -> Rc<StatusWriter> {
        let w = Rc::new(StatusWriter {
            spool,
            queue: RefCell::new(VecDeque::new()),
            signal: Signal::default(),
            outstanding: std::cell::Cell::new(0),
        });
        glommio::spawn_local(run(w.clone())).detach();
        w
    }

    /// Queues a status record for some recipients of `msg_id`.
    pub fn push(&self, msg_id: u64, state: RcptState, rcpts: Vec<u32>, diagnostic: Vec<u8>) {
        if rcpts.is_empty() {
            return;
        }
        self.spool.hold(msg_id);
        self.outstanding.set(self.outstanding.get() + 1);
        self.queue.borrow_mut().push_back(Update {
            msg_id,
            state,
            rcpts,
            diagnostic,
        });
        self.signal.notify();
    }

    /// Updates not yet durable and applied (shutdown waits for zero).
    pub fn outstanding(&self) -> usize {
        self.outstanding.get()
    }
}

async fn run(w: Rc<StatusWriter>) {
    let mut batch: Vec<(Update, bool)> = Vec::with_capacity(BATCH);
    loop {
        let notified = w.signal.notified();
        {
            let mut q = w.queue.borrow_mut();
            let n = q.len().min(BATCH);
            batch.extend(q.drain(..n).map(|u| (u, false)));
        }
        if batch.is_empty() {
            notified.await;
            continue;
        }
        let mut last = None;
        for (u, appended) in &mut batch {
            match w
                .spool
                .append_status(u.msg_id, u.state, &u.rcpts, &u.diagnostic)
            {
                Ok(t) => {
                    *appended = true;
                    last = Some(t);
                }
                Err(e) => {
                    tracing::error!(id = %w.spool.queue_id(u.msg_id), error = %e,
                        "could not record a delivery status; it will be retried after restart");
                }
            }
        }
        let durable = match last {
            Some(t) => w.spool.wait(t).await,
            None => false,
        };
        for (u, appended) in batch.drain(..) {
            if appended {
                if let Err(e) = w.spool.status_durable(u.msg_id, u.state, &u.rcpts, durable) {
                    tracing::error!(id = %w.spool.queue_id(u.msg_id), error = %e,
                        "delivery status not durable");
                }
            }
            w.spool.release(u.msg_id);
            w.outstanding.set(w.outstanding.get() - 1);
        }
    }
}
