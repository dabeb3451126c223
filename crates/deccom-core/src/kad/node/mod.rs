//! A Kademlia node, sans-IO: every datagram in, every timer, every lookup — one call each — and
//! what to send out.
//!
//! [`KadNode`] holds the whole protocol state of one node: the routing table with each peer's
//! record, the per-address state ([`AddrBook`]), the requests in flight and their timers, the
//! lookups, who named whom ([`Tellers`]). The caller feeds it:
//!
//! - [`handle_datagram`](KadNode::handle_datagram): a Kademlia datagram (without the layer tag)
//!   from an address. It is validated (every record: its identity and its id), answered (PING,
//!   FIND_NODE), matched against the request it answers (PONG, NODES: same id, same address, the
//!   expected type and, for a lookup's query, the expected id), and acted on: the requester is
//!   verified (a PING) or admitted, the lookup goes on;
//! - [`handle_timeout`](KadNode::handle_timeout) at [`poll_timeout`](KadNode::poll_timeout);
//! - [`start_lookup`](KadNode::start_lookup), [`bootstrap`](KadNode::bootstrap),
//!   [`abort_lookup`](KadNode::abort_lookup), [`approved`](KadNode::approved), [`alive`](KadNode::alive);
//! - [`start_upkeep`](KadNode::start_upkeep) once: the node then joins and keeps its table fresh
//!   by itself (`upkeep.rs`), and tells the caller only whether it joined.
//!
//! and reads back the datagrams to send ([`transmits`](KadNode::transmits): frames of
//! [`FRAME_HEADER`] bytes — the length (u16, little-endian), 1 when the datagram goes to the source
//! of the datagram being handled, the destination's 18-byte address — then the datagram) and the
//! [`Event`]s ([`poll_event`](KadNode::poll_event)).
//!
//! # Hostile input
//!
//! A response counts only if it matches a request in flight; a requester's address is validated
//! before it enters the table (it answered a PING of ours, or it is a table entry's, or an
//! authenticating layer proved it); answers to an unvalidated address are rate-limited and never
//! larger than what it sent; requests to an address nobody validated spend a budget of its IP and
//! prefix ([`AddrBook`]). Every collection is bounded: requests in flight ([`requests::MAX_PENDING`]),
//! verifications, approvals, a lookup's candidates and records.

mod admission;
mod answer;
pub mod counters;
mod pool;
pub mod record;
pub mod requests;
mod search;
#[cfg(test)]
mod tests;
mod upkeep;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use answer::{Answered, NoAnswer, ROW_LEN};
pub use counters::{Counter, COUNTERS, COUNTER_NAMES};
pub use record::{Encoded, Slot};
pub use search::{Enough, LookupOptions, LookupOutcome};
pub use upkeep::{UpkeepConfig, JOIN_FILL};

use self::requests::{Due, OwnIdMap, Purpose, Request, Requests, MAX_PENDING};
use self::search::Search;
use super::addrbook::AddrBook;
use super::kbucket::{RoutingTable, TableConfig};
use super::tellers::Tellers;
use super::wire::{self, Message};
use crate::identity::seeded::{SeededMap, SeededSet};
use crate::identity::NodeId;
use crate::wire::peer_record::PeerRecord;
use crate::wire::{encode_raw_addr, RAW_ADDR_LEN};

/// Bytes before each datagram in [`KadNode::transmits`]: its length (u16 LE), 1 when it goes to
/// the source of the datagram being handled (else 0), the destination's 18-byte address (the
/// source's, for those).
pub const FRAME_HEADER: usize = 3 + RAW_ADDR_LEN;
/// Requesters being verified (pinged) at once, at most.
pub const MAX_VERIFYING: usize = 256;
/// Peers waiting for the caller's approval at once, at most.
pub const MAX_APPROVING: usize = 1024;
/// Addresses [`Tellers`] remembers.
const MAX_TELLERS: usize = 8192;
/// Table changes waiting for the caller, at most (see [`Event::Connected`]).
pub const MAX_EVENTS: usize = 8192;
/// Lookups at once, at most (a caller starting more gets `None`).
pub const MAX_LOOKUPS: usize = 4096;
/// The longest wait a setting gives (about 136 years: later instants may not exist on a platform;
/// longer settings are cut to it).
pub const MAX_WAIT: Duration = Duration::from_secs(1 << 32);

/// Settings of a [`KadNode`].
#[derive(Debug, Clone, Copy)]
pub struct NodeConfig {
    /// Bucket size and lookup width.
    pub k: usize,
    /// Parallel queries per lookup.
    pub alpha: usize,
    /// A PING fails after this; a FIND_NODE after twice this.
    pub query_timeout: Duration,
    /// A lookup waits at least this long for a query before asking another node.
    pub min_patience: Duration,
    /// Consecutive query failures after which a table entry is removed.
    pub max_failures: u32,
    /// Size a FIND_NODE is padded to for an address that has not verified us (0: none).
    pub pad_to: usize,
    /// FIND_NODEs ask not to be added to routing tables.
    pub ephemeral: bool,
    /// Replacement cache entries per bucket.
    pub max_replacements: usize,
    /// A full bucket pings its least recently seen entry only if it was not seen for this long.
    pub ping_interval: Duration,
    /// Peers enter the table only after the caller approves them ([`Event::Approve`]).
    pub approve: bool,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            k: 20,
            alpha: 3,
            query_timeout: Duration::from_secs(1),
            min_patience: Duration::from_millis(100),
            max_failures: 2,
            pad_to: 1200,
            ephemeral: false,
            max_replacements: 20,
            ping_interval: Duration::from_secs(60),
            approve: false,
        }
    }
}

/// What a node tells its caller.
pub enum Event {
    /// A peer entered the table (only with [`KadNode::set_peer_events`]; at most [`MAX_EVENTS`]
    /// wait: a caller that does not poll loses table changes, counted, never lookup ends).
    Connected {
        /// Its handle.
        handle: u32,
        /// Its record.
        record: Encoded,
    },
    /// A peer left the table (only with [`KadNode::set_peer_events`]).
    Disconnected {
        /// Its handle.
        handle: u32,
        /// Its record.
        record: Encoded,
    },
    /// A lookup ended: take its outcome with [`KadNode::take_lookup`].
    LookupDone {
        /// The lookup.
        lookup: u32,
    },
    /// A lookup for a target learned an address of it (only with [`LookupOptions::claims`]).
    Claim {
        /// The lookup.
        lookup: u32,
        /// The target's record as a third party named it.
        record: Encoded,
    },
    /// A peer with a validated address would enter the table: answer with [`KadNode::approved`].
    Approve {
        /// Its record at its validated address.
        record: Encoded,
    },
    /// The node joined ([`KadNode::start_upkeep`]): a bootstrap node answered and the self-lookup
    /// through what they named ended, or there was no bootstrap address to ask.
    Joined {
        /// A bootstrap node answered (false: none to ask; this node starts a network).
        bootstrapped: bool,
    },
    /// No bootstrap node answered: attempt `attempt` (counted from 0) follows after a pause.
    JoinRetry {
        /// The attempt that follows.
        attempt: u32,
    },
    /// No bootstrap node answered in `attempts` attempts: the join failed (the periodic refresh
    /// tries again while the table is empty).
    JoinFailed {
        /// Attempts made.
        attempts: u32,
    },
}

/// A record of the datagram being handled: where it is and what the node reads of it.
#[derive(Clone, Copy)]
struct Rec {
    at: usize,
    len: usize,
    id: NodeId,
    udp: SocketAddr,
    external: Option<SocketAddr>,
}

/// A join in progress: FIND_NODEs of our id to the bootstrap addresses, then a self-lookup.
struct Join {
    search: u32,
    /// The upkeep's join, for this task (its lookup ends without an event).
    upkeep: Option<upkeep::Task>,
    left: usize,
    seeds: Vec<Encoded>,
    seen: SeededSet<NodeId>,
}

/// The counters, from a cache line's start: the first eight are counted for most datagrams.
#[repr(align(64))]
struct Counters([u64; COUNTERS]);

/// One Kademlia node (see the module docs).
pub struct KadNode {
    /// The routing table, each entry with its record.
    pub table: RoutingTable<Slot>,
    /// This node's record (in every FIND_NODE and NODES).
    pub own: PeerRecord,
    /// Who named whom in the answers to our lookups.
    pub tellers: Tellers,
    /// Verified addresses, request budgets, the reply rate.
    pub book: AddrBook,
    config: NodeConfig,
    scratch: Vec<(u64, u32)>,
    /// The last answer (see [`KadNode::answer`]; lent by the thread: see [`pool`]).
    bytes: Vec<u8>,
    /// Table entries by their record's UDP address (in its 18-byte form: a third of the size of
    /// a `SocketAddr`'s).
    by_addr: SeededMap<[u8; RAW_ADDR_LEN], NodeId>,
    /// Consecutive failed queries of table entries (only those with some).
    failures: SeededMap<NodeId, u32>,
    requests: Requests,
    searches: OwnIdMap<Search>,
    next_search: u32,
    verifying: SeededSet<SocketAddr>,
    approving: SeededSet<NodeId>,
    next_handle: u32,
    /// Smoothed duration of answered FIND_NODEs (ms; 0: none yet) and its mean deviation.
    srtt: f64,
    rttvar: f64,
    rng: u32,
    /// Frames to send (lent by the thread while not empty: see [`pool`]).
    out: Vec<u8>,
    events: VecDeque<Event>,
    counters: Counters,
    join: Option<Join>,
    upkeep: Option<upkeep::Upkeep>,
    /// Requests that could not be sent: they fail once the current step is done.
    soon: Vec<Purpose>,
    /// The source of the datagram being handled.
    source: Option<SocketAddr>,
    peer_events: bool,
}

impl KadNode {
    /// A node with record `own` (its id is the node's), `config`, and `seed` for request ids and
    /// random targets.
    #[must_use]
    pub fn new(own: PeerRecord, config: NodeConfig, seed: u32) -> KadNode {
        let k = config.k.clamp(1, wire::MAX_NODES);
        let config = NodeConfig {
            k,
            alpha: config.alpha.max(1),
            max_failures: config.max_failures.max(1),
            query_timeout: config.query_timeout.min(MAX_WAIT),
            min_patience: config.min_patience.min(MAX_WAIT),
            ping_interval: config.ping_interval.min(MAX_WAIT),
            ..config
        };
        let mut table = RoutingTable::new(own.id, TableConfig { k, max_replacements: config.max_replacements });
        table.set_fresh_interval(config.ping_interval);
        KadNode {
            table,
            own,
            tellers: Tellers::new(MAX_TELLERS),
            book: AddrBook::new(),
            config,
            scratch: Vec::with_capacity(k),
            bytes: Vec::new(),
            by_addr: SeededMap::default(),
            failures: SeededMap::default(),
            requests: Requests::default(),
            searches: OwnIdMap::default(),
            next_search: 0,
            verifying: SeededSet::default(),
            approving: SeededSet::default(),
            next_handle: 0,
            srtt: 0.0,
            rttvar: 0.0,
            rng: if seed == 0 { 0x9e37_79b9 } else { seed },
            out: Vec::new(),
            events: VecDeque::new(),
            counters: Counters([0; COUNTERS]),
            join: None,
            upkeep: None,
            soon: Vec::new(),
            source: None,
            peer_events: false,
        }
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Emit [`Event::Connected`] and [`Event::Disconnected`] (off by default: nobody may listen).
    pub fn set_peer_events(&mut self, on: bool) {
        self.peer_events = on;
    }

    /// Sets (or clears) the external address this node's record carries from now on.
    pub fn set_own_external(&mut self, external: Option<SocketAddr>) {
        self.own.external = external;
    }

    /// The counters, by [`Counter`] index (names: [`COUNTER_NAMES`]).
    #[must_use]
    pub fn counters(&self) -> &[u64; COUNTERS] {
        &self.counters.0
    }

    fn count(&mut self, c: Counter) {
        self.counters.0[c as usize] += 1;
    }

    /// Requests in flight.
    #[must_use]
    pub fn pending_requests(&self) -> usize {
        self.requests.len()
    }

    /// Lookups running (or ended and not yet taken).
    #[must_use]
    pub fn lookups(&self) -> usize {
        self.searches.len()
    }

    /// Smoothed duration of answered FIND_NODEs in ms (0: none yet).
    #[must_use]
    pub fn query_srtt_ms(&self) -> f64 {
        self.srtt
    }

    /// How long a lookup waits for a FIND_NODE before asking another node: srtt + 4 × rttvar of
    /// the answered ones (RFC 6298's estimator), within `min_patience..=query_timeout`.
    #[must_use]
    pub fn patience(&self) -> Duration {
        if self.srtt == 0.0 {
            return self.config.query_timeout;
        }
        let ms = (self.srtt + 4.0 * self.rttvar).max(self.config.min_patience.as_secs_f64() * 1000.0);
        Duration::from_secs_f64(ms / 1000.0).min(self.config.query_timeout)
    }

    fn sample_query(&mut self, ms: f64) {
        if self.srtt == 0.0 {
            self.srtt = ms.max(0.001);
            self.rttvar = ms / 2.0;
            return;
        }
        self.rttvar = 0.75 * self.rttvar + 0.25 * (self.srtt - ms).abs();
        self.srtt = 0.875 * self.srtt + 0.125 * ms;
    }

    /// xorshift32: request ids and random targets.
    pub fn rand(&mut self) -> u32 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.rng = x;
        x
    }

    // ---- output -----------------------------------------------------------------------------

    /// The datagrams to send, framed (see the module docs).
    #[must_use]
    pub fn transmits(&self) -> &[u8] {
        &self.out
    }

    /// Forgets the first `n` bytes of [`transmits`](Self::transmits) (whole frames: sent).
    pub fn consume_transmits(&mut self, n: usize) {
        if n >= self.out.len() {
            pool::return_out(std::mem::take(&mut self.out));
        } else {
            self.out.drain(..n);
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Events waiting.
    #[must_use]
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// Starts a frame to `to` (None: the source of the datagram being handled); returns where its
    /// header starts, for [`end_frame`](Self::end_frame).
    fn begin_frame(&mut self, to: Option<SocketAddr>) -> usize {
        if self.out.capacity() == 0 {
            self.out = pool::lend_out();
        }
        let start = self.out.len();
        self.out.extend_from_slice(&[0, 0, u8::from(to.is_none())]);
        // A frame to the source names it too (a caller may read it, not keep the source).
        let addr = to.or(self.source).map_or([0; RAW_ADDR_LEN], encode_raw_addr);
        self.out.extend_from_slice(&addr);
        start
    }

    fn end_frame(&mut self, start: usize) {
        let len = self.out.len() - start - FRAME_HEADER;
        let len = u16::try_from(len).expect("a Kademlia datagram fits in 64 KiB");
        self.out[start..start + 2].copy_from_slice(&len.to_le_bytes());
    }

    /// Queues the last answer to the source of the datagram being handled.
    fn send_answer(&mut self) {
        let start = self.begin_frame(None);
        self.out.extend_from_slice(&self.bytes);
        self.end_frame(start);
        pool::return_out(std::mem::take(&mut self.bytes));
    }

    /// When [`handle_timeout`](Self::handle_timeout) should be called next, if ever.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let searches = &self.searches;
        let next = self.requests.next_deadline(|s, t| searches.get(&s).is_some_and(|x| x.wake == Some(t)));
        match self.upkeep.as_ref().and_then(upkeep::Upkeep::deadline) {
            Some(u) => Some(next.map_or(u, |n| n.min(u))),
            None => next,
        }
    }

    // ---- input ------------------------------------------------------------------------------

    /// A Kademlia datagram (without the layer tag) from `from` at `now`. `proven`: the id an
    /// authenticating layer below proved for the sender, if any.
    pub fn handle_datagram(&mut self, from: SocketAddr, data: &[u8], proven: Option<&NodeId>, now: Instant) {
        self.count(Counter::received);
        self.source = Some(from);
        let mut recs = pool::take_recs();
        let mut sender: Option<PeerRecord> = None;
        let visited = wire::visit(data, |i, at, rec| {
            recs.push(Rec { at, len: rec.encoded_len(), id: rec.id, udp: rec.udp, external: rec.external });
            if i == 0 {
                sender = Some(rec);
            }
        });
        match visited {
            Err(e) => {
                self.count(Counter::dropped_malformed);
                self.count(counters::malformed(e.reason()));
            }
            Ok(v) => {
                let lo = v.request_id as u32;
                let hi = (v.request_id >> 32) as u32;
                match (v.kind, sender) {
                    (wire::kind::PING, _) => self.on_ping(from, data, now),
                    (wire::kind::PONG, _) => {
                        if let Some(r) = self.take_match(hi, lo, from, wire::kind::PONG) {
                            self.alive(from, now);
                            self.succeed(r, from, None, &recs, data, now);
                        }
                    }
                    (wire::kind::FIND_NODE, Some(s)) => self.on_find_node(from, data, s, v.ephemeral, proven, now),
                    (wire::kind::NODES, Some(s)) => {
                        if let Some(r) = self.take_match(hi, lo, from, wire::kind::NODES) {
                            self.on_nodes(r, from, s, v.truncated, proven, &recs, data, now);
                        }
                    }
                    _ => self.count(Counter::dropped_malformed),
                }
            }
        }
        pool::put_recs(recs);
        self.settle(now);
        self.source = None;
    }

    /// The timers due at `now`: requests unanswered, lookups to go on.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(due) = self.requests.pop_due(now) {
            match due {
                Due::Request(r) => {
                    self.count(Counter::request_timeouts);
                    self.fail(r.purpose, now);
                }
                Due::Search(s, t) => {
                    if let Some(search) = self.searches.get_mut(&s) {
                        if search.wake == Some(t) {
                            search.wake = None;
                            self.drive(s, now);
                        }
                    }
                }
            }
            self.settle(now);
        }
        self.upkeep_timers(now);
        self.settle(now);
        let searches = &self.searches;
        self.requests.compact(searches.len(), |s, t| searches.get(&s).is_some_and(|x| x.wake == Some(t)));
    }

    /// Fails the requests that could not be sent in the step that ends now, and frees the
    /// collections of requests and events the step left empty (most nodes of a large swarm are
    /// idle most of the time).
    fn settle(&mut self, now: Instant) {
        loop {
            while let Some(p) = self.soon.pop() {
                self.fail(p, now);
            }
            // The upkeep's lookups that ended: its next steps (which may fail requests in turn).
            if self.upkeep.as_ref().is_none_or(|u| u.ended.is_empty()) {
                break;
            }
            self.upkeep_ended(now);
        }
        self.requests.trim();
        if self.events.is_empty() && self.events.capacity() > 0 {
            self.events = VecDeque::new();
        }
    }

    fn take_match(&mut self, hi: u32, lo: u32, from: SocketAddr, kind: u8) -> Option<Request> {
        let Some(r) = self.requests.take_match(hi, lo, &from, kind) else {
            self.count(Counter::dropped_unsolicited);
            return None;
        };
        // The address answered: the budget its request took comes back; it is verified from now on.
        self.book.answered(from);
        Some(r)
    }

    fn on_ping(&mut self, from: SocketAddr, data: &[u8], now: Instant) {
        // A PING carries no record: a session proves nothing about it here.
        match self.answer(from, data, false, now) {
            Err(NoAnswer::ReplyRate) => self.count(Counter::dropped_reply_rate),
            Err(_) => self.count(Counter::dropped_malformed),
            Ok(_) => {
                self.count(Counter::pings_answered);
                self.alive(from, now);
                self.send_answer();
            }
        }
    }

    fn on_find_node(&mut self, from: SocketAddr, data: &[u8], sender: PeerRecord, ephemeral: bool, proven: Option<&NodeId>, now: Instant) {
        // The requester's record names the id its session proved: its address needs no verifying.
        let proven = proven == Some(&sender.id);
        let answered = match self.answer(from, data, proven, now) {
            Err(NoAnswer::OwnId) => return self.count(Counter::dropped_self),
            r => r,
        };
        self.count(Counter::find_node_received);
        if proven {
            self.count(Counter::find_node_authenticated);
        }
        let validated = match answered {
            Err(NoAnswer::ReplyRate) => return self.count(Counter::dropped_reply_rate),
            Err(_) => return self.count(Counter::dropped_malformed),
            Ok(a) => {
                if a.len == 0 {
                    self.count(Counter::dropped_amplification);
                } else {
                    self.count(Counter::nodes_sent);
                    if !a.validated {
                        self.count(Counter::nodes_sent_unverified);
                    }
                    self.send_answer();
                }
                a.validated
            }
        };
        // An ephemeral requester is answered, never added (nor verified for the table).
        if ephemeral {
            return self.count(Counter::find_node_ephemeral);
        }
        self.requester(from, sender, validated, now);
    }

    #[allow(clippy::too_many_arguments)]
    fn on_nodes(&mut self, r: Request, from: SocketAddr, sender: PeerRecord, truncated: bool, proven: Option<&NodeId>, recs: &[Rec], data: &[u8], now: Instant) {
        // Through an authenticating layer the sender's record must be the identity it proved.
        if proven.is_some_and(|p| *p != sender.id) {
            self.count(Counter::dropped_identity_mismatch);
            return self.fail(r.purpose, now);
        }
        if r.expect.is_some_and(|e| e != sender.id) {
            self.count(Counter::dropped_wrong_sender);
            return self.fail(r.purpose, now);
        }
        if truncated {
            // It cut its answer to our unpadded FIND_NODE: pad the next one again.
            self.count(Counter::nodes_truncated);
            self.book.forget_verified_by(&from);
        }
        self.sample_query(now.saturating_duration_since(r.sent_at).as_secs_f64() * 1000.0);
        self.succeed(r, from, Some(sender), recs, data, now);
    }

    /// A request was answered (a PONG: `sender` None; a NODES with its sender's record).
    fn succeed(&mut self, r: Request, from: SocketAddr, sender: Option<PeerRecord>, recs: &[Rec], data: &[u8], now: Instant) {
        match (r.purpose, sender) {
            (Purpose::Verify { record }, _) => {
                self.verifying.remove(&r.to);
                self.consider(record, now);
            }
            (Purpose::Evict { id, handle }, _) => self.ping_result(&id, handle, true, now),
            (Purpose::Query { search, id }, Some(s)) => self.on_reply(search, &id, from, s, recs, data, now),
            (Purpose::Claim { search, hops }, Some(s)) => self.claim_answered(search, hops, from, s, now),
            (Purpose::Bootstrap { search }, Some(s)) => self.bootstrap_answered(search, from, s, recs, data, now),
            (p, None) => self.fail(p, now),
        }
    }

    /// A request failed (unanswered, answered by the wrong node, or never sent).
    fn fail(&mut self, p: Purpose, now: Instant) {
        match p {
            Purpose::Verify { record } => {
                if let Some((udp, _)) = record.addrs() {
                    self.verifying.remove(&udp);
                }
            }
            Purpose::Evict { id, handle } => self.ping_result(&id, handle, false, now),
            Purpose::Query { search, id } => {
                self.failed(&id, now);
                if let Some(s) = self.searches.get_mut(&search) {
                    if !s.done {
                        s.lookup.on_failure(&id);
                        self.drive(search, now);
                    }
                }
            }
            Purpose::Claim { search, hops } => self.claim_failed(search, hops, now),
            Purpose::Bootstrap { search } => self.bootstrap_done_one(search, now),
        }
    }

    // ---- requests ---------------------------------------------------------------------------

    /// Sends a request built by `build` (given the request id) to `to`, unless too many are in
    /// flight or `to` is over its unvalidated budget (then it fails once this step ends).
    fn request(&mut self, to: SocketAddr, kind: u8, expect: Option<NodeId>, purpose: Purpose, now: Instant, build: impl FnOnce(&Self, u64, &mut Vec<u8>)) {
        if self.requests.len() >= MAX_PENDING {
            self.count(Counter::dropped_too_many_requests);
            return self.soon.push(purpose);
        }
        // A request to an address nobody validated (a NODES record may name any victim) spends
        // a token of its IP and of its prefix; the token comes back when the address answers.
        let validated = self.is_entry_address(&to);
        if !self.book.within_budget(&to, validated, now) {
            self.count(Counter::dropped_unvalidated_budget);
            return self.soon.push(purpose);
        }
        let lo = self.requests.next_lo();
        let hi = self.rand();
        let start = self.begin_frame(Some(to));
        let mut out = std::mem::take(&mut self.out);
        build(self, (u64::from(hi) << 32) | u64::from(lo), &mut out);
        self.out = out;
        self.end_frame(start);
        let timeout = if kind == wire::kind::FIND_NODE { 2 * self.config.query_timeout } else { self.config.query_timeout };
        self.requests.insert(lo, Request { hi, to, kind, deadline: now + timeout, sent_at: now, expect, purpose });
    }

    /// A FIND_NODE for `target` to `to`; `expect`: the id we believe lives there.
    fn find_node(&mut self, to: SocketAddr, target: NodeId, expect: Option<NodeId>, purpose: Purpose, now: Instant) {
        // An address whose request we answered has verified us: no padding needed.
        let pad = if self.book.is_verified_by(&to) { 0 } else { self.config.pad_to };
        self.count(Counter::queries_sent);
        let ephemeral = self.config.ephemeral;
        self.request(to, wire::kind::FIND_NODE, expect, purpose, now, |node, id, out| {
            wire::encode_find_node(id, &target, &node.own, ephemeral, pad, out);
        });
    }

    fn ping(&mut self, to: SocketAddr, purpose: Purpose, now: Instant) {
        self.count(Counter::pings_sent);
        self.request(to, wire::kind::PING, None, purpose, now, |_, id, out| Message::Ping { request_id: id }.encode_into(out));
    }

    // ---- join -------------------------------------------------------------------------------

    /// One join attempt: FIND_NODE of our id to each of `addrs`, then a self-lookup through the
    /// nodes they named. Returns the lookup's id: its [`Event::LookupDone`] ends the attempt
    /// ([`LookupOutcome::seeds`] 0: no bootstrap node answered).
    pub fn bootstrap(&mut self, addrs: &[SocketAddr], now: Instant) -> u32 {
        let search = self.begin_bootstrap(addrs, now, None);
        self.settle(now);
        search
    }

    /// [`bootstrap`](Self::bootstrap) without ending the step (`upkeep`: the upkeep's join, for
    /// this task).
    fn begin_bootstrap(&mut self, addrs: &[SocketAddr], now: Instant, upkeep: Option<upkeep::Task>) -> u32 {
        self.count(Counter::bootstrap_attempts);
        // A join still waiting for its bootstrap nodes ends here, without seeds (its answers, if
        // any come, count for nothing).
        if let Some(old) = self.join.take() {
            let config = self.config;
            let mut s = Search::new(self.own.id, std::iter::empty(), &config, self.patience(), LookupOptions::default(), now);
            s.lookup.release();
            s.upkeep = old.upkeep;
            self.searches.insert(old.search, s);
            self.finish(old.search, now);
        }
        let search = self.new_search_id();
        self.join = Some(Join { search, upkeep, left: addrs.len(), seeds: Vec::new(), seen: SeededSet::default() });
        let own = self.own.id;
        for &a in addrs {
            self.find_node(a, own, None, Purpose::Bootstrap { search }, now);
        }
        if addrs.is_empty() {
            self.bootstrap_done(now);
        }
        search
    }

    fn bootstrap_answered(&mut self, search: u32, from: SocketAddr, sender: PeerRecord, recs: &[Rec], data: &[u8], now: Instant) {
        let at = Encoded::new(&PeerRecord { udp: from, ..sender });
        self.consider(at.clone(), now);
        let own = self.own.id;
        if let Some(j) = self.join.as_mut().filter(|j| j.search == search) {
            j.seeds.push(at);
            for r in recs.iter().skip(1) {
                if r.id != own && j.seen.insert(r.id) {
                    j.seeds.push(Encoded::from_bytes(&data[r.at..r.at + r.len]));
                }
            }
        }
        self.bootstrap_done_one(search, now);
    }

    fn bootstrap_done_one(&mut self, search: u32, now: Instant) {
        let Some(j) = self.join.as_mut().filter(|j| j.search == search) else { return };
        j.left = j.left.saturating_sub(1);
        if j.left == 0 {
            self.bootstrap_done(now);
        }
    }

    fn bootstrap_done(&mut self, now: Instant) {
        let Some(j) = self.join.take() else { return };
        let own = self.own.id;
        let seeds = j.seeds.len() as u32;
        let opts = LookupOptions { ids: true, ..LookupOptions::default() };
        // The table's closest entries (the bootstrap nodes that answered are among them), then
        // the nodes they named.
        let mut all = Vec::with_capacity(self.config.k + j.seeds.len());
        self.table.for_each_closest(&own, self.config.k, &mut self.scratch, |e| all.push(e.value.encoded.clone()));
        all.extend(j.seeds);
        let mut s = Search::new(own, all.into_iter(), &self.config, self.patience(), opts, now);
        s.seeds = seeds;
        s.upkeep = j.upkeep;
        self.searches.insert(j.search, s);
        self.count(Counter::lookups);
        self.drive(j.search, now);
    }

    fn new_search_id(&mut self) -> u32 {
        self.next_search = self.next_search.wrapping_add(1);
        while self.searches.contains_key(&self.next_search) {
            self.next_search = self.next_search.wrapping_add(1);
        }
        self.next_search
    }

    /// Forgets every request, lookup and timer (the caller stopped the node).
    pub fn clear(&mut self) {
        self.requests.clear();
        self.searches.clear();
        self.join = None;
        self.upkeep = None;
        self.soon.clear();
        pool::return_out(std::mem::take(&mut self.out));
        self.events.clear();
        self.verifying.clear();
        self.approving.clear();
    }
}

/// The 18-byte form of `addr` (for callers that key by it).
#[must_use]
pub fn raw(addr: SocketAddr) -> [u8; RAW_ADDR_LEN] {
    encode_raw_addr(addr)
}
