//! Reliable UDP in virtual time: many large messages started at once against a receiver whose
//! reassembly budget binds, under loss. The receiver refuses most of them *busy* at first; each
//! must still arrive once memory frees up, and none may fail with `FailReason::Busy` while the
//! receiver takes the messages it holds memory for.

use std::time::Duration;

use deccom_core::rudp::{Config, FailReason};

mod rudp_net;
use rudp_net::*;

/// `count` sizes log-uniform in 1 B ..= `max` (xorshift64 from `seed`).
fn sizes(count: usize, max: usize, mut seed: u64) -> Vec<usize> {
    (0..count)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let r = (seed >> 11) as f64 / (1u64 << 53) as f64;
            ((max as f64).powf(r) as usize).clamp(1, max)
        })
        .collect()
}

/// 200 messages of 1 B – 4 MiB sent at once in 16,000-byte segments (as to a loopback
/// address) over a link with 20 % loss, 5 % duplication and 5 % reordering in both directions;
/// the receiver may hold `budget` bytes of reassembly memory for the sender.
fn many_at_once(seed: u64, budget: usize) -> Net {
    let config = Config {
        max_segment_payload: 16_000,
        max_reassembly_per_peer: budget,
        peer_timeout: Duration::from_secs(3),
        ..Config::default()
    };
    let link = Link {
        latency: Duration::from_micros(100),
        loss: 0.2,
        duplicate: 0.05,
        reorder: 0.05,
        reorder_delay: 20 * MS,
        ..Link::default()
    };
    let mut net = Net::pair(config, seed, link);
    let mut expect = Vec::new();
    for (i, n) in sizes(200, 4 << 20, seed * 7919 + 1).into_iter().enumerate() {
        let m = message(i as u64, n);
        expect.push(m.clone());
        net.send(0, 1, m);
    }
    let finished = |n: &Net| n.count(0, |e| matches!(e, Ev::Sent { .. } | Ev::Failed { .. })) == 200;
    assert!(net.run_until(Duration::from_secs(120), finished), "seed {seed}: not finished");
    let busy = net.count(0, |e| matches!(e, Ev::Failed { reason: FailReason::Busy, .. }));
    let failed = net.count(0, |e| matches!(e, Ev::Failed { .. }));
    assert_eq!(
        (failed, busy),
        (0, 0),
        "seed {seed}: {failed} failed ({busy} busy) after {:?}; sender {:?}; receiver {:?}",
        net.elapsed(),
        net.nodes[0].stats(),
        net.nodes[1].stats()
    );
    assert_eq!(sorted(net.delivered(1)), sorted(expect), "seed {seed}");
    assert!(net.max_reassembly_seen[1] <= budget, "seed {seed}: {}", net.max_reassembly_seen[1]);
    assert_eq!(net.nodes[1].reassembly_bytes(), 0, "seed {seed}");
    net
}

#[test]
fn many_large_messages_at_once_under_loss_all_arrive_when_the_budget_binds() {
    // Twice the largest message: the budget binds most of the time, and every message fits alone.
    // Before refusals reset the probe-timeout backoff, these seeds ended with 40-100 messages
    // failed as busy (in most runs: where reservations ahead end depends on buffer addresses):
    // the window had collapsed to 2 datagrams, a couple per probe timeout (backed off towards
    // max_rto) went out, to refused messages, and the messages the receiver had reserved memory
    // for were never sent another segment.
    for seed in 1..=3 {
        let net = many_at_once(seed, 8 << 20);
        assert!(net.nodes[1].stats().dropped_reassembly_full > 0, "seed {seed}: the budget never bound");
        // Waiting messages are retried as soon as another completes, not after their backoff.
        assert!(net.elapsed() < Duration::from_secs(10), "seed {seed}: {:?}", net.elapsed());
    }
}

#[test]
fn messages_open_at_once_can_all_complete_within_the_share() {
    // Two 3 MiB messages at once to a receiver whose share is 6 MiB: their lengths fit, their
    // full charges (the data plus a page of bookkeeping per 64 KiB region) do not. Sent in
    // turns, both could be nearly complete when the share runs out, and neither could finish.
    // The second is admitted only once the first completed.
    let budget = 6 << 20;
    let config = Config {
        max_segment_payload: 16_000,
        max_reassembly_per_peer: budget,
        peer_timeout: Duration::from_secs(3),
        ..Config::default()
    };
    let mut net = Net::pair(config, 5, Link::default());
    // A first exchange proves the sender's epoch (an unproven peer's first flight is bounded
    // by the small unproven share instead).
    let hello = message(0, 10);
    net.send(0, 1, hello.clone());
    assert!(net.run_until(Duration::from_secs(1), |n| n.count(0, |e| matches!(e, Ev::Sent { .. })) == 1));
    let (a, b) = (message(1, 3 << 20), message(2, 3 << 20));
    net.send(0, 1, a.clone());
    net.send(0, 1, b.clone());
    let sent = |n: &Net| n.count(0, |e| matches!(e, Ev::Sent { .. } | Ev::Failed { .. })) == 3;
    assert!(net.run_until(Duration::from_secs(60), sent));
    assert_eq!(net.count(0, |e| matches!(e, Ev::Failed { .. })), 0, "{:?}", net.events[0].last());
    assert_eq!(net.delivered(1), vec![hello, a, b]);
    // One message open at a time: at most one full charge (3 MiB, a page per 64 KiB region, and
    // under a page of bookkeeping), where both open at once held up to the whole share.
    let one = (3 << 20) + 48 * 4096 + 4096;
    assert!(net.max_reassembly_seen[1] <= one, "{} > {one}", net.max_reassembly_seen[1]);
    assert!(net.nodes[1].stats().dropped_reassembly_full > 0, "the second message waited");
}
