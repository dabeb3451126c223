//! What the lanes' tests share: a scripted node for the rules (order, limits, timers, what goes
//! back to the caller) and a Kademlia node with its clock.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{Lane, LaneNode, ParallelLane, Stop};
use crate::identity::Identity;
use crate::kad::node::{Event, KadNode, NodeConfig};
use crate::wire::encode_raw_addr;
use crate::wire::peer_record::PeerRecord;

pub(crate) const TAG: u8 = 7;

pub(crate) fn addr(i: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], 4000 + i))
}

/// A node that records what it gets and sends what the test queues.
#[derive(Default)]
pub(crate) struct Script {
    pub(crate) got: Vec<(SocketAddr, Vec<u8>, f64)>,
    pub(crate) timers: Vec<f64>,
    pub(crate) out: Vec<u8>,
    pub(crate) deadline: f64,
    pub(crate) events: bool,
    /// Frames to queue on every datagram: (destination, None: the source).
    pub(crate) reply: Option<Option<SocketAddr>>,
}

impl Script {
    pub(crate) fn frame(&mut self, to: Option<SocketAddr>, data: &[u8]) {
        self.out.extend_from_slice(&(data.len() as u16).to_le_bytes());
        self.out.push(u8::from(to.is_none()));
        self.out.extend_from_slice(&to.map_or([0; 18], encode_raw_addr));
        self.out.extend_from_slice(data);
    }
}

impl LaneNode for Script {
    fn datagram(&mut self, from: SocketAddr, data: &[u8], now: f64) {
        self.got.push((from, data.to_vec(), now));
        if let Some(to) = self.reply {
            self.frame(to, b"re");
        }
    }
    fn timer(&mut self, now: f64) {
        self.timers.push(now);
        self.deadline = -1.0;
    }
    fn frames(&self) -> &[u8] {
        &self.out
    }
    fn consume(&mut self, n: usize) {
        self.out.drain(..n);
    }
    fn deadline(&mut self) -> f64 {
        self.deadline
    }
    fn has_events(&self) -> bool {
        self.events
    }
}

pub(crate) fn script(deadline: f64) -> Script {
    Script { deadline, ..Script::default() }
}

/// A Kademlia node with its clock.
pub(crate) struct Kad {
    pub(crate) node: KadNode,
    pub(crate) base: Instant,
}

impl Kad {
    pub(crate) fn at(&self, ms: f64) -> Instant {
        self.base + Duration::from_secs_f64(ms.max(0.0) / 1000.0)
    }
}

impl LaneNode for Kad {
    fn datagram(&mut self, from: SocketAddr, data: &[u8], now: f64) {
        let now = self.at(now);
        self.node.handle_datagram(from, data, None, now);
    }
    fn timer(&mut self, now: f64) {
        let now = self.at(now);
        self.node.handle_timeout(now);
    }
    fn frames(&self) -> &[u8] {
        self.node.transmits()
    }
    fn consume(&mut self, n: usize) {
        self.node.consume_transmits(n);
    }
    fn deadline(&mut self) -> f64 {
        self.node.poll_timeout().map_or(-1.0, |t| t.saturating_duration_since(self.base).as_secs_f64() * 1000.0)
    }
    fn has_events(&self) -> bool {
        self.node.has_events()
    }
}

/// Node `i` of a swarm seeded with `seed`, at [`addr`]`(i)`, on the clock `base`.
pub(crate) fn kad(i: u16, seed: u32, base: Instant) -> Kad {
    let mut s = [0u8; 32];
    s[..4].copy_from_slice(&seed.to_le_bytes());
    s[4..6].copy_from_slice(&i.to_le_bytes());
    let record = PeerRecord::new(Identity::from_seed(&s).public_identity(), addr(i));
    Kad { node: KadNode::new(record, NodeConfig::default(), seed ^ u32::from(i)), base }
}

/// What the swarm tests ask of either lane.
pub(crate) trait SwarmLane {
    fn add(&mut self, i: u16, node: Kad) -> u32;
    fn kad(&mut self, i: u32) -> &mut Kad;
    /// Runs up to `end` (ms) with a budget of 10,000 events.
    fn step(&mut self, end: f64) -> Stop;
    fn head_time(&mut self) -> Option<f64>;
    fn kick_node(&mut self, i: u32);
    fn now_ms(&self) -> f64;
    fn set_now(&mut self, now: f64);
}

/// The [`SwarmLane`] calls of a lane type; `$run` runs it to `end` (the one-thread lane's `run`
/// takes the caller's next sequence number too).
macro_rules! swarm_lane {
    ($lane:ty, |$l:ident, $end:ident| $run:expr) => {
        impl SwarmLane for $lane {
            fn add(&mut self, i: u16, node: Kad) -> u32 {
                self.attach(addr(i), TAG, node).expect("a free address")
            }
            fn kad(&mut self, i: u32) -> &mut Kad {
                self.node(i).expect("attached")
            }
            fn step(&mut self, $end: f64) -> Stop {
                let $l = self;
                $run.1
            }
            fn head_time(&mut self) -> Option<f64> {
                self.head().map(|h| h.0)
            }
            fn kick_node(&mut self, i: u32) {
                self.kick(i);
            }
            fn now_ms(&self) -> f64 {
                self.now
            }
            fn set_now(&mut self, now: f64) {
                self.now = now;
            }
        }
    };
}

swarm_lane!(Lane<Kad>, |l, end| l.run(f64::INFINITY, u64::MAX, end, 10_000));
swarm_lane!(ParallelLane<Kad>, |l, end| l.run(f64::INFINITY, end, 10_000));

/// `n` Kademlia nodes seeded with `seed` join `lane` through node 0, 20 ms apart, then 30 s
/// pass; returns each joining node's index and its join's lookup, and the events handed back.
pub(crate) fn join_swarm(lane: &mut impl SwarmLane, n: u16, seed: u32) -> (Vec<(u32, u32)>, usize) {
    let base = Instant::now();
    let mut joins = Vec::new();
    let mut handed = 0;
    for i in 0..n {
        let k = lane.add(i, kad(i, seed, base));
        if i > 0 {
            let now = lane.now_ms();
            let kad = lane.kad(k);
            let at = kad.at(now);
            joins.push((k, kad.node.bootstrap(&[addr(0)], at)));
            lane.kick_node(k);
        }
        let end = lane.now_ms() + 20.0;
        handed += drive(lane, end);
    }
    let end = lane.now_ms() + 30_000.0;
    handed += drive(lane, end);
    (joins, handed)
}

/// Runs `lane` up to `end` (ms), dropping the nodes' events (no approvals are configured);
/// returns the events handed back.
pub(crate) fn drive(lane: &mut impl SwarmLane, end: f64) -> usize {
    let mut handed = 0;
    for _ in 0..1_000_000 {
        match lane.step(end) {
            Stop::Idle if lane.head_time().is_none_or(|t| t > end) => {
                lane.set_now(end);
                return handed;
            }
            Stop::Events(i) => {
                handed += 1;
                let node = &mut lane.kad(i).node;
                while let Some(e) = node.poll_event() {
                    assert!(!matches!(e, Event::Approve { .. }), "no approvals configured");
                }
            }
            Stop::Deliver { to, .. } => panic!("every address is a node's, got {to}"),
            Stop::Idle => {}
        }
    }
    panic!("the swarm did not settle");
}
