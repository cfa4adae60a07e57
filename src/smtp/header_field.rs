//! Finding a header field in a message stored as chunks, and the pieces
//! the message is made of once every occurrence of that field is cut out:
//! how a message's pool header is read and removed before it is sent on,
//! and how its job ID header is read for the accounting log.
//!
//! Owns: the header-section scan (field names compared without regard to
//! case, folded lines unfolded, the scan ending at the empty line that
//! ends the header section or after a bounded number of bytes) and the
//! arithmetic of cutting byte ranges out of a chunked body.
//! Must never: read past the header section or the scan bound (bodies can
//! be megabytes), or change a byte outside the ranges it cuts.

/// How far into a message the header section is searched.
pub const SCAN_LIMIT: usize = 64 * 1024;

/// A header field found in a message.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Found {
    /// The first occurrence's value, unfolded and trimmed of white space.
    pub value: Vec<u8>,
    /// Where every occurrence lies in the message (its name, value, folded
    /// lines and final CRLF), as `start..end` offsets, in order.
    pub ranges: Vec<(u64, u64)>,
}

/// Looks for the header field `name` in the header section of the message
/// made of `chunks`; `None` when it does not occur.
pub fn find(chunks: &[&[u8]], name: &[u8]) -> Option<Found> {
    let head = HeadBytes::new(chunks);
    let mut found = Found::default();
    head.each_named(name, |at, end| {
        if found.ranges.is_empty() {
            found.value = head.value(at + name.len() + 1, end);
        }
        found.ranges.push((at as u64, end as u64));
        false
    });
    (!found.ranges.is_empty()).then_some(found)
}

/// Whether some occurrence of the header field `name` in the message made
/// of `chunks` has a value (unfolded, trimmed) that `test` accepts.
pub fn any_value(chunks: &[&[u8]], name: &[u8], mut test: impl FnMut(&[u8]) -> bool) -> bool {
    let head = HeadBytes::new(chunks);
    head.each_named(name, |at, end| test(&head.value(at + name.len() + 1, end)))
}

/// The first value of header field `name` in the message made of
/// `chunks`, as text (invalid UTF-8 replaced): what the accounting log
/// records as a message's job ID. Read in place, chunk by chunk, when each
/// chunk the header section spans ends a line and the next does not go on
/// with it (as stored: this server's fields, then the client's text);
/// else from the header section copied into one piece.
pub fn value_text(chunks: &[&[u8]], name: &str) -> Option<String> {
    let value = match first_value_in_place(chunks, name.as_bytes()) {
        Some(value) => value?,
        None => find(chunks, name.as_bytes())?.value,
    };
    Some(String::from_utf8_lossy(&value).into_owned())
}

/// [`value_text`] of a stored message: its chunks gathered by `chunk`
/// (on the stack for up to eight of them) and scanned in place; `None`
/// too when a chunk cannot be read.
pub fn stored_value_text<'a, C>(
    chunks: impl ExactSizeIterator<Item = C>,
    chunk: impl Fn(C) -> Option<&'a [u8]>,
    name: &str,
) -> Option<String> {
    const ON_STACK: usize = 8;
    let n = chunks.len();
    if n <= ON_STACK {
        let mut parts: [&[u8]; ON_STACK] = [&[]; ON_STACK];
        for (part, c) in parts.iter_mut().zip(chunks) {
            *part = chunk(c)?;
        }
        value_text(&parts[..n], name)
    } else {
        let parts: Option<Vec<&[u8]>> = chunks.map(chunk).collect();
        value_text(&parts?, name)
    }
}

/// The first value of `name` read chunk by chunk without copying:
/// `Some(None)` when the header section ends (or the scan limit comes)
/// without it; `None` when a line or a folded field crosses from one
/// chunk into the next, which only the joined copy can read.
fn first_value_in_place(chunks: &[&[u8]], name: &[u8]) -> Option<Option<Vec<u8>>> {
    let mut scanned = 0;
    for (i, c) in chunks.iter().enumerate() {
        let c = &c[..c.len().min(SCAN_LIMIT - scanned)];
        let head = HeadBytes {
            bytes: std::borrow::Cow::Borrowed(c),
        };
        let mut found = None;
        let scan = head.scan(name, |at, end| {
            found = Some((at, end));
            true
        });
        scanned += c.len();
        // Whether what the chunk ends with is whole: a line ended, and not
        // continued by a folded line in the next chunk.
        let rest = &chunks[i + 1..];
        let ends_whole = || match rest.iter().find(|c| !c.is_empty()) {
            None => true,
            Some(next) => c.ends_with(b"\r\n") && !matches!(next[0], b' ' | b'\t'),
        };
        match scan {
            Scan::Stopped => {
                let (at, end) = found?;
                // A field the chunk ends in may go on in the next one.
                let whole = end < c.len() || ends_whole();
                return whole.then(|| Some(head.value(at + name.len() + 1, end)));
            }
            Scan::HeaderEnd => return Some(None),
            Scan::RanOut if scanned >= SCAN_LIMIT || rest.is_empty() => return Some(None),
            Scan::RanOut if !ends_whole() => return None,
            Scan::RanOut => {}
        }
    }
    Some(None)
}

/// A piece of a message after cutting: a stored chunk kept whole, or
/// bytes that go into a new chunk.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    Keep(usize),
    New(Vec<u8>),
}

/// The pieces of the message made of `chunks` with `ranges` (sorted, not
/// overlapping) cut out. Chunks a range touches are joined with their
/// neighbours in the same run into one new piece; the others are kept.
pub fn cut(chunks: &[&[u8]], ranges: &[(u64, u64)]) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut pending: Option<Vec<u8>> = None;
    let mut start = 0u64;
    for (i, c) in chunks.iter().enumerate() {
        let end = start + c.len() as u64;
        let touching: Vec<(u64, u64)> = ranges
            .iter()
            .filter(|&&(a, b)| a < end && b > start)
            .copied()
            .collect();
        if touching.is_empty() {
            if let Some(bytes) = pending.take() {
                pieces.push(Piece::New(bytes));
            }
            pieces.push(Piece::Keep(i));
        } else {
            let bytes = pending.get_or_insert_with(Vec::new);
            let mut from = start;
            for (a, b) in touching {
                if a > from {
                    bytes.extend_from_slice(&c[(from - start) as usize..(a - start) as usize]);
                }
                from = from.max(b.min(end));
            }
            bytes.extend_from_slice(&c[(from - start) as usize..]);
        }
        start = end;
    }
    if let Some(bytes) = pending {
        pieces.push(Piece::New(bytes));
    }
    pieces.retain(|p| !matches!(p, Piece::New(b) if b.is_empty()));
    pieces
}

/// The first bytes of a chunked message, up to [`SCAN_LIMIT`]: borrowed
/// when the message is one chunk, else copied out up to the empty line
/// that ends the header section (a stored message is a `Received:` chunk
/// and the client's; its body is never copied).
struct HeadBytes<'a> {
    bytes: std::borrow::Cow<'a, [u8]>,
}

/// The end of a header section: the CRLF of its last field and the empty
/// line's.
const HEADER_END: &[u8] = b"\r\n\r\n";

impl<'a> HeadBytes<'a> {
    fn new(chunks: &[&'a [u8]]) -> HeadBytes<'a> {
        let bytes = match chunks {
            [one] => std::borrow::Cow::Borrowed(&one[..one.len().min(SCAN_LIMIT)]),
            _ => {
                let mut v = Vec::new();
                for c in chunks {
                    let c = &c[..(SCAN_LIMIT - v.len()).min(c.len())];
                    match header_end(&v, c) {
                        Some(end) => {
                            v.extend_from_slice(&c[..end]);
                            break;
                        }
                        None => v.extend_from_slice(c),
                    }
                    if v.len() == SCAN_LIMIT {
                        break;
                    }
                }
                std::borrow::Cow::Owned(v)
            }
        };
        HeadBytes { bytes }
    }

    fn len(&self) -> usize {
        self.bytes.len()
    }

    /// The end of the field starting at `at`: after the CRLF of its last
    /// line (continuation lines start with a space or a tab), or the end
    /// of what was scanned.
    fn field_end(&self, at: usize) -> usize {
        let b = &self.bytes;
        let mut i = at;
        loop {
            match line_end(&b[i..]) {
                Some(n) => i += n,
                None => return b.len(),
            }
            if i >= b.len() || !matches!(b[i], b' ' | b'\t') || i == at + 2 {
                return i;
            }
        }
    }

    /// Calls `f` with the start and end of each field named `name`, in
    /// order, until it returns true (then true) or the header section
    /// ends (then false).
    fn each_named(&self, name: &[u8], f: impl FnMut(usize, usize) -> bool) -> bool {
        self.scan(name, f) == Scan::Stopped
    }

    /// [`HeadBytes::each_named`], telling why the scan ended.
    fn scan(&self, name: &[u8], mut f: impl FnMut(usize, usize) -> bool) -> Scan {
        let mut at = 0;
        while at < self.len() {
            let end = self.field_end(at);
            if self.is_end_of_headers(at) {
                // An empty line: the header section is over.
                return Scan::HeaderEnd;
            }
            if self.field_named(at, name) && f(at, end) {
                return Scan::Stopped;
            }
            at = end;
        }
        Scan::RanOut
    }

    fn is_end_of_headers(&self, at: usize) -> bool {
        self.bytes[at..].starts_with(b"\r\n")
    }

    fn field_named(&self, at: usize, name: &[u8]) -> bool {
        let b = &self.bytes[at..];
        b.len() > name.len() && b[..name.len()].eq_ignore_ascii_case(name) && b[name.len()] == b':'
    }

    /// The value between `from` and `end`, unfolded and trimmed.
    fn value(&self, from: usize, end: usize) -> Vec<u8> {
        let raw = &self.bytes[from.min(end)..end];
        let unfolded: Vec<u8> = raw
            .iter()
            .copied()
            .filter(|&c| c != b'\r' && c != b'\n')
            .collect();
        unfolded.trim_ascii().to_vec()
    }
}

/// How a scan of the header section ended.
#[derive(Debug, PartialEq, Eq)]
enum Scan {
    /// The caller's function said so.
    Stopped,
    /// At the empty line that ends the section.
    HeaderEnd,
    /// At the end of the bytes scanned.
    RanOut,
}

/// Just past the first CRLF of `b`, if any. Looks for the LF with
/// `memchr` (one byte, no searcher to build: this runs once per header
/// line of every message the accounting log gives a job ID) and takes the
/// first one that a CR precedes.
fn line_end(b: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(n) = memchr::memchr(b'\n', &b[from..]) {
        let lf = from + n;
        if lf > 0 && b[lf - 1] == b'\r' {
            return Some(lf + 1);
        }
        from = lf + 1;
    }
    None
}

/// Where in `next` the header section ends (just after its empty line),
/// when `before` (which holds no end) and `next` hold it, the two read
/// as one: the end may straddle them.
fn header_end(before: &[u8], next: &[u8]) -> Option<usize> {
    let carried = before.len().min(HEADER_END.len() - 1);
    let mut seam = [0u8; 2 * (HEADER_END.len() - 1)];
    let lead = next.len().min(HEADER_END.len() - 1);
    seam[..carried].copy_from_slice(&before[before.len() - carried..]);
    seam[carried..carried + lead].copy_from_slice(&next[..lead]);
    let across = memchr::memmem::find(&seam[..carried + lead], HEADER_END);
    across
        .map(|n| n + HEADER_END.len() - carried)
        .or_else(|| HEADER_END_FINDER.find(next).map(|n| n + HEADER_END.len()))
}

/// The searcher for [`HEADER_END`], built once rather than at every
/// chunk of every message scanned.
static HEADER_END_FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(HEADER_END));

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"Received: from x\r\nSubject: hi\r\nX-Petrel-Pool: news\r\nTo: a@b\r\n\r\nbody\r\nX-Petrel-Pool: not a header\r\n";

    #[test]
    fn a_line_ends_after_the_first_crlf_not_at_a_bare_lf() {
        assert_eq!(line_end(b"ab\r\ncd\r\n"), Some(4));
        assert_eq!(line_end(b"a\nb\r\n"), Some(5));
        assert_eq!(line_end(b"\n\r\n"), Some(3));
        assert_eq!(line_end(b"ab\r"), None);
        assert_eq!(line_end(b"ab\n"), None);
        assert_eq!(line_end(b""), None);
    }

    #[test]
    fn a_bare_lf_inside_a_field_does_not_end_it() {
        let msg: &[u8] = b"Subject: a\nX-Job: fake\r\nX-Job: real\r\n\r\nbody";
        assert_eq!(value_text(&[msg], "X-Job").as_deref(), Some("real"));
    }

    /// `MSG` split into chunks at every way of cutting it in three.
    fn splits() -> Vec<Vec<&'static [u8]>> {
        let mut all = vec![vec![MSG]];
        for i in 1..MSG.len() {
            for j in i..MSG.len() {
                all.push(vec![&MSG[..i], &MSG[i..j], &MSG[j..]]);
            }
        }
        all
    }

    fn joined(chunks: &[&[u8]], pieces: &[Piece]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in pieces {
            match p {
                Piece::Keep(i) => out.extend_from_slice(chunks[*i]),
                Piece::New(b) => out.extend_from_slice(b),
            }
        }
        out
    }

    #[test]
    fn the_field_is_found_and_cut_whatever_the_chunking() {
        let expected = b"Received: from x\r\nSubject: hi\r\nTo: a@b\r\n\r\nbody\r\nX-Petrel-Pool: not a header\r\n";
        for chunks in splits() {
            let found = find(&chunks, b"x-petrel-pool").expect("found");
            assert_eq!(found.value, b"news");
            assert_eq!(found.ranges, [(31, 52)]);
            let pieces = cut(&chunks, &found.ranges);
            assert_eq!(joined(&chunks, &pieces), expected, "{chunks:?}");
        }
    }

    #[test]
    fn chunks_away_from_the_cut_are_kept_whole() {
        let chunks: Vec<&[u8]> = vec![&MSG[..18], &MSG[18..60], &MSG[60..]];
        let found = find(&chunks, b"X-Petrel-Pool").expect("found");
        let pieces = cut(&chunks, &found.ranges);
        assert_eq!(pieces[0], Piece::Keep(0));
        assert!(matches!(pieces[1], Piece::New(_)));
        assert_eq!(pieces[2], Piece::Keep(2));
    }

    #[test]
    fn folded_values_are_unfolded_and_every_occurrence_is_cut() {
        let msg: &[u8] =
            b"X-Petrel-Pool:\r\n  news\r\n\tletters \r\nA: b\r\nx-petrel-pool: other\r\n\r\nbody";
        let found = find(&[msg], b"X-Petrel-Pool").expect("found");
        assert_eq!(found.value, b"news\tletters");
        assert_eq!(found.ranges.len(), 2);
        let pieces = cut(&[msg], &found.ranges);
        assert_eq!(joined(&[msg], &pieces), b"A: b\r\n\r\nbody");
    }

    #[test]
    fn the_body_and_similar_names_are_not_searched() {
        let msg: &[u8] = b"X-Petrel-Pools: a\r\nX-Petrel-Pool-X: b\r\n\r\nX-Petrel-Pool: c\r\n";
        assert_eq!(find(&[msg], b"X-Petrel-Pool"), None);
        assert_eq!(find(&[b"\r\nX-Petrel-Pool: c\r\n"], b"X-Petrel-Pool"), None);
    }

    #[test]
    fn the_body_is_not_copied_when_the_header_section_spans_chunks() {
        for chunks in splits() {
            let head = HeadBytes::new(&chunks);
            let expected = if chunks.len() == 1 {
                MSG.len()
            } else {
                MSG.len() - b"body\r\nX-Petrel-Pool: not a header\r\n".len()
            };
            assert_eq!(head.len(), expected, "{chunks:?}");
        }
        assert_eq!(header_end(b"a\r\n", b"\r\nbody"), Some(2));
        assert_eq!(header_end(b"a\r", b"\n\r\nbody"), Some(3));
        assert_eq!(header_end(b"", b"a: b\r\n\r\n"), Some(8));
        assert_eq!(header_end(b"a\r\n\r", b""), None);
        assert_eq!(header_end(b"a: b\r\n", b"c: d\r\n"), None);
    }

    /// What the joined copy reads, as text.
    fn copied_text(chunks: &[&[u8]], name: &str) -> Option<String> {
        let found = find(chunks, name.as_bytes())?;
        Some(String::from_utf8_lossy(&found.value).into_owned())
    }

    #[test]
    fn values_read_in_place_are_those_of_the_joined_copy_whatever_the_chunking() {
        let folded: &[u8] =
            b"Received: by x\r\nX-Job:\r\n  spring\r\n\tsale \r\nTo: a@b\r\n\r\nX-Job: body\r\n";
        let mut cases = splits();
        for i in 1..folded.len() {
            for j in i..folded.len() {
                cases.push(vec![&folded[..i], &folded[i..j], &folded[j..]]);
            }
        }
        let names = [
            "X-Petrel-Pool",
            "x-job",
            "Subject",
            "To",
            "Received",
            "Nope",
        ];
        let mut in_place = 0;
        for chunks in &cases {
            for name in names {
                let expected = copied_text(chunks, name);
                assert_eq!(value_text(chunks, name), expected, "{name} in {chunks:?}");
                if let Some(value) = first_value_in_place(chunks, name.as_bytes()) {
                    in_place += 1;
                    let value = value.map(|v| String::from_utf8_lossy(&v).into_owned());
                    assert_eq!(value, expected, "{name} in {chunks:?}");
                }
            }
        }
        assert!(in_place > 0);
    }

    #[test]
    fn a_stored_message_is_read_in_place() {
        // This server's field, then the client's text, as stored.
        let received: &[u8] = b"Received: from c by s; Mon, 7 Dec 2026\r\n";
        let client: &[u8] = b"Subject: x\r\nX-Job-Id: spring\r\n\r\nbody\r\n";
        let chunks = [received, client];
        assert_eq!(
            first_value_in_place(&chunks, b"X-Job-Id"),
            Some(Some(b"spring".to_vec()))
        );
        assert_eq!(first_value_in_place(&chunks, b"X-Other"), Some(None));
        // A line cut between chunks needs the copy, which still finds it.
        let cut: [&[u8]; 3] = [received, &client[..20], &client[20..]];
        assert_eq!(first_value_in_place(&cut, b"X-Job-Id"), None);
        assert_eq!(value_text(&cut, "X-Job-Id").as_deref(), Some("spring"));
        let stored = [0usize, 1];
        let read = |i: usize| Some(chunks[i]);
        assert_eq!(
            stored_value_text(stored.iter().copied(), read, "x-job-id").as_deref(),
            Some("spring")
        );
        let many: Vec<usize> = std::iter::repeat_n(0, 9).chain([1]).collect();
        assert_eq!(
            stored_value_text(many.iter().copied(), read, "X-Job-Id").as_deref(),
            Some("spring"),
            "more chunks than fit on the stack"
        );
        let unreadable = |i: usize| (i == 0).then_some(received);
        assert_eq!(
            stored_value_text(stored.iter().copied(), unreadable, "X-Job-Id"),
            None
        );
    }

    #[test]
    fn the_scan_stops_at_its_limit() {
        let mut msg = Vec::new();
        while msg.len() < SCAN_LIMIT {
            msg.extend_from_slice(b"X-Filler: 0123456789012345678901234567890123456789\r\n");
        }
        msg.extend_from_slice(b"X-Petrel-Pool: late\r\n\r\n");
        assert_eq!(find(&[&msg], b"X-Petrel-Pool"), None);
    }
}
