//! Hostile input to a joined node: random bytes, mutated valid datagrams, floods.

use std::net::SocketAddr;
use std::time::Duration;

use proptest::prelude::*;

use super::{find_node, identity, nodes, pong, record, Frame, Sim};
use crate::identity::Identity;
use crate::kad::node::{Counter, LookupOptions, NodeConfig, MAX_VERIFYING};
use crate::kad::wire::{self, Message};
use crate::wire::peer_record::PeerRecord;

/// Nodes of the network the hostile input goes to (node 0 takes it).
const N: usize = 10;

fn joined(seed: u64) -> Sim {
    let mut sim = Sim::new(N, NodeConfig::default(), seed);
    sim.join(5);
    sim.run_for(Duration::from_secs(5));
    sim
}

/// Hostile address `j`, outside the network: IPv4 (one per /24) for even `j`, IPv6 for odd.
fn hostile_addr(j: usize) -> SocketAddr {
    if j.is_multiple_of(2) {
        SocketAddr::from(([10, 66, j as u8, 1 + (j >> 8) as u8], 4000 + (j % 7) as u16))
    } else {
        SocketAddr::from(([0x2001, 0xdb8, j as u16, 0, 0, 0, 0, 1], 4000 + (j % 7) as u16))
    }
}

/// What a hostile datagram starts from, before its mutations.
#[derive(Debug, Clone)]
enum Shape {
    Bytes(Vec<u8>),
    Ping,
    /// A PONG; `recent`: with the id of a PING node 0 sent to this source.
    Pong { recent: bool },
    /// A FIND_NODE from identity `who` (hostile or of the network), padded to `pad`.
    Find { who: u8, pad: u16, ephemeral: bool },
    /// A NODES from `who` naming `named`; `recent` as for `Pong`.
    Nodes { who: u8, named: Vec<u8>, recent: bool },
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300).prop_map(Shape::Bytes),
        Just(Shape::Ping),
        any::<bool>().prop_map(|recent| Shape::Pong { recent }),
        (any::<u8>(), 0u16..1400, any::<bool>()).prop_map(|(who, pad, ephemeral)| Shape::Find { who, pad, ephemeral }),
        (any::<u8>(), prop::collection::vec(any::<u8>(), 0..8), any::<bool>()).prop_map(|(who, named, recent)| Shape::Nodes { who, named, recent }),
    ]
}

/// One hostile datagram: its source (below 8: a hostile address; else a node of the network),
/// shape, request id, byte flips and cut.
type Op = (u8, Shape, u64, Vec<(u16, u8)>, Option<u16>);

fn op() -> impl Strategy<Value = Op> {
    (0u8..12, shape(), any::<u64>(), prop::collection::vec((any::<u16>(), 1u8..=255), 0..3), proptest::option::of(any::<u16>()))
}

/// The hostile identities' records (at their hostile addresses) and the network's.
struct Cast {
    hostile: Vec<PeerRecord>,
    network: Vec<PeerRecord>,
}

impl Cast {
    fn who(&self, w: u8) -> &PeerRecord {
        let w = usize::from(w);
        if w % 2 == 0 {
            &self.hostile[w / 2 % self.hostile.len()]
        } else {
            &self.network[w / 2 % self.network.len()]
        }
    }
}

/// The bytes of `op` from `from` (`recent`: the last PING id node 0 sent to `from`).
fn bytes(cast: &Cast, shape: &Shape, id: u64, recent: Option<u64>, flips: &[(u16, u8)], cut: Option<u16>) -> Vec<u8> {
    let id_or = |r: bool| if r { recent.unwrap_or(id) } else { id };
    let mut data = match shape {
        Shape::Bytes(b) => b.clone(),
        Shape::Ping => Message::Ping { request_id: id }.encode(),
        Shape::Pong { recent } => pong(id_or(*recent)),
        Shape::Find { who, pad, ephemeral } => {
            let mut out = Vec::new();
            wire::encode_find_node(id, &cast.who(who.wrapping_add(1)).id, cast.who(*who), *ephemeral, usize::from(*pad), &mut out);
            out
        }
        Shape::Nodes { who, named, recent } => {
            let named: Vec<PeerRecord> = named.iter().map(|&w| cast.who(w).clone()).collect();
            nodes(id_or(*recent), cast.who(*who), &named)
        }
    };
    for &(at, x) in flips {
        if !data.is_empty() {
            let i = usize::from(at) % data.len();
            data[i] ^= x;
        }
    }
    if let Some(c) = cut {
        data.truncate(usize::from(c) % (data.len() + 1));
    }
    data
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random and mutated datagrams from random addresses to a joined node: no panic, nothing to
    /// an unvalidated source larger than what it sent, requests and lookups bounded, peers only at
    /// validated addresses, and the node still finds the others afterwards.
    #[test]
    fn hostile_datagrams_to_a_joined_node(seed in 1u64..1_000, ops in prop::collection::vec(op(), 1..60)) {
        let mut sim = joined(seed);
        let cast = Cast {
            hostile: (0..8).map(|j| record(&identity(0xBAD, j), hostile_addr(j))).collect(),
            network: sim.records.clone(),
        };
        let (pending0, lookups0) = (sim.nodes[0].pending_requests(), sim.nodes[0].lookups());
        let mut pings: Vec<(SocketAddr, u64)> = Vec::new();
        for (k, (src, shape, id, flips, cut)) in ops.iter().enumerate() {
            let from = if *src < 8 { hostile_addr(usize::from(*src)) } else { sim.records[1 + usize::from(*src) % (N - 1)].udp };
            let recent = pings.iter().rev().find(|p| p.0 == from).map(|p| p.1);
            let data = bytes(&cast, shape, *id, recent, flips, cut.as_ref().copied());
            let x = &sim.nodes[0];
            let validated = x.is_entry_address(&from) || x.book.is_verified(&from);
            let frames: Vec<Frame> = sim.inject(0, from, &data);
            let to_source: usize = frames.iter().filter(|f| f.to_source || f.to == from).map(|f| f.data.len()).sum();
            prop_assert!(validated || to_source <= data.len(), "{to_source} bytes to an unvalidated source that sent {}", data.len());
            for f in frames.iter().filter(|f| f.data.get(1) == Some(&wire::kind::PING)) {
                pings.push((f.to, super::request_id(&f.data)));
            }
            let x = &sim.nodes[0];
            // Nothing goes to a third party nobody validated (no reflection).
            for f in frames.iter().filter(|f| f.to != from) {
                prop_assert!(x.is_entry_address(&f.to) || x.book.is_verified(&f.to), "a datagram to {} on behalf of {}", f.to, from);
            }
            prop_assert!(x.pending_requests() <= pending0 + k + 1);
            prop_assert_eq!(x.lookups(), lookups0);
            for e in x.table.iter() {
                let udp = e.value.encoded.addrs().map(|a| a.0).expect("a readable record");
                prop_assert!(sim.records.iter().any(|r| r.udp == udp) || x.book.is_verified(&udp), "an entry at an unvalidated address");
            }
            sim.run_for(Duration::from_millis(3));
        }
        // Every request ends; the node still finds the others.
        sim.run_for(Duration::from_secs(10));
        prop_assert_eq!(sim.nodes[0].pending_requests(), 0);
        prop_assert_eq!(sim.nodes[0].poll_timeout(), None);
        let targets: Vec<(usize, [u8; 32])> = (1..N).step_by(3).map(|b| (b, sim.id(b))).collect();
        let started: Vec<(usize, u32)> = targets.iter().map(|&(_, t)| {
            (0, sim.call(0, |node, now| node.start_lookup(t, LookupOptions { stop: true, ..LookupOptions::default() }, now)).expect("a lookup"))
        }).collect();
        sim.finish(&started, Duration::from_secs(30));
        for (&(b, t), &(_, l)) in targets.iter().zip(&started) {
            let outcome = sim.nodes[0].take_lookup(l).expect("an outcome");
            prop_assert!(outcome.found.is_some_and(|f| f.id() == t) && outcome.verified, "node {} not found", b);
        }
    }
}

/// Thousands of requesters that never answer, from thousands of prefixes, then from one: the
/// verifications, requests in flight and the answers to one prefix stay bounded.
#[test]
fn a_flood_of_requesters_stays_bounded() {
    let mut sim = joined(5);
    let target = sim.id(3);
    for j in 0..3_000usize {
        let from = SocketAddr::from(([10, (j >> 8) as u8 + 100, j as u8, 1], 5000));
        let r = record(&Identity::from_name(&format!("flood{j}")).expect("a name"), from);
        let frames = sim.inject(0, from, &find_node(j as u64, &target, &r, 1200));
        assert!(frames.iter().filter(|f| f.to == from).map(|f| f.data.len()).sum::<usize>() <= 1200);
    }
    let x = &sim.nodes[0];
    assert!(x.verifying.len() <= MAX_VERIFYING);
    assert!(x.pending_requests() <= MAX_VERIFYING + 16, "{} requests in flight", x.pending_requests());
    assert!(x.counters()[Counter::dropped_verify_busy as usize] > 0);
    assert!(x.table.len() < N + 1);
    // One prefix: its answers are rate-limited (a burst, then a rate).
    let answered = x.counters()[Counter::nodes_sent as usize];
    for j in 0..2_000usize {
        let from = SocketAddr::from(([10, 200, 0, (j % 250) as u8 + 1], 6000 + (j / 250) as u16));
        let r = record(&Identity::from_name(&format!("one{j}")).expect("a name"), from);
        sim.inject(0, from, &find_node(j as u64, &target, &r, 1200));
    }
    let x = &sim.nodes[0];
    let sent = x.counters()[Counter::nodes_sent as usize] - answered;
    assert!((400..=420).contains(&sent), "{sent} answers to one prefix at once");
    assert!(x.counters()[Counter::dropped_reply_rate as usize] >= 1_500);
    // Every PING times out; nobody entered.
    sim.run_for(Duration::from_secs(10));
    let x = &sim.nodes[0];
    assert_eq!(x.pending_requests(), 0);
    assert!(x.verifying.is_empty());
    assert!(x.table.iter().all(|e| sim.records.iter().any(|r| r.id == e.id)));
}
