//! The reliable-UDP stage: a `deccom_core::rudp::Endpoint` in the socket thread.
//!
//! Datagrams tagged with the stage's tag go to the endpoint; anything else passes up. The
//! endpoint's own datagrams (segments, acknowledgements, retransmissions) are appended straight
//! into the transmit batch by [`Stage::poll_transmit`], behind any header room the stages below
//! reserve. JavaScript hands whole messages down (`send`) and gets whole messages and completions
//! (sent / failed) up through the sink; segments never cross into JavaScript.
//!
//! Message ids are chosen by the JavaScript thread (so `rudpSend` can return one before the I/O
//! thread has seen the message); the stage maps the endpoint's ids onto them.

use std::any::Any;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use deccom_core::rudp::{path_segment_payload, Config, Endpoint, Event, FailReason, MessageId, Payload, RudpError, SendOptions};

use super::{Stage, Stats, Up};

/// Completion status codes handed to JavaScript with each message id.
pub const DONE_SENT: f64 = 0.0;
pub const DONE_UNREACHABLE: f64 = 1.0;
pub const DONE_FORGOTTEN: f64 = 2.0;
pub const DONE_REFUSED: f64 = 3.0;
/// The endpoint had no room for another peer (every slot has messages in progress).
pub const DONE_PEER_TABLE_FULL: f64 = 4.0;
/// The receiver answered only "busy" (no reassembly memory) for the peer timeout.
pub const DONE_BUSY: f64 = 5.0;

/// The completion status of a failed message.
pub(crate) fn failure_status(reason: FailReason) -> f64 {
  match reason {
    FailReason::PeerUnreachable => DONE_UNREACHABLE,
    FailReason::Refused => DONE_REFUSED,
    FailReason::Busy => DONE_BUSY,
    _ => DONE_FORGOTTEN,
  }
}

/// Hands the endpoint's pre-fault hints (memory reserved ahead of a large message's writer) to
/// the background pre-fault thread.
pub(crate) fn prefault_hints<P: Copy + Eq + std::hash::Hash + std::fmt::Debug>(endpoint: &mut Endpoint<P>) {
  while let Some((addr, len)) = endpoint.poll_prefault() {
    crate::prefault::populate(addr, len);
  }
}

pub(crate) struct RudpStage {
  /// The layer tag that marks reliable-UDP datagrams on the wire.
  tag: u8,
  endpoint: Endpoint<SocketAddr>,
  /// Segment payload of messages to a loopback address (`path_segment_payload`).
  loopback_segment: usize,
  /// Endpoint message id → the id JavaScript knows.
  ids: HashMap<u64, f64>,
  /// The id JavaScript knows → destination and endpoint message id (to cancel).
  by_js: HashMap<u64, (SocketAddr, MessageId)>,
  /// Reliable datagrams refused because JavaScript was behind (the sender retransmits them).
  dropped_backpressure: u64,
}

impl RudpStage {
  pub fn new(tag: u8, config: Config, loopback_segment: usize, now: Instant, seed: u64) -> RudpStage {
    RudpStage { tag, endpoint: Endpoint::new(config, now, seed), loopback_segment, ids: HashMap::new(), by_js: HashMap::new(), dropped_backpressure: 0 }
  }

  /// Queues a message `[tag][data]` for `to`, known to JavaScript as `id` (with progress
  /// reports when `progress`). A refusal becomes a completion with a failure status.
  pub fn send(&mut self, now: Instant, id: f64, to: SocketAddr, message: Payload, progress: bool, up: &mut Up<'_>) {
    let base = self.endpoint.config().max_segment_payload;
    let segment_payload = Some(path_segment_payload(to.ip(), base, self.loopback_segment));
    let queued = self.endpoint.send_with(now, to, message, SendOptions { progress, segment_payload });
    match queued {
      Ok(mid) => {
        self.ids.insert(mid.0, id);
        self.by_js.insert(id as u64, (to, mid));
      }
      Err(RudpError::PeerTableFull { .. }) => up.sink.completion(id, DONE_PEER_TABLE_FULL),
      Err(_) => up.sink.completion(id, DONE_REFUSED),
    }
  }

  /// Gives up the message JavaScript knows as `id` (no completion follows); nothing if it
  /// already finished.
  pub fn cancel(&mut self, now: Instant, id: f64) {
    if let Some((to, mid)) = self.by_js.remove(&(id as u64)) {
      self.ids.remove(&mid.0);
      self.endpoint.cancel(now, to, mid);
    }
  }

  /// The id JavaScript knows for endpoint message `id`, forgotten when `done`.
  fn js_id(&mut self, id: MessageId, done: bool) -> Option<f64> {
    if !done {
      return self.ids.get(&id.0).copied();
    }
    let js = self.ids.remove(&id.0)?;
    self.by_js.remove(&(js as u64));
    Some(js)
  }
}

/// Datagrams in flight (over all peers) above which the endpoint counts as busy.
const BUSY_IN_FLIGHT: u64 = 8;

impl Stage for RudpStage {
  /// Sending (more than a few datagrams in flight) or receiving (a message partly reassembled).
  fn busy(&self) -> bool {
    self.endpoint.reassembly_bytes() > 0 || self.endpoint.stats().in_flight > BUSY_IN_FLIGHT
  }

  fn tag(&self) -> Option<u8> {
    Some(self.tag)
  }

  fn receive(&mut self, up: &mut Up<'_>, from: SocketAddr, tag: u8, body: &[u8]) {
    if tag != self.tag {
      return up.up(from, tag, body);
    }
    if up.sink.congested() {
      self.dropped_backpressure += 1;
    } else {
      self.endpoint.handle_datagram(up.now, from, body);
      prefault_hints(&mut self.endpoint);
    }
  }

  fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr> {
    self.endpoint.poll_transmit_append(now, buf)
  }

  fn poll_timeout(&self) -> Option<Instant> {
    self.endpoint.poll_timeout()
  }

  fn handle_timeout(&mut self, up: &mut Up<'_>, _down: &mut super::Down<'_>) {
    self.endpoint.handle_timeout(up.now);
  }

  fn poll_events(&mut self, up: &mut Up<'_>) {
    while let Some(ev) = self.endpoint.poll_event() {
      match ev {
        Event::Delivered { peer, message } => up.sink.message(peer, message),
        Event::Sent { id, .. } => {
          if let Some(js) = self.js_id(id, true) {
            up.sink.completion(js, DONE_SENT);
          }
        }
        Event::Failed { id, reason, .. } => {
          if let Some(js) = self.js_id(id, true) {
            up.sink.completion(js, failure_status(reason));
          }
        }
        Event::Progress { id, acked_bytes, .. } => {
          if let Some(js) = self.js_id(id, false) {
            up.sink.progress(js, acked_bytes as f64);
          }
        }
      }
    }
  }

  fn stats(&self, out: &mut Stats) {
    for (k, v) in rudp_fields(&self.endpoint.stats()) {
      out.put("rudp", k, v as f64);
    }
    out.put("rudp", "dropped_backpressure", self.dropped_backpressure as f64);
    out.put("rudp", "reassembly_bytes", self.endpoint.reassembly_bytes() as f64);
  }

  fn as_any_mut(&mut self) -> &mut dyn Any {
    self
  }
}

/// The reliable-UDP counters as (name, value) pairs, for JavaScript.
pub(crate) fn rudp_fields(s: &deccom_core::rudp::Stats) -> [(&'static str, u64); 36] {
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
    ("messages_cancelled", s.messages_cancelled),
    ("duplicates", s.duplicates),
    ("dropped_malformed", s.dropped_malformed),
    ("dropped_checksum", s.dropped_checksum),
    ("dropped_unproven_epoch", s.dropped_unproven_epoch),
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
    ("reassembly_unproven_bytes", s.reassembly_unproven_bytes),
    ("srtt_us", s.srtt_us),
    ("cwnd", s.cwnd),
  ]
}
