//! Token buckets in virtual time, per source and global, for handshake initiations.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Instant;

/// A token bucket: `rate` tokens per second, holding at most `burst`. Integer milli-tokens.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    milli: u64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(now: Instant, burst: u32) -> Self {
        TokenBucket {
            milli: u64::from(burst) * 1000,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant, rate: u32, burst: u32) {
        let elapsed_ms =
            u64::try_from(now.saturating_duration_since(self.last).as_millis()).unwrap_or(u64::MAX);
        if elapsed_ms > 0 {
            self.milli = self
                .milli
                .saturating_add(elapsed_ms.saturating_mul(u64::from(rate)))
                .min(u64::from(burst) * 1000);
            self.last = now;
        }
    }

    /// Takes one token if available.
    pub(crate) fn take(&mut self, now: Instant, rate: u32, burst: u32) -> bool {
        self.refill(now, rate, burst);
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }

    fn is_full(&mut self, now: Instant, rate: u32, burst: u32) -> bool {
        self.refill(now, rate, burst);
        self.milli >= u64::from(burst) * 1000
    }
}

/// Per-source buckets in a bounded table. A source whose bucket has refilled completely is
/// equivalent to an unknown one, so such entries are the first to go when the table is full;
/// otherwise the least recently refilled entry is evicted.
#[derive(Debug)]
pub(crate) struct SourceLimiter<P> {
    buckets: HashMap<P, TokenBucket>,
    max: usize,
    rate: u32,
    burst: u32,
}

impl<P: Copy + Eq + Hash> SourceLimiter<P> {
    pub(crate) fn new(max: usize, rate: u32, burst: u32) -> Self {
        SourceLimiter {
            buckets: HashMap::new(),
            max: max.max(1),
            rate,
            burst,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Takes one token for `source`.
    pub(crate) fn allow(&mut self, now: Instant, source: P) -> bool {
        let (rate, burst) = (self.rate, self.burst);
        if !self.buckets.contains_key(&source) && self.buckets.len() >= self.max {
            self.buckets.retain(|_, b| !b.is_full(now, rate, burst));
            if self.buckets.len() >= self.max {
                if let Some(oldest) = self
                    .buckets
                    .iter()
                    .min_by_key(|(_, b)| b.last)
                    .map(|(p, _)| *p)
                {
                    self.buckets.remove(&oldest);
                }
            }
        }
        self.buckets
            .entry(source)
            .or_insert_with(|| TokenBucket::new(now, burst))
            .take(now, rate, burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_refills_in_virtual_time() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(t0, 3);
        assert!(b.take(t0, 2, 3));
        assert!(b.take(t0, 2, 3));
        assert!(b.take(t0, 2, 3));
        assert!(!b.take(t0, 2, 3));
        assert!(!b.take(t0 + Duration::from_millis(499), 2, 3));
        assert!(b.take(t0 + Duration::from_millis(500), 2, 3));
        // Never more than the burst.
        let later = t0 + Duration::from_secs(100);
        for _ in 0..3 {
            assert!(b.take(later, 2, 3));
        }
        assert!(!b.take(later, 2, 3));
    }

    #[test]
    fn source_table_is_bounded() {
        let t0 = Instant::now();
        let mut l = SourceLimiter::new(10, 1, 1);
        for p in 0..1000u32 {
            assert!(l.allow(t0, p));
            assert!(l.len() <= 10);
        }
        assert!(!l.allow(t0, 999));
    }
}
