//! Seeded fault injection on one direction (FaultyTransport in native mode): a thin stage over
//! `deccom_core::faults::Faults`, which decides each datagram's fate (pass, drop, duplicate,
//! reorder, corrupt). A receive-direction stage acts on datagrams on their way up and passes the
//! send path untouched; a send-direction stage the other way round.
//!
//! A reordered datagram is held and emitted after the next one, or at the end of the receive
//! burst (receive side) / of the batch (send side), so nothing waits indefinitely.

use std::any::Any;
use std::net::SocketAddr;

use deccom_core::faults::{Fault, FaultConfig, Faults};

use super::{Direction, Down, Role, Stage, Stats, Up};

pub(crate) struct FaultStage {
  pub direction: Direction,
  faults: Faults,
  /// A datagram held back by reordering: destination/source and `[tag][body]`.
  held: Option<(SocketAddr, Vec<u8>)>,
  /// When the send side began holding a datagram (it leaves with the next drive).
  held_at: Option<std::time::Instant>,
}

/// Whether a datagram passes as it is, or is emitted from a copy.
enum Fate {
  Drop,
  /// Emit `n` times (1 pass, 2 duplicate).
  Emit(usize),
  Hold(Vec<u8>),
  Corrupted(Vec<u8>),
}

impl FaultStage {
  pub fn new(direction: Direction, config: FaultConfig, seed: u64) -> FaultStage {
    FaultStage { direction, faults: Faults::new(config, seed), held: None, held_at: None }
  }

  /// Decides the fate of `[tag][body]`; the bytes are copied only when held or corrupted.
  fn decide(&mut self, tag: u8, body: &[u8]) -> Fate {
    let whole = || {
      let mut d = Vec::with_capacity(body.len() + 1);
      d.push(tag);
      d.extend_from_slice(body);
      d
    };
    match self.faults.decide(body.len() + 1) {
      Fault::Pass => Fate::Emit(1),
      Fault::Drop => Fate::Drop,
      Fault::Duplicate => Fate::Emit(2),
      Fault::Reorder => Fate::Hold(whole()),
      Fault::Corrupt(bit) => {
        let mut d = whole();
        Faults::corrupt(&mut d, bit);
        Fate::Corrupted(d)
      }
    }
  }

  /// Applies a fault to one datagram and emits what passes, in order, through `emit`.
  fn apply(&mut self, peer: SocketAddr, tag: u8, body: &[u8], mut emit: impl FnMut(SocketAddr, u8, &[u8])) {
    let held = self.held.take();
    match self.decide(tag, body) {
      Fate::Drop => {}
      Fate::Emit(n) => {
        for _ in 0..n {
          emit(peer, tag, body);
        }
      }
      Fate::Hold(d) => {
        if let Some((a, h)) = held {
          emit(a, h[0], &h[1..]);
        }
        self.held = Some((peer, d));
        return;
      }
      Fate::Corrupted(d) => emit(peer, d[0], &d[1..]),
    }
    if let Some((a, h)) = held {
      emit(a, h[0], &h[1..]);
    }
  }

  fn release(&mut self, mut emit: impl FnMut(SocketAddr, u8, &[u8])) {
    if let Some((a, h)) = self.held.take() {
      emit(a, h[0], &h[1..]);
    }
  }
}

impl Stage for FaultStage {
  fn receive(&mut self, up: &mut Up<'_>, from: SocketAddr, tag: u8, body: &[u8]) {
    if self.direction != Direction::Receive {
      return up.up(from, tag, body);
    }
    self.apply(from, tag, body, |a, t, b| up.up(a, t, b));
  }

  fn send(&mut self, down: &mut Down<'_>, to: SocketAddr, tag: u8, body: &[u8]) {
    if self.direction != Direction::Send {
      return down.down(to, tag, body);
    }
    self.apply(to, tag, body, |a, t, b| down.down(a, t, b));
    self.held_at = self.held.as_ref().map(|_| down.now);
  }

  fn role(&self, _tag: u8) -> Role {
    match self.direction {
      Direction::Send => Role::Copy,
      Direction::Receive => Role::Pass,
    }
  }

  fn end_of_burst(&mut self, up: &mut Up<'_>) {
    if self.direction == Direction::Receive {
      self.release(|a, t, b| up.up(a, t, b));
    }
  }

  fn handle_timeout(&mut self, _up: &mut Up<'_>, down: &mut Down<'_>) {
    if self.direction == Direction::Send {
      self.release(|a, t, b| down.down(a, t, b));
      self.held_at = None;
    }
  }

  fn poll_timeout(&self) -> Option<std::time::Instant> {
    // A datagram held on the send side leaves with the next drive.
    if self.direction == Direction::Send {
      self.held_at
    } else {
      None
    }
  }

  fn stats(&self, out: &mut Stats) {
    let s = self.faults.stats();
    let prefix = match self.direction {
      Direction::Receive => "faults_rx",
      Direction::Send => "faults_tx",
    };
    for (k, v) in [("passed", s.passed), ("dropped", s.dropped), ("duplicated", s.duplicated), ("reordered", s.reordered), ("corrupted", s.corrupted)] {
      out.put(prefix, k, v as f64);
    }
  }

  fn as_any_mut(&mut self) -> &mut dyn Any {
    self
  }
}
