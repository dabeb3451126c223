//! `KadTable` as a whole Kademlia node (`deccom_core::kad::node::KadNode`), driven from
//! JavaScript with one call per datagram (`onDatagram`) or timer (`onTimer`).
//!
//! Every call that may send writes into the caller-owned `out` buffer from offset `at`: a header
//! of [`OUT_HEADER`] bytes — the time of the next timer on the caller's clock (f64 LE; -1: none),
//! flags (byte 8: bit 0 events are waiting, bit 1 more datagrams are waiting: call `drain`), the
//! end of what was written (u32 LE at 12, an offset in `out`) — then as many of the datagrams to
//! send as fit, as frames of the core's `FRAME_HEADER` bytes (length u16 LE, 1 when it goes to
//! the source of the datagram handled, the 18-byte destination) and the datagram. The call
//! returns the end as well. The caller may send the datagrams as views of `out` (it then writes
//! the next call's output after this one's end).
//!
//! Events (`pollEvent`) are written into a caller-owned buffer: a u32 LE (a handle or a lookup
//! id) at 0, the record's length (u32 LE) at 4, the record from 8.

use deccom_core::kad::node::{Event, LookupOptions, UpkeepConfig, COUNTER_NAMES, FRAME_HEADER};
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::error::{coded, Code};
use crate::kad::{address, ms_duration, node_id, KadTable};

/// Bytes before the first frame in `out`.
const OUT_HEADER: usize = 16;

/// Event kinds of `pollEvent`.
const EV_CONNECTED: u32 = 1;
const EV_DISCONNECTED: u32 = 2;
const EV_LOOKUP_DONE: u32 = 3;
const EV_CLAIM: u32 = 4;
const EV_APPROVE: u32 = 5;
const EV_JOINED: u32 = 6;
const EV_JOIN_RETRY: u32 = 7;
const EV_JOIN_FAILED: u32 = 8;

/// How a lookup ended (`takeLookup`).
#[napi(object)]
pub struct KadLookupOutcome {
  /// The target's encoded record, if found (verified or claimed).
  pub found: Option<Buffer>,
  /// It answered a query of ours at that address under its id.
  pub verified: bool,
  pub hops: u32,
  pub queries: u32,
  pub failures: u32,
  pub timeouts: u32,
  /// The closest peers that answered: their encoded records back to back (if asked for).
  pub closest_records: Buffer,
  /// ms from start to end.
  pub elapsed: f64,
}

/// The counters' names, by the index `KadTable.counters` uses.
#[napi]
pub fn kad_counter_names() -> Vec<&'static str> {
  COUNTER_NAMES.to_vec()
}

impl KadTable {
  /// Writes the header at `out[at..]` and as many whole frames after it as fit; returns the end
  /// (an offset in `out`).
  fn flush(&mut self, out: &mut [u8], at: u32) -> Result<i32> {
    let at = at as usize;
    let Some(out) = out.get_mut(at..).filter(|o| o.len() >= OUT_HEADER) else {
      return Err(coded(Code::InvalidArgument, format!("out must hold {OUT_HEADER} bytes from {at}")));
    };
    let frames = self.node.transmits();
    let mut n = 0;
    while n + FRAME_HEADER <= frames.len() {
      let len = usize::from(u16::from_le_bytes([frames[n], frames[n + 1]]));
      let end = n + FRAME_HEADER + len;
      if OUT_HEADER + end > out.len() {
        break;
      }
      n = end;
    }
    out[OUT_HEADER..OUT_HEADER + n].copy_from_slice(&frames[..n]);
    let more = n < frames.len();
    self.node.consume_transmits(n);
    let deadline = self.node.poll_timeout().map_or(-1.0, |t| self.clock.ms(t));
    out[..8].copy_from_slice(&deadline.to_le_bytes());
    out[8] = u8::from(self.node.has_events()) | (u8::from(more) << 1);
    let end = (at + OUT_HEADER + n) as u32;
    out[12..16].copy_from_slice(&end.to_le_bytes());
    Ok(end as i32)
  }
}

#[napi]
impl KadTable {
  /// A Kademlia datagram (without the layer tag) from `from` (18-byte form) at `now`; `proven`:
  /// the id an authenticating layer below proved for the sender. Writes what to send into `out`
  /// from `at` (see the module docs) and returns its end.
  ///
  /// # Errors
  /// `ERR_DECCOM_INVALID_ADDRESS` for `from`; `ERR_DECCOM_INVALID_ARGUMENT` for a `proven` that is
  /// not 32 bytes or an `out` without 16 bytes from `at`.
  #[napi]
  pub fn on_datagram(&mut self, from: &[u8], data: &[u8], proven: Option<&[u8]>, now: f64, mut out: BufferSlice, at: u32) -> Result<i32> {
    let from = address(from)?;
    let proven = proven.map(node_id).transpose()?;
    let now = self.clock.at(now);
    self.node.handle_datagram(from, data, proven.as_ref(), now);
    self.flush(&mut out, at)
  }

  /// The timers due at `now`; writes what to send into `out` (see `onDatagram`).
  #[napi]
  pub fn on_timer(&mut self, now: f64, mut out: BufferSlice, at: u32) -> Result<i32> {
    let now = self.clock.at(now);
    self.node.handle_timeout(now);
    self.flush(&mut out, at)
  }

  /// What is waiting to be sent, into `out` (see `onDatagram`): after `startLookup`, `bootstrap`,
  /// `approved`, or when a header said more is waiting.
  #[napi]
  pub fn drain(&mut self, mut out: BufferSlice, at: u32) -> Result<i32> {
    self.flush(&mut out, at)
  }

  /// Starts a lookup of `target`: `stop` findPeer (stop once the target answers at an address
  /// some node named for it), `claims` emit an event per address learned for the target,
  /// `records` the outcome lists the closest peers' records. Returns the lookup's id (its end is
  /// an event), or -1 when too many run.
  ///
  /// # Errors
  /// `ERR_DECCOM_INVALID_ARGUMENT` for a target that is not 32 bytes.
  #[napi]
  pub fn start_lookup(&mut self, target: &[u8], stop: bool, claims: bool, records: bool, now: f64) -> Result<i64> {
    let target = node_id(target)?;
    let opts = LookupOptions { stop, claims, records, ..LookupOptions::default() };
    Ok(self.node.start_lookup(target, opts, self.clock.at(now)).map_or(-1, i64::from))
  }

  /// Ends a running lookup without an outcome.
  #[napi]
  pub fn abort_lookup(&mut self, id: u32) {
    self.node.abort_lookup(id);
  }

  /// The outcome of a lookup that ended (after its event), or null.
  #[napi]
  pub fn take_lookup(&mut self, id: u32) -> Option<KadLookupOutcome> {
    let o = self.node.take_lookup(id)?;
    Some(KadLookupOutcome {
      found: o.found.map(|r| r.as_slice().to_vec().into()),
      verified: o.verified,
      hops: o.hops,
      queries: o.stats.queries,
      failures: o.stats.failures,
      timeouts: o.stats.timeouts,
      closest_records: o.closest_records.into(),
      elapsed: o.elapsed.as_secs_f64() * 1000.0,
    })
  }

  /// Records a running lookup keeps (bounded), or null.
  #[napi]
  pub fn lookup_records(&self, id: u32) -> Option<u32> {
    self.node.lookup_records(id).map(|n| n as u32)
  }

  /// Starts the node's upkeep (`deccom_core::kad::node::upkeep`): the join through `bootstrap`
  /// (18-byte forms back to back) now, with `retries` more attempts when no bootstrap node
  /// answers; the refresh at join `joinRefreshDelay` ms after it joined, the settling self-lookup
  /// `settle` ms after that (0: none); a refresh every `refreshInterval` ms. Its outcome comes as
  /// events 6 (joined: 1 through a bootstrap node, 0 with none to ask), 7 (a retry follows: the
  /// attempt) and 8 (the join failed: the attempts).
  ///
  /// # Errors
  /// `ERR_DECCOM_INVALID_ADDRESS` for an address that is not in the 18-byte form.
  #[napi]
  pub fn start_upkeep(&mut self, bootstrap: &[u8], retries: u32, join_refresh_delay: f64, settle: f64, refresh_interval: f64, now: f64) -> Result<()> {
    let bootstrap = bootstrap.chunks(deccom_core::wire::RAW_ADDR_LEN).map(address).collect::<Result<Vec<_>>>()?;
    let config = UpkeepConfig {
      bootstrap,
      retries,
      join_refresh_delay: ms_duration(join_refresh_delay),
      settle: ms_duration(settle),
      refresh_interval: ms_duration(refresh_interval),
    };
    self.node.start_upkeep(config, self.clock.at(now));
    Ok(())
  }

  /// The answer to an approval event for `record`.
  #[napi]
  pub fn approved(&mut self, record: &[u8], ok: bool, now: f64) {
    self.node.approved(record, ok, self.clock.at(now));
  }

  /// A datagram of another layer came from `from` (18-byte form): a sign of life of a table entry.
  #[napi]
  pub fn alive(&mut self, from: &[u8], now: f64) {
    if let Some(from) = deccom_core::wire::decode_raw_addr(from) {
      self.node.alive(from, self.clock.at(now));
    }
  }

  /// Emit events of peers entering (kind 1) and leaving (2) the table.
  #[napi]
  pub fn set_peer_events(&mut self, on: bool) {
    self.node.set_peer_events(on);
  }

  /// The next event into `out` (see the module docs; at least 8 + 332 bytes): 0 none, 1 a peer
  /// entered the table, 2 one left (handle, record), 3 a lookup ended (its id), 4 a lookup
  /// learned an address of its target (lookup id, record), 5 approve a peer (record), 6-8 the
  /// upkeep's join (see `startUpkeep`).
  ///
  /// # Errors
  /// `ERR_DECCOM_INVALID_ARGUMENT` when `out` is too small for the event's record.
  #[napi]
  pub fn poll_event(&mut self, mut out: BufferSlice) -> Result<u32> {
    let Some(ev) = self.node.poll_event() else { return Ok(0) };
    let (kind, n, record) = match ev {
      Event::Connected { handle, record } => (EV_CONNECTED, handle, Some(record)),
      Event::Disconnected { handle, record } => (EV_DISCONNECTED, handle, Some(record)),
      Event::LookupDone { lookup } => (EV_LOOKUP_DONE, lookup, None),
      Event::Claim { lookup, record } => (EV_CLAIM, lookup, Some(record)),
      Event::Approve { record } => (EV_APPROVE, 0, Some(record)),
      Event::Joined { bootstrapped } => (EV_JOINED, u32::from(bootstrapped), None),
      Event::JoinRetry { attempt } => (EV_JOIN_RETRY, attempt, None),
      Event::JoinFailed { attempts } => (EV_JOIN_FAILED, attempts, None),
    };
    let bytes = record.as_ref().map_or(&[][..], |r| r.as_slice());
    let Some(o) = out.get_mut(..8 + bytes.len()) else {
      return Err(coded(Code::InvalidArgument, format!("out holds {} bytes, the event {}", out.len(), 8 + bytes.len())));
    };
    o[..4].copy_from_slice(&n.to_le_bytes());
    o[4..8].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
    o[8..].copy_from_slice(bytes);
    Ok(kind)
  }

  /// The counters (names: `kadCounterNames()`), by index.
  #[napi]
  pub fn counters(&self) -> Vec<f64> {
    self.node.counters().iter().map(|&c| c as f64).collect()
  }

  /// Requests in flight.
  #[napi(getter)]
  pub fn pending_requests(&self) -> u32 {
    self.node.pending_requests() as u32
  }

  /// Lookups running.
  #[napi(getter)]
  pub fn lookups_running(&self) -> u32 {
    self.node.lookups() as u32
  }

  /// Smoothed duration of answered FIND_NODEs in ms (0: none yet).
  #[napi(getter)]
  pub fn query_srtt(&self) -> f64 {
    self.node.query_srtt_ms()
  }

  /// How long a lookup waits for a FIND_NODE before asking another node, in ms.
  #[napi(getter)]
  pub fn patience(&self) -> f64 {
    self.node.patience().as_secs_f64() * 1000.0
  }

  /// The record of the table entry with id `id`, or null.
  #[napi]
  pub fn record_of(&self, id: &[u8]) -> Option<Buffer> {
    let id: deccom_core::NodeId = id.try_into().ok()?;
    self.node.table.get(&id).map(|s| s.encoded.as_slice().to_vec().into())
  }

  /// The records of the up to `n` entries closest to `target` (closest first), back to back;
  /// with no target, of every entry.
  ///
  /// # Errors
  /// `ERR_DECCOM_INVALID_ARGUMENT` for a target that is not 32 bytes.
  #[napi]
  pub fn records(&mut self, target: Option<&[u8]>, n: u32) -> Result<Buffer> {
    let mut out = Vec::new();
    match target {
      Some(t) => {
        let t = node_id(t)?;
        self.node.closest_records(&t, n as usize, &mut out);
      }
      None => {
        for e in self.node.table.iter() {
          out.extend_from_slice(e.value.encoded.as_slice());
        }
      }
    }
    Ok(out.into())
  }

  /// Sets (or with null clears) this node's external address (18-byte form).
  ///
  /// # Errors
  /// `ERR_DECCOM_INVALID_ADDRESS` for an address not in the 18-byte form.
  #[napi]
  pub fn set_own_external(&mut self, external: Option<&[u8]>) -> Result<()> {
    self.node.set_own_external(external.map(address).transpose()?);
    Ok(())
  }
}
