//! The vendored glommio executor under traffic between executors (see
//! `vendor/README.md`): its preemption timers stay armed across reactor
//! turns, so the latency ring may ask for preemption before the first task
//! of a turn runs. An executor that took that for "nothing to run" parked
//! with tasks still runnable, and executors waiting on each other hung.

use std::time::Duration;

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::channels::sharding::{Handler, HandlerResult, Sharded};
use glommio::{LocalExecutorBuilder, Placement};

const EXECUTORS: usize = 8;
const ROUNDS: usize = 20;

#[derive(Clone)]
struct Check;

impl Handler<usize> for Check {
    fn handle(&self, msg: usize, _src: usize, cur: usize) -> HandlerResult {
        assert_eq!(msg % EXECUTORS, cur, "message {msg} reached executor {cur}");
        Box::pin(async {})
    }
}

fn shard_of(msg: &usize, shards: usize) -> usize {
    msg % shards
}

/// Every executor sends messages to every other one through a full mesh
/// and then closes its side; returns once all have finished.
fn exchange() {
    let mesh = MeshBuilder::full(EXECUTORS, 64);
    let executors: Vec<_> = (0..EXECUTORS)
        .map(|_| {
            let mesh = mesh.clone();
            LocalExecutorBuilder::new(Placement::Unbound)
                .io_memory(64 << 10)
                // A short time slice: the latency ring's timer fires often,
                // also between a poll for I/O and the first task.
                .preempt_timer(Duration::from_millis(1))
                .spawn(move || async move {
                    let mut sharded = Sharded::new(mesh, shard_of, Check).await.unwrap();
                    for i in 0..EXECUTORS * 16 {
                        sharded.send(i).await.unwrap();
                    }
                    sharded.close().await;
                })
                .expect("an executor starts")
        })
        .collect();
    for e in executors {
        e.join().expect("an executor finishes");
    }
}

#[test]
fn executors_exchanging_messages_never_park_with_work_left() {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for _ in 0..ROUNDS {
            exchange();
        }
        let _ = done.send(());
    });
    finished
        .recv_timeout(Duration::from_secs(60))
        .expect("the exchange between executors hung: one parked with runnable tasks");
}
