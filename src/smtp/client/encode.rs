//! Body encoding for DATA: dot-stuffing (RFC 5321 4.5.2) and line ends;
//! for BDAT (RFC 3030), line ends only.
//!
//! Owns: turning message octets, in chunks of any size, into the DATA
//! stream or BDAT chunk contents, with two bits of state carried across
//! chunks (at a line start; a CR was just written).
//! Must never: emit a bare CR or LF (each becomes CRLF, so no receiver can
//! be smuggled a different end of data, and no strict receiver refuses the
//! message), or emit `CRLF.CRLF` before `finish`.

use memchr::memchr2;

/// Resumable DATA encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyEncoder {
    line_start: bool,
    /// A CR went out; its LF is owed whatever comes next.
    after_cr: bool,
    /// DATA needs dot-stuffing; BDAT counts octets instead.
    stuff: bool,
}

impl Default for BodyEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl BodyEncoder {
    /// The DATA command's CRLF puts the body at a line start.
    pub fn new() -> Self {
        BodyEncoder {
            line_start: true,
            after_cr: false,
            stuff: true,
        }
    }

    /// For BDAT chunks: line ends made CRLF, no dot-stuffing.
    pub fn for_bdat() -> Self {
        BodyEncoder {
            stuff: false,
            ..Self::new()
        }
    }

    /// Appends `chunk`, stuffed and with line ends made CRLF, to `out`.
    pub fn encode(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        out.reserve(chunk.len() + chunk.len() / 64 + 2);
        let mut i = 0;
        while let Some(&b) = chunk.get(i) {
            if self.after_cr {
                self.after_cr = false;
                self.line_start = true;
                out.push(b'\n');
                if b == b'\n' {
                    i += 1;
                    continue;
                }
            }
            if self.stuff && self.line_start && b == b'.' {
                out.push(b'.');
            }
            self.line_start = false;
            let rest = &chunk[i..];
            let stop = memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
            out.extend_from_slice(&rest[..stop]);
            i += stop;
            match rest.get(stop) {
                Some(b'\r') => {
                    out.push(b'\r');
                    self.after_cr = true;
                    i += 1;
                }
                Some(_) => {
                    // A bare LF: give it the CR it lacks.
                    out.extend_from_slice(b"\r\n");
                    self.line_start = true;
                    i += 1;
                }
                None => {}
            }
        }
    }

    /// Ends the body: completes the last line, then `.CRLF` (DATA only).
    /// The encoder is ready for the next body afterwards.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.end_line(out);
        if self.stuff {
            out.extend_from_slice(b".\r\n");
        }
        *self = BodyEncoder {
            stuff: self.stuff,
            ..Self::new()
        };
    }

    /// The body ends with a line end, as it must over DATA, so both ways of
    /// sending deliver the same octets.
    fn end_line(&mut self, out: &mut Vec<u8>) {
        if self.after_cr {
            out.push(b'\n');
        } else if !self.line_start {
            out.extend_from_slice(b"\r\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(chunks: &[&[u8]]) -> Vec<u8> {
        let mut e = BodyEncoder::new();
        let mut out = Vec::new();
        for c in chunks {
            e.encode(c, &mut out);
        }
        e.finish(&mut out);
        out
    }

    #[test]
    fn empty_body() {
        assert_eq!(encode(&[]), b".\r\n");
        assert_eq!(encode(&[b""]), b".\r\n");
    }

    #[test]
    fn stuffing_at_line_starts_only() {
        assert_eq!(
            encode(&[b".a\r\nb.c\r\n..\r\n"]),
            b"..a\r\nb.c\r\n...\r\n.\r\n"
        );
        assert_eq!(encode(&[b"."]), b"..\r\n.\r\n");
    }

    #[test]
    fn bare_cr_and_lf_become_crlf() {
        assert_eq!(encode(&[b"a\rb\nc"]), b"a\r\nb\r\nc\r\n.\r\n");
        assert_eq!(encode(&[b"a\r\r\n"]), b"a\r\n\r\n.\r\n");
        assert_eq!(encode(&[b"\n.\r"]), b"\r\n..\r\n.\r\n");
    }

    #[test]
    fn state_crosses_chunks() {
        assert_eq!(encode(&[b"a\r", b"\n.b"]), b"a\r\n..b\r\n.\r\n");
        assert_eq!(encode(&[b"a\r", b".b"]), b"a\r\n..b\r\n.\r\n");
        assert_eq!(
            encode(&[b"a\n", b"", b".", b"\r", b"\n"]),
            b"a\r\n..\r\n.\r\n"
        );
    }

    #[test]
    fn bdat_mode_does_not_stuff() {
        let mut e = BodyEncoder::for_bdat();
        let mut out = Vec::new();
        e.encode(b".a\n.", &mut out);
        e.finish(&mut out);
        assert_eq!(out, b".a\r\n.\r\n");
        out.clear();
        e.finish(&mut out);
        assert_eq!(out, b"", "still in BDAT mode, at a line start");
    }

    #[test]
    fn smuggling_sequences_are_neutralised() {
        // <LF>.<LF> and <CR>.<CR> must not end the data at any receiver.
        assert_eq!(encode(&[b"x\n.\ny"]), b"x\r\n..\r\ny\r\n.\r\n");
        assert_eq!(encode(&[b"x\r.\ry"]), b"x\r\n..\r\ny\r\n.\r\n");
    }
}
