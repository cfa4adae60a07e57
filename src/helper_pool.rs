//! A named pool of helper threads for CPU work a shard must not do on its
//! own core (an argon2 check, an RSA signature): jobs go through a bounded
//! queue to threads allowed on every CPU the process may use, and the
//! shard awaits the answer without blocking its executor.
//! Owns: the threads, their queue and its bound. What a job does, and what
//! its caller does when the queue is full, belong to the caller.
//! Must never: run on a shard's thread, or let jobs queue without bound.

/// Work for the pool.
type Job = Box<dyn FnOnce() + Send>;

/// A pool of threads taking jobs from one bounded queue. Its threads end
/// when it is dropped, once the jobs queued are done.
pub struct HelperPool {
    name: &'static str,
    /// None when no thread could be started.
    queue: Option<flume::Sender<Job>>,
    threads: usize,
}

/// Why a job did not run on the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue holds as many jobs as it may.
    Full,
    /// No thread of the pool is running.
    Down,
}

/// Where a job ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RanOn {
    Pool,
    /// On the caller's thread, because the pool refused it.
    Caller(Refused),
}

impl HelperPool {
    /// Starts `threads` threads named `name`, with room for `queue` jobs
    /// waiting for one. They take the CPUs the process may use, not those
    /// of the thread that starts them (a shard's is pinned to one core).
    pub fn start(name: &'static str, threads: usize, queue: usize) -> HelperPool {
        let (tx, rx) = flume::bounded::<Job>(queue);
        let cpus = rustix::thread::sched_getaffinity(Some(rustix::process::getpid())).ok();
        let mut started = 0;
        for _ in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(name.into())
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
                Err(e) => tracing::error!(pool = name, error = %e, "cannot start a helper thread"),
            }
        }
        HelperPool {
            name,
            queue: (started > 0).then_some(tx),
            threads: started,
        }
    }

    /// The name of the pool's threads.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The threads running.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f` on the pool and awaits its result; refused at once if the
    /// queue is full or no thread runs.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Refused> {
        match self.submit(f) {
            Ok(answer) => answer.recv_async().await.map_err(|_| Refused::Down),
            Err((refused, _, _)) => Err(refused),
        }
    }

    /// Runs `f` on the pool and awaits its result, waiting for room when
    /// the queue is full (so the jobs waiting are bounded by the callers
    /// awaiting them); `None` if no thread runs or the job ended without an
    /// answer.
    pub async fn run_queued<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, answer) = flume::bounded(1);
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.queue.as_ref()?.send_async(job).await.ok()?;
        answer.recv_async().await.ok()
    }

    /// Runs `f` on the pool and awaits its result, or runs it at once on
    /// the caller's thread if the pool refuses it, so that load never
    /// leaves the work undone. `None` only if the job ended without an
    /// answer (it panicked on the pool).
    pub async fn run_or_here<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<(T, RanOn)> {
        let (answer, ran_on) = match self.submit(f) {
            Ok(answer) => (answer, RanOn::Pool),
            Err((refused, job, answer)) => {
                job();
                (answer, RanOn::Caller(refused))
            }
        };
        answer.recv_async().await.ok().map(|value| (value, ran_on))
    }

    /// Queues `f`; when refused, the job (which answers when run) is
    /// handed back with the reason.
    #[allow(clippy::type_complexity)]
    fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<flume::Receiver<T>, (Refused, Job, flume::Receiver<T>)> {
        let (tx, answer) = flume::bounded(1);
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        let Some(queue) = &self.queue else {
            return Err((Refused::Down, job, answer));
        };
        match queue.try_send(job) {
            Ok(()) => Ok(answer),
            Err(flume::TrySendError::Full(job)) => Err((Refused::Full, job, answer)),
            Err(flume::TrySendError::Disconnected(job)) => Err((Refused::Down, job, answer)),
        }
    }
}

#[cfg(test)]
impl HelperPool {
    /// A pool of one thread held busy until `release` has a message or
    /// closes, with its one queue place taken: a pool that is full.
    pub(crate) fn start_full(name: &'static str, release: flume::Receiver<()>) -> HelperPool {
        let pool = HelperPool::start(name, 1, 1);
        let (started, running) = flume::bounded(1);
        let busy = pool.submit(move || {
            let _ = started.send(());
            let _ = release.recv();
        });
        assert!(busy.is_ok());
        running.recv().expect("the thread took the first job");
        assert!(pool.submit(|| ()).is_ok(), "one job waits in the queue");
        pool
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;

    fn thread_name() -> Option<String> {
        std::thread::current().name().map(String::from)
    }

    #[test]
    fn jobs_run_on_the_pool_threads_not_the_caller() {
        let pool = HelperPool::start("petrel-test-pool", 2, 4);
        assert_eq!(pool.threads(), 2);
        let caller = std::thread::current().id();
        let (name, id) = block_on(pool.run(|| (thread_name(), std::thread::current().id())))
            .expect("the pool answers");
        assert_eq!(name.as_deref(), Some("petrel-test-pool"));
        assert_ne!(id, caller);
        let (name, ran_on) = block_on(pool.run_or_here(thread_name)).expect("an answer");
        assert_eq!(name.as_deref(), Some("petrel-test-pool"));
        assert_eq!(ran_on, RanOn::Pool);
    }

    #[test]
    fn a_full_queue_refuses_or_runs_the_job_on_the_caller() {
        let (release, held) = flume::bounded(2);
        let pool = HelperPool::start_full("petrel-test-full", held);
        assert_eq!(block_on(pool.run(|| 1)), Err(Refused::Full));
        let (name, ran_on) = block_on(pool.run_or_here(thread_name)).expect("an answer");
        assert_eq!(ran_on, RanOn::Caller(Refused::Full));
        assert_eq!(name, thread_name(), "run on the caller's thread");
        release.send(()).unwrap();
        // Once the thread is free and the queued job done, jobs go to the
        // pool again.
        for _ in 0..1000 {
            match block_on(pool.run(|| ())) {
                Err(Refused::Full) => std::thread::sleep(std::time::Duration::from_millis(10)),
                other => {
                    assert_eq!(other, Ok(()));
                    break;
                }
            }
        }
        let (name, ran_on) = block_on(pool.run_or_here(thread_name)).expect("an answer");
        assert_eq!(
            (name.as_deref(), ran_on),
            (Some("petrel-test-full"), RanOn::Pool)
        );
    }

    #[test]
    fn a_pool_without_threads_runs_nothing_itself() {
        let pool = HelperPool::start("petrel-test-none", 0, 4);
        assert_eq!(block_on(pool.run(|| 1)), Err(Refused::Down));
        assert_eq!(
            block_on(pool.run_or_here(|| 2)),
            Some((2, RanOn::Caller(Refused::Down)))
        );
    }
}
