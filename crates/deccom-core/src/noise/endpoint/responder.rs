//! The responder side of handshakes: an incoming initiation passes the per-source rate limit
//! and, under load, the cookie check before any public-key operation; then XX keeps a bounded
//! half-open handshake until message 3 and IK prepares the next session at once.

use std::fmt;
use std::hash::Hash;
use std::time::Instant;

use snow::HandshakeState;

use super::handshake::{first32, split_suite, with_choice, HalfOpen, HS_BUF, MAX_HANDSHAKE_READ_FAILURES};
use super::session::{seal, NextSession, Session};
use super::Endpoint;
use crate::noise::primitives::{Suite, Transport};
use crate::noise::replay::ReplayWindow;
use crate::noise::wire::{self, Pattern, KEY_LEN, MAC_LEN, TAG_LEN};

impl<P: Copy + Eq + Hash + fmt::Debug> Endpoint<P> {
    /// As [`Self::rebuild_initiator`], for a responder XX handshake: replay message 1, re-write
    /// message 2 and check it is byte-identical to the one sent.
    pub(super) fn rebuild_responder(&self, ho: &HalfOpen<P>) -> Option<HandshakeState> {
        let mut hs = self.build_hs(Pattern::Xx, false, None, &ho.seed)?;
        let mut payload = [0u8; HS_BUF];
        hs.read_message(&ho.msg1, &mut payload).ok()?;
        let mut buf = [0u8; HS_BUF];
        let n = hs.write_message(&with_choice(&self.binding, ho.choice), &mut buf).ok()?;
        (ho.msg2.get(9..) == Some(&buf[..n])).then_some(hs)
    }

    /// Drops the initiation held for `peer` (we answer the peer's instead).
    fn yield_initiation(&mut self, peer: P) {
        if let Some(init) = self.peers.get_mut(&peer).and_then(|p| p.initiation.take()) {
            self.index.remove(&init.local);
            self.stats.simultaneous_open_yielded += 1;
        }
    }

    fn send_cookie(&mut self, peer: P, sender: u32) {
        let cookie = Self::cookie_for(&self.cookie_secret, &peer);
        let mut out = Vec::with_capacity(5 + MAC_LEN);
        wire::encode_cookie(sender, &cookie, &mut out);
        self.queue_transmit(peer, out);
        self.stats.cookie_replies_sent += 1;
    }

    pub(super) fn on_init(
        &mut self,
        now: Instant,
        peer: P,
        sender: u32,
        pattern: Pattern,
        mac: Option<[u8; MAC_LEN]>,
        noise: &[u8],
    ) {
        let Some(e_remote) = first32(noise) else {
            self.stats.dropped_malformed += 1;
            return;
        };
        // Address validation: our XX message 2 is only sent to an initiation at least as long
        // (padded), or to one whose cookie MAC proves the initiator receives at its address. An
        // unpadded one without a valid MAC gets a cookie reply (21 bytes, shorter than it).
        self.rotate_cookie_secret(now);
        let cookie_ok =
            mac.is_some_and(|m| self.cookie_mac_valid(&peer, sender, pattern, noise, &m));
        // XX message 1's payload is plaintext: an initiation that offers a suite (its payload is
        // the whole padding) gets the choice byte in the response, one byte more.
        let offers = pattern == Pattern::Xx && noise.len() == KEY_LEN + wire::XX_INIT_PADDING;
        let padded = pattern == Pattern::Ik
            || wire::INIT_HEADER_LEN + noise.len()
                >= wire::RESPONSE_HEADER_LEN + KEY_LEN + KEY_LEN + TAG_LEN + self.binding.len()
                    + if offers { wire::SUITE_LEN } else { 0 }
                    + TAG_LEN;
        if !padded && !cookie_ok {
            if !self.sources.allow(now, peer) {
                self.stats.dropped_rate_limited += 1;
                return;
            }
            self.stats.unpadded_initiations += 1;
            self.send_cookie(peer, sender);
            return;
        }
        let mut lose_tie = false;
        if let Some(ps) = self.peers.get(&peer) {
            // Re-sent initiation of a session we already have (or an old one replayed).
            let known = ps
                .current
                .iter()
                .chain(ps.previous.iter())
                .any(|s| s.init_e == e_remote);
            if known {
                self.stats.dropped_replay += 1;
                return;
            }
            if let Some(next) = &ps.next {
                if next.session.init_e == e_remote {
                    let msg2 = next.msg2.clone();
                    self.queue_transmit(peer, msg2);
                    return;
                }
            }
            // Simultaneous open: the initiation with the lower ephemeral key wins on both sides.
            if let Some(init) = &ps.initiation {
                if init.e == e_remote {
                    self.stats.dropped_reflected += 1;
                    return;
                }
                if init.e < e_remote {
                    self.stats.simultaneous_open_ignored += 1;
                    return;
                }
                lose_tie = true;
            }
        }
        if pattern == Pattern::Xx {
            if let Some(&local) = self.half_open_by_remote.get(&(peer, sender)) {
                if let Some(ho) = self.half_open.get(&local) {
                    // The same message 1 re-sent (not only the same key: the padding is part
                    // of the transcript) gets the same message 2.
                    if ho.msg1 == noise {
                        let msg2 = ho.msg2.clone();
                        self.queue_transmit(peer, msg2);
                        return;
                    }
                }
            }
        }

        // DoS defences, before any public-key operation.
        if !self.sources.allow(now, peer) {
            self.stats.dropped_rate_limited += 1;
            return;
        }
        if !cookie_ok {
            let under_load = self.half_open.len() >= self.config.cookie_threshold;
            let global_ok = !under_load
                && self.global.take(
                    now,
                    self.config.rate_limit_global,
                    self.config.rate_limit_global,
                );
            if !global_ok {
                self.send_cookie(peer, sender);
                return;
            }
        }

        match pattern {
            Pattern::Xx => self.respond_xx(now, peer, sender, e_remote, noise, lose_tie),
            Pattern::Ik => self.respond_ik(now, peer, sender, e_remote, noise, lose_tie),
        }
    }

    fn respond_xx(
        &mut self,
        now: Instant,
        peer: P,
        sender: u32,
        e_remote: [u8; 32],
        noise: &[u8],
        lose_tie: bool,
    ) {
        let Some((mut hs, seed)) = self.new_handshake(Pattern::Xx, false, None) else {
            return;
        };
        let mut payload = [0u8; HS_BUF];
        let Ok(len) = hs.read_message(noise, &mut payload) else {
            self.stats.handshakes_failed_decrypt += 1;
            return;
        };
        // The whole padding is the offer byte and zeros; any other payload offers nothing.
        let choice = (len == wire::XX_INIT_PADDING)
            .then(|| Suite::choose(payload[0], self.prefer_aes_gcm));
        let mut buf = [0u8; HS_BUF];
        let Ok(n) = hs.write_message(&with_choice(&self.binding, choice), &mut buf) else {
            return;
        };
        if lose_tie {
            self.yield_initiation(peer);
        }
        if let Some(old) = self.half_open_by_remote.remove(&(peer, sender)) {
            self.half_open.remove(&old);
        }
        while self.half_open.len() >= self.config.max_half_open {
            let oldest = self
                .half_open
                .iter()
                .min_by_key(|(_, h)| h.created)
                .map(|(i, h)| (*i, h.peer, h.remote));
            let Some((i, p, r)) = oldest else { break };
            self.half_open.remove(&i);
            self.half_open_by_remote.remove(&(p, r));
            self.stats.half_open_evicted += 1;
        }
        let local = self.alloc_index();
        let mut msg2 = Vec::with_capacity(9 + n);
        wire::encode_response(local, sender, &buf[..n], &mut msg2);
        let expires = now + self.handshake_span();
        self.half_open.insert(
            local,
            HalfOpen {
                peer,
                remote: sender,
                hs,
                seed,
                msg1: noise.to_vec(),
                choice,
                failures: 0,
                msg2: msg2.clone(),
                init_e: e_remote,
                created: now,
                expires,
            },
        );
        self.half_open_by_remote.insert((peer, sender), local);
        self.queue_transmit(peer, msg2);
    }

    fn respond_ik(
        &mut self,
        now: Instant,
        peer: P,
        sender: u32,
        e_remote: [u8; 32],
        noise: &[u8],
        lose_tie: bool,
    ) {
        let Some((mut hs, _)) = self.new_handshake(Pattern::Ik, false, None) else {
            return;
        };
        let mut payload = [0u8; HS_BUF];
        let Ok(len) = hs.read_message(noise, &mut payload) else {
            self.stats.handshakes_failed_decrypt += 1;
            return;
        };
        let Some(rs) = hs.get_remote_static().and_then(first32) else {
            self.stats.handshakes_failed_decrypt += 1;
            return;
        };
        // The binding, then the initiator's suite offer if it sent one.
        let (binding, offer) = split_suite(&payload[..len]);
        let (remote_identity, remote_id) = match self.bindings.verify(binding, &rs) {
            Ok(v) => v,
            Err(e) => {
                self.count_binding_failure(e);
                return;
            }
        };
        let choice = offer.map(|o| Suite::choose(o, self.prefer_aes_gcm));
        let mut buf = [0u8; HS_BUF];
        let Ok(n) = hs.write_message(&with_choice(&self.binding, choice), &mut buf) else {
            return;
        };
        let handshake_hash = hs.get_handshake_hash().to_vec();
        let Some(transport) = Transport::from_handshake(&mut hs, choice.unwrap_or(Suite::ChaChaPoly)) else {
            return;
        };
        self.ensure_peer(now, peer);
        if lose_tie {
            self.yield_initiation(peer);
        }
        let local = self.alloc_index();
        let mut msg2 = Vec::with_capacity(9 + n);
        wire::encode_response(local, sender, &buf[..n], &mut msg2);
        let session = Session {
            local,
            remote: sender,
            transport,
            send_counter: 0,
            replay: ReplayWindow::new(self.config.replay_window_bits),
            created: now,
            initiator: false,
            confirm: None,
            init_e: e_remote,
            remote_identity,
            remote_id,
            remote_static: rs,
            handshake_hash,
            retire_at: None,
            suites_aware: offer.is_some(),
        };
        let expires = now + self.handshake_span();
        let Some(ps) = self.peers.get_mut(&peer) else {
            return;
        };
        if let Some(old) = ps.next.take() {
            self.index.remove(&old.session.local);
        }
        ps.next = Some(NextSession {
            session,
            msg2: msg2.clone(),
            expires,
        });
        self.index.insert(local, peer);
        self.queue_transmit(peer, msg2);
    }

    pub(super) fn on_final(&mut self, now: Instant, peer: P, receiver: u32, noise: &[u8]) {
        let Some(ho) = self.half_open.get_mut(&receiver) else {
            // Message 3 re-sent for a session we completed: confirm again.
            if self.index.get(&receiver) == Some(&peer) {
                let ps = self.peers.get_mut(&peer);
                let d = ps
                    .and_then(|p| p.current.as_mut())
                    .filter(|s| s.local == receiver)
                    .and_then(|s| seal(s, &[]));
                if let Some(d) = d {
                    self.queue_transmit(peer, d);
                    return;
                }
            }
            self.stats.dropped_unknown_index += 1;
            return;
        };
        if ho.peer != peer {
            self.stats.dropped_misattributed += 1;
            return;
        }
        let mut payload = [0u8; HS_BUF];
        let Ok(len) = ho.hs.read_message(noise, &mut payload) else {
            self.stats.handshakes_failed_decrypt += 1;
            if let Some(mut ho) = self.half_open.remove(&receiver) {
                ho.failures += 1;
                let rebuilt = if ho.failures < MAX_HANDSHAKE_READ_FAILURES {
                    self.rebuild_responder(&ho)
                } else {
                    None
                };
                match rebuilt {
                    Some(hs) => {
                        ho.hs = hs;
                        self.half_open.insert(receiver, ho);
                    }
                    None => {
                        self.half_open_by_remote.remove(&(ho.peer, ho.remote));
                    }
                }
            }
            return;
        };
        let Some(ho) = self.half_open.remove(&receiver) else {
            return;
        };
        self.half_open_by_remote.remove(&(peer, ho.remote));
        let HalfOpen {
            remote,
            mut hs,
            init_e,
            choice,
            ..
        } = ho;
        let verified = self.verify_remote(&hs, &payload[..len]);
        let ((remote_identity, remote_id), rs) = match verified {
            Ok(v) => v,
            Err(e) => {
                self.count_binding_failure(e);
                return;
            }
        };
        let handshake_hash = hs.get_handshake_hash().to_vec();
        let Some(transport) = Transport::from_handshake(&mut hs, choice.unwrap_or(Suite::ChaChaPoly)) else {
            return;
        };
        self.ensure_peer(now, peer);
        // A fresh session exists now; a handshake of ours still in flight is redundant.
        if let Some(init) = self.peers.get_mut(&peer).and_then(|p| p.initiation.take()) {
            self.index.remove(&init.local);
        }
        let session = Session {
            local: receiver,
            remote,
            transport,
            send_counter: 0,
            replay: ReplayWindow::new(self.config.replay_window_bits),
            created: now,
            initiator: false,
            confirm: None,
            init_e,
            remote_identity,
            remote_id,
            remote_static: rs,
            handshake_hash,
            retire_at: None,
            suites_aware: choice.is_some(),
        };
        self.index.insert(receiver, peer);
        self.promote(now, peer, session, true);
    }
}
