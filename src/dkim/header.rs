//! The message's header fields as a signature sees them: split into
//! fields (a field runs on over lines that start with whitespace), and
//! chosen for `h=` from the bottom up (RFC 6376 5.4.2).

use super::canon;
use super::Canon;

/// One header field: its name, and its bytes from the name to its CRLF.
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    pub name: &'a [u8],
    pub raw: &'a [u8],
}

/// The fields of a header section, in order; it ends at the first empty
/// line or at the end of `header`. A line with no colon that continues
/// nothing cannot be signed and is skipped.
pub fn fields(header: &[u8]) -> Vec<Field<'_>> {
    let mut out: Vec<Field<'_>> = Vec::new();
    let mut start = None;
    let mut at = 0;
    while at < header.len() {
        let end = memchr::memchr(b'\n', &header[at..]).map_or(header.len(), |i| at + i + 1);
        let line = &header[at..end];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        let continues = matches!(line[0], b' ' | b'\t');
        if !continues {
            push_field(&mut out, header, start, at);
            start = Some(at);
        }
        at = end;
    }
    push_field(&mut out, header, start, at);
    out
}

fn push_field<'a>(out: &mut Vec<Field<'a>>, header: &'a [u8], start: Option<usize>, end: usize) {
    let Some(start) = start else { return };
    let raw = &header[start..end];
    if let Some(colon) = memchr::memchr(b':', raw) {
        out.push(Field {
            name: raw[..colon].trim_ascii_end(),
            raw,
        });
    }
}

/// The `h=` list for `names`: each name as many times as the message has
/// it, and `From` once more, so that a `From:` added later breaks the
/// signature (5.4.2). Names the message lacks are left out.
pub fn signed_names<'n>(fields: &[Field<'_>], names: &'n [Box<str>]) -> Vec<&'n str> {
    let mut out = Vec::with_capacity(names.len() + 1);
    for name in names {
        let count = count(fields, name);
        let times = count + usize::from(name.eq_ignore_ascii_case("from"));
        out.extend(std::iter::repeat_n(&**name, times));
    }
    out
}

fn count(fields: &[Field<'_>], name: &str) -> usize {
    fields
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case(name.as_bytes()))
        .count()
}

/// Appends the canonical form of the fields `h` names, in its order: the
/// n-th mention of a name takes the n-th instance from the bottom, and a
/// mention beyond the last instance adds nothing (5.4.2).
pub fn signed_fields(canon: Canon, fields: &[Field<'_>], h: &[&str], out: &mut Vec<u8>) {
    for (i, name) in h.iter().enumerate() {
        let before = h[..i]
            .iter()
            .filter(|n| n.eq_ignore_ascii_case(name))
            .count();
        let instance = fields
            .iter()
            .rev()
            .filter(|f| f.name.eq_ignore_ascii_case(name.as_bytes()))
            .nth(before);
        if let Some(field) = instance {
            canon::header_field(canon, field.raw, out);
        }
    }
}
