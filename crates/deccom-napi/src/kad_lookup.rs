//! `KadLookup`: one iterative lookup (see `deccom_core::kad::lookup`) driven from JavaScript, its
//! candidates the peer records of the table and of the NODES answers it is given.

use deccom_core::kad::distance_key;
use deccom_core::kad::lookup::{Lookup, LookupAction, LookupConfig};
use deccom_core::kad::wire;
use deccom_core::wire::peer_record::{PeerRecord, RecordLayout};
use deccom_core::NodeId;
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::clock::JsClock;
use crate::error::{coded, core, Code};
use crate::kad::{ms_duration, node_id, Encoded, KadTable};
use crate::kad_wire::{PARSE_COUNT, PARSE_RECORDS};

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
  /// The lookup's bound on candidates (`records` is kept within a multiple of it).
  max_candidates: usize,
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


/// The records of a NODES answer after its sender, with their indexes (1..), where `kadParse`'s
/// layout `words` for these bytes says they are (each bounded to the bytes; a word that names no
/// record ends the walk).
fn answer_records<'a>(data: &'a [u8], words: &'a [u32]) -> impl Iterator<Item = (usize, &'a [u8], RecordLayout)> + 'a {
  let count = words.get(PARSE_COUNT).map_or(0, |&c| c as usize).min(wire::MAX_NODES);
  (1..=count).map_while(move |i| {
    let at = *words.get(PARSE_RECORDS + 5 * i)? as usize;
    let rest = data.get(at..)?;
    let layout = PeerRecord::layout_of(rest)?;
    Some((i, &rest[..layout.len], layout))
  })
}

/// The id of an encoded record (`PeerRecord::layout_of` accepted it: it holds one).
fn record_id(record: &[u8]) -> NodeId {
  record[2..34].try_into().expect("a record holds its id")
}

impl KadLookup {
  fn keep(&mut self, record: &[u8]) -> u32 {
    self.records.push(Encoded::from_bytes(record));
    (self.records.len() - 1) as u32
  }

  /// Keeps the records arena bounded: records of peers that are no longer candidates (a closer
  /// one took their place) are dropped once the arena holds `ARENA_PER_CANDIDATE` times as many
  /// records as the lookup may have candidates.
  fn compact(&mut self) {
    if self.records.len() <= ARENA_PER_CANDIDATE * self.max_candidates {
      return;
    }
    let mut kept = Vec::with_capacity(2 * self.max_candidates);
    for v in self.lookup.values_mut() {
      if let Some(r) = self.records.get(*v as usize) {
        kept.push(r.clone());
        *v = (kept.len() - 1) as u32;
      }
    }
    self.records = kept;
  }
}

/// See `KadLookup::compact`.
const ARENA_PER_CANDIDATE: usize = 4;

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
    let config = lookup_config(alpha, k, query_timeout_ms);
    Ok(KadLookup { lookup: Lookup::new(target, seeds, config), records: Vec::new(), max_candidates: config.max_candidates, own: [0; 32], clock: JsClock::new(now) })
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
    let config = lookup_config(alpha, k, query_timeout_ms);
    Ok(KadLookup { lookup: Lookup::new(target, seeds, config), records, max_candidates: config.max_candidates, own: table.own.id, clock: JsClock::new(now) })
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
    let added = self.lookup.offer(rec.id, 0, || v);
    self.compact();
    Ok(added)
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
    for (i, record, at) in answer_records(data, &layout) {
      let id = record_id(record);
      let is_target = stop_at_target && id == target;
      // Known already (or farther than every candidate of a full lookup): nothing new.
      if id == self.own || !(is_target || self.lookup.wants(&id)) {
        continue;
      }
      if let Some(teller) = teller {
        table.tellers.told(at.udp, teller);
        if let Some(ext) = at.external.filter(|e| *e != at.udp) {
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
    self.compact();
    Ok(found)
  }

  /// Of the records the NODES answer `data` names after its sender (read as `onAnswer` reads
  /// them), how many are closer to the lookup's target than `than` (32 bytes) and are neither our
  /// own id nor an entry of `table`.
  #[napi]
  pub fn unknown_closer(&self, table: &KadTable, data: &[u8], layout: Uint32Array, than: &[u8]) -> Result<u32> {
    let than = distance_key(&node_id(than)?, self.lookup.target());
    let mut n = 0;
    for (_, record, _) in answer_records(data, &layout) {
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

  /// Records the lookup holds (its candidates', and those of peers that dropped out since the
  /// last compaction; bounded).
  #[napi(getter)]
  pub fn records_kept(&self) -> u32 {
    self.records.len() as u32
  }

  /// Counters, and the hop count (rounds).
  #[napi]
  pub fn stats(&self) -> KadLookupStats {
    let s = self.lookup.stats();
    KadLookupStats { queries: s.queries, successes: s.successes, failures: s.failures, timeouts: s.timeouts, rounds: self.lookup.rounds() }
  }
}
