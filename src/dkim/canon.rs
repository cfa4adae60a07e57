//! Canonicalization (RFC 6376 section 3.4): the header fields and the body
//! as a signature covers them, and the body hash computed as the body goes
//! by in chunks, so a large body is never held or copied whole.

use ring::digest;

use super::Canon;

/// Appends `field` (one header field, name to its final CRLF) as `canon`
/// reads it. Relaxed (3.4.2): name lower-cased, lines unfolded, runs of
/// whitespace made one space, whitespace around the colon and at the end
/// removed. Simple (3.4.1): unchanged.
pub fn header_field(canon: Canon, field: &[u8], out: &mut Vec<u8>) {
    if canon == Canon::Simple {
        out.extend_from_slice(field);
        return;
    }
    let Some(colon) = field.iter().position(|&b| b == b':') else {
        return;
    };
    let name = field[..colon].trim_ascii_end();
    out.extend(name.iter().map(u8::to_ascii_lowercase));
    out.push(b':');
    let start = out.len();
    let mut space = false;
    for &b in &field[colon + 1..] {
        match b {
            b'\r' | b'\n' => {}
            b' ' | b'\t' => space = true,
            _ => {
                if space && out.len() > start {
                    out.push(b' ');
                }
                space = false;
                out.push(b);
            }
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Held empty lines are hashed this many at a time.
const CRLF_BLOCK: usize = 64;
const CRLFS: [u8; 2 * CRLF_BLOCK] = {
    let mut out = [b'\n'; 2 * CRLF_BLOCK];
    let mut i = 0;
    while i < CRLF_BLOCK {
        out[2 * i] = b'\r';
        i += 1;
    }
    out
};

/// Bytes gathered before one digest update, so relaxed canonicalization
/// (which decides byte by byte) does not call the digest per byte.
const BUFFER: usize = 512;

/// The body hash (`bh=`), fed the body in chunks as it will be sent (not
/// dot-stuffed), split anywhere, even inside a CRLF.
pub struct BodyHasher {
    canon: Canon,
    digest: digest::Context,
    /// Line ends not yet hashed: empty lines at the end do not count.
    held: u64,
    /// The last chunk ended in CR; whether it starts a CRLF is not known.
    cr: bool,
    /// Relaxed: whitespace seen and not yet written; dropped at a line end.
    space: bool,
    /// Relaxed: something other than a line end has been hashed.
    content: bool,
    buffer: [u8; BUFFER],
    len: usize,
}

impl BodyHasher {
    pub fn new(canon: Canon) -> BodyHasher {
        BodyHasher {
            canon,
            digest: digest::Context::new(&digest::SHA256),
            held: 0,
            cr: false,
            space: false,
            content: false,
            buffer: [0; BUFFER],
            len: 0,
        }
    }

    /// The body canonicalization this hasher applies.
    pub fn canon(&self) -> Canon {
        self.canon
    }

    /// Feeds the next bytes of the body.
    pub fn update(&mut self, data: &[u8]) {
        match self.canon {
            Canon::Simple => self.simple(data),
            Canon::Relaxed => self.relaxed(data),
        }
    }

    /// The SHA-256 of the canonical body.
    pub fn finish(mut self) -> [u8; 32] {
        if self.cr {
            self.cr = false;
            self.content(b'\r');
        }
        // Simple: a body always ends in exactly one CRLF, even an empty
        // one (3.4.3). Relaxed: an empty body stays empty (3.4.4).
        if self.canon == Canon::Simple || self.content {
            self.emit(b"\r\n");
        }
        self.digest.update(&self.buffer[..self.len]);
        let mut out = [0; 32];
        out.copy_from_slice(self.digest.finish().as_ref());
        out
    }

    /// Simple: the body as it is, less the empty lines at its end. Whole
    /// spans go to the digest; only the trailing CRLFs of a chunk wait.
    fn simple(&mut self, mut data: &[u8]) {
        if self.cr && !data.is_empty() {
            self.cr = false;
            if data[0] == b'\n' {
                self.held += 1;
                data = &data[1..];
            } else {
                self.content(b'\r');
            }
        }
        let Some(&last) = data.last() else { return };
        let mut end = data.len();
        let cr = last == b'\r';
        if cr {
            end -= 1;
        }
        let mut line_ends = 0;
        while end >= 2 && data[end - 2..end] == *b"\r\n" {
            end -= 2;
            line_ends += 1;
        }
        if end > 0 {
            self.flush_held();
            self.emit(&data[..end]);
        }
        self.held += line_ends;
        self.cr = cr;
    }

    /// Relaxed: whitespace runs made one space, whitespace at line ends
    /// and empty lines at the end dropped.
    fn relaxed(&mut self, data: &[u8]) {
        for &b in data {
            if self.cr {
                self.cr = false;
                if b == b'\n' {
                    self.space = false;
                    self.held += 1;
                    continue;
                }
                self.content(b'\r');
            }
            match b {
                b'\r' => self.cr = true,
                b' ' | b'\t' if self.canon == Canon::Relaxed => self.space = true,
                _ => self.content(b),
            }
        }
    }

    /// A byte that is not part of a line end: the held line ends and
    /// whitespace before it count after all.
    fn content(&mut self, b: u8) {
        self.flush_held();
        if self.space {
            self.space = false;
            self.emit(b" ");
        }
        self.content = true;
        self.emit(&[b]);
    }

    fn flush_held(&mut self) {
        while self.held > 0 {
            let n = self.held.min(CRLF_BLOCK as u64) as usize;
            self.emit(&CRLFS[..2 * n]);
            self.held -= n as u64;
        }
    }

    fn emit(&mut self, bytes: &[u8]) {
        if self.len + bytes.len() > BUFFER {
            self.digest.update(&self.buffer[..self.len]);
            self.len = 0;
            if bytes.len() > BUFFER {
                self.digest.update(bytes);
                return;
            }
        }
        self.buffer[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }
}
