//! Routing-table entries whose ids agree in the 64 bits below their bucket's bit (the key each
//! bucket sorts and searches by): lookups by id, the replacement cache and closest-queries fall
//! back to the whole ids, with the keys inside the bucket (k <= 20) or on the heap (larger k).

use std::time::Instant;

use deccom_core::kad::kbucket::{InsertResult, RoutingTable, TableConfig};
use deccom_core::kad::{bit, distance};

mod kad_ids;
use kad_ids::{random_ids, Id};

/// Distinct ids of bucket `b` of the zero id that agree in the 64 bits below bit `b`: below
/// those, random bits (half of them) or one bit changed.
fn same_key(b: usize, n: usize, seed: u64) -> Vec<Id> {
    let base = random_ids(1, seed)[0];
    let mut ids: Vec<Id> = random_ids(n, seed + 1)
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let mut id = [0u8; 32];
            for p in 0..b {
                let from = if p + 64 < b && i % 2 == 0 { &r } else { &base };
                if bit(from, p) {
                    id[31 - p / 8] |= 1 << (p % 8);
                }
            }
            if i % 2 == 1 {
                let p = i % (b - 64);
                id[31 - p / 8] ^= 1 << (p % 8);
            }
            id[31 - b / 8] |= 1 << (b % 8);
            id
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    for id in &ids {
        assert!((b - 64..b).all(|p| bit(id, p) == bit(&base, p)));
    }
    ids
}

#[test]
fn equal_keys_fall_back_to_whole_ids() {
    let now = Instant::now();
    for k in [12, 30] {
        for b in [80, 100, 191, 200, 255] {
            let ids = same_key(b, 72, b as u64);
            assert!(ids.len() > k + 8, "bucket {b}: {} ids", ids.len());
            let mut t = RoutingTable::new([0u8; 32], TableConfig { k, max_replacements: 8 });
            for (i, id) in ids.iter().enumerate() {
                assert_eq!(t.bucket_index(id), Some(b));
                let r = t.insert(*id, i, now);
                assert_eq!(r == InsertResult::Inserted, i < k, "bucket {b} id {i}: {r:?}");
            }
            // Present, cached and absent ids are told apart although their keys are equal.
            for (i, id) in ids.iter().enumerate() {
                assert_eq!(t.get(id), (i < k).then_some(&i), "bucket {b} id {i}");
            }
            let cached: Vec<Id> = t.replacements().map(|e| e.id).collect();
            assert_eq!(cached, ids[ids.len() - 8..]);
            assert_eq!(t.insert(ids[3], 99, now), InsertResult::Updated);
            assert_eq!(t.bucket(b).last().map(|e| e.id), Some(ids[3]));
            assert!(t.touch(&ids[4], now));
            assert_eq!(t.bucket(b).last().map(|e| e.id), Some(ids[4]));
            // Closest: the order of the whole distances.
            for target in random_ids(20, 9).into_iter().chain(ids.iter().copied()) {
                let got: Vec<Id> = t.closest(&target, 25).iter().map(|e| e.id).collect();
                let mut want: Vec<Id> = t.iter().map(|e| e.id).collect();
                want.sort_by_key(|id| distance(id, &target));
                want.truncate(25);
                assert_eq!(got, want, "bucket {b}");
            }
            // A cached id inserted again moves to the cache's tail, not into the bucket twice.
            assert_eq!(t.insert(cached[0], 7, now), InsertResult::Cached);
            assert_eq!(t.replacements().last().map(|e| e.id), Some(cached[0]));
            assert_eq!(t.replacements().count(), 8);
            // Removing an entry promotes the most recent replacement; removing it again does nothing.
            let ev = t.remove(&ids[5]).expect("present");
            assert_eq!(ev.promoted.map(|e| e.id), Some(cached[0]));
            assert_eq!(t.get(&cached[0]), Some(&7));
            assert!(t.remove(&ids[5]).is_none());
            assert!(!t.contains(&ids[5]));
            assert_eq!(t.len(), k);
        }
    }
}
