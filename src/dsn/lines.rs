//! Walks the original message, held as spool chunks, line by line.
//!
//! Owns: the one definition of "a line" and "the end of the header section"
//! that every reader of the original message in this module shares, so the
//! part we return, the loop count and the boundary check agree on it.
//! Must never: require the message in one contiguous buffer, or copy it.
//!
//! A line ends at CRLF, at a bare LF or at a bare CR: the original may hold
//! bare ones (BDAT, broken clients), and what we write back must not. The
//! header section ends at the first empty line, or at the end of the message
//! if it has none.

use std::ops::ControlFlow;

/// One step of the walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Piece<'a> {
    /// Part of the current line; never holds CR or LF.
    Text(&'a [u8]),
    /// The end of the current line.
    Eol,
}

/// How much of the original to walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    /// The header section, without the empty line that ends it.
    Headers,
    /// Everything.
    Whole,
}

struct Walker {
    scope: Scope,
    line_len: usize,
    in_header: bool,
}

impl Walker {
    fn text<'a, F>(&mut self, t: &'a [u8], f: &mut F) -> ControlFlow<()>
    where
        F: FnMut(Piece<'a>, bool) -> ControlFlow<()>,
    {
        if t.is_empty() {
            return ControlFlow::Continue(());
        }
        self.line_len += t.len();
        f(Piece::Text(t), self.in_header)
    }

    fn eol<'a, F>(&mut self, f: &mut F) -> ControlFlow<()>
    where
        F: FnMut(Piece<'a>, bool) -> ControlFlow<()>,
    {
        if self.in_header && self.line_len == 0 {
            if self.scope == Scope::Headers {
                return ControlFlow::Break(());
            }
            self.in_header = false;
        }
        self.line_len = 0;
        f(Piece::Eol, self.in_header)
    }
}

/// Calls `f` with each piece of the original and whether it lies in the
/// header section, until `f` breaks or the scope ends.
pub(super) fn walk<'a, F>(chunks: &[&'a [u8]], scope: Scope, mut f: F)
where
    F: FnMut(Piece<'a>, bool) -> ControlFlow<()>,
{
    let mut w = Walker {
        scope,
        line_len: 0,
        in_header: true,
    };
    // A CR that ended a chunk: whether it pairs with an LF is known only
    // when the next chunk starts.
    let mut pending_cr = false;
    for &chunk in chunks {
        let mut rest = chunk;
        if pending_cr && !rest.is_empty() {
            pending_cr = false;
            if rest[0] == b'\n' {
                rest = &rest[1..];
            }
            if w.eol(&mut f).is_break() {
                return;
            }
        }
        while !rest.is_empty() {
            let Some(i) = memchr::memchr2(b'\r', b'\n', rest) else {
                if w.text(rest, &mut f).is_break() {
                    return;
                }
                break;
            };
            if w.text(&rest[..i], &mut f).is_break() {
                return;
            }
            let after = match (rest[i], rest.get(i + 1)) {
                (b'\r', Some(b'\n')) => i + 2,
                (b'\r', None) => {
                    pending_cr = true;
                    rest = &[];
                    continue;
                }
                _ => i + 1,
            };
            rest = &rest[after..];
            if w.eol(&mut f).is_break() {
                return;
            }
        }
    }
    if pending_cr {
        let _ = w.eol(&mut f);
    }
}
