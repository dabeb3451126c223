//! One part of a [`super::ParallelLane`]: its nodes, their events, and one window's run.

use std::net::SocketAddr;

use super::super::lane::{arrival, datagram, due, key, AddrKey, LaneNode, LaneStats, NodeCounters};
use super::super::queue::{each_frame, Item, Queue, Spare, NO_NODE};
use crate::identity::seeded::SeededMap;
use crate::impair::ImpairConfig;

/// What every part reads during a window (written between windows only).
#[derive(Clone)]
pub(crate) struct Shared {
    /// The links: delay and jitter.
    pub(crate) link: ImpairConfig,
    /// Parts (node `i` is in part `i % parts`, at `i / parts`).
    pub(crate) parts: u32,
    /// The attached nodes by address: index and tag.
    pub(crate) by_addr: SeededMap<AddrKey, (u32, u8)>,
}

pub(crate) struct Slot<N> {
    pub(crate) node: N,
    pub(crate) m: Meta,
}

/// What the lane keeps of an attached node.
pub(crate) struct Meta {
    pub(crate) addr: SocketAddr,
    pub(crate) tag: u8,
    /// Its index in the lane.
    pub(crate) index: u32,
    /// The deadline its timer is armed at (infinite: none), and that arming's number.
    pub(crate) timer_at: f64,
    pub(crate) timer_gen: u32,
    pub(crate) counters: NodeCounters,
    /// Its random stream: the delay of each datagram it sends.
    pub(crate) stream: u64,
    /// The number of the next event it causes (with its index, the event's sequence number).
    pub(crate) next: u32,
    /// Handed back in the current window already (reset when the caller takes it).
    pub(crate) handed: bool,
}

impl Meta {
    /// The sequence number of the next event this node causes.
    pub(crate) fn seq(&mut self) -> u64 {
        let seq = (u64::from(self.index) << 32) | u64::from(self.next);
        self.next = self.next.wrapping_add(1);
        seq
    }
}

/// Something the caller handles after a window, in (time, seq) order.
pub(crate) struct HandBack {
    pub(crate) time: f64,
    pub(crate) seq: u64,
    pub(crate) what: Back,
}

pub(crate) enum Back {
    /// The node at this index has events.
    Events(u32),
    /// A datagram no attached node takes.
    Deliver { from: SocketAddr, to: SocketAddr, bytes: Vec<u8> },
}

/// A datagram sent in a window for a node of another part, or for none.
pub(crate) struct Outgoing {
    pub(crate) time: f64,
    pub(crate) seq: u64,
    pub(crate) item: Item,
}

pub(crate) struct Part<N> {
    /// This part's number.
    pub(crate) id: u32,
    pub(crate) slots: Vec<Option<Slot<N>>>,
    queue: Queue,
    spare: Spare,
    pub(crate) stats: LaneStats,
    /// Datagrams sent in the window for other parts' nodes, by part, the last for no node; and
    /// the first time in each.
    pub(crate) out: Vec<Vec<Outgoing>>,
    pub(crate) out_first: Vec<f64>,
    /// Datagrams other parts sent for this part's nodes, by part (into the queue when the next
    /// window starts, on this part's thread), and the first time in them.
    pub(crate) inbox: Vec<Vec<Outgoing>>,
    pub(crate) inbox_first: f64,
    pub(crate) back: Vec<HandBack>,
    /// Events run in the last window, and the time of its last one.
    pub(crate) ran: u32,
    pub(crate) last: f64,
}

fn armed<N>(slots: &[Option<Slot<N>>], local: u32, gen: u32) -> bool {
    slots.get(local as usize).and_then(Option::as_ref).is_some_and(|s| s.m.timer_gen == gen && s.m.timer_at.is_finite())
}

impl<N: LaneNode> Part<N> {
    /// Part `id` of `parts`.
    pub(crate) fn new(id: u32, parts: u32) -> Part<N> {
        let n = parts as usize;
        Part {
            id,
            slots: Vec::new(),
            queue: Queue::default(),
            spare: Spare::default(),
            stats: LaneStats::default(),
            out: (0..=n).map(|_| Vec::new()).collect(),
            out_first: vec![f64::INFINITY; n + 1],
            inbox: (0..n).map(|_| Vec::new()).collect(),
            inbox_first: f64::INFINITY,
            back: Vec::new(),
            ran: 0,
            last: 0.0,
        }
    }

    /// Takes the datagrams sent for no node (the caller's now).
    pub(crate) fn take_foreign(&mut self) -> Vec<Outgoing> {
        let last = self.out.len() - 1;
        self.out_first[last] = f64::INFINITY;
        std::mem::take(&mut self.out[last])
    }

    /// Hands the datagrams this part sent for part `q` to `inbox` (`q`'s inbox from this part):
    /// the two lists swap when the inbox was drained (after a window), else they are appended
    /// (calls of the caller's between windows); returns the first time of those handed.
    pub(crate) fn hand_over(&mut self, q: usize, inbox: &mut Vec<Outgoing>) -> f64 {
        if inbox.is_empty() {
            std::mem::swap(&mut self.out[q], inbox);
        } else {
            inbox.append(&mut self.out[q]);
        }
        std::mem::replace(&mut self.out_first[q], f64::INFINITY)
    }

    /// The queue's first event, the inbox included: its time.
    pub(crate) fn first(&mut self) -> f64 {
        self.head().map_or(f64::INFINITY, |h| h.0).min(self.inbox_first)
    }

    /// The slot at `local`, if attached.
    pub(crate) fn slot(&mut self, local: u32) -> Option<&mut Slot<N>> {
        self.slots.get_mut(local as usize).and_then(Option::as_mut)
    }

    /// Removes the node at `local`.
    pub(crate) fn detach(&mut self, local: u32) -> Option<Slot<N>> {
        let slot = self.slots.get_mut(local as usize)?.take()?;
        if slot.m.timer_at.is_finite() {
            let slots = &self.slots;
            self.queue.stale(|n, g| armed(slots, n, g));
        }
        Some(slot)
    }

    pub(crate) fn head(&mut self) -> Option<(f64, u64)> {
        let slots = &self.slots;
        self.queue.head(|n, g| armed(slots, n, g))
    }

    pub(crate) fn pending(&self) -> usize {
        self.queue.pending() + self.inbox.iter().map(Vec::len).sum::<usize>()
    }

    pub(crate) fn push(&mut self, time: f64, seq: u64, item: Item) {
        self.queue.push(time, seq, item);
    }

    pub(crate) fn clear(&mut self) {
        self.queue.clear();
        self.slots.clear();
        self.out.iter_mut().for_each(Vec::clear);
        self.out_first.iter_mut().for_each(|t| *t = f64::INFINITY);
        self.inbox.iter_mut().for_each(Vec::clear);
        self.inbox_first = f64::INFINITY;
        self.back.clear();
    }

    /// Arms the timer of the node at `local` at `at` (ms; below 0: none) unless it is armed
    /// earlier, as an event at `now` or later.
    pub(crate) fn arm(&mut self, local: u32, at: f64, now: f64) {
        if self.slot(local).is_some_and(|s| at >= 0.0 && at < s.m.timer_at) {
            self.set_timer(local, at, due(now, at - now));
        }
    }

    /// Arms the timer of the node at `local` for deadline `at` as an event at `time`.
    pub(crate) fn set_timer(&mut self, local: u32, at: f64, time: f64) {
        let Some(Slot { m, .. }) = self.slot(local) else { return };
        if !at.is_finite() {
            return;
        }
        let was_armed = m.timer_at.is_finite();
        m.timer_at = at;
        m.timer_gen = m.timer_gen.wrapping_add(1);
        let (gen, seq) = (m.timer_gen, m.seq());
        self.queue.push(time, seq, Item::Timer { node: local, gen });
        if was_armed {
            let slots = &self.slots;
            self.queue.stale(|n, g| armed(slots, n, g));
        }
    }

    /// Runs this part's events before `end` and not after `deadline` (its inbox first joins its
    /// queue). What the nodes send goes into this part's queue or [`out`](Self::out); what the
    /// caller must handle into [`back`](Self::back).
    pub(crate) fn window(&mut self, end: f64, deadline: f64, shared: &Shared) {
        self.ran = 0;
        for inbox in &mut self.inbox {
            for o in inbox.drain(..) {
                self.queue.push(o.time, o.seq, o.item);
            }
        }
        self.inbox_first = f64::INFINITY;
        while let Some((time, _)) = self.head() {
            if !(time < end && time <= deadline) {
                break;
            }
            let Some((time, seq, item)) = self.queue.pop() else { break };
            self.ran += 1;
            self.last = time;
            self.stats.events += 1;
            match item {
                Item::Timer { node, .. } => {
                    let Some(slot) = self.slot(node) else { continue };
                    slot.m.timer_at = f64::INFINITY;
                    slot.node.timer(time);
                    self.stats.timers_fired += 1;
                    self.after_event(node, None, time, seq, shared);
                }
                Item::Datagram { from, to, bytes, dest } => {
                    let local = dest / shared.parts;
                    let tag = bytes.first().copied();
                    let taken = dest != NO_NODE && self.slot(local).is_some_and(|s| s.m.addr == to && Some(s.m.tag) == tag);
                    if !taken {
                        // Its node was detached since it was sent.
                        self.back.push(HandBack { time, seq, what: Back::Deliver { from, to, bytes } });
                        continue;
                    }
                    let slot = self.slot(local).expect("taken");
                    slot.m.counters.received += 1;
                    slot.node.datagram(from, &bytes[1..], time);
                    self.stats.delivered += 1;
                    self.stats.bytes_delivered += bytes.len() as u64;
                    self.spare.recycle(bytes);
                    self.after_event(local, Some(from), time, seq, shared);
                }
            }
        }
    }

    fn after_event(&mut self, local: u32, source: Option<SocketAddr>, now: f64, seq: u64, shared: &Shared) {
        if self.after(local, source, now, shared) {
            let m = &mut self.slot(local).expect("the node handled is attached").m;
            if !m.handed {
                m.handed = true;
                let index = m.index;
                self.back.push(HandBack { time: now, seq, what: Back::Events(index) });
            }
        }
    }

    /// After the node at `local` handled a datagram from `source` (or its timers, or a call of the
    /// caller's) at `now`: sends its frames, arms its timer; returns whether it has events.
    pub(crate) fn after(&mut self, local: u32, source: Option<SocketAddr>, now: f64, shared: &Shared) -> bool {
        let mut slot = self.slots[local as usize].take().expect("the node handled is attached");
        let Slot { node, m } = &mut slot;
        let read = each_frame(node.frames(), source, |to, data| self.send(m, to, data, now, shared));
        node.consume(read);
        let deadline = slot.node.deadline();
        let events = slot.node.has_events();
        self.slots[local as usize] = Some(slot);
        self.arm(local, deadline, now);
        events
    }

    /// `data` from the node in `slot` to `to`, sent at `now`.
    fn send(&mut self, m: &mut Meta, to: SocketAddr, data: &[u8], now: f64, shared: &Shared) {
        let Some(bytes) = datagram(&mut self.spare, &mut self.stats, &mut m.counters, m.addr, m.tag, to, data) else { return };
        let seq = m.seq();
        let time = due(now, arrival(shared.link, &mut m.stream, now) - now);
        let dest = shared.by_addr.get(&key(to)).filter(|d| d.1 == m.tag).map_or(NO_NODE, |d| d.0);
        let item = Item::Datagram { from: m.addr, to, bytes, dest };
        let q = if dest == NO_NODE { shared.parts } else { dest % shared.parts };
        if q == self.id {
            self.queue.push(time, seq, item);
        } else {
            let q = q as usize;
            self.out[q].push(Outgoing { time, seq, item });
            self.out_first[q] = self.out_first[q].min(time);
        }
    }
}
