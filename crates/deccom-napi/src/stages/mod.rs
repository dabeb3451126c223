//! Stages of the native data path: the protocol layers that run inside the socket's I/O thread.
//!
//! A stage is one layer of the stack moved into the socket thread (fault injection, a delay line,
//! reliable UDP, Noise). The [`crate::pipeline::Pipeline`] keeps them in a list, bottom first, in
//! the order JavaScript attached them, and moves datagrams between them:
//!
//! - **receive** (from the kernel, bottom to top): each stage gets `(from, tag, body)` — the
//!   layer tag and the bytes after it — and passes zero or more datagrams to the stage above
//!   ([`Up::up`]); past the top stage a datagram goes to JavaScript. A stage may also report to
//!   JavaScript directly (whole messages, completions, session changes) through [`Up::sink`].
//! - **send** (top to bottom): a datagram handed down passes every stage below its origin
//!   ([`Stage::send`], [`Down::down`]) and then lands in the transmit batch.
//! - **own transmits**: a stage that originates datagrams (reliable UDP, Noise handshakes) is
//!   polled with [`Stage::poll_transmit`], which appends one datagram body to a buffer.
//!
//! The hot path is fused and copies nothing: when a stage polls its transmits, the pipeline first
//! lets every wrapping stage below it ([`Role::Wrap`], Noise) write its header room into the
//! transmit batch ([`Stage::prefix`]), the originating stage appends its datagram right after,
//! and the wrapping stages then seal it where it lies ([`Stage::seal`]). Stages that need the
//! finished datagram ([`Role::Copy`]: send-side faults and delay) end the fusion; from there the
//! datagram is copied once and handed down through [`Stage::send`].
//!
//! Timers: [`Stage::poll_timeout`] / [`Stage::handle_timeout`], as in the sans-IO state machines
//! the stages wrap. Counters: [`Stage::stats`] writes name/value pairs. Commands from JavaScript
//! reach a stage by its concrete type ([`Stage::as_any_mut`]).
//!
//! Adding a stage: one file here implementing [`Stage`]; its registration, an attach method on
//! the socket (`socket/mod.rs`) that validates the options on the JavaScript thread and queues
//! `Command::Attach`; and the TypeScript layer that asks for it (through a one-line pass-through
//! on `UdpTransport`). Stage-specific calls from JavaScript (like `rudpSend`) are one more
//! command each.

use std::any::Any;
use std::net::SocketAddr;
use std::time::Instant;

pub(crate) mod delay;
pub(crate) mod faults;
pub(crate) mod noise;
pub(crate) mod rudp;

/// Where the pipeline puts what JavaScript must see (implemented by the socket's receive batcher).
pub(crate) trait Sink {
  /// A plain datagram `[tag][body]` for the JavaScript dispatcher.
  fn datagram(&mut self, from: SocketAddr, tag: u8, body: &[u8]);
  /// An empty datagram (JavaScript counts it).
  fn empty(&mut self, from: SocketAddr);
  /// A whole reliable message (its first byte is the upper layer's tag).
  fn message(&mut self, from: SocketAddr, message: Vec<u8>);
  /// A send finished: `status` is one of the `DONE_*` codes of [`rudp`].
  fn completion(&mut self, id: f64, status: f64);
  /// A send asked for progress: `acked` bytes of message `id` are acknowledged so far.
  fn progress(&mut self, id: f64, acked: f64);
  /// True when JavaScript is so far behind that new reliable data must wait (backpressure).
  fn congested(&self) -> bool;
  /// The delay line (direction 0 receive, 1 send) needs the link parameters of `peer`.
  fn delay_peer(&mut self, direction: u32, peer: SocketAddr);
  /// The native Noise stage authenticated `peer` (node id, encoded public identity).
  fn noise_connected(&mut self, peer: SocketAddr, id: &[u8; 32], identity: &[u8]);
  /// The native Noise stage lost `peer`: 1 a handshake we started failed, 2 the session ended.
  fn noise_failed(&mut self, peer: SocketAddr, kind: u32);
}

/// Which way a direction-bound stage (faults, delay) acts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
  Receive,
  Send,
}

impl Direction {
  /// The code JavaScript sees in `delayPeers` (0 receive, 1 send).
  pub fn code(self) -> u32 {
    match self {
      Direction::Receive => 0,
      Direction::Send => 1,
    }
  }

  pub fn parse(s: &str) -> Option<Direction> {
    match s {
      "receive" => Some(Direction::Receive),
      "send" => Some(Direction::Send),
      _ => None,
    }
  }
}

/// What a stage does to a datagram with a given tag on its way down (for the fused path).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
  /// Leaves it untouched.
  Pass,
  /// Wraps it in place: [`Stage::prefix`] writes header room, [`Stage::seal`] seals.
  Wrap,
  /// Needs the finished datagram ([`Stage::send`]): the fused path stops here.
  Copy,
}

/// Datagrams staged for one send call (handed to the socket in GSO runs).
#[derive(Default)]
pub(crate) struct TxBatch {
  pub data: Vec<u8>,
  lens: Vec<u32>,
  dests: Vec<SocketAddr>,
}

/// Hands staged datagrams to the socket: payloads back to back, their lengths, their destinations.
pub(crate) type SendFn<'f> = &'f dyn Fn(&[u8], &[u32], &[SocketAddr]);

/// Datagrams staged per transmit flush (then handed to the socket in GSO runs).
const TX_BATCH: usize = 256;

impl TxBatch {
  /// Stages `[tag][body]`.
  pub fn push(&mut self, tag: u8, body: &[u8], to: SocketAddr, send: SendFn<'_>) {
    let start = self.data.len();
    self.data.push(tag);
    self.data.extend_from_slice(body);
    self.commit(start, to, send);
  }

  /// Stages the datagram the caller wrote at `data[start..]`.
  pub fn commit(&mut self, start: usize, to: SocketAddr, send: SendFn<'_>) {
    self.lens.push((self.data.len() - start) as u32);
    self.dests.push(to);
    if self.lens.len() == TX_BATCH {
      self.flush(send);
    }
  }

  pub fn flush(&mut self, send: SendFn<'_>) {
    if !self.lens.is_empty() {
      send(&self.data, &self.lens, &self.dests);
      self.data.clear();
      self.lens.clear();
      self.dests.clear();
    }
  }
}

/// The way up from a stage: the stages above it (nearest first) and then JavaScript.
pub(crate) struct Up<'a> {
  pub now: Instant,
  above: &'a mut [Box<dyn Stage>],
  pub sink: &'a mut dyn Sink,
}

impl<'a> Up<'a> {
  pub fn new(now: Instant, above: &'a mut [Box<dyn Stage>], sink: &'a mut dyn Sink) -> Up<'a> {
    Up { now, above, sink }
  }

  /// Hands `(from, tag, body)` to the next stage up, or to JavaScript past the top.
  pub fn up(&mut self, from: SocketAddr, tag: u8, body: &[u8]) {
    match self.above.split_first_mut() {
      None => self.sink.datagram(from, tag, body),
      Some((next, rest)) => next.receive(&mut Up { now: self.now, above: rest, sink: &mut *self.sink }, from, tag, body),
    }
  }
}

/// The way down from a stage: the stages below it (nearest last) and then the transmit batch.
pub(crate) struct Down<'a> {
  pub now: Instant,
  below: &'a mut [Box<dyn Stage>],
  tx: &'a mut TxBatch,
  send: SendFn<'a>,
}

impl<'a> Down<'a> {
  pub fn new(now: Instant, below: &'a mut [Box<dyn Stage>], tx: &'a mut TxBatch, send: SendFn<'a>) -> Down<'a> {
    Down { now, below, tx, send }
  }

  /// Hands `[tag][body]` to the next stage down, or to the transmit batch past the bottom.
  pub fn down(&mut self, to: SocketAddr, tag: u8, body: &[u8]) {
    match self.below.split_last_mut() {
      None => self.tx.push(tag, body, to, self.send),
      Some((next, rest)) => next.send(&mut Down { now: self.now, below: rest, tx: &mut *self.tx, send: self.send }, to, tag, body),
    }
  }
}

/// Counters as name/value pairs, rewritten in place on every publication (no allocation while
/// the set of names stays the same).
#[derive(Default)]
pub(crate) struct Stats {
  names: Vec<String>,
  values: Vec<f64>,
  len: usize,
}

impl Stats {
  /// Starts a new publication.
  pub fn clear(&mut self) {
    self.len = 0;
  }

  /// Adds `{prefix}_{name}` = `value` (just `name` when `prefix` is empty).
  pub fn put(&mut self, prefix: &str, name: &str, value: f64) {
    let i = self.len;
    self.len += 1;
    let sep = usize::from(!prefix.is_empty());
    let same = self.names.get(i).is_some_and(|n| {
      n.len() == prefix.len() + sep + name.len() && n.starts_with(prefix) && n.ends_with(name) && (sep == 0 || n.as_bytes()[prefix.len()] == b'_')
    });
    if same {
      self.values[i] = value;
      return;
    }
    self.names.truncate(i);
    self.values.truncate(i);
    self.names.push(if sep == 0 { name.to_string() } else { format!("{prefix}_{name}") });
    self.values.push(value);
  }

  /// The pairs of the last publication.
  pub fn iter(&self) -> impl Iterator<Item = (&str, f64)> {
    self.names[..self.len].iter().map(String::as_str).zip(self.values[..self.len].iter().copied())
  }
}

/// One layer running in the socket's I/O thread. See the module documentation.
pub(crate) trait Stage: Send + Any {
  /// The layer tag of the datagrams this stage owns and originates, if any.
  fn tag(&self) -> Option<u8> {
    None
  }

  /// A stage owning `tag` was composed above this one (its datagrams pass through this one).
  fn carries(&mut self, _tag: u8) {}

  /// The stage is in the middle of a transfer (a send from JavaScript then goes to the I/O
  /// thread, whose work the transfer is, instead of running on the JavaScript thread).
  fn busy(&self) -> bool {
    false
  }

  /// A datagram from below. Default: pass it up unchanged.
  fn receive(&mut self, up: &mut Up<'_>, from: SocketAddr, tag: u8, body: &[u8]) {
    up.up(from, tag, body);
  }

  /// A finished datagram from above on its way down. Default: pass it down unchanged.
  fn send(&mut self, down: &mut Down<'_>, to: SocketAddr, tag: u8, body: &[u8]) {
    down.down(to, tag, body);
  }

  /// What this stage does to datagrams tagged `tag` on the fused send path.
  fn role(&self, _tag: u8) -> Role {
    Role::Pass
  }

  /// [`Role::Wrap`]: appends what goes between this stage's own tag and the body of the datagram
  /// it wraps (header room; `inner_tag` is the wrapped datagram's tag).
  fn prefix(&self, _inner_tag: u8, _buf: &mut Vec<u8>) {}

  /// [`Role::Wrap`]: seals the datagram whose body (header room first) starts at `buf[at..]`, in
  /// place. False when the datagram cannot leave now (the stage kept a copy, or dropped it):
  /// the pipeline then discards what it wrote.
  fn seal(&mut self, _now: Instant, _to: SocketAddr, _buf: &mut Vec<u8>, _at: usize) -> bool {
    true
  }

  /// Appends the body of the next datagram this stage originates to `buf` and returns its
  /// destination (the pipeline wrote the tag and any header room before it).
  fn poll_transmit(&mut self, _now: Instant, _buf: &mut Vec<u8>) -> Option<SocketAddr> {
    None
  }

  /// When this stage's next timer is due.
  fn poll_timeout(&self) -> Option<Instant> {
    None
  }

  /// Runs due timers; may release datagrams up (receive side) or down (send side).
  fn handle_timeout(&mut self, _up: &mut Up<'_>, _down: &mut Down<'_>) {}

  /// The end of a receive burst (a datagram held for reordering must not wait longer).
  fn end_of_burst(&mut self, _up: &mut Up<'_>) {}

  /// After the transmits of a drive: report what happened (messages, completions, sessions).
  fn poll_events(&mut self, _up: &mut Up<'_>) {}

  /// Writes this stage's counters.
  fn stats(&self, out: &mut Stats);

  /// For commands addressed to one kind of stage.
  fn as_any_mut(&mut self) -> &mut dyn Any;
}
