//! The inputs and outputs of [`super::write_dsn`].
//!
//! Owns: the vocabulary of a notice (action, status, diagnostic).
//! Must never: hold owned copies of the message: everything borrows from
//! the spool and the delivery outcome.

use std::fmt;

use thiserror::Error;

use super::NotifyKind;

/// Above this size the original is returned as headers only, whatever RET
/// asked for: a bounce should not carry a large message back.
pub const DEFAULT_MAX_FULL_LEN: u64 = 1024 * 1024;

/// More `Received:` fields than this means a loop (RFC 5321 6.3 suggests
/// a limit of this order).
pub const DEFAULT_MAX_RECEIVED: usize = 50;

/// RFC 3464 2.3.3 Action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delayed,
    Delivered,
    Relayed,
    Expanded,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
            Action::Expanded => "expanded",
        }
    }
}

/// An RFC 3463 enhanced status code, `class.subject.detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    class: u8,
    subject: u16,
    detail: u16,
}

impl Status {
    /// 5.4.6: routing loop detected.
    pub const LOOP_DETECTED: Status = Status {
        class: 5,
        subject: 4,
        detail: 6,
    };

    /// A code with class 2, 4 or 5 and the other parts at most 999.
    pub const fn new(class: u8, subject: u16, detail: u16) -> Option<Status> {
        if !matches!(class, 2 | 4 | 5) || subject > 999 || detail > 999 {
            return None;
        }
        Some(Status {
            class,
            subject,
            detail,
        })
    }

    /// Parses `5.1.1` (for instance from a remote reply).
    pub fn parse(s: &[u8]) -> Option<Status> {
        let text = std::str::from_utf8(s).ok()?;
        let mut parts = text.split('.');
        let mut num = || -> Option<u16> {
            let p = parts.next()?;
            if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            p.parse().ok()
        };
        let (class, subject, detail) = (num()?, num()?, num()?);
        if parts.next().is_some() {
            return None;
        }
        Status::new(u8::try_from(class).ok()?, subject, detail)
    }

    pub fn class(self) -> u8 {
        self.class
    }

    /// The parts, `(class, subject, detail)`.
    pub fn parts(self) -> (u8, u16, u16) {
        (self.class, self.subject, self.detail)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// What went wrong (or right), in the words of whoever said it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Diagnostic<'a> {
    /// The remote server's reply as received, possibly multi-line; it is
    /// sanitized when written (`Diagnostic-Code: smtp; ...`).
    Smtp(&'a [u8]),
    /// Our own explanation when no server replied (DNS, connection, loop):
    /// `Diagnostic-Code: X-Petrel; ...`.
    Local(&'a [u8]),
}

/// One recipient to report on.
#[derive(Debug, Clone, Copy)]
pub struct RecipientReport<'a> {
    /// The recipient address as delivered to (no angle brackets).
    pub address: &'a [u8],
    /// The ORCPT parameter as received (`addr-type;xtext`), empty if none.
    pub orcpt: &'a [u8],
    pub action: Action,
    pub status: Status,
    /// The host name of the server that gave the final answer.
    pub remote_mta: Option<&'a [u8]>,
    pub diagnostic: Option<Diagnostic<'a>>,
    /// Unix seconds of the last delivery attempt.
    pub last_attempt: Option<i64>,
    /// Unix seconds until which a delayed recipient is retried.
    pub will_retry_until: Option<i64>,
}

/// Everything a notice is written from.
#[derive(Debug, Clone, Copy)]
pub struct DsnInput<'a> {
    /// Our host name: Reporting-MTA, the From address and the Message-ID.
    pub hostname: &'a str,
    /// Unique per notice (letters, digits, `-._`): the Message-ID's left
    /// part, and through it the boundary.
    pub unique_id: &'a str,
    /// The original's queue ID (as its client was told in `250 ... queued
    /// as`): named in the text and in `X-Petrel-Queue-ID`.
    pub queue_id: &'a str,
    pub now_unix: i64,
    /// When the original arrived (the envelope's `received_ms / 1000`).
    pub arrival_unix: i64,
    /// The original reverse path, which receives the notice.
    pub reverse_path: &'a [u8],
    /// ENVID as received (xtext), empty if none.
    pub envid: &'a [u8],
    /// RET as in the envelope.
    pub ret: spool_format::Ret,
    /// The original was sent with SMTPUTF8.
    pub smtputf8: bool,
    /// The recipients this notice reports, all of one kind of outcome.
    pub recipients: &'a [RecipientReport<'a>],
    /// The original message as stored, in chunks.
    pub original: &'a [&'a [u8]],
    /// See [`DEFAULT_MAX_FULL_LEN`].
    pub max_full_len: u64,
}

/// How much of the original a notice carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returned {
    Full,
    Headers,
    /// The original was empty.
    Nothing,
}

/// What the caller needs to know to send a written notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DsnSummary {
    pub kind: NotifyKind,
    pub returned: Returned,
    /// The notice holds 8-bit octets: send it with BODY=8BITMIME.
    pub eight_bit: bool,
    /// The notice uses the RFC 6533 global types and may hold UTF-8 in
    /// header fields: send it with SMTPUTF8.
    pub smtputf8: bool,
    pub boundary: String,
}

/// Why no notice was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DsnError {
    #[error("the null reverse path never receives notices")]
    NullSender,
    #[error("a notice needs at least one recipient")]
    NoRecipients,
    #[error("host name is not usable in a Message-ID")]
    BadHostname,
    #[error("unique id is not usable in a Message-ID")]
    BadUniqueId,
    #[error("no multipart boundary absent from the original could be found")]
    NoBoundary,
}
