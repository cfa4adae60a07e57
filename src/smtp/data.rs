//! Message body receivers: DATA (dot-stuffed, ended by CRLF.CRLF) and BDAT
//! (counted chunks, RFC 3030).
//!
//! Owns: finding the end of a body across arbitrary read boundaries,
//! dot-unstuffing, spotting bare CR/LF, and the message size limit — while
//! copying the body once, straight into a caller-provided slice (the spool
//! mapping).
//! Must never: end DATA on anything but `<CRLF>.<CRLF>` (SMTP smuggling:
//! `<LF>.<LF>`, `<CR>.<CR>`, `<LF>.<CRLF>`, `<CRLF>.<LF>` are body bytes),
//! buffer a whole message, or stop scanning for the end because the body
//! is already too large or malformed (the session must stay in sync).

/// How far one call got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BodyProgress {
    /// Input octets used; the caller drops them from its buffer.
    pub consumed: usize,
    /// Octets written to the front of `dst`.
    pub produced: usize,
    /// The body (or BDAT chunk) is complete; input after `consumed` is
    /// commands again.
    pub done: bool,
}

/// The verdict on a complete body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyOutcome {
    Accepted,
    /// Over the size limit: 552 5.3.4. Output stopped at the limit.
    TooBig,
    /// A bare CR or LF was seen: 550 5.5.2.
    BareCrLf,
}

/// Counts body octets against the limit; once over, everything is
/// discarded but still counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeLimit {
    counted: u64,
    max: u64,
    over: bool,
}

impl SizeLimit {
    pub fn new(max: u64) -> Self {
        SizeLimit {
            counted: 0,
            max,
            over: false,
        }
    }

    /// Octets of body seen so far, stored or not.
    pub fn counted(&self) -> u64 {
        self.counted
    }

    pub fn is_over(&self) -> bool {
        self.over
    }

    /// Copies as much of `src` as fits into `dst[*produced..]` and returns
    /// how much of `src` was used. Octets past the limit are used but not
    /// written: the caller keeps scanning and stores nothing more. Output is
    /// always exactly the first `max` octets, however the input was split.
    fn emit(&mut self, src: &[u8], dst: &mut [u8], produced: &mut usize) -> usize {
        if self.over {
            self.counted = self.counted.saturating_add(src.len() as u64);
            return src.len();
        }
        let allowed = usize::try_from(self.max - self.counted).unwrap_or(usize::MAX);
        let fit = src.len().min(allowed);
        let n = fit.min(dst.len().saturating_sub(*produced));
        dst[*produced..*produced + n].copy_from_slice(&src[..n]);
        *produced += n;
        self.counted += n as u64;
        if n == fit && fit < src.len() {
            self.over = true;
            self.counted = self.counted.saturating_add((src.len() - n) as u64);
            return src.len();
        }
        n
    }
}

/// Where the DATA scanner stands; this is the only state kept between
/// reads, so a terminator split anywhere is still found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Inside a line.
    Text,
    /// Just after a CR.
    Cr,
    /// Just after CRLF (or at the start of the body).
    LineStart,
    /// CRLF then `.`; the dot is held back (stuffing or terminator).
    Dot,
    /// CRLF `.` CR; one LF more ends the body.
    DotCr,
    Done,
}

/// Resumable DATA receiver.
#[derive(Debug, Clone)]
pub struct DataReceiver {
    scan: Scan,
    limit: SizeLimit,
    bare: bool,
}

impl DataReceiver {
    /// The DATA command's own CRLF means the body starts at a line start,
    /// so `.` CRLF right away is an empty message.
    pub fn new(max_message_size: u64) -> Self {
        DataReceiver {
            scan: Scan::LineStart,
            limit: SizeLimit::new(max_message_size),
            bare: false,
        }
    }

    /// Message octets after unstuffing, including those discarded over the limit.
    pub fn size(&self) -> u64 {
        self.limit.counted()
    }

    pub fn is_done(&self) -> bool {
        self.scan == Scan::Done
    }

    pub fn outcome(&self) -> BodyOutcome {
        if self.limit.is_over() {
            BodyOutcome::TooBig
        } else if self.bare {
            BodyOutcome::BareCrLf
        } else {
            BodyOutcome::Accepted
        }
    }

    /// Scans `input`, writing the unstuffed body to `dst`. Stops at the end
    /// of the body or when `dst` is full (give it more room and call again).
    pub fn receive(&mut self, input: &[u8], dst: &mut [u8]) -> BodyProgress {
        let mut i = 0;
        let mut produced = 0;
        while let Some(&b) = input.get(i) {
            let used = match self.scan {
                Scan::Done => break,
                Scan::Text => self.text(&input[i..], dst, &mut produced),
                Scan::Cr if b == b'\n' => self.byte(b'\n', Scan::LineStart, dst, &mut produced),
                Scan::Cr => {
                    self.bare = true;
                    self.scan = Scan::Text;
                    Some(0)
                }
                Scan::LineStart if b == b'.' => self.hold(Scan::Dot),
                Scan::Dot if b == b'\r' => self.hold(Scan::DotCr),
                // A stuffed dot: dropped, the rest of the line is text.
                Scan::LineStart | Scan::Dot => {
                    self.scan = Scan::Text;
                    Some(0)
                }
                Scan::DotCr if b == b'\n' => self.hold(Scan::Done),
                // CRLF "." CR x: the CR was bare; give it back as text.
                Scan::DotCr => {
                    self.bare = true;
                    self.byte(b'\r', Scan::Text, dst, &mut produced).map(|_| 0)
                }
            };
            match used {
                Some(n) => i += n,
                None => break,
            }
        }
        BodyProgress {
            consumed: i,
            produced,
            done: self.scan == Scan::Done,
        }
    }

    /// Consumes one input octet without output, moving to `next`.
    fn hold(&mut self, next: Scan) -> Option<usize> {
        self.scan = next;
        Some(1)
    }

    /// Outputs `b` (one input octet) and moves to `next`; `None` if `dst` is full.
    fn byte(&mut self, b: u8, next: Scan, dst: &mut [u8], produced: &mut usize) -> Option<usize> {
        if self.limit.emit(&[b], dst, produced) == 0 {
            return None;
        }
        self.scan = next;
        Some(1)
    }

    /// Copies a run of ordinary octets and the CR or LF that ends it.
    fn text(&mut self, rest: &[u8], dst: &mut [u8], produced: &mut usize) -> Option<usize> {
        let stop = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
        let n = self.limit.emit(&rest[..stop], dst, produced);
        if n < stop || stop == rest.len() {
            // dst full (n < stop) or input exhausted: report what was used.
            return if n == 0 && stop > 0 { None } else { Some(n) };
        }
        let special = rest[stop];
        if self.limit.emit(&rest[stop..=stop], dst, produced) == 0 {
            return if n == 0 { None } else { Some(n) };
        }
        if special == b'\r' {
            self.scan = Scan::Cr;
        } else {
            // LF without CR before it.
            self.bare = true;
        }
        Some(n + 1)
    }
}

/// Resumable BDAT chunk receiver: exactly `size` octets, no unstuffing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BdatReceiver {
    remaining: u64,
    /// The chunk was refused: swallow it without output.
    discard: bool,
}

impl BdatReceiver {
    pub fn new(size: u64) -> Self {
        BdatReceiver {
            remaining: size,
            discard: false,
        }
    }

    /// A chunk whose BDAT was refused must still be read to stay in sync
    /// (RFC 3030 2).
    pub fn discarding(size: u64) -> Self {
        BdatReceiver {
            remaining: size,
            discard: true,
        }
    }

    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Copies chunk octets into `dst`, counting them against `limit` (shared
    /// by all chunks of one message).
    pub fn receive(&mut self, input: &[u8], dst: &mut [u8], limit: &mut SizeLimit) -> BodyProgress {
        let take = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(input.len());
        let mut produced = 0;
        let consumed = if self.discard {
            take
        } else {
            limit.emit(&input[..take], dst, &mut produced)
        };
        self.remaining -= consumed as u64;
        BodyProgress {
            consumed,
            produced,
            done: self.remaining == 0,
        }
    }
}

#[cfg(test)]
mod tests;
