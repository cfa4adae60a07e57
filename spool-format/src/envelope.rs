//! The envelope of a spooled message, archived with rkyv so it is read in
//! place from the mapping (records are 16-byte aligned for this).
//!
//! The envelope commits a message: its body chunks were appended before it,
//! and a message exists only once its envelope record is valid.

use rkyv::{Archive, Deserialize, Serialize};

use crate::status::RcptState;

/// Where a body chunk record lives: its segment and the record's offset.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRef {
    pub segment: u64,
    pub offset: u32,
    pub len: u32,
}

impl From<&ArchivedChunkRef> for ChunkRef {
    /// The chunk reference as read in place from an archived envelope.
    fn from(c: &ArchivedChunkRef) -> ChunkRef {
        ChunkRef {
            segment: c.segment.to_native(),
            offset: c.offset.to_native(),
            len: c.len.to_native(),
        }
    }
}

/// One recipient of a message, with its DSN parameters and, in copies made
/// when compacting, the state it had when copied.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub address: Vec<u8>,
    /// RFC 3461 NOTIFY bits: see [`notify`].
    pub notify: u8,
    /// RFC 3461 ORCPT value as received (addr-type;xtext), empty if none.
    pub orcpt: Vec<u8>,
    /// 0 pending, 1 delivered, 2 failed, 3 deferred (with time/attempts).
    pub state: u8,
    pub attempts: u32,
    pub time_ms: u64,
}

/// The body type the client declared (RFC 6152 BODY=, RFC 3030), as the
/// envelope's `body_type` byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum BodyType {
    #[default]
    Unspecified = 0,
    SevenBit = 1,
    EightBitMime = 2,
    BinaryMime = 3,
}

/// What the sender asked a failure notice to return (RFC 3461 RET=), as
/// the envelope's `ret` byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum Ret {
    #[default]
    Unspecified = 0,
    Full = 1,
    Headers = 2,
}

impl From<u8> for BodyType {
    /// A byte no version has written reads as unspecified, which every
    /// reader treats as 7BIT.
    fn from(byte: u8) -> BodyType {
        match byte {
            1 => BodyType::SevenBit,
            2 => BodyType::EightBitMime,
            3 => BodyType::BinaryMime,
            _ => BodyType::Unspecified,
        }
    }
}

impl From<BodyType> for u8 {
    fn from(body: BodyType) -> u8 {
        body as u8
    }
}

impl From<u8> for Ret {
    /// A byte no version has written reads as unspecified (the whole
    /// message may be returned).
    fn from(byte: u8) -> Ret {
        match byte {
            1 => Ret::Full,
            2 => Ret::Headers,
            _ => Ret::Unspecified,
        }
    }
}

impl From<Ret> for u8 {
    fn from(ret: Ret) -> u8 {
        ret as u8
    }
}

/// The 16-bit id an envelope records for the pool named `name`: a hash,
/// so that it means the same pool after a restart whatever the order of
/// the pools in the config (the config refuses two pools with one id).
/// Never 0, which stands for no pool.
pub fn pool_id(name: &str) -> u16 {
    let h = crc32c::crc32c(name.as_bytes());
    match (h ^ (h >> 16)) as u16 {
        0 => 1,
        id => id,
    }
}

/// NOTIFY parameter bits.
pub mod notify {
    pub const SUCCESS: u8 = 1;
    pub const FAILURE: u8 = 2;
    pub const DELAY: u8 = 4;
    pub const NEVER: u8 = 8;
}

/// Envelope flags.
pub mod flags {
    /// The client asked for SMTPUTF8.
    pub const SMTPUTF8: u32 = 1;
    /// This is a copy of an earlier record made when compacting segments.
    pub const COPIED: u32 = 2;
    /// The client was neither in a relay network nor authenticated: a
    /// notice about the message returns its headers only, whatever RET
    /// asked, so that a stranger cannot have petrel carry its content to
    /// an address of its choosing.
    pub const UNTRUSTED: u32 = 4;
}

/// The envelope of a message.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Envelope {
    /// Shard-local message id: the sequence number of the first record that
    /// committed it; copies keep it.
    pub msg_id: u64,
    pub received_ms: u64,
    /// The reverse path without angle brackets; empty for the null sender.
    pub reverse_path: Vec<u8>,
    pub flags: u32,
    /// A [`BodyType`] as its stored byte.
    pub body_type: u8,
    /// A [`Ret`] as its stored byte.
    pub ret: u8,
    /// The IP pool the message leaves through, as [`pool_id`] of its name;
    /// 0 for none chosen (the default pool). It fills what was padding, so
    /// envelopes written before it existed read as 0.
    pub pool: u16,
    /// RFC 3461 ENVID (xtext as received), empty if none.
    pub envid: Vec<u8>,
    pub body_len: u64,
    pub recipients: Vec<Recipient>,
    pub body: Vec<ChunkRef>,
}

impl Recipient {
    /// A new pending recipient.
    pub fn new(address: &[u8], notify: u8, orcpt: &[u8]) -> Recipient {
        Recipient {
            address: address.to_vec(),
            notify,
            orcpt: orcpt.to_vec(),
            state: 0,
            attempts: 0,
            time_ms: 0,
        }
    }

    pub fn set_state(&mut self, st: RcptState) {
        self.state = st.code();
        (self.time_ms, self.attempts) = match st {
            RcptState::Deferred { until_ms, attempts } => (until_ms, attempts),
            _ => (0, 0),
        };
    }
}

impl ArchivedRecipient {
    /// The state recorded in this (possibly copied) envelope.
    pub fn rcpt_state(&self) -> RcptState {
        RcptState::from_parts(
            self.state,
            self.time_ms.to_native(),
            self.attempts.to_native(),
        )
        .unwrap_or(RcptState::Pending)
    }
}

impl Recipient {
    /// The state recorded for this recipient (non-pending only in copies).
    pub fn rcpt_state(&self) -> RcptState {
        RcptState::from_parts(self.state, self.time_ms, self.attempts).unwrap_or(RcptState::Pending)
    }
}

/// What the queue index needs from an envelope, whether it was just read
/// from the log (archived) or is the one the daemon itself just committed
/// (owned, so it need not be read back and validated again).
pub trait EnvelopeView {
    fn msg_id(&self) -> u64;
    fn recipient_states(&self) -> impl Iterator<Item = RcptState> + '_;
    fn recipient_count(&self) -> usize;
    /// Segments holding the body's chunks.
    fn chunk_segments(&self) -> impl Iterator<Item = u64> + '_;
}

impl EnvelopeView for Envelope {
    fn msg_id(&self) -> u64 {
        self.msg_id
    }
    fn recipient_states(&self) -> impl Iterator<Item = RcptState> + '_ {
        self.recipients.iter().map(Recipient::rcpt_state)
    }
    fn recipient_count(&self) -> usize {
        self.recipients.len()
    }
    fn chunk_segments(&self) -> impl Iterator<Item = u64> + '_ {
        self.body.iter().map(|c| c.segment)
    }
}

impl EnvelopeView for ArchivedEnvelope {
    fn msg_id(&self) -> u64 {
        self.msg_id.to_native()
    }
    fn recipient_states(&self) -> impl Iterator<Item = RcptState> + '_ {
        self.recipients.iter().map(ArchivedRecipient::rcpt_state)
    }
    fn recipient_count(&self) -> usize {
        self.recipients.len()
    }
    fn chunk_segments(&self) -> impl Iterator<Item = u64> + '_ {
        self.body.iter().map(|c| c.segment.to_native())
    }
}

/// Serializes an envelope into `dst` (the payload area of a record in the
/// mapping). Returns the payload length, or `None` if it does not fit.
pub fn encode_envelope(env: &Envelope, dst: &mut [u8]) -> Option<usize> {
    let buf = rkyv::ser::writer::Buffer::from(dst);
    let out = rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(env, buf).ok()?;
    Some(out.len())
}

/// Validates and reads an archived envelope in place. `bytes` must start on a
/// 16-byte boundary, as record payloads in a segment do.
pub fn access_envelope(bytes: &[u8]) -> Option<&ArchivedEnvelope> {
    rkyv::access::<ArchivedEnvelope, rkyv::rancor::Error>(bytes).ok()
}

/// Upper bound on the archived size of an envelope, used to reserve space.
pub fn envelope_size_bound(env: &Envelope) -> usize {
    let rcpts: usize = env
        .recipients
        .iter()
        .map(|r| 64 + r.address.len() + r.orcpt.len())
        .sum();
    256 + env.reverse_path.len() + env.envid.len() + rcpts + 16 * env.body.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message record of SPEC.md's worked example, written before the
    /// envelope had a pool: it still reads, with no pool.
    #[test]
    fn the_spec_example_envelope_reads_with_no_pool() {
        let payload: [u8; 152] = [
            0x61, 0x40, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x2e, 0x6f, 0x72, 0x67, 0x62,
            0x40, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x2e, 0x6e, 0x65, 0x74, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0xed, 0xff, 0xff, 0xff, 0x0d, 0x00, 0x00, 0x00, 0x06, 0x00,
            0x00, 0x00, 0xee, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x00,
            0x16, 0x00, 0x00, 0x00, 0x02, 0x40, 0x1e, 0x18, 0x24, 0x0a, 0x06, 0x00, 0x7b, 0x68,
            0xe5, 0xcf, 0x8b, 0x01, 0x00, 0x00, 0x98, 0xff, 0xff, 0xff, 0x0d, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x95, 0xff, 0xff, 0xff, 0x00, 0x00,
            0x00, 0x00, 0x16, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x98, 0xff, 0xff, 0xff,
            0x01, 0x00, 0x00, 0x00, 0xb8, 0xff, 0xff, 0xff, 0x01, 0x00, 0x00, 0x00,
        ];
        let mut buf = rkyv::util::AlignedVec::<16>::new();
        buf.extend_from_slice(&payload);
        let a = access_envelope(&buf).expect("valid");
        assert_eq!(a.reverse_path.as_slice(), b"a@example.org");
        assert_eq!(a.received_ms.to_native(), 1_700_000_000_123);
        assert_eq!(a.pool.to_native(), 0);
    }

    #[test]
    fn the_pool_fills_the_padding_after_ret_and_leaves_the_root_at_64_bytes() {
        let mut env = Envelope {
            reverse_path: b"a@b.example".to_vec(),
            ..Default::default()
        };
        let encode = |env: &Envelope| {
            let mut buf = rkyv::util::AlignedVec::<16>::new();
            buf.resize(envelope_size_bound(env), 0);
            let n = encode_envelope(env, &mut buf).expect("fits");
            buf[..n].to_vec()
        };
        let without = encode(&env);
        env.pool = pool_id("newsletters");
        let with = encode(&env);
        assert_eq!(without.len(), with.len());
        let root = with.len() - 64;
        let differ: Vec<usize> = (0..with.len()).filter(|&i| with[i] != without[i]).collect();
        assert!(!differ.is_empty());
        assert!(
            differ.iter().all(|&i| i == root + 30 || i == root + 31),
            "{differ:?}"
        );
        assert_eq!(
            u16::from_le_bytes([with[root + 30], with[root + 31]]),
            env.pool
        );
    }

    #[test]
    fn pool_ids_are_stable_and_never_zero() {
        assert_eq!(pool_id("newsletters"), pool_id("newsletters"));
        assert_ne!(pool_id("newsletters"), pool_id("transactional"));
        let ids: std::collections::HashSet<u16> =
            (0..2000).map(|i| pool_id(&format!("pool{i}"))).collect();
        assert!(!ids.contains(&0));
        assert!(ids.len() > 1900, "ids spread: {}", ids.len());
    }

    #[test]
    fn envelope_roundtrip_in_aligned_buffer() {
        let env = Envelope {
            msg_id: 5,
            received_ms: 1000,
            reverse_path: b"a@b.example".to_vec(),
            flags: flags::SMTPUTF8,
            body_type: BodyType::EightBitMime.into(),
            ret: Ret::Full.into(),
            pool: 0,
            envid: b"xyz".to_vec(),
            body_len: 10,
            recipients: vec![Recipient::new(
                b"c@d.example",
                notify::FAILURE,
                b"rfc822;c@d.example",
            )],
            body: vec![ChunkRef {
                segment: 1,
                offset: 64,
                len: 10,
            }],
        };
        let mut buf = rkyv::util::AlignedVec::<16>::new();
        buf.resize(envelope_size_bound(&env), 0);
        let n = encode_envelope(&env, &mut buf).expect("fits");
        let a = access_envelope(&buf[..n]).expect("valid");
        assert_eq!(a.msg_id.to_native(), 5);
        assert_eq!(a.recipients[0].address.as_slice(), b"c@d.example");
        assert_eq!(a.recipients[0].rcpt_state(), RcptState::Pending);
        assert_eq!(ChunkRef::from(&a.body[0]), env.body[0]);
        assert!(access_envelope(&buf[..n - 1]).is_none());
    }

    #[test]
    fn body_type_and_ret_keep_their_stored_bytes() {
        for (body, byte) in [
            (BodyType::Unspecified, 0u8),
            (BodyType::SevenBit, 1),
            (BodyType::EightBitMime, 2),
            (BodyType::BinaryMime, 3),
        ] {
            assert_eq!(u8::from(body), byte);
            assert_eq!(BodyType::from(byte), body);
        }
        for (ret, byte) in [(Ret::Unspecified, 0u8), (Ret::Full, 1), (Ret::Headers, 2)] {
            assert_eq!(u8::from(ret), byte);
            assert_eq!(Ret::from(byte), ret);
        }
        assert_eq!(BodyType::from(200), BodyType::Unspecified);
        assert_eq!(Ret::from(200), Ret::Unspecified);
    }
}
