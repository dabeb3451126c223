//! Deterministic node ids for the Kademlia tests and benchmarks (SplitMix64).

#![allow(dead_code)]

/// A 32-byte node id.
pub type Id = [u8; 32];

/// SplitMix64: a deterministic stream of numbers and ids.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn id(&mut self) -> Id {
        let mut id = [0u8; 32];
        for c in id.chunks_exact_mut(8) {
            c.copy_from_slice(&self.next().to_be_bytes());
        }
        id
    }

    /// A number below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// `n` ids from the stream seeded with `seed`.
pub fn random_ids(n: usize, seed: u64) -> Vec<Id> {
    let mut r = SplitMix(seed);
    (0..n).map(|_| r.id()).collect()
}
