//! [`Config`] of an endpoint (defaults and validation) and its [`Stats`].

use std::time::Duration;

use super::{Mode, MAX_MESSAGE_LEN};
use crate::noise::crypto;
use crate::noise::error::NoiseError;

/// Configuration of an [`Endpoint`](super::Endpoint). Every field has a documented default
/// ([`Config::default`]).
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
    /// Largest message accepted by [`Endpoint::send`](super::Endpoint::send)
    /// (≤ [`MAX_MESSAGE_LEN`]). Default [`MAX_MESSAGE_LEN`].
    pub max_message_len: usize,
    /// Sign mode epoch; must increase across restarts of this node (the napi driver uses the
    /// Unix time in milliseconds at start) or receivers drop its signed datagrams as replays.
    /// Default 0.
    pub sign_epoch: u64,
    /// Start a handshake towards a peer that sends transport data for a session we do not have
    /// (we restarted or evicted it), at most once per handshake lifetime, with an initiation no
    /// longer than the datagram (its address is not validated). Default `true`.
    pub connect_on_unknown_session: bool,
    /// Verified identity bindings remembered, so that meeting a peer again (rekey, reconnection)
    /// skips the Ed25519 verification; 0 turns the cache off. Default 1024.
    pub verified_bindings: usize,
    /// Whether this endpoint prefers AES-256-GCM for sessions' transport messages: it offers it
    /// when it initiates and accepts an offer when it responds; a session uses AES-256-GCM only
    /// when both sides prefer it, else ChaCha20-Poly1305 (docs/wire.md, "Transport suites").
    /// `None` (the default): prefer it when the CPU has AES instructions
    /// ([`Suite::hardware_aes`](crate::noise::Suite::hardware_aes)).
    pub aes_gcm: Option<bool>,
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
            aes_gcm: None,
        }
    }
}

impl Config {
    pub(super) fn validate(&self) -> Result<(), NoiseError> {
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
    /// Handshakes that authenticated another identity than the one expected at that address
    /// ([`super::Endpoint::expect_identity`]): refused, the session never created.
    pub handshakes_identity_mismatch: u64,
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
    /// Unpadded XX initiations without a valid cookie MAC, answered with a cookie reply only
    /// (also counted in `cookie_replies_sent`).
    pub unpadded_initiations: u64,
    /// Sessions established whose transport messages use AES-256-GCM (the others use
    /// ChaCha20-Poly1305; see [`Config::aes_gcm`]).
    pub sessions_aes_gcm: u64,
    /// Transport datagrams for an unknown session too short to answer with an initiation.
    pub reconnect_too_small: u64,
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
