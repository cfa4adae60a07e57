//! Runs a future on a fresh glommio executor (a stand-in for one shard) and
//! returns its result: how tests drive the spool and the resolver, which
//! only work on a shard.

use std::future::Future;

use glommio::{LocalExecutorBuilder, Placement};

/// io_uring buffer memory per test executor: small enough that parallel
/// tests fit in the default 8 MiB RLIMIT_MEMLOCK.
const IO_MEMORY: usize = 1 << 20;

pub fn on_shard<T: Send + 'static, F: Future<Output = T> + 'static>(
    f: impl FnOnce() -> F + Send + 'static,
) -> T {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(IO_MEMORY)
        .spawn(f)
        .expect("executor")
        .join()
        .expect("join")
}
