use super::*;
use crate::kad::bit;

use crate::kad::splitmix_ids as random_ids;

#[test]
fn window_is_the_64_bits_below_the_bucket_bit() {
    for id in random_ids(8, 3) {
        for b in 0..NUM_BUCKETS {
            let mut want = 0u64;
            for j in 0..64 {
                if b > j && bit(&id, b - 1 - j) {
                    want |= 1 << (63 - j);
                }
            }
            assert_eq!(window(&id, b), want, "bucket {b}");
        }
    }
}

/// An id in bucket `b` of the zero id, told apart by `i`.
fn in_bucket(b: usize, i: u32) -> NodeId {
    let mut id = [0u8; 32];
    id[31 - b / 8] |= 1 << (b % 8);
    if b >= 32 {
        id[28..].copy_from_slice(&i.to_be_bytes());
    }
    id
}

#[test]
fn a_bucket_holds_k_entries_and_max_replacements_in_as_much_room() {
    let mut t = RoutingTable::new([0; 32], TableConfig { k: 20, max_replacements: 20 });
    let now = Instant::now();
    for i in 0..100 {
        let _ = t.insert(in_bucket(255, i), i, now);
    }
    let s = t.slots(255).expect("bucket 255 holds entries");
    let r = s.replacements.as_ref().expect("newcomers wait");
    assert_eq!((s.entries.len(), r.entries.len()), (20, 20));
    assert_eq!(s.entries.capacity(), 20);
    assert!(r.entries.capacity() <= 20 && r.keys.capacity() <= 20);
    // The newest replacements are kept, the most recent last.
    let kept: Vec<u32> = t.replacements().map(|e| e.value).collect();
    assert_eq!(kept, (80..100).collect::<Vec<u32>>());
    for i in 0..7 {
        let _ = t.insert(in_bucket(254, i), i, now);
    }
    let s = t.slots(254).expect("bucket 254 holds entries");
    assert_eq!((s.entries.capacity(), s.seen.capacity()), (7, 7), "no room it never used");
    assert!(s.replacements.is_none(), "no cache before a newcomer waits");
    assert_eq!(t.slots.len(), 2, "only the buckets used have contents");
}

#[test]
fn activity_of_buckets_in_any_order() {
    let mut t = RoutingTable::new([0; 32], TableConfig::default());
    let t0 = Instant::now();
    let s = |x: u64| t0 + Duration::from_secs(x);
    let _ = t.insert(in_bucket(250, 1), 1, s(0));
    let _ = t.insert(in_bucket(40, 1), 2, s(0));
    for (b, at) in [(255, 10), (41, 10), (200, 10), (300, 10), (39, 10), (255, 20)] {
        t.mark_refreshed(b, s(at));
    }
    let _ = t.insert(in_bucket(100, 1), 3, s(10));
    // Lowest non-empty bucket: 40 (39, 41 and 200 were refreshed while empty; 300 is no bucket).
    let not = |skip: &[usize]| (40..NUM_BUCKETS).filter(|b| !skip.contains(b)).collect::<Vec<_>>();
    assert_eq!(t.stale_buckets(s(20), Duration::from_secs(5)), not(&[255]));
    assert_eq!(t.stale_buckets(s(20), Duration::from_secs(11)), not(&[41, 100, 200, 255]));
    assert_eq!(t.stale_buckets(s(20), Duration::from_secs(21)), not(&[40, 41, 100, 200, 250, 255]));
    assert_eq!(t.iter().map(|e| e.value).collect::<Vec<_>>(), vec![2, 3, 1], "bucket by bucket, lowest first");
    assert_eq!(t.bucket(100).len(), 1);
    assert!(t.bucket(101).is_empty() && t.bucket(256).is_empty() && t.pending_ping(256).is_none());
}
