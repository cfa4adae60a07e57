//! Loop detection by counting `Received:` trace fields (RFC 5321 6.3).
//!
//! Owns: the count over the original's header section, across chunks.
//! Must never: read past the header section: a body may quote headers.

use std::ops::ControlFlow;

use super::lines::{walk, Piece, Scope};

const NAME: &[u8] = b"received";

/// Where the current line stands in matching `Received` `*WSP` `:`.
#[derive(Clone, Copy)]
enum Match {
    Name(usize),
    /// The name matched; spaces may precede the colon (RFC 5322 4.5.3).
    Colon,
    /// Settled for this line, either way.
    Done,
}

/// True when the header section holds more than `max_received` `Received:`
/// fields, which means the message is looping and is bounced with 5.4.6.
/// `chunks` is the original message (or just its headers) as stored.
pub fn is_looping(chunks: &[&[u8]], max_received: usize) -> bool {
    let mut count = 0usize;
    let mut state = Match::Name(0);
    walk(chunks, Scope::Headers, |piece, _| {
        let text = match piece {
            Piece::Eol => {
                state = Match::Name(0);
                return ControlFlow::Continue(());
            }
            Piece::Text(t) => t,
        };
        for &b in text {
            state = match state {
                Match::Name(i) if NAME.get(i) == Some(&b.to_ascii_lowercase()) => {
                    if i + 1 == NAME.len() {
                        Match::Colon
                    } else {
                        Match::Name(i + 1)
                    }
                }
                Match::Colon if b == b' ' || b == b'\t' => Match::Colon,
                Match::Colon if b == b':' => {
                    count += 1;
                    Match::Done
                }
                _ => Match::Done,
            };
            if matches!(state, Match::Done) {
                break;
            }
        }
        if count > max_received {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    count > max_received
}
