//! `NoiseEndpoint`: the identity-bound Noise endpoint (`deccom_core::noise`) driven from JavaScript.
//!
//! Like `RudpEndpoint`: peers are small integers chosen by the caller, time is the caller's clock
//! in milliseconds, and every output is drained in batches (`pollTransmit`, `pollEvents`) so that
//! one napi crossing carries many datagrams or events. The protocol (handshakes, sessions, replay
//! windows, rekeys, modes, DoS limits) lives in the core; this file converts types only.

use std::collections::HashMap;
use std::time::Duration;

use deccom_core::noise::frame::{self, Pushed, Reassembly, ReassemblyLimits};
use deccom_core::noise::{Config, DisconnectReason, Endpoint, Event, Mode, Stats};
use deccom_core::PublicIdentity;
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::clock::{transmits, JsClock, Transmits};
use crate::error::{coded, Code};
use crate::identity::NativeIdentity;

/// Options of a `NoiseEndpoint`. Times are milliseconds; every field is optional (core defaults).
#[napi(object)]
#[derive(Default)]
pub struct NoiseEndpointOptions {
  /// `'plaintext'`, `'sign'` or `'encrypt'` (default).
  pub mode: Option<String>,
  /// Drop data datagrams of any other mode (default: true in 'sign' and 'encrypt' mode, false in 'plaintext').
  pub strict: Option<bool>,
  /// First handshake retransmission timeout, doubled on each retry (default 200).
  pub handshake_timeout: Option<f64>,
  /// Handshake retransmissions before failure (default 5, at most 16).
  pub handshake_retries: Option<u32>,
  /// Rekey after this many messages sent on a session (default 2^32).
  pub rekey_after_messages: Option<f64>,
  /// Rekey when a session is this old (default 120 000).
  pub rekey_after_time: Option<f64>,
  /// Discard sessions older than this (default 360 000).
  pub reject_after_time: Option<f64>,
  /// How long a replaced session still accepts datagrams (default 10 000).
  pub rekey_grace: Option<f64>,
  /// Replay window in bits (default 2048).
  pub replay_window_bits: Option<u32>,
  /// Most peers with state (default 1024).
  pub max_sessions: Option<u32>,
  /// Most half-open responder handshakes (default 256).
  pub max_half_open: Option<u32>,
  /// Half-open count from which initiations need a cookie (default 128).
  pub cookie_threshold: Option<u32>,
  /// Most sources tracked by the rate limiter (default 4096).
  pub max_tracked_sources: Option<u32>,
  /// Initiations per second per source (default 10) and its burst (default 10).
  pub rate_limit_per_peer: Option<u32>,
  pub rate_limit_burst: Option<u32>,
  /// Initiations per second from all sources before cookies are required (default 500).
  pub rate_limit_global: Option<u32>,
  /// Messages queued in the core per peer while a handshake runs (default 64).
  pub max_pending_per_peer: Option<u32>,
  /// Datagrams waiting in the transmit queue (default 4096).
  pub max_transmit_queue: Option<u32>,
  /// Events waiting in the event queue (default 4096).
  pub max_events: Option<u32>,
  /// Largest message of one `send` (default and maximum 65 519).
  pub max_message_len: Option<u32>,
  /// Sign-mode epoch; must grow across restarts (default: Unix time in ms now).
  pub sign_epoch: Option<f64>,
  /// Verified identity bindings remembered so a peer met again costs no Ed25519 verification
  /// (default 1024; 0 turns the cache off).
  pub verified_bindings: Option<u32>,
  /// Handshake towards peers that send data for an unknown session (default true).
  pub connect_on_unknown_session: Option<bool>,
  /// Prefer AES-256-GCM for sessions' transport messages (used when both sides prefer it;
  /// default: when the CPU has AES instructions).
  pub aes_gcm: Option<bool>,
  /// 32 bytes seeding the endpoint's generator (default: from the OS). For reproducible tests only.
  pub seed: Option<Buffer>,
  /// Largest frame (one Noise message's plaintext) `sendFrame` makes (default 60 000, at most 65 519).
  pub max_frame_size: Option<u32>,
  /// Largest message reassembled from chunks (default 256 MiB).
  pub max_message_size: Option<f64>,
  /// Bytes of partial messages kept per peer (default 320 MiB) and in total (default 1 GiB).
  pub max_reassembly_per_peer: Option<f64>,
  pub max_reassembly_total: Option<f64>,
  /// A partial message without a new chunk for this long is dropped (default 30 000).
  pub reassembly_timeout: Option<f64>,
}

/// A handshake completed: the peer is authenticated.
#[napi(object)]
pub struct NoiseConnected {
  pub peer: u32,
  /// SHA-256 of `remoteIdentity` (checked by the core).
  pub remote_id: Buffer,
  /// The encoded public identity (0x01 + Ed25519 key).
  pub remote_identity: Buffer,
}

/// A handshake we started failed, or a peer is no longer authenticated.
#[napi(object)]
pub struct NoisePeerEvent {
  pub peer: u32,
  /// `ERR_DECCOM_NOISE_HANDSHAKE_*` for failures; a reason (`expired`, `unconfirmed`, `evicted`,
  /// `closed`, `identity_changed`) for disconnections.
  pub code: String,
  pub message: String,
}

/// Events since the last call. Each field is null when empty.
#[napi(object)]
pub struct NoiseEvents {
  /// Whole messages (frames decoded, chunks reassembled), in the order they completed.
  pub messages: Option<Vec<Buffer>>,
  pub message_peers: Option<Uint32Array>,
  /// The upper-layer tag of each message.
  pub message_tags: Option<Uint8Array>,
  /// How each message was protected: 0 plaintext, 1 sign, 2 encrypt.
  pub message_modes: Option<Uint8Array>,
  pub connected: Option<Vec<NoiseConnected>>,
  pub failed: Option<Vec<NoisePeerEvent>>,
  pub disconnected: Option<Vec<NoisePeerEvent>>,
}

/// The endpoint driven from JavaScript. Noise messages carry frames (`deccom_core::noise::frame`):
/// `sendFrame` encodes them, `pollEvents` decodes them and reassembles chunked messages, so the
/// framing has one implementation, shared with the socket thread's Noise stage.
#[napi]
pub struct NoiseEndpoint {
  endpoint: Endpoint<u32>,
  clock: JsClock,
  out: Vec<u8>,
  max_frame: usize,
  /// Partial messages by (peer, mode): a chunk never joins a message protected another way.
  reassembly: Reassembly<(u32, u8)>,
  /// Frame counters (`dropped_malformed_frame`, `dropped_reassembly_*`).
  frame_counts: HashMap<&'static str, u64>,
  scratch: Vec<u8>,
}

/// Largest plaintext of one Noise transport message (65 535 minus the AEAD tag).
const MAX_NOISE_PLAINTEXT: u32 = 65_519;

fn reassembly_limits(o: &NoiseEndpointOptions) -> Result<ReassemblyLimits> {
  let mut l = ReassemblyLimits::default();
  let bytes = |v: f64, what: &str| -> Result<u64> {
    if v.is_finite() && v >= 1.0 {
      Ok(v as u64)
    } else {
      Err(coded(Code::InvalidArgument, format!("Noise option {what} must be a positive number of bytes, got {v}")))
    }
  };
  if let Some(v) = o.max_message_size {
    l.max_message = bytes(v, "maxMessageSize")?.min(u32::MAX as u64) as u32;
  }
  if let Some(v) = o.max_reassembly_per_peer {
    l.max_per_peer = bytes(v, "maxReassemblyPerPeer")?;
  }
  if let Some(v) = o.max_reassembly_total {
    l.max_total = bytes(v, "maxReassemblyTotal")?;
  }
  if let Some(v) = o.reassembly_timeout {
    l.timeout = ms(v, "reassemblyTimeout")?;
  }
  Ok(l)
}

/// Most datagrams returned by one `pollTransmit` call.
const MAX_TRANSMITS: usize = 1024;

fn ms(v: f64, what: &str) -> Result<Duration> {
  if v.is_finite() && v > 0.0 {
    Ok(crate::clock::duration_of_ms(v))
  } else {
    Err(coded(Code::InvalidArgument, format!("Noise option {what} must be a positive number of milliseconds, got {v}")))
  }
}

pub(crate) fn noise_err(e: deccom_core::noise::NoiseError) -> napi::Error {
  napi::Error::from_reason(format!("{}: {e}", e.code()))
}

pub(crate) fn config(o: &NoiseEndpointOptions) -> Result<Config> {
  let mut c = Config::default();
  if let Some(m) = o.mode.as_deref() {
    c.mode = match m {
      "plaintext" => Mode::Plaintext,
      "sign" => Mode::Sign,
      "encrypt" => Mode::Encrypt,
      _ => return Err(coded(Code::InvalidArgument, format!("Noise mode must be 'plaintext', 'sign' or 'encrypt', got '{m}'"))),
    };
  }
  // Strict unless plaintext: unauthenticated data must not reach the layers above (their replies
  // would start handshakes, or signed datagrams, toward an address nobody validated).
  c.strict = o.strict.unwrap_or(c.mode != Mode::Plaintext);
  if let Some(v) = o.handshake_timeout {
    c.handshake_timeout = ms(v, "handshakeTimeout")?;
  }
  if let Some(v) = o.handshake_retries {
    c.handshake_retries = v;
  }
  if let Some(v) = o.rekey_after_messages {
    c.rekey_after_messages = v.max(0.0) as u64;
  }
  if let Some(v) = o.rekey_after_time {
    c.rekey_after_time = ms(v, "rekeyAfterTime")?;
  }
  if let Some(v) = o.reject_after_time {
    c.reject_after_time = ms(v, "rejectAfterTime")?;
  }
  if let Some(v) = o.rekey_grace {
    c.rekey_grace = ms(v, "rekeyGrace")?;
  }
  let usize_opts: [(Option<u32>, &mut usize); 9] = [
    (o.replay_window_bits, &mut c.replay_window_bits),
    (o.max_sessions, &mut c.max_sessions),
    (o.max_half_open, &mut c.max_half_open),
    (o.cookie_threshold, &mut c.cookie_threshold),
    (o.max_tracked_sources, &mut c.max_tracked_sources),
    (o.max_pending_per_peer, &mut c.max_pending_per_peer),
    (o.max_transmit_queue, &mut c.max_transmit_queue),
    (o.max_events, &mut c.max_events),
    (o.verified_bindings, &mut c.verified_bindings),
  ];
  for (v, field) in usize_opts {
    if let Some(v) = v {
      *field = v as usize;
    }
  }
  if let Some(v) = o.max_message_len {
    c.max_message_len = v as usize;
  }
  if let Some(v) = o.rate_limit_per_peer {
    c.rate_limit_per_peer = v;
  }
  if let Some(v) = o.rate_limit_burst {
    c.rate_limit_burst = v;
  }
  if let Some(v) = o.rate_limit_global {
    c.rate_limit_global = v;
  }
  c.sign_epoch = match o.sign_epoch {
    Some(v) => v.max(0.0) as u64,
    None => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
  };
  if let Some(v) = o.connect_on_unknown_session {
    c.connect_on_unknown_session = v;
  }
  c.aes_gcm = o.aes_gcm;
  Ok(c)
}

fn mode_code(m: Mode) -> u8 {
  match m {
    Mode::Plaintext => 0,
    Mode::Sign => 1,
    Mode::Encrypt => 2,
  }
}

fn reason_str(r: DisconnectReason) -> &'static str {
  match r {
    DisconnectReason::Expired => "expired",
    DisconnectReason::Unconfirmed => "unconfirmed",
    DisconnectReason::Evicted => "evicted",
    DisconnectReason::Closed => "closed",
    DisconnectReason::IdentityChanged => "identity_changed",
    _ => "other",
  }
}

#[napi]
impl NoiseEndpoint {
  /// A new endpoint for `identity` (an Ed25519 key pair); `now` is the caller's clock in ms.
  ///
  /// # Errors
  /// `ERR_DECCOM_NOISE_NAME_IDENTITY` for a name identity, `ERR_DECCOM_NOISE_CONFIG` /
  /// `ERR_DECCOM_INVALID_ARGUMENT` for bad options, `ERR_DECCOM_RNG` if the OS has no randomness.
  #[napi(constructor)]
  pub fn new(identity: &NativeIdentity, options: Option<NoiseEndpointOptions>, now: f64) -> Result<NoiseEndpoint> {
    let o = options.unwrap_or_default();
    let cfg = config(&o)?;
    let mut seed = [0u8; 32];
    match &o.seed {
      Some(s) if s.len() == 32 => seed.copy_from_slice(s),
      Some(s) => return Err(coded(Code::InvalidArgument, format!("Noise seed must be 32 bytes, got {}", s.len()))),
      None => getrandom::fill(&mut seed).map_err(|e| napi::Error::from_reason(format!("ERR_DECCOM_RNG: the operating system random generator failed: {e}")))?,
    }
    let max_frame = o.max_frame_size.unwrap_or(60_000);
    if !(frame::CHUNK_HEADER_LEN as u32 + 1..=MAX_NOISE_PLAINTEXT).contains(&max_frame) {
      return Err(coded(Code::InvalidArgument, format!("Noise maxFrameSize must be in {}..{MAX_NOISE_PLAINTEXT}, got {max_frame}", frame::CHUNK_HEADER_LEN + 1)));
    }
    let limits = reassembly_limits(&o)?;
    let clock = JsClock::new(now);
    let endpoint = Endpoint::new(identity.core(), cfg, clock.base(), seed).map_err(noise_err)?;
    Ok(NoiseEndpoint {
      endpoint,
      clock,
      out: Vec::with_capacity(2048),
      max_frame: max_frame as usize,
      reassembly: Reassembly::new(limits),
      frame_counts: HashMap::new(),
      scratch: Vec::with_capacity(2048),
    })
  }

  /// Sends frame `index` of the message `data` for the upper layer `tag` to `peer`: the whole
  /// message when it fits one frame, else its `index`-th chunk of the message numbered
  /// `messageId`. Returns how many frames the message takes, so a
  /// caller sends frame 0 and learns in the same call whether more follow. In encrypt mode
  /// without a session the frame is queued in the core and a handshake starts.
  ///
  /// # Errors
  /// `ERR_DECCOM_INVALID_ARGUMENT` for an index past the last frame or a message over 4 GiB;
  /// `ERR_DECCOM_NOISE_QUEUE_FULL`, `ERR_DECCOM_NOISE_CRYPTO`.
  #[napi]
  pub fn send_frame(&mut self, now: f64, peer: u32, tag: u32, data: &[u8], message_id: u32, index: u32) -> Result<u32> {
    let count = frame::frame_count(data.len(), self.max_frame);
    if index as usize >= count || u32::try_from(data.len()).is_err() || tag > 255 {
      return Err(coded(Code::InvalidArgument, format!("frame {index} of a {}-byte message with tag {tag} does not exist ({count} frames)", data.len())));
    }
    self.scratch.clear();
    frame::encode_part(tag as u8, message_id, data, index as usize, self.max_frame, &mut self.scratch);
    let t = self.clock.at(now);
    self.endpoint.send(t, peer, &self.scratch).map_err(noise_err)?;
    Ok(count as u32)
  }


  /// This endpoint's X25519 static public key (publish it so that peers can connect with IK).
  #[napi(getter)]
  pub fn local_static_public_key(&self) -> Buffer {
    self.endpoint.local_static_public_key().to_vec().into()
  }

  /// Starts a handshake with `peer` unless one runs or a session exists: IK when the peer's
  /// X25519 static key is given (or remembered), XX otherwise.
  ///
  /// # Errors
  /// `ERR_DECCOM_INVALID_ARGUMENT` unless `knownStatic` is 32 bytes.
  #[napi]
  pub fn connect(&mut self, now: f64, peer: u32, known_static: Option<&[u8]>) -> Result<()> {
    let rs = match known_static {
      None => None,
      Some(k) => Some(<[u8; 32]>::try_from(k).map_err(|_| coded(Code::InvalidArgument, format!("a Noise static key is 32 bytes, got {}", k.len())))?),
    };
    let t = self.clock.at(now);
    self.endpoint.connect(t, peer, rs);
    Ok(())
  }

  /// Binds `peer` to node id `id` (32 bytes; null unbinds): a handshake there completes only if
  /// it authenticates that id, else it fails with `ERR_DECCOM_PEER_IDENTITY_MISMATCH` and the
  /// messages queued for `peer` are dropped. Returns false (and binds nothing) when a current
  /// session with `peer` authenticated another identity.
  ///
  /// # Errors
  /// `ERR_DECCOM_INVALID_ARGUMENT` unless `id` is 32 bytes.
  #[napi]
  pub fn expect_identity(&mut self, now: f64, peer: u32, id: Option<&[u8]>) -> Result<bool> {
    let id = match id {
      None => None,
      Some(k) => Some(<[u8; 32]>::try_from(k).map_err(|_| coded(Code::InvalidArgument, format!("a node id is 32 bytes, got {}", k.len())))?),
    };
    let t = self.clock.at(now);
    Ok(self.endpoint.expect_identity(t, peer, id))
  }

  /// Sends one Noise message whose plaintext is `data` as given (no frame). The empty message is
  /// a keepalive that starts a handshake; data for the layers above goes through `sendFrame`.
  ///
  /// # Errors
  /// `ERR_DECCOM_NOISE_MESSAGE_TOO_LARGE`, `ERR_DECCOM_NOISE_QUEUE_FULL`, `ERR_DECCOM_NOISE_CRYPTO`.
  #[napi]
  pub fn send(&mut self, now: f64, peer: u32, data: &[u8]) -> Result<()> {
    let t = self.clock.at(now);
    self.endpoint.send(t, peer, data).map_err(noise_err)
  }

  /// A Noise datagram (without its layer tag) from `peer`. Never throws: anything invalid is
  /// dropped and counted.
  #[napi]
  pub fn handle_datagram(&mut self, now: f64, peer: u32, datagram: &[u8]) {
    let t = self.clock.at(now);
    self.endpoint.handle_datagram(t, peer, datagram);
  }

  /// Runs the timers due at `now`.
  #[napi]
  pub fn handle_timeout(&mut self, now: f64) {
    let t = self.clock.at(now);
    self.endpoint.handle_timeout(t);
    let expired = self.reassembly.handle_timeout(t);
    self.count("dropped_reassembly_timeout", expired);
  }

  fn count(&mut self, counter: &'static str, n: usize) {
    if n > 0 {
      *self.frame_counts.entry(counter).or_default() += n as u64;
    }
  }

  /// Datagrams to send (up to 1024 per call), or null.
  #[napi]
  pub fn poll_transmit<'env>(&mut self, env: &'env Env) -> Result<Option<Transmits<'env>>> {
    let endpoint = &mut self.endpoint;
    transmits(env, MAX_TRANSMITS, &mut self.out, |out| endpoint.poll_transmit(out))
  }

  /// When `handleTimeout` next has work, on the caller's clock, or null.
  #[napi]
  pub fn poll_timeout(&self) -> Option<f64> {
    [self.endpoint.poll_timeout(), self.reassembly.poll_timeout()].into_iter().flatten().min().map(|t| self.clock.ms(t))
  }

  /// Every event since the last call, or null.
  #[napi]
  pub fn poll_events(&mut self, now: f64) -> Option<NoiseEvents> {
    let t = self.clock.at(now);
    let (mut messages, mut peers, mut modes, mut tags) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut connected, mut failed, mut disconnected) = (Vec::new(), Vec::new(), Vec::new());
    while let Some(ev) = self.endpoint.poll_event() {
      match ev {
        Event::Message { data, .. } if data.is_empty() => {} // a keepalive
        Event::Message { peer, mut data, mode } => {
          let mode = mode_code(mode);
          let (tag, message) = match frame::decode(&data) {
            Err(e) => {
              self.count(e.counter(), 1);
              continue;
            }
            // A whole message: drop the two header bytes in place, no new allocation.
            Ok(frame::Frame::Whole { tag, .. }) => {
              data.drain(..frame::WHOLE_HEADER_LEN);
              (tag, data)
            }
            Ok(chunk) => match self.reassembly.push(t, (peer, mode), chunk) {
              Pushed::Stored => continue,
              Pushed::Dropped(counter) => {
                self.count(counter, 1);
                continue;
              }
              Pushed::Complete { tag, message } => (tag, message),
            },
          };
          messages.push(Buffer::from(message));
          peers.push(peer);
          modes.push(mode);
          tags.push(tag);
        }
        Event::Connected { peer, remote_id, remote_identity } => connected.push(NoiseConnected {
          peer,
          remote_id: remote_id.to_vec().into(),
          remote_identity: remote_identity.encode().into(),
        }),
        Event::HandshakeFailed { peer, reason } => failed.push(NoisePeerEvent { peer, code: reason.code().to_string(), message: reason.to_string() }),
        Event::Disconnected { peer, reason } => {
          let dropped: usize = (0..3).map(|mode| self.reassembly.drop_peer((peer, mode))).sum();
          self.count("dropped_reassembly_disconnected", dropped);
          disconnected.push(NoisePeerEvent { peer, code: reason_str(reason).to_string(), message: format!("{reason:?}") });
        }
        _ => {}
      }
    }
    if messages.is_empty() && connected.is_empty() && failed.is_empty() && disconnected.is_empty() {
      return None;
    }
    let has = !messages.is_empty();
    Some(NoiseEvents {
      messages: has.then_some(messages),
      message_peers: has.then(|| Uint32Array::new(peers)),
      message_modes: has.then(|| Uint8Array::new(modes)),
      message_tags: has.then(|| Uint8Array::new(tags)),
      connected: (!connected.is_empty()).then_some(connected),
      failed: (!failed.is_empty()).then_some(failed),
      disconnected: (!disconnected.is_empty()).then_some(disconnected),
    })
  }

  /// The authenticated node id of `peer` (a completed handshake, session current), or null.
  #[napi]
  pub fn is_authenticated(&self, peer: u32) -> Option<Buffer> {
    self.endpoint.is_authenticated(peer).map(|id| id.to_vec().into())
  }

  /// The authenticated encoded public identity of `peer`, or null.
  #[napi]
  pub fn remote_identity(&self, peer: u32) -> Option<Buffer> {
    self.endpoint.remote_identity(peer).map(|i| i.encode().into())
  }

  /// The Noise handshake hash of the current session with `peer` (equal on both sides), or null.
  #[napi]
  pub fn handshake_hash(&self, peer: u32) -> Option<Buffer> {
    self.endpoint.handshake_hash(peer).map(|h| h.to_vec().into())
  }

  /// Records `peer`'s encoded public identity (e.g. from a peer record) for sign mode.
  ///
  /// # Errors
  /// `ERR_DECCOM_BAD_IDENTITY` for malformed identity bytes.
  #[napi]
  pub fn set_peer_identity(&mut self, now: f64, peer: u32, identity: &[u8]) -> Result<()> {
    let id = PublicIdentity::decode(identity).map_err(crate::error::core)?;
    let t = self.clock.at(now);
    self.endpoint.set_peer_identity(t, peer, id);
    Ok(())
  }

  /// Forgets everything about `peer`.
  #[napi]
  pub fn close(&mut self, peer: u32) {
    self.endpoint.close(peer);
    for mode in 0..3 {
      self.reassembly.drop_peer((peer, mode));
    }
  }

  /// The core's counters and gauges.
  #[napi]
  pub fn stats(&self) -> HashMap<String, f64> {
    let mut s: HashMap<String, f64> = stats_fields(&self.endpoint.stats()).into_iter().map(|(k, v)| (k.to_string(), v as f64)).collect();
    for (k, v) in &self.frame_counts {
      s.insert(k.to_string(), *v as f64);
    }
    s.insert("reassembly_bytes".into(), self.reassembly.bytes() as f64);
    s
  }
}

pub(crate) fn stats_fields(s: &Stats) -> [(&'static str, u64); 42] {
  [
    ("handshakes_initiated", s.handshakes_initiated),
    ("handshakes_completed", s.handshakes_completed),
    ("handshakes_failed_timeout", s.handshakes_failed_timeout),
    ("handshakes_failed_decrypt", s.handshakes_failed_decrypt),
    ("handshakes_failed_binding", s.handshakes_failed_binding),
    ("handshakes_identity_mismatch", s.handshakes_identity_mismatch),
    ("bindings_cached", s.bindings_cached),
    ("simultaneous_open_ignored", s.simultaneous_open_ignored),
    ("simultaneous_open_yielded", s.simultaneous_open_yielded),
    ("half_open_evicted", s.half_open_evicted),
    ("half_open_expired", s.half_open_expired),
    ("cookie_replies_sent", s.cookie_replies_sent),
    ("cookies_received", s.cookies_received),
    ("unpadded_initiations", s.unpadded_initiations),
    ("sessions_aes_gcm", s.sessions_aes_gcm),
    ("reconnect_too_small", s.reconnect_too_small),
    ("rekeys", s.rekeys),
    ("sessions_expired", s.sessions_expired),
    ("peers_evicted", s.peers_evicted),
    ("noise_messages_sent", s.messages_sent),
    ("noise_messages_received", s.messages_received),
    ("keepalives_received", s.keepalives_received),
    ("dropped_malformed", s.dropped_malformed),
    ("dropped_mode", s.dropped_mode),
    ("dropped_rate_limited", s.dropped_rate_limited),
    ("dropped_unknown_index", s.dropped_unknown_index),
    ("dropped_misattributed", s.dropped_misattributed),
    ("dropped_replay", s.dropped_replay),
    ("dropped_too_old", s.dropped_too_old),
    ("dropped_tampered", s.dropped_tampered),
    ("dropped_bad_signature", s.dropped_bad_signature),
    ("dropped_unknown_identity", s.dropped_unknown_identity),
    ("dropped_reflected", s.dropped_reflected),
    ("dropped_no_session", s.dropped_no_session),
    ("dropped_transmit_overflow", s.dropped_transmit_overflow),
    ("dropped_event_overflow", s.dropped_event_overflow),
    ("peers", s.peers),
    ("sessions", s.sessions),
    ("half_open", s.half_open),
    ("tracked_sources", s.tracked_sources),
    // Totals a dashboard wants without summing: every datagram the core refused.
    (
      "dropped_total",
      s.dropped_malformed
        + s.dropped_mode
        + s.dropped_rate_limited
        + s.dropped_unknown_index
        + s.dropped_misattributed
        + s.dropped_replay
        + s.dropped_too_old
        + s.dropped_tampered
        + s.dropped_bad_signature
        + s.dropped_unknown_identity
        + s.dropped_reflected,
    ),
    ("handshakes_failed", s.handshakes_failed_timeout + s.handshakes_failed_decrypt + s.handshakes_failed_binding),
  ]
}
