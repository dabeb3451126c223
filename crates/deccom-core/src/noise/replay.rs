//! Sliding anti-replay window (RFC 6479, as used by WireGuard).
//!
//! A ring bitmap of `bits` bits (a multiple of 64) plus the highest counter accepted so far.
//! Counters above the highest are always new; counters at most `bits - 64` below it are looked up
//! in the bitmap; anything older is rejected as too old. Advancing clears only the words that the
//! window slides past, so a large jump costs at most `bits / 64` word writes.
//!
//! Use in two steps so that unauthenticated datagrams cannot move the window:
//! [`ReplayWindow::check`] before decrypting, [`ReplayWindow::accept`] after the tag verified.

use core::fmt;

/// Why a counter was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// The counter was already accepted.
    Duplicate,
    /// The counter is older than the window (or is the reserved `u64::MAX`).
    TooOld,
}

/// The window (see the module docs).
#[derive(Clone)]
pub struct ReplayWindow {
    words: Box<[u64]>,
    /// Highest accepted counter; meaningful once `any` is set.
    top: u64,
    any: bool,
}

impl fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("bits", &(self.words.len() * 64))
            .field("top", &self.top)
            .finish_non_exhaustive()
    }
}

impl ReplayWindow {
    /// A window of `bits` bits; `bits` is rounded up to a multiple of 64 and at least 128.
    /// Counters up to `bits - 64` behind the highest one are accepted once.
    #[must_use]
    pub fn new(bits: usize) -> Self {
        let words = bits.div_ceil(64).max(2);
        ReplayWindow {
            words: vec![0; words].into_boxed_slice(),
            top: 0,
            any: false,
        }
    }

    /// How many counters behind the highest one are still tracked.
    #[must_use]
    pub fn span(&self) -> u64 {
        (self.words.len() as u64 - 1) * 64
    }

    /// The highest accepted counter, if any.
    #[must_use]
    pub fn highest(&self) -> Option<u64> {
        self.any.then_some(self.top)
    }

    fn slot(&self, counter: u64) -> (usize, u64) {
        let word = (counter / 64) % self.words.len() as u64;
        (word as usize, 1u64 << (counter % 64))
    }

    /// Whether `counter` would be accepted. Does not change the window.
    ///
    /// # Errors
    ///
    /// [`Replay::Duplicate`] or [`Replay::TooOld`].
    pub fn check(&self, counter: u64) -> Result<(), Replay> {
        if counter == u64::MAX {
            return Err(Replay::TooOld);
        }
        if !self.any || counter > self.top {
            return Ok(());
        }
        if self.top - counter >= self.span() {
            return Err(Replay::TooOld);
        }
        let (word, bit) = self.slot(counter);
        if self.words[word] & bit != 0 {
            Err(Replay::Duplicate)
        } else {
            Ok(())
        }
    }

    /// Checks and records `counter`; call only after the datagram authenticated.
    ///
    /// # Errors
    ///
    /// As [`ReplayWindow::check`]; the window is unchanged then.
    pub fn accept(&mut self, counter: u64) -> Result<(), Replay> {
        self.check(counter)?;
        if !self.any {
            self.any = true;
            self.top = counter;
            self.words.fill(0);
        } else if counter > self.top {
            let n = self.words.len() as u64;
            let cur = self.top / 64;
            let new = counter / 64;
            let steps = (new - cur).min(n);
            for i in 1..=steps {
                let w = ((cur + i) % n) as usize;
                self.words[w] = 0;
            }
            self.top = counter;
        }
        let (word, bit) = self.slot(counter);
        self.words[word] |= bit;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order() {
        let mut w = ReplayWindow::new(2048);
        for c in 0..10_000 {
            assert_eq!(w.accept(c), Ok(()), "{c}");
        }
        assert_eq!(w.highest(), Some(9_999));
        assert_eq!(w.accept(9_999), Err(Replay::Duplicate));
    }

    #[test]
    fn out_of_order_within_window() {
        let mut w = ReplayWindow::new(2048);
        for c in (0..1000).rev() {
            assert_eq!(w.accept(c), Ok(()), "{c}");
        }
        for c in 0..1000 {
            assert_eq!(w.accept(c), Err(Replay::Duplicate), "{c}");
        }
        // Interleaved: evens then odds.
        let mut w = ReplayWindow::new(2048);
        for c in (0..3000).step_by(2) {
            w.accept(c).unwrap();
        }
        for c in (1999..3000).filter(|c| c % 2 == 1) {
            assert_eq!(w.accept(c), Ok(()), "{c}");
        }
    }

    #[test]
    fn duplicate_is_rejected_and_check_does_not_mutate() {
        let mut w = ReplayWindow::new(128);
        assert_eq!(w.check(5), Ok(()));
        assert_eq!(w.check(5), Ok(()));
        w.accept(5).unwrap();
        assert_eq!(w.check(5), Err(Replay::Duplicate));
        assert_eq!(w.accept(5), Err(Replay::Duplicate));
        assert_eq!(w.accept(4), Ok(()));
    }

    #[test]
    fn too_old() {
        let mut w = ReplayWindow::new(2048);
        assert_eq!(w.span(), 1984);
        w.accept(5000).unwrap();
        assert_eq!(w.check(5000 - 1984), Err(Replay::TooOld));
        assert_eq!(w.accept(5000 - 1983), Ok(()));
        assert_eq!(w.accept(0), Err(Replay::TooOld));
        assert_eq!(w.accept(u64::MAX), Err(Replay::TooOld));
    }

    #[test]
    fn large_jumps_clear_stale_bits() {
        let mut w = ReplayWindow::new(256);
        for c in 0..200 {
            w.accept(c).unwrap();
        }
        // Jump far ahead: everything behind is either too old or fresh (cleared), never a
        // false duplicate.
        w.accept(1_000_000).unwrap();
        for c in 1_000_000 - w.span() + 1..1_000_000 {
            assert_eq!(w.check(c), Ok(()), "{c}");
        }
        assert_eq!(w.check(199), Err(Replay::TooOld));
        // A jump by exactly one word and by the whole ring.
        w.accept(1_000_064).unwrap();
        assert_eq!(w.check(1_000_000), Err(Replay::Duplicate));
        w.accept(u64::MAX - 1).unwrap();
        assert_eq!(w.check(u64::MAX - 2), Ok(()));
        assert_eq!(w.accept(u64::MAX - 1), Err(Replay::Duplicate));
    }

    #[test]
    fn matches_a_naive_model() {
        use std::collections::BTreeSet;
        let mut w = ReplayWindow::new(256);
        let mut seen = BTreeSet::new();
        let mut top: Option<u64> = None;
        let mut x: u64 = 88_172_645_463_325_252;
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let base = top.unwrap_or(0);
            let c = (base + (x % 64)).saturating_sub((x >> 8) % 400);
            let expected = match top {
                Some(t) if c <= t && t - c >= w.span() => Err(Replay::TooOld),
                _ if seen.contains(&c) => Err(Replay::Duplicate),
                _ => Ok(()),
            };
            assert_eq!(w.accept(c), expected, "counter {c} top {top:?}");
            if expected.is_ok() {
                seen.insert(c);
                top = Some(top.map_or(c, |t| t.max(c)));
            }
        }
    }
}
