//! Kademlia, sans-IO: the routing table ([`kbucket`]), the iterative lookup ([`lookup`]), the
//! wire format ([`wire`]) and the per-address state and limits of answering and asking
//! ([`addrbook`]).
//!
//! Nothing here sends a datagram or reads the clock. The caller (the TypeScript `Kademlia` layer
//! through `deccom-napi`'s `KadTable`/`KadLookup`, or a test harness) feeds in what happened —
//! a peer was seen, a ping was answered or not, a query succeeded or failed, `now` — and gets back
//! what to do: "ping this peer first", "query this peer", "wait until this instant", "finished".
//!
//! # Distance
//!
//! Node ids are 32-byte SHA-256 values read as big-endian 256-bit integers; the distance of two ids
//! is their XOR ([`distance`]), compared as a big-endian integer (byte arrays compare that way).
//! Bucket `i` holds the ids whose distance to the local id has its highest set bit at position `i`
//! (bit 255 = the top bit of byte 0): the standard 256-bucket layout, equivalent to buckets that
//! split around the own id (see [`kbucket`]).

pub mod addrbook;
pub mod kbucket;
pub mod lookup;
pub mod node;
pub mod tellers;
pub mod wire;

use crate::identity::NodeId;

/// The XOR distance of two ids, as a big-endian 256-bit integer.
pub type Distance = [u8; 32];

/// `a XOR b`.
#[must_use]
#[inline]
pub fn distance(a: &NodeId, b: &NodeId) -> Distance {
    let mut d = [0u8; 32];
    for i in 0..32 {
        d[i] = a[i] ^ b[i];
    }
    d
}

/// A [`Distance`] as four big-endian 64-bit words: arrays of them compare word by word in the
/// same order as the distance's bytes, in a few integer comparisons instead of a byte comparison
/// of 32 bytes (what sorting candidates by distance spends its time on).
pub type DistanceKey = [u64; 4];

/// `a XOR b` as a [`DistanceKey`].
#[must_use]
#[inline]
pub fn distance_key(a: &NodeId, b: &NodeId) -> DistanceKey {
    let word = |i: usize| {
        let mut x = [0u8; 8];
        let mut y = [0u8; 8];
        x.copy_from_slice(&a[8 * i..8 * i + 8]);
        y.copy_from_slice(&b[8 * i..8 * i + 8]);
        u64::from_be_bytes(x) ^ u64::from_be_bytes(y)
    };
    [word(0), word(1), word(2), word(3)]
}

/// Position (0..=255, 255 = most significant) of the highest set bit of `d`, or `None` if `d` is 0.
#[must_use]
#[inline]
pub fn highest_bit(d: &Distance) -> Option<usize> {
    d.iter()
        .position(|&b| b != 0)
        .map(|i| (31 - i) * 8 + (7 - d[i].leading_zeros() as usize))
}

/// Bit `j` (0 = least significant) of `d`.
#[must_use]
#[inline]
pub fn bit(d: &Distance, j: usize) -> bool {
    (d[31 - j / 8] >> (j % 8)) & 1 == 1
}

/// SplitMix64: a deterministic stream of `n` ids for the tests.
#[cfg(test)]
pub(crate) fn splitmix_ids(n: usize, mut seed: u64) -> Vec<NodeId> {
    let mut next = move || {
        seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    (0..n)
        .map(|_| {
            let mut id = [0u8; 32];
            for c in id.chunks_exact_mut(8) {
                c.copy_from_slice(&next().to_be_bytes());
            }
            id
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids of [`splitmix_ids`], every third one with a long common prefix, so that later words
    /// decide too.
    fn ids(n: usize, seed: u64) -> Vec<NodeId> {
        let mut all = splitmix_ids(n, seed);
        for id in all.iter_mut().step_by(3) {
            id[..20].fill(0xA5);
        }
        all
    }

    #[test]
    fn distance_key_orders_like_distance() {
        let all = ids(200, 7);
        let target = all[0];
        for a in &all {
            for b in &all {
                let by_bytes = distance(a, &target).cmp(&distance(b, &target));
                let by_words = distance_key(a, &target).cmp(&distance_key(b, &target));
                assert_eq!(by_bytes, by_words);
            }
        }
        let d = distance(&all[1], &all[2]);
        let k = distance_key(&all[1], &all[2]);
        let mut back = [0u8; 32];
        for (i, w) in k.iter().enumerate() {
            back[8 * i..8 * i + 8].copy_from_slice(&w.to_be_bytes());
        }
        assert_eq!(back, d);
    }
}
