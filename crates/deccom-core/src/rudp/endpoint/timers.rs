//! Per-peer timers: loss detection, the probe timeout (RFC 9002 §6.2), the deadline of
//! partial messages, and the peer timeout.

use std::time::Instant;

use super::peer::{Cx, Peer};
use super::{Config, FailReason, PERSISTENT_CONGESTION_PTOS, PROBES_PER_PTO};

/// Partial messages given up (timed out) that a receiver remembers, to refuse their segments.
const MAX_ABANDONED: usize = 64;

impl Peer {
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

    pub(super) fn next_timeout(&self, config: &Config) -> Option<Instant> {
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

    pub(super) fn on_timeout<P: Copy>(&mut self, now: Instant, peer: P, cx: &mut Cx<'_, P>) {
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
            let reason = if self.busy_since_progress {
                FailReason::Busy
            } else {
                FailReason::PeerUnreachable
            };
            self.fail_all(peer, reason, cx);
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
        let expired: Vec<u64> = self
            .partials
            .iter()
            .filter(|(_, p)| p.last_activity + timeout <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            if let Some(part) = self.partials.remove(&id) {
                self.release(&part, cx);
                cx.stats.partial_timeouts += 1;
                if self.abandoned.len() >= MAX_ABANDONED {
                    self.abandoned.pop_front();
                }
                self.abandoned.push_back(id);
            }
        }
        self.partial_check = self
            .partials
            .values()
            .map(|p| p.last_activity + timeout)
            .min();
    }
}
