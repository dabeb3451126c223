//! The native data path: the stages the socket's I/O thread runs between the kernel and
//! JavaScript, composed in the order JavaScript attached them (bottom first).
//!
//! ```text
//!  kernel ─▶ recvmmsg/GRO ─▶ stage 0 ─▶ stage 1 ─▶ … ─▶ top stage ─▶ plain datagrams ─▶ JS
//!                              │           │                 └──▶ whole messages, completions ─▶ JS
//!  kernel ◀─ GSO sendmsg ◀─ transmit batch ◀─ stage 0 ◀─ stage 1 ◀─ … (own datagrams, JS sends)
//! ```
//!
//! For example `[faults (receive), noise, rudp]`: a datagram from the kernel meets the fault
//! injector, then Noise opens it, then the reliable endpoint reassembles it; the endpoint's
//! segments are written into the transmit batch behind Noise's header room and sealed there.
//! The stages and their contract are described in [`crate::stages`]; this file only moves
//! datagrams between them, runs their timers and collects their counters. It performs no I/O:
//! received bytes come in through [`Pipeline::receive`], datagrams to send leave through the
//! `send` function given to [`Pipeline::drive`], and what JavaScript must see goes to a
//! [`Sink`]. The pipeline is owned by the I/O thread alone.

use std::net::SocketAddr;
use std::time::Instant;

use crate::stages::{Down, Role, SendFn, Sink, Stage, Stats, TxBatch, Up};

pub(crate) use crate::stages::rudp::rudp_fields;
pub use crate::stages::rudp::{DONE_FORGOTTEN, DONE_SENT};

/// The stages of one socket, bottom first.
#[derive(Default)]
pub(crate) struct Pipeline {
  stages: Vec<Box<dyn Stage>>,
  tx: TxBatch,
  /// A finished datagram copied out of the batch for a [`Role::Copy`] stage.
  copy: Vec<u8>,
  /// Per transmit plan: wrapping stages (innermost first) with the tag each wraps, and where
  /// each one's header room starts.
  wraps: Vec<(usize, u8)>,
  rooms: Vec<usize>,
}

impl Pipeline {
  /// Composes `stage` on top. The stages below learn its tag (a Noise stage then carries it).
  pub fn push(&mut self, stage: Box<dyn Stage>) {
    if let Some(tag) = stage.tag() {
      for s in &mut self.stages {
        s.carries(tag);
      }
    }
    self.stages.push(stage);
  }

  /// The first stage of type `T` for which `pick` holds.
  pub fn find<T: Stage>(&mut self, pick: impl Fn(&T) -> bool) -> Option<&mut T> {
    self.position::<T>(pick).and_then(|i| self.stages[i].as_any_mut().downcast_mut::<T>())
  }

  /// Replaces the first stage of type `T` for which `pick` holds (keeping its place), adds
  /// `stage` on top when there is none, or removes the match when `stage` is None.
  pub fn set<T: Stage>(&mut self, pick: impl Fn(&T) -> bool, stage: Option<T>) {
    match (self.position::<T>(pick), stage) {
      (Some(i), Some(s)) => self.stages[i] = Box::new(s),
      (Some(i), None) => {
        self.stages.remove(i);
      }
      (None, Some(s)) => self.push(Box::new(s)),
      (None, None) => {}
    }
  }

  fn position<T: Stage>(&mut self, pick: impl Fn(&T) -> bool) -> Option<usize> {
    self.stages.iter_mut().position(|s| s.as_any_mut().downcast_mut::<T>().is_some_and(|t| pick(t)))
  }

  /// Runs `f` on the stage of type `T` with the way up from it (for commands that make a stage
  /// report to JavaScript).
  pub fn with_stage<T: Stage>(&mut self, now: Instant, sink: &mut dyn Sink, f: impl FnOnce(&mut T, &mut Up<'_>)) -> bool {
    let Some(i) = self.position::<T>(|_| true) else { return false };
    let (me, above) = self.stages[i..].split_first_mut().expect("i is a valid index");
    let Some(t) = me.as_any_mut().downcast_mut::<T>() else { return false };
    f(t, &mut Up::new(now, above, sink));
    true
  }

  /// One datagram from the kernel, on its way up through every stage.
  pub fn receive(&mut self, now: Instant, from: SocketAddr, bytes: &[u8], sink: &mut dyn Sink) {
    match bytes.split_first() {
      Some((&tag, body)) => Up::new(now, &mut self.stages, sink).up(from, tag, body),
      // An empty datagram has no tag for a stage to look at: JavaScript counts it.
      None => sink.empty(from),
    }
  }

  /// A datagram from JavaScript (`[tag][body]`), on its way down through every stage.
  pub fn send(&mut self, now: Instant, to: SocketAddr, bytes: &[u8], send: SendFn<'_>) {
    let Some((&tag, body)) = bytes.split_first() else { return };
    Down::new(now, &mut self.stages, &mut self.tx, send).down(to, tag, body);
  }

  /// End of a receive burst: the stages release what they held for it.
  pub fn end_of_burst(&mut self, now: Instant, sink: &mut dyn Sink) {
    for i in 0..self.stages.len() {
      let (me, above) = self.stages[i..].split_first_mut().expect("i < len");
      me.end_of_burst(&mut Up::new(now, above, sink));
    }
  }

  /// Runs due timers (bottom up), transmits what may leave now (top down, so what an upper stage
  /// hands to a lower one leaves in the same drive), reports events, and flushes the batch.
  pub fn drive(&mut self, now: Instant, send: SendFn<'_>, sink: &mut dyn Sink) {
    for i in 0..self.stages.len() {
      if self.stages[i].poll_timeout().is_some_and(|t| t <= now) {
        let (below, rest) = self.stages.split_at_mut(i);
        let (me, above) = rest.split_first_mut().expect("i < len");
        me.handle_timeout(&mut Up::new(now, above, sink), &mut Down::new(now, below, &mut self.tx, send));
      }
    }
    for i in (0..self.stages.len()).rev() {
      self.transmit_from(i, now, send);
    }
    for i in 0..self.stages.len() {
      let (me, above) = self.stages[i..].split_first_mut().expect("i < len");
      me.poll_events(&mut Up::new(now, above, sink));
    }
    self.tx.flush(send);
  }

  /// Sends the datagrams stage `i` originates. Each one is written where it leaves from: in the
  /// transmit batch, after its outermost tag and the header room of every wrapping stage below,
  /// and sealed there innermost first. A [`Role::Copy`] stage below ends the fusion: the finished
  /// datagram is copied out and handed down from that stage.
  fn transmit_from(&mut self, i: usize, now: Instant, send: SendFn<'_>) {
    let Some(own) = self.stages[i].tag() else { return };
    let Pipeline { stages, tx, copy, wraps, rooms } = self;
    let (below, rest) = stages.split_at_mut(i);
    let me = &mut rest[0];
    wraps.clear();
    let (mut outer, mut copy_at) = (own, None);
    for j in (0..below.len()).rev() {
      match below[j].role(outer) {
        Role::Pass => {}
        Role::Wrap => {
          wraps.push((j, outer));
          outer = below[j].tag().unwrap_or(outer);
        }
        Role::Copy => {
          copy_at = Some(j);
          break;
        }
      }
    }
    loop {
      let start = tx.data.len();
      tx.data.push(outer);
      rooms.clear();
      for &(j, inner) in wraps.iter().rev() {
        rooms.push(tx.data.len());
        below[j].prefix(inner, &mut tx.data);
      }
      let Some(to) = me.poll_transmit(now, &mut tx.data) else {
        tx.data.truncate(start);
        break;
      };
      // `rooms` is outermost first, `wraps` innermost first.
      let sealed = wraps.iter().zip(rooms.iter().rev()).all(|(&(j, _), &at)| below[j].seal(now, to, &mut tx.data, at));
      if !sealed {
        tx.data.truncate(start);
        continue;
      }
      match copy_at {
        None => tx.commit(start, to, send),
        Some(c) => {
          copy.clear();
          copy.extend_from_slice(&tx.data[start..]);
          tx.data.truncate(start);
          let (below_c, at_c) = below.split_at_mut(c);
          at_c[0].send(&mut Down::new(now, below_c, tx, send), to, copy[0], &copy[1..]);
        }
      }
    }
  }

  /// Some stage is in the middle of a transfer ([`Stage::busy`]).
  pub fn busy(&self) -> bool {
    self.stages.iter().any(|s| s.busy())
  }

  /// When the I/O thread must wake next (None: only for I/O).
  pub fn next_timeout(&self) -> Option<Instant> {
    self.stages.iter().filter_map(|s| s.poll_timeout()).min()
  }

  /// Writes the counters of every stage.
  pub fn stats(&self, out: &mut Stats) {
    out.clear();
    for s in &self.stages {
      s.stats(out);
    }
  }
}


#[cfg(test)]
mod tests;
