//! The spool runtime on a seeded faulty disk (`petrel::spool::faulty`):
//! thousands of schedules of concurrent appends, commits, delivery
//! outcomes and compactions, with fdatasync `EIO`, `ENOSPC` when rolling to
//! a new segment, short and failed `pwritev`, and power cuts that lose
//! every unsynced page (or let some through, torn). After every cut the
//! spool is recovered from what is durable and checked against a model:
//!
//! - every message whose commit returned success (the 250) is queued with
//!   the same bytes, unless outcomes acknowledged for it finished it;
//! - a message whose commit did not return success may come back only
//!   whole: its envelope and every chunk it names passed their checksums,
//!   and its bytes are exactly the ones written (then it is queued as if
//!   acknowledged; the client, told nothing, may also send it again);
//! - nothing else is ever queued, and no recipient whose outcome was
//!   acknowledged is pending again;
//! - recovery never fails or panics, whatever the cut left.
//!
//! A failing schedule prints its seed; `PETREL_SIM_SEED=n` replays one
//! (`PETREL_SIM_SEED=a..b` a range).

#[path = "support/shard.rs"]
mod shard_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::rc::Rc;

use petrel::spool::faulty::{FaultCounts, Faults, FaultyDisk};
use petrel::spool::recovery::open_shard_on;
use petrel::spool::{ShardSpool, SpoolError, SpoolOptions};
use spool_format::envelope::{Envelope, Recipient};
use spool_format::RcptState;

/// Schedules per run: enough to meet every fault many times over.
const SCHEDULES: u64 = 2000;
/// Small segments, so that schedules roll (and reclaim) often.
const SEG: u64 = 64 << 10;
const NOW_MS: u64 = 1_700_000_000_000;

/// Prints the seed of a schedule that panics.
struct SeedGuard(u64);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "spool simulation failed: replay with PETREL_SIM_SEED={}",
                self.0
            );
        }
    }
}

/// What the model knows of one message.
#[derive(Debug, Clone)]
struct Msg {
    body: Vec<u8>,
    rcpts: u32,
    /// Recipients whose final outcome was acknowledged.
    finished: BTreeSet<u32>,
    /// Recipients whose final outcome was written but not acknowledged.
    maybe: BTreeSet<u32>,
}

#[derive(Default)]
struct Model {
    acked: BTreeMap<u64, Msg>,
    unacked: BTreeMap<u64, Msg>,
}

enum Outcome {
    Put {
        id: u64,
        msg: Msg,
        acked: bool,
        /// The spool had refused appends (a failed sync) before the commit.
        refused_before: bool,
    },
    Status {
        id: u64,
        rcpts: Vec<u32>,
        finishing: bool,
        acked: bool,
    },
    Other,
}

fn opts(dir: &Path) -> SpoolOptions {
    SpoolOptions {
        dir: dir.to_path_buf(),
        shard: 0,
        segment_size: SEG,
    }
}

fn faults_for(disk: &FaultyDisk) -> Faults {
    match disk.below(4) {
        0 => Faults::default(),
        1 => Faults {
            sync_eio: 10,
            allocate_enospc: 50,
            short_write: 100,
            write_eio: 20,
        },
        _ => Faults {
            sync_eio: 40,
            allocate_enospc: 250,
            short_write: 300,
            write_eio: 80,
        },
    }
}

async fn put(spool: ShardSpool, body: Vec<u8>, rcpts: u32, piece: usize) -> Outcome {
    let _pin = spool.pin_for_write();
    let id = spool.allocate_msg_id();
    let mut env = Envelope {
        msg_id: id,
        reverse_path: b"s@x.test".to_vec(),
        body_len: body.len() as u64,
        recipients: (0..rcpts)
            .map(|r| Recipient::new(format!("r{r}@y.test").as_bytes(), 0, b""))
            .collect(),
        ..Default::default()
    };
    let msg = Msg {
        body,
        rcpts,
        finished: BTreeSet::new(),
        maybe: BTreeSet::new(),
    };
    for p in msg.body.chunks(piece) {
        match spool.append_chunk(p) {
            Ok(c) => env.body.push(c),
            // Not committed: no envelope names these chunks.
            Err(_) => return Outcome::Other,
        }
    }
    let refused_before = spool.has_failed();
    let acked = spool.commit_message(&mut env).await.is_ok();
    Outcome::Put {
        id,
        msg,
        acked,
        refused_before,
    }
}

async fn status(spool: ShardSpool, id: u64, state: RcptState, rcpts: Vec<u32>) -> Outcome {
    let acked = spool
        .record_status(id, state, &rcpts, b"250 2.0.0 ok")
        .await
        .is_ok();
    Outcome::Status {
        id,
        rcpts,
        finishing: state.is_finished(),
        acked,
    }
}

/// Starts one step's concurrent work: puts, outcomes for acknowledged
/// messages, now and then a compaction.
fn start_step(
    noise: &[u8],
    disk: &FaultyDisk,
    spool: &ShardSpool,
    model: &Model,
) -> Vec<glommio::task::JoinHandle<Outcome>> {
    let mut tasks = Vec::new();
    for _ in 0..1 + disk.below(4) {
        let len = match disk.below(8) {
            0 => 0,
            1 => 20_000 + disk.below(20_000) as usize,
            _ => 1 + disk.below(6000) as usize,
        };
        // A slice of the noise at a random place: distinct bodies at the
        // cost of a copy (a debug build makes per-byte loops slow).
        let at = disk.below((noise.len() - len) as u64) as usize;
        let body = noise[at..at + len].to_vec();
        let piece = [700, 4096, 9000, 16 << 10][disk.below(4) as usize];
        let rcpts = 1 + disk.below(4) as u32;
        let f = put(spool.clone(), body, rcpts, piece);
        tasks.push(glommio::spawn_local(f).detach());
    }
    let open: Vec<(&u64, &Msg)> = model
        .acked
        .iter()
        .filter(|(_, m)| m.finished.len() + m.maybe.len() < m.rcpts as usize)
        .collect();
    for _ in 0..disk.below(3) {
        if open.is_empty() {
            break;
        }
        let (&id, m) = open[disk.below(open.len() as u64) as usize];
        let rcpts: Vec<u32> = (0..m.rcpts).filter(|_| disk.below(2) == 0).collect();
        let state = match disk.below(3) {
            0 => RcptState::Failed,
            1 => RcptState::Deferred {
                until_ms: NOW_MS + 60_000,
                attempts: 1,
            },
            _ => RcptState::Delivered,
        };
        let f = status(spool.clone(), id, state, rcpts);
        tasks.push(glommio::spawn_local(f).detach());
    }
    if disk.below(10) == 0 {
        let s = spool.clone();
        let f = async move {
            let _ = s.compact().await;
            Outcome::Other
        };
        tasks.push(glommio::spawn_local(f).detach());
    }
    tasks
}

fn learn(model: &mut Model, outcome: Outcome) {
    match outcome {
        Outcome::Put {
            id,
            msg,
            acked,
            refused_before,
        } => {
            assert!(
                !(refused_before && acked),
                "acknowledged after a failed sync"
            );
            let into = if acked {
                &mut model.acked
            } else {
                &mut model.unacked
            };
            into.insert(id, msg);
        }
        Outcome::Status {
            id,
            rcpts,
            finishing,
            acked,
        } => {
            if let (true, Some(m)) = (finishing, model.acked.get_mut(&id)) {
                let into = if acked { &mut m.finished } else { &mut m.maybe };
                into.extend(rcpts);
            }
        }
        Outcome::Other => {}
    }
}

/// Checks one recovered message against what the model allows, and
/// returns what it is from now on.
fn check_queued(spool: &ShardSpool, id: u64, known: Option<Msg>, acked: bool) -> Msg {
    let Some(mut m) = known else {
        panic!("message {id} is queued but was never committed");
    };
    let mut body = Vec::new();
    spool.read_body(id, &mut body).expect("read body");
    assert!(body == m.body, "message {id}: recovered bytes differ");
    let pending: BTreeSet<u32> = spool
        .pending_recipients(id)
        .expect("queued")
        .into_iter()
        .collect();
    for r in 0..m.rcpts {
        if m.finished.contains(&r) {
            assert!(
                !pending.contains(&r),
                "message {id}: acknowledged outcome of {r} lost"
            );
        } else if !m.maybe.contains(&r) {
            assert!(pending.contains(&r), "message {id}: recipient {r} dropped");
        }
    }
    assert!(acked || m.finished.is_empty());
    m.finished = (0..m.rcpts).filter(|r| !pending.contains(r)).collect();
    m.maybe.clear();
    m
}

/// After recovery: checks the queue against the model and makes the model
/// what is durable now.
fn verify(spool: &ShardSpool, model: &mut Model) {
    let queued: BTreeSet<u64> = spool.queued_ids().into_iter().collect();
    let mut next = Model::default();
    for &id in &queued {
        let (known, acked) = match model.acked.remove(&id) {
            Some(m) => (Some(m), true),
            None => (model.unacked.remove(&id), false),
        };
        next.acked.insert(id, check_queued(spool, id, known, acked));
    }
    for (id, m) in &model.acked {
        let done = (0..m.rcpts).all(|r| m.finished.contains(&r) || m.maybe.contains(&r));
        assert!(done, "acknowledged message {id} lost");
    }
    *model = next;
}

async fn power_cut(
    disk: &Rc<FaultyDisk>,
    dir: &Path,
    spool: ShardSpool,
    lock: std::fs::File,
    model: &mut Model,
) -> (ShardSpool, std::fs::File) {
    spool.shutdown().await;
    drop(spool);
    drop(lock);
    let tear = disk.below(2) == 0;
    disk.power_cut(dir, tear).expect("power cut");
    // Recovery on a sound disk: a fault while it starts a segment is a
    // clean start-up error, not what is checked here.
    disk.set_faults(Faults::default());
    let (spool, _report, lock) =
        open_shard_on(opts(dir), NOW_MS, disk.clone()).expect("recovery never fails");
    verify(&spool, model);
    disk.set_faults(faults_for(disk));
    (spool, lock)
}

async fn schedule(seed: u64, root: &Path, noise: &[u8]) -> FaultCounts {
    let _guard = SeedGuard(seed);
    let dir = root.join(format!("s{seed}"));
    let disk = Rc::new(FaultyDisk::new(seed, Faults::default()));
    let (mut spool, _, mut lock) = open_shard_on(opts(&dir), NOW_MS, disk.clone()).expect("open");
    disk.set_faults(faults_for(&disk));
    let mut model = Model::default();
    for _ in 0..8 + disk.below(24) {
        let tasks = start_step(noise, &disk, &spool, &model);
        // A cut may come while the step's commits wait for their sync.
        let cut_now = disk.below(8) == 0;
        if cut_now {
            for _ in 0..disk.below(4) {
                futures_lite::future::yield_now().await;
            }
            spool.close();
        }
        for t in tasks {
            if let Some(outcome) = t.await {
                learn(&mut model, outcome);
            }
        }
        // A failed sync is final: the spool takes nothing until restarted.
        if spool.has_failed() {
            assert!(matches!(
                spool.append_chunk(b"x"),
                Err(SpoolError::SyncFailed)
            ));
        }
        if cut_now || spool.has_failed() {
            (spool, lock) = power_cut(&disk, &dir, spool, lock, &mut model).await;
        }
    }
    let _ = power_cut(&disk, &dir, spool, lock, &mut model).await;
    std::fs::remove_dir_all(&dir).expect("clean up");
    disk.counts()
}

/// Bytes to cut message bodies from (xorshift64*), longer than any body.
fn noise() -> Vec<u8> {
    let disk = FaultyDisk::new(0x0b0d1e5, Faults::default());
    (0..96 << 10)
        .step_by(8)
        .flat_map(|_| disk.next_u64().to_le_bytes())
        .collect()
}

/// A RAM file system when there is one: the faulty disk does the syncing.
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(t) = tempfile::tempdir_in(shm) {
            return t;
        }
    }
    tempfile::tempdir().expect("tmp")
}

#[test]
fn acknowledged_mail_and_outcomes_survive_every_fault_schedule() {
    let seeds: Vec<u64> = match std::env::var("PETREL_SIM_SEED") {
        Ok(s) => match s.split_once("..") {
            Some((a, b)) => (a.parse().expect("a seed")..b.parse().expect("a seed")).collect(),
            None => vec![s.parse().expect("PETREL_SIM_SEED is a number")],
        },
        Err(_) => (1..=SCHEDULES).collect(),
    };
    let tmp = scratch();
    let root = tmp.path().to_path_buf();
    let all = shard_support::on_shard(move || async move {
        let noise = noise();
        let mut all = Vec::new();
        for seed in seeds {
            all.push(schedule(seed, &root, &noise).await);
        }
        all
    });
    // Every kind of fault was met (when running every schedule).
    if all.len() as u64 == SCHEDULES {
        let sum = |f: fn(&FaultCounts) -> u64| all.iter().map(f).sum::<u64>();
        assert!(sum(|c| c.failed_syncs) > 0);
        assert!(sum(|c| c.failed_allocations) > 0);
        assert!(sum(|c| c.short_writes) > 0);
        assert!(sum(|c| c.failed_writes) > 0);
        assert!(sum(|c| c.power_cuts) >= SCHEDULES);
    }
}
