//! The Noise stage: a `deccom_core::noise::Endpoint` (encrypt mode) in the socket thread.
//!
//! It carries the datagrams of the stages composed above it (reliable UDP): each one leaves as
//! one Noise transport message holding a whole-message frame `[inner tag][0x00][datagram]`
//! (`deccom_core::noise::frame`, the same framing the JavaScript-driven Noise layer uses), and
//! arriving transport messages are opened (AEAD, replay window, frame decode) and their frames
//! handed up. On the fused send path the stage reserves header room in front of the datagram
//! ([`Stage::prefix`]) and seals it where it lies ([`Stage::seal`]); when no session is up yet
//! the endpoint keeps a copy and sends it after the handshake.
//!
//! Handshakes run here too; JavaScript learns about sessions through the sink
//! (`noise_connected` / `noise_failed`). Datagrams with a carried tag that arrive unencrypted are
//! dropped and counted; other datagrams pass up untouched.

use std::any::Any;
use std::net::SocketAddr;
use std::time::Instant;

use deccom_core::noise::frame::{self, Frame};
use deccom_core::noise::wire::TRANSPORT_HEADER_LEN;
use deccom_core::noise::{Endpoint, Event, HandshakeError, Mode};

use super::{Down, Role, Stage, Stats, Up};

/// Failure kind reported to JavaScript when a handshake authenticated another identity than the
/// one the dial expected (1: handshake failed, 2: session ended).
pub(crate) const FAILED_IDENTITY: u32 = 3;

pub(crate) struct NoiseStage {
  tag: u8,
  endpoint: Endpoint<SocketAddr>,
  /// Tags of the stages above, whose datagrams travel inside Noise.
  carried: Vec<u8>,
  out: Vec<u8>,
  framed: Vec<u8>,
  dropped_unprotected: u64,
  dropped_not_reliable: u64,
  dropped_malformed_frame: u64,
  dropped_queue_full: u64,
}

impl NoiseStage {
  pub fn new(tag: u8, endpoint: Endpoint<SocketAddr>) -> NoiseStage {
    NoiseStage {
      tag,
      endpoint,
      carried: Vec::new(),
      out: Vec::with_capacity(2048),
      framed: Vec::new(),
      dropped_unprotected: 0,
      dropped_not_reliable: 0,
      dropped_malformed_frame: 0,
      dropped_queue_full: 0,
    }
  }

  /// Starts a handshake with `peer` unless a session is up. With `expected`, the address is
  /// bound to that node id first: a session with another identity there is reported as failure
  /// kind 3 ([`FAILED_IDENTITY`]) and so is a handshake that authenticates anyone else.
  pub fn connect(&mut self, now: Instant, peer: SocketAddr, expected: Option<[u8; 32]>, up: &mut Up<'_>) {
    if expected.is_some() && !self.endpoint.expect_identity(now, peer, expected) {
      up.sink.noise_failed(peer, FAILED_IDENTITY);
      return;
    }
    if self.endpoint.is_authenticated(peer).is_none() {
      self.endpoint.connect(now, peer, None);
    }
  }

  fn carries_tag(&self, tag: u8) -> bool {
    self.carried.contains(&tag)
  }

  /// Hands the frame of an opened message up, or counts why not.
  fn opened(carried: &[u8], counts: &mut (u64, u64), up: &mut Up<'_>, peer: SocketAddr, data: &[u8]) {
    match frame::decode(data) {
      Ok(Frame::Whole { tag, data }) if carried.contains(&tag) => up.up(peer, tag, data),
      Err(_) => counts.1 += 1,
      _ => counts.0 += 1,
    }
  }

  /// Drains the endpoint's events: opened messages go up, session changes to JavaScript.
  fn events(&mut self, up: &mut Up<'_>) {
    while let Some(ev) = self.endpoint.poll_event() {
      match ev {
        Event::Message { peer, data, mode } => {
          if data.is_empty() {
            continue;
          }
          let mut counts = (0, 0);
          if mode == Mode::Encrypt {
            Self::opened(&self.carried, &mut counts, up, peer, &data);
          } else {
            counts.0 += 1;
          }
          self.dropped_not_reliable += counts.0;
          self.dropped_malformed_frame += counts.1;
        }
        Event::Connected { peer, remote_id, remote_identity } => up.sink.noise_connected(peer, &remote_id, &remote_identity.encode()),
        Event::HandshakeFailed { peer, reason: HandshakeError::IdentityMismatch } => up.sink.noise_failed(peer, FAILED_IDENTITY),
        Event::HandshakeFailed { peer, .. } => up.sink.noise_failed(peer, 1),
        Event::Disconnected { peer, .. } => up.sink.noise_failed(peer, 2),
        _ => {}
      }
    }
  }
}

impl Stage for NoiseStage {
  fn tag(&self) -> Option<u8> {
    Some(self.tag)
  }

  fn carries(&mut self, tag: u8) {
    if !self.carried.contains(&tag) {
      self.carried.push(tag);
    }
  }

  fn receive(&mut self, up: &mut Up<'_>, from: SocketAddr, tag: u8, body: &[u8]) {
    if tag == self.tag {
      // An opened message is handed up borrowed from the endpoint's scratch buffer (no
      // allocation per datagram).
      let mut counts = (0, 0);
      let carried = &self.carried;
      self.endpoint.handle_datagram_with(up.now, from, body, |peer, data| Self::opened(carried, &mut counts, up, peer, data));
      self.dropped_not_reliable += counts.0;
      self.dropped_malformed_frame += counts.1;
      self.events(up);
    } else if self.carries_tag(tag) {
      // What travels inside Noise must arrive sealed.
      self.dropped_unprotected += 1;
    } else {
      up.up(from, tag, body);
    }
  }

  fn send(&mut self, down: &mut Down<'_>, to: SocketAddr, tag: u8, body: &[u8]) {
    if !self.carries_tag(tag) {
      return down.down(to, tag, body);
    }
    self.framed.clear();
    self.framed.extend_from_slice(&frame::whole_header(tag));
    self.framed.extend_from_slice(body);
    if self.endpoint.send(down.now, to, &self.framed).is_err() {
      self.dropped_queue_full += 1;
    }
  }

  fn role(&self, tag: u8) -> Role {
    if self.carries_tag(tag) {
      Role::Wrap
    } else {
      Role::Pass
    }
  }

  fn prefix(&self, inner_tag: u8, buf: &mut Vec<u8>) {
    buf.resize(buf.len() + TRANSPORT_HEADER_LEN, 0);
    buf.extend_from_slice(&frame::whole_header(inner_tag));
  }

  fn seal(&mut self, now: Instant, to: SocketAddr, buf: &mut Vec<u8>, at: usize) -> bool {
    match self.endpoint.send_in_place(now, to, buf, at) {
      Ok(sealed) => sealed,
      Err(_) => {
        self.dropped_queue_full += 1;
        false
      }
    }
  }

  fn poll_transmit(&mut self, _now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr> {
    let to = self.endpoint.poll_transmit(&mut self.out)?;
    buf.extend_from_slice(&self.out);
    Some(to)
  }

  fn poll_timeout(&self) -> Option<Instant> {
    self.endpoint.poll_timeout()
  }

  fn handle_timeout(&mut self, up: &mut Up<'_>, _down: &mut Down<'_>) {
    self.endpoint.handle_timeout(up.now);
    self.events(up);
  }

  fn poll_events(&mut self, up: &mut Up<'_>) {
    self.events(up);
  }

  fn stats(&self, out: &mut Stats) {
    for (k, v) in crate::noise::stats_fields(&self.endpoint.stats()) {
      let prefix = if k.starts_with("noise") { "" } else { "noise" };
      out.put(prefix, k, v as f64);
    }
    out.put("noise", "dropped_unprotected", self.dropped_unprotected as f64);
    out.put("noise", "dropped_not_reliable", self.dropped_not_reliable as f64);
    out.put("noise", "dropped_malformed_frame", self.dropped_malformed_frame as f64);
    out.put("noise", "dropped_queue_full", self.dropped_queue_full as f64);
  }

  fn as_any_mut(&mut self) -> &mut dyn Any {
    self
  }
}
