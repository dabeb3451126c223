//! [`Config`] of an endpoint and its [`Stats`].

use std::time::Duration;

/// Configuration of an [`Endpoint`](super::Endpoint). Every limit has a default; see each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Bytes of message data per datagram (default 1200). A datagram is at most
    /// `max_segment_payload + HEADER_MAX` ([`super::HEADER_MAX`](crate::rudp::HEADER_MAX) = 48)
    /// bytes long.
    pub max_segment_payload: usize,
    /// Largest message accepted by `send` and by the receiver (default 256 MiB; at most
    /// 4 GiB − 1, larger values are clamped).
    pub max_message_size: u64,
    /// Bytes of partially received messages per peer (default 320 MiB), charged as data
    /// arrives; a peer that has not echoed our epoch gets at most 2 MiB (see the module docs).
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
    /// all of them fail with [`FailReason::PeerUnreachable`](super::FailReason::PeerUnreachable)
    /// (default 10 s).
    pub peer_timeout: Duration,
    /// A partially received message without a new segment for this long is dropped
    /// (default 30 s).
    pub partial_timeout: Duration,
    /// Initial congestion window in datagrams (default 32).
    pub initial_window: u32,
    /// Largest congestion window in datagrams (default 65536).
    pub max_window: u32,
    /// Datagrams a peer may have in flight to us, advertised in every ACK (default 65536). A
    /// driver with a socket sets it from the socket's receive buffer
    /// ([`receive_window_for_socket_buffer`]): a peer then never has more in flight than the
    /// buffer holds, so it cannot overflow it however far its congestion window grows.
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

/// Kernel memory one received datagram of `segment_payload` bytes costs in a socket's receive
/// buffer (Linux charges `skb->truesize`: the power-of-two data allocation, which also holds the
/// headers and the shared info, plus the `sk_buff` itself): 2304 bytes for 1200-byte segments.
#[must_use]
pub fn datagram_truesize(segment_payload: usize) -> usize {
    const HEADERS_AND_SHARED_INFO: usize = 64 + 320;
    const SK_BUFF: usize = 256;
    (segment_payload + HEADERS_AND_SHARED_INFO).next_power_of_two() + SK_BUFF
}

/// Default segment payload to loopback addresses (see [`path_segment_payload`]): a datagram of
/// this size with its headers fits the 32 KiB kernel allocation a received datagram is charged
/// for, so a socket buffer holds as many payload bytes as possible.
pub const LOOPBACK_SEGMENT_PAYLOAD: usize = 16_000;

/// Segment payload for new messages to a peer at `ip`: `loopback` when `ip` is a loopback
/// address (127.0.0.0/8, `::1`, or IPv4-mapped loopback), `base` otherwise. The loopback
/// interface's MTU is 64 KiB and nothing between two processes on one host fragments or drops a
/// large datagram, so segments there can be much larger than the 1200 bytes that are safe on any
/// Internet path (fewer datagrams per byte: less checksum, crypto set-up, header and
/// acknowledgement work per byte). Other paths keep `base`.
#[must_use]
pub fn path_segment_payload(ip: std::net::IpAddr, base: usize, loopback: usize) -> usize {
    let is_loopback = match ip {
        std::net::IpAddr::V4(v4) => v4.is_loopback(),
        std::net::IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    };
    if is_loopback {
        loopback
    } else {
        base
    }
}

/// The receive window (in datagrams) a socket whose receive buffer is `rcvbuf` bytes (as
/// `getsockopt(SO_RCVBUF)` reports it, which on Linux already includes the kernel's doubling)
/// absorbs without dropping: `rcvbuf / truesize`, at least 16 and at most 65536.
#[must_use]
pub fn receive_window_for_socket_buffer(rcvbuf: usize, segment_payload: usize) -> u32 {
    let n = rcvbuf / datagram_truesize(segment_payload).max(1);
    u32::try_from(n).unwrap_or(u32::MAX).clamp(16, 65_536)
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
    /// Messages given up by [`Endpoint::cancel`](super::Endpoint::cancel).
    pub messages_cancelled: u64,
    /// Segments received again (already stored or delivered).
    pub duplicates: u64,
    /// Datagrams that did not decode or were inconsistent (checksum failures included).
    pub dropped_malformed: u64,
    /// Of `dropped_malformed`: datagrams whose CRC32C trailer did not match (corrupted).
    pub dropped_checksum: u64,
    /// Datagrams from a peer that carried a new source epoch without echoing ours (a forgery,
    /// or a restarted peer that has not learned our epoch yet: it is told it): dropped, the
    /// session unchanged.
    pub dropped_unproven_epoch: u64,
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
    /// Loss detections with no run of [`LOSS_RUN_CONGESTION`](super::LOSS_RUN_CONGESTION)
    /// consecutive losses (no reduction).
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
    /// Of `reassembly_bytes`: charged to peers that have not echoed our epoch (gauge).
    pub reassembly_unproven_bytes: u64,
    /// Latest smoothed RTT in microseconds (of the peer that last produced a sample).
    pub srtt_us: u64,
    /// Sum of the congestion windows of all peers, in datagrams (gauge).
    pub cwnd: u64,
}
