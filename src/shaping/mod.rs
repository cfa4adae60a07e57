//! The decisions of shaping outbound traffic per egress source ×
//! destination, as pure building blocks: which source sends next, how
//! fast a path may send, what a throttling reply does to a path, and how
//! much a new source may send on each day of its warm-up.
//!
//! Owns: the arithmetic and the state of those decisions, each on time
//! given as an input (`now_ms`).
//! Must never: read the clock, sleep, do I/O or hold a lock, so that a
//! test can run a day of a provider's throttling in milliseconds on a
//! virtual clock, and a shard never waits on another.

pub mod backoff;
pub mod rate;
pub mod warmup;
pub mod weighted;
