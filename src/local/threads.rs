//! The threads a shard's Maildir deliveries run on: creating directories,
//! writing, `fsync` and `rename` block, and on a shard's thread they
//! would stall every session and delivery of that core for as long as the
//! disk takes. Each shard starts its own few threads, on first use, on
//! the CPUs the process may use (not pinned to the shard's), and awaits
//! their answers without blocking its executor.
//! Must never: run a job on the shard's thread, or drop a job without its
//! caller hearing (a job whose thread is gone answers `None`).

/// Threads per shard: enough for a few `fsync`s in flight at once.
pub const THREADS: usize = 3;
/// The name of the threads.
pub const THREAD_NAME: &str = "petrel-maildir";

type Work = Box<dyn FnOnce() + Send>;

/// One shard's threads; they end when it is dropped.
pub struct Threads {
    queue: flume::Sender<Work>,
}

impl Threads {
    /// Starts the threads; `None` when none could start (the error is
    /// logged).
    pub fn start() -> Option<Threads> {
        // Jobs beyond this wait in `run` for room, so the queue is bounded
        // by the delivery tasks awaiting it.
        let (queue, jobs) = flume::bounded::<Work>(4 * THREADS);
        let cpus = rustix::thread::sched_getaffinity(Some(rustix::process::getpid())).ok();
        let started = (0..THREADS)
            .filter(|_| {
                let jobs = jobs.clone();
                let spawned =
                    std::thread::Builder::new()
                        .name(THREAD_NAME.into())
                        .spawn(move || {
                            if let Some(cpus) = cpus {
                                let _ = rustix::thread::sched_setaffinity(None, &cpus);
                            }
                            while let Ok(job) = jobs.recv() {
                                job();
                            }
                        });
                spawned
                    .map_err(|e| tracing::error!(error = %e, "cannot start a Maildir thread"))
                    .is_ok()
            })
            .count();
        (started > 0).then_some(Threads { queue })
    }

    /// Runs `f` on one of the threads and awaits what it returns; `None`
    /// if the threads are gone.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (answer, answered) = flume::bounded(1);
        let work: Work = Box::new(move || {
            let _ = answer.send(f());
        });
        self.queue.send_async(work).await.ok()?;
        answered.recv_async().await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_run_on_the_threads_and_answer() {
        let caller = std::thread::current().id();
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(1 << 20)
            .spawn(move || async move {
                let threads = Threads::start().unwrap();
                let (id, name) = threads
                    .run(|| {
                        let t = std::thread::current();
                        (t.id(), t.name().map(str::to_owned))
                    })
                    .await
                    .unwrap();
                assert_ne!(id, caller);
                assert_eq!(name.as_deref(), Some(THREAD_NAME));
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
