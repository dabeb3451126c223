//! An ACK arrives: newly acknowledged packets and completed messages, refusals (admission
//! retries or final failure), RTT samples, and loss detection (RFC 9002 §6.1).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::peer::{Cx, Peer};
use super::send::OutMsg;
use super::{Event, FailReason, LOSS_RUN_CONGESTION, PACKET_THRESHOLD};
use crate::rudp::recovery::queue_delay_threshold;
use crate::rudp::wire::{AckFrame, REFUSE_FINAL};

/// Longest wait between admission retries of a message the receiver had no room for.
const MAX_ADMISSION_RETRY: Duration = Duration::from_secs(1);

/// Parks segment `seg` of the waiting message `m` (id `msg`) for its admission retry, and
/// schedules that retry if none is: after `min_rto`, doubling per retry up to
/// [`MAX_ADMISSION_RETRY`].
fn park(
    m: &mut OutMsg,
    deferred: &mut BTreeSet<(Instant, u64)>,
    now: Instant,
    msg: u64,
    seg: u32,
    min_rto: Duration,
) {
    if !m.parked.contains(&seg) {
        m.parked.push_back(seg);
    }
    if !m.retry_scheduled {
        let delay = min_rto
            .saturating_mul(1 << m.retries.min(10))
            .min(MAX_ADMISSION_RETRY);
        m.retries += 1;
        m.retry_scheduled = true;
        deferred.insert((now + delay, msg));
    }
}

impl Peer {
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

    pub(super) fn on_ack<P: Copy>(
        &mut self,
        now: Instant,
        peer: P,
        frame: &AckFrame,
        cx: &mut Cx<'_, P>,
    ) {
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
        // Messages sent with progress reporting whose report is due after this ACK.
        let mut progressed: Vec<u64> = Vec::new();
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
                self.cc.on_ack(now, sent, cwnd_limited, self.rtt.smoothed());
                if let Some(m) = self.out.get_mut(&msg) {
                    if m.waiting {
                        // Admitted: release the parked segments.
                        m.waiting = false;
                        m.retries = 0;
                        self.retx.extend(m.parked.drain(..).map(|s| (msg, s)));
                    }
                    if m.ack(seg) {
                        let id = m.id;
                        m.report_progress(now, peer, cx.events);
                        self.out.remove(&msg);
                        completed = true;
                        cx.stats.messages_sent += 1;
                        cx.events.push_back(Event::Sent { peer, id });
                    } else if m.progress_due(now) {
                        progressed.push(msg);
                    }
                }
                pn = self.find_unacked(pn + 1);
            }
        }
        for msg in progressed {
            if let Some(m) = self.out.get_mut(&msg) {
                m.report_progress(now, peer, cx.events);
            }
        }
        if completed {
            self.refresh_floor();
            self.stop_tracking_if_idle();
            // The receiver delivered a message and freed its reassembly memory: the oldest
            // message waiting for admission retries now instead of after its backoff.
            self.retry_oldest_waiting(now);
        }
        self.largest_acked = Some(self.largest_acked.map_or(largest, |l| l.max(largest)));
        if newly_acked {
            self.pto_count = 0;
            self.last_progress = now;
            self.busy_since_progress = false;
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
    /// parked and the oldest of them is retried after `min_rto`, doubling per retry up to 1 s
    /// (or at once when another message to the peer completes); the first acknowledged segment
    /// releases the rest. A busy refusal does not count as progress for the peer timeout. Final:
    /// the message fails with [`FailReason::Refused`].
    ///
    /// Either answer shows that the path delivers: the probe-timeout backoff is reset as for an
    /// acknowledgement. Otherwise a sender that loses packets while the receiver only refuses
    /// backs its probe timeout off towards `max_rto` and collapses its window, and then sends a
    /// few datagrams per probe timeout, all of them to refused messages, while messages the
    /// receiver holds memory for (and would take) wait behind them until the peer timeout. For
    /// the same reason a lost segment of a waiting message is parked, not retransmitted
    /// ([`Peer::detect_lost`]).
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
            // The packet arrived: the path works (see above).
            self.pto_count = 0;
            let Some(m) = self.out.get_mut(&msg) else {
                continue;
            };
            if reason == REFUSE_FINAL {
                // A final answer: the message resolves (fails) now.
                self.last_progress = now;
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
                // Busy is no progress: a receiver that only refuses does not keep the message
                // alive past the peer timeout (it then fails with FailReason::Busy).
                self.busy_since_progress = true;
                m.waiting = true;
                park(m, &mut self.deferred, now, msg, seg, cx.config.min_rto);
            }
        }
        if changed {
            self.refresh_floor();
        }
    }

    /// Moves the admission retry of the oldest message waiting for admission (lowest id) to
    /// `now`, resetting its backoff. One message per completion: each retry costs a datagram, and
    /// the oldest is served first.
    fn retry_oldest_waiting(&mut self, now: Instant) {
        let Some((&msg, m)) = self.out.iter_mut().find(|(_, m)| m.waiting) else {
            return;
        };
        m.retries = 0;
        if m.retry_scheduled {
            self.deferred.retain(|&(_, id)| id != msg);
        }
        m.retry_scheduled = true;
        self.deferred.insert((now, msg));
    }

    /// Whether our own datagrams are queueing on the path, so that a loss there is a full queue
    /// however isolated it looks (a paced sender meets a full drop-tail queue one datagram at a
    /// time): the congestion window, not the receiver's, limits us, and the smoothed RTT exceeds
    /// the minimum by HyStart's queue threshold ([`queue_delay_threshold`]). When the receiver's
    /// window is the limit, the queue it allows is the receiver's socket buffer, which that
    /// window keeps from overflowing.
    ///
    /// [`queue_delay_threshold`]: crate::rudp::recovery::queue_delay_threshold
    fn queue_building(&self) -> bool {
        if self.cc.window() > self.peer_window || !self.rtt.has_sample() {
            return false;
        }
        let min = self.rtt.min();
        self.rtt.smoothed() >= min + queue_delay_threshold(min)
    }

    /// RFC 9002 §6.1: declares lost every in-flight packet older than the largest acknowledged
    /// by `PACKET_THRESHOLD` packets or by the loss delay; arms `loss_time` for the next one.
    pub(super) fn detect_lost<P>(&mut self, now: Instant, cx: &mut Cx<'_, P>) {
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
            if let Some(m) = self.out.get_mut(&front.msg) {
                if m.is_acked(front.seg) {
                    // Nothing to repair.
                } else if m.waiting {
                    // The receiver has no room for this message: the segment waits with the
                    // refused ones for the admission retry, and the window goes to messages
                    // the receiver takes.
                    park(m, &mut self.deferred, now, front.msg, front.seg, cx.config.min_rto);
                } else {
                    self.retx.push_back((front.msg, front.seg));
                }
            }
            largest_lost = Some(front.sent);
        }
        if let Some(sent) = largest_lost {
            congested |= self.queue_building();
            if !congested {
                // Isolated losses: noise on the path (or a faulty link), not a full queue.
                cx.stats.isolated_losses += 1;
            } else if self.cc.on_loss(now, sent) {
                cx.stats.congestion_events += 1;
            }
        }
    }
}
