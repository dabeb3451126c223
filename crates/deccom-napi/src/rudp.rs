//! `RudpEndpoint`: the reliable-UDP endpoint driven from JavaScript.
//!
//! The fast path runs the endpoint inside the socket's I/O thread (see `pipeline.rs`). This object
//! is the other driver of the same `deccom_core::rudp::Endpoint`, for stacks where datagrams must
//! visit JavaScript anyway: a JavaScript layer below ReliableUdp, or a SimulatedNetwork in virtual
//! time. Peers are small integers chosen by the caller; time is the caller's clock in milliseconds.

use std::collections::HashMap;

use deccom_core::rudp::{Endpoint, Event, MessageId, Payload};
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::clock::{transmits, JsClock, Transmits};
use crate::pipeline::DONE_SENT;
use crate::stages::rudp::{failure_status, prefault_hints};
use crate::socket::{rudp_config, RudpOptions};

/// Messages delivered and sends finished since the last call.
#[napi(object)]
pub struct RudpEvents {
  /// Whole messages (first byte: the upper layer's tag), or null.
  pub messages: Option<Vec<Buffer>>,
  pub message_peers: Option<Uint32Array>,
  /// `[id, status]` pairs (status 0 sent, 1 peer unreachable, 2 forgotten, 3 refused, 5 busy).
  pub completions: Option<Float64Array>,
  /// `[id, acknowledged bytes]` pairs of sends that asked for progress (before their
  /// completion, in order), or null.
  pub progress: Option<Float64Array>,
}

#[napi]
pub struct RudpEndpoint {
  endpoint: Endpoint<u32>,
  clock: JsClock,
  out: Vec<u8>,
}

/// Most datagrams returned by one `pollTransmit` call.
const MAX_TRANSMITS: usize = 1024;

#[napi]
impl RudpEndpoint {
  /// A new endpoint; `now` is the caller's clock in milliseconds.
  #[napi(constructor)]
  pub fn new(options: Option<RudpOptions>, now: f64) -> RudpEndpoint {
    let (config, seed, _) = rudp_config(options.unwrap_or_default());
    let clock = JsClock::new(now);
    RudpEndpoint { endpoint: Endpoint::new(config, clock.base(), seed), clock, out: Vec::with_capacity(2048) }
  }

  /// Queues a message `[tag][data]` to `peer`; returns its id. `data` is held, not copied: it
  /// must not change until the completion arrives. With `progress`, `pollEvents` reports the
  /// bytes acknowledged as they are.
  ///
  /// # Errors
  /// `ERR_DECCOM_MESSAGE_TOO_LARGE`, `ERR_DECCOM_SEND_QUEUE_FULL`.
  #[napi]
  pub fn send(&mut self, now: f64, peer: u32, tag: u32, data: Buffer, progress: Option<bool>) -> Result<f64> {
    let message = Payload::with_prefix(tag as u8, data);
    let t = self.clock.at(now);
    let id = if progress.unwrap_or(false) { self.endpoint.send_with_progress(t, peer, message) } else { self.endpoint.send(t, peer, message) };
    Ok(id.map_err(crate::error::rudp)?.0 as f64)
  }

  /// Gives up message `id` to `peer`: it is not sent any further, its bytes are released and
  /// no completion follows. False (nothing done) when it is not outstanding.
  #[napi]
  pub fn cancel(&mut self, now: f64, peer: u32, id: f64) -> bool {
    let t = self.clock.at(now);
    self.endpoint.cancel(t, peer, MessageId(id as u64))
  }

  /// A reliable-UDP datagram (without its layer tag) from `peer`.
  #[napi]
  pub fn handle_datagram(&mut self, now: f64, peer: u32, datagram: &[u8]) {
    let t = self.clock.at(now);
    self.endpoint.handle_datagram(t, peer, datagram);
    prefault_hints(&mut self.endpoint);
  }

  /// Runs the timers due at `now`.
  #[napi]
  pub fn handle_timeout(&mut self, now: f64) {
    let t = self.clock.at(now);
    self.endpoint.handle_timeout(t);
  }

  /// What may be sent now (up to 1024 datagrams), or null.
  #[napi]
  pub fn poll_transmit<'env>(&mut self, env: &'env Env, now: f64) -> Result<Option<Transmits<'env>>> {
    let t = self.clock.at(now);
    let endpoint = &mut self.endpoint;
    transmits(env, MAX_TRANSMITS, &mut self.out, |out| endpoint.poll_transmit(t, out))
  }

  /// When `handleTimeout`/`pollTransmit` next have work, on the caller's clock, or null.
  #[napi]
  pub fn poll_timeout(&self) -> Option<f64> {
    self.endpoint.poll_timeout().map(|t| self.clock.ms(t))
  }

  /// Delivered messages and completions since the last call, or null.
  #[napi]
  pub fn poll_events(&mut self) -> Option<RudpEvents> {
    let (mut messages, mut peers, mut completions, mut progress) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    while let Some(ev) = self.endpoint.poll_event() {
      match ev {
        Event::Delivered { peer, message } => {
          messages.push(Buffer::from(message));
          peers.push(peer);
        }
        Event::Sent { id, .. } => completions.extend_from_slice(&[id.0 as f64, DONE_SENT]),
        Event::Failed { id, reason, .. } => completions.extend_from_slice(&[id.0 as f64, failure_status(reason)]),
        Event::Progress { id, acked_bytes, .. } => progress.extend_from_slice(&[id.0 as f64, acked_bytes as f64]),
      }
    }
    if messages.is_empty() && completions.is_empty() && progress.is_empty() {
      return None;
    }
    let has_messages = !messages.is_empty();
    Some(RudpEvents {
      messages: has_messages.then_some(messages),
      message_peers: has_messages.then(|| Uint32Array::new(peers)),
      completions: (!completions.is_empty()).then(|| Float64Array::new(completions)),
      progress: (!progress.is_empty()).then(|| Float64Array::new(progress)),
    })
  }

  /// The endpoint's counters.
  #[napi]
  pub fn stats(&self) -> HashMap<String, f64> {
    let mut out: HashMap<String, f64> = crate::pipeline::rudp_fields(&self.endpoint.stats()).into_iter().map(|(k, v)| (format!("rudp_{k}"), v as f64)).collect();
    out.insert("rudp_reassembly_bytes".into(), self.endpoint.reassembly_bytes() as f64);
    out
  }
}
