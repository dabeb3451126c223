//! The [`Endpoint`] state machine: handshakes, sessions, modes, timers, DoS limits.
//!
//! The protocol is described in the [module docs](super). This module holds the endpoint itself
//! and the API a driver calls; the machinery behind it is split by concern:
//!
//! - `mod.rs`: [`Endpoint`], [`Mode`], [`Event`], [`DisconnectReason`]; the public driving API
//!   (commands, queries, outputs, inputs) and the bounded event and transmit queues.
//! - `config.rs`: [`Config`] (defaults, validation) and [`Stats`].
//! - `session.rs`: per-peer state and the peer table; sessions: sealing outgoing data, opening
//!   transport datagrams, making a finished handshake the current session.
//! - `handshake.rs`: handshake states and our side as initiator (initiation, response, rebuilding
//!   a handshake state after a forged message).
//! - `responder.rs`: the responder side: incoming initiations (rate limit and cookie check
//!   first), half-open XX handshakes, XX message 3, IK responses.
//! - `cookies.rs`: cookie secrets, cookie MACs and cookie replies (the answer under load).
//! - `sign.rs`: receiving in Sign mode (signature check, replay window per epoch).
//! - `timers.rs`: per-peer timers: handshake and confirmation retransmission, session expiry,
//!   rekey.
//! - `tests.rs`: unit tests that need the endpoint's private state.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::Hash;
use std::time::Instant;

use snow::params::NoiseParams;
use zeroize::Zeroizing;

use super::crypto::{self, EndpointRng, IK_PARAMS, XX_PARAMS};
use super::primitives::Suite;
use super::error::{HandshakeError, NoiseError};
use super::ratelimit::{SourceLimiter, TokenBucket};
use super::wire::{self, Packet, MAX_NOISE_LEN, TAG_LEN};
use crate::identity::{Identity, NodeId, PublicIdentity, ShortHex};

mod config;
mod cookies;
mod handshake;
mod responder;
mod session;
mod sign;
#[cfg(test)]
mod tests;
mod timers;

pub use self::config::{Config, Stats};
use self::handshake::HalfOpen;
use self::session::{seal_in_place, PeerState};

/// Largest application message: one Noise transport message minus its tag.
pub const MAX_MESSAGE_LEN: usize = MAX_NOISE_LEN - TAG_LEN;

/// What the endpoint does to outgoing data and accepts as incoming data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// No cryptography: the payload travels behind a mode byte.
    Plaintext,
    /// Each datagram carries the sender's Ed25519 signature and a replay counter. Receivers must
    /// know the sender's identity (from a completed handshake or [`Endpoint::set_peer_identity`]).
    Sign,
    /// AEAD through a Noise session (handshake first).
    Encrypt,
}

/// Why a peer's session went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The session reached `reject_after_time` and no new one replaced it.
    Expired,
    /// We completed an XX handshake as initiator but the responder never confirmed it.
    Unconfirmed,
    /// Evicted to respect `max_sessions`.
    Evicted,
    /// [`Endpoint::close`] was called.
    Closed,
    /// A new handshake from this peer address authenticated a different identity.
    IdentityChanged,
}

/// Something the driver should know; drained with [`Endpoint::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<P> {
    /// A handshake completed and the peer is authenticated (not repeated on rekeys).
    Connected {
        /// The peer.
        peer: P,
        /// SHA-256 of the peer's public identity (checked).
        remote_id: NodeId,
        /// The peer's public identity (Ed25519).
        remote_identity: PublicIdentity,
    },
    /// Application data arrived.
    Message {
        /// The sender.
        peer: P,
        /// The payload.
        data: Vec<u8>,
        /// How it was protected.
        mode: Mode,
    },
    /// A handshake we initiated failed.
    HandshakeFailed {
        /// The peer.
        peer: P,
        /// Why.
        reason: HandshakeError,
    },
    /// The peer is no longer authenticated.
    Disconnected {
        /// The peer.
        peer: P,
        /// Why.
        reason: DisconnectReason,
    },
}

/// A Noise endpoint for datagrams: one per local socket, many peers (see the module docs).
///
/// `P` is the peer address type (e.g. `SocketAddr`). Sessions are bound to the address they were
/// made with.
pub struct Endpoint<P: Copy + Eq + Hash + fmt::Debug> {
    config: Config,
    identity: Identity,
    static_pair: crypto::StaticPair,
    binding: Vec<u8>,
    bindings: crypto::BindingCache,
    /// [`Config::aes_gcm`], resolved once.
    prefer_aes_gcm: bool,
    xx: NoiseParams,
    ik: NoiseParams,
    rng: EndpointRng,
    peers: HashMap<P, PeerState>,
    index: HashMap<u32, P>,
    half_open: HashMap<u32, HalfOpen<P>>,
    half_open_by_remote: HashMap<(P, u32), u32>,
    sources: SourceLimiter<P>,
    global: TokenBucket,
    cookie_secret: Zeroizing<[u8; 32]>,
    cookie_prev: Zeroizing<[u8; 32]>,
    cookie_born: Instant,
    transmit: VecDeque<(P, Vec<u8>)>,
    events: VecDeque<Event<P>>,
    /// Opened plaintext of the last transport datagram (reused).
    scratch: Vec<u8>,
    /// Inside [`Endpoint::handle_datagram_with`]: `Some(None)`, then `Some(Some(peer))` once a
    /// message for the callback is in `scratch`.
    direct: Option<Option<P>>,
    stats: Stats,
    sign_counter: u64,
}

impl<P: Copy + Eq + Hash + fmt::Debug> fmt::Debug for Endpoint<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("id", &ShortHex(&self.identity.id()))
            .field("mode", &self.config.mode)
            .field("strict", &self.config.strict)
            .field("peers", &self.peers.len())
            .field("half_open", &self.half_open.len())
            .field("transmit_queued", &self.transmit.len())
            .finish_non_exhaustive()
    }
}

impl<P: Copy + Eq + Hash + fmt::Debug> Endpoint<P> {
    /// Creates an endpoint.
    ///
    /// `seed` feeds the endpoint's ChaCha20 generator, from which every Noise ephemeral key,
    /// session index and cookie secret is drawn: the endpoint never reads the OS RNG, so runs are
    /// reproducible. Production callers must pass 32 bytes from the OS RNG.
    ///
    /// # Errors
    ///
    /// [`NoiseError::NameIdentity`] for a name identity; [`NoiseError::BadConfig`] for an
    /// out-of-range configuration value; [`NoiseError::Crypto`] if a primitive is unavailable.
    pub fn new(
        identity: &Identity,
        config: Config,
        now: Instant,
        seed: [u8; 32],
    ) -> Result<Self, NoiseError> {
        config.validate()?;
        if !identity.is_keypair() {
            return Err(NoiseError::NameIdentity);
        }
        let static_pair = crypto::static_keypair(identity)?;
        let binding = crypto::binding_payload(identity, &static_pair.public())?;
        let parse = |s: &str| {
            s.parse::<NoiseParams>().map_err(|_| NoiseError::Crypto {
                reason: "Noise protocol name rejected",
            })
        };
        let mut rng = EndpointRng::new(seed);
        let cookie_secret = Zeroizing::new(rng.seed32());
        let cookie_prev = Zeroizing::new(rng.seed32());
        let prefer_aes_gcm = config.aes_gcm.unwrap_or_else(Suite::hardware_aes);
        Ok(Endpoint {
            sources: SourceLimiter::new(
                config.max_tracked_sources,
                config.rate_limit_per_peer,
                config.rate_limit_burst,
            ),
            global: TokenBucket::new(now, config.rate_limit_global),
            bindings: crypto::BindingCache::new(config.verified_bindings),
            config,
            identity: identity.clone(),
            static_pair,
            binding,
            prefer_aes_gcm,
            xx: parse(XX_PARAMS)?,
            ik: parse(IK_PARAMS)?,
            rng,
            peers: HashMap::new(),
            index: HashMap::new(),
            half_open: HashMap::new(),
            half_open_by_remote: HashMap::new(),
            cookie_secret,
            cookie_prev,
            cookie_born: now,
            transmit: VecDeque::new(),
            scratch: Vec::new(),
            direct: None,
            events: VecDeque::new(),
            stats: Stats::default(),
            sign_counter: 0,
        })
    }

    /// This endpoint's X25519 static public key (derived from its identity; see
    /// [`super::static_public_key`]). Peers pass it to [`Endpoint::connect`] to use IK.
    #[must_use]
    pub fn local_static_public_key(&self) -> [u8; 32] {
        self.static_pair.public()
    }

    /// This endpoint's node id.
    #[must_use]
    pub fn local_id(&self) -> NodeId {
        self.identity.id()
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    // ----------------------------------------------------------------------------------------
    // Public API: commands

    /// Starts a handshake with `peer` unless a session or a handshake with it already exists:
    /// IK when `known_remote_static` is given (falling back to XX once if IK gets no answer),
    /// XX otherwise.
    pub fn connect(&mut self, now: Instant, peer: P, known_remote_static: Option<[u8; 32]>) {
        self.ensure_peer(now, peer);
        let Some(ps) = self.peers.get_mut(&peer) else {
            return;
        };
        if let Some(init) = ps.initiation.as_mut() {
            // We want this peer ourselves now: a normal dial, retransmitted by the timer.
            init.triggered = false;
        }
        if ps.current.is_some() || ps.initiation.is_some() {
            return;
        }
        let rs = known_remote_static.or(ps.remote_static);
        self.start_initiation(now, peer, rs, false, false);
    }

    /// Sends `plaintext` to `peer` in the configured mode.
    ///
    /// In `Encrypt` mode without a session the message is queued (at most
    /// `max_pending_per_peer`) and a handshake is started; queued messages are sent when it
    /// completes and dropped (counted in `dropped_no_session`) if it fails. An empty message is
    /// a keepalive in `Encrypt` mode and is not delivered to the peer's application.
    ///
    /// # Errors
    ///
    /// [`NoiseError::MessageTooLarge`] above `max_message_len`; [`NoiseError::QueueFull`] when
    /// the pending or transmit queue is full; [`NoiseError::Crypto`] if signing fails.
    pub fn send(&mut self, now: Instant, peer: P, plaintext: &[u8]) -> Result<(), NoiseError> {
        if plaintext.len() > self.config.max_message_len {
            return Err(NoiseError::MessageTooLarge {
                len: plaintext.len(),
                max: self.config.max_message_len,
            });
        }
        if self.transmit.len() >= self.config.max_transmit_queue {
            return Err(NoiseError::QueueFull { queue: "transmit" });
        }
        match self.config.mode {
            Mode::Plaintext => {
                let mut out = Vec::with_capacity(1 + plaintext.len());
                wire::encode_plaintext(plaintext, &mut out);
                self.queue_transmit(peer, out);
            }
            Mode::Sign => {
                let (epoch, counter) = (self.config.sign_epoch, self.sign_counter);
                let sig = self
                    .identity
                    .sign(&wire::signed_message(epoch, counter, plaintext))
                    .map_err(|_| NoiseError::Crypto {
                        reason: "signing failed",
                    })?;
                self.sign_counter += 1;
                let mut out = Vec::with_capacity(wire::SIGNED_HEADER_LEN + plaintext.len());
                wire::encode_signed(epoch, counter, &sig, plaintext, &mut out);
                self.queue_transmit(peer, out);
            }
            Mode::Encrypt => return self.send_encrypted(now, peer, plaintext),
        }
        self.stats.messages_sent += 1;
        Ok(())
    }

    /// [`Endpoint::send`] for a message the caller has already placed in a buffer that collects
    /// datagrams (the native data path's transmit batch): the message is
    /// `out[at + TRANSPORT_HEADER_LEN..]`, and `out[at..at + TRANSPORT_HEADER_LEN]` is room for
    /// the header. When the datagram can leave at once it is sealed where it lies (header
    /// written, message encrypted in place, tag appended: no copy at all) and `true` is returned.
    /// Otherwise the message is taken as [`Endpoint::send`] takes it (queued, or held for a
    /// handshake), `out` is left as it was, and `false` is returned.
    ///
    /// # Errors
    ///
    /// As [`Endpoint::send`]; [`NoiseError::BadConfig`] if `out` is shorter than the header room.
    pub fn send_in_place(
        &mut self,
        now: Instant,
        peer: P,
        out: &mut Vec<u8>,
        at: usize,
    ) -> Result<bool, NoiseError> {
        let body = at + wire::TRANSPORT_HEADER_LEN;
        let Some(len) = out.len().checked_sub(body) else {
            return Err(NoiseError::BadConfig {
                reason: "send_in_place: no room for the transport header",
            });
        };
        if self.config.mode == Mode::Encrypt
            && self.transmit.is_empty()
            && len <= self.config.max_message_len
        {
            if let Some(rekey) = self.seal_current(now, peer, |s| seal_in_place(s, out, at)) {
                self.start_rekey(now, peer, rekey);
                return Ok(true);
            }
        }
        let plaintext = out[body..].to_vec();
        self.send(now, peer, &plaintext).map(|()| false)
    }

    /// Records the identity of `peer` for Sign mode (e.g. from a peer record). A completed
    /// handshake records it too. Creates peer state (counts towards `max_sessions`).
    pub fn set_peer_identity(&mut self, now: Instant, peer: P, identity: PublicIdentity) {
        self.ensure_peer(now, peer);
        if let Some(ps) = self.peers.get_mut(&peer) {
            let id = identity.id();
            ps.identity = Some((identity, id));
        }
    }

    /// Binds `peer` to the node id `id`: from now on a handshake at this address completes only
    /// if it authenticates `id` (otherwise [`Event::HandshakeFailed`] with
    /// [`HandshakeError::IdentityMismatch`], the session is never created and the messages
    /// queued for the peer are dropped). `None` removes the binding. Returns `false`, and binds
    /// nothing, when a current session with `peer` already authenticated another identity.
    /// Creates peer state (counts towards `max_sessions`); [`Endpoint::close`] forgets it.
    pub fn expect_identity(&mut self, now: Instant, peer: P, id: Option<NodeId>) -> bool {
        if let (Some(want), Some(have)) = (id, self.is_authenticated(peer)) {
            if want != have {
                return false;
            }
        }
        if id.is_none() && !self.peers.contains_key(&peer) {
            return true;
        }
        self.ensure_peer(now, peer);
        if let Some(ps) = self.peers.get_mut(&peer) {
            ps.expected = id;
        }
        true
    }

    /// The node id bound to `peer` by [`Endpoint::expect_identity`], if any.
    #[must_use]
    pub fn expected_identity(&self, peer: P) -> Option<NodeId> {
        self.peers.get(&peer)?.expected
    }

    /// Forgets everything about `peer` (emits `Disconnected { Closed }` if it was connected).
    pub fn close(&mut self, peer: P) {
        self.remove_peer(peer, DisconnectReason::Closed);
    }

    // ----------------------------------------------------------------------------------------
    // Public API: queries

    /// The authenticated node id of `peer`: `Some` once a handshake completed and while its
    /// session is current ("approval = completed handshake" for discovery layers).
    #[must_use]
    pub fn is_authenticated(&self, peer: P) -> Option<NodeId> {
        self.peers.get(&peer)?.current.as_ref().map(|s| s.remote_id)
    }

    /// The authenticated public identity of `peer`, as [`Endpoint::is_authenticated`].
    #[must_use]
    pub fn remote_identity(&self, peer: P) -> Option<&PublicIdentity> {
        self.peers
            .get(&peer)?
            .current
            .as_ref()
            .map(|s| &s.remote_identity)
    }

    /// The Noise handshake hash of the current session with `peer` (equal on both sides).
    #[must_use]
    pub fn handshake_hash(&self, peer: P) -> Option<&[u8]> {
        self.peers
            .get(&peer)?
            .current
            .as_ref()
            .map(|s| s.handshake_hash.as_slice())
    }

    /// Counters and gauges.
    #[must_use]
    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        s.peers = self.peers.len() as u64;
        s.sessions = self.peers.values().filter(|p| p.current.is_some()).count() as u64;
        s.half_open = self.half_open.len() as u64;
        s.tracked_sources = self.sources.len() as u64;
        s.bindings_cached = self.bindings.hits;
        s
    }

    // ----------------------------------------------------------------------------------------
    // Public API: outputs

    /// Takes the next datagram to send: writes it into `out` (cleared first) and returns its
    /// destination.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> Option<P> {
        let (peer, datagram) = self.transmit.pop_front()?;
        out.clear();
        out.extend_from_slice(&datagram);
        Some(peer)
    }

    /// Takes the next event.
    pub fn poll_event(&mut self) -> Option<Event<P>> {
        self.events.pop_front()
    }

    /// The earliest time at which [`Endpoint::handle_timeout`] has work, if any.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut best: Option<Instant> = None;
        let mut consider = |t: Instant| {
            best = Some(best.map_or(t, |b| b.min(t)));
        };
        for ps in self.peers.values() {
            if let Some(init) = &ps.initiation {
                consider(init.next_at);
            }
            if let Some(next) = &ps.next {
                consider(next.expires);
            }
            if let Some(prev) = &ps.previous {
                if let Some(t) = prev.retire_at {
                    consider(t);
                }
            }
            if let Some(cur) = &ps.current {
                if let Some(c) = &cur.confirm {
                    consider(c.next_at);
                }
                consider(cur.created + self.config.reject_after_time);
                if ps.initiation.is_none() {
                    consider(cur.created + self.rekey_age(cur));
                }
            }
        }
        for ho in self.half_open.values() {
            consider(ho.expires);
        }
        best
    }

    // ----------------------------------------------------------------------------------------
    // Public API: inputs

    /// [`Endpoint::handle_datagram`], except that an encrypted application message it opens is
    /// passed to `on_message` (borrowed from the endpoint's scratch buffer) instead of becoming an
    /// [`Event::Message`]: no allocation per datagram, for the native data path. Everything else
    /// (other modes, session changes) still comes out as events.
    pub fn handle_datagram_with(
        &mut self,
        now: Instant,
        peer: P,
        datagram: &[u8],
        on_message: impl FnOnce(P, &[u8]),
    ) {
        self.direct = Some(None);
        self.handle_datagram(now, peer, datagram);
        if let Some(Some(from)) = self.direct.take() {
            on_message(from, &self.scratch);
        }
    }

    /// Processes one datagram received from `peer`. Never panics; anything invalid is dropped and
    /// counted in [`Stats`].
    pub fn handle_datagram(&mut self, now: Instant, peer: P, datagram: &[u8]) {
        let packet = match wire::decode(datagram) {
            Ok(p) => p,
            Err(_) => {
                self.stats.dropped_malformed += 1;
                return;
            }
        };
        if self.config.strict {
            let allowed = match packet {
                Packet::Plaintext { .. } => self.config.mode == Mode::Plaintext,
                Packet::Signed { .. } => self.config.mode == Mode::Sign,
                // In Sign mode handshakes run (to learn identities), and the responder confirms
                // an XX session with a keepalive (an empty transport message, tag only): accept
                // that, or the initiator's session would expire as unconfirmed.
                Packet::Transport { ciphertext, .. } => {
                    self.config.mode == Mode::Encrypt
                        || (self.config.mode == Mode::Sign && ciphertext.len() == TAG_LEN)
                }
                _ => self.config.mode != Mode::Plaintext,
            };
            if !allowed {
                self.stats.dropped_mode += 1;
                return;
            }
        }
        match packet {
            Packet::Plaintext { payload } => {
                self.stats.messages_received += 1;
                self.push_event(Event::Message {
                    peer,
                    data: payload.to_vec(),
                    mode: Mode::Plaintext,
                });
            }
            Packet::Signed {
                epoch,
                counter,
                signature,
                payload,
            } => self.on_signed(now, peer, epoch, counter, &signature, payload),
            Packet::Transport {
                receiver,
                counter,
                ciphertext,
            } => self.on_transport(now, peer, receiver, counter, ciphertext),
            Packet::Init {
                sender,
                pattern,
                mac,
                noise,
            } => self.on_init(now, peer, sender, pattern, mac, noise),
            Packet::Response {
                sender,
                receiver,
                noise,
            } => self.on_response(now, peer, sender, receiver, noise),
            Packet::Final { receiver, noise } => self.on_final(now, peer, receiver, noise),
            Packet::Cookie { receiver, cookie } => self.on_cookie(now, peer, receiver, cookie),
        }
    }

    /// Runs every timer due at `now`: handshake retransmissions and failures, confirmation
    /// retransmissions, rekeys, expiry of sessions, replaced sessions and half-open handshakes.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<u32> = self
            .half_open
            .iter()
            .filter(|(_, h)| h.expires <= now)
            .map(|(i, _)| *i)
            .collect();
        for local in expired {
            if let Some(ho) = self.half_open.remove(&local) {
                self.half_open_by_remote.remove(&(ho.peer, ho.remote));
                self.stats.half_open_expired += 1;
                // We may have yielded our own initiation to this one: retry ours.
                let retry = self.peers.get(&ho.peer).and_then(|ps| {
                    (ps.current.is_none() && ps.initiation.is_none() && !ps.pending.is_empty())
                        .then_some(ps.remote_static)
                });
                if let Some(rs) = retry {
                    self.start_initiation(now, ho.peer, rs, false, false);
                }
            }
        }
        let peers: Vec<P> = self.peers.keys().copied().collect();
        for peer in peers {
            self.peer_timeout(now, peer);
        }
    }

    // ----------------------------------------------------------------------------------------
    // Internals

    fn push_event(&mut self, event: Event<P>) {
        if self.events.len() >= self.config.max_events {
            self.stats.dropped_event_overflow += 1;
        } else {
            self.events.push_back(event);
        }
    }

    fn queue_transmit(&mut self, peer: P, datagram: Vec<u8>) {
        if self.transmit.len() >= self.config.max_transmit_queue {
            self.stats.dropped_transmit_overflow += 1;
        } else {
            self.transmit.push_back((peer, datagram));
        }
    }
}
