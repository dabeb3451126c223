//! The delivery lane on several threads: [`ParallelLane`], for simulations too large for one core.
//!
//! The nodes are split into parts (node `i` in part `i % threads`), each with its own event
//! queue, run on its own thread. Virtual time advances in windows no longer than the links'
//! latency `L`: a window starts at the first event anywhere (`t`) and ends before `t + L`, so
//! nothing sent in it arrives in it, and within a window every part runs its own events in order,
//! independently of the others. Between windows, the datagrams sent to other parts' nodes join
//! their queues. A node's own timers may fall inside the window: they run in it.
//!
//! What differs from the one-thread [`Lane`](super::Lane):
//! - **Events for the caller wait for the window's end.** A node with events, or a datagram whose
//!   node was detached since it was sent, is handed back after the window, in (time, sequence)
//!   order, at the time of the window's last event, which is up to `L` later than where it
//!   happened. (The caller's code may act on any node; the other parts ran on meanwhile.) A
//!   datagram to an address with no attached node is known when it is sent: a window ends at its
//!   arrival, and it is handed back at its own time.
//! - **The caller's own events at a time come before the lane's** at that time, and the lane
//!   numbers its events itself: each event's sequence number is the index of the node that caused
//!   it and that node's count of events caused. So the order of events, and every result, is the
//!   same whatever the number of threads.
//! - **A datagram's delay comes from its sender's random stream** (seeded from the seed base and
//!   the sender's address), not from a stream per link, so no link state is kept.
//!
//! One seed gives one run, with any number of threads (1 included: one part, no worker); the run
//! is not the one-thread lane's.

mod part;
mod workers;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use part::{Back, HandBack, Meta, Outgoing, Part, Shared, Slot};
use workers::Workers;

use super::lane::{arrival, due, key, link_seed, LaneNode, LaneStats, NodeCounters, Stop};
use super::queue::{Item, Queue, NO_NODE};
use crate::identity::seeded::SeededMap;
use crate::impair::ImpairConfig;

/// Most threads (parts) of a lane.
pub const MAX_THREADS: u32 = 64;

/// See the module documentation.
pub struct ParallelLane<N> {
    parts: Vec<Part<N>>,
    shared: Arc<Shared>,
    /// The window's length: the links' latency (ms).
    window: f64,
    seed_base: u32,
    /// Datagrams to addresses with no attached node (or one of another tag).
    foreign: Queue,
    /// Waiting for the caller, in order.
    back: VecDeque<HandBack>,
    workers: Option<Workers<N>>,
    nodes: u32,
    /// The stream and numbering of datagrams the caller sends from addresses with no node.
    stream: u64,
    next: u32,
    /// Counters of the events run here (handed back from `foreign`).
    stats: LaneStats,
    /// The time of the event run last.
    pub now: f64,
}

impl<N: LaneNode + Send + 'static> ParallelLane<N> {
    /// A lane on `threads` threads (1 to [`MAX_THREADS`]) over links of `latency` + [0, `jitter`)
    /// ms, seeded from `seed_base`. None for another number of threads, or when the latency is not
    /// above 0: a window would be empty.
    #[must_use]
    pub fn new(latency: f64, jitter: f64, seed_base: u32, threads: u32) -> Option<ParallelLane<N>> {
        let link = ImpairConfig { latency, jitter, ..ImpairConfig::default() }.sanitized();
        if link.latency.is_nan() || link.latency <= 0.0 || !(1..=MAX_THREADS).contains(&threads) {
            return None;
        }
        let shared = Arc::new(Shared { link, parts: threads, by_addr: SeededMap::default() });
        Some(ParallelLane {
            parts: (0..threads).map(|p| Part::new(p, threads)).collect(),
            shared,
            window: link.latency,
            seed_base,
            foreign: Queue::default(),
            back: VecDeque::new(),
            workers: None,
            nodes: 0,
            stream: u64::from(seed_base),
            next: 0,
            stats: LaneStats::default(),
            now: 0.0,
        })
    }

    fn place(&self, i: u32) -> (usize, u32) {
        ((i % self.shared.parts) as usize, i / self.shared.parts)
    }

    fn slot(&mut self, i: u32) -> Option<&mut Slot<N>> {
        let (p, local) = self.place(i);
        self.parts.get_mut(p)?.slot(local)
    }

    /// Attaches `node` at `addr`, its datagrams tagged `tag` (None when another attached node
    /// has that address); returns its index (indices are not reused).
    pub fn attach(&mut self, addr: SocketAddr, tag: u8, node: N) -> Option<u32> {
        if self.shared.by_addr.contains_key(&key(addr)) || self.nodes == NO_NODE {
            return None;
        }
        let i = self.nodes;
        self.nodes += 1;
        let stream = u64::from(link_seed(self.seed_base, addr, addr));
        let (p, local) = self.place(i);
        let slots = &mut self.parts[p].slots;
        slots.resize_with(local as usize + 1, || None);
        let m = Meta { addr, tag, index: i, timer_at: f64::INFINITY, timer_gen: 0, counters: NodeCounters::default(), stream, next: 0, handed: false };
        slots[local as usize] = Some(Slot { node, m });
        Arc::make_mut(&mut self.shared).by_addr.insert(key(addr), (i, tag));
        Some(i)
    }

    /// Detaches the node at `i`: its timer is dropped; datagrams to its address go to the caller.
    /// Returns the node and its counters.
    pub fn detach(&mut self, i: u32) -> Option<(N, NodeCounters)> {
        let (p, local) = self.place(i);
        let slot = self.parts.get_mut(p)?.detach(local)?;
        Arc::make_mut(&mut self.shared).by_addr.remove(&key(slot.m.addr));
        Some((slot.node, slot.m.counters))
    }

    /// The node at `i`, if attached.
    pub fn node(&mut self, i: u32) -> Option<&mut N> {
        self.slot(i).map(|s| &mut s.node)
    }

    /// The counters of the node at `i`, if attached.
    pub fn counters(&mut self, i: u32) -> Option<NodeCounters> {
        self.slot(i).map(|s| s.m.counters)
    }

    /// The lane's counters.
    #[must_use]
    pub fn stats(&self) -> LaneStats {
        self.parts.iter().map(|p| p.stats).fold(self.stats, |a, b| LaneStats {
            events: a.events + b.events,
            timers_fired: a.timers_fired + b.timers_fired,
            sent: a.sent + b.sent,
            bytes_sent: a.bytes_sent + b.bytes_sent,
            delivered: a.delivered + b.delivered,
            bytes_delivered: a.bytes_delivered + b.bytes_delivered,
        })
    }

    /// Events waiting (stale timers not counted), those handed back included.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.parts.iter().map(|p| p.pending()).sum::<usize>() + self.foreign.pending() + self.back.len()
    }

    /// Puts a datagram the caller sent at `now` (`bytes`: tag byte first) from `from` to `to` in
    /// the lane, its delay drawn from the stream of the node at `from` (or the caller's). The caller
    /// counts it as sent.
    pub fn transmit(&mut self, from: SocketAddr, to: SocketAddr, bytes: &[u8], now: f64) {
        let link = self.shared.link;
        let sender = self.shared.by_addr.get(&key(from)).map(|d| d.0);
        let (time, seq) = match sender.and_then(|i| self.slot(i)) {
            Some(s) => {
                let seq = s.m.seq();
                (due(now, arrival(link, &mut s.m.stream, now) - now), seq)
            }
            None => {
                let seq = (u64::from(NO_NODE) << 32) | u64::from(self.next);
                self.next = self.next.wrapping_add(1);
                (due(now, arrival(link, &mut self.stream, now) - now), seq)
            }
        };
        let dest = self.shared.by_addr.get(&key(to)).filter(|d| Some(d.1) == bytes.first().copied()).map_or(NO_NODE, |d| d.0);
        self.route(Outgoing { time, seq, item: Item::Datagram { from, to, bytes: bytes.to_vec(), dest } });
    }

    /// Arms the timer of the node at `i` at `at` (ms; below 0: none) unless it is armed earlier;
    /// `now`: the caller's time.
    pub fn arm(&mut self, i: u32, at: f64, now: f64) {
        let (p, local) = self.place(i);
        if let Some(part) = self.parts.get_mut(p) {
            part.arm(local, at, now);
        }
    }

    /// Arms the timer of the node at `i` for deadline `at` as the event at `time` (a timer the
    /// caller had armed before the node was attached).
    pub fn adopt(&mut self, i: u32, at: f64, time: f64) {
        let (p, local) = self.place(i);
        if let Some(part) = self.parts.get_mut(p) {
            part.set_timer(local, at, time);
        }
    }

    /// Sends what the node at `i` queued and arms its timer, after a call the caller made on it
    /// directly at [`now`](Self::now); returns whether it has events.
    pub fn kick(&mut self, i: u32) -> bool {
        let (p, local) = self.place(i);
        let now = self.now;
        let shared = Arc::clone(&self.shared);
        let Some(part) = self.parts.get_mut(p) else { return false };
        if part.slot(local).is_none() {
            return false;
        }
        let events = part.after(local, None, now, &shared);
        self.exchange();
        events
    }

    /// The first event: (time, sequence number), the sequence number `u64::MAX` (after any of the
    /// caller's at that time). While hand-backs wait, the time of the last event run.
    pub fn head(&mut self) -> Option<(f64, u64)> {
        if !self.back.is_empty() {
            return Some((self.now, u64::MAX));
        }
        let first = self.first();
        first.is_finite().then_some((first, u64::MAX))
    }

    /// The time of the first event in the parts and of the first foreign datagram (infinite: none).
    fn heads(&mut self) -> (f64, f64) {
        let parts = self.parts.iter_mut().map(|p| p.first()).fold(f64::INFINITY, f64::min);
        (parts, self.foreign.head(|_, _| true).map_or(f64::INFINITY, |h| h.0))
    }

    fn first(&mut self) -> f64 {
        let (parts, foreign) = self.heads();
        parts.min(foreign)
    }

    /// Runs windows of events before `limit_time` and not after `deadline` while fewer than
    /// `budget` ran (a window runs whole); returns how many ran and why it stopped: a hand-back
    /// waiting from an earlier call first (none run then).
    pub fn run(&mut self, limit_time: f64, deadline: f64, budget: u32) -> (u32, Stop) {
        if let Some(h) = self.back.pop_front() {
            return (0, self.hand(h));
        }
        let mut n = 0u32;
        while n < budget {
            let (parts, foreign) = self.heads();
            let first = parts.min(foreign);
            if !(first < limit_time && first <= deadline) {
                break;
            }
            if foreign <= parts {
                let Some((time, _, Item::Datagram { from, to, bytes, .. })) = self.foreign.pop() else { continue };
                self.now = time;
                self.stats.events += 1;
                return (n + 1, Stop::Deliver { from, to, bytes });
            }
            let end = (parts + self.window).min(limit_time).min(foreign);
            n = n.saturating_add(self.window_run(end, deadline));
            if let Some(h) = self.back.pop_front() {
                return (n, self.hand(h));
            }
        }
        (n, Stop::Idle)
    }

    /// One window on every part; returns the events run.
    fn window_run(&mut self, end: f64, deadline: f64) -> u32 {
        if self.parts.len() > 1 {
            let n = self.parts.len() - 1;
            let shared = &self.shared;
            self.workers.get_or_insert_with(|| Workers::new(n)).window(&mut self.parts, end, deadline, shared);
        } else {
            self.parts[0].window(end, deadline, &self.shared);
        }
        let mut ran = 0;
        let mut back = Vec::new();
        for part in &mut self.parts {
            if part.ran > 0 {
                ran += part.ran;
                self.now = self.now.max(part.last);
            }
            back.append(&mut part.back);
        }
        self.exchange();
        back.sort_by(|a, b| a.time.total_cmp(&b.time).then(a.seq.cmp(&b.seq)));
        self.back.extend(back);
        ran
    }

    /// What the parts sent for one another's nodes goes to their inboxes (lists swapped, not
    /// copied), what they sent for no node into `foreign`.
    fn exchange(&mut self) {
        let n = self.parts.len();
        for p in 0..n {
            for o in self.parts[p].take_foreign() {
                self.route(o);
            }
            for q in (0..n).filter(|&q| q != p) {
                let mut inbox = std::mem::take(&mut self.parts[q].inbox[p]);
                let first = self.parts[p].hand_over(q, &mut inbox);
                let to = &mut self.parts[q];
                to.inbox[p] = inbox;
                to.inbox_first = to.inbox_first.min(first);
            }
        }
    }

    /// A datagram sent to a node of some part (into its queue), or to none (into `foreign`).
    fn route(&mut self, o: Outgoing) {
        let Item::Datagram { dest, .. } = o.item else { return };
        if dest == NO_NODE {
            self.foreign.push(o.time, o.seq, o.item);
        } else {
            let (p, _) = self.place(dest);
            self.parts[p].push(o.time, o.seq, o.item);
        }
    }

    fn hand(&mut self, h: HandBack) -> Stop {
        match h.what {
            Back::Events(i) => {
                if let Some(s) = self.slot(i) {
                    s.m.handed = false;
                }
                Stop::Events(i)
            }
            Back::Deliver { from, to, bytes } => Stop::Deliver { from, to, bytes },
        }
    }

    /// Drops every event and node, and ends the worker threads (a later run starts them again).
    pub fn clear(&mut self) {
        self.workers = None;
        self.parts.iter_mut().for_each(|p| p.clear());
        self.foreign.clear();
        self.back.clear();
        Arc::make_mut(&mut self.shared).by_addr.clear();
    }
}

#[cfg(test)]
mod tests;
