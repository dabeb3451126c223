//! The reliable-UDP [`Endpoint`]: per-peer connections, sending, receiving, timers.
//!
//! See the [module docs](super) for the protocol, the wire format and the call order. This
//! module holds the endpoint itself, its public types and the API a driver calls; the per-peer
//! machinery is split by concern:
//!
//! - `mod.rs`: [`Endpoint`] (peer table, round-robin of peers with something to send, the public
//!   driving API), [`MessageId`], [`FailReason`], [`RudpError`], [`Event`] and the protocol
//!   constants.
//! - `config.rs`: [`Config`] and [`Stats`].
//! - `peer.rs`: the per-peer connection state (`Peer`), epochs and restarts, and `Cx`, the
//!   endpoint-wide state a peer updates.
//! - `payload.rs`: [`Payload`], the bytes of an outgoing message (shared, never copied).
//! - `send.rs`: outgoing messages and sent packets; choosing the next segment (retransmissions
//!   first, then new segments in turn), windows and pacing, writing DATA and ACK datagrams.
//! - `ack.rs`: an ACK arrives: acknowledged packets and messages, refusals, RTT samples, loss
//!   detection.
//! - `receive.rs`: a DATA datagram arrives: reassembly, delivery, refusals, ACK scheduling.
//! - `timers.rs`: loss and probe timeouts, partial-message and peer timeouts.
//! - `hasher.rs`: the deterministic hasher of the peer tables.
//! - `tests.rs`: unit tests (limits, windows, probe timeout backoff, error codes).

use std::collections::{HashMap, VecDeque};
use std::fmt::Debug;
use std::hash::Hash;
use std::time::{Duration, Instant};

use super::wire::{self, Datagram, ACK_FIXED_LEN, ACK_RANGE_LEN, HEADER_MAX, MAX_ACK_RANGES};

mod ack;
mod config;
mod hasher;
mod payload;
mod peer;
mod receive;
mod send;
#[cfg(test)]
mod tests;
mod timers;

pub use self::config::{datagram_truesize, path_segment_payload, LOOPBACK_SEGMENT_PAYLOAD, receive_window_for_socket_buffer, Config, Stats};
use self::hasher::FxBuild;
pub use self::payload::Payload;
use self::peer::{Cx, EpochCheck, Peer};
use self::send::OutMsg;

/// Options of [`Endpoint::send_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendOptions {
    /// Report acknowledged bytes as [`Event::Progress`] events.
    pub progress: bool,
    /// Payload bytes per segment of this message (default: `Config::max_segment_payload`).
    /// The receiver learns it from every DATA; it advertises a smaller window (in datagrams)
    /// to a peer once that peer's datagrams are larger than its own `max_segment_payload`.
    pub segment_payload: Option<usize>,
}

/// Packet-reordering threshold of loss detection (RFC 9002 kPacketThreshold).
pub const PACKET_THRESHOLD: u64 = 3;
/// Consecutive probe timeouts after which the congestion window collapses (persistent
/// congestion, approximating RFC 9002 §7.6).
pub const PERSISTENT_CONGESTION_PTOS: u32 = 3;
/// Segments sent from one message before the next message with unsent data gets a turn.
pub const SEND_QUANTUM: u32 = 16;
/// Probe datagrams sent when the probe timeout fires (RFC 9002 §6.2.4).
pub const PROBES_PER_PTO: u8 = 2;
/// Loss differentiation: the congestion window is reduced only when at least this many
/// consecutive packet numbers are declared lost. A full queue (a socket buffer, a drop-tail
/// router) drops runs of packets, and a GSO burst is dropped as a unit; isolated losses are taken
/// as noise on the path and only retransmitted — unless the RTT shows our datagrams queueing
/// (the smoothed RTT above the minimum by [`queue_delay_threshold`](super::queue_delay_threshold)
/// while the congestion window is the limit): a paced sender meets a full drop-tail queue one
/// datagram at a time. Congestion that drops isolated packets also shows as persistent congestion (consecutive
/// probe timeouts), which collapses the window. Counted in `Stats::isolated_losses`.
pub const LOSS_RUN_CONGESTION: u64 = 4;


/// A message sent with progress reporting ([`Endpoint::send_with_progress`]) is reported at most
/// once per this fraction of its length acknowledged (or per [`PROGRESS_MAX_STEP`] bytes,
/// whichever is less)...
pub const PROGRESS_FRACTION: u64 = 64;
/// ... at most once per this many bytes acknowledged for large messages...
pub const PROGRESS_MAX_STEP: u64 = 256 << 10;
/// ... and at most once per this interval (the final report, of the whole length, excepted).
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(4);

/// Identifies one `send` across the whole endpoint (unique, increasing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub u64);

/// Why an outgoing message failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailReason {
    /// No acknowledgement progress for `peer_timeout` while it was outstanding.
    PeerUnreachable,
    /// [`Endpoint::forget_peer`] was called.
    Forgotten,
    /// The peer refused the message for good: it is longer than the peer accepts (its
    /// `max_message_size` or reassembly limits), or the peer gave up reassembling it after its
    /// `partial_timeout`.
    Refused,
    /// For `peer_timeout` the peer answered only that it had no reassembly memory for the
    /// message (busy refusals) and acknowledged nothing new.
    Busy,
}

impl FailReason {
    /// Stable error code for the JavaScript side.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            FailReason::PeerUnreachable => "ERR_DECCOM_PEER_UNREACHABLE",
            FailReason::Forgotten => "ERR_DECCOM_PEER_FORGOTTEN",
            FailReason::Refused | FailReason::Busy => "ERR_DECCOM_MESSAGE_REFUSED",
        }
    }
}

/// Errors of [`Endpoint::send`].
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RudpError {
    /// The message is longer than `max_message_size`.
    #[error("message of {len} bytes exceeds the limit of {max} bytes; split it or raise max_message_size")]
    MessageTooLarge {
        /// Message length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The peer already has `max_outgoing_per_peer` messages queued or in flight.
    #[error("send queue to this peer is full ({limit} messages); wait for Sent/Failed events before sending more")]
    SendQueueFull {
        /// The limit.
        limit: usize,
    },
    /// The peer table is full of peers with outgoing or partial messages.
    #[error(
        "peer table full ({limit} peers with pending messages); retry later or raise max_peers"
    )]
    PeerTableFull {
        /// The limit.
        limit: usize,
    },
}

impl RudpError {
    /// The stable error code, e.g. `"ERR_DECCOM_MESSAGE_TOO_LARGE"`.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            RudpError::MessageTooLarge { .. } => "ERR_DECCOM_MESSAGE_TOO_LARGE",
            RudpError::SendQueueFull { .. } => "ERR_DECCOM_SEND_QUEUE_FULL",
            RudpError::PeerTableFull { .. } => "ERR_DECCOM_PEER_TABLE_FULL",
        }
    }
}

/// Output events, drained with [`Endpoint::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<P> {
    /// A complete message arrived (exactly once per message).
    Delivered {
        /// Sender.
        peer: P,
        /// The message bytes.
        message: Vec<u8>,
    },
    /// Every segment of a message was acknowledged.
    Sent {
        /// Destination.
        peer: P,
        /// What `send` returned.
        id: MessageId,
    },
    /// Bytes of a message sent with [`Endpoint::send_with_progress`] acknowledged so far:
    /// increasing from report to report, rate-limited (see [`PROGRESS_FRACTION`],
    /// [`PROGRESS_MAX_STEP`], [`PROGRESS_INTERVAL`]); the last one, just before
    /// [`Event::Sent`], reports the whole length. A message that fails or is cancelled gets
    /// no final report.
    Progress {
        /// Destination.
        peer: P,
        /// What `send_with_progress` returned.
        id: MessageId,
        /// Bytes of the message acknowledged by the peer.
        acked_bytes: u64,
    },
    /// A message will not be delivered.
    Failed {
        /// Destination.
        peer: P,
        /// What `send` returned.
        id: MessageId,
        /// Why.
        reason: FailReason,
    },
}

/// A sans-IO reliable-UDP endpoint talking to many peers (see the [module docs](super)).
pub struct Endpoint<P>
where
    P: Copy + Eq + Hash + Debug,
{
    config: Config,
    peers: HashMap<P, Peer, FxBuild>,
    active: VecDeque<P>,
    events: VecDeque<Event<P>>,
    stats: Stats,
    reassembly_total: usize,
    unproven_total: usize,
    prefault: VecDeque<(usize, usize)>,
    rng: u64,
    next_message_id: u64,
    max_ack_ranges: usize,
}

impl<P> Debug for Endpoint<P>
where
    P: Copy + Eq + Hash + Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("peers", &self.peers.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<P> Endpoint<P>
where
    P: Copy + Eq + Hash + Debug,
{
    /// A new endpoint. `seed` drives the epochs (use a random seed in production: two
    /// endpoints with the same seed draw the same epochs). Out-of-range config values are
    /// clamped (`max_segment_payload >= 1`, `max_message_size <= 4 GiB − 1`,
    /// `receive_window >= 1`, `ack_every` in 1..=16, `min_rto <= max_rto`, `max_peers >= 1`).
    #[must_use]
    pub fn new(mut config: Config, now: Instant, seed: u64) -> Self {
        let _ = now;
        config.max_segment_payload = config
            .max_segment_payload
            .clamp(1, u32::MAX as usize - HEADER_MAX);
        config.max_message_size = config.max_message_size.min(u64::from(u32::MAX));
        config.receive_window = config.receive_window.max(1);
        config.ack_every = config.ack_every.clamp(1, 16);
        config.max_rto = config.max_rto.max(config.min_rto);
        config.max_peers = config.max_peers.max(1);
        config.max_outgoing_per_peer = config.max_outgoing_per_peer.max(1);
        let room = config.max_segment_payload + HEADER_MAX - ACK_FIXED_LEN;
        let max_ack_ranges = (room / ACK_RANGE_LEN).clamp(1, MAX_ACK_RANGES);
        Endpoint {
            config,
            peers: HashMap::default(),
            active: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            reassembly_total: 0,
            unproven_total: 0,
            prefault: VecDeque::new(),
            rng: seed,
            next_message_id: 0,
            max_ack_ranges,
        }
    }

    /// The configuration in use (after clamping).
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn next_epoch(&mut self) -> u64 {
        loop {
            // splitmix64
            self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            if z != 0 {
                return z;
            }
        }
    }

    /// Makes room for and creates the state of `peer`. False if the table is full of busy peers.
    fn ensure_peer(&mut self, now: Instant, peer: P) -> bool {
        if self.peers.contains_key(&peer) {
            return true;
        }
        if self.peers.len() >= self.config.max_peers {
            let victim = self
                .peers
                .iter()
                .filter(|(_, p)| p.out.is_empty() && p.partials.is_empty())
                .min_by_key(|(_, p)| p.last_seen)
                .map(|(k, _)| *k);
            let Some(victim) = victim else {
                return false;
            };
            self.peers.remove(&victim);
            self.stats.peers_evicted += 1;
        }
        let epoch = self.next_epoch();
        self.peers.insert(peer, Peer::new(&self.config, now, epoch));
        true
    }

    fn activate(active: &mut VecDeque<P>, peer: P, p: &mut Peer) {
        if !p.in_active {
            p.in_active = true;
            active.push_back(peer);
        }
    }

    /// Queues `message` for `peer` and returns its id; an [`Event::Sent`] or
    /// [`Event::Failed`] with this id follows. The bytes are moved in, not copied.
    ///
    /// # Errors
    ///
    /// - [`RudpError::MessageTooLarge`] (`ERR_DECCOM_MESSAGE_TOO_LARGE`): longer than
    ///   `max_message_size`;
    /// - [`RudpError::SendQueueFull`] (`ERR_DECCOM_SEND_QUEUE_FULL`): the peer has
    ///   `max_outgoing_per_peer` messages outstanding;
    /// - [`RudpError::PeerTableFull`] (`ERR_DECCOM_PEER_TABLE_FULL`): a new peer and no room.
    pub fn send(
        &mut self,
        now: Instant,
        peer: P,
        message: impl Into<Payload>,
    ) -> Result<MessageId, RudpError> {
        self.queue(now, peer, message.into(), SendOptions::default())
    }

    /// [`Endpoint::send`], and [`Event::Progress`] events report the bytes acknowledged as they
    /// are (only messages sent this way pay for progress reporting).
    ///
    /// # Errors
    ///
    /// As [`Endpoint::send`].
    pub fn send_with_progress(
        &mut self,
        now: Instant,
        peer: P,
        message: impl Into<Payload>,
    ) -> Result<MessageId, RudpError> {
        self.queue(
            now,
            peer,
            message.into(),
            SendOptions {
                progress: true,
                segment_payload: None,
            },
        )
    }

    /// [`Endpoint::send`] with [`SendOptions`]: progress reports, and the segment size of this
    /// message (e.g. [`path_segment_payload`] for the peer's address).
    ///
    /// # Errors
    ///
    /// As [`Endpoint::send`].
    pub fn send_with(
        &mut self,
        now: Instant,
        peer: P,
        message: impl Into<Payload>,
        opts: SendOptions,
    ) -> Result<MessageId, RudpError> {
        self.queue(now, peer, message.into(), opts)
    }

    /// Gives up the outgoing message `id` to `peer`: its bytes are released now, none of its
    /// segments is sent (or retransmitted) again, and no [`Event::Sent`] or [`Event::Failed`]
    /// follows for it. Other messages to the peer are not affected. Returns false (and does
    /// nothing) when `id` is not outstanding to `peer` (unknown, finished or cancelled before).
    ///
    /// The receiver frees what it reassembled of the message when it learns that the sender
    /// gave it up: the floor carried by every DATA moves past the message once every older
    /// message to that peer is finished, so the next DATA sent to it tells it (counted there as
    /// `partials_abandoned`). If nothing more is sent to it, its `partial_timeout` frees it.
    pub fn cancel(&mut self, now: Instant, peer: P, id: MessageId) -> bool {
        let Some(p) = self.peers.get_mut(&peer) else {
            return false;
        };
        if !p.cancel(id) {
            return false;
        }
        p.last_seen = now;
        self.stats.messages_cancelled += 1;
        Self::activate(&mut self.active, peer, p);
        true
    }

    fn queue(
        &mut self,
        now: Instant,
        peer: P,
        message: Payload,
        opts: SendOptions,
    ) -> Result<MessageId, RudpError> {
        let len = message.len() as u64;
        if len > self.config.max_message_size {
            return Err(RudpError::MessageTooLarge {
                len,
                max: self.config.max_message_size,
            });
        }
        if !self.ensure_peer(now, peer) {
            return Err(RudpError::PeerTableFull {
                limit: self.config.max_peers,
            });
        }
        let limit = self.config.max_outgoing_per_peer;
        let seg_size = opts
            .segment_payload
            .unwrap_or(self.config.max_segment_payload)
            .clamp(1, u32::MAX as usize - HEADER_MAX);
        let seg_size = u32::try_from(seg_size).unwrap_or(u32::MAX);
        let Some(p) = self.peers.get_mut(&peer) else {
            unreachable!("ensure_peer created it")
        };
        if p.out.len() >= limit {
            return Err(RudpError::SendQueueFull { limit });
        }
        let id = MessageId(self.next_message_id);
        self.next_message_id += 1;
        let wire_id = p.next_wire_id;
        p.next_wire_id += 1;
        if p.out.is_empty() {
            p.last_progress = now;
        }
        p.out.insert(wire_id, OutMsg::new(id, message, seg_size, opts.progress));
        p.refresh_floor();
        p.pending.push_back(wire_id);
        p.last_seen = now;
        self.stats.messages_queued += 1;
        Self::activate(&mut self.active, peer, p);
        Ok(id)
    }

    /// A datagram of this protocol arrived from `peer`. Never panics; malformed input is
    /// counted in [`Stats`] and dropped.
    pub fn handle_datagram(&mut self, now: Instant, peer: P, datagram: &[u8]) {
        self.stats.datagrams_received += 1;
        self.stats.bytes_received += datagram.len() as u64;
        let decoded = match wire::decode(datagram) {
            Ok(d) => d,
            Err(e) => {
                self.stats.dropped_malformed += 1;
                if e == wire::DecodeError::Checksum {
                    self.stats.dropped_checksum += 1;
                }
                return;
            }
        };
        let (src_epoch, dst_epoch, is_data) = match &decoded {
            Datagram::Data(h, _) => (h.src_epoch, h.dst_epoch, true),
            Datagram::Ack(a) => (a.src_epoch, a.dst_epoch, false),
        };
        if let Datagram::Data(..) = decoded {
            if !self.ensure_peer(now, peer) {
                self.stats.dropped_peer_table_full += 1;
                return;
            }
        }
        let (peers, active, mut cx) = self.split();
        let Some(p) = peers.get_mut(&peer) else {
            // An ACK from a peer we hold no state for: we forgot it, nothing to acknowledge.
            cx.stats.dropped_stale_epoch += 1;
            return;
        };
        match p.check_epoch(src_epoch, dst_epoch, is_data) {
            EpochCheck::Same => {}
            EpochCheck::Retired => {
                cx.stats.dropped_stale_epoch += 1;
                return;
            }
            EpochCheck::Unproven => {
                // Another epoch that does not echo ours: a forgery, or a restarted peer that
                // does not know our epoch yet. Tell the sender of DATA our epoch (a bare ACK,
                // smaller than what it sent); change nothing.
                cx.stats.dropped_unproven_epoch += 1;
                if is_data {
                    p.announce_to = Some(src_epoch);
                    Self::activate(active, peer, p);
                }
                return;
            }
            EpochCheck::Restarted => {
                p.on_peer_restart(now, src_epoch, &mut cx);
                cx.stats.peer_resets += 1;
            }
        }
        if dst_epoch == p.epoch {
            p.mark_proven(&mut cx);
        }
        p.last_seen = now;
        match decoded {
            Datagram::Data(h, payload) => p.on_data(now, peer, &h, payload, &mut cx),
            Datagram::Ack(a) => {
                if a.dst_epoch != p.epoch {
                    cx.stats.dropped_stale_epoch += 1;
                    return;
                }
                cx.stats.acks_received += 1;
                p.on_ack(now, peer, &a, &mut cx);
            }
        }
        Self::activate(active, peer, p);
    }

    /// Runs the timers that are due at `now` (loss detection, probe timeout, delayed ACK,
    /// pacing release, partial-message and peer timeouts).
    pub fn handle_timeout(&mut self, now: Instant) {
        let (peers, active, mut cx) = self.split();
        for (&peer, p) in peers.iter_mut() {
            if p.next_timeout(cx.config).is_some_and(|t| t <= now) {
                p.on_timeout(now, peer, &mut cx);
            }
            if p.wants_transmit(now, cx.config.ack_every) {
                Self::activate(active, peer, p);
            }
        }
    }

    /// Writes the next datagram into `out` (cleared first) and returns its destination, or
    /// `None` when nothing may be sent now; [`Endpoint::poll_timeout`] then says when to look
    /// again. Peers take turns datagram by datagram.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) -> Option<P> {
        out.clear();
        self.poll_transmit_append(now, out)
    }

    /// [`Endpoint::poll_transmit`], except that the datagram is appended to `out` after what it
    /// holds (which is left as is): a driver can put its own header in front and seal or send
    /// the datagram where it lies. `out` is unchanged when `None` is returned.
    pub fn poll_transmit_append(&mut self, now: Instant, out: &mut Vec<u8>) -> Option<P> {
        let start = out.len();
        let (peers, active, mut cx) = self.split();
        while let Some(peer) = active.pop_front() {
            let Some(p) = peers.get_mut(&peer) else {
                continue;
            };
            if p.poll_transmit(now, out, &mut cx) {
                active.push_back(peer);
                cx.stats.datagrams_sent += 1;
                cx.stats.bytes_sent += (out.len() - start) as u64;
                return Some(peer);
            }
            p.in_active = false;
        }
        None
    }

    /// Earliest instant at which [`Endpoint::handle_timeout`] has work. `None` = idle.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers
            .values()
            .filter_map(|p| p.next_timeout(&self.config))
            .min()
    }

    /// The next output event.
    pub fn poll_event(&mut self) -> Option<Event<P>> {
        self.events.pop_front()
    }

    /// The next pre-fault hint: `(address, length)` of reassembly memory that is charged and
    /// about to be written (reserved ahead of the data of a large message, never more than the
    /// data that arrived). A driver may ask the OS to make these pages resident off its own
    /// thread, so that the writer does not take the page faults; it must never write to them,
    /// and the memory may have been freed by then (the endpoint owns it). At most 64 are
    /// queued; ignoring them is harmless.
    pub fn poll_prefault(&mut self) -> Option<(usize, usize)> {
        self.prefault.pop_front()
    }

    /// Counters and gauges.
    #[must_use]
    pub fn stats(&self) -> Stats {
        let mut s = self.stats;
        s.peers = self.peers.len() as u64;
        s.in_flight = self.peers.values().map(|p| u64::from(p.in_flight)).sum();
        s.cwnd = self.peers.values().map(|p| u64::from(p.cc.window())).sum();
        s.reassembly_bytes = self.reassembly_total as u64;
        s.reassembly_unproven_bytes = self.unproven_total as u64;
        s
    }

    /// Drops all state of `peer`; its outgoing messages fail with [`FailReason::Forgotten`].
    /// If the peer talks to us again it gets a new connection (a new epoch): messages it had
    /// not finished sending start over, and a message delivered before whose acknowledgement
    /// was lost may be delivered again.
    pub fn forget_peer(&mut self, now: Instant, peer: P) {
        let _ = now;
        let Some(mut p) = self.peers.remove(&peer) else {
            return;
        };
        let (_, active, mut cx) = self.split();
        p.fail_all(peer, FailReason::Forgotten, &mut cx);
        p.drop_partials(&mut cx);
        active.retain(|a| *a != peer);
    }

    /// The peer table, the round-robin queue of peers with something to send, and the shared
    /// context every peer updates (configuration, counters, events, reassembly budget).
    fn split(&mut self) -> (&mut HashMap<P, Peer, FxBuild>, &mut VecDeque<P>, Cx<'_, P>) {
        let Endpoint {
            config,
            peers,
            active,
            events,
            stats,
            reassembly_total,
            unproven_total,
            prefault,
            max_ack_ranges,
            ..
        } = self;
        let cx = Cx {
            config,
            stats,
            events,
            reassembly_total,
            unproven_total,
            prefault,
            max_ack_ranges: *max_ack_ranges,
        };
        (peers, active, cx)
    }

    /// Bytes charged for partially received messages over all peers.
    #[must_use]
    pub fn reassembly_bytes(&self) -> usize {
        self.reassembly_total
    }

    /// Packets in flight to `peer` (0 for an unknown peer).
    #[must_use]
    pub fn in_flight(&self, peer: P) -> u32 {
        self.peers.get(&peer).map_or(0, |p| p.in_flight)
    }

    /// Congestion window towards `peer` in datagrams, if known.
    #[must_use]
    pub fn congestion_window(&self, peer: P) -> Option<u32> {
        self.peers.get(&peer).map(|p| p.cc.window())
    }

    /// Smoothed RTT towards `peer`, if known.
    #[must_use]
    pub fn rtt(&self, peer: P) -> Option<Duration> {
        self.peers.get(&peer).map(|p| p.rtt.smoothed())
    }
}
