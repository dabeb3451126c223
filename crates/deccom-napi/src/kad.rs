//! `KadTable` (the routing table with each peer's record), driven from JavaScript. Its answers to
//! PING and FIND_NODE are in `kad_answer.rs`, the lookup in `kad_lookup.rs`, the message codec in
//! `kad_wire.rs`.
//!
//! The protocol state lives in `deccom_core::kad` (sans-IO); the TypeScript `Kademlia` layer owns
//! the datagrams, the timers (the node's clock, so it runs in virtual time) and the promises.
//! Peers are small integer handles chosen by the caller; time is the caller's clock in ms.
//!
//! `closest` is the hot call: it writes ids into a caller-owned `Buffer` and handles into a
//! caller-owned `Uint32Array` and returns the count, so a call allocates nothing on either side.

use std::time::Duration;

use deccom_core::kad::kbucket::InsertResult;
use deccom_core::kad::node::{Encoded, KadNode, NodeConfig};
use deccom_core::kad::wire;
use deccom_core::wire::peer_record::PeerRecord;
use deccom_core::{NodeId, PublicIdentity};
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::clock::JsClock;
use crate::error::{coded, core, Code};


pub(crate) fn node_id(b: &[u8]) -> Result<NodeId> {
  b.try_into().map_err(|_| coded(Code::InvalidArgument, format!("a node id is 32 bytes, got {}", b.len())))
}

pub(crate) fn address(b: &[u8]) -> Result<std::net::SocketAddr> {
  deccom_core::wire::decode_raw_addr(b).ok_or_else(|| coded(Code::InvalidAddress, "an address is 18 bytes"))
}

pub(crate) use crate::clock::duration_of_ms as ms_duration;

pub(crate) use deccom_core::kad::node::ROW_LEN;

/// What `KadTable.insert` did: result 0 inserted, 1 updated, 2 pending (ping `toPing` first),
/// 3 cached (a ping is already outstanding), 4 the local id.
#[napi(object)]
pub struct KadInsert {
  pub result: u32,
  /// Handle of the entry to ping (result 2).
  pub to_ping: Option<u32>,
}

/// A Kademlia node (`deccom_core::kad::node::KadNode`): the routing table with each peer's
/// record, the requests in flight, the lookups (`kad_node.rs` drives it per datagram).
#[napi]
pub struct KadTable {
  pub(crate) node: KadNode,
  pub(crate) clock: JsClock,
  pub(crate) scratch: Vec<(u64, u32)>,
}

impl KadTable {
  /// `closestRows` without the JavaScript values (the socket's DHT GET responder calls it).
  pub(crate) fn write_rows(&mut self, target: &NodeId, n: usize, exclude: Option<&[u8]>, out: &mut [u8]) -> usize {
    self.node.write_rows(target, n, exclude, out)
  }
}

/// Options of a `KadTable` (see `KademliaOptions`; times in ms).
#[napi(object)]
#[derive(Default)]
pub struct KadNodeOptions {
  pub alpha: Option<u32>,
  pub query_timeout: Option<f64>,
  pub min_patience: Option<f64>,
  pub max_failures: Option<u32>,
  pub pad_to: Option<u32>,
  pub ephemeral: Option<bool>,
  pub ping_interval: Option<f64>,
  /// Peers enter the table only after `approved` (events of kind 5 ask).
  pub approve: Option<bool>,
  /// Seed of request ids and random targets.
  pub seed: Option<u32>,
}

#[napi]
impl KadTable {
  /// `ownRecord`: this node's encoded peer record (sent in every FIND_NODE and NODES).
  ///
  /// # Errors
  /// `ERR_DECCOM_RECORD_*` for a malformed record; `ERR_DECCOM_INVALID_ARGUMENT` for k = 0.
  #[napi(constructor)]
  pub fn new(own_record: &[u8], k: u32, max_replacements: u32, now: f64, options: Option<KadNodeOptions>) -> Result<KadTable> {
    let (own, _) = PeerRecord::decode(own_record).map_err(core)?;
    if k == 0 || k as usize > wire::MAX_NODES {
      return Err(coded(Code::InvalidArgument, format!("k must be 1..={}, got {k}", wire::MAX_NODES)));
    }
    let o = options.unwrap_or_default();
    let d = NodeConfig::default();
    let ms = |v: Option<f64>, dflt: Duration| v.map_or(dflt, ms_duration);
    let config = NodeConfig {
      k: k as usize,
      alpha: o.alpha.map_or(d.alpha, |a| a as usize),
      query_timeout: ms(o.query_timeout, d.query_timeout),
      min_patience: ms(o.min_patience, d.min_patience),
      max_failures: o.max_failures.unwrap_or(d.max_failures),
      pad_to: o.pad_to.map_or(d.pad_to, |p| p as usize),
      ephemeral: o.ephemeral.unwrap_or(false),
      max_replacements: max_replacements as usize,
      // Default 0 for a bare table (tests insert directly); the layer passes its own.
      ping_interval: ms(o.ping_interval, Duration::ZERO),
      approve: o.approve.unwrap_or(false),
    };
    let node = KadNode::new(own, config, o.seed.unwrap_or(0));
    Ok(KadTable { node, clock: JsClock::new(now), scratch: Vec::with_capacity(k as usize) })
  }

  /// Entries in the table.
  #[napi(getter)]
  pub fn size(&self) -> u32 {
    self.node.table.len() as u32
  }

  /// Inserts a peer whose address the caller validated (tests and tools: the node admits peers
  /// itself from the datagrams it handles): `identity` (encoded public identity) reachable at
  /// `addr` (18-byte address form), under the caller's `handle`; nothing is pinged for result 2. `external` (18-byte form) is the
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
    let t = self.clock.at(now);
    let result = self.node.insert_verified(handle, Encoded::new(&record), t);
    Ok(match result {
      InsertResult::Inserted => KadInsert { result: 0, to_ping: None },
      InsertResult::Updated => KadInsert { result: 1, to_ping: None },
      InsertResult::Pending { to_ping } => KadInsert { result: 2, to_ping: self.node.table.get(&to_ping).map(|s| s.handle) },
      InsertResult::Cached => KadInsert { result: 3, to_ping: None },
      InsertResult::SelfId => KadInsert { result: 4, to_ping: None },
    })
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
    self.node.table.for_each_closest(&target, n, &mut self.scratch, |e| {
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
    let v: Vec<u32> = self.node.table.iter().chain(self.node.table.replacements()).map(|e| e.value.handle).collect();
    v.into()
  }

  /// The address of the node whose NODES answer (to one of our lookups) named `addr` (18-byte
  /// form) last, in the 18-byte form, or null (see `deccom_core::kad::tellers`).
  #[napi]
  pub fn teller_of(&self, addr: &[u8]) -> Option<Buffer> {
    let addr = deccom_core::wire::decode_raw_addr(addr)?;
    self.node.tellers.teller_of(&addr).map(|t| deccom_core::wire::encode_raw_addr(t).to_vec().into())
  }

  /// Addresses `tellerOf` remembers.
  #[napi(getter)]
  pub fn tellers_size(&self) -> u32 {
    self.node.tellers.len() as u32
  }

  /// A FIND_NODE for `target` carrying our record, padded to `padTo` bytes; with `ephemeral`,
  /// flagged as from a node that is not to be added to routing tables.
  #[napi]
  pub fn encode_find_node(&self, request_hi: u32, request_lo: u32, target: &[u8], pad_to: u32, ephemeral: Option<bool>) -> Result<Buffer> {
    let target = node_id(target)?;
    let mut out = Vec::with_capacity(pad_to as usize);
    wire::encode_find_node(request_id(request_hi, request_lo), &target, &self.node.own, ephemeral.unwrap_or(false), pad_to as usize, &mut out);
    Ok(out.into())
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

pub(crate) fn request_id(hi: u32, lo: u32) -> u64 {
  (u64::from(hi) << 32) | u64::from(lo)
}
