//! The Kademlia routing table: 256 k-buckets around the local id, as pure data.
//!
//! # Layout
//!
//! Bucket `i` (0..=255) holds the peers whose XOR distance to the local id has its highest set bit
//! at position `i`, i.e. distances in `[2^i, 2^(i+1))`. This fixed layout is what rust-libp2p uses,
//! and it is equivalent to the original paper's buckets that split around the own id: splitting the
//! bucket that covers the own id, again and again, yields exactly these ranges (the far half of the
//! id space is bucket 255, the far half of the rest is bucket 254, ...). The buckets that would never
//! have been split off are simply empty here and cost nothing but a bit (see `RoutingTable::held`).
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
//!
//! # Memory layout
//!
//! The ids of a bucket's entries agree above the bucket's bit, so the 64 bits just below it
//! (`window`) order them by distance to any target, unless two share those 64 bits too (then the
//! whole ids decide). Each bucket keeps these keys in an array of their own, inside its allocation
//! (for `k <= 20`) next to the pointers to its entries: a closest-query sorts the keys (a 20-entry
//! bucket: 3 cache lines) and reads only the entries it returns, and a lookup by id compares keys
//! and reads the one entry whose key matches, instead of loading every entry (an id and its value:
//! two or three cache lines each) to read its id. The replacement cache has its keys too.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{distance, distance_key, highest_bit};
use crate::identity::NodeId;
use bucket_set::{buckets_below, each_ascending, each_descending, has, rank, BucketSet};

mod bucket_set;

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

/// The contents of one bucket: entries, replacements and the pending ping. Most of the 256 buckets
/// never hold anyone (a network of n nodes fills about log2(n) of them): a bucket's contents are
/// created on its first insert, and only those are stored (see `RoutingTable::held`).
#[derive(Debug, Clone)]
struct Slots<V> {
    /// Least recently seen first.
    entries: Vec<Entry<V>>,
    /// Each entry's `window` at this bucket (parallel to `entries`).
    keys: Keys,
    /// When each entry was last seen (parallel to `entries`).
    seen: Vec<Instant>,
    /// The replacement cache; `None` until the bucket's first newcomer waits (most buckets are
    /// never full).
    replacements: Option<Box<Replacements<V>>>,
    /// The entry being pinged on behalf of a newcomer.
    pending: Option<NodeId>,
    /// When an entry last answered such a ping: the bucket asks for none within the fresh interval.
    answered: Option<Instant>,
}

/// A bucket's replacement cache.
#[derive(Debug, Clone)]
struct Replacements<V> {
    /// Most recently seen last; never the same id twice.
    entries: VecDeque<Entry<V>>,
    /// Each replacement's `window` (parallel to `entries`).
    keys: VecDeque<u64>,
}

/// The keys of a bucket's entries: inside the bucket's allocation for `k <= K_VALUE` (one load
/// less on the way from the bucket to its keys), on the heap for a larger `k`.
#[derive(Debug, Clone)]
enum Keys {
    Inline { len: u8, keys: [u64; K_VALUE] },
    Heap(Vec<u64>),
}

impl Keys {
    fn new(k: usize) -> Keys {
        if k <= K_VALUE {
            Keys::Inline { len: 0, keys: [0; K_VALUE] }
        } else {
            Keys::Heap(Vec::new())
        }
    }

    fn as_slice(&self) -> &[u64] {
        match self {
            Keys::Inline { len, keys } => &keys[..usize::from(*len)],
            Keys::Heap(v) => v,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [u64] {
        match self {
            Keys::Inline { len, keys } => &mut keys[..usize::from(*len)],
            Keys::Heap(v) => v,
        }
    }

    /// Appends `key`; an inline array has room (the bucket holds at most `k` entries).
    fn push(&mut self, key: u64) {
        match self {
            Keys::Inline { len, keys } => {
                keys[usize::from(*len)] = key;
                *len += 1;
            }
            Keys::Heap(v) => v.push(key),
        }
    }

    fn remove(&mut self, i: usize) {
        match self {
            Keys::Inline { len, keys } => {
                keys.copy_within(i + 1..usize::from(*len), i);
                *len -= 1;
            }
            Keys::Heap(v) => {
                v.remove(i);
            }
        }
    }
}

impl<V> Slots<V> {
    /// Room for one more entry, growing by one: a bucket holds no room it never used (it grows at
    /// most `k` times in its life: its capacity never shrinks).
    fn room_for_one(&mut self) {
        if self.entries.len() == self.entries.capacity() {
            self.entries.reserve_exact(1);
            if let Keys::Heap(v) = &mut self.keys {
                v.reserve_exact(1);
            }
            self.seen.reserve_exact(1);
        }
    }

    /// The index of entry `id`, whose `window` here is `key`.
    fn find(&self, id: &NodeId, key: u64) -> Option<usize> {
        let entries = &self.entries;
        self.keys.as_slice().iter().zip(entries).position(|(&x, e)| x == key && &e.id == id)
    }

    /// Moves entry `i` to the tail (most recently seen), seen at `now`.
    fn move_to_tail(&mut self, i: usize, now: Instant) {
        self.entries[i..].rotate_left(1);
        self.keys.as_mut_slice()[i..].rotate_left(1);
        self.seen.remove(i);
        self.seen.push(now);
    }

    /// Appends a newcomer to the replacement cache, forgetting the oldest one when `max` are held
    /// (`max` > 0). The cache grows by one, as the entries do.
    fn push_replacement(&mut self, e: Entry<V>, key: u64, max: usize) {
        let r = self
            .replacements
            .get_or_insert_with(|| Box::new(Replacements { entries: VecDeque::new(), keys: VecDeque::new() }));
        if r.entries.len() >= max {
            r.entries.pop_front();
            r.keys.pop_front();
        }
        if r.entries.len() == r.entries.capacity() {
            r.entries.reserve_exact(1);
            r.keys.reserve_exact(1);
        }
        r.entries.push_back(e);
        r.keys.push_back(key);
    }

    /// Takes the most recently seen replacement and its `window`.
    fn pop_replacement(&mut self) -> Option<(Entry<V>, u64)> {
        let r = self.replacements.as_mut()?;
        Some((r.entries.pop_back()?, r.keys.pop_back()?))
    }

    /// Removes `id` (with `window` `key`) from the replacement cache, if it is there.
    fn forget_replacement(&mut self, id: &NodeId, key: u64) {
        let Some(r) = self.replacements.as_mut() else { return };
        if let Some(i) = r.keys.iter().zip(&r.entries).position(|(&x, e)| x == key && &e.id == id) {
            r.entries.remove(i);
            r.keys.remove(i);
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

impl<V> Slots<V> {
    fn new(k: usize) -> Self {
        Slots {
            entries: Vec::new(),
            keys: Keys::new(k),
            seen: Vec::new(),
            replacements: None,
            pending: None,
            answered: None,
        }
    }
}

/// The routing table of one node.
#[derive(Debug, Clone)]
pub struct RoutingTable<V> {
    local: NodeId,
    config: TableConfig,
    /// The contents of the buckets of `held`, lowest bucket first.
    slots: Vec<Slots<V>>,
    /// The buckets that ever had an entry inserted (their contents are kept: a bucket once used
    /// is likely to be used again).
    held: BucketSet,
    /// The last insert/update, or explicit refresh, of the buckets of `active`, lowest first.
    last_active: Vec<Instant>,
    /// The buckets with a last activity.
    active: BucketSet,
    len: usize,
    /// A full bucket whose least recently seen entry was seen within this is not pinged.
    fresh: Duration,
    /// The buckets with entries: bit `b % 64` of word `b / 64` for bucket `b`. Closest visits
    /// these only, not the 256 bucket headers (a few cache lines instead of about a hundred).
    nonempty: BucketSet,
}

/// The 64 bits of `id` just below bit `b` (bits `b - 1` down to `b - 64`, zeros below bit 0), the
/// highest first. For the ids of bucket `b`, which agree above bit `b`, `window(x, b) ^ window(t, b)`
/// orders them as their distances to `t` do where it differs (see the module docs).
#[must_use]
#[inline]
fn window(id: &NodeId, b: usize) -> u64 {
    // The id with a zero word appended, least significant word first: bits b + 63 ..= b of this
    // are bits b - 1 ..= b - 64 of the id.
    let mut w = [0u64; 5];
    for (i, c) in id.chunks_exact(8).enumerate() {
        let mut x = [0u8; 8];
        x.copy_from_slice(c);
        w[4 - i] = u64::from_be_bytes(x);
    }
    let b = b % NUM_BUCKETS;
    let pair = (u128::from(w[b / 64 + 1]) << 64) | u128::from(w[b / 64]);
    (pair >> (b % 64)) as u64
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
            slots: Vec::new(),
            held: [0; 4],
            last_active: Vec::new(),
            active: [0; 4],
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

    /// The contents of bucket `b` (0..256), if it ever held an entry.
    #[inline]
    fn slots(&self, b: usize) -> Option<&Slots<V>> {
        has(&self.held, b).then(|| &self.slots[rank(&self.held, b)])
    }

    /// The contents of bucket `b` (0..256), created if this is its first insert.
    fn slots_mut(&mut self, b: usize) -> &mut Slots<V> {
        Self::slots_in(&mut self.slots, &mut self.held, self.config.k, b)
    }

    /// [`slots_mut`](Self::slots_mut) borrowing only the two fields it needs.
    fn slots_in<'a>(slots: &'a mut Vec<Slots<V>>, held: &mut BucketSet, k: usize, b: usize) -> &'a mut Slots<V> {
        let at = rank(held, b);
        if !has(held, b) {
            // At most 256 buckets, each created once: grow by one.
            slots.reserve_exact(1);
            slots.insert(at, Slots::new(k));
            held[b / 64] |= 1 << (b % 64);
        }
        &mut slots[at]
    }

    /// The last activity of bucket `b` (0..256).
    fn last_active(&self, b: usize) -> Option<Instant> {
        has(&self.active, b).then(|| self.last_active[rank(&self.active, b)])
    }

    /// Records activity of bucket `b` (0..256) at `now`.
    fn set_active(&mut self, b: usize, now: Instant) {
        let at = rank(&self.active, b);
        if has(&self.active, b) {
            self.last_active[at] = now;
        } else {
            // At most 256 buckets, each added once: grow by one.
            self.last_active.reserve_exact(1);
            self.last_active.insert(at, now);
            self.active[b / 64] |= 1 << (b % 64);
        }
    }

    fn position(&self, id: &NodeId) -> Option<(usize, usize)> {
        let b = self.bucket_index(id)?;
        let i = self.slots(b)?.find(id, window(id, b))?;
        Some((b, i))
    }

    /// The value stored for `id`, if it is in the table.
    #[must_use]
    pub fn get(&self, id: &NodeId) -> Option<&V> {
        let (b, i) = self.position(id)?;
        Some(&self.bucket(b)[i].value)
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
        let key = window(&id, b);
        self.set_active(b, now);
        let bucket = Self::slots_in(&mut self.slots, &mut self.held, k, b);
        if let Some(i) = bucket.find(&id, key) {
            bucket.entries[i].value = value;
            bucket.move_to_tail(i, now);
            bucket.heard(&id, now);
            return InsertResult::Updated;
        }
        bucket.forget_replacement(&id, key);
        if bucket.entries.len() < k {
            bucket.room_for_one();
            bucket.entries.push(Entry { id, value });
            bucket.keys.push(key);
            bucket.seen.push(now);
            self.len += 1;
            self.nonempty[b / 64] |= 1 << (b % 64);
            return InsertResult::Inserted;
        }
        // Full: remember the newcomer (most recent last, bounded), ask for a ping.
        if max_repl > 0 {
            bucket.push_replacement(Entry { id, value }, key, max_repl);
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
        self.set_active(b, now);
        let bucket = self.slots_mut(b);
        bucket.move_to_tail(i, now);
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
        let Some(bucket) = self.slots(b) else {
            return true;
        };
        bucket.entries.len() < self.config.k
            || bucket.find(id, window(id, b)).is_some()
            || bucket.may_ping(now, self.fresh)
    }

    /// Reports the outcome of a ping asked for by [`InsertResult::Pending`] (or any liveness check).
    ///
    /// `alive`: the entry moves to the tail and stays. Not alive: the entry is evicted and the most
    /// recently seen replacement, if any, takes its place; the eviction is returned. Unknown ids
    /// are ignored (`None`).
    pub fn on_ping_result(&mut self, id: &NodeId, alive: bool, now: Instant) -> Option<Eviction<V>> {
        let (b, i) = self.position(id)?;
        let bucket = self.slots_mut(b);
        if alive {
            bucket.heard(id, now);
        } else if bucket.pending == Some(*id) {
            bucket.pending = None;
        }
        if alive {
            bucket.move_to_tail(i, now);
            self.set_active(b, now);
            None
        } else {
            Some(self.evict(b, i))
        }
    }

    /// Removes `id` from the table (or from a replacement cache); a replacement takes its place.
    /// Returns the eviction if `id` was in a bucket.
    pub fn remove(&mut self, id: &NodeId) -> Option<Eviction<V>> {
        let b = self.bucket_index(id)?;
        let key = window(id, b);
        if !has(&self.held, b) {
            return None;
        }
        let bucket = self.slots_mut(b);
        match bucket.find(id, key) {
            Some(i) => Some(self.evict(b, i)),
            None => {
                bucket.forget_replacement(id, key);
                None
            }
        }
    }

    fn evict(&mut self, b: usize, i: usize) -> Eviction<V> {
        let bucket = self.slots_mut(b);
        let removed = bucket.entries.remove(i);
        bucket.keys.remove(i);
        let seen = bucket.seen.remove(i);
        if bucket.pending == Some(removed.id) {
            bucket.pending = None;
        }
        let promoted = bucket.pop_replacement().map(|(e, key)| {
            let copy = e.clone();
            bucket.entries.push(e);
            bucket.keys.push(key);
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
    /// `scratch` is reused between calls to avoid allocation (its contents are overwritten). Only
    /// the entries passed to `f` are read (see the module docs), and any other entry only to
    /// break a tie of keys.
    pub fn for_each_closest<'a>(
        &'a self,
        target: &NodeId,
        n: usize,
        scratch: &mut Vec<(u64, u32)>,
        mut f: impl FnMut(&'a Entry<V>),
    ) {
        let mut left = n;
        if left == 0 {
            return;
        }
        let d = distance(&self.local, target);
        let mut visit = |b: usize, left: &mut usize| -> bool {
            let Some(slots) = self.slots(b) else {
                return false;
            };
            let entries = &slots.entries[..];
            if entries.is_empty() {
                return false;
            }
            let t = window(target, b);
            scratch.clear();
            scratch.extend(slots.keys.as_slice().iter().zip(0u32..).map(|(&x, i)| (x ^ t, i)));
            if scratch.len() > 1 {
                // Equal keys: the ids agree in the 64 bits below the bucket's bit too; the whole
                // distances decide (no two entries have the same id).
                let full = |i: u32| distance_key(&entries[i as usize].id, target);
                scratch.sort_unstable_by(|a, c| a.0.cmp(&c.0).then_with(|| full(a.1).cmp(&full(c.1))));
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
        self.slots.iter().flat_map(|s| s.entries.iter())
    }

    /// Every replacement-cache entry.
    pub fn replacements(&self) -> impl Iterator<Item = &Entry<V>> {
        self.slots.iter().filter_map(|s| s.replacements.as_ref()).flat_map(|r| r.entries.iter())
    }

    /// The entries of bucket `index`, least recently seen first (empty for index >= 256).
    #[must_use]
    pub fn bucket(&self, index: usize) -> &[Entry<V>] {
        if index >= NUM_BUCKETS {
            return &[];
        }
        self.slots(index).map_or(&[], |s| &s.entries[..])
    }

    /// The id being pinged for bucket `index`, if any.
    #[must_use]
    pub fn pending_ping(&self, index: usize) -> Option<&NodeId> {
        if index >= NUM_BUCKETS {
            return None;
        }
        self.slots(index)?.pending.as_ref()
    }

    /// Buckets due for a refresh: from the closest non-empty bucket up to bucket 255, those without
    /// activity (an insert, an update, a ping answer or [`mark_refreshed`](Self::mark_refreshed))
    /// for `interval`. Buckets below the closest non-empty one are not listed: nobody is expected
    /// there. Empty when the table is empty.
    #[must_use]
    pub fn stale_buckets(&self, now: Instant, interval: Duration) -> Vec<usize> {
        let mut lowest = None;
        each_ascending(self.nonempty, |b| {
            lowest = Some(b);
            true
        });
        let Some(lowest) = lowest else {
            return Vec::new();
        };
        (lowest..NUM_BUCKETS)
            .filter(|&i| match self.last_active(i) {
                None => true,
                Some(t) => now.saturating_duration_since(t) >= interval,
            })
            .collect()
    }

    /// Records that bucket `index` was refreshed (a lookup in its range ran) at `now`.
    pub fn mark_refreshed(&mut self, index: usize, now: Instant) {
        if index < NUM_BUCKETS {
            self.set_active(index, now);
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

#[cfg(test)]
mod tests;
