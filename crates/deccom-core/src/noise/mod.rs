//! Identity-bound Noise secure channel over datagrams (sans-IO).
//!
//! An [`Endpoint`] turns application messages into datagrams and back, for many peers at once.
//! It opens no socket, reads no clock and never touches the OS random number generator: the
//! driver passes `now` into every call and a 32-byte `seed` at construction.
//!
//! # Driving an endpoint (quinn style)
//!
//! ```text
//! loop {
//!     // inputs
//!     endpoint.handle_datagram(now, from, &bytes);     // for each received datagram
//!     endpoint.handle_timeout(now);                    // when poll_timeout() has passed
//!     endpoint.send(now, to, &msg)?;  endpoint.connect(now, to, known_static);
//!     // outputs, drained after every input
//!     while let Some(to) = endpoint.poll_transmit(&mut buf) { socket.send_to(&buf, to) }
//!     while let Some(ev) = endpoint.poll_event() { ... }
//!     sleep_until(endpoint.poll_timeout());
//! }
//! ```
//!
//! Every queue is bounded (`max_transmit_queue`, `max_events`, `max_pending_per_peer`); what does
//! not fit is counted in [`Stats`], never buffered without limit.
//!
//! # Cryptographic suite
//!
//! `Noise_XX_25519_ChaChaPoly_BLAKE2b` for first contact and `Noise_IK_25519_ChaChaPoly_BLAKE2b`
//! when the initiator already knows the responder's static key (one round trip instead of 1.5),
//! both through the `snow` crate. BLAKE2b rather than SHA-256: it is faster in software on
//! 64-bit CPUs, is the hash of the npm `noise-handshake` package's default suite (so an interop
//! test against the JavaScript ecosystem is possible), and SHA-256 gains nothing here because
//! there is no hardware-accelerated path in snow's pure-Rust resolver for it either. Prologue:
//! `"deccom-noise-v1"`.
//!
//! # Identity binding
//!
//! The X25519 static key of a node is derived from its Ed25519 seed:
//! `SHA-256("deccom-noise-x25519-static-v1" || seed)` (see [`static_public_key`]), so it is the
//! same after a restart and peers can keep using IK. Each side's handshake payload (XX messages 2
//! and 3, IK messages 1 and 2; always encrypted by Noise) is the **binding**:
//!
//! | bytes | field                                                                     |
//! |-------|---------------------------------------------------------------------------|
//! | 1     | binding version `0x01`                                                    |
//! | 32    | claimed node id                                                           |
//! | 1     | length `n` of the encoded public identity                                 |
//! | n     | encoded public identity (kind `0x01` + Ed25519 key; see [`crate::identity`]) |
//! | 64    | Ed25519 signature over `"deccom-noise-static-v1" \|\| noise_static_pub`     |
//!
//! The receiver takes the static key that Noise authenticated, checks the signature over it with
//! the presented Ed25519 key (strict verification), and checks that the claimed id is
//! SHA-256 of the encoded identity. Any failure drops the handshake (no session is created) and
//! counts it in `handshakes_failed_binding`; for handshakes we started a
//! [`Event::HandshakeFailed`] is also emitted. A name identity cannot sign: [`Endpoint::new`]
//! refuses it and a received one is rejected. The signature is computed once per endpoint (it is
//! a certificate for the static key, as in libp2p-noise); the Noise DH with that static key is what
//! proves possession in each handshake.
//!
//! # Datagram format (version 1)
//!
//! Integers are big-endian. Byte 0 is the datagram type; a future version uses new type codes
//! (and a new prologue). Indices are random non-zero 32-bit values chosen by the receiver of
//! later messages, as in WireGuard, so a peer demultiplexes by index rather than by address.
//!
//! | type   | name        | layout after the type byte                                                                    |
//! |--------|-------------|-----------------------------------------------------------------------------------------------|
//! | `0x00` | plaintext   | payload                                                                                       |
//! | `0x01` | signed      | epoch u64, counter u64, signature (64), payload                                               |
//! | `0x02` | transport   | receiver index u32, counter u64 (the AEAD nonce), ciphertext + 16-byte tag                     |
//! | `0x10` | initiation  | version u8 (=1), sender index u32, pattern u8 (0 XX, 1 IK), mac flag u8 (0/1), [mac (16)], Noise message 1 |
//! | `0x11` | response    | sender index u32, receiver index u32, Noise message 2                                         |
//! | `0x12` | final (XX)  | receiver index u32, Noise message 3                                                           |
//! | `0x13` | cookie      | receiver index u32 (the initiation's sender index), cookie (16)                               |
//!
//! Noise messages are 32..=1024 bytes in handshakes and at most 65 535 bytes in transport (so an
//! application message is at most [`MAX_MESSAGE_LEN`] bytes; the UDP layer's own limit is
//! usually lower). Signed datagrams sign `"deccom-noise-sign-v1" || epoch || counter || payload`.
//! The codec is [`wire::decode`]: checked, never panics, rejects every truncation.
//!
//! # Handshake over datagrams
//!
//! ```text
//!  XX  initiator                       responder
//!      init  [e, zero padding]   ───►  (half-open, bounded)
//!            ◄───  response [e, ee, s, es, binding_R]
//!      final [s, se, binding_I]  ───►  session (confirmed) ── keepalive ──►
//!      session (unconfirmed: final re-sent until any transport datagram arrives)
//!
//!  IK  init  [e, es, s, ss, binding_I]  ───►  session "next" (not used for sending yet)
//!            ◄───  response [e, ee, se, binding_R]
//!      session ── first transport datagram / keepalive ──►  next becomes current
//! ```
//!
//! Each handshake message is re-sent (the same bytes) after `handshake_timeout`, doubling each
//! time, `handshake_retries` times; then the handshake fails with
//! [`HandshakeError::Timeout`]. A re-sent initiation is answered with the cached response; a
//! re-sent response with the cached final message. If an IK attempt times out (our remembered
//! static key may be stale) one XX attempt follows before the failure is reported.
//!
//! **Simultaneous open**: if a peer's initiation arrives while ours to it is unanswered, the
//! initiation whose ephemeral public key is lexicographically lower wins on both sides: the
//! winner ignores the other initiation, the loser drops its own (keeping its queued messages) and
//! answers as responder. Both sides see both ephemeral keys, so they agree without another round
//! trip; the result is one session with one handshake hash. (Our own initiation reflected back
//! has an equal key and is dropped.)
//!
//! **Restarts**: a new initiation from a peer that has a session with us is answered normally
//! and the new session replaces the old one when it completes (XX: on message 3; IK: on the first
//! transport datagram, so a replayed old IK initiation can never displace a working session). A
//! node that receives transport data for an index it does not know (it restarted) starts a
//! handshake itself (`connect_on_unknown_session`; only in answer to a datagram at least as long
//! as its initiation, see *Amplification* below), so neither side stays stuck.
//!
//! # Transport, replay window, rekey
//!
//! Sessions use snow's `StatelessTransportState`: each datagram carries its 64-bit counter, used
//! as the nonce, so reordering is harmless. The receiver keeps a [`ReplayWindow`] per session
//! (RFC 6479: `replay_window_bits` bitmap + highest counter), checked before decryption and
//! updated only after the tag verified: duplicates (`dropped_replay`), counters older than the
//! window (`dropped_too_old`) and forgeries (`dropped_tampered`) are dropped and counted.
//!
//! A new handshake (IK, with the known static key) starts after `rekey_after_messages` sent
//! messages or when the session is `rekey_after_time` old (the session's initiator first; the
//! responder an eighth later). The replaced session keeps accepting datagrams for `rekey_grace`.
//! Sessions older than `reject_after_time` are discarded.
//!
//! # Modes
//!
//! - [`Mode::Plaintext`]: `0x00 || payload`, no protection.
//! - [`Mode::Sign`]: every datagram is signed by the sender's Ed25519 key and carries
//!   `(epoch, counter)`. The receiver must already know the sender's identity for that address:
//!   from a completed handshake (any mode can run one via [`Endpoint::connect`]) or from a peer
//!   record via [`Endpoint::set_peer_identity`]; otherwise the datagram is dropped
//!   (`dropped_unknown_identity`). Replay protection: a window per sender within an epoch; a
//!   higher epoch resets it, a lower one is dropped. `sign_epoch` must therefore grow across
//!   restarts (e.g. the start time in ms). Limits: the signature does not name the receiver, so a
//!   signed datagram can be replayed once to a different receiver; use `Encrypt` when that matters.
//! - [`Mode::Encrypt`]: AEAD through a Noise session (ChaCha20-Poly1305, or AES-256-GCM when
//!   both sides prefer it: [`Suite`], agreed in the handshake).
//!
//! With `strict: true`, data datagrams of another mode are dropped (`dropped_mode`); handshake
//! traffic is accepted in `Sign` and `Encrypt` modes and dropped in `Plaintext` mode. Without
//! `strict`, every mode is accepted and [`Event::Message`] says which one protected the data.
//!
//! # Denial of service
//!
//! Initiations pass, before any public-key operation: a per-source token bucket
//! (`rate_limit_per_peer`/s, burst `rate_limit_burst`; over it the datagram is **dropped** and
//! counted in `dropped_rate_limited`), then, when the endpoint is under load — at least
//! `cookie_threshold` half-open handshakes, or the global bucket (`rate_limit_global`/s) is empty —
//! a **cookie** check: an initiation without a valid cookie MAC gets a cookie reply instead of an
//! answer. The cookie is `BLAKE2s-128(key = secret, peer address bytes)` with a secret rotated
//! every two minutes (the previous one stays valid); the initiator re-sends its initiation with
//! `mac = BLAKE2s-128(key = cookie, initiation without flag and mac)`. A spoofed source never
//! sees its cookie, so it cannot create responder state under load; a real peer pays one extra
//! round trip. (Unlike WireGuard, the cookie reply is not encrypted: an attacker that sees our
//! initiations can already disrupt the path; a forged cookie only costs the initiator a retry.)
//!
//! **Amplification.** No handshake message answers an unvalidated address with more bytes than
//! the datagram that caused it. Our XX message 1 carries zero padding as its payload
//! ([`wire::XX_INIT_PADDING`] bytes), so the initiation is as long as the response; an XX
//! initiation shorter than our response gets only a cookie reply (21 bytes) unless its cookie MAC
//! is valid (the cookie reached the initiator's address, which validates it), counted in
//! `unpadded_initiations`. An IK response is shorter than its initiation. Transport data for an
//! unknown session starts a handshake (`connect_on_unknown_session`) with an initiation no longer
//! than the datagram: padded from [`wire::MAX_INIT_LEN`] bytes on, else an unpadded XX message 1
//! (the peer asks for a cookie first); it is re-sent only in answer to more such datagrams, never
//! by the timer, until the application sends to or connects to the peer (`reconnect_too_small`
//! counts datagrams too short for any initiation).
//! Responder state is bounded: at most `max_half_open` half-open handshakes (oldest evicted),
//! `max_sessions` peers (least recently active without a session evicted first) and
//! `max_tracked_sources` rate-limit entries. All buckets run on the `now` the driver passes.
//!
//! # Randomness
//!
//! The endpoint owns a ChaCha20 generator seeded with the caller's 32 bytes. For each handshake
//! it draws a fresh 32-byte seed and gives snow a custom `CryptoResolver` whose RNG is a ChaCha20
//! stream from that seed (primitives come from snow's pure-Rust default resolver). Session
//! indices and cookie secrets come from the same generator. Tests pass fixed seeds and are
//! reproducible; production drivers must seed from the OS (`getrandom`).
//!
//! # Approval
//!
//! [`Endpoint::is_authenticated`] returns the peer's node id once a handshake completed (and
//! while its session is current): discovery layers use "approval = completed handshake".
//! [`Event::Connected`] / [`Event::Disconnected`] report the changes.
//!
//! # Secrets
//!
//! `Debug` of every type here prints no key material (an [`Endpoint`] prints its short node id and
//! sizes). The static private key is zeroized on drop.

mod crypto;
mod endpoint;
pub mod frame;
pub mod error;
mod primitives;
mod ratelimit;
pub mod replay;
pub mod wire;

pub use endpoint::{Config, DisconnectReason, Endpoint, Event, Mode, Stats, MAX_MESSAGE_LEN};
pub use error::{HandshakeError, NoiseError, WireError};
pub use primitives::{Suite, OFFER_AES_GCM};
pub use replay::{Replay, ReplayWindow};

/// The X25519 static public key an [`Endpoint`] built from `identity` uses (derived from the
/// Ed25519 seed; see the module docs). Publish it (e.g. in a peer record) so that peers can
/// [`Endpoint::connect`] with IK.
///
/// # Errors
///
/// [`NoiseError::NameIdentity`] for a name identity.
pub fn static_public_key(identity: &crate::Identity) -> Result<[u8; 32], NoiseError> {
    crypto::static_keypair(identity).map(|pair| pair.public())
}
