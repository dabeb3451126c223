//! The reliable-UDP [`Endpoint`]: per-peer connections, sending, receiving, timers.
//!
//! See the [module docs](super) for the protocol, the wire format and the call order.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt::Debug;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::time::{Duration, Instant};

use super::recovery::{NewReno, Pacer, RttEstimator};
use super::recv::{DeliveredSet, Partial, PnInsert, PnRanges, SegmentResult};
use super::wire::{
    self, segment_count, segment_len, AckFrame, DataHeader, Datagram, ACK_FIXED_LEN, ACK_RANGE_LEN,
    HEADER_MAX, MAX_ACK_RANGES, MAX_REFUSALS, MESSAGE_SPAN, REFUSAL_LEN, REFUSE_BUSY, REFUSE_FINAL,
};

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
/// as noise on the path and only retransmitted. Real congestion that drops isolated packets
/// still shows as persistent congestion (consecutive probe timeouts), which collapses the window,
/// and as runs once the queue overflows. Counted in `Stats::isolated_losses`.
pub const LOSS_RUN_CONGESTION: u64 = 4;
/// Previous epochs of a peer remembered to drop their late datagrams.
const RETIRED_EPOCHS: usize = 4;
/// Refusals a receiver queues for its next ACKs (more are dropped silently: they look lost).
const MAX_PENDING_REFUSALS: usize = 64;
/// Partial messages given up (timed out) that a receiver remembers, to refuse their segments.
const MAX_ABANDONED: usize = 64;
/// Longest wait between admission retries of a message the receiver had no room for.
const MAX_ADMISSION_RETRY: Duration = Duration::from_secs(1);

/// Configuration of an [`Endpoint`]. Every limit has a default; see each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Bytes of message data per datagram (default 1200). A datagram is at most
    /// `max_segment_payload + HEADER_MAX` ([`super::HEADER_MAX`] = 48) bytes long.
    pub max_segment_payload: usize,
    /// Largest message accepted by `send` and by the receiver (default 256 MiB; at most
    /// 4 GiB − 1, larger values are clamped).
    pub max_message_size: u64,
    /// Bytes of partially received messages per peer (default 320 MiB).
    pub max_reassembly_per_peer: usize,
    /// Bytes of partially received messages across all peers (default 1 GiB).
    pub max_reassembly_total: usize,
    /// Queued plus in-flight outgoing messages per peer (default 1024).
    pub max_outgoing_per_peer: usize,
    /// RTT assumed before the first sample (default 100 ms); the first PTO is 3× this.
    pub initial_rtt: Duration,
    /// Floor of the retransmission (probe) timeout (default 20 ms). Low because on loopback
    /// and in data centres the RTT is microseconds and a tail loss (a full socket buffer) is
    /// only repaired by this timer: RFC 6298's 1 s floor would stall such a transfer for a
    /// second. The default is 2 ms: on a lossy fast link every tail loss waits for this timer,
    /// and 20 ms cost a loopback transfer with 5 % loss most of its time. The PTO formula (srtt +
    /// 4·rttvar + max_ack_delay) keeps the timer well above the RTT on slower paths.
    pub min_rto: Duration,
    /// Ceiling of the backed-off probe timeout (default 10 s).
    pub max_rto: Duration,
    /// No acknowledgement progress for this long while messages to a peer are outstanding →
    /// all of them fail with [`FailReason::PeerUnreachable`] (default 10 s).
    pub peer_timeout: Duration,
    /// A partially received message without a new segment for this long is dropped
    /// (default 30 s).
    pub partial_timeout: Duration,
    /// Initial congestion window in datagrams (default 32).
    pub initial_window: u32,
    /// Largest congestion window in datagrams (default 65536).
    pub max_window: u32,
    /// Datagrams a peer may have in flight to us, advertised in every ACK (default 65536).
    pub receive_window: u32,
    /// Longest an acknowledgement is delayed (default 2 ms). Peers are assumed to use the same
    /// value (it enters the probe timeout).
    pub max_ack_delay: Duration,
    /// Acknowledge after this many unacknowledged datagrams (default 8, clamped to 1..=16).
    pub ack_every: u32,
    /// Most peers with state (default 4096). When full, the least recently active peer without
    /// outgoing messages or partial messages is evicted; if there is none, new peers are
    /// refused.
    pub max_peers: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_segment_payload: 1200,
            max_message_size: 256 << 20,
            max_reassembly_per_peer: 320 << 20,
            max_reassembly_total: 1 << 30,
            max_outgoing_per_peer: 1024,
            initial_rtt: Duration::from_millis(100),
            min_rto: Duration::from_millis(2),
            max_rto: Duration::from_secs(10),
            peer_timeout: Duration::from_secs(10),
            partial_timeout: Duration::from_secs(30),
            initial_window: 32,
            max_window: 65_536,
            receive_window: 65_536,
            max_ack_delay: Duration::from_millis(2),
            ack_every: 8,
            max_peers: 4096,
        }
    }
}

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
}

impl FailReason {
    /// Stable error code for the JavaScript side.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            FailReason::PeerUnreachable => "ERR_DECCOM_PEER_UNREACHABLE",
            FailReason::Forgotten => "ERR_DECCOM_PEER_FORGOTTEN",
            FailReason::Refused => "ERR_DECCOM_MESSAGE_REFUSED",
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

/// Counters (monotonic unless noted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams produced by `poll_transmit`.
    pub datagrams_sent: u64,
    /// Datagrams passed to `handle_datagram`.
    pub datagrams_received: u64,
    /// Bytes produced by `poll_transmit`.
    pub bytes_sent: u64,
    /// Bytes passed to `handle_datagram`.
    pub bytes_received: u64,
    /// DATA datagrams sent (first transmissions and retransmissions).
    pub data_sent: u64,
    /// DATA datagrams that carried a segment sent before (after loss or as a probe).
    pub retransmits: u64,
    /// ACK datagrams sent.
    pub acks_sent: u64,
    /// ACK datagrams accepted.
    pub acks_received: u64,
    /// Messages accepted by `send`.
    pub messages_queued: u64,
    /// Messages completely acknowledged (`Event::Sent`).
    pub messages_sent: u64,
    /// Messages delivered (`Event::Delivered`).
    pub messages_delivered: u64,
    /// Messages failed (`Event::Failed`).
    pub messages_failed: u64,
    /// Segments received again (already stored or delivered).
    pub duplicates: u64,
    /// Datagrams that did not decode or were inconsistent.
    pub dropped_malformed: u64,
    /// Messages refused because they can never fit (`max_message_size`, reassembly limits).
    pub dropped_oversized_announcement: u64,
    /// Segments of new messages refused because reassembly memory was full at the time.
    pub dropped_reassembly_full: u64,
    /// Datagrams addressed to or sent by a previous incarnation (epoch).
    pub dropped_stale_epoch: u64,
    /// Datagrams from new peers refused because the peer table was full.
    pub dropped_peer_table_full: u64,
    /// Partial messages dropped after `partial_timeout`.
    pub partial_timeouts: u64,
    /// Partial messages dropped because the sender gave them up.
    pub partials_abandoned: u64,
    /// Packets declared lost.
    pub packets_lost: u64,
    /// Probe timeouts that fired.
    pub pto_expirations: u64,
    /// Congestion window reductions.
    pub congestion_events: u64,
    /// Slow starts ended by a growing RTT (HyStart) rather than by a loss.
    pub slow_start_exits: u64,
    /// Loss detections with no run of [`LOSS_RUN_CONGESTION`] consecutive losses (no reduction).
    pub isolated_losses: u64,
    /// Peers seen restarting (new epoch): their connection state was reset.
    pub peer_resets: u64,
    /// Idle peers evicted from a full table.
    pub peers_evicted: u64,
    /// Peers with state (gauge).
    pub peers: u64,
    /// Packets in flight over all peers (gauge).
    pub in_flight: u64,
    /// Bytes charged for partial messages (gauge).
    pub reassembly_bytes: u64,
    /// Latest smoothed RTT in microseconds (of the peer that last produced a sample).
    pub srtt_us: u64,
    /// Sum of the congestion windows of all peers, in datagrams (gauge).
    pub cwnd: u64,
}

/// Deterministic hasher (FxHash) so that iteration order, and with it every trace, depends
/// only on the inputs. Peer handles are chosen by the driver, the table is bounded.
#[derive(Default, Clone, Copy)]
struct FxHasher {
    hash: u64,
}

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.hash
    }
}

type FxBuild = BuildHasherDefault<FxHasher>;

/// The bytes of an outgoing message: an optional one-byte prefix, then a body that may be shared
/// with the caller (a JavaScript buffer, say), so that a large message is never copied to be sent.
/// The body must not change while the message is outstanding.
pub struct Payload {
    prefix: Option<u8>,
    body: Box<dyn AsRef<[u8]> + Send>,
}

impl Payload {
    /// `prefix` followed by `body`, without copying `body`.
    pub fn with_prefix(prefix: u8, body: impl AsRef<[u8]> + Send + 'static) -> Payload {
        Payload {
            prefix: Some(prefix),
            body: Box::new(body),
        }
    }

    /// Length in bytes, prefix included.
    #[must_use]
    pub fn len(&self) -> usize {
        usize::from(self.prefix.is_some()) + (*self.body).as_ref().len()
    }

    /// True when there are no bytes at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends bytes `start..start + len` of the message to `out`.
    fn copy_range(&self, start: usize, len: usize, out: &mut Vec<u8>) {
        let body = (*self.body).as_ref();
        match self.prefix {
            None => out.extend_from_slice(&body[start..start + len]),
            Some(p) if start == 0 => {
                if len > 0 {
                    out.push(p);
                    out.extend_from_slice(&body[..len - 1]);
                }
            }
            Some(_) => out.extend_from_slice(&body[start - 1..start - 1 + len]),
        }
    }
}

impl From<Vec<u8>> for Payload {
    fn from(v: Vec<u8>) -> Payload {
        Payload {
            prefix: None,
            body: Box::new(v),
        }
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Payload({} bytes)", self.len())
    }
}

/// One message being sent.
#[derive(Debug)]
struct OutMsg {
    id: MessageId,
    data: Payload,
    seg_size: u32,
    segments: u32,
    /// Next segment never sent.
    next_new: u32,
    acked: u32,
    acked_bits: Vec<u64>,
    /// The receiver had no room for it: no new segments until one is acknowledged.
    waiting: bool,
    /// Refused segments held back while waiting (one is retried per admission retry).
    parked: Vec<u32>,
    retry_scheduled: bool,
    /// Admission retries so far (exponential backoff).
    retries: u32,
}

impl OutMsg {
    fn new(id: MessageId, data: Payload, seg_size: u32) -> Self {
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let segments = segment_count(len, seg_size);
        OutMsg {
            id,
            data,
            seg_size,
            segments,
            next_new: 0,
            acked: 0,
            acked_bits: vec![0; segments.div_ceil(64) as usize],
            waiting: false,
            parked: Vec::new(),
            retry_scheduled: false,
            retries: 0,
        }
    }

    fn len(&self) -> u32 {
        u32::try_from(self.data.len()).unwrap_or(u32::MAX)
    }

    fn is_acked(&self, seg: u32) -> bool {
        self.acked_bits[(seg / 64) as usize] & (1 << (seg % 64)) != 0
    }

    /// Marks `seg` acknowledged; returns whether the message is now complete.
    fn ack(&mut self, seg: u32) -> bool {
        let word = &mut self.acked_bits[(seg / 64) as usize];
        let mask = 1 << (seg % 64);
        if *word & mask == 0 {
            *word |= mask;
            self.acked += 1;
        }
        self.acked == self.segments
    }

    fn restart(&mut self) {
        self.next_new = 0;
        self.acked = 0;
        self.acked_bits.iter_mut().for_each(|w| *w = 0);
        self.waiting = false;
        self.parked.clear();
        self.retry_scheduled = false;
        self.retries = 0;
    }
}

/// A DATA packet sent and not yet acknowledged or declared lost.
#[derive(Debug, Clone, Copy)]
struct SentPacket {
    msg: u64,
    seg: u32,
    sent: Instant,
    /// 0 while in flight; once acknowledged, a packet number `> pn` such that every packet in
    /// between is acknowledged too (a union-find "next unacknowledged" pointer, so that ack
    /// ranges repeated in later ACKs are skipped in amortized O(1)).
    acked_next: u64,
}

/// Per-peer connection state.
#[derive(Debug)]
struct Peer {
    /// Our epoch for this connection (random, never 0).
    epoch: u64,
    peer_epoch: Option<u64>,
    retired: [u64; RETIRED_EPOCHS],
    retired_pos: usize,
    last_seen: Instant,
    in_active: bool,

    // --- sending ---
    next_pn: u64,
    sent: VecDeque<SentPacket>,
    /// Packet number of `sent[0]`; `sent_base + sent.len() == next_pn`.
    sent_base: u64,
    in_flight: u32,
    max_in_flight: u32,
    largest_acked: Option<u64>,
    /// Packet number of the last packet declared lost, and the length of the run of consecutive
    /// lost packet numbers it ends (loss differentiation, see [`LOSS_RUN_CONGESTION`]).
    last_lost_pn: u64,
    lost_run: u64,
    loss_time: Option<Instant>,
    last_ack_eliciting: Option<Instant>,
    pto_count: u32,
    probes: u8,
    rtt: RttEstimator,
    cc: NewReno,
    pacer: Pacer,
    pacing_until: Option<Instant>,
    peer_window: u32,
    out: BTreeMap<u64, OutMsg>,
    next_wire_id: u64,
    floor: u64,
    pending: VecDeque<u64>,
    rotation: VecDeque<u64>,
    quantum: u32,
    retx: VecDeque<(u64, u32)>,
    /// Admission retries of messages the receiver had no room for: `(retry at, msg)`.
    deferred: BTreeSet<(Instant, u64)>,
    last_progress: Instant,

    // --- receiving ---
    recv_pns: PnRanges,
    largest_recv_time: Instant,
    unacked: u32,
    ack_deadline: Option<Instant>,
    ack_now: bool,
    announce: bool,
    refusals: VecDeque<(u64, u8)>,
    abandoned: VecDeque<u64>,
    delivered: DeliveredSet,
    partials: HashMap<u64, Partial, FxBuild>,
    reassembly: usize,
    partial_check: Option<Instant>,
}

/// Result of checking a datagram's source epoch.
enum EpochCheck {
    Same,
    Retired,
    Restarted,
}

/// Endpoint-wide state that per-peer code needs next to the peer itself.
struct Cx<'a, P> {
    config: &'a Config,
    stats: &'a mut Stats,
    events: &'a mut VecDeque<Event<P>>,
    reassembly_total: &'a mut usize,
    max_ack_ranges: usize,
}

impl Peer {
    fn new(config: &Config, now: Instant, epoch: u64) -> Self {
        Peer {
            epoch,
            peer_epoch: None,
            retired: [0; RETIRED_EPOCHS],
            retired_pos: 0,
            last_seen: now,
            in_active: false,
            next_pn: 0,
            sent: VecDeque::new(),
            sent_base: 0,
            in_flight: 0,
            max_in_flight: 0,
            largest_acked: None,
            last_lost_pn: u64::MAX,
            lost_run: 0,
            loss_time: None,
            last_ack_eliciting: None,
            pto_count: 0,
            probes: 0,
            rtt: RttEstimator::new(config.initial_rtt),
            cc: NewReno::new(config.initial_window, config.max_window),
            pacer: Pacer::new(now),
            pacing_until: None,
            peer_window: config.initial_window.max(1),
            out: BTreeMap::new(),
            next_wire_id: 0,
            floor: 0,
            pending: VecDeque::new(),
            rotation: VecDeque::new(),
            quantum: 0,
            retx: VecDeque::new(),
            deferred: BTreeSet::new(),
            last_progress: now,
            recv_pns: PnRanges::default(),
            largest_recv_time: now,
            unacked: 0,
            ack_deadline: None,
            ack_now: false,
            announce: false,
            refusals: VecDeque::new(),
            abandoned: VecDeque::new(),
            delivered: DeliveredSet::default(),
            partials: HashMap::default(),
            reassembly: 0,
            partial_check: None,
        }
    }

    fn check_epoch(&mut self, src: u64) -> EpochCheck {
        match self.peer_epoch {
            Some(e) if e == src => EpochCheck::Same,
            _ if self.retired.contains(&src) => EpochCheck::Retired,
            None => {
                self.peer_epoch = Some(src);
                EpochCheck::Same
            }
            Some(_) => EpochCheck::Restarted,
        }
    }

    fn refresh_floor(&mut self) {
        self.floor = self.out.keys().next().copied().unwrap_or(self.next_wire_id);
    }

    fn clear_send_state(&mut self) {
        self.sent.clear();
        self.sent_base = self.next_pn;
        self.in_flight = 0;
        self.max_in_flight = 0;
        self.loss_time = None;
        self.pto_count = 0;
        self.probes = 0;
        self.retx.clear();
        self.deferred.clear();
        self.pacing_until = None;
        self.quantum = 0;
        self.rotation.clear();
        self.pending.clear();
    }

    fn drop_partials(&mut self, total: &mut usize) {
        *total -= self.reassembly;
        self.reassembly = 0;
        self.partials.clear();
        self.partial_check = None;
    }

    /// The peer restarted (new epoch): its receive state is gone, and every unfinished message
    /// to it starts over from its first segment (same `MessageId`, new packet numbers).
    fn on_peer_restart(
        &mut self,
        now: Instant,
        new_epoch: u64,
        config: &Config,
        total: &mut usize,
    ) {
        if let Some(old) = self.peer_epoch {
            self.retired[self.retired_pos] = old;
            self.retired_pos = (self.retired_pos + 1) % RETIRED_EPOCHS;
        }
        self.peer_epoch = Some(new_epoch);
        self.drop_partials(total);
        self.delivered = DeliveredSet::default();
        self.recv_pns = PnRanges::default();
        self.refusals.clear();
        self.abandoned.clear();
        self.unacked = 0;
        self.ack_deadline = None;
        self.ack_now = false;
        self.clear_send_state();
        self.largest_acked = None;
        self.cc.reset();
        self.peer_window = config.initial_window.max(1);
        for m in self.out.values_mut() {
            m.restart();
        }
        self.pending.extend(self.out.keys().copied());
        self.last_progress = now;
    }

    fn fail_all<P: Copy>(&mut self, peer: P, reason: FailReason, cx: &mut Cx<'_, P>) {
        for m in std::mem::take(&mut self.out).into_values() {
            cx.stats.messages_failed += 1;
            cx.events.push_back(Event::Failed {
                peer,
                id: m.id,
                reason,
            });
        }
        self.clear_send_state();
        self.refresh_floor();
    }

    fn ack_due(&self, now: Instant, ack_every: u32) -> bool {
        self.announce
            || !self.refusals.is_empty()
            || (self.unacked > 0
                && (self.ack_now
                    || self.unacked >= ack_every
                    || self.ack_deadline.is_some_and(|d| d <= now)))
    }

    fn purge_retx(&mut self) {
        while let Some(&(msg, seg)) = self.retx.front() {
            if self.out.get(&msg).is_some_and(|m| !m.is_acked(seg)) {
                break;
            }
            self.retx.pop_front();
        }
    }

    fn admit_pending(&mut self) {
        while let Some(&id) = self.pending.front() {
            if id - self.floor >= MESSAGE_SPAN {
                break;
            }
            self.pending.pop_front();
            if self.out.contains_key(&id) {
                self.rotation.push_back(id);
            }
        }
    }

    fn release_deferred(&mut self, now: Instant) {
        while let Some(&(at, msg)) = self.deferred.first() {
            if at > now {
                break;
            }
            self.deferred.pop_first();
            if let Some(m) = self.out.get_mut(&msg) {
                m.retry_scheduled = false;
                if m.waiting {
                    if let Some(seg) = m.parked.pop() {
                        self.retx.push_back((msg, seg));
                    }
                }
            }
        }
    }

    /// Whether a DATA datagram could be produced if the windows allowed it.
    fn has_data(&mut self, now: Instant) -> bool {
        self.release_deferred(now);
        self.purge_retx();
        self.admit_pending();
        !self.retx.is_empty() || !self.rotation.is_empty()
    }

    fn next_segment(&mut self, now: Instant) -> Option<(u64, u32, bool)> {
        self.release_deferred(now);
        self.purge_retx();
        if let Some((msg, seg)) = self.retx.pop_front() {
            return Some((msg, seg, true));
        }
        self.admit_pending();
        let mut gated = 0;
        while let Some(&msg) = self.rotation.front() {
            if gated >= self.rotation.len() {
                return None;
            }
            let Some(m) = self.out.get_mut(&msg) else {
                self.rotation.pop_front();
                self.quantum = 0;
                continue;
            };
            if m.next_new >= m.segments {
                self.rotation.pop_front();
                self.quantum = 0;
                continue;
            }
            if m.waiting {
                self.rotation.pop_front();
                self.rotation.push_back(msg);
                self.quantum = 0;
                gated += 1;
                continue;
            }
            let seg = m.next_new;
            m.next_new += 1;
            self.quantum += 1;
            if m.next_new >= m.segments {
                self.rotation.pop_front();
                self.quantum = 0;
            } else if self.quantum >= SEND_QUANTUM {
                self.rotation.pop_front();
                self.rotation.push_back(msg);
                self.quantum = 0;
            }
            return Some((msg, seg, false));
        }
        None
    }

    fn window(&self) -> u32 {
        self.cc.window().min(self.peer_window)
    }

    /// Appends the next datagram for this peer to `out`, if any may leave now.
    fn poll_transmit<P>(&mut self, now: Instant, out: &mut Vec<u8>, cx: &mut Cx<'_, P>) -> bool {
        if self.ack_due(now, cx.config.ack_every) {
            self.write_ack(now, out, cx);
            return true;
        }
        let probe = self.probes > 0;
        if !self.has_data(now) {
            self.probes = 0;
            return false;
        }
        if !probe {
            if self.in_flight >= self.window() {
                self.max_in_flight = self.max_in_flight.max(self.in_flight);
                return false;
            }
            if let Some(at) = self.pacer.delay(now, self.cc.window(), self.rtt.smoothed()) {
                self.pacing_until = Some(at);
                return false;
            }
        }
        let Some((msg, seg, retransmit)) = self.next_segment(now) else {
            return false;
        };
        let Some(m) = self.out.get(&msg) else {
            return false;
        };
        self.pacing_until = None;
        let more = !self.retx.is_empty() || !self.rotation.is_empty() || !self.pending.is_empty();
        let ack_now = probe || !more || self.in_flight + 1 >= self.window();
        let floor_delta = u16::try_from(msg - self.floor).unwrap_or(u16::MAX);
        debug_assert!(u64::from(floor_delta) < MESSAGE_SPAN);
        let header = DataHeader {
            src_epoch: self.epoch,
            dst_epoch: self.peer_epoch.unwrap_or(0),
            pn: self.next_pn,
            msg_id: msg,
            floor_delta,
            msg_len: m.len(),
            seg_size: m.seg_size,
            seg_index: seg,
            ack_now,
        };
        wire::encode_data_header(&header, out);
        let start = seg as usize * m.seg_size as usize;
        let len = segment_len(m.len(), m.seg_size, seg) as usize;
        m.data.copy_range(start, len, out);
        self.sent.push_back(SentPacket {
            msg,
            seg,
            sent: now,
            acked_next: 0,
        });
        self.next_pn += 1;
        self.in_flight += 1;
        self.max_in_flight = self.max_in_flight.max(self.in_flight);
        self.last_ack_eliciting = Some(now);
        if probe {
            self.probes -= 1;
        } else {
            self.pacer.on_sent(self.cc.window(), self.rtt.smoothed());
        }
        cx.stats.data_sent += 1;
        if retransmit {
            cx.stats.retransmits += 1;
        }
        true
    }

    fn write_ack<P>(&mut self, now: Instant, out: &mut Vec<u8>, cx: &mut Cx<'_, P>) {
        let mut frame = AckFrame {
            src_epoch: self.epoch,
            dst_epoch: self.peer_epoch.unwrap_or(0),
            ack_delay_us: u32::try_from(
                now.saturating_duration_since(self.largest_recv_time)
                    .as_micros(),
            )
            .unwrap_or(u32::MAX),
            window: cx.config.receive_window,
            count: 0,
            ranges: [(0, 0); MAX_ACK_RANGES],
            refused_count: 0,
            refused: [(0, 0); MAX_REFUSALS],
        };
        for (slot, range) in frame
            .ranges
            .iter_mut()
            .zip(self.recv_pns.recent(cx.max_ack_ranges))
        {
            *slot = range;
            frame.count += 1;
        }
        let room = (cx.config.max_segment_payload + HEADER_MAX)
            .saturating_sub(ACK_FIXED_LEN + frame.count * ACK_RANGE_LEN)
            / REFUSAL_LEN;
        let take = room.min(MAX_REFUSALS).min(self.refusals.len());
        for (slot, refusal) in frame.refused.iter_mut().zip(self.refusals.drain(..take)) {
            *slot = refusal;
            frame.refused_count += 1;
        }
        wire::encode_ack(&frame, out);
        if self.refusals.is_empty() {
            self.unacked = 0;
            self.ack_deadline = None;
            self.ack_now = false;
        }
        self.announce = false;
        cx.stats.acks_sent += 1;
    }

    /// First packet number `>= start` that is not acknowledged (or `next_pn`), compressing
    /// the pointer chain on the way.
    fn find_unacked(&mut self, start: u64) -> u64 {
        let base = self.sent_base;
        let mut j = start;
        while j < self.next_pn {
            let next = self.sent[(j - base) as usize].acked_next;
            if next == 0 {
                break;
            }
            j = next;
        }
        let mut k = start;
        while k < j {
            let entry = &mut self.sent[(k - base) as usize];
            let next = entry.acked_next;
            entry.acked_next = j;
            k = next;
        }
        j
    }

    fn on_ack<P: Copy>(&mut self, now: Instant, peer: P, frame: &AckFrame, cx: &mut Cx<'_, P>) {
        self.peer_window = frame.window.max(1);
        let ranges = frame.ranges();
        let largest = ranges.first().map(|r| r.1);
        let largest_refused = frame.refused().iter().map(|r| r.0).max();
        if [largest, largest_refused]
            .into_iter()
            .flatten()
            .any(|pn| pn >= self.next_pn)
        {
            // Acknowledges packets never sent: not ours.
            cx.stats.dropped_malformed += 1;
            return;
        }
        self.on_refusals(now, peer, frame.refused(), cx);
        // A refused packet arrived too: it counts for packet-threshold loss detection.
        let Some(largest) = [largest, largest_refused].into_iter().flatten().max() else {
            return;
        };
        let cwnd_limited = self.max_in_flight.saturating_mul(2) >= self.cc.window();
        let mut newly_acked = false;
        let mut largest_sent: Option<Instant> = None;
        let mut completed = false;
        for &(start, end) in ranges {
            let lo = start.max(self.sent_base);
            let hi = end;
            if lo > hi {
                continue;
            }
            let mut pn = self.find_unacked(lo);
            while pn <= hi {
                let idx = (pn - self.sent_base) as usize;
                let entry = &mut self.sent[idx];
                entry.acked_next = pn + 1;
                let (msg, seg, sent) = (entry.msg, entry.seg, entry.sent);
                self.in_flight -= 1;
                newly_acked = true;
                if pn == largest {
                    largest_sent = Some(sent);
                }
                self.cc.on_ack(sent, cwnd_limited);
                if let Some(m) = self.out.get_mut(&msg) {
                    if m.waiting {
                        // Admitted: release the parked segments.
                        m.waiting = false;
                        m.retries = 0;
                        self.retx.extend(m.parked.drain(..).map(|s| (msg, s)));
                    }
                    if m.ack(seg) {
                        let id = m.id;
                        self.out.remove(&msg);
                        completed = true;
                        cx.stats.messages_sent += 1;
                        cx.events.push_back(Event::Sent { peer, id });
                    }
                }
                pn = self.find_unacked(pn + 1);
            }
        }
        if completed {
            self.refresh_floor();
            if self.out.is_empty() {
                // Whatever is still in flight carries acknowledged data only: stop tracking it
                // so that no timer stays armed for it.
                self.retx.clear();
                self.sent.clear();
                self.sent_base = self.next_pn;
                self.in_flight = 0;
                self.probes = 0;
            }
        }
        self.largest_acked = Some(self.largest_acked.map_or(largest, |l| l.max(largest)));
        if newly_acked {
            self.pto_count = 0;
            self.last_progress = now;
            if let Some(sent) = largest_sent {
                let ack_delay = Duration::from_micros(u64::from(frame.ack_delay_us))
                    .min(cx.config.max_ack_delay);
                let sample = now.saturating_duration_since(sent);
                self.rtt.update(sample, ack_delay);
                if self.cc.on_rtt_sample(sample, largest, self.next_pn) {
                    cx.stats.slow_start_exits += 1;
                }
                cx.stats.srtt_us =
                    u64::try_from(self.rtt.smoothed().as_micros()).unwrap_or(u64::MAX);
            }
            self.max_in_flight = self.in_flight;
        }
        self.detect_lost(now, cx);
    }

    /// The peer received these packets but did not store their segments (no loss, no
    /// congestion reaction). Busy: the message waits for admission — its refused segments are
    /// parked and one of them is retried after `min_rto`, doubling per retry up to 1 s; the
    /// first acknowledged segment releases the rest. Final: the message fails with
    /// [`FailReason::Refused`].
    fn on_refusals<P: Copy>(
        &mut self,
        now: Instant,
        peer: P,
        refused: &[(u64, u8)],
        cx: &mut Cx<'_, P>,
    ) {
        let mut changed = false;
        for &(pn, reason) in refused {
            if pn < self.sent_base || pn >= self.next_pn {
                continue;
            }
            let entry = &mut self.sent[(pn - self.sent_base) as usize];
            if entry.acked_next != 0 {
                continue;
            }
            entry.acked_next = pn + 1;
            let (msg, seg) = (entry.msg, entry.seg);
            self.in_flight -= 1;
            self.last_progress = now;
            self.pto_count = 0;
            let Some(m) = self.out.get_mut(&msg) else {
                continue;
            };
            if reason == REFUSE_FINAL {
                let id = m.id;
                self.out.remove(&msg);
                changed = true;
                cx.stats.messages_failed += 1;
                cx.events.push_back(Event::Failed {
                    peer,
                    id,
                    reason: FailReason::Refused,
                });
            } else if !m.is_acked(seg) {
                m.waiting = true;
                if !m.parked.contains(&seg) {
                    m.parked.push(seg);
                }
                if !m.retry_scheduled {
                    let delay = cx
                        .config
                        .min_rto
                        .saturating_mul(1 << m.retries.min(10))
                        .min(MAX_ADMISSION_RETRY);
                    m.retries += 1;
                    m.retry_scheduled = true;
                    self.deferred.insert((now + delay, msg));
                }
            }
        }
        if changed {
            self.refresh_floor();
        }
    }

    /// RFC 9002 §6.1: declares lost every in-flight packet older than the largest acknowledged
    /// by `PACKET_THRESHOLD` packets or by the loss delay; arms `loss_time` for the next one.
    fn detect_lost<P>(&mut self, now: Instant, cx: &mut Cx<'_, P>) {
        self.loss_time = None;
        let largest_acked = self.largest_acked;
        let delay = self.rtt.loss_delay();
        let mut largest_lost: Option<Instant> = None;
        let mut congested = false;
        while let Some(front) = self.sent.front().copied() {
            if front.acked_next != 0 {
                self.sent.pop_front();
                self.sent_base += 1;
                continue;
            }
            let Some(la) = largest_acked else { break };
            let pn = self.sent_base;
            if pn >= la {
                break;
            }
            let lost = la - pn >= PACKET_THRESHOLD || front.sent + delay <= now;
            if !lost {
                self.loss_time = Some(front.sent + delay);
                break;
            }
            self.sent.pop_front();
            self.sent_base += 1;
            self.in_flight -= 1;
            cx.stats.packets_lost += 1;
            self.lost_run = if self.last_lost_pn.wrapping_add(1) == pn {
                self.lost_run + 1
            } else {
                1
            };
            self.last_lost_pn = pn;
            congested |= self.lost_run >= LOSS_RUN_CONGESTION;
            if self
                .out
                .get(&front.msg)
                .is_some_and(|m| !m.is_acked(front.seg))
            {
                self.retx.push_back((front.msg, front.seg));
            }
            largest_lost = Some(front.sent);
        }
        if let Some(sent) = largest_lost {
            if !congested {
                // Isolated losses: noise on the path (or a faulty link), not a full queue.
                cx.stats.isolated_losses += 1;
            } else if self.cc.on_loss(now, sent) {
                cx.stats.congestion_events += 1;
            }
        }
    }

    fn pto_deadline(&self, config: &Config) -> Option<Instant> {
        if self.in_flight == 0 {
            return None;
        }
        let pto = self.rtt.pto(
            config.max_ack_delay,
            self.pto_count,
            config.min_rto,
            config.max_rto,
        );
        self.last_ack_eliciting.map(|t| t + pto)
    }

    fn next_timeout(&self, config: &Config) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut consider = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        consider(self.loss_time.or_else(|| self.pto_deadline(config)));
        if self.unacked > 0 {
            consider(self.ack_deadline);
        }
        consider(self.pacing_until);
        consider(self.partial_check);
        consider(self.deferred.first().map(|d| d.0));
        if !self.out.is_empty() {
            consider(Some(self.last_progress + config.peer_timeout));
        }
        t
    }

    fn on_timeout<P: Copy>(&mut self, now: Instant, peer: P, cx: &mut Cx<'_, P>) {
        if let Some(t) = self.loss_time {
            if t <= now {
                self.detect_lost(now, cx);
            }
        } else if let Some(t) = self.pto_deadline(cx.config) {
            if t <= now {
                self.on_pto(now, cx);
            }
        }
        if self.pacing_until.is_some_and(|t| t <= now) {
            self.pacing_until = None;
        }
        self.release_deferred(now);
        if let Some(t) = self.partial_check {
            if t <= now {
                self.expire_partials(now, cx);
            }
        }
        if !self.out.is_empty() && self.last_progress + cx.config.peer_timeout <= now {
            self.fail_all(peer, FailReason::PeerUnreachable, cx);
        }
    }

    /// RFC 9002 §6.2: the probe timeout fired. Back off, and send up to two probes that
    /// retransmit the oldest unacknowledged segments in new packets, bypassing the windows.
    fn on_pto<P>(&mut self, now: Instant, cx: &mut Cx<'_, P>) {
        self.pto_count += 1;
        cx.stats.pto_expirations += 1;
        if self.pto_count == PERSISTENT_CONGESTION_PTOS {
            self.cc.on_persistent_congestion(now);
            cx.stats.congestion_events += 1;
        }
        let mut probes: Vec<(u64, u32)> = Vec::with_capacity(PROBES_PER_PTO as usize);
        for p in &self.sent {
            if probes.len() >= PROBES_PER_PTO as usize {
                break;
            }
            if p.acked_next == 0
                && !probes.contains(&(p.msg, p.seg))
                && self.out.get(&p.msg).is_some_and(|m| !m.is_acked(p.seg))
            {
                probes.push((p.msg, p.seg));
            }
        }
        for &probe in probes.iter().rev() {
            self.retx.push_front(probe);
        }
        self.probes = PROBES_PER_PTO;
        // Re-arm from now even if the probes cannot carry anything new.
        self.last_ack_eliciting = Some(now);
    }

    fn expire_partials<P>(&mut self, now: Instant, cx: &mut Cx<'_, P>) {
        let timeout = cx.config.partial_timeout;
        let mut freed = 0;
        let mut expired = 0;
        let abandoned = &mut self.abandoned;
        self.partials.retain(|&id, p| {
            if p.last_activity + timeout <= now {
                freed += p.charged;
                expired += 1;
                if abandoned.len() >= MAX_ABANDONED {
                    abandoned.pop_front();
                }
                abandoned.push_back(id);
                false
            } else {
                true
            }
        });
        self.reassembly -= freed;
        *cx.reassembly_total -= freed;
        cx.stats.partial_timeouts += expired;
        self.partial_check = self
            .partials
            .values()
            .map(|p| p.last_activity + timeout)
            .min();
    }

    fn on_data<P: Copy>(
        &mut self,
        now: Instant,
        peer: P,
        h: &DataHeader,
        payload: &[u8],
        cx: &mut Cx<'_, P>,
    ) {
        if h.dst_epoch != 0 && h.dst_epoch != self.epoch {
            // Sent to a previous incarnation of us: announce our epoch, accept nothing.
            cx.stats.dropped_stale_epoch += 1;
            self.announce = true;
            return;
        }
        let floor = h.msg_id - u64::from(h.floor_delta);
        if self.delivered.advance_to(floor) {
            let watermark = self.delivered.watermark();
            let mut freed = 0;
            let mut abandoned = 0;
            self.partials.retain(|&id, p| {
                if id < watermark {
                    freed += p.charged;
                    abandoned += 1;
                    false
                } else {
                    true
                }
            });
            self.reassembly -= freed;
            *cx.reassembly_total -= freed;
            cx.stats.partials_abandoned += abandoned;
            self.abandoned.retain(|&id| id >= watermark);
        }
        let accepted = if self.delivered.contains(h.msg_id) {
            cx.stats.duplicates += 1;
            true
        } else if !self.delivered.in_window(h.msg_id) {
            cx.stats.dropped_malformed += 1;
            false
        } else if self.abandoned.contains(&h.msg_id) {
            // We gave up on it (partial timeout): the sender must not believe it delivered.
            self.refuse(h.pn, REFUSE_FINAL);
            false
        } else if let Some(part) = self.partials.get_mut(&h.msg_id) {
            match part.store(h.msg_len, h.seg_size, h.seg_index, payload, now) {
                SegmentResult::Stored => true,
                SegmentResult::Duplicate => {
                    cx.stats.duplicates += 1;
                    true
                }
                SegmentResult::Inconsistent => {
                    cx.stats.dropped_malformed += 1;
                    false
                }
                SegmentResult::Complete => {
                    if let Some(part) = self.partials.remove(&h.msg_id) {
                        if self.partials.is_empty() {
                            self.partial_check = None;
                        }
                        self.reassembly -= part.charged;
                        *cx.reassembly_total -= part.charged;
                        self.deliver(peer, h.msg_id, part.data, cx);
                    }
                    true
                }
            }
        } else {
            self.start_message(now, peer, h, payload, cx)
        };
        if !accepted {
            return;
        }
        match self.recv_pns.insert(h.pn) {
            PnInsert::InOrder => {}
            PnInsert::OutOfOrder | PnInsert::Duplicate => self.ack_now = true,
        }
        if self.recv_pns.largest() == Some(h.pn) {
            self.largest_recv_time = now;
        }
        if h.ack_now {
            self.ack_now = true;
        }
        self.unacked += 1;
        if self.ack_deadline.is_none() {
            self.ack_deadline = Some(now + cx.config.max_ack_delay);
        }
    }

    /// First segment of a message not seen before. Returns whether it was accepted.
    fn start_message<P: Copy>(
        &mut self,
        now: Instant,
        peer: P,
        h: &DataHeader,
        payload: &[u8],
        cx: &mut Cx<'_, P>,
    ) -> bool {
        let config = cx.config;
        if u64::from(h.msg_len) > config.max_message_size.min(u64::from(u32::MAX)) {
            cx.stats.dropped_oversized_announcement += 1;
            self.refuse(h.pn, REFUSE_FINAL);
            return false;
        }
        if segment_count(h.msg_len, h.seg_size) == 1 {
            self.deliver(peer, h.msg_id, payload.to_vec(), cx);
            return true;
        }
        let cost = Partial::cost(h.msg_len, h.seg_size);
        if cost > config.max_reassembly_per_peer || cost > config.max_reassembly_total {
            cx.stats.dropped_oversized_announcement += 1;
            self.refuse(h.pn, REFUSE_FINAL);
            return false;
        }
        if self.reassembly + cost > config.max_reassembly_per_peer
            || *cx.reassembly_total + cost > config.max_reassembly_total
        {
            cx.stats.dropped_reassembly_full += 1;
            self.refuse(h.pn, REFUSE_BUSY);
            return false;
        }
        let mut part = Partial::new(h.msg_len, h.seg_size, now);
        if part.store(h.msg_len, h.seg_size, h.seg_index, payload, now) != SegmentResult::Stored {
            cx.stats.dropped_malformed += 1;
            return false;
        }
        self.reassembly += cost;
        *cx.reassembly_total += cost;
        self.partials.insert(h.msg_id, part);
        if self.partial_check.is_none() {
            self.partial_check = Some(now + config.partial_timeout);
        }
        true
    }

    fn refuse(&mut self, pn: u64, reason: u8) {
        if self.refusals.len() < MAX_PENDING_REFUSALS && !self.refusals.iter().any(|r| r.0 == pn) {
            self.refusals.push_back((pn, reason));
        }
    }

    fn deliver<P: Copy>(&mut self, peer: P, id: u64, message: Vec<u8>, cx: &mut Cx<'_, P>) {
        self.delivered.insert(id);
        cx.stats.messages_delivered += 1;
        cx.events.push_back(Event::Delivered { peer, message });
    }

    /// Whether this peer might produce a datagram now.
    fn wants_transmit(&mut self, now: Instant, ack_every: u32) -> bool {
        self.ack_due(now, ack_every)
            || (self.pacing_until.is_none_or(|t| t <= now)
                && (self.probes > 0 || self.in_flight < self.window())
                && self.has_data(now))
    }
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
        let message = message.into();
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
        let seg_size = u32::try_from(self.config.max_segment_payload).unwrap_or(u32::MAX);
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
        p.out.insert(wire_id, OutMsg::new(id, message, seg_size));
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
            Err(_) => {
                self.stats.dropped_malformed += 1;
                return;
            }
        };
        let src_epoch = match &decoded {
            Datagram::Data(h, _) => h.src_epoch,
            Datagram::Ack(a) => a.src_epoch,
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
        match p.check_epoch(src_epoch) {
            EpochCheck::Same => {}
            EpochCheck::Retired => {
                cx.stats.dropped_stale_epoch += 1;
                return;
            }
            EpochCheck::Restarted => {
                p.on_peer_restart(now, src_epoch, cx.config, cx.reassembly_total);
                cx.stats.peer_resets += 1;
            }
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

    /// Counters and gauges.
    #[must_use]
    pub fn stats(&self) -> Stats {
        let mut s = self.stats;
        s.peers = self.peers.len() as u64;
        s.in_flight = self.peers.values().map(|p| u64::from(p.in_flight)).sum();
        s.cwnd = self.peers.values().map(|p| u64::from(p.cc.window())).sum();
        s.reassembly_bytes = self.reassembly_total as u64;
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
        p.drop_partials(cx.reassembly_total);
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
            max_ack_ranges,
            ..
        } = self;
        let cx = Cx {
            config,
            stats,
            events,
            reassembly_total,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn t(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    fn drain<P: Copy + Eq + Hash + Debug>(ep: &mut Endpoint<P>, now: Instant) -> Vec<(P, Vec<u8>)> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        while let Some(p) = ep.poll_transmit(now, &mut buf) {
            out.push((p, buf.clone()));
        }
        out
    }

    #[test]
    fn error_codes() {
        assert_eq!(
            RudpError::MessageTooLarge { len: 2, max: 1 }.code(),
            "ERR_DECCOM_MESSAGE_TOO_LARGE"
        );
        assert_eq!(
            RudpError::SendQueueFull { limit: 1 }.code(),
            "ERR_DECCOM_SEND_QUEUE_FULL"
        );
        assert_eq!(
            RudpError::PeerTableFull { limit: 1 }.code(),
            "ERR_DECCOM_PEER_TABLE_FULL"
        );
        assert_eq!(
            FailReason::PeerUnreachable.code(),
            "ERR_DECCOM_PEER_UNREACHABLE"
        );
        assert_eq!(FailReason::Forgotten.code(), "ERR_DECCOM_PEER_FORGOTTEN");
        assert_eq!(FailReason::Refused.code(), "ERR_DECCOM_MESSAGE_REFUSED");
    }

    #[test]
    fn send_limits() {
        let now = Instant::now();
        let config = Config {
            max_message_size: 10,
            max_outgoing_per_peer: 2,
            ..Config::default()
        };
        let mut a: Endpoint<u8> = Endpoint::new(config, now, 1);
        assert_eq!(
            a.send(now, 1, vec![0; 11]),
            Err(RudpError::MessageTooLarge { len: 11, max: 10 })
        );
        a.send(now, 1, vec![0; 10]).unwrap();
        a.send(now, 1, vec![]).unwrap();
        assert_eq!(
            a.send(now, 1, vec![1]),
            Err(RudpError::SendQueueFull { limit: 2 })
        );
        // Another peer has its own queue.
        a.send(now, 2, vec![1]).unwrap();
    }

    /// The sender never has more than the advertised receive window in flight.
    #[test]
    fn receive_window_respected() {
        let base = Instant::now();
        let mut a: Endpoint<u8> = Endpoint::new(Config::default(), base, 1);
        let mut b: Endpoint<u8> = Endpoint::new(
            Config {
                receive_window: 4,
                ..Config::default()
            },
            base,
            2,
        );
        a.send(base, 1, vec![7; 1200 * 200]).unwrap();
        let mut max_after_first_ack = 0;
        let mut saw_ack = false;
        for step in 0..10_000u64 {
            let now = t(base, step);
            a.handle_timeout(now);
            for (_, d) in drain(&mut a, now) {
                if saw_ack {
                    max_after_first_ack = max_after_first_ack.max(a.in_flight(1));
                }
                b.handle_datagram(now, 0, &d);
            }
            b.handle_timeout(now);
            for (_, d) in drain(&mut b, now) {
                a.handle_datagram(now, 1, &d);
                saw_ack = true;
            }
            if a.stats().messages_sent == 1 {
                break;
            }
        }
        assert_eq!(a.stats().messages_sent, 1);
        assert!(saw_ack);
        assert!(max_after_first_ack <= 4, "{max_after_first_ack}");
        assert!(matches!(b.poll_event(), Some(Event::Delivered { .. })));
    }

    /// PTO doubles on each expiry without an ACK and resets when one arrives.
    #[test]
    fn pto_backoff_doubles_and_resets() {
        let base = Instant::now();
        let config = Config {
            max_ack_delay: Duration::from_millis(5),
            ..Config::default()
        };
        let mut a: Endpoint<u8> = Endpoint::new(config.clone(), base, 1);
        a.send(base, 1, vec![1; 10]).unwrap();
        let sent = drain(&mut a, base);
        assert_eq!(sent.len(), 1);
        // First PTO: srtt + 4 * rttvar + max_ack_delay = 100 + 200 + 5 ms.
        let first = a.poll_timeout().unwrap();
        assert_eq!(first, t(base, 305));
        a.handle_timeout(first);
        let probes = drain(&mut a, first);
        assert_eq!(probes.len(), 1, "one probe: only one segment outstanding");
        let second = a.poll_timeout().unwrap();
        assert_eq!(second - first, Duration::from_millis(610));
        a.handle_timeout(second);
        assert_eq!(drain(&mut a, second).len(), 1, "probes are not duplicated");
        let third = a.poll_timeout().unwrap();
        assert_eq!(third - second, Duration::from_millis(1220));
        // An ACK of the probe resets the backoff.
        let mut b: Endpoint<u8> = Endpoint::new(config, base, 2);
        a.handle_timeout(third);
        let probe = drain(&mut a, third);
        b.handle_datagram(third, 0, &probe[0].1);
        let ack = drain(&mut b, third);
        assert_eq!(ack.len(), 1);
        a.handle_datagram(third + Duration::from_millis(1), 1, &ack[0].1);
        assert!(matches!(a.poll_event(), Some(Event::Sent { .. })));
        assert_eq!(a.poll_timeout(), None);
        a.send(third, 1, vec![2; 10]).unwrap();
        let now = third + Duration::from_millis(2);
        drain(&mut a, now);
        let pto = a.poll_timeout().unwrap() - now;
        assert!(pto < Duration::from_millis(610), "{pto:?}");
    }

    #[test]
    fn unknown_and_malformed_input_is_counted() {
        let base = Instant::now();
        let mut a: Endpoint<u8> = Endpoint::new(Config::default(), base, 1);
        a.handle_datagram(base, 1, &[]);
        a.handle_datagram(base, 1, &[9, 9, 9]);
        assert_eq!(a.stats().dropped_malformed, 2);
        assert_eq!(a.stats().peers, 0);
    }
}
