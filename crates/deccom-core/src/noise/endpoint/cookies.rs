//! Cookies, the answer to initiations under load: the rotating secret, the cookie of an
//! address, checking an initiation's cookie MAC, and taking a cookie reply as initiator.

use std::fmt;
use std::hash::Hash;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::Endpoint;
use crate::noise::crypto;
use crate::noise::wire::{self, Pattern, MAC_LEN};

/// How long a cookie secret is used before it is rotated (the previous one is still accepted).
const COOKIE_ROTATION: Duration = Duration::from_secs(120);

impl<P: Copy + Eq + Hash + fmt::Debug> Endpoint<P> {
    pub(super) fn rotate_cookie_secret(&mut self, now: Instant) {
        if now.saturating_duration_since(self.cookie_born) >= COOKIE_ROTATION {
            let fresh = self.rng.seed32();
            self.cookie_prev = core::mem::replace(&mut self.cookie_secret, Zeroizing::new(fresh));
            self.cookie_born = now;
        }
    }

    pub(super) fn cookie_for(secret: &[u8; 32], peer: &P) -> [u8; MAC_LEN] {
        crypto::mac16(secret, &[&crypto::peer_bytes(peer)])
    }

    pub(super) fn cookie_mac_valid(
        &self,
        peer: &P,
        sender: u32,
        pattern: Pattern,
        noise: &[u8],
        mac: &[u8; MAC_LEN],
    ) -> bool {
        let mut input = Vec::new();
        wire::init_mac_input(sender, pattern, noise, &mut input);
        [&self.cookie_secret, &self.cookie_prev]
            .iter()
            .any(|secret| {
                let cookie = Self::cookie_for(secret, peer);
                crypto::ct_eq(&crypto::mac16(&cookie, &[&input]), mac)
            })
    }

    pub(super) fn on_cookie(
        &mut self,
        now: Instant,
        peer: P,
        receiver: u32,
        cookie: [u8; MAC_LEN],
    ) {
        let Some(init) = self
            .peers
            .get_mut(&peer)
            .and_then(|p| p.initiation.as_mut())
            .filter(|i| i.local == receiver)
        else {
            self.stats.dropped_unknown_index += 1;
            return;
        };
        self.stats.cookies_received += 1;
        let fresh = init.cookie.is_none_or(|(c, _)| c != cookie);
        // Valid until the responder has rotated its secret twice; be conservative.
        init.cookie = Some((cookie, now + COOKIE_ROTATION));
        if fresh {
            self.send_init(now, peer);
        }
    }
}
