//! Signing a whole message as it is stored, in chunks: where its header
//! section ends, the domain of its `From:` field, the keys for that
//! domain, and the `DKIM-Signature` fields they make.
//!
//! Only the header section is copied (it is bounded by [`MAX_HEADER`]);
//! the body is hashed where it lies, chunk by chunk.

use std::sync::Arc;

use super::header::{self, Field};
use super::{MessageSigning, SignError, Signer, SignerTable, Unsigned};

/// A header section longer than this is not signed: copying it would cost
/// more memory per message than any real header needs.
pub const MAX_HEADER: usize = 1 << 20;

/// Where a message's body starts: chunk and offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyStart {
    pub chunk: usize,
    pub offset: usize,
}

/// The `DKIM-Signature` fields (each with its CRLF) to put above the
/// message made of `parts`, signed at `now` (seconds since the Unix
/// epoch); `None` when its `From:` domain has no key.
pub fn sign(table: &SignerTable, parts: &[&[u8]], now: u64) -> Result<Option<String>, SignError> {
    let Some((header, start, signers)) = header_and_signers(parts, |d| table.signers_for(d))?
    else {
        return Ok(None);
    };
    hashed(&signers, parts, start)
        .finish(&header, now)
        .map(Some)
}

/// What [`sign`] does but the private-key operations, which
/// [`Prepared::sign`] does later, on any thread.
pub fn prepare(
    table: &SignerTable,
    parts: &[&[u8]],
    now: u64,
) -> Result<Option<Prepared>, SignError> {
    let Some((header, start, shared)) = header_and_signers(parts, |d| table.shared_signers_for(d))?
    else {
        return Ok(None);
    };
    let signers: Vec<&Signer> = shared.iter().map(|s| &**s).collect();
    let unsigned = hashed(&signers, parts, start).unsigned(&header, now);
    Ok(Some(Prepared {
        fields: shared.into_iter().zip(unsigned).collect(),
    }))
}

/// A message's `DKIM-Signature` fields, each but for its private-key
/// operation, with the key that signs it: small, and free to go to
/// another thread.
pub struct Prepared {
    fields: Vec<(Arc<Signer>, Unsigned)>,
}

impl Prepared {
    /// The fields, signed, in their order.
    pub fn sign(self) -> Result<String, SignError> {
        let mut out = String::new();
        for (signer, field) in self.fields {
            out.push_str(&field.sign(&signer.key)?);
        }
        Ok(out)
    }
}

/// The header section of the message made of `parts`, where its body
/// starts, and the signers `find` gives for its `From:` domain; `None`
/// when there is no such domain or no signer.
#[allow(clippy::type_complexity)]
fn header_and_signers<S>(
    parts: &[&[u8]],
    find: impl FnOnce(&str) -> Vec<S>,
) -> Result<Option<(Vec<u8>, BodyStart, Vec<S>)>, SignError> {
    let (header, start) = header_section(parts)?;
    let fields = header::fields(&header);
    let signers = match from_domain_of(&fields) {
        Some(domain) => find(domain),
        None => return Ok(None),
    };
    drop(fields);
    Ok((!signers.is_empty()).then_some((header, start, signers)))
}

/// The signing of the body of `parts`, which starts at `start`, hashed.
fn hashed<'a>(signers: &'a [&'a Signer], parts: &[&[u8]], start: BodyStart) -> MessageSigning<'a> {
    let mut signing = MessageSigning::new(signers);
    if let Some(first) = parts.get(start.chunk) {
        signing.update(&first[start.offset..]);
        for part in &parts[start.chunk + 1..] {
            signing.update(part);
        }
    }
    signing
}

/// The header section of the message made of `parts` (its fields and the
/// empty line after them, copied), and where its body starts. A message
/// without an empty line is all header, with an empty body.
pub fn header_section(parts: &[&[u8]]) -> Result<(Vec<u8>, BodyStart), SignError> {
    // The start of a message counts as the end of a line, so that a
    // message opening with an empty line has an empty header section.
    let mut seen: Vec<u8> = b"\r\n".to_vec();
    for (chunk, part) in parts.iter().enumerate() {
        let before = seen.len();
        let from = before.saturating_sub(3);
        seen.extend_from_slice(part);
        if let Some(at) = memchr::memmem::find(&seen[from..], b"\r\n\r\n") {
            let end = from + at + 4;
            // The end may come in the chunk that crossed the limit.
            if end - 2 > MAX_HEADER {
                return Err(SignError::HeaderTooLong(MAX_HEADER));
            }
            seen.truncate(end);
            seen.drain(..2);
            let start = BodyStart {
                chunk,
                offset: end - before,
            };
            return Ok((seen, start));
        }
        if seen.len() > MAX_HEADER {
            return Err(SignError::HeaderTooLong(MAX_HEADER));
        }
    }
    seen.drain(..2);
    let start = BodyStart {
        chunk: parts.len(),
        offset: 0,
    };
    Ok((seen, start))
}

/// The domain of the first `From:` field's first address, if it has one.
fn from_domain_of<'a>(fields: &[Field<'a>]) -> Option<&'a str> {
    let field = fields
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case(b"from"))?;
    let colon = memchr::memchr(b':', field.raw)?;
    from_domain(&field.raw[colon + 1..])
}

/// The domain of the first address in a `From:` value: the one in angle
/// brackets if there are any, else the addr-spec itself. Quoted strings
/// and comments are skipped, so a display name such as `"a@b" <c@d>` or
/// `(x@y) c@d` does not count. `None` for an address literal or no
/// address.
pub fn from_domain(value: &[u8]) -> Option<&str> {
    let start = outside(value, 0, b'<').map_or(0, |at| at + 1);
    let at = outside(value, start, b'@')? + 1;
    let len = value[at..]
        .iter()
        .position(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b'>' | b'(' | b',' | b';'))
        .unwrap_or(value.len() - at);
    let domain = std::str::from_utf8(&value[at..at + len]).ok()?;
    (!domain.is_empty() && !domain.starts_with('[')).then_some(domain)
}

/// The first `byte` at or after `from` that is neither in a quoted string
/// nor in a comment.
fn outside(value: &[u8], from: usize, byte: u8) -> Option<usize> {
    let (mut quoted, mut depth, mut escaped) = (false, 0usize, false);
    for (i, &b) in value.iter().enumerate().skip(from) {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' if quoted || depth > 0 => escaped = true,
            b'"' if depth == 0 => quoted = !quoted,
            b'(' if !quoted => depth += 1,
            b')' if !quoted => depth = depth.saturating_sub(1),
            _ if b == byte && !quoted && depth == 0 => return Some(i),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_from_domain_is_that_of_the_address_not_of_a_name_or_comment() {
        for (value, domain) in [
            (" alice@Example.COM\r\n", Some("Example.COM")),
            (
                " Alice <alice@news.example.com>\r\n",
                Some("news.example.com"),
            ),
            (
                " \"a@evil.example\" <b@good.example>\r\n",
                Some("good.example"),
            ),
            (
                " (x@evil.example) b@good.example (y@z)\r\n",
                Some("good.example"),
            ),
            (
                " \"x <y@evil.example>\" <b@good.example>",
                Some("good.example"),
            ),
            (
                " Long name\r\n <b@folded.example>\r\n",
                Some("folded.example"),
            ),
            (" a@one.example, b@two.example\r\n", Some("one.example")),
            (" \"q\\\"@x\"@real.example\r\n", Some("real.example")),
            (" user@[192.0.2.1]\r\n", None),
            (" undisclosed\r\n", None),
            (" <>\r\n", None),
        ] {
            assert_eq!(from_domain(value.as_bytes()), domain, "{value:?}");
        }
    }

    #[test]
    fn the_header_section_is_found_across_chunk_boundaries() {
        let message: &[u8] = b"Received: x\r\nFrom: a@b.example\r\n\r\nbody\r\n\r\nmore\r\n";
        let end = message.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        for split in 0..message.len() {
            let (a, b) = message.split_at(split);
            let parts = [a, b];
            let (header, start) = header_section(&parts).unwrap();
            assert_eq!(header, &message[..end], "split at {split}");
            let mut body = parts[start.chunk][start.offset..].to_vec();
            for part in &parts[start.chunk + 1..] {
                body.extend_from_slice(part);
            }
            assert_eq!(body, &message[end..], "split at {split}");
        }
    }

    #[test]
    fn a_message_without_an_empty_line_is_all_header_and_one_opening_with_it_has_no_field() {
        let (header, start) = header_section(&[b"A: 1\r\n", b"B: 2\r\n"]).unwrap();
        assert_eq!(header, b"A: 1\r\nB: 2\r\n");
        assert_eq!(
            start,
            BodyStart {
                chunk: 2,
                offset: 0
            }
        );
        let (header, start) = header_section(&[b"\r\nbody\r\n"]).unwrap();
        assert_eq!(header, b"\r\n", "only the empty line");
        assert_eq!(
            start,
            BodyStart {
                chunk: 0,
                offset: 2
            }
        );
    }

    #[test]
    fn a_header_section_over_the_limit_is_refused_wherever_it_ends() {
        let line = [b"X: ".as_slice(), &[b'y'; 1000], b"\r\n"].concat();
        let lines = MAX_HEADER / line.len() + 1;
        let header = [line.repeat(lines), b"\r\nbody\r\n".to_vec()].concat();
        for parts in [vec![header.as_slice()], header.chunks(300_000).collect()] {
            assert!(matches!(
                header_section(&parts),
                Err(SignError::HeaderTooLong(MAX_HEADER))
            ));
        }
        // One line less is within the limit.
        let header = [line.repeat(lines - 1), b"\r\n".to_vec()].concat();
        let (copied, _) = header_section(&[&header]).unwrap();
        assert_eq!(copied, header);
    }

    #[test]
    fn a_header_section_without_end_beyond_the_limit_is_refused() {
        let line = [b"X: ".as_slice(), &[b'y'; 1000], b"\r\n"].concat();
        let parts: Vec<&[u8]> = std::iter::repeat_n(line.as_slice(), 1100).collect();
        assert!(matches!(
            header_section(&parts),
            Err(SignError::HeaderTooLong(MAX_HEADER))
        ));
    }
}
