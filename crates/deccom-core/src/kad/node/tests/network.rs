//! Networks of nodes in virtual time: joins, findPeer lookups, determinism, timers.

use std::collections::HashMap;
use std::time::Duration;

use super::{mix, Sim};
use crate::kad::distance;
use crate::kad::node::{Counter, Enough, Event, LookupOptions, NodeConfig};
use crate::wire::peer_record::PeerRecord;

fn find_peer() -> LookupOptions {
    LookupOptions { stop: true, ..LookupOptions::default() }
}

/// Node `a` looks up node `b` (findPeer) for each pair; every lookup ends with `b` found at its
/// address, verified.
pub(super) fn find_all(sim: &mut Sim, pairs: &[(usize, usize)]) {
    let started: Vec<(usize, u32)> = pairs
        .iter()
        .map(|&(a, b)| {
            let target = sim.id(b);
            (a, sim.call(a, |node, now| node.start_lookup(target, find_peer(), now)).expect("a lookup slot"))
        })
        .collect();
    sim.finish(&started, Duration::from_secs(60));
    for (&(a, b), &(_, l)) in pairs.iter().zip(&started) {
        let outcome = sim.nodes[a].take_lookup(l).expect("an ended lookup has an outcome");
        let found = outcome.found.unwrap_or_else(|| panic!("node {a} did not find node {b}"));
        assert_eq!(found.id(), sim.id(b), "node {a} found another node than {b}");
        assert_eq!(found.addrs().map(|x| x.0), Some(sim.records[b].udp));
        assert!(outcome.verified, "node {a}: node {b} found but not verified");
    }
}

/// A random id.
fn random_id(rng: &mut u64) -> [u8; 32] {
    let mut id = [0u8; 32];
    for b in id.chunks_mut(8) {
        b.copy_from_slice(&mix(rng).to_le_bytes());
    }
    id
}

/// Random pairs (a, b), a != b.
pub(super) fn pairs(n: usize, count: usize, seed: u64) -> Vec<(usize, usize)> {
    let mut rng = seed;
    (0..count)
        .map(|_| {
            let a = (mix(&mut rng) % n as u64) as usize;
            let b = (a + 1 + (mix(&mut rng) % (n as u64 - 1)) as usize) % n;
            (a, b)
        })
        .collect()
}

#[test]
fn sixty_nodes_join_and_find_each_other() {
    let mut sim = Sim::new(60, NodeConfig::default(), 1);
    sim.join(10);
    for i in 0..60 {
        assert!(!sim.nodes[i].table.is_empty(), "node {i} has an empty table");
    }
    // The bootstrap node met every joiner; a joiner knows more than the bootstrap node.
    assert!(sim.nodes[0].table.len() >= 20, "bootstrap node's table: {}", sim.nodes[0].table.len());
    let mean = (1..60).map(|i| sim.nodes[i].table.len()).sum::<usize>() / 59;
    assert!(mean >= 10, "mean table size {mean}");
    find_all(&mut sim, &pairs(60, 30, 7));
    // Lookups of random ids converge on the k closest nodes (all but the one looking).
    let mut rng = 13u64;
    let asks: Vec<(usize, [u8; 32])> = (0..10).map(|_| ((mix(&mut rng) % 60) as usize, random_id(&mut rng))).collect();
    let opts = LookupOptions { ids: true, records: true, ..LookupOptions::default() };
    let started: Vec<(usize, u32)> = asks.iter().map(|&(a, t)| (a, sim.call(a, |node, now| node.start_lookup(t, opts, now)).expect("a lookup"))).collect();
    sim.finish(&started, Duration::from_secs(60));
    for (&(a, t), &(_, l)) in asks.iter().zip(&started) {
        let outcome = sim.nodes[a].take_lookup(l).expect("an outcome");
        let mut want: Vec<[u8; 32]> = (0..60).filter(|&i| i != a).map(|i| sim.id(i)).collect();
        want.sort_by_key(|id| distance(id, &t));
        want.truncate(20);
        let got: Vec<[u8; 32]> = outcome.closest_ids.chunks(32).map(|c| c.try_into().expect("32 bytes")).collect();
        assert_eq!(got, want, "node {a}: not the 20 closest");
        let mut records = &outcome.closest_records[..];
        for id in &got {
            let (r, used) = PeerRecord::decode(records).expect("a record");
            assert_eq!((&r.id, r.udp), (id, sim.records.iter().find(|x| x.id == *id).expect("a node").udp));
            records = &records[used..];
        }
        assert!(records.is_empty());
    }
    // Nobody sent to an address outside the network, nor answered a request it did not send.
    assert_eq!(sim.strays, 0);
    for (i, node) in sim.nodes.iter().enumerate() {
        let c = node.counters();
        assert_eq!(c[Counter::dropped_unsolicited as usize], 0, "node {i}");
        assert_eq!(c[Counter::dropped_wrong_sender as usize], 0, "node {i}");
        assert_eq!(c[Counter::dropped_malformed as usize], 0, "node {i}");
    }
}

/// A node's counters, table (ids and records) and requests in flight.
type Fingerprint = (Vec<u64>, Vec<([u8; 32], Vec<u8>)>, usize);

/// Every node's fingerprint.
fn fingerprint(sim: &Sim) -> Vec<Fingerprint> {
    (0..sim.nodes.len()).map(|i| (sim.nodes[i].counters().to_vec(), sim.table_of(i), sim.nodes[i].pending_requests())).collect()
}

fn run(seed: u64) -> (Vec<Fingerprint>, u64) {
    let mut sim = Sim::new(24, NodeConfig::default(), seed);
    sim.join(6);
    // Lost datagrams too: lookups with timeouts.
    sim.dead[5] = true;
    find_all(&mut sim, &pairs(24, 12, seed).into_iter().filter(|&(a, b)| a != 5 && b != 5).collect::<Vec<_>>());
    sim.run_for(Duration::from_secs(5));
    (fingerprint(&sim), sim.delivered)
}

#[test]
fn same_seeds_same_run() {
    let (a, da) = run(3);
    let (b, db) = run(3);
    assert_eq!(da, db);
    assert!(a == b, "two runs with the same seeds differ");
    // The fingerprint does tell runs apart.
    let (c, _) = run(4);
    assert!(a != c);
}

#[test]
fn timers_end_with_the_lookups() {
    let config = NodeConfig { query_timeout: Duration::from_millis(300), ..NodeConfig::default() };
    let mut sim = Sim::new(30, config, 11);
    sim.join(10);
    // A third of the nodes die: lookups meet timeouts.
    for i in (3..30).step_by(3) {
        sim.dead[i] = true;
    }
    let mut rng = 99u64;
    let mut aborted = Vec::new();
    for round in 0..20 {
        let mut started: Vec<(usize, u32)> = (0..15)
            .map(|_| {
                let a = 1 + 3 * (mix(&mut rng) % 9) as usize + (mix(&mut rng) % 2) as usize;
                let target = random_id(&mut rng);
                (a, sim.call(a, |node, now| node.start_lookup(target, LookupOptions::default(), now)).expect("a lookup slot"))
            })
            .collect();
        // Some are given up at once: they never end.
        for (a, l) in started.split_off(12) {
            sim.nodes[a].abort_lookup(l);
            aborted.push((a, l));
        }
        sim.finish(&started, Duration::from_secs(30));
        for &(a, l) in &started {
            assert!(sim.nodes[a].take_lookup(l).is_some(), "round {round}");
        }
        for (i, node) in sim.nodes.iter().enumerate() {
            assert!(node.pending_requests() <= 64, "node {i}: {} requests in flight", node.pending_requests());
        }
    }
    // Every request answered or timed out: no lookup, no request, no timer left.
    sim.run_for(Duration::from_secs(10));
    for (i, node) in sim.nodes.iter_mut().enumerate() {
        assert_eq!(node.lookups(), 0, "node {i}");
        assert_eq!(node.pending_requests(), 0, "node {i}");
        assert_eq!(node.poll_timeout(), None, "node {i}");
    }
    assert!(aborted.iter().all(|x| !sim.done.contains(x)), "an aborted lookup ended");
    let timeouts: u64 = sim.nodes.iter().map(|n| n.counters()[Counter::request_timeouts as usize]).sum();
    assert!(timeouts > 0, "the dead nodes caused no timeout");
}

#[test]
fn a_dead_target_is_not_found_and_the_lookups_end() {
    let mut sim = Sim::new(30, NodeConfig::default(), 21);
    sim.join(10);
    sim.dead[7] = true;
    let target = sim.id(7);
    let started: Vec<(usize, u32)> = [1, 12, 25].iter().map(|&a| (a, sim.call(a, |node, now| node.start_lookup(target, find_peer(), now)).expect("a lookup"))).collect();
    sim.finish(&started, Duration::from_secs(30));
    for &(a, l) in &started {
        let outcome = sim.nodes[a].take_lookup(l).expect("an outcome");
        assert!(!outcome.verified, "node {a} verified a dead node");
        // Others still name it: the first address claimed, unverified.
        assert!(outcome.found.is_none_or(|f| f.id() == target));
        let c = sim.nodes[a].counters();
        assert_eq!(c[Counter::lookups_found as usize], 0);
        assert_eq!(c[Counter::lookups_found_unverified as usize] + c[Counter::lookups_not_found as usize], 1);
    }
}

#[test]
fn lookups_end_and_find_through_a_lossy_network() {
    let mut sim = Sim::new(40, NodeConfig::default(), 31);
    sim.join(10);
    // One datagram in ten lost: every lookup still ends, most find their target.
    sim.loss = 100;
    let pairs = pairs(40, 30, 5);
    let started: Vec<(usize, u32)> = pairs.iter().map(|&(a, b)| {
        let t = sim.id(b);
        (a, sim.call(a, |node, now| node.start_lookup(t, find_peer(), now)).expect("a lookup"))
    }).collect();
    sim.finish(&started, Duration::from_secs(60));
    let mut verified = 0;
    for (&(_, b), &(a, l)) in pairs.iter().zip(&started) {
        let outcome = sim.nodes[a].take_lookup(l).expect("an outcome");
        let found = outcome.found.unwrap_or_else(|| panic!("node {a} did not find node {b}"));
        assert_eq!(found.id(), sim.id(b));
        verified += usize::from(outcome.verified);
    }
    // A claimed address is asked once: a lost FIND_NODE or NODES leaves the claim unverified
    // (about one in five here).
    assert!(verified >= 20, "{verified} of 30 verified");
    assert!(sim.lost > 0);
}

/// Each node's peers by handle as its table holds them.
fn handles(sim: &Sim, i: usize) -> HashMap<u32, [u8; 32]> {
    sim.nodes[i].table.iter().map(|e| (e.value.handle, e.id)).collect()
}

#[test]
fn peer_events_follow_the_table() {
    let config = NodeConfig { k: 4, max_failures: 1, ping_interval: Duration::ZERO, query_timeout: Duration::from_millis(300), ..NodeConfig::default() };
    let mut sim = Sim::new(40, config, 41);
    for node in &mut sim.nodes {
        node.set_peer_events(true);
    }
    sim.join(10);
    // Nodes die: failed queries and eviction pings remove them, replacements come in.
    for i in (2..40).step_by(4) {
        sim.dead[i] = true;
    }
    let live: Vec<usize> = (0..40).filter(|&i| !sim.dead[i]).collect();
    let mut rng = 17u64;
    for _ in 0..5 {
        let started: Vec<(usize, u32)> = (0..20)
            .map(|_| {
                let a = live[(mix(&mut rng) % live.len() as u64) as usize];
                let t = sim.id((mix(&mut rng) % 40) as usize);
                (a, sim.call(a, |node, now| node.start_lookup(t, LookupOptions::default(), now)).expect("a lookup"))
            })
            .collect();
        sim.finish(&started, Duration::from_secs(30));
    }
    sim.run_for(Duration::from_secs(5));
    let removed: u64 = sim.nodes.iter().map(|n| n.counters()[Counter::peers_removed as usize]).sum();
    assert!(removed > 0, "nobody left a table");
    for i in 0..40 {
        assert_eq!(sim.peers[i], handles(&sim, i), "node {i}: the events do not tell its table");
    }
}

#[test]
fn only_approved_peers_enter() {
    let config = NodeConfig { approve: true, ..NodeConfig::default() };
    let mut sim = Sim::new(20, config, 51);
    // Ids with an even first byte are refused.
    sim.approve = Some(|id| id[0] % 2 == 1);
    for node in &mut sim.nodes {
        node.set_peer_events(true);
    }
    sim.join(5);
    sim.run_for(Duration::from_secs(5));
    let asked = sim.events.iter().filter(|(_, e)| matches!(e, Event::Approve { .. })).count();
    assert!(asked > 0);
    let refused = (0..20).filter(|&i| sim.id(i)[0].is_multiple_of(2)).count();
    assert!(refused > 0 && refused < 20);
    for i in 0..20 {
        assert!(sim.nodes[i].table.iter().all(|e| e.id[0] % 2 == 1), "node {i} holds a refused peer");
        assert_eq!(sim.peers[i], handles(&sim, i));
    }
    let entered = (0..20).filter(|&i| sim.id(i)[0] % 2 == 1).filter(|&i| (0..20).any(|j| sim.nodes[j].table.contains(&sim.id(i)))).count();
    assert_eq!(entered, 20 - refused, "an approved node entered no table");
}

#[test]
fn a_bucket_refresh_ends_once_the_bucket_fills() {
    let mut sim = Sim::new(40, NodeConfig::default(), 61);
    sim.join(10);
    // A node and a bucket of its with room, and a node for that bucket it does not know.
    let (a, b) = (1..40)
        .find_map(|a| {
            let t = &sim.nodes[a].table;
            (0..40).filter(|&j| j != a && !t.contains(&sim.id(j))).map(|j| t.bucket_index(&sim.id(j)).expect("another id")).find(|&b| t.bucket(b).len() < 20).map(|b| (a, b))
        })
        .expect("a node missing from a bucket with room");
    let fill = sim.nodes[a].table.bucket(b).len() + 1;
    let target = sim.nodes[a].table.random_id_in_bucket(b, &[0x5a; 32]);
    let opts = LookupOptions { enough: Enough::BucketFill { bucket: b, fill }, ..LookupOptions::default() };
    let l = sim.call(a, |node, now| node.start_lookup(target, opts, now)).expect("a lookup");
    sim.finish(&[(a, l)], Duration::from_secs(30));
    let outcome = sim.nodes[a].take_lookup(l).expect("an outcome");
    assert!(outcome.ended_early);
    assert!(sim.nodes[a].table.bucket(b).len() >= fill);
    assert_eq!(sim.nodes[a].counters()[Counter::lookups_ended_early as usize], 1);
}

/// Nodes closer to node `a` than its k-th closest entry that its table lacks, and that entry.
fn missing_near(sim: &Sim, a: usize) -> (usize, [u8; 32]) {
    let own = sim.id(a);
    let kth = sim.nodes[a].table.closest(&own, 20).last().expect("a table").id;
    let missing = (0..sim.nodes.len()).filter(|&j| j != a && !sim.nodes[a].table.contains(&sim.id(j)) && distance(&sim.id(j), &own) < distance(&kth, &own)).count();
    (missing, kth)
}

#[test]
fn a_settling_self_lookup_ends_after_alpha_answers_without_news() {
    let mut sim = Sim::new(40, NodeConfig::default(), 71);
    sim.join(10);
    sim.run_for(Duration::from_secs(5));
    let mut lacking = 0;
    for a in [3, 17, 39] {
        let own = sim.id(a);
        let settle = |sim: &mut Sim| {
            let (missing, kth) = missing_near(sim, a);
            let opts = LookupOptions { enough: Enough::Settle { kth }, ..LookupOptions::default() };
            let l = sim.call(a, |node, now| node.start_lookup(own, opts, now)).expect("a lookup");
            sim.finish(&[(a, l)], Duration::from_secs(30));
            (missing, sim.nodes[a].take_lookup(l).expect("an outcome"))
        };
        // Nodes nearer than the k-th missing (an early joiner): the answers name them, it goes on.
        let (missing, outcome) = settle(&mut sim);
        assert_eq!(outcome.ended_early, missing == 0, "node {a}: {missing} missing");
        lacking += usize::from(missing > 0);
        // Settled: the next one ends after alpha answers.
        let (missing, outcome) = settle(&mut sim);
        assert_eq!(missing, 0, "node {a}");
        assert!(outcome.ended_early, "node {a}");
        assert!(outcome.stats.successes >= 3 && outcome.stats.queries < 10, "node {a}: {:?}", outcome.stats);
    }
    assert!(lacking > 0);
}
