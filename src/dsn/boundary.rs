//! The multipart boundary: derived from the message id, and proven absent
//! from the original message we enclose.
//!
//! Owns: choosing the boundary and learning whether the enclosed original
//! holds 8-bit octets (the same pass reads both).
//! Must never: return a boundary that occurs in the enclosed text. Our own
//! parts cannot hold one: none of their lines starts with `--`.

use std::ops::ControlFlow;

use super::lines::{walk, Piece, Scope};

/// RFC 2046 5.1.1: a boundary is at most 70 characters.
const MAX_BOUNDARY: usize = 70;
/// Characters a boundary is extended with: 64 of them, none of them `=`,
/// so `=` stays only at the start of the stem (see [`Scan::step`]).
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._";

/// FNV-1a: a stable hash, so the same message id gives the same boundary.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What one pass over the enclosed text found.
struct Scan<'s> {
    stem: &'s [u8],
    matched: usize,
    occurrences: usize,
    /// How often each octet followed an occurrence of the stem.
    followers: [usize; 256],
    eight_bit: bool,
}

impl Scan<'_> {
    /// Feeds one octet. The stem has `=` only at its start, so it has no
    /// proper prefix that is also a suffix and a failed match can restart
    /// at this octet without backtracking.
    fn step(&mut self, b: u8) {
        if self.matched == self.stem.len() {
            self.followers[usize::from(b)] += 1;
            self.matched = 0;
        }
        if self.stem.get(self.matched) == Some(&b) {
            self.matched += 1;
            if self.matched == self.stem.len() {
                self.occurrences += 1;
            }
        } else {
            self.matched = usize::from(self.stem.first() == Some(&b));
        }
    }
}

fn scan<'s>(chunks: &[&[u8]], scope: Scope, stem: &'s [u8]) -> Scan<'s> {
    let mut s = Scan {
        stem,
        matched: 0,
        occurrences: 0,
        followers: [0; 256],
        eight_bit: false,
    };
    walk(chunks, scope, |piece, _| {
        match piece {
            // The stem holds no CR or LF, so it cannot span lines.
            Piece::Eol => s.matched = 0,
            Piece::Text(t) => {
                s.eight_bit |= !t.is_ascii();
                t.iter().for_each(|&b| s.step(b));
            }
        }
        ControlFlow::Continue(())
    });
    s
}

/// The chosen boundary, and whether the enclosed text has 8-bit octets.
pub(super) struct Chosen {
    pub boundary: String,
    pub eight_bit: bool,
}

/// Picks a boundary for a notice with `message_id` enclosing `chunks`
/// (within `scope`; `None` when nothing is enclosed).
///
/// Each pass either finds a character that never follows the stem (so stem
/// plus that character occurs nowhere) or extends the stem by its least
/// frequent follower, dividing the occurrences by at least 64; a few
/// passes suffice even for adversarial content. `None` only if the limit
/// of 70 characters is reached first.
pub(super) fn choose(message_id: &str, enclosed: Option<(&[&[u8]], Scope)>) -> Option<Chosen> {
    let mut stem = format!("=_{:016x}", fnv1a(message_id.as_bytes())).into_bytes();
    let Some((chunks, scope)) = enclosed else {
        return Some(Chosen {
            boundary: String::from_utf8_lossy(&stem).into_owned(),
            eight_bit: false,
        });
    };
    while stem.len() < MAX_BOUNDARY {
        let s = scan(chunks, scope, &stem);
        let (occurrences, followers, eight_bit) = (s.occurrences, s.followers, s.eight_bit);
        let pick = |count: usize| {
            ALPHABET
                .iter()
                .copied()
                .find(|&c| followers[usize::from(c)] == count)
        };
        let found = |stem: Vec<u8>| Chosen {
            boundary: String::from_utf8_lossy(&stem).into_owned(),
            eight_bit,
        };
        if occurrences == 0 {
            return Some(found(stem));
        }
        if let Some(c) = pick(0) {
            stem.push(c);
            return Some(found(stem));
        }
        let least = ALPHABET.iter().map(|&c| followers[usize::from(c)]).min()?;
        stem.push(pick(least)?);
    }
    None
}
