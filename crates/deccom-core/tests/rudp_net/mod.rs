//! The virtual-time network the reliable-UDP pair tests share (quinn's `Pair` idea): N endpoints
//! with per-direction latency, bandwidth, and seeded loss / duplication / reordering.
#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use deccom_core::rudp::{Config, Endpoint, Event, FailReason, MessageId, HEADER_MAX};

pub const MS: Duration = Duration::from_millis(1);

#[derive(Debug, Clone, Copy)]
pub struct Link {
    pub latency: Duration,
    /// Bytes per second; `None` = unlimited.
    pub bandwidth: Option<u64>,
    pub loss: f64,
    pub duplicate: f64,
    /// Probability that a datagram is held back by up to `reorder_delay` extra.
    pub reorder: f64,
    pub reorder_delay: Duration,
    /// The receiving end is dead: everything is dropped.
    pub down: bool,
    /// Bytes the bottleneck (`bandwidth`) queue holds; a datagram that does not fit is dropped
    /// (tail drop) and counted in [`Net::buffer_drops`]. `None` = unbounded.
    pub buffer: Option<usize>,
}

impl Default for Link {
    fn default() -> Self {
        Link {
            latency: 10 * MS,
            bandwidth: None,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: 5 * MS,
            down: false,
            buffer: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ev {
    Delivered {
        from: u8,
        message: Vec<u8>,
    },
    Sent {
        to: u8,
        id: MessageId,
    },
    Failed {
        to: u8,
        id: MessageId,
        reason: FailReason,
    },
    Progress {
        to: u8,
        id: MessageId,
        acked_bytes: u64,
    },
}

/// A datagram in flight: (arrival, sequence, from, to, bytes).
pub type Queued = Reverse<(Instant, u64, u8, u8, Vec<u8>)>;
/// A record of one datagram put on a link: (time since start, from, to, length, hash).
pub type TraceEntry = (Duration, u8, u8, usize, u64);

/// N endpoints whose peer handles are their indices.
pub struct Net {
    pub base: Instant,
    pub now: Instant,
    pub nodes: Vec<Endpoint<u8>>,
    pub links: HashMap<(u8, u8), Link>,
    pub default_link: Link,
    pub busy_until: HashMap<(u8, u8), Instant>,
    pub queue: BinaryHeap<Queued>,
    pub seq: u64,
    pub rng: u64,
    pub events: Vec<Vec<(Instant, Ev)>>,
    /// (time, from, to, len, hash) of every datagram put on a link.
    pub trace: Vec<TraceEntry>,
    pub buf: Vec<u8>,
    /// Checked after every step.
    pub max_reassembly_seen: Vec<usize>,
    pub stuck: u32,
    /// Datagrams dropped because a link's bottleneck buffer was full, with the time of each.
    pub buffer_drops: Vec<Duration>,
    /// The most bytes queued at any bottleneck.
    pub max_queued: usize,
}

pub fn hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

impl Net {
    pub fn new(configs: Vec<Config>, seed: u64, link: Link) -> Self {
        let base = Instant::now();
        let n = configs.len();
        let nodes = configs
            .into_iter()
            .enumerate()
            .map(|(i, c)| Endpoint::new(c, base, seed.wrapping_mul(31).wrapping_add(i as u64)))
            .collect();
        Net {
            base,
            now: base,
            nodes,
            links: HashMap::new(),
            default_link: link,
            busy_until: HashMap::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            rng: seed ^ 0x5555_aaaa_1234_5678,
            events: vec![Vec::new(); n],
            trace: Vec::new(),
            buf: Vec::new(),
            max_reassembly_seen: vec![0; n],
            stuck: 0,
            buffer_drops: Vec::new(),
            max_queued: 0,
        }
    }

    pub fn pair(config: Config, seed: u64, link: Link) -> Self {
        Net::new(vec![config.clone(), config], seed, link)
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.base
    }

    pub fn random(&mut self) -> f64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn link(&self, from: u8, to: u8) -> Link {
        self.links
            .get(&(from, to))
            .copied()
            .unwrap_or(self.default_link)
    }

    pub fn send(&mut self, from: u8, to: u8, message: Vec<u8>) -> MessageId {
        let now = self.now;
        self.nodes[from as usize]
            .send(now, to, message)
            .expect("send accepted")
    }

    /// Replaces node `i` by a fresh endpoint (a restart: new epochs, no state).
    pub fn restart(&mut self, i: u8, config: Config, seed: u64) {
        self.nodes[i as usize] = Endpoint::new(config, self.now, seed);
    }

    pub fn put_on_link(&mut self, from: u8, to: u8, datagram: Vec<u8>) {
        self.trace
            .push((self.elapsed(), from, to, datagram.len(), hash(&datagram)));
        let link = self.link(from, to);
        if link.down || self.random() < link.loss {
            return;
        }
        let mut depart = self.now;
        if let Some(bw) = link.bandwidth {
            let now = self.now;
            let busy = self.busy_until.entry((from, to)).or_insert(now);
            let start = (*busy).max(now);
            let queued = ((start - now).as_nanos() * u128::from(bw) / 1_000_000_000) as usize;
            if link.buffer.is_some_and(|b| queued + datagram.len() > b) {
                let at = now - self.base;
                self.buffer_drops.push(at);
                return;
            }
            self.max_queued = self.max_queued.max(queued + datagram.len());
            let busy = self.busy_until.get_mut(&(from, to)).expect("just inserted");
            let tx = Duration::from_nanos(datagram.len() as u64 * 1_000_000_000 / bw);
            *busy = start + tx;
            depart = start + tx;
        }
        let mut arrive = depart + link.latency;
        if self.random() < link.reorder {
            arrive += link.reorder_delay.mul_f64(self.random());
        }
        if self.random() < link.duplicate {
            let extra = link.reorder_delay.mul_f64(self.random());
            self.seq += 1;
            self.queue.push(Reverse((
                arrive + extra,
                self.seq,
                from,
                to,
                datagram.clone(),
            )));
        }
        self.seq += 1;
        self.queue
            .push(Reverse((arrive, self.seq, from, to, datagram)));
    }

    /// Polls every node until it has nothing to send, and collects events.
    pub fn flush(&mut self) {
        let now = self.now;
        for i in 0..self.nodes.len() {
            loop {
                let mut buf = std::mem::take(&mut self.buf);
                let Some(to) = self.nodes[i].poll_transmit(now, &mut buf) else {
                    self.buf = buf;
                    break;
                };
                let max = self.nodes[i].config().max_segment_payload + HEADER_MAX;
                assert!(buf.len() <= max, "datagram of {} bytes > {max}", buf.len());
                self.put_on_link(i as u8, to, buf.clone());
                self.buf = buf;
            }
            while let Some(ev) = self.nodes[i].poll_event() {
                let ev = match ev {
                    Event::Delivered { peer, message } => Ev::Delivered {
                        from: peer,
                        message,
                    },
                    Event::Sent { peer, id } => Ev::Sent { to: peer, id },
                    Event::Failed { peer, id, reason } => Ev::Failed {
                        to: peer,
                        id,
                        reason,
                    },
                    Event::Progress {
                        peer,
                        id,
                        acked_bytes,
                    } => Ev::Progress {
                        to: peer,
                        id,
                        acked_bytes,
                    },
                };
                self.events[i].push((now, ev));
            }
            let r = self.nodes[i].reassembly_bytes();
            self.max_reassembly_seen[i] = self.max_reassembly_seen[i].max(r);
        }
    }

    /// Advances virtual time to the next arrival or timer. False when nothing is left to do.
    pub fn step(&mut self) -> bool {
        self.flush();
        let next_arrival = self.queue.peek().map(|Reverse((t, ..))| *t);
        let next_timer = self.nodes.iter().filter_map(|n| n.poll_timeout()).min();
        let Some(next) = [next_arrival, next_timer].into_iter().flatten().min() else {
            return false;
        };
        // A timer may lie in the past (a new RTT sample shortened the PTO): it fires now. A
        // timer that stays in the past would spin here: that is a bug.
        if next <= self.now {
            self.stuck += 1;
            assert!(
                self.stuck < 10_000,
                "time does not advance: a timer never clears"
            );
        } else {
            self.stuck = 0;
        }
        self.now = next.max(self.now);
        while let Some(Reverse((t, ..))) = self.queue.peek() {
            if *t > self.now {
                break;
            }
            let Some(Reverse((_, _, from, to, datagram))) = self.queue.pop() else {
                break;
            };
            let now = self.now;
            self.nodes[to as usize].handle_datagram(now, from, &datagram);
        }
        let now = self.now;
        for node in &mut self.nodes {
            if node.poll_timeout().is_some_and(|t| t <= now) {
                node.handle_timeout(now);
            }
        }
        true
    }

    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Net) -> bool) -> bool {
        while self.elapsed() < limit {
            self.flush();
            if done(self) {
                return true;
            }
            if !self.step() {
                return done(self);
            }
        }
        done(self)
    }

    pub fn delivered(&self, node: usize) -> Vec<Vec<u8>> {
        self.events[node]
            .iter()
            .filter_map(|(_, e)| match e {
                Ev::Delivered { message, .. } => Some(message.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn count(&self, node: usize, f: impl Fn(&Ev) -> bool) -> usize {
        self.events[node].iter().filter(|(_, e)| f(e)).count()
    }
}

/// A message whose content identifies it: 8-byte tag then a pattern derived from it.
pub fn message(tag: u64, len: usize) -> Vec<u8> {
    let mut m = Vec::with_capacity(len.max(8));
    m.extend_from_slice(&tag.to_be_bytes());
    let mut x = tag.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while m.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        m.push(x as u8);
    }
    m.truncate(len.max(8));
    m
}

pub fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

/// Sends one message of `bytes` from node 0 to node 1 over `link` and runs until it is
/// acknowledged (at most 600 virtual seconds); checks it arrived byte-exact.
#[allow(dead_code)] // not every test file that includes this module transfers
pub fn transfer(config: Config, link: Link, bytes: usize, seed: u64) -> Net {
    let mut net = Net::pair(config, seed, link);
    let m = message(seed, bytes);
    net.send(0, 1, m.clone());
    assert!(
        net.run_until(Duration::from_secs(600), |n| n.count(0, |e| matches!(e, Ev::Sent { .. })) == 1),
        "transfer did not finish: {:?}",
        net.nodes[0].stats()
    );
    assert_eq!(net.delivered(1), vec![m]);
    net
}
