//! Commands from JavaScript to the I/O thread.
//!
//! The I/O thread owns the pipeline alone; a JavaScript-thread call never takes a lock the I/O
//! thread holds while it works. Instead the call validates its arguments on the JavaScript thread
//! (so that errors stay synchronous), pushes a [`Command`] onto a bounded queue and wakes the I/O
//! thread through the poller it sleeps on. The queue's lock is held only to push, or to swap the
//! whole queue out; the I/O thread applies what it took between bursts, in order. Counters flow
//! the other way: after every drain the I/O thread publishes the stages' counters into a small
//! snapshot that `pipelineStats` reads without waiting.
//!
//! What validation needs to know about the stages (which are attached, the reliable endpoint's
//! limits, messages outstanding per peer) is kept on the JavaScript side in [`JsState`].

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;
use std::time::Instant;

use deccom_core::delay::Link;
use deccom_core::rudp::{Payload, RudpError};

use super::{lock, Shared};
use crate::error::{coded, Code};
use crate::pipeline::Pipeline;
use crate::stages::delay::DelayStage;
use crate::stages::faults::FaultStage;
use crate::stages::noise::NoiseStage;
use crate::stages::rudp::RudpStage;
use crate::stages::{Direction, Sink, Stage};

/// Commands waiting at most (rudpSend beyond this fails with ERR_DECCOM_SEND_QUEUE_FULL).
pub(crate) const MAX_COMMANDS: usize = 1 << 16;
/// Reliable sends staged on the JavaScript thread before they are handed over at once (see
/// [`JsState::staged`]); a send that finds this many staged hands them over first.
pub(crate) const MAX_STAGED: usize = 256;

pub(crate) enum Command {
  /// Composes a stage on top of the pipeline.
  Attach(Box<dyn Stage>),
  /// Replaces (or adds, or with None removes) the fault stage of one direction.
  Faults(Direction, Option<Box<FaultStage>>),
  /// Replaces (or adds, or with None removes) the delay line of one direction.
  Delay(Direction, Option<Box<DelayStage>>),
  DelayLink(Direction, SocketAddr, Link),
  RudpSend { id: f64, to: SocketAddr, message: Payload, progress: bool },
  /// Give up the reliable message JavaScript knows as `id` (no completion follows).
  RudpCancel { id: f64 },
  /// Start a handshake; with a node id, bind the address to it (a handshake there that
  /// authenticates anyone else fails, reported as kind 3).
  NoiseConnect(SocketAddr, Option<[u8; 32]>),
  /// Datagrams from `sendBatch` that must pass send-side stages: `[tag][body]` back to back.
  Send { data: Vec<u8>, lens: Vec<u32>, dests: Vec<SocketAddr> },
}

/// The queue between the JavaScript thread and the I/O thread.
pub(crate) struct Commands {
  queue: Mutex<VecDeque<Command>>,
  /// `queue`'s length, written under its lock, read without it (the staging bound).
  len: AtomicUsize,
  /// Bytes of `Send` commands waiting (bounded by the socket's pending-bytes limit).
  send_bytes: std::sync::atomic::AtomicUsize,
}

impl Commands {
  pub fn new() -> Commands {
    Commands { queue: Mutex::new(VecDeque::new()), len: 0.into(), send_bytes: 0.into() }
  }
}

impl Shared {
  /// Queues `cmd` and wakes the I/O thread (only when the queue was empty: the thread drains
  /// it whole once woken). With `bounded`, refuses beyond [`MAX_COMMANDS`].
  pub(crate) fn command(&self, cmd: Command, bounded: bool) -> Result<(), Command> {
    let mut q = lock(&self.commands.queue);
    if bounded && q.len() >= MAX_COMMANDS {
      return Err(cmd);
    }
    let wake = q.is_empty();
    q.push_back(cmd);
    self.commands.len.store(q.len(), Relaxed);
    drop(q);
    if wake {
      let _ = self.poller.notify();
    }
    Ok(())
  }

  /// Commands waiting for the I/O thread (read without the lock: a bound, not an exact count).
  pub(crate) fn commands_waiting(&self) -> usize {
    self.commands.len.load(Relaxed)
  }

  /// Queues `cmd` (unbounded) after the staged reliable sends, keeping the order JavaScript
  /// issued them in.
  pub(crate) fn command_after(&self, staged: &mut Vec<Command>, cmd: Command) {
    self.command_all(staged);
    let _ = self.command(cmd, false);
  }

  /// Hands every staged command over in order, with one lock and at most one wake-up.
  pub(crate) fn command_all(&self, staged: &mut Vec<Command>) {
    if staged.is_empty() {
      return;
    }
    let mut q = lock(&self.commands.queue);
    let wake = q.is_empty();
    q.extend(staged.drain(..));
    self.commands.len.store(q.len(), Relaxed);
    drop(q);
    if wake {
      let _ = self.poller.notify();
    }
  }

  /// Queues datagrams for the send-side stages; counts them as dropped beyond the byte bound.
  pub(crate) fn command_send(&self, data: Vec<u8>, lens: Vec<u32>, dests: Vec<SocketAddr>) -> bool {
    let bytes = data.len();
    if self.commands.send_bytes.load(Relaxed) + bytes > self.max_pending_bytes {
      self.counters.tx_dropped_queue_full.fetch_add(lens.len() as u64, Relaxed);
      return false;
    }
    self.commands.send_bytes.fetch_add(bytes, Relaxed);
    if self.command(Command::Send { data, lens, dests }, true).is_err() {
      self.commands.send_bytes.fetch_sub(bytes, Relaxed);
      return false;
    }
    true
  }

  /// Takes every waiting command (I/O thread).
  pub(crate) fn take_commands(&self, into: &mut VecDeque<Command>) {
    let mut q = lock(&self.commands.queue);
    std::mem::swap(&mut *q, into);
    self.commands.len.store(q.len(), Relaxed);
  }
}

/// Applies one command (I/O thread). `send` hands datagrams to the socket.
pub(crate) fn apply(sh: &Shared, p: &mut Pipeline, cmd: Command, now: Instant, send: crate::stages::SendFn<'_>, sink: &mut dyn Sink) {
  match cmd {
    Command::Attach(s) => p.push(s),
    Command::Faults(dir, s) => p.set::<FaultStage>(|f| f.direction == dir, s.map(|b| *b)),
    Command::Delay(dir, s) => p.set::<DelayStage>(|d| d.direction == dir, s.map(|b| *b)),
    Command::DelayLink(dir, peer, link) => {
      if let Some(d) = p.find::<DelayStage>(|d| d.direction == dir) {
        d.set_link(peer, link, now);
      }
    }
    Command::RudpSend { id, to, message, progress } => {
      let mut message = Some(message);
      let found = p.with_stage::<RudpStage>(now, sink, |r, up| {
        if let Some(m) = message.take() {
          r.send(now, id, to, m, progress, up);
        }
      });
      if !found {
        sink.completion(id, crate::pipeline::DONE_FORGOTTEN);
      }
    }
    Command::RudpCancel { id } => {
      p.with_stage::<RudpStage>(now, sink, |r, _| r.cancel(now, id));
    }
    Command::NoiseConnect(peer, expected) => {
      p.with_stage::<NoiseStage>(now, sink, |n, up| n.connect(now, peer, expected, up));
    }
    Command::Send { data, lens, dests } => {
      sh.commands.send_bytes.fetch_sub(data.len(), Relaxed);
      let mut off = 0;
      for (len, to) in lens.iter().zip(dests) {
        let end = off + *len as usize;
        p.send(now, to, &data[off..end], send);
        off = end;
      }
    }
  }
}

/// What the JavaScript thread knows about the stages, to validate calls before queuing them.
#[derive(Default)]
pub(crate) struct JsState {
  pub rudp: Option<RudpLimits>,
  pub noise: bool,
  /// Delay lines attached, by direction (receive, send).
  pub delay: [bool; 2],
  /// Fault stages attached, by direction (receive, send).
  pub faults: [bool; 2],
  next_id: u64,
  /// Reliable messages not yet completed: id → destination, and how many per destination.
  outstanding: HashMap<u64, SocketAddr>,
  per_peer: HashMap<SocketAddr, usize>,
  /// Reliable sends accepted in this JavaScript turn, handed to the I/O thread together when
  /// JavaScript calls `flush` (a microtask after the first send of a turn), before any other
  /// command, or when [`MAX_STAGED`] are waiting: one lock and one wake-up for a burst of
  /// sends instead of one each, and the I/O thread sees the burst at once.
  pub staged: Vec<Command>,
}

/// The reliable endpoint's limits, checked on the JavaScript thread.
pub(crate) struct RudpLimits {
  pub max_message_size: u64,
  pub max_outgoing_per_peer: usize,
}

impl JsState {
  /// True when datagrams from JavaScript must pass stages on their way out.
  pub fn send_stages(&self) -> bool {
    self.delay[1] || self.faults[1]
  }

  /// Impairment stages go below the protocol stages: refuses `what` once one is attached.
  pub fn below_protocols(&self, what: &str) -> napi::Result<()> {
    if self.rudp.is_some() || self.noise {
      return Err(coded(Code::InvalidArgument, format!("attach {what} before the Noise and reliable-UDP stages (stages are composed bottom first)")));
    }
    Ok(())
  }

  /// Validates a reliable send of `len` bytes (tag included) to `to` and assigns its id.
  pub fn rudp_send(&mut self, to: SocketAddr, len: usize) -> napi::Result<f64> {
    let r = self.rudp.as_ref().ok_or_else(|| coded(Code::InvalidArgument, "no reliable-UDP endpoint is attached to this socket"))?;
    if len as u64 > r.max_message_size {
      return Err(crate::error::rudp(RudpError::MessageTooLarge { len: len as u64, max: r.max_message_size }));
    }
    let n = self.per_peer.get(&to).copied().unwrap_or(0);
    if n >= r.max_outgoing_per_peer {
      return Err(crate::error::rudp(RudpError::SendQueueFull { limit: r.max_outgoing_per_peer }));
    }
    self.next_id += 1;
    self.outstanding.insert(self.next_id, to);
    *self.per_peer.entry(to).or_insert(0) += 1;
    Ok(self.next_id as f64)
  }

  /// Whether the reliable send `id` has not completed yet (as far as JavaScript has seen).
  pub fn rudp_outstanding(&self, id: f64) -> bool {
    self.outstanding.contains_key(&(id as u64))
  }

  /// A reliable send was not queued after all.
  pub fn rudp_unsend(&mut self, id: f64) {
    self.completed(id);
  }

  /// JavaScript is about to see the completion of `id`.
  pub fn completed(&mut self, id: f64) {
    let Some(to) = self.outstanding.remove(&(id as u64)) else { return };
    if let Some(n) = self.per_peer.get_mut(&to) {
      *n -= 1;
      if *n == 0 {
        self.per_peer.remove(&to);
      }
    }
  }
}
