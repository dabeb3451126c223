//! `KadTable`, `KadLookup` and the Kademlia wire codec, driven from JavaScript.
//!
//! The protocol state lives in `deccom_core::kad` (sans-IO); the TypeScript `Kademlia` layer owns
//! the datagrams, the timers (the node's clock, so it runs in virtual time) and the promises.
//! Peers are small integer handles chosen by the caller; time is the caller's clock in ms.
//!
//! `closest` is the hot call: it writes ids into a caller-owned `Buffer` and handles into a
//! caller-owned `Uint32Array` and returns the count, so a call allocates nothing on either side.

use std::time::Duration;

use deccom_core::kad::addrbook::AddrBook;
use deccom_core::kad::kbucket::{Eviction, InsertResult, RoutingTable, TableConfig};
use deccom_core::kad::lookup::{Lookup, LookupAction, LookupConfig};
use deccom_core::kad::tellers::Tellers;
use deccom_core::kad::distance_key;
use deccom_core::kad::wire::{self, Message};
use deccom_core::wire::peer_record::PeerRecord;
use deccom_core::{NodeId, PublicIdentity};
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::clock::JsClock;
use crate::error::{coded, core, Code};


fn node_id(b: &[u8]) -> Result<NodeId> {
  b.try_into().map_err(|_| coded(Code::InvalidArgument, format!("a node id is 32 bytes, got {}", b.len())))
}

pub(crate) fn address(b: &[u8]) -> Result<std::net::SocketAddr> {
  deccom_core::wire::decode_raw_addr(b).ok_or_else(|| coded(Code::InvalidAddress, "an address is 18 bytes"))
}

fn ms_duration(ms: f64) -> Duration {
  if ms.is_finite() && ms > 0.0 {
    Duration::from_secs_f64(ms / 1000.0)
  } else {
    Duration::ZERO
  }
}

/// Bytes per row of `KadTable.closestRows`: an id and an 18-byte address.
pub(crate) const ROW_LEN: usize = 32 + deccom_core::wire::RAW_ADDR_LEN;

/// The UDP address of a record the table encoded, in the 18-byte form.
fn udp_raw(record: &[u8]) -> Option<[u8; deccom_core::wire::RAW_ADDR_LEN]> {
  PeerRecord::udp_of(record).map(deccom_core::wire::encode_raw_addr)
}

/// Encoded records up to this size (an Ed25519 identity with an IPv4 address, a TCP port and an
/// IPv4 external address takes 85 bytes) are kept inside the entry; larger ones on the heap.
const INLINE_RECORD: usize = 88;

/// A record's encoding, kept with its table entry.
#[derive(Clone)]
enum Encoded {
  Inline { len: u8, bytes: [u8; INLINE_RECORD] },
  Heap(Box<[u8]>),
}

impl Encoded {
  fn new(record: &PeerRecord) -> Encoded {
    Encoded::from_bytes(&record.encode())
  }

  /// A record already encoded (and validated).
  fn from_bytes(v: &[u8]) -> Encoded {
    if v.len() <= INLINE_RECORD {
      let mut bytes = [0u8; INLINE_RECORD];
      bytes[..v.len()].copy_from_slice(v);
      Encoded::Inline { len: v.len() as u8, bytes }
    } else {
      Encoded::Heap(v.into())
    }
  }

  fn as_slice(&self) -> &[u8] {
    match self {
      Encoded::Inline { len, bytes } => &bytes[..usize::from(*len)],
      Encoded::Heap(b) => b,
    }
  }
}

/// A peer in the table: the caller's handle and its record, encoded once when inserted (a NODES
/// answer copies these bytes; nothing else reads the record), inside the entry when it fits: a
/// NODES answer then reads the bucket's entries and nothing else.
#[derive(Clone)]
struct Slot {
  handle: u32,
  encoded: Encoded,
}

/// What `KadTable.insert` did: result 0 inserted, 1 updated, 2 pending (ping `toPing` first),
/// 3 cached (a ping is already outstanding), 4 the local id.
#[napi(object)]
pub struct KadInsert {
  pub result: u32,
  /// Handle of the entry to ping (result 2).
  pub to_ping: Option<u32>,
}

/// An entry left the table (`removed`) and maybe a replacement took its place (`promoted`).
#[napi(object)]
pub struct KadEviction {
  pub removed: u32,
  pub promoted: Option<u32>,
}

fn eviction(e: Eviction<Slot>) -> KadEviction {
  KadEviction { removed: e.removed.value.handle, promoted: e.promoted.map(|p| p.value.handle) }
}

/// The routing table (k-buckets around the local id) with each peer's record.
#[napi]
pub struct KadTable {
  table: RoutingTable<Slot>,
  pub(crate) own: PeerRecord,
  pub(crate) clock: JsClock,
  scratch: Vec<(u64, u32)>,
  /// Reused by the `*Into` encoders.
  pub(crate) bytes: Vec<u8>,
  /// Who named whom in the answers our lookups received (see `KadLookup.onAnswer`).
  tellers: Tellers,
  /// The per-address state of answering and asking (`kad_answer.rs`).
  pub(crate) book: AddrBook,
}

/// Addresses `KadTable.tellerOf` remembers, at most.
const MAX_TELLERS: usize = 8192;

impl KadTable {
  /// `closestRows` (see there) without the JavaScript values: what it and the socket's DHT GET
  /// responder (`socket::responder`) call. Returns the rows written.
  pub(crate) fn write_rows(&mut self, target: &NodeId, n: usize, exclude: Option<&[u8]>, out: &mut [u8]) -> usize {
    let n = n.min(out.len() / ROW_LEN);
    let mut i = 0;
    self.table.for_each_closest(target, n, &mut self.scratch, |e| {
      let Some(raw) = udp_raw(e.value.encoded.as_slice()) else { return };
      if exclude.is_some_and(|x| x == raw) {
        return;
      }
      let row = &mut out[i * ROW_LEN..(i + 1) * ROW_LEN];
      row[..32].copy_from_slice(&e.id);
      row[32..].copy_from_slice(&raw);
      i += 1;
    });
    i
  }

  /// The NODES answer to a FIND_NODE for `target` into `self.bytes` (see `encodeNodes`): false
  /// when even an empty answer would exceed `max_len`.
  pub(crate) fn nodes_into_bytes(&mut self, request_id: u64, target: &NodeId, max_len: usize) -> bool {
    let k = self.table.config().k;
    let mut recs: Vec<&[u8]> = Vec::with_capacity(k);
    self.table.for_each_closest(target, k, &mut self.scratch, |e| recs.push(e.value.encoded.as_slice()));
    self.bytes.clear();
    wire::encode_nodes_encoded(request_id, &self.own, recs, max_len, &mut self.bytes).is_some()
  }
}

#[napi]
impl KadTable {
  /// `ownRecord`: this node's encoded peer record (sent in every FIND_NODE and NODES).
  ///
  /// # Errors
  /// `ERR_DECCOM_RECORD_*` for a malformed record; `ERR_DECCOM_INVALID_ARGUMENT` for k = 0.
  #[napi(constructor)]
  pub fn new(own_record: &[u8], k: u32, max_replacements: u32, now: f64) -> Result<KadTable> {
    let (own, _) = PeerRecord::decode(own_record).map_err(core)?;
    if k == 0 || k as usize > wire::MAX_NODES {
      return Err(coded(Code::InvalidArgument, format!("k must be 1..={}, got {k}", wire::MAX_NODES)));
    }
    let config = TableConfig { k: k as usize, max_replacements: max_replacements as usize };
    Ok(KadTable { table: RoutingTable::new(own.id, config), own, clock: JsClock::new(now), scratch: Vec::with_capacity(k as usize), bytes: Vec::with_capacity(2048), tellers: Tellers::new(MAX_TELLERS), book: AddrBook::new() })
  }

  /// Entries in the table.
  #[napi(getter)]
  pub fn size(&self) -> u32 {
    self.table.len() as u32
  }

  /// Records that a verified peer was seen: `identity` (encoded public identity) reachable at
  /// `addr` (18-byte address form), under the caller's `handle`. `external` (18-byte form) is the
  /// NAT-mapped address the peer itself reports (its record's external address), kept in the
  /// record this table serves in NODES answers, as is `tcp_port` (the TCP port its record
  /// announced, 1..=65535; absent or 0: none).
  ///
  /// # Errors
  /// `ERR_DECCOM_BAD_IDENTITY`/`ERR_DECCOM_BAD_KEY`, `ERR_DECCOM_INVALID_ADDRESS`.
  #[napi]
  pub fn insert(&mut self, handle: u32, identity: &[u8], addr: &[u8], now: f64, external: Option<&[u8]>, tcp_port: Option<u32>) -> Result<KadInsert> {
    let identity = PublicIdentity::decode(identity).map_err(core)?;
    let udp = address(addr)?;
    let mut record = PeerRecord::new(identity, udp);
    record.external = external.map(address).transpose()?;
    record.tcp_port = tcp_port.and_then(|p| u16::try_from(p).ok()).filter(|&p| p != 0);
    let id = record.id;
    let t = self.clock.at(now);
    let encoded = Encoded::new(&record);
    Ok(match self.table.insert(id, Slot { handle, encoded }, t) {
      InsertResult::Inserted => KadInsert { result: 0, to_ping: None },
      InsertResult::Updated => KadInsert { result: 1, to_ping: None },
      InsertResult::Pending { to_ping } => KadInsert { result: 2, to_ping: self.table.get(&to_ping).map(|s| s.handle) },
      InsertResult::Cached => KadInsert { result: 3, to_ping: None },
      InsertResult::SelfId => KadInsert { result: 4, to_ping: None },
    })
  }

  /// A newcomer to a full bucket asks for a ping of its least recently seen entry only if that
  /// entry was not seen for `ms` (see `RoutingTable::set_fresh_interval`; default 0: always).
  #[napi]
  pub fn set_fresh_interval(&mut self, ms: f64) {
    self.table.set_fresh_interval(ms_duration(ms));
  }

  /// Whether inserting `id` now would do more than wait in a replacement cache (see
  /// `RoutingTable::would_admit`).
  #[napi]
  pub fn would_admit(&self, id: &[u8], now: f64) -> Result<bool> {
    let id = node_id(id)?;
    Ok(self.table.would_admit(&id, self.clock.at(now)))
  }

  /// Sets (or, with null, clears) the external (NAT-mapped) address in this node's own record,
  /// which every FIND_NODE and NODES carries from now on.
  ///
  /// # Errors
  /// `ERR_DECCOM_INVALID_ADDRESS` for an address not in the 18-byte form.
  #[napi]
  pub fn set_own_external(&mut self, external: Option<&[u8]>) -> Result<()> {
    self.own.external = external.map(address).transpose()?;
    Ok(())
  }

  /// This node's external address as its record carries it, in the 18-byte form (null: none).
  #[napi(getter)]
  pub fn own_external(&self) -> Option<Buffer> {
    self.own.external.map(|a| deccom_core::wire::encode_raw_addr(a).to_vec().into())
  }

  /// Marks a present peer as seen now (moves it to the tail of its bucket). False if absent.
  #[napi]
  pub fn touch(&mut self, id: &[u8], now: f64) -> Result<bool> {
    let id = node_id(id)?;
    Ok(self.table.touch(&id, self.clock.at(now)))
  }

  /// The outcome of a ping asked for by `insert` (result 2): only `alive = false` evicts.
  #[napi]
  pub fn on_ping_result(&mut self, id: &[u8], alive: bool, now: f64) -> Result<Option<KadEviction>> {
    let id = node_id(id)?;
    Ok(self.table.on_ping_result(&id, alive, self.clock.at(now)).map(eviction))
  }

  /// Removes a peer (a replacement may take its place).
  #[napi]
  pub fn remove(&mut self, id: &[u8]) -> Result<Option<KadEviction>> {
    let id = node_id(id)?;
    Ok(self.table.remove(&id).map(eviction))
  }

  /// The handle of a peer in the table, or null.
  #[napi]
  pub fn get(&self, id: &[u8]) -> Option<u32> {
    let id: NodeId = id.try_into().ok()?;
    self.table.get(&id).map(|s| s.handle)
  }

  /// Writes the up to `n` entries closest to `target` (closest first): ids into `outIds`
  /// (32 bytes each), handles into `outHandles`. `n` is capped by both outputs' sizes. Returns
  /// the number written.
  #[napi]
  pub fn closest(&mut self, target: &[u8], n: u32, mut out_ids: BufferSlice, mut out_handles: Uint32ArraySlice) -> Result<u32> {
    let target = node_id(target)?;
    let out_ids: &mut [u8] = &mut out_ids;
    // SAFETY: the JavaScript thread is inside this synchronous call, so nothing else can touch
    // the typed array's memory while we write to it.
    let out_handles: &mut [u32] = unsafe { out_handles.as_mut() };
    let n = (n as usize).min(out_ids.len() / 32).min(out_handles.len());
    let mut i = 0;
    self.table.for_each_closest(&target, n, &mut self.scratch, |e| {
      out_ids[i * 32..i * 32 + 32].copy_from_slice(&e.id);
      out_handles[i] = e.value.handle;
      i += 1;
    });
    Ok(i as u32)
  }

  /// Writes the up to `n` entries closest to `target` (closest first) into `out` as rows of
  /// [`ROW_LEN`] bytes: the id (32 bytes), then the UDP address of its record in the 18-byte form.
  /// An entry at `exclude` (18-byte form; e.g. the requester's own address) is taken but not
  /// written, so up to `n` rows are written. `n` is capped by `out`'s size. Returns the rows
  /// written. What a DHT answer lists; no JavaScript object is made per entry.
  ///
  /// # Errors
  /// `ERR_DECCOM_INVALID_ARGUMENT` for a target that is not 32 bytes.
  #[napi]
  pub fn closest_rows(&mut self, target: &[u8], n: u32, exclude: Option<&[u8]>, mut out: BufferSlice) -> Result<u32> {
    let target = node_id(target)?;
    Ok(self.write_rows(&target, n as usize, exclude, &mut out) as u32)
  }

  /// Every handle the table holds (entries and replacement caches).
  #[napi]
  pub fn handles(&self) -> Uint32Array {
    let v: Vec<u32> = self.table.iter().chain(self.table.replacements()).map(|e| e.value.handle).collect();
    v.into()
  }

  /// Handles of the entries only, bucket by bucket.
  #[napi]
  pub fn entries(&self) -> Uint32Array {
    let v: Vec<u32> = self.table.iter().map(|e| e.value.handle).collect();
    v.into()
  }

  /// Buckets without activity for `intervalMs` (see `RoutingTable::stale_buckets`).
  #[napi]
  pub fn stale_buckets(&self, now: f64, interval_ms: f64) -> Vec<u32> {
    self.table.stale_buckets(self.clock.at(now), ms_duration(interval_ms)).into_iter().map(|b| b as u32).collect()
  }

  /// Entries in bucket `index`.
  #[napi]
  pub fn bucket_len(&self, index: u32) -> u32 {
    self.table.bucket(index as usize).len() as u32
  }

  /// Records that a lookup refreshed bucket `index`.
  #[napi]
  pub fn mark_refreshed(&mut self, index: u32, now: f64) {
    self.table.mark_refreshed(index as usize, self.clock.at(now));
  }

  /// An id in bucket `index` made from 32 random bytes.
  #[napi]
  pub fn random_id_in_bucket(&self, index: u32, random: &[u8]) -> Result<Buffer> {
    let r = node_id(random)?;
    Ok(self.table.random_id_in_bucket(index as usize, &r).to_vec().into())
  }

  /// The bucket of `id`, or -1 for the local id.
  #[napi]
  pub fn bucket_of(&self, id: &[u8]) -> Result<i32> {
    let id = node_id(id)?;
    Ok(self.table.bucket_index(&id).map_or(-1, |b| b as i32))
  }

  /// The address of the node whose NODES answer (to one of our lookups) named `addr` (18-byte
  /// form) last, in the 18-byte form, or null (see `deccom_core::kad::tellers`).
  #[napi]
  pub fn teller_of(&self, addr: &[u8]) -> Option<Buffer> {
    let addr = deccom_core::wire::decode_raw_addr(addr)?;
    self.tellers.teller_of(&addr).map(|t| deccom_core::wire::encode_raw_addr(t).to_vec().into())
  }

  /// Addresses `tellerOf` remembers.
  #[napi(getter)]
  pub fn tellers_size(&self) -> u32 {
    self.tellers.len() as u32
  }

  /// A FIND_NODE for `target` carrying our record, padded to `padTo` bytes; with `ephemeral`,
  /// flagged as from a node that is not to be added to routing tables.
  #[napi]
  pub fn encode_find_node(&self, request_hi: u32, request_lo: u32, target: &[u8], pad_to: u32, ephemeral: Option<bool>) -> Result<Buffer> {
    let target = node_id(target)?;
    let mut out = Vec::with_capacity(pad_to as usize);
    wire::encode_find_node(request_id(request_hi, request_lo), &target, &self.own, ephemeral.unwrap_or(false), pad_to as usize, &mut out);
    Ok(out.into())
  }

  /// `encodeFindNode` written into `out` (caller-owned): returns the length, or -1 if `out` is too
  /// small.
  #[napi]
  pub fn encode_find_node_into(&mut self, request_hi: u32, request_lo: u32, target: &[u8], pad_to: u32, ephemeral: bool, mut out: BufferSlice) -> Result<i32> {
    let target = node_id(target)?;
    self.bytes.clear();
    wire::encode_find_node(request_id(request_hi, request_lo), &target, &self.own, ephemeral, pad_to as usize, &mut self.bytes);
    Ok(copy_out(&self.bytes, &mut out))
  }

  /// `encodeNodes` written into `out` (caller-owned): returns the length, 0 when even an empty
  /// answer would exceed `maxLen` (nothing to send), or -1 if `out` is too small.
  #[napi]
  pub fn encode_nodes_into(&mut self, request_hi: u32, request_lo: u32, target: &[u8], max_len: f64, mut out: BufferSlice) -> Result<i32> {
    let target = node_id(target)?;
    let max_len = if max_len.is_finite() { max_len.max(0.0) as usize } else { usize::MAX };
    if self.nodes_into_bytes(request_id(request_hi, request_lo), &target, max_len) {
      Ok(copy_out(&self.bytes, &mut out))
    } else {
      Ok(0)
    }
  }

  /// The NODES answer to a FIND_NODE: our record and up to k records closest to `target`, cut to
  /// `maxLen` bytes (the amplification bound for unverified requesters; Infinity for none). Null
  /// when even an empty answer would exceed `maxLen`.
  #[napi]
  pub fn encode_nodes(&mut self, request_hi: u32, request_lo: u32, target: &[u8], max_len: f64) -> Result<Option<Buffer>> {
    let target = node_id(target)?;
    let max_len = if max_len.is_finite() { max_len.max(0.0) as usize } else { usize::MAX };
    let k = self.table.config().k;
    let mut recs: Vec<&[u8]> = Vec::with_capacity(k);
    let table = &self.table;
    table.for_each_closest(&target, k, &mut self.scratch, |e| recs.push(e.value.encoded.as_slice()));
    let mut out = Vec::with_capacity(512);
    Ok(wire::encode_nodes_encoded(request_id(request_hi, request_lo), &self.own, recs, max_len, &mut out).map(|_| out.into()))
  }
}

/// Copies `bytes` into `out`: its length, or -1 when `out` is too small.
pub(crate) fn copy_out(bytes: &[u8], out: &mut [u8]) -> i32 {
  match out.get_mut(..bytes.len()) {
    Some(o) => {
      o.copy_from_slice(bytes);
      bytes.len() as i32
    }
    None => -1,
  }
}

fn request_id(hi: u32, lo: u32) -> u64 {
  (u64::from(hi) << 32) | u64::from(lo)
}

/// Counters of a lookup.
#[napi(object)]
pub struct KadLookupStats {
  pub queries: u32,
  pub successes: u32,
  pub failures: u32,
  pub timeouts: u32,
  pub rounds: u32,
}

/// One iterative lookup (see `deccom_core::kad::lookup`). Its candidates are peer records: the
/// table's entries closest to the target, records the caller adds (`addSeed`), and the records of
/// the NODES answers it is given (`onAnswer`), kept here (no JavaScript object per candidate); a
/// query names the candidate's id and UDP address.
#[napi]
pub struct KadLookup {
  /// Candidates' values index `records`.
  lookup: Lookup<u32>,
  records: Vec<Encoded>,
  /// Our own id (never a candidate).
  own: NodeId,
  clock: JsClock,
}

/// The value of a candidate known by its id only.
const NO_RECORD: u32 = u32::MAX;

fn lookup_config(alpha: u32, k: u32, query_timeout_ms: f64) -> LookupConfig {
  LookupConfig { alpha: alpha as usize, k: k as usize, query_timeout: ms_duration(query_timeout_ms), max_candidates: 8 * k.max(1) as usize }
}

/// `KadLookup.next` results.
const QUERY: u32 = 0;
const WAIT: u32 = 1;
const FINISHED: u32 = 2;

/// Layout words of `kadParse` the lookup reads: the count of NODES records, and each record's
/// offset (the first of its five words, from word 8).
const PARSE_COUNT: usize = 4;
const PARSE_RECORDS: usize = 8;

/// The records of a NODES answer after its sender, with their indexes (1..), where `kadParse`'s
/// layout `words` for these bytes says they are (each bounded to the bytes; a word that names no
/// record ends the walk).
fn answer_records<'a>(data: &'a [u8], words: &'a [u32]) -> impl Iterator<Item = (usize, &'a [u8])> + 'a {
  let count = words.get(PARSE_COUNT).map_or(0, |&c| c as usize).min(wire::MAX_NODES);
  (1..=count).map_while(move |i| {
    let at = *words.get(PARSE_RECORDS + 5 * i)? as usize;
    let rest = data.get(at..)?;
    let len = PeerRecord::encoded_len_of(rest)?;
    Some((i, &rest[..len]))
  })
}

/// The id of an encoded record (`PeerRecord::encoded_len_of` accepted it: it holds one).
fn record_id(record: &[u8]) -> NodeId {
  record[2..34].try_into().expect("a record holds its id")
}

impl KadLookup {
  fn keep(&mut self, record: &[u8]) -> u32 {
    self.records.push(Encoded::from_bytes(record));
    (self.records.len() - 1) as u32
  }
}

#[napi]
impl KadLookup {
  /// A lookup for `target` from `seeds`: ids, 32 bytes each, back to back — or, with
  /// `seedStride` (at least 32), one id at the start of every `seedStride` bytes (the rows of
  /// `KadTable.closestRows`, 50 bytes each). Its candidates are ids only: the caller knows where
  /// they are (`next` writes no address; answers come through `onSuccess`).
  #[napi(constructor)]
  pub fn new(target: &[u8], seeds: &[u8], alpha: u32, k: u32, query_timeout_ms: f64, now: f64, seed_stride: Option<u32>) -> Result<KadLookup> {
    let target = node_id(target)?;
    let stride = seed_stride.map_or(32, |s| s as usize);
    if stride < 32 {
      return Err(coded(Code::InvalidArgument, format!("seedStride must be at least 32, got {stride}")));
    }
    let seeds = seeds.chunks_exact(stride).map(|c| (c[..32].try_into().expect("32 bytes"), NO_RECORD));
    Ok(KadLookup { lookup: Lookup::new(target, seeds, lookup_config(alpha, k, query_timeout_ms)), records: Vec::new(), own: [0; 32], clock: JsClock::new(now) })
  }

  /// A lookup for `target` whose candidates are peer records: first the up to `k` entries of
  /// `table` closest to it (without the one with id `exclude`, if given: findPeer's target, asked
  /// apart); `addSeed` and `onAnswer` add more.
  #[napi(factory)]
  pub fn from_table(table: &mut KadTable, target: &[u8], alpha: u32, k: u32, query_timeout_ms: f64, now: f64, exclude: Option<&[u8]>) -> Result<KadLookup> {
    let target = node_id(target)?;
    let exclude: Option<NodeId> = exclude.map(node_id).transpose()?;
    let mut seeds: Vec<(NodeId, u32)> = Vec::with_capacity(k as usize);
    let mut records = Vec::with_capacity(4 * k as usize);
    table.table.for_each_closest(&target, k as usize, &mut table.scratch, |e| {
      if exclude.as_ref() == Some(&e.id) {
        return;
      }
      records.push(e.value.encoded.clone());
      seeds.push((e.id, (records.len() - 1) as u32));
    });
    Ok(KadLookup { lookup: Lookup::new(target, seeds, lookup_config(alpha, k, query_timeout_ms)), records, own: table.own.id, clock: JsClock::new(now) })
  }

  /// Adds a candidate of depth 0 from its encoded peer record (at the address the record names).
  /// False when it is no new candidate (known, our own, or farther than every candidate of a
  /// full lookup).
  ///
  /// # Errors
  /// `ERR_DECCOM_RECORD_*` for a malformed record.
  #[napi]
  pub fn add_seed(&mut self, record: &[u8]) -> Result<bool> {
    let (rec, len) = PeerRecord::decode(record).map_err(core)?;
    if rec.id == self.own || !self.lookup.wants(&rec.id) {
      return Ok(false);
    }
    let v = self.keep(&record[..len]);
    Ok(self.lookup.offer(rec.id, 0, || v))
  }

  /// 0: query the peer whose id was written into `outId` (32 bytes) — and, given `outAddr`, whose
  /// UDP address (of its record) into `outAddr` (18-byte form); 1: wait; 2: finished.
  #[napi]
  pub fn next(&mut self, now: f64, mut out_id: BufferSlice, out_addr: Option<BufferSlice>) -> u32 {
    let mut out_addr = out_addr;
    loop {
      match self.lookup.next(self.clock.at(now)) {
        LookupAction::Query(id, v) => {
          if let Some(oa) = out_addr.as_mut() {
            let udp = self.records.get(v as usize).and_then(|r| PeerRecord::udp_of(r.as_slice()));
            let (Some(udp), Some(oa)) = (udp, oa.get_mut(..deccom_core::wire::RAW_ADDR_LEN)) else {
              // A candidate without a record this lookup kept (they were all decoded): never queried.
              self.lookup.on_failure(&id);
              continue;
            };
            oa.copy_from_slice(&deccom_core::wire::encode_raw_addr(udp));
          }
          if let Some(o) = out_id.get_mut(..32) {
            o.copy_from_slice(&id);
          }
          return QUERY;
        }
        LookupAction::Wait => return WAIT,
        LookupAction::Finished => return FINISHED,
      }
    }
  }

  /// `peer` answered naming `closer` ids (32 bytes each, back to back), candidates known by id.
  #[napi]
  pub fn on_success(&mut self, peer: &[u8], closer: &[u8]) -> Result<bool> {
    let peer = node_id(peer)?;
    Ok(self.lookup.on_success(&peer, closer.chunks_exact(32).map(|c| (c.try_into().expect("32 bytes"), NO_RECORD))))
  }

  /// When the earliest query in flight times out (caller's clock), or null.
  #[napi]
  pub fn poll_timeout(&self) -> Option<f64> {
    self.lookup.poll_timeout().map(|t| self.clock.ms(t))
  }

  /// `peer` answered with the NODES message `data`, which `kadParse` validated and described in
  /// `layout` (its words for these bytes: the records are read where they say, not checked
  /// again). The records it names become candidates (not our own; not the target's when
  /// `stopAtTarget`: findPeer asks the target apart), and `table` remembers that the node at
  /// `teller` (18-byte form) named the addresses of each new one (and of the target). Returns the index of the first record
  /// naming the target when `stopAtTarget` (1..), 0 when none does, -1 when `peer` was not in
  /// flight (nothing added).
  #[napi]
  pub fn on_answer(&mut self, table: &mut KadTable, peer: &[u8], data: &[u8], layout: Uint32Array, teller: &[u8], stop_at_target: bool) -> Result<i32> {
    let peer = node_id(peer)?;
    let teller = deccom_core::wire::decode_raw_addr(teller);
    let Some(depth) = self.lookup.answered(&peer) else { return Ok(-1) };
    let target = *self.lookup.target();
    let mut found = 0;
    for (i, record) in answer_records(data, &layout) {
      let id = record_id(record);
      let is_target = stop_at_target && id == target;
      // Known already (or farther than every candidate of a full lookup): nothing new.
      if id == self.own || !(is_target || self.lookup.wants(&id)) {
        continue;
      }
      if let (Some(teller), Some(udp)) = (teller, PeerRecord::udp_of(record)) {
        table.tellers.told(udp, teller);
        if let Some(ext) = PeerRecord::external_of(record).filter(|e| *e != udp) {
          table.tellers.told(ext, teller);
        }
      }
      if is_target {
        if found == 0 {
          found = i as i32;
        }
        continue;
      }
      let records = &mut self.records;
      self.lookup.offer(id, depth, || {
        records.push(Encoded::from_bytes(record));
        (records.len() - 1) as u32
      });
    }
    Ok(found)
  }

  /// Of the records the NODES answer `data` names after its sender (read as `onAnswer` reads
  /// them), how many are closer to the lookup's target than `than` (32 bytes) and are neither our
  /// own id nor an entry of `table`.
  #[napi]
  pub fn unknown_closer(&self, table: &KadTable, data: &[u8], layout: Uint32Array, than: &[u8]) -> Result<u32> {
    let than = distance_key(&node_id(than)?, self.lookup.target());
    let mut n = 0;
    for (_, record) in answer_records(data, &layout) {
      let id = record_id(record);
      if distance_key(&id, self.lookup.target()) < than && id != self.own && !table.table.contains(&id) {
        n += 1;
      }
    }
    Ok(n)
  }

  /// The query to `peer` failed.
  #[napi]
  pub fn on_failure(&mut self, peer: &[u8]) -> Result<bool> {
    let peer = node_id(peer)?;
    Ok(self.lookup.on_failure(&peer))
  }

  /// Depth of a candidate (0 = seed), or -1.
  #[napi]
  pub fn depth(&self, peer: &[u8]) -> i32 {
    let Ok(peer) = NodeId::try_from(peer) else { return -1 };
    self.lookup.depth(&peer).map_or(-1, |d| d as i32)
  }

  /// Frees the lookup's candidates once the caller is done with it (the JavaScript object may
  /// live on until a garbage collection, which native memory does not prompt): it is finished and
  /// empty afterwards; `stats` keeps its counters.
  #[napi]
  pub fn dispose(&mut self) {
    self.lookup.release();
    self.records = Vec::new();
  }

  /// The k closest peers that answered, ids back to back.
  #[napi]
  pub fn closest(&self) -> Buffer {
    let mut out = Vec::with_capacity(32 * 20);
    for (id, _) in self.lookup.closest() {
      out.extend_from_slice(&id);
    }
    out.into()
  }

  /// The k closest peers that answered, their encoded peer records back to back.
  #[napi]
  pub fn closest_records(&self) -> Buffer {
    let mut out = Vec::with_capacity(90 * 20);
    for (_, v) in self.lookup.closest() {
      if let Some(r) = self.records.get(v as usize) {
        out.extend_from_slice(r.as_slice());
      }
    }
    out.into()
  }

  /// Counters, and the hop count (rounds).
  #[napi]
  pub fn stats(&self) -> KadLookupStats {
    let s = self.lookup.stats();
    KadLookupStats { queries: s.queries, successes: s.successes, failures: s.failures, timeouts: s.timeouts, rounds: self.lookup.rounds() }
  }
}

/// A decoded Kademlia message. `kind`: 1 PING, 2 PONG, 3 FIND_NODE, 4 NODES, 0 malformed (`error`
/// says why).
///
/// Records (FIND_NODE: the sender; NODES: the sender, then `count` nodes) come in a compact form so
/// that one message costs a handful of JavaScript values, not several per record: record `i`'s id
/// is `ids[32*i .. 32*i+32]`, its encoded identity `identities[identityEnds[i-1] (or 0) ..
/// identityEnds[i]]`, its host and port words `2i` and `2i+1` of `hosts.split(' ')`, and its
/// external address (the NAT-mapped address the node reports, if any) words `2i` and `2i+1` of
/// `externals.split(' ')`, which are `- 0` when the record has none; its TCP port `tcpPorts[i]`
/// (0: none).
#[napi(object)]
pub struct KadMessage {
  pub kind: u32,
  pub request_hi: u32,
  pub request_lo: u32,
  pub target: Option<Buffer>,
  pub truncated: bool,
  /// FIND_NODE: the sender asks not to be added to routing tables.
  pub ephemeral: bool,
  /// Number of NODES records (not counting the sender).
  pub count: u32,
  pub ids: Option<Buffer>,
  pub identities: Option<Buffer>,
  pub identity_ends: Option<Uint32Array>,
  pub hosts: Option<String>,
  pub externals: Option<String>,
  pub tcp_ports: Option<Uint32Array>,
  pub error: Option<String>,
}

fn message(kind: u32, id: u64) -> KadMessage {
  KadMessage {
    kind,
    request_hi: (id >> 32) as u32,
    request_lo: id as u32,
    target: None,
    truncated: false,
    ephemeral: false,
    count: 0,
    ids: None,
    identities: None,
    identity_ends: None,
    hosts: None,
    externals: None,
    tcp_ports: None,
    error: None,
  }
}

fn records<'a>(m: &mut KadMessage, recs: impl Iterator<Item = &'a PeerRecord>) {
  use std::fmt::Write;
  let (mut ids, mut identities, mut ends, mut hosts, mut externals) = (Vec::new(), Vec::new(), Vec::new(), String::new(), String::new());
  let mut tcp_ports = Vec::new();
  for r in recs {
    tcp_ports.push(u32::from(r.tcp_port.unwrap_or(0)));
    ids.extend_from_slice(&r.id);
    r.identity.encode_into(&mut identities);
    ends.push(identities.len() as u32);
    if !hosts.is_empty() {
      hosts.push(' ');
      externals.push(' ');
    }
    let _ = write!(hosts, "{} {}", r.udp.ip(), r.udp.port());
    let _ = match r.external {
      Some(e) => write!(externals, "{} {}", e.ip(), e.port()),
      None => write!(externals, "- 0"),
    };
  }
  m.ids = Some(ids.into());
  m.identities = Some(identities.into());
  m.identity_ends = Some(ends.into());
  m.hosts = Some(hosts);
  m.externals = Some(externals);
  m.tcp_ports = Some(tcp_ports.into());
}

/// Decodes a Kademlia message (without the layer tag); never throws: malformed input gives
/// `kind` 0 and an `error` reason.
#[napi]
pub fn kad_decode(bytes: &[u8]) -> KadMessage {
  match Message::decode(bytes) {
    Ok(Message::Ping { request_id }) => message(wire::kind::PING.into(), request_id),
    Ok(Message::Pong { request_id }) => message(wire::kind::PONG.into(), request_id),
    Ok(Message::FindNode { request_id, target, sender, ephemeral }) => {
      let mut m = message(wire::kind::FIND_NODE.into(), request_id);
      m.target = Some(target.to_vec().into());
      m.ephemeral = ephemeral;
      records(&mut m, std::iter::once(&sender));
      m
    }
    Ok(Message::Nodes { request_id, truncated, sender, nodes }) => {
      let mut m = message(wire::kind::NODES.into(), request_id);
      m.truncated = truncated;
      m.count = nodes.len() as u32;
      records(&mut m, std::iter::once(&sender).chain(nodes.iter()));
      m
    }
    Err(e) => {
      let mut m = message(0, 0);
      m.error = Some(e.reason().to_owned());
      m
    }
  }
}

/// Reasons of malformed messages, in the order `kadParse` reports them (layout word 6).
const PARSE_REASONS: [&str; 7] = ["truncated", "version", "unknown_type", "unknown_flags", "too_many_nodes", "trailing_bytes", "record"];
/// Layout words: 8 header words, then 5 per record (the sender and up to `MAX_NODES` more).
const PARSE_WORDS: usize = 8 + 5 * (wire::MAX_NODES + 1);

/// Writes where record `i`'s fields are (see `kadParse`; the record starts at `at`) and flags
/// IPv6 addresses in `out[7]`.
fn span(out: &mut [u32], i: usize, at: usize, r: &PeerRecord) {
  use deccom_core::wire::socket_addr_encoded_len;
  let w = &mut out[8 + 5 * i..8 + 5 * i + 5];
  let identity_len = r.identity.encoded_len();
  let udp = at + 36 + identity_len;
  let mut after = udp + socket_addr_encoded_len(&r.udp);
  w[0] = at as u32;
  w[1] = identity_len as u32;
  w[2] = udp as u32;
  w[3] = u32::from(r.tcp_port.unwrap_or(0));
  if r.tcp_port.is_some() {
    after += 2;
  }
  w[4] = if r.external.is_some() { after as u32 } else { 0 };
  if r.udp.is_ipv6() || r.external.is_some_and(|e| e.is_ipv6()) {
    out[7] |= 1;
  }
}

/// Decodes and validates a Kademlia message (without the layer tag) like `kadDecode`, but
/// allocates nothing: it writes where the fields are into `out` (caller-owned, at least 333 words)
/// and returns the kind (1 PING, 2 PONG, 3 FIND_NODE, 4 NODES), or 0 for a malformed message with
/// the reason's index in `out[6]` (truncated, version, unknown_type, unknown_flags,
/// too_many_nodes, trailing_bytes, record). Words: 1-2 request id (high, low), 3 truncated, 4 count
/// of NODES records after the sender, 5 offset of FIND_NODE's target, 7 bit 0 set when a record
/// holds an IPv6 address, bit 1 set for a FIND_NODE from an ephemeral sender; from word 8, five per record (sender first): record offset (id at +2,
/// identity at +36), identity length, UDP address offset, TCP port (0 none), external address
/// offset (0 none).
#[napi]
pub fn kad_parse(bytes: &[u8], mut out: Uint32ArraySlice) -> u32 {
  // SAFETY: the JavaScript thread is inside this synchronous call, so nothing else can touch the
  // typed array's memory while we write to it.
  let out: &mut [u32] = unsafe { out.as_mut() };
  if out.len() < PARSE_WORDS {
    return 0;
  }
  out[..8].fill(0);
  // Each record's span is written as it is decoded (nothing is collected).
  match wire::visit(bytes, |i, at, rec| span(out, i, at, &rec)) {
    Err(e) => {
      out[..6].fill(0);
      out[7] = 0;
      out[6] = PARSE_REASONS.iter().position(|r| *r == e.reason()).unwrap_or(PARSE_REASONS.len() - 1) as u32;
      0
    }
    Ok(h) => {
      out[1] = (h.request_id >> 32) as u32;
      out[2] = h.request_id as u32;
      if h.kind == wire::kind::FIND_NODE {
        out[5] = wire::HEADER_LEN as u32;
        if h.ephemeral {
          out[7] |= 2;
        }
      }
      if h.kind == wire::kind::NODES {
        out[3] = u32::from(h.truncated);
        out[4] = h.count as u32;
      }
      h.kind.into()
    }
  }
}

/// A PING (or, with `pong`, a PONG) with the given request id.
#[napi]
pub fn kad_encode_ping(pong: bool, request_hi: u32, request_lo: u32) -> Buffer {
  let request_id = request_id(request_hi, request_lo);
  let m = if pong { Message::Pong { request_id } } else { Message::Ping { request_id } };
  m.encode().into()
}

/// A NODES message from encoded records (for tests and tools; the layer uses `KadTable.encodeNodes`).
///
/// # Errors
/// `ERR_DECCOM_RECORD_*` for a malformed record.
#[napi]
pub fn kad_encode_nodes(request_hi: u32, request_lo: u32, sender_record: &[u8], records: Vec<Buffer>, truncated: bool) -> Result<Buffer> {
  let (sender, _) = PeerRecord::decode(sender_record).map_err(core)?;
  let nodes = records.iter().map(|b| PeerRecord::decode(b).map(|(r, _)| r)).collect::<std::result::Result<Vec<_>, _>>().map_err(core)?;
  Ok(Message::Nodes { request_id: request_id(request_hi, request_lo), truncated, sender, nodes }.encode().into())
}
