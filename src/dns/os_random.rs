//! Unpredictable bits for queries: transaction ids and 0x20 case bits.
//!
//! Owns: a small pool of bytes from the kernel's CSPRNG (`getrandom`),
//! refilled in batches so that one system call serves 64 queries. Must
//! never: fall back to a seeded generator (an off-path spoofer who learns
//! one id must not be able to predict the next), or be shared across
//! shards (each resolver owns its pool).

use std::io;

use rustix::rand::GetRandomFlags;

/// Bytes fetched per `getrandom` call: 64 queries' transaction ids and
/// case bits for names of up to 64 letters.
const BATCH: usize = 64 * (2 + 8);

/// A batch of kernel random bytes handed out a few at a time.
pub(crate) struct OsRandom {
    pool: [u8; BATCH],
    /// Next unused byte; `BATCH` when the pool is spent.
    next: usize,
    /// Batches fetched so far.
    refills: u64,
}

impl Default for OsRandom {
    fn default() -> Self {
        OsRandom {
            pool: [0; BATCH],
            next: BATCH,
            refills: 0,
        }
    }
}

impl OsRandom {
    /// A transaction id.
    pub(crate) fn next_u16(&mut self) -> io::Result<u16> {
        let mut b = [0u8; 2];
        self.take(&mut b)?;
        Ok(u16::from_ne_bytes(b))
    }

    /// 64 random bits (the case of up to 64 letters).
    pub(crate) fn next_u64(&mut self) -> io::Result<u64> {
        let mut b = [0u8; 8];
        self.take(&mut b)?;
        Ok(u64::from_ne_bytes(b))
    }

    /// Batches fetched from the kernel so far.
    #[cfg(test)]
    pub(crate) fn refills(&self) -> u64 {
        self.refills
    }

    fn take(&mut self, out: &mut [u8]) -> io::Result<()> {
        if BATCH - self.next < out.len() {
            self.refill()?;
        }
        let end = self.next + out.len();
        out.copy_from_slice(&self.pool[self.next..end]);
        // Used bytes are not kept around for anyone reading memory later.
        self.pool[self.next..end].fill(0);
        self.next = end;
        Ok(())
    }

    fn refill(&mut self) -> io::Result<()> {
        let mut filled = 0;
        while filled < BATCH {
            match rustix::rand::getrandom(&mut self.pool[filled..], GetRandomFlags::empty()) {
                Ok(n) => filled += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.next = 0;
        self.refills += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::XorShift;

    fn ids(r: &mut OsRandom, n: usize) -> Vec<u16> {
        (0..n).map(|_| r.next_u16().unwrap()).collect()
    }

    #[test]
    fn two_sources_give_different_ids_and_not_a_seeded_sequence() {
        let (a, b) = (
            ids(&mut OsRandom::default(), 64),
            ids(&mut OsRandom::default(), 64),
        );
        // 64 equal 16-bit ids by chance: 2^-1024.
        assert_ne!(a, b);
        for seed in [0, 1, 2, 42, u64::MAX] {
            let mut x = XorShift::new(seed);
            let seeded: Vec<u16> = (0..64).map(|_| x.next_u16()).collect();
            assert_ne!(a, seeded, "seed {seed}");
        }
    }

    #[test]
    fn a_batch_serves_64_queries_then_refills() {
        let mut r = OsRandom::default();
        assert_eq!(r.refills(), 0);
        let mut first = Vec::new();
        for _ in 0..64 {
            first.extend(ids(&mut r, 1));
            r.next_u64().unwrap();
        }
        assert_eq!(r.refills(), 1, "64 ids and case bits from one getrandom");
        let second = ids(&mut r, 2);
        assert_eq!(r.refills(), 2);
        let rest = ids(&mut r, 62);
        assert_eq!(r.refills(), 2);
        // The refilled batch is fresh bytes, not the spent (zeroed) pool.
        assert_ne!([second, rest].concat(), first);
        assert!(first.iter().any(|&id| id != 0));
        for _ in 0..(BATCH - 128) / 8 {
            r.next_u64().unwrap();
        }
        assert_eq!(r.refills(), 2, "the batch is used to its last byte");
        r.next_u16().unwrap();
        assert_eq!(r.refills(), 3);
    }
}
