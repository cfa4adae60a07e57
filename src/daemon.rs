//! The daemon: starts one shard per planned CPU and runs until stopped.
//!
//! Placeholder until the shard runtime lands: it only defines the entry
//! point the command line calls.

use crate::config::Config;
use crate::preflight::Plan;

/// Why the daemon stopped with a failure.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("daemon not built yet")]
    NotBuilt,
}

/// Runs the daemon in the foreground until it is told to stop.
pub fn run(config: Config, plan: Plan) -> Result<(), DaemonError> {
    let _ = (config, plan);
    Err(DaemonError::NotBuilt)
}
