//! The iterative Kademlia lookup as a state machine (rust-libp2p's `ClosestPeersIter` style).
//!
//! ```text
//! let mut l = Lookup::new(target, seeds, LookupConfig::default(), now);
//! loop {
//!     match l.next(now) {
//!         LookupAction::Query(id, v) => send FIND_NODE(target) to v, remember id,
//!         LookupAction::Wait => wait for a response or until l.poll_timeout(),
//!         LookupAction::Finished => break,
//!     }
//! }
//! // on a response:  l.on_success(&id, closer_peers)
//! // on an error:    l.on_failure(&id)
//! ```
//!
//! # Rules
//!
//! - Candidates are kept sorted by XOR distance to the target (bounded by `max_candidates`; the
//!   farthest are dropped first).
//! - `next(now)` first marks queries older than `query_timeout` *unresponsive*: they no longer count
//!   against the parallelism `alpha`, but a late answer is still accepted. It then walks the
//!   candidates, closest first: once `k` of them have answered, the lookup is finished; the first
//!   candidate not yet contacted is queried if fewer than `alpha` queries are in flight, otherwise
//!   the caller must wait. A query in flight to a peer closer than the k-th answer also means
//!   waiting. When nobody is left to query and nothing is in flight, it is finished.
//! - Hence a finished lookup has heard from the `k` closest peers it learned of (or from every peer
//!   it could reach): it converges on the k closest.
//! - Hops: seeds have depth 0; a peer first learned from the answer of a peer of depth `d` has depth
//!   `d + 1`. [`Lookup::rounds`] is one more than the largest depth among the peers that answered.

use std::time::{Duration, Instant};

use super::{distance_key, DistanceKey};
use crate::identity::NodeId;

/// Default parallelism α.
pub const ALPHA_VALUE: usize = 3;

/// Settings of a [`Lookup`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupConfig {
    /// Queries in flight at once (default 3).
    pub alpha: usize,
    /// Number of closest peers that must answer (default 20).
    pub k: usize,
    /// After this, a query no longer counts against `alpha` (default 1 s).
    pub query_timeout: Duration,
    /// Bound on the candidates remembered (default `8 * k`).
    pub max_candidates: usize,
}

impl Default for LookupConfig {
    fn default() -> Self {
        LookupConfig {
            alpha: ALPHA_VALUE,
            k: super::kbucket::K_VALUE,
            query_timeout: Duration::from_secs(1),
            max_candidates: 8 * super::kbucket::K_VALUE,
        }
    }
}

/// What the caller should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum LookupAction<V> {
    /// Send a query to this peer.
    Query(NodeId, V),
    /// Wait for responses (or until [`Lookup::poll_timeout`]).
    Wait,
    /// The lookup is over; see [`Lookup::closest`].
    Finished,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    NotContacted,
    Waiting { deadline: Instant },
    Unresponsive,
    Succeeded,
    Failed,
}

/// A candidate. Its id is not stored: it is `distance XOR target` ([`Lookup::id_of`]), which keeps
/// the entries small (the sorted vector shifts them on every insertion).
#[derive(Debug, Clone)]
struct Candidate<V> {
    distance: DistanceKey,
    value: V,
    state: State,
    depth: u32,
}

/// Counters of one lookup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LookupStats {
    /// Queries issued.
    pub queries: u32,
    /// Queries answered.
    pub successes: u32,
    /// Queries reported failed.
    pub failures: u32,
    /// Queries that passed `query_timeout` unanswered (they may still answer later).
    pub timeouts: u32,
}

/// One iterative lookup for `target`.
#[derive(Debug, Clone)]
pub struct Lookup<V> {
    target: NodeId,
    config: LookupConfig,
    candidates: Vec<Candidate<V>>,
    stats: LookupStats,
    finished: bool,
}

impl<V: Clone> Lookup<V> {
    /// A lookup for `target` starting from `seeds` (typically the table's `closest(target, k)`).
    #[must_use]
    pub fn new(target: NodeId, seeds: impl IntoIterator<Item = (NodeId, V)>, config: LookupConfig) -> Self {
        let config = LookupConfig {
            alpha: config.alpha.max(1),
            k: config.k.max(1),
            max_candidates: config.max_candidates.max(config.k.max(1)),
            ..config
        };
        let mut l = Lookup {
            target,
            config,
            candidates: Vec::new(),
            stats: LookupStats::default(),
            finished: false,
        };
        for (id, v) in seeds {
            l.add(id, v, 0);
        }
        l
    }

    /// The target.
    #[must_use]
    pub fn target(&self) -> &NodeId {
        &self.target
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> LookupStats {
        self.stats
    }

    /// Frees the candidates (a caller done with the lookup may hold it a while): the lookup is
    /// finished and empty afterwards; its counters stay.
    pub fn release(&mut self) {
        self.candidates = Vec::new();
        self.finished = true;
    }

    /// True once [`next`](Self::next) returned `Finished`.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    fn add(&mut self, id: NodeId, value: V, depth: u32) -> bool {
        self.offer(id, depth, || value)
    }

    /// Where a peer at distance key `d` would enter the candidates, if it would: not one already,
    /// and not farther than every candidate of a full lookup.
    fn place_of(&self, d: &DistanceKey) -> Option<usize> {
        if self.candidates.len() >= self.config.max_candidates && self.candidates.last().is_some_and(|c| c.distance <= *d) {
            // Full, and no closer than the farthest: known already, or it would be dropped.
            return None;
        }
        self.candidates.binary_search_by(|c| c.distance.cmp(d)).err().filter(|&pos| pos < self.config.max_candidates)
    }

    /// The id at distance `d` from the target.
    fn id_of(&self, d: &DistanceKey) -> NodeId {
        let mut id = self.target;
        for (i, w) in d.iter().enumerate() {
            for (b, x) in id[8 * i..8 * i + 8].iter_mut().zip(w.to_be_bytes()) {
                *b ^= x;
            }
        }
        id
    }

    fn find(&self, id: &NodeId) -> Option<usize> {
        let d = distance_key(id, &self.target);
        self.candidates.binary_search_by(|c| c.distance.cmp(&d)).ok()
    }

    /// What to do now (see the module docs).
    pub fn next(&mut self, now: Instant) -> LookupAction<V> {
        if self.finished {
            return LookupAction::Finished;
        }
        let mut in_flight = 0;
        for c in &mut self.candidates {
            if let State::Waiting { deadline } = c.state {
                if now >= deadline {
                    c.state = State::Unresponsive;
                    self.stats.timeouts += 1;
                } else {
                    in_flight += 1;
                }
            }
        }
        let mut answered = 0;
        let mut waiting_closer = false;
        for c in &mut self.candidates {
            match c.state {
                State::Succeeded => {
                    answered += 1;
                    if answered >= self.config.k {
                        if waiting_closer {
                            // A closer peer may still answer: the k closest have not all answered.
                            return LookupAction::Wait;
                        }
                        self.finished = true;
                        return LookupAction::Finished;
                    }
                }
                State::NotContacted => {
                    if in_flight < self.config.alpha {
                        c.state = State::Waiting {
                            deadline: now + self.config.query_timeout,
                        };
                        self.stats.queries += 1;
                        let (d, v) = (c.distance, c.value.clone());
                        return LookupAction::Query(self.id_of(&d), v);
                    }
                    return LookupAction::Wait;
                }
                State::Waiting { .. } => waiting_closer = true,
                State::Unresponsive | State::Failed => {}
            }
        }
        if in_flight > 0 {
            LookupAction::Wait
        } else {
            self.finished = true;
            LookupAction::Finished
        }
    }

    /// The earliest instant at which an in-flight query times out, if any.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.candidates
            .iter()
            .filter_map(|c| match c.state {
                State::Waiting { deadline } => Some(deadline),
                _ => None,
            })
            .min()
    }

    /// `peer` answered with `closer` peers. Returns false (and changes nothing) if `peer` was not
    /// queried by this lookup or already answered/failed — a late answer after the timeout counts.
    pub fn on_success(&mut self, peer: &NodeId, closer: impl IntoIterator<Item = (NodeId, V)>) -> bool {
        if self.finished {
            return false;
        }
        let Some(i) = self.find(peer) else { return false };
        let c = &mut self.candidates[i];
        if !matches!(c.state, State::Waiting { .. } | State::Unresponsive) {
            return false;
        }
        c.state = State::Succeeded;
        let depth = c.depth + 1;
        self.stats.successes += 1;
        for (id, v) in closer {
            self.add(id, v, depth);
        }
        true
    }

    /// `peer` answered: what [`on_success`](Self::on_success) does before it adds the peers the
    /// answer named, which the caller then offers one by one ([`offer`](Self::offer)) with the
    /// returned depth. `None` (and nothing changed) under the same conditions as `on_success`.
    pub fn answered(&mut self, peer: &NodeId) -> Option<u32> {
        if self.finished {
            return None;
        }
        let i = self.find(peer)?;
        let c = &mut self.candidates[i];
        if !matches!(c.state, State::Waiting { .. } | State::Unresponsive) {
            return None;
        }
        c.state = State::Succeeded;
        self.stats.successes += 1;
        Some(c.depth + 1)
    }

    /// Would a peer with this id become a new candidate now? (Not one already, and not farther
    /// than every candidate of a full lookup.)
    #[must_use]
    pub fn wants(&self, id: &NodeId) -> bool {
        self.place_of(&distance_key(id, &self.target)).is_some()
    }

    /// A peer an answer named (at `depth`, as [`answered`](Self::answered) returned), whose value
    /// `value` makes only when it becomes a candidate. True if it did.
    pub fn offer(&mut self, id: NodeId, depth: u32, value: impl FnOnce() -> V) -> bool {
        let d = distance_key(&id, &self.target);
        let Some(pos) = self.place_of(&d) else { return false };
        let max = self.config.max_candidates;
        if self.candidates.len() >= max {
            // Full: the farthest makes room (it is farther than the newcomer).
            self.candidates.truncate(max - 1);
        } else if self.candidates.len() == self.candidates.capacity() {
            // Grown by doubling up to the bound, not past it.
            let len = self.candidates.len();
            self.candidates.reserve_exact((2 * len).max(4).min(max) - len);
        }
        self.candidates.insert(pos, Candidate { distance: d, value: value(), state: State::NotContacted, depth });
        true
    }

    /// The query to `peer` failed (or will never be answered). Returns false if it was not in flight.
    pub fn on_failure(&mut self, peer: &NodeId) -> bool {
        let Some(i) = self.find(peer) else { return false };
        let c = &mut self.candidates[i];
        if !matches!(c.state, State::Waiting { .. } | State::Unresponsive) {
            return false;
        }
        c.state = State::Failed;
        self.stats.failures += 1;
        true
    }

    /// The depth of `peer` (0 for seeds), if it is a candidate.
    #[must_use]
    pub fn depth(&self, peer: &NodeId) -> Option<u32> {
        self.find(peer).map(|i| self.candidates[i].depth)
    }

    /// Hops: 1 + the largest depth among peers that answered (0 if none answered).
    #[must_use]
    pub fn rounds(&self) -> u32 {
        self.candidates
            .iter()
            .filter(|c| c.state == State::Succeeded)
            .map(|c| c.depth + 1)
            .max()
            .unwrap_or(0)
    }

    /// The up to `k` closest peers that answered, closest first.
    #[must_use]
    pub fn closest(&self) -> Vec<(NodeId, V)> {
        self.candidates
            .iter()
            .filter(|c| c.state == State::Succeeded)
            .take(self.config.k)
            .map(|c| (self.id_of(&c.distance), c.value.clone()))
            .collect()
    }

    /// The candidates' values, for a caller that moves what they refer to (closest first).
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.candidates.iter_mut().map(|c| &mut c.value)
    }

    /// Number of candidates currently known.
    #[must_use]
    pub fn candidate_count(&self) -> usize {
        self.candidates.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(x: u8) -> NodeId {
        let mut a = [0u8; 32];
        a[0] = x;
        a
    }

    #[test]
    fn release_frees_the_candidates_and_keeps_the_counters() {
        let t0 = Instant::now();
        let mut l = Lookup::new(id(0), [(id(1), ()), (id(2), ())], LookupConfig::default());
        assert_eq!(l.next(t0), LookupAction::Query(id(1), ()));
        assert!(l.on_success(&id(1), [(id(3), ())]));
        let stats = l.stats();
        l.release();
        assert!(l.is_finished());
        assert_eq!(l.candidate_count(), 0);
        assert_eq!(l.next(t0), LookupAction::Finished);
        assert_eq!(l.stats(), stats);
        assert!(!l.on_success(&id(2), [(id(4), ())]));
    }

    #[test]
    fn candidates_stay_within_the_bound_and_its_memory() {
        // Answers naming ever-closer peers: the farthest candidates make room, and the candidates'
        // vector grows up to the bound, not past it (doubling would take it to 256 for 160).
        let t0 = Instant::now();
        let far = |i: u32| {
            let mut a = [0xffu8; 32];
            a[..4].copy_from_slice(&(u32::MAX - i).to_be_bytes());
            a
        };
        let mut l = Lookup::new([0u8; 32], (0..20).map(|i| (far(i), i)), LookupConfig::default());
        let mut next = 20;
        for _ in 0..100 {
            let LookupAction::Query(p, _) = l.next(t0) else { break };
            assert!(l.on_success(&p, (next..next + 20).map(|i| (far(i), i))));
            next += 20;
            assert!(l.candidates.len() <= 160 && l.candidates.capacity() <= 160, "{} in {}", l.candidates.len(), l.candidates.capacity());
            assert!(l.candidates.windows(2).all(|w| w[0].distance < w[1].distance));
        }
        assert!(next > 500, "{next}");
        assert_eq!(l.candidate_count(), 160);
        // The closest 160 named are kept.
        assert!(l.candidates.iter().all(|c| c.value >= next - 160));
    }

    #[test]
    fn queries_alpha_then_waits_then_finishes() {
        let t0 = Instant::now();
        let cfg = LookupConfig {
            alpha: 2,
            k: 2,
            ..LookupConfig::default()
        };
        let mut l = Lookup::new(id(0), [(id(1), ()), (id(2), ()), (id(3), ())], cfg);
        assert_eq!(l.next(t0), LookupAction::Query(id(1), ()));
        assert_eq!(l.next(t0), LookupAction::Query(id(2), ()));
        assert_eq!(l.next(t0), LookupAction::Wait);
        assert!(l.on_success(&id(1), [(id(4), ())]));
        // id(1) answered; the closest not contacted is 3 (4 is farther)
        assert_eq!(l.next(t0), LookupAction::Query(id(3), ()));
        assert!(l.on_success(&id(2), []));
        assert_eq!(l.next(t0), LookupAction::Finished);
        assert_eq!(l.closest(), vec![(id(1), ()), (id(2), ())]);
        assert_eq!(l.stats().queries, 3);
        assert_eq!(l.rounds(), 1);
    }

    #[test]
    fn timeout_frees_parallelism_and_late_answer_counts() {
        let t0 = Instant::now();
        let cfg = LookupConfig {
            alpha: 1,
            k: 2,
            query_timeout: Duration::from_millis(100),
            ..LookupConfig::default()
        };
        let mut l = Lookup::new(id(0), [(id(1), ()), (id(2), ())], cfg);
        assert_eq!(l.next(t0), LookupAction::Query(id(1), ()));
        assert_eq!(l.next(t0), LookupAction::Wait);
        assert_eq!(l.poll_timeout(), Some(t0 + Duration::from_millis(100)));
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(l.next(t1), LookupAction::Query(id(2), ()));
        assert_eq!(l.stats().timeouts, 1);
        assert!(l.on_success(&id(1), []));
        assert!(l.on_success(&id(2), []));
        assert_eq!(l.next(t1), LookupAction::Finished);
        assert!(!l.on_success(&id(9), []));
    }

    #[test]
    fn answered_and_offer_do_what_on_success_does() {
        let t0 = Instant::now();
        let cfg = LookupConfig { alpha: 1, k: 2, max_candidates: 3, ..LookupConfig::default() };
        let mut a = Lookup::new(id(0), [(id(8), 8u8)], cfg);
        let mut b = a.clone();
        assert_eq!(a.next(t0), LookupAction::Query(id(8), 8));
        assert_eq!(b.next(t0), LookupAction::Query(id(8), 8));
        let named = [id(4), id(2), id(9), id(2), id(1)];
        assert!(a.on_success(&id(8), named.iter().map(|x| (*x, x[0]))));
        let depth = b.answered(&id(8)).expect("in flight");
        assert_eq!(depth, 1);
        let mut made = 0;
        for x in named {
            b.offer(x, depth, || {
                made += 1;
                x[0]
            });
        }
        // id(2) twice and id(9) (farther than every candidate of the full lookup): no value made.
        assert_eq!(made, 3);
        assert_eq!(b.answered(&id(8)), None, "answered once");
        for _ in 0..4 {
            let (x, y) = (a.next(t0), b.next(t0));
            assert_eq!(x, y);
            if let LookupAction::Query(q, _) = x {
                assert!(a.on_success(&q, []));
                assert_eq!(b.answered(&q), Some(a.depth(&q).unwrap() + 1));
            }
        }
        assert_eq!(a.closest(), b.closest());
        assert_eq!(a.stats(), b.stats());
    }

    #[test]
    fn failures_finish_when_nobody_is_left() {
        let t0 = Instant::now();
        let mut l = Lookup::new(id(0), [(id(1), ())], LookupConfig::default());
        assert_eq!(l.next(t0), LookupAction::Query(id(1), ()));
        assert!(l.on_failure(&id(1)));
        assert!(!l.on_failure(&id(1)));
        assert_eq!(l.next(t0), LookupAction::Finished);
        assert!(l.closest().is_empty());
    }
}
