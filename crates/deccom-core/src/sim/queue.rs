//! The lanes' event queue: datagrams in flight and node timers, ordered by (time, sequence
//! number), with stale timers skipped and dropped; and the spare datagram buffers they reuse.
//!
//! Both lanes ([`crate::sim::lane`], [`crate::sim::parallel`]) keep their events here; they differ
//! in how they number events and where a datagram goes, not in how an event waits.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::net::SocketAddr;

/// No node index.
pub(crate) const NO_NODE: u32 = u32::MAX;

/// Stale timers the heap may hold before it is compacted (then only when they are half of it).
const MIN_COMPACT: usize = 1024;

/// Spare datagram buffers kept for reuse.
const SPARE_BUFFERS: usize = 1024;

/// An event.
pub(crate) enum Item {
    /// A datagram (tag byte first); `dest`: the index of the node it is for, as its lane numbers
    /// nodes ([`NO_NODE`]: none known), checked at delivery.
    Datagram { from: SocketAddr, to: SocketAddr, bytes: Vec<u8>, dest: u32 },
    /// A node's timer, armed as its `gen`-th arming (stale when the node was armed again since).
    Timer { node: u32, gen: u32 },
}

#[derive(Clone, Copy)]
struct Key {
    time: f64,
    seq: u64,
    item: u32,
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Key {}
impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        self.time.total_cmp(&other.time).then(self.seq.cmp(&other.seq))
    }
}

/// Events in (time, sequence number) order.
#[derive(Default)]
pub(crate) struct Queue {
    heap: BinaryHeap<Reverse<Key>>,
    items: Vec<Option<Item>>,
    free: Vec<u32>,
    /// Stale timers in the heap.
    stale: usize,
}

impl Queue {
    /// Adds `item` as the event (`time`, `seq`).
    pub(crate) fn push(&mut self, time: f64, seq: u64, item: Item) {
        let index = if let Some(f) = self.free.pop() {
            self.items[f as usize] = Some(item);
            f
        } else {
            self.items.push(Some(item));
            u32::try_from(self.items.len() - 1).expect("fewer than 2^32 events wait")
        };
        self.heap.push(Reverse(Key { time, seq, item: index }));
    }

    /// A timer in the heap became stale (its node was armed again or detached). Once stale timers
    /// are half the heap (and at least [`MIN_COMPACT`]) they are dropped, `armed(node, gen)`
    /// telling which still count: a node armed far ahead (its next refresh) and then earlier (a
    /// request's timeout) leaves a stale timer that would wait in the heap until its time came.
    pub(crate) fn stale(&mut self, armed: impl Fn(u32, u32) -> bool) {
        self.stale += 1;
        if self.stale > MIN_COMPACT && 2 * self.stale > self.heap.len() {
            let items = &mut self.items;
            let free = &mut self.free;
            self.heap.retain(|Reverse(k)| {
                let Some(Item::Timer { node, gen }) = items[k.item as usize] else { return true };
                let live = armed(node, gen);
                if !live {
                    items[k.item as usize] = None;
                    free.push(k.item);
                }
                live
            });
            self.stale = 0;
        }
    }

    /// The first live event: (time, seq); stale timers before it are dropped.
    pub(crate) fn head(&mut self, armed: impl Fn(u32, u32) -> bool) -> Option<(f64, u64)> {
        while let Some(Reverse(k)) = self.heap.peek().copied() {
            if let Some(Item::Timer { node, gen }) = self.items[k.item as usize] {
                if !armed(node, gen) {
                    self.heap.pop();
                    self.release(k.item);
                    self.stale = self.stale.saturating_sub(1);
                    continue;
                }
            }
            return Some((k.time, k.seq));
        }
        None
    }

    /// Takes the first event (call [`head`](Self::head) first to skip stale timers).
    pub(crate) fn pop(&mut self) -> Option<(f64, u64, Item)> {
        let Reverse(k) = self.heap.pop()?;
        let item = self.items[k.item as usize].take()?;
        self.free.push(k.item);
        Some((k.time, k.seq, item))
    }

    /// Events waiting, stale timers not counted.
    pub(crate) fn pending(&self) -> usize {
        self.heap.len() - self.stale
    }

    /// Events in the heap, stale timers included.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    pub(crate) fn clear(&mut self) {
        self.heap.clear();
        self.items.clear();
        self.free.clear();
        self.stale = 0;
    }

    fn release(&mut self, item: u32) {
        self.items[item as usize] = None;
        self.free.push(item);
    }
}

/// Spare datagram buffers.
#[derive(Default)]
pub(crate) struct Spare(Vec<Vec<u8>>);

impl Spare {
    /// An empty buffer for a datagram (a spare one when there is).
    pub(crate) fn buffer(&mut self) -> Vec<u8> {
        let mut b = self.0.pop().unwrap_or_default();
        b.clear();
        b
    }

    /// Keeps `bytes` for reuse (a bounded number, of a datagram's size).
    pub(crate) fn recycle(&mut self, bytes: Vec<u8>) {
        if self.0.len() < SPARE_BUFFERS && bytes.capacity() <= 2048 {
            self.0.push(bytes);
        }
    }
}

/// Reads the frames a node queued (see [`crate::kad::node::FRAME_HEADER`]): `send(to, data)` for
/// each with a destination (a frame addressed "to the source" goes to `source`; without one it
/// is skipped). Returns the bytes read: whole frames only.
pub(crate) fn each_frame(frames: &[u8], source: Option<SocketAddr>, mut send: impl FnMut(SocketAddr, &[u8])) -> usize {
    use crate::kad::node::FRAME_HEADER;
    use crate::wire::decode_raw_addr;
    let mut at = 0;
    while at + FRAME_HEADER <= frames.len() {
        let len = usize::from(u16::from_le_bytes([frames[at], frames[at + 1]]));
        let Some(data) = frames.get(at + FRAME_HEADER..at + FRAME_HEADER + len) else { break };
        let to = match (frames[at + 2], source) {
            (1, Some(s)) => Some(s),
            _ => decode_raw_addr(&frames[at + 3..at + FRAME_HEADER]),
        };
        if let Some(to) = to {
            send(to, data);
        }
        at += FRAME_HEADER + len;
    }
    at
}
