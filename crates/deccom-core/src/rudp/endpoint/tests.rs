//! Unit tests of one endpoint's limits, windows and timers (two endpoints exchanging messages are
//! tested in `tests/rudp_pair.rs`).

use super::*;

fn t(base: Instant, ms: u64) -> Instant {
    base + Duration::from_millis(ms)
}

fn drain<P: Copy + Eq + Hash + Debug>(ep: &mut Endpoint<P>, now: Instant) -> Vec<(P, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    while let Some(p) = ep.poll_transmit(now, &mut buf) {
        out.push((p, buf.clone()));
    }
    out
}

#[test]
fn error_codes() {
    assert_eq!(
        RudpError::MessageTooLarge { len: 2, max: 1 }.code(),
        "ERR_DECCOM_MESSAGE_TOO_LARGE"
    );
    assert_eq!(
        RudpError::SendQueueFull { limit: 1 }.code(),
        "ERR_DECCOM_SEND_QUEUE_FULL"
    );
    assert_eq!(
        RudpError::PeerTableFull { limit: 1 }.code(),
        "ERR_DECCOM_PEER_TABLE_FULL"
    );
    assert_eq!(
        FailReason::PeerUnreachable.code(),
        "ERR_DECCOM_PEER_UNREACHABLE"
    );
    assert_eq!(FailReason::Forgotten.code(), "ERR_DECCOM_PEER_FORGOTTEN");
    assert_eq!(FailReason::Refused.code(), "ERR_DECCOM_MESSAGE_REFUSED");
}

#[test]
fn send_limits() {
    let now = Instant::now();
    let config = Config {
        max_message_size: 10,
        max_outgoing_per_peer: 2,
        ..Config::default()
    };
    let mut a: Endpoint<u8> = Endpoint::new(config, now, 1);
    assert_eq!(
        a.send(now, 1, vec![0; 11]),
        Err(RudpError::MessageTooLarge { len: 11, max: 10 })
    );
    a.send(now, 1, vec![0; 10]).unwrap();
    a.send(now, 1, vec![]).unwrap();
    assert_eq!(
        a.send(now, 1, vec![1]),
        Err(RudpError::SendQueueFull { limit: 2 })
    );
    // Another peer has its own queue.
    a.send(now, 2, vec![1]).unwrap();
}

/// Runs `a` → `b` (peers 1 and 0) in 1 ms steps until `a`'s one message is acknowledged; returns
/// the most datagrams `a` had in flight after the first ACK reached it, and the longest datagram
/// it sent.
fn exchange(a: &mut Endpoint<u8>, b: &mut Endpoint<u8>, base: Instant) -> (u32, usize) {
    let (mut max_in_flight, mut largest, mut saw_ack) = (0, 0, false);
    for step in 0..10_000u64 {
        let now = t(base, step);
        a.handle_timeout(now);
        for (_, d) in drain(a, now) {
            largest = largest.max(d.len());
            if saw_ack {
                max_in_flight = max_in_flight.max(a.in_flight(1));
            }
            b.handle_datagram(now, 0, &d);
        }
        b.handle_timeout(now);
        for (_, d) in drain(b, now) {
            a.handle_datagram(now, 1, &d);
            saw_ack = true;
        }
        if a.stats().messages_sent == 1 {
            break;
        }
    }
    assert_eq!(a.stats().messages_sent, 1);
    assert!(saw_ack);
    (max_in_flight, largest)
}

/// The sender never has more than the advertised receive window in flight.
#[test]
fn receive_window_respected() {
    let base = Instant::now();
    let mut a: Endpoint<u8> = Endpoint::new(Config::default(), base, 1);
    let mut b: Endpoint<u8> = Endpoint::new(
        Config {
            receive_window: 4,
            ..Config::default()
        },
        base,
        2,
    );
    a.send(base, 1, vec![7; 1200 * 200]).unwrap();
    let (max_after_first_ack, _) = exchange(&mut a, &mut b, base);
    assert!(max_after_first_ack <= 4, "{max_after_first_ack}");
    assert!(matches!(b.poll_event(), Some(Event::Delivered { .. })));
}

/// A message sent with a larger segment payload travels in datagrams of that size; the receiver,
/// whose window counts datagrams of its own (smaller) segment size, advertises proportionally
/// fewer of them to that sender, and the sender never has more than that in flight.
#[test]
fn larger_segments_shrink_the_advertised_window() {
    let base = Instant::now();
    let mut a: Endpoint<u8> = Endpoint::new(Config::default(), base, 1);
    let mut b: Endpoint<u8> = Endpoint::new(
        Config {
            receive_window: 64,
            ..Config::default()
        },
        base,
        2,
    );
    let opts = SendOptions {
        progress: false,
        segment_payload: Some(16_000),
    };
    let data: Vec<u8> = (0..16_000 * 100u32).map(|i| (i % 251) as u8).collect();
    a.send_with(base, 1, data.clone(), opts).unwrap();
    // 64 datagrams of 1200-byte payload, in 16,000-byte datagrams' kernel memory.
    let expected =
        u32::try_from(64 * datagram_truesize(1200) * 5 / (datagram_truesize(16_000) * 8)).unwrap();
    assert!((1..64).contains(&expected), "{expected}");
    let (max_in_flight, largest) = exchange(&mut a, &mut b, base);
    assert_eq!(largest, 16_000 + HEADER_MAX);
    assert!(max_in_flight <= expected, "{max_in_flight} > {expected}");
    match b.poll_event() {
        Some(Event::Delivered { message, .. }) => assert!(message == data),
        other => panic!("{other:?}"),
    }
}

#[test]
fn loopback_paths_get_the_loopback_segment() {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let p = |ip: IpAddr| path_segment_payload(ip, 1200, 16_000);
    assert_eq!(p(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1))), 16_000);
    assert_eq!(p(IpAddr::V4(Ipv4Addr::new(127, 3, 2, 1))), 16_000);
    assert_eq!(p(IpAddr::V6(Ipv6Addr::LOCALHOST)), 16_000);
    assert_eq!(p(IpAddr::V6(Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped())), 16_000);
    assert_eq!(p(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))), 1200);
    assert_eq!(p(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 2))), 1200);
    assert_eq!(p(IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped())), 1200);
    assert_eq!(p(IpAddr::V6("2001:db8::1".parse().unwrap())), 1200);
}

/// PTO doubles on each expiry without an ACK and resets when one arrives.
#[test]
fn pto_backoff_doubles_and_resets() {
    let base = Instant::now();
    let config = Config {
        max_ack_delay: Duration::from_millis(5),
        ..Config::default()
    };
    let mut a: Endpoint<u8> = Endpoint::new(config.clone(), base, 1);
    a.send(base, 1, vec![1; 10]).unwrap();
    let sent = drain(&mut a, base);
    assert_eq!(sent.len(), 1);
    // First PTO: srtt + 4 * rttvar + max_ack_delay = 100 + 200 + 5 ms.
    let first = a.poll_timeout().unwrap();
    assert_eq!(first, t(base, 305));
    a.handle_timeout(first);
    let probes = drain(&mut a, first);
    assert_eq!(probes.len(), 1, "one probe: only one segment outstanding");
    let second = a.poll_timeout().unwrap();
    assert_eq!(second - first, Duration::from_millis(610));
    a.handle_timeout(second);
    assert_eq!(drain(&mut a, second).len(), 1, "probes are not duplicated");
    let third = a.poll_timeout().unwrap();
    assert_eq!(third - second, Duration::from_millis(1220));
    // An ACK of the probe resets the backoff.
    let mut b: Endpoint<u8> = Endpoint::new(config, base, 2);
    a.handle_timeout(third);
    let probe = drain(&mut a, third);
    b.handle_datagram(third, 0, &probe[0].1);
    let ack = drain(&mut b, third);
    assert_eq!(ack.len(), 1);
    a.handle_datagram(third + Duration::from_millis(1), 1, &ack[0].1);
    assert!(matches!(a.poll_event(), Some(Event::Sent { .. })));
    assert_eq!(a.poll_timeout(), None);
    a.send(third, 1, vec![2; 10]).unwrap();
    let now = third + Duration::from_millis(2);
    drain(&mut a, now);
    let pto = a.poll_timeout().unwrap() - now;
    assert!(pto < Duration::from_millis(610), "{pto:?}");
}

#[test]
fn unknown_and_malformed_input_is_counted() {
    let base = Instant::now();
    let mut a: Endpoint<u8> = Endpoint::new(Config::default(), base, 1);
    a.handle_datagram(base, 1, &[]);
    a.handle_datagram(base, 1, &[9, 9, 9]);
    assert_eq!(a.stats().dropped_malformed, 2);
    assert_eq!(a.stats().peers, 0);
}
