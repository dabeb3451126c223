//! The node's requests in flight (PING, FIND_NODE), matched against their responses by a random
//! 64-bit id and the address they went to, and the node's timers (request deadlines and lookup
//! wake-ups) in one heap.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::time::Instant;

use super::record::Encoded;
use crate::identity::NodeId;

/// Requests in flight at most; more are not sent (`dropped_too_many_requests`).
pub const MAX_PENDING: usize = 8192;

/// What a request was sent for: what its response, or its failure, goes on with.
pub enum Purpose {
    /// A lookup's query to the candidate `id`.
    Query {
        /// The lookup.
        search: u32,
        /// The candidate asked.
        id: NodeId,
    },
    /// findPeer: the target asked at an address a third party named (`hops` of the claim).
    Claim {
        /// The lookup.
        search: u32,
        /// The claim's hop count.
        hops: u32,
    },
    /// A FIND_NODE of our own id to a bootstrap address, for the join whose lookup is `search`.
    Bootstrap {
        /// The join's lookup.
        search: u32,
    },
    /// A PING of a requester that is not in the table, to verify its address (`record`, at it).
    Verify {
        /// The requester's record at its source address.
        record: Encoded,
    },
    /// A PING of a full bucket's least recently seen entry.
    Evict {
        /// The entry.
        id: NodeId,
        /// Its handle when the ping was sent (the entry is the same one if it still has it).
        handle: u32,
    },
}

/// A request in flight.
pub struct Request {
    /// High half of the request id (random).
    pub hi: u32,
    /// Where it went.
    pub to: SocketAddr,
    /// The message type sent (the response's type is the next one).
    pub kind: u8,
    /// When it fails unanswered.
    pub deadline: Instant,
    /// When it was sent.
    pub sent_at: Instant,
    /// The id the responder must have (its record's), if known.
    pub expect: Option<NodeId>,
    /// What it is for.
    pub purpose: Purpose,
}

/// A timer: a request's deadline (by the low half of its id) or a lookup's wake-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    /// The request with this low id half.
    Request(u32),
    /// The lookup with this id.
    Search(u32),
}

/// Hashes the small integers the node chooses itself (request ids, lookup ids: no one else picks
/// them, so no one can make them collide) by one multiplication.
#[derive(Default, Clone, Copy)]
pub struct OwnIdHasher(u64);

impl std::hash::Hasher for OwnIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u32(&mut self, i: u32) {
        self.0 = (u64::from(i) ^ self.0).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Maps keyed by ids the node chose (see [`OwnIdHasher`]).
pub type OwnIdMap<V> = HashMap<u32, V, std::hash::BuildHasherDefault<OwnIdHasher>>;

/// Requests in flight and the node's timers.
#[derive(Default)]
pub struct Requests {
    pending: OwnIdMap<Request>,
    next_lo: u32,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
}

impl Requests {
    /// Requests in flight.
    #[must_use]
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// True when none is in flight.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// A fresh low id half (not in flight).
    pub fn next_lo(&mut self) -> u32 {
        let mut lo = self.next_lo.wrapping_add(1);
        while self.pending.contains_key(&lo) {
            lo = lo.wrapping_add(1);
        }
        self.next_lo = lo;
        lo
    }

    /// Remembers a request sent with id `(r.hi, lo)`.
    pub fn insert(&mut self, lo: u32, r: Request) {
        self.timers.push(Reverse((r.deadline, Timer::Request(lo))));
        self.pending.insert(lo, r);
    }

    /// The request a response with id `(hi, lo)` of type `kind` (the request's type + 1) from
    /// `from` answers, taken out; None when it answers none (unsolicited, wrong address, type or id).
    pub fn take_match(&mut self, hi: u32, lo: u32, from: &SocketAddr, kind: u8) -> Option<Request> {
        let std::collections::hash_map::Entry::Occupied(r) = self.pending.entry(lo) else { return None };
        let q = r.get();
        if q.hi != hi || q.to != *from || q.kind + 1 != kind {
            return None;
        }
        Some(r.remove())
    }

    /// Arms a lookup's wake-up at `at`.
    pub fn wake(&mut self, at: Instant, search: u32) {
        self.timers.push(Reverse((at, Timer::Search(search))));
    }

    /// The earliest timer anything still waits for (`waits`: whether lookup `s` waits for
    /// instant `t`); timers of requests answered since and of lookups woken or ended are dropped.
    pub fn next_deadline(&mut self, waits: impl Fn(u32, Instant) -> bool) -> Option<Instant> {
        while let Some(&Reverse((t, timer))) = self.timers.peek() {
            let live = match timer {
                Timer::Request(lo) => self.pending.get(&lo).is_some_and(|r| r.deadline == t),
                Timer::Search(s) => waits(s, t),
            };
            if live {
                return Some(t);
            }
            self.timers.pop();
        }
        None
    }

    /// The next timer due at `now`: a request that timed out (taken out), or a lookup to wake
    /// (the caller checks it still waits for this instant).
    pub fn pop_due(&mut self, now: Instant) -> Option<Due> {
        loop {
            let &Reverse((t, timer)) = self.timers.peek()?;
            if t > now {
                return None;
            }
            self.timers.pop();
            match timer {
                Timer::Request(lo) => {
                    if self.pending.get(&lo).is_some_and(|r| r.deadline == t) {
                        return self.pending.remove(&lo).map(Due::Request);
                    }
                }
                Timer::Search(s) => return Some(Due::Search(s, t)),
            }
        }
    }

    /// Forgets every request and timer.
    pub fn clear(&mut self) {
        self.pending.clear();
        self.timers.clear();
    }

    /// Frees what an empty map of requests or heap of timers still holds.
    pub fn trim(&mut self) {
        if self.pending.is_empty() && self.pending.capacity() > 0 {
            self.pending = OwnIdMap::default();
        }
        if self.timers.is_empty() && self.timers.capacity() > 0 {
            self.timers = BinaryHeap::new();
        }
    }

    /// Drops timers no request or lookup waits for once they outnumber the live ones by far, so
    /// the heap stays bounded (`waits`: whether lookup `s` still waits for instant `t`).
    pub fn compact(&mut self, live: usize, waits: impl Fn(u32, Instant) -> bool) {
        if self.timers.len() > 4 * (self.pending.len() + live) + 64 {
            let pending = &self.pending;
            self.timers.retain(|Reverse((t, timer))| match timer {
                Timer::Request(lo) => pending.get(lo).is_some_and(|r| r.deadline == *t),
                Timer::Search(s) => waits(*s, *t),
            });
        }
    }
}

/// A timer that came due.
pub enum Due {
    /// A request unanswered by its deadline.
    Request(Request),
    /// A lookup's wake-up for this instant.
    Search(u32, Instant),
}
