//! Crash test: the spool runs in a child process that is killed with SIGKILL
//! at a random moment while appends, status records and compaction are in
//! flight; every append it had acknowledged must come back intact.
//!
//! The test binary runs itself as the child (`child_writer`, below). The
//! child prints one line per durable event, written whole and flushed before
//! it goes on:
//!
//! - `ACK <msg_id> <task> <counter> <len>`: `commit_message` resolved;
//! - `SEND <msg_id> <r,r,..>`: a Delivered status for those recipients is
//!   about to be appended (it may or may not be durable at the kill);
//! - `DONE <msg_id> <r,r,..>`: that status resolved, so it is durable.
//!
//! Between rounds the parent opens the spool itself and checks it against
//! what the child printed: every acknowledged message is queued with exactly
//! the recipients it should still have and its body byte for byte, every
//! finished message is gone, and nothing is damaged (SIGKILL does not lose
//! the page cache, so only torn tails are allowed). The same spool directory
//! is used for every round, so each round also recovers all earlier ones.
//!
//! A failing run prints its seed; `PETREL_CRASH_SEED=<seed>` repeats the
//! same choices (the timing of the kill still varies).

#[path = "support/shard.rs"]
mod shard_support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use petrel::spool::recovery::open_shard;
use petrel::spool::{ShardSpool, SpoolOptions};
use spool_format::envelope::{Envelope, Recipient};
use spool_format::{scan_segment, QueueIndex, RcptState, RecoveredSegment};

/// Names the spool directory; set only when the parent starts a child.
const ENV_DIR: &str = "PETREL_CRASH_DIR";
/// The child's seed: what it writes follows from it.
const ENV_CHILD_SEED: &str = "PETREL_CRASH_CHILD_SEED";
/// A file of earlier messages the child is to deliver (`<id> <r,r,..>`).
const ENV_TODO: &str = "PETREL_CRASH_TODO";
/// Overrides the parent's time-based seed.
const ENV_SEED: &str = "PETREL_CRASH_SEED";

/// Small segments so that they fill, roll and are reclaimed during a round.
const SEG: u64 = 1 << 20;
const TASKS: u64 = 32;
const ROUNDS: usize = 8;
/// The run must have acknowledged at least this many messages in all.
const MIN_ACKS: usize = 200;
/// Most rounds kill the child once it has acknowledged this many messages,
const KILL_AFTER_ACKS: std::ops::Range<u64> = 0..120;
/// and then this many milliseconds later (tying the kill to progress keeps
/// the test meaningful on a slow or loaded machine);
const KILL_AFTER_ACKS_MS: std::ops::Range<u64> = 0..250;
/// one in four this long after starting it, often before the spool is
/// open, while recovery cuts tails, reclaims and starts a segment.
const KILL_AFTER_START_MS: std::ops::Range<u64> = 5..250;
/// A child that acknowledges nothing for this long is stuck.
const STALL: Duration = Duration::from_secs(20);
/// A child left alive this long (the parent is gone) stops by itself.
const CHILD_LIFETIME: Duration = Duration::from_secs(20);

fn opts(dir: &Path) -> SpoolOptions {
    SpoolOptions {
        dir: dir.to_path_buf(),
        shard: 0,
        segment_size: SEG,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// splitmix64: a good mixing function for deriving values from seeds.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The parent's random choices (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn range(&mut self, r: std::ops::Range<u64>) -> u64 {
        r.start + self.next() % (r.end - r.start)
    }
}

/// What one message is, derived from the child's seed, the task and the
/// task's counter, so the parent can rebuild it from an `ACK` line (or from
/// the first line of a body it did not see acknowledged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    len: usize,
    rcpts: u32,
    /// Body chunk size: many chunks for some messages, one for others.
    chunk: usize,
    /// Whether the child delivers it soon after the commit.
    deliver: bool,
}

fn plan(seed: u64, task: u64, counter: u64) -> Plan {
    let h = mix(seed ^ mix((task << 40) ^ counter));
    // Mostly 100 B .. 20 KiB; one in sixteen large enough to span segments.
    let len = if h % 16 == 0 {
        40_000 + (h >> 8) % 260_000
    } else {
        100 + (h >> 8) % 20_380
    };
    Plan {
        len: len as usize,
        rcpts: 1 + ((h >> 32) % 4) as u32,
        chunk: [512, 1500, 4096, 16_384, 65_536][((h >> 36) % 5) as usize],
        deliver: (h >> 44) % 8 != 0,
    }
}

/// A message body: a first line naming its origin, then bytes that follow
/// from it.
fn body(seed: u64, task: u64, counter: u64) -> Vec<u8> {
    let len = plan(seed, task, counter).len;
    let mut b = format!("petrel-crash {seed} {task} {counter}\n").into_bytes();
    let mut x = mix(seed ^ mix((task << 40) ^ counter ^ 0xB0D1));
    while b.len() < len {
        x = mix(x);
        b.extend_from_slice(&x.to_le_bytes());
    }
    b.truncate(len);
    b
}

/// The origin named by a body's first line.
fn body_origin(b: &[u8]) -> Option<(u64, u64, u64)> {
    let line = b.split(|&c| c == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut w = line.strip_prefix("petrel-crash ")?.split(' ');
    let mut num = || w.next()?.parse::<u64>().ok();
    Some((num()?, num()?, num()?))
}

fn rcpt_list(r: &[u32]) -> String {
    r.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

fn parse_rcpts(s: &str) -> Option<Vec<u32>> {
    s.split(',').map(|r| r.parse().ok()).collect()
}

// ---------------------------------------------------------------------------
// The child.

/// Prints one event line in a single write and flushes it, so the parent
/// sees either the whole line or (killed mid-write) a partial last line.
fn emit(line: String) {
    let mut out = std::io::stdout().lock();
    let line = line + "\n";
    out.write_all(line.as_bytes()).expect("stdout");
    out.flush().expect("stdout");
}

async fn deliver(spool: &ShardSpool, id: u64, rcpts: &[u32]) {
    emit(format!("SEND {id} {}", rcpt_list(rcpts)));
    spool
        .record_status(id, RcptState::Delivered, rcpts, b"250 2.0.0 ok")
        .await
        .expect("status");
    emit(format!("DONE {id} {}", rcpt_list(rcpts)));
}

async fn writer_task(spool: ShardSpool, seed: u64, task: u64) {
    for counter in 0.. {
        let p = plan(seed, task, counter);
        let data = body(seed, task, counter);
        let mut env = Envelope {
            reverse_path: b"bounce@crash.test".to_vec(),
            received_ms: now_ms(),
            body_len: data.len() as u64,
            ..Default::default()
        };
        env.recipients = (0..p.rcpts)
            .map(|r| Recipient::new(format!("r{r}.{task}@crash.test").as_bytes(), 0, b""))
            .collect();
        let id = {
            let _pin = spool.pin_for_write();
            for piece in data.chunks(p.chunk) {
                env.body.push(spool.append_chunk(piece).expect("chunk"));
            }
            spool.commit_message(&mut env).await.expect("commit")
        };
        emit(format!("ACK {id} {task} {counter} {}", data.len()));
        if p.deliver {
            let s = spool.clone();
            let wait = mix(seed ^ id) % 8;
            glommio::spawn_local(async move {
                glommio::timer::sleep(Duration::from_millis(wait)).await;
                // More than one recipient: in two steps, the first alone.
                deliver(&s, id, &[0]).await;
                if p.rcpts > 1 {
                    let rest: Vec<u32> = (1..p.rcpts).collect();
                    deliver(&s, id, &rest).await;
                }
            })
            .detach();
        }
    }
}

/// Delivers messages of earlier rounds that the parent listed, so their old
/// segments empty out and are reclaimed (or compacted) while appends go on.
async fn old_mail_task(spool: ShardSpool, todo: Vec<(u64, Vec<u32>)>) {
    let mut tasks = Vec::new();
    for (i, (id, rcpts)) in todo.into_iter().enumerate() {
        let s = spool.clone();
        tasks.push(glommio::spawn_local(async move {
            glommio::timer::sleep(Duration::from_micros(500 * i as u64)).await;
            deliver(&s, id, &rcpts).await;
        }));
    }
    for t in tasks {
        t.await;
    }
}

async fn compactor_task(spool: ShardSpool) {
    loop {
        glommio::timer::sleep(Duration::from_millis(15)).await;
        emit("COMPACTING".to_string());
        let n = spool.compact().await.expect("compact");
        emit(format!("COMPACT {n}"));
    }
}

fn read_todo(path: &str) -> Vec<(u64, Vec<u32>)> {
    let text = std::fs::read_to_string(path).expect("todo file");
    text.lines()
        .map(|l| {
            let (id, r) = l.split_once(' ').expect("todo line");
            (
                id.parse().expect("todo id"),
                parse_rcpts(r).expect("todo rcpts"),
            )
        })
        .collect()
}

/// The child half of `sigkill_loses_no_acknowledged_message`. It is ignored
/// so that a plain `cargo test` does not list it as a test that passed
/// without checking anything; the parent runs it with `--include-ignored`
/// and the environment that names its spool. Run by hand without that
/// environment, it returns at once.
#[test]
#[ignore = "child process of sigkill_loses_no_acknowledged_message, which starts it"]
fn child_writer() {
    let Ok(dir) = std::env::var(ENV_DIR) else {
        return;
    };
    let seed: u64 = std::env::var(ENV_CHILD_SEED)
        .expect("child seed")
        .parse()
        .expect("child seed");
    // End the test harness's "test child_writer ... " line first.
    emit(String::new());
    let todo = std::env::var(ENV_TODO)
        .map(|p| read_todo(&p))
        .unwrap_or_default();
    shard_support::on_shard(move || async move {
        let (spool, report, _lock) = open_shard(opts(Path::new(&dir)), now_ms()).expect("open");
        emit(format!(
            "OPEN queued={} segments={} torn={}",
            report.queued_messages, report.segments, report.torn_bytes_dropped
        ));
        for task in 0..TASKS {
            glommio::spawn_local(writer_task(spool.clone(), seed, task)).detach();
        }
        glommio::spawn_local(old_mail_task(spool.clone(), todo)).detach();
        glommio::spawn_local(compactor_task(spool.clone())).detach();
        // Killed long before this, unless the parent died first.
        glommio::timer::sleep(CHILD_LIFETIME).await;
        std::process::exit(2);
    });
}

// ---------------------------------------------------------------------------
// The parent.

/// What the parent knows about one message.
#[derive(Debug, Clone)]
struct Known {
    seed: u64,
    task: u64,
    counter: u64,
    rcpts: u32,
    /// Recipients whose Delivered status is known durable.
    delivered: BTreeSet<u32>,
    /// Recipients whose Delivered status may or may not be durable.
    maybe: BTreeSet<u32>,
    /// Every recipient is known delivered: it must stay out of the queue.
    finished: bool,
    /// What happened to it, for the failure message.
    history: Vec<String>,
}

impl Known {
    fn new(seed: u64, task: u64, counter: u64) -> Known {
        Known {
            seed,
            task,
            counter,
            rcpts: plan(seed, task, counter).rcpts,
            delivered: BTreeSet::new(),
            maybe: BTreeSet::new(),
            finished: false,
            history: Vec::new(),
        }
    }

    fn may_pending(&self) -> BTreeSet<u32> {
        (0..self.rcpts)
            .filter(|r| !self.delivered.contains(r))
            .collect()
    }

    fn must_pending(&self) -> BTreeSet<u32> {
        let mut p = self.may_pending();
        p.retain(|r| !self.maybe.contains(r));
        p
    }
}

#[derive(Debug, Default)]
struct RoundLog {
    acks: usize,
    done: usize,
    compactions: usize,
    opened: bool,
}

/// Folds the complete lines of a child's output into the model.
fn apply_output(
    out: &[u8],
    round: usize,
    seed: u64,
    model: &mut BTreeMap<u64, Known>,
) -> Result<RoundLog, String> {
    let mut log = RoundLog::default();
    // A line cut short by the kill has no newline: ignore it.
    let complete = match out.iter().rposition(|&c| c == b'\n') {
        Some(i) => &out[..=i],
        None => &[][..],
    };
    let text = std::str::from_utf8(complete).map_err(|e| format!("child output: {e}"))?;
    let mut compacting = false;
    for (n, line) in text.lines().enumerate() {
        let w: Vec<&str> = line.split(' ').collect();
        let during = if compacting {
            " (compaction running)"
        } else {
            ""
        };
        let note = format!("round {round} line {n}: {line}{during}");
        let bad = || format!("bad line from child: {line:?}");
        let num = |i: usize| w.get(i).and_then(|s| s.parse::<u64>().ok()).ok_or_else(bad);
        match w[0] {
            "ACK" => {
                let (id, task, counter, len) = (num(1)?, num(2)?, num(3)?, num(4)?);
                if plan(seed, task, counter).len as u64 != len {
                    return Err(format!("{line:?}: length does not match the plan"));
                }
                let mut k = Known::new(seed, task, counter);
                k.history.push(note);
                if let Some(old) = model.insert(id, k) {
                    return Err(format!(
                        "{line:?}: message id used twice; before: {:#?}",
                        old.history
                    ));
                }
                log.acks += 1;
            }
            "SEND" | "DONE" => {
                let id = num(1)?;
                let rcpts = w.get(2).and_then(|s| parse_rcpts(s)).ok_or_else(bad)?;
                let k = model
                    .get_mut(&id)
                    .ok_or_else(|| format!("{line:?}: status for a message never acknowledged"))?;
                k.history.push(note);
                for r in rcpts {
                    if w[0] == "SEND" {
                        k.maybe.insert(r);
                    } else {
                        k.maybe.remove(&r);
                        k.delivered.insert(r);
                    }
                }
                if w[0] == "DONE" {
                    log.done += 1;
                }
            }
            "COMPACTING" => {
                compacting = true;
                // Worth knowing for a message whose status is in flight.
                for k in model.values_mut().filter(|k| !k.maybe.is_empty()) {
                    k.history.push(note.clone());
                }
            }
            "COMPACT" => {
                compacting = false;
                log.compactions += num(1)? as usize;
            }
            "OPEN" => log.opened = true,
            _ => {} // the test harness's own lines
        }
    }
    Ok(log)
}

/// The queue as an offline reader of the segment files sees it (without
/// the daemon's code and without changing a byte): id → pending recipients.
fn offline_queue(dir: &Path) -> BTreeMap<u64, Vec<u32>> {
    let mut images = Vec::new();
    if !dir.exists() {
        return BTreeMap::new(); // killed before it was made
    }
    for entry in std::fs::read_dir(dir).expect("spool dir") {
        let entry = entry.expect("spool dir");
        let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(spool_format::parse_segment_file_name)
        else {
            continue;
        };
        let bytes = std::fs::read(entry.path()).expect("segment");
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(&bytes);
        images.push((id, aligned));
    }
    images.sort_by_key(|(id, _)| *id);
    let mut last = 0;
    let scans: Vec<_> = images
        .iter()
        .map(|(_, b)| {
            let s = scan_segment(b, last);
            last = s.last_seq;
            s
        })
        .collect();
    let segs: Vec<_> = images
        .iter()
        .zip(&scans)
        .map(|((id, bytes), scan)| RecoveredSegment {
            id: *id,
            bytes,
            scan,
        })
        .collect();
    QueueIndex::recover(&segs)
        .messages
        .iter()
        .map(|(id, m)| (*id, m.pending.iter().collect()))
        .collect()
}

#[derive(Debug, Default)]
struct Verified {
    queued: usize,
    /// Envelopes written but not acknowledged before the kill.
    unacknowledged: usize,
    segments: usize,
    torn: u64,
}

/// Opens the spool as a restarted daemon would and checks it against the
/// model, which is then brought up to date with what was found.
fn verify(dir: &Path, model: &mut BTreeMap<u64, Known>) -> Result<Verified, String> {
    let offline = offline_queue(dir);
    let d = dir.to_path_buf();
    let m = std::mem::take(model);
    let (m, result) = shard_support::on_shard(move || async move {
        let mut m = m;
        let r = check_spool(&d, &mut m, &offline);
        (m, r)
    });
    *model = m;
    result
}

/// Reads a queued message's body and compares it with what was written.
fn check_body(spool: &ShardSpool, id: u64, k: &Known, buf: &mut Vec<u8>) -> Result<(), String> {
    buf.clear();
    spool
        .read_body(id, buf)
        .map_err(|e| format!("message {id}: reading body: {e}"))?;
    let want = body(k.seed, k.task, k.counter);
    if *buf != want {
        let at = buf.iter().zip(&want).position(|(a, b)| a != b);
        return Err(format!(
            "CORRUPT: message {id} (task {} counter {} of child seed {}): body of {} bytes, \
             want {}, first difference at {at:?}; its history: {:#?}",
            k.task,
            k.counter,
            k.seed,
            buf.len(),
            want.len(),
            k.history
        ));
    }
    Ok(())
}

fn check_spool(
    dir: &Path,
    model: &mut BTreeMap<u64, Known>,
    offline: &BTreeMap<u64, Vec<u32>>,
) -> Result<Verified, String> {
    let (spool, report, lock) =
        open_shard(opts(dir), now_ms()).map_err(|e| format!("open: {e}"))?;
    let result = (|| {
        if report.damaged_messages != 0
            || report.damaged_regions != 0
            || !report.quarantined.is_empty()
        {
            return Err(format!("recovery found damage: {report:?}"));
        }
        if report.queued_messages != offline.len() || spool.queue_len() != offline.len() {
            return Err(format!(
                "the daemon recovered {} messages ({} after reclaiming), an offline reader {}",
                report.queued_messages,
                spool.queue_len(),
                offline.len()
            ));
        }
        let mut v = Verified {
            queued: offline.len(),
            segments: report.segments,
            torn: report.torn_bytes_dropped,
            ..Default::default()
        };
        let mut buf = Vec::new();
        for (id, k) in model.iter_mut() {
            let found = spool.pending_recipients(*id);
            if found.as_ref() != offline.get(id) {
                return Err(format!(
                    "message {id}: the daemon has pending {found:?}, an offline reader {:?}",
                    offline.get(id)
                ));
            }
            if k.finished {
                if let Some(p) = found {
                    return Err(format!(
                        "message {id} finished in an earlier round but is queued again \
                         (pending {p:?}); its history: {:#?}",
                        k.history
                    ));
                }
                continue;
            }
            let (must, may) = (k.must_pending(), k.may_pending());
            match found {
                None if must.is_empty() => {
                    k.finished = true;
                    k.history.push("after the kill: finished".to_string());
                }
                None => {
                    return Err(format!(
                        "LOST: message {id} (task {} counter {} of child seed {}) was acknowledged \
                         and recipients {must:?} were never delivered, but it is not queued; \
                         its history: {:#?}",
                        k.task, k.counter, k.seed, k.history
                    ))
                }
                Some(p) => {
                    let p: BTreeSet<u32> = p.into_iter().collect();
                    if !must.is_subset(&p) || !p.is_subset(&may) {
                        return Err(format!(
                            "message {id}: pending {p:?}, want at least {must:?} and at most \
                             {may:?}; its history: {:#?}",
                            k.history
                        ));
                    }
                    check_body(&spool, *id, k, &mut buf)?;
                    if !k.maybe.is_empty() {
                        k.history.push(format!("after the kill: pending {p:?}"));
                    }
                    k.delivered = (0..k.rcpts).filter(|r| !p.contains(r)).collect();
                    k.maybe.clear();
                }
            }
        }
        // Envelopes written but not acknowledged when the kill came (not yet
        // synced, or the ACK line not yet out): the page cache kept them.
        // Each must still be one whole message of ours.
        for (id, pending) in offline {
            if model.contains_key(id) {
                continue;
            }
            buf.clear();
            spool
                .read_body(*id, &mut buf)
                .map_err(|e| format!("message {id}: reading body: {e}"))?;
            let (seed, task, counter) = body_origin(&buf)
                .ok_or_else(|| format!("message {id} is queued but is none of ours"))?;
            let mut k = Known::new(seed, task, counter);
            k.history
                .push("written, not acknowledged before the kill".to_string());
            check_body(&spool, *id, &k, &mut buf)?;
            if pending.len() != k.rcpts as usize {
                return Err(format!(
                    "unacknowledged message {id}: pending {pending:?} of {}",
                    k.rcpts
                ));
            }
            model.insert(*id, k);
            v.unacknowledged += 1;
        }
        Ok(v)
    })();
    spool.close();
    drop(lock);
    result.map_err(|e| format!("{e}\nrecovery: {report:?}"))
}

/// When the parent kills a child.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// This long after starting it: often during start-up or recovery.
    AfterStart(Duration),
    /// Once it has acknowledged `acks` messages, and then `ms` later.
    AfterAcks { acks: usize, ms: u64 },
}

/// Runs one child until the kill; returns its complete output.
fn run_child(dir: &Path, todo: &Path, child_seed: u64, kill: Kill) -> Result<Vec<u8>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "child_writer",
            "--nocapture",
            "--include-ignored",
            "--test-threads=1",
        ])
        .env(ENV_DIR, dir)
        .env(ENV_CHILD_SEED, child_seed.to_string())
        .env(ENV_TODO, todo)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting child: {e}"))?;
    let stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let (ack_tx, acked) = std::sync::mpsc::channel();
    let out = std::thread::spawn(move || {
        let mut r = std::io::BufReader::new(stdout);
        let mut all = Vec::new();
        loop {
            let from = all.len();
            match r.read_until(b'\n', &mut all) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if all[from..].starts_with(b"ACK ") {
                        let _ = ack_tx.send(());
                    }
                }
            }
        }
        all
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let mut stalled = false;
    match kill {
        Kill::AfterStart(t) => std::thread::sleep(t),
        Kill::AfterAcks { acks, ms } => {
            for _ in 0..acks {
                if acked.recv_timeout(STALL).is_err() {
                    stalled = true;
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(ms));
        }
    }
    let early = child.try_wait().map_err(|e| format!("child: {e}"))?;
    if early.is_none() {
        child.kill().map_err(|e| format!("kill: {e}"))?; // SIGKILL
    }
    let status = child.wait().map_err(|e| format!("child: {e}"))?;
    let out = out.join().expect("stdout reader");
    let err = err.join().expect("stderr reader");
    if let Some(status) = early {
        return Err(format!(
            "the child ended by itself ({status}) before the kill; its stderr:\n{}",
            String::from_utf8_lossy(&err)
        ));
    }
    if stalled {
        return Err(format!(
            "the child acknowledged nothing for {STALL:?}; its stderr:\n{}",
            String::from_utf8_lossy(&err)
        ));
    }
    if status.signal() != Some(libc::SIGKILL) {
        return Err(format!("child ended with {status}, not SIGKILL"));
    }
    Ok(out)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("copy of spool");
    for e in std::fs::read_dir(from).expect("spool dir") {
        let e = e.expect("spool dir");
        if e.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy of spool");
        }
    }
}

#[test]
fn sigkill_loses_no_acknowledged_message() {
    let seed = std::env::var(ENV_SEED)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| mix(now_ms() ^ u64::from(std::process::id())))
        .max(1);
    eprintln!("crash test seed {seed} (set {ENV_SEED}={seed} to repeat)");
    let mut rng = Rng(seed);
    // Not a self-deleting temporary directory: a failed run leaves its
    // spool behind for a look with `petrel spool inspect`.
    let root = std::env::temp_dir().join(format!("petrel-crash-{}-{seed}", std::process::id()));
    let dir: PathBuf = root.join("shard-0");
    let todo = root.join("todo");
    let killed = root.join("killed");
    std::fs::create_dir_all(&root).expect("test directory");
    let mut model: BTreeMap<u64, Known> = BTreeMap::new();
    let (mut total_acks, mut total_done, mut total_copied) = (0, 0, 0);
    let started = Instant::now();
    for round in 0..ROUNDS {
        let fail = |e: String| -> ! {
            panic!(
                "crash test seed {seed}, round {round}: {e}\n\
                 the spool as the kill left it: {}; after recovery: {}",
                killed.display(),
                dir.display()
            )
        };
        // Some mail of earlier rounds is delivered in this one.
        let mut list = String::new();
        for (id, k) in model.iter().filter(|(_, k)| !k.finished) {
            if rng.next() % 2 == 0 {
                let pending: Vec<u32> = k.may_pending().into_iter().collect();
                list += &format!("{id} {}\n", rcpt_list(&pending));
            }
        }
        std::fs::write(&todo, list).expect("todo file");
        let child_seed = rng.next();
        let last = round + 1 == ROUNDS;
        let kill = if rng.next() % 4 == 0 && !last {
            Kill::AfterStart(Duration::from_millis(rng.range(KILL_AFTER_START_MS)))
        } else {
            // The last round makes up what the run still lacks.
            let mut acks = rng.range(KILL_AFTER_ACKS) as usize;
            if last {
                acks = acks.max(MIN_ACKS.saturating_sub(total_acks));
            }
            Kill::AfterAcks {
                acks,
                ms: rng.range(KILL_AFTER_ACKS_MS),
            }
        };
        let out = run_child(&dir, &todo, child_seed, kill).unwrap_or_else(|e| fail(e));
        let log = apply_output(&out, round, child_seed, &mut model).unwrap_or_else(|e| fail(e));
        total_acks += log.acks;
        total_done += log.done;
        total_copied += log.compactions;
        // What the kill left, before recovery changes it (kept on failure).
        let _ = std::fs::remove_dir_all(&killed);
        if dir.exists() {
            copy_dir(&dir, &killed);
        }
        let v = verify(&dir, &mut model).unwrap_or_else(|e| fail(e));
        eprintln!(
            "round {round}: killed {kill:?}{}; {} acked, {} statuses done, {} copied by compaction; \
             recovered {} queued ({} written but never acknowledged), {} segments, {} torn bytes",
            if log.opened { "" } else { " (before the spool was open)" },
            log.acks,
            log.done,
            log.compactions,
            v.queued,
            v.unacknowledged,
            v.segments,
            v.torn
        );
    }
    eprintln!(
        "{total_acks} messages acknowledged, {total_done} statuses done, {total_copied} copied \
         by compaction over {ROUNDS} rounds in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&root);
    assert!(
        total_acks >= MIN_ACKS,
        "seed {seed}: only {total_acks} messages acknowledged; the test did too little to mean anything"
    );
}
