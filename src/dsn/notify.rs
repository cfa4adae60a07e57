//! Who gets a notice: RFC 3461 NOTIFY and the null reverse path.
//!
//! Owns: the decision whether a notice of a kind may be sent at all.
//! Must never: decide on configuration (whether delay notices are enabled
//! is the caller's, see [`should_notify`]).

use spool_format::envelope::notify;

/// The kind of event a notice reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotifyKind {
    Failure,
    Delay,
    Success,
}

/// Whether the sender's NOTIFY bits permit a notice of `kind`.
///
/// RFC 3461 4.1: NEVER forbids every notice; without a NOTIFY parameter
/// (`0`) the MTA acts as for FAILURE or FAILURE,DELAY, so a delay notice is
/// permitted here and the caller sends one only when delay notices are
/// configured. Success notices are sent only when asked for.
pub fn should_notify(notify_bits: u8, kind: NotifyKind) -> bool {
    if notify_bits & notify::NEVER != 0 {
        return false;
    }
    if notify_bits == 0 {
        return matches!(kind, NotifyKind::Failure | NotifyKind::Delay);
    }
    let bit = match kind {
        NotifyKind::Failure => notify::FAILURE,
        NotifyKind::Delay => notify::DELAY,
        NotifyKind::Success => notify::SUCCESS,
    };
    notify_bits & bit != 0
}

/// True for the null reverse path, to which nothing is ever sent
/// (RFC 5321 4.5.5 and 6.1): it is what notices themselves are sent from,
/// so answering one could start a loop. Accepts the envelope's form (empty)
/// and the wire form (`<>`).
///
/// A notice written by [`super::write_dsn`] must itself be sent with the
/// null reverse path (`MAIL FROM:<>`); the caller does that.
pub fn must_not_bounce(reverse_path: &[u8]) -> bool {
    let trimmed = reverse_path.trim_ascii();
    trimmed.is_empty() || trimmed == b"<>"
}
