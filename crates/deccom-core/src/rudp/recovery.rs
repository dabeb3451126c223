//! RTT estimation (RFC 9002 §5), probe-timeout computation (§6.2.1), CUBIC congestion control
//! (RFC 9438) counted in datagrams with RFC 9002's recovery periods (§7), and a token-bucket pacer
//! (§7.7).

use std::time::{Duration, Instant};

/// Timer granularity (RFC 9002 kGranularity), the floor of the loss-delay and PTO variance terms.
pub const GRANULARITY: Duration = Duration::from_millis(1);
/// Smallest congestion window, in datagrams (RFC 9002 kMinimumWindow).
pub const MIN_WINDOW: u32 = 2;
/// Datagrams the pacer lets out back to back.
pub const PACING_BURST: u64 = 10;

/// Shortest span of sending time a pacing burst may cover (see [`Pacer::burst_ns`]).
pub const PACING_MIN_BURST_TIME: Duration = Duration::from_micros(500);

/// Smoothed RTT state (RFC 9002 §5.3).
#[derive(Debug, Clone, Copy)]
pub struct RttEstimator {
    latest: Duration,
    smoothed: Duration,
    var: Duration,
    min: Duration,
    has_sample: bool,
}

impl RttEstimator {
    /// Before any sample: `smoothed = initial`, `rttvar = initial / 2` (§5.3 / §6.2.2).
    #[must_use]
    pub fn new(initial: Duration) -> Self {
        RttEstimator {
            latest: initial,
            smoothed: initial,
            var: initial / 2,
            min: initial,
            has_sample: false,
        }
    }

    /// Feeds one sample: `latest` is now − send time of the largest newly acknowledged packet,
    /// `ack_delay` the peer-reported delay, already capped at its max ack delay.
    pub fn update(&mut self, latest: Duration, ack_delay: Duration) {
        self.latest = latest;
        if !self.has_sample {
            self.has_sample = true;
            self.min = latest;
            self.smoothed = latest;
            self.var = latest / 2;
            return;
        }
        self.min = self.min.min(latest);
        let adjusted = if latest >= self.min + ack_delay {
            latest - ack_delay
        } else {
            latest
        };
        let diff = self.smoothed.abs_diff(adjusted);
        self.var = (self.var * 3 + diff) / 4;
        self.smoothed = (self.smoothed * 7 + adjusted) / 8;
    }

    /// Smoothed RTT.
    #[must_use]
    pub fn smoothed(&self) -> Duration {
        self.smoothed
    }

    /// RTT variation.
    #[must_use]
    pub fn var(&self) -> Duration {
        self.var
    }

    /// Latest sample.
    #[must_use]
    pub fn latest(&self) -> Duration {
        self.latest
    }

    /// Smallest RTT sampled (the initial RTT before any sample).
    #[must_use]
    pub fn min(&self) -> Duration {
        self.min
    }

    /// Whether a sample was taken.
    #[must_use]
    pub fn has_sample(&self) -> bool {
        self.has_sample
    }

    /// Time threshold of loss detection (§6.1.2): 9/8 × max(srtt, latest), at least the granularity.
    #[must_use]
    pub fn loss_delay(&self) -> Duration {
        (self.smoothed.max(self.latest) * 9 / 8).max(GRANULARITY)
    }

    /// Probe timeout (§6.2.1): `srtt + max(4·rttvar, granularity) + max_ack_delay`, doubled per
    /// consecutive expiry, clamped to `[min, max]`.
    #[must_use]
    pub fn pto(
        &self,
        max_ack_delay: Duration,
        backoff: u32,
        min: Duration,
        max: Duration,
    ) -> Duration {
        let base = self.smoothed + (self.var * 4).max(GRANULARITY) + max_ack_delay;
        let base = base.clamp(min, max);
        base.checked_mul(1u32 << backoff.min(16))
            .unwrap_or(max)
            .min(max)
    }
}

/// CUBIC congestion controller (RFC 9438) with the window counted in datagrams: slow start with
/// a delay-based exit ([`HyStart`]), a multiplicative decrease to [`CUBIC_BETA`] of the window
/// (with fast convergence), then a window that follows the cubic `C·(t − K)³ + W_max` in time
/// since the reduction — back near `W_max` after `K` seconds whatever the RTT, where Reno's
/// one datagram per round trip would take `W_max / 2` round trips (minutes on a long fat path) —
/// and never below the Reno-friendly estimate. At most one reduction per recovery period (RFC
/// 9002 §7.3.2).
#[derive(Debug, Clone, Copy)]
pub struct Cubic {
    cwnd: u32,
    ssthresh: u32,
    recovery_start: Option<Instant>,
    initial: u32,
    max: u32,
    hystart: HyStart,
    /// Window before the last reduction (`W_max`), in datagrams.
    w_max: f64,
    /// Seconds after the epoch start at which the cubic reaches `w_max` (set when the epoch starts).
    k: f64,
    /// Start of the current congestion-avoidance epoch (the first ack after a reduction).
    epoch_start: Option<Instant>,
    /// Reno-friendly window estimate (`W_est`).
    w_est: f64,
    /// Fractional window growth not yet added to `cwnd`.
    growth: f64,
}

/// CUBIC's multiplicative decrease factor (RFC 9438 §4.6).
pub const CUBIC_BETA: f64 = 0.7;
/// CUBIC's aggressiveness constant `C` (RFC 9438 §5), in datagrams per second³.
pub const CUBIC_C: f64 = 0.4;
/// The Reno-friendly additive increase per round trip, `3·(1 − β) / (1 + β)` (RFC 9438 §4.3).
const CUBIC_ALPHA: f64 = 3.0 * (1.0 - CUBIC_BETA) / (1.0 + CUBIC_BETA);

/// Delay-based slow-start exit (HyStart, as in RFC 9406 §4.2 without the conservative phase):
/// per round trip, the minimum RTT of at least [`HYSTART_MIN_SAMPLES`] samples is compared with
/// the previous round's; when it grew by more than `clamp(last / 8, 4 ms, 16 ms)`, a queue is
/// building and slow start ends before it overflows (on loopback that queue is the receiver's
/// socket buffer, and overflowing it drops whole GSO bursts).
#[derive(Debug, Clone, Copy, Default)]
struct HyStart {
    round_end: u64,
    current_min: Option<Duration>,
    last_min: Option<Duration>,
    samples: u32,
}

/// How much an RTT must exceed a path's base RTT `base` to say our datagrams are queueing:
/// `clamp(base / 8, 4 ms, 16 ms)` (RFC 9406's η). Used by HyStart to end slow start, and by loss
/// differentiation to take an isolated loss as a full queue. The 4 ms floor keeps the scheduling
/// jitter of a loaded host (a receiver thread waiting for a core) from reading as a queue on
/// loopback or LAN paths.
#[must_use]
pub fn queue_delay_threshold(base: Duration) -> Duration {
    (base / 8).clamp(Duration::from_millis(4), Duration::from_millis(16))
}

/// RTT samples a round needs before HyStart compares it.
pub const HYSTART_MIN_SAMPLES: u32 = 3;

impl Cubic {
    /// A controller in slow start with `initial` datagrams of window.
    #[must_use]
    pub fn new(initial: u32, max: u32) -> Self {
        let max = max.max(MIN_WINDOW);
        let initial = initial.clamp(MIN_WINDOW, max);
        Cubic {
            cwnd: initial,
            ssthresh: u32::MAX,
            recovery_start: None,
            initial,
            max,
            hystart: HyStart::default(),
            w_max: 0.0,
            k: 0.0,
            epoch_start: None,
            w_est: 0.0,
            growth: 0.0,
        }
    }

    /// Congestion window in datagrams.
    #[must_use]
    pub fn window(&self) -> u32 {
        self.cwnd
    }

    /// Slow-start threshold.
    #[must_use]
    pub fn ssthresh(&self) -> u32 {
        self.ssthresh
    }

    /// Whether a packet sent at `sent` falls inside the current recovery period (§7.3.2).
    #[must_use]
    pub fn in_recovery(&self, sent: Instant) -> bool {
        self.recovery_start.is_some_and(|r| sent <= r)
    }

    /// One datagram sent at `sent` was acknowledged at `now`; `srtt` is the smoothed RTT.
    /// `cwnd_limited` is false when the sender did not use the window (RFC 9002 §7.8: the window
    /// does not grow then).
    pub fn on_ack(&mut self, now: Instant, sent: Instant, cwnd_limited: bool, srtt: Duration) {
        if self.in_recovery(sent) || !cwnd_limited {
            return;
        }
        if self.cwnd < self.ssthresh {
            self.cwnd = self.cwnd.saturating_add(1).min(self.max);
            return;
        }
        let cwnd = f64::from(self.cwnd);
        let epoch = match self.epoch_start {
            Some(e) => e,
            None => {
                // Congestion avoidance starts (after a reduction, or after slow start ended without
                // a loss: then the cubic starts flat at this window).
                self.w_max = self.w_max.max(cwnd);
                self.k = ((self.w_max - cwnd) / CUBIC_C).cbrt();
                self.w_est = cwnd;
                self.epoch_start = Some(now);
                now
            }
        };
        // The window the cubic wants one RTT from now (RFC 9438 §4.2), within [cwnd, 1.5 cwnd].
        let t = now.saturating_duration_since(epoch).as_secs_f64() + srtt.as_secs_f64();
        let w_cubic = CUBIC_C * (t - self.k).powi(3) + self.w_max;
        self.w_est += CUBIC_ALPHA / cwnd;
        let target = if w_cubic < self.w_est {
            // Reno-friendly region (§4.3): at least what Reno would have.
            self.w_est
        } else {
            w_cubic.clamp(cwnd, 1.5 * cwnd)
        };
        if target > cwnd {
            self.growth += (target - cwnd) / cwnd;
        }
        if self.growth >= 1.0 {
            let add = self.growth.floor();
            self.growth -= add;
            // `add` <= 0.5 × cwnd + 1 (the clamp above), far inside u32.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let add = add as u32;
            self.cwnd = self.cwnd.saturating_add(add).min(self.max);
        }
    }

    /// An RTT sample from an acknowledgement whose largest packet number is `largest_acked`;
    /// `next_pn` is the next packet number to be sent (it ends the round that starts now).
    /// Ends slow start when HyStart sees the RTT grow (see [`HyStart`]). Returns whether it did.
    pub fn on_rtt_sample(&mut self, rtt: Duration, largest_acked: u64, next_pn: u64) -> bool {
        if self.cwnd >= self.ssthresh {
            return false;
        }
        let h = &mut self.hystart;
        if largest_acked >= h.round_end {
            h.last_min = h.current_min.or(h.last_min);
            h.current_min = None;
            h.samples = 0;
            h.round_end = next_pn;
        }
        h.current_min = Some(h.current_min.map_or(rtt, |m| m.min(rtt)));
        h.samples += 1;
        if let (Some(cur), Some(last)) = (h.current_min, h.last_min) {
            let eta = queue_delay_threshold(last);
            if h.samples >= HYSTART_MIN_SAMPLES && cur >= last + eta {
                self.ssthresh = self.cwnd;
                return true;
            }
        }
        false
    }

    /// Packets were declared lost; `largest_lost_sent` is the send time of the newest of them.
    /// Reduces the window at most once per recovery period (§7.3.2). Returns whether it did.
    pub fn on_loss(&mut self, now: Instant, largest_lost_sent: Instant) -> bool {
        if self.in_recovery(largest_lost_sent) {
            return false;
        }
        self.recovery_start = Some(now);
        self.reduce(MIN_WINDOW.max(Self::beta_of(self.cwnd)));
        true
    }

    /// Persistent congestion (RFC 9002 §7.6): collapse to the minimum window.
    pub fn on_persistent_congestion(&mut self, now: Instant) {
        self.reduce(MIN_WINDOW);
        self.recovery_start = Some(now);
    }

    /// `β × window`, rounded down.
    fn beta_of(window: u32) -> u32 {
        // A u32 times 0.7 fits a u32.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let w = (f64::from(window) * CUBIC_BETA) as u32;
        w
    }

    /// A congestion event: remember `W_max` (lowered further when the window had not regained
    /// the previous one: fast convergence, §4.7), set the new window, and start a new epoch at
    /// the next acknowledgement.
    fn reduce(&mut self, to: u32) {
        let w = f64::from(self.cwnd);
        self.w_max = if w < self.w_max { w * (1.0 + CUBIC_BETA) / 2.0 } else { w };
        self.ssthresh = MIN_WINDOW.max(Self::beta_of(self.cwnd));
        self.cwnd = to;
        self.epoch_start = None;
        self.growth = 0.0;
    }

    /// Back to the initial state (the peer restarted).
    pub fn reset(&mut self) {
        *self = Cubic::new(self.initial, self.max);
    }
}

/// Token-bucket pacer (RFC 9002 §7.7): releases `N = 5/4 × cwnd` datagrams per smoothed RTT
/// with bursts of up to [`PACING_BURST`] datagrams.
#[derive(Debug, Clone, Copy)]
pub struct Pacer {
    credit_ns: u64,
    last: Instant,
}

impl Pacer {
    /// A full bucket at `now`.
    #[must_use]
    pub fn new(now: Instant) -> Self {
        Pacer {
            credit_ns: u64::MAX,
            last: now,
        }
    }

    /// Nanoseconds between datagrams for this window and RTT (0 = unpaced).
    #[must_use]
    pub fn interval_ns(cwnd: u32, srtt: Duration) -> u64 {
        let srtt_ns = u64::try_from(srtt.as_nanos()).unwrap_or(u64::MAX);
        srtt_ns.saturating_mul(4) / (5 * u64::from(cwnd.max(1)))
    }

    /// The credit a sender may bank: [`PACING_BURST`] datagrams, or [`PACING_MIN_BURST_TIME`]
    /// worth of them when that is more. At high rates a timer per 10 datagrams would cost more
    /// than the datagrams (a driver wakes in tens of microseconds at best), so bursts grow with
    /// the rate while the average rate stays paced.
    #[must_use]
    pub fn burst_ns(interval_ns: u64) -> u64 {
        interval_ns
            .saturating_mul(PACING_BURST)
            .max(u64::try_from(PACING_MIN_BURST_TIME.as_nanos()).unwrap_or(u64::MAX))
    }

    /// `None` if a datagram may leave now, else the instant it may.
    pub fn delay(&mut self, now: Instant, cwnd: u32, srtt: Duration) -> Option<Instant> {
        let interval = Self::interval_ns(cwnd, srtt);
        if interval == 0 {
            return None;
        }
        let elapsed =
            u64::try_from(now.saturating_duration_since(self.last).as_nanos()).unwrap_or(u64::MAX);
        self.last = self.last.max(now);
        self.credit_ns = self
            .credit_ns
            .saturating_add(elapsed)
            .min(Self::burst_ns(interval));
        if self.credit_ns >= interval {
            None
        } else {
            Some(now + Duration::from_nanos(interval - self.credit_ns))
        }
    }

    /// A paced datagram left.
    pub fn on_sent(&mut self, cwnd: u32, srtt: Duration) {
        let interval = Self::interval_ns(cwnd, srtt);
        self.credit_ns = self.credit_ns.saturating_sub(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn rtt_estimator_follows_rfc9002() {
        let mut rtt = RttEstimator::new(100 * MS);
        assert!(!rtt.has_sample());
        assert_eq!(rtt.smoothed(), 100 * MS);
        assert_eq!(rtt.var(), 50 * MS);
        rtt.update(40 * MS, 10 * MS);
        // First sample ignores the ack delay.
        assert_eq!(rtt.smoothed(), 40 * MS);
        assert_eq!(rtt.var(), 20 * MS);
        // 60 ms with 10 ms ack delay -> adjusted 50 ms.
        rtt.update(60 * MS, 10 * MS);
        assert_eq!(rtt.var(), (20 * MS * 3 + 10 * MS) / 4);
        assert_eq!(rtt.smoothed(), (40 * MS * 7 + 50 * MS) / 8);
        // The ack delay is not subtracted when that would go below min_rtt.
        let before = rtt.smoothed();
        rtt.update(45 * MS, 10 * MS);
        assert_eq!(rtt.smoothed(), (before * 7 + 45 * MS) / 8);
        assert_eq!(rtt.latest(), 45 * MS);
        assert_eq!(rtt.loss_delay(), rtt.smoothed().max(45 * MS) * 9 / 8);
    }

    #[test]
    fn pto_backs_off_and_is_clamped() {
        let rtt = RttEstimator::new(100 * MS);
        let base = rtt.pto(5 * MS, 0, 20 * MS, 10_000 * MS);
        assert_eq!(base, 100 * MS + 200 * MS + 5 * MS);
        assert_eq!(rtt.pto(5 * MS, 1, 20 * MS, 10_000 * MS), base * 2);
        assert_eq!(rtt.pto(5 * MS, 3, 20 * MS, 10_000 * MS), base * 8);
        assert_eq!(rtt.pto(5 * MS, 10, 20 * MS, 10_000 * MS), 10_000 * MS);
        assert_eq!(rtt.pto(5 * MS, 40, 20 * MS, 10_000 * MS), 10_000 * MS);
        let mut fast = RttEstimator::new(100 * MS);
        fast.update(Duration::from_micros(30), Duration::ZERO);
        assert_eq!(fast.pto(Duration::ZERO, 0, 20 * MS, 10_000 * MS), 20 * MS);
        assert_eq!(fast.pto(Duration::ZERO, 1, 20 * MS, 10_000 * MS), 40 * MS);
    }

    #[test]
    fn cubic_slow_start_reduction_and_one_reduction_per_recovery() {
        let t0 = Instant::now();
        let srtt = 10 * MS;
        let mut cc = Cubic::new(10, 1000);
        for _ in 0..10 {
            cc.on_ack(t0, t0, true, srtt);
        }
        assert_eq!(cc.window(), 20);
        // Not window-limited: no growth.
        cc.on_ack(t0, t0, false, srtt);
        assert_eq!(cc.window(), 20);
        let t1 = t0 + 10 * MS;
        assert!(cc.on_loss(t1, t0));
        assert_eq!(cc.window(), 14, "beta = 0.7");
        assert_eq!(cc.ssthresh(), 14);
        // Another loss of a packet sent before recovery started: no second reduction.
        assert!(!cc.on_loss(t1 + MS, t0 + 5 * MS));
        assert_eq!(cc.window(), 14);
        // Acks of packets sent before recovery do not grow the window.
        cc.on_ack(t1, t0, true, srtt);
        assert_eq!(cc.window(), 14);
        // A loss of a packet sent after recovery started reduces again, with fast convergence:
        // the window (14) had not regained W_max (20), so W_max becomes 14 × 0.85.
        let t2 = t1 + MS;
        cc.on_ack(t2, t2, true, srtt);
        assert!(cc.on_loss(t2 + MS, t2));
        assert_eq!(cc.window(), 9);
        cc.on_persistent_congestion(t2 + 2 * MS);
        assert_eq!(cc.window(), MIN_WINDOW);
        for _ in 0..100 {
            cc.on_loss(t2 + 100 * MS, t2 + 99 * MS);
        }
        assert_eq!(cc.window(), MIN_WINDOW);
        cc.reset();
        assert_eq!(cc.window(), 10);
    }

    /// After a reduction the window follows the cubic: concave back to W_max at K seconds
    /// whatever the RTT (Reno would need W_max / 2 round trips), then convex beyond it.
    #[test]
    fn cubic_regains_w_max_after_k_seconds() {
        let t0 = Instant::now();
        let srtt = 100 * MS;
        let mut cc = Cubic::new(1000, 100_000);
        assert!(cc.on_loss(t0, t0));
        assert_eq!(cc.window(), 700);
        // K = cbrt(300 / 0.4) = 9.09 s. Ack a window per RTT for 8 s, then for 4 s more.
        let mut now = t0 + MS;
        let per_rtt = |cc: &Cubic| cc.window();
        while now < t0 + Duration::from_secs(8) {
            for _ in 0..per_rtt(&cc) {
                cc.on_ack(now, now, true, srtt);
            }
            now += srtt;
        }
        let at_8s = cc.window();
        assert!((950..1000).contains(&at_8s), "{at_8s}: close below W_max before K");
        while now < t0 + Duration::from_secs(12) {
            for _ in 0..per_rtt(&cc) {
                cc.on_ack(now, now, true, srtt);
            }
            now += srtt;
        }
        let at_12s = cc.window();
        assert!(at_12s > 1000 && at_12s < 1100, "{at_12s}: past W_max, growing slowly at first");
        // Reno after 120 round trips would be at 700 + 120 = 820.
    }

    #[test]
    fn pacer_releases_bursts_then_spaces_datagrams() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0);
        let srtt = 100 * MS;
        let cwnd = 100;
        // 100 ms / (1.25 * 100) = 800 us.
        assert_eq!(Pacer::interval_ns(cwnd, srtt), 800_000);
        for _ in 0..PACING_BURST {
            assert_eq!(p.delay(t0, cwnd, srtt), None);
            p.on_sent(cwnd, srtt);
        }
        let next = p.delay(t0, cwnd, srtt).expect("burst used up");
        assert_eq!(next, t0 + Duration::from_micros(800));
        assert_eq!(p.delay(next, cwnd, srtt), None);
        p.on_sent(cwnd, srtt);
        assert_eq!(
            p.delay(next, cwnd, srtt),
            Some(next + Duration::from_micros(800))
        );
        // An idle second refills at most one burst.
        let later = next + Duration::from_secs(1);
        for _ in 0..PACING_BURST {
            assert_eq!(p.delay(later, cwnd, srtt), None);
            p.on_sent(cwnd, srtt);
        }
        assert!(p.delay(later, cwnd, srtt).is_some());
        // A zero RTT (in-memory) is unpaced.
        assert_eq!(p.delay(later, cwnd, Duration::ZERO), None);
    }
}

#[cfg(test)]
mod hystart_tests {
    use super::*;

    #[test]
    fn a_growing_rtt_ends_slow_start_before_any_loss() {
        let mut cc = Cubic::new(32, 100_000);
        let ms = Duration::from_millis;
        // Round 1 (packets 0..100): RTT 1 ms.
        for pn in 0..10 {
            assert!(!cc.on_rtt_sample(ms(1), pn, 100));
        }
        // Round 2: the queue grows, RTT 4.5 ms >= 1 ms + max(1/8 ms, 4 ms).
        let mut exited = false;
        for pn in 100..110 {
            exited |= cc.on_rtt_sample(ms(5) + Duration::from_micros(500), pn, 200);
        }
        assert!(exited);
        assert_eq!(cc.ssthresh(), cc.window(), "slow start ended at the current window");
        // Out of slow start, samples change nothing.
        assert!(!cc.on_rtt_sample(ms(50), 300, 400));
    }

    #[test]
    fn a_steady_rtt_keeps_slow_start() {
        let mut cc = Cubic::new(32, 100_000);
        for pn in 0..1000u64 {
            assert!(!cc.on_rtt_sample(Duration::from_millis(2), pn, pn + 100));
        }
        assert_eq!(cc.ssthresh(), u32::MAX);
    }
}
