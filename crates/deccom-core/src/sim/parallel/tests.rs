//! The parallel lane in virtual time: windows and hand-backs with scripted nodes, and a swarm of
//! Kademlia nodes that runs the same on one, two and three threads.

use super::ParallelLane;
use crate::sim::testing::{addr, join_swarm, script, Kad, Script, TAG};
use crate::sim::{LaneStats, NodeCounters, Stop};

fn lane(threads: u32) -> ParallelLane<Script> {
    ParallelLane::new(10.0, 0.0, 1, threads).expect("a latency above 0")
}

#[test]
fn a_window_needs_a_latency() {
    assert!(ParallelLane::<Script>::new(0.0, 5.0, 1, 2).is_none());
    assert!(ParallelLane::<Script>::new(f64::NAN, 5.0, 1, 2).is_none());
    assert!(ParallelLane::<Script>::new(1.0, 5.0, 1, 0).is_none());
    assert!(ParallelLane::<Script>::new(1.0, 5.0, 1, super::MAX_THREADS + 1).is_none());
}

#[test]
fn datagrams_arrive_after_the_latency_and_answers_go_to_the_source() {
    for threads in [1, 2] {
        let mut lane = lane(threads);
        let a = lane.attach(addr(1), TAG, script(-1.0)).unwrap();
        let b = lane.attach(addr(2), TAG, Script { reply: Some(None), deadline: -1.0, ..Script::default() }).unwrap();
        assert!(lane.attach(addr(2), TAG, script(-1.0)).is_none(), "one node per address");
        lane.node(a).unwrap().frame(Some(addr(2)), b"one");
        lane.node(a).unwrap().frame(Some(addr(2)), b"two");
        assert!(!lane.kick(a));
        assert_eq!(lane.head(), Some((10.0, u64::MAX)));
        assert_eq!(lane.run(f64::INFINITY, f64::INFINITY, 100), (4, Stop::Idle));
        let got = &lane.node(b).unwrap().got;
        assert_eq!(got.iter().map(|g| (g.0, g.1.clone(), g.2)).collect::<Vec<_>>(), vec![(addr(1), b"one".to_vec(), 10.0), (addr(1), b"two".to_vec(), 10.0)]);
        let got = &lane.node(a).unwrap().got;
        assert!(got.len() == 2 && got.iter().all(|g| g.0 == addr(2) && g.1 == b"re" && g.2 == 20.0), "{got:?}");
        let s = lane.stats();
        assert_eq!((s.events, s.sent, s.delivered, s.bytes_sent), (4, 4, 4, 2 * (1 + 3) + 2 * (1 + 2)));
        assert_eq!(lane.counters(b).unwrap(), NodeCounters { sent: 2, received: 2, dropped_self: 0 });
        assert_eq!((lane.pending(), lane.head()), (0, None));
    }
}

#[test]
fn events_wait_for_the_end_of_their_window() {
    let mut lane = lane(2);
    let a = lane.attach(addr(1), TAG, script(-1.0)).unwrap();
    let b = lane.attach(addr(2), TAG, Script { events: true, deadline: -1.0, ..Script::default() }).unwrap();
    lane.node(a).unwrap().frame(Some(addr(2)), b"x");
    lane.kick(a);
    // b gets the datagram at 10 and then has events; a's timer at 15 is in the same window
    // [10, 20): it runs before the events are handed back, at the window's last event.
    lane.arm(a, 15.0, 0.0);
    assert_eq!(lane.run(f64::INFINITY, f64::INFINITY, 100), (2, Stop::Events(b)));
    assert_eq!(lane.node(a).unwrap().timers, vec![15.0]);
    assert_eq!(lane.now, 15.0);
    assert_eq!(lane.head(), None, "nothing waits");
}

#[test]
fn a_datagram_to_no_node_ends_the_window_at_its_arrival() {
    let mut lane = lane(2);
    let a = lane.attach(addr(1), TAG, script(-1.0)).unwrap();
    lane.attach(addr(2), 9, script(-1.0)).unwrap();
    lane.node(a).unwrap().frame(Some(addr(9)), b"away");
    lane.node(a).unwrap().frame(Some(addr(1)), b"self");
    lane.node(a).unwrap().frame(Some(addr(2)), b"other tag");
    lane.kick(a);
    assert_eq!(lane.counters(a).unwrap().dropped_self, 1, "a frame to its own address is dropped");
    lane.arm(a, 5.0, 0.0);
    // The timer at 5 runs; the window ends at 10, where the two datagrams arrive: handed back at
    // their own time, before the timer at 12 (armed at 5).
    assert_eq!(lane.run(f64::INFINITY, 5.0, 100), (1, Stop::Idle));
    lane.arm(a, 12.0, 5.0);
    let (n, stop) = lane.run(f64::INFINITY, f64::INFINITY, 100);
    assert_eq!((n, &stop), (1, &Stop::Deliver { from: addr(1), to: addr(9), bytes: [&[TAG][..], b"away"].concat() }));
    assert_eq!(lane.now, 10.0);
    assert_eq!(lane.node(a).unwrap().timers, vec![5.0]);
    let (n, stop) = lane.run(f64::INFINITY, f64::INFINITY, 100);
    assert!(n == 1 && matches!(stop, Stop::Deliver { to, .. } if to == addr(2)), "another tag goes to the caller");
    assert_eq!(lane.run(f64::INFINITY, f64::INFINITY, 100), (1, Stop::Idle));
    assert_eq!(lane.node(a).unwrap().timers, vec![5.0, 12.0]);
}

#[test]
fn the_limit_the_deadline_and_the_budget_stop_a_run() {
    let mut lane = lane(2);
    let a = lane.attach(addr(1), TAG, script(-1.0)).unwrap();
    let b = lane.attach(addr(2), TAG, script(-1.0)).unwrap();
    lane.node(a).unwrap().frame(Some(addr(2)), b"x");
    lane.kick(a);
    lane.arm(b, 30.0, 0.0);
    // The caller's event at 10 comes first: nothing before it.
    assert_eq!(lane.run(10.0, f64::INFINITY, 100), (0, Stop::Idle));
    assert_eq!(lane.run(f64::INFINITY, 9.0, 100), (0, Stop::Idle), "the deadline is before the head");
    assert_eq!(lane.run(f64::INFINITY, 10.0, 100), (1, Stop::Idle), "the deadline is inclusive");
    assert_eq!(lane.node(b).unwrap().got.len(), 1);
    assert_eq!(lane.run(f64::INFINITY, f64::INFINITY, 0), (0, Stop::Idle), "no budget");
    assert_eq!(lane.run(f64::INFINITY, f64::INFINITY, 1), (1, Stop::Idle));
    assert_eq!(lane.node(b).unwrap().timers, vec![30.0]);
}

#[test]
fn a_detached_nodes_datagrams_and_timer() {
    let mut lane = lane(2);
    let a = lane.attach(addr(1), TAG, script(-1.0)).unwrap();
    let b = lane.attach(addr(2), TAG, script(-1.0)).unwrap();
    lane.node(a).unwrap().frame(Some(addr(2)), b"gone");
    lane.kick(a);
    lane.arm(b, 5.0, 0.0);
    assert_eq!(lane.pending(), 2);
    let (node, counters) = lane.detach(b).unwrap();
    assert!(node.got.is_empty() && counters == NodeCounters::default());
    assert_eq!(lane.pending(), 1, "its timer is dropped");
    let (n, stop) = lane.run(f64::INFINITY, f64::INFINITY, 100);
    assert!(n == 1 && matches!(stop, Stop::Deliver { to, .. } if to == addr(2)), "a detached node's datagrams go to the caller");
    assert!(lane.node(b).is_none());
    assert_eq!(lane.attach(addr(2), TAG, script(-1.0)), Some(2), "indices are not reused");
}

#[test]
fn a_timer_rearmed_earlier_leaves_a_stale_one_that_never_runs() {
    let mut lane = lane(2);
    let a = lane.attach(addr(1), TAG, script(-1.0)).unwrap();
    lane.arm(a, 100.0, 0.0);
    lane.arm(a, 200.0, 0.0); // later: ignored
    lane.arm(a, 50.0, 0.0);
    assert_eq!(lane.pending(), 1, "the one at 100 is stale");
    assert_eq!(lane.run(f64::INFINITY, f64::INFINITY, 100), (1, Stop::Idle));
    assert_eq!(lane.node(a).unwrap().timers, vec![50.0]);
    lane.adopt(a, 70.0, 80.0);
    assert_eq!(lane.head(), Some((80.0, u64::MAX)), "an adopted timer runs at the caller's time");
    lane.adopt(a, f64::INFINITY, 1.0);
    assert_eq!(lane.pending(), 1, "no timer for an infinite deadline");
}

#[test]
fn the_callers_datagrams_join_the_lane() {
    let mut lane = lane(2);
    let b = lane.attach(addr(2), TAG, script(-1.0)).unwrap();
    lane.transmit(addr(7), addr(2), &[TAG, 1, 2], 0.0);
    lane.transmit(addr(7), addr(8), &[TAG, 3], 0.0);
    assert_eq!(lane.run(f64::INFINITY, f64::INFINITY, 100), (1, Stop::Deliver { from: addr(7), to: addr(8), bytes: vec![TAG, 3] }));
    assert_eq!(lane.run(f64::INFINITY, f64::INFINITY, 100), (1, Stop::Idle));
    assert_eq!(lane.node(b).unwrap().got, vec![(addr(7), vec![1, 2], 10.0)]);
}

/// `n` Kademlia nodes on `threads` threads join through node 0, 20 ms apart; returns the lane's
/// counters, each node's table size and counters, and the events handed back.
fn swarm(n: u16, seed: u32, threads: u32) -> (LaneStats, Vec<usize>, Vec<NodeCounters>, usize) {
    let mut lane: ParallelLane<Kad> = ParallelLane::new(10.0, 40.0, seed, threads).unwrap();
    let (_, handed) = join_swarm(&mut lane, n, seed);
    let sizes = (0..u32::from(n)).map(|i| lane.node(i).unwrap().node.table.len()).collect();
    let counters = (0..u32::from(n)).map(|i| lane.counters(i).unwrap()).collect();
    (lane.stats(), sizes, counters, handed)
}

#[test]
fn a_kademlia_swarm_runs_the_same_on_any_number_of_threads() {
    let one = swarm(60, 5, 1);
    let (stats, sizes, counters, handed) = &one;
    assert!(sizes.iter().all(|&s| s >= 20), "every table holds at least k entries: {sizes:?}");
    assert_eq!(stats.sent, stats.delivered, "every datagram was delivered");
    assert!(stats.timers_fired > 0 && *handed > 0);
    assert!(counters.iter().all(|c| c.received > 0));
    assert_eq!(swarm(60, 5, 2), one, "two threads, the same run");
    assert_eq!(swarm(60, 5, 3), one, "three threads, the same run");
    assert_eq!(swarm(60, 5, 2), one, "one seed, one run");
    assert_ne!(swarm(60, 6, 2).0, *stats, "another seed, another run");
}
