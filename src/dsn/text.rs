//! The human-readable part of a notice (RFC 6522 2, first part).
//!
//! Owns: the wording a sender reads.
//! Must never: start a line with anything a MIME parser could take for a
//! boundary: every line starts with a letter, `<` or spaces.

use super::fields::{push_address, push_printable, push_wrapped, MAX_DIAGNOSTIC};
use super::types::{Action, Diagnostic, DsnInput, RecipientReport, Returned};
use super::NotifyKind;
use crate::smtp::received::{format_date, DATE_LEN};
use spool_format::Ret;

fn intro(kind: NotifyKind) -> &'static [&'static str] {
    match kind {
        NotifyKind::Failure => &[
            "Your message could not be delivered to one or more recipients.",
            "This is permanent: it will not be retried. The details follow.",
        ],
        NotifyKind::Delay => &[
            "Your message has not yet been delivered to one or more recipients.",
            "Delivery is still being retried; you do not need to send it again.",
            "If it cannot be delivered in time, you will be told.",
        ],
        NotifyKind::Success => &["Your message was delivered to the recipients listed below."],
    }
}

fn outcome(r: &RecipientReport<'_>) -> String {
    let what = match r.action {
        Action::Failed => "delivery failed".to_string(),
        Action::Delayed => match r.will_retry_until {
            Some(t) => {
                let mut buf = [0u8; DATE_LEN];
                format!(
                    "delivery delayed, retrying until {}",
                    format_date(t, &mut buf)
                )
            }
            None => "delivery delayed, still retrying".to_string(),
        },
        Action::Delivered => "delivered".to_string(),
        Action::Relayed => "relayed to a server that sends no delivery reports".to_string(),
        Action::Expanded => "delivered to a list, which passed it on".to_string(),
    };
    format!("{what} (status {})", r.status)
}

/// The remote reply, line by line, indented.
fn write_diagnostic(out: &mut Vec<u8>, r: &RecipientReport<'_>) {
    let (said, text) = match (r.diagnostic, r.remote_mta) {
        (Some(Diagnostic::Smtp(t)), Some(host)) => {
            let mut l = b"The server ".to_vec();
            push_printable(&mut l, host);
            l.extend_from_slice(b" said:");
            (l, t)
        }
        (Some(Diagnostic::Smtp(t)), None) => (b"The remote server said:".to_vec(), t),
        (Some(Diagnostic::Local(t)), _) => (b"Reason:".to_vec(), t),
        (None, _) => return,
    };
    push_wrapped(out, b"    ", &said);
    let mut written = 0;
    for line in text.split(|&b| b == b'\r' || b == b'\n') {
        if line.is_empty() || written >= MAX_DIAGNOSTIC {
            continue;
        }
        let mut l = Vec::with_capacity(line.len());
        push_printable(&mut l, &line[..line.len().min(MAX_DIAGNOSTIC)]);
        written += l.len();
        push_wrapped(out, b"      ", &l);
    }
}

/// Appends the text of the human-readable part.
pub(super) fn write_text_body(
    out: &mut Vec<u8>,
    input: &DsnInput<'_>,
    kind: NotifyKind,
    returned: Returned,
    global: bool,
) {
    let mut host = b"This is the mail system at host ".to_vec();
    push_printable(&mut host, input.hostname.as_bytes());
    host.push(b'.');
    push_wrapped(out, b"", &host);
    if !input.queue_id.is_empty() {
        let mut id = b"Queue ID of your message: ".to_vec();
        push_printable(&mut id, input.queue_id.as_bytes());
        push_wrapped(out, b"", &id);
    }
    out.extend_from_slice(b"\r\n");
    for line in intro(kind) {
        push_wrapped(out, b"", line.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    for r in input.recipients {
        let mut l = b"<".to_vec();
        push_address(&mut l, r.address, global);
        l.extend_from_slice(b">: ");
        l.extend_from_slice(outcome(r).as_bytes());
        push_wrapped(out, b"", &l);
        write_diagnostic(out, r);
        out.extend_from_slice(b"\r\n");
    }
    let note: &str = match returned {
        Returned::Full => "The original message is attached.",
        Returned::Headers if kind == NotifyKind::Failure && input.ret != Ret::Headers => {
            "The original message is too large to return; its headers are attached."
        }
        Returned::Headers => "The header of the original message is attached.",
        Returned::Nothing => "The original message was empty.",
    };
    push_wrapped(out, b"", note.as_bytes());
}
