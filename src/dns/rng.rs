//! A small seeded PRNG (xorshift64*) for MX shuffling and tests.
//!
//! Owns: deterministic pseudo-random numbers from a seed. Must never: seed
//! itself from the clock or the OS (the caller provides the seed so tests
//! replay exactly), or make anything an attacker must not guess, such as
//! DNS transaction ids (those come from `os_random`).

/// xorshift64* generator; not cryptographic: its output reveals its state.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from `seed`; a zero seed is replaced (xorshift sticks at 0).
    pub fn new(seed: u64) -> Self {
        // Mix the seed so that nearby seeds give unrelated sequences.
        let mixed = splitmix(seed);
        XorShift(if mixed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            mixed
        })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn next_u16(&mut self) -> u16 {
        (self.next_u64() >> 48) as u16
    }

    /// A number in `0..bound` (bound > 0); the bias is negligible for the
    /// small bounds used here.
    pub fn below(&mut self, bound: usize) -> usize {
        debug_assert!(bound > 0);
        (self.next_u64() % bound.max(1) as u64) as usize
    }
}

fn splitmix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_zero_seed_works() {
        let a: Vec<u64> = (0..4)
            .scan(XorShift::new(7), |r, _| Some(r.next_u64()))
            .collect();
        let b: Vec<u64> = (0..4)
            .scan(XorShift::new(7), |r, _| Some(r.next_u64()))
            .collect();
        assert_eq!(a, b);
        let mut z = XorShift::new(0);
        assert_ne!(z.next_u64(), z.next_u64());
        assert_ne!(XorShift::new(1).next_u64(), XorShift::new(2).next_u64());
    }

    #[test]
    fn below_stays_in_range() {
        let mut r = XorShift::new(3);
        assert!((0..1000).all(|_| r.below(5) < 5));
    }
}
