//! The send path: outgoing messages ([`OutMsg`]) and sent packets ([`SentPacket`]); which
//! segment goes next (retransmissions first, then new segments, [`SEND_QUANTUM`] per message in
//! turn), the congestion and receive windows, pacing, and writing DATA and ACK datagrams.

use std::collections::VecDeque;
use std::time::Instant;

use super::payload::Payload;
use super::peer::{Cx, Peer};
use super::{
    Event, MessageId, PROGRESS_FRACTION, PROGRESS_INTERVAL, PROGRESS_MAX_STEP, SEND_QUANTUM,
};
use crate::rudp::wire::{
    self, segment_count, segment_len, AckFrame, DataHeader, ACK_FIXED_LEN, ACK_RANGE_LEN,
    HEADER_MAX, MAX_ACK_RANGES, MAX_REFUSALS, MESSAGE_SPAN, REFUSAL_LEN,
};

/// One message being sent.
#[derive(Debug)]
pub(super) struct OutMsg {
    pub(super) id: MessageId,
    pub(super) data: Payload,
    pub(super) seg_size: u32,
    pub(super) segments: u32,
    /// Next segment never sent.
    pub(super) next_new: u32,
    pub(super) acked: u32,
    pub(super) acked_bits: Vec<u64>,
    /// The receiver had no room for it: no new segments until one is acknowledged.
    pub(super) waiting: bool,
    /// Refused segments held back while waiting, in the order they were refused. Each admission
    /// retry sends the oldest; refused again, it goes to the back (every parked segment gets its
    /// turn: one in a region the receiver already holds memory for is taken).
    pub(super) parked: VecDeque<u32>,
    pub(super) retry_scheduled: bool,
    /// Admission retries so far (exponential backoff).
    pub(super) retries: u32,
    /// Payload bytes of the acknowledged segments.
    pub(super) acked_bytes: u64,
    /// Progress reporting, for a message sent with [`Endpoint::send_with_progress`](super::Endpoint::send_with_progress).
    pub(super) progress: Option<Progress>,
}

/// Progress reporting state of one message (see [`Event::Progress`]).
#[derive(Debug)]
pub(super) struct Progress {
    /// Bytes that must be acknowledged beyond the last report before the next one.
    step: u64,
    /// Acknowledged bytes last reported (reports only ever grow, even across a peer restart).
    reported: u64,
    /// When the last report was made.
    at: Option<Instant>,
    /// Reported in the ACK being processed already (one report per message per ACK).
    queued: bool,
}

impl OutMsg {
    pub(super) fn new(id: MessageId, data: Payload, seg_size: u32, progress: bool) -> Self {
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let segments = segment_count(len, seg_size);
        let progress = progress.then(|| Progress {
            step: u64::from(len)
                .div_ceil(PROGRESS_FRACTION)
                .clamp(1, PROGRESS_MAX_STEP),
            reported: 0,
            at: None,
            queued: false,
        });
        OutMsg {
            id,
            data,
            seg_size,
            segments,
            next_new: 0,
            acked: 0,
            acked_bits: vec![0; segments.div_ceil(64) as usize],
            waiting: false,
            parked: VecDeque::new(),
            retry_scheduled: false,
            retries: 0,
            acked_bytes: 0,
            progress,
        }
    }

    fn len(&self) -> u32 {
        u32::try_from(self.data.len()).unwrap_or(u32::MAX)
    }

    pub(super) fn is_acked(&self, seg: u32) -> bool {
        self.acked_bits[(seg / 64) as usize] & (1 << (seg % 64)) != 0
    }

    /// Marks `seg` acknowledged; returns whether the message is now complete.
    pub(super) fn ack(&mut self, seg: u32) -> bool {
        let word = &mut self.acked_bits[(seg / 64) as usize];
        let mask = 1 << (seg % 64);
        if *word & mask == 0 {
            *word |= mask;
            self.acked += 1;
            self.acked_bytes += u64::from(segment_len(self.len(), self.seg_size, seg));
        }
        self.acked == self.segments
    }

    /// After an acknowledgement at `now`: whether a progress report is due (enough new bytes,
    /// not reported within [`PROGRESS_INTERVAL`], not already queued for this ACK). Marks it
    /// queued; [`OutMsg::report_progress`] makes the report.
    pub(super) fn progress_due(&mut self, now: Instant) -> bool {
        let acked = self.acked_bytes;
        let Some(p) = self.progress.as_mut() else {
            return false;
        };
        let due = !p.queued
            && acked >= p.reported + p.step
            && p.at
                .is_none_or(|t| now.saturating_duration_since(t) >= PROGRESS_INTERVAL);
        p.queued |= due;
        due
    }

    /// Reports the bytes acknowledged so far (every one of them once the message is complete:
    /// the last report before [`Event::Sent`] is always the whole length). Never reports less
    /// than before.
    pub(super) fn report_progress<P>(
        &mut self,
        now: Instant,
        peer: P,
        events: &mut VecDeque<Event<P>>,
    ) {
        let acked = self.acked_bytes;
        let Some(p) = self.progress.as_mut() else {
            return;
        };
        p.queued = false;
        // An empty message is reported once, complete (0 of 0 bytes).
        if acked > p.reported || (p.at.is_none() && self.acked == self.segments) {
            p.reported = acked;
            p.at = Some(now);
            events.push_back(Event::Progress {
                peer,
                id: self.id,
                acked_bytes: acked,
            });
        }
    }

    pub(super) fn restart(&mut self) {
        self.next_new = 0;
        self.acked = 0;
        self.acked_bytes = 0;
        self.acked_bits.iter_mut().for_each(|w| *w = 0);
        self.waiting = false;
        self.parked.clear();
        self.retry_scheduled = false;
        self.retries = 0;
    }
}

/// A DATA packet sent and not yet acknowledged or declared lost.
#[derive(Debug, Clone, Copy)]
pub(super) struct SentPacket {
    pub(super) msg: u64,
    pub(super) seg: u32,
    pub(super) sent: Instant,
    /// 0 while in flight; once acknowledged, a packet number `> pn` such that every packet in
    /// between is acknowledged too (a union-find "next unacknowledged" pointer, so that ack
    /// ranges repeated in later ACKs are skipped in amortized O(1)).
    pub(super) acked_next: u64,
}

/// Share (numerator, denominator) of the socket buffer that a peer sending datagrams larger than
/// our `max_segment_payload` may fill (see `Peer::advertised_window`).
pub const LARGE_SEGMENT_WINDOW_SHARE: (u64, u64) = (5, 8);

impl Peer {
    fn ack_due(&self, now: Instant, ack_every: u32) -> bool {
        self.announce
            || self.announce_to.is_some()
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

    pub(super) fn release_deferred(&mut self, now: Instant) {
        while let Some(&(at, msg)) = self.deferred.first() {
            if at > now {
                break;
            }
            self.deferred.pop_first();
            if let Some(m) = self.out.get_mut(&msg) {
                m.retry_scheduled = false;
                if m.waiting {
                    if let Some(seg) = m.parked.pop_front() {
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
    pub(super) fn poll_transmit<P>(
        &mut self,
        now: Instant,
        out: &mut Vec<u8>,
        cx: &mut Cx<'_, P>,
    ) -> bool {
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
        let datagram_start = out.len();
        wire::encode_data_header(&header, out);
        let start = seg as usize * m.seg_size as usize;
        let len = segment_len(m.len(), m.seg_size, seg) as usize;
        m.data.copy_range(start, len, out);
        wire::append_checksum(out, datagram_start);
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

    /// The receive window advertised to this peer, in datagrams. `Config::receive_window` counts
    /// datagrams of at most `max_segment_payload` bytes (what the socket buffer absorbs when its
    /// driver sized it with [`receive_window_for_socket_buffer`]); a peer whose datagrams are
    /// larger (e.g. on loopback, see [`path_segment_payload`]) gets fewer: the same kernel memory
    /// in its datagrams, times [`LARGE_SEGMENT_WINDOW_SHARE`]. (Small datagrams arrive coalesced
    /// by GRO and cost the socket buffer less than their estimate, which leaves the base window
    /// room; large ones cost what they are estimated at, and Linux releases a UDP socket's
    /// receive memory lazily, up to a quarter of the buffer at a time.)
    ///
    /// [`receive_window_for_socket_buffer`]: super::receive_window_for_socket_buffer
    /// [`path_segment_payload`]: super::path_segment_payload
    pub(super) fn advertised_window(&self, config: &super::Config) -> u32 {
        let base = config.max_segment_payload;
        if self.largest_payload <= base {
            return config.receive_window;
        }
        let (num, den) = LARGE_SEGMENT_WINDOW_SHARE;
        let scaled = u64::from(config.receive_window) * super::datagram_truesize(base) as u64 * num
            / (super::datagram_truesize(self.largest_payload) as u64 * den);
        u32::try_from(scaled).unwrap_or(u32::MAX).max(1)
    }

    fn write_ack<P>(&mut self, now: Instant, out: &mut Vec<u8>, cx: &mut Cx<'_, P>) {
        if let Some(dst) = self.announce_to.take() {
            // To an epoch that did not prove itself: our epoch only, nothing about our session.
            let frame = AckFrame {
                src_epoch: self.epoch,
                dst_epoch: dst,
                ack_delay_us: 0,
                window: self.advertised_window(cx.config),
                count: 0,
                ranges: [(0, 0); MAX_ACK_RANGES],
                refused_count: 0,
                refused: [(0, 0); MAX_REFUSALS],
            };
            wire::encode_ack(&frame, out);
            cx.stats.acks_sent += 1;
            return;
        }
        let mut frame = AckFrame {
            src_epoch: self.epoch,
            dst_epoch: self.peer_epoch.unwrap_or(0),
            ack_delay_us: u32::try_from(
                now.saturating_duration_since(self.largest_recv_time)
                    .as_micros(),
            )
            .unwrap_or(u32::MAX),
            window: self.advertised_window(cx.config),
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

    /// Whether this peer might produce a datagram now.
    pub(super) fn wants_transmit(&mut self, now: Instant, ack_every: u32) -> bool {
        self.ack_due(now, ack_every)
            || (self.pacing_until.is_none_or(|t| t <= now)
                && (self.probes > 0 || self.in_flight < self.window())
                && self.has_data(now))
    }
}
