//! The node's own upkeep, run inside the node once [`KadNode::start_upkeep`] is called: joining
//! through bootstrap addresses (with retries), refreshing the buckets after the join and
//! periodically, and one settling self-lookup after the join. The caller hears only the outcome
//! ([`Event::Joined`], [`Event::JoinRetry`], [`Event::JoinFailed`]); the lookups it runs are the
//! node's own: they end without an [`Event::LookupDone`].
//!
//! - **Join.** FIND_NODE of our id to every bootstrap address ([`KadNode::bootstrap`]), then a
//!   self-lookup through what they named. When no bootstrap node answered, the attempt is retried
//!   after `query_timeout × 2^attempt`, `retries` times, then the join has failed (the periodic
//!   refresh tries again while the table is empty).
//! - **Refresh at join**, `join_refresh_delay` after the join (the application's first steps
//!   after it joined go first): one lookup per bucket, one after the other, for the buckets the
//!   self-lookup did not cover (a bucket closer than the k-th closest node it found holds only
//!   nodes it asked) and that hold fewer than [`JOIN_FILL`] of k entries; each ends once its
//!   bucket holds that many ([`Enough::BucketFill`]).
//! - **Settling**, `settle` after the refresh at join: a self-lookup that ends once its first α
//!   answers name nobody closer than our k-th closest entry that we lack ([`Enough::Settle`]).
//! - **Periodic refresh**, every `refresh_interval`: the same settling self-lookup, then one
//!   lookup for each bucket not refreshed for `refresh_interval` that the self-lookup did not
//!   cover, each until its bucket holds k entries.
//!
//! One refresh runs at a time: one that comes due while another runs is skipped.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::search::{Enough, LookupOptions};
use super::{Counter, Event, KadNode, MAX_WAIT};
use crate::identity::NodeId;

/// At join, a refresh lookup fills its bucket to this share of k (and a bucket holding that many
/// needs none): the rest fills as nodes query us (each verified by a ping when it has room), which
/// costs no more datagrams per entry and asks nobody twice.
pub const JOIN_FILL: f64 = 0.25;

/// Settings of the node's upkeep (see the module docs).
#[derive(Debug, Clone)]
pub struct UpkeepConfig {
    /// Where to join (our own address among them is skipped; none: this node starts a network).
    pub bootstrap: Vec<SocketAddr>,
    /// Join attempts after the first when no bootstrap node answered.
    pub retries: u32,
    /// From the join to the refresh at join.
    pub join_refresh_delay: Duration,
    /// From the refresh at join to the settling self-lookup (zero: none).
    pub settle: Duration,
    /// The refresh period.
    pub refresh_interval: Duration,
}

/// What an upkeep lookup is for (kept by the lookup: see `Search::upkeep`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Task {
    Bootstrap { attempt: u32 },
    /// A refresh's self-lookup.
    SelfLookup,
    /// A refresh's lookup of bucket `bucket`.
    Bucket { bucket: usize },
    Settle,
}

/// The join's state.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Join {
    Idle,
    /// An attempt runs.
    Running,
    /// The next attempt is due at `at`.
    Retry { attempt: u32, at: Instant },
}

/// A refresh in progress.
struct Refresh {
    /// The refresh at join (else a periodic one).
    at_join: bool,
    /// Buckets below this one are covered: no lookup for them.
    covered: usize,
    /// The stale buckets, and the next to look at.
    stale: Vec<usize>,
    next: usize,
}

pub(super) struct Upkeep {
    config: UpkeepConfig,
    join: Join,
    /// The refresh at join is due at this time, with the first bucket not covered.
    join_refresh: Option<(Instant, usize)>,
    refresh: Option<Refresh>,
    refresh_at: Option<Instant>,
    settle_at: Option<Instant>,
    /// Its lookups that ended and wait to be acted on (their outcomes are taken then).
    pub(super) ended: Vec<(u32, Task)>,
}

impl Upkeep {
    /// When its next timer is due.
    pub(super) fn deadline(&self) -> Option<Instant> {
        let retry = match self.join {
            Join::Retry { at, .. } => Some(at),
            _ => None,
        };
        [retry, self.join_refresh.map(|(at, _)| at), self.refresh_at, self.settle_at].into_iter().flatten().min()
    }
}

impl KadNode {
    /// Starts the node's upkeep (see the module docs): the join now, the periodic refresh every
    /// `refresh_interval`. A second call starts it over.
    pub fn start_upkeep(&mut self, config: UpkeepConfig, now: Instant) {
        let config = UpkeepConfig {
            join_refresh_delay: config.join_refresh_delay.min(MAX_WAIT),
            settle: config.settle.min(MAX_WAIT),
            refresh_interval: config.refresh_interval.min(MAX_WAIT),
            ..config
        };
        let refresh_at = Some(now + config.refresh_interval);
        // A second call: the lookups of the upkeep before end here, unheard.
        self.searches.retain(|_, s| s.upkeep.is_none());
        if self.join.as_ref().is_some_and(|j| j.upkeep.is_some()) {
            self.join = None;
        }
        self.upkeep = Some(Upkeep { config, join: Join::Idle, join_refresh: None, refresh: None, refresh_at, settle_at: None, ended: Vec::new() });
        self.join_attempt(0, now);
        self.settle(now);
    }

    /// The upkeep's timers due at `now`.
    pub(super) fn upkeep_timers(&mut self, now: Instant) {
        let Some(u) = self.upkeep.as_mut() else { return };
        if let Join::Retry { attempt, at } = u.join {
            if at <= now {
                u.join = Join::Idle;
                self.join_attempt(attempt, now);
            }
        }
        let Some(u) = self.upkeep.as_mut() else { return };
        if let Some((_, covered)) = u.join_refresh.filter(|&(at, _)| at <= now) {
            u.join_refresh = None;
            self.refresh(true, covered, now);
        }
        let Some(u) = self.upkeep.as_mut() else { return };
        if u.settle_at.is_some_and(|at| at <= now) {
            u.settle_at = None;
            self.count(Counter::settle_lookups);
            self.neighbourhood_lookup(Task::Settle, now);
        }
        let Some(u) = self.upkeep.as_mut() else { return };
        if u.refresh_at.is_some_and(|at| at <= now) {
            u.refresh_at = None;
            let rejoin = !u.config.bootstrap.is_empty() && u.join == Join::Idle;
            if rejoin && self.table.is_empty() {
                self.join_attempt(0, now);
            }
            self.refresh(false, 0, now);
        }
    }

    /// Acts on the upkeep's lookups that ended (called as a step ends).
    pub(super) fn upkeep_ended(&mut self, now: Instant) {
        while let Some((id, task)) = self.upkeep.as_mut().and_then(|u| (!u.ended.is_empty()).then(|| u.ended.remove(0))) {
            let Some(o) = self.take_lookup(id) else { continue };
            match task {
                Task::Bootstrap { attempt } => self.bootstrap_outcome(attempt, o.seeds, &o.closest_ids, now),
                Task::SelfLookup => {
                    let covered = if o.closest_ids.is_empty() { 0 } else { self.neighbourhood_below() };
                    if let Some(r) = self.upkeep.as_mut().and_then(|u| u.refresh.as_mut()) {
                        r.covered = covered;
                    }
                    self.refresh_stale(now);
                }
                Task::Bucket { bucket } => {
                    self.table.mark_refreshed(bucket, now);
                    self.refresh_next(now);
                }
                Task::Settle => {}
            }
        }
        // Most of a node's life no upkeep lookup ends: it holds no buffer for them.
        if let Some(u) = self.upkeep.as_mut() {
            u.ended = Vec::new();
        }
    }

    fn join_attempt(&mut self, attempt: u32, now: Instant) {
        let own = self.own.udp;
        let Some(u) = self.upkeep.as_mut() else { return };
        let addrs: Vec<SocketAddr> = u.config.bootstrap.iter().copied().filter(|&a| a != own).collect();
        if addrs.is_empty() {
            u.join = Join::Idle;
            self.events.push_back(Event::Joined { bootstrapped: false });
            return;
        }
        u.join = Join::Running;
        self.begin_bootstrap(&addrs, now, Some(Task::Bootstrap { attempt }));
    }

    fn bootstrap_outcome(&mut self, attempt: u32, seeds: u32, closest: &[u8], now: Instant) {
        let k = self.config.k;
        let timeout = self.config.query_timeout;
        let Some(u) = self.upkeep.as_mut() else { return };
        if seeds == 0 {
            if attempt < u.config.retries {
                u.join = Join::Retry { attempt: attempt + 1, at: now + timeout.saturating_mul(1 << attempt.min(20)).min(MAX_WAIT) };
                self.count(Counter::bootstrap_retries);
                self.events.push_back(Event::JoinRetry { attempt: attempt + 1 });
            } else {
                u.join = Join::Idle;
                self.count(Counter::bootstrap_failed);
                self.events.push_back(Event::JoinFailed { attempts: attempt + 1 });
            }
            return;
        }
        u.join = Join::Idle;
        let delay = u.config.join_refresh_delay;
        self.count(Counter::joined);
        self.events.push_back(Event::Joined { bootstrapped: true });
        // The self-lookup converged on the k nodes closest to us: a bucket closer than the k-th
        // of them holds only those (it asked them all).
        let covered = closest
            .get(32 * (k - 1)..32 * k)
            .and_then(|kth| self.table.bucket_index(&NodeId::try_from(kth).expect("32 bytes")))
            .unwrap_or(0);
        if delay > Duration::ZERO {
            if let Some(u) = self.upkeep.as_mut() {
                u.join_refresh = Some((now + delay, covered));
            }
        } else {
            self.refresh(true, covered, now);
        }
    }

    /// Starts a refresh (see the module docs), unless one runs: that one stands for it.
    fn refresh(&mut self, at_join: bool, covered: usize, now: Instant) {
        let Some(u) = self.upkeep.as_mut() else { return };
        if u.refresh.is_some() {
            return self.refresh_over(at_join, now);
        }
        u.refresh = Some(Refresh { at_join, covered, stale: Vec::new(), next: 0 });
        if at_join {
            return self.refresh_stale(now);
        }
        self.count(Counter::self_lookups);
        self.neighbourhood_lookup(Task::SelfLookup, now);
    }

    /// The refresh's self-lookup is done (or there was none): list the stale buckets.
    fn refresh_stale(&mut self, now: Instant) {
        let Some(r) = self.upkeep.as_ref().and_then(|u| u.refresh.as_ref()) else { return };
        let interval = if r.at_join { Duration::ZERO } else { self.upkeep.as_ref().map_or(Duration::ZERO, |u| u.config.refresh_interval) };
        let stale = self.table.stale_buckets(now, interval);
        if let Some(r) = self.upkeep.as_mut().and_then(|u| u.refresh.as_mut()) {
            r.stale = stale;
            r.next = 0;
        }
        self.refresh_next(now);
    }

    /// The refresh's next stale bucket: skipped when covered (or, at join, holding enough),
    /// else looked up; the refresh ends after the last.
    fn refresh_next(&mut self, now: Instant) {
        let k = self.config.k;
        loop {
            let Some(r) = self.upkeep.as_mut().and_then(|u| u.refresh.as_mut()) else { return };
            let Some(&b) = r.stale.get(r.next) else {
                let at_join = r.at_join;
                if let Some(u) = self.upkeep.as_mut() {
                    u.refresh = None;
                }
                return self.refresh_over(at_join, now);
            };
            r.next += 1;
            let (at_join, covered) = (r.at_join, r.covered);
            let fill = if at_join { (k as f64 * JOIN_FILL).ceil() as usize } else { k };
            if b < covered || (at_join && self.table.bucket(b).len() >= fill) {
                if b < covered {
                    self.count(Counter::refresh_skipped_covered);
                }
                self.table.mark_refreshed(b, now);
                continue;
            }
            let target = self.random_id_in(b);
            self.count(Counter::refresh_lookups);
            // A refresh is for its bucket: once the bucket is full, further answers would only wait
            // in its replacement cache.
            let opts = LookupOptions { enough: Enough::BucketFill { bucket: b, fill }, ..LookupOptions::default() };
            if self.start_search(target, opts, now, Some(Task::Bucket { bucket: b })).is_some() {
                return;
            }
            // As many lookups as a node may run: this bucket waits for the next refresh.
        }
    }

    /// A refresh ended (or one came due while another ran): the next step of its kind.
    fn refresh_over(&mut self, at_join: bool, now: Instant) {
        let Some(u) = self.upkeep.as_mut() else { return };
        if at_join {
            if u.config.settle > Duration::ZERO && u.settle_at.is_none() {
                u.settle_at = Some(now + u.config.settle);
            }
        } else if u.refresh_at.is_none() {
            u.refresh_at = Some(now + u.config.refresh_interval);
        }
    }

    /// A self-lookup that keeps the neighbourhood current: it ends once the first α answers (from
    /// our closest entries) name no node closer to us than our k-th closest entry that is not in
    /// our table. With fewer than k entries, a whole self-lookup.
    fn neighbourhood_lookup(&mut self, task: Task, now: Instant) {
        let enough = match self.kth_closest() {
            Some(kth) => Enough::Settle { kth },
            None => Enough::Never,
        };
        let own = self.own.id;
        let opts = LookupOptions { ids: true, enough, ..LookupOptions::default() };
        // As many lookups as a node may run: a refresh goes on without its self-lookup.
        if self.start_search(own, opts, now, Some(task)).is_none() && task == Task::SelfLookup {
            self.refresh_stale(now);
        }
    }

    /// Our k-th closest entry's id, if the table holds k.
    fn kth_closest(&mut self) -> Option<NodeId> {
        let k = self.config.k;
        if self.table.len() < k {
            return None;
        }
        let own = self.own.id;
        let mut kth = None;
        self.table.for_each_closest(&own, k, &mut self.scratch, |e| kth = Some(e.id));
        kth
    }

    /// After a periodic self-lookup that heard answers: our k closest entries are the k nodes
    /// nearest to us as far as our nearest neighbours know, so a bucket closer than the k-th of
    /// them holds only such nodes. The first bucket not covered (0: none).
    fn neighbourhood_below(&mut self) -> usize {
        self.kth_closest().and_then(|kth| self.table.bucket_index(&kth)).unwrap_or(0)
    }

    /// A random id in bucket `index`'s range, from the node's generator.
    pub fn random_id_in(&mut self, index: usize) -> NodeId {
        let mut r = [0u8; 32];
        for c in r.chunks_mut(4) {
            c.copy_from_slice(&self.rand().to_le_bytes());
        }
        self.table.random_id_in_bucket(index, &r)
    }
}
