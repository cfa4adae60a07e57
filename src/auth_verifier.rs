//! Password checks for AUTH, off the shards: argon2 costs tens of
//! milliseconds of CPU per attempt, which on a shard's core would stall
//! every session and delivery there. A small pool of threads of their own
//! (`petrel-auth`, allowed on every CPU the process may use) takes checks
//! from a bounded channel; the shard awaits the answer without blocking
//! its executor.
//! Must never: run on a shard's thread, or let a flood of attempts queue
//! without bound (beyond the queue's capacity an attempt fails at once).

use std::sync::{Arc, OnceLock};

use crate::auth::Users;

/// Threads checking passwords.
const THREADS: usize = 2;
/// Checks waiting for a thread; more fail at once.
const QUEUE: usize = 256;

/// The name of the pool's threads.
pub const THREAD_NAME: &str = "petrel-auth";

/// Work for the pool: a password check, or in tests anything.
type Job = Box<dyn FnOnce() + Send>;

static POOL: OnceLock<Option<flume::Sender<Job>>> = OnceLock::new();

/// Starts the threads on first use. They take the CPUs the process's main
/// thread may use, not those of the shard that happens to start them.
fn pool() -> Option<&'static flume::Sender<Job>> {
    POOL.get_or_init(|| {
        let (tx, rx) = flume::bounded::<Job>(QUEUE);
        let cpus = rustix::thread::sched_getaffinity(Some(rustix::process::getpid())).ok();
        let mut started = 0;
        for _ in 0..THREADS {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(THREAD_NAME.into())
                .spawn(move || {
                    if let Some(cpus) = cpus {
                        let _ = rustix::thread::sched_setaffinity(None, &cpus);
                    }
                    for job in rx.iter() {
                        job();
                    }
                });
            match spawned {
                Ok(_) => started += 1,
                Err(e) => tracing::error!(error = %e, "cannot start an AUTH check thread"),
            }
        }
        (started > 0).then_some(tx)
    })
    .as_ref()
}

/// Runs `f` on the pool and awaits its result; `None` if the pool is busy
/// beyond its queue or could not start.
async fn run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let pool = pool()?;
    let (answer, result) = flume::bounded(1);
    let job: Job = Box::new(move || {
        let _ = answer.send(f());
    });
    if pool.try_send(job).is_err() {
        tracing::warn!("AUTH checks are queued beyond capacity; attempt refused");
        return None;
    }
    result.recv_async().await.ok()
}

/// True if `users` has `user` with this password, checked on the pool;
/// false also if the pool is busy beyond its queue.
pub async fn verify(users: Arc<Users>, user: &[u8], password: &[u8]) -> bool {
    let (user, password) = (user.to_vec(), password.to_vec());
    run(move || users.verify(&user, &password))
        .await
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_run_on_the_pool_threads_not_the_caller() {
        let caller = std::thread::current().id();
        let (name, id) = futures_lite::future::block_on(run(|| {
            let t = std::thread::current();
            (t.name().map(String::from), t.id())
        }))
        .expect("the pool answers");
        assert_eq!(name.as_deref(), Some(THREAD_NAME));
        assert_ne!(id, caller);
    }
}
