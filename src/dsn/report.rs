//! The machine-readable part: `message/delivery-status` (RFC 3464 2.2,
//! 2.3) or `message/global-delivery-status` (RFC 6533).
//!
//! Owns: the per-message and per-recipient fields.
//! Must never: write a field value that did not pass [`super::fields`].

use super::fields::{address_value, push_printable, reply_one_line, write_field};
use super::types::{Action, Diagnostic, DsnInput, RecipientReport};
use crate::smtp::received::{format_date, DATE_LEN};
use crate::smtp::xtext::{decode_orcpt, decode_xtext};

fn write_date(out: &mut Vec<u8>, name: &str, unix: i64) {
    let mut buf = [0u8; DATE_LEN];
    write_field(out, name, format_date(unix, &mut buf).as_bytes());
}

/// `Reporting-MTA`, the original's queue ID (an extension field, RFC
/// 3464 2.2), `Original-Envelope-Id` and `Arrival-Date`.
fn write_per_message(out: &mut Vec<u8>, input: &DsnInput<'_>) {
    let mut v = b"dns; ".to_vec();
    push_printable(&mut v, input.hostname.as_bytes());
    write_field(out, "Reporting-MTA", &v);
    if !input.queue_id.is_empty() {
        let mut v = Vec::new();
        push_printable(&mut v, input.queue_id.as_bytes());
        write_field(out, "X-Petrel-Queue-ID", &v);
    }
    // An ENVID that does not decode is left out rather than guessed at;
    // decoded octets are made printable (`+0D+0A` must not end a line).
    if let Ok(envid) = decode_xtext(input.envid) {
        if !envid.is_empty() {
            let mut v = Vec::with_capacity(envid.len());
            push_printable(&mut v, &envid);
            write_field(out, "Original-Envelope-Id", &v);
        }
    }
    write_date(out, "Arrival-Date", input.arrival_unix);
}

fn write_diagnostic(out: &mut Vec<u8>, d: Diagnostic<'_>) {
    let (kind, text): (&[u8], _) = match d {
        Diagnostic::Smtp(t) => (b"smtp; ", t),
        Diagnostic::Local(t) => (b"X-Petrel; ", t),
    };
    let mut v = kind.to_vec();
    v.extend_from_slice(&reply_one_line(text));
    write_field(out, "Diagnostic-Code", &v);
}

fn write_per_recipient(out: &mut Vec<u8>, r: &RecipientReport<'_>, global: bool) {
    if let Ok(orcpt) = decode_orcpt(r.orcpt) {
        let v = address_value(&orcpt.addr_type, &orcpt.address, global);
        write_field(out, "Original-Recipient", &v);
    }
    write_field(
        out,
        "Final-Recipient",
        &address_value("rfc822", r.address, global),
    );
    write_field(out, "Action", r.action.as_str().as_bytes());
    write_field(out, "Status", r.status.to_string().as_bytes());
    if let Some(host) = r.remote_mta.filter(|h| !h.is_empty()) {
        let mut v = b"dns; ".to_vec();
        push_printable(&mut v, host);
        write_field(out, "Remote-MTA", &v);
    }
    if let Some(d) = r.diagnostic {
        write_diagnostic(out, d);
    }
    if let Some(t) = r.last_attempt {
        write_date(out, "Last-Attempt-Date", t);
    }
    if let (Action::Delayed, Some(t)) = (r.action, r.will_retry_until) {
        write_date(out, "Will-Retry-Until", t);
    }
}

/// Appends the body of the delivery-status part: the per-message fields,
/// then one block per recipient, each after an empty line.
pub(super) fn write_status_body(out: &mut Vec<u8>, input: &DsnInput<'_>, global: bool) {
    write_per_message(out, input);
    for r in input.recipients {
        out.extend_from_slice(b"\r\n");
        write_per_recipient(out, r, global);
    }
}
