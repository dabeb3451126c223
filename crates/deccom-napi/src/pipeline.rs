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
//! the plain datagrams. The protocol logic is `deccom_core::rudp` and `deccom_core::impair`; this
//! file only feeds them bytes and the time and carries out what they return.

use std::net::SocketAddr;
use std::time::Instant;

use deccom_core::delay::{instant_at, ms_since, DelayLine, TimedQueue};
use deccom_core::impair::{ImpairConfig, ImpairStats, Impairment};
use deccom_core::noise::frame::{self, Frame};
use deccom_core::noise::wire::TRANSPORT_HEADER_LEN;
use deccom_core::noise::{Endpoint as NoiseEndpoint, Event as NoiseEvent, Mode};
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
  /// The native Noise stage authenticated `peer` (node id, encoded public identity).
  fn noise_connected(&mut self, peer: SocketAddr, id: &[u8; 32], identity: &[u8]);
  /// The native Noise stage lost `peer`: 1 a handshake we started failed, 2 the session ended.
  fn noise_failed(&mut self, peer: SocketAddr, kind: u32);
}

/// Seeded fault injection on one direction (FaultyTransport in native mode): the impairment
/// model of `deccom_core::impair`, with the datagrams it delays (reorder) held until due.
pub(crate) struct FaultStage {
  model: Impairment,
  base: Instant,
  held: TimedQueue<SocketAddr>,
}

/// Bytes a fault stage holds back at most; beyond, delayed copies go at once.
const FAULT_HELD_BYTES: usize = 16 << 20;

impl FaultStage {
  pub fn new(config: ImpairConfig, seed: u64) -> FaultStage {
    FaultStage { model: Impairment::new(config, seed), base: Instant::now(), held: TimedQueue::new(FAULT_HELD_BYTES) }
  }

  pub fn stats(&self) -> ImpairStats {
    self.model.stats()
  }

  /// Decides the fate of one datagram: emits what is due now (held datagrams that came due
  /// first), holds the copies the model delays.
  pub fn apply(&mut self, now: Instant, to: SocketAddr, d: &[u8], mut emit: impl FnMut(SocketAddr, &[u8])) {
    self.release(now, &mut emit);
    let t = ms_since(self.base, now);
    let v = self.model.offer(t, d.len());
    let mut corrupted = None;
    if v.corrupt_bit.is_some() {
      let mut c = d.to_vec();
      v.apply_corruption(&mut c);
      corrupted = Some(c);
    }
    let bytes = corrupted.as_deref().unwrap_or(d);
    for at in &v.at[..v.copies] {
      if *at <= t {
        emit(to, bytes);
      } else if let Err((a, late)) = self.held.push(instant_at(self.base, *at), to, bytes.to_vec()) {
        emit(a, &late);
      }
    }
  }

  /// Emits the held datagrams that are due at `now`.
  pub fn release(&mut self, now: Instant, mut emit: impl FnMut(SocketAddr, &[u8])) {
    while let Some((a, h)) = self.held.pop_due(now) {
      emit(a, &h);
    }
  }

  /// When the next held datagram is due.
  pub fn next_due(&self) -> Option<Instant> {
    self.held.next_due()
  }
}

/// The reliable-UDP endpoint (its datagrams are written straight into the transmit batch).
pub(crate) struct RudpStage {
  /// The layer tag that marks reliable-UDP datagrams on the wire.
  pub tag: u8,
  pub endpoint: Endpoint<SocketAddr>,
  /// Reliable datagrams refused because JavaScript was behind (the sender retransmits them).
  pub dropped_backpressure: u64,
}

/// Datagrams staged for one send call (handed to the socket in GSO runs).
#[derive(Default)]
pub(crate) struct TxBatch {
  data: Vec<u8>,
  lens: Vec<u32>,
  dests: Vec<SocketAddr>,
}

impl TxBatch {
  fn push(&mut self, tag: u8, body: &[u8], to: SocketAddr, send: &impl Fn(&[u8], &[u32], &[SocketAddr])) {
    self.data.push(tag);
    self.data.extend_from_slice(body);
    self.lens.push(body.len() as u32 + 1);
    self.dests.push(to);
    if self.lens.len() == TX_BATCH {
      self.flush(send);
    }
  }

  /// Stages the datagram the caller wrote at `data[start..]`.
  fn commit(&mut self, start: usize, to: SocketAddr, send: &impl Fn(&[u8], &[u32], &[SocketAddr])) {
    self.lens.push((self.data.len() - start) as u32);
    self.dests.push(to);
    if self.lens.len() == TX_BATCH {
      self.flush(send);
    }
  }

  fn flush(&mut self, send: &impl Fn(&[u8], &[u32], &[SocketAddr])) {
    if !self.lens.is_empty() {
      send(&self.data, &self.lens, &self.dests);
      self.data.clear();
      self.lens.clear();
      self.dests.clear();
    }
  }
}

/// The Noise secure channel in the socket thread: every reliable-UDP datagram is sealed into a
/// Noise transport message on the way out, as one whole-message frame (`[rudp tag][0x00][datagram]`,
/// `deccom_core::noise::frame`, the same framing the JavaScript-driven Noise layer uses), and
/// opened (AEAD, replay window, frame decode) on the way in. Handshakes run here too; JavaScript
/// learns about sessions through `noiseConnected` / `noiseFailed` in the batches. Only
/// reliable-UDP traffic travels inside; under this stage, unencrypted reliable-UDP datagrams are
/// dropped.
pub(crate) struct NoiseStage {
  pub tag: u8,
  pub endpoint: NoiseEndpoint<SocketAddr>,
  out: Vec<u8>,
  pub dropped_unprotected: u64,
  pub dropped_not_reliable: u64,
  pub dropped_malformed_frame: u64,
  pub dropped_queue_full: u64,
}

impl NoiseStage {
  pub fn new(tag: u8, endpoint: NoiseEndpoint<SocketAddr>) -> NoiseStage {
    NoiseStage { tag, endpoint, out: Vec::with_capacity(2048), dropped_unprotected: 0, dropped_not_reliable: 0, dropped_malformed_frame: 0, dropped_queue_full: 0 }
  }
}

/// Datagrams staged per transmit flush (then handed to the socket in GSO runs).
const TX_BATCH: usize = 256;

impl RudpStage {
  pub fn new(tag: u8, config: RudpConfig, now: Instant, seed: u64) -> RudpStage {
    RudpStage {
      tag,
      endpoint: Endpoint::new(config, now, seed),
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
  /// The native Noise stage (Noise under ReliableUdp), if attached.
  pub noise: Option<NoiseStage>,
  tx: TxBatch,
}

impl Pipeline {
  /// One datagram from the kernel: receive faults, then the delay line, then dispatch.
  pub fn receive(&mut self, now: Instant, from: SocketAddr, bytes: &[u8], sink: &mut impl Sink) {
    let Pipeline { rx_faults, rx_delay, rudp, noise, .. } = self;
    let mut next = |a: SocketAddr, d: &[u8]| match rx_delay.as_mut() {
      Some(line) => {
        line.push(now, a, d.to_vec());
      }
      None => dispatch(rudp.as_mut(), noise.as_mut(), now, a, d, sink),
    };
    match rx_faults.as_mut() {
      None => next(from, bytes),
      Some(f) => f.apply(now, from, bytes, next),
    }
  }

  /// End of a receive burst (and each wake-up): release the datagrams the faults held that are due.
  pub fn end_of_burst(&mut self, now: Instant, sink: &mut impl Sink) {
    if let Some(f) = self.rx_faults.take() {
      let mut f = f;
      f.release(now, |a, d| {
        let Pipeline { rx_delay, rudp, noise, .. } = &mut *self;
        match rx_delay.as_mut() {
          Some(line) => {
            line.push(now, a, d.to_vec());
          }
          None => dispatch(rudp.as_mut(), noise.as_mut(), now, a, d, sink),
        }
      });
      self.rx_faults = Some(f);
    }
  }

  /// Runs due timers, transmits what may leave now, and hands events to the sink.
  pub fn drive(&mut self, now: Instant, send: impl Fn(&[u8], &[u32], &[SocketAddr]), sink: &mut impl Sink) {
    let Pipeline { rx_delay, rudp, noise, tx, .. } = self;
    if let Some(line) = rx_delay.as_mut() {
      while let Some((a, d)) = line.pop_due(now) {
        dispatch(rudp.as_mut(), noise.as_mut(), now, a, &d, sink);
      }
      for p in line.take_unknown() {
        sink.delay_peer(0, p);
      }
    }
    if let Some(n) = noise.as_mut() {
      if n.endpoint.poll_timeout().is_some_and(|t| t <= now) {
        n.endpoint.handle_timeout(now);
      }
      noise_events(n, rudp.as_mut(), now, sink);
    }
    if let Some(r) = rudp.as_mut() {
      if r.endpoint.poll_timeout().is_some_and(|t| t <= now) {
        r.endpoint.handle_timeout(now);
      }
      // Each reliable datagram is written where it leaves from: in the transmit batch, after its
      // layer tag. Under Noise it is [Noise tag][transport header][rudp tag][0x00][rudp datagram]
      // (a whole-message frame), sealed in place when the session is up (else the endpoint
      // queues a copy).
      loop {
        let start = tx.data.len();
        match noise.as_mut() {
          Some(n) => {
            tx.data.push(n.tag);
            tx.data.resize(start + 1 + TRANSPORT_HEADER_LEN, 0);
            tx.data.extend_from_slice(&frame::whole_header(r.tag));
            let Some(to) = r.endpoint.poll_transmit_append(now, &mut tx.data) else {
              tx.data.truncate(start);
              break;
            };
            match n.endpoint.send_in_place(now, to, &mut tx.data, start + 1) {
              Ok(true) => tx.commit(start, to, &send),
              Ok(false) => tx.data.truncate(start),
              Err(_) => {
                n.dropped_queue_full += 1;
                tx.data.truncate(start);
              }
            }
          }
          None => {
            tx.data.push(r.tag);
            let Some(to) = r.endpoint.poll_transmit_append(now, &mut tx.data) else {
              tx.data.truncate(start);
              break;
            };
            tx.commit(start, to, &send);
          }
        }
      }
    }
    if let Some(n) = noise.as_mut() {
      while let Some(to) = n.endpoint.poll_transmit(&mut n.out) {
        tx.push(n.tag, &n.out, to, &send);
      }
      noise_events(n, rudp.as_mut(), now, sink);
    }
    tx.flush(&send);
    if let Some(r) = rudp.as_mut() {
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
  }

  /// When the I/O thread must wake next (None: only for I/O).
  pub fn next_timeout(&self) -> Option<Instant> {
    [
      self.rudp.as_ref().and_then(|r| r.endpoint.poll_timeout()),
      self.rx_delay.as_ref().and_then(DelayLine::next_due),
      self.rx_faults.as_ref().and_then(FaultStage::next_due),
      self.noise.as_ref().and_then(|n| n.endpoint.poll_timeout()),
    ]
    .into_iter()
    .flatten()
    .min()
  }
}

fn dispatch(rudp: Option<&mut RudpStage>, noise: Option<&mut NoiseStage>, now: Instant, from: SocketAddr, bytes: &[u8], sink: &mut impl Sink) {
  if let Some(n) = noise {
    if bytes.first() == Some(&n.tag) {
      // An opened message goes straight to the reliable endpoint, borrowed from the Noise
      // endpoint's scratch buffer (no allocation per datagram).
      let (mut not_reliable, mut malformed) = (0, 0);
      let mut rudp = rudp;
      n.endpoint.handle_datagram_with(now, from, &bytes[1..], |peer, data| match (frame::decode(data), rudp.as_deref_mut()) {
        (Ok(Frame::Whole { tag, data }), Some(r)) if tag == r.tag => reliable_in(r, now, peer, data, sink),
        (Err(_), _) => malformed += 1,
        _ => not_reliable += 1,
      });
      n.dropped_not_reliable += not_reliable;
      n.dropped_malformed_frame += malformed;
      noise_events(n, rudp, now, sink);
      return;
    }
    if rudp.as_ref().is_some_and(|r| bytes.first() == Some(&r.tag)) {
      // Under Noise, reliable data must arrive sealed.
      n.dropped_unprotected += 1;
      return;
    }
  } else if let Some(r) = rudp {
    if bytes.first() == Some(&r.tag) {
      reliable_in(r, now, from, &bytes[1..], sink);
      return;
    }
  }
  sink.datagram(from, bytes);
}

fn reliable_in(r: &mut RudpStage, now: Instant, from: SocketAddr, datagram: &[u8], sink: &mut impl Sink) {
  if sink.congested() {
    r.dropped_backpressure += 1;
  } else {
    r.endpoint.handle_datagram(now, from, datagram);
  }
}

/// Drains the Noise stage's events: opened reliable-UDP datagrams go to the endpoint, session
/// changes to JavaScript.
fn noise_events(n: &mut NoiseStage, mut rudp: Option<&mut RudpStage>, now: Instant, sink: &mut impl Sink) {
  while let Some(ev) = n.endpoint.poll_event() {
    match ev {
      NoiseEvent::Message { peer, data, mode } => match (frame::decode(&data), rudp.as_deref_mut()) {
        (Ok(Frame::Whole { tag, data }), Some(r)) if mode == Mode::Encrypt && tag == r.tag => reliable_in(r, now, peer, data, sink),
        _ if data.is_empty() => {}
        (Err(_), _) => n.dropped_malformed_frame += 1,
        _ => n.dropped_not_reliable += 1,
      },
      NoiseEvent::Connected { peer, remote_id, remote_identity } => sink.noise_connected(peer, &remote_id, &remote_identity.encode()),
      NoiseEvent::HandshakeFailed { peer, .. } => sink.noise_failed(peer, 1),
      NoiseEvent::Disconnected { peer, .. } => sink.noise_failed(peer, 2),
      _ => {}
    }
  }
}

/// The reliable-UDP counters as (name, value) pairs, for JavaScript.
pub(crate) fn rudp_fields(s: &deccom_core::rudp::Stats) -> [(&'static str, u64); 32] {
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
    ("slow_start_exits", s.slow_start_exits),
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
