//! Startup checks: everything about the machine that would make the daemon
//! fail later, found before any shard starts and reported in one line that
//! says what to change.
//!
//! This module owns the checks (io_uring usable, RLIMIT_MEMLOCK large
//! enough, spool directory writable, shard count within the CPUs this
//! process may run on, every egress source address configured here) and
//! the [`Plan`] they produce: how many shards, which CPUs they are pinned
//! to, and how much io_uring memory each executor registers. It never
//! starts an executor, and the only sockets it opens are bound to a source
//! address and closed again, never connected. Its only `unsafe` is in the
//! io_uring probe, which no safe wrapper covers.

use std::fs;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use rustix::thread::CpuSet;

use crate::config::{Config, SourceSection};

/// What the daemon should start, as decided from the config and the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Number of shards (one executor each).
    pub shards: usize,
    /// CPU ids to pin shard 0, 1, ... to (`cpus.len() == shards`).
    pub cpus: Vec<usize>,
    /// Bytes per executor for glommio's `io_memory`.
    pub io_memory: usize,
    /// CPUs for the threads that are not shards (accounting writer, admin
    /// endpoint, AUTH checks, DKIM signing): those of the allowed CPUs no
    /// shard is pinned to, or all of them when the shards take every one.
    pub helper_cpus: Vec<usize>,
}

/// A reason the daemon cannot start here; each message names the fix.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("io_uring is disabled on this machine (sysctl kernel.io_uring_disabled = 2): set it to 0 with `sysctl -w kernel.io_uring_disabled=0` (see tuning/README.md)")]
    IoUringDisabled,
    #[error("io_uring is limited to the group in sysctl kernel.io_uring_group (kernel.io_uring_disabled = 1) and this process is not in it: add the petrel user to that group, or set kernel.io_uring_disabled=0")]
    IoUringRestricted,
    #[error("io_uring is blocked by a seccomp filter or container policy (io_uring_setup: {0}): allow io_uring_setup, io_uring_enter and io_uring_register (docker: a seccomp profile that permits them; systemd: no SystemCallFilter= that removes them)")]
    IoUringBlocked(io::Error),
    #[error("io_uring is not available (io_uring_setup: {0}): petrel needs Linux 5.8 or later built with CONFIG_IO_URING, and no seccomp filter that hides the call")]
    IoUringMissing(io::Error),
    #[error("io_uring does not work here (io_uring_setup: {0})")]
    IoUringProbe(io::Error),
    #[error("RLIMIT_MEMLOCK is {limit_kib} KiB; {shards} shards need at least {need_kib} KiB: raise LimitMEMLOCK= in the systemd unit or `ulimit -l`{fewer_shards}")]
    MemlockTooSmall {
        limit_kib: u64,
        shards: usize,
        need_kib: u64,
        /// Empty, or a suggestion of a shard count that fits.
        fewer_shards: String,
    },
    #[error("cannot read the CPUs this process may run on (sched_getaffinity): {0}")]
    Affinity(io::Error),
    #[error("[server] shards = {shards} but this process may only run on {cpus} CPUs: lower shards, or set it to 0 for one shard per CPU")]
    TooManyShards { shards: usize, cpus: usize },
    #[error("spool directory {}: cannot create it: {source}", path.display())]
    SpoolCreate { path: PathBuf, source: io::Error },
    #[error("spool directory {} is not writable: {source}", path.display())]
    SpoolNotWritable { path: PathBuf, source: io::Error },
    #[error("[[domain]] {domain}: Maildir root {}: cannot create it: {source}", path.display())]
    MaildirRootCreate {
        domain: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("[[domain]] {domain}: Maildir root {} is not writable: {source}", path.display())]
    MaildirRootNotWritable {
        domain: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("source {name}: address {address} is not configured on this machine: add it to an interface (`ip address add`) or correct the [[source]] address")]
    SourceNotLocal { name: String, address: IpAddr },
    #[error("source {name}: cannot bind to address {address}: {error}")]
    SourceBind {
        name: String,
        address: IpAddr,
        error: io::Error,
    },
}

/// Runs every check in the order an operator would fix them, and returns
/// what the daemon should start.
pub fn check(config: &Config) -> Result<Plan, PreflightError> {
    check_io_uring()?;
    let allowed = allowed_cpus()?;
    let shards = shard_count(config.server.shards, allowed.len())?;
    let cpus = spread_cpus(&allowed, shards, core_of);
    let io_memory = io_memory_per_shard(raise_memlock(), shards)?;
    check_spool_dir(&config.spool.path)?;
    check_sources(config)?;
    check_maildir_roots(config)?;
    Ok(Plan {
        helper_cpus: helper_cpus(&allowed, &cpus),
        shards,
        cpus,
        io_memory,
    })
}

// ---- io_uring ----------------------------------------------------------

/// Reads `kernel.io_uring_disabled` (absent on kernels before 6.6, which
/// have no such switch) and probes with a real `io_uring_setup`, because
/// seccomp filters and container runtimes block the call without any
/// sysctl saying so.
fn check_io_uring() -> Result<(), PreflightError> {
    let sysctl = fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|text| text.trim().parse::<u8>().ok());
    io_uring_verdict(sysctl, probe_io_uring())
}

/// The decision, apart from the system calls, so its messages can be
/// tested.
fn io_uring_verdict(sysctl: Option<u8>, probe: io::Result<()>) -> Result<(), PreflightError> {
    if sysctl == Some(2) {
        return Err(PreflightError::IoUringDisabled);
    }
    let Err(error) = probe else { return Ok(()) };
    Err(match (error.raw_os_error(), sysctl) {
        (Some(libc::EPERM), Some(1)) => PreflightError::IoUringRestricted,
        (Some(libc::EPERM | libc::EACCES), _) => PreflightError::IoUringBlocked(error),
        (Some(libc::ENOSYS), _) => PreflightError::IoUringMissing(error),
        _ => PreflightError::IoUringProbe(error),
    })
}

/// Creates and closes a 4-entry ring. A raw system call: rustix's
/// `io_uring_setup` is itself `unsafe`, and libc has no wrapper for it.
#[allow(unsafe_code)]
fn probe_io_uring() -> io::Result<()> {
    // struct io_uring_params is 120 bytes of u32 fields and offset structs;
    // all zero asks for defaults. libc has no definition of it.
    let mut params = [0u32; 30];
    // SAFETY: io_uring_setup reads and writes exactly one io_uring_params
    // (120 bytes) through the pointer, and `params` is 120 bytes, aligned
    // for u32, and alive for the call.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor the kernel just returned to us and that
    // nothing else knows about; closing it once is correct.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

// ---- CPUs and shards ---------------------------------------------------

/// The CPU ids this process may run on (taskset, cgroup cpusets and
/// systemd's CPUAffinity= all narrow it), in ascending order.
fn allowed_cpus() -> Result<Vec<usize>, PreflightError> {
    let set = rustix::thread::sched_getaffinity(None)
        .map_err(|errno| PreflightError::Affinity(errno.into()))?;
    Ok((0..CpuSet::MAX_CPU)
        .filter(|&cpu| set.is_set(cpu))
        .collect())
}

/// `configured` shards (0 = one per allowed CPU), never more than the CPUs:
/// two pinned shards on one CPU would take turns and both be slow.
fn shard_count(configured: usize, cpus: usize) -> Result<usize, PreflightError> {
    match configured {
        0 => Ok(cpus.max(1)),
        n if n > cpus => Err(PreflightError::TooManyShards { shards: n, cpus }),
        n => Ok(n),
    }
}

/// Picks `shards` CPUs from `allowed`, one per physical core first, so that
/// two shards share a core's hyperthreads only when they must.
fn spread_cpus(
    allowed: &[usize],
    shards: usize,
    core_of: impl Fn(usize) -> Option<(u32, u32)>,
) -> Vec<usize> {
    let mut seen_cores = std::collections::HashSet::new();
    let (first, siblings): (Vec<usize>, Vec<usize>) = allowed
        .iter()
        .partition(|&&cpu| core_of(cpu).is_none_or(|core| seen_cores.insert(core)));
    first.into_iter().chain(siblings).take(shards).collect()
}

/// The CPUs of `allowed` that no shard has, or all of `allowed` when the
/// shards have them all: work off the hot path keeps off the shards'
/// cores when the machine has others, so that it takes no turns from a
/// shard's sessions.
fn helper_cpus(allowed: &[usize], shard_cpus: &[usize]) -> Vec<usize> {
    let spare: Vec<usize> = allowed
        .iter()
        .copied()
        .filter(|cpu| !shard_cpus.contains(cpu))
        .collect();
    match spare.is_empty() {
        true => allowed.to_vec(),
        false => spare,
    }
}

/// Keeps the calling thread, and the threads it starts from now on, on
/// `cpus`; a failure is logged (the threads then run anywhere allowed).
pub fn pin_helpers(cpus: &[usize]) {
    let mut set = CpuSet::new();
    for &cpu in cpus {
        set.set(cpu);
    }
    if let Err(e) = rustix::thread::sched_setaffinity(None, &set) {
        tracing::warn!(error = %e, ?cpus, "cannot keep the helper threads off the shards' CPUs");
    }
}

/// (package, core) of a CPU from sysfs; None when the kernel does not say.
fn core_of(cpu: usize) -> Option<(u32, u32)> {
    let read = |name: &str| {
        fs::read_to_string(format!("/sys/devices/system/cpu/cpu{cpu}/topology/{name}"))
            .ok()?
            .trim()
            .parse::<u32>()
            .ok()
    };
    Some((read("physical_package_id")?, read("core_id")?))
}

// ---- RLIMIT_MEMLOCK -----------------------------------------------------

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
/// glommio's own default io_memory per executor.
const MAX_IO_MEMORY: u64 = 10 * MIB;
/// Less than this per executor leaves too little registered memory to be
/// worth having.
const MIN_IO_MEMORY: u64 = 512 * KIB;
const IO_MEMORY_GRANULE: u64 = 64 * KIB;
/// Kept back for other locked memory (ring buffers on kernels before 5.12,
/// libraries that mlock).
const MEMLOCK_MARGIN: u64 = MIB;
/// glommio registers the io_memory area with each of an executor's three
/// rings (main, latency, poll), and the kernel charges every registration
/// to RLIMIT_MEMLOCK: measured on Linux 6.18, 1 MiB of io_memory pins
/// 3 MiB. When the limit is exceeded glommio silently runs without
/// registered buffers, so sizing by one registration would lose them.
const REGISTRATIONS_PER_EXECUTOR: u64 = 3;

/// Raises the soft RLIMIT_MEMLOCK to the hard limit (an unprivileged
/// process may do this) and returns the soft limit in bytes, None for
/// unlimited.
fn raise_memlock() -> Option<u64> {
    let mut limit = getrlimit(Resource::Memlock);
    // None is unlimited.
    if limit
        .current
        .is_some_and(|soft| limit.maximum.is_none_or(|hard| soft < hard))
    {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Memlock, raised) {
            Ok(()) => limit = raised,
            Err(errno) => {
                tracing::debug!(error = %io::Error::from(errno), "could not raise RLIMIT_MEMLOCK to the hard limit");
            }
        }
    }
    limit.current
}

/// io_memory per executor for a memlock limit (None = unlimited) shared by
/// `shards` executors: as much as fits, at most glommio's default, in whole
/// 64 KiB granules; an error when it would fall below the useful minimum.
pub fn io_memory_per_shard(limit: Option<u64>, shards: usize) -> Result<usize, PreflightError> {
    let Some(limit) = limit else {
        return Ok(MAX_IO_MEMORY as usize);
    };
    let per_executor = REGISTRATIONS_PER_EXECUTOR;
    let executors = shards.max(1) as u64;
    let share = limit.saturating_sub(MEMLOCK_MARGIN) / (executors * per_executor);
    let io_memory = share.min(MAX_IO_MEMORY) / IO_MEMORY_GRANULE * IO_MEMORY_GRANULE;
    if io_memory >= MIN_IO_MEMORY {
        return Ok(io_memory as usize);
    }
    let need = |n: u64| n * per_executor * MIN_IO_MEMORY + MEMLOCK_MARGIN;
    let fitting = (1..executors).rev().find(|&n| need(n) <= limit);
    Err(PreflightError::MemlockTooSmall {
        limit_kib: limit / KIB,
        shards: executors as usize,
        need_kib: need(executors) / KIB,
        fewer_shards: fitting.map_or(String::new(), |n| format!(", or set [server] shards = {n}")),
    })
}

// ---- spool directory ----------------------------------------------------

/// Creates the spool directory if needed and proves it writable by
/// creating and removing a probe file, so a read-only mount or wrong owner
/// is reported now rather than as 451s at the first message.
fn check_spool_dir(path: &Path) -> Result<(), PreflightError> {
    fs::create_dir_all(path).map_err(|source| PreflightError::SpoolCreate {
        path: path.to_owned(),
        source,
    })?;
    probe_write(path).map_err(|source| PreflightError::SpoolNotWritable {
        path: path.to_owned(),
        source,
    })
}

/// Writes and removes a file in `dir`.
fn probe_write(dir: &Path) -> io::Result<()> {
    let probe = dir.join(format!(".petrel-preflight-{}", std::process::id()));
    let written =
        fs::File::create(&probe).and_then(|mut file| file.write_all(b"petrel preflight\n"));
    let removed = fs::remove_file(&probe);
    written.and(removed)
}

// ---- Maildir roots -------------------------------------------------------

/// Makes every Maildir domain's root where it is missing (with the
/// domain's directory mode) and proves it writable, so that an unusable
/// root is reported now, with its domain, rather than as deferred mail.
/// Also run by `petrel check`.
pub fn check_maildir_roots(config: &Config) -> Result<(), PreflightError> {
    use std::os::unix::fs::DirBuilderExt;
    for d in &config.domain {
        let Some(root) = &d.maildir_root else {
            continue;
        };
        let mode = crate::local::maildir::dir_mode(d.maildir_mode);
        if !root.is_dir() {
            let made = fs::DirBuilder::new()
                .recursive(true)
                .mode(mode)
                .create(root);
            made.map_err(|source| PreflightError::MaildirRootCreate {
                domain: d.name.clone(),
                path: root.clone(),
                source,
            })?;
        }
        probe_write(root).map_err(|source| PreflightError::MaildirRootNotWritable {
            domain: d.name.clone(),
            path: root.clone(),
            source,
        })?;
    }
    Ok(())
}

// ---- egress sources -----------------------------------------------------

/// Proves that every `[[source]]` address belongs to this machine by
/// binding a socket to it (port 0, never connected), so a typo or a
/// missing interface is reported now rather than as deferred mail. Also
/// run by `petrel check`, which does none of the other checks.
pub fn check_sources(config: &Config) -> Result<(), PreflightError> {
    config.source.iter().try_for_each(check_source)
}

fn check_source(source: &SourceSection) -> Result<(), PreflightError> {
    use rustix::net::{bind, socket_with, AddressFamily, SocketFlags, SocketType};
    let family = match source.address {
        IpAddr::V4(_) => AddressFamily::INET,
        IpAddr::V6(_) => AddressFamily::INET6,
    };
    let bound = socket_with(family, SocketType::STREAM, SocketFlags::CLOEXEC, None)
        .and_then(|socket| bind(&socket, &SocketAddr::new(source.address, 0)));
    match bound {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::ADDRNOTAVAIL) => Err(PreflightError::SourceNotLocal {
            name: source.name.clone(),
            address: source.address,
        }),
        Err(errno) => Err(PreflightError::SourceBind {
            name: source.name.clone(),
            address: source.address,
            error: errno.into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_take_the_cpus_no_shard_has() {
        assert_eq!(helper_cpus(&[0, 1, 2, 3], &[0, 2]), [1, 3]);
        assert_eq!(helper_cpus(&[0, 1], &[0]), [1]);
        // Every CPU has a shard: the helpers share them all.
        assert_eq!(helper_cpus(&[0, 1], &[1, 0]), [0, 1]);
        assert_eq!(helper_cpus(&[3], &[3]), [3]);
    }

    #[test]
    fn io_memory_is_capped_at_ten_mib() {
        assert_eq!(io_memory_per_shard(None, 64).ok(), Some(10 << 20));
        assert_eq!(io_memory_per_shard(Some(1 << 40), 4).ok(), Some(10 << 20));
    }

    #[test]
    fn io_memory_shares_the_limit_in_64_kib_granules() {
        // 8 MiB - 1 MiB margin = 7 MiB over 2 shards x 3 registrations:
        // 1223338 bytes, rounded down to 1179648 (18 x 64 KiB).
        assert_eq!(
            io_memory_per_shard(Some(8 << 20), 2).ok(),
            Some(18 * 64 * 1024)
        );
        // 4 shards: 7 MiB / 12 = 611669, rounded down to 589824 (9 x 64 KiB).
        assert_eq!(
            io_memory_per_shard(Some(8 << 20), 4).ok(),
            Some(9 * 64 * 1024)
        );
        // 1 shard: 7 MiB / 3 = 2446677, rounded down to 37 x 64 KiB; 0 counts as 1.
        assert_eq!(
            io_memory_per_shard(Some(8 << 20), 1).ok(),
            Some(37 * 64 * 1024)
        );
        assert_eq!(
            io_memory_per_shard(Some(8 << 20), 0).ok(),
            Some(37 * 64 * 1024)
        );
    }

    #[test]
    fn io_memory_below_the_minimum_is_an_error_with_the_fix() {
        let message = match io_memory_per_shard(Some(8 << 20), 8) {
            Ok(bytes) => panic!("accepted {bytes}"),
            Err(e) => e.to_string(),
        };
        assert_eq!(
            message,
            "RLIMIT_MEMLOCK is 8192 KiB; 8 shards need at least 13312 KiB: raise LimitMEMLOCK= in the systemd unit or `ulimit -l`, or set [server] shards = 4"
        );
        let message = match io_memory_per_shard(Some(64 * 1024), 1) {
            Ok(bytes) => panic!("accepted {bytes}"),
            Err(e) => e.to_string(),
        };
        assert_eq!(
            message,
            "RLIMIT_MEMLOCK is 64 KiB; 1 shards need at least 2560 KiB: raise LimitMEMLOCK= in the systemd unit or `ulimit -l`"
        );
    }

    #[test]
    fn shards_are_bounded_by_allowed_cpus() {
        assert_eq!(shard_count(0, 6).ok(), Some(6));
        assert_eq!(shard_count(0, 0).ok(), Some(1));
        assert_eq!(shard_count(2, 6).ok(), Some(2));
        assert_eq!(
            shard_count(8, 2).map_err(|e| e.to_string()).err().as_deref(),
            Some("[server] shards = 8 but this process may only run on 2 CPUs: lower shards, or set it to 0 for one shard per CPU")
        );
    }

    #[test]
    fn cpus_spread_over_physical_cores_first() {
        // CPUs 0-3 are two cores with two hyperthreads each: 0,2 on core 0.
        let core = |cpu: usize| Some((0, (cpu % 2) as u32));
        assert_eq!(spread_cpus(&[0, 1, 2, 3], 2, core), vec![0, 1]);
        let paired = |cpu: usize| Some((0, (cpu / 2) as u32));
        assert_eq!(spread_cpus(&[0, 1, 2, 3], 2, paired), vec![0, 2]);
        assert_eq!(spread_cpus(&[0, 1, 2, 3], 4, paired), vec![0, 2, 1, 3]);
        assert_eq!(spread_cpus(&[5, 7], 2, |_| None), vec![5, 7]);
    }

    #[test]
    fn io_uring_errors_say_what_to_do() {
        let eperm = || Err(io::Error::from_raw_os_error(libc::EPERM));
        assert!(io_uring_verdict(Some(0), Ok(())).is_ok());
        assert!(io_uring_verdict(None, Ok(())).is_ok());
        assert!(matches!(
            io_uring_verdict(Some(2), Ok(())),
            Err(PreflightError::IoUringDisabled)
        ));
        assert!(matches!(
            io_uring_verdict(Some(1), eperm()),
            Err(PreflightError::IoUringRestricted)
        ));
        assert!(
            io_uring_verdict(Some(1), Ok(())).is_ok(),
            "members of io_uring_group pass"
        );
        let blocked = io_uring_verdict(Some(0), eperm()).map_err(|e| e.to_string());
        assert!(
            blocked.is_err_and(|m| m.starts_with("io_uring is blocked by a seccomp filter")
                && m.contains("io_uring_enter"))
        );
        let missing = io_uring_verdict(None, Err(io::Error::from_raw_os_error(libc::ENOSYS)))
            .map_err(|e| e.to_string());
        assert!(missing.is_err_and(|m| m.contains("Linux 5.8")));
    }

    #[test]
    fn spool_dir_is_created_and_probed() {
        let dir = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(e) => panic!("{e}"),
        };
        let spool = dir.path().join("a/b/spool");
        assert!(check_spool_dir(&spool).is_ok());
        assert!(spool.is_dir());
        assert_eq!(
            fs::read_dir(&spool).map(|entries| entries.count()).ok(),
            Some(0),
            "probe removed"
        );
    }

    #[test]
    fn spool_errors_name_the_path() {
        let dir = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(e) => panic!("{e}"),
        };
        let file = dir.path().join("not-a-dir");
        assert!(fs::write(&file, b"x").is_ok());
        let message = check_spool_dir(&file.join("spool")).map_err(|e| e.to_string());
        let expected = format!(
            "spool directory {}/spool: cannot create it: ",
            file.display()
        );
        assert!(
            message.as_ref().is_err_and(|m| m.starts_with(&expected)),
            "{message:?}"
        );
    }

    fn source(name: &str, address: [u8; 4]) -> SourceSection {
        SourceSection {
            warmup: None,
            name: name.to_owned(),
            address: IpAddr::from(address),
            ehlo: "mta.example.test".to_owned(),
        }
    }

    #[test]
    fn loopback_sources_are_configured_here() {
        // All of 127.0.0.0/8 is local on Linux.
        for address in [[127, 0, 0, 2], [127, 0, 0, 3], [127, 0, 0, 4]] {
            let checked = check_source(&source("lo", address)).map_err(|e| e.to_string());
            assert_eq!(checked, Ok(()));
        }
    }

    #[test]
    fn a_source_address_from_elsewhere_is_named_with_the_fix() {
        // 192.0.2.0/24 is TEST-NET-1 (RFC 5737): never configured.
        let message = check_source(&source("ip1", [192, 0, 2, 55])).map_err(|e| e.to_string());
        assert!(
            message.as_ref().is_err_and(|m| m
                .starts_with("source ip1: address 192.0.2.55 is not configured on this machine: ")),
            "{message:?}"
        );
    }

    #[test]
    fn this_machine_passes_the_probes() {
        // The test machines run io_uring (the daemon's own tests need it),
        // so the probe and affinity calls must succeed here.
        assert!(probe_io_uring().is_ok());
        assert!(allowed_cpus().is_ok_and(|cpus| !cpus.is_empty()));
    }
}
