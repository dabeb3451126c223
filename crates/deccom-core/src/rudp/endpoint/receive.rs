//! The receive path: a DATA datagram arrives: epoch check, the sender's floor, reassembly
//! within the memory limits (or a refusal), delivery exactly once, and ACK scheduling.

use std::time::Instant;

use super::peer::{Cx, Peer};
use super::Event;
use crate::rudp::recv::{Partial, PnInsert, SegmentResult};
use crate::rudp::wire::{segment_count, DataHeader, REFUSE_BUSY, REFUSE_FINAL};

/// Refusals a receiver queues for its next ACKs (more are dropped silently: they look lost).
const MAX_PENDING_REFUSALS: usize = 64;

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
}
