//! Per-peer timers: retransmission or failure of our initiation (with the one XX fallback of a
//! stale IK key), retransmission of XX message 3 until confirmed, expiry of sessions (too old,
//! never confirmed, replaced, or IK sessions the initiator never took into use), and rekeys (by
//! age here; by message count from the data path, through `start_rekey`).

use std::fmt;
use std::hash::Hash;
use std::time::{Duration, Instant};

use super::session::Session;
use super::{DisconnectReason, Endpoint, Event};
use crate::noise::error::HandshakeError;
use crate::noise::wire::Pattern;

impl<P: Copy + Eq + Hash + fmt::Debug> Endpoint<P> {
    pub(super) fn rekey_age(&self, session: &Session) -> Duration {
        let t = self.config.rekey_after_time;
        if session.initiator {
            t
        } else {
            t.saturating_add(t / 8)
        }
    }

    /// Starts the rekey [`Endpoint::seal_current`] found due, if any.
    pub(super) fn start_rekey(&mut self, now: Instant, peer: P, rekey: Option<[u8; 32]>) {
        if let Some(rs) = rekey {
            self.start_initiation(now, peer, Some(rs), true, false);
        }
    }

    pub(super) fn peer_timeout(&mut self, now: Instant, peer: P) {
        // Our initiation: retransmit or give up.
        let due = self
            .peers
            .get(&peer)
            .and_then(|p| p.initiation.as_ref())
            .filter(|i| i.next_at <= now)
            .map(|i| (i.attempts, i.pattern, i.is_rekey, i.fell_back, i.triggered));
        if let Some((attempts, pattern, is_rekey, fell_back, triggered)) = due {
            if attempts >= self.config.handshake_retries {
                if let Some(init) = self.peers.get_mut(&peer).and_then(|p| p.initiation.take()) {
                    self.index.remove(&init.local);
                }
                if pattern == Pattern::Ik && !is_rekey && !fell_back && !triggered {
                    // The remembered static key may be stale: try first contact once.
                    self.start_initiation(now, peer, None, false, true);
                } else {
                    self.stats.handshakes_failed_timeout += 1;
                    self.push_event(Event::HandshakeFailed {
                        peer,
                        reason: HandshakeError::Timeout,
                    });
                    self.drop_pending_without_session(peer);
                }
            } else {
                let next_at = now + self.delay(attempts + 1);
                if let Some(init) = self
                    .peers
                    .get_mut(&peer)
                    .and_then(|p| p.initiation.as_mut())
                {
                    init.attempts += 1;
                    init.next_at = next_at;
                }
                // A triggered initiation is re-sent only in answer to the peer's datagrams.
                if !triggered {
                    self.send_init(now, peer);
                }
            }
        }

        let retries = self.config.handshake_retries;
        let reject_after = self.config.reject_after_time;
        let mut resend = None;
        let mut lost_current = None;
        let mut rekey = None;
        {
            let Some(ps) = self.peers.get_mut(&peer) else {
                return;
            };
            // Confirmation of an XX session we initiated.
            let mut unconfirmed = false;
            if let Some(cur) = ps.current.as_mut() {
                if let Some(c) = cur.confirm.as_mut() {
                    if c.next_at <= now {
                        if c.attempts >= retries {
                            unconfirmed = true;
                        } else {
                            c.attempts += 1;
                            c.next_at = now
                                + self
                                    .config
                                    .handshake_timeout
                                    .saturating_mul(1u32 << c.attempts.min(16));
                            resend = Some(c.datagram.clone());
                        }
                    }
                }
            }
            if unconfirmed {
                lost_current = Some(DisconnectReason::Unconfirmed);
            } else if ps
                .current
                .as_ref()
                .is_some_and(|s| now.saturating_duration_since(s.created) >= reject_after)
            {
                lost_current = Some(DisconnectReason::Expired);
            }
            if let Some(reason) = lost_current {
                if let Some(s) = ps.current.take() {
                    self.index.remove(&s.local);
                }
                self.stats.sessions_expired += 1;
                if reason == DisconnectReason::Unconfirmed {
                    self.stats.handshakes_failed_timeout += 1;
                }
            }
            if ps.next.as_ref().is_some_and(|n| n.expires <= now) {
                if let Some(n) = ps.next.take() {
                    self.index.remove(&n.session.local);
                }
            }
            if ps
                .previous
                .as_ref()
                .is_some_and(|s| s.retire_at.is_some_and(|t| t <= now))
            {
                if let Some(s) = ps.previous.take() {
                    self.index.remove(&s.local);
                }
            }
            if ps.initiation.is_none() {
                if let Some(cur) = ps.current.as_ref() {
                    let t = self.config.rekey_after_time;
                    let age = if cur.initiator {
                        t
                    } else {
                        t.saturating_add(t / 8)
                    };
                    if now.saturating_duration_since(cur.created) >= age {
                        rekey = Some(cur.remote_static);
                    }
                }
            }
        }
        if let Some(d) = resend {
            self.queue_transmit(peer, d);
        }
        if let Some(reason) = lost_current {
            if reason == DisconnectReason::Unconfirmed {
                self.push_event(Event::HandshakeFailed {
                    peer,
                    reason: HandshakeError::Timeout,
                });
            }
            if let Some(ps) = self.peers.get_mut(&peer) {
                if ps.connected_reported {
                    ps.connected_reported = false;
                    self.push_event(Event::Disconnected { peer, reason });
                }
            }
        }
        if let Some(rs) = rekey {
            self.start_initiation(now, peer, Some(rs), true, false);
        }
    }
}
