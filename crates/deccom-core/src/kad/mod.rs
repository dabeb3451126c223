//! Kademlia, sans-IO: the routing table ([`kbucket`]), the iterative lookup ([`lookup`]) and the
//! wire format ([`wire`]).
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

pub mod kbucket;
pub mod lookup;
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
