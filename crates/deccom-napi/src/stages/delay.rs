//! A delay line on one direction (Delay in native mode): a thin stage over
//! `deccom_core::delay::DelayLine`, which holds each datagram for its peer's latency (and
//! serialization time at the peer's bandwidth) and hands it on when due.
//!
//! Links are asked for lazily: a peer whose link is unknown is reported to JavaScript
//! (`Sink::delay_peer`), which answers with `setDelayLink`; the peer's datagrams wait (bounded)
//! until then. A receive-direction line holds datagrams on their way up; a send-direction one
//! on their way down.

use std::any::Any;
use std::net::SocketAddr;
use std::time::Instant;

use deccom_core::delay::{DelayLine, Link};

use super::{Direction, Down, Role, Stage, Stats, Up};

pub(crate) struct DelayStage {
  pub direction: Direction,
  line: DelayLine<SocketAddr>,
}

impl DelayStage {
  pub fn new(direction: Direction, max_bytes: usize) -> DelayStage {
    DelayStage { direction, line: DelayLine::new(max_bytes) }
  }

  pub fn set_link(&mut self, peer: SocketAddr, link: Link, now: Instant) {
    self.line.set_link(peer, link, now);
  }

  fn hold(&mut self, now: Instant, peer: SocketAddr, tag: u8, body: &[u8]) {
    let mut d = Vec::with_capacity(body.len() + 1);
    d.push(tag);
    d.extend_from_slice(body);
    self.line.push(now, peer, d);
  }
}

impl Stage for DelayStage {
  fn receive(&mut self, up: &mut Up<'_>, from: SocketAddr, tag: u8, body: &[u8]) {
    match self.direction {
      Direction::Receive => self.hold(up.now, from, tag, body),
      Direction::Send => up.up(from, tag, body),
    }
  }

  fn send(&mut self, down: &mut Down<'_>, to: SocketAddr, tag: u8, body: &[u8]) {
    match self.direction {
      Direction::Send => self.hold(down.now, to, tag, body),
      Direction::Receive => down.down(to, tag, body),
    }
  }

  fn role(&self, _tag: u8) -> Role {
    match self.direction {
      Direction::Send => Role::Copy,
      Direction::Receive => Role::Pass,
    }
  }

  fn poll_timeout(&self) -> Option<Instant> {
    self.line.next_due()
  }

  fn handle_timeout(&mut self, up: &mut Up<'_>, down: &mut Down<'_>) {
    while let Some((peer, d)) = self.line.pop_due(up.now) {
      // Every datagram entering the line has its tag byte.
      let Some((&tag, body)) = d.split_first() else { continue };
      match self.direction {
        Direction::Receive => up.up(peer, tag, body),
        Direction::Send => down.down(peer, tag, body),
      }
    }
  }

  fn poll_events(&mut self, up: &mut Up<'_>) {
    for peer in self.line.take_unknown() {
      up.sink.delay_peer(self.direction.code(), peer);
    }
  }

  fn stats(&self, out: &mut Stats) {
    let s = self.line.stats();
    let prefix = match self.direction {
      Direction::Receive => "delay_rx",
      Direction::Send => "delay_tx",
    };
    for (k, v) in [("queued", s.queued), ("released", s.released), ("dropped_full", s.dropped_full), ("bytes", self.line.bytes() as u64)] {
      out.put(prefix, k, v as f64);
    }
  }

  fn as_any_mut(&mut self) -> &mut dyn Any {
    self
  }
}
