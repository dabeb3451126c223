//! The hasher of tables keyed by bytes a peer chooses (public keys, signatures, node ids,
//! addresses): keyed by two random 64-bit words drawn per table, so colliding keys cannot be
//! chosen without them, and a multiply-fold per 8-byte word, a fraction of SipHash's cost on the
//! short keys these tables hold.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};

/// A map with [`Seeded`] hashing.
pub(crate) type SeededMap<K, V> = HashMap<K, V, Seeded>;
/// A set with [`Seeded`] hashing.
pub(crate) type SeededSet<K> = HashSet<K, Seeded>;

/// Builds [`Fold`] hashers from the two random words of a table (`default` draws them).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Seeded {
    start: u64,
    mul: u64,
}

impl Default for Seeded {
    fn default() -> Self {
        let random = RandomState::new();
        Seeded { start: random.hash_one(0u8), mul: random.hash_one(1u8) | 1 }
    }
}

impl BuildHasher for Seeded {
    type Hasher = Fold;
    #[inline]
    fn build_hasher(&self) -> Fold {
        Fold { hash: self.start, mul: self.mul }
    }
}

/// Folds each word into the hash: the 128-bit product of (hash ^ word) and the table's odd
/// multiplier, its halves XORed.
pub(crate) struct Fold {
    hash: u64,
    mul: u64,
}

impl Fold {
    #[inline]
    fn add(&mut self, word: u64) {
        let p = u128::from(self.hash ^ word) * u128::from(self.mul);
        self.hash = (p as u64) ^ ((p >> 64) as u64);
    }
}

impl Hasher for Fold {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.add(u64::from_le_bytes(w.try_into().expect("8 bytes")));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            // The length too: "ab" and "ab\0" differ.
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[test]
    fn close_keys_spread_over_buckets_and_tags() {
        let s = Seeded::default();
        let (mut low, mut top) = (HashSet::new(), HashSet::new());
        // Addresses one apart: a table of 4096 buckets indexes by the low 12 bits, tags by the top 7.
        for i in 0..4096u32 {
            let h = s.hash_one(SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 4000)));
            low.insert(h & 4095);
            top.insert(h >> 57);
        }
        // 4096 random values in 4096 buckets fill about 2,589 of them.
        assert!(low.len() > 2400, "{} buckets", low.len());
        assert_eq!(top.len(), 128);
    }

    #[test]
    fn each_table_has_its_own_seed() {
        let (a, b) = (Seeded::default(), Seeded::default());
        let key = [7u8; 32];
        assert_eq!(a.hash_one(key), a.hash_one(key));
        assert_ne!(a.hash_one(key), b.hash_one(key));
    }

    #[test]
    fn trailing_zero_bytes_count() {
        let s = Seeded::default();
        let hash = |bytes: &[u8]| {
            let mut h = s.build_hasher();
            h.write(bytes);
            h.finish()
        };
        assert_ne!(hash(b"ab"), hash(b"ab\0"));
        assert_ne!(hash(b"12345678"), hash(b"12345678\0"));
    }
}
