//! The Kademlia routing table: 256 k-buckets around the local id, as pure data.
//!
//! # Layout
//!
//! Bucket `i` (0..=255) holds the peers whose XOR distance to the local id has its highest set bit
//! at position `i`, i.e. distances in `[2^i, 2^(i+1))`. This fixed layout is what rust-libp2p uses,
//! and it is equivalent to the original paper's buckets that split around the own id: splitting the
//! bucket that covers the own id, again and again, yields exactly these ranges (the far half of the
//! id space is bucket 255, the far half of the rest is bucket 254, ...). The buckets that would never
//! have been split off are simply empty here and cost one empty `Vec` each.
//!
//! # Bucket discipline
//!
//! Each bucket keeps at most `k` entries, least recently seen first. Seeing a known peer again
//! ([`RoutingTable::insert`] of an id already present) moves it to the tail. A new peer for a full
//! bucket is NOT inserted and nothing is evicted: the table answers
//! [`InsertResult::Pending`] `{ to_ping }` — "ping this one (the least recently seen) first" — and
//! remembers the newcomer in the bucket's bounded replacement cache. The caller pings and reports
//! with [`RoutingTable::on_ping_result`]: an answer moves the pinged entry to the tail (it stays);
//! only a failed ping evicts it, and the most recently seen replacement takes its place. While one
//! ping per bucket is outstanding, further newcomers only go to the cache ([`InsertResult::Cached`]);
//! with a fresh interval (see [`RoutingTable::set_fresh_interval`]) they also only go there while
//! the least recently seen entry was seen within it, or while an entry of the bucket answered such a
//! ping within it (one answered ping vouches for the bucket: at most one per bucket per interval).
//! [`RoutingTable::remove`] (e.g. after repeated query failures) also promotes a replacement.
//!
//! # Closest
//!
//! [`RoutingTable::closest`] visits buckets in increasing order of the distance range they cover
//! relative to the target (see `bucket_order`), sorting only the entries of the buckets it needs:
//! for a random target and `n <= k` that is usually one bucket.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{distance, distance_key, highest_bit, DistanceKey};
use crate::identity::NodeId;

/// Default bucket size `k`.
pub const K_VALUE: usize = 20;
/// Default bound of each bucket's replacement cache.
pub const DEFAULT_MAX_REPLACEMENTS: usize = 20;
/// Number of buckets (one per bit of the id).
pub const NUM_BUCKETS: usize = 256;

/// A peer in the table: its id and the caller's value (a handle, an address, a record...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<V> {
    /// The peer's node id.
    pub id: NodeId,
    /// The caller's data for this peer.
    pub value: V,
}

/// What [`RoutingTable::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum InsertResult {
    /// The peer was new and its bucket had room: it is now the most recently seen entry.
    Inserted,
    /// The peer was already present: its value was replaced and it moved to the tail.
    Updated,
    /// The bucket is full. The newcomer waits in the replacement cache; ping `to_ping` (the least
    /// recently seen entry) and report with [`RoutingTable::on_ping_result`].
    Pending {
        /// The entry to ping.
        to_ping: NodeId,
    },
    /// The bucket is full and a ping is already outstanding, or its least recently seen entry was
    /// seen within the fresh interval (see [`RoutingTable::set_fresh_interval`]), or an entry of
    /// the bucket answered such a ping within that interval: the newcomer waits in the cache and
    /// no ping is needed.
    Cached,
    /// The id is the local id: never inserted.
    SelfId,
}

/// An entry that left the table, and the replacement that took its place, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eviction<V> {
    /// The entry removed.
    pub removed: Entry<V>,
    /// The replacement moved into the bucket (now its most recently seen entry).
    pub promoted: Option<Entry<V>>,
}

/// Settings of a [`RoutingTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableConfig {
    /// Entries per bucket (default 20).
    pub k: usize,
    /// Replacement cache entries per bucket (default 20).
    pub max_replacements: usize,
}

impl Default for TableConfig {
    fn default() -> Self {
        TableConfig {
            k: K_VALUE,
            max_replacements: DEFAULT_MAX_REPLACEMENTS,
        }
    }
}

/// One bucket. Most of the 256 never hold anyone (a network of n nodes fills about log2(n) of
/// them): their contents are allocated on the first insert, so an empty bucket costs 24 bytes.
#[derive(Debug, Clone)]
struct Bucket<V> {
    /// Entries, replacements and the pending ping; `None` until something is inserted.
    slots: Option<Box<Slots<V>>>,
    /// Last insert/update into this bucket, or explicit refresh.
    last_active: Option<Instant>,
}

#[derive(Debug, Clone)]
struct Slots<V> {
    /// Least recently seen first.
    entries: Vec<Entry<V>>,
    /// When each entry was last seen (parallel to `entries`).
    seen: Vec<Instant>,
    /// Most recently seen last.
    replacements: VecDeque<Entry<V>>,
    /// The entry being pinged on behalf of a newcomer.
    pending: Option<NodeId>,
    /// When an entry last answered such a ping: the bucket asks for none within the fresh interval.
    answered: Option<Instant>,
}

impl<V> Slots<V> {
    /// Room for one more entry, growing by doubling but never beyond `k` (a full bucket then
    /// holds exactly `k`, not the next power of two).
    fn room_for_one(&mut self, k: usize) {
        let len = self.entries.len();
        if len == self.entries.capacity() {
            let want = (len * 2).max(4).min(k).max(len + 1);
            self.entries.reserve_exact(want - len);
            self.seen.reserve_exact(want - self.seen.len());
        }
    }

    /// `id` was heard from: if it was being pinged, that is the ping's answer.
    fn heard(&mut self, id: &NodeId, now: Instant) {
        if self.pending == Some(*id) {
            self.pending = None;
            self.answered = Some(now);
        }
    }

    /// Whether a newcomer may ask for a ping now (the bucket is full): none in flight, none
    /// answered within `fresh`, and the least recently seen entry not seen within `fresh`.
    fn may_ping(&self, now: Instant, fresh: Duration) -> bool {
        self.pending.is_none()
            && now.saturating_duration_since(self.seen[0]) >= fresh
            && self.answered.is_none_or(|t| now.saturating_duration_since(t) >= fresh)
    }
}

impl<V> Bucket<V> {
    fn new() -> Self {
        Bucket { slots: None, last_active: None }
    }

    fn entries(&self) -> &[Entry<V>] {
        self.slots.as_ref().map_or(&[], |s| &s.entries[..])
    }

    /// The contents, allocated if this is the first insert.
    fn slots_mut(&mut self) -> &mut Slots<V> {
        self.slots.get_or_insert_with(|| {
            Box::new(Slots { entries: Vec::new(), seen: Vec::new(), replacements: VecDeque::new(), pending: None, answered: None })
        })
    }
}

/// The routing table of one node.
#[derive(Debug, Clone)]
pub struct RoutingTable<V> {
    local: NodeId,
    config: TableConfig,
    buckets: Vec<Bucket<V>>,
    len: usize,
    /// A full bucket whose least recently seen entry was seen within this is not pinged.
    fresh: Duration,
    /// The buckets with entries: bit `b % 64` of word `b / 64` for bucket `b`. Closest visits
    /// these only, not the 256 bucket headers (a few cache lines instead of about a hundred).
    nonempty: BucketSet,
}

/// A set of bucket indexes (0..256), bit `b % 64` of word `b / 64`.
type BucketSet = [u64; 4];

/// The buckets below `b` (0..=256).
fn buckets_below(b: usize) -> BucketSet {
    let mut m = [0u64; 4];
    for (w, word) in m.iter_mut().enumerate() {
        let lo = 64 * w;
        *word = if b >= lo + 64 {
            u64::MAX
        } else if b <= lo {
            0
        } else {
            (1u64 << (b - lo)) - 1
        };
    }
    m
}

/// Calls `f` with each bucket of `m`, lowest first, until it returns true; true if it did.
fn each_ascending(m: BucketSet, mut f: impl FnMut(usize) -> bool) -> bool {
    for (w, &word) in m.iter().enumerate() {
        let mut x = word;
        while x != 0 {
            if f(64 * w + x.trailing_zeros() as usize) {
                return true;
            }
            x &= x - 1;
        }
    }
    false
}

/// Calls `f` with each bucket of `m`, highest first, until it returns true; true if it did.
fn each_descending(m: BucketSet, mut f: impl FnMut(usize) -> bool) -> bool {
    for (w, &word) in m.iter().enumerate().rev() {
        let mut x = word;
        while x != 0 {
            let top = 63 - x.leading_zeros() as usize;
            if f(64 * w + top) {
                return true;
            }
            x &= !(1u64 << top);
        }
    }
    false
}

impl<V: Clone> RoutingTable<V> {
    /// An empty table around `local`.
    ///
    /// # Panics
    ///
    /// If `config.k` is 0.
    #[must_use]
    pub fn new(local: NodeId, config: TableConfig) -> Self {
        assert!(config.k > 0, "k must be at least 1");
        RoutingTable {
            local,
            config,
            buckets: (0..NUM_BUCKETS).map(|_| Bucket::new()).collect(),
            len: 0,
            fresh: Duration::ZERO,
            nonempty: [0; 4],
        }
    }

    /// A newcomer to a full bucket asks for a ping of the least recently seen entry only if that
    /// entry was last seen `interval` ago or more, and no entry of the bucket answered such a ping
    /// within `interval` (default zero: always). An entry heard from recently is alive as far as
    /// anyone can tell, and a bucket whose oldest entry just answered is in use: pinging would only
    /// cost two datagrams.
    pub fn set_fresh_interval(&mut self, interval: Duration) {
        self.fresh = interval;
    }

    /// The local id.
    #[must_use]
    pub fn local_id(&self) -> &NodeId {
        &self.local
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> TableConfig {
        self.config
    }

    /// Entries in the table (replacement caches not counted).
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if the table has no entries.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bucket `id` belongs in, or `None` for the local id.
    #[must_use]
    pub fn bucket_index(&self, id: &NodeId) -> Option<usize> {
        highest_bit(&distance(&self.local, id))
    }

    fn position(&self, id: &NodeId) -> Option<(usize, usize)> {
        let b = self.bucket_index(id)?;
        let i = self.buckets[b].entries().iter().position(|e| &e.id == id)?;
        Some((b, i))
    }

    /// The value stored for `id`, if it is in the table.
    #[must_use]
    pub fn get(&self, id: &NodeId) -> Option<&V> {
        let (b, i) = self.position(id)?;
        Some(&self.buckets[b].entries()[i].value)
    }

    /// True if `id` is in the table (replacement caches not included).
    #[must_use]
    pub fn contains(&self, id: &NodeId) -> bool {
        self.position(id).is_some()
    }

    /// Records that `id` was seen now (see the module docs).
    ///
    /// A present id is updated and moves to the tail (if it was being pinged, that counts as an
    /// answer). A new id is appended if its bucket has room; otherwise it goes to the replacement
    /// cache and the result says whether a ping must be sent.
    pub fn insert(&mut self, id: NodeId, value: V, now: Instant) -> InsertResult {
        let Some(b) = self.bucket_index(&id) else {
            return InsertResult::SelfId;
        };
        let k = self.config.k;
        let max_repl = self.config.max_replacements;
        self.buckets[b].last_active = Some(now);
        let bucket = self.buckets[b].slots_mut();
        if let Some(i) = bucket.entries.iter().position(|e| e.id == id) {
            let mut e = bucket.entries.remove(i);
            e.value = value;
            bucket.entries.push(e);
            bucket.seen.remove(i);
            bucket.seen.push(now);
            bucket.heard(&id, now);
            return InsertResult::Updated;
        }
        if bucket.entries.len() < k {
            bucket.replacements.retain(|e| e.id != id);
            bucket.room_for_one(k);
            bucket.entries.push(Entry { id, value });
            bucket.seen.push(now);
            self.len += 1;
            self.nonempty[b / 64] |= 1 << (b % 64);
            return InsertResult::Inserted;
        }
        // Full: remember the newcomer (most recent last, bounded), ask for a ping.
        bucket.replacements.retain(|e| e.id != id);
        if max_repl > 0 {
            bucket.replacements.push_back(Entry { id, value });
            while bucket.replacements.len() > max_repl {
                bucket.replacements.pop_front();
            }
        }
        if !bucket.may_ping(now, self.fresh) {
            return InsertResult::Cached;
        }
        let to_ping = bucket.entries[0].id;
        bucket.pending = Some(to_ping);
        InsertResult::Pending { to_ping }
    }

    /// Marks a present `id` as seen at `now`: what [`insert`](Self::insert) of it with its current
    /// value does (it moves to the tail; if it was being pinged, that counts as an answer), without
    /// the value. False (and nothing changes) if `id` is not in the table.
    pub fn touch(&mut self, id: &NodeId, now: Instant) -> bool {
        let Some((b, i)) = self.position(id) else {
            return false;
        };
        self.buckets[b].last_active = Some(now);
        let bucket = self.buckets[b].slots_mut();
        bucket.entries[i..].rotate_left(1);
        bucket.seen.remove(i);
        bucket.seen.push(now);
        bucket.heard(id, now);
        true
    }

    /// Whether [`insert`](Self::insert) of `id` at `now` would do more than wait in a replacement
    /// cache: true when it is present, its bucket has room, or a ping would be asked for. A
    /// caller can skip work (e.g. verifying a newcomer's address) that only this insert needs.
    #[must_use]
    pub fn would_admit(&self, id: &NodeId, now: Instant) -> bool {
        let Some(b) = self.bucket_index(id) else {
            return false;
        };
        let Some(bucket) = self.buckets[b].slots.as_ref() else {
            return true;
        };
        bucket.entries.len() < self.config.k
            || bucket.entries.iter().any(|e| &e.id == id)
            || bucket.may_ping(now, self.fresh)
    }

    /// Reports the outcome of a ping asked for by [`InsertResult::Pending`] (or any liveness check).
    ///
    /// `alive`: the entry moves to the tail and stays. Not alive: the entry is evicted and the most
    /// recently seen replacement, if any, takes its place; the eviction is returned. Unknown ids
    /// are ignored (`None`).
    pub fn on_ping_result(&mut self, id: &NodeId, alive: bool, now: Instant) -> Option<Eviction<V>> {
        let (b, i) = self.position(id)?;
        let bucket = self.buckets[b].slots_mut();
        if alive {
            bucket.heard(id, now);
        } else if bucket.pending == Some(*id) {
            bucket.pending = None;
        }
        if alive {
            let e = bucket.entries.remove(i);
            bucket.entries.push(e);
            bucket.seen.remove(i);
            bucket.seen.push(now);
            self.buckets[b].last_active = Some(now);
            None
        } else {
            Some(self.evict(b, i))
        }
    }

    /// Removes `id` from the table (or from a replacement cache); a replacement takes its place.
    /// Returns the eviction if `id` was in a bucket.
    pub fn remove(&mut self, id: &NodeId) -> Option<Eviction<V>> {
        let b = self.bucket_index(id)?;
        match self.buckets[b].entries().iter().position(|e| &e.id == id) {
            Some(i) => Some(self.evict(b, i)),
            None => {
                if let Some(s) = self.buckets[b].slots.as_mut() {
                    s.replacements.retain(|e| &e.id != id);
                }
                None
            }
        }
    }

    fn evict(&mut self, b: usize, i: usize) -> Eviction<V> {
        let bucket = self.buckets[b].slots_mut();
        let removed = bucket.entries.remove(i);
        let seen = bucket.seen.remove(i);
        if bucket.pending == Some(removed.id) {
            bucket.pending = None;
        }
        let promoted = bucket.replacements.pop_back().map(|e| {
            let copy = e.clone();
            bucket.entries.push(e);
            // Waiting in the cache since it was last seen; it counts as seen when the entry it
            // replaces was (it is tried when that one failed).
            bucket.seen.push(seen);
            copy
        });
        let emptied = bucket.entries.is_empty();
        if promoted.is_none() {
            self.len -= 1;
        }
        if emptied {
            self.nonempty[b / 64] &= !(1 << (b % 64));
        }
        Eviction { removed, promoted }
    }

    /// Calls `f` with the up to `n` entries closest to `target`, closest first.
    ///
    /// `scratch` is reused between calls to avoid allocation (its contents are overwritten).
    pub fn for_each_closest<'a>(
        &'a self,
        target: &NodeId,
        n: usize,
        scratch: &mut Vec<(DistanceKey, u32)>,
        mut f: impl FnMut(&'a Entry<V>),
    ) {
        let mut left = n;
        if left == 0 {
            return;
        }
        let d = distance(&self.local, target);
        let mut visit = |b: usize, left: &mut usize| -> bool {
            let entries = self.buckets[b].entries();
            if entries.is_empty() {
                return false;
            }
            scratch.clear();
            for (i, e) in entries.iter().enumerate() {
                scratch.push((distance_key(&e.id, target), i as u32));
            }
            if scratch.len() > 1 {
                scratch.sort_unstable_by_key(|a| a.0);
            }
            for &(_, i) in scratch.iter().take(*left) {
                f(&entries[i as usize]);
            }
            *left = left.saturating_sub(scratch.len());
            *left == 0
        };
        // Buckets in increasing order of distance to the target (see the module docs), the
        // non-empty ones only.
        let nonempty = self.nonempty;
        let Some(hd) = highest_bit(&d) else {
            each_ascending(nonempty, |b| visit(b, &mut left));
            return;
        };
        // 1. bucket hd: distances to target < 2^hd.
        if visit(hd, &mut left) {
            return;
        }
        // 2. buckets j < hd: distances in [2^hd, 2^(hd+1)); bit j of the distance is 1 ^ d_j,
        //    bits above j equal d's. Those with d_j = 1 are closer than every lower bucket
        //    (descending j); then those with d_j = 0 (ascending j).
        let below = buckets_below(hd);
        let mut set_in_d = [0u64; 4];
        for (w, word) in set_in_d.iter_mut().enumerate() {
            let mut be = [0u8; 8];
            be.copy_from_slice(&d[24 - 8 * w..32 - 8 * w]);
            *word = u64::from_be_bytes(be);
        }
        let closer: BucketSet = std::array::from_fn(|w| nonempty[w] & below[w] & set_in_d[w]);
        if each_descending(closer, |j| visit(j, &mut left)) {
            return;
        }
        let farther: BucketSet = std::array::from_fn(|w| nonempty[w] & below[w] & !set_in_d[w]);
        if each_ascending(farther, |j| visit(j, &mut left)) {
            return;
        }
        // 3. buckets j > hd: distances in [2^j, 2^(j+1)).
        let up_to_hd = buckets_below(hd + 1);
        each_ascending(std::array::from_fn(|w| nonempty[w] & !up_to_hd[w]), |j| visit(j, &mut left));
    }

    /// The up to `n` entries closest to `target`, closest first.
    #[must_use]
    pub fn closest(&self, target: &NodeId, n: usize) -> Vec<&Entry<V>> {
        let mut out = Vec::with_capacity(n.min(self.len));
        let mut scratch = Vec::with_capacity(self.config.k);
        self.for_each_closest(target, n, &mut scratch, |e| out.push(e));
        out
    }

    /// Every entry, bucket by bucket (bucket 0 first), least recently seen first in each.
    pub fn iter(&self) -> impl Iterator<Item = &Entry<V>> {
        self.buckets.iter().flat_map(|b| b.entries().iter())
    }

    /// Every replacement-cache entry.
    pub fn replacements(&self) -> impl Iterator<Item = &Entry<V>> {
        self.buckets.iter().filter_map(|b| b.slots.as_ref()).flat_map(|s| s.replacements.iter())
    }

    /// The entries of bucket `index`, least recently seen first (empty for index >= 256).
    #[must_use]
    pub fn bucket(&self, index: usize) -> &[Entry<V>] {
        self.buckets.get(index).map_or(&[], |b| b.entries())
    }

    /// The id being pinged for bucket `index`, if any.
    #[must_use]
    pub fn pending_ping(&self, index: usize) -> Option<&NodeId> {
        self.buckets.get(index).and_then(|b| b.slots.as_ref()?.pending.as_ref())
    }

    /// Buckets due for a refresh: from the closest non-empty bucket up to bucket 255, those without
    /// activity (an insert, an update, a ping answer or [`mark_refreshed`](Self::mark_refreshed))
    /// for `interval`. Buckets below the closest non-empty one are not listed: nobody is expected
    /// there. Empty when the table is empty.
    #[must_use]
    pub fn stale_buckets(&self, now: Instant, interval: Duration) -> Vec<usize> {
        let Some(lowest) = self.buckets.iter().position(|b| !b.entries().is_empty()) else {
            return Vec::new();
        };
        (lowest..NUM_BUCKETS)
            .filter(|&i| match self.buckets[i].last_active {
                None => true,
                Some(t) => now.saturating_duration_since(t) >= interval,
            })
            .collect()
    }

    /// Records that bucket `index` was refreshed (a lookup in its range ran) at `now`.
    pub fn mark_refreshed(&mut self, index: usize, now: Instant) {
        if let Some(b) = self.buckets.get_mut(index) {
            b.last_active = Some(now);
        }
    }

    /// An id in bucket `index`'s range, from 32 caller-supplied random bytes (sans-IO: no RNG
    /// inside). `index` is taken modulo 256.
    #[must_use]
    pub fn random_id_in_bucket(&self, index: usize, random: &[u8; 32]) -> NodeId {
        let index = index % NUM_BUCKETS;
        let mut d = *random;
        let byte = 31 - index / 8;
        let b = index % 8;
        for x in d.iter_mut().take(byte) {
            *x = 0;
        }
        let keep = ((1u16 << b) - 1) as u8; // bits below b
        d[byte] = (d[byte] & keep) | (1 << b);
        distance(&self.local, &d)
    }
}

