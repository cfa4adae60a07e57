//! The one text form of a message's identity, its queue ID: what the
//! client sees in `250 ... queued as ID`, what `Received:` carries, and
//! what every log line, notice and queue listing names it by.
//! Must never: allocate (it is on every message's path).

/// A message id as shown to clients: two hex digits of shard, fourteen of
/// message id; formatted on the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisplayId([u8; 16]);

impl DisplayId {
    pub fn new(shard: usize, msg_id: u64) -> DisplayId {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        let mut b = [b'0'; 16];
        let v = ((shard as u64 & 0xFF) << 56) | (msg_id & 0x00FF_FFFF_FFFF_FFFF);
        for (i, d) in b.iter_mut().enumerate() {
            *d = HEX[((v >> (60 - 4 * i)) & 0xF) as usize];
        }
        DisplayId(b)
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("0000000000000000")
    }
}

impl std::fmt::Display for DisplayId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::DisplayId;

    #[test]
    fn display_id_is_shard_then_message_in_hex() {
        assert_eq!(DisplayId::new(1, 0xABC).as_str(), "0100000000000ABC");
        assert_eq!(
            DisplayId::new(0x2F, 0x0012_3456_789A_BCDE).as_str(),
            format!("{:02X}{:014X}", 0x2F, 0x0012_3456_789A_BCDEu64)
        );
    }
}
