//! Transport suites: the handshake agrees on AES-256-GCM only when both sides prefer it, falls
//! back to ChaCha20-Poly1305 otherwise and with peers that predate suites, and carries the
//! agreement into IK rekeys; a forged choice fails the handshake.

/// Everything lives in `mod noise` so that `cargo test -p deccom-core noise` selects these tests.
mod noise {
    use std::time::{Duration, Instant};

    use deccom_core::noise::{Config, Endpoint, Event};
    use deccom_core::Identity;

    const A: u32 = 1;
    const B: u32 = 2;

    struct Pair {
        now: Instant,
        a: Endpoint<u32>,
        b: Endpoint<u32>,
        got_a: Vec<Vec<u8>>,
        got_b: Vec<Vec<u8>>,
    }

    fn config(aes: bool) -> Config {
        Config {
            aes_gcm: Some(aes),
            ..Config::default()
        }
    }

    impl Pair {
        fn new(a: Config, b: Config) -> Pair {
            let now = Instant::now();
            let id_a = Identity::from_seed(&[0xa1; 32]);
            let id_b = Identity::from_seed(&[0xb2; 32]);
            Pair {
                now,
                a: Endpoint::new(&id_a, a, now, [1; 32]).unwrap(),
                b: Endpoint::new(&id_b, b, now, [2; 32]).unwrap(),
                got_a: Vec::new(),
                got_b: Vec::new(),
            }
        }

        /// Delivers every datagram both ways (optionally rewritten by `edit`) until quiet.
        fn pump_with(&mut self, mut edit: impl FnMut(u32, &mut Vec<u8>)) {
            let mut buf = Vec::new();
            for _ in 0..1000 {
                let mut moved = false;
                while let Some(to) = self.a.poll_transmit(&mut buf) {
                    assert_eq!(to, B);
                    edit(A, &mut buf);
                    self.b.handle_datagram(self.now, A, &buf);
                    moved = true;
                }
                while let Some(to) = self.b.poll_transmit(&mut buf) {
                    assert_eq!(to, A);
                    edit(B, &mut buf);
                    self.a.handle_datagram(self.now, B, &buf);
                    moved = true;
                }
                while let Some(e) = self.a.poll_event() {
                    if let Event::Message { data, .. } = e {
                        self.got_a.push(data);
                    }
                }
                while let Some(e) = self.b.poll_event() {
                    if let Event::Message { data, .. } = e {
                        self.got_b.push(data);
                    }
                }
                if !moved {
                    return;
                }
            }
            panic!("never quiet");
        }

        fn pump(&mut self) {
            self.pump_with(|_, _| {});
        }

        /// Connects A to B (XX), then sends one message each way; returns the suite counters.
        fn connect_and_talk(&mut self) -> (u64, u64) {
            let now = self.now;
            self.a.connect(now, B, None);
            self.pump();
            assert!(self.a.is_authenticated(B).is_some(), "{:?}", self.a.stats());
            assert!(self.b.is_authenticated(A).is_some(), "{:?}", self.b.stats());
            self.talk();
            (
                self.a.stats().sessions_aes_gcm,
                self.b.stats().sessions_aes_gcm,
            )
        }

        fn talk(&mut self) {
            let now = self.now;
            self.got_a.clear();
            self.got_b.clear();
            self.a.send(now, B, b"from a").unwrap();
            self.b.send(now, A, b"from b").unwrap();
            self.pump();
            assert_eq!(self.got_b, vec![b"from a".to_vec()]);
            assert_eq!(self.got_a, vec![b"from b".to_vec()]);
        }
    }

    #[test]
    fn both_prefer_aes_gcm_the_session_uses_it() {
        let mut p = Pair::new(config(true), config(true));
        assert_eq!(p.connect_and_talk(), (1, 1));
    }

    #[test]
    fn either_side_not_preferring_aes_gcm_gives_chacha() {
        for (a, b) in [(true, false), (false, true), (false, false)] {
            let mut p = Pair::new(config(a), config(b));
            assert_eq!(p.connect_and_talk(), (0, 0), "initiator {a}, responder {b}");
        }
    }

    /// The offer is part of the transcript: the same seeds with another offer give another
    /// handshake hash (and so other session keys).
    #[test]
    fn the_offer_is_part_of_the_transcript() {
        let mut aes = Pair::new(config(true), config(true));
        aes.connect_and_talk();
        let mut cha = Pair::new(config(false), config(false));
        cha.connect_and_talk();
        assert_ne!(aes.a.handshake_hash(B), cha.a.handshake_hash(B));
    }

    /// Rekeys go through IK: the first session showed both sides read offers, so the IK
    /// initiation offers again and the new session keeps AES-256-GCM.
    #[test]
    fn rekey_through_ik_keeps_the_suite() {
        let cfg = || Config {
            rekey_after_messages: 3,
            ..config(true)
        };
        let mut p = Pair::new(cfg(), cfg());
        assert_eq!(p.connect_and_talk(), (1, 1));
        for _ in 0..6 {
            p.now += Duration::from_millis(10);
            p.talk();
        }
        let (sa, sb) = (p.a.stats(), p.b.stats());
        assert!(sa.rekeys + sb.rekeys >= 1, "{sa:?} / {sb:?}");
        assert_eq!(
            sa.sessions_aes_gcm,
            1 + sa.rekeys,
            "every session of A uses AES-256-GCM: {sa:?}"
        );
        assert_eq!(
            sb.sessions_aes_gcm,
            1 + sb.rekeys,
            "every session of B uses AES-256-GCM: {sb:?}"
        );
    }

    /// A first IK initiation (the initiator learned the static key elsewhere) does not know
    /// whether the responder reads offers: it offers nothing and the session uses ChaCha20-Poly1305.
    #[test]
    fn first_ik_offers_nothing() {
        let mut p = Pair::new(config(true), config(true));
        let now = p.now;
        let rs = p.b.local_static_public_key();
        p.a.connect(now, B, Some(rs));
        p.pump();
        p.talk();
        assert_eq!(
            (p.a.stats().sessions_aes_gcm, p.b.stats().sessions_aes_gcm),
            (0, 0)
        );
    }

    /// An on-path attacker cannot turn the suite choice: the choice is inside message 2's
    /// encrypted payload, and flipping the offer in message 1 (plaintext) changes the
    /// transcript, so message 2 no longer authenticates at the initiator.
    #[test]
    fn a_tampered_offer_fails_the_handshake() {
        let mut p = Pair::new(config(true), config(true));
        let now = p.now;
        p.a.connect(now, B, None);
        let offer_at = deccom_core::noise::wire::INIT_HEADER_LEN + 32;
        p.pump_with(|from, d| {
            if from == A && d[0] == deccom_core::noise::wire::T_INIT && d.len() > offer_at {
                d[offer_at] ^= deccom_core::noise::OFFER_AES_GCM;
            }
        });
        assert!(p.a.is_authenticated(B).is_none());
        assert!(p.b.is_authenticated(A).is_none());
        assert!(
            p.a.stats().handshakes_failed_decrypt > 0,
            "{:?}",
            p.a.stats()
        );
    }
}
