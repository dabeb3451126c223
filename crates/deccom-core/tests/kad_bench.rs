//! A micro-benchmark of the routing table with cold caches: 10,000 tables of about 150 entries
//! (values of the size of the native layer's peer records), then closest-queries and inserts
//! across random tables. Ignored by default; run in release mode:
//!
//!     cargo test --release -p deccom-core --test kad_bench -- --ignored --nocapture
//!
//! `KAD_BENCH_TABLES` and `KAD_BENCH_OPS` change the sizes (defaults 10,000 and 200,000).

use std::hint::black_box;
use std::time::{Duration, Instant};

use deccom_core::kad::kbucket::{InsertResult, RoutingTable, TableConfig};

type Id = [u8; 32];

/// About the size of the native layer's entry value (a handle and an encoded peer record).
type Value = [u8; 104];

mod kad_ids;
use kad_ids::SplitMix as Rng;

/// This thread's CPU time (the machine may be shared: wall time counts other processes' turns).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    Duration::from_nanos(stat.split_whitespace().next().and_then(|x| x.parse().ok()).unwrap_or(0))
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
#[ignore = "benchmark: run in release mode with --ignored --nocapture"]
fn cold_tables() {
    let tables_n = env("KAD_BENCH_TABLES", 10_000);
    let ops = env("KAD_BENCH_OPS", 200_000);
    let mut rng = Rng(1);
    let t0 = Instant::now();
    let mut now = t0;
    let mut tables = Vec::with_capacity(tables_n);
    // The ids each table took in, for updates of present entries.
    let mut present: Vec<Vec<Id>> = Vec::with_capacity(tables_n);
    for _ in 0..tables_n {
        let mut t: RoutingTable<Value> = RoutingTable::new(rng.id(), TableConfig::default());
        let mut ids = Vec::new();
        for _ in 0..5_000 {
            if t.len() >= 150 {
                break;
            }
            let id = rng.id();
            let mut v = [0u8; 104];
            v[0] = id[0];
            if t.insert(id, v, now) == InsertResult::Inserted {
                ids.push(id);
            }
        }
        tables.push(t);
        present.push(ids);
    }
    let entries: usize = tables.iter().map(RoutingTable::len).sum();
    println!("{tables_n} tables, {entries} entries, built in {:.2} s", t0.elapsed().as_secs_f64());

    let mut scratch = Vec::with_capacity(20);
    let mut sum = 0u64;
    let (start, cpu) = (Instant::now(), cpu_time());
    for _ in 0..ops {
        let t = &tables[rng.below(tables_n)];
        let target = rng.id();
        t.for_each_closest(&target, 20, &mut scratch, |e| {
            // What an answer reads: the id and the start of the value.
            sum = sum.wrapping_add(u64::from(e.id[0]) + u64::from(e.value[0]));
        });
    }
    let closest = (start.elapsed(), cpu_time() - cpu);
    black_box(sum);

    let (start, cpu) = (Instant::now(), cpu_time());
    let mut results = [0usize; 5];
    for i in 0..ops {
        now += Duration::from_millis(1);
        let ti = rng.below(tables_n);
        // Half of the inserts see a present peer again, half a new one.
        let id = if i % 2 == 0 && !present[ti].is_empty() {
            present[ti][rng.below(present[ti].len())]
        } else {
            rng.id()
        };
        let r = tables[ti].insert(id, [1u8; 104], now);
        results[match r {
            InsertResult::Inserted => 0,
            InsertResult::Updated => 1,
            InsertResult::Pending { .. } => 2,
            InsertResult::Cached => 3,
            InsertResult::SelfId => 4,
        }] += 1;
    }
    let inserts = (start.elapsed(), cpu_time() - cpu);
    black_box(&tables);
    let per = |d: Duration| d.as_nanos() as f64 / ops as f64;
    println!(
        "closest: {:.1} ns/op CPU ({:.1} wall), insert: {:.1} ns/op CPU ({:.1} wall) (inserted/updated/pending/cached {:?})",
        per(closest.1),
        per(closest.0),
        per(inserts.1),
        per(inserts.0),
        &results[..4]
    );
}
