//! spool benchmark: durable append throughput with group commit, and
//! recovery time for a large spool, beside the disk's own limits measured in
//! the same run (one fdatasync's latency, sequential write bandwidth).
//!
//! It drives `petrel::spool` the way a shard does: one glommio executor
//! pinned to CPU 0, N appender tasks each writing a body chunk and
//! committing its envelope, every commit resolving once an fdatasync covers
//! it. It never measures on /tmp (often tmpfs): the files go under
//! `PETREL_BENCH_DIR`, default `./target`, and are removed at the end.
//! Run it with `benches/spool.sh`; `benches/README.md` says what each figure
//! means.
//!
//! Arguments (after `cargo bench --bench spool --`):
//! `--seconds S` time budget of one throughput run (default 5),
//! `--recovery-messages N` size of the recovery spool (default 1,000,000;
//! 0 skips recovery), `--size KIB` a message size to run (repeatable;
//! default 1 and 100), `--appenders N` a number of concurrent appenders
//! (repeatable; default 1, 16 and 256),
//! `--quick` (1 s runs, 100,000-message recovery spool: a smoke test).
//! `--open-spool DIR` is internal: open one spool in a fresh process and
//! print what it cost.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use glommio::{LocalExecutorBuilder, Placement};
use petrel::spool::recovery::open_shard;
use petrel::spool::{ShardSpool, SpoolOptions};
use spool_format::envelope::{Envelope, Recipient};

// The daemon's allocator, so that memory figures match it, counting the
// bytes held live so that the index's own size can be told apart from
// memory the allocator keeps after a free.
#[global_allocator]
static GLOBAL: Counting = Counting;

static LIVE_HEAP: AtomicUsize = AtomicUsize::new(0);

struct Counting;

// SAFETY: every call is passed to mimalloc unchanged; the counter is only
// arithmetic on the sizes of the layouts given.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_HEAP.fetch_add(layout.size(), Ordering::Relaxed);
        mimalloc::MiMalloc.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE_HEAP.fetch_add(layout.size(), Ordering::Relaxed);
        mimalloc::MiMalloc.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_HEAP.fetch_sub(layout.size(), Ordering::Relaxed);
        mimalloc::MiMalloc.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = mimalloc::MiMalloc.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE_HEAP.fetch_add(new_size, Ordering::Relaxed);
            LIVE_HEAP.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The default `[spool] segment_size`.
const SEGMENT_SIZE: u64 = 256 << 20;
/// glommio registers this much with RLIMIT_MEMLOCK (8 MiB here).
const IO_MEMORY: usize = 2 << 20;
const REPEATS: usize = 3;
const KIB: usize = 1024;
const MB: f64 = 1e6;
/// Messages per second that 1 KiB × 256 appenders must reach.
const TARGET_1K_MSGS: f64 = 30_000.0;
/// Fraction of sequential bandwidth that 100 KiB appends must reach.
const TARGET_100K_RATIO: f64 = 0.8;
/// Recovery of the large spool must take less than this.
const TARGET_RECOVERY_SECS: f64 = 2.0;

struct Settings {
    budget: Duration,
    recovery_messages: u64,
    /// Message sizes to run (`--size KIB`, repeatable); empty: 1 and 100 KiB.
    sizes: Vec<usize>,
    /// Concurrent appenders to run (`--appenders N`, repeatable).
    appenders: Vec<usize>,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("spool bench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Res<()> {
    let mut args = std::env::args().skip(1);
    let mut settings = Settings {
        budget: Duration::from_secs(5),
        recovery_messages: 1_000_000,
        sizes: Vec::new(),
        appenders: Vec::new(),
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bench" => {} // cargo bench passes it
            "--open-spool" => return open_spool_child(&value::<PathBuf>(&mut args, &arg)?),
            "--quick" => {
                settings.budget = Duration::from_secs(1);
                settings.recovery_messages = 100_000;
            }
            "--seconds" => settings.budget = Duration::from_secs_f64(value(&mut args, &arg)?),
            "--recovery-messages" => settings.recovery_messages = value(&mut args, &arg)?,
            "--appenders" => settings.appenders.push(value(&mut args, &arg)?),
            "--size" => settings.sizes.push(value::<usize>(&mut args, &arg)? * KIB),
            _ => return Err(format!("unknown argument {arg:?} (see benches/README.md)").into()),
        }
    }
    let base =
        std::env::var_os("PETREL_BENCH_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    std::fs::create_dir_all(&base)?;
    let tmp = tempfile::Builder::new()
        .prefix("petrel-spool-bench-")
        .tempdir_in(&base)?;
    let report = bench_all(tmp.path(), &settings)?;
    print_report(tmp.path(), &settings, &report);
    Ok(())
}

fn value<T: std::str::FromStr>(args: &mut impl Iterator<Item = String>, name: &str) -> Res<T> {
    args.next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{name} needs a value").into())
}

struct Report {
    /// /proc/loadavg at the start and at the end (the machine may be shared).
    load: (String, String),
    disk: DiskLimits,
    appends: Vec<AppendConfig>,
    /// None with `--recovery-messages 0`.
    recovery: Option<Recovery>,
}

fn bench_all(dir: &Path, settings: &Settings) -> Res<Report> {
    println!("spool bench in {}", dir.display());
    let load_start = load_average();
    let disk = disk_limits(dir)?;
    let mut appends = Vec::new();
    let appenders = if settings.appenders.is_empty() {
        vec![1, 16, 256]
    } else {
        settings.appenders.clone()
    };
    let sizes = if settings.sizes.is_empty() {
        vec![KIB, 100 * KIB]
    } else {
        settings.sizes.clone()
    };
    for size in sizes {
        // At most 100 MiB (and at least 10,000 messages) per run.
        let max_msgs = (102_400_000 / size as u64).max(10_000);
        for &appenders in &appenders {
            appends.push(append_config(
                dir,
                size,
                appenders,
                max_msgs,
                settings.budget,
            )?);
        }
    }
    let recovery = match settings.recovery_messages {
        0 => None,
        n => Some(recovery(dir, n)?),
    };
    Ok(Report {
        load: (load_start, load_average()),
        disk,
        appends,
        recovery,
    })
}

// ---------------------------------------------------------------- disk ---

struct DiskLimits {
    overwrite: Latency,
    fallocated: Latency,
    seq_mb_s: f64,
}

struct Latency {
    median_ms: f64,
    p99_ms: f64,
}

const SYNC_SAMPLES: usize = 200;
const SEQ_BYTES: usize = 1 << 30;

fn disk_limits(dir: &Path) -> Res<DiskLimits> {
    println!("disk: fdatasync latency ({SYNC_SAMPLES} samples each), sequential write of 1 GiB");
    let overwrite = sync_latency(&dir.join("sync-overwrite"), false)?;
    let fallocated = sync_latency(&dir.join("sync-fallocated"), true)?;
    let seq_mb_s = sequential_write(&dir.join("seq"))?;
    Ok(DiskLimits {
        overwrite,
        fallocated,
        seq_mb_s,
    })
}

/// fdatasync after a 1 KiB write, either over blocks already written and
/// synced (only the data goes out) or into freshly fallocated space, as the
/// spool writes (ext4 must also commit the extent becoming written).
fn sync_latency(path: &Path, fallocated: bool) -> Res<Latency> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)?;
    let span = (SYNC_SAMPLES * KIB) as u64;
    if fallocated {
        fallocate(&file, span)?;
    } else {
        file.write_all_at(&vec![0u8; span as usize], 0)?;
    }
    file.sync_all()?;
    let buf = [0x5au8; KIB];
    let mut samples = Vec::with_capacity(SYNC_SAMPLES);
    for i in 0..SYNC_SAMPLES {
        file.write_all_at(&buf, (i * KIB) as u64)?;
        let t = Instant::now();
        file.sync_data()?;
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    std::fs::remove_file(path)?;
    samples.sort_by(f64::total_cmp);
    Ok(Latency {
        median_ms: samples[samples.len() / 2],
        p99_ms: samples[samples.len() * 99 / 100],
    })
}

/// What `dd if=/dev/zero of=FILE bs=1M count=1024 conv=fdatasync` does.
fn sequential_write(path: &Path) -> Res<f64> {
    let block = vec![0u8; 1 << 20];
    let t = Instant::now();
    let mut file = File::create(path)?;
    for _ in 0..SEQ_BYTES / block.len() {
        file.write_all(&block)?;
    }
    file.sync_data()?;
    let secs = t.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(path)?;
    Ok(SEQ_BYTES as f64 / secs / MB)
}

fn fallocate(file: &File, len: u64) -> std::io::Result<()> {
    // SAFETY: a plain syscall on a descriptor we own; no memory is passed.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len as libc::off_t) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

// ------------------------------------------------------------- appends ---

#[derive(Clone, Copy)]
struct AppendRun {
    msgs: u64,
    secs: f64,
    syncs: u64,
    cpu_secs: f64,
}

impl AppendRun {
    fn msgs_per_s(&self) -> f64 {
        self.msgs as f64 / self.secs
    }
}

struct AppendConfig {
    size: usize,
    appenders: usize,
    /// The run with the median msgs/s, and the slowest and fastest rates.
    median: AppendRun,
    range: (f64, f64),
}

fn append_config(
    dir: &Path,
    size: usize,
    appenders: usize,
    max_msgs: u64,
    budget: Duration,
) -> Res<AppendConfig> {
    let mut runs = Vec::new();
    for i in 0..REPEATS {
        let run_dir = dir.join(format!("append-{size}-{appenders}-{i}"));
        let run = append_run(&run_dir, size, appenders, max_msgs, budget)?;
        std::fs::remove_dir_all(&run_dir)?;
        println!(
            "  {} x {appenders:>3} appenders, run {}: {} msgs in {:.2} s, {:.0} msgs/s, {} syncs",
            size_name(size),
            i + 1,
            run.msgs,
            run.secs,
            run.msgs_per_s(),
            run.syncs
        );
        runs.push(run);
    }
    runs.sort_by(|a, b| a.msgs_per_s().total_cmp(&b.msgs_per_s()));
    Ok(AppendConfig {
        size,
        appenders,
        median: runs[runs.len() / 2],
        range: (runs[0].msgs_per_s(), runs[runs.len() - 1].msgs_per_s()),
    })
}

fn spool_options(dir: &Path) -> SpoolOptions {
    SpoolOptions {
        dir: dir.join("shard-0"),
        shard: 0,
        segment_size: SEGMENT_SIZE,
    }
}

/// One shard, `appenders` tasks appending `size`-byte messages until
/// `max_msgs` are committed or `budget` has passed.
fn append_run(
    dir: &Path,
    size: usize,
    appenders: usize,
    max_msgs: u64,
    budget: Duration,
) -> Res<AppendRun> {
    let opts = spool_options(dir);
    on_shard(move || async move {
        let (spool, _, _lock) = open_shard(opts, now_ms())?;
        let body: Rc<[u8]> = (0..size).map(|i| (i % 251) as u8).collect();
        let issued = Rc::new(Cell::new(0u64));
        let (syncs0, cpu0, start) = (spool.syncs(), cpu_seconds(), Instant::now());
        let deadline = start + budget;
        let tasks: Vec<_> = (0..appenders)
            .map(|_| {
                let (spool, body, issued) = (spool.clone(), body.clone(), issued.clone());
                glommio::spawn_local(async move {
                    appender(&spool, &body, &issued, max_msgs, deadline).await
                })
            })
            .collect();
        let mut msgs = 0;
        for task in tasks {
            msgs += task.await?;
        }
        let run = AppendRun {
            msgs,
            secs: start.elapsed().as_secs_f64(),
            syncs: spool.syncs() - syncs0,
            cpu_secs: cpu_seconds() - cpu0,
        };
        spool.shutdown().await;
        Ok(run)
    })
}

/// Appends messages one after another; returns how many it committed.
async fn appender(
    spool: &ShardSpool,
    body: &[u8],
    issued: &Cell<u64>,
    max_msgs: u64,
    deadline: Instant,
) -> Res<u64> {
    let mut done = 0;
    while issued.get() < max_msgs && Instant::now() < deadline {
        issued.set(issued.get() + 1);
        append_message(spool, body).await?;
        done += 1;
    }
    Ok(done)
}

/// What the receive path does per message: body chunks into the mapping,
/// then the envelope, acknowledged once durable.
async fn append_message(spool: &ShardSpool, body: &[u8]) -> Res<u64> {
    let _pin = spool.pin_for_write();
    let mut env = Envelope {
        reverse_path: b"s@x.test".to_vec(),
        body_len: body.len() as u64,
        ..Default::default()
    };
    for piece in body.chunks(spool.max_chunk()) {
        env.body.push(spool.append_chunk(piece)?);
    }
    env.recipients = vec![Recipient::new(b"r@x.test", 0, b"")];
    Ok(spool.commit_message(&mut env).await?)
}

fn on_shard<T, F>(f: impl FnOnce() -> F + Send + 'static) -> Res<T>
where
    T: Send + 'static,
    F: Future<Output = Res<T>> + 'static,
{
    LocalExecutorBuilder::new(Placement::Fixed(0))
        .io_memory(IO_MEMORY)
        .name("spool-bench")
        .spawn(f)
        .map_err(|e| e.to_string())?
        .join()
        .map_err(|e| e.to_string())?
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// User + system CPU time of the whole process so far (every thread,
/// including io_uring's workers; not the kernel's writeback threads).
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the zeroed struct we pass it.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

// ------------------------------------------------------------ recovery ---

struct Recovery {
    write: AppendRun,
    segments: u64,
    /// Cold page cache first, then warm ones.
    cold: Opened,
    warm: Vec<Opened>,
}

/// What one open of the spool cost, as its own process measured it.
#[derive(Clone)]
struct Opened {
    secs: f64,
    queued: u64,
    records: u64,
    segments: u64,
    /// /proc/self/status before and after open_shard, KiB.
    rss: (u64, u64),
    anon: (u64, u64),
    file: (u64, u64),
    peak_rss: u64,
    /// User + system CPU time of the open.
    cpu_secs: f64,
    /// Bytes allocated and not freed, before and after.
    heap: (u64, u64),
}

const WARM_OPENS: usize = 3;

fn recovery(dir: &Path, messages: u64) -> Res<Recovery> {
    let spool_dir = dir.join("recovery");
    println!("recovery: writing {messages} messages of 1 KiB with 256 appenders");
    let write = append_run(&spool_dir, KIB, 256, messages, Duration::from_secs(3600))?;
    println!(
        "  written in {:.1} s ({:.0} msgs/s, {} syncs)",
        write.secs,
        write.msgs_per_s(),
        write.syncs
    );
    let shard = spool_options(&spool_dir).dir;
    let segments = drop_page_cache(&shard)?;
    let cold = open_in_child(&spool_dir)?;
    println!(
        "  open (cold page cache): {:.3} s, CPU {:.3} s",
        cold.secs, cold.cpu_secs
    );
    let mut warm = Vec::new();
    for i in 0..WARM_OPENS {
        let o = open_in_child(&spool_dir)?;
        println!(
            "  open (warm) {}: {:.3} s, CPU {:.3} s",
            i + 1,
            o.secs,
            o.cpu_secs
        );
        warm.push(o);
    }
    warm.sort_by(|a, b| a.secs.total_cmp(&b.secs));
    std::fs::remove_dir_all(&spool_dir)?;
    Ok(Recovery {
        write,
        segments,
        cold,
        warm,
    })
}

/// Evicts the spool's (clean, synced) pages from the page cache, so that
/// the next open reads from the disk as after a reboot. Returns how many
/// segment files there are.
fn drop_page_cache(shard: &Path) -> Res<u64> {
    let mut segments = 0;
    for entry in std::fs::read_dir(shard)? {
        let path = entry?.path();
        if path.extension().is_some_and(|x| x == "seg") {
            segments += 1;
        }
        if path.is_file() {
            let f = File::open(&path)?;
            f.sync_all()?;
            // SAFETY: an advisory syscall on a descriptor we own.
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        }
    }
    Ok(segments)
}

/// Opens the spool in a fresh process, so that its memory figures hold
/// the recovered index alone and nothing left over from writing it.
fn open_in_child(dir: &Path) -> Res<Opened> {
    let out = Command::new(std::env::current_exe()?)
        .arg("--open-spool")
        .arg(dir)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!("opening the spool failed: {stdout}{stderr}").into());
    }
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("opened "))
        .ok_or("no result from the open-spool process")?;
    let field = |key: &str| -> Res<f64> {
        line.split(' ')
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{key} missing in {line:?}").into())
    };
    Ok(Opened {
        secs: field("secs")?,
        queued: field("queued")? as u64,
        records: field("records")? as u64,
        segments: field("segments")? as u64,
        rss: (field("rss0")? as u64, field("rss1")? as u64),
        anon: (field("anon0")? as u64, field("anon1")? as u64),
        file: (field("file0")? as u64, field("file1")? as u64),
        peak_rss: field("hwm")? as u64,
        heap: (field("heap0")? as u64, field("heap1")? as u64),
        cpu_secs: field("cpu")?,
    })
}

/// `--open-spool DIR`: times `open_shard` and prints one `opened` line.
fn open_spool_child(dir: &Path) -> Res<()> {
    let opts = spool_options(dir);
    let line = on_shard(move || async move {
        let (before, heap0) = (proc_status()?, LIVE_HEAP.load(Ordering::Relaxed));
        let (t, cpu0) = (Instant::now(), cpu_seconds());
        let (spool, report, _lock) = open_shard(opts, now_ms())?;
        let (secs, cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
        let (after, heap1) = (proc_status()?, LIVE_HEAP.load(Ordering::Relaxed));
        spool.shutdown().await;
        let get = |s: &[(String, u64)], k: &str| s.iter().find(|(n, _)| n == k).map_or(0, |v| v.1);
        Ok(format!(
            "opened secs={secs} cpu={cpu} queued={} records={} segments={} rss0={} rss1={} anon0={} anon1={} file0={} file1={} hwm={} heap0={heap0} heap1={heap1}",
            report.queued_messages,
            report.records,
            report.segments,
            get(&before, "VmRSS"),
            get(&after, "VmRSS"),
            get(&before, "RssAnon"),
            get(&after, "RssAnon"),
            get(&before, "RssFile"),
            get(&after, "RssFile"),
            get(&after, "VmHWM"),
        ))
    })?;
    println!("{line}");
    Ok(())
}

/// The `kB` fields of /proc/self/status.
fn proc_status() -> Res<Vec<(String, u64)>> {
    let text = std::fs::read_to_string("/proc/self/status")?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let kib = rest.trim().strip_suffix(" kB")?.trim().parse().ok()?;
            Some((name.to_string(), kib))
        })
        .collect())
}

// -------------------------------------------------------------- report ---

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn size_name(size: usize) -> String {
    format!("{} KiB", size / KIB)
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn print_report(dir: &Path, settings: &Settings, r: &Report) {
    println!();
    println!("petrel spool benchmark");
    println!(
        "  dir {} ({}), {} CPUs, one shard on CPU 0, segment_size {} MiB",
        dir.display(),
        fs_type(dir),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        SEGMENT_SIZE >> 20
    );
    println!(
        "  throughput: median of {REPEATS} runs, each up to {:.1} s; MB = 10^6 bytes of message body",
        settings.budget.as_secs_f64()
    );
    println!(
        "  load average: {} at the start, {} at the end",
        r.load.0, r.load.1
    );
    print_disk(&r.disk);
    print_appends(&r.appends, r.disk.seq_mb_s);
    if let Some(rec) = &r.recovery {
        print_recovery(rec, settings.recovery_messages);
    }
}

fn print_disk(d: &DiskLimits) {
    println!();
    println!("Disk limits (same run)");
    if let Ok(dd) = std::env::var("PETREL_BENCH_DD") {
        println!("  dd bs=1M count=1024 conv=fdatasync      {dd}");
    }
    println!(
        "  sequential write 1 GiB + fdatasync      {:.0} MB/s",
        d.seq_mb_s
    );
    for (what, l) in [
        ("over written blocks    ", &d.overwrite),
        ("into fallocated space  ", &d.fallocated),
    ] {
        println!(
            "  fdatasync after 1 KiB, {what} median {:.3} ms, p99 {:.3} ms",
            l.median_ms, l.p99_ms
        );
    }
}

/// The rate in dd's summary line (`PETREL_BENCH_DD`, set by spool.sh), in MB/s.
fn dd_mb_s() -> Option<f64> {
    let line = std::env::var("PETREL_BENCH_DD").ok()?;
    let mut words = line.rsplit(' ');
    let unit = words.next()?;
    let value: f64 = words.next()?.replace(',', ".").parse().ok()?;
    let scale = match unit {
        "kB/s" => 1e-3,
        "MB/s" => 1.0,
        "GB/s" => 1e3,
        _ => return None,
    };
    Some(value * scale)
}

fn print_appends(configs: &[AppendConfig], seq_mb_s: f64) {
    println!();
    println!("Durable append throughput (group commit, one shard)");
    println!(
        "  {:<8} {:>9} {:>8} {:>9} {:>17} {:>8} {:>12} {:>11}  vs limit/target",
        "size", "appenders", "msgs", "msgs/s", "range msgs/s", "MB/s", "appends/sync", "CPU us/msg"
    );
    for c in configs {
        let m = &c.median;
        let mb_s = m.msgs as f64 * c.size as f64 / m.secs / MB;
        let versus = if c.size >= 100 * KIB {
            let dd = dd_mb_s().map_or(String::new(), |dd| {
                format!("{:.0}% of dd, ", mb_s / dd * 100.0)
            });
            format!(
                "{dd}{:.0}% of the 1 GiB write (target {:.0}%)",
                mb_s / seq_mb_s * 100.0,
                TARGET_100K_RATIO * 100.0
            )
        } else if c.appenders == 256 {
            format!(
                "{:.2}x the {} msgs/s target",
                m.msgs_per_s() / TARGET_1K_MSGS,
                thousands(TARGET_1K_MSGS as u64)
            )
        } else {
            String::new()
        };
        println!(
            "  {:<8} {:>9} {:>8} {:>9} {:>17} {:>8.1} {:>12.1} {:>11.1}  {versus}",
            size_name(c.size),
            c.appenders,
            thousands(m.msgs),
            thousands(m.msgs_per_s() as u64),
            format!(
                "{}-{}",
                thousands(c.range.0 as u64),
                thousands(c.range.1 as u64)
            ),
            mb_s,
            m.msgs as f64 / m.syncs.max(1) as f64,
            m.cpu_secs / m.msgs as f64 * 1e6,
        );
    }
}

fn print_recovery(r: &Recovery, messages: u64) {
    let w = &r.write;
    let mid = &r.warm[r.warm.len() / 2];
    let times: Vec<String> = r.warm.iter().map(|o| format!("{:.3}", o.secs)).collect();
    let delta = |p: (u64, u64)| p.1.saturating_sub(p.0) as f64 * 1024.0;
    let entry = std::mem::size_of::<(u64, spool_format::QueuedMessage)>();
    println!();
    println!("Recovery of {} messages of 1 KiB", thousands(messages));
    println!(
        "  written with 256 appenders             {:.1} s, {} msgs/s, {:.0} appends/sync",
        w.secs,
        thousands(w.msgs_per_s() as u64),
        w.msgs as f64 / w.syncs.max(1) as f64
    );
    println!(
        "  spool                                  segments: {} of {} MiB, {} records",
        r.segments,
        SEGMENT_SIZE >> 20,
        thousands(mid.records)
    );
    println!(
        "  open_shard, warm cache (median of {})   {:.3} s  [{}]  target < {TARGET_RECOVERY_SECS:.0} s",
        r.warm.len(),
        mid.secs,
        times.join(", ")
    );
    println!(
        "  open_shard, cold cache (FADV_DONTNEED)  {:.3} s",
        r.cold.secs
    );
    println!(
        "  open_shard CPU time (user+sys)         {:.3} s warm (median run), {:.3} s cold",
        mid.cpu_secs, r.cold.cpu_secs
    );
    println!(
        "  queued_messages                        {} (cold open: {}, segments {})",
        thousands(mid.queued),
        thousands(r.cold.queued),
        mid.segments
    );
    let per_msg = |bytes: f64| bytes / mid.queued.max(1) as f64;
    println!(
        "  VmRSS increase                         {:.1} MB ({:.0} bytes/message)",
        delta(mid.rss) / MB,
        per_msg(delta(mid.rss))
    );
    let heap = mid.heap.1.saturating_sub(mid.heap.0) as f64;
    println!(
        "  live heap increase (the index)         {:.1} MB ({:.0} bytes/message; entry {entry} bytes + hash table slack)",
        heap / MB,
        per_msg(heap)
    );
    println!(
        "  RssAnon increase                       {:.1} MB ({:.0} bytes/message; includes freed memory the allocator keeps)",
        delta(mid.anon) / MB,
        per_msg(delta(mid.anon))
    );
    println!(
        "  RssFile increase (mapped segments)     {:.1} MB",
        delta(mid.file) / MB
    );
    println!(
        "  peak RSS of the opening process        {:.1} MB",
        mid.peak_rss as f64 * 1024.0 / MB
    );
}

/// The file system type of the mount holding `dir` (from /proc/self/mounts).
fn fs_type(dir: &Path) -> String {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let (device, point, kind) = (f.next()?, f.next()?, f.next()?);
            dir.starts_with(point)
                .then(|| (point.len(), format!("{kind} on {device}")))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "file system unknown".into(), |(_, what)| what)
}
