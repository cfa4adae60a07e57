//! petrel's daemon: one pinned glommio executor per planned CPU, each a
//! shard that recovers and owns its spool, runs its listeners and sessions,
//! and stops cleanly on SIGTERM or SIGINT.
//!
//! It owns process-wide start-up and shutdown; everything on the mail path
//! runs inside a shard and shares nothing with the other shards.
//! Must never: run mail-path work itself, or keep running shards after
//! one of them has failed (a partial MTA would leave that shard's mail
//! unseen).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use glommio::{LocalExecutorBuilder, Placement};
use nix::sys::signal::{SigSet, Signal};

use crate::clock::Clock;
use crate::config::Config;
use crate::preflight::Plan;

/// Why the daemon stopped with a failure.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("starting shard {shard}: {source}")]
    Executor {
        shard: usize,
        #[source]
        source: glommio::GlommioError<()>,
    },
    #[error("shard {shard}: {why}")]
    Shard {
        shard: usize,
        #[source]
        why: crate::shard::ShardError,
    },
    #[error("shard {0} panicked")]
    Panicked(usize),
    #[error("spool directory {}: shard directory {dir} belongs to a larger shard count and still holds segments; run with at least {needed} shards to drain it", path.display())]
    OrphanShard {
        path: PathBuf,
        dir: String,
        needed: u32,
    },
    #[error("blocking signals: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Recipients(#[from] crate::hosted::HostedError),
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminError),
    #[error("accounting log {}: {source}", path.display())]
    Accounting {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("operator's pauses: {0}")]
    Pauses(#[from] crate::queue::pauses::PausesError),
}

/// Refuses to start when a spool holds shard directories beyond the
/// configured shard count with segments in them: their mail would sit
/// unseen. (Each shard's log has its own sequence; merging two logs is not
/// done silently.)
fn check_orphan_shards(spool: &Path, shards: usize) -> Result<(), DaemonError> {
    let Ok(entries) = std::fs::read_dir(spool) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(n) = spool_format::parse_shard_dir_name(&name) else {
            continue;
        };
        if (n as usize) < shards {
            continue;
        }
        let has_segments = crate::spool::recovery::list_segments(&e.path())
            .map(|s| !s.is_empty())
            .unwrap_or(false);
        if has_segments {
            return Err(DaemonError::OrphanShard {
                path: spool.to_path_buf(),
                dir: name,
                needed: n + 1,
            });
        }
    }
    Ok(())
}

/// Blocks SIGTERM and SIGINT in every thread (the shard threads inherit the
/// mask), so that only the waiting thread ever sees them.
fn block_signals() -> Result<SigSet, DaemonError> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.add(Signal::SIGHUP);
    set.thread_block()
        .map_err(|errno| DaemonError::Signals(errno.into()))?;
    Ok(set)
}

/// The number of the signal that arrived (0 if the wait failed, which it
/// cannot with a set of valid signals; the daemon stops either way).
fn wait_for_signal(set: &SigSet) -> i32 {
    set.wait().map_or(0, |sig| sig as i32)
}

/// Sets the stop flag when dropped: a shard that returns or panics takes
/// the daemon down with it instead of leaving the others running alone.
struct StopOnExit(Arc<AtomicBool>);

impl Drop for StopOnExit {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Runs the daemon in the foreground until SIGTERM or SIGINT; SIGHUP
/// reloads the configuration from `path` (the file it was started with).
/// `dkim` is the table of signers loaded from `config`, shared by every
/// shard.
pub fn run(
    config: Config,
    dkim: crate::dkim::SignerTable,
    plan: Plan,
    path: Option<&Path>,
) -> Result<(), DaemonError> {
    check_orphan_shards(&config.spool.path, plan.shards)?;
    // Every thread started from here on but the shards (pinned each to
    // its CPU) inherits this: the helpers keep off the shards' CPUs when
    // there are others.
    crate::preflight::pin_helpers(&plan.helper_cpus);
    let set = block_signals()?;
    let stop = Arc::new(AtomicBool::new(false));
    let config = Arc::new(config);
    let dkim = Arc::new(dkim);
    // The users files, the alias file and the SRS secret (made here at
    // first start), read once for every shard.
    let recipients =
        crate::hosted::Recipients::load(&config, crate::hosted::Secret::MakeIfMissing)?;
    let (users, aliases) = recipients.counts();
    if !config.domain.is_empty() {
        tracing::info!(
            domains = config.domain.len(),
            users,
            aliases,
            "hosted domains"
        );
    }
    let recipients = Arc::new(recipients);
    // One clock for every shard: their monotonic times agree.
    let clock = Clock::new();
    // Today's warm-up counts are back in their cells before any shard
    // sends.
    let warmup = crate::outbound::warmup::Store::start(&config, clock);
    // The accounting log's writer, before any shard records (started
    // here, it runs on no shard's CPU).
    let a = &config.accounting;
    let accounting = crate::accounting::Accounting::start(&a.path, a.format, a.rotation())
        .map_err(|source| DaemonError::Accounting {
            path: a.path.clone(),
            source,
        })?;
    // The recorder exists before any shard registers a metric; the admin
    // endpoint is bound before any mail moves, so a taken port stops the
    // start. Without an admin endpoint nothing could read the metrics:
    // none is recorded (every handle is a no-op).
    // The operator's pauses wait in every shard's inbox, answered before
    // its delivery takes a turn.
    let (controls, shard_controls) = crate::control::channels(plan.shards);
    let pauses = crate::queue::pauses::load(&config.spool.path)?;
    if !pauses.is_empty() {
        tracing::info!(
            pauses = pauses.len(),
            "destinations paused by the operator stay paused"
        );
        let set = Arc::new(pauses.clone());
        controls.post_queues(&crate::queue::api::QueueRequest::Pauses(set));
    }
    let recorder = config.admin.address.and_then(|_| crate::metrics::install());
    let admin = match recorder {
        Some(handle) => {
            let queue = crate::admin::QueueAdmin::new(controls, &config, pauses);
            let log = accounting.as_ref().map(|a| a.recorder());
            crate::admin::Admin::start(&config.admin, handle, clock, queue, log)?
        }
        None => None,
    };
    // The DKIM signing threads, if any, before a shard can sign.
    crate::signing_threads::start(config.signing.threads);
    // READY=1 once every shard listens, and the watchdog.
    let watch = crate::notify::Watch::start(plan.shards, stop.clone());
    let published = crate::reload::Published::new();
    let mut handles = Vec::new();
    let cpus = plan.cpus.iter().take(plan.shards);
    for ((shard, &cpu), control) in cpus.enumerate().zip(shard_controls) {
        let (config, stop, watch) = (config.clone(), stop.clone(), watch.shard(shard));
        let reloads = published.clone();
        let dkim = dkim.clone();
        let recipients = recipients.clone();
        let recorder = accounting.as_ref().map(|a| a.recorder());
        let h = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("petrel-shard-{shard}"))
            .io_memory(plan.io_memory)
            .spawn(move || async move {
                // However the shard ends (error or panic), the others stop
                // too: a partial MTA would leave this shard's mail unseen.
                let _stop_all = StopOnExit(stop.clone());
                let links = crate::shard::Links {
                    watch,
                    reloads,
                    control,
                    accounting: recorder,
                    dkim,
                    recipients,
                };
                crate::shard::run(shard, config, stop, clock, links).await
            })
            .map_err(|source| DaemonError::Executor { shard, source })?;
        handles.push(h);
    }
    // The signal waiter runs on its own thread so that a shard failing at
    // start-up also ends the wait (the main thread joins the shards).
    let waiter_stop = stop.clone();
    let (started, path) = (config.clone(), path.map(Path::to_path_buf));
    std::thread::spawn(move || {
        let mut sig = wait_for_signal(&set);
        while sig == Signal::SIGHUP as i32 {
            crate::reload::on_hangup(path.as_deref(), &started, &published);
            sig = wait_for_signal(&set);
        }
        tracing::info!(
            signal = sig,
            "stopping: no new connections, finishing sessions"
        );
        crate::notify::stopping();
        waiter_stop.store(true, Ordering::SeqCst);
    });
    let mut first_error = None;
    for (shard, h) in handles.into_iter().enumerate() {
        let result = match h.join() {
            Ok(Ok(())) => continue,
            Ok(Err(why)) => DaemonError::Shard { shard, why },
            Err(_) => DaemonError::Panicked(shard),
        };
        // One shard failing stops the others: a partial MTA is worse than a
        // restart by systemd.
        stop.store(true, Ordering::SeqCst);
        first_error.get_or_insert(result);
    }
    if let Some(store) = warmup {
        store.stop();
    }
    if let Some(admin) = admin {
        admin.stop();
    }
    if let Some(accounting) = accounting {
        accounting.stop();
    }
    match first_error {
        Some(e) => Err(e),
        None => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}
