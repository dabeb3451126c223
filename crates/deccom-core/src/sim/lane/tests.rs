//! The lane in virtual time: a scripted node for the rules (order, limits, timers, what goes back
//! to the caller), and a swarm of Kademlia nodes that join through it.

use std::net::SocketAddr;

use super::{Lane, Stop};
use crate::kad::node::FRAME_HEADER;
use crate::sim::testing::{addr, join_swarm, script, Kad, Script, TAG};

#[test]
fn datagrams_arrive_in_order_and_answers_go_to_the_source() {
    let mut lane: Lane<Script> = Lane::new(10.0, 0.0, 1, 1000);
    let a = lane.attach(addr(1), TAG, script(-1.0)).unwrap();
    let b = lane.attach(addr(2), TAG, Script { reply: Some(None), deadline: -1.0, ..Script::default() }).unwrap();
    assert!(lane.attach(addr(2), TAG, script(-1.0)).is_none(), "one node per address");
    lane.node(a).unwrap().frame(Some(addr(2)), b"one");
    lane.node(a).unwrap().frame(Some(addr(2)), b"two");
    assert!(!lane.kick(a));
    assert_eq!(lane.seq, 2);
    assert_eq!(lane.head(), Some((10.0, 0)));
    let (n, stop) = lane.run(f64::INFINITY, u64::MAX, f64::INFINITY, 100);
    assert_eq!((n, stop), (4, Stop::Idle));
    let got = &lane.node(b).unwrap().got;
    assert_eq!(got.iter().map(|g| g.1.clone()).collect::<Vec<_>>(), vec![b"one".to_vec(), b"two".to_vec()]);
    assert_eq!(got[0].0, addr(1));
    // b answered each to its source: a got both answers 10 ms later.
    let got = &lane.node(a).unwrap().got;
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|g| g.0 == addr(2) && g.1 == b"re" && g.2 == 20.0));
    let s = lane.stats();
    assert_eq!((s.events, s.sent, s.delivered, s.bytes_sent), (4, 4, 4, 2 * (1 + 3) + 2 * (1 + 2)));
    assert_eq!(lane.counters(b).unwrap().received, 2);
    assert_eq!(lane.counters(b).unwrap().sent, 2);
    assert_eq!(lane.pending(), 0);
}

#[test]
fn the_limit_the_deadline_and_the_budget_stop_a_run() {
    let mut lane: Lane<Script> = Lane::new(10.0, 0.0, 1, 1000);
    let a = lane.attach(addr(1), TAG, script(-1.0)).unwrap();
    lane.attach(addr(2), TAG, script(-1.0)).unwrap();
    for _ in 0..3 {
        lane.node(a).unwrap().frame(Some(addr(2)), b"x");
    }
    lane.kick(a);
    // The caller's next event is (10, 1): only seq 0 runs before it.
    assert_eq!(lane.run(10.0, 1, f64::INFINITY, 100), (1, Stop::Idle));
    assert_eq!(lane.run(10.0, 2, 9.0, 100), (0, Stop::Idle), "the deadline is before the head");
    assert_eq!(lane.run(f64::INFINITY, u64::MAX, 10.0, 1), (1, Stop::Idle), "the budget");
    assert_eq!(lane.run(f64::INFINITY, u64::MAX, 10.0, 5), (1, Stop::Idle));
    assert_eq!(lane.head(), None);
}

#[test]
fn other_addresses_other_tags_and_events_go_back_to_the_caller() {
    let mut lane: Lane<Script> = Lane::new(5.0, 0.0, 1, 1000);
    let a = lane.attach(addr(1), TAG, script(-1.0)).unwrap();
    let b = lane.attach(addr(2), TAG, Script { events: true, deadline: -1.0, ..Script::default() }).unwrap();
    lane.node(a).unwrap().frame(Some(addr(9)), b"away");
    lane.node(a).unwrap().frame(Some(addr(1)), b"self");
    lane.node(a).unwrap().frame(Some(addr(2)), b"hi");
    lane.kick(a);
    assert_eq!(lane.counters(a).unwrap().dropped_self, 1, "a frame to its own address is dropped");
    let (n, stop) = lane.run(f64::INFINITY, u64::MAX, f64::INFINITY, 100);
    assert_eq!(n, 1);
    assert_eq!(stop, Stop::Deliver { from: addr(1), to: addr(9), bytes: [&[TAG][..], b"away"].concat() });
    assert_eq!(lane.run(f64::INFINITY, u64::MAX, f64::INFINITY, 100), (1, Stop::Events(b)));
    // A datagram with another tag: the caller's.
    lane.detach(b);
    lane.node(a).unwrap().frame(Some(addr(2)), b"gone");
    lane.kick(a);
    let (_, stop) = lane.run(f64::INFINITY, u64::MAX, f64::INFINITY, 100);
    assert!(matches!(stop, Stop::Deliver { to, .. } if to == addr(2)), "a detached node's datagrams go to the caller");
}

#[test]
fn a_timer_rearmed_earlier_leaves_a_stale_one_that_never_runs() {
    let mut lane: Lane<Script> = Lane::new(5.0, 0.0, 1, 1000);
    let a = lane.attach(addr(1), TAG, script(-1.0)).unwrap();
    lane.arm(a, 100.0, 0.0);
    lane.arm(a, 200.0, 0.0); // later: ignored
    assert_eq!(lane.pending(), 1);
    lane.arm(a, 50.0, 0.0);
    assert_eq!(lane.pending(), 1, "the one at 100 is stale");
    let (n, stop) = lane.run(f64::INFINITY, u64::MAX, f64::INFINITY, 100);
    assert_eq!((n, stop), (1, Stop::Idle));
    assert_eq!(lane.node(a).unwrap().timers, vec![50.0]);
    assert_eq!(lane.stats().timers_fired, 1);
    assert_eq!(lane.head(), None);
    // No timer for a deadline that is not a number.
    lane.arm(a, f64::NAN, 0.0);
    lane.adopt(a, f64::INFINITY, 1.0, None);
    assert_eq!((lane.pending(), lane.head()), (0, None));
    // A deadline in the past runs now; a detached node's timer never runs.
    lane.arm(a, 10.0, 60.0);
    assert_eq!(lane.head().unwrap().0, 60.0);
    lane.detach(a);
    assert_eq!(lane.pending(), 0);
    assert_eq!(lane.run(f64::INFINITY, u64::MAX, f64::INFINITY, 100), (0, Stop::Idle));
}

#[test]
fn stale_timers_far_ahead_do_not_pile_up_in_the_heap() {
    let mut lane: Lane<Script> = Lane::new(5.0, 0.0, 1, 1000);
    let a = lane.attach(addr(1), TAG, script(-1.0)).unwrap();
    let b = lane.attach(addr(2), TAG, script(-1.0)).unwrap();
    lane.arm(b, 2e9, 0.0);
    // Node a is armed far ahead (a refresh) and then earlier (a request's timeout), 10,000 times:
    // each time the far timer goes stale.
    let mut now = 0.0;
    for _ in 0..10_000 {
        lane.arm(a, 1e9, now);
        lane.arm(a, now + 1.0, now);
        let (n, _) = lane.run(f64::INFINITY, u64::MAX, now + 1.0, 1);
        assert_eq!(n, 1);
        now = lane.now;
    }
    assert!(lane.queue.len() <= 2 * 1024 + 2, "the heap holds {} timers", lane.queue.len());
    assert_eq!(lane.node(a).unwrap().timers.len(), 10_000, "every near timer ran");
    // The live timers still run, in order.
    lane.arm(a, 1e9, now);
    let (n, _) = lane.run(f64::INFINITY, u64::MAX, f64::INFINITY, 100);
    assert_eq!(n, 2);
    assert_eq!(lane.node(a).unwrap().timers.last(), Some(&1e9));
    assert_eq!(lane.node(b).unwrap().timers, vec![2e9]);
    assert_eq!((lane.pending(), lane.head()), (0, None));
}

#[test]
fn links_are_seeded_per_pair_and_forgotten_at_the_bound() {
    let mut lane: Lane<Script> = Lane::new(10.0, 40.0, 77, 2);
    let first = lane.offer(addr(1), addr(2), 0.0);
    assert!((10.0..50.0).contains(&first));
    let other = lane.offer(addr(2), addr(1), 0.0);
    assert_ne!(first, other, "each direction has its own stream");
    assert_eq!(lane.links(), 2);
    let second = lane.offer(addr(1), addr(2), 0.0);
    assert_ne!(first, second, "the stream moves on");
    lane.offer(addr(1), addr(3), 0.0); // a third link: the two held are forgotten
    assert_eq!(lane.links(), 1);
    assert_eq!(lane.offer(addr(1), addr(2), 0.0), first, "a forgotten link starts afresh");
}

/// `n` Kademlia nodes join through node 0, 20 ms apart; returns the lane's counters, each node's
/// table size, and the joins' seeds.
fn swarm(n: u16, seed: u32) -> (super::LaneStats, Vec<usize>, Vec<u32>) {
    let mut lane: Lane<Kad> = Lane::new(10.0, 40.0, seed, 1 << 16);
    let (joins, _) = join_swarm(&mut lane, n, seed);
    let sizes = (0..u32::from(n)).map(|i| lane.node(i).unwrap().node.table.len()).collect();
    let seeds = joins.into_iter().map(|(k, id)| lane.node(k).unwrap().node.take_lookup(id).map_or(0, |o| o.seeds)).collect();
    (lane.stats(), sizes, seeds)
}

#[test]
fn a_kademlia_swarm_joins_through_the_lane_deterministically() {
    let (stats, sizes, seeds) = swarm(40, 5);
    assert!(seeds.iter().all(|&s| s > 0), "every join reached the bootstrap node: {seeds:?}");
    assert!(sizes.iter().all(|&s| s >= 20), "every table holds at least k entries: {sizes:?}");
    assert_eq!(stats.sent, stats.delivered, "every datagram was delivered");
    assert!(stats.timers_fired > 0);
    assert_eq!(swarm(40, 5), (stats, sizes, seeds), "one seed, one run");
    assert_ne!(swarm(40, 6).0, stats, "another seed, another run");
}

#[test]
fn frames_are_read_whole() {
    // A frame header announcing more bytes than there are ends the reading (never a panic).
    let mut lane: Lane<Script> = Lane::new(1.0, 0.0, 1, 10);
    let a = lane.attach(addr(1), TAG, script(-1.0)).unwrap();
    lane.node(a).unwrap().out.extend_from_slice(&[200, 0, 0]);
    lane.node(a).unwrap().out.extend_from_slice(&[0; FRAME_HEADER]);
    lane.kick(a);
    assert_eq!(lane.stats().sent, 0);
}

#[test]
fn a_link_seed_hashes_the_addresses_as_they_are_written() {
    // The caller seeds its links from the same text (`"<from>><to>"`): the hash of the written
    // addresses must match `Display`, IPv4 digit by digit, IPv6 through `fmt`.
    fn by_text(base: u32, text: &str) -> u32 {
        text.bytes().fold(base, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
    }
    let addrs: Vec<SocketAddr> = [
        "0.0.0.0:0",
        "10.0.0.1:4000",
        "255.255.255.255:65535",
        "1.20.199.9:9",
        "100.2.30.255:10000",
        "[::1]:4000",
        "[fe80::1%3]:7",
        "[::ffff:10.0.0.1]:80",
        "[2001:db8::5]:65535",
    ]
    .iter()
    .map(|a| a.parse().expect("an address"))
    .collect();
    for &from in &addrs {
        for &to in &addrs {
            for base in [0x811c_9dc5, 7] {
                assert_eq!(super::link_seed(base, from, to), by_text(base, &format!("{from}>{to}")), "{from}>{to}");
            }
        }
    }
}
