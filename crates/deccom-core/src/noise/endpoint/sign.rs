//! Receiving in Sign mode: the sender's Ed25519 signature and a replay window per epoch.

use std::fmt;
use std::hash::Hash;
use std::time::Instant;

use super::{Endpoint, Event, Mode};
use crate::identity::verify;
use crate::noise::replay::{Replay, ReplayWindow};
use crate::noise::wire;

pub(super) struct SignRx {
    epoch: u64,
    window: ReplayWindow,
}

impl<P: Copy + Eq + Hash + fmt::Debug> Endpoint<P> {
    pub(super) fn on_signed(
        &mut self,
        now: Instant,
        peer: P,
        epoch: u64,
        counter: u64,
        sig: &[u8; wire::SIG_LEN],
        payload: &[u8],
    ) {
        let bits = self.config.replay_window_bits;
        let Some(ps) = self.peers.get_mut(&peer) else {
            self.stats.dropped_unknown_identity += 1;
            return;
        };
        let Some(key) = ps.identity.as_ref().and_then(|(i, _)| i.ed25519_key()) else {
            self.stats.dropped_unknown_identity += 1;
            return;
        };
        let new_epoch = match &ps.sign_rx {
            Some(rx) if epoch < rx.epoch => {
                self.stats.dropped_too_old += 1;
                return;
            }
            Some(rx) if epoch == rx.epoch => match rx.window.check(counter) {
                Ok(()) => false,
                Err(Replay::Duplicate) => {
                    self.stats.dropped_replay += 1;
                    return;
                }
                Err(Replay::TooOld) => {
                    self.stats.dropped_too_old += 1;
                    return;
                }
            },
            _ => true,
        };
        if !matches!(
            verify(key, &wire::signed_message(epoch, counter, payload), sig),
            Ok(true)
        ) {
            self.stats.dropped_bad_signature += 1;
            return;
        }
        if new_epoch {
            ps.sign_rx = Some(SignRx {
                epoch,
                window: ReplayWindow::new(bits),
            });
        }
        if let Some(rx) = ps.sign_rx.as_mut() {
            if rx.window.accept(counter).is_err() {
                self.stats.dropped_replay += 1;
                return;
            }
        }
        ps.last_active = now;
        self.stats.messages_received += 1;
        self.push_event(Event::Message {
            peer,
            data: payload.to_vec(),
            mode: Mode::Sign,
        });
    }
}
