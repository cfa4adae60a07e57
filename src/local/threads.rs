//! The threads a shard's Maildir deliveries run on: creating directories,
//! writing, `fsync` and `rename` block, and on a shard's thread they
//! would stall every session and delivery of that core for as long as the
//! disk takes. Each shard starts its own few threads, on first use, on
//! the CPUs the process may use (not pinned to the shard's), and awaits
//! their answers without blocking its executor.
//! Must never: run a job on the shard's thread, or drop a job without its
//! caller hearing (a job whose thread is gone answers `None`).

use crate::helper_pool::HelperPool;

/// Threads per shard: enough for a few `fsync`s in flight at once.
pub const THREADS: usize = 3;
/// The name of the threads.
pub const THREAD_NAME: &str = "petrel-maildir";

/// Starts one shard's threads (a [`HelperPool`] of [`THREADS`], whose
/// callers wait for room in its queue); `None` when none could start (the
/// error is logged). They end when it is dropped.
pub fn start() -> Option<HelperPool> {
    let pool = HelperPool::start(THREAD_NAME, THREADS, 4 * THREADS);
    (pool.threads() > 0).then_some(pool)
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
                let threads = start().unwrap();
                let (id, name) = threads
                    .run_queued(|| {
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
