//! Reliable UDP in virtual time: the limits — refused announcements, the reassembly budget,
//! partial-message timeouts, messages of more than 65,536 segments, restarts — on the shared
//! network of `rudp_net`.

use std::time::{Duration, Instant};

use deccom_core::rudp::{Config, Endpoint, FailReason};

mod rudp_net;
use rudp_net::*;

#[test]
fn oversized_announcement_is_refused_without_allocation() {
    let small = Config {
        max_message_size: 10_000,
        peer_timeout: Duration::from_secs(1),
        ..Config::default()
    };
    let mut net = Net::new(
        vec![
            Config {
                peer_timeout: Duration::from_secs(1),
                ..Config::default()
            },
            small,
        ],
        9,
        Link::default(),
    );
    net.send(0, 1, message(1, 20_000));
    assert!(net.run_until(Duration::from_secs(10), |n| n.count(0, |_| true) == 1));
    assert!(matches!(
        net.events[0][0].1,
        Ev::Failed {
            reason: FailReason::Refused,
            ..
        }
    ));
    assert!(
        net.elapsed() < Duration::from_millis(100),
        "refused at once: {:?}",
        net.elapsed()
    );
    assert!(net.nodes[1].stats().dropped_oversized_announcement > 0);
    assert_eq!(net.max_reassembly_seen[1], 0);

    // A forged DATA announcing a 4 GiB - 1 message: refused, nothing allocated.
    let base = Instant::now();
    let mut ep: Endpoint<u8> = Endpoint::new(Config::default(), base, 1);
    let mut d = vec![deccom_core::rudp::wire::VERSION, 1];
    d.extend_from_slice(&7u64.to_be_bytes()); // src epoch
    d.extend_from_slice(&0u64.to_be_bytes()); // dst epoch
    d.extend_from_slice(&0u64.to_be_bytes()); // pn
    d.extend_from_slice(&0u64.to_be_bytes()); // msg id
    d.extend_from_slice(&0u16.to_be_bytes()); // floor delta
    d.extend_from_slice(&u32::MAX.to_be_bytes()); // length
    d.extend_from_slice(&1000u32.to_be_bytes()); // segment size
    d.extend_from_slice(&0u32.to_be_bytes()); // index
    d.extend_from_slice(&[0u8; 1000]);
    deccom_core::rudp::wire::append_checksum(&mut d, 0);
    ep.handle_datagram(base, 3, &d);
    assert_eq!(ep.stats().dropped_oversized_announcement, 1);
    assert_eq!(ep.reassembly_bytes(), 0);
    let mut buf = Vec::new();
    assert_eq!(
        ep.poll_transmit(base, &mut buf),
        Some(3),
        "the refusal is reported"
    );
    match deccom_core::rudp::wire::decode(&buf) {
        Ok(deccom_core::rudp::wire::Datagram::Ack(a)) => {
            assert!(
                a.ranges().is_empty(),
                "a refused packet is not acknowledged"
            );
            assert_eq!(a.refused(), &[(0, deccom_core::rudp::wire::REFUSE_FINAL)]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn reassembly_limit_holds_and_transfers_still_complete() {
    let limit = 200_000;
    let receiver = Config {
        max_reassembly_per_peer: limit,
        max_reassembly_total: limit,
        ..Config::default()
    };
    let link = Link {
        loss: 0.1,
        reorder: 0.2,
        ..Link::default()
    };
    let mut net = Net::new(
        vec![Config::default(), Config::default(), receiver],
        10,
        link,
    );
    let mut expect = Vec::new();
    for i in 0..6u64 {
        for from in 0..2u8 {
            let m = message(i * 2 + u64::from(from), 90_000);
            expect.push(m.clone());
            net.send(from, 2, m);
        }
    }
    let ok = net.run_until(Duration::from_secs(120), |n| n.delivered(2).len() == 12);
    assert!(
        ok,
        "{} delivered; {:?} {:?} {:?}",
        net.delivered(2).len(),
        net.nodes[0].stats(),
        net.nodes[1].stats(),
        net.nodes[2].stats()
    );
    assert!(
        net.max_reassembly_seen[2] <= limit,
        "{}",
        net.max_reassembly_seen[2]
    );
    assert!(net.nodes[2].stats().dropped_reassembly_full > 0);
    assert_eq!(sorted(net.delivered(2)), sorted(expect));
    assert!(net.run_until(Duration::from_secs(200), |n| (0..2)
        .all(|i| n.count(i, |e| matches!(e, Ev::Sent { .. })) == 6)));
    assert_eq!(net.nodes[2].reassembly_bytes(), 0);
}

#[test]
fn partial_message_times_out() {
    let receiver = Config {
        partial_timeout: Duration::from_secs(3),
        ..Config::default()
    };
    let mut net = Net::new(vec![Config::default(), receiver], 11, Link::default());
    net.send(0, 1, message(1, 100_000));
    net.run_until(Duration::from_millis(15), |_| false);
    assert!(net.nodes[1].reassembly_bytes() > 0);
    // The sender vanishes (its datagrams no longer arrive, and it stops).
    net.links.insert(
        (0, 1),
        Link {
            down: true,
            ..Link::default()
        },
    );
    net.links.insert(
        (1, 0),
        Link {
            down: true,
            ..Link::default()
        },
    );
    assert!(
        net.run_until(Duration::from_secs(20), |n| n.nodes[1].reassembly_bytes()
            == 0)
    );
    assert!(
        net.elapsed() <= Duration::from_millis(3_030),
        "{:?}",
        net.elapsed()
    );
    assert_eq!(net.nodes[1].stats().partial_timeouts, 1);
}

#[test]
fn more_than_65536_segments() {
    let config = Config {
        max_segment_payload: 64,
        ..Config::default()
    };
    let link = Link {
        latency: MS,
        loss: 0.01,
        ..Link::default()
    };
    let mut net = Net::pair(config, 12, link);
    let m = message(77, 5_000_000); // 78 125 segments
    net.send(0, 1, m.clone());
    assert!(net.run_until(Duration::from_secs(120), |n| n
        .count(0, |e| matches!(e, Ev::Sent { .. }))
        == 1));
    assert_eq!(net.delivered(1).len(), 1);
    assert!(net.delivered(1)[0] == m);
}

#[test]
fn peer_restart_resets_state() {
    // The receiver restarts in the middle of a transfer: the sender starts over to the new
    // incarnation, every send resolves with Sent, the new incarnation gets each message once.
    let link = Link::default();
    let mut net = Net::pair(Config::default(), 13, link);
    let msgs: Vec<Vec<u8>> = (0..5).map(|i| message(i, 200_000)).collect();
    for m in &msgs {
        net.send(0, 1, m.clone());
    }
    net.run_until(Duration::from_millis(60), |_| false);
    let old_delivered = net.delivered(1);
    assert!(old_delivered.len() < msgs.len());
    net.restart(1, Config::default(), 999);
    net.events[1].clear();
    assert!(net.run_until(Duration::from_secs(30), |n| n
        .count(0, |e| matches!(e, Ev::Sent { .. }))
        == 5));
    let mut all = old_delivered.clone();
    all.extend(net.delivered(1));
    for m in &msgs {
        assert!(all.contains(m));
    }
    let new = net.delivered(1);
    assert_eq!(
        new.len(),
        sorted(new.clone())
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        "no duplicates in the new incarnation"
    );
    assert!(net.nodes[0].stats().peer_resets >= 1);

    // The sender restarts: its new message ids start at 0 again and must not be taken for
    // duplicates of the old incarnation's.
    let mut net = Net::pair(Config::default(), 14, Link::default());
    net.send(0, 1, b"old-0".to_vec());
    net.send(0, 1, b"old-1".to_vec());
    assert!(net.run_until(Duration::from_secs(5), |n| n.delivered(1).len() == 2));
    net.run_until(Duration::from_secs(6), |_| false);
    net.restart(0, Config::default(), 4242);
    net.send(0, 1, b"new-0".to_vec());
    net.send(0, 1, b"new-1".to_vec());
    assert!(net.run_until(Duration::from_secs(10), |n| n.delivered(1).len() == 4));
    assert_eq!(
        net.delivered(1),
        vec![
            b"old-0".to_vec(),
            b"old-1".to_vec(),
            b"new-0".to_vec(),
            b"new-1".to_vec()
        ]
    );
    assert_eq!(net.nodes[1].stats().peer_resets, 1);
}


#[test]
fn abandoned_partial_fails_the_send_instead_of_faking_success() {
    let receiver = Config {
        partial_timeout: Duration::from_secs(1),
        ..Config::default()
    };
    let mut net = Net::new(vec![Config::default(), receiver], 15, Link::default());
    net.send(0, 1, message(1, 100_000));
    net.run_until(Duration::from_millis(15), |_| false);
    assert!(net.nodes[1].reassembly_bytes() > 0);
    net.links.insert(
        (0, 1),
        Link {
            down: true,
            ..Link::default()
        },
    );
    assert!(
        net.run_until(Duration::from_secs(5), |n| n.nodes[1].reassembly_bytes()
            == 0)
    );
    net.links.clear();
    assert!(net.run_until(Duration::from_secs(30), |n| n.count(0, |_| true) == 1));
    assert!(
        matches!(
            net.events[0][0].1,
            Ev::Failed {
                reason: FailReason::Refused,
                ..
            }
        ),
        "{:?}",
        net.events[0]
    );
    assert!(net.delivered(1).is_empty());
    assert_eq!(net.nodes[1].stats().partial_timeouts, 1);
}
