//! The sessions of one listener that are waiting for a command, so that a
//! stopping shard can end their reads at once (shutting down the read
//! side; the session then answers 421 itself) instead of waiting for
//! their command timeout. Sessions in the middle of a message are left to
//! finish.
//! Must never: touch a descriptor whose session has ended (a session
//! leaves the list before its socket closes).

use std::cell::RefCell;
use std::os::fd::RawFd;

use nix::sys::socket;

/// The waiting sessions of a listener.
#[derive(Default)]
pub struct IdleSessions {
    entries: RefCell<Vec<Option<Entry>>>,
    free: RefCell<Vec<usize>>,
}

/// The descriptor is kept raw: the socket moves into a TLS stream (at
/// STARTTLS, or at once for implicit TLS), and this table outlives every
/// session, so no borrow of it can be stored here; a duplicate descriptor
/// would do, but would double each session's share of RLIMIT_NOFILE.
#[derive(Clone, Copy)]
struct Entry {
    fd: RawFd,
    /// Blocked in a read while waiting for a command.
    idle: bool,
}

impl IdleSessions {
    /// Adds a session's socket; the number is its place in the list.
    pub fn register(&self, fd: RawFd) -> usize {
        let e = Some(Entry { fd, idle: false });
        let mut entries = self.entries.borrow_mut();
        match self.free.borrow_mut().pop() {
            Some(i) => {
                entries[i] = e;
                i
            }
            None => {
                entries.push(e);
                entries.len() - 1
            }
        }
    }

    pub fn set_idle(&self, slot: usize, idle: bool) {
        if let Some(Some(e)) = self.entries.borrow_mut().get_mut(slot) {
            e.idle = idle;
        }
    }

    pub fn unregister(&self, slot: usize) {
        if let Some(e) = self.entries.borrow_mut().get_mut(slot) {
            *e = None;
            self.free.borrow_mut().push(slot);
        }
    }

    /// Ends the reads of every session waiting for a command.
    pub fn wake(&self) {
        for e in self.entries.borrow_mut().iter_mut().flatten() {
            if e.idle {
                // The descriptor is still the session's socket: an entry is
                // idle only while the session is blocked reading from it,
                // and this runs on the same thread. Failure is harmless:
                // the session then ends at its command timeout instead.
                let _ = socket::shutdown(e.fd, socket::Shutdown::Read);
                e.idle = false;
            }
        }
    }
}
