//! Reliable UDP against hostile peers, in virtual time: forged and corrupted datagrams, and
//! attackers trying to hold the reassembly budget. Each test drives real endpoints and crafts the
//! attacker's datagrams with the wire codec.

use std::time::{Duration, Instant};

use deccom_core::rudp::wire::{self, Datagram, DataHeader};
use deccom_core::rudp::{Config, Endpoint, Event, FailReason, MessageId};

const MS: Duration = Duration::from_millis(1);
/// Peer handles: A is 0 as B sees it, B is 1 as A sees it; attackers are 10 and up.
const A: u8 = 0;
const B: u8 = 1;

/// Two endpoints on an instant, lossless link, stepped 1 ms at a time. `tamper` sees every
/// datagram (from, to, bytes) and may change it or drop it (return false).
struct Pair {
    a: Endpoint<u8>,
    b: Endpoint<u8>,
    now: Instant,
    start: Instant,
    a_events: Vec<Event<u8>>,
    b_events: Vec<Event<u8>>,
    /// Datagrams B sent to handles other than A (to attackers).
    b_to_others: Vec<(u8, Vec<u8>)>,
}

impl Pair {
    fn new(a: Config, b: Config) -> Pair {
        let now = Instant::now();
        Pair {
            a: Endpoint::new(a, now, 11),
            b: Endpoint::new(b, now, 22),
            now,
            start: now,
            a_events: Vec::new(),
            b_events: Vec::new(),
            b_to_others: Vec::new(),
        }
    }

    fn step(&mut self, tamper: &mut dyn FnMut(u8, u8, &mut Vec<u8>) -> bool) {
        self.now += MS;
        let now = self.now;
        self.a.handle_timeout(now);
        self.b.handle_timeout(now);
        let mut buf = Vec::new();
        let mut a_out = Vec::new();
        while let Some(to) = self.a.poll_transmit(now, &mut buf) {
            a_out.push((to, buf.clone()));
        }
        let mut b_out = Vec::new();
        while let Some(to) = self.b.poll_transmit(now, &mut buf) {
            b_out.push((to, buf.clone()));
        }
        for (to, mut d) in a_out {
            if to == B && tamper(A, B, &mut d) {
                self.b.handle_datagram(now, A, &d);
            }
        }
        for (to, mut d) in b_out {
            if to == A {
                if tamper(B, A, &mut d) {
                    self.a.handle_datagram(now, B, &d);
                }
            } else {
                self.b_to_others.push((to, d));
            }
        }
        while let Some(e) = self.a.poll_event() {
            self.a_events.push(e);
        }
        while let Some(e) = self.b.poll_event() {
            self.b_events.push(e);
        }
    }

    fn run(&mut self, limit: Duration, done: impl Fn(&Pair) -> bool) -> bool {
        self.run_tampered(limit, &mut |_, _, _| true, done)
    }

    fn run_tampered(
        &mut self,
        limit: Duration,
        tamper: &mut dyn FnMut(u8, u8, &mut Vec<u8>) -> bool,
        done: impl Fn(&Pair) -> bool,
    ) -> bool {
        let end = self.now + limit;
        while self.now < end {
            if done(self) {
                return true;
            }
            self.step(tamper);
        }
        done(self)
    }

    fn sent(events: &[Event<u8>], id: MessageId) -> bool {
        events.iter().any(|e| matches!(e, Event::Sent { id: i, .. } if *i == id))
    }

    fn delivered(events: &[Event<u8>], message: &[u8]) -> usize {
        events
            .iter()
            .filter(|e| matches!(e, Event::Delivered { message: m, .. } if m == message))
            .count()
    }

    /// A message each way, both completed.
    fn exchange(&mut self, tag: u8, len: usize) {
        let to_b = vec![tag; len];
        let to_a = vec![tag.wrapping_add(100); len];
        let ia = self.a.send(self.now, B, to_b.clone()).unwrap();
        let ib = self.b.send(self.now, A, to_a.clone()).unwrap();
        let ok = self.run(Duration::from_secs(5), |p| {
            Pair::sent(&p.a_events, ia)
                && Pair::sent(&p.b_events, ib)
                && Pair::delivered(&p.b_events, &to_b) == 1
                && Pair::delivered(&p.a_events, &to_a) == 1
        });
        assert!(ok, "exchange {tag} of {len} bytes did not complete: a {:?} b {:?}", self.a.stats(), self.b.stats());
    }
}

fn ack(src_epoch: u64, dst_epoch: u64, ranges: &[(u64, u64)]) -> Vec<u8> {
    let mut frame = wire::AckFrame {
        src_epoch,
        dst_epoch,
        ack_delay_us: 0,
        window: 1 << 16,
        count: ranges.len(),
        ranges: [(0, 0); wire::MAX_ACK_RANGES],
        refused_count: 0,
        refused: [(0, 0); wire::MAX_REFUSALS],
    };
    frame.ranges[..ranges.len()].copy_from_slice(ranges);
    let mut out = Vec::new();
    wire::encode_ack(&frame, &mut out);
    out
}

fn data(h: &DataHeader, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    wire::encode_data(h, payload, &mut out);
    out
}

fn src_epoch(d: &[u8]) -> u64 {
    match wire::decode(d).unwrap() {
        Datagram::Data(h, _) => h.src_epoch,
        Datagram::Ack(a) => a.src_epoch,
    }
}

/// One forged ACK with a random source epoch (addressed to a random epoch, or to 0) used to make
/// the receiver retire the real epoch of its peer, after which every send failed both ways. Now
/// it is dropped (counted), and the session goes on.
#[test]
fn forged_ack_with_random_epoch_does_not_reset_the_session() {
    let mut p = Pair::new(Config::default(), Config::default());
    p.exchange(1, 5000);
    for (src, dst) in [(0x1234_5678_9abc_def0u64, 0u64), (0x0fed_cba9_8765_4321, 0x1111), (0x42, 0)] {
        let forged = ack(src, dst, &[(0, 3)]);
        p.a.handle_datagram(p.now, B, &forged);
        p.b.handle_datagram(p.now, A, &forged);
    }
    assert_eq!(p.a.stats().peer_resets, 0);
    assert_eq!(p.b.stats().peer_resets, 0);
    assert_eq!(p.a.stats().dropped_unproven_epoch, 3);
    assert_eq!(p.b.stats().dropped_unproven_epoch, 3);
    // A forged DATA under a random epoch: not delivered, no reset, answered with a bare ACK to
    // that epoch (32 bytes, smaller than the forgery).
    let h = DataHeader { src_epoch: 0x7777, dst_epoch: 0, pn: 0, msg_id: 0, floor_delta: 0, msg_len: 5, seg_size: 1200, seg_index: 0, ack_now: true };
    let forged = data(&h, b"forge");
    p.b.handle_datagram(p.now, A, &forged);
    assert_eq!(p.b.stats().peer_resets, 0);
    assert_eq!(Pair::delivered(&p.b_events, b"forge"), 0);
    let mut buf = Vec::new();
    assert_eq!(p.b.poll_transmit(p.now, &mut buf), Some(A));
    assert!(buf.len() < forged.len(), "{} vs {}", buf.len(), forged.len());
    match wire::decode(&buf).unwrap() {
        Datagram::Ack(a) => {
            assert_eq!((a.dst_epoch, a.count, a.refused_count), (0x7777, 0, 0));
        }
        other => panic!("{other:?}"),
    }
    // Later sends work both ways.
    for i in 2..5 {
        p.exchange(i, 3000 * i as usize);
    }
    assert_eq!(p.a.stats().messages_failed + p.b.stats().messages_failed, 0);
}

/// A peer that really restarted (new epoch, knows nothing) is still recognised: it learns our
/// epoch from the bare ACK and proves itself with its next datagram.
#[test]
fn a_restarted_peer_proves_its_new_epoch_and_is_served() {
    let mut p = Pair::new(Config::default(), Config::default());
    p.exchange(1, 5000);
    // B restarts: a fresh endpoint (another seed, so another epoch).
    p.b = Endpoint::new(Config::default(), p.now, 99);
    p.b_events.clear();
    p.a_events.clear();
    p.exchange(2, 4000);
    assert_eq!(p.a.stats().peer_resets, 1);
    assert_eq!(p.a.stats().messages_failed, 0);
}

/// One flipped bit in a message id used to make a segment look like a duplicate of a delivered
/// message: acknowledged, so `send` resolved while the message was never delivered. Now every
/// corrupted datagram is dropped and counted, and the message is delivered before it is `Sent`.
#[test]
fn corrupted_datagrams_are_dropped_and_never_acknowledge_anything() {
    let mut p = Pair::new(Config::default(), Config::default());
    p.exchange(1, 100);
    let msg = b"second message".to_vec();
    let id = p.a.send(p.now, B, msg.clone()).unwrap();
    // Flip the lowest bit of the message id (1 -> 0, a delivered id) of every DATA for a while.
    let mut flipped = 0;
    let mut tamper = |from: u8, _to: u8, d: &mut Vec<u8>| {
        if from == A && d[1] & 0x0f == wire::TYPE_DATA {
            d[33] ^= 1;
            flipped += 1;
        }
        true
    };
    p.run_tampered(Duration::from_millis(500), &mut tamper, |_| false);
    assert!(flipped > 0);
    assert!(!Pair::sent(&p.a_events, id), "send resolved for a message that was not delivered");
    assert_eq!(Pair::delivered(&p.b_events, &msg), 0);
    assert_eq!(p.b.stats().dropped_checksum, flipped);
    assert!(p.b.stats().dropped_malformed >= flipped);
    // Every other single bit flip is caught too.
    let h = DataHeader { src_epoch: 5, dst_epoch: 0, pn: 9, msg_id: 3, floor_delta: 1, msg_len: 40, seg_size: 1200, seg_index: 0, ack_now: true };
    let good = data(&h, &[0xab; 40]);
    let mut fresh: Endpoint<u8> = Endpoint::new(Config::default(), p.now, 5);
    for bit in 0..good.len() * 8 {
        let mut bad = good.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        fresh.handle_datagram(p.now, 7, &bad);
    }
    let s = fresh.stats();
    assert_eq!(s.dropped_malformed, good.len() as u64 * 8);
    assert_eq!(s.dropped_checksum, good.len() as u64 * 8 - 8, "all but the version byte's bits");
    assert_eq!((s.messages_delivered, s.peers), (0, 0));
    // Untampered, the message goes through: delivered once, then Sent.
    assert!(p.run(Duration::from_secs(5), |p| Pair::sent(&p.a_events, id)));
    assert_eq!(Pair::delivered(&p.b_events, &msg), 1);
}

/// First segments announcing 256 MiB used to reserve the whole length each: 120 of them (150 KB)
/// held the 1 GiB budget. Now a first segment is charged for the memory its data lands in, a
/// peer that never echoed our epoch gets a small share (and all of them a small pool), and a
/// peer that did echo it holds memory only in proportion to the data it sent.
#[test]
fn crafted_first_segments_cannot_hold_the_reassembly_budget() {
    let mut p = Pair::new(Config::default(), Config::default());
    let announced = 256u32 << 20;
    // 120 spoofed sources (never echo B's epoch), 15 segments each at scattered offsets of one
    // announced message.
    let mut sent = 0usize;
    for src in 0..120u8 {
        for k in 0..15u64 {
            let h = DataHeader { src_epoch: 1000 + u64::from(src), dst_epoch: 0, pn: k, msg_id: 0, floor_delta: 0, msg_len: announced, seg_size: 1200, seg_index: (k as u32 * 7919 + u32::from(src) * 104_729) % 200_000, ack_now: false };
            let d = data(&h, &[0x55; 1200]);
            sent += d.len();
            p.b.handle_datagram(p.now, 10 + src, &d);
        }
    }
    let s = p.b.stats();
    assert!(sent < 2_500_000);
    assert!(s.reassembly_bytes <= (1 << 30) / 16, "unproven pool exceeded: {}", s.reassembly_bytes);
    assert_eq!(s.reassembly_bytes, s.reassembly_unproven_bytes);
    assert!(s.dropped_reassembly_full > 0);
    // Eight attackers that echo B's epoch (they read B's ACKs; under Noise: eight throwaway
    // identities), scattering segments over eight announced 256 MiB messages each.
    let before = p.b.stats().reassembly_bytes;
    let mut payload_bytes = 0u64;
    for attacker in 200..208u8 {
        let src = 5555 + u64::from(attacker);
        let hello = DataHeader { src_epoch: src, dst_epoch: 0, pn: 0, msg_id: 0, floor_delta: 0, msg_len: 5, seg_size: 1200, seg_index: 0, ack_now: true };
        p.b.handle_datagram(p.now, attacker, &data(&hello, b"hello"));
        let mut buf = Vec::new();
        let mut b_epoch = 0;
        while let Some(to) = p.b.poll_transmit(p.now, &mut buf) {
            if to == attacker {
                b_epoch = src_epoch(&buf);
            }
        }
        assert_ne!(b_epoch, 0);
        for k in 1..1000u64 {
            // Messages 1..=8, segments scattered 1 MiB apart, floor 0.
            let msg_id = 1 + k % 8;
            let h = DataHeader { src_epoch: src, dst_epoch: b_epoch, pn: k, msg_id, floor_delta: msg_id as u16, msg_len: announced, seg_size: 1200, seg_index: (k as u32 * 874) % 223_000, ack_now: false };
            payload_bytes += 1200;
            p.b.handle_datagram(p.now, attacker, &data(&h, &[1; 1200]));
        }
    }
    let held = p.b.stats().reassembly_bytes - before;
    assert!(held <= 8 * (4 << 20) + 4 * payload_bytes, "proven attackers hold {held} bytes after sending {payload_bytes}");
    assert!(held < 64 << 20, "{held}");
    // Meanwhile a legitimate 1 MiB message from A completes.
    let msg: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let id = p.a.send(p.now, B, msg.clone()).unwrap();
    assert!(p.run(Duration::from_secs(10), |p| Pair::sent(&p.a_events, id)), "{:?}", p.b.stats());
    assert_eq!(Pair::delivered(&p.b_events, &msg), 1);
}

/// A busy refusal used to count as progress: a sender whose receiver never had room stalled
/// forever without an error. Now it fails with `FailReason::Busy` within its peer timeout.
#[test]
fn a_sender_refused_busy_fails_within_peer_timeout() {
    let receiver = Config { max_reassembly_total: 200_000, max_reassembly_per_peer: 200_000, ..Config::default() };
    let peer_timeout = Config::default().peer_timeout;
    let mut p = Pair::new(Config::default(), receiver);
    p.exchange(1, 10);
    // A partial held by a proven attacker with real data (it keeps it warm): the budget is full.
    let d = data(&DataHeader { src_epoch: 6666, dst_epoch: 0, pn: 0, msg_id: 0, floor_delta: 0, msg_len: 1, seg_size: 1200, seg_index: 0, ack_now: true }, b"x");
    p.b.handle_datagram(p.now, 50, &d);
    let mut buf = Vec::new();
    let mut b_epoch = 0;
    while let Some(to) = p.b.poll_transmit(p.now, &mut buf) {
        if to == 50 {
            b_epoch = src_epoch(&buf);
        }
    }
    let hold = DataHeader { src_epoch: 6666, dst_epoch: b_epoch, pn: 1, msg_id: 1, floor_delta: 0, msg_len: 150_000, seg_size: 1200, seg_index: 0, ack_now: false };
    for i in 0..100u32 {
        let h = DataHeader { pn: 1 + u64::from(i), seg_index: i, ..hold };
        p.b.handle_datagram(p.now, 50, &data(&h, &[9; 1200]));
    }
    assert!(p.b.stats().reassembly_bytes >= 150_000);
    let msg = vec![3u8; 100_000];
    let id = p.a.send(p.now, B, msg).unwrap();
    let started = p.now;
    let failed = p.run(peer_timeout + Duration::from_secs(2), |p| {
        p.a_events.iter().any(|e| matches!(e, Event::Failed { id: i, .. } if *i == id))
    });
    assert!(failed, "the send neither completed nor failed: {:?}", p.a.stats());
    let reason = p.a_events.iter().find_map(|e| match e {
        Event::Failed { id: i, reason, .. } if *i == id => Some(*reason),
        _ => None,
    });
    assert_eq!(reason, Some(FailReason::Busy));
    assert!(p.now - started <= peer_timeout + Duration::from_millis(1100), "{:?}", p.now - started);
    assert!(p.b.stats().dropped_reassembly_full > 0);
    let _ = p.start;
}

/// Memory is reserved ahead of a large message's writer (and offered for pre-faulting) only in
/// proportion to the data that arrived; a transfer of 64 MiB is charged about its length and
/// delivered intact.
#[test]
fn prefault_hints_follow_the_data() {
    let mut p = Pair::new(Config::default(), Config::default());
    let len = 64 << 20;
    let msg: Vec<u8> = (0..len).map(|i: usize| (i * 7 % 253) as u8).collect();
    let id = p.a.send(p.now, B, msg.clone()).unwrap();
    let mut max_ratio: f64 = 0.0;
    let mut hinted = 0usize;
    let mut received = 0u64;
    let done = loop {
        let mut none = |_: u8, _: u8, _: &mut Vec<u8>| true;
        p.step(&mut none);
        while let Some((_, l)) = p.b.poll_prefault() {
            hinted += l;
        }
        let s = p.b.stats();
        received = received.max(s.bytes_received);
        if s.reassembly_bytes > (8 << 20) {
            max_ratio = max_ratio.max(s.reassembly_bytes as f64 / s.bytes_received as f64);
        }
        if Pair::sent(&p.a_events, id) {
            break true;
        }
        if p.now - p.start > Duration::from_secs(60) {
            break false;
        }
    };
    assert!(done);
    assert_eq!(Pair::delivered(&p.b_events, &msg), 1);
    assert!(hinted > 0 && hinted <= len, "{hinted}");
    assert!(max_ratio <= 4.0, "charged {max_ratio}x the bytes received");
    assert_eq!(p.b.stats().reassembly_bytes, 0);
    let _ = received;
}
