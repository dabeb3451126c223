//! One node driven by hand: peers are records of ours that answer (or not) with crafted datagrams.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{drain, find_node, identity, nodes, pong, record, request_id, table_of, Frame};
use crate::identity::{Identity, NodeId};
use crate::kad::node::{Counter, Event, KadNode, LookupOptions, NodeConfig};
use crate::kad::wire::{self, Message};
use crate::wire::peer_record::PeerRecord;

/// Identities of the hand-made peers come from this seed; the node is identity 0.
const SEED: u64 = 0xC0FFEE;

fn node(config: NodeConfig) -> (KadNode, Instant) {
    let own = record(&identity(SEED, 0), SocketAddr::from(([127, 0, 0, 1], 9000)));
    (KadNode::new(own, config, 42), Instant::now())
}

/// Peer `i`'s record, at 10.0.i.1:4000 (one IP each: no shared budget).
fn peer(i: usize) -> PeerRecord {
    record(&identity(SEED, i), SocketAddr::from(([10, 0, i as u8, 1], 4000)))
}

fn count(node: &KadNode, c: Counter) -> u64 {
    node.counters()[c as usize]
}

/// The frames `node` sent while handling a datagram from `from`.
fn handle(node: &mut KadNode, from: SocketAddr, data: &[u8], now: Instant) -> Vec<Frame> {
    node.handle_datagram(from, data, None, now);
    drain(node, Some(from))
}

/// The one PING among `frames`, to `to`: its request id.
fn ping_to(frames: &[Frame], to: SocketAddr) -> u64 {
    let pings: Vec<&Frame> = frames.iter().filter(|f| f.data.get(1) == Some(&wire::kind::PING)).collect();
    assert_eq!(pings.len(), 1, "one PING expected");
    assert_eq!(pings[0].to, to);
    assert!(!pings[0].to_source);
    request_id(&pings[0].data)
}

/// The FIND_NODEs among `frames`: (destination, request id).
fn queries(frames: &[Frame]) -> Vec<(SocketAddr, u64)> {
    frames.iter().filter(|f| f.data.get(1) == Some(&wire::kind::FIND_NODE)).map(|f| (f.to, request_id(&f.data))).collect()
}

/// `p` asks `node` (unpadded FIND_NODE of its own id), is pinged, answers: it is in the table.
fn admit(node: &mut KadNode, p: &PeerRecord, now: Instant) {
    let frames = handle(node, p.udp, &find_node(7, &p.id, p, 0), now);
    let ping = ping_to(&frames, p.udp);
    assert!(!node.table.contains(&p.id), "a requester entered before answering the PING");
    assert!(handle(node, p.udp, &pong(ping), now).is_empty());
    assert!(node.table.contains(&p.id));
}

fn lookup_done(node: &mut KadNode) -> Option<u32> {
    let mut done = None;
    while let Some(e) = node.poll_event() {
        if let Event::LookupDone { lookup } = e {
            done = Some(lookup);
        }
    }
    done
}

#[test]
fn unsolicited_responses_change_nothing() {
    let (mut x, now) = node(NodeConfig::default());
    for i in 1..=3 {
        admit(&mut x, &peer(i), now);
    }
    let target = peer(9).id;
    let l = x.start_lookup(target, LookupOptions { ids: true, ..LookupOptions::default() }, now).expect("a lookup");
    let sent = queries(&drain(&mut x, None));
    assert_eq!(sent.len(), 3);
    let (to, id) = sent[0];
    let p = (1..=3).map(peer).find(|p| p.udp == to).expect("a query to a peer");
    // A newcomer asks and is pinged (a PING in flight).
    let v = peer(5);
    let v_ping = ping_to(&handle(&mut x, v.udp, &find_node(8, &v.id, &v, 1200), now), v.udp);
    let before = (table_of(&x), x.pending_requests(), x.lookups());
    let other = SocketAddr::from(([10, 0, 77, 1], 4000));
    let named = [peer(6), peer(7)];
    let spoofs: Vec<(SocketAddr, Vec<u8>)> = vec![
        // Unknown request ids.
        (p.udp, nodes(id ^ 0x1_0000_0000, &p, &named)),
        (p.udp, nodes(id ^ 1, &p, &named)),
        (v.udp, pong(v_ping ^ 0x8000_0000_0000_0000)),
        // The right ids from another address.
        (other, nodes(id, &p, &named)),
        (other, pong(v_ping)),
        // The right id and address, the wrong type.
        (p.udp, pong(id)),
        (v.udp, nodes(v_ping, &v, &named)),
    ];
    for (k, (from, data)) in spoofs.iter().enumerate() {
        let dropped = count(&x, Counter::dropped_unsolicited);
        assert!(handle(&mut x, *from, data, now).is_empty(), "spoof {k} was answered");
        assert_eq!(count(&x, Counter::dropped_unsolicited), dropped + 1, "spoof {k}");
        assert_eq!((table_of(&x), x.pending_requests(), x.lookups()), before, "spoof {k} changed the node");
        assert!(lookup_done(&mut x).is_none());
    }
    assert!(!x.book.is_verified(&other));
    // The requests are still in flight: the real answers count.
    assert!(handle(&mut x, v.udp, &pong(v_ping), now).is_empty());
    assert!(x.table.contains(&v.id));
    let frames = handle(&mut x, p.udp, &nodes(id, &p, &named), now);
    assert_eq!(x.pending_requests(), before.1 - 2 + queries(&frames).len());
    assert!(queries(&frames).iter().any(|q| named.iter().any(|n| n.udp == q.0)), "the answer's records are not asked");
    assert_eq!(count(&x, Counter::dropped_unsolicited), spoofs.len() as u64);
    x.abort_lookup(l);
}

#[test]
fn a_wrong_sender_fails_the_candidate() {
    let config = NodeConfig { max_failures: 1, ..NodeConfig::default() };
    let (mut x, now) = node(config);
    let p = peer(1);
    admit(&mut x, &p, now);
    let l = x.start_lookup(peer(9).id, LookupOptions { ids: true, ..LookupOptions::default() }, now).expect("a lookup");
    let sent = queries(&drain(&mut x, None));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, p.udp);
    // Another identity answers at the peer's address, with the right request id.
    let r = record(&identity(SEED, 2), p.udp);
    let named = [peer(6), peer(7)];
    let frames = handle(&mut x, p.udp, &nodes(sent[0].1, &r, &named), now);
    assert_eq!(count(&x, Counter::dropped_wrong_sender), 1);
    assert!(queries(&frames).is_empty(), "the wrong sender's records were asked");
    // The candidate failed: the lookup had nobody else, it ends with nobody answered; the entry
    // failed its one allowed query.
    assert_eq!(lookup_done(&mut x), Some(l));
    let outcome = x.take_lookup(l).expect("an outcome");
    assert_eq!((outcome.stats.failures, outcome.stats.successes), (1, 0));
    assert!(outcome.closest_ids.is_empty());
    assert!(!x.table.contains(&p.id));
    assert!(!x.table.contains(&r.id));
    assert_eq!(x.pending_requests(), 0);
    // The request was used up: the right answer now is unsolicited.
    handle(&mut x, p.udp, &nodes(sent[0].1, &p, &named), now);
    assert_eq!(count(&x, Counter::dropped_unsolicited), 1);
}

/// The NODES among `frames` to `to`.
fn answer_to(frames: &[Frame], to: SocketAddr) -> (usize, Message) {
    let a: Vec<&Frame> = frames.iter().filter(|f| f.data.get(1) == Some(&wire::kind::NODES)).collect();
    assert_eq!(a.len(), 1, "one NODES expected");
    assert!(a[0].to_source);
    assert_eq!(a[0].to, to);
    (a[0].data.len(), Message::decode(&a[0].data).expect("a valid NODES"))
}

fn nodes_of(m: &Message) -> (usize, bool) {
    match m {
        Message::Nodes { nodes, truncated, .. } => (nodes.len(), *truncated),
        _ => panic!("not a NODES"),
    }
}

#[test]
fn amplification_bound_for_unvalidated_requesters() {
    let (mut x, now) = node(NodeConfig::default());
    for i in 1..=10 {
        let p = peer(i);
        x.handle_datagram(p.udp, &find_node(1, &p.id, &p, 0), Some(&p.id), now);
        drain(&mut x, Some(p.udp));
        assert!(x.table.contains(&p.id), "a proven requester enters at once");
    }
    let target = peer(30).id;
    // Unvalidated and unpadded: cut to the request less a PING, and pinged.
    let u = peer(20);
    let req = find_node(2, &target, &u, 0);
    let frames = handle(&mut x, u.udp, &req, now);
    let (len, m) = answer_to(&frames, u.udp);
    assert!(len <= req.len() - 11, "{len} bytes answer {} bytes", req.len());
    assert_eq!(nodes_of(&m), (0, true));
    let u_ping = ping_to(&frames, u.udp);
    assert!(frames.iter().map(|f| f.data.len() + 1).sum::<usize>() <= req.len());
    // Padded: the whole answer fits in the padding.
    let w = peer(21);
    let req = find_node(3, &target, &w, 1200);
    let (len, m) = answer_to(&handle(&mut x, w.udp, &req, now), w.udp);
    assert!(len <= req.len() - 11);
    assert_eq!(nodes_of(&m), (10, false));
    // Validated (a table entry's address): the full answer to the same unpadded request.
    let p = peer(3);
    let req = find_node(4, &target, &p, 0);
    let (len, m) = answer_to(&handle(&mut x, p.udp, &req, now), p.udp);
    assert!(len > req.len());
    assert_eq!(nodes_of(&m), (10, false));
    // Validated (it answered our PING): the full answer too.
    handle(&mut x, u.udp, &pong(u_ping), now);
    assert!(x.table.contains(&u.id));
    let req = find_node(6, &target, &u, 0);
    let (len, m) = answer_to(&handle(&mut x, u.udp, &req, now), u.udp);
    assert!(len > req.len());
    assert_eq!(nodes_of(&m), (11, false));
    // A request smaller than an empty answer (a short identity): no answer at all.
    let tiny = record(&Identity::from_name("t").expect("a name"), SocketAddr::from(([10, 9, 9, 9], 4000)));
    let req = find_node(7, &target, &tiny, 0);
    let frames = handle(&mut x, tiny.udp, &req, now);
    assert_eq!(count(&x, Counter::dropped_amplification), 1);
    assert!(frames.iter().all(|f| f.data.len() < req.len()));
    assert!(frames.iter().all(|f| f.data.get(1) != Some(&wire::kind::NODES)));
}

#[test]
fn a_requester_enters_only_once_it_answers() {
    let (mut x, now) = node(NodeConfig::default());
    // It claims another address than the one it sends from: it enters at its source address.
    let u = peer(1);
    let from = SocketAddr::from(([10, 0, 50, 1], 4444));
    let ping = ping_to(&handle(&mut x, from, &find_node(1, &u.id, &u, 1200), now), from);
    assert!(!x.table.contains(&u.id));
    handle(&mut x, from, &pong(ping), now);
    let entry = x.table.get(&u.id).expect("it answered: in the table");
    assert_eq!(entry.encoded.addrs().map(|a| a.0), Some(from));
    // One that never answers never enters; the PING times out.
    let v = peer(2);
    let first = ping_to(&handle(&mut x, v.udp, &find_node(2, &v.id, &v, 1200), now), v.udp);
    // Asking again while the PING is in flight sends no second one.
    let again = handle(&mut x, v.udp, &find_node(3, &v.id, &v, 1200), now);
    assert!(again.iter().all(|f| f.data.get(1) != Some(&wire::kind::PING)));
    let at = x.poll_timeout().expect("the PING's deadline");
    assert_eq!(at, now + x.config().query_timeout);
    x.handle_timeout(at);
    assert!(drain(&mut x, None).is_empty());
    assert!(!x.table.contains(&v.id));
    assert_eq!(count(&x, Counter::request_timeouts), 1);
    assert_eq!(x.pending_requests(), 0);
    // Its late PONG is unsolicited; a new request is verified again.
    handle(&mut x, v.udp, &pong(first), at);
    assert!(!x.table.contains(&v.id));
    assert_eq!(count(&x, Counter::dropped_unsolicited), 1);
    let second = ping_to(&handle(&mut x, v.udp, &find_node(4, &v.id, &v, 1200), at), v.udp);
    assert_ne!(first, second);
    assert_eq!(table_of(&x).len(), 1);
}

#[test]
fn an_entry_announcing_another_external_address_is_updated_in_place() {
    let (mut x, now) = node(NodeConfig::default());
    let p = peer(1);
    admit(&mut x, &p, now);
    let handle0 = x.table.get(&p.id).expect("an entry").handle;
    let e = SocketAddr::from(([203, 0, 113, 5], 7000));
    handle(&mut x, p.udp, &find_node(1, &p.id, &p.clone().with_external(e), 1200), now);
    let slot = x.table.get(&p.id).expect("an entry");
    assert_eq!((slot.handle, slot.encoded.addrs()), (handle0, Some((p.udp, Some(e)))));
    assert_eq!(count(&x, Counter::peers_added), 1);
    // From another address, its record is not taken over.
    let other = SocketAddr::from(([10, 0, 60, 1], 4000));
    let e2 = SocketAddr::from(([203, 0, 113, 6], 7000));
    handle(&mut x, other, &find_node(2, &p.id, &PeerRecord { udp: other, ..p.clone().with_external(e2) }, 1200), now);
    assert_eq!(x.table.get(&p.id).expect("an entry").encoded.addrs(), Some((p.udp, Some(e))));
    // Answers serve the new record.
    let u = peer(2);
    let frames = handle(&mut x, u.udp, &find_node(3, &p.id, &u, 1200), now);
    let (_, m) = answer_to(&frames, u.udp);
    let Message::Nodes { nodes, .. } = m else { panic!("not a NODES") };
    assert_eq!(nodes, vec![p.clone().with_external(e)]);
}

/// Peers whose ids fall in node `own`'s bucket 255 (their first bit differs from its).
fn far_peers(own: &NodeId, n: usize) -> Vec<PeerRecord> {
    (1..).map(peer).filter(|p| (p.id[0] ^ own[0]) & 0x80 != 0).take(n).collect()
}

/// A node with k = 2 (pings not spared by recency) whose bucket 255 holds `a` then `b` (admitted
/// at t0 and t0 + 1 ms), and a third peer `c` for the same bucket.
fn two_entries() -> (KadNode, Instant, [PeerRecord; 3]) {
    let config = NodeConfig { k: 2, ping_interval: Duration::ZERO, ..NodeConfig::default() };
    let (mut x, t0) = node(config);
    let [a, b, c]: [PeerRecord; 3] = far_peers(&x.own.id, 3).try_into().expect("three peers");
    admit(&mut x, &a, t0);
    admit(&mut x, &b, t0 + Duration::from_millis(1));
    (x, t0, [a, b, c])
}

/// A node with k = 2 whose bucket 255 holds `a` then `b`; `c` asks, answers its verification,
/// and the bucket's least recently seen entry (`a`) is pinged: that PING's id.
fn full_bucket() -> (KadNode, Instant, [PeerRecord; 3], u64) {
    let (mut x, t0, [a, b, c]) = two_entries();
    let now = t0 + Duration::from_millis(2);
    let ping = ping_to(&handle(&mut x, c.udp, &find_node(9, &c.id, &c, 1200), now), c.udp);
    let frames = handle(&mut x, c.udp, &pong(ping), now);
    assert_eq!(count(&x, Counter::eviction_pings), 1);
    let evict = ping_to(&frames, a.udp);
    assert!(!x.table.contains(&c.id), "the newcomer entered a full bucket before the ping failed");
    (x, now, [a, b, c], evict)
}

#[test]
fn a_full_bucket_evicts_only_after_a_failed_ping() {
    // The pinged entry answers: it stays, the newcomer does not enter, even after the deadline.
    let (mut x, now, [a, b, c], evict) = full_bucket();
    handle(&mut x, a.udp, &pong(evict), now);
    x.handle_timeout(now + Duration::from_secs(5));
    assert!(drain(&mut x, None).is_empty());
    assert!(x.table.contains(&a.id) && x.table.contains(&b.id));
    assert!(!x.table.contains(&c.id));
    assert_eq!(count(&x, Counter::peers_removed), 0);
    // The pinged entry never answers: once the PING times out, the newcomer replaces it.
    let (mut x, now, [a, b, c], _) = full_bucket();
    let deadline = now + x.config().query_timeout;
    // The verification PINGs' deadlines come first (stale: they were answered).
    while let Some(at) = x.poll_timeout().filter(|&t| t < deadline) {
        x.handle_timeout(at);
        assert!(x.table.contains(&a.id), "evicted before its PING's deadline");
    }
    assert_eq!(x.poll_timeout(), Some(deadline));
    x.handle_timeout(deadline);
    assert!(!x.table.contains(&a.id));
    assert!(x.table.contains(&b.id) && x.table.contains(&c.id));
    assert_eq!(count(&x, Counter::peers_removed), 1);
    assert!(!x.is_entry_address(&a.udp));
    assert!(x.is_entry_address(&c.udp));
}

#[test]
fn an_entry_heard_from_after_its_eviction_ping_stays() {
    // The PONG to the eviction PING is lost, but the entry asks us something from its address
    // before the PING's deadline: it is alive, and stays; the newcomer waits in the cache.
    // (Engine fix: the PING's timeout used to evict it anyway, although the table had taken its
    // request as the PING's answer: a lost PONG replaced an entry that had just been heard from.
    // `ping_result` now ignores a failed PING whose bucket no longer waits for it.)
    let (mut x, now, [a, b, c], _) = full_bucket();
    let later = now + Duration::from_millis(100);
    handle(&mut x, a.udp, &find_node(11, &a.id, &a, 1200), later);
    let deadline = now + x.config().query_timeout;
    while let Some(at) = x.poll_timeout().filter(|&t| t <= deadline) {
        x.handle_timeout(at);
    }
    assert_eq!(count(&x, Counter::request_timeouts), 1);
    assert!(x.table.contains(&a.id), "an entry heard from after its eviction PING was evicted");
    assert!(x.table.contains(&b.id) && !x.table.contains(&c.id));
    assert_eq!(count(&x, Counter::peers_removed), 0);
}

#[test]
fn a_record_from_another_address_is_no_sign_of_life() {
    // Anyone may send a FIND_NODE carrying a table entry's (public) record from its own address.
    // Were that counted as the entry seen (its failures reset, moved to the tail, its bucket's
    // pending eviction PING taken as answered), one datagram a minute would keep a dead entry in
    // the table. Only the entry's address speaks for it.
    let (mut x, t0, [a, _, c]) = two_entries();
    let now = t0 + Duration::from_millis(2);
    let z = SocketAddr::from(([10, 0, 99, 1], 4000));
    handle(&mut x, z, &find_node(12, &a.id, &a, 1200), now);
    // `a` is still the least recently seen entry: a newcomer's admission pings it.
    let ping = ping_to(&handle(&mut x, c.udp, &find_node(13, &c.id, &c, 1200), now), c.udp);
    ping_to(&handle(&mut x, c.udp, &pong(ping), now), a.udp);
}

#[test]
fn an_entry_answering_for_another_address_is_no_sign_of_life() {
    // The same rule for answers: a findPeer of the entry `a` (the table's `a` is asked apart) learns
    // a claim of it at another address `z`; whoever is at `z` answers with `a`'s (public) record.
    // That is no sign of life of the entry `a` at its own address.
    let (mut x, t0, [a, b, c]) = two_entries();
    let now = t0 + Duration::from_millis(2);
    let z = SocketAddr::from(([10, 0, 99, 1], 4000));
    let a_at_z = PeerRecord { udp: z, ..a.clone() };
    x.start_lookup(a.id, LookupOptions { stop: true, ..LookupOptions::default() }, now).expect("a lookup");
    let first = queries(&drain(&mut x, None));
    assert_eq!(first.iter().map(|q| q.0).collect::<Vec<_>>(), vec![b.udp], "only b is a seed");
    let claim = queries(&handle(&mut x, b.udp, &nodes(first[0].1, &b, std::slice::from_ref(&a_at_z)), now));
    assert_eq!(claim.iter().map(|q| q.0).collect::<Vec<_>>(), vec![z], "the claim at z is asked");
    handle(&mut x, z, &nodes(claim[0].1, &a_at_z, &[]), now);
    assert_eq!(count(&x, Counter::claims_verified), 1);
    // `a` is still the least recently seen entry (b answered since): a newcomer's admission pings it.
    let ping = ping_to(&handle(&mut x, c.udp, &find_node(13, &c.id, &c, 1200), now), c.udp);
    ping_to(&handle(&mut x, c.udp, &pong(ping), now), a.udp);
}

#[test]
fn false_claims_do_not_hide_the_target() {
    // findPeer asks at most MAX_CLAIMS (8) claimed addresses of the target, first come first
    // asked. Were any number taken from one answer, one node on the path naming the target at 8
    // false addresses would fill them: the real address, named by an honest node, never asked.
    // One claim per answer: the real address is asked, and the target found there, verified.
    let (mut x, now) = node(NodeConfig::default());
    let honest: Vec<PeerRecord> = (1..=3).map(peer).collect();
    for p in &honest {
        admit(&mut x, p, now);
    }
    let t = peer(9);
    let l = x.start_lookup(t.id, LookupOptions { stop: true, ..LookupOptions::default() }, now).expect("a lookup");
    let sent = queries(&drain(&mut x, None));
    assert_eq!(sent.len(), 3);
    let id_of = |to: SocketAddr| sent.iter().find(|q| q.0 == to).expect("a query").1;
    let false_claims: Vec<PeerRecord> = (1..=8).map(|k| PeerRecord { udp: SocketAddr::from(([192, 0, 2, k], 4000)), ..t.clone() }).collect();
    let mut frames = handle(&mut x, honest[0].udp, &nodes(id_of(honest[0].udp), &honest[0], &false_claims), now);
    frames.extend(handle(&mut x, honest[1].udp, &nodes(id_of(honest[1].udp), &honest[1], std::slice::from_ref(&t)), now));
    frames.extend(handle(&mut x, honest[2].udp, &nodes(id_of(honest[2].udp), &honest[2], &[]), now));
    // The target answers at its address; nothing answers at the false ones.
    let mut clock = now;
    for _ in 0..100 {
        for (to, id) in queries(&frames) {
            if to == t.udp {
                handle(&mut x, t.udp, &nodes(id, &t, &[]), clock);
            }
        }
        if let Some(done) = lookup_done(&mut x) {
            assert_eq!(done, l);
            let outcome = x.take_lookup(l).expect("an outcome");
            assert!(outcome.verified, "not verified: found at {:?}", outcome.found.and_then(|f| f.addrs()));
            return;
        }
        clock = x.poll_timeout().expect("a timer while the lookup runs").max(clock);
        x.handle_timeout(clock);
        frames = drain(&mut x, None);
    }
    panic!("the lookup did not end");
}

#[test]
fn a_second_bootstrap_ends_the_first_and_its_late_answers_count_for_nothing() {
    let (mut x, now) = node(NodeConfig::default());
    let (a, b) = (peer(1), peer(2));
    let first = x.bootstrap(&[a.udp], now);
    let to_a = queries(&drain(&mut x, None));
    assert_eq!(to_a.len(), 1);
    let second = x.bootstrap(&[b.udp], now);
    assert_ne!(first, second);
    let to_b = queries(&drain(&mut x, None));
    assert_eq!(to_b.iter().map(|q| q.0).collect::<Vec<_>>(), vec![b.udp]);
    // The first join ended, without seeds.
    assert_eq!(lookup_done(&mut x), Some(first));
    assert_eq!(x.take_lookup(first).expect("an outcome").seeds, 0);
    // A's late answer (it names C) does not end or feed the second join.
    let c = peer(3);
    handle(&mut x, a.udp, &nodes(to_a[0].1, &a, std::slice::from_ref(&c)), now);
    assert_eq!(lookup_done(&mut x), None, "the second join ended on the first one's answer");
    // B answers: the second join goes on with B's seeds (and ends once its self-lookup does).
    let frames = handle(&mut x, b.udp, &nodes(to_b[0].1, &b, &[]), now);
    let asked: Vec<SocketAddr> = queries(&frames).into_iter().map(|q| q.0).collect();
    assert!(!asked.contains(&c.udp), "a seed of the ended join was asked: {asked:?}");
}

#[test]
fn a_request_too_small_for_any_answer_does_not_count_as_verifying_us() {
    // Our record is long (a 200-byte name identity): a NODES, even empty, exceeds what an
    // unvalidated requester's unpadded FIND_NODE allows.
    let name = "n".repeat(200);
    let own = record(&Identity::from_name(&name).expect("a name identity"), SocketAddr::from(([127, 0, 0, 1], 9000)));
    let mut x = KadNode::new(own, NodeConfig::default(), 42);
    let now = Instant::now();
    let z = peer(7);
    let frames = handle(&mut x, z.udp, &find_node(11, &z.id, &z, 0), now);
    assert!(frames.iter().all(|f| !f.to_source), "something was answered to a request too small for it");
    assert_eq!(count(&x, Counter::dropped_amplification), 1);
    assert!(!x.book.is_verified_by(&z.udp), "a requester that got no answer counts as having verified us");
}

#[test]
fn a_lookup_keeps_who_named_each_record_through_the_records_compaction() {
    // Answers naming ever-closer nodes (farthest handed out first, 30 per answer, each named once)
    // make the lookup drop the records of peers that are no longer candidates, many times over.
    // A node the lookup asks is still known as named by the peer whose answer named it.
    let (mut x, now) = node(NodeConfig::default());
    let seeds: Vec<PeerRecord> = (1..=3).map(peer).collect();
    for p in &seeds {
        admit(&mut x, p, now);
    }
    let target = [0u8; 32];
    let dist = |id: &NodeId| -> Vec<u8> { id.iter().zip(target).map(|(a, b)| a ^ b).collect() };
    let mut pool: Vec<PeerRecord> = (0..1500).map(|i| record(&identity(SEED, 1000 + i), SocketAddr::from(([10, 1 + (i >> 8) as u8, i as u8, 2], 4000)))).collect();
    pool.sort_by_key(|p| std::cmp::Reverse(dist(&p.id)));
    let mut pool = pool.into_iter();
    let l = x.start_lookup(target, LookupOptions { records: true, ..LookupOptions::default() }, now).expect("a lookup");
    let mut by_addr: std::collections::HashMap<SocketAddr, (PeerRecord, Option<SocketAddr>)> = seeds.iter().map(|p| (p.udp, (p.clone(), None))).collect();
    let mut pending = queries(&drain(&mut x, None));
    let (mut asked, mut max_kept, mut compacted) = (0, 0, false);
    for _ in 0..100 {
        let mut next = Vec::new();
        for (to, id) in pending {
            let (p, named_by) = by_addr.get(&to).cloned().expect("a query to a node named to the lookup");
            assert_eq!(x.tellers.teller_of(&to), named_by, "who named {to}");
            asked += 1;
            let named: Vec<PeerRecord> = pool.by_ref().take(30).collect();
            for n in &named {
                by_addr.insert(n.udp, (n.clone(), Some(to)));
            }
            next.extend(queries(&handle(&mut x, to, &nodes(id, &p, &named), now)));
            let kept = x.lookup_records(l).expect("the lookup runs");
            compacted |= kept < max_kept;
            max_kept = max_kept.max(kept);
        }
        pending = next;
        if pending.is_empty() {
            break;
        }
    }
    assert!(asked >= 40, "{asked} nodes asked");
    assert!(compacted && max_kept <= 4 * 8 * 20, "{max_kept} records kept at most, compacted: {compacted}");
}
