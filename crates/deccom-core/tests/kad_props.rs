//! Property tests of the Kademlia core: routing-table invariants, eviction discipline, and lookup
//! convergence in an in-memory model network driven in virtual time.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use deccom_core::kad::kbucket::{InsertResult, RoutingTable, TableConfig};
use deccom_core::kad::lookup::{Lookup, LookupAction, LookupConfig};
use deccom_core::kad::{distance, highest_bit};
use proptest::prelude::*;

type Id = [u8; 32];

#[derive(Debug, Clone)]
enum Op {
    Insert(Id),
    Remove(usize),
    Ping(usize, bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => any::<[u8; 32]>().prop_map(Op::Insert),
        // ids close to the local id too, to fill the low buckets
        2 => (any::<[u8; 32]>(), 1usize..32).prop_map(|(mut id, zeros)| { for b in id.iter_mut().take(zeros / 8) { *b = 0; } Op::Insert(id) }),
        1 => any::<usize>().prop_map(Op::Remove),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(i, a)| Op::Ping(i, a)),
    ]
}

fn entries(t: &RoutingTable<u32>) -> Vec<Id> {
    t.iter().map(|e| e.id).collect()
}

fn check_invariants(t: &RoutingTable<u32>, k: usize) {
    let mut seen = HashSet::new();
    let mut total = 0;
    for b in 0..256 {
        let bucket = t.bucket(b);
        assert!(bucket.len() <= k, "bucket {b} has {} > k entries", bucket.len());
        for e in bucket {
            assert!(seen.insert(e.id), "duplicate id");
            assert_eq!(t.bucket_index(&e.id), Some(b), "entry in the wrong bucket");
            assert_ne!(&e.id, t.local_id());
        }
        total += bucket.len();
    }
    assert_eq!(total, t.len());
}

fn brute_closest(t: &RoutingTable<u32>, target: &Id, n: usize) -> Vec<Id> {
    let mut all = entries(t);
    all.sort_by_key(|id| distance(id, target));
    all.truncate(n);
    all
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// No bucket above k, ids unique, every entry in its bucket, closest() == brute force, and an
    /// entry only leaves through remove() or a failed ping.
    #[test]
    fn kad_table_invariants(local in any::<[u8; 32]>(), k in 1usize..6, ops in prop::collection::vec(op(), 1..400),
                        targets in prop::collection::vec(any::<[u8; 32]>(), 1..8), n in 0usize..30) {
        let t0 = Instant::now();
        let mut t = RoutingTable::new(local, TableConfig { k, max_replacements: 3 });
        let mut next = 0u32;
        for op in ops {
            let before: HashSet<Id> = entries(&t).into_iter().collect();
            let mut left_ok: HashSet<Id> = HashSet::new();
            match op {
                Op::Insert(mut id) => {
                    // Ids near `local` in op() are built from zeros: move them next to local.
                    if id.iter().take(4).all(|&b| b == 0) { id[..4].copy_from_slice(&local[..4]); }
                    next += 1;
                    let r = t.insert(id, next, t0);
                    if id == local { prop_assert_eq!(r, InsertResult::SelfId); }
                    if let InsertResult::Pending { to_ping } = r {
                        prop_assert!(before.contains(&to_ping));
                        prop_assert_eq!(t.bucket(t.bucket_index(&id).unwrap())[0].id, to_ping);
                    }
                    if matches!(r, InsertResult::Pending { .. } | InsertResult::Cached) {
                        prop_assert!(!t.contains(&id));
                    }
                }
                Op::Remove(i) => {
                    let all = entries(&t);
                    if !all.is_empty() {
                        let id = all[i % all.len()];
                        left_ok.insert(id);
                        let ev = t.remove(&id).unwrap();
                        prop_assert_eq!(ev.removed.id, id);
                        prop_assert!(!t.contains(&id));
                    }
                }
                Op::Ping(i, alive) => {
                    let all = entries(&t);
                    if !all.is_empty() {
                        let id = all[i % all.len()];
                        let ev = t.on_ping_result(&id, alive, t0);
                        if alive {
                            prop_assert!(ev.is_none());
                            let b = t.bucket(t.bucket_index(&id).unwrap());
                            prop_assert_eq!(b[b.len() - 1].id, id); // most recently seen
                        } else {
                            left_ok.insert(id);
                            prop_assert_eq!(ev.unwrap().removed.id, id);
                        }
                    }
                }
            }
            // Eviction discipline: nobody else left.
            for id in &before {
                prop_assert!(t.contains(id) || left_ok.contains(id), "an entry left without a failed ping or remove");
            }
            check_invariants(&t, k);
        }
        for target in targets.iter().chain(std::iter::once(&local)) {
            let got: Vec<Id> = t.closest(target, n).iter().map(|e| e.id).collect();
            prop_assert_eq!(got, brute_closest(&t, target, n));
        }
    }

    /// A full bucket never evicts on insert; the least recently seen entry goes only after a
    /// failed ping, and the newest replacement takes its place.
    #[test]
    fn kad_eviction_only_after_failed_ping(local in any::<[u8; 32]>(), extra in 1usize..10, alive in any::<bool>()) {
        let t0 = Instant::now();
        let k = 4;
        let mut t = RoutingTable::new(local, TableConfig { k, max_replacements: 5 });
        // ids in bucket 255: flip the top bit of local
        let id = |i: u8| { let mut x = local; x[0] ^= 0x80; x[31] ^= i + 1; x };
        for i in 0..k as u8 { prop_assert_eq!(t.insert(id(i), u32::from(i), t0), InsertResult::Inserted); }
        let first = t.insert(id(100), 100, t0);
        prop_assert_eq!(first, InsertResult::Pending { to_ping: id(0) });
        for j in 0..extra as u8 { prop_assert_eq!(t.insert(id(101 + j), 0, t0), InsertResult::Cached); }
        prop_assert_eq!(t.len(), k);
        prop_assert!(t.contains(&id(0)));
        let ev = t.on_ping_result(&id(0), alive, t0);
        if alive {
            prop_assert!(ev.is_none());
            prop_assert!(t.contains(&id(0)));
            prop_assert_eq!(t.bucket(255)[k - 1].id, id(0));
        } else {
            let ev = ev.unwrap();
            prop_assert_eq!(ev.removed.id, id(0));
            let newest = id(101 + extra as u8 - 1);
            prop_assert_eq!(ev.promoted.map(|e| e.id), Some(newest));
            prop_assert!(t.contains(&newest));
            prop_assert_eq!(t.len(), k);
        }
        prop_assert!(t.pending_ping(255).is_none());
    }

    /// In a model network where every node knows every other (as far as its buckets hold), a lookup
    /// finds exactly the k closest live nodes, with dead nodes and random latencies.
    #[test]
    fn kad_lookup_converges(ids in prop::collection::hash_set(any::<[u8; 32]>(), 25..150), target in any::<[u8; 32]>(),
                        dead_mask in any::<u64>(), src in any::<usize>(), delays in prop::collection::vec(1u64..400, 64)) {
        let ids: Vec<Id> = ids.into_iter().collect();
        let t0 = Instant::now();
        let k = 20;
        let tables: Vec<RoutingTable<()>> = ids.iter().map(|me| {
            let mut t = RoutingTable::new(*me, TableConfig::default());
            for other in &ids { let _ = t.insert(*other, (), t0); }
            t
        }).collect();
        let index: BTreeMap<Id, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let src = src % ids.len();
        // ~1/8 of the nodes are dead (never the source)
        let dead: HashSet<usize> = (0..ids.len()).filter(|&i| i != src && (dead_mask >> (i % 64)) & 7 == 0).collect();
        let cfg = LookupConfig { query_timeout: Duration::from_millis(500), ..LookupConfig::default() };
        let seeds = tables[src].closest(&target, k).into_iter().map(|e| (e.id, ())).collect::<Vec<_>>();
        let mut l = Lookup::new(target, seeds, cfg);
        let mut now = t0;
        let mut inflight: Vec<(Instant, Id)> = Vec::new();
        let mut steps = 0;
        loop {
            steps += 1;
            prop_assert!(steps < 100_000);
            match l.next(now) {
                LookupAction::Query(id, ()) => {
                    let i = index[&id];
                    if !dead.contains(&i) {
                        inflight.push((now + Duration::from_millis(delays[steps % delays.len()]), id));
                    }
                }
                LookupAction::Wait => {
                    let next_arrival = inflight.iter().map(|x| x.0).min();
                    let next_timeout = l.poll_timeout();
                    now = match (next_arrival, next_timeout) {
                        (Some(a), Some(b)) => a.min(b),
                        (Some(a), None) => a,
                        (None, Some(b)) => b,
                        (None, None) => { prop_assert!(false, "wait with nothing pending"); now }
                    };
                    let (due, rest): (Vec<_>, Vec<_>) = inflight.into_iter().partition(|x| x.0 <= now);
                    inflight = rest;
                    for (_, id) in due {
                        let closer = tables[index[&id]].closest(&target, k + 1).into_iter()
                            .filter(|e| e.id != ids[src]).take(k).map(|e| (e.id, ())).collect::<Vec<_>>();
                        l.on_success(&id, closer);
                    }
                }
                LookupAction::Finished => break,
            }
        }
        // Every node answers with its k closest, dead ones included, so the guarantee is: every
        // live node among the k closest of all nodes is found, and only live nodes answer.
        let mut all: Vec<usize> = (0..ids.len()).filter(|i| *i != src).collect();
        all.sort_by_key(|&i| distance(&ids[i], &target));
        let must: Vec<Id> = all.iter().take(k).filter(|i| !dead.contains(i)).map(|&i| ids[i]).collect();
        let got: Vec<Id> = l.closest().into_iter().map(|(id, ())| id).collect();
        for id in &must {
            if !got.contains(id) {
                let rank = all.iter().position(|&i| ids[i] == *id).unwrap();
                let knowers: Vec<usize> = (0..ids.len()).filter(|&i| tables[i].contains(id)).collect();
                let live_knowers: Vec<usize> = knowers.iter().copied().filter(|i| !dead.contains(i)).collect();
                let queried: Vec<usize> = l.closest().iter().map(|(x, ())| index[x]).collect();
                prop_assert!(false, "missed rank {} n={} dead={} knowers={} live_knowers={:?} answered={:?} stats={:?} depth={:?}", rank, ids.len(), dead.len(), knowers.len(), live_knowers, queried, l.stats(), l.depth(id));
            }
        }
        for id in &got { prop_assert!(!dead.contains(&index[id])); }
        let mut sorted = got.clone();
        sorted.sort_by_key(|id| distance(id, &target));
        prop_assert_eq!(&sorted, &got);
        if dead.is_empty() { prop_assert_eq!(got, must); }
        prop_assert!(l.rounds() >= 1);
    }
}

#[test]
fn kad_random_id_in_bucket_lands_there() {
    let local = [0x5a; 32];
    let t: RoutingTable<()> = RoutingTable::new(local, TableConfig::default());
    for i in 0..256 {
        let id = t.random_id_in_bucket(i, &[0xff; 32]);
        assert_eq!(highest_bit(&distance(&local, &id)), Some(i));
        let id = t.random_id_in_bucket(i, &[0; 32]);
        assert_eq!(t.bucket_index(&id), Some(i));
    }
}

#[test]
fn kad_stale_buckets_and_refresh() {
    let t0 = Instant::now();
    let local = [0; 32];
    let mut t = RoutingTable::new(local, TableConfig::default());
    assert!(t.stale_buckets(t0, Duration::from_secs(1)).is_empty());
    let mut a = [0; 32];
    a[31] = 0x10; // bucket 4
    let _ = t.insert(a, 1u32, t0);
    let stale = t.stale_buckets(t0, Duration::from_secs(1));
    assert_eq!(stale.len(), 256 - 4 - 1); // 5..=255 never active; 4 just active
    assert!(!stale.contains(&4));
    let later = t0 + Duration::from_secs(2);
    assert!(t.stale_buckets(later, Duration::from_secs(1)).contains(&4));
    t.mark_refreshed(4, later);
    assert!(!t.stale_buckets(later, Duration::from_secs(1)).contains(&4));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// touch(id) leaves the table exactly as insert(id, its current value) would: the same order
    /// in every bucket, the same pending pings, the same activity times, the same answer to a
    /// later newcomer; and it is false (changing nothing) for an absent id.
    #[test]
    fn kad_touch_is_insert_of_the_same_value(local in any::<[u8; 32]>(), k in 1usize..4,
                        ids in prop::collection::vec(any::<[u8; 32]>(), 1..120),
                        touches in prop::collection::vec((any::<usize>(), 1u64..500), 1..60),
                        newcomer in any::<[u8; 32]>()) {
        let t0 = Instant::now();
        let mut a = RoutingTable::new(local, TableConfig { k, max_replacements: 2 });
        a.set_fresh_interval(Duration::from_millis(100));
        for (i, id) in ids.iter().enumerate() {
            let _ = a.insert(*id, i as u32, t0 + Duration::from_millis(i as u64));
        }
        let mut b = a.clone();
        let present = entries(&a);
        let mut now = t0 + Duration::from_millis(ids.len() as u64);
        for (pick, step) in touches {
            now += Duration::from_millis(step);
            let id = present[pick % present.len()];
            let value = *a.get(&id).unwrap();
            prop_assert!(a.touch(&id, now));
            prop_assert_eq!(b.insert(id, value, now), InsertResult::Updated);
            prop_assert_eq!(entries(&a), entries(&b));
        }
        if !present.contains(&newcomer) {
            prop_assert!(!a.touch(&newcomer, now));
        }
        for i in 0..256 {
            prop_assert_eq!(a.pending_ping(i), b.pending_ping(i));
        }
        for ms in [0u64, 50, 150, 1000] {
            let at = now + Duration::from_millis(ms);
            prop_assert_eq!(a.stale_buckets(at, Duration::from_millis(100)), b.stale_buckets(at, Duration::from_millis(100)));
            prop_assert_eq!(a.would_admit(&newcomer, at), b.would_admit(&newcomer, at));
        }
        prop_assert_eq!(a.insert(newcomer, 999, now), b.insert(newcomer, 999, now));
        prop_assert_eq!(entries(&a), entries(&b));
    }
}
