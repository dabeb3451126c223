//! Who named whom: for each address a lookup learned from another node's NODES answer, the
//! address of the node that named it last. A node behind a NAT is reached through the node that
//! named it (that node has heard from it), so hole punching asks this map for an introducer.
//!
//! Bounded: at most `capacity` addresses. The map keeps two generations; a new address goes into
//! the current one, and when the current one holds `capacity / 2`, it becomes the previous one and
//! the old previous one is forgotten. An address named again while in the previous generation
//! moves to the current one. So an address named recently is remembered, and each insertion costs
//! a hash-map insertion, with no per-entry list to maintain.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use crate::identity::seeded::SeededMap;
use crate::wire::{encode_raw_addr, RAW_ADDR_LEN};

/// An address in its 18-byte form: one write to hash (a `SocketAddr` hashes field by field).
type Raw = [u8; RAW_ADDR_LEN];

/// An IPv4 address and its port.
type V4 = [u8; 6];

/// An address as a key: IPv4 (also IPv4-mapped IPv6) in 6 bytes, else its 18-byte form. Two
/// addresses are the same key when their 18-byte forms are the same.
#[derive(Clone, Copy)]
enum Key {
    V4(V4),
    Raw(Raw),
}

impl Key {
    fn of(addr: &SocketAddr) -> Key {
        let raw = encode_raw_addr(*addr);
        match raw[..12] {
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] => Key::V4(raw[12..].try_into().expect("6 bytes")),
            _ => Key::Raw(raw),
        }
    }

    fn raw(self) -> Raw {
        match self {
            Key::V4(v4) => {
                let mut raw = [0u8; RAW_ADDR_LEN];
                raw[10..12].copy_from_slice(&[0xff, 0xff]);
                raw[12..].copy_from_slice(&v4);
                raw
            }
            Key::Raw(raw) => raw,
        }
    }
}

/// One generation of the map. An IPv4 address named by an IPv4 teller takes 12 bytes (both
/// addresses in 6); any other pair the address's 18-byte form and the whole `SocketAddr` of the
/// teller. An address is in one of the two tables at most.
#[derive(Debug, Clone, Default)]
struct Generation {
    v4: SeededMap<V4, V4>,
    other: SeededMap<Raw, SocketAddr>,
}

impl Generation {
    fn len(&self) -> usize {
        self.v4.len() + self.other.len()
    }

    fn get(&self, key: Key) -> Option<SocketAddr> {
        match key {
            Key::V4(k) => match self.v4.get(&k) {
                Some(t) => Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::new(t[0], t[1], t[2], t[3]),
                    u16::from_be_bytes([t[4], t[5]]),
                ))),
                None => self.other.get(&key.raw()).copied(),
            },
            Key::Raw(k) => self.other.get(&k).copied(),
        }
    }

    /// Forgets `key`; true when it was held.
    fn remove(&mut self, key: Key) -> bool {
        if let Key::V4(k) = key {
            if self.v4.remove(&k).is_some() {
                return true;
            }
        }
        self.other.remove(&key.raw()).is_some()
    }

    /// Sets the teller of `key`, absent.
    fn insert(&mut self, key: Key, teller: SocketAddr) {
        match (key, teller) {
            (Key::V4(k), SocketAddr::V4(t)) => {
                let (ip, port) = (t.ip().octets(), t.port().to_be_bytes());
                self.v4.insert(k, [ip[0], ip[1], ip[2], ip[3], port[0], port[1]]);
            }
            _ => {
                self.other.insert(key.raw(), teller);
            }
        }
    }
}

/// The bounded "who named whom" map (see the module docs).
#[derive(Debug, Clone)]
pub struct Tellers {
    current: Generation,
    previous: Generation,
    half: usize,
}

impl Tellers {
    /// A map of at most `capacity` addresses (at least 2).
    #[must_use]
    pub fn new(capacity: usize) -> Tellers {
        Tellers { current: Generation::default(), previous: Generation::default(), half: (capacity / 2).max(1) }
    }

    /// `teller` named `addr` in an answer.
    pub fn told(&mut self, addr: SocketAddr, teller: SocketAddr) {
        let key = Key::of(&addr);
        if self.current.remove(key) {
            self.current.insert(key, teller);
            return;
        }
        self.previous.remove(key);
        if self.current.len() >= self.half {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key, teller);
    }

    /// The node that named `addr` last, if remembered.
    #[must_use]
    pub fn teller_of(&self, addr: &SocketAddr) -> Option<SocketAddr> {
        let key = Key::of(addr);
        self.current.get(key).or_else(|| self.previous.get(key))
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
    fn any_teller_is_returned_whole_and_mapped_addresses_are_ipv4() {
        let mut t = Tellers::new(8);
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:4000".parse().unwrap();
        let scoped: SocketAddr = "[fe80::1%3]:5000".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:4000".parse().unwrap();
        t.told(a(1), scoped);
        assert_eq!(t.teller_of(&a(1)), Some(scoped));
        assert_eq!(t.teller_of(&mapped), Some(scoped), "an IPv4-mapped address is its IPv4 address");
        // The teller changes kind: IPv4, an IPv4-mapped IPv6 one (kept as such), IPv4 again.
        for teller in [a(2), mapped, a(3)] {
            t.told(mapped, teller);
            assert_eq!(t.teller_of(&a(1)), Some(teller));
            assert_eq!(t.len(), 1);
        }
        t.told(v6, a(4));
        t.told(scoped, v6);
        assert_eq!((t.teller_of(&v6), t.teller_of(&scoped)), (Some(a(4)), Some(v6)));
        // The 18-byte form decides: the scope is not part of it.
        assert_eq!(t.teller_of(&"[fe80::1%4]:5000".parse().unwrap()), Some(v6));
        assert_eq!(t.teller_of(&"[fe80::1]:5001".parse().unwrap()), None);
        assert_eq!(t.len(), 3);
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
