//! Header-field text: sanitizing, folding and address forms.
//!
//! Owns: everything that turns outside text (remote replies, addresses,
//! decoded parameters) into field values that are safe to write.
//! Must never: let CR, LF or another control character through, or write a
//! line longer than [`MAX_LINE`] octets.

/// RFC 5322 2.1.1: at most 998 octets per line, without the CRLF.
pub(super) const MAX_LINE: usize = 998;
/// Where folding starts, as RFC 5322 recommends.
const SOFT_LINE: usize = 78;
/// A remote reply is cut at this length: a hostile server should not make
/// our notices as large as it likes.
pub(super) const MAX_DIAGNOSTIC: usize = 2048;

/// Appends `src` as one line of printable ASCII: tabs become spaces, other
/// non-printable and 8-bit octets `?`, runs of spaces one space (so that a
/// folded line never consists of white space only).
pub(super) fn push_printable(out: &mut Vec<u8>, src: &[u8]) {
    for &b in src {
        let c = match b {
            b'\t' | b' ' => b' ',
            0x21..=0x7e => b,
            _ => b'?',
        };
        if c == b' ' && matches!(out.last(), Some(b' ') | None) {
            continue;
        }
        out.push(c);
    }
}

/// A multi-line SMTP reply as one line: its lines joined by a space,
/// sanitized and cut at [`MAX_DIAGNOSTIC`].
pub(super) fn reply_one_line(reply: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(reply.len().min(MAX_DIAGNOSTIC));
    for line in reply.split(|&b| b == b'\r' || b == b'\n') {
        if out.len() >= MAX_DIAGNOSTIC {
            break;
        }
        if !line.is_empty() && !out.is_empty() {
            out.push(b' ');
        }
        push_printable(&mut out, line);
    }
    while out.last() == Some(&b' ') {
        out.pop();
    }
    out.truncate(MAX_DIAGNOSTIC);
    out
}

/// Writes `name: value` folded at spaces near [`SOFT_LINE`], and split
/// (with a fold, which inserts a space) where a word would pass
/// [`MAX_LINE`]. `value` must hold no CR or LF.
pub(super) fn write_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    let mut col = name.len() + 2;
    // Empty words (a leading, trailing or doubled space) are dropped: a
    // space written after a word that filled the line would pass MAX_LINE.
    let words = value.split(|&b| b == b' ').filter(|w| !w.is_empty());
    for (i, word) in words.enumerate() {
        if i > 0 {
            if col > 1 && col + 1 + word.len() > SOFT_LINE {
                out.extend_from_slice(b"\r\n ");
                col = 1;
            } else {
                out.push(b' ');
                col += 1;
            }
        }
        let mut rest = word;
        while col + rest.len() > MAX_LINE {
            let take = MAX_LINE.saturating_sub(col).max(1).min(rest.len());
            out.extend_from_slice(&rest[..take]);
            out.extend_from_slice(b"\r\n ");
            col = 1;
            rest = &rest[take..];
        }
        out.extend_from_slice(rest);
        col += rest.len();
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `addr` for a human reader or a header field: printable ASCII as
/// is, other characters as UTF-8 when `utf8` allows it, the rest (controls,
/// invalid UTF-8 octets) as `\x{HEX}`.
pub(super) fn push_address(out: &mut Vec<u8>, addr: &[u8], utf8: bool) {
    for chunk in addr.utf8_chunks() {
        for c in chunk.valid().chars() {
            let keep = matches!(c, ' '..='~') || (utf8 && !c.is_ascii() && !c.is_control());
            if keep {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            } else {
                crate::smtp::xtext::push_escape(out, u32::from(c));
            }
        }
        for &b in chunk.invalid() {
            crate::smtp::xtext::push_escape(out, u32::from(b));
        }
    }
}

fn is_plain_ascii(addr: &[u8]) -> bool {
    addr.iter().all(|&b| (0x21..=0x7e).contains(&b))
}

/// An address field value (`Final-Recipient`, `Original-Recipient`):
/// `rfc822; addr` for printable ASCII, else `utf-8; addr` (RFC 6533) in the
/// raw utf-8-address form for global reports and the utf-8-addr-xtext form
/// otherwise, so a non-global report stays ASCII. Other address types (from
/// an ORCPT) keep their type with the value made printable.
pub(super) fn address_value(addr_type: &str, addr: &[u8], global: bool) -> Vec<u8> {
    let mut v = Vec::with_capacity(addr.len() + 8);
    let known = addr_type == "rfc822" || addr_type == "utf-8";
    if !known {
        v.extend_from_slice(addr_type.as_bytes());
        v.extend_from_slice(b"; ");
        push_printable(&mut v, addr);
    } else if is_plain_ascii(addr) {
        v.extend_from_slice(b"rfc822; ");
        v.extend_from_slice(addr);
    } else if global {
        v.extend_from_slice(b"utf-8; ");
        push_address(&mut v, addr, true);
    } else {
        v.extend_from_slice(b"utf-8; ");
        crate::smtp::xtext::push_utf8_addr_xtext(&mut v, addr);
    }
    v
}

/// Appends `indent` and `line` (which holds no CR or LF) as one or more
/// CRLF lines of at most [`MAX_LINE`] octets. The first line starts with
/// `indent`, the ones a long line is split into with `indent` and two
/// spaces, so that no line of ours can start with `--` and look like a
/// boundary.
pub(super) fn push_wrapped(out: &mut Vec<u8>, indent: &[u8], line: &[u8]) {
    const MORE: &[u8] = b"  ";
    let mut rest = line;
    let mut first = true;
    loop {
        let lead = indent.len() + if first { 0 } else { MORE.len() };
        let take = MAX_LINE.saturating_sub(lead).max(1).min(rest.len());
        out.extend_from_slice(indent);
        if !first {
            out.extend_from_slice(MORE);
        }
        out.extend_from_slice(&rest[..take]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[take..];
        first = false;
        if rest.is_empty() {
            break;
        }
    }
}
