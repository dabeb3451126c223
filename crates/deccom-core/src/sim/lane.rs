//! The simulator's native delivery lane: datagrams between nodes whose protocol runs natively
//! ([`LaneNode`], e.g. a Kademlia node) are delivered here, in virtual time, without a trip
//! through the caller's event loop per datagram.
//!
//! A [`Lane`] holds the nodes attached to it (by address), the datagrams they sent that have not
//! arrived yet and their timers, in one heap ordered by (time, sequence number) — the order of the
//! caller's own event queue, with which it shares the sequence counter ([`Lane::seq`]): the caller
//! runs whichever queue's head comes first, so the two queues form one. It also holds the links'
//! state: one [`Impairment`] per ordered pair of addresses (delay and jitter only), seeded like the
//! caller's links, forgotten all at once when `max_links` are held.
//!
//! [`Lane::run`] pops events while they come before a limit (the caller's next event):
//! - a timer of a node: the node's timers run;
//! - a datagram to an attached node, with the node's tag byte (its protocol's): the node handles it;
//! - after either, the node's frames (see [`crate::kad::node::FRAME_HEADER`]) are sent on their
//!   links and its timer is armed at its deadline. When the node has events for the caller, or the
//!   datagram is not for an attached node (another address, another tag), `run` returns it: the
//!   caller handles it before it takes the next event.
//!
//! The caller may put its own datagrams in the lane too ([`Lane::transmit`]): those to attached
//! nodes are then delivered natively as well, and the caller's queue keeps only its timers.
//!
//! Every rule mirrors the caller's path for the same node, so that a simulation gives the same
//! events in the same order with or without the lane: a datagram is due at
//! `now + max(0, arrival - now)`, a timer is re-armed only earlier than the armed one (the armed
//! one is then stale and skipped), a frame to the node's own address is dropped and counted.

use std::net::{IpAddr, SocketAddr};

use super::queue::{each_frame, Item, Queue, Spare, NO_NODE};
use crate::identity::seeded::SeededMap;
use crate::impair::{ImpairConfig, Impairment};

/// A node driven by the lane: one datagram or one round of timers per call, then its frames.
pub trait LaneNode {
    /// A datagram for the node (without the tag byte) from `from` at `now` (ms).
    fn datagram(&mut self, from: SocketAddr, data: &[u8], now: f64);
    /// The node's timers due at `now` (ms).
    fn timer(&mut self, now: f64);
    /// What the node wants sent: frames of [`FRAME_HEADER`] bytes then the datagram.
    fn frames(&self) -> &[u8];
    /// Forgets the first `n` bytes of [`frames`](Self::frames).
    fn consume(&mut self, n: usize);
    /// When its timers are due next (ms; below 0: none).
    fn deadline(&mut self) -> f64;
    /// The node has events for the caller.
    fn has_events(&self) -> bool;
}

/// Why [`Lane::run`] returned.
#[derive(Debug, PartialEq)]
pub enum Stop {
    /// The next event is not before the limit, after the deadline, or the budget is spent.
    Idle,
    /// The node at this index has events for the caller.
    Events(u32),
    /// A datagram the lane does not deliver (another address or tag): the caller delivers it.
    Deliver {
        /// Its sender.
        from: SocketAddr,
        /// Its destination.
        to: SocketAddr,
        /// The datagram, tag byte first.
        bytes: Vec<u8>,
    },
}

/// The lane's counters: the caller adds them to its own.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LaneStats {
    /// Events run (datagrams popped, timers fired).
    pub events: u64,
    /// Node timers fired.
    pub timers_fired: u64,
    /// Datagrams the attached nodes sent through the lane, and their bytes (tag included).
    pub sent: u64,
    /// Bytes of those datagrams (tag included).
    pub bytes_sent: u64,
    /// Datagrams delivered to attached nodes by the lane, and their bytes.
    pub delivered: u64,
    /// Bytes of those datagrams.
    pub bytes_delivered: u64,
}

/// One attached node's counters (what its transport and protocol layers count on the caller's path).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NodeCounters {
    /// Datagrams it sent through the lane.
    pub sent: u64,
    /// Datagrams the lane delivered to it.
    pub received: u64,
    /// Frames to its own address, dropped.
    pub dropped_self: u64,
}

struct Slot<N> {
    node: N,
    addr: SocketAddr,
    /// The tag byte of the node's datagrams.
    tag: u8,
    /// The deadline the node's timer is armed at (infinite: none), and that arming's number.
    timer_at: f64,
    timer_gen: u32,
    counters: NodeCounters,
}

/// A link's state: its random stream, and the node attached at its far end when it was opened.
#[derive(Clone, Copy)]
struct Link {
    state: u64,
    dest: u32,
}

/// See the module documentation.
pub struct Lane<N> {
    link: ImpairConfig,
    seed_base: u32,
    max_links: usize,
    /// Each link's random stream (the state of its delay-only impairment), by its ends.
    links: SeededMap<(AddrKey, AddrKey), Link>,
    nodes: Vec<Option<Slot<N>>>,
    by_addr: SeededMap<AddrKey, u32>,
    queue: Queue,
    spare: Spare,
    stats: LaneStats,
    /// The next sequence number (shared with the caller's queue: set it before a call that may
    /// schedule, read it after).
    pub seq: u64,
    /// The time of the event run last.
    pub now: f64,
}

impl<N: LaneNode> Lane<N> {
    /// A lane on links of `latency` + [0, `jitter`) ms seeded with the FNV-1a hash of
    /// `"<from>><to>"` continued from `seed_base`, at most `max_links` held.
    #[must_use]
    pub fn new(latency: f64, jitter: f64, seed_base: u32, max_links: usize) -> Lane<N> {
        Lane {
            link: ImpairConfig { latency, jitter, ..ImpairConfig::default() }.sanitized(),
            seed_base,
            max_links: max_links.max(1),
            links: SeededMap::default(),
            nodes: Vec::new(),
            by_addr: SeededMap::default(),
            queue: Queue::default(),
            spare: Spare::default(),
            stats: LaneStats::default(),
            seq: 0,
            now: 0.0,
        }
    }

    /// Attaches `node` at `addr`, its datagrams tagged `tag` (None when another attached node
    /// has that address); returns its index (indices are not reused).
    pub fn attach(&mut self, addr: SocketAddr, tag: u8, node: N) -> Option<u32> {
        if self.by_addr.contains_key(&key(addr)) {
            return None;
        }
        let i = u32::try_from(self.nodes.len()).ok()?;
        self.nodes.push(Some(Slot { node, addr, tag, timer_at: f64::INFINITY, timer_gen: 0, counters: NodeCounters::default() }));
        self.by_addr.insert(key(addr), i);
        Some(i)
    }

    /// Detaches the node at `i`: its timer is dropped; datagrams to its address go to the caller.
    /// Returns the node and its counters.
    pub fn detach(&mut self, i: u32) -> Option<(N, NodeCounters)> {
        let slot = self.nodes.get_mut(i as usize)?.take()?;
        self.by_addr.remove(&key(slot.addr));
        if slot.timer_at.is_finite() {
            let nodes = &self.nodes;
            self.queue.stale(|n, g| armed(nodes, n, g));
        }
        Some((slot.node, slot.counters))
    }

    /// The node at `i`, if attached.
    pub fn node(&mut self, i: u32) -> Option<&mut N> {
        self.nodes.get_mut(i as usize)?.as_mut().map(|s| &mut s.node)
    }

    /// The counters of the node at `i`, if attached.
    #[must_use]
    pub fn counters(&self, i: u32) -> Option<NodeCounters> {
        self.nodes.get(i as usize)?.as_ref().map(|s| s.counters)
    }

    /// The lane's counters.
    #[must_use]
    pub fn stats(&self) -> LaneStats {
        self.stats
    }

    /// Events waiting (stale timers not counted).
    #[must_use]
    pub fn pending(&self) -> usize {
        self.queue.pending()
    }

    /// Links held.
    #[must_use]
    pub fn links(&self) -> usize {
        self.links.len()
    }

    /// When a datagram offered at `at` on the link `from` → `to` arrives (the link's next draw).
    pub fn offer(&mut self, from: SocketAddr, to: SocketAddr, at: f64) -> f64 {
        self.draw(from, to, at).0
    }

    /// [`offer`](Self::offer), and the link's hint of the node at `to`.
    fn draw(&mut self, from: SocketAddr, to: SocketAddr, at: f64) -> (f64, u32) {
        let pair = (key(from), key(to));
        if self.links.len() >= self.max_links && !self.links.contains_key(&pair) {
            self.links.clear();
        }
        let (base, by_addr) = (self.seed_base, &self.by_addr);
        let link = self.links.entry(pair).or_insert_with(|| Link { state: u64::from(link_seed(base, from, to)), dest: by_addr.get(&pair.1).copied().unwrap_or(NO_NODE) });
        (arrival(self.link, &mut link.state, at), link.dest)
    }

    /// Puts a datagram the caller sent at `now` (`bytes`: tag byte first) on the link `from` →
    /// `to`: it arrives as the lane's event (delivered by the lane or handed back). The caller
    /// counts it as sent.
    pub fn transmit(&mut self, from: SocketAddr, to: SocketAddr, bytes: &[u8], now: f64) {
        let mut copy = self.spare.buffer();
        copy.extend_from_slice(bytes);
        self.put(from, to, copy, now);
    }

    /// Arms the timer of the node at `i` at `at` (ms; below 0: none) unless it is armed earlier;
    /// `now`: the caller's time.
    pub fn arm(&mut self, i: u32, at: f64, now: f64) {
        let Some(slot) = self.nodes.get_mut(i as usize).and_then(Option::as_mut) else { return };
        // Not below 0, not NaN, not later than the armed one.
        if !(at >= 0.0 && at < slot.timer_at) {
            return;
        }
        let time = due(now, at - now);
        self.adopt(i, at, time, None);
    }

    /// Arms the timer of the node at `i` for deadline `at` as the event (`time`, `seq`) (a timer the
    /// caller had armed before the node was attached; None: the next sequence number).
    pub fn adopt(&mut self, i: u32, at: f64, time: f64, seq: Option<u64>) {
        let Some(slot) = self.nodes.get_mut(i as usize).and_then(Option::as_mut) else { return };
        if !at.is_finite() {
            return;
        }
        let was_armed = slot.timer_at.is_finite();
        slot.timer_at = at;
        slot.timer_gen = slot.timer_gen.wrapping_add(1);
        let gen = slot.timer_gen;
        self.push(time, seq, Item::Timer { node: i, gen });
        if was_armed {
            let nodes = &self.nodes;
            self.queue.stale(|n, g| armed(nodes, n, g));
        }
    }

    /// Sends what the node at `i` queued and arms its timer, after a call the caller made on it
    /// directly (a join, a lookup started); returns whether it has events.
    pub fn kick(&mut self, i: u32) -> bool {
        self.nodes.get(i as usize).is_some_and(Option::is_some) && self.after(i, None).is_some()
    }

    /// The first live event: (time, seq).
    pub fn head(&mut self) -> Option<(f64, u64)> {
        let nodes = &self.nodes;
        self.queue.head(|n, g| armed(nodes, n, g))
    }

    /// Runs events before (`limit_time`, `limit_seq`) and not after `deadline`, at most `budget`;
    /// returns how many ran and why it stopped (see the module documentation).
    pub fn run(&mut self, limit_time: f64, limit_seq: u64, deadline: f64, budget: u32) -> (u32, Stop) {
        let mut n = 0;
        while n < budget {
            let Some((time, seq)) = self.head() else { break };
            if !(time < limit_time || (time == limit_time && seq < limit_seq)) || time > deadline {
                break;
            }
            let Some((time, _, item)) = self.queue.pop() else { break };
            self.now = time;
            n += 1;
            self.stats.events += 1;
            match item {
                Item::Timer { node, .. } => {
                    let now = self.now;
                    let Some(slot) = self.nodes[node as usize].as_mut() else { continue };
                    slot.timer_at = f64::INFINITY;
                    self.stats.timers_fired += 1;
                    slot.node.timer(now);
                    if let Some(stop) = self.after(node, None) {
                        return (n, stop);
                    }
                }
                Item::Datagram { from, to, bytes, dest } => {
                    // The node at `to` (the link's hint when it is still attached there), with the tag.
                    let nodes = &self.nodes;
                    let at_to = |i: u32| nodes.get(i as usize).and_then(Option::as_ref).is_some_and(|s| s.addr == to);
                    let i = if at_to(dest) { Some(dest) } else { self.by_addr.get(&key(to)).copied() };
                    let Some(i) = i.filter(|&i| nodes[i as usize].as_ref().map(|s| s.tag) == bytes.first().copied()) else {
                        return (n, Stop::Deliver { from, to, bytes });
                    };
                    let now = self.now;
                    let slot = self.nodes[i as usize].as_mut().expect("an attached address has a node");
                    self.stats.delivered += 1;
                    self.stats.bytes_delivered += bytes.len() as u64;
                    slot.counters.received += 1;
                    slot.node.datagram(from, &bytes[1..], now);
                    self.spare.recycle(bytes);
                    if let Some(stop) = self.after(i, Some(from)) {
                        return (n, stop);
                    }
                }
            }
        }
        (n, Stop::Idle)
    }

    /// Drops every event, link and node.
    pub fn clear(&mut self) {
        self.queue.clear();
        self.links.clear();
        self.nodes.iter_mut().for_each(|s| *s = None);
        self.by_addr.clear();
    }

    /// After the node at `i` handled a datagram from `source` (or its timers): sends its frames,
    /// arms its timer, and says whether it has events.
    fn after(&mut self, i: u32, source: Option<SocketAddr>) -> Option<Stop> {
        let mut slot = self.nodes[i as usize].take().expect("the node handled is attached");
        let Slot { node, addr, tag, counters, .. } = &mut slot;
        let at = each_frame(node.frames(), source, |to, data| self.send(*addr, *tag, counters, to, data));
        node.consume(at);
        let deadline = slot.node.deadline();
        let events = slot.node.has_events();
        self.nodes[i as usize] = Some(slot);
        self.arm(i, deadline, self.now);
        events.then_some(Stop::Events(i))
    }

    fn send(&mut self, from: SocketAddr, tag: u8, counters: &mut NodeCounters, to: SocketAddr, data: &[u8]) {
        if let Some(bytes) = datagram(&mut self.spare, &mut self.stats, counters, from, tag, to, data) {
            self.put(from, to, bytes, self.now);
        }
    }

    /// Puts `bytes`, sent at `now`, on the link `from` → `to`: its arrival is an event.
    fn put(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>, now: f64) {
        let (arrives, dest) = self.draw(from, to, now);
        self.push(due(now, arrives - now), None, Item::Datagram { from, to, bytes, dest });
    }

    fn push(&mut self, time: f64, seq: Option<u64>, item: Item) {
        let seq = seq.unwrap_or_else(|| {
            self.seq += 1;
            self.seq - 1
        });
        self.queue.push(time, seq, item);
    }
}

/// The datagram of frame `data` that the node at `from` sends to `to` (tag byte `tag` first, in a
/// spare buffer), counted as sent by the lane and the node; None for a frame to the node's own
/// address (counted as dropped). Both lanes send through this.
pub(crate) fn datagram(spare: &mut Spare, stats: &mut LaneStats, counters: &mut NodeCounters, from: SocketAddr, tag: u8, to: SocketAddr, data: &[u8]) -> Option<Vec<u8>> {
    if to == from {
        counters.dropped_self += 1;
        return None;
    }
    let mut bytes = spare.buffer();
    bytes.push(tag);
    bytes.extend_from_slice(data);
    stats.sent += 1;
    stats.bytes_sent += bytes.len() as u64;
    counters.sent += 1;
    Some(bytes)
}

/// Whether the timer `gen` of node `node` is the one armed (not stale).
fn armed<N>(nodes: &[Option<Slot<N>>], node: u32, gen: u32) -> bool {
    nodes.get(node as usize).and_then(Option::as_ref).is_some_and(|s| s.timer_gen == gen && s.timer_at.is_finite())
}

/// An address as a map key: its IPv6 (or IPv4-mapped) bits and port.
pub(crate) type AddrKey = (u128, u16);

pub(crate) fn key(a: SocketAddr) -> AddrKey {
    let ip = match a.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    (u128::from(ip), a.port())
}


/// When a datagram offered at `at` on a delay-only link arrives: drawn from the link's random
/// `stream`, which is advanced. (A delay-only impairment keeps nothing but its stream between
/// datagrams.)
pub(crate) fn arrival(link: ImpairConfig, stream: &mut u64, at: f64) -> f64 {
    let mut model = Impairment::new(link, *stream);
    let arrives = model.offer(at, 0).at[0];
    *stream = model.state();
    arrives
}

/// The time of an event `ms` after `now` (now for ms <= 0 or NaN): the caller's rule.
pub(crate) fn due(now: f64, ms: f64) -> f64 {
    now + if ms > 0.0 { ms } else { 0.0 }
}

/// FNV-1a (32-bit) of the text written to it (no allocation: most datagrams of a join open a link).
struct Fnv(u32);

impl std::fmt::Write for Fnv {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        text.bytes().for_each(|b| self.byte(b));
        Ok(())
    }
}

impl Fnv {
    fn byte(&mut self, b: u8) {
        self.0 = (self.0 ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }

    /// `n` in decimal, as `Display` writes it.
    fn decimal(&mut self, n: u16) {
        let mut digits = [0u8; 5];
        let mut at = digits.len();
        let mut n = n;
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        digits[at..].iter().for_each(|&d| self.byte(d));
    }

    /// An address as `Display` writes it (`a.b.c.d:port` written here; IPv6 through `fmt`).
    fn addr(&mut self, a: SocketAddr) {
        match a {
            SocketAddr::V4(v4) => {
                for (i, o) in v4.ip().octets().into_iter().enumerate() {
                    if i > 0 {
                        self.byte(b'.');
                    }
                    self.decimal(u16::from(o));
                }
                self.byte(b':');
                self.decimal(v4.port());
            }
            SocketAddr::V6(_) => {
                use std::fmt::Write;
                let _ = write!(self, "{a}");
            }
        }
    }
}

/// A link's seed: the hash of `"<from>><to>"` (addresses as `host:port`, `[v6]:port`) after `base`.
#[must_use]
pub fn link_seed(base: u32, from: SocketAddr, to: SocketAddr) -> u32 {
    let mut h = Fnv(base);
    h.addr(from);
    h.byte(b'>');
    h.addr(to);
    h.0
}

#[cfg(test)]
mod tests;
