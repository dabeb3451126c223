//! Tests of [`KadNode`] in virtual time: a harness of N nodes exchanging their frames through a
//! delivery queue ([`Sim`]), and helpers that drive one node by hand with crafted datagrams.
//!
//! - `network`: joins, lookups, determinism, timers over many lookups;
//! - `single`: one node and hand-made peers: matching of responses, amplification, admission,
//!   eviction;
//! - `hostile`: random and mutated datagrams to a joined node;
//! - `upkeep`: the node's own join, refreshes and settling lookup.

mod hostile;
mod network;
mod single;
mod upkeep;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{Event, KadNode, NodeConfig, FRAME_HEADER};
use crate::identity::{Identity, NodeId};
use crate::kad::wire::{self, Message};
use crate::wire::decode_raw_addr;
use crate::wire::peer_record::PeerRecord;

/// Steps a [`Sim::run_until`] takes at most (each a delivery or a round of timers).
const MAX_STEPS: u64 = 5_000_000;

/// A datagram framed by [`KadNode::transmits`], read back.
#[derive(Clone)]
pub(super) struct Frame {
    /// Where it goes (the source of the datagram being handled for a to-source frame).
    pub to: SocketAddr,
    /// The frame said "to the source of the datagram being handled".
    pub to_source: bool,
    /// The datagram.
    pub data: Vec<u8>,
}

/// Reads and consumes every frame `node` queued; `source`: the sender of the datagram it just
/// handled (None after a timer or a call of ours: a to-source frame then fails the test).
pub(super) fn drain(node: &mut KadNode, source: Option<SocketAddr>) -> Vec<Frame> {
    let out = node.transmits();
    let mut frames = Vec::new();
    let mut at = 0;
    while at < out.len() {
        assert!(out.len() - at >= FRAME_HEADER, "a partial frame header");
        let len = usize::from(u16::from_le_bytes([out[at], out[at + 1]]));
        let to_source = match out[at + 2] {
            0 => false,
            1 => true,
            b => panic!("frame flag {b}"),
        };
        let to = if to_source {
            let source = source.expect("a frame to the source with no datagram being handled");
            assert_eq!(decode_raw_addr(&out[at + 3..at + FRAME_HEADER]), Some(source), "a frame to the source names it");
            source
        } else {
            decode_raw_addr(&out[at + 3..at + FRAME_HEADER]).expect("an 18-byte address")
        };
        let data = out.get(at + FRAME_HEADER..at + FRAME_HEADER + len).expect("a whole frame").to_vec();
        frames.push(Frame { to, to_source, data });
        at += FRAME_HEADER + len;
    }
    node.consume_transmits(at);
    assert!(node.transmits().is_empty());
    frames
}

/// The identity of node `i` of a network with seed `seed`.
pub(super) fn identity(seed: u64, i: usize) -> Identity {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    s[8..16].copy_from_slice(&(i as u64).to_le_bytes());
    s[16] = 0x5a;
    Identity::from_seed(&s)
}

/// The address of node `i`: 127.0.0.1:(10000 + i).
pub(super) fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 10_000 + i as u16))
}

/// The record of `identity` at `udp`.
pub(super) fn record(identity: &Identity, udp: SocketAddr) -> PeerRecord {
    PeerRecord::new(identity.public_identity(), udp)
}

/// SplitMix64 step: the harness's deterministic randomness.
pub(super) fn mix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A request id read from a datagram's header.
pub(super) fn request_id(data: &[u8]) -> u64 {
    u64::from_be_bytes(data[2..wire::HEADER_LEN].try_into().expect("a header"))
}

/// A FIND_NODE of `target` from `sender`, padded to `pad` bytes.
pub(super) fn find_node(id: u64, target: &NodeId, sender: &PeerRecord, pad: usize) -> Vec<u8> {
    let mut out = Vec::new();
    wire::encode_find_node(id, target, sender, false, pad, &mut out);
    out
}

/// A NODES from `sender` naming `nodes`.
pub(super) fn nodes(id: u64, sender: &PeerRecord, nodes: &[PeerRecord]) -> Vec<u8> {
    Message::Nodes { request_id: id, truncated: false, sender: sender.clone(), nodes: nodes.to_vec() }.encode()
}

/// A PONG.
pub(super) fn pong(id: u64) -> Vec<u8> {
    Message::Pong { request_id: id }.encode()
}

/// A datagram on its way.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Packet {
    at: Instant,
    seq: u64,
    from: SocketAddr,
    to: usize,
    data: Vec<u8>,
}

/// N nodes, a clock and the datagrams between them.
pub(super) struct Sim {
    pub nodes: Vec<KadNode>,
    pub records: Vec<PeerRecord>,
    pub now: Instant,
    /// Datagrams to and from these nodes are lost.
    pub dead: Vec<bool>,
    /// Datagrams lost at random, per thousand.
    pub loss: u64,
    /// The `LookupDone` events seen: (node, lookup).
    pub done: HashSet<(usize, u32)>,
    /// The other events, by node (peer events and approvals are also applied below).
    pub events: Vec<(usize, Event)>,
    /// Each node's peers by handle, from its `Connected` and `Disconnected` events.
    pub peers: Vec<HashMap<u32, NodeId>>,
    /// Answers to `Approve` (None: left unanswered).
    pub approve: Option<fn(&NodeId) -> bool>,
    /// Datagrams sent to an address no node has.
    pub strays: u64,
    /// Datagrams delivered, and lost (to dead nodes or at random).
    pub delivered: u64,
    pub lost: u64,
    queue: BinaryHeap<Reverse<Packet>>,
    seq: u64,
    rng: u64,
    index: HashMap<SocketAddr, usize>,
}

impl Sim {
    /// `n` nodes with `config`; identities, node seeds and link jitter all from `seed`.
    pub fn new(n: usize, config: NodeConfig, seed: u64) -> Sim {
        let base = Instant::now();
        let records: Vec<PeerRecord> = (0..n).map(|i| record(&identity(seed, i), addr(i))).collect();
        let nodes = records.iter().enumerate().map(|(i, r)| KadNode::new(r.clone(), config, (seed as u32) ^ (i as u32 + 1).wrapping_mul(0x9E37_79B9))).collect();
        Sim {
            nodes,
            index: records.iter().enumerate().map(|(i, r)| (r.udp, i)).collect(),
            records,
            now: base,
            dead: vec![false; n],
            loss: 0,
            done: HashSet::new(),
            events: Vec::new(),
            peers: vec![HashMap::new(); n],
            approve: None,
            strays: 0,
            delivered: 0,
            lost: 0,
            queue: BinaryHeap::new(),
            seq: 0,
            rng: seed ^ 0xD1B5_4A32_D192_ED03,
        }
    }

    /// The id of node `i`.
    pub fn id(&self, i: usize) -> NodeId {
        self.records[i].id
    }

    /// Sends what node `i` queued (`source`: the sender of the datagram it just handled) and
    /// collects its events.
    pub fn flush(&mut self, i: usize, source: Option<SocketAddr>) {
        let frames = drain(&mut self.nodes[i], source);
        self.route(i, frames);
    }

    /// Node `i` handles `data` from `from` (anyone's address) now: what it sends is returned,
    /// then sent.
    pub fn inject(&mut self, i: usize, from: SocketAddr, data: &[u8]) -> Vec<Frame> {
        let now = self.now;
        self.nodes[i].handle_datagram(from, data, None, now);
        let frames = drain(&mut self.nodes[i], Some(from));
        self.route(i, frames.clone());
        frames
    }

    /// Queues `frames` of node `i` for delivery and collects its events.
    fn route(&mut self, i: usize, frames: Vec<Frame>) {
        for f in frames {
            let Some(&to) = self.index.get(&f.to) else {
                self.strays += 1;
                continue;
            };
            if self.dead[i] || self.dead[to] || (self.loss > 0 && mix(&mut self.rng) % 1000 < self.loss) {
                self.lost += 1;
                continue;
            }
            // 10 ms per link plus up to 5 ms of jitter.
            let delay = Duration::from_micros(10_000 + mix(&mut self.rng) % 5_000);
            self.seq += 1;
            self.queue.push(Reverse(Packet { at: self.now + delay, seq: self.seq, from: self.records[i].udp, to, data: f.data }));
        }
        let mut approvals = Vec::new();
        while let Some(e) = self.nodes[i].poll_event() {
            match &e {
                Event::LookupDone { lookup } => {
                    assert!(self.done.insert((i, *lookup)), "lookup {lookup} of node {i} ended twice");
                }
                Event::Connected { handle, record } => {
                    let old = self.peers[i].insert(*handle, record.id());
                    assert!(old.is_none(), "node {i}: handle {handle} connected twice");
                }
                Event::Disconnected { handle, record } => {
                    let id = self.peers[i].remove(handle);
                    assert_eq!(id, Some(record.id()), "node {i}: handle {handle} disconnected but not connected");
                }
                Event::Approve { record } => {
                    if let Some(ok) = self.approve {
                        approvals.push((record.as_slice().to_vec(), ok(&record.id())));
                    }
                }
                Event::Claim { .. } | Event::Joined { .. } | Event::JoinRetry { .. } | Event::JoinFailed { .. } => {}
            }
            self.events.push((i, e));
        }
        for (record, ok) in approvals {
            let now = self.now;
            self.nodes[i].approved(&record, ok, now);
            self.flush(i, None);
        }
    }

    /// The earliest timer of any node.
    fn next_timer(&mut self) -> Option<Instant> {
        self.nodes.iter_mut().filter_map(KadNode::poll_timeout).min()
    }

    /// One step: the earliest delivery or round of timers, unless it is after `limit`. False when
    /// nothing is left to do before `limit`.
    fn step(&mut self, limit: Instant) -> bool {
        let packet = self.queue.peek().map(|Reverse(p)| p.at);
        let timer = self.next_timer();
        let at = match (packet, timer) {
            (Some(p), Some(t)) => p.min(t),
            (Some(p), None) => p,
            (None, Some(t)) => t,
            (None, None) => return false,
        };
        if at > limit {
            return false;
        }
        self.now = self.now.max(at);
        if timer.is_some_and(|t| t <= self.now) {
            for i in 0..self.nodes.len() {
                if self.nodes[i].poll_timeout().is_some_and(|t| t <= self.now) {
                    self.nodes[i].handle_timeout(self.now);
                    self.flush(i, None);
                }
            }
            return true;
        }
        let Reverse(p) = self.queue.pop().expect("a packet is due");
        self.delivered += 1;
        let now = self.now;
        self.nodes[p.to].handle_datagram(p.from, &p.data, None, now);
        self.flush(p.to, Some(p.from));
        true
    }

    /// Runs until `stop` holds (true), nothing is left to do or `within` of virtual time passed
    /// (false). Bounded in steps.
    pub fn run_until(&mut self, within: Duration, mut stop: impl FnMut(&Sim) -> bool) -> bool {
        let limit = self.now + within;
        for _ in 0..MAX_STEPS {
            if stop(self) {
                return true;
            }
            if !self.step(limit) {
                return stop(self);
            }
        }
        panic!("no end after {MAX_STEPS} steps");
    }

    /// Runs everything due within `within`, then sets the clock to its end.
    pub fn run_for(&mut self, within: Duration) {
        let end = self.now + within;
        self.run_until(within, |_| false);
        self.now = self.now.max(end);
    }

    /// Node `i` does `f` at the current time; what it queued is sent.
    pub fn call<R>(&mut self, i: usize, f: impl FnOnce(&mut KadNode, Instant) -> R) -> R {
        let r = f(&mut self.nodes[i], self.now);
        self.flush(i, None);
        r
    }

    /// Runs until every lookup of `wanted` ended (fails the test if not within `within`).
    pub fn finish(&mut self, wanted: &[(usize, u32)], within: Duration) {
        let ended = self.run_until(within, |s| wanted.iter().all(|w| s.done.contains(w)));
        let left = wanted.iter().filter(|w| !self.done.contains(w)).count();
        assert!(ended, "{left} of {} lookups still running", wanted.len());
    }

    /// Nodes `1..n` join through node 0, `batch` at a time: every join's lookup ends with seeds.
    pub fn join(&mut self, batch: usize) {
        let n = self.nodes.len();
        let seed = self.records[0].udp;
        let mut from = 1;
        while from < n {
            let to = (from + batch).min(n);
            let started: Vec<(usize, u32)> = (from..to).map(|i| (i, self.call(i, |node, now| node.bootstrap(&[seed], now)))).collect();
            self.finish(&started, Duration::from_secs(60));
            for &(i, l) in &started {
                let outcome = self.nodes[i].take_lookup(l).expect("an ended join has an outcome");
                assert!(outcome.seeds > 0, "node {i}: no seeds from the bootstrap node");
            }
            from = to;
        }
    }

    /// Ids and records of node `i`'s table, sorted.
    pub fn table_of(&self, i: usize) -> Vec<(NodeId, Vec<u8>)> {
        table_of(&self.nodes[i])
    }
}

/// Ids and records of `node`'s table, sorted.
pub(super) fn table_of(node: &KadNode) -> Vec<(NodeId, Vec<u8>)> {
    let mut t: Vec<(NodeId, Vec<u8>)> = node.table.iter().map(|e| (e.id, e.value.encoded.as_slice().to_vec())).collect();
    t.sort();
    t
}
