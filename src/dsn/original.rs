//! The returned original message (or its header section), normalized.
//!
//! Owns: copying the original from its spool chunks into the notice.
//! Must never: write a bare CR or LF, or a line over 998 octets. Both can
//! be in the original (bare line ends from broken clients, long lines in
//! BINARYMIME bodies): line ends become CRLF and long lines are split, a
//! header line with a fold (CRLF SP) so it stays one field. The enclosed
//! copy may therefore differ from the original in those octets.

use std::ops::ControlFlow;

use super::fields::MAX_LINE;
use super::lines::{walk, Piece, Scope};

/// Appends the original within `scope`, every line ended by CRLF.
pub(super) fn write_original(out: &mut Vec<u8>, chunks: &[&[u8]], scope: Scope) {
    let mut col = 0usize;
    walk(chunks, scope, |piece, in_header| {
        match piece {
            Piece::Eol => {
                out.extend_from_slice(b"\r\n");
                col = 0;
            }
            Piece::Text(mut t) => {
                while !t.is_empty() {
                    if col == MAX_LINE {
                        let fold: &[u8] = if in_header { b"\r\n " } else { b"\r\n" };
                        out.extend_from_slice(fold);
                        col = fold.len() - 2;
                    }
                    let take = (MAX_LINE - col).min(t.len());
                    out.extend_from_slice(&t[..take]);
                    col += take;
                    t = &t[take..];
                }
            }
        }
        ControlFlow::Continue(())
    });
    if col > 0 {
        out.extend_from_slice(b"\r\n");
    }
}

/// The total length of the original.
pub(super) fn total_len(chunks: &[&[u8]]) -> u64 {
    chunks.iter().map(|c| c.len() as u64).sum()
}
