//! Address validation in the Noise endpoint: no handshake message answers an unvalidated
//! (possibly spoofed) address with more bytes than the datagram that caused it.

/// Everything lives in `mod noise` so that `cargo test -p deccom-core noise` selects these tests.
mod noise {
    use std::time::{Duration, Instant};

    use deccom_core::noise::wire::{self, XX_INIT_NOISE_LEN};
    use deccom_core::noise::{static_public_key, Config, Endpoint};
    use deccom_core::Identity;

    const A: u32 = 1;
    const B: u32 = 2;

    fn pair() -> (Instant, Endpoint<u32>, Endpoint<u32>, Identity) {
        let now = Instant::now();
        let id_a = Identity::from_seed(&[0xa1; 32]);
        let id_b = Identity::from_seed(&[0xb2; 32]);
        let a = Endpoint::new(&id_a, Config::default(), now, [1; 32]).unwrap();
        let b = Endpoint::new(&id_b, Config::default(), now, [2; 32]).unwrap();
        (now, a, b, id_b)
    }

    /// Every datagram `ep` has queued.
    fn drain(ep: &mut Endpoint<u32>) -> Vec<(u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        while let Some(to) = ep.poll_transmit(&mut buf) {
            out.push((to, buf.clone()));
        }
        out
    }

    fn one(ep: &mut Endpoint<u32>) -> Vec<u8> {
        let mut d = drain(ep);
        assert_eq!(d.len(), 1, "exactly one datagram expected");
        d.pop().unwrap().1
    }

    #[test]
    fn xx_initiation_is_padded_to_the_size_of_the_response() {
        let (now, mut a, mut b, _) = pair();
        a.connect(now, B, None);
        let init = one(&mut a);
        assert_eq!(init[0], wire::T_INIT);
        assert_eq!(init.len(), wire::INIT_HEADER_LEN + XX_INIT_NOISE_LEN);
        // The padding is message 1's payload after the ephemeral key: the suite offer byte,
        // then zero bytes.
        let pad = &init[wire::INIT_HEADER_LEN + 32..];
        assert!(pad[0] == 0 || pad[0] == deccom_core::noise::OFFER_AES_GCM);
        assert!(pad[1..].iter().all(|&x| x == 0));
        b.handle_datagram(now, A, &init);
        let resp = one(&mut b);
        assert_eq!(resp[0], wire::T_RESPONSE);
        assert_eq!(resp.len(), init.len(), "as long as the initiation, never longer");
        // The handshake completes as before.
        a.handle_datagram(now, B, &resp);
        let fin = one(&mut a);
        b.handle_datagram(now, A, &fin);
        assert!(a.is_authenticated(B).is_some());
        assert!(b.is_authenticated(A).is_some());
    }

    #[test]
    fn unpadded_xx_initiation_gets_only_a_cookie_reply_no_longer_than_it() {
        let (now, mut a, mut b, _) = pair();
        a.connect(now, B, None);
        let init = one(&mut a);
        // The same initiation without its padding: a valid Noise message 1 with an empty payload.
        let unpadded = &init[..wire::INIT_HEADER_LEN + 32];
        b.handle_datagram(now, A, unpadded);
        let reply = one(&mut b);
        assert_eq!(reply[0], wire::T_COOKIE);
        assert!(reply.len() <= unpadded.len());
        let s = b.stats();
        assert_eq!(s.unpadded_initiations, 1);
        assert_eq!(s.half_open, 0, "no handshake state for an unvalidated address");
        // Re-sent many times (a reflection attempt), each answer stays a cookie reply, and the
        // per-source limit bounds them.
        for _ in 0..100 {
            b.handle_datagram(now, A, unpadded);
        }
        let replies = drain(&mut b);
        assert!(replies.iter().all(|(_, d)| d[0] == wire::T_COOKIE && d.len() <= unpadded.len()));
        assert!(replies.len() <= 10, "{} cookie replies", replies.len());
        // The initiator takes the cookie and re-sends its (padded) initiation with the MAC: the
        // responder answers it with message 2 and the handshake completes.
        a.handle_datagram(now, B, &reply);
        let retry = one(&mut a);
        assert_eq!(retry.len(), init.len() + wire::MAC_LEN);
        let now = now + Duration::from_secs(1);
        b.handle_datagram(now, A, &retry);
        let resp = one(&mut b);
        assert_eq!(resp[0], wire::T_RESPONSE);
        a.handle_datagram(now, B, &resp);
        let fin = one(&mut a);
        b.handle_datagram(now, A, &fin);
        assert!(b.is_authenticated(A).is_some());
    }

    #[test]
    fn ik_response_is_shorter_than_the_initiation() {
        let (now, mut a, mut b, id_b) = pair();
        a.connect(now, B, Some(static_public_key(&id_b).unwrap()));
        let init = one(&mut a);
        b.handle_datagram(now, A, &init);
        let resp = one(&mut b);
        assert_eq!(resp[0], wire::T_RESPONSE);
        assert!(resp.len() <= init.len(), "{} > {}", resp.len(), init.len());
    }

    /// A transport datagram for a session nobody has (as an attacker would spoof it).
    fn fake_transport(len: usize) -> Vec<u8> {
        let mut d = vec![wire::T_TRANSPORT];
        d.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        d.extend_from_slice(&7u64.to_be_bytes());
        d.resize(len, 0xab);
        d
    }

    #[test]
    fn unknown_session_reconnect_never_sends_more_than_it_received() {
        let (mut now, _, mut b, _) = pair();
        // Datagrams shorter than an unpadded initiation (a 29-byte keepalive) start nothing.
        for len in [29, 39] {
            b.handle_datagram(now, 9, &fake_transport(len));
            assert!(drain(&mut b).is_empty(), "{len}");
        }
        assert_eq!(b.stats().reconnect_too_small, 2);
        // A short data datagram gets an unpadded initiation (40 bytes), no longer than it.
        let short = fake_transport(60);
        b.handle_datagram(now, 9, &short);
        let init = one(&mut b);
        assert_eq!(init[0], wire::T_INIT);
        assert_eq!(init.len(), wire::INIT_HEADER_LEN + 32);
        // The retransmission timer sends nothing more toward the unvalidated address.
        let mut sent = 0;
        for _ in 0..200 {
            now += Duration::from_millis(100);
            b.handle_timeout(now);
            sent += drain(&mut b).len();
        }
        assert_eq!(sent, 0, "no retransmission toward an unvalidated address");
        // A datagram at least as long as an initiation, on a fresh endpoint, gets a padded one.
        let (now, _, mut b2, _) = pair();
        let big = fake_transport(wire::MAX_INIT_LEN);
        b2.handle_datagram(now, 9, &big);
        let init = one(&mut b2);
        assert_eq!(init.len(), wire::INIT_HEADER_LEN + XX_INIT_NOISE_LEN);
        // Further datagrams get at most one initiation each, never longer than themselves.
        let mut answers = 0;
        for len in [29, 100, 300, 300] {
            b2.handle_datagram(now, 9, &fake_transport(len));
            for (_, d) in drain(&mut b2) {
                assert!(d.len() <= len, "{} > {len}", d.len());
                answers += 1;
            }
        }
        assert_eq!(answers, 2, "the two 300-byte datagrams");
    }
}
