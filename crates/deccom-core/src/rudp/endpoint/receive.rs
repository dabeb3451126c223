//! The receive path: a DATA datagram arrives: epoch check, the sender's floor, reassembly
//! within the memory limits (or a refusal), delivery exactly once, and ACK scheduling.
//!
//! # Reassembly budget
//!
//! Memory is charged as data arrives (see [`Partial`]): a first segment costs the bookkeeping
//! and the region it lands in, not the length it announces. A segment is stored only if its
//! charge fits all of:
//!
//! - the peer's share: `max_reassembly_per_peer` for a proven peer (one that echoed our epoch),
//!   [`UNPROVEN_SHARE`] for any other;
//! - density: the peer's charge stays within [`DENSITY_SLACK`] + [`DENSITY`] × the payload
//!   bytes it has stored, so memory is held only by sending (about) as much data;
//! - `max_reassembly_total`, of which unproven peers together hold at most
//!   1/[`UNPROVEN_POOL_DIVISOR`].
//!
//! A first segment of a proven peer also needs the full charges of all its open messages, the
//! new one included ([`Partial::full_cost`]), to fit its share: a message is opened only if it can
//! complete, so messages started at once cannot each hold part of the share and wait for one
//! another forever.
//!
//! Otherwise the segment is refused *busy* (the sender retries it later, and a busy refusal is
//! not progress: a sender that only gets refusals fails after its `peer_timeout`).

use std::time::Instant;

use super::peer::{Cx, Peer};
use super::Event;
use crate::rudp::recv::{Partial, PnInsert, SegmentResult};
use crate::rudp::wire::{segment_count, DataHeader, REFUSE_BUSY, REFUSE_FINAL};

/// Refusals a receiver queues for its next ACKs (more are dropped silently: they look lost).
const MAX_PENDING_REFUSALS: usize = 64;
/// Reassembly bytes a peer that has not echoed our epoch may hold (its first flight).
pub const UNPROVEN_SHARE: usize = 2 << 20;
/// Unproven peers together hold at most `max_reassembly_total / UNPROVEN_POOL_DIVISOR`.
pub const UNPROVEN_POOL_DIVISOR: usize = 16;
/// Charge a peer may hold beyond [`DENSITY`] × its stored payload bytes.
pub const DENSITY_SLACK: usize = 4 << 20;
/// Charged bytes allowed per stored payload byte: the data itself, memory reserved ahead of the
/// writer (at most twice the data), and regions opened by data that arrived out of order.
pub const DENSITY: usize = 4;
/// Most pre-fault hints queued (older ones are dropped: they are only hints).
const MAX_PREFAULT_HINTS: usize = 64;

impl Peer {
    pub(super) fn on_data<P: Copy>(
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
        self.largest_payload = self.largest_payload.max(payload.len());
        let floor = h.msg_id - u64::from(h.floor_delta);
        if self.delivered.advance_to(floor) {
            let watermark = self.delivered.watermark();
            let gone: Vec<u64> = self.partials.keys().copied().filter(|&id| id < watermark).collect();
            for id in gone {
                if let Some(part) = self.partials.remove(&id) {
                    self.release(&part, cx);
                    cx.stats.partials_abandoned += 1;
                }
            }
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
        } else if let Some(accepted) = self.continue_message(now, peer, h, payload, cx) {
            accepted
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

    /// Whether `extra` more bytes may be charged to this peer, `payload` more bytes of data
    /// arriving with them (see the module docs).
    fn fits<P>(&self, extra: usize, payload: usize, cx: &Cx<'_, P>) -> bool {
        Self::fits_with(self.reassembly, self.stored, self.proven, extra, payload, cx)
    }

    /// [`Peer::fits`] for a peer that holds `reassembly` charged (counted in the endpoint's
    /// totals) and `stored` payload bytes; `extra` may include bytes charged to the peer's
    /// partial but not yet to the totals.
    fn fits_with<P>(
        reassembly: usize,
        stored: usize,
        proven: bool,
        extra: usize,
        payload: usize,
        cx: &Cx<'_, P>,
    ) -> bool {
        let config = cx.config;
        let after = reassembly + extra;
        let share = if proven {
            config.max_reassembly_per_peer
        } else {
            config.max_reassembly_per_peer.min(UNPROVEN_SHARE)
        };
        let density = DENSITY_SLACK.saturating_add(DENSITY.saturating_mul(stored + payload));
        after <= share
            && after <= density
            && *cx.reassembly_total + extra <= config.max_reassembly_total
            && (proven
                || *cx.unproven_total + extra
                    <= config.max_reassembly_total / UNPROVEN_POOL_DIVISOR)
    }

    /// A segment of a message being reassembled: whether it was accepted, or `None` if no
    /// such message is being reassembled. One table lookup per segment (this is the bulk path):
    /// the charge, storing, and a reservation ahead of the writer all go through it.
    fn continue_message<P: Copy>(
        &mut self,
        now: Instant,
        peer: P,
        h: &DataHeader,
        payload: &[u8],
        cx: &mut Cx<'_, P>,
    ) -> Option<bool> {
        let (reassembly, stored, proven) = (self.reassembly, self.stored, self.proven);
        let part = self.partials.get_mut(&h.msg_id)?;
        let cost = part.cost_of(h.seg_index);
        if cost > 0 && !Self::fits_with(reassembly, stored, proven, cost, payload.len(), cx) {
            cx.stats.dropped_reassembly_full += 1;
            self.refuse(h.pn, REFUSE_BUSY);
            return Some(false);
        }
        let before = part.charged;
        let result = part.store(h.msg_len, h.seg_size, h.seg_index, payload, now);
        match result {
            SegmentResult::Duplicate => {
                cx.stats.duplicates += 1;
                return Some(true);
            }
            SegmentResult::Inconsistent => {
                cx.stats.dropped_malformed += 1;
                return Some(false);
            }
            SegmentResult::Stored | SegmentResult::Complete => {}
        }
        let stored = stored + payload.len();
        let mut added = part.charged - before;
        if result == SegmentResult::Stored {
            // Reserve ahead of the writer when the budget allows, and offer it for pre-faulting.
            if let Some((from, to, ahead)) = part.reserve_ahead() {
                if Self::fits_with(reassembly, stored, proven, added + ahead, 0, cx) {
                    let b = part.charged;
                    part.commit_ahead(from, to);
                    added += part.charged - b;
                    if cx.prefault.len() >= MAX_PREFAULT_HINTS {
                        cx.prefault.pop_front();
                    }
                    cx.prefault.push_back((part.data.as_ptr() as usize + from, to - from));
                }
            }
        }
        self.stored = stored;
        self.charge(added, cx);
        if result == SegmentResult::Complete {
            if let Some(part) = self.partials.remove(&h.msg_id) {
                if self.partials.is_empty() {
                    self.partial_check = None;
                }
                self.release(&part, cx);
                self.deliver(peer, h.msg_id, part.data, cx);
            }
        }
        Some(true)
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
        let full = Partial::full_cost(h.msg_len, h.seg_size);
        if full > config.max_reassembly_per_peer || full > config.max_reassembly_total {
            cx.stats.dropped_oversized_announcement += 1;
            self.refuse(h.pn, REFUSE_FINAL);
            return false;
        }
        // What the first segment costs: the bookkeeping (and a small message's buffer) plus the
        // regions it lands in. A proven peer's messages, once complete, must all fit its share
        // (what it has open was admitted to complete: see the module docs); an unproven peer's
        // buffers (address space) are bounded by `max_message_size`.
        let base = Partial::base_cost(h.msg_len, h.seg_size);
        let start = h.seg_index as usize * h.seg_size as usize;
        let first = Partial::region_span_cost(h.msg_len, start, start + payload.len());
        let open_fits = if self.proven {
            self.committed + full <= config.max_reassembly_per_peer
        } else {
            self.announced + u64::from(h.msg_len) <= config.max_message_size.min(u64::from(u32::MAX))
        };
        if !open_fits || !self.fits(base + first, payload.len(), cx) {
            cx.stats.dropped_reassembly_full += 1;
            self.refuse(h.pn, REFUSE_BUSY);
            return false;
        }
        let mut part = Partial::new(h.msg_len, h.seg_size, now);
        if part.store(h.msg_len, h.seg_size, h.seg_index, payload, now) != SegmentResult::Stored {
            cx.stats.dropped_malformed += 1;
            return false;
        }
        self.announced += u64::from(h.msg_len);
        self.committed += full;
        self.stored += payload.len();
        self.charge(part.charged, cx);
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
}
