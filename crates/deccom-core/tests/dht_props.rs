//! DHT storage: bounds hold under any sequence of puts, expiry removes exactly what expired, the
//! server refuses what it must, replies to unproven addresses are never larger than the request,
//! and the decoder is total.

use deccom_core::dht::records::{AnnounceRecord, MutableRecord};
use deccom_core::dht::server::{Event, Server, ServerConfig};
use deccom_core::dht::store::{SourceIp, Store, StoreConfig};
use deccom_core::dht::wire::{self, Message};
use deccom_core::dht::{Kind, Status, MAX_REPLY};
use deccom_core::Identity;
use proptest::prelude::*;

fn cfg() -> StoreConfig {
    StoreConfig {
        max_records: 30,
        max_per_topic: 8,
        max_per_source: 12,
        max_ttl_ms: 50_000,
        value_ttl_ms: 30_000,
        put_rate: 1000.0,
        put_burst: 1000.0,
        max_sources: 4,
    }
}

#[derive(Clone, Debug)]
enum Op {
    Announce { topic: u8, who: u8, source: u8, seq: u8, ttl: u8 },
    Put { value: u8, source: u8 },
    PutMutable { owner: u8, seq: u8, cas: Option<u8>, source: u8 },
    Advance(u16),
    Expire,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..4, 0u8..30, 0u8..6, 0u8..8, 0u8..60).prop_map(|(topic, who, source, seq, ttl)| Op::Announce { topic, who, source, seq, ttl }),
        (any::<u8>(), 0u8..6).prop_map(|(value, source)| Op::Put { value, source }),
        (0u8..10, 0u8..8, proptest::option::of(0u8..8), 0u8..6).prop_map(|(owner, seq, cas, source)| Op::PutMutable { owner, seq, cas, source }),
        (0u16..20_000).prop_map(Op::Advance),
        Just(Op::Expire),
    ]
}

fn src(i: u8) -> SourceIp {
    let mut s = [0u8; 16];
    s[15] = i;
    s
}

fn announce(who: u8, seq: u8, ttl: u8) -> AnnounceRecord {
    let mut identity = [who; 33];
    identity[0] = 1;
    AnnounceRecord { identity, addr: [who; 18], seq: u64::from(seq), ttl: u32::from(ttl), signature: [0; 64] }
}

fn check(s: &Store) {
    let c = s.config();
    assert!(s.len() <= c.max_records, "total {} > {}", s.len(), c.max_records);
    for t in 0..4u8 {
        assert!(s.topic_len(&[t; 32]) <= c.max_per_topic);
    }
    let mut per = std::collections::HashMap::new();
    for (_, source) in s.expiries() {
        *per.entry(*source).or_insert(0usize) += 1;
    }
    assert_eq!(per.values().sum::<usize>(), s.len(), "per-source accounting");
    for (source, n) in per {
        assert_eq!(s.source_len(&source), n);
        assert!(n <= c.max_per_source);
    }
    assert!(s.bucket_count() <= c.max_sources);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn bounds_hold_and_expiry_removes_what_it_must(ops in proptest::collection::vec(op(), 1..200)) {
        let mut s = Store::new(cfg());
        let mut now = 1_000u64;
        for o in ops {
            match o {
                Op::Announce { topic, who, source, seq, ttl } => {
                    let _ = s.allow_put(&src(source), now);
                    let _ = s.announce(&[topic; 32], &announce(who, seq, ttl), src(source), now);
                }
                Op::Put { value, source } => {
                    let _ = s.put_immutable(&[value; 3], src(source), now);
                }
                Op::PutMutable { owner, seq, cas, source } => {
                    let rec = MutableRecord { public_key: [owner; 32], salt: vec![], seq: u64::from(seq), value: vec![seq], signature: [0; 64] };
                    let _ = s.put_mutable(&rec, cas.map(u64::from), src(source), now);
                }
                Op::Advance(ms) => now += u64::from(ms),
                Op::Expire => {
                    let live = s.expiries().filter(|(e, _)| *e > now).count();
                    s.expire(now);
                    prop_assert!(s.expiries().all(|(e, _)| e > now), "an expired record survived");
                    prop_assert_eq!(s.len(), live, "a live record was removed");
                }
            }
            check(&s);
        }
    }

    #[test]
    fn decode_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
        let _ = wire::decode(&bytes);
        let mut b = bytes.clone();
        if b.len() >= 2 {
            b[0] = 1;
            b[1] = (b[1] % 8).max(1);
            let _ = wire::decode(&b);
        }
    }

    #[test]
    fn replies_to_unproven_sources_are_never_larger_than_the_request(pad in 0usize..1600, kind in 1u8..4, n in 0usize..40) {
        let mut server = Server::new(ServerConfig::default(), [7; 32]);
        let id = Identity::from_seed(&[3; 32]);
        let topic = [9u8; 32];
        // Fill the topic with n announcers (through the store: signatures are not the point here).
        for i in 0..n {
            let a = announce(i as u8, 1, 60);
            let _ = server.store_mut().announce(&topic, &a, src(i as u8), 0);
        }
        let _ = id;
        let kind = Kind::from_u8(kind).unwrap();
        let get = wire::encode_get(1, kind, &topic, &[0; 16], 0, pad);
        let nodes: Vec<([u8; 32], [u8; 18])> = (0..20u8).map(|i| ([i; 32], [i; 18])).collect();
        let h = server.handle(&get, &[1; 18], &nodes, 1);
        match h.reply {
            Some(r) => {
                prop_assert!(r.len() <= get.len(), "reply {} > request {}", r.len(), get.len());
                prop_assert!(wire::decode(&r).is_ok());
            }
            None => prop_assert_eq!(h.event, Event::Amplification),
        }
    }
}

fn signed_announce(id: &Identity, topic: &[u8; 32], addr: [u8; 18], seq: u64, ttl: u32) -> AnnounceRecord {
    let m = AnnounceRecord::message(topic, &addr, seq, ttl);
    let identity: [u8; 33] = id.public_identity_bytes().try_into().unwrap();
    AnnounceRecord { identity, addr, seq, ttl, signature: id.sign(&m).unwrap() }
}

fn signed_mutable(id: &Identity, salt: &[u8], seq: u64, value: &[u8]) -> MutableRecord {
    let public_key: [u8; 32] = id.public_identity_bytes()[1..].try_into().unwrap();
    let signature = id.sign(&MutableRecord::message(salt, seq, value)).unwrap();
    MutableRecord { public_key, salt: salt.to_vec(), seq, value: value.to_vec(), signature }
}

fn ack(h: &deccom_core::dht::server::Handled) -> Status {
    match wire::decode(h.reply.as_ref().unwrap()).unwrap() {
        Message::Ack { status, .. } => status,
        m => panic!("not an ACK: {m:?}"),
    }
}

#[test]
fn puts_need_a_token_of_their_source() {
    let mut server = Server::new(ServerConfig::default(), [1; 32]);
    let me = [5u8; 18];
    let id = Identity::from_seed(&[2; 32]);
    let topic = [4u8; 32];
    let rec = signed_announce(&id, &topic, me, 1, 60);
    let h = server.handle(&wire::encode_announce(1, &[0; 16], &topic, &rec), &me, &[], 0);
    assert_eq!(ack(&h), Status::BadToken);
    // A token given to another address does not work from this one (a spoofed source never got one).
    let other = server.token(&[6; 18]);
    let h = server.handle(&wire::encode_announce(2, &other, &topic, &rec), &me, &[], 0);
    assert_eq!(ack(&h), Status::BadToken);
    let t = server.token(&me);
    let h = server.handle(&wire::encode_announce(3, &t, &topic, &rec), &me, &[], 0);
    assert_eq!(ack(&h), Status::Ok);
    assert_eq!(server.store().topic_len(&topic), 1);
    // Still valid after one rotation, not after two.
    server.rotate([2; 32]);
    assert!(server.token_valid(&me, &t));
    server.rotate([3; 32]);
    assert!(!server.token_valid(&me, &t));
}

#[test]
fn forged_lower_seq_cas_and_address_mismatch_are_refused() {
    let mut server = Server::new(ServerConfig::default(), [1; 32]);
    let me = [5u8; 18];
    let t = server.token(&me);
    let owner = Identity::from_seed(&[8; 32]);
    let put = |s: &mut Server, rec: &MutableRecord, cas: Option<u64>| {
        let h = s.handle(&wire::encode_put_mutable(1, &t, rec, cas), &me, &[], 10);
        ack(&h)
    };
    assert_eq!(put(&mut server, &signed_mutable(&owner, b"s", 5, b"v5"), None), Status::Ok);
    assert_eq!(put(&mut server, &signed_mutable(&owner, b"s", 4, b"v4"), None), Status::LowerSeq);
    assert_eq!(put(&mut server, &signed_mutable(&owner, b"s", 7, b"v7"), Some(6)), Status::CasMismatch);
    let mut forged = signed_mutable(&owner, b"s", 9, b"v9");
    forged.value = b"evil".to_vec();
    assert_eq!(put(&mut server, &forged, None), Status::BadSignature);
    assert_eq!(put(&mut server, &signed_mutable(&owner, b"s", 7, b"v7"), Some(5)), Status::Ok);
    // An announce whose signed address is not its source.
    let id = Identity::from_seed(&[2; 32]);
    let rec = signed_announce(&id, &[4; 32], [6; 18], 1, 60);
    let h = server.handle(&wire::encode_announce(1, &t, &[4; 32], &rec), &me, &[], 0);
    assert_eq!(ack(&h), Status::AddressMismatch);
    // Replayed for another topic: the signature binds the topic.
    let rec = signed_announce(&id, &[4; 32], me, 1, 60);
    let h = server.handle(&wire::encode_announce(1, &t, &[5; 32], &rec), &me, &[], 0);
    assert_eq!(ack(&h), Status::BadSignature);
    // Oversized values do not even decode.
    let mut big = wire::encode_put(1, &t, &[0; 10]);
    big[26..28].copy_from_slice(&1001u16.to_be_bytes());
    big.resize(28 + 1001, 0);
    assert_eq!(server.handle(&big, &me, &[], 0).event, Event::Malformed(wire::DecodeError::TooLarge));
}

#[test]
fn a_new_announcer_is_told_to_recent_lookers() {
    let mut server = Server::new(ServerConfig::default(), [1; 32]);
    let topic = [4u8; 32];
    let (a, b) = ([5u8; 18], [6u8; 18]);
    let ia = Identity::from_seed(&[2; 32]);
    let ib = Identity::from_seed(&[3; 32]);
    let ta = server.token(&a);
    let tb = server.token(&b);
    let h = server.handle(&wire::encode_announce(1, &ta, &topic, &signed_announce(&ia, &topic, a, 1, 60)), &a, &[], 0);
    assert_eq!(ack(&h), Status::Ok);
    assert!(h.notify.is_none());
    let h = server.handle(&wire::encode_announce(1, &tb, &topic, &signed_announce(&ib, &topic, b, 1, 60)), &b, &[], 1);
    assert_eq!(h.notify_to, vec![a]);
    match wire::decode(h.notify.as_ref().unwrap()).unwrap() {
        Message::Notify { topic: t, record } => {
            assert_eq!(t, topic);
            assert!(record.verify(&topic));
            assert_eq!(record.addr, b);
        }
        m => panic!("{m:?}"),
    }
    // A refresh of the same announcer at the same address tells nobody.
    let h = server.handle(&wire::encode_announce(1, &tb, &topic, &signed_announce(&ib, &topic, b, 2, 60)), &b, &[], 2);
    assert!(h.notify.is_none());
    // Withdrawal removes it; GET with a token gets the rest.
    let h = server.handle(&wire::encode_announce(1, &tb, &topic, &signed_announce(&ib, &topic, b, 3, 0)), &b, &[], 3);
    assert_eq!(h.event, Event::Withdrawn);
    let h = server.handle(&wire::encode_get(9, Kind::Topic, &topic, &ta, 0, 0), &a, &[], 4);
    match wire::decode(h.reply.as_ref().unwrap()).unwrap() {
        Message::Reply { total, records, .. } => {
            assert_eq!(total, 1);
            assert_eq!(records.len(), 1);
        }
        m => panic!("{m:?}"),
    }
    assert!(h.reply.unwrap().len() <= MAX_REPLY);
}

#[test]
fn put_rate_is_limited_per_source() {
    let mut cfg = ServerConfig::default();
    cfg.store.put_rate = 1.0;
    cfg.store.put_burst = 3.0;
    let mut server = Server::new(cfg, [1; 32]);
    let me = [5u8; 18];
    let t = server.token(&me);
    let statuses: Vec<Status> = (0..5u8).map(|i| ack(&server.handle(&wire::encode_put(1, &t, &[i]), &me, &[], 0))).collect();
    assert_eq!(statuses, vec![Status::Ok, Status::Ok, Status::Ok, Status::RateLimited, Status::RateLimited]);
    assert_eq!(ack(&server.handle(&wire::encode_put(1, &t, &[9]), &me, &[], 1000)), Status::Ok);
}
