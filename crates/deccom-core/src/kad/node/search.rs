//! Iterative lookups ([`crate::kad::lookup::Lookup`]) whose candidates are peer records: the
//! table's entries closest to the target, then the records of the NODES answers. A findPeer
//! lookup (`stop`) asks the target itself at each address a third party names for it (a claim),
//! one at a time, and pauses its other queries while it does: nobody's word is taken for where the
//! target is, and the target's own answer usually ends the lookup first.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::admission::Heard;
use super::pool;
use super::requests::Purpose;
use super::upkeep::Task;
use super::{Counter, Encoded, Event, KadNode, NodeConfig, Rec, Slot, MAX_LOOKUPS};
use crate::identity::NodeId;
use crate::kad::distance_key;
use crate::kad::kbucket::RoutingTable;
use crate::kad::lookup::{Lookup, LookupAction, LookupConfig, LookupStats};
use crate::kad::tellers::Tellers;
use crate::wire::peer_record::PeerRecord;

/// Addresses claimed for one findPeer target that are asked, at most.
const MAX_CLAIMS: usize = 8;
/// A lookup's records are compacted once they are this many times its bound on candidates.
const ARENA_PER_CANDIDATE: usize = 4;

/// When a lookup ends before it converges.
#[derive(Debug, Clone, Copy, Default)]
pub enum Enough {
    /// Never: it converges.
    #[default]
    Never,
    /// Once bucket `bucket` holds `fill` entries (a bucket refresh).
    BucketFill {
        /// The bucket.
        bucket: usize,
        /// Entries wanted.
        fill: usize,
    },
    /// A settling self-lookup: once `alpha` answers came and none named a node closer to us than
    /// `kth` (our k-th closest entry) that is not in our table.
    Settle {
        /// Our k-th closest entry's id.
        kth: NodeId,
    },
}

/// What a lookup is for.
#[derive(Debug, Clone, Copy, Default)]
pub struct LookupOptions {
    /// findPeer: stop once the target answers (claims of it are asked apart).
    pub stop: bool,
    /// Emit [`Event::Claim`] for each address learned for the target.
    pub claims: bool,
    /// The outcome lists the closest peers' records.
    pub records: bool,
    /// The outcome lists the closest peers' ids.
    pub ids: bool,
    /// When it ends early.
    pub enough: Enough,
}

/// How a lookup ended ([`KadNode::take_lookup`]).
pub struct LookupOutcome {
    /// The target's record, if found: verified (it answered at that address) or, when no claim
    /// answered, the first claimed.
    pub found: Option<Encoded>,
    /// `found` answered a query of ours at its address under its id.
    pub verified: bool,
    /// Hops: of the claim found, else the lookup's rounds.
    pub hops: u32,
    /// The lookup's counters.
    pub stats: LookupStats,
    /// The closest peers that answered, closest first: ids (32 bytes each) if asked for.
    pub closest_ids: Vec<u8>,
    /// Their records back to back, if asked for.
    pub closest_records: Vec<u8>,
    /// Time from start to end.
    pub elapsed: Duration,
    /// A join's lookup: how many seeds the bootstrap nodes gave (0: none answered).
    pub seeds: u32,
    /// Ended early ([`Enough`]).
    pub ended_early: bool,
}

/// A claim: the target's record as someone named it, and its hop count.
type ClaimOf = (Encoded, u32);

/// A record a lookup keeps (a candidate's value is its index): where its bytes lie in the
/// lookup's arena, and who named it (1 + its index in the lookup's tellers; 0: the table's).
#[derive(Clone, Copy)]
struct Kept {
    at: u32,
    len: u32,
    teller: u32,
}

pub(super) struct Search {
    pub(super) lookup: Lookup<u32>,
    /// The records kept, back to back (an answer's records take their length, not a fixed slot).
    arena: Vec<u8>,
    kept: Vec<Kept>,
    /// Who named the records: the node's tellers learn it once the record is asked, claimed or
    /// returned (not for every record an answer names). One per answer that named a new record.
    tellers: Vec<SocketAddr>,
    max_candidates: usize,
    opts: LookupOptions,
    pub(super) done: bool,
    pub(super) wake: Option<Instant>,
    claims: VecDeque<ClaimOf>,
    claimed: Vec<SocketAddr>,
    asking: Option<ClaimOf>,
    unverified: Option<ClaimOf>,
    found: Option<ClaimOf>,
    paused_until: Option<Instant>,
    converged: bool,
    ended_early: bool,
    answers: u32,
    news: u32,
    t0: Instant,
    ended: Instant,
    pub(super) seeds: u32,
    /// The node's own upkeep runs it, for this: its end goes there, not to the caller.
    pub(super) upkeep: Option<Task>,
}

impl Search {
    pub(super) fn new(target: NodeId, seeds: impl Iterator<Item = Encoded>, config: &NodeConfig, patience: Duration, opts: LookupOptions, now: Instant) -> Search {
        let lc = LookupConfig { alpha: config.alpha, k: config.k, query_timeout: patience, max_candidates: 8 * config.k };
        let (mut arena, mut kept) = (Vec::new(), Vec::new());
        let ids: Vec<(NodeId, u32)> = seeds.map(|r| (r.id(), keep(&mut arena, &mut kept, r.as_slice(), 0))).collect();
        Search {
            lookup: Lookup::new(target, ids, lc),
            arena,
            kept,
            tellers: Vec::new(),
            max_candidates: lc.max_candidates,
            opts,
            done: false,
            wake: None,
            claims: VecDeque::new(),
            claimed: Vec::new(),
            asking: None,
            unverified: None,
            found: None,
            paused_until: None,
            converged: false,
            ended_early: false,
            answers: 0,
            news: 0,
            t0: now,
            ended: now,
            seeds: 0,
            upkeep: None,
        }
    }

    /// The records of an answer from `peer` (the datagram `data`, its records `recs`, the
    /// sender's first) become candidates (not our own; not the target's for findPeer, whose
    /// claims are asked apart); `tellers` learns that `teller` named each new one. Returns the
    /// index of the first record naming the target (findPeer; 0: none), or None when `peer` was
    /// not in flight.
    #[allow(clippy::too_many_arguments)]
    fn on_answer(&mut self, tellers: &mut Tellers, table: &RoutingTable<Slot>, own: &NodeId, peer: &NodeId, data: &[u8], recs: &[Rec], teller: SocketAddr) -> Option<usize> {
        let depth = self.lookup.answered(peer)?;
        let target = *self.lookup.target();
        if let Enough::Settle { kth } = self.opts.enough {
            self.answers += 1;
            let than = distance_key(&kth, &target);
            self.news += recs.iter().skip(1).filter(|r| distance_key(&r.id, &target) < than && r.id != *own && !table.contains(&r.id)).count() as u32;
        }
        let mut named = 0;
        // `teller` joins the tellers with the answer's first new record.
        let mut teller_at = 0;
        for (i, r) in recs.iter().enumerate().skip(1) {
            if r.id == *own {
                continue;
            }
            if self.opts.stop && r.id == target {
                tell(tellers, r.udp, r.external, teller);
                if named == 0 {
                    named = i;
                }
                continue;
            }
            // Known already (or farther than every candidate of a full lookup): nothing new
            // (`offer` makes no record then).
            let (arena, kept, tellers) = (&mut self.arena, &mut self.kept, &mut self.tellers);
            self.lookup.offer(r.id, depth, || {
                if teller_at == 0 {
                    tellers.push(teller);
                    teller_at = tellers.len() as u32;
                }
                keep(arena, kept, &data[r.at..r.at + r.len], teller_at)
            });
        }
        self.compact();
        Some(named)
    }

    /// Keeps the records bounded: those of peers that are no longer candidates are dropped once
    /// there are `ARENA_PER_CANDIDATE` times as many records as the lookup may have candidates.
    fn compact(&mut self) {
        if self.kept.len() <= ARENA_PER_CANDIDATE * self.max_candidates {
            return;
        }
        let (mut arena, mut kept, mut tellers) = (Vec::new(), Vec::with_capacity(2 * self.max_candidates), Vec::new());
        // Each teller still needed moves once: its new place (1 + index) by its old index.
        let mut moved = vec![0u32; self.tellers.len()];
        for v in self.lookup.values_mut() {
            let Some(k) = self.kept.get(*v as usize) else { continue };
            let teller = match k.teller.checked_sub(1).and_then(|i| Some((i as usize, *self.tellers.get(i as usize)?))) {
                Some((i, addr)) => {
                    if moved[i] == 0 {
                        tellers.push(addr);
                        moved[i] = tellers.len() as u32;
                    }
                    moved[i]
                }
                None => 0,
            };
            *v = keep(&mut arena, &mut kept, &self.arena[k.at as usize..(k.at + k.len) as usize], teller);
        }
        self.arena = arena;
        self.kept = kept;
        self.tellers = tellers;
    }

    /// Records kept (bounded; see `compact`).
    pub(super) fn records_kept(&self) -> usize {
        self.kept.len()
    }

    /// The record of the candidate whose value is `v`.
    fn record(&self, v: u32) -> Option<&[u8]> {
        let k = self.kept.get(v as usize)?;
        self.arena.get(k.at as usize..(k.at + k.len) as usize)
    }

    /// Who named the record of the candidate whose value is `v` (None: the table's).
    fn teller(&self, v: u32) -> Option<SocketAddr> {
        let i = self.kept.get(v as usize)?.teller.checked_sub(1)?;
        self.tellers.get(i as usize).copied()
    }

    fn enough(&self, table: &RoutingTable<Slot>, alpha: usize) -> bool {
        match self.opts.enough {
            Enough::Never => false,
            Enough::BucketFill { bucket, fill } => table.bucket(bucket).len() >= fill,
            Enough::Settle { .. } => self.answers as usize >= alpha && self.news == 0,
        }
    }
}

impl KadNode {
    /// Starts a lookup of `target` from the table's closest entries. None when [`MAX_LOOKUPS`]
    /// run already.
    pub fn start_lookup(&mut self, target: NodeId, opts: LookupOptions, now: Instant) -> Option<u32> {
        let id = self.start_search(target, opts, now, None);
        self.settle(now);
        id
    }

    /// [`start_lookup`](Self::start_lookup) without ending the step (`upkeep`: the upkeep's, for
    /// this task).
    pub(super) fn start_search(&mut self, target: NodeId, opts: LookupOptions, now: Instant, upkeep: Option<Task>) -> Option<u32> {
        if self.searches.len() >= MAX_LOOKUPS {
            return None;
        }
        self.count(Counter::lookups);
        let mut seeds = Vec::with_capacity(self.config.k);
        // findPeer's target is asked apart (the caller found it in the table otherwise).
        self.table.for_each_closest(&target, self.config.k, &mut self.scratch, |e| {
            if !(opts.stop && e.id == target) {
                seeds.push(e.value.encoded.clone());
            }
        });
        let id = self.new_search_id();
        let mut s = Search::new(target, seeds.into_iter(), &self.config, self.patience(), opts, now);
        s.upkeep = upkeep;
        self.searches.insert(id, s);
        self.drive(id, now);
        Some(id)
    }

    /// Ends a lookup without an outcome (the caller gave up on it).
    pub fn abort_lookup(&mut self, id: u32) {
        self.searches.remove(&id);
    }

    /// The outcome of a lookup that ended ([`Event::LookupDone`]), taken out; None if it runs or
    /// is unknown.
    pub fn take_lookup(&mut self, id: u32) -> Option<LookupOutcome> {
        if !self.searches.get(&id).is_some_and(|s| s.done) {
            return None;
        }
        let s = self.searches.remove(&id)?;
        if self.searches.is_empty() {
            // Free the map: a node that looks nothing up holds none.
            self.searches = Default::default();
        }
        let closest = s.lookup.closest();
        let mut closest_ids = Vec::new();
        let mut closest_records = Vec::new();
        for (cid, v) in &closest {
            if s.opts.ids {
                closest_ids.extend_from_slice(cid);
            }
            if s.opts.records {
                if let Some(r) = s.record(*v) {
                    closest_records.extend_from_slice(r);
                }
            }
        }
        let verified = s.found.is_some();
        let pick = s.found.or(s.unverified).or_else(|| s.claims.front().cloned());
        let hops = pick.as_ref().map_or_else(|| s.lookup.rounds(), |c| c.1);
        Some(LookupOutcome {
            found: pick.map(|c| c.0),
            verified,
            hops,
            stats: s.lookup.stats(),
            closest_ids,
            closest_records,
            elapsed: s.ended.saturating_duration_since(s.t0),
            seeds: s.seeds,
            ended_early: s.ended_early,
        })
    }

    /// Records a running lookup keeps (see the records' compaction), for tests.
    #[must_use]
    pub fn lookup_records(&self, id: u32) -> Option<usize> {
        self.searches.get(&id).map(Search::records_kept)
    }

    /// Sends what lookup `id` wants sent now; finishes it when it converged or has enough.
    pub(super) fn drive(&mut self, id: u32, now: Instant) {
        let alpha = self.config.alpha;
        let Some(s) = self.searches.get_mut(&id) else { return };
        if s.done {
            return;
        }
        if let Some(until) = s.paused_until.filter(|&u| s.asking.is_some() && now < u) {
            return self.wake(id, until);
        }
        if s.enough(&self.table, alpha) {
            // What the lookup was for is done: the queries in flight still count when they answer.
            s.ended_early = true;
            self.count(Counter::lookups_ended_early);
            return self.finish(id, now);
        }
        let target = *s.lookup.target();
        let mut queries = pool::take_queries();
        let mut wake = None;
        let mut converged = false;
        loop {
            match s.lookup.next(now) {
                LookupAction::Query(cid, v) => match s.record(v).and_then(PeerRecord::layout_of) {
                    Some(at) => queries.push((cid, at.udp, at.external, s.teller(v))),
                    None => {
                        s.lookup.on_failure(&cid);
                    }
                },
                LookupAction::Wait => {
                    wake = s.lookup.poll_timeout();
                    break;
                }
                LookupAction::Finished => {
                    converged = true;
                    break;
                }
            }
        }
        for &(cid, udp, external, teller) in &queries {
            if let Some(teller) = teller {
                tell(&mut self.tellers, udp, external, teller);
            }
            self.find_node(udp, target, Some(cid), Purpose::Query { search: id, id: cid }, now);
        }
        pool::put_queries(queries);
        if let Some(at) = wake {
            self.wake(id, at);
        }
        if converged {
            // Converged; a claim of the target still being asked decides the result.
            let Some(s) = self.searches.get_mut(&id) else { return };
            s.converged = true;
            if s.asking.is_none() {
                self.finish(id, now);
            }
        }
    }

    /// Drives lookup `id` again at `at` (unless an earlier wake-up is set).
    fn wake(&mut self, id: u32, at: Instant) {
        let Some(s) = self.searches.get_mut(&id) else { return };
        if s.wake.is_some_and(|w| w <= at) {
            return;
        }
        s.wake = Some(at);
        self.requests.wake(at, id);
    }

    pub(super) fn finish(&mut self, id: u32, now: Instant) {
        let Some(s) = self.searches.get_mut(&id) else { return };
        if s.done {
            return;
        }
        s.done = true;
        s.wake = None;
        s.ended = now;
        let upkeep = s.upkeep;
        // The peers a lookup returns: who named them, for introductions.
        for (_, v) in s.lookup.closest() {
            if let (Some(teller), Some(at)) = (s.teller(v), s.record(v).and_then(PeerRecord::layout_of)) {
                tell(&mut self.tellers, at.udp, at.external, teller);
            }
        }
        if s.opts.stop {
            let c = if s.found.is_some() {
                Counter::lookups_found
            } else if s.unverified.is_some() || !s.claims.is_empty() {
                Counter::lookups_found_unverified
            } else {
                Counter::lookups_not_found
            };
            self.count(c);
        }
        match (self.upkeep.as_mut(), upkeep) {
            (Some(u), Some(task)) => u.ended.push((id, task)),
            _ => self.events.push_back(Event::LookupDone { lookup: id }),
        }
    }

    /// The answer of the node `peer` at `from` (its record `sender`) to lookup `search`'s query.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_reply(&mut self, search: u32, peer: &NodeId, from: SocketAddr, sender: PeerRecord, recs: &[Rec], data: &[u8], now: Instant) {
        let own = self.own.id;
        let mut named = 0;
        let mut live = false;
        if let Some(s) = self.searches.get_mut(&search).filter(|s| !s.done) {
            named = s.on_answer(&mut self.tellers, &self.table, &own, peer, data, recs, from).unwrap_or(0);
            live = true;
        }
        // The node answered at its address: it is validated.
        if self.heard_entry(peer, from, sender.external, now) != Heard::Done {
            self.consider(Encoded::new(&PeerRecord { udp: from, ..sender }), now);
        }
        if !live {
            return;
        }
        // The target named: its address is a claim to ask.
        if named > 0 {
            let Some(s) = self.searches.get(&search) else { return };
            let hops = s.lookup.depth(peer).unwrap_or(0) + 1;
            // One claim per answer: a node's table holds one record per id, so an answer naming
            // the target at several addresses is lying about all but one (and one answer must not
            // fill the claims an honest node's answer needs).
            let r = recs[named];
            self.claim(search, Encoded::from_bytes(&data[r.at..r.at + r.len]), r.udp, hops, now);
            if self.searches.get(&search).is_none_or(|s| s.done) {
                return;
            }
        }
        self.drive(search, now);
    }

    /// findPeer: a third party named the target at `udp` (its record `record`).
    fn claim(&mut self, search: u32, record: Encoded, udp: SocketAddr, hops: u32, now: Instant) {
        let Some(s) = self.searches.get_mut(&search) else { return };
        if s.claimed.contains(&udp) || s.claimed.len() >= MAX_CLAIMS {
            return;
        }
        s.claimed.push(udp);
        if s.opts.claims {
            self.events.push_back(Event::Claim { lookup: search, record: record.clone() });
        }
        s.claims.push_back((record, hops));
        self.ask_claim(search, now);
    }

    fn ask_claim(&mut self, search: u32, now: Instant) {
        let patience = self.patience();
        let Some(s) = self.searches.get_mut(&search) else { return };
        if s.asking.is_some() || s.done {
            return;
        }
        let Some(c) = s.claims.pop_front() else {
            if s.converged {
                self.finish(search, now);
            }
            return;
        };
        let target = *s.lookup.target();
        let hops = c.1;
        let udp = c.0.addrs().map(|a| a.0);
        s.asking = Some(c);
        s.paused_until = Some(now + patience);
        match udp {
            Some(udp) => self.find_node(udp, target, Some(target), Purpose::Claim { search, hops }, now),
            None => self.soon.push(Purpose::Claim { search, hops }),
        }
    }

    /// The target answered at a claimed address: found.
    pub(super) fn claim_answered(&mut self, search: u32, hops: u32, from: SocketAddr, sender: PeerRecord, now: Instant) {
        let Some(s) = self.searches.get_mut(&search) else { return };
        let asked = s.asking.take();
        if s.done {
            return;
        }
        let external = sender.external.or_else(|| asked.as_ref().and_then(|c| c.0.addrs()).and_then(|a| a.1));
        let record = Encoded::new(&PeerRecord { udp: from, external, ..sender });
        s.found = Some((record.clone(), hops));
        self.count(Counter::claims_verified);
        self.consider(record, now);
        self.finish(search, now);
    }

    /// The target did not answer at a claimed address (it may be behind a NAT).
    pub(super) fn claim_failed(&mut self, search: u32, _hops: u32, now: Instant) {
        let Some(s) = self.searches.get_mut(&search) else { return };
        let asked = s.asking.take();
        if s.done {
            return;
        }
        self.count(Counter::claims_unverified);
        let Some(s) = self.searches.get_mut(&search) else { return };
        if s.unverified.is_none() {
            s.unverified = asked;
        }
        self.ask_claim(search, now);
        // The lookup goes on (it paused while the claim was asked).
        if self.searches.get(&search).is_some_and(|s| s.asking.is_none()) {
            self.drive(search, now);
        }
    }
}

/// Puts `record` at the end of a lookup's arena, named by `teller` (see [`Kept`]); returns its index.
fn keep(arena: &mut Vec<u8>, kept: &mut Vec<Kept>, record: &[u8], teller: u32) -> u32 {
    kept.push(Kept { at: arena.len() as u32, len: record.len() as u32, teller });
    arena.extend_from_slice(record);
    (kept.len() - 1) as u32
}

/// The tellers learn that `teller` named the node at `udp` (and at `external`).
fn tell(tellers: &mut Tellers, udp: SocketAddr, external: Option<SocketAddr>, teller: SocketAddr) {
    tellers.told(udp, teller);
    if let Some(ext) = external.filter(|e| *e != udp) {
        tellers.told(ext, teller);
    }
}
