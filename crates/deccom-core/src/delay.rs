//! A delay line for datagrams: per-peer latency and bandwidth (the core of the `Delay` test layer),
//! and the timed queue the native impairment stages hold their datagrams in.
//!
//! [`DelayLine::push`] takes a datagram for (or from) a peer at `now`; each peer's link is an
//! [`Impairment`] (the one impairment model, see [`crate::impair`]) with the peer's latency and
//! bandwidth, so the datagram becomes due after its serialization time behind the earlier ones
//! to that peer (when a bandwidth is set) and the latency. [`DelayLine::pop_due`] hands out due
//! datagrams in time order; [`DelayLine::next_due`] tells the driver when to wake.
//!
//! The link parameters come from the caller, and lazily, once per peer: the first datagram of a
//! peer whose link is unknown waits in a pending list, and [`DelayLine::take_unknown`] reports the
//! peer once so the driver can ask its owner (a JavaScript function). [`DelayLine::set_link`] then
//! schedules the waiting datagrams as if the link had been known when they arrived. Memory is
//! bounded: beyond `max_bytes` queued (or 256 unknown peers), datagrams are dropped and counted.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::impair::{ImpairConfig, Impairment};

/// One peer's link: one-way latency and, optionally, bandwidth in bytes per second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    /// Added to every datagram.
    pub latency: Duration,
    /// Serialization rate; `None` is infinitely fast.
    pub bytes_per_sec: Option<u64>,
}

impl Link {
    /// The link as an impairment configuration (no faults, no jitter).
    pub fn config(&self) -> ImpairConfig {
        ImpairConfig {
            latency: self.latency.as_nanos() as f64 / 1e6,
            bytes_per_ms: self.bytes_per_sec.map_or(0.0, |r| r as f64 / 1000.0),
            ..ImpairConfig::default()
        }
    }
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DelayStats {
    /// Datagrams accepted.
    pub queued: u64,
    /// Datagrams handed out.
    pub released: u64,
    /// Datagrams dropped because the line was full.
    pub dropped_full: u64,
}

const MAX_UNKNOWN_PEERS: usize = 256;

/// Datagrams waiting for their due time, released in (due, arrival) order; bounded in bytes.
#[derive(Debug)]
pub struct TimedQueue<P> {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    items: HashMap<u64, (P, Vec<u8>)>,
    seq: u64,
    bytes: usize,
    max_bytes: usize,
}

impl<P> TimedQueue<P> {
    /// An empty queue holding at most `max_bytes` of datagrams.
    pub fn new(max_bytes: usize) -> Self {
        TimedQueue { heap: BinaryHeap::new(), items: HashMap::new(), seq: 0, bytes: 0, max_bytes }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// True when `len` more bytes fit.
    pub fn fits(&self, len: usize) -> bool {
        self.bytes + len <= self.max_bytes
    }

    /// Holds `data` until `due`; returns it back when it does not fit.
    pub fn push(&mut self, due: Instant, peer: P, data: Vec<u8>) -> Result<(), (P, Vec<u8>)> {
        if !self.fits(data.len()) {
            return Err((peer, data));
        }
        self.bytes += data.len();
        self.seq += 1;
        self.heap.push(Reverse((due, self.seq)));
        self.items.insert(self.seq, (peer, data));
        Ok(())
    }

    /// When the next datagram is due, if any is held.
    pub fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// The next datagram due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(P, Vec<u8>)> {
        let Reverse((due, seq)) = *self.heap.peek()?;
        if due > now {
            return None;
        }
        self.heap.pop();
        let (peer, data) = self.items.remove(&seq)?;
        self.bytes -= data.len();
        Some((peer, data))
    }

    /// Removes and returns everything held.
    pub fn clear(&mut self) -> usize {
        let n = self.items.len();
        self.heap.clear();
        self.items.clear();
        self.bytes = 0;
        n
    }
}

/// Milliseconds from `base` to `t` (negative before it), the impairment model's time.
pub fn ms_since(base: Instant, t: Instant) -> f64 {
    match t.checked_duration_since(base) {
        Some(d) => d.as_nanos() as f64 / 1e6,
        None => -((base - t).as_nanos() as f64 / 1e6),
    }
}

/// The instant `ms` milliseconds after `base` (rounded to the nanosecond; not before `base`
/// for a negative `ms`, which the model never returns for times after `base`).
pub fn instant_at(base: Instant, ms: f64) -> Instant {
    if ms > 0.0 {
        base + Duration::from_nanos((ms * 1e6).round().min(u64::MAX as f64) as u64)
    } else {
        base - Duration::from_nanos((-ms * 1e6).round().min(u64::MAX as f64) as u64)
    }
}

/// The delay line; `P` is the driver's peer handle.
#[derive(Debug)]
pub struct DelayLine<P: Copy + Eq + Hash> {
    links: HashMap<P, Impairment>,
    pending: HashMap<P, Vec<(Instant, Vec<u8>)>>,
    unknown: Vec<P>,
    queue: TimedQueue<P>,
    base: Option<Instant>,
    stats: DelayStats,
}

impl<P: Copy + Eq + Hash> DelayLine<P> {
    /// An empty line holding at most `max_bytes` of datagrams.
    pub fn new(max_bytes: usize) -> Self {
        DelayLine {
            links: HashMap::new(),
            pending: HashMap::new(),
            unknown: Vec::new(),
            queue: TimedQueue::new(max_bytes),
            base: None,
            stats: DelayStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> DelayStats {
        self.stats
    }

    /// Bytes held (queued and pending).
    pub fn bytes(&self) -> usize {
        self.queue.bytes()
    }

    fn base(&mut self, now: Instant) -> Instant {
        *self.base.get_or_insert(now)
    }

    fn schedule(&mut self, peer: P, arrived: Instant, data: Vec<u8>) {
        let base = self.base(arrived);
        let Some(link) = self.links.get_mut(&peer) else { return };
        let v = link.offer(ms_since(base, arrived), data.len());
        // A link without faults delivers one copy; the bytes were reserved by `push`.
        self.queue.bytes -= data.len();
        let _ = self.queue.push(instant_at(base, v.at[0]), peer, data);
    }

    /// Accepts a datagram at `now`. Returns false (and counts) when the line is full.
    pub fn push(&mut self, now: Instant, peer: P, data: Vec<u8>) -> bool {
        if !self.queue.fits(data.len()) {
            self.stats.dropped_full += 1;
            return false;
        }
        if !self.links.contains_key(&peer) {
            if !self.pending.contains_key(&peer) {
                if self.pending.len() >= MAX_UNKNOWN_PEERS {
                    self.stats.dropped_full += 1;
                    return false;
                }
                self.unknown.push(peer);
            }
            self.queue.bytes += data.len();
            self.stats.queued += 1;
            self.pending.entry(peer).or_default().push((now, data));
            return true;
        }
        self.queue.bytes += data.len();
        self.stats.queued += 1;
        self.schedule(peer, now, data);
        true
    }

    /// Peers whose link the driver must provide (each reported once).
    pub fn take_unknown(&mut self) -> Vec<P> {
        std::mem::take(&mut self.unknown)
    }

    /// Sets (or replaces) a peer's link and schedules what waited for it. A replaced link keeps
    /// its backlog (what is being serialized stays in front of new datagrams).
    pub fn set_link(&mut self, peer: P, link: Link, now: Instant) {
        self.base(now);
        match self.links.get_mut(&peer) {
            Some(m) => m.set_config(link.config()),
            None => {
                self.links.insert(peer, Impairment::new(link.config(), 0));
            }
        }
        for (arrived, data) in self.pending.remove(&peer).unwrap_or_default() {
            self.schedule(peer, arrived, data);
        }
    }

    /// When the next datagram is due, if any is queued.
    pub fn next_due(&self) -> Option<Instant> {
        self.queue.next_due()
    }

    /// The next datagram due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(P, Vec<u8>)> {
        let x = self.queue.pop_due(now)?;
        self.stats.released += 1;
        Some(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn latency_and_bandwidth_order_and_timing() {
        let t0 = Instant::now();
        let mut d: DelayLine<u8> = DelayLine::new(1 << 20);
        d.set_link(1, Link { latency: ms(10), bytes_per_sec: Some(1000) }, t0);
        assert!(d.push(t0, 1, vec![0; 100])); // 100 ms on the wire + 10 ms
        assert!(d.push(t0, 1, vec![1; 100])); // queues behind: 200 ms + 10 ms
        assert_eq!(d.next_due(), Some(t0 + ms(110)));
        assert_eq!(d.pop_due(t0 + ms(109)), None);
        assert_eq!(d.pop_due(t0 + ms(110)).map(|x| x.1[0]), Some(0));
        assert_eq!(d.next_due(), Some(t0 + ms(210)));
        assert_eq!(d.pop_due(t0 + ms(300)).map(|x| x.1[0]), Some(1));
        assert_eq!(d.bytes(), 0);
        assert_eq!(d.stats().released, 2);
    }

    #[test]
    fn unknown_peers_wait_for_their_link_then_keep_their_arrival_time() {
        let t0 = Instant::now();
        let mut d: DelayLine<u8> = DelayLine::new(1 << 20);
        assert!(d.push(t0, 7, vec![1]));
        assert!(d.push(t0 + ms(1), 7, vec![2]));
        assert_eq!(d.take_unknown(), vec![7]);
        assert_eq!(d.take_unknown(), Vec::<u8>::new(), "reported once");
        assert_eq!(d.next_due(), None);
        d.set_link(7, Link { latency: ms(5), bytes_per_sec: None }, t0 + ms(3));
        assert_eq!(d.next_due(), Some(t0 + ms(5)));
        assert_eq!(d.pop_due(t0 + ms(6)).map(|x| x.1), Some(vec![1]));
        assert_eq!(d.pop_due(t0 + ms(6)).map(|x| x.1), Some(vec![2]));
    }

    #[test]
    fn bounded_bytes_and_unknown_peers() {
        let t0 = Instant::now();
        let mut d: DelayLine<u32> = DelayLine::new(10);
        d.set_link(1, Link { latency: ms(1), bytes_per_sec: None }, t0);
        assert!(d.push(t0, 1, vec![0; 8]));
        assert!(!d.push(t0, 1, vec![0; 8]));
        assert_eq!(d.stats().dropped_full, 1);
        let mut u: DelayLine<u32> = DelayLine::new(1 << 20);
        for p in 0..MAX_UNKNOWN_PEERS as u32 {
            assert!(u.push(t0, p, vec![0]));
        }
        assert!(!u.push(t0, 9999, vec![0]));
    }
}
