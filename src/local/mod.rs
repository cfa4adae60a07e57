//! Local delivery for the domains this server hosts (`[[domain]]`): the
//! Maildir writer, the threads it runs on, and the Unix-socket stream LMTP
//! connections run over. The queueing, retries and verdicts are
//! `outbound`'s, as for remote mail: a hosted domain is one more kind of
//! destination there (`outbound::destination`).
//!
//! Must never: take a local part as a path before it has been checked to
//! be one safe file name, or call a recipient delivered before its file
//! and the directory entry naming it are on disk.

pub mod maildir;
pub mod threads;
pub mod unix;
