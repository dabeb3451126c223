//! Per-peer state and sessions: sealing outgoing data (and the rekey check on the data path),
//! opening transport datagrams with the replay window, making a finished handshake the current
//! session (flushing what waited for it), reconnecting on an unknown session, and the bounded
//! peer table.

use std::collections::VecDeque;
use std::fmt;
use std::hash::Hash;
use std::time::Instant;

use super::handshake::Initiation;
use super::sign::SignRx;
use super::{DisconnectReason, Endpoint, Event, Mode};
use crate::identity::{NodeId, PublicIdentity};
use crate::noise::error::{HandshakeError, NoiseError};
use crate::noise::primitives::{Suite, Transport};
use crate::noise::replay::{Replay, ReplayWindow};
use crate::noise::wire::{self, TAG_LEN, TRANSPORT_HEADER_LEN};

/// Sessions refuse to send once their counter reaches this (far above any sane rekey limit).
const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 16);

/// Retransmission state of one handshake message.
#[derive(Debug)]
pub(super) struct Retransmit {
    pub(super) datagram: Vec<u8>,
    pub(super) attempts: u32,
    pub(super) next_at: Instant,
}

/// An established session (one direction pair of keys).
pub(super) struct Session {
    pub(super) local: u32,
    pub(super) remote: u32,
    pub(super) transport: Transport,
    pub(super) send_counter: u64,
    pub(super) replay: ReplayWindow,
    pub(super) created: Instant,
    pub(super) initiator: bool,
    /// XX initiator: message 3, re-sent until the responder confirms with any transport datagram.
    pub(super) confirm: Option<Retransmit>,
    /// The initiator's ephemeral key (to recognise re-sent initiations).
    pub(super) init_e: [u8; 32],
    pub(super) remote_identity: PublicIdentity,
    pub(super) remote_id: NodeId,
    pub(super) remote_static: [u8; 32],
    pub(super) handshake_hash: Vec<u8>,
    /// When a replaced session stops accepting datagrams.
    pub(super) retire_at: Option<Instant>,
    /// The peer showed in this handshake that it reads suite offers (it offered one, or
    /// answered ours with a choice): a later IK initiation to it may carry an offer.
    pub(super) suites_aware: bool,
}

/// An IK responder session waiting for the initiator's first transport datagram.
pub(super) struct NextSession {
    pub(super) session: Session,
    pub(super) msg2: Vec<u8>,
    pub(super) expires: Instant,
}

pub(super) struct PeerState {
    pub(super) current: Option<Session>,
    pub(super) previous: Option<Session>,
    pub(super) next: Option<NextSession>,
    pub(super) initiation: Option<Initiation>,
    pub(super) pending: VecDeque<Vec<u8>>,
    pub(super) identity: Option<(PublicIdentity, NodeId)>,
    /// The only identity a handshake at this address may authenticate (set by a dial to a node
    /// id, [`super::Endpoint::expect_identity`]).
    pub(super) expected: Option<NodeId>,
    pub(super) remote_static: Option<[u8; 32]>,
    /// The last session's peer reads suite offers (see [`Session::suites_aware`]).
    pub(super) suites_aware: bool,
    pub(super) sign_rx: Option<SignRx>,
    pub(super) last_active: Instant,
    pub(super) connected_reported: bool,
    pub(super) unknown_trigger_at: Option<Instant>,
}

impl PeerState {
    fn new(now: Instant) -> Self {
        PeerState {
            current: None,
            previous: None,
            next: None,
            initiation: None,
            pending: VecDeque::new(),
            identity: None,
            expected: None,
            remote_static: None,
            suites_aware: false,
            sign_rx: None,
            last_active: now,
            connected_reported: false,
            unknown_trigger_at: None,
        }
    }

    fn indices(&self) -> impl Iterator<Item = u32> + '_ {
        self.current
            .iter()
            .chain(self.previous.iter())
            .map(|s| s.local)
            .chain(self.next.iter().map(|n| n.session.local))
            .chain(self.initiation.iter().map(|i| i.local))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Current,
    Previous,
    Next,
}

/// The transport datagram carrying `plaintext`; `None` when the session may not send any more.
pub(super) fn seal(session: &mut Session, plaintext: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(TRANSPORT_HEADER_LEN + plaintext.len() + TAG_LEN);
    out.resize(TRANSPORT_HEADER_LEN, 0);
    out.extend_from_slice(plaintext);
    seal_in_place(session, &mut out, 0).then_some(out)
}

/// Seals the transport datagram whose header goes at `out[at..at + TRANSPORT_HEADER_LEN]` (room
/// the caller left) and whose plaintext is the rest of `out`: writes the header, encrypts in
/// place, appends the tag. False (and the bytes as they were) when the session may not send any
/// more.
pub(super) fn seal_in_place(session: &mut Session, out: &mut Vec<u8>, at: usize) -> bool {
    let counter = session.send_counter;
    let body = at + TRANSPORT_HEADER_LEN;
    if counter >= REJECT_AFTER_MESSAGES || out.len() < body {
        return false;
    }
    let Some(tag) = session.transport.seal_in_place(counter, &mut out[body..]) else {
        return false;
    };
    out[at..body].copy_from_slice(&wire::transport_header(session.remote, counter));
    out.extend_from_slice(&tag);
    session.send_counter += 1;
    true
}

impl<P: Copy + Eq + Hash + fmt::Debug> Endpoint<P> {
    /// Seals with `peer`'s current session, if the peer is known and that session may still
    /// send (`seal` says whether it sealed), with one peer lookup: this runs per datagram. On
    /// success counts the message and returns `Some(rekey)`, where `rekey` holds the remote
    /// static key when a rekey is due and none runs (see [`Endpoint::start_rekey`]).
    pub(super) fn seal_current(
        &mut self,
        now: Instant,
        peer: P,
        seal: impl FnOnce(&mut Session) -> bool,
    ) -> Option<Option<[u8; 32]>> {
        let reject_after = self.config.reject_after_time;
        let (rekey_messages, rekey_time) = (
            self.config.rekey_after_messages,
            self.config.rekey_after_time,
        );
        let ps = self.peers.get_mut(&peer)?;
        ps.last_active = now;
        let session = ps
            .current
            .as_mut()
            .filter(|s| now.saturating_duration_since(s.created) < reject_after)?;
        if !seal(session) {
            return None;
        }
        let due = session.send_counter >= rekey_messages
            || now.saturating_duration_since(session.created) >= rekey_time;
        let rekey = (due && ps.initiation.is_none()).then_some(session.remote_static);
        self.stats.messages_sent += 1;
        Some(rekey)
    }

    /// Seals `plaintext` for `peer` into the transmit queue, or queues it behind a handshake.
    pub(super) fn send_encrypted(
        &mut self,
        now: Instant,
        peer: P,
        plaintext: &[u8],
    ) -> Result<(), NoiseError> {
        self.ensure_peer(now, peer);
        let mut datagram = None;
        let sealed = self.seal_current(now, peer, |s| {
            datagram = seal(s, plaintext);
            datagram.is_some()
        });
        if let Some(rekey) = sealed {
            if let Some(d) = datagram {
                self.transmit.push_back((peer, d));
            }
            self.start_rekey(now, peer, rekey);
            return Ok(());
        }
        let Some(ps) = self.peers.get_mut(&peer) else {
            return Err(NoiseError::QueueFull { queue: "pending" });
        };
        if ps.pending.len() >= self.config.max_pending_per_peer {
            return Err(NoiseError::QueueFull { queue: "pending" });
        }
        ps.pending.push_back(plaintext.to_vec());
        if let Some(init) = ps.initiation.as_mut() {
            // We want this peer ourselves now: a normal dial, retransmitted by the timer.
            init.triggered = false;
        } else {
            let rs = ps.remote_static;
            self.start_initiation(now, peer, rs, false, false);
        }
        Ok(())
    }

    /// Creates state for `peer` if needed, evicting the least valuable peer at the limit.
    pub(super) fn ensure_peer(&mut self, now: Instant, peer: P) {
        if let Some(ps) = self.peers.get_mut(&peer) {
            ps.last_active = now;
            return;
        }
        if self.peers.len() >= self.config.max_sessions {
            let victim = self
                .peers
                .iter()
                .min_by_key(|(_, s)| (s.current.is_some(), s.last_active))
                .map(|(p, _)| *p);
            if let Some(victim) = victim {
                self.remove_peer(victim, DisconnectReason::Evicted);
                self.stats.peers_evicted += 1;
            }
        }
        self.peers.insert(peer, PeerState::new(now));
    }

    pub(super) fn remove_peer(&mut self, peer: P, reason: DisconnectReason) {
        if let Some(ps) = self.peers.remove(&peer) {
            for i in ps.indices() {
                self.index.remove(&i);
            }
            self.stats.dropped_no_session += ps.pending.len() as u64;
            if ps.connected_reported {
                self.push_event(Event::Disconnected { peer, reason });
            }
        }
    }

    pub(super) fn on_transport(
        &mut self,
        now: Instant,
        peer: P,
        receiver: u32,
        counter: u64,
        ct: &[u8],
    ) {
        let Some(&owner) = self.index.get(&receiver) else {
            self.stats.dropped_unknown_index += 1;
            let datagram_len = wire::TRANSPORT_HEADER_LEN + ct.len();
            self.maybe_reconnect(now, peer, datagram_len);
            return;
        };
        if owner != peer {
            self.stats.dropped_misattributed += 1;
            return;
        }
        let Some(ps) = self.peers.get_mut(&peer) else {
            self.stats.dropped_unknown_index += 1;
            return;
        };
        let slot = if ps.current.as_ref().is_some_and(|s| s.local == receiver) {
            Slot::Current
        } else if ps.previous.as_ref().is_some_and(|s| s.local == receiver) {
            Slot::Previous
        } else if ps
            .next
            .as_ref()
            .is_some_and(|n| n.session.local == receiver)
        {
            Slot::Next
        } else {
            // An index of the initiation in progress: not a session yet.
            self.stats.dropped_unknown_index += 1;
            return;
        };
        let session = match slot {
            Slot::Current => ps.current.as_mut(),
            Slot::Previous => ps.previous.as_mut(),
            Slot::Next => ps.next.as_mut().map(|n| &mut n.session),
        };
        let Some(session) = session else {
            return;
        };
        match session.replay.check(counter) {
            Ok(()) => {}
            Err(Replay::Duplicate) => {
                self.stats.dropped_replay += 1;
                return;
            }
            Err(Replay::TooOld) => {
                self.stats.dropped_too_old += 1;
                return;
            }
        }
        // Opened into the reused scratch buffer: no allocation (and no zeroing) per datagram.
        let plain = &mut self.scratch;
        plain.resize(ct.len().saturating_sub(TAG_LEN), 0);
        let Some(n) = session.transport.open_into(counter, ct, plain) else {
            self.stats.dropped_tampered += 1;
            return;
        };
        plain.truncate(n);
        if session.replay.accept(counter).is_err() {
            self.stats.dropped_replay += 1;
            return;
        }
        session.confirm = None;
        ps.last_active = now;
        if slot == Slot::Next {
            if let Some(next) = ps.next.take() {
                self.promote(now, peer, next.session, false);
            }
        }
        if n == 0 {
            self.stats.keepalives_received += 1;
        } else {
            self.stats.messages_received += 1;
            if self.direct.is_some() {
                self.direct = Some(Some(peer));
            } else {
                let data = self.scratch.clone();
                self.push_event(Event::Message {
                    peer,
                    data,
                    mode: Mode::Encrypt,
                });
            }
        }
    }

    /// A peer talks to us on a session we do not know: we restarted or forgot it. Start a
    /// handshake (once per handshake lifetime per peer) so that the peer is not stuck.
    ///
    /// The peer's address is not validated (the datagram may be spoofed), so the initiation
    /// answers only a datagram at least as long: a padded one for a datagram of at least
    /// [`wire::MAX_INIT_LEN`] bytes, else an unpadded XX message 1 (40 bytes; the responder answers
    /// it with a cookie reply, whose echo of our index validates its address, then we re-send with
    /// the MAC). It is re-sent only in answer to further datagrams at least as long, never by the
    /// retransmission timer: never more bytes toward the address than it sent. Shorter datagrams
    /// count `reconnect_too_small`.
    fn maybe_reconnect(&mut self, now: Instant, peer: P, datagram_len: usize) {
        if !self.config.connect_on_unknown_session || self.config.mode != Mode::Encrypt {
            return;
        }
        if datagram_len < wire::INIT_HEADER_LEN + wire::KEY_LEN {
            self.stats.reconnect_too_small += 1;
            return;
        }
        let span = self.handshake_span();
        if let Some(ps) = self.peers.get(&peer) {
            if let Some(init) = &ps.initiation {
                if init.triggered {
                    if self.init_len(now, peer).is_some_and(|n| n <= datagram_len) {
                        self.send_init(now, peer);
                    } else {
                        self.stats.reconnect_too_small += 1;
                    }
                }
                return;
            }
            if ps.next.is_some() {
                return;
            }
            if ps
                .unknown_trigger_at
                .is_some_and(|t| now.saturating_duration_since(t) < span)
            {
                return;
            }
        }
        if !self.global.take(
            now,
            self.config.rate_limit_global,
            self.config.rate_limit_global,
        ) {
            return;
        }
        self.ensure_peer(now, peer);
        let rs = match self.peers.get_mut(&peer) {
            Some(ps) => {
                ps.unknown_trigger_at = Some(now);
                ps.remote_static
            }
            None => return,
        };
        if datagram_len >= wire::MAX_INIT_LEN {
            self.start_initiation(now, peer, rs, false, false);
        } else {
            self.start_initiation_padded(now, peer, None, false, false, false);
        }
        if let Some(init) = self.peers.get_mut(&peer).and_then(|p| p.initiation.as_mut()) {
            init.triggered = true;
        }
    }

    /// Makes `session` the current one for `peer`; the old current one keeps receiving for
    /// `rekey_grace`. Flushes queued messages; sends a keepalive if `keepalive` and nothing was
    /// flushed (so that the other side learns the session works).
    pub(super) fn promote(&mut self, now: Instant, peer: P, mut session: Session, keepalive: bool) {
        let grace = self.config.rekey_grace;
        let Some(ps) = self.peers.get_mut(&peer) else {
            self.index.remove(&session.local);
            return;
        };
        if ps.expected.is_some_and(|id| id != session.remote_id) {
            // Someone else answered at the address a dial expected another identity at: the
            // session is never used, and nothing queued for the expected peer goes to it.
            self.index.remove(&session.local);
            self.refuse_identity(peer);
            return;
        }
        let mut replaced_identity = false;
        if let Some(mut old) = ps.current.take() {
            old.retire_at = Some(now + grace);
            old.confirm = None;
            replaced_identity = old.remote_id != session.remote_id;
            if let Some(prev) = ps.previous.replace(old) {
                self.index.remove(&prev.local);
            }
            self.stats.rekeys += 1;
        }
        let mut disconnected = None;
        if replaced_identity && ps.connected_reported {
            ps.connected_reported = false;
            // The old identity's session must not deliver anything more as this peer.
            if let Some(prev) = ps.previous.take() {
                self.index.remove(&prev.local);
            }
            disconnected = Some(Event::Disconnected {
                peer,
                reason: DisconnectReason::IdentityChanged,
            });
        }
        ps.identity = Some((session.remote_identity.clone(), session.remote_id));
        ps.remote_static = Some(session.remote_static);
        ps.suites_aware = session.suites_aware;
        if session.transport.suite() == Suite::AesGcm {
            self.stats.sessions_aes_gcm += 1;
        }
        ps.last_active = now;
        let connected = (!ps.connected_reported).then(|| Event::Connected {
            peer,
            remote_id: session.remote_id,
            remote_identity: session.remote_identity.clone(),
        });
        ps.connected_reported = true;
        let mut out = Vec::new();
        while let Some(m) = ps.pending.pop_front() {
            if let Some(d) = seal(&mut session, &m) {
                out.push(d);
            }
        }
        let flushed = out.len() as u64;
        if keepalive && out.is_empty() {
            if let Some(d) = seal(&mut session, &[]) {
                out.push(d);
            }
        }
        ps.current = Some(session);
        self.stats.handshakes_completed += 1;
        self.stats.messages_sent += flushed;
        if let Some(ev) = disconnected {
            self.push_event(ev);
        }
        if let Some(ev) = connected {
            self.push_event(ev);
        }
        for d in out {
            self.queue_transmit(peer, d);
        }
    }

    /// A handshake at `peer` authenticated an identity other than the expected one.
    pub(super) fn refuse_identity(&mut self, peer: P) {
        self.stats.handshakes_identity_mismatch += 1;
        // The dial failed: without a session the binding goes with it (the address is not the
        // expected node's). A current session keeps it, so nobody else can take its place.
        if let Some(ps) = self.peers.get_mut(&peer) {
            if ps.current.is_none() {
                ps.expected = None;
            }
        }
        self.push_event(Event::HandshakeFailed {
            peer,
            reason: HandshakeError::IdentityMismatch,
        });
        self.drop_pending_without_session(peer);
    }

    pub(super) fn drop_pending_without_session(&mut self, peer: P) {
        if let Some(ps) = self.peers.get_mut(&peer) {
            if ps.current.is_none() {
                self.stats.dropped_no_session += ps.pending.len() as u64;
                ps.pending.clear();
            }
        }
    }
}
