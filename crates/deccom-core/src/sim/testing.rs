//! What the lanes' tests share: a scripted node for the rules (order, limits, timers, what goes
//! back to the caller) and a Kademlia node with its clock.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::LaneNode;
use crate::identity::Identity;
use crate::kad::node::{KadNode, NodeConfig};
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
