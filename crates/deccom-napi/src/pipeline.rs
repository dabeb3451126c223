//! The native data path: stages the socket's I/O thread runs between the kernel and JavaScript.
//!
//! ```text
//!  kernel ─▶ recvmmsg/GRO ─▶ [receive faults] ─▶ tag == reliable? ──yes──▶ rudp::Endpoint ─▶ whole messages ─▶ JS
//!                                                        └──no──▶ datagram batch ─────────────────────────────▶ JS
//!  JS send(message) ─▶ rudp::Endpoint ─▶ poll_transmit ─▶ [send faults] ─▶ GSO sendmsg ─▶ kernel
//! ```
//!
//! Segments, acknowledgements and retransmissions never cross into JavaScript: JavaScript hands a
//! whole message down and receives whole messages and completions (sent / failed) up, batched with
//! the plain datagrams. The protocol logic is `deccom_core::rudp` and `deccom_core::faults`; this
//! file only feeds them bytes and the time and carries out what they return.

use std::net::SocketAddr;
use std::time::Instant;

use deccom_core::delay::DelayLine;
use deccom_core::faults::{Fault, FaultConfig, FaultStats, Faults};
use deccom_core::rudp::{Config as RudpConfig, Endpoint, Event as RudpEvent, FailReason};

/// Completion status codes handed to JavaScript with each message id.
pub const DONE_SENT: f64 = 0.0;
pub const DONE_UNREACHABLE: f64 = 1.0;
pub const DONE_FORGOTTEN: f64 = 2.0;
pub const DONE_REFUSED: f64 = 3.0;

/// Where the pipeline puts what JavaScript must see (implemented by the socket's receive batcher).
pub(crate) trait Sink {
  /// A plain datagram for the JavaScript dispatcher.
  fn datagram(&mut self, from: SocketAddr, bytes: &[u8]);
  /// A whole reliable message (its first byte is the upper layer's tag).
  fn message(&mut self, from: SocketAddr, message: Vec<u8>);
  /// A send finished: `status` is one of the `DONE_*` codes.
  fn completion(&mut self, id: f64, status: f64);
  /// True when JavaScript is so far behind that new reliable data must wait (backpressure).
  fn congested(&self) -> bool;
  /// The delay line (direction 0 receive, 1 send) needs the link parameters of `peer`.
  fn delay_peer(&mut self, direction: u32, peer: SocketAddr);
}

/// Seeded fault injection on one direction (FaultyTransport in native mode).
pub(crate) struct FaultStage {
  faults: Faults,
  held: Option<(SocketAddr, Vec<u8>)>,
}

impl FaultStage {
  pub fn new(config: FaultConfig, seed: u64) -> FaultStage {
    FaultStage { faults: Faults::new(config, seed), held: None }
  }

  pub fn stats(&self) -> FaultStats {
    self.faults.stats()
  }

  /// Decides the fate of one datagram and emits what passes, in order. A reordered datagram is
  /// held and emitted after the next one (or by [`FaultStage::release`]).
  pub fn apply(&mut self, to: SocketAddr, d: &[u8], mut emit: impl FnMut(SocketAddr, &[u8])) {
    let held = self.held.take();
    match self.faults.decide(d.len()) {
      Fault::Pass => emit(to, d),
      Fault::Drop => {}
      Fault::Duplicate => {
        emit(to, d);
        emit(to, d);
      }
      Fault::Reorder => {
        if let Some((a, h)) = held {
          emit(a, &h);
        }
        self.held = Some((to, d.to_vec()));
        return;
      }
      Fault::Corrupt(bit) => {
        let mut c = d.to_vec();
        Faults::corrupt(&mut c, bit);
        emit(to, &c);
      }
    }
    if let Some((a, h)) = held {
      emit(a, &h);
    }
  }

  /// Emits a held datagram, if any (at the end of a burst, so nothing waits indefinitely).
  pub fn release(&mut self, mut emit: impl FnMut(SocketAddr, &[u8])) {
    if let Some((a, h)) = self.held.take() {
      emit(a, &h);
    }
  }
}

/// The reliable-UDP endpoint and its transmit staging.
pub(crate) struct RudpStage {
  /// The layer tag that marks reliable-UDP datagrams on the wire.
  pub tag: u8,
  pub endpoint: Endpoint<SocketAddr>,
  out: Vec<u8>,
  tx_data: Vec<u8>,
  tx_lens: Vec<u32>,
  tx_dests: Vec<SocketAddr>,
  /// Reliable datagrams refused because JavaScript was behind (the sender retransmits them).
  pub dropped_backpressure: u64,
}

/// Datagrams staged per transmit flush (then handed to the socket in GSO runs).
const TX_BATCH: usize = 256;

impl RudpStage {
  pub fn new(tag: u8, config: RudpConfig, now: Instant, seed: u64) -> RudpStage {
    RudpStage {
      tag,
      endpoint: Endpoint::new(config, now, seed),
      out: Vec::with_capacity(2048),
      tx_data: Vec::with_capacity(TX_BATCH * 1300),
      tx_lens: Vec::with_capacity(TX_BATCH),
      tx_dests: Vec::with_capacity(TX_BATCH),
      dropped_backpressure: 0,
    }
  }
}

/// The receive-side stages and the reliable endpoint of one socket.
#[derive(Default)]
pub(crate) struct Pipeline {
  pub rx_faults: Option<FaultStage>,
  /// Receive-side delay line (Delay in native mode): datagrams wait here before dispatch.
  pub rx_delay: Option<DelayLine<SocketAddr>>,
  pub rudp: Option<RudpStage>,
}

impl Pipeline {
  /// One datagram from the kernel: receive faults, then the delay line, then dispatch.
  pub fn receive(&mut self, now: Instant, from: SocketAddr, bytes: &[u8], sink: &mut impl Sink) {
    let Pipeline { rx_faults, rx_delay, rudp } = self;
    let mut next = |a: SocketAddr, d: &[u8]| match rx_delay.as_mut() {
      Some(line) => {
        line.push(now, a, d.to_vec());
      }
      None => dispatch(rudp.as_mut(), now, a, d, sink),
    };
    match rx_faults.as_mut() {
      None => next(from, bytes),
      Some(f) => f.apply(from, bytes, next),
    }
  }

  /// End of a receive burst: release a datagram held back by reordering.
  pub fn end_of_burst(&mut self, now: Instant, sink: &mut impl Sink) {
    if let Some(f) = self.rx_faults.take() {
      let mut f = f;
      f.release(|a, d| {
        let Pipeline { rx_delay, rudp, .. } = &mut *self;
        match rx_delay.as_mut() {
          Some(line) => {
            line.push(now, a, d.to_vec());
          }
          None => dispatch(rudp.as_mut(), now, a, d, sink),
        }
      });
      self.rx_faults = Some(f);
    }
  }

  /// Runs due timers, transmits what may leave now, and hands events to the sink.
  pub fn drive(&mut self, now: Instant, send: impl Fn(&[u8], &[u32], &[SocketAddr]), sink: &mut impl Sink) {
    if let Some(line) = self.rx_delay.as_mut() {
      while let Some((a, d)) = line.pop_due(now) {
        dispatch(self.rudp.as_mut(), now, a, &d, sink);
      }
      for p in line.take_unknown() {
        sink.delay_peer(0, p);
      }
    }
    let Some(r) = self.rudp.as_mut() else { return };
    if r.endpoint.poll_timeout().is_some_and(|t| t <= now) {
      r.endpoint.handle_timeout(now);
    }
    loop {
      let Some(to) = r.endpoint.poll_transmit(now, &mut r.out) else { break };
      r.tx_data.push(r.tag);
      r.tx_data.extend_from_slice(&r.out);
      r.tx_lens.push(r.out.len() as u32 + 1);
      r.tx_dests.push(to);
      if r.tx_lens.len() == TX_BATCH {
        send(&r.tx_data, &r.tx_lens, &r.tx_dests);
        r.tx_data.clear();
        r.tx_lens.clear();
        r.tx_dests.clear();
      }
    }
    if !r.tx_lens.is_empty() {
      send(&r.tx_data, &r.tx_lens, &r.tx_dests);
      r.tx_data.clear();
      r.tx_lens.clear();
      r.tx_dests.clear();
    }
    while let Some(ev) = r.endpoint.poll_event() {
      match ev {
        RudpEvent::Delivered { peer, message } => sink.message(peer, message),
        RudpEvent::Sent { id, .. } => sink.completion(id.0 as f64, DONE_SENT),
        RudpEvent::Failed { id, reason, .. } => sink.completion(
          id.0 as f64,
          match reason {
            FailReason::PeerUnreachable => DONE_UNREACHABLE,
            FailReason::Refused => DONE_REFUSED,
            _ => DONE_FORGOTTEN,
          },
        ),
      }
    }
  }

  /// When the I/O thread must wake next (None: only for I/O).
  pub fn next_timeout(&self) -> Option<Instant> {
    let a = self.rudp.as_ref().and_then(|r| r.endpoint.poll_timeout());
    let b = self.rx_delay.as_ref().and_then(DelayLine::next_due);
    match (a, b) {
      (Some(a), Some(b)) => Some(a.min(b)),
      (a, b) => a.or(b),
    }
  }
}

fn dispatch(rudp: Option<&mut RudpStage>, now: Instant, from: SocketAddr, bytes: &[u8], sink: &mut impl Sink) {
  if let Some(r) = rudp {
    if bytes.first() == Some(&r.tag) {
      if sink.congested() {
        r.dropped_backpressure += 1;
      } else {
        r.endpoint.handle_datagram(now, from, &bytes[1..]);
      }
      return;
    }
  }
  sink.datagram(from, bytes);
}

/// The reliable-UDP counters as (name, value) pairs, for JavaScript.
pub(crate) fn rudp_fields(s: &deccom_core::rudp::Stats) -> [(&'static str, u64); 31] {
  [
    ("datagrams_sent", s.datagrams_sent),
    ("datagrams_received", s.datagrams_received),
    ("bytes_sent", s.bytes_sent),
    ("bytes_received", s.bytes_received),
    ("data_sent", s.data_sent),
    ("retransmits", s.retransmits),
    ("acks_sent", s.acks_sent),
    ("acks_received", s.acks_received),
    ("messages_queued", s.messages_queued),
    ("messages_sent", s.messages_sent),
    ("messages_delivered", s.messages_delivered),
    ("messages_failed", s.messages_failed),
    ("duplicates", s.duplicates),
    ("dropped_malformed", s.dropped_malformed),
    ("dropped_oversized_announcement", s.dropped_oversized_announcement),
    ("dropped_reassembly_full", s.dropped_reassembly_full),
    ("dropped_stale_epoch", s.dropped_stale_epoch),
    ("dropped_peer_table_full", s.dropped_peer_table_full),
    ("partial_timeouts", s.partial_timeouts),
    ("partials_abandoned", s.partials_abandoned),
    ("packets_lost", s.packets_lost),
    ("pto_expirations", s.pto_expirations),
    ("congestion_events", s.congestion_events),
    ("isolated_losses", s.isolated_losses),
    ("peer_resets", s.peer_resets),
    ("peers_evicted", s.peers_evicted),
    ("peers", s.peers),
    ("in_flight", s.in_flight),
    ("reassembly_bytes", s.reassembly_bytes),
    ("srtt_us", s.srtt_us),
    ("cwnd", s.cwnd),
  ]
}
