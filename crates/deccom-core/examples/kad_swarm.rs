//! A swarm of native Kademlia nodes ([`KadNode`]) in virtual time: the engine's cost per datagram
//! without the JavaScript simulator around it.
//!
//!   cargo run --release -p deccom-core --example kad_swarm -- 2000       # N = 2,000, seed 1
//!   cargo run --release -p deccom-core --example kad_swarm -- 5000 7     # N = 5,000, seed 7
//!
//! Setup (the JavaScript simulator's, `bench/sim.mjs`): k = 20, alpha = 3, default settings; node
//! i at 10.x.y.z:4000 with x.y.z = i + 1 (256 nodes share a /24 prefix); every datagram takes
//! 10 ms plus a seeded jitter in [0, 40) ms, none is lost; node 0 is the bootstrap node, the
//! others join through it in batches of 100, one batch every 2 virtual s, then 30 virtual s to
//! settle. Then N findPeer lookups (stop at the target), from node i to a random other node, all
//! started at once, run until every one ended. Each node runs its own join and refreshes
//! ([`KadNode::start_upkeep`], with the Kademlia layer's defaults), as in the simulator; the
//! links' jitter comes from another generator, so the traffic is alike, not the same.
//!
//! It prints the datagrams delivered, the CPU seconds of the join and of the lookups (the whole
//! process's thread, the harness included: read from /proc, else wall time), the engine's share
//! (wall time inside the nodes' calls: datagrams, timers, joins, lookups; on a loaded machine it
//! counts the time the thread was preempted too, the CPU figure does not), ns per datagram of both,
//! lookups that found their target, and a 64-bit hash of every frame every node sent, in order, with
//! the node that sent it: the behaviour fingerprint (the same seed gives the same hash; a change of
//! the engine that keeps it keeps the traffic byte for byte). Everything is deterministic from the
//! seed; identities too. It also prints the heap the nodes hold after the join, per node: bytes
//! allocated and not freed (counted by this program's allocator), the datagrams in flight left out.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use deccom_core::identity::{Identity, NodeId};
use deccom_core::kad::node::{Event, KadNode, LookupOptions, NodeConfig, UpkeepConfig, FRAME_HEADER};
use deccom_core::wire::decode_raw_addr;
use deccom_core::PeerRecord;

/// Nodes join in batches of this many, one batch per [`BATCH_EVERY`].
const BATCH: usize = 100;
const BATCH_EVERY: Duration = Duration::from_secs(2);
/// Virtual time after the last batch before the lookups.
const SETTLE: Duration = Duration::from_secs(30);
/// The lookups must all end within this virtual time.
const LOOKUP_LIMIT: Duration = Duration::from_secs(600);
/// The port of every node.
const PORT: u16 = 4000;

/// The system allocator, counting the bytes allocated and not yet freed.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes the datagrams in flight hold (queued frames; their vectors' capacity).
fn in_flight(swarm: &Swarm) -> usize {
    swarm.queue.iter().map(|Reverse((_, _, due))| if let Due::Datagram { data, .. } = due { data.capacity() } else { 0 }).sum::<usize>()
        + swarm.queue.capacity() * std::mem::size_of::<Reverse<(Instant, u64, Due)>>()
}

/// SplitMix64 step: the harness's randomness.
fn mix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The address of node `i`: 10.x.y.z:4000, x.y.z = i + 1.
fn addr(i: usize) -> SocketAddr {
    let [_, x, y, z] = u32::try_from(i + 1).expect("N < 2^24").to_be_bytes();
    SocketAddr::from(([10, x, y, z], PORT))
}

/// The node at `addr`.
fn node_at(addr: SocketAddr) -> usize {
    let SocketAddr::V4(v4) = addr else { panic!("an IPv4 address") };
    let [_, x, y, z] = v4.ip().octets();
    (usize::from(x) << 16 | usize::from(y) << 8 | usize::from(z)) - 1
}

/// CPU time of this thread (the harness runs on one), else wall time since `start`.
fn cpu_seconds(start: Instant) -> f64 {
    // /proc/thread-self/schedstat: nanoseconds on CPU, nanoseconds waiting, timeslices.
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
        .map_or_else(|| start.elapsed().as_secs_f64(), |ns| ns as f64 / 1e9)
}

/// What happens at a virtual time: a datagram arrives, or a node's timer may be due.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Datagram { from: usize, to: usize, data: Vec<u8> },
    Timer { node: usize },
}

/// N nodes, a virtual clock, the datagrams on their way and the nodes' timers.
struct Swarm {
    nodes: Vec<KadNode>,
    base: Instant,
    now: Instant,
    /// (when, order of queuing, what): datagrams and timers, earliest first.
    queue: BinaryHeap<Reverse<(Instant, u64, Due)>>,
    seq: u64,
    /// The timer each node has queued (a node's later timer queues again).
    armed: Vec<Option<Instant>>,
    rng: u64,
    delivered: u64,
    /// The behaviour fingerprint (see the module docs).
    hash: u64,
    /// Time spent inside the nodes' calls.
    engine: Duration,
    /// Lookups ended, and findPeer lookups that found their target verified.
    done: usize,
    found: usize,
    /// The target of node i's findPeer lookup.
    targets: Vec<Option<NodeId>>,
}

impl Swarm {
    fn new(n: usize, seed: u64) -> Swarm {
        let base = Instant::now();
        let nodes = (0..n)
            .map(|i| {
                let mut s = [0u8; 32];
                s[..8].copy_from_slice(&seed.to_le_bytes());
                s[8..16].copy_from_slice(&(i as u64).to_le_bytes());
                let own = PeerRecord::new(Identity::from_seed(&s).public_identity(), addr(i));
                KadNode::new(own, NodeConfig::default(), (seed as u32) ^ (i as u32 + 1).wrapping_mul(0x9E37_79B9))
            })
            .collect();
        let rng = seed ^ 0xD1B5_4A32_D192_ED03;
        let (queue, armed, targets) = (BinaryHeap::new(), vec![None; n], vec![None; n]);
        Swarm { nodes, base, now: base, queue, seq: 0, armed, rng, delivered: 0, hash: 0xCBF2_9CE4_8422_2325, engine: Duration::ZERO, done: 0, found: 0, targets }
    }

    /// Node `i` does `f`, timed into `engine`.
    fn timed<R>(&mut self, i: usize, f: impl FnOnce(&mut KadNode) -> R) -> R {
        let t = Instant::now();
        let r = f(&mut self.nodes[i]);
        self.engine += t.elapsed();
        r
    }

    fn push(&mut self, at: Instant, due: Due) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, due)));
    }

    /// Queues what node `i` sent (`source`: the sender of the datagram it just handled), hashes
    /// it, counts its ended lookups and queues its timer.
    fn flush(&mut self, i: usize, source: Option<usize>) {
        let out = self.nodes[i].transmits().to_vec();
        let mut at = 0;
        while at < out.len() {
            let len = usize::from(u16::from_le_bytes([out[at], out[at + 1]]));
            let to = if out[at + 2] == 1 {
                source.expect("a frame to the source after a datagram")
            } else {
                node_at(decode_raw_addr(&out[at + 3..at + FRAME_HEADER]).expect("an address"))
            };
            let frame = &out[at..at + FRAME_HEADER + len];
            self.hash = fold(self.hash ^ i as u64, frame);
            let delay = Duration::from_micros(10_000 + mix(&mut self.rng) % 40_000);
            self.push(self.now + delay, Due::Datagram { from: i, to, data: frame[FRAME_HEADER..].to_vec() });
            at += FRAME_HEADER + len;
        }
        self.nodes[i].consume_transmits(at);
        while let Some(e) = self.nodes[i].poll_event() {
            if let Event::LookupDone { lookup } = e {
                self.done += 1;
                let outcome = self.nodes[i].take_lookup(lookup).expect("an ended lookup");
                let id = outcome.found.filter(|_| outcome.verified).map(|r| r.id());
                self.found += usize::from(id.is_some() && id == self.targets[i]);
            }
        }
        if let Some(next) = self.timed(i, KadNode::poll_timeout).filter(|&t| self.armed[i] != Some(t)) {
            self.armed[i] = Some(next);
            self.push(next, Due::Timer { node: i });
        }
    }

    /// Runs everything due up to `until`, then sets the clock there; or until `stop` holds.
    fn run(&mut self, until: Instant, stop: impl Fn(&Swarm) -> bool) {
        loop {
            if stop(self) {
                return;
            }
            let Some(Reverse((at, _, _))) = self.queue.peek() else { break };
            if *at > until {
                break;
            }
            let Some(Reverse((at, _, due))) = self.queue.pop() else { break };
            self.now = at;
            match due {
                Due::Datagram { from, to, data } => {
                    self.delivered += 1;
                    self.timed(to, |x| x.handle_datagram(addr(from), &data, None, at));
                    self.flush(to, Some(from));
                }
                Due::Timer { node } => {
                    if self.armed[node] != Some(at) {
                        continue;
                    }
                    self.armed[node] = None;
                    self.timed(node, |x| {
                        if x.poll_timeout().is_some_and(|t| t <= at) {
                            x.handle_timeout(at);
                        }
                    });
                    self.flush(node, None);
                }
            }
        }
        self.now = self.now.max(until);
    }
}

/// Folds `bytes` into `h`, 8 bytes at a time (a multiply-rotate mix: a fingerprint, not a MAC).
fn fold(mut h: u64, bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let word = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        h = (h ^ word).wrapping_mul(0x0000_0100_0000_01B3).rotate_left(29);
    }
    for &b in chunks.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3);
    }
    (h ^ bytes.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(2000, |a| a.parse().expect("N: a number"));
    let seed: u64 = args.next().map_or(1, |a| a.parse().expect("seed: a number"));
    assert!((2..1 << 24).contains(&n), "N in 2..2^24");
    let mut swarm = Swarm::new(n, seed);
    let clock = Instant::now();
    let boot = addr(0);

    // Join: batches of BATCH every BATCH_EVERY (node 0 is the bootstrap node), then SETTLE.
    let c0 = cpu_seconds(clock);
    for b in (0..n).step_by(BATCH) {
        for i in b..(b + BATCH).min(n) {
            let now = swarm.now;
            // Node 0's own address is its only bootstrap address: it starts the network.
            let upkeep = UpkeepConfig {
                bootstrap: vec![boot],
                retries: 5,
                join_refresh_delay: Duration::from_millis(500),
                settle: Duration::from_secs(10),
                refresh_interval: Duration::from_secs(600),
            };
            swarm.timed(i, |x| x.start_upkeep(upkeep, now));
            swarm.flush(i, None);
        }
        let until = swarm.now + BATCH_EVERY;
        swarm.run(until, |_| false);
    }
    let until = swarm.now + SETTLE;
    swarm.run(until, |_| false);
    let join_cpu = cpu_seconds(clock) - c0;
    let join_engine = swarm.engine.as_secs_f64();
    let join_datagrams = swarm.delivered;
    let tables: usize = swarm.nodes.iter().map(|x| x.table.len()).sum();
    let heap = LIVE.load(Ordering::Relaxed).saturating_sub(in_flight(&swarm)) as f64 / n as f64;

    // Lookups: node i finds a random other node, all at once.
    let c1 = cpu_seconds(clock);
    let opts = LookupOptions { stop: true, ..LookupOptions::default() };
    let mut rng = seed ^ 0x5EED;
    swarm.done = 0;
    for i in 0..n {
        let to = (i + 1 + (mix(&mut rng) % (n as u64 - 1)) as usize) % n;
        let (target, now) = (swarm.nodes[to].own.id, swarm.now);
        swarm.targets[i] = Some(target);
        swarm.timed(i, |x| x.start_lookup(target, opts, now)).expect("a lookup slot");
        swarm.flush(i, None);
    }
    let until = swarm.now + LOOKUP_LIMIT;
    swarm.run(until, |s| s.done == n);
    let lookup_cpu = cpu_seconds(clock) - c1;
    let lookup_engine = swarm.engine.as_secs_f64() - join_engine;
    let lookup_datagrams = swarm.delivered - join_datagrams;

    println!("nodes {n} seed {seed} virtual {:.1} s", (swarm.now - swarm.base).as_secs_f64());
    let per = |s: f64, d: u64| s * 1e9 / d.max(1) as f64;
    let phase = |name: &str, datagrams: u64, cpu: f64, engine: f64| {
        let (c, e) = (per(cpu, datagrams), per(engine, datagrams));
        format!("{name}: datagrams {datagrams} cpu {cpu:.2} s ({c:.0} ns/datagram) engine {engine:.2} s ({e:.0} ns/datagram)")
    };
    println!("{}, mean table {:.1}", phase("join", join_datagrams, join_cpu, join_engine), tables as f64 / n as f64);
    println!("{}, ended {} of {n}, found {}", phase("lookups", lookup_datagrams, lookup_cpu, lookup_engine), swarm.done, swarm.found);
    println!("{}", phase("total", swarm.delivered, join_cpu + lookup_cpu, join_engine + lookup_engine));
    println!("heap after the join: {heap:.0} B/node");
    println!("fingerprint {:016x}", swarm.hash);
}
