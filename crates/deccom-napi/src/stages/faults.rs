//! Seeded fault injection on one direction (FaultyTransport in native mode): a thin stage over
//! the impairment model of `deccom_core::impair`, which decides each datagram's fate (pass, drop,
//! duplicate, corrupt, reorder by an extra delay). Copies the model delays wait in a bounded
//! `deccom_core::delay::TimedQueue` until due. A receive-direction stage acts on datagrams on
//! their way up and passes the send path untouched; a send-direction stage the other way round.

use std::any::Any;
use std::net::SocketAddr;
use std::time::Instant;

use deccom_core::delay::{instant_at, ms_since, TimedQueue};
use deccom_core::impair::{ImpairConfig, Impairment};

use super::{Direction, Down, Role, Stage, Stats, Up};

/// Bytes a fault stage holds back at most; beyond, delayed copies go at once.
const FAULT_HELD_BYTES: usize = 16 << 20;

pub(crate) struct FaultStage {
  pub direction: Direction,
  model: Impairment,
  /// The model counts time in ms from here.
  base: Instant,
  /// Delayed copies, `[tag][body]`, until due.
  held: TimedQueue<SocketAddr>,
}

impl FaultStage {
  pub fn new(direction: Direction, config: ImpairConfig, seed: u64, now: Instant) -> FaultStage {
    FaultStage { direction, model: Impairment::new(config, seed), base: now, held: TimedQueue::new(FAULT_HELD_BYTES) }
  }

  /// Decides the fate of `[tag][body]`: emits what is due now (held datagrams that came due
  /// first), holds the copies the model delays. Bytes are copied only when corrupted or held.
  fn apply(&mut self, now: Instant, peer: SocketAddr, tag: u8, body: &[u8], mut emit: impl FnMut(SocketAddr, u8, &[u8])) {
    self.release(now, &mut emit);
    let t = ms_since(self.base, now);
    let v = self.model.offer(t, body.len() + 1);
    let whole = || {
      let mut d = Vec::with_capacity(body.len() + 1);
      d.push(tag);
      d.extend_from_slice(body);
      d
    };
    let corrupted = v.corrupt_bit.is_some().then(|| {
      let mut c = whole();
      v.apply_corruption(&mut c);
      c
    });
    let (tag, body) = match &corrupted {
      Some(c) => (c[0], &c[1..]),
      None => (tag, body),
    };
    for at in &v.at[..v.copies] {
      if *at <= t {
        emit(peer, tag, body);
        continue;
      }
      let mut d = Vec::with_capacity(body.len() + 1);
      d.push(tag);
      d.extend_from_slice(body);
      if let Err((a, late)) = self.held.push(instant_at(self.base, *at), peer, d) {
        emit(a, late[0], &late[1..]);
      }
    }
  }

  /// Emits the held datagrams that are due at `now`.
  fn release(&mut self, now: Instant, mut emit: impl FnMut(SocketAddr, u8, &[u8])) {
    while let Some((a, d)) = self.held.pop_due(now) {
      if let Some((&tag, body)) = d.split_first() {
        emit(a, tag, body);
      }
    }
  }
}

impl Stage for FaultStage {
  fn receive(&mut self, up: &mut Up<'_>, from: SocketAddr, tag: u8, body: &[u8]) {
    if self.direction != Direction::Receive {
      return up.up(from, tag, body);
    }
    let now = up.now;
    self.apply(now, from, tag, body, |a, t, b| up.up(a, t, b));
  }

  fn send(&mut self, down: &mut Down<'_>, to: SocketAddr, tag: u8, body: &[u8]) {
    if self.direction != Direction::Send {
      return down.down(to, tag, body);
    }
    let now = down.now;
    self.apply(now, to, tag, body, |a, t, b| down.down(a, t, b));
  }

  fn role(&self, _tag: u8) -> Role {
    match self.direction {
      Direction::Send => Role::Copy,
      Direction::Receive => Role::Pass,
    }
  }

  fn end_of_burst(&mut self, up: &mut Up<'_>) {
    if self.direction == Direction::Receive {
      let now = up.now;
      self.release(now, |a, t, b| up.up(a, t, b));
    }
  }

  fn poll_timeout(&self) -> Option<Instant> {
    self.held.next_due()
  }

  fn handle_timeout(&mut self, up: &mut Up<'_>, down: &mut Down<'_>) {
    let now = up.now;
    match self.direction {
      Direction::Receive => self.release(now, |a, t, b| up.up(a, t, b)),
      Direction::Send => self.release(now, |a, t, b| down.down(a, t, b)),
    }
  }

  fn stats(&self, out: &mut Stats) {
    let s = self.model.stats();
    let prefix = match self.direction {
      Direction::Receive => "faults_rx",
      Direction::Send => "faults_tx",
    };
    for (k, v) in [("passed", s.passed), ("dropped", s.lost), ("duplicated", s.duplicated), ("reordered", s.reordered), ("corrupted", s.corrupted)] {
      out.put(prefix, k, v as f64);
    }
  }

  fn as_any_mut(&mut self) -> &mut dyn Any {
    self
  }
}
