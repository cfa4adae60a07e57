//! Status records: the outcome of a delivery attempt for some recipients of a
//! message, appended after the message; the message itself is never rewritten.

/// Delivery state of one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RcptState {
    /// Not yet attempted (only ever found in envelopes, never in status records).
    Pending,
    /// Accepted by the next hop: finished.
    Delivered,
    /// Permanently failed (bounced): finished.
    Failed,
    /// Temporarily failed; retry at `until_ms` (unix ms), after `attempts` tries.
    Deferred { until_ms: u64, attempts: u32 },
}

impl RcptState {
    /// True once the recipient needs nothing more from the queue.
    pub fn is_finished(self) -> bool {
        matches!(self, RcptState::Delivered | RcptState::Failed)
    }

    /// Folds a later observation into this one: finished states are final,
    /// and a deferral never moves back to pending.
    pub fn merge(self, later: RcptState) -> RcptState {
        match (self, later) {
            (s, _) if s.is_finished() => s,
            (s, RcptState::Pending) => s,
            (_, l) => l,
        }
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            RcptState::Pending => 0,
            RcptState::Delivered => 1,
            RcptState::Failed => 2,
            RcptState::Deferred { .. } => 3,
        }
    }

    pub(crate) fn from_parts(code: u8, time_ms: u64, attempts: u32) -> Option<RcptState> {
        match code {
            0 => Some(RcptState::Pending),
            1 => Some(RcptState::Delivered),
            2 => Some(RcptState::Failed),
            3 => Some(RcptState::Deferred {
                until_ms: time_ms,
                attempts,
            }),
            _ => None,
        }
    }
}

/// A decoded status record.
///
/// Layout (little-endian): msg_id u64 | state u8 | 3 zero bytes | attempts u32
/// | time_ms u64 | rcpt_count u32 | diag_len u32 | rcpt_count × u32 recipient
/// indexes | diag_len bytes of diagnostic text (the remote reply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRecord<'a> {
    pub msg_id: u64,
    pub state: RcptState,
    /// When the outcome happened (delivered/failed), or unused for deferrals.
    pub time_ms: u64,
    pub rcpts: RcptList<'a>,
    pub diagnostic: &'a [u8],
}

/// Recipient indexes of a status record, read in place from its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RcptList<'a>(&'a [u8]);

impl<'a> RcptList<'a> {
    pub fn len(&self) -> usize {
        self.0.len() / 4
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = u32> + 'a {
        self.0
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
    }
}

const FIXED: usize = 32;

impl<'a> StatusRecord<'a> {
    /// Payload size of a status record with these recipients and diagnostic.
    pub fn encoded_len(rcpt_count: usize, diag_len: usize) -> usize {
        FIXED + 4 * rcpt_count + diag_len
    }

    /// Encodes into `dst`, which must be exactly `encoded_len` long.
    pub fn encode_into(
        dst: &mut [u8],
        msg_id: u64,
        state: RcptState,
        time_ms: u64,
        rcpts: &[u32],
        diagnostic: &[u8],
    ) {
        let (time_ms, attempts) = match state {
            RcptState::Deferred { until_ms, attempts } => (until_ms, attempts),
            _ => (time_ms, 0),
        };
        dst[0..8].copy_from_slice(&msg_id.to_le_bytes());
        dst[8] = state.code();
        dst[9..12].fill(0);
        dst[12..16].copy_from_slice(&attempts.to_le_bytes());
        dst[16..24].copy_from_slice(&time_ms.to_le_bytes());
        dst[24..28].copy_from_slice(&(rcpts.len() as u32).to_le_bytes());
        dst[28..32].copy_from_slice(&(diagnostic.len() as u32).to_le_bytes());
        let mut at = FIXED;
        for r in rcpts {
            dst[at..at + 4].copy_from_slice(&r.to_le_bytes());
            at += 4;
        }
        dst[at..at + diagnostic.len()].copy_from_slice(diagnostic);
    }

    /// Decodes a payload; `None` if it is malformed in any way.
    pub fn decode(b: &'a [u8]) -> Option<StatusRecord<'a>> {
        let fixed = b.get(0..FIXED)?;
        let u32_at =
            |i: usize| u32::from_le_bytes([fixed[i], fixed[i + 1], fixed[i + 2], fixed[i + 3]]);
        let mut id = [0u8; 8];
        id.copy_from_slice(&fixed[0..8]);
        let mut t = [0u8; 8];
        t.copy_from_slice(&fixed[16..24]);
        let time_ms = u64::from_le_bytes(t);
        if fixed[9..12] != [0, 0, 0] {
            return None;
        }
        let state = RcptState::from_parts(fixed[8], time_ms, u32_at(12))?;
        if state == RcptState::Pending {
            return None;
        }
        let n = u32_at(24) as usize;
        let d = u32_at(28) as usize;
        let rcpt_end = FIXED.checked_add(n.checked_mul(4)?)?;
        if rcpt_end.checked_add(d)? != b.len() {
            return None;
        }
        Some(StatusRecord {
            msg_id: u64::from_le_bytes(id),
            state,
            time_ms,
            rcpts: RcptList(&b[FIXED..rcpt_end]),
            diagnostic: &b[rcpt_end..],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_length_checks() {
        let st = RcptState::Deferred {
            until_ms: 99,
            attempts: 3,
        };
        let len = StatusRecord::encoded_len(3, 5);
        let mut b = vec![0u8; len];
        StatusRecord::encode_into(&mut b, 7, st, 0, &[0, 4, 9], b"451 x");
        let r = StatusRecord::decode(&b).expect("decodes");
        assert_eq!(r.msg_id, 7);
        assert_eq!(r.state, st);
        assert_eq!(r.rcpts.iter().collect::<Vec<_>>(), vec![0, 4, 9]);
        assert_eq!(r.diagnostic, b"451 x");
        assert!(StatusRecord::decode(&b[..len - 1]).is_none());
        b[8] = 9;
        assert!(StatusRecord::decode(&b).is_none());
    }

    #[test]
    fn finished_states_are_final() {
        let d = RcptState::Deferred {
            until_ms: 5,
            attempts: 1,
        };
        assert_eq!(RcptState::Delivered.merge(d), RcptState::Delivered);
        assert_eq!(d.merge(RcptState::Failed), RcptState::Failed);
        assert_eq!(d.merge(RcptState::Pending), d);
        assert_eq!(RcptState::Pending.merge(d), d);
    }
}
