//! Handshake machinery and our side as initiator: fresh and rebuilt Noise handshake states,
//! session indices, retransmission delays, sending an initiation, and the response that turns
//! it into a session.

use std::fmt;
use std::hash::Hash;
use std::time::{Duration, Instant};

use snow::{Builder, HandshakeState};
use zeroize::Zeroizing;

use super::session::{Retransmit, Session};
use super::{Endpoint, Event};
use crate::identity::{NodeId, PublicIdentity};
use crate::noise::crypto::{self, SeededResolver, PROLOGUE};
use crate::noise::error::HandshakeError;
use crate::noise::primitives::{Suite, Transport, OFFER_AES_GCM};
use crate::noise::replay::ReplayWindow;
use crate::noise::wire::{self, Pattern, MAC_LEN};

/// Buffer for one handshake message.
pub(super) const HS_BUF: usize = wire::MAX_HANDSHAKE_NOISE_LEN;
/// Handshake messages that fail to authenticate before the handshake is abandoned (each failure
/// costs a deterministic rebuild of the handshake state, see `rebuild_initiator`).
pub(super) const MAX_HANDSHAKE_READ_FAILURES: u32 = 8;

/// A handshake we initiated.
pub(super) struct Initiation {
    pub(super) local: u32,
    pub(super) hs: HandshakeState,
    /// Seed of this handshake's RNG: rebuilding from it reproduces the same ephemeral key.
    pub(super) seed: Zeroizing<[u8; 32]>,
    pub(super) remote_static: Option<[u8; 32]>,
    pub(super) failures: u32,
    pub(super) pattern: Pattern,
    pub(super) e: [u8; 32],
    pub(super) noise: Vec<u8>,
    pub(super) cookie: Option<([u8; MAC_LEN], Instant)>,
    pub(super) attempts: u32,
    pub(super) next_at: Instant,
    pub(super) is_rekey: bool,
    pub(super) fell_back: bool,
    /// XX message 1 carries the padding (false only for a triggered initiation answering a short
    /// datagram: the responder then asks for a cookie first).
    pub(super) padded: bool,
    /// The suite offer message 1 carried (`None`: no offer, the peer answers as one that
    /// predates suites and the session uses ChaCha20-Poly1305).
    pub(super) offer: Option<u8>,
    /// Started because the peer sent transport data for a session we do not know: the peer's
    /// address is unvalidated, so the initiation is sent only in answer to a datagram at least
    /// as large (never by the retransmission timer) and has no IK→XX fallback.
    pub(super) triggered: bool,
}

/// A responder XX handshake waiting for message 3.
pub(super) struct HalfOpen<P> {
    pub(super) peer: P,
    pub(super) remote: u32,
    pub(super) hs: HandshakeState,
    pub(super) seed: Zeroizing<[u8; 32]>,
    /// The initiator's Noise message 1, to rebuild `hs` after a failed read.
    pub(super) msg1: Vec<u8>,
    /// The suite our message 2 chose, `None` when message 1 offered nothing (message 2 then
    /// carries the binding alone).
    pub(super) choice: Option<Suite>,
    pub(super) failures: u32,
    pub(super) msg2: Vec<u8>,
    pub(super) init_e: [u8; 32],
    pub(super) created: Instant,
    pub(super) expires: Instant,
}

pub(super) fn first32(bytes: &[u8]) -> Option<[u8; 32]> {
    bytes.get(..32)?.try_into().ok()
}

/// A handshake payload that carries an identity binding: the binding, and the suite byte after
/// it if there is exactly one more byte (a binding's length follows from its identity-length
/// byte). Anything else is returned whole, for the binding check to refuse.
pub(super) fn split_suite(payload: &[u8]) -> (&[u8], Option<u8>) {
    let Some(&n) = payload.get(33) else {
        return (payload, None);
    };
    let binding_len = 34 + usize::from(n) + wire::SIG_LEN;
    match payload.split_at_checked(binding_len) {
        Some((binding, &[suite])) => (binding, Some(suite)),
        _ => (payload, None),
    }
}

/// The payload of a message 2: our binding, then the suite choice when message 1 offered one.
pub(super) fn with_choice(binding: &[u8], choice: Option<Suite>) -> Vec<u8> {
    let mut p = Vec::with_capacity(binding.len() + wire::SUITE_LEN);
    p.extend_from_slice(binding);
    if let Some(c) = choice {
        p.push(c as u8);
    }
    p
}

impl<P: Copy + Eq + Hash + fmt::Debug> Endpoint<P> {
    /// The remote static key a finished handshake authenticated, and the identity its binding
    /// payload proves for that key (checked, or remembered from an earlier check).
    #[allow(clippy::type_complexity)]
    pub(super) fn verify_remote(
        &mut self,
        hs: &HandshakeState,
        binding: &[u8],
    ) -> Result<((PublicIdentity, NodeId), [u8; 32]), HandshakeError> {
        let rs = hs
            .get_remote_static()
            .and_then(first32)
            .ok_or(HandshakeError::Decrypt)?;
        self.bindings.verify(binding, &rs).map(|v| (v, rs))
    }

    pub(super) fn delay(&self, attempt: u32) -> Duration {
        self.config
            .handshake_timeout
            .saturating_mul(1u32 << attempt.min(16))
    }

    /// Time from the first transmission of a handshake message until it is given up.
    pub(super) fn handshake_span(&self) -> Duration {
        (0..=self.config.handshake_retries)
            .map(|a| self.delay(a))
            .fold(Duration::ZERO, Duration::saturating_add)
    }

    pub(super) fn alloc_index(&mut self) -> u32 {
        loop {
            let i = self.rng.u32();
            if i != 0 && !self.index.contains_key(&i) && !self.half_open.contains_key(&i) {
                return i;
            }
        }
    }

    /// A fresh handshake state with a fresh RNG seed (returned so the state can be rebuilt).
    pub(super) fn new_handshake(
        &mut self,
        pattern: Pattern,
        initiator: bool,
        remote_static: Option<&[u8; 32]>,
    ) -> Option<(HandshakeState, Zeroizing<[u8; 32]>)> {
        let seed = Zeroizing::new(self.rng.seed32());
        let hs = self.build_hs(pattern, initiator, remote_static, &seed)?;
        Some((hs, seed))
    }

    pub(super) fn build_hs(
        &self,
        pattern: Pattern,
        initiator: bool,
        remote_static: Option<&[u8; 32]>,
        seed: &[u8; 32],
    ) -> Option<HandshakeState> {
        let params = match pattern {
            Pattern::Xx => self.xx.clone(),
            Pattern::Ik => self.ik.clone(),
        };
        let resolver = SeededResolver::new(*seed, Some(self.static_pair.clone()));
        let mut b = Builder::with_resolver(params, Box::new(resolver))
            .local_private_key(self.static_pair.private())
            .ok()?
            .prologue(PROLOGUE)
            .ok()?;
        if let Some(rs) = remote_static {
            b = b.remote_public_key(rs).ok()?;
        }
        if initiator {
            b.build_initiator().ok()
        } else {
            b.build_responder().ok()
        }
    }

    /// The offer byte we put in message 1.
    pub(super) fn offer_byte(&self) -> u8 {
        if self.prefer_aes_gcm {
            OFFER_AES_GCM
        } else {
            0
        }
    }

    /// snow restores only the chaining key and hash after a failed `read_message`, not the inner
    /// cipher key and nonce, so a handshake state cannot be reused after a forged or corrupted
    /// message. Our handshakes are deterministic given their RNG seed, so we rebuild the state by
    /// replaying our own message 1 (checked to be byte-identical).
    pub(super) fn rebuild_initiator(&self, init: &Initiation) -> Option<HandshakeState> {
        let mut hs = self.build_hs(init.pattern, true, init.remote_static.as_ref(), &init.seed)?;
        let mut buf = [0u8; HS_BUF];
        let n = hs
            .write_message(
                &self.init_payload(init.pattern, init.padded, init.offer),
                &mut buf,
            )
            .ok()?;
        (buf[..n] == init.noise[..]).then_some(hs)
    }

    /// The payload of our message 1: IK carries the binding (and the suite offer, to a peer
    /// known to read it); padded XX the offer byte and zero padding, which make the initiation
    /// as long as the response (see [`wire::XX_INIT_NOISE_LEN`]); unpadded XX nothing.
    fn init_payload(&self, pattern: Pattern, padded: bool, offer: Option<u8>) -> Vec<u8> {
        match pattern {
            Pattern::Ik => {
                let mut p = self.binding.clone();
                p.extend(offer);
                p
            }
            Pattern::Xx if padded => {
                let mut p = vec![0; wire::XX_INIT_PADDING];
                p[0] = offer.unwrap_or(0);
                p
            }
            Pattern::Xx => Vec::new(),
        }
    }

    pub(super) fn start_initiation(
        &mut self,
        now: Instant,
        peer: P,
        remote_static: Option<[u8; 32]>,
        is_rekey: bool,
        fell_back: bool,
    ) {
        self.start_initiation_padded(now, peer, remote_static, is_rekey, fell_back, true);
    }

    /// [`Self::start_initiation`]; `padded: false` sends an XX message 1 without its padding
    /// (`remote_static` must then be `None`).
    pub(super) fn start_initiation_padded(
        &mut self,
        now: Instant,
        peer: P,
        remote_static: Option<[u8; 32]>,
        is_rekey: bool,
        fell_back: bool,
        padded: bool,
    ) {
        let pattern = if remote_static.is_some() {
            Pattern::Ik
        } else {
            Pattern::Xx
        };
        // XX offers a suite whenever padded; IK only to a peer that showed it reads offers (an
        // older responder refuses an IK payload longer than a binding).
        let offer = match pattern {
            Pattern::Xx => padded.then(|| self.offer_byte()),
            Pattern::Ik => self
                .peers
                .get(&peer)
                .is_some_and(|p| p.suites_aware)
                .then(|| self.offer_byte()),
        };
        let Some((mut hs, seed)) = self.new_handshake(pattern, true, remote_static.as_ref()) else {
            return;
        };
        let mut buf = [0u8; HS_BUF];
        let Ok(n) = hs.write_message(&self.init_payload(pattern, padded, offer), &mut buf) else {
            return;
        };
        let Some(e) = first32(&buf[..n]) else {
            return;
        };
        let local = self.alloc_index();
        let first_delay = self.delay(0);
        let Some(ps) = self.peers.get_mut(&peer) else {
            return;
        };
        if let Some(old) = ps.initiation.take() {
            self.index.remove(&old.local);
        }
        ps.initiation = Some(Initiation {
            local,
            hs,
            seed,
            remote_static,
            failures: 0,
            pattern,
            e,
            noise: buf[..n].to_vec(),
            cookie: None,
            attempts: 0,
            next_at: now + first_delay,
            is_rekey,
            fell_back,
            padded,
            offer,
            triggered: false,
        });
        self.index.insert(local, peer);
        self.stats.handshakes_initiated += 1;
        self.send_init(now, peer);
    }

    /// The length of the initiation datagram [`Self::send_init`] would send to `peer` now.
    pub(super) fn init_len(&self, now: Instant, peer: P) -> Option<usize> {
        let init = self.peers.get(&peer)?.initiation.as_ref()?;
        let mac = init.cookie.is_some_and(|(_, until)| now < until);
        Some(wire::INIT_HEADER_LEN + if mac { MAC_LEN } else { 0 } + init.noise.len())
    }

    /// (Re)sends the initiation held for `peer`, with a cookie MAC if we hold a fresh cookie.
    pub(super) fn send_init(&mut self, now: Instant, peer: P) {
        let Some(init) = self.peers.get(&peer).and_then(|p| p.initiation.as_ref()) else {
            return;
        };
        let mac = init.cookie.and_then(|(cookie, until)| {
            (now < until).then(|| {
                let mut input = Vec::new();
                wire::init_mac_input(init.local, init.pattern, &init.noise, &mut input);
                crypto::mac16(&cookie, &[&input])
            })
        });
        let mut out = Vec::with_capacity(8 + MAC_LEN + init.noise.len());
        wire::encode_init(
            init.local,
            init.pattern,
            mac.as_ref(),
            &init.noise,
            &mut out,
        );
        self.queue_transmit(peer, out);
    }

    pub(super) fn count_binding_failure(&mut self, e: HandshakeError) {
        match e {
            HandshakeError::Timeout => self.stats.handshakes_failed_timeout += 1,
            HandshakeError::Decrypt => self.stats.handshakes_failed_decrypt += 1,
            _ => self.stats.handshakes_failed_binding += 1,
        }
    }

    pub(super) fn on_response(
        &mut self,
        now: Instant,
        peer: P,
        sender: u32,
        receiver: u32,
        noise: &[u8],
    ) {
        let Some(ps) = self.peers.get_mut(&peer) else {
            self.stats.dropped_unknown_index += 1;
            return;
        };
        let matches = ps.initiation.as_ref().is_some_and(|i| i.local == receiver);
        if !matches {
            // A response re-sent because our initiation was re-sent: re-send message 3.
            let resend = ps.current.as_ref().and_then(|s| {
                (s.local == receiver && s.remote == sender)
                    .then(|| s.confirm.as_ref().map(|c| c.datagram.clone()))
                    .flatten()
            });
            match resend {
                Some(d) => self.queue_transmit(peer, d),
                None => self.stats.dropped_unknown_index += 1,
            }
            return;
        }
        let Some(init) = ps.initiation.as_mut() else {
            return;
        };
        let mut payload = [0u8; HS_BUF];
        let Ok(len) = init.hs.read_message(noise, &mut payload) else {
            self.stats.handshakes_failed_decrypt += 1;
            self.recover_initiation(peer);
            return;
        };
        let Some(init) = ps.initiation.take() else {
            return;
        };
        let Initiation {
            local,
            mut hs,
            pattern,
            e,
            offer,
            ..
        } = init;
        // After an offer, the binding may be followed by the responder's choice (none: a
        // responder that predates suites, ChaCha20-Poly1305).
        let (binding, choice) = match offer {
            Some(_) => split_suite(&payload[..len]),
            None => (&payload[..len], None),
        };
        let suite = match (offer, choice) {
            (Some(o), Some(c)) => Suite::from_choice(c, o),
            _ => Some(Suite::ChaChaPoly),
        };
        let verified = match suite {
            Some(_) => self.verify_remote(&hs, binding),
            None => Err(HandshakeError::Malformed),
        };
        let ((remote_identity, remote_id), rs) = match verified {
            Ok(v) => v,
            Err(e) => {
                self.index.remove(&local);
                self.count_binding_failure(e);
                self.push_event(Event::HandshakeFailed { peer, reason: e });
                self.drop_pending_without_session(peer);
                return;
            }
        };
        if self
            .peers
            .get(&peer)
            .and_then(|p| p.expected)
            .is_some_and(|id| id != remote_id)
        {
            // Checked before message 3: the impostor does not even learn that we finished.
            self.index.remove(&local);
            self.refuse_identity(peer);
            return;
        }
        let mut confirm = None;
        if pattern == Pattern::Xx {
            let mut buf = [0u8; HS_BUF];
            let Ok(n) = hs.write_message(&self.binding, &mut buf) else {
                self.index.remove(&local);
                return;
            };
            let mut msg3 = Vec::with_capacity(5 + n);
            wire::encode_final(sender, &buf[..n], &mut msg3);
            confirm = Some(Retransmit {
                datagram: msg3,
                attempts: 0,
                next_at: now + self.delay(0),
            });
        }
        let handshake_hash = hs.get_handshake_hash().to_vec();
        let Some(transport) =
            Transport::from_handshake(&mut hs, suite.unwrap_or(Suite::ChaChaPoly))
        else {
            self.index.remove(&local);
            return;
        };
        if let Some(c) = &confirm {
            let d = c.datagram.clone();
            self.queue_transmit(peer, d);
        }
        let session = Session {
            local,
            remote: sender,
            transport,
            send_counter: 0,
            replay: ReplayWindow::new(self.config.replay_window_bits),
            created: now,
            initiator: true,
            confirm,
            init_e: e,
            remote_identity,
            remote_id,
            remote_static: rs,
            handshake_hash,
            retire_at: None,
            suites_aware: choice.is_some(),
        };
        // IK: the responder waits for our first transport datagram before it switches over.
        let keepalive = pattern == Pattern::Ik;
        self.promote(now, peer, session, keepalive);
    }

    /// After a response failed to authenticate: rebuild our handshake state, or give up after
    /// too many failures.
    fn recover_initiation(&mut self, peer: P) {
        let Some(mut init) = self.peers.get_mut(&peer).and_then(|p| p.initiation.take()) else {
            return;
        };
        init.failures += 1;
        let rebuilt = if init.failures < MAX_HANDSHAKE_READ_FAILURES {
            self.rebuild_initiator(&init)
        } else {
            None
        };
        match rebuilt {
            Some(hs) => {
                init.hs = hs;
                if let Some(ps) = self.peers.get_mut(&peer) {
                    ps.initiation = Some(init);
                }
            }
            None => {
                self.index.remove(&init.local);
                self.push_event(Event::HandshakeFailed {
                    peer,
                    reason: HandshakeError::Decrypt,
                });
                self.drop_pending_without_session(peer);
            }
        }
    }
}
