//! petrel: a thread-per-core SMTP mail transfer agent.
//!
//! The library holds every stage of the daemon so that integration tests and
//! benchmarks can drive them directly; `src/main.rs` is only the command line.
//! `unsafe` is denied here and allowed only on the single functions that
//! need it (the spool mapping, the io_uring probe), each block with a
//! `SAFETY` note.

#![deny(unsafe_code)]

pub mod accounting;
pub mod admin;
pub mod auth;
pub mod auth_throttle;
pub mod auth_verifier;
pub mod clock;
pub mod config;
pub mod control;
pub mod daemon;
pub mod dkim;
pub mod dns;
pub mod dsn;
pub mod helper_pool;
pub mod hosted;
pub mod listener;
pub mod local;
pub mod metrics;
pub mod notify;
pub mod outbound;
pub mod preflight;
pub mod queue;
pub mod reload;
pub mod schedule;
pub mod session;
pub mod shaping;
pub mod shard;
pub mod signing_threads;
pub mod slot_table;
pub mod smtp;
pub mod spool;
pub mod tls;
pub mod transport;
