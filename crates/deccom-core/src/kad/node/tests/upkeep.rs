//! The node's own upkeep: the join through bootstrap addresses, its retries, the refresh at join,
//! the settling self-lookup and the periodic refresh.

use std::net::SocketAddr;
use std::time::Duration;

use super::network::{find_all, pairs};
use super::{addr, Sim};
use crate::kad::node::{Counter, Event, NodeConfig, UpkeepConfig};

fn config(bootstrap: Vec<SocketAddr>) -> UpkeepConfig {
    UpkeepConfig {
        bootstrap,
        retries: 2,
        join_refresh_delay: Duration::from_millis(500),
        settle: Duration::from_secs(10),
        refresh_interval: Duration::from_secs(600),
    }
}

fn count(sim: &Sim, i: usize, c: Counter) -> u64 {
    sim.nodes[i].counters()[c as usize]
}

/// The join events of node `i`, in order: (kind, n) with kind 0 joined (n: bootstrapped), 1 a
/// retry follows (n: its attempt), 2 failed (n: attempts).
fn joins(sim: &Sim, i: usize) -> Vec<(u8, u32)> {
    sim.events
        .iter()
        .filter(|(n, _)| *n == i)
        .filter_map(|(_, e)| match e {
            Event::Joined { bootstrapped } => Some((0, u32::from(*bootstrapped))),
            Event::JoinRetry { attempt } => Some((1, *attempt)),
            Event::JoinFailed { attempts } => Some((2, *attempts)),
            _ => None,
        })
        .collect()
}

#[test]
fn nodes_join_refresh_and_settle_by_themselves() {
    let n = 80;
    let mut sim = Sim::new(n, NodeConfig::default(), 7);
    // Node 0 has no bootstrap address but its own: it starts the network.
    sim.call(0, |node, now| node.start_upkeep(config(vec![addr(0)]), now));
    assert_eq!(joins(&sim, 0), vec![(0, 0)], "node 0 joined at once, with nobody to ask");
    for batch in (1..n).collect::<Vec<_>>().chunks(20) {
        for &i in batch {
            sim.call(i, |node, now| node.start_upkeep(config(vec![addr(0)]), now));
        }
        sim.run_for(Duration::from_secs(2));
    }
    sim.run_for(Duration::from_secs(30));
    assert!(sim.done.is_empty(), "the upkeep's lookups end without a LookupDone event: {:?}", sim.done);
    for i in 1..n {
        assert_eq!(joins(&sim, i), vec![(0, 1)], "node {i} joined once, through node 0");
        assert_eq!(count(&sim, i, Counter::joined), 1);
        assert_eq!(count(&sim, i, Counter::bootstrap_attempts), 1);
        assert_eq!(count(&sim, i, Counter::settle_lookups), 1, "node {i}: one settling self-lookup");
        assert_eq!(count(&sim, i, Counter::self_lookups), 0, "node {i}: no periodic refresh yet");
        assert_eq!(sim.nodes[i].lookups(), 0, "node {i}: no lookup left running");
    }
    let refreshes: u64 = (1..n).map(|i| count(&sim, i, Counter::refresh_lookups)).sum();
    assert!(refreshes > 0, "the refresh at join looked up some buckets");
    // The early joiners met the later ones: every node finds every other.
    find_all(&mut sim, &pairs(n, 200, 3));

    // The periodic refresh: one self-lookup each, after refresh_interval, and then again.
    sim.run_for(Duration::from_secs(600));
    for i in 0..n {
        assert_eq!(count(&sim, i, Counter::self_lookups), 1, "node {i}: one periodic refresh in 600 s");
    }
    sim.run_for(Duration::from_secs(600));
    for i in 0..n {
        assert_eq!(count(&sim, i, Counter::self_lookups), 2, "node {i}: two periodic refreshes in 1,200 s");
        assert_eq!(sim.nodes[i].lookups(), 0);
    }
    assert_eq!(sim.done.len(), 200, "only the 200 findPeer lookups ended with an event");
}

#[test]
fn a_join_nobody_answers_is_retried_then_fails_and_the_refresh_tries_again() {
    let mut sim = Sim::new(2, NodeConfig::default(), 9);
    sim.dead[1] = true;
    let mut c = config(vec![addr(1)]);
    c.refresh_interval = Duration::from_secs(60);
    sim.call(0, |node, now| node.start_upkeep(c, now));
    let t0 = sim.now;
    // A FIND_NODE times out after 2 s; retries after 1 s, then 2 s.
    sim.run_until(Duration::from_secs(30), |s| joins(s, 0).len() == 3);
    assert_eq!(joins(&sim, 0), vec![(1, 1), (1, 2), (2, 3)]);
    assert_eq!(sim.now - t0, Duration::from_secs(2 + 1 + 2 + 2 + 2), "three attempts of 2 s, pauses of 1 s and 2 s");
    assert_eq!(count(&sim, 0, Counter::bootstrap_attempts), 3);
    assert_eq!(count(&sim, 0, Counter::bootstrap_retries), 2);
    assert_eq!(count(&sim, 0, Counter::bootstrap_failed), 1);
    assert_eq!(count(&sim, 0, Counter::joined), 0);
    // The table is empty: the periodic refresh (60 s after the start) tries again, and now node 1
    // answers.
    sim.dead[1] = false;
    sim.call(1, |node, now| node.start_upkeep(config(vec![]), now));
    sim.run_until(Duration::from_secs(120), |s| joins(s, 0).len() == 4);
    assert_eq!(joins(&sim, 0)[3], (0, 1), "joined through node 1 at the periodic refresh");
    assert!(sim.now - t0 >= Duration::from_secs(60));
    assert_eq!(count(&sim, 0, Counter::bootstrap_attempts), 4);
    assert!(sim.done.is_empty());
}

#[test]
fn a_stopped_node_keeps_no_timer() {
    let mut sim = Sim::new(2, NodeConfig::default(), 11);
    sim.call(0, |node, now| node.start_upkeep(config(vec![]), now));
    assert!(sim.nodes[0].poll_timeout().is_some(), "the periodic refresh is armed");
    sim.nodes[0].clear();
    assert_eq!(sim.nodes[0].poll_timeout(), None);
}

#[test]
fn settings_beyond_any_wait_do_not_overflow_the_clock() {
    let config = NodeConfig { query_timeout: Duration::MAX, min_patience: Duration::MAX, ping_interval: Duration::MAX, ..NodeConfig::default() };
    let mut sim = Sim::new(2, config, 13);
    sim.dead[1] = true;
    let upkeep = UpkeepConfig { bootstrap: vec![addr(1)], retries: 40, join_refresh_delay: Duration::MAX, settle: Duration::MAX, refresh_interval: Duration::MAX };
    sim.call(0, |node, now| node.start_upkeep(upkeep, now));
    let first = sim.nodes[0].poll_timeout().expect("the bootstrap query's timeout");
    assert!(first > sim.now, "a deadline far ahead: {:?}", first - sim.now);
    // Its timers fire one after the other (the query fails, the retry waits), none past the clock.
    for _ in 0..3 {
        let at = sim.nodes[0].poll_timeout().expect("a timer");
        sim.now = at;
        sim.nodes[0].handle_timeout(at);
        sim.flush(0, None);
    }
    assert!(count(&sim, 0, Counter::bootstrap_retries) >= 1);
}
