//! Seeded fault injection for datagrams (the core of the `FaultyTransport` test layer).
//!
//! [`Faults::decide`] says what to do with the next datagram: pass it, drop it, send it twice,
//! hold it back behind the next one (reorder), or flip one bit (corrupt). Decisions come from a
//! seeded SplitMix64 generator, so a run with the same seed and the same datagram sequence makes
//! the same decisions. The driver applies them; nothing here touches a socket or a clock.

/// Probabilities, each in `0.0..=1.0`, checked in this order: drop, duplicate, reorder, corrupt.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FaultConfig {
    /// Probability that a datagram is dropped.
    pub drop: f64,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
    /// Probability that a datagram is held back and delivered after the next one.
    pub reorder: f64,
    /// Probability that one random bit of the datagram is flipped.
    pub corrupt: f64,
}

/// What to do with one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Deliver unchanged.
    Pass,
    /// Do not deliver.
    Drop,
    /// Deliver twice.
    Duplicate,
    /// Deliver after the next datagram (or when the driver flushes).
    Reorder,
    /// Deliver with the bit at this index (counted from the first byte's lowest bit) flipped.
    Corrupt(usize),
}

/// Counters of the decisions taken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Datagrams passed unchanged.
    pub passed: u64,
    /// Datagrams dropped.
    pub dropped: u64,
    /// Datagrams duplicated.
    pub duplicated: u64,
    /// Datagrams reordered.
    pub reordered: u64,
    /// Datagrams corrupted.
    pub corrupted: u64,
}

/// A seeded fault injector.
#[derive(Clone, Debug)]
pub struct Faults {
    config: FaultConfig,
    state: u64,
    stats: FaultStats,
}

impl Faults {
    /// An injector; probabilities are clamped to `0.0..=1.0` (NaN counts as 0).
    pub fn new(config: FaultConfig, seed: u64) -> Faults {
        let clamp = |p: f64| if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
        let config = FaultConfig {
            drop: clamp(config.drop),
            duplicate: clamp(config.duplicate),
            reorder: clamp(config.reorder),
            corrupt: clamp(config.corrupt),
        };
        Faults { config, state: seed, stats: FaultStats::default() }
    }

    /// The configuration in use.
    pub fn config(&self) -> FaultConfig {
        self.config
    }

    /// Decisions so far.
    pub fn stats(&self) -> FaultStats {
        self.stats
    }

    fn next_u64(&mut self) -> u64 {
        // SplitMix64 (Steele, Lea, Flood 2014): small, fast, and good enough for test faults.
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform number in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Decides the fate of a datagram of `len` bytes. An empty datagram is never corrupted.
    pub fn decide(&mut self, len: usize) -> Fault {
        let c = self.config;
        let fault = if c.drop > 0.0 && self.unit() < c.drop {
            Fault::Drop
        } else if c.duplicate > 0.0 && self.unit() < c.duplicate {
            Fault::Duplicate
        } else if c.reorder > 0.0 && self.unit() < c.reorder {
            Fault::Reorder
        } else if c.corrupt > 0.0 && len > 0 && self.unit() < c.corrupt {
            Fault::Corrupt((self.next_u64() % (len as u64 * 8)) as usize)
        } else {
            Fault::Pass
        };
        match fault {
            Fault::Pass => self.stats.passed += 1,
            Fault::Drop => self.stats.dropped += 1,
            Fault::Duplicate => self.stats.duplicated += 1,
            Fault::Reorder => self.stats.reordered += 1,
            Fault::Corrupt(_) => self.stats.corrupted += 1,
        }
        fault
    }

    /// Flips bit `bit` of `data` (as chosen by [`Fault::Corrupt`]); out-of-range indexes do nothing.
    pub fn corrupt(data: &mut [u8], bit: usize) {
        if let Some(b) = data.get_mut(bit / 8) {
            *b ^= 1 << (bit % 8);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_decisions_and_rates_near_config() {
        let cfg = FaultConfig { drop: 0.1, duplicate: 0.05, reorder: 0.05, corrupt: 0.02 };
        let mut a = Faults::new(cfg, 7);
        let mut b = Faults::new(cfg, 7);
        let da: Vec<Fault> = (0..100_000).map(|_| a.decide(100)).collect();
        let db: Vec<Fault> = (0..100_000).map(|_| b.decide(100)).collect();
        assert_eq!(da, db);
        let s = a.stats();
        assert_eq!(s.passed + s.dropped + s.duplicated + s.reordered + s.corrupted, 100_000);
        assert!((9_000..11_000).contains(&s.dropped), "{s:?}");
        assert!((3_800..5_200).contains(&s.duplicated), "{s:?}");
        let mut c = Faults::new(cfg, 8);
        let dc: Vec<Fault> = (0..1000).map(|_| c.decide(100)).collect();
        assert_ne!(&da[..1000], &dc[..]);
    }

    #[test]
    fn extremes_and_bad_probabilities() {
        let mut all = Faults::new(FaultConfig { drop: 1.0, ..Default::default() }, 1);
        assert!((0..1000).all(|_| all.decide(10) == Fault::Drop));
        let mut none = Faults::new(FaultConfig { drop: f64::NAN, duplicate: -3.0, ..Default::default() }, 1);
        assert!((0..1000).all(|_| none.decide(10) == Fault::Pass));
        let mut c = Faults::new(FaultConfig { corrupt: 1.0, ..Default::default() }, 1);
        assert_eq!(c.decide(0), Fault::Pass, "nothing to corrupt in an empty datagram");
        for _ in 0..1000 {
            match c.decide(3) {
                Fault::Corrupt(bit) => assert!(bit < 24),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn corrupt_flips_exactly_one_bit() {
        let mut d = vec![0u8; 4];
        Faults::corrupt(&mut d, 9);
        assert_eq!(d, [0, 2, 0, 0]);
        Faults::corrupt(&mut d, 1000);
        assert_eq!(d, [0, 2, 0, 0]);
    }
}
