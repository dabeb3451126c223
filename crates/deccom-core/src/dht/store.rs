//! What a node stores for others: announce records per topic and values by key, bounded.
//!
//! Bounds (all checked before anything is added; an update of an existing record never grows
//! the store): at most `max_records` records in total, `max_per_topic` announcers per topic and
//! `max_per_source` records put by one source IP (the address the put came from, proven by its
//! token). Puts spend a token of the source IP's bucket (`put_rate` per second, `put_burst`); the
//! table of buckets holds at most `max_sources` IPs. Every record expires: an announce after its
//! signed TTL (capped at `max_ttl_ms`), a value `value_ttl_ms` after its last put. The store does
//! not check signatures: the caller ([`super::server`]) passes verified records only.

use std::collections::HashMap;

use super::records::{AnnounceRecord, MutableRecord};
use super::{immutable_key, Kind, Status, MAX_VALUE_LEN};
use crate::NodeId;

/// The IP part of a raw address: what per-source bounds count by.
pub type SourceIp = [u8; 16];

/// Limits of a [`Store`].
#[derive(Clone, Copy, Debug)]
pub struct StoreConfig {
    /// Records in total (announces and values).
    pub max_records: usize,
    /// Announcers per topic.
    pub max_per_topic: usize,
    /// Records put by one source IP.
    pub max_per_source: usize,
    /// Longest an announce is kept (ms), whatever its TTL says.
    pub max_ttl_ms: u64,
    /// How long a value is kept after its last put (ms).
    pub value_ttl_ms: u64,
    /// Puts per second per source IP.
    pub put_rate: f64,
    /// Burst of puts per source IP.
    pub put_burst: f64,
    /// Source IPs with a put-rate bucket, at most.
    pub max_sources: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_records: 20_000,
            max_per_topic: 128,
            max_per_source: 512,
            max_ttl_ms: 20 * 60_000,
            value_ttl_ms: 2 * 3_600_000,
            put_rate: 50.0,
            put_burst: 200.0,
            max_sources: 8192,
        }
    }
}

#[derive(Clone, Debug)]
struct Announce {
    id: NodeId,
    seq: u64,
    bytes: Vec<u8>,
    expires: u64,
    source: SourceIp,
}

#[derive(Clone, Debug)]
struct Value {
    kind: Kind,
    seq: u64,
    bytes: Vec<u8>,
    expires: u64,
    source: SourceIp,
}

/// What an accepted announce changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// A new announcer (or a new address of a known one): worth telling the topic's lookers.
    New,
    /// A newer record of a known announcer at the same address.
    Refreshed,
    /// Nothing (the same record again, or a withdrawal of nothing).
    Same,
    /// The announcer withdrew.
    Removed,
}

/// The store (see the module docs).
#[derive(Debug)]
pub struct Store {
    cfg: StoreConfig,
    topics: HashMap<[u8; 32], Vec<Announce>>,
    values: HashMap<[u8; 32], Value>,
    per_source: HashMap<SourceIp, usize>,
    buckets: HashMap<SourceIp, (f64, u64)>,
    len: usize,
}

impl Store {
    /// An empty store.
    #[must_use]
    pub fn new(cfg: StoreConfig) -> Store {
        Store { cfg, topics: HashMap::new(), values: HashMap::new(), per_source: HashMap::new(), buckets: HashMap::new(), len: 0 }
    }

    /// Its limits.
    #[must_use]
    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    /// Records stored (expired ones count until [`Store::expire`] removes them).
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is stored.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Topics with announcers.
    #[must_use]
    pub fn topic_count(&self) -> usize {
        self.topics.len()
    }

    /// Announcers of `topic` stored (expired included until [`Store::expire`]).
    #[must_use]
    pub fn topic_len(&self, topic: &[u8; 32]) -> usize {
        self.topics.get(topic).map_or(0, Vec::len)
    }

    /// Records put by `source` that are stored.
    #[must_use]
    pub fn source_len(&self, source: &SourceIp) -> usize {
        self.per_source.get(source).copied().unwrap_or(0)
    }

    /// Source IPs with a put-rate bucket.
    #[must_use]
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// Spends one put token of `source`; false when it has none left.
    pub fn allow_put(&mut self, source: &SourceIp, now: u64) -> bool {
        if !self.buckets.contains_key(source) && self.buckets.len() >= self.cfg.max_sources {
            // Forget the fullest bucket (the one a newcomer would get anyway), else any one.
            let victim = self
                .buckets
                .iter()
                .max_by(|a, b| a.1 .0.total_cmp(&b.1 .0))
                .map(|(k, _)| *k);
            if let Some(v) = victim {
                self.buckets.remove(&v);
            }
        }
        let (rate, burst) = (self.cfg.put_rate, self.cfg.put_burst);
        let b = self.buckets.entry(*source).or_insert((burst, now));
        b.0 = (b.0 + now.saturating_sub(b.1) as f64 * rate / 1000.0).min(burst);
        b.1 = b.1.max(now);
        if b.0 < 1.0 {
            return false;
        }
        b.0 -= 1.0;
        true
    }

    fn room_for(&self, source: &SourceIp) -> bool {
        self.len < self.cfg.max_records && self.source_len(source) < self.cfg.max_per_source
    }

    fn add_source(&mut self, source: SourceIp) {
        *self.per_source.entry(source).or_insert(0) += 1;
        self.len += 1;
    }

    fn remove_source(&mut self, source: &SourceIp) {
        if let Some(n) = self.per_source.get_mut(source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(source);
            }
        }
        self.len -= 1;
    }

    /// Stores (or withdraws, ttl 0) a verified announce record of `topic` from `source`.
    pub fn announce(&mut self, topic: &[u8; 32], rec: &AnnounceRecord, source: SourceIp, now: u64) -> Result<Change, Status> {
        let id = rec.node_id();
        let list = self.topics.get(topic);
        let at = list.and_then(|l| l.iter().position(|a| a.id == id));
        if let Some(i) = at {
            let old = &list.expect("found")[i];
            if rec.seq < old.seq || (rec.seq == old.seq && rec.ttl != 0 && old.bytes[34..52] != rec.addr) {
                return Err(Status::LowerSeq);
            }
        }
        if rec.ttl == 0 {
            let Some(i) = at else { return Ok(Change::Same) };
            let l = self.topics.get_mut(topic).expect("found");
            let old = l.swap_remove(i);
            if l.is_empty() {
                self.topics.remove(topic);
            }
            self.remove_source(&old.source);
            return Ok(Change::Removed);
        }
        let mut bytes = Vec::with_capacity(super::records::ANNOUNCE_LEN);
        rec.encode_into(&mut bytes);
        let expires = now.saturating_add((u64::from(rec.ttl) * 1000).min(self.cfg.max_ttl_ms));
        if let Some(i) = at {
            let old_source = self.topics[topic][i].source;
            if old_source != source {
                if self.source_len(&source) >= self.cfg.max_per_source {
                    return Err(Status::Full);
                }
                self.remove_source(&old_source);
                self.add_source(source);
            }
            let a = &mut self.topics.get_mut(topic).expect("found")[i];
            let change = if a.bytes == bytes {
                Change::Same
            } else if a.bytes[34..52] == rec.addr {
                Change::Refreshed
            } else {
                Change::New
            };
            *a = Announce { id, seq: rec.seq, bytes, expires, source };
            return Ok(change);
        }
        if !self.room_for(&source) || list.map_or(0, Vec::len) >= self.cfg.max_per_topic {
            return Err(Status::Full);
        }
        self.topics.entry(*topic).or_default().push(Announce { id, seq: rec.seq, bytes, expires, source });
        self.add_source(source);
        Ok(Change::New)
    }

    /// Stores an immutable value (a put of a stored value renews its expiry).
    pub fn put_immutable(&mut self, value: &[u8], source: SourceIp, now: u64) -> Result<[u8; 32], Status> {
        if value.len() > MAX_VALUE_LEN {
            return Err(Status::TooLarge);
        }
        let key = immutable_key(value);
        let expires = now.saturating_add(self.cfg.value_ttl_ms);
        if let Some(v) = self.values.get_mut(&key) {
            v.expires = v.expires.max(expires);
            return Ok(key);
        }
        if !self.room_for(&source) {
            return Err(Status::Full);
        }
        self.values.insert(key, Value { kind: Kind::Immutable, seq: 0, bytes: value.to_vec(), expires, source });
        self.add_source(source);
        Ok(key)
    }

    /// Stores a verified mutable record: highest seq wins; `cas` must equal the stored seq.
    pub fn put_mutable(&mut self, rec: &MutableRecord, cas: Option<u64>, source: SourceIp, now: u64) -> Result<[u8; 32], Status> {
        if rec.value.len() > MAX_VALUE_LEN {
            return Err(Status::TooLarge);
        }
        let key = rec.key();
        let mut bytes = Vec::with_capacity(rec.encoded_len());
        rec.encode_into(&mut bytes);
        let expires = now.saturating_add(self.cfg.value_ttl_ms);
        if let Some(v) = self.values.get(&key) {
            if v.kind != Kind::Mutable {
                return Err(Status::Full);
            }
            if cas.is_some_and(|c| c != v.seq) {
                return Err(Status::CasMismatch);
            }
            if rec.seq < v.seq || (rec.seq == v.seq && v.bytes != bytes) {
                return Err(Status::LowerSeq);
            }
            let old_source = v.source;
            if old_source != source {
                if self.source_len(&source) >= self.cfg.max_per_source {
                    return Err(Status::Full);
                }
                self.remove_source(&old_source);
                self.add_source(source);
            }
            self.values.insert(key, Value { kind: Kind::Mutable, seq: rec.seq, bytes, expires, source });
            return Ok(key);
        }
        if !self.room_for(&source) {
            return Err(Status::Full);
        }
        self.values.insert(key, Value { kind: Kind::Mutable, seq: rec.seq, bytes, expires, source });
        self.add_source(source);
        Ok(key)
    }

    /// The unexpired announce records of `topic` (encoded).
    pub fn announces(&self, topic: &[u8; 32], now: u64) -> impl Iterator<Item = &[u8]> {
        self.topics.get(topic).into_iter().flatten().filter(move |a| a.expires > now).map(|a| a.bytes.as_slice())
    }

    /// The unexpired value of `key` (an immutable value, or an encoded mutable record) and its kind.
    #[must_use]
    pub fn value(&self, key: &[u8; 32], now: u64) -> Option<(Kind, &[u8])> {
        self.values.get(key).filter(|v| v.expires > now).map(|v| (v.kind, v.bytes.as_slice()))
    }

    /// The unexpired values (key, kind, bytes): what a storer republishes.
    pub fn values(&self, now: u64) -> impl Iterator<Item = (&[u8; 32], Kind, &[u8])> {
        self.values.iter().filter(move |(_, v)| v.expires > now).map(|(k, v)| (k, v.kind, v.bytes.as_slice()))
    }

    /// Removes every record expired at `now` (expiry ≤ now); returns how many.
    pub fn expire(&mut self, now: u64) -> usize {
        let mut gone: Vec<SourceIp> = Vec::new();
        self.topics.retain(|_, l| {
            l.retain(|a| {
                let keep = a.expires > now;
                if !keep {
                    gone.push(a.source);
                }
                keep
            });
            !l.is_empty()
        });
        self.values.retain(|_, v| {
            let keep = v.expires > now;
            if !keep {
                gone.push(v.source);
            }
            keep
        });
        for s in &gone {
            self.remove_source(s);
        }
        gone.len()
    }

    /// Expiry instants of every record (for tests and checks): (expires, source).
    pub fn expiries(&self) -> impl Iterator<Item = (u64, &SourceIp)> {
        self.topics.values().flatten().map(|a| (a.expires, &a.source)).chain(self.values.values().map(|v| (v.expires, &v.source)))
    }
}
