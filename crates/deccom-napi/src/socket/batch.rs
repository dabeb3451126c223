//! Receive batching: what the I/O thread hands to JavaScript, and how.
//!
//! Datagrams are copied, compacted, into one buffer per batch, with `[offset, length, sourceSlot]`
//! triples. Source addresses are interned into small integer slots so that JavaScript never
//! parses an address per datagram: a batch carries the text of the addresses it introduces, and
//! a reset flag when the bounded slot table was cleared. Whole reliable messages, completions,
//! delay-link requests and Noise session changes ride in the same batch.
//!
//! Delivery is pulled: finished batches wait in a queue bounded in bytes, and JavaScript is woken
//! through a threadsafe function with a queue of one (at most one wake-up outstanding); it then
//! calls `take()` until there is nothing left. When JavaScript falls behind, plain datagrams are
//! dropped and counted, but reliable messages and completions never are (reliable data is refused
//! before it enters the endpoint instead, see [`Sink::congested`]).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;

use super::{lock, Shared};
use crate::stages::Sink;

/// Interned source addresses per socket before the table is reset.
const MAX_SLOTS: usize = 4096;

/// Wakes JavaScript; it then pulls batches with `take()` until there are none.
pub(crate) type WakeFn = ThreadsafeFunction<(), (), (), Status, false, false, 1>;

/// Reliable messages up to this size travel to JavaScript packed into one buffer per batch.
pub(crate) const PACK_MAX: usize = 16 << 10;
/// `message_lens` entry of a message that is not packed.
pub(crate) const UNPACKED: u32 = u32::MAX;

/// One batch of received datagrams on its way to JavaScript.
pub(crate) struct RecvBatch {
  data: Vec<u8>,
  /// Header `[count, flags, firstNewSlot]`, then `[offset, length, slot]` per datagram.
  meta: Vec<u32>,
  /// `ip port` pairs, space separated, for the slots this batch introduces (in slot order).
  new_addrs: Option<String>,
  /// Whole reliable messages larger than [`PACK_MAX`], and the slot of each sender (all
  /// messages, in order).
  messages: Vec<Vec<u8>>,
  message_slots: Vec<u32>,
  /// Messages of at most [`PACK_MAX`] bytes, back to back.
  packed: Vec<u8>,
  /// Per message: its length if packed, [`UNPACKED`] if it is the next of `messages`.
  message_lens: Vec<u32>,
  /// `[id, status]` pairs of finished reliable sends.
  pub completions: Vec<f64>,
  /// `[id, acknowledged bytes]` pairs: progress of reliable sends that asked for it.
  progress: Vec<f64>,
  /// `[direction, slot]` pairs: peers whose delay-line link JavaScript must set.
  delay_peers: Vec<u32>,
  /// Native Noise sessions: `[slot u32 BE][node id 32][encoded identity]` each.
  noise_connected: Vec<Vec<u8>>,
  /// `[slot, kind]` pairs: 1 handshake failed, 2 session ended.
  noise_failed: Vec<u32>,
}

/// The bytes a batch counts against the receive queue's bound.
fn batch_bytes(b: &RecvBatch) -> usize {
  b.data.len() + b.packed.len() + b.messages.iter().map(Vec::len).sum::<usize>()
}

pub(crate) struct RxQueue {
  batches: VecDeque<RecvBatch>,
  bytes: usize,
  /// A wake-up is outstanding (set by the I/O thread, cleared by `take()` on an empty queue).
  notified: bool,
}

impl RxQueue {
  pub fn new() -> RxQueue {
    RxQueue { batches: VecDeque::new(), bytes: 0, notified: false }
  }

  /// Whether a batch is waiting.
  pub fn has_batches(&self) -> bool {
    !self.batches.is_empty()
  }

  /// Queues a batch that was held back (see [`Rx::held`]); JavaScript is about to be called.
  pub fn push_held(&mut self, b: RecvBatch) {
    self.bytes += batch_bytes(&b);
    self.batches.push_back(b);
    self.notified = true;
  }

  /// The next batch, or None (and JavaScript is asleep again: the next batch wakes it).
  pub fn pop(&mut self) -> Option<RecvBatch> {
    let b = self.batches.pop_front();
    match &b {
      Some(b) => self.bytes -= batch_bytes(b),
      None => self.notified = false,
    }
    b
  }
}

/// A batch as JavaScript sees it.
#[napi(object)]
pub struct ReceivedBatch {
  /// The datagrams back to back.
  pub data: Buffer,
  /// `[count, flags (bit 0: slot table reset), firstNewSlot]`, then `[offset, length, slot]` each.
  pub meta: Uint32Array,
  /// `ip port` pairs, space separated, for the slots this batch introduces (from firstNewSlot on).
  pub new_addrs: Option<String>,
  /// Whole reliable messages larger than 16 KiB (first byte: the upper layer's tag), or null.
  pub messages: Option<Vec<Buffer>>,
  /// The sender slot of each message (all of them, in order), or null when none arrived.
  pub message_slots: Option<Uint32Array>,
  /// Per message: its length when it is in `packedMessages` (the next bytes there), or
  /// 0xFFFFFFFF when it is the next of `messages`.
  pub message_lens: Option<Uint32Array>,
  /// Messages of at most 16 KiB back to back (one buffer instead of one each), or null.
  pub packed_messages: Option<Buffer>,
  /// `[id, status]` pairs of finished reliable sends (status 0 sent, 1 peer unreachable,
  /// 2 forgotten, 3 refused by the receiver, 4 no room for another peer).
  pub completions: Option<Float64Array>,
  /// `[id, acknowledged bytes]` pairs: progress of reliable sends that asked for it (before
  /// their completion, in order), or null.
  pub progress: Option<Float64Array>,
  /// `[direction (0 receive, 1 send), slot]` pairs: peers whose native delay link must be set
  /// with `setDelayLink`, or null.
  pub delay_peers: Option<Uint32Array>,
  /// Sessions the native Noise stage completed: `[slot u32 BE][node id (32)][encoded identity]`.
  pub noise_connected: Option<Vec<Buffer>>,
  /// `[slot, kind]` pairs of Noise failures: 1 a handshake we started failed, 2 a session ended.
  pub noise_failed: Option<Uint32Array>,
}

impl From<RecvBatch> for ReceivedBatch {
  fn from(b: RecvBatch) -> ReceivedBatch {
    let has_messages = !b.message_slots.is_empty();
    ReceivedBatch {
      data: Buffer::from(b.data),
      meta: Uint32Array::new(b.meta),
      new_addrs: b.new_addrs,
      messages: (!b.messages.is_empty()).then(|| b.messages.into_iter().map(Buffer::from).collect()),
      message_slots: has_messages.then(|| Uint32Array::new(b.message_slots)),
      message_lens: has_messages.then(|| Uint32Array::new(b.message_lens)),
      packed_messages: (!b.packed.is_empty()).then(|| Buffer::from(b.packed)),
      completions: (!b.completions.is_empty()).then(|| Float64Array::new(b.completions)),
      progress: (!b.progress.is_empty()).then(|| Float64Array::new(b.progress)),
      delay_peers: (!b.delay_peers.is_empty()).then(|| Uint32Array::new(b.delay_peers)),
      noise_connected: (!b.noise_connected.is_empty()).then(|| b.noise_connected.into_iter().map(Buffer::from).collect()),
      noise_failed: (!b.noise_failed.is_empty()).then(|| Uint32Array::new(b.noise_failed)),
    }
  }
}

/// Interns source addresses into slots (bounded; cleared when full).
pub(crate) struct Slots {
  map: HashMap<SocketAddr, u32>,
  reset: bool,
  first_new: u32,
  new_text: String,
}

impl Slots {
  pub fn new() -> Slots {
    Slots { map: HashMap::new(), reset: false, first_new: 0, new_text: String::new() }
  }

  /// True when interning `addr` would clear the table (its slots must not share a batch with older ones).
  fn needs_reset(&self, addr: &SocketAddr) -> bool {
    self.map.len() >= MAX_SLOTS && !self.map.contains_key(addr)
  }

  fn slot(&mut self, addr: SocketAddr) -> u32 {
    if let Some(&s) = self.map.get(&addr) {
      return s;
    }
    if self.map.len() >= MAX_SLOTS {
      self.map.clear();
      self.reset = true;
      self.new_text.clear();
      self.first_new = 0;
    }
    let s = self.map.len() as u32;
    if self.new_text.is_empty() {
      self.first_new = s;
    } else {
      self.new_text.push(' ');
    }
    use std::fmt::Write;
    let _ = write!(self.new_text, "{} {}", addr.ip(), addr.port());
    self.map.insert(addr, s);
    s
  }
}

/// The batch being built by the I/O thread.
pub(crate) struct Batcher {
  data: Vec<u8>,
  meta: Vec<u32>,
  count: usize,
  messages: Vec<Vec<u8>>,
  message_slots: Vec<u32>,
  packed: Vec<u8>,
  message_lens: Vec<u32>,
  message_bytes: usize,
  completions: Vec<f64>,
  progress: Vec<f64>,
  delay_peers: Vec<u32>,
  noise_connected: Vec<Vec<u8>>,
  noise_failed: Vec<u32>,
}

impl Batcher {
  pub fn new() -> Self {
    let mut meta = Vec::with_capacity(3 + 3 * 64);
    meta.extend_from_slice(&[0, 0, 0]);
    Batcher { data: Vec::with_capacity(64 * 1024), meta, count: 0, messages: Vec::new(), message_slots: Vec::new(), packed: Vec::new(), message_lens: Vec::new(), message_bytes: 0, completions: Vec::new(), progress: Vec::new(), delay_peers: Vec::new(), noise_connected: Vec::new(), noise_failed: Vec::new() }
  }

  fn is_empty(&self) -> bool {
    self.count == 0 && !self.must_deliver()
  }

  /// Reliable messages and completions were accepted by the sender's peer: never drop them.
  fn must_deliver(&self) -> bool {
    !self.message_slots.is_empty() || !self.completions.is_empty() || !self.progress.is_empty() || !self.delay_peers.is_empty() || !self.noise_connected.is_empty() || !self.noise_failed.is_empty()
  }
}

/// The receive sink of the I/O thread: datagrams, messages and completions go into the batch
/// being built; a full batch goes to the queue for JavaScript.
pub(crate) struct Rx<'a> {
  pub sh: &'a Shared,
  pub tsfn: &'a WakeFn,
  pub slots: &'a mut Slots,
  pub batch: &'a mut Batcher,
  pub max_batch: usize,
  /// JavaScript is called right after this drain (on its own thread): no wake-up needed.
  pub direct: bool,
  /// Finished batches are kept here instead of queued: the caller hands them to JavaScript one
  /// call each (see `js_rx`).
  pub held: Option<Vec<RecvBatch>>,
}

impl<'a> Rx<'a> {
  pub fn new(sh: &'a Shared, tsfn: &'a WakeFn, slots: &'a mut Slots, batch: &'a mut Batcher, max_batch: usize) -> Rx<'a> {
    Rx { sh, tsfn, slots, batch, max_batch, direct: false, held: None }
  }

  fn slot(&mut self, from: SocketAddr) -> u32 {
    if self.slots.needs_reset(&from) {
      // JavaScript clears its table before reading a batch: older slots go out first.
      self.deliver();
    }
    self.slots.slot(from)
  }

  fn full(&mut self) {
    if self.batch.count >= self.max_batch || self.batch.data.len() + self.batch.message_bytes >= (1 << 20) {
      self.deliver();
    }
  }

  fn push_datagram(&mut self, from: SocketAddr, tag: Option<u8>, body: &[u8]) {
    let slot = self.slot(from);
    let off = self.batch.data.len() as u32;
    self.batch.data.extend(tag);
    self.batch.data.extend_from_slice(body);
    self.batch.meta.extend_from_slice(&[off, self.batch.data.len() as u32 - off, slot]);
    self.batch.count += 1;
    self.full();
  }

  /// Hands the finished batch to the receive queue and wakes JavaScript if it is not already
  /// awake. When the queue is over its byte bound the batch is dropped and counted; the address
  /// slots it would have introduced stay pending, so later batches still carry them.
  pub fn deliver(&mut self) {
    let (sh, slots, b) = (self.sh, &mut *self.slots, &mut *self.batch);
    if b.is_empty() {
      return;
    }
    let mut q = lock(&sh.rxq);
    if q.bytes + b.data.len() > sh.max_rx_queue_bytes && !b.must_deliver() {
      sh.counters.rx_dropped_queue_full.fetch_add(b.count as u64, Relaxed);
      *b = Batcher::new();
      return;
    }
    let mut batch = std::mem::replace(b, Batcher::new());
    batch.meta[0] = batch.count as u32;
    batch.meta[1] = u32::from(slots.reset);
    batch.meta[2] = slots.first_new;
    let new_addrs = (!slots.new_text.is_empty()).then(|| std::mem::take(&mut slots.new_text));
    slots.reset = false;
    let b = RecvBatch {
      data: batch.data,
      meta: batch.meta,
      new_addrs,
      messages: batch.messages,
      message_slots: batch.message_slots,
      packed: batch.packed,
      message_lens: batch.message_lens,
      completions: batch.completions,
      progress: batch.progress,
      delay_peers: batch.delay_peers,
      noise_connected: batch.noise_connected,
      noise_failed: batch.noise_failed,
    };
    sh.counters.rx_batches.fetch_add(1, Relaxed);
    if let Some(held) = self.held.as_mut() {
      held.push(b);
      return;
    }
    q.bytes += batch_bytes(&b);
    q.batches.push_back(b);
    if !q.notified {
      q.notified = true;
      if self.direct {
        return;
      }
      drop(q);
      // At most one wake-up is outstanding, so the (size 1) queue of the function cannot be full.
      self.tsfn.call((), ThreadsafeFunctionCallMode::NonBlocking);
    }
  }
}

impl Sink for Rx<'_> {
  fn datagram(&mut self, from: SocketAddr, tag: u8, body: &[u8]) {
    self.push_datagram(from, Some(tag), body);
  }

  fn empty(&mut self, from: SocketAddr) {
    self.push_datagram(from, None, &[]);
  }

  fn message(&mut self, from: SocketAddr, message: Vec<u8>) {
    let slot = self.slot(from);
    self.batch.message_bytes += message.len();
    match u32::try_from(message.len()) {
      // Small: copied into the batch's shared buffer (one JavaScript buffer for all of them,
      // instead of an external buffer, a finalizer and a free each).
      Ok(len) if message.len() <= PACK_MAX => {
        self.batch.packed.extend_from_slice(&message);
        self.batch.message_lens.push(len);
      }
      _ => {
        self.batch.messages.push(message);
        self.batch.message_lens.push(UNPACKED);
      }
    }
    self.batch.message_slots.push(slot);
    self.full();
  }

  fn completion(&mut self, id: f64, status: f64) {
    self.batch.completions.extend_from_slice(&[id, status]);
  }

  fn progress(&mut self, id: f64, acked: f64) {
    self.batch.progress.extend_from_slice(&[id, acked]);
  }

  fn delay_peer(&mut self, direction: u32, peer: SocketAddr) {
    let slot = self.slot(peer);
    self.batch.delay_peers.extend_from_slice(&[direction, slot]);
  }

  fn noise_connected(&mut self, peer: SocketAddr, id: &[u8; 32], identity: &[u8]) {
    let slot = self.slot(peer);
    let mut rec = Vec::with_capacity(4 + 32 + identity.len());
    rec.extend_from_slice(&slot.to_be_bytes());
    rec.extend_from_slice(id);
    rec.extend_from_slice(identity);
    self.batch.noise_connected.push(rec);
  }

  fn noise_failed(&mut self, peer: SocketAddr, kind: u32) {
    let slot = self.slot(peer);
    self.batch.noise_failed.extend_from_slice(&[slot, kind]);
  }

  fn congested(&self) -> bool {
    lock(&self.sh.rxq).bytes > self.sh.max_rx_queue_bytes
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn slots_intern_and_reset_when_full() {
    let mut s = Slots::new();
    let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let b: SocketAddr = "[::1]:2".parse().unwrap();
    assert_eq!(s.slot(a), 0);
    assert_eq!(s.slot(b), 1);
    assert_eq!(s.slot(a), 0);
    assert_eq!(s.new_text, "127.0.0.1 1 ::1 2");
    s.new_text.clear();
    for p in 3..(MAX_SLOTS as u16 + 1) {
      s.slot(SocketAddr::new("127.0.0.1".parse().unwrap(), p));
    }
    assert!(!s.reset);
    assert_eq!(s.map.len(), MAX_SLOTS);
    let c: SocketAddr = "127.0.0.2:9".parse().unwrap();
    assert_eq!(s.slot(c), 0, "a full table is cleared and numbering restarts");
    assert!(s.reset);
    assert_eq!((s.first_new, s.new_text.as_str()), (0, "127.0.0.2 9"));
  }
}
