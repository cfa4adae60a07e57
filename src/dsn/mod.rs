//! Delivery status notifications: bounces, delay notices and success
//! reports as RFC 3464 `multipart/report` messages (RFC 6522), honouring
//! the RFC 3461 parameters the sender gave (NOTIFY, RET, ENVID, ORCPT) and
//! the RFC 6533 forms for SMTPUTF8 mail.
//!
//! Owns: deciding whether a notice may be sent ([`should_notify`],
//! [`must_not_bounce`]), loop detection ([`is_looping`]) and the text of
//! the notice ([`write_dsn`]).
//! Must never: do I/O or read the clock (the caller passes `now`), need
//! the original message in one buffer (it reads the spool chunks as they
//! are), or write anything but CRLF lines of at most 998 octets, whatever
//! the original message or the remote server sent.
//!
//! The caller sends the notice with the null reverse path (`MAIL FROM:<>`),
//! so that a notice is never answered by another one, with BODY=8BITMIME
//! when [`DsnSummary::eight_bit`] and SMTPUTF8 when
//! [`DsnSummary::smtputf8`].

#![deny(unsafe_code)]

mod boundary;
mod fields;
mod lines;
mod loops;
mod message;
mod notify;
mod original;
mod report;
mod text;
mod types;

#[cfg(test)]
mod tests;

pub use crate::smtp::xtext::{decode_orcpt, decode_xtext, Orcpt, XtextError};
pub use loops::is_looping;
pub use message::write_dsn;
pub use notify::{must_not_bounce, should_notify, NotifyKind};
pub use types::{
    Action, Diagnostic, DsnError, DsnInput, DsnSummary, RecipientReport, Returned, Status,
    DEFAULT_MAX_FULL_LEN, DEFAULT_MAX_RECEIVED,
};
