//! What a Kademlia node knows about the addresses it talks to, and the limits it applies to them
//! (sans-IO: the caller passes `now`).
//!
//! - **Verified** addresses echoed one of our request ids ([`AddrBook::answered`]): whoever sent
//!   from there receives there, so answering it in full amplifies nothing.
//! - **Verified-by** addresses had a request answered by us ([`AddrBook::remember_verified_by`]):
//!   they have verified us, so our FIND_NODEs to them need no padding.
//! - **Unvalidated request budgets.** A request to an address that never answered us (a NODES
//!   record may name any victim) spends a token of the address's IP and of its prefix
//!   ([`AddrBook::within_budget`]); the token comes back when the address answers. So a flood of
//!   fake records naming one victim yields at most [`UNVALIDATED_BURST_IP`] queries to its IP
//!   ([`UNVALIDATED_BURST_PREFIX`] to its prefix), then [`UNVALIDATED_RATE`] per second.
//! - **The reply rate.** A request from an address that is not validated is answered at most
//!   [`REPLY_RATE`] times per second per source prefix, with a burst of [`REPLY_BURST`]
//!   ([`AddrBook::reply_allowed`]), so spoofed requests naming one victim network reflect a bounded
//!   number of datagrams.
//!
//! Every table is bounded: the address sets hold [`MAX_ADDR_SET`] addresses (the oldest forgotten
//! first), the token buckets [`MAX_BUCKET_KEYS`] keys each (the least recently used forgotten
//! first; a bucket that is full again is forgotten at once, as a new key starts full).
//! Prefixes are IPv4 /24 and IPv6 /48; an IPv4-mapped IPv6 address counts as IPv4 ([`Prefix::of`]).

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::time::Instant;

use crate::identity::seeded::SeededMap;

/// Addresses each of the verified and verified-by sets holds.
pub const MAX_ADDR_SET: usize = 8192;
/// Requests an unvalidated IP may get at once.
pub const UNVALIDATED_BURST_IP: f64 = 16.0;
/// Requests an unvalidated prefix may get at once.
pub const UNVALIDATED_BURST_PREFIX: f64 = 64.0;
/// Requests per second to an unvalidated IP (and prefix) once its burst is spent.
pub const UNVALIDATED_RATE: f64 = 1.0;
/// Answers per second to a source prefix that is not validated.
pub const REPLY_RATE: f64 = 200.0;
/// Answers a source prefix that is not validated may get at once.
pub const REPLY_BURST: f64 = 400.0;
/// Keys each table of token buckets holds.
pub const MAX_BUCKET_KEYS: usize = 4096;

/// A source prefix: the first three bytes of an IPv4 address, the first six of an IPv6 one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prefix {
    /// IPv4 /24 (also for an IPv4-mapped IPv6 address).
    V4([u8; 3]),
    /// IPv6 /48.
    V6([u8; 6]),
}

impl Prefix {
    /// The prefix of `ip`.
    #[must_use]
    pub fn of(ip: IpAddr) -> Prefix {
        let v4 = match ip {
            IpAddr::V4(v4) => v4,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4,
                None => {
                    let o = v6.octets();
                    return Prefix::V6([o[0], o[1], o[2], o[3], o[4], o[5]]);
                }
            },
        };
        let o = v4.octets();
        Prefix::V4([o[0], o[1], o[2]])
    }
}

const NIL: u32 = u32::MAX;

/// A slot of [`Recency`]: its key, its value and its less / more recently used neighbours.
struct Node<K, V> {
    key: K,
    value: V,
    prev: u32,
    next: u32,
}

/// Values by key, at most `max` of them: adding a key to a full map first forgets the least
/// recently used one. Recency is a doubly linked list through the slots (indices into `nodes`),
/// so using an entry moves it without rehashing. A key that is only added, never used, is
/// forgotten oldest first.
struct Recency<K, V> {
    index: SeededMap<K, u32>,
    nodes: Vec<Node<K, V>>,
    free: Vec<u32>,
    /// Least and most recently used.
    lru: u32,
    mru: u32,
    max: usize,
}

impl<K: Copy + Eq + Hash, V> Recency<K, V> {
    fn new(max: usize) -> Self {
        Recency { index: SeededMap::default(), nodes: Vec::new(), free: Vec::new(), lru: NIL, mru: NIL, max: max.max(1) }
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    /// The value of `key`, its recency unchanged.
    fn peek_mut(&mut self, key: &K) -> Option<&mut V> {
        let i = *self.index.get(key)?;
        Some(&mut self.nodes[i as usize].value)
    }

    /// The slot of `key` (in `nodes`), made the most recently used one.
    fn use_slot(&mut self, key: &K) -> Option<u32> {
        let i = *self.index.get(key)?;
        if i != self.mru {
            self.unlink(i);
            self.append(i);
        }
        Some(i)
    }

    /// Adds `key` (absent) as the most recently used entry, first forgetting the least recently
    /// used one when `max` are held.
    fn insert(&mut self, key: K, value: V) -> &mut V {
        if self.index.len() >= self.max && self.lru != NIL {
            let k = self.nodes[self.lru as usize].key;
            self.remove(&k);
        }
        let i = place(&mut self.nodes, &mut self.free, Node { key, value, prev: NIL, next: NIL });
        self.index.insert(key, i);
        self.append(i);
        &mut self.nodes[i as usize].value
    }

    /// Forgets `key`; false when it was absent.
    fn remove(&mut self, key: &K) -> bool {
        let Some(i) = self.index.remove(key) else { return false };
        self.unlink(i);
        self.free.push(i);
        true
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = (self.nodes[i as usize].prev, self.nodes[i as usize].next);
        if prev == NIL {
            self.lru = next;
        } else {
            self.nodes[prev as usize].next = next;
        }
        if next == NIL {
            self.mru = prev;
        } else {
            self.nodes[next as usize].prev = prev;
        }
        let n = &mut self.nodes[i as usize];
        n.prev = NIL;
        n.next = NIL;
    }

    fn append(&mut self, i: u32) {
        let mru = self.mru;
        {
            let n = &mut self.nodes[i as usize];
            n.prev = mru;
            n.next = NIL;
        }
        if mru == NIL {
            self.lru = i;
        } else {
            self.nodes[mru as usize].next = i;
        }
        self.mru = i;
    }
}

/// Puts `x` in a slot of `slots` freed before (listed in `free`), else in a new one; returns its
/// index.
fn place<T>(slots: &mut Vec<T>, free: &mut Vec<u32>, x: T) -> u32 {
    match free.pop() {
        Some(i) => {
            slots[i as usize] = x;
            i
        }
        None => {
            slots.push(x);
            u32::try_from(slots.len() - 1).expect("fewer than 2^32 slots")
        }
    }
}

/// An address as a key of [`AddrSet`], in 8 bytes (a `SocketAddr` takes 32): an IPv4 address and
/// its port in the first six (the last two zero), or the index of an IPv6 address in the set's
/// table of them in the first four (byte 7 one).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Compact([u8; 8]);

impl Hash for Compact {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(u64::from_ne_bytes(self.0));
    }
}

impl Compact {
    fn v4(ip: [u8; 4], port: u16) -> Compact {
        let p = port.to_be_bytes();
        Compact([ip[0], ip[1], ip[2], ip[3], p[0], p[1], 0, 0])
    }

    fn v6(index: u32) -> Compact {
        let i = index.to_le_bytes();
        Compact([i[0], i[1], i[2], i[3], 0, 0, 0, 1])
    }

    /// The index of an IPv6 address, if this is one.
    fn v6_index(self) -> Option<u32> {
        (self.0[7] == 1).then(|| u32::from_le_bytes([self.0[0], self.0[1], self.0[2], self.0[3]]))
    }
}

/// A set of addresses, at most `max`: adding one to a full set first forgets the one added
/// earliest. IPv4 addresses are their own keys ([`Compact`]); an IPv6 address (with its flow
/// label and scope: the set tells apart what `SocketAddr` does) is kept once in `v6` and keyed
/// by its index there.
///
/// The order of addition is a queue of keys: `order[i]` is place number `first + i` (wrapping),
/// and `index` holds each key's place. A key forgotten, or added again, leaves its old place
/// behind, which counts no more (its number is not the key's); such places are skipped at the
/// front, and dropped all at once when they are half of the queue.
struct AddrSet {
    index: SeededMap<Compact, u32>,
    order: VecDeque<Compact>,
    first: u32,
    max: usize,
    /// Each IPv6 address held, by its index in `v6`.
    v6_index: SeededMap<SocketAddrV6, u32>,
    /// The IPv6 addresses held (a freed index is reused).
    v6: Vec<SocketAddrV6>,
    v6_free: Vec<u32>,
}

impl AddrSet {
    fn new(max: usize) -> Self {
        AddrSet {
            index: SeededMap::default(),
            order: VecDeque::new(),
            first: 0,
            max: max.max(1),
            v6_index: SeededMap::default(),
            v6: Vec::new(),
            v6_free: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    /// The key of `addr` if it is held.
    fn key(&self, addr: &SocketAddr) -> Option<Compact> {
        match addr {
            SocketAddr::V4(a) => Some(Compact::v4(a.ip().octets(), a.port())).filter(|k| self.index.contains_key(k)),
            SocketAddr::V6(a) => self.v6_index.get(a).map(|&i| Compact::v6(i)),
        }
    }

    fn contains(&self, addr: &SocketAddr) -> bool {
        self.key(addr).is_some()
    }

    /// Whether place `i` of the queue is its key's.
    fn current(&self, i: usize) -> bool {
        self.index.get(&self.order[i]) == Some(&self.first.wrapping_add(i as u32))
    }

    /// Adds `addr` if absent, first forgetting the earliest added when `max` are held.
    fn insert(&mut self, addr: SocketAddr) {
        if self.contains(&addr) {
            return;
        }
        if self.index.len() >= self.max {
            while !self.order.is_empty() && !self.current(0) {
                self.order.pop_front();
                self.first = self.first.wrapping_add(1);
            }
            if let Some(oldest) = self.order.pop_front() {
                self.first = self.first.wrapping_add(1);
                self.forget(oldest);
            }
        }
        let key = match addr {
            SocketAddr::V4(a) => Compact::v4(a.ip().octets(), a.port()),
            SocketAddr::V6(a) => {
                let i = place(&mut self.v6, &mut self.v6_free, a);
                self.v6_index.insert(a, i);
                Compact::v6(i)
            }
        };
        self.index.insert(key, self.first.wrapping_add(self.order.len() as u32));
        self.order.push_back(key);
    }

    /// Forgets `addr`, if held.
    fn remove(&mut self, addr: &SocketAddr) {
        if let Some(key) = self.key(addr) {
            self.forget(key);
        }
        // Places left behind: dropped once they are half of the queue (so it holds at most
        // twice the addresses, plus a few).
        if self.order.len() > 2 * self.index.len() + 16 {
            let mut kept = VecDeque::with_capacity(self.index.len());
            for i in 0..self.order.len() {
                if self.current(i) {
                    kept.push_back(self.order[i]);
                }
            }
            for (n, k) in kept.iter().enumerate() {
                self.index.insert(*k, n as u32);
            }
            self.order = kept;
            self.first = 0;
        }
    }

    /// Forgets the address of `key` (held); its place stays behind in the queue.
    fn forget(&mut self, key: Compact) {
        self.index.remove(&key);
        if let Some(i) = key.v6_index() {
            self.v6_index.remove(&self.v6[i as usize]);
            self.v6_free.push(i);
        }
    }
}

/// A token bucket: tokens left (fractional while refilling) as of `at`.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets by key (an IP, a prefix), `rate` tokens per second up to `burst`, in a bounded
/// [`Recency`] table.
struct Buckets<K> {
    rate: f64,
    burst: f64,
    table: Recency<K, Bucket>,
}

impl<K: Copy + Eq + Hash> Buckets<K> {
    fn new(rate: f64, burst: f64) -> Self {
        Buckets { rate, burst, table: Recency::new(MAX_BUCKET_KEYS) }
    }

    /// The bucket of `key` refilled to `now` and made the most recently used (a new key starts
    /// full).
    fn refill(&mut self, key: K, now: Instant) -> &mut Bucket {
        let (rate, burst) = (self.rate, self.burst);
        match self.table.use_slot(&key) {
            Some(i) => {
                let b = &mut self.table.nodes[i as usize].value;
                b.tokens = burst.min(b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate);
                b.at = now;
                b
            }
            None => self.table.insert(key, Bucket { tokens: burst, at: now }),
        }
    }

    /// Takes a token of `key` at `now`; false when none is left.
    fn take(&mut self, key: K, now: Instant) -> bool {
        let b = self.refill(key, now);
        if b.tokens < 1.0 {
            return false;
        }
        b.tokens -= 1.0;
        true
    }

    /// Gives a token back to `key` (up to the burst); a bucket that is full again is forgotten.
    fn refund(&mut self, key: K) {
        let burst = self.burst;
        let Some(b) = self.table.peek_mut(&key) else { return };
        b.tokens += 1.0;
        if b.tokens >= burst {
            self.table.remove(&key);
        }
    }
}

/// How many entries each table holds (for a layer's statistics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AddrBookSizes {
    /// Verified addresses.
    pub verified: usize,
    /// Verified-by addresses.
    pub verified_by: usize,
    /// IPs with request budget spent.
    pub budget_ips: usize,
    /// Prefixes with request budget spent.
    pub budget_prefixes: usize,
    /// Prefixes the reply rate tracks.
    pub reply_limit_keys: usize,
}

/// The per-address state of a Kademlia node (see the module docs).
pub struct AddrBook {
    verified: AddrSet,
    verified_by: AddrSet,
    ips: Buckets<IpAddr>,
    prefixes: Buckets<Prefix>,
    replies: Buckets<Prefix>,
}

impl Default for AddrBook {
    fn default() -> Self {
        AddrBook::new()
    }
}

impl AddrBook {
    /// An empty book.
    #[must_use]
    pub fn new() -> Self {
        AddrBook {
            verified: AddrSet::new(MAX_ADDR_SET),
            verified_by: AddrSet::new(MAX_ADDR_SET),
            ips: Buckets::new(UNVALIDATED_RATE, UNVALIDATED_BURST_IP),
            prefixes: Buckets::new(UNVALIDATED_RATE, UNVALIDATED_BURST_PREFIX),
            replies: Buckets::new(REPLY_RATE, REPLY_BURST),
        }
    }

    /// Whether `addr` echoed one of our request ids (and is still remembered).
    #[must_use]
    pub fn is_verified(&self, addr: &SocketAddr) -> bool {
        self.verified.contains(addr)
    }

    /// `addr` echoed one of our request ids: the budget its request took comes back, and it is
    /// verified from now on.
    pub fn answered(&mut self, addr: SocketAddr) {
        if self.verified.contains(&addr) {
            return;
        }
        self.ips.refund(addr.ip());
        self.prefixes.refund(Prefix::of(addr.ip()));
        self.verified.insert(addr);
    }

    /// Whether a request to `addr` may be sent at `now`: always to a verified address or to one
    /// the caller validated otherwise (`validated`: a routing table entry's), else when its IP and
    /// its prefix both have a token left, which it then spends.
    pub fn within_budget(&mut self, addr: &SocketAddr, validated: bool, now: Instant) -> bool {
        if validated || self.verified.contains(addr) {
            return true;
        }
        let ip = addr.ip();
        if self.ips.refill(ip, now).tokens < 1.0 {
            return false;
        }
        let prefix = self.prefixes.refill(Prefix::of(ip), now);
        if prefix.tokens < 1.0 {
            return false;
        }
        prefix.tokens -= 1.0;
        self.ips.table.peek_mut(&ip).expect("just refilled").tokens -= 1.0;
        true
    }

    /// Whether to answer a request from an address that is not validated at `now`: within its
    /// prefix's reply rate (a token is taken).
    pub fn reply_allowed(&mut self, addr: &SocketAddr, now: Instant) -> bool {
        self.replies.take(Prefix::of(addr.ip()), now)
    }

    /// We answered a request from `addr`: it has verified us.
    pub fn remember_verified_by(&mut self, addr: SocketAddr) {
        self.verified_by.insert(addr);
    }

    /// Whether we answered a request from `addr` (and still remember it).
    #[must_use]
    pub fn is_verified_by(&self, addr: &SocketAddr) -> bool {
        self.verified_by.contains(addr)
    }

    /// `addr` cut its answer to our unpadded request: pad the next one again.
    pub fn forget_verified_by(&mut self, addr: &SocketAddr) {
        self.verified_by.remove(addr);
    }

    /// How many entries each table holds.
    #[must_use]
    pub fn sizes(&self) -> AddrBookSizes {
        AddrBookSizes {
            verified: self.verified.len(),
            verified_by: self.verified_by.len(),
            budget_ips: self.ips.table.len(),
            budget_prefixes: self.prefixes.table.len(),
            reply_limit_keys: self.replies.table.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    use std::time::Duration;

    fn v4(a: u8, b: u8, c: u8, d: u8, port: u16) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), port))
    }

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn prefixes() {
        assert_eq!(Prefix::of("10.1.2.3".parse().unwrap()), Prefix::V4([10, 1, 2]));
        // IPv4-mapped IPv6 counts as IPv4.
        assert_eq!(Prefix::of("::ffff:10.1.2.99".parse().unwrap()), Prefix::V4([10, 1, 2]));
        assert_eq!(Prefix::of("2001:db8:aa:1::5".parse().unwrap()), Prefix::V6([0x20, 0x01, 0x0d, 0xb8, 0x00, 0xaa]));
        assert_eq!(Prefix::of("2001:db8:aa:ffff::".parse().unwrap()), Prefix::of("2001:db8:aa::1".parse().unwrap()));
        assert_ne!(Prefix::of("2001:db8:ab::1".parse().unwrap()), Prefix::of("2001:db8:aa::1".parse().unwrap()));
        assert_ne!(Prefix::of("10.1.3.3".parse().unwrap()), Prefix::of("10.1.2.3".parse().unwrap()));
    }

    #[test]
    fn reply_rate_per_prefix_refills_in_virtual_time() {
        let t0 = Instant::now();
        let mut book = AddrBook::new();
        let burst = REPLY_BURST as usize;
        // One /24 shares one bucket: the burst, then nothing until time passes.
        for i in 0..burst {
            assert!(book.reply_allowed(&v4(10, 0, 0, (i % 250) as u8, 1000 + i as u16), t0));
        }
        assert!(!book.reply_allowed(&v4(10, 0, 0, 7, 9), t0));
        // An IPv4-mapped IPv6 address of that /24 is the same prefix.
        let mapped = SocketAddr::V6(SocketAddrV6::new(Ipv4Addr::new(10, 0, 0, 8).to_ipv6_mapped(), 9, 0, 0));
        assert!(!book.reply_allowed(&mapped, t0));
        // Another prefix has its own bucket.
        assert!(book.reply_allowed(&v4(10, 0, 1, 7, 9), t0));
        // 10 ms at 200 per second: two more.
        let t = ms(t0, 10);
        assert!(book.reply_allowed(&v4(10, 0, 0, 7, 9), t));
        assert!(book.reply_allowed(&v4(10, 0, 0, 7, 9), t));
        assert!(!book.reply_allowed(&v4(10, 0, 0, 7, 9), t));
        // Refill stops at the burst.
        let t = ms(t0, 60_000);
        for _ in 0..burst {
            assert!(book.reply_allowed(&v4(10, 0, 0, 1, 1), t));
        }
        assert!(!book.reply_allowed(&v4(10, 0, 0, 1, 1), t));
        assert_eq!(book.sizes().reply_limit_keys, 2);
    }

    #[test]
    fn request_budget_per_ip_and_prefix_refunded_on_answer() {
        let t0 = Instant::now();
        let mut book = AddrBook::new();
        let ip_burst = UNVALIDATED_BURST_IP as u16;
        for port in 0..ip_burst {
            assert!(book.within_budget(&v4(192, 0, 2, 1, port), false, t0));
        }
        assert!(!book.within_budget(&v4(192, 0, 2, 1, 999), false, t0), "the IP's burst is spent");
        // A table entry's address (validated by the caller) and verified ones are never limited.
        assert!(book.within_budget(&v4(192, 0, 2, 1, 999), true, t0));
        // Answers refund: one token back per answering address, and the address is verified.
        book.answered(v4(192, 0, 2, 1, 0));
        assert!(book.is_verified(&v4(192, 0, 2, 1, 0)));
        assert!(book.within_budget(&v4(192, 0, 2, 1, 0), false, t0));
        assert!(book.within_budget(&v4(192, 0, 2, 1, 1000), false, t0), "the refunded token");
        assert!(!book.within_budget(&v4(192, 0, 2, 1, 1001), false, t0));
        // A second answer from a verified address refunds nothing.
        book.answered(v4(192, 0, 2, 1, 0));
        assert!(!book.within_budget(&v4(192, 0, 2, 1, 1001), false, t0));
        // One second later: one more (1 per second).
        assert!(book.within_budget(&v4(192, 0, 2, 1, 1001), false, ms(t0, 1000)));
        assert!(!book.within_budget(&v4(192, 0, 2, 1, 1002), false, ms(t0, 1000)));

        // The prefix: 64 across the /24, whatever the IPs; an IP over the prefix's budget spends
        // nothing of its own.
        let mut book = AddrBook::new();
        let prefix_burst = UNVALIDATED_BURST_PREFIX as u8;
        for host in 0..prefix_burst {
            assert!(book.within_budget(&v4(198, 51, 100, host, 1), false, t0));
        }
        assert!(!book.within_budget(&v4(198, 51, 100, 200, 1), false, t0));
        assert!(book.within_budget(&v4(198, 51, 101, 200, 1), false, t0), "another /24");
        let s = book.sizes();
        assert_eq!((s.budget_ips, s.budget_prefixes), (prefix_burst as usize + 2, 2));
        // Refunds up to the burst forget the bucket (a new key starts full).
        for host in 0..prefix_burst {
            book.answered(v4(198, 51, 100, host, 1));
        }
        let s = book.sizes();
        assert_eq!((s.budget_ips, s.budget_prefixes), (2, 1));
        assert_eq!(s.verified, prefix_burst as usize);
    }

    #[test]
    fn address_sets_are_bounded_oldest_first() {
        let mut book = AddrBook::new();
        let addr = |i: usize| SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from((0x2001_0db8_u128 << 96) | i as u128), 1, 0, 0));
        for i in 0..MAX_ADDR_SET {
            book.answered(addr(i));
            book.remember_verified_by(addr(i));
        }
        // Seen again: no change of order (a set of addresses, not a cache).
        book.answered(addr(0));
        book.remember_verified_by(addr(0));
        book.answered(addr(MAX_ADDR_SET));
        book.remember_verified_by(addr(MAX_ADDR_SET));
        assert!(!book.is_verified(&addr(0)) && !book.is_verified_by(&addr(0)), "the oldest is forgotten");
        assert!(book.is_verified(&addr(1)) && book.is_verified(&addr(MAX_ADDR_SET)));
        assert!(book.is_verified_by(&addr(1)) && book.is_verified_by(&addr(MAX_ADDR_SET)));
        assert_eq!(book.sizes().verified, MAX_ADDR_SET);
        assert_eq!(book.sizes().verified_by, MAX_ADDR_SET);
        book.forget_verified_by(&addr(5));
        assert!(!book.is_verified_by(&addr(5)));
        assert_eq!(book.sizes().verified_by, MAX_ADDR_SET - 1);
        // A removed slot is reused; still bounded.
        book.remember_verified_by(addr(5));
        book.remember_verified_by(addr(MAX_ADDR_SET + 1));
        assert_eq!(book.sizes().verified_by, MAX_ADDR_SET);
        assert!(!book.is_verified_by(&addr(1)));
    }

    #[test]
    fn address_sets_tell_apart_what_socket_addr_does() {
        let mut set = AddrSet::new(4);
        let plain = v4(10, 0, 0, 1, 4000);
        let mapped = SocketAddr::V6(SocketAddrV6::new(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped(), 4000, 0, 0));
        let scoped = |scope| SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 4000, 0, scope));
        let flow = SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 4000, 7, 1));
        for a in [plain, mapped, scoped(1), scoped(2)] {
            set.insert(a);
            set.insert(a);
        }
        assert_eq!(set.len(), 4);
        assert!(!set.contains(&v4(10, 0, 0, 1, 4001)) && !set.contains(&flow) && !set.contains(&scoped(3)));
        // Full: the earliest added goes first, whatever its family; a freed IPv6 index is reused.
        set.insert(flow);
        assert!(!set.contains(&plain) && set.contains(&mapped) && set.contains(&flow));
        set.insert(plain);
        assert!(!set.contains(&mapped) && set.contains(&plain));
        set.remove(&scoped(1));
        set.insert(scoped(3));
        set.insert(v4(10, 0, 0, 2, 4000));
        assert_eq!(set.len(), 4);
        for (a, held) in [(scoped(1), false), (scoped(2), false), (scoped(3), true), (flow, true), (plain, true)] {
            assert_eq!(set.contains(&a), held, "{a}");
        }
        assert!(set.v6.len() <= 4, "IPv6 indexes reused");
    }

    #[test]
    fn an_address_set_forgotten_and_added_again_stays_bounded_and_in_order() {
        let mut set = AddrSet::new(8);
        let a = |i: u8| v4(10, 0, 0, i, 1);
        for i in 0..8 {
            set.insert(a(i));
        }
        for round in 0..1000 {
            // Forgotten and added again: now the latest added.
            let i = [3, 5][round % 2];
            set.remove(&a(i));
            assert!(!set.contains(&a(i)));
            set.insert(a(i));
            assert!(set.order.len() <= 2 * 8 + 16, "places left behind are dropped");
        }
        // Added earliest first: 0, 1, 2, 4, 6, 7, then 3 and 5 (5 last).
        for (n, gone) in [0, 1, 2, 4, 6, 7, 3, 5].into_iter().enumerate() {
            set.insert(a(100 + n as u8));
            assert!(!set.contains(&a(gone)), "{gone} forgotten");
            assert_eq!(set.len(), 8);
        }
        assert!((100..108).all(|i| set.contains(&a(i))));
    }

    #[test]
    fn bucket_tables_forget_the_least_recently_used() {
        let t0 = Instant::now();
        let mut book = AddrBook::new();
        let prefix = |i: usize| v4(10, (i >> 8) as u8, i as u8, 1, 1);
        for i in 0..MAX_BUCKET_KEYS {
            assert!(book.reply_allowed(&prefix(i), t0));
        }
        // Prefix 0 used again: prefix 1 is now the least recently used.
        for _ in 1..REPLY_BURST as usize {
            assert!(book.reply_allowed(&prefix(0), t0));
        }
        assert!(!book.reply_allowed(&prefix(0), t0));
        assert!(book.reply_allowed(&prefix(MAX_BUCKET_KEYS), t0));
        assert_eq!(book.sizes().reply_limit_keys, MAX_BUCKET_KEYS);
        // Prefix 0 was kept (still empty); prefix 1 was forgotten (starts full again).
        assert!(!book.reply_allowed(&prefix(0), t0));
        for _ in 0..REPLY_BURST as usize {
            assert!(book.reply_allowed(&prefix(1), t0));
        }
        assert_eq!(book.sizes().reply_limit_keys, MAX_BUCKET_KEYS);
    }
}
