//! The [`Endpoint`] state machine: handshakes, sessions, modes, timers, DoS limits.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::Hash;
use std::time::{Duration, Instant};

use snow::params::NoiseParams;
use snow::{Builder, HandshakeState};
use zeroize::Zeroizing;

use super::crypto::{self, EndpointRng, SeededResolver, IK_PARAMS, PROLOGUE, XX_PARAMS};
use super::error::{HandshakeError, NoiseError};
use super::primitives::Transport;
use super::ratelimit::{SourceLimiter, TokenBucket};
use super::replay::{Replay, ReplayWindow};
use super::wire::{self, Packet, Pattern, MAC_LEN, MAX_NOISE_LEN, TAG_LEN, TRANSPORT_HEADER_LEN};
use crate::identity::{verify, Identity, NodeId, PublicIdentity, ShortHex};

/// Largest application message: one Noise transport message minus its tag.
pub const MAX_MESSAGE_LEN: usize = MAX_NOISE_LEN - TAG_LEN;
/// Sessions refuse to send once their counter reaches this (far above any sane rekey limit).
const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 16);
/// How long a cookie secret is used before it is rotated (the previous one is still accepted).
const COOKIE_ROTATION: Duration = Duration::from_secs(120);
/// Buffer for one handshake message.
const HS_BUF: usize = wire::MAX_HANDSHAKE_NOISE_LEN;
/// Handshake messages that fail to authenticate before the handshake is abandoned (each failure
/// costs a deterministic rebuild of the handshake state, see `rebuild_initiator`).
const MAX_HANDSHAKE_READ_FAILURES: u32 = 8;

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

/// Configuration of an [`Endpoint`]. Every field has a documented default ([`Config::default`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Mode of outgoing data. Default [`Mode::Encrypt`].
    pub mode: Mode,
    /// Drop incoming data datagrams of any other mode (and, in `Plaintext` mode, all handshake
    /// traffic). Default `false`.
    pub strict: bool,
    /// First retransmission timeout of a handshake message; doubles on each retry. Default 200 ms.
    pub handshake_timeout: Duration,
    /// Retransmissions after the first transmission before a handshake fails (≤ 16). Default 5
    /// (with 200 ms: given up 12.6 s after the start).
    pub handshake_retries: u32,
    /// Start a new handshake after sending this many messages on a session. Default 2^32.
    pub rekey_after_messages: u64,
    /// Start a new handshake when a session is this old (the session's initiator does; its
    /// responder waits an eighth longer so both rarely start together). Default 120 s.
    pub rekey_after_time: Duration,
    /// A session older than this is discarded even if no new one could be made. Default 360 s.
    pub reject_after_time: Duration,
    /// How long a replaced session still accepts incoming datagrams. Default 10 s.
    pub rekey_grace: Duration,
    /// Replay window size in bits (rounded up to a multiple of 64; 128..=2^20). Default 2048.
    pub replay_window_bits: usize,
    /// Most peers with state (sessions, handshakes in progress, queued messages, identities);
    /// the least recently active one without a session is evicted first. Default 1024.
    pub max_sessions: usize,
    /// Most half-open responder handshakes; the oldest is evicted. Default 256.
    pub max_half_open: usize,
    /// Half-open count from which initiations without a valid cookie get a cookie reply instead
    /// of an answer. Default 128.
    pub cookie_threshold: usize,
    /// Most sources tracked by the per-source rate limiter. Default 4096.
    pub max_tracked_sources: usize,
    /// Handshake initiations accepted per second from one source. Default 10.
    pub rate_limit_per_peer: u32,
    /// Burst of the per-source limiter. Default 10.
    pub rate_limit_burst: u32,
    /// Initiations without cookie accepted per second from all sources (also the burst); beyond
    /// it, cookie replies are sent. Default 500.
    pub rate_limit_global: u32,
    /// Messages queued per peer while its handshake runs. Default 64.
    pub max_pending_per_peer: usize,
    /// Datagrams waiting in the transmit queue. Default 4096.
    pub max_transmit_queue: usize,
    /// Events waiting in the event queue. Default 4096.
    pub max_events: usize,
    /// Largest message accepted by [`Endpoint::send`] (≤ [`MAX_MESSAGE_LEN`]). Default
    /// [`MAX_MESSAGE_LEN`].
    pub max_message_len: usize,
    /// Sign mode epoch; must increase across restarts of this node (the napi driver uses the
    /// Unix time in milliseconds at start) or receivers drop its signed datagrams as replays.
    /// Default 0.
    pub sign_epoch: u64,
    /// Start a handshake towards a peer that sends transport data for a session we do not have
    /// (we restarted or evicted it), at most once per handshake lifetime. Default `true`.
    pub connect_on_unknown_session: bool,
    /// Verified identity bindings remembered, so that meeting a peer again (rekey, reconnection)
    /// skips the Ed25519 verification; 0 turns the cache off. Default 1024.
    pub verified_bindings: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Encrypt,
            strict: false,
            handshake_timeout: Duration::from_millis(200),
            handshake_retries: 5,
            rekey_after_messages: 1 << 32,
            rekey_after_time: Duration::from_secs(120),
            reject_after_time: Duration::from_secs(360),
            rekey_grace: Duration::from_secs(10),
            replay_window_bits: 2048,
            max_sessions: 1024,
            max_half_open: 256,
            cookie_threshold: 128,
            max_tracked_sources: 4096,
            rate_limit_per_peer: 10,
            rate_limit_burst: 10,
            rate_limit_global: 500,
            max_pending_per_peer: 64,
            max_transmit_queue: 4096,
            max_events: 4096,
            max_message_len: MAX_MESSAGE_LEN,
            sign_epoch: 0,
            connect_on_unknown_session: true,
            verified_bindings: crypto::VERIFIED_BINDINGS,
        }
    }
}

impl Config {
    fn validate(&self) -> Result<(), NoiseError> {
        let bad = |reason| Err(NoiseError::BadConfig { reason });
        if self.handshake_timeout.is_zero() {
            return bad("handshake_timeout must be > 0");
        }
        if self.handshake_retries > 16 {
            return bad("handshake_retries must be <= 16");
        }
        if self.rekey_after_messages == 0 {
            return bad("rekey_after_messages must be >= 1");
        }
        if self.rekey_after_time.is_zero() || self.reject_after_time <= self.rekey_after_time {
            return bad("need 0 < rekey_after_time < reject_after_time");
        }
        if !(128..=1 << 20).contains(&self.replay_window_bits) {
            return bad("replay_window_bits must be in 128..=1048576");
        }
        if self.max_sessions == 0
            || self.max_half_open == 0
            || self.max_tracked_sources == 0
            || self.max_transmit_queue == 0
            || self.max_events == 0
        {
            return bad("max_sessions, max_half_open, max_tracked_sources, max_transmit_queue and max_events must be >= 1");
        }
        if self.rate_limit_per_peer == 0
            || self.rate_limit_burst == 0
            || self.rate_limit_global == 0
        {
            return bad("rate limits must be >= 1");
        }
        if self.max_message_len > MAX_MESSAGE_LEN {
            return bad("max_message_len must be <= 65519");
        }
        Ok(())
    }
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

/// Counters (monotonic) and gauges (current sizes) of an endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Handshakes we started (including rekeys and the XX fallback of an IK attempt).
    pub handshakes_initiated: u64,
    /// Handshakes that produced a session (either role).
    pub handshakes_completed: u64,
    /// Our handshakes that got no answer.
    pub handshakes_failed_timeout: u64,
    /// Handshake messages that failed to decrypt/authenticate (dropped; the handshake goes on).
    pub handshakes_failed_decrypt: u64,
    /// Handshakes rejected for their identity binding (bad signature, id mismatch, name
    /// identity, malformed payload). The session is never created.
    pub handshakes_failed_binding: u64,
    /// Identity bindings accepted without a second Ed25519 verification, because these exact
    /// bytes (remote static key and binding) had been verified before (see the module docs).
    pub bindings_cached: u64,
    /// Simultaneous opens where we kept our initiation and ignored the peer's.
    pub simultaneous_open_ignored: u64,
    /// Simultaneous opens where we gave up our initiation and answered the peer's.
    pub simultaneous_open_yielded: u64,
    /// Half-open handshakes evicted to respect `max_half_open`.
    pub half_open_evicted: u64,
    /// Half-open handshakes that expired.
    pub half_open_expired: u64,
    /// Cookie replies sent (initiations refused under load).
    pub cookie_replies_sent: u64,
    /// Cookie replies received.
    pub cookies_received: u64,
    /// Completed handshakes that replaced an existing session.
    pub rekeys: u64,
    /// Sessions discarded by age or lack of confirmation.
    pub sessions_expired: u64,
    /// Peers evicted to respect `max_sessions`.
    pub peers_evicted: u64,
    /// Application messages sent.
    pub messages_sent: u64,
    /// Application messages delivered.
    pub messages_received: u64,
    /// Keepalives (empty transport messages) received.
    pub keepalives_received: u64,
    /// Datagrams that did not decode.
    pub dropped_malformed: u64,
    /// Datagrams of a mode that strict mode refuses.
    pub dropped_mode: u64,
    /// Initiations over the per-source rate limit.
    pub dropped_rate_limited: u64,
    /// Datagrams naming a session/handshake index we do not have.
    pub dropped_unknown_index: u64,
    /// Datagrams naming an index that belongs to another peer address.
    pub dropped_misattributed: u64,
    /// Duplicate counters (and re-sent initiations of finished sessions).
    pub dropped_replay: u64,
    /// Counters older than the replay window (or from an older Sign epoch).
    pub dropped_too_old: u64,
    /// Transport datagrams that failed AEAD authentication.
    pub dropped_tampered: u64,
    /// Sign-mode datagrams with a bad signature.
    pub dropped_bad_signature: u64,
    /// Sign-mode datagrams from a peer whose Ed25519 identity we do not know.
    pub dropped_unknown_identity: u64,
    /// Our own initiation reflected back at us.
    pub dropped_reflected: u64,
    /// Queued messages discarded because no session could be made.
    pub dropped_no_session: u64,
    /// Datagrams not queued because the transmit queue was full.
    pub dropped_transmit_overflow: u64,
    /// Events discarded because the event queue was full.
    pub dropped_event_overflow: u64,
    /// Gauge: peers with state.
    pub peers: u64,
    /// Gauge: peers with a current session.
    pub sessions: u64,
    /// Gauge: half-open responder handshakes.
    pub half_open: u64,
    /// Gauge: sources tracked by the rate limiter.
    pub tracked_sources: u64,
}

/// Retransmission state of one handshake message.
#[derive(Debug)]
struct Retransmit {
    datagram: Vec<u8>,
    attempts: u32,
    next_at: Instant,
}

/// An established session (one direction pair of keys).
struct Session {
    local: u32,
    remote: u32,
    transport: Transport,
    send_counter: u64,
    replay: ReplayWindow,
    created: Instant,
    initiator: bool,
    /// XX initiator: message 3, re-sent until the responder confirms with any transport datagram.
    confirm: Option<Retransmit>,
    /// The initiator's ephemeral key (to recognise re-sent initiations).
    init_e: [u8; 32],
    remote_identity: PublicIdentity,
    remote_id: NodeId,
    remote_static: [u8; 32],
    handshake_hash: Vec<u8>,
    /// When a replaced session stops accepting datagrams.
    retire_at: Option<Instant>,
}

/// An IK responder session waiting for the initiator's first transport datagram.
struct NextSession {
    session: Session,
    msg2: Vec<u8>,
    expires: Instant,
}

/// A handshake we initiated.
struct Initiation {
    local: u32,
    hs: HandshakeState,
    /// Seed of this handshake's RNG: rebuilding from it reproduces the same ephemeral key.
    seed: Zeroizing<[u8; 32]>,
    remote_static: Option<[u8; 32]>,
    failures: u32,
    pattern: Pattern,
    e: [u8; 32],
    noise: Vec<u8>,
    cookie: Option<([u8; MAC_LEN], Instant)>,
    attempts: u32,
    next_at: Instant,
    is_rekey: bool,
    fell_back: bool,
}

/// A responder XX handshake waiting for message 3.
struct HalfOpen<P> {
    peer: P,
    remote: u32,
    hs: HandshakeState,
    seed: Zeroizing<[u8; 32]>,
    /// The initiator's Noise message 1, to rebuild `hs` after a failed read.
    msg1: Vec<u8>,
    failures: u32,
    msg2: Vec<u8>,
    init_e: [u8; 32],
    created: Instant,
    expires: Instant,
}

struct SignRx {
    epoch: u64,
    window: ReplayWindow,
}

struct PeerState {
    current: Option<Session>,
    previous: Option<Session>,
    next: Option<NextSession>,
    initiation: Option<Initiation>,
    pending: VecDeque<Vec<u8>>,
    identity: Option<(PublicIdentity, NodeId)>,
    remote_static: Option<[u8; 32]>,
    sign_rx: Option<SignRx>,
    last_active: Instant,
    connected_reported: bool,
    unknown_trigger_at: Option<Instant>,
}

impl PeerState {
    fn new(now: Instant) -> Self {
        PeerState {
            current: None,
            previous: None,
            next: None,
            initiation: None,
            pending: VecDeque::new(),
            identity: None,
            remote_static: None,
            sign_rx: None,
            last_active: now,
            connected_reported: false,
            unknown_trigger_at: None,
        }
    }

    fn indices(&self) -> impl Iterator<Item = u32> + '_ {
        self.current
            .iter()
            .chain(self.previous.iter())
            .map(|s| s.local)
            .chain(self.next.iter().map(|n| n.session.local))
            .chain(self.initiation.iter().map(|i| i.local))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Current,
    Previous,
    Next,
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

/// The transport datagram carrying `plaintext`; `None` when the session may not send any more.
fn seal(session: &mut Session, plaintext: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(TRANSPORT_HEADER_LEN + plaintext.len() + TAG_LEN);
    out.resize(TRANSPORT_HEADER_LEN, 0);
    out.extend_from_slice(plaintext);
    seal_in_place(session, &mut out, 0).then_some(out)
}

/// Seals the transport datagram whose header goes at `out[at..at + TRANSPORT_HEADER_LEN]` (room
/// the caller left) and whose plaintext is the rest of `out`: writes the header, encrypts in
/// place, appends the tag. False (and the bytes as they were) when the session may not send any
/// more.
fn seal_in_place(session: &mut Session, out: &mut Vec<u8>, at: usize) -> bool {
    let counter = session.send_counter;
    let body = at + TRANSPORT_HEADER_LEN;
    if counter >= REJECT_AFTER_MESSAGES || out.len() < body {
        return false;
    }
    let Some(tag) = session.transport.seal_in_place(counter, &mut out[body..]) else {
        return false;
    };
    out[at..body].copy_from_slice(&wire::transport_header(session.remote, counter));
    out.extend_from_slice(&tag);
    session.send_counter += 1;
    true
}

fn first32(bytes: &[u8]) -> Option<[u8; 32]> {
    bytes.get(..32)?.try_into().ok()
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
        let Some(ps) = self.peers.get(&peer) else {
            return;
        };
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

    /// Seals with `peer`'s current session, if the peer is known and that session may still
    /// send (`seal` says whether it sealed), with one peer lookup: this runs per datagram. On
    /// success counts the message and returns `Some(rekey)`, where `rekey` holds the remote
    /// static key when a rekey is due and none runs (see [`Endpoint::start_rekey`]).
    fn seal_current(
        &mut self,
        now: Instant,
        peer: P,
        seal: impl FnOnce(&mut Session) -> bool,
    ) -> Option<Option<[u8; 32]>> {
        let reject_after = self.config.reject_after_time;
        let (rekey_messages, rekey_time) = (
            self.config.rekey_after_messages,
            self.config.rekey_after_time,
        );
        let ps = self.peers.get_mut(&peer)?;
        ps.last_active = now;
        let session = ps
            .current
            .as_mut()
            .filter(|s| now.saturating_duration_since(s.created) < reject_after)?;
        if !seal(session) {
            return None;
        }
        let due = session.send_counter >= rekey_messages
            || now.saturating_duration_since(session.created) >= rekey_time;
        let rekey = (due && ps.initiation.is_none()).then_some(session.remote_static);
        self.stats.messages_sent += 1;
        Some(rekey)
    }

    /// Starts the rekey [`Endpoint::seal_current`] found due, if any.
    fn start_rekey(&mut self, now: Instant, peer: P, rekey: Option<[u8; 32]>) {
        if let Some(rs) = rekey {
            self.start_initiation(now, peer, Some(rs), true, false);
        }
    }

    /// Seals `plaintext` for `peer` into the transmit queue, or queues it behind a handshake.
    fn send_encrypted(
        &mut self,
        now: Instant,
        peer: P,
        plaintext: &[u8],
    ) -> Result<(), NoiseError> {
        self.ensure_peer(now, peer);
        let mut datagram = None;
        let sealed = self.seal_current(now, peer, |s| {
            datagram = seal(s, plaintext);
            datagram.is_some()
        });
        if let Some(rekey) = sealed {
            if let Some(d) = datagram {
                self.transmit.push_back((peer, d));
            }
            self.start_rekey(now, peer, rekey);
            return Ok(());
        }
        let Some(ps) = self.peers.get_mut(&peer) else {
            return Err(NoiseError::QueueFull { queue: "pending" });
        };
        if ps.pending.len() >= self.config.max_pending_per_peer {
            return Err(NoiseError::QueueFull { queue: "pending" });
        }
        ps.pending.push_back(plaintext.to_vec());
        if ps.initiation.is_none() {
            let rs = ps.remote_static;
            self.start_initiation(now, peer, rs, false, false);
        }
        Ok(())
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

    fn delay(&self, attempt: u32) -> Duration {
        self.config
            .handshake_timeout
            .saturating_mul(1u32 << attempt.min(16))
    }

    /// Time from the first transmission of a handshake message until it is given up.
    fn handshake_span(&self) -> Duration {
        (0..=self.config.handshake_retries)
            .map(|a| self.delay(a))
            .fold(Duration::ZERO, Duration::saturating_add)
    }

    fn rekey_age(&self, session: &Session) -> Duration {
        let t = self.config.rekey_after_time;
        if session.initiator {
            t
        } else {
            t.saturating_add(t / 8)
        }
    }

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

    fn alloc_index(&mut self) -> u32 {
        loop {
            let i = self.rng.u32();
            if i != 0 && !self.index.contains_key(&i) && !self.half_open.contains_key(&i) {
                return i;
            }
        }
    }

    /// A fresh handshake state with a fresh RNG seed (returned so the state can be rebuilt).
    fn new_handshake(
        &mut self,
        pattern: Pattern,
        initiator: bool,
        remote_static: Option<&[u8; 32]>,
    ) -> Option<(HandshakeState, Zeroizing<[u8; 32]>)> {
        let seed = Zeroizing::new(self.rng.seed32());
        let hs = self.build_hs(pattern, initiator, remote_static, &seed)?;
        Some((hs, seed))
    }

    fn build_hs(
        &self,
        pattern: Pattern,
        initiator: bool,
        remote_static: Option<&[u8; 32]>,
        seed: &[u8; 32],
    ) -> Option<HandshakeState> {
        let params = match pattern {
            Pattern::Xx => self.xx.clone(),
            Pattern::Ik => self.ik.clone(),
        };
        let resolver = SeededResolver::new(*seed, Some(self.static_pair.clone()));
        let mut b = Builder::with_resolver(params, Box::new(resolver))
            .local_private_key(self.static_pair.private())
            .ok()?
            .prologue(PROLOGUE)
            .ok()?;
        if let Some(rs) = remote_static {
            b = b.remote_public_key(rs).ok()?;
        }
        if initiator {
            b.build_initiator().ok()
        } else {
            b.build_responder().ok()
        }
    }

    /// snow restores only the chaining key and hash after a failed `read_message`, not the inner
    /// cipher key and nonce, so a handshake state cannot be reused after a forged or corrupted
    /// message. Our handshakes are deterministic given their RNG seed, so we rebuild the state by
    /// replaying our own message 1 (checked to be byte-identical).
    fn rebuild_initiator(&self, init: &Initiation) -> Option<HandshakeState> {
        let mut hs = self.build_hs(init.pattern, true, init.remote_static.as_ref(), &init.seed)?;
        let payload: &[u8] = match init.pattern {
            Pattern::Ik => &self.binding,
            Pattern::Xx => &[],
        };
        let mut buf = [0u8; HS_BUF];
        let n = hs.write_message(payload, &mut buf).ok()?;
        (buf[..n] == init.noise[..]).then_some(hs)
    }

    /// As [`Self::rebuild_initiator`], for a responder XX handshake: replay message 1, re-write
    /// message 2 and check it is byte-identical to the one sent.
    fn rebuild_responder(&self, ho: &HalfOpen<P>) -> Option<HandshakeState> {
        let mut hs = self.build_hs(Pattern::Xx, false, None, &ho.seed)?;
        let mut payload = [0u8; HS_BUF];
        hs.read_message(&ho.msg1, &mut payload).ok()?;
        let mut buf = [0u8; HS_BUF];
        let n = hs.write_message(&self.binding, &mut buf).ok()?;
        (ho.msg2.get(9..) == Some(&buf[..n])).then_some(hs)
    }

    /// Creates state for `peer` if needed, evicting the least valuable peer at the limit.
    fn ensure_peer(&mut self, now: Instant, peer: P) {
        if let Some(ps) = self.peers.get_mut(&peer) {
            ps.last_active = now;
            return;
        }
        if self.peers.len() >= self.config.max_sessions {
            let victim = self
                .peers
                .iter()
                .min_by_key(|(_, s)| (s.current.is_some(), s.last_active))
                .map(|(p, _)| *p);
            if let Some(victim) = victim {
                self.remove_peer(victim, DisconnectReason::Evicted);
                self.stats.peers_evicted += 1;
            }
        }
        self.peers.insert(peer, PeerState::new(now));
    }

    fn remove_peer(&mut self, peer: P, reason: DisconnectReason) {
        if let Some(ps) = self.peers.remove(&peer) {
            for i in ps.indices() {
                self.index.remove(&i);
            }
            self.stats.dropped_no_session += ps.pending.len() as u64;
            if ps.connected_reported {
                self.push_event(Event::Disconnected { peer, reason });
            }
        }
    }

    fn start_initiation(
        &mut self,
        now: Instant,
        peer: P,
        remote_static: Option<[u8; 32]>,
        is_rekey: bool,
        fell_back: bool,
    ) {
        let pattern = if remote_static.is_some() {
            Pattern::Ik
        } else {
            Pattern::Xx
        };
        let Some((mut hs, seed)) = self.new_handshake(pattern, true, remote_static.as_ref()) else {
            return;
        };
        let payload: &[u8] = match pattern {
            Pattern::Ik => &self.binding,
            Pattern::Xx => &[],
        };
        let mut buf = [0u8; HS_BUF];
        let Ok(n) = hs.write_message(payload, &mut buf) else {
            return;
        };
        let Some(e) = first32(&buf[..n]) else {
            return;
        };
        let local = self.alloc_index();
        let first_delay = self.delay(0);
        let Some(ps) = self.peers.get_mut(&peer) else {
            return;
        };
        if let Some(old) = ps.initiation.take() {
            self.index.remove(&old.local);
        }
        ps.initiation = Some(Initiation {
            local,
            hs,
            seed,
            remote_static,
            failures: 0,
            pattern,
            e,
            noise: buf[..n].to_vec(),
            cookie: None,
            attempts: 0,
            next_at: now + first_delay,
            is_rekey,
            fell_back,
        });
        self.index.insert(local, peer);
        self.stats.handshakes_initiated += 1;
        self.send_init(now, peer);
    }

    /// (Re)sends the initiation held for `peer`, with a cookie MAC if we hold a fresh cookie.
    fn send_init(&mut self, now: Instant, peer: P) {
        let Some(init) = self.peers.get(&peer).and_then(|p| p.initiation.as_ref()) else {
            return;
        };
        let mac = init.cookie.and_then(|(cookie, until)| {
            (now < until).then(|| {
                let mut input = Vec::new();
                wire::init_mac_input(init.local, init.pattern, &init.noise, &mut input);
                crypto::mac16(&cookie, &[&input])
            })
        });
        let mut out = Vec::with_capacity(8 + MAC_LEN + init.noise.len());
        wire::encode_init(
            init.local,
            init.pattern,
            mac.as_ref(),
            &init.noise,
            &mut out,
        );
        self.queue_transmit(peer, out);
    }

    fn rotate_cookie_secret(&mut self, now: Instant) {
        if now.saturating_duration_since(self.cookie_born) >= COOKIE_ROTATION {
            let fresh = self.rng.seed32();
            self.cookie_prev = core::mem::replace(&mut self.cookie_secret, Zeroizing::new(fresh));
            self.cookie_born = now;
        }
    }

    fn cookie_for(secret: &[u8; 32], peer: &P) -> [u8; MAC_LEN] {
        crypto::mac16(secret, &[&crypto::peer_bytes(peer)])
    }

    fn cookie_mac_valid(
        &self,
        peer: &P,
        sender: u32,
        pattern: Pattern,
        noise: &[u8],
        mac: &[u8; MAC_LEN],
    ) -> bool {
        let mut input = Vec::new();
        wire::init_mac_input(sender, pattern, noise, &mut input);
        [&self.cookie_secret, &self.cookie_prev]
            .iter()
            .any(|secret| {
                let cookie = Self::cookie_for(secret, peer);
                crypto::ct_eq(&crypto::mac16(&cookie, &[&input]), mac)
            })
    }

    fn count_binding_failure(&mut self, e: HandshakeError) {
        match e {
            HandshakeError::Timeout => self.stats.handshakes_failed_timeout += 1,
            HandshakeError::Decrypt => self.stats.handshakes_failed_decrypt += 1,
            _ => self.stats.handshakes_failed_binding += 1,
        }
    }

    /// Drops the initiation held for `peer` (we answer the peer's instead).
    fn yield_initiation(&mut self, peer: P) {
        if let Some(init) = self.peers.get_mut(&peer).and_then(|p| p.initiation.take()) {
            self.index.remove(&init.local);
            self.stats.simultaneous_open_yielded += 1;
        }
    }

    fn on_init(
        &mut self,
        now: Instant,
        peer: P,
        sender: u32,
        pattern: Pattern,
        mac: Option<[u8; MAC_LEN]>,
        noise: &[u8],
    ) {
        let Some(e_remote) = first32(noise) else {
            self.stats.dropped_malformed += 1;
            return;
        };
        let mut lose_tie = false;
        if let Some(ps) = self.peers.get(&peer) {
            // Re-sent initiation of a session we already have (or an old one replayed).
            let known = ps
                .current
                .iter()
                .chain(ps.previous.iter())
                .any(|s| s.init_e == e_remote);
            if known {
                self.stats.dropped_replay += 1;
                return;
            }
            if let Some(next) = &ps.next {
                if next.session.init_e == e_remote {
                    let msg2 = next.msg2.clone();
                    self.queue_transmit(peer, msg2);
                    return;
                }
            }
            // Simultaneous open: the initiation with the lower ephemeral key wins on both sides.
            if let Some(init) = &ps.initiation {
                if init.e == e_remote {
                    self.stats.dropped_reflected += 1;
                    return;
                }
                if init.e < e_remote {
                    self.stats.simultaneous_open_ignored += 1;
                    return;
                }
                lose_tie = true;
            }
        }
        if pattern == Pattern::Xx {
            if let Some(&local) = self.half_open_by_remote.get(&(peer, sender)) {
                if let Some(ho) = self.half_open.get(&local) {
                    if ho.init_e == e_remote {
                        let msg2 = ho.msg2.clone();
                        self.queue_transmit(peer, msg2);
                        return;
                    }
                }
            }
        }

        // DoS defences, before any public-key operation.
        if !self.sources.allow(now, peer) {
            self.stats.dropped_rate_limited += 1;
            return;
        }
        self.rotate_cookie_secret(now);
        let cookie_ok =
            mac.is_some_and(|m| self.cookie_mac_valid(&peer, sender, pattern, noise, &m));
        if !cookie_ok {
            let under_load = self.half_open.len() >= self.config.cookie_threshold;
            let global_ok = !under_load
                && self.global.take(
                    now,
                    self.config.rate_limit_global,
                    self.config.rate_limit_global,
                );
            if !global_ok {
                let cookie = Self::cookie_for(&self.cookie_secret, &peer);
                let mut out = Vec::with_capacity(5 + MAC_LEN);
                wire::encode_cookie(sender, &cookie, &mut out);
                self.queue_transmit(peer, out);
                self.stats.cookie_replies_sent += 1;
                return;
            }
        }

        match pattern {
            Pattern::Xx => self.respond_xx(now, peer, sender, e_remote, noise, lose_tie),
            Pattern::Ik => self.respond_ik(now, peer, sender, e_remote, noise, lose_tie),
        }
    }

    fn respond_xx(
        &mut self,
        now: Instant,
        peer: P,
        sender: u32,
        e_remote: [u8; 32],
        noise: &[u8],
        lose_tie: bool,
    ) {
        let Some((mut hs, seed)) = self.new_handshake(Pattern::Xx, false, None) else {
            return;
        };
        let mut payload = [0u8; HS_BUF];
        if hs.read_message(noise, &mut payload).is_err() {
            self.stats.handshakes_failed_decrypt += 1;
            return;
        }
        let mut buf = [0u8; HS_BUF];
        let Ok(n) = hs.write_message(&self.binding, &mut buf) else {
            return;
        };
        if lose_tie {
            self.yield_initiation(peer);
        }
        if let Some(old) = self.half_open_by_remote.remove(&(peer, sender)) {
            self.half_open.remove(&old);
        }
        while self.half_open.len() >= self.config.max_half_open {
            let oldest = self
                .half_open
                .iter()
                .min_by_key(|(_, h)| h.created)
                .map(|(i, h)| (*i, h.peer, h.remote));
            let Some((i, p, r)) = oldest else { break };
            self.half_open.remove(&i);
            self.half_open_by_remote.remove(&(p, r));
            self.stats.half_open_evicted += 1;
        }
        let local = self.alloc_index();
        let mut msg2 = Vec::with_capacity(9 + n);
        wire::encode_response(local, sender, &buf[..n], &mut msg2);
        let expires = now + self.handshake_span();
        self.half_open.insert(
            local,
            HalfOpen {
                peer,
                remote: sender,
                hs,
                seed,
                msg1: noise.to_vec(),
                failures: 0,
                msg2: msg2.clone(),
                init_e: e_remote,
                created: now,
                expires,
            },
        );
        self.half_open_by_remote.insert((peer, sender), local);
        self.queue_transmit(peer, msg2);
    }

    fn respond_ik(
        &mut self,
        now: Instant,
        peer: P,
        sender: u32,
        e_remote: [u8; 32],
        noise: &[u8],
        lose_tie: bool,
    ) {
        let Some((mut hs, _)) = self.new_handshake(Pattern::Ik, false, None) else {
            return;
        };
        let mut payload = [0u8; HS_BUF];
        let Ok(len) = hs.read_message(noise, &mut payload) else {
            self.stats.handshakes_failed_decrypt += 1;
            return;
        };
        let Some(rs) = hs.get_remote_static().and_then(first32) else {
            self.stats.handshakes_failed_decrypt += 1;
            return;
        };
        let (remote_identity, remote_id) = match self.bindings.verify(&payload[..len], &rs) {
            Ok(v) => v,
            Err(e) => {
                self.count_binding_failure(e);
                return;
            }
        };
        let mut buf = [0u8; HS_BUF];
        let Ok(n) = hs.write_message(&self.binding, &mut buf) else {
            return;
        };
        let handshake_hash = hs.get_handshake_hash().to_vec();
        let Some(transport) = Transport::from_handshake(&mut hs) else {
            return;
        };
        self.ensure_peer(now, peer);
        if lose_tie {
            self.yield_initiation(peer);
        }
        let local = self.alloc_index();
        let mut msg2 = Vec::with_capacity(9 + n);
        wire::encode_response(local, sender, &buf[..n], &mut msg2);
        let session = Session {
            local,
            remote: sender,
            transport,
            send_counter: 0,
            replay: ReplayWindow::new(self.config.replay_window_bits),
            created: now,
            initiator: false,
            confirm: None,
            init_e: e_remote,
            remote_identity,
            remote_id,
            remote_static: rs,
            handshake_hash,
            retire_at: None,
        };
        let expires = now + self.handshake_span();
        let Some(ps) = self.peers.get_mut(&peer) else {
            return;
        };
        if let Some(old) = ps.next.take() {
            self.index.remove(&old.session.local);
        }
        ps.next = Some(NextSession {
            session,
            msg2: msg2.clone(),
            expires,
        });
        self.index.insert(local, peer);
        self.queue_transmit(peer, msg2);
    }

    fn on_response(&mut self, now: Instant, peer: P, sender: u32, receiver: u32, noise: &[u8]) {
        let Some(ps) = self.peers.get_mut(&peer) else {
            self.stats.dropped_unknown_index += 1;
            return;
        };
        let matches = ps.initiation.as_ref().is_some_and(|i| i.local == receiver);
        if !matches {
            // A response re-sent because our initiation was re-sent: re-send message 3.
            let resend = ps.current.as_ref().and_then(|s| {
                (s.local == receiver && s.remote == sender)
                    .then(|| s.confirm.as_ref().map(|c| c.datagram.clone()))
                    .flatten()
            });
            match resend {
                Some(d) => self.queue_transmit(peer, d),
                None => self.stats.dropped_unknown_index += 1,
            }
            return;
        }
        let Some(init) = ps.initiation.as_mut() else {
            return;
        };
        let mut payload = [0u8; HS_BUF];
        let Ok(len) = init.hs.read_message(noise, &mut payload) else {
            self.stats.handshakes_failed_decrypt += 1;
            self.recover_initiation(peer);
            return;
        };
        let Some(init) = ps.initiation.take() else {
            return;
        };
        let Initiation {
            local,
            mut hs,
            pattern,
            e,
            ..
        } = init;
        let verified = hs
            .get_remote_static()
            .and_then(first32)
            .ok_or(HandshakeError::Decrypt)
            .and_then(|rs| self.bindings.verify(&payload[..len], &rs).map(|v| (v, rs)));
        let ((remote_identity, remote_id), rs) = match verified {
            Ok(v) => v,
            Err(e) => {
                self.index.remove(&local);
                self.count_binding_failure(e);
                self.push_event(Event::HandshakeFailed { peer, reason: e });
                self.drop_pending_without_session(peer);
                return;
            }
        };
        let mut confirm = None;
        if pattern == Pattern::Xx {
            let mut buf = [0u8; HS_BUF];
            let Ok(n) = hs.write_message(&self.binding, &mut buf) else {
                self.index.remove(&local);
                return;
            };
            let mut msg3 = Vec::with_capacity(5 + n);
            wire::encode_final(sender, &buf[..n], &mut msg3);
            confirm = Some(Retransmit {
                datagram: msg3,
                attempts: 0,
                next_at: now + self.delay(0),
            });
        }
        let handshake_hash = hs.get_handshake_hash().to_vec();
        let Some(transport) = Transport::from_handshake(&mut hs) else {
            self.index.remove(&local);
            return;
        };
        if let Some(c) = &confirm {
            let d = c.datagram.clone();
            self.queue_transmit(peer, d);
        }
        let session = Session {
            local,
            remote: sender,
            transport,
            send_counter: 0,
            replay: ReplayWindow::new(self.config.replay_window_bits),
            created: now,
            initiator: true,
            confirm,
            init_e: e,
            remote_identity,
            remote_id,
            remote_static: rs,
            handshake_hash,
            retire_at: None,
        };
        // IK: the responder waits for our first transport datagram before it switches over.
        let keepalive = pattern == Pattern::Ik;
        self.promote(now, peer, session, keepalive);
    }

    /// After a response failed to authenticate: rebuild our handshake state, or give up after
    /// too many failures.
    fn recover_initiation(&mut self, peer: P) {
        let Some(mut init) = self.peers.get_mut(&peer).and_then(|p| p.initiation.take()) else {
            return;
        };
        init.failures += 1;
        let rebuilt = if init.failures < MAX_HANDSHAKE_READ_FAILURES {
            self.rebuild_initiator(&init)
        } else {
            None
        };
        match rebuilt {
            Some(hs) => {
                init.hs = hs;
                if let Some(ps) = self.peers.get_mut(&peer) {
                    ps.initiation = Some(init);
                }
            }
            None => {
                self.index.remove(&init.local);
                self.push_event(Event::HandshakeFailed {
                    peer,
                    reason: HandshakeError::Decrypt,
                });
                self.drop_pending_without_session(peer);
            }
        }
    }

    fn on_final(&mut self, now: Instant, peer: P, receiver: u32, noise: &[u8]) {
        let Some(ho) = self.half_open.get_mut(&receiver) else {
            // Message 3 re-sent for a session we completed: confirm again.
            if self.index.get(&receiver) == Some(&peer) {
                let ps = self.peers.get_mut(&peer);
                let d = ps
                    .and_then(|p| p.current.as_mut())
                    .filter(|s| s.local == receiver)
                    .and_then(|s| seal(s, &[]));
                if let Some(d) = d {
                    self.queue_transmit(peer, d);
                    return;
                }
            }
            self.stats.dropped_unknown_index += 1;
            return;
        };
        if ho.peer != peer {
            self.stats.dropped_misattributed += 1;
            return;
        }
        let mut payload = [0u8; HS_BUF];
        let Ok(len) = ho.hs.read_message(noise, &mut payload) else {
            self.stats.handshakes_failed_decrypt += 1;
            if let Some(mut ho) = self.half_open.remove(&receiver) {
                ho.failures += 1;
                let rebuilt = if ho.failures < MAX_HANDSHAKE_READ_FAILURES {
                    self.rebuild_responder(&ho)
                } else {
                    None
                };
                match rebuilt {
                    Some(hs) => {
                        ho.hs = hs;
                        self.half_open.insert(receiver, ho);
                    }
                    None => {
                        self.half_open_by_remote.remove(&(ho.peer, ho.remote));
                    }
                }
            }
            return;
        };
        let Some(ho) = self.half_open.remove(&receiver) else {
            return;
        };
        self.half_open_by_remote.remove(&(peer, ho.remote));
        let HalfOpen {
            remote,
            mut hs,
            init_e,
            ..
        } = ho;
        let verified = hs
            .get_remote_static()
            .and_then(first32)
            .ok_or(HandshakeError::Decrypt)
            .and_then(|rs| self.bindings.verify(&payload[..len], &rs).map(|v| (v, rs)));
        let ((remote_identity, remote_id), rs) = match verified {
            Ok(v) => v,
            Err(e) => {
                self.count_binding_failure(e);
                return;
            }
        };
        let handshake_hash = hs.get_handshake_hash().to_vec();
        let Some(transport) = Transport::from_handshake(&mut hs) else {
            return;
        };
        self.ensure_peer(now, peer);
        // A fresh session exists now; a handshake of ours still in flight is redundant.
        if let Some(init) = self.peers.get_mut(&peer).and_then(|p| p.initiation.take()) {
            self.index.remove(&init.local);
        }
        let session = Session {
            local: receiver,
            remote,
            transport,
            send_counter: 0,
            replay: ReplayWindow::new(self.config.replay_window_bits),
            created: now,
            initiator: false,
            confirm: None,
            init_e,
            remote_identity,
            remote_id,
            remote_static: rs,
            handshake_hash,
            retire_at: None,
        };
        self.index.insert(receiver, peer);
        self.promote(now, peer, session, true);
    }

    fn on_cookie(&mut self, now: Instant, peer: P, receiver: u32, cookie: [u8; MAC_LEN]) {
        let Some(init) = self
            .peers
            .get_mut(&peer)
            .and_then(|p| p.initiation.as_mut())
            .filter(|i| i.local == receiver)
        else {
            self.stats.dropped_unknown_index += 1;
            return;
        };
        self.stats.cookies_received += 1;
        let fresh = init.cookie.is_none_or(|(c, _)| c != cookie);
        // Valid until the responder has rotated its secret twice; be conservative.
        init.cookie = Some((cookie, now + COOKIE_ROTATION));
        if fresh {
            self.send_init(now, peer);
        }
    }

    fn on_transport(&mut self, now: Instant, peer: P, receiver: u32, counter: u64, ct: &[u8]) {
        let Some(&owner) = self.index.get(&receiver) else {
            self.stats.dropped_unknown_index += 1;
            self.maybe_reconnect(now, peer);
            return;
        };
        if owner != peer {
            self.stats.dropped_misattributed += 1;
            return;
        }
        let Some(ps) = self.peers.get_mut(&peer) else {
            self.stats.dropped_unknown_index += 1;
            return;
        };
        let slot = if ps.current.as_ref().is_some_and(|s| s.local == receiver) {
            Slot::Current
        } else if ps.previous.as_ref().is_some_and(|s| s.local == receiver) {
            Slot::Previous
        } else if ps
            .next
            .as_ref()
            .is_some_and(|n| n.session.local == receiver)
        {
            Slot::Next
        } else {
            // An index of the initiation in progress: not a session yet.
            self.stats.dropped_unknown_index += 1;
            return;
        };
        let session = match slot {
            Slot::Current => ps.current.as_mut(),
            Slot::Previous => ps.previous.as_mut(),
            Slot::Next => ps.next.as_mut().map(|n| &mut n.session),
        };
        let Some(session) = session else {
            return;
        };
        match session.replay.check(counter) {
            Ok(()) => {}
            Err(Replay::Duplicate) => {
                self.stats.dropped_replay += 1;
                return;
            }
            Err(Replay::TooOld) => {
                self.stats.dropped_too_old += 1;
                return;
            }
        }
        // Opened into the reused scratch buffer: no allocation (and no zeroing) per datagram.
        let plain = &mut self.scratch;
        plain.resize(ct.len().saturating_sub(TAG_LEN), 0);
        let Some(n) = session.transport.open_into(counter, ct, plain) else {
            self.stats.dropped_tampered += 1;
            return;
        };
        plain.truncate(n);
        if session.replay.accept(counter).is_err() {
            self.stats.dropped_replay += 1;
            return;
        }
        session.confirm = None;
        ps.last_active = now;
        if slot == Slot::Next {
            if let Some(next) = ps.next.take() {
                self.promote(now, peer, next.session, false);
            }
        }
        if n == 0 {
            self.stats.keepalives_received += 1;
        } else {
            self.stats.messages_received += 1;
            if self.direct.is_some() {
                self.direct = Some(Some(peer));
            } else {
                let data = self.scratch.clone();
                self.push_event(Event::Message {
                    peer,
                    data,
                    mode: Mode::Encrypt,
                });
            }
        }
    }

    /// A peer talks to us on a session we do not know: we restarted or forgot it. Start a
    /// handshake (once per handshake lifetime per peer) so that the peer is not stuck.
    fn maybe_reconnect(&mut self, now: Instant, peer: P) {
        if !self.config.connect_on_unknown_session || self.config.mode != Mode::Encrypt {
            return;
        }
        let span = self.handshake_span();
        if let Some(ps) = self.peers.get(&peer) {
            if ps.initiation.is_some() || ps.next.is_some() {
                return;
            }
            if ps
                .unknown_trigger_at
                .is_some_and(|t| now.saturating_duration_since(t) < span)
            {
                return;
            }
        }
        if !self.global.take(
            now,
            self.config.rate_limit_global,
            self.config.rate_limit_global,
        ) {
            return;
        }
        self.ensure_peer(now, peer);
        let rs = match self.peers.get_mut(&peer) {
            Some(ps) => {
                ps.unknown_trigger_at = Some(now);
                ps.remote_static
            }
            None => return,
        };
        self.start_initiation(now, peer, rs, false, false);
    }

    fn on_signed(
        &mut self,
        now: Instant,
        peer: P,
        epoch: u64,
        counter: u64,
        sig: &[u8; wire::SIG_LEN],
        payload: &[u8],
    ) {
        let bits = self.config.replay_window_bits;
        let Some(ps) = self.peers.get_mut(&peer) else {
            self.stats.dropped_unknown_identity += 1;
            return;
        };
        let Some(key) = ps.identity.as_ref().and_then(|(i, _)| i.ed25519_key()) else {
            self.stats.dropped_unknown_identity += 1;
            return;
        };
        let new_epoch = match &ps.sign_rx {
            Some(rx) if epoch < rx.epoch => {
                self.stats.dropped_too_old += 1;
                return;
            }
            Some(rx) if epoch == rx.epoch => match rx.window.check(counter) {
                Ok(()) => false,
                Err(Replay::Duplicate) => {
                    self.stats.dropped_replay += 1;
                    return;
                }
                Err(Replay::TooOld) => {
                    self.stats.dropped_too_old += 1;
                    return;
                }
            },
            _ => true,
        };
        if !matches!(
            verify(key, &wire::signed_message(epoch, counter, payload), sig),
            Ok(true)
        ) {
            self.stats.dropped_bad_signature += 1;
            return;
        }
        if new_epoch {
            ps.sign_rx = Some(SignRx {
                epoch,
                window: ReplayWindow::new(bits),
            });
        }
        if let Some(rx) = ps.sign_rx.as_mut() {
            if rx.window.accept(counter).is_err() {
                self.stats.dropped_replay += 1;
                return;
            }
        }
        ps.last_active = now;
        self.stats.messages_received += 1;
        self.push_event(Event::Message {
            peer,
            data: payload.to_vec(),
            mode: Mode::Sign,
        });
    }

    /// Makes `session` the current one for `peer`; the old current one keeps receiving for
    /// `rekey_grace`. Flushes queued messages; sends a keepalive if `keepalive` and nothing was
    /// flushed (so that the other side learns the session works).
    fn promote(&mut self, now: Instant, peer: P, mut session: Session, keepalive: bool) {
        let grace = self.config.rekey_grace;
        let Some(ps) = self.peers.get_mut(&peer) else {
            self.index.remove(&session.local);
            return;
        };
        let mut replaced_identity = false;
        if let Some(mut old) = ps.current.take() {
            old.retire_at = Some(now + grace);
            old.confirm = None;
            replaced_identity = old.remote_id != session.remote_id;
            if let Some(prev) = ps.previous.replace(old) {
                self.index.remove(&prev.local);
            }
            self.stats.rekeys += 1;
        }
        let mut disconnected = None;
        if replaced_identity && ps.connected_reported {
            ps.connected_reported = false;
            // The old identity's session must not deliver anything more as this peer.
            if let Some(prev) = ps.previous.take() {
                self.index.remove(&prev.local);
            }
            disconnected = Some(Event::Disconnected {
                peer,
                reason: DisconnectReason::IdentityChanged,
            });
        }
        ps.identity = Some((session.remote_identity.clone(), session.remote_id));
        ps.remote_static = Some(session.remote_static);
        ps.last_active = now;
        let connected = (!ps.connected_reported).then(|| Event::Connected {
            peer,
            remote_id: session.remote_id,
            remote_identity: session.remote_identity.clone(),
        });
        ps.connected_reported = true;
        let mut out = Vec::new();
        while let Some(m) = ps.pending.pop_front() {
            if let Some(d) = seal(&mut session, &m) {
                out.push(d);
            }
        }
        let flushed = out.len() as u64;
        if keepalive && out.is_empty() {
            if let Some(d) = seal(&mut session, &[]) {
                out.push(d);
            }
        }
        ps.current = Some(session);
        self.stats.handshakes_completed += 1;
        self.stats.messages_sent += flushed;
        if let Some(ev) = disconnected {
            self.push_event(ev);
        }
        if let Some(ev) = connected {
            self.push_event(ev);
        }
        for d in out {
            self.queue_transmit(peer, d);
        }
    }

    fn drop_pending_without_session(&mut self, peer: P) {
        if let Some(ps) = self.peers.get_mut(&peer) {
            if ps.current.is_none() {
                self.stats.dropped_no_session += ps.pending.len() as u64;
                ps.pending.clear();
            }
        }
    }

    fn peer_timeout(&mut self, now: Instant, peer: P) {
        // Our initiation: retransmit or give up.
        let due = self
            .peers
            .get(&peer)
            .and_then(|p| p.initiation.as_ref())
            .filter(|i| i.next_at <= now)
            .map(|i| (i.attempts, i.pattern, i.is_rekey, i.fell_back));
        if let Some((attempts, pattern, is_rekey, fell_back)) = due {
            if attempts >= self.config.handshake_retries {
                if let Some(init) = self.peers.get_mut(&peer).and_then(|p| p.initiation.take()) {
                    self.index.remove(&init.local);
                }
                if pattern == Pattern::Ik && !is_rekey && !fell_back {
                    // The remembered static key may be stale: try first contact once.
                    self.start_initiation(now, peer, None, false, true);
                } else {
                    self.stats.handshakes_failed_timeout += 1;
                    self.push_event(Event::HandshakeFailed {
                        peer,
                        reason: HandshakeError::Timeout,
                    });
                    self.drop_pending_without_session(peer);
                }
            } else {
                let next_at = now + self.delay(attempts + 1);
                if let Some(init) = self
                    .peers
                    .get_mut(&peer)
                    .and_then(|p| p.initiation.as_mut())
                {
                    init.attempts += 1;
                    init.next_at = next_at;
                }
                self.send_init(now, peer);
            }
        }

        let retries = self.config.handshake_retries;
        let reject_after = self.config.reject_after_time;
        let mut resend = None;
        let mut lost_current = None;
        let mut rekey = None;
        {
            let Some(ps) = self.peers.get_mut(&peer) else {
                return;
            };
            // Confirmation of an XX session we initiated.
            let mut unconfirmed = false;
            if let Some(cur) = ps.current.as_mut() {
                if let Some(c) = cur.confirm.as_mut() {
                    if c.next_at <= now {
                        if c.attempts >= retries {
                            unconfirmed = true;
                        } else {
                            c.attempts += 1;
                            c.next_at = now
                                + self
                                    .config
                                    .handshake_timeout
                                    .saturating_mul(1u32 << c.attempts.min(16));
                            resend = Some(c.datagram.clone());
                        }
                    }
                }
            }
            if unconfirmed {
                lost_current = Some(DisconnectReason::Unconfirmed);
            } else if ps
                .current
                .as_ref()
                .is_some_and(|s| now.saturating_duration_since(s.created) >= reject_after)
            {
                lost_current = Some(DisconnectReason::Expired);
            }
            if let Some(reason) = lost_current {
                if let Some(s) = ps.current.take() {
                    self.index.remove(&s.local);
                }
                self.stats.sessions_expired += 1;
                if reason == DisconnectReason::Unconfirmed {
                    self.stats.handshakes_failed_timeout += 1;
                }
            }
            if ps.next.as_ref().is_some_and(|n| n.expires <= now) {
                if let Some(n) = ps.next.take() {
                    self.index.remove(&n.session.local);
                }
            }
            if ps
                .previous
                .as_ref()
                .is_some_and(|s| s.retire_at.is_some_and(|t| t <= now))
            {
                if let Some(s) = ps.previous.take() {
                    self.index.remove(&s.local);
                }
            }
            if ps.initiation.is_none() {
                if let Some(cur) = ps.current.as_ref() {
                    let t = self.config.rekey_after_time;
                    let age = if cur.initiator {
                        t
                    } else {
                        t.saturating_add(t / 8)
                    };
                    if now.saturating_duration_since(cur.created) >= age {
                        rekey = Some(cur.remote_static);
                    }
                }
            }
        }
        if let Some(d) = resend {
            self.queue_transmit(peer, d);
        }
        if let Some(reason) = lost_current {
            if reason == DisconnectReason::Unconfirmed {
                self.push_event(Event::HandshakeFailed {
                    peer,
                    reason: HandshakeError::Timeout,
                });
            }
            if let Some(ps) = self.peers.get_mut(&peer) {
                if ps.connected_reported {
                    ps.connected_reported = false;
                    self.push_event(Event::Disconnected { peer, reason });
                }
            }
        }
        if let Some(rs) = rekey {
            self.start_initiation(now, peer, Some(rs), true, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: u32 = 1;
    const B: u32 = 2;

    fn pair() -> (Endpoint<u32>, Endpoint<u32>, Instant) {
        let now = Instant::now();
        let a = Endpoint::new(
            &Identity::from_seed(&[1; 32]),
            Config::default(),
            now,
            [1; 32],
        );
        let b = Endpoint::new(
            &Identity::from_seed(&[2; 32]),
            Config::default(),
            now,
            [2; 32],
        );
        (a.unwrap(), b.unwrap(), now)
    }

    /// Shuttles datagrams until both sides are quiet.
    fn pump(a: &mut Endpoint<u32>, b: &mut Endpoint<u32>, now: Instant) {
        let mut buf = Vec::new();
        for _ in 0..16 {
            let mut moved = false;
            while a.poll_transmit(&mut buf).is_some() {
                b.handle_datagram(now, A, &buf);
                moved = true;
            }
            while b.poll_transmit(&mut buf).is_some() {
                a.handle_datagram(now, B, &buf);
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    fn failures(ep: &mut Endpoint<u32>) -> Vec<HandshakeError> {
        let mut v = Vec::new();
        while let Some(e) = ep.poll_event() {
            if let Event::HandshakeFailed { reason, .. } = e {
                v.push(reason);
            }
        }
        v
    }

    /// The initiator's binding signs some other static key: the responder rejects message 3.
    #[test]
    fn signature_not_covering_the_static_key_is_rejected() {
        let (mut a, mut b, now) = pair();
        let other_static = crypto::static_keypair(&Identity::from_seed(&[9; 32]))
            .unwrap()
            .public();
        a.binding = crypto::binding_payload(&Identity::from_seed(&[1; 32]), &other_static).unwrap();
        a.connect(now, B, None);
        pump(&mut a, &mut b, now);
        assert_eq!(b.stats().handshakes_failed_binding, 1);
        assert_eq!(b.is_authenticated(A), None);
        assert_eq!(b.stats().sessions, 0);
        assert_eq!(b.stats().half_open, 0);
    }

    /// The responder claims a node id that is not SHA-256 of its identity: the initiator
    /// rejects message 2, reports it and never creates a session.
    #[test]
    fn claimed_id_that_is_not_the_hash_is_rejected() {
        let (mut a, mut b, now) = pair();
        b.binding[1..33].copy_from_slice(&Identity::from_seed(&[7; 32]).id());
        a.connect(now, B, None);
        pump(&mut a, &mut b, now);
        assert_eq!(a.stats().handshakes_failed_binding, 1);
        assert_eq!(failures(&mut a), vec![HandshakeError::IdMismatch]);
        assert_eq!(a.is_authenticated(B), None);
        assert_eq!(b.is_authenticated(A), None);
    }

    /// Someone replays B's binding (a valid certificate) with its own static key: IK message 1
    /// decrypts (Noise authenticates *its* key), but the signature does not cover that key.
    #[test]
    fn replayed_binding_with_another_static_key_is_rejected() {
        let (mut a, mut b, now) = pair();
        let mut mallory: Endpoint<u32> = Endpoint::new(
            &Identity::from_seed(&[3; 32]),
            Config::default(),
            now,
            [3; 32],
        )
        .unwrap();
        mallory.binding = a.binding.clone(); // claims to be A
        mallory.connect(now, B, Some(b.local_static_public_key()));
        pump(&mut mallory, &mut b, now);
        assert_eq!(b.stats().handshakes_failed_binding, 1);
        assert_eq!(b.stats().peers, 0);
        assert_eq!(b.is_authenticated(A), None);
        // The real A still gets in.
        a.connect(now, B, Some(b.local_static_public_key()));
        pump(&mut a, &mut b, now);
        assert_eq!(
            b.is_authenticated(A),
            Some(Identity::from_seed(&[1; 32]).id())
        );
    }

    #[test]
    fn debug_prints_no_key_material() {
        let (a, _, _) = pair();
        let dbg = format!("{a:?}");
        let mut hex = String::new();
        crate::identity::push_hex(&mut hex, a.static_pair.private());
        assert!(!dbg.contains(&hex[..12]), "{dbg}");
        let mut hex = String::new();
        crate::identity::push_hex(&mut hex, &a.static_pair.public());
        assert!(!dbg.contains(&hex[..12]), "{dbg}");
        assert!(!dbg.contains("static"), "{dbg}");
    }

    #[test]
    fn rebuilt_handshake_state_matches_the_original() {
        let (mut a, mut b, now) = pair();
        a.connect(now, B, None);
        let init = a.peers.get(&B).unwrap().initiation.as_ref().unwrap();
        assert!(a.rebuild_initiator(init).is_some());
        let mut buf = Vec::new();
        a.poll_transmit(&mut buf).unwrap();
        b.handle_datagram(now, A, &buf);
        let ho = b.half_open.values().next().unwrap();
        assert!(b.rebuild_responder(ho).is_some());
    }
}
