//! Two Noise endpoints on a deterministic virtual network (tests/noise_net): handshakes, loss,
//! simultaneous open, tampering, replays and the replay window.

mod noise_net;

/// Everything lives in `mod noise` so that `cargo test -p deccom-core noise` selects these tests.
#[allow(unused_imports)]
mod noise {
    use std::time::{Duration, Instant};

    use deccom_core::noise::{
        static_public_key, Config, DisconnectReason, Endpoint, Event, HandshakeError, Mode, Stats,
    };
    use deccom_core::Identity;

    use super::noise_net::*;

    #[test]
    fn xx_handshake_and_messages_both_ways() {
        let mut p = Pair::default();
        p.handshake();
        assert_eq!(p.a.handshake_hash(B), p.b.handshake_hash(A));
        assert!(p.a.handshake_hash(B).is_some());
        assert!(matches!(
            &p.events_a[0],
            Event::Connected { peer: B, remote_id, remote_identity }
                if *remote_id == p.id_b.id() && *remote_identity == p.id_b.public_identity()
        ));
        assert_eq!(connected(&p.events_b), 1);
        p.send(A, b"hello");
        p.send(B, b"world");
        p.run(Duration::from_millis(100));
        assert_eq!(Pair::messages(&p.events_b), vec![b"hello".to_vec()]);
        assert_eq!(Pair::messages(&p.events_a), vec![b"world".to_vec()]);
        let (sa, sb) = (p.a.stats(), p.b.stats());
        assert_eq!(sa.handshakes_completed, 1);
        assert_eq!(sb.handshakes_completed, 1);
        assert_eq!(sa.sessions, 1);
        assert_eq!(sb.half_open, 0);
        // Nothing is waiting: the confirmation stopped the re-sending of message 3.
        p.run(Duration::from_secs(5));
        assert_eq!(p.a.stats().handshakes_failed_timeout, 0);
        // Debug never prints key material.
        let dbg = format!("{:?}", p.a);
        assert!(dbg.contains("Endpoint"), "{dbg}");
        let key_hex: String = p.a.local_static_public_key()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(!dbg.contains(&key_hex));
    }

    #[test]
    fn messages_sent_before_the_handshake_are_queued() {
        let mut p = Pair::default();
        p.send(A, b"one");
        p.send(A, b"two");
        assert!(p.run_until(Duration::from_secs(2), |p| {
            Pair::messages(&p.events_b).len() == 2
        }));
        assert_eq!(
            Pair::messages(&p.events_b),
            vec![b"one".to_vec(), b"two".to_vec()]
        );
        assert!(p.authenticated());
    }

    #[test]
    fn ik_with_known_static_key() {
        let mut p = Pair::default();
        let b_static = static_public_key(&p.id_b).unwrap();
        assert_eq!(b_static, p.b.local_static_public_key());
        let now = p.now;
        p.a.connect(now, B, Some(b_static));
        assert!(p.run_until(Duration::from_secs(1), Pair::authenticated));
        // One round trip (init, response) plus the keepalive that switches the responder over.
        assert_eq!(p.sent, 3);
        assert_eq!(p.a.handshake_hash(B), p.b.handshake_hash(A));
        p.send(B, b"from responder");
        p.send(A, b"from initiator");
        p.run(Duration::from_millis(100));
        assert_eq!(
            Pair::messages(&p.events_a),
            vec![b"from responder".to_vec()]
        );
        assert_eq!(
            Pair::messages(&p.events_b),
            vec![b"from initiator".to_vec()]
        );
    }

    #[test]
    fn ik_with_a_wrong_static_key_falls_back_to_xx() {
        let mut p = Pair::default();
        let wrong = static_public_key(&Identity::from_seed(&[0x55; 32])).unwrap();
        let now = p.now;
        p.a.connect(now, B, Some(wrong));
        assert!(p.run_until(Duration::from_secs(30), Pair::authenticated));
        assert!(p.b.stats().handshakes_failed_decrypt >= 1);
        assert_eq!(p.a.stats().handshakes_initiated, 2);
    }

    #[test]
    fn handshake_completes_under_30_percent_loss() {
        let cfg = Config {
            handshake_retries: 10,
            handshake_timeout: Duration::from_millis(100),
            ..Config::default()
        };
        for seed in 1..=20u64 {
            let mut p = Pair::new(cfg.clone(), cfg.clone());
            p.loss = 0.3;
            p.rng = seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1;
            let now = p.now;
            p.a.connect(now, B, None);
            assert!(
                p.run_until(Duration::from_secs(60), Pair::authenticated),
                "seed {seed}: {:?} / {:?}",
                p.a.stats(),
                p.b.stats()
            );
            // Data flows (retrying like an upper layer would).
            let mut got = false;
            for _ in 0..20 {
                p.send(A, b"x");
                p.run(Duration::from_millis(50));
                if !Pair::messages(&p.events_b).is_empty() {
                    got = true;
                    break;
                }
            }
            assert!(got, "seed {seed}");
        }
    }

    #[test]
    fn simultaneous_open_yields_one_session() {
        for known in [false, true] {
            let mut p = Pair::default();
            let now = p.now;
            let (sa, sb) = if known {
                (
                    Some(p.b.local_static_public_key()),
                    Some(p.a.local_static_public_key()),
                )
            } else {
                (None, None)
            };
            p.a.connect(now, B, sa);
            p.b.connect(now, A, sb);
            assert!(p.run_until(Duration::from_secs(2), Pair::authenticated));
            p.run(Duration::from_secs(1));
            let (a, b) = (p.a.stats(), p.b.stats());
            assert_eq!(a.handshakes_completed, 1, "known={known} {a:?}");
            assert_eq!(b.handshakes_completed, 1, "known={known} {b:?}");
            assert_eq!(
                a.simultaneous_open_ignored + b.simultaneous_open_ignored,
                1,
                "known={known}"
            );
            assert_eq!(
                a.simultaneous_open_yielded + b.simultaneous_open_yielded,
                1,
                "known={known}"
            );
            assert_eq!(p.a.handshake_hash(B), p.b.handshake_hash(A));
            assert_eq!(connected(&p.events_a), 1);
            assert_eq!(connected(&p.events_b), 1);
            p.send(A, b"ab");
            p.send(B, b"ba");
            p.run(Duration::from_millis(100));
            assert_eq!(Pair::messages(&p.events_b), vec![b"ab".to_vec()]);
            assert_eq!(Pair::messages(&p.events_a), vec![b"ba".to_vec()]);
            assert_eq!(a.handshakes_failed_timeout + b.handshakes_failed_timeout, 0);
        }
    }

    #[test]
    fn tampered_handshake_messages_are_dropped_and_counted() {
        // Flip one byte in the first initiation, response or final message; the
        // retransmissions get through.
        for kind in [0x10u8, 0x11, 0x12] {
            let mut p = Pair::default();
            let mut done = false;
            p.filter = Some(Box::new(move |_, _, bytes: &mut Vec<u8>| {
                if !done && bytes[0] == kind {
                    done = true;
                    let n = bytes.len();
                    bytes[n - 20] ^= 0x01;
                }
                Verdict::Deliver
            }));
            p.handshake();
            let failed =
                p.a.stats().handshakes_failed_decrypt + p.b.stats().handshakes_failed_decrypt;
            assert_eq!(failed, 1, "type {kind:#x}");
            p.send(A, b"ok");
            p.run(Duration::from_millis(100));
            assert_eq!(Pair::messages(&p.events_b), vec![b"ok".to_vec()]);
        }
    }

    #[test]
    fn tampered_transport_is_dropped_and_counted() {
        let mut p = Pair::default();
        p.handshake();
        p.filter = Some(Box::new(|_, _, bytes: &mut Vec<u8>| {
            if bytes[0] == 0x02 {
                let n = bytes.len();
                bytes[n - 1] ^= 0x80;
            }
            Verdict::Deliver
        }));
        p.send(A, b"secret");
        p.run(Duration::from_millis(100));
        assert!(Pair::messages(&p.events_b).is_empty());
        assert_eq!(p.b.stats().dropped_tampered, 1);
        // A datagram for an index that belongs to another address is mis-attributed.
        p.filter = None;
        p.send(A, b"again");
        p.collect();
        let (_, _, _, bytes) = p.in_flight.pop().unwrap();
        let now = p.now;
        p.b.handle_datagram(now, 77, &bytes);
        assert_eq!(p.b.stats().dropped_misattributed, 1);
        p.b.handle_datagram(now, A, &bytes);
        assert_eq!(
            Pair::messages(&{
                let mut v = Vec::new();
                while let Some(e) = p.b.poll_event() {
                    v.push(e);
                }
                v
            }),
            vec![b"again".to_vec()]
        );
    }

    #[test]
    fn replayed_datagram_is_dropped() {
        let mut p = Pair::default();
        p.handshake();
        let captured = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let c = captured.clone();
        p.filter = Some(Box::new(move |_, _, bytes: &mut Vec<u8>| {
            if bytes[0] == 0x02 {
                c.borrow_mut().push(bytes.clone());
            }
            Verdict::Deliver
        }));
        p.send(A, b"pay me once");
        p.run(Duration::from_millis(100));
        assert_eq!(Pair::messages(&p.events_b).len(), 1);
        let replay = captured.borrow()[0].clone();
        let now = p.now;
        p.b.handle_datagram(now, A, &replay);
        p.b.handle_datagram(now, A, &replay);
        p.run(Duration::from_millis(10));
        assert_eq!(Pair::messages(&p.events_b).len(), 1);
        assert_eq!(p.b.stats().dropped_replay, 2);
    }

    #[test]
    fn nonce_outside_the_window_is_dropped() {
        let cfg = Config {
            replay_window_bits: 128, // tracks 64 counters behind the highest
            ..Config::default()
        };
        let mut p = Pair::new(cfg.clone(), cfg);
        p.handshake();
        let held = std::rc::Rc::new(std::cell::RefCell::new(None));
        let h = held.clone();
        p.filter = Some(Box::new(move |_, _, bytes: &mut Vec<u8>| {
            if bytes[0] == 0x02 && h.borrow().is_none() {
                *h.borrow_mut() = Some(bytes.clone());
                return Verdict::Drop;
            }
            Verdict::Deliver
        }));
        for i in 0..100u32 {
            p.send(A, &i.to_be_bytes());
        }
        p.run(Duration::from_millis(100));
        assert_eq!(Pair::messages(&p.events_b).len(), 99);
        let late = held.borrow_mut().take().unwrap();
        let now = p.now;
        p.b.handle_datagram(now, A, &late);
        assert_eq!(p.b.stats().dropped_too_old, 1);
        assert_eq!(p.b.stats().messages_received, 99);
    }

    #[test]
    fn reordering_within_the_window_is_accepted() {
        let mut p = Pair::default();
        p.handshake();
        let held = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let h = held.clone();
        p.filter = Some(Box::new(move |_, _, bytes: &mut Vec<u8>| {
            if bytes[0] == 0x02 {
                h.borrow_mut().push(bytes.clone());
                return Verdict::Drop;
            }
            Verdict::Deliver
        }));
        for i in 0..50u32 {
            p.send(A, &i.to_be_bytes());
        }
        p.collect();
        let now = p.now;
        for d in held.borrow().iter().rev() {
            p.b.handle_datagram(now, A, d);
        }
        p.collect();
        let got = Pair::messages(&p.events_b);
        assert_eq!(got.len(), 50);
        assert_eq!(got[0], 49u32.to_be_bytes().to_vec());
    }
}
