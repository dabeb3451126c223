//! Who named whom: for each address a lookup learned from another node's NODES answer, the
//! address of the node that named it last. A node behind a NAT is reached through the node that
//! named it (that node has heard from it), so hole punching asks this map for an introducer.
//!
//! Bounded: at most `capacity` addresses. The map keeps two generations; a new address goes into
//! the current one, and when the current one holds `capacity / 2`, it becomes the previous one and
//! the old previous one is forgotten. An address named again while in the previous generation
//! moves to the current one. So an address named recently is remembered, and each insertion costs
//! a hash-map insertion, with no per-entry list to maintain.

use std::net::SocketAddr;

use crate::identity::seeded::SeededMap;
use crate::wire::{encode_raw_addr, RAW_ADDR_LEN};

/// An address in its 18-byte form: one write to hash (a `SocketAddr` hashes field by field).
type Raw = [u8; RAW_ADDR_LEN];

/// The bounded "who named whom" map (see the module docs).
#[derive(Debug, Clone)]
pub struct Tellers {
    current: SeededMap<Raw, SocketAddr>,
    previous: SeededMap<Raw, SocketAddr>,
    half: usize,
}

impl Tellers {
    /// A map of at most `capacity` addresses (at least 2).
    #[must_use]
    pub fn new(capacity: usize) -> Tellers {
        Tellers { current: SeededMap::default(), previous: SeededMap::default(), half: (capacity / 2).max(1) }
    }

    /// `teller` named `addr` in an answer.
    pub fn told(&mut self, addr: SocketAddr, teller: SocketAddr) {
        let addr = encode_raw_addr(addr);
        if let Some(t) = self.current.get_mut(&addr) {
            *t = teller;
            return;
        }
        self.previous.remove(&addr);
        if self.current.len() >= self.half {
            self.previous = std::mem::take(&mut self.current);
            self.current.reserve(self.half);
        }
        self.current.insert(addr, teller);
    }

    /// The node that named `addr` last, if remembered.
    #[must_use]
    pub fn teller_of(&self, addr: &SocketAddr) -> Option<SocketAddr> {
        let addr = encode_raw_addr(*addr);
        self.current.get(&addr).or_else(|| self.previous.get(&addr)).copied()
    }

    /// Addresses remembered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// True when no address is remembered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(i: u32) -> SocketAddr {
        SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 4000))
    }

    #[test]
    fn remembers_the_last_teller() {
        let mut t = Tellers::new(8);
        assert_eq!(t.teller_of(&a(1)), None);
        t.told(a(1), a(100));
        t.told(a(1), a(101));
        assert_eq!(t.teller_of(&a(1)), Some(a(101)));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn bounded_and_recent_addresses_stay() {
        let mut t = Tellers::new(100);
        for i in 0..10_000 {
            t.told(a(i), a(1_000_000 + i));
            assert!(t.len() <= 100);
            // Named again while old: it moves to the current generation and stays.
            if i % 40 == 0 {
                t.told(a(7), a(99));
            }
        }
        assert_eq!(t.teller_of(&a(7)), Some(a(99)));
        for i in 10_000 - 40..10_000 {
            assert_eq!(t.teller_of(&a(i)), Some(a(1_000_000 + i)), "one of the last 40 named");
        }
        assert_eq!(t.teller_of(&a(0)), None, "the first forgotten");
        assert!(!t.is_empty());
    }

    #[test]
    fn named_again_from_the_previous_generation_is_not_counted_twice() {
        let mut t = Tellers::new(4);
        t.told(a(1), a(9));
        t.told(a(2), a(9));
        t.told(a(3), a(9)); // a(1), a(2) now previous
        t.told(a(1), a(8)); // moves to current
        assert_eq!(t.len(), 3);
        assert_eq!(t.teller_of(&a(1)), Some(a(8)));
    }
}
