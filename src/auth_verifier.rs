//! Password checks for AUTH, off the shards: argon2 costs tens of
//! milliseconds of CPU per attempt, which on a shard's core would stall
//! every session and delivery there. A helper pool of threads of their own
//! (`petrel-auth`, allowed on every CPU the process may use) takes checks
//! from a bounded queue; the shard awaits the answer without blocking
//! its executor.
//! Must never: run on a shard's thread, or let a flood of attempts queue
//! without bound (beyond the queue's capacity an attempt fails at once).

use std::sync::{Arc, LazyLock};

use crate::auth::Users;
use crate::helper_pool::HelperPool;

/// Threads checking passwords.
const THREADS: usize = 2;
/// Checks waiting for a thread; more fail at once.
const QUEUE: usize = 256;

/// The name of the pool's threads.
pub const THREAD_NAME: &str = "petrel-auth";

/// Started on first use.
static POOL: LazyLock<HelperPool> =
    LazyLock::new(|| HelperPool::start(THREAD_NAME, THREADS, QUEUE));

/// True if `users` has `user` with this password, checked on the pool;
/// false also if the pool is busy beyond its queue.
pub async fn verify(users: Arc<Users>, user: &[u8], password: &[u8]) -> bool {
    let (user, password) = (user.to_vec(), password.to_vec());
    match POOL.run(move || users.verify(&user, &password)).await {
        Ok(valid) => valid,
        Err(refused) => {
            tracing::warn!(
                ?refused,
                "AUTH checks are queued beyond capacity; attempt refused"
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_run_on_the_pool_threads_not_the_caller() {
        let caller = std::thread::current().id();
        let (name, id) = futures_lite::future::block_on(POOL.run(|| {
            let t = std::thread::current();
            (t.name().map(String::from), t.id())
        }))
        .expect("the pool answers");
        assert_eq!(name.as_deref(), Some(THREAD_NAME));
        assert_ne!(id, caller);
    }
}
