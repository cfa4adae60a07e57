//! Queue administration as an operator sees it: the shapes the admin
//! API's queue endpoints speak (`api`), the pauses kept in
//! `<spool>/paused` (`pauses`), and the `petrel queue` client (`cli`).
//!
//! The work is done on each shard (`outbound::operator`), asked through
//! the control channel (`control`) by the admin endpoint (`admin`).
//! Must never: touch a shard's state from another thread.

pub mod api;
pub mod cli;
pub mod pauses;
