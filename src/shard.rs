//! One shard: a pinned executor that owns its spool, its listeners, every
//! session they accept, and its delivery side; and its housekeeping (the
//! spool's clock, free-space checks, compaction) and orderly stop.
//!
//! It must never share anything on the mail path with other shards; the
//! only cross-shard state is the process-wide tables of counts (connections
//! per client IP in `listener`, per destination in `outbound::slots`,
//! failed AUTH per client in `auth_throttle`), the AUTH check threads, the
//! stop flag, its own heartbeat and "listening" notice for `notify`, and
//! its control inbox (answered between turns, never waited on).

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{Users, UsersError};
use crate::clock::Clock;
use crate::config::Config;
use crate::control::{Answerer, ShardControl};
use crate::listener::{self, Listener, ListenerError};
use crate::notify::ShardWatch;
use crate::outbound::Outbound;
use crate::session::SessionContext;
use crate::spool::{ShardSpool, SpoolError};

/// How often a shard looks at the stop flag and refreshes the spool's
/// clock.
pub const TICK: Duration = Duration::from_millis(100);
/// Ticks between free-space checks (a second).
const STORAGE_TICKS: u64 = 10;
/// Ticks between spool compactions (a minute).
const COMPACT_TICKS: u64 = 600;
/// How long sessions and connections are given to finish at a stop.
const DRAIN_MS: u64 = 30_000;

/// Why a shard could not start; the daemon prints it after the shard's
/// number.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    Users(#[from] UsersError),
    #[error(transparent)]
    Listener(#[from] ListenerError),
    /// Delivery could not start (its resolver or its TLS client).
    #[error(transparent)]
    Delivery(#[from] crate::outbound::StartError),
}

/// What ties a shard to the daemon's other threads.
pub struct Links {
    /// Its heartbeat and the READY report.
    pub watch: ShardWatch,
    /// Reloaded configurations.
    pub reloads: Arc<crate::reload::Published>,
    /// The admin API's requests.
    pub control: ShardControl,
    /// The accounting log, when on.
    pub accounting: Option<crate::accounting::Recorder>,
    /// The DKIM signers loaded at start (one table for every shard, read
    /// only); a reload brings its own.
    pub dkim: Arc<crate::dkim::SignerTable>,
    /// The recipient tables of the hosted domains loaded at start; a
    /// reload brings its own.
    pub recipients: Arc<crate::hosted::Recipients>,
}

/// Runs shard `shard` until the stop flag is set, answering its control
/// inbox.
pub async fn run(
    shard: usize,
    config: Arc<Config>,
    stop: Arc<AtomicBool>,
    clock: Clock,
    links: Links,
) -> Result<(), ShardError> {
    let Links {
        watch,
        reloads,
        control,
        accounting,
        dkim,
        recipients,
    } = links;
    // A copy of its own: the shard's reads of it (one per message) never
    // touch a count another core writes.
    let config = Arc::new((*config).clone());
    let accounting = accounting.map(|r| Rc::new(crate::accounting::ShardLog::new(r)));
    let (spool, _lock) = crate::spool::recovery::recover(&config, shard, clock)?;
    let spool_metrics = crate::metrics::SpoolMetrics::new(shard);
    spool.time_syncs(clock, spool_metrics.syncs.clone());
    let users = match &config.auth.users_file {
        Some(path) => {
            let users = Users::load(path)?;
            tracing::info!(shard, users = users.len(), file = %path.display(), "loaded AUTH users");
            Some(Arc::new(users))
        }
        None => None,
    };
    let outbound = if config.delivery.paused {
        tracing::info!(
            shard,
            "delivery is paused: mail is accepted and kept in the spool"
        );
        None
    } else {
        Some(Outbound::start(
            shard,
            spool.clone(),
            config.clone(),
            clock,
            accounting.clone(),
        )?)
    };
    // What waits in the inbox (the operator's pauses, kept in the spool)
    // applies before delivery takes its first turn.
    let answerer = Answerer {
        shard,
        outbound: outbound.clone(),
        spool: spool.clone(),
        config: config.clone(),
    };
    answerer.answer_waiting(&control);
    glommio::spawn_local(answerer.serve(control, stop.clone())).detach();
    let mut listeners = Vec::new();
    for l in &config.listener {
        let tls = listener::acceptor(l).map_err(ListenerError::from)?;
        let server =
            listener::server_config(&config, l, tls.is_some(), users.is_some(), &recipients);
        let sessions = SessionContext::new(
            shard,
            spool.clone(),
            server,
            config.clone(),
            l.name.clone(),
            tls.clone(),
            l.implicit_tls && tls.is_some(),
            users.clone(),
            dkim.clone(),
            clock,
            outbound.clone(),
            accounting.clone(),
        );
        listeners.push(Listener::start(l, sessions)?);
    }
    tracing::info!(shard, listeners = listeners.len(), "shard ready");
    watch.listening();
    let (kept, ()) = futures_lite::future::zip(
        housekeep(Housekeeping {
            shard,
            spool: &spool,
            listeners: &listeners,
            outbound: outbound.as_deref(),
            stop: &stop,
            clock,
            spool_bytes: &spool_metrics.bytes,
            reloads: &reloads,
            accounting: accounting.as_deref(),
        }),
        watch.beat(&stop),
    )
    .await;
    shutdown(shard, &spool, outbound.as_deref(), listeners, clock).await;
    if let Some(log) = &accounting {
        log.flush();
    }
    Ok(kept?)
}

/// What the shard's periodic work looks after.
struct Housekeeping<'a> {
    shard: usize,
    spool: &'a ShardSpool,
    listeners: &'a [Listener],
    outbound: Option<&'a Outbound>,
    stop: &'a AtomicBool,
    clock: Clock,
    spool_bytes: &'a metrics::Gauge,
    reloads: &'a crate::reload::Published,
    /// The shard's accounting lines, posted to the writer every tick.
    accounting: Option<&'a crate::accounting::ShardLog>,
}

/// Runs the shard's periodic work until the stop flag is set: the spool's
/// clock, compaction and free space, and a reloaded configuration.
///
/// A failed fdatasync ends it with an error, after setting the stop flag:
/// the pages it covered may be gone, so the shard stops (its sessions
/// answer 451 to what is in flight) and the daemon exits non-zero.
async fn housekeep(h: Housekeeping<'_>) -> Result<(), SpoolError> {
    let Housekeeping {
        shard,
        spool,
        listeners,
        outbound,
        stop,
        clock,
        spool_bytes,
        reloads,
        accounting,
    } = h;
    let mut ticks = 0u64;
    let mut generation = 0;
    while !stop.load(Ordering::Relaxed) {
        glommio::timer::sleep(TICK).await;
        if spool.has_failed() {
            tracing::error!(
                shard,
                "a spool fdatasync failed: stopping; restart once the disk is checked"
            );
            stop.store(true, Ordering::SeqCst);
            return Err(SpoolError::SyncFailed);
        }
        spool.set_now(clock.wall_ms());
        spool_bytes.set(spool.bytes() as f64);
        if let Some(log) = accounting {
            log.flush();
        }
        if let Some((seen, loaded)) = reloads.newer_than(generation) {
            generation = seen;
            // A copy of its own: the shard's reads of it never touch a
            // count another core writes.
            let config = Arc::new((*loaded.config).clone());
            if let Some(outbound) = outbound {
                outbound.reload(config.clone());
            }
            for l in listeners {
                l.reload(config.clone(), &loaded);
            }
            tracing::debug!(shard, "reloaded configuration in force");
        }
        ticks += 1;
        if ticks % STORAGE_TICKS == 0 {
            for l in listeners {
                l.sessions().refresh_storage();
            }
        }
        if ticks % COMPACT_TICKS == 0 {
            if let Err(e) = spool.compact().await {
                tracing::error!(shard, error = %e, "spool compaction failed");
            }
        }
    }
    Ok(())
}

/// Stops accepting, lets sessions finish (bounded), then stops the spool.
async fn shutdown(
    shard: usize,
    spool: &ShardSpool,
    outbound: Option<&Outbound>,
    listeners: Vec<Listener>,
    clock: Clock,
) {
    let mut drained = Vec::with_capacity(listeners.len());
    for l in listeners {
        drained.push(l.close().await);
    }
    let deadline = clock.monotonic_ms() + DRAIN_MS;
    // Delivery stops opening connections; open ones finish the message
    // they are sending, then QUIT.
    let delivery = async {
        if let Some(ob) = outbound {
            ob.stop(deadline).await;
        }
    };
    let sessions = async {
        while drained.iter().any(|s| s.open_sessions() > 0) && clock.monotonic_ms() < deadline {
            // Sessions waiting for a command are told 421 now; those in the
            // middle of a message may finish it first.
            for s in &drained {
                s.idle.wake();
            }
            glommio::timer::sleep(TICK).await;
        }
    };
    futures_lite::future::zip(delivery, sessions).await;
    spool.shutdown().await;
    tracing::info!(shard, "shard stopped");
}

#[cfg(test)]
mod tests {
    use super::ShardError;

    /// A group commit whose fdatasync fails: the message is not
    /// acknowledged, nothing later is accepted, and the shard's periodic
    /// work ends with the error and stops the daemon.
    #[test]
    fn a_failed_fdatasync_ends_the_shard_with_an_error() {
        use crate::spool::faulty::{Faults, FaultyDisk};
        use crate::spool::SpoolError;
        use std::sync::atomic::{AtomicBool, Ordering};
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("shard-0");
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(1 << 20)
            .spawn(move || async move {
                let disk = FaultyDisk::new(1, Faults::default());
                let disk = std::rc::Rc::new(disk);
                let opts = crate::spool::SpoolOptions {
                    dir,
                    shard: 0,
                    segment_size: 1 << 20,
                };
                let (spool, _, _lock) =
                    crate::spool::recovery::open_shard_on(opts, 1, disk.clone()).expect("open");
                disk.set_faults(Faults {
                    sync_eio: 1000,
                    ..Faults::default()
                });
                let mut env = spool_format::envelope::Envelope::default();
                env.body.push(spool.append_chunk(b"body").expect("chunk"));
                let committed = spool.commit_message(&mut env).await;
                assert!(
                    matches!(committed, Err(SpoolError::SyncFailed)),
                    "{committed:?}"
                );
                assert!(spool.has_failed());
                assert!(spool.append_chunk(b"more").is_err());
                let stop = AtomicBool::new(false);
                let reloads = crate::reload::Published::new();
                let gauge = metrics::Gauge::noop();
                let housekeeping = super::housekeep(super::Housekeeping {
                    shard: 0,
                    spool: &spool,
                    listeners: &[],
                    outbound: None,
                    stop: &stop,
                    clock: crate::clock::Clock::new(),
                    spool_bytes: &gauge,
                    reloads: &reloads,
                    accounting: None,
                });
                // A safety net only: it ends at its first tick.
                let never = async {
                    glommio::timer::sleep(std::time::Duration::from_secs(60)).await;
                    Ok(())
                };
                let ended = futures_lite::future::or(housekeeping, never).await;
                assert!(matches!(ended, Err(SpoolError::SyncFailed)), "{ended:?}");
                assert!(
                    stop.load(Ordering::SeqCst),
                    "the other shards are told to stop"
                );
                spool.shutdown().await;
            })
            .expect("executor")
            .join()
            .expect("join");
    }

    #[test]
    fn start_errors_print_what_they_wrap() {
        let e = ShardError::from(crate::outbound::StartError::from(
            crate::dns::DnsError::NoServers,
        ));
        assert_eq!(e.to_string(), "DNS resolver: no nameservers configured");
        let e = ShardError::from(crate::listener::ListenerError::Listen {
            address: std::net::SocketAddr::from(([127, 0, 0, 1], 25)),
            source: glommio::GlommioError::IoError(std::io::ErrorKind::AddrInUse.into()),
        });
        assert!(
            e.to_string().starts_with("listening on 127.0.0.1:25: "),
            "{e}"
        );
    }
}
