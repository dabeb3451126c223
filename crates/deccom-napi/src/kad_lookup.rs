//! `KadLookup`: one iterative lookup (see `deccom_core::kad::lookup`) driven from JavaScript, its
//! candidates known by id (the DHT's lookups: the caller knows where each is). Kademlia's own
//! lookups run inside the node (`KadTable`, `deccom_core::kad::node`).

use deccom_core::kad::lookup::{Lookup, LookupAction, LookupConfig};
use deccom_core::NodeId;
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::clock::JsClock;
use crate::error::{coded, Code};
use crate::kad::{ms_duration, node_id};

/// Counters of a lookup.
#[napi(object)]
pub struct KadLookupStats {
  pub queries: u32,
  pub successes: u32,
  pub failures: u32,
  pub timeouts: u32,
  pub rounds: u32,
}

/// One iterative lookup (see `deccom_core::kad::lookup`) whose candidates are ids.
#[napi]
pub struct KadLookup {
  lookup: Lookup<()>,
  clock: JsClock,
}

fn lookup_config(alpha: u32, k: u32, query_timeout_ms: f64) -> LookupConfig {
  LookupConfig { alpha: alpha as usize, k: k as usize, query_timeout: ms_duration(query_timeout_ms), max_candidates: 8 * k.max(1) as usize }
}

/// `KadLookup.next` results.
const QUERY: u32 = 0;
const WAIT: u32 = 1;
const FINISHED: u32 = 2;


#[napi]
impl KadLookup {
  /// A lookup for `target` from `seeds`: ids, 32 bytes each, back to back — or, with
  /// `seedStride` (at least 32), one id at the start of every `seedStride` bytes (the rows of
  /// `KadTable.closestRows`, 50 bytes each). The caller knows where the candidates are; answers
  /// come through `onSuccess`.
  #[napi(constructor)]
  pub fn new(target: &[u8], seeds: &[u8], alpha: u32, k: u32, query_timeout_ms: f64, now: f64, seed_stride: Option<u32>) -> Result<KadLookup> {
    let target = node_id(target)?;
    let stride = seed_stride.map_or(32, |s| s as usize);
    if stride < 32 {
      return Err(coded(Code::InvalidArgument, format!("seedStride must be at least 32, got {stride}")));
    }
    let seeds = seeds.chunks_exact(stride).map(|c| (c[..32].try_into().expect("32 bytes"), ()));
    Ok(KadLookup { lookup: Lookup::new(target, seeds, lookup_config(alpha, k, query_timeout_ms)), clock: JsClock::new(now) })
  }

  /// 0: query the peer whose id was written into `outId` (32 bytes); 1: wait; 2: finished.
  #[napi]
  pub fn next(&mut self, now: f64, mut out_id: BufferSlice) -> u32 {
    match self.lookup.next(self.clock.at(now)) {
      LookupAction::Query(id, ()) => {
        if let Some(o) = out_id.get_mut(..32) {
          o.copy_from_slice(&id);
        }
        QUERY
      }
      LookupAction::Wait => WAIT,
      LookupAction::Finished => FINISHED,
    }
  }

  /// `peer` answered naming `closer` ids (32 bytes each, back to back), candidates known by id.
  #[napi]
  pub fn on_success(&mut self, peer: &[u8], closer: &[u8]) -> Result<bool> {
    let peer = node_id(peer)?;
    Ok(self.lookup.on_success(&peer, closer.chunks_exact(32).map(|c| (c.try_into().expect("32 bytes"), ()))))
  }

  /// When the earliest query in flight times out (caller's clock), or null.
  #[napi]
  pub fn poll_timeout(&self) -> Option<f64> {
    self.lookup.poll_timeout().map(|t| self.clock.ms(t))
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

  /// Counters, and the hop count (rounds).
  #[napi]
  pub fn stats(&self) -> KadLookupStats {
    let s = self.lookup.stats();
    KadLookupStats { queries: s.queries, successes: s.successes, failures: s.failures, timeouts: s.timeouts, rounds: self.lookup.rounds() }
  }
}
