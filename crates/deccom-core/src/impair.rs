//! The one impairment model of deccom: what a lossy, slow link does to a datagram.
//!
//! Every path that impairs datagrams runs this model: `FaultyTransport` and `Delay` in the socket
//! thread (native mode) and when driven from JavaScript, and every link of a `SimulatedNetwork`.
//! An [`Impairment`] is one seeded instance: a link, or one direction of a test layer. It is
//! sans-IO: [`Impairment::offer`] takes the time `now` (milliseconds on any clock the caller
//! keeps) and the datagram's length, and returns a [`Verdict`]: how many copies to deliver, at
//! which times, and which bit to flip. The driver holds the datagrams and delivers them; nothing
//! here touches a socket, a timer or the clock.
//!
//! # The decision procedure
//!
//! The length `len` is the whole datagram as it travels on the wire: the layer tag (byte 0) and
//! the payload. For each offered datagram, in this order:
//!
//! 1. **Eight draws**, always, whatever happens to the datagram (so that one changed probability
//!    or one full queue does not shift every later decision): eight consecutive outputs
//!    `r0..r7` of a SplitMix64 generator whose state starts at the seed. A draw becomes a number
//!    in `[0, 1)` as `(r >> 11) / 2^53`. Their uses: `r0` drop, `r1` duplicate, `r2` reorder,
//!    `r3` corrupt, `r4` which bit, `r5` jitter of the first copy, `r6` jitter of the second
//!    copy, `r7` the reorder delay.
//! 2. **Serialization** (only with a bandwidth `bytes_per_ms`): the datagram waits until the
//!    link has sent the earlier ones (`start = max(now, free_at)`). If the backlog already
//!    waiting, `(start - now) * bytes_per_ms`, plus `len` exceeds `max_backlog`, the datagram is
//!    dropped for a full queue (`queue_full`) and the link's state does not change. Otherwise it
//!    leaves at `departs = start + len / bytes_per_ms` and the link is busy until then. Without a
//!    bandwidth, `departs = now`.
//! 3. **Drop**: if `u0 < drop` the datagram is lost (`lost`). A lost datagram has used the
//!    link's bandwidth (it was lost on the wire). Nothing else applies to it.
//! 4. **Corrupt**: if `u3 < corrupt` and `len >= 2`, bit `8 + ⌊r4 · (len − 1) · 8 / 2^64⌋` of the
//!    datagram is flipped (bits counted from byte 0's lowest bit). **Byte 0, the layer tag, is
//!    never corrupted**: a flipped tag would only exercise the receiver's "unknown tag" drop,
//!    while a flipped payload bit exercises the layer the datagram is for. A datagram of 0 or 1
//!    byte is never corrupted. Both copies of a duplicated datagram carry the same flipped bit.
//! 5. **Latency and jitter**: the first copy is due at `departs + latency + u5 · jitter`.
//! 6. **Reorder**: if `u2 < reorder`, the first copy is held back by an extra
//!    `(1 − u7) · reorder_delay` ms (in `(0, reorder_delay]`), so that datagrams offered after it
//!    can arrive before it.
//! 7. **Duplicate**: if `u1 < duplicate`, a second copy is due at `departs + latency + u6 ·
//!    jitter` (it is not held back by the reorder delay).
//!
//! So drop excludes everything else; corrupt, reorder and duplicate combine freely. Probabilities
//! are clamped to `0..=1` (NaN counts as 0): `0` never happens, `1` always does. The decisions
//! depend only on the seed, the sequence of lengths offered and the times `now`; with no bandwidth
//! limit, *which* datagrams are dropped, duplicated, reordered and corrupted (and which bit) does
//! not depend on time at all.
//!
//! A copy due at or before `now` (no latency, no jitter, no reorder) is to be delivered at once.
//! Copies due at the same time are delivered in the order they were decided.

/// Parameters of an impairment. Times in milliseconds, sizes in bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ImpairConfig {
    /// Probability that a datagram is lost.
    pub drop: f64,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
    /// Probability that a datagram is held back by an extra delay in `(0, reorder_delay]`.
    pub reorder: f64,
    /// Probability that one bit of the datagram (never of byte 0) is flipped.
    pub corrupt: f64,
    /// One-way delay added to every copy.
    pub latency: f64,
    /// Upper bound of a uniform extra delay per copy, `[0, jitter)`.
    pub jitter: f64,
    /// Upper bound of the extra delay of a reordered datagram.
    pub reorder_delay: f64,
    /// Serialization rate in bytes per millisecond; `0`, negative, NaN or infinite: unlimited.
    pub bytes_per_ms: f64,
    /// Largest backlog (bytes waiting for serialization) before datagrams are dropped; only with
    /// a bandwidth limit.
    pub max_backlog: f64,
}

impl Default for ImpairConfig {
    /// No impairment at all: every datagram passes at once, unchanged.
    fn default() -> ImpairConfig {
        ImpairConfig {
            drop: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            corrupt: 0.0,
            latency: 0.0,
            jitter: 0.0,
            reorder_delay: 0.0,
            bytes_per_ms: 0.0,
            max_backlog: f64::INFINITY,
        }
    }
}

impl ImpairConfig {
    /// The configuration with every value in range: probabilities in `0..=1` (NaN: 0), times
    /// finite and `>= 0` (otherwise 0), a rate finite and `> 0` (otherwise 0: unlimited), a
    /// backlog bound `>= 0` (NaN: unbounded).
    pub fn sanitized(self) -> ImpairConfig {
        let p = |x: f64| if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) };
        let t = |x: f64| if x.is_finite() && x > 0.0 { x } else { 0.0 };
        ImpairConfig {
            drop: p(self.drop),
            duplicate: p(self.duplicate),
            reorder: p(self.reorder),
            corrupt: p(self.corrupt),
            latency: t(self.latency),
            jitter: t(self.jitter),
            reorder_delay: t(self.reorder_delay),
            bytes_per_ms: t(self.bytes_per_ms),
            max_backlog: if self.max_backlog.is_nan() { f64::INFINITY } else { self.max_backlog.max(0.0) },
        }
    }
}

/// What to do with one datagram.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Verdict {
    /// Copies to deliver: 0 (lost or queue full), 1, or 2 (duplicated).
    pub copies: usize,
    /// Due time (ms, the caller's clock) of each copy; only the first `copies` are meaningful.
    pub at: [f64; 2],
    /// The bit to flip in every copy (counted from byte 0's lowest bit; always `>= 8`).
    pub corrupt_bit: Option<usize>,
    /// Lost by the drop probability.
    pub lost: bool,
    /// Dropped because the serialization backlog was full.
    pub queue_full: bool,
    /// A second copy is delivered.
    pub duplicated: bool,
    /// The first copy is held back by the reorder delay.
    pub reordered: bool,
}

/// Bits of [`Verdict::code`]: the copy count is `code & CODE_COPIES`.
pub const CODE_COPIES: u32 = 0b11;
/// [`Verdict::lost`].
pub const CODE_LOST: u32 = 1 << 2;
/// [`Verdict::queue_full`].
pub const CODE_QUEUE_FULL: u32 = 1 << 3;
/// [`Verdict::duplicated`].
pub const CODE_DUPLICATED: u32 = 1 << 4;
/// [`Verdict::reordered`].
pub const CODE_REORDERED: u32 = 1 << 5;
/// [`Verdict::corrupt_bit`] is set.
pub const CODE_CORRUPTED: u32 = 1 << 6;

impl Verdict {
    /// The verdict as a bit set (the `CODE_*` constants), for drivers across an FFI boundary.
    pub fn code(&self) -> u32 {
        let mut c = self.copies as u32 & CODE_COPIES;
        for (on, bit) in [
            (self.lost, CODE_LOST),
            (self.queue_full, CODE_QUEUE_FULL),
            (self.duplicated, CODE_DUPLICATED),
            (self.reordered, CODE_REORDERED),
            (self.corrupt_bit.is_some(), CODE_CORRUPTED),
        ] {
            if on {
                c |= bit;
            }
        }
        c
    }

    /// Flips the chosen bit of `data`, if any (out-of-range indexes do nothing).
    pub fn apply_corruption(&self, data: &mut [u8]) {
        if let Some(bit) = self.corrupt_bit {
            if let Some(b) = data.get_mut(bit / 8) {
                *b ^= 1 << (bit % 8);
            }
        }
    }
}

/// Counters of the decisions taken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImpairStats {
    /// Datagrams offered.
    pub offered: u64,
    /// Datagrams delivered (at least one copy).
    pub passed: u64,
    /// Datagrams lost by the drop probability.
    pub lost: u64,
    /// Datagrams dropped for a full serialization backlog.
    pub queue_full: u64,
    /// Datagrams delivered twice.
    pub duplicated: u64,
    /// Datagrams held back by the reorder delay.
    pub reordered: u64,
    /// Datagrams with a flipped bit.
    pub corrupted: u64,
}

/// Number of random draws per offered datagram.
pub const DRAWS_PER_DATAGRAM: usize = 8;

/// One seeded impairment instance (a link, or one direction of a test layer).
#[derive(Clone, Debug)]
pub struct Impairment {
    config: ImpairConfig,
    state: u64,
    free_at: f64,
    stats: ImpairStats,
}

impl Impairment {
    /// An instance with `config` (sanitized) whose random stream starts at `seed`.
    pub fn new(config: ImpairConfig, seed: u64) -> Impairment {
        Impairment { config: config.sanitized(), state: seed, free_at: f64::NEG_INFINITY, stats: ImpairStats::default() }
    }

    /// The configuration in use.
    pub fn config(&self) -> ImpairConfig {
        self.config
    }

    /// Replaces the configuration; the random stream and the serializer's backlog carry on.
    pub fn set_config(&mut self, config: ImpairConfig) {
        self.config = config.sanitized();
    }

    /// The random stream's state: an instance made with it as the seed (and the same
    /// configuration, with nothing waiting) carries on exactly where this one is.
    #[must_use]
    pub fn state(&self) -> u64 {
        self.state
    }

    /// Decisions so far.
    pub fn stats(&self) -> ImpairStats {
        self.stats
    }

    /// True when nothing waits for serialization at `now`: the instance then behaves as a fresh
    /// one with its current random stream.
    pub fn idle(&self, now: f64) -> bool {
        self.free_at <= now
    }

    fn next_u64(&mut self) -> u64 {
        // SplitMix64 (Steele, Lea, Flood 2014): small, fast, and good enough for test impairments.
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Decides the fate of a datagram of `len` bytes (tag included) offered at `now` (ms).
    /// See the module documentation for the exact procedure.
    pub fn offer(&mut self, now: f64, len: usize) -> Verdict {
        let mut r = [0u64; DRAWS_PER_DATAGRAM];
        for x in &mut r {
            *x = self.next_u64();
        }
        let u = |x: u64| (x >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        let c = self.config;
        self.stats.offered += 1;
        let mut v = Verdict { copies: 0, at: [now; 2], corrupt_bit: None, lost: false, queue_full: false, duplicated: false, reordered: false };

        let mut departs = now;
        if c.bytes_per_ms > 0.0 {
            let start = self.free_at.max(now);
            if (start - now) * c.bytes_per_ms + len as f64 > c.max_backlog {
                v.queue_full = true;
                self.stats.queue_full += 1;
                return v;
            }
            departs = start + len as f64 / c.bytes_per_ms;
            self.free_at = departs;
        }
        if u(r[0]) < c.drop {
            v.lost = true;
            self.stats.lost += 1;
            return v;
        }
        if u(r[3]) < c.corrupt && len >= 2 {
            let bits = (len as u128 - 1) * 8;
            v.corrupt_bit = Some(8 + ((u128::from(r[4]) * bits) >> 64) as usize);
            self.stats.corrupted += 1;
        }
        v.copies = 1;
        v.at[0] = departs + c.latency + u(r[5]) * c.jitter;
        if u(r[2]) < c.reorder {
            v.reordered = true;
            v.at[0] += (1.0 - u(r[7])) * c.reorder_delay;
            self.stats.reordered += 1;
        }
        if u(r[1]) < c.duplicate {
            v.duplicated = true;
            v.copies = 2;
            v.at[1] = departs + c.latency + u(r[6]) * c.jitter;
            self.stats.duplicated += 1;
        }
        self.stats.passed += 1;
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults(drop: f64, duplicate: f64, reorder: f64, corrupt: f64) -> ImpairConfig {
        ImpairConfig { drop, duplicate, reorder, corrupt, reorder_delay: 20.0, ..Default::default() }
    }

    /// The procedure written out from the module documentation, independently of `offer`.
    fn reference(seed: u64, c: ImpairConfig, lens: &[usize]) -> Vec<(usize, Option<usize>, bool)> {
        let mut s = seed;
        let mut next = || {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let unit = |x: u64| (x >> 11) as f64 / 9_007_199_254_740_992.0;
        lens.iter()
            .map(|&len| {
                let r: Vec<u64> = (0..8).map(|_| next()).collect();
                if unit(r[0]) < c.drop {
                    return (0, None, false);
                }
                let bit = (unit(r[3]) < c.corrupt && len >= 2).then(|| 8 + ((r[4] as u128 * ((len as u128 - 1) * 8)) >> 64) as usize);
                let copies = if unit(r[1]) < c.duplicate { 2 } else { 1 };
                (copies, bit, unit(r[2]) < c.reorder)
            })
            .collect()
    }

    #[test]
    fn decisions_follow_the_documented_procedure_and_repeat_per_seed() {
        let c = faults(0.2, 0.1, 0.15, 0.1);
        let lens: Vec<usize> = (0..5000).map(|i| 1 + i % 300).collect();
        let run = |seed| {
            let mut m = Impairment::new(c, seed);
            lens.iter().map(|&l| m.offer(0.0, l)).collect::<Vec<_>>()
        };
        let a = run(42);
        assert_eq!(a, run(42));
        assert_ne!(a, run(43));
        let expected = reference(42, c, &lens);
        let got: Vec<_> = a.iter().map(|v| (v.copies, v.corrupt_bit, v.reordered)).collect();
        assert_eq!(got, expected);
        // Rates near the configuration; faults combine (a datagram can be duplicated, reordered
        // and corrupted at once).
        let lost = a.iter().filter(|v| v.lost).count();
        assert!((850..1150).contains(&lost), "{lost}");
        assert!(a.iter().any(|v| v.duplicated && v.reordered && v.corrupt_bit.is_some()));
        for (v, &len) in a.iter().zip(&lens) {
            if let Some(bit) = v.corrupt_bit {
                assert!(bit >= 8 && bit < len * 8, "bit {bit} of a {len}-byte datagram: the tag byte is never touched");
            }
            assert_eq!(v.lost, v.copies == 0);
            // No latency: the first copy is due now unless reordered, into (0, 20] ms.
            if v.copies > 0 {
                assert_eq!(v.reordered, v.at[0] > 0.0);
                assert!(v.at[0] <= 20.0);
            }
            if v.copies == 2 {
                assert_eq!(v.at[1], 0.0);
            }
        }
    }

    #[test]
    fn a_changed_probability_does_not_shift_the_other_decisions() {
        let lens = [50usize; 2000];
        let mut a = Impairment::new(faults(0.3, 0.0, 0.0, 0.0), 9);
        let mut b = Impairment::new(faults(0.3, 0.5, 0.5, 0.5), 9);
        for &l in &lens {
            assert_eq!(a.offer(0.0, l).lost, b.offer(0.0, l).lost);
        }
    }

    #[test]
    fn extremes_bad_values_and_tiny_datagrams() {
        let mut all = Impairment::new(faults(1.0, 1.0, 1.0, 1.0), 1);
        assert!((0..1000).all(|_| all.offer(0.0, 10).code() == CODE_LOST));
        let mut none = Impairment::new(faults(f64::NAN, -3.0, 0.0, 0.0), 1);
        assert!((0..1000).all(|_| none.offer(5.0, 10) == Verdict { copies: 1, at: [5.0; 2], corrupt_bit: None, lost: false, queue_full: false, duplicated: false, reordered: false }));
        let mut c = Impairment::new(faults(0.0, 0.0, 0.0, 1.0), 1);
        assert_eq!(c.offer(0.0, 0).corrupt_bit, None);
        assert_eq!(c.offer(0.0, 1).corrupt_bit, None, "a datagram of only a tag byte is left alone");
        let bits: std::collections::HashSet<usize> = (0..1000).filter_map(|_| c.offer(0.0, 3).corrupt_bit).collect();
        assert_eq!(bits, (8..24).collect(), "every payload bit, and no tag bit");
        let mut d = vec![0u8; 3];
        Verdict { corrupt_bit: Some(9), ..c.offer(0.0, 3) }.apply_corruption(&mut d);
        assert_eq!(d, [0, 2, 0]);
        assert_eq!(c.stats().offered, 1003);
    }

    #[test]
    fn latency_jitter_bandwidth_and_backlog() {
        let cfg = ImpairConfig { latency: 5.0, bytes_per_ms: 10.0, max_backlog: 250.0, ..Default::default() };
        let mut m = Impairment::new(cfg, 3);
        // 100 bytes at 10 bytes/ms: 10 ms each, queued behind each other, then 5 ms of latency.
        assert_eq!(m.offer(0.0, 100).at[0], 15.0);
        assert_eq!(m.offer(0.0, 100).at[0], 25.0);
        // Backlog 200 bytes + 100 > 250: dropped, and the link's state is unchanged.
        let v = m.offer(0.0, 100);
        assert!(v.queue_full && v.copies == 0 && v.code() == CODE_QUEUE_FULL);
        assert!(!m.idle(19.0));
        assert_eq!(m.offer(10.0, 100).at[0], 35.0);
        assert!(m.idle(30.0));
        assert_eq!(m.offer(100.0, 50).at[0], 110.0);
        let mut j = Impairment::new(ImpairConfig { latency: 5.0, jitter: 2.0, duplicate: 1.0, ..Default::default() }, 4);
        let v = j.offer(1.0, 10);
        assert_eq!(v.copies, 2);
        assert!(v.at.iter().all(|t| (6.0..8.0).contains(t)));
        assert_ne!(v.at[0], v.at[1], "each copy has its own jitter");
        assert_eq!(v.code() & CODE_COPIES, 2);
    }
}
