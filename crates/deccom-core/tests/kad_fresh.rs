//! The routing table's eviction pings: at most one in flight per bucket, none while the least
//! recently seen entry was seen within the fresh interval or an entry of the bucket answered one
//! within it, and eviction only after a failed ping.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use deccom_core::kad::kbucket::{InsertResult, RoutingTable, TableConfig};
use proptest::prelude::*;

type Id = [u8; 32];

/// An id in bucket 255 of a table around the zero id (top bit set), distinct per `n`.
fn far(n: u16) -> Id {
    let mut id = [0u8; 32];
    id[0] = 0x80;
    id[30..].copy_from_slice(&n.to_be_bytes());
    id
}

#[test]
fn no_ping_for_an_entry_seen_within_the_fresh_interval() {
    let t0 = Instant::now();
    let mut t = RoutingTable::new([0u8; 32], TableConfig { k: 2, max_replacements: 4 });
    t.set_fresh_interval(Duration::from_secs(60));
    assert_eq!(t.insert(far(1), 1, t0), InsertResult::Inserted);
    assert_eq!(t.insert(far(2), 2, t0 + Duration::from_secs(10)), InsertResult::Inserted);
    // far(1) was seen 30 s ago: the newcomer waits in the cache, nobody is pinged.
    assert_eq!(t.insert(far(3), 3, t0 + Duration::from_secs(30)), InsertResult::Cached);
    assert!(t.pending_ping(255).is_none());
    // 60 s after it was seen, the least recently seen entry is pinged (once).
    assert_eq!(t.insert(far(4), 4, t0 + Duration::from_secs(60)), InsertResult::Pending { to_ping: far(1) });
    assert_eq!(t.insert(far(5), 5, t0 + Duration::from_secs(61)), InsertResult::Cached);
    // It answered: it stays, and is fresh again. far(2) (seen at 10 s) is next in line, but the
    // bucket's answer at 62 s vouches for it until 122 s.
    assert!(t.on_ping_result(&far(1), true, t0 + Duration::from_secs(62)).is_none());
    assert_eq!(t.insert(far(6), 6, t0 + Duration::from_secs(65)), InsertResult::Cached);
    assert_eq!(t.insert(far(7), 7, t0 + Duration::from_secs(70)), InsertResult::Cached);
    assert_eq!(t.insert(far(8), 8, t0 + Duration::from_secs(121)), InsertResult::Cached);
    assert_eq!(t.insert(far(9), 9, t0 + Duration::from_secs(122)), InsertResult::Pending { to_ping: far(2) });
    // It did not answer: evicted, the newest replacement takes its place; a failed ping vouches for
    // nothing, so the next newcomer may ask for a ping of the next stale entry at once.
    let ev = t.on_ping_result(&far(2), false, t0 + Duration::from_secs(123)).expect("evicted");
    assert_eq!(ev.removed.id, far(2));
    assert_eq!(ev.promoted.map(|e| e.id), Some(far(9)));
    assert!(t.contains(&far(1)) && t.contains(&far(9)) && !t.contains(&far(2)));
    // far(1), seen at 62 s, is the least recently seen entry again and is stale at 124 s.
    assert_eq!(t.insert(far(10), 10, t0 + Duration::from_secs(124)), InsertResult::Pending { to_ping: far(1) });
}

#[test]
fn hearing_from_the_pinged_entry_vouches_for_the_bucket() {
    let t0 = Instant::now();
    let mut t = RoutingTable::new([0u8; 32], TableConfig { k: 2, max_replacements: 4 });
    t.set_fresh_interval(Duration::from_secs(60));
    assert_eq!(t.insert(far(1), 1, t0), InsertResult::Inserted);
    assert_eq!(t.insert(far(2), 2, t0), InsertResult::Inserted);
    assert_eq!(t.insert(far(3), 3, t0 + Duration::from_secs(60)), InsertResult::Pending { to_ping: far(1) });
    // Any datagram from far(1) (touch) answers the ping: no other ping in this bucket for 60 s.
    assert!(t.touch(&far(1), t0 + Duration::from_secs(61)));
    assert!(t.pending_ping(255).is_none());
    assert!(!t.would_admit(&far(4), t0 + Duration::from_secs(100)));
    assert_eq!(t.insert(far(4), 4, t0 + Duration::from_secs(100)), InsertResult::Cached);
    assert!(t.would_admit(&far(5), t0 + Duration::from_secs(121)));
    assert_eq!(t.insert(far(5), 5, t0 + Duration::from_secs(121)), InsertResult::Pending { to_ping: far(2) });
}

#[test]
fn default_fresh_interval_pings_at_once() {
    let t0 = Instant::now();
    let mut t = RoutingTable::new([0u8; 32], TableConfig { k: 1, max_replacements: 1 });
    assert_eq!(t.insert(far(1), 1, t0), InsertResult::Inserted);
    assert_eq!(t.insert(far(2), 2, t0), InsertResult::Pending { to_ping: far(1) });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random inserts, pings and time steps into one bucket: a ping is asked for only when none is
    /// in flight and the entry to ping was last seen at least `fresh` ago; entries leave only after a
    /// failed ping.
    #[test]
    fn eviction_pings_are_single_and_never_fresh(fresh_s in 0u64..30, k in 1usize..5,
            ops in prop::collection::vec((0u16..40, any::<bool>(), 0u64..20, any::<bool>()), 1..300)) {
        let t0 = Instant::now();
        let fresh = Duration::from_secs(fresh_s);
        let mut t = RoutingTable::new([0u8; 32], TableConfig { k, max_replacements: 3 });
        t.set_fresh_interval(fresh);
        let mut now = t0;
        let mut seen: HashMap<Id, Instant> = HashMap::new();
        let mut in_flight: Option<Id> = None;
        let mut answered: Option<Instant> = None;
        for (n, is_ping, dt, alive) in ops {
            now += Duration::from_secs(dt);
            let before: Vec<Id> = t.bucket(255).iter().map(|e| e.id).collect();
            if is_ping {
                if let Some(id) = in_flight.take() {
                    let ev = t.on_ping_result(&id, alive, now);
                    if alive {
                        prop_assert!(ev.is_none());
                        seen.insert(id, now);
                        answered = Some(now);
                    } else if let Some(ev) = ev {
                        prop_assert_eq!(ev.removed.id, id);
                        if let Some(p) = ev.promoted { seen.insert(p.id, seen[&id]); }
                    }
                }
            } else {
                let id = far(n);
                match t.insert(id, u32::from(n), now) {
                    InsertResult::Pending { to_ping } => {
                        prop_assert!(in_flight.is_none(), "a second eviction ping in flight");
                        prop_assert!(now.duration_since(seen[&to_ping]) >= fresh, "pinged a fresh entry");
                        prop_assert!(answered.is_none_or(|a| now.duration_since(a) >= fresh), "a second ping within the interval of an answer");
                        in_flight = Some(to_ping);
                    }
                    InsertResult::Inserted => { seen.insert(id, now); }
                    InsertResult::Updated => {
                        // Hearing from the entry being pinged counts as its answer.
                        if in_flight == Some(id) { in_flight = None; answered = Some(now); }
                        seen.insert(id, now);
                    }
                    InsertResult::Cached | InsertResult::SelfId => {}
                }
            }
            let after: Vec<Id> = t.bucket(255).iter().map(|e| e.id).collect();
            for id in &before {
                prop_assert!(after.contains(id) || (is_ping && !alive), "an entry left without a failed ping");
            }
            prop_assert!(after.len() <= k);
        }
    }
}

#[test]
fn would_admit_says_whether_an_insert_would_do_more_than_cache() {
    let t0 = Instant::now();
    let mut t = RoutingTable::new([0u8; 32], TableConfig { k: 1, max_replacements: 2 });
    t.set_fresh_interval(Duration::from_secs(60));
    assert!(!t.would_admit(&[0u8; 32], t0), "the local id");
    assert!(t.would_admit(&far(1), t0), "room");
    assert_eq!(t.insert(far(1), 1, t0), InsertResult::Inserted);
    assert!(t.would_admit(&far(1), t0), "present");
    assert!(!t.would_admit(&far(2), t0 + Duration::from_secs(59)), "full, entry fresh");
    assert_eq!(t.insert(far(2), 2, t0 + Duration::from_secs(59)), InsertResult::Cached);
    assert!(t.would_admit(&far(3), t0 + Duration::from_secs(60)), "full, entry stale: a ping");
    assert!(matches!(t.insert(far(3), 3, t0 + Duration::from_secs(60)), InsertResult::Pending { .. }));
    assert!(!t.would_admit(&far(4), t0 + Duration::from_secs(61)), "full, a ping in flight");
}
