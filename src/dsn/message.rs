//! Assembles a notice: the top-level header and the three parts of the
//! `multipart/report`.
//!
//! Owns: the layout of the notice and the choices it makes (kind, how much
//! of the original returns, global or not).
//! Must never: write a notice to the null reverse path, or a line that did
//! not come through [`super::fields`] or [`super::original`].

use super::boundary;
use super::fields::{push_address, write_field};
use super::lines::Scope;
use super::notify::must_not_bounce;
use super::original::{total_len, write_original};
use super::report::write_status_body;
use super::text::write_text_body;
use super::types::{Action, DsnError, DsnInput, DsnSummary, Returned};
use super::NotifyKind;
use crate::smtp::received::{format_date, DATE_LEN};
use spool_format::Ret;

/// The kind of the notice: a failure if anything failed, else a delay if
/// anything is delayed, else a success report.
fn kind_of(input: &DsnInput<'_>) -> NotifyKind {
    let has = |a: Action| input.recipients.iter().any(|r| r.action == a);
    if has(Action::Failed) {
        NotifyKind::Failure
    } else if has(Action::Delayed) {
        NotifyKind::Delay
    } else {
        NotifyKind::Success
    }
}

/// RET=FULL or no RET returns the whole message in a failure notice when
/// it is at most `max_full_len` octets; RET=HDRS, larger messages, and
/// delay and success notices (RFC 3461 4.3 ties RET to failures; a sender
/// has no use for a second copy of a message still on its way) return the
/// header section only.
fn returned(input: &DsnInput<'_>, kind: NotifyKind) -> Returned {
    let len = total_len(input.original);
    if len == 0 {
        Returned::Nothing
    } else if kind == NotifyKind::Failure && input.ret != Ret::Headers && len <= input.max_full_len
    {
        Returned::Full
    } else {
        Returned::Headers
    }
}

/// A notice is global (RFC 6533) when the original was SMTPUTF8 or any
/// address in it is not ASCII: only then may fields carry raw UTF-8.
fn is_global(input: &DsnInput<'_>) -> bool {
    input.smtputf8
        || !input.reverse_path.is_ascii()
        || input
            .recipients
            .iter()
            .any(|r| !r.address.is_ascii() || !r.orcpt.is_ascii())
}

fn check_names(input: &DsnInput<'_>) -> Result<(), DsnError> {
    let host_ok = |b: u8| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b);
    let h = input.hostname.as_bytes();
    if h.is_empty() || h.len() > 255 || !h.iter().all(|&b| host_ok(b)) {
        return Err(DsnError::BadHostname);
    }
    let id_ok = |b: u8| b.is_ascii_alphanumeric() || b"-._".contains(&b);
    let u = input.unique_id.as_bytes();
    if u.is_empty() || u.len() > 64 || !u.iter().all(|&b| id_ok(b)) {
        return Err(DsnError::BadUniqueId);
    }
    Ok(())
}

fn subject(kind: NotifyKind) -> &'static str {
    match kind {
        NotifyKind::Failure => "Undelivered Mail Returned to Sender",
        NotifyKind::Delay => "Delayed Mail (still being retried)",
        NotifyKind::Success => "Successful Mail Delivery Report",
    }
}

/// The reverse path as the notice's `To:` address, without any angle
/// brackets the caller left on.
fn recipient_of(reverse_path: &[u8]) -> &[u8] {
    let t = reverse_path.trim_ascii();
    t.strip_prefix(b"<")
        .and_then(|t| t.strip_suffix(b">"))
        .unwrap_or(t)
}

struct Layout<'a> {
    kind: NotifyKind,
    global: bool,
    eight_bit: bool,
    boundary: &'a str,
    message_id: &'a str,
}

fn write_top(out: &mut Vec<u8>, input: &DsnInput<'_>, l: &Layout<'_>) {
    let from = format!("Mail Delivery System <MAILER-DAEMON@{}>", input.hostname);
    write_field(out, "From", from.as_bytes());
    let mut to = b"<".to_vec();
    push_address(&mut to, recipient_of(input.reverse_path), l.global);
    to.push(b'>');
    write_field(out, "To", &to);
    write_field(out, "Subject", subject(l.kind).as_bytes());
    let mut buf = [0u8; DATE_LEN];
    write_field(
        out,
        "Date",
        format_date(input.now_unix, &mut buf).as_bytes(),
    );
    write_field(out, "Message-ID", format!("<{}>", l.message_id).as_bytes());
    // RFC 3834 5: keeps auto-responders from answering the notice.
    write_field(out, "Auto-Submitted", b"auto-replied");
    write_field(out, "MIME-Version", b"1.0");
    let report_type = if l.global {
        "global-delivery-status"
    } else {
        "delivery-status"
    };
    let ct = format!(
        "multipart/report; report-type={report_type}; boundary=\"{}\"",
        l.boundary
    );
    write_field(out, "Content-Type", ct.as_bytes());
    if l.eight_bit {
        write_field(out, "Content-Transfer-Encoding", b"8bit");
    }
    out.extend_from_slice(b"\r\nThis is a MIME-encapsulated message.\r\n");
}

/// Starts a part: the delimiter line, then the part's header fields.
fn open_part(out: &mut Vec<u8>, boundary: &str, fields: &[(&str, &[u8])]) {
    out.extend_from_slice(b"\r\n--");
    out.extend_from_slice(boundary.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in fields {
        write_field(out, name, value);
    }
    out.extend_from_slice(b"\r\n");
}

fn enclosed_type(returned: Returned, global: bool) -> &'static str {
    match (returned, global) {
        (Returned::Full, false) => "message/rfc822",
        (Returned::Full, true) => "message/global",
        (_, false) => "text/rfc822-headers",
        (_, true) => "message/global-headers",
    }
}

fn write_parts(out: &mut Vec<u8>, input: &DsnInput<'_>, l: &Layout<'_>, returned: Returned) {
    let (charset, cte): (&[u8], &[u8]) = if l.global {
        (b"text/plain; charset=utf-8", b"8bit")
    } else {
        (b"text/plain; charset=us-ascii", b"7bit")
    };
    let text_fields = [
        ("Content-Type", charset),
        ("Content-Description", b"Notification".as_slice()),
        ("Content-Transfer-Encoding", cte),
    ];
    open_part(out, l.boundary, &text_fields);
    write_text_body(out, input, l.kind, returned, l.global);
    let status_type: &[u8] = if l.global {
        b"message/global-delivery-status"
    } else {
        b"message/delivery-status"
    };
    let status_fields = [
        ("Content-Type", status_type),
        ("Content-Description", b"Delivery report".as_slice()),
    ];
    open_part(out, l.boundary, &status_fields);
    write_status_body(out, input, l.global);
    if returned != Returned::Nothing {
        let scope = if returned == Returned::Full {
            Scope::Whole
        } else {
            Scope::Headers
        };
        let ct = enclosed_type(returned, l.global).as_bytes();
        let cte: &[u8] = if l.eight_bit { b"8bit" } else { b"7bit" };
        open_part(
            out,
            l.boundary,
            &[("Content-Type", ct), ("Content-Transfer-Encoding", cte)],
        );
        write_original(out, input.original, scope);
    }
    out.extend_from_slice(b"\r\n--");
    out.extend_from_slice(l.boundary.as_bytes());
    out.extend_from_slice(b"--\r\n");
}

/// Appends a complete RFC 5322 notice (RFC 3464 `multipart/report`) about
/// `input.recipients` to `out`, addressed to the original reverse path.
///
/// The notice is sent from the null reverse path by the caller. On error
/// nothing is appended.
pub fn write_dsn(out: &mut Vec<u8>, input: &DsnInput<'_>) -> Result<DsnSummary, DsnError> {
    if must_not_bounce(input.reverse_path) {
        return Err(DsnError::NullSender);
    }
    if input.recipients.is_empty() {
        return Err(DsnError::NoRecipients);
    }
    check_names(input)?;
    let kind = kind_of(input);
    let returned = returned(input, kind);
    let global = is_global(input);
    let message_id = format!("{}@{}", input.unique_id, input.hostname);
    let enclosed = match returned {
        Returned::Full => Some((input.original, Scope::Whole)),
        Returned::Headers => Some((input.original, Scope::Headers)),
        Returned::Nothing => None,
    };
    let chosen = boundary::choose(&message_id, enclosed).ok_or(DsnError::NoBoundary)?;
    let layout = Layout {
        kind,
        global,
        // UTF-8 in our own fields is 8-bit content too.
        eight_bit: chosen.eight_bit || global,
        boundary: &chosen.boundary,
        message_id: &message_id,
    };
    write_top(out, input, &layout);
    write_parts(out, input, &layout, returned);
    Ok(DsnSummary {
        kind,
        returned,
        eight_bit: layout.eight_bit,
        smtputf8: global,
        boundary: chosen.boundary,
    })
}
