//! Reliable UDP, sans-IO: messages of any size (up to 4 GiB − 1) over datagrams, with
//! selective acknowledgements, QUIC-style loss recovery, CUBIC congestion control, pacing,
//! a receiver-advertised window and bounded memory everywhere.
//!
//! [`Endpoint`] owns one connection per peer handle `P` (chosen by the driver: an address slot,
//! a simulator node index, ...). It opens no socket, reads no clock and draws no randomness of
//! its own: time is the `now` passed to every call, randomness comes from the `seed` given to
//! [`Endpoint::new`] (a splitmix64 generator used only for epochs). The same inputs always
//! produce the same outputs.
//!
//! # Driving an endpoint (call order)
//!
//! 1. Feed inputs: [`Endpoint::send`], [`Endpoint::handle_datagram`] (one call per received
//!    datagram of this protocol, tag byte already removed), [`Endpoint::handle_timeout`] when
//!    the timer armed from `poll_timeout` expires (calling it early or often is harmless).
//! 2. After any batch of inputs, call [`Endpoint::poll_transmit`] until it returns `None`,
//!    sending each datagram to the returned peer. It returns `None` when the congestion or
//!    receive window is full or pacing says later: do not spin, go to step 4.
//! 3. Drain [`Endpoint::poll_event`] until `None` (delivered messages, `Sent`, `Failed`,
//!    `Progress`).
//!    Events are queued without bound until drained, so drain after every batch.
//! 4. Arm one timer for [`Endpoint::poll_timeout`] (`None` = nothing to wait for). On expiry
//!    call `handle_timeout(now)` and go back to step 2.
//!
//! `now` must never go backwards.
//!
//! # Protocol
//!
//! Every peer pair has a connection in each direction sharing the peer state: each side
//! numbers its DATA datagrams with a packet number (pn) that only increases — a retransmitted
//! segment travels in a *new* packet — and acknowledges the other side's packet numbers with
//! up to 32 inclusive ranges, most recent first. A message (per-connection sequential id) is
//! cut into segments of `max_segment_payload` bytes (segment size fixed per message, carried
//! in every DATA so any segment can start reassembly); the receiver writes each payload
//! straight into the message buffer at `index × segment size` and delivers the message once
//! every segment arrived. `send` resolves ([`Event::Sent`]) when every segment is
//! acknowledged.
//!
//! RFC sections followed (RFC 9002 is written in bytes; here windows count datagrams):
//!
//! - **RFC 9002 §5 (RTT)**: `latest_rtt` from the largest newly acknowledged packet,
//!   `min_rtt`, `smoothed_rtt`/`rttvar` with the 1/8, 1/4 gains (= RFC 6298 §2), ack delay
//!   subtracted when it does not go below `min_rtt`, capped at `max_ack_delay`.
//! - **§6.1 (ack-based loss detection)**: packet threshold 3, time threshold
//!   `9/8 × max(smoothed_rtt, latest_rtt)` (at least 1 ms), with a loss timer for the packet
//!   that is not yet lost. This is the fast retransmit on gaps.
//! - **§6.2 (probe timeout)**: `PTO = smoothed_rtt + max(4 × rttvar, 1 ms) + max_ack_delay`,
//!   clamped to `[min_rto, max_rto]`, doubled on each consecutive expiry (RFC 6298 §5.5
//!   backoff), reset when an ACK acknowledges something new. On expiry two probe datagrams
//!   retransmit the oldest unacknowledged segments, bypassing congestion window and pacing
//!   (§6.2.4); packets are not declared lost by the PTO itself.
//! - **§7 with CUBIC (RFC 9438)**: slow start, then CUBIC's window (`0.4 (t − K)³ + W_max`, at
//!   least the Reno-friendly estimate), reduction to 0.7 of the window (fast convergence) at
//!   most once per recovery period (§7.3.2), no growth while
//!   application-limited (§7.8, approximated: growth only while at least half the window was
//!   in use), and persistent congestion (§7.6) approximated as three consecutive PTOs →
//!   window of 2 datagrams.
//! - **§7.7 (pacing)**: token bucket releasing `1.25 × cwnd` datagrams per smoothed RTT,
//!   bursts of 10; an RTT of (nearly) zero — loopback, in-memory — is effectively unpaced.
//! - **RFC 9000 §13.2 (sending ACKs)**: acknowledge immediately when a datagram arrives out
//!   of order or is a duplicate, when the sender asked (`ACK_NOW` flag: set on the last
//!   datagram before its queue drains or its window fills, and on probes), otherwise after
//!   `ack_every` (8) datagrams or `max_ack_delay` (2 ms), whichever first. At full speed this
//!   is one ACK per 8 DATA datagrams.
//!
//! Flow control: every ACK carries the receiver's window in datagrams; the sender keeps at most
//! `min(cwnd, peer window)` datagrams in flight (probes excepted). Before the first ACK the
//! peer window is assumed to be `initial_window`.
//!
//! A peer that stops acknowledging: when nothing new was acknowledged for `peer_timeout` while
//! messages to it were outstanding, all of them fail with [`FailReason::PeerUnreachable`] (a
//! deterministic timer, independent of the PTO backoff).
//!
//! ## Progress and cancellation
//!
//! A message queued with [`Endpoint::send_with_progress`] produces [`Event::Progress`] events
//! with the bytes acknowledged so far: increasing, at most one per `min(len / 64, 256 KiB)` newly
//! acknowledged bytes and per 4 ms, the last one (the whole length) right before its `Sent`.
//! [`Endpoint::cancel`] gives a message up: it is removed from the connection (its bytes are
//! released, its queued retransmissions are skipped, no `Sent`/`Failed` follows), and it counts
//! as finished for the floor. The receiver frees its partial copy when a DATA carries a floor above
//! it (see *Duplicate suppression*), or after its `partial_timeout`; no wire change is needed.
//!
//! ## Epochs (restarts)
//!
//! Each connection state draws a random non-zero 64-bit epoch when it is created (so an
//! endpoint restart, [`Endpoint::forget_peer`] or an eviction all yield a fresh epoch). Every
//! datagram carries the sender's epoch and the epoch it believes the receiver has (0 before it
//! heard from it).
//!
//! - DATA addressed to another epoch of ours is dropped unacknowledged and answered with an
//!   ACK without ranges that announces our epoch.
//! - A peer's first epoch is taken from a DATA (or from an ACK addressed to our epoch). After
//!   that, a datagram under another source epoch changes anything only if its destination epoch
//!   is ours — a value only a peer that receives our datagrams knows. Anything else is dropped
//!   (`dropped_unproven_epoch`) and, if it is a DATA, answered with a bare ACK from our epoch to
//!   that source epoch (smaller than the DATA), so that a peer that really restarted learns our
//!   epoch and proves itself with its next datagram. A peer that echoed our epoch is *proven*;
//!   it gets a full share of reassembly memory.
//! - When a proven new epoch arrives, the peer restarted: its partial messages, duplicate filter and
//!   received-packet ranges are dropped, and **our unfinished messages to it restart** from
//!   their first segment (same `MessageId`, packet numbers keep increasing, congestion state
//!   reset) — they are not failed. A message that the old incarnation received completely but
//!   whose acknowledgement was lost is therefore delivered once more, to the new incarnation.
//! - The last 4 epochs of a peer are remembered and their late datagrams dropped.
//!
//! Epochs are not authentication: an attacker that sees our datagrams (on the path) learns them
//! and can forge anything. Run this protocol under Noise when peers are untrusted.
//!
//! ## Integrity
//!
//! Every datagram ends with a CRC32C of all its other bytes. A datagram whose checksum does not
//! match is dropped before anything in it is read (`dropped_checksum`, also counted in
//! `dropped_malformed`): a corrupted packet number, message id, floor or epoch can neither
//! acknowledge, complete, deliver nor reset anything. The checksum is not a MAC.
//!
//! ## Duplicate suppression
//!
//! Each DATA carries `floor`: every message id below it is finished at the sender (acknowledged
//! or failed), and a sender never puts an id `>= floor + 32768` on the wire (later messages
//! wait). The receiver keeps a watermark (all ids below are finished) and a 32768-bit ring of
//! delivered ids above it (4 KiB per peer, allocated on first delivery): exact, bounded, and
//! segments of finished messages are acknowledged without being delivered again. Partial
//! messages below the floor (given up by the sender) are freed.
//!
//! # Memory bounds
//!
//! - Reassembly memory is charged as data arrives, never for the length a first segment
//!   announces. A message of 256 KiB or more is reassembled into a buffer allocated at full length
//!   but zero-filled lazily (fresh pages from the allocator, resident only once written), and
//!   charged per 64 KiB region its data lands in; a shorter one is charged its length. A segment
//!   is stored only if its charge fits: the peer's share (`max_reassembly_per_peer` once proven,
//!   2 MiB before), a density bound (a peer holds at most 4 MiB plus 4 × the payload bytes it has
//!   stored, so memory is held only by sending about as much data), and `max_reassembly_total`
//!   (of which unproven peers together hold at most 1/16). A proven peer's first segment opens a
//!   message only if everything it has open would fit its share once complete (their full
//!   charges): messages started together cannot each hold part of the share and block one
//!   another. An unproven peer's buffers (their announced lengths, address space rather than
//!   memory) are bounded by `max_message_size`. For a large message that keeps arriving, memory
//!   is reserved ahead of the writer (no more than twice what it already stored, at most 64 MiB) and
//!   offered to the driver as a pre-fault hint ([`Endpoint::poll_prefault`]).
//!
//!   A segment that is not stored is never acknowledged; instead the next ACK carries a
//!   *refusal* for its packet number (the packet arrived, so the sender neither counts a loss
//!   nor shrinks its window):
//!   - *final* (`dropped_oversized_announcement`): longer than `max_message_size`, or than a
//!     limit even once complete → the send fails with [`FailReason::Refused`];
//!   - *busy* (`dropped_reassembly_full`): does not fit now → the sender parks the message
//!     (no new segments; its segments declared lost are parked too), retries its oldest
//!     refused segment after `min_rto`, doubling up to 1 s (the oldest waiting message at
//!     once when another message to the peer completes), and releases the rest once one is
//!     acknowledged (admitted). A busy refusal is not
//!     progress: a sender that gets nothing but refusals for `peer_timeout` fails its messages
//!     with [`FailReason::Busy`].
//!
//!   Either refusal shows that the path delivers: it resets the probe-timeout backoff as an
//!   acknowledgement does.
//!
//!   Partial messages expire after `partial_timeout`; the last 64 expired ids are remembered
//!   and their segments refused (final), so the sender fails the send instead of completing
//!   it against a receiver that threw the first half away.
//! - Outgoing: at most `max_outgoing_per_peer` messages per peer; in-flight tracking is at most
//!   `min(cwnd, peer window) + probes` packets in a ring keyed by packet number.
//! - ACK state: at most 32 ranges per peer. Peers: at most `max_peers`, idle ones are evicted.
//!
//! # Wire format (version 2)
//!
//! Integers are big-endian. Every datagram starts with:
//!
//! | offset | bytes | field                                                          |
//! |--------|-------|----------------------------------------------------------------|
//! | 0      | 1     | version, `2`                                                   |
//! | 1      | 1     | type (low nibble): `1` DATA, `2` ACK; flags (high nibble): `0x10` ACK_NOW (DATA only), others 0 |
//! | 2      | 8     | source epoch (non-zero)                                        |
//! | 10     | 8     | destination epoch (0 = not known yet)                          |
//!
//! and ends with a 4-byte trailer: the CRC32C (Castagnoli) of every byte before it, big-endian.
//!
//! DATA (48-byte header, the payload, the trailer: [`HEADER_MAX`] = 52 bytes of overhead):
//!
//! | offset | bytes | field                                                          |
//! |--------|-------|----------------------------------------------------------------|
//! | 18     | 8     | packet number                                                  |
//! | 26     | 8     | message id                                                     |
//! | 34     | 2     | floor delta: `message id − floor`, `< 32768` and `<= message id` |
//! | 36     | 4     | message length `L` in bytes                                    |
//! | 40     | 4     | segment size `S` (>= 1): payload bytes of every segment but the last |
//! | 44     | 4     | segment index `i < max(1, ⌈L / S⌉)`                            |
//! | 48     | n     | payload: exactly `min(S, L − i·S)` bytes (up to the trailer)   |
//! | 48+n   | 4     | CRC32C                                                         |
//!
//! ACK (32 + 16·k + 9·r bytes):
//!
//! | offset | bytes | field                                                          |
//! |--------|-------|----------------------------------------------------------------|
//! | 18     | 4     | ack delay in µs (time since the largest acknowledged packet arrived) |
//! | 22     | 4     | receive window in datagrams                                    |
//! | 26     | 1     | range count `k`, 0..=32 (0 = epoch announcement only)          |
//! | 27     | 16·k  | ranges, most recent first: end pn (8), start pn (8); `start <= end`, each range below the previous with a gap of at least one pn |
//! | 27+16k | 1     | refusal count `r`, 0..=32                                      |
//! | 28+16k | 9·r   | refusals: pn (8), reason (1): `1` busy (retry later), `2` final (fail the message); a refused pn is never inside a range |
//! | end−4  | 4     | CRC32C                                                         |
//!
//! An ACK never exceeds `max_segment_payload + HEADER_MAX` bytes (fewer ranges are sent when
//! the segment size is tiny). Decoding checks the checksum, then every length and invariant, and
//! rejects trailing bytes after an ACK; it never panics.
//!
//! # Not (yet) done
//!
//! - ACKs are not piggybacked on DATA (one ACK per 8 DATA datagrams at full speed).
//! - Spurious-retransmission detection / undo of congestion reductions.
//! - The receive window is a constant; it is not shrunk when reassembly memory runs low
//!   (segments that do not fit are refused and retried instead).
//! - Exponential PTO backoff can, under long streaks of lost probes and ACKs, leave a partial
//!   message without a new segment for `partial_timeout`; the send then fails with
//!   [`FailReason::Refused`] (safe, never a false `Sent`). Keep `partial_timeout` above
//!   `peer_timeout` (the defaults are 30 s and 10 s).
//! - Memory between proven peers is first come, first served: attackers with many addresses
//!   that receive our datagrams can together hold reassembly memory, but only as much as
//!   (at most four times) the data they sent and keep sending (a segment per message every
//!   `partial_timeout`).

mod endpoint;
mod recovery;
mod recv;
pub mod wire;

pub use self::endpoint::{
    Payload, datagram_truesize, path_segment_payload, LOOPBACK_SEGMENT_PAYLOAD, receive_window_for_socket_buffer, SendOptions,
    Config, Endpoint, Event, FailReason, MessageId, RudpError, Stats, PACKET_THRESHOLD,
    LOSS_RUN_CONGESTION, PERSISTENT_CONGESTION_PTOS, PROBES_PER_PTO, PROGRESS_FRACTION,
    PROGRESS_INTERVAL, PROGRESS_MAX_STEP, SEND_QUANTUM,
};
pub use self::recovery::{queue_delay_threshold, Cubic, Pacer, CUBIC_BETA, CUBIC_C, RttEstimator, GRANULARITY, HYSTART_MIN_SAMPLES, MIN_WINDOW, PACING_BURST, PACING_MIN_BURST_TIME};
pub use self::wire::{CHECKSUM_LEN, HEADER_MAX, MAX_ACK_RANGES, MESSAGE_SPAN};
