//! Who enters the routing table: a peer enters only at a validated address (it answered a
//! request of ours there, or proved its id through an authenticating layer) and, when the caller
//! asks for it, after the caller's approval. A requester that is not in the table is verified by a
//! PING first (when its bucket would take it); a full bucket pings its least recently seen entry
//! at most once at a time, and not when it was seen lately (the table's fresh interval).

use std::net::SocketAddr;
use std::time::Instant;

use super::requests::Purpose;
use super::{Counter, Encoded, Event, KadNode, Slot, MAX_APPROVING, MAX_EVENTS, MAX_VERIFYING};
use crate::identity::NodeId;
use crate::kad::kbucket::{Eviction, InsertResult};
use crate::wire::encode_raw_addr;
use crate::wire::peer_record::PeerRecord;

impl KadNode {
    /// A FIND_NODE's sender at `from`; `validated`: its address is (see [`KadNode::answer`]).
    pub(super) fn requester(&mut self, from: SocketAddr, sender: PeerRecord, validated: bool, now: Instant) {
        let id = sender.id;
        let heard = self.heard_entry(&id, from, sender.external, now);
        if heard == Heard::Done {
            return;
        }
        let record = Encoded::new(&PeerRecord { udp: from, ..sender });
        if let Heard::Replace(handle) = heard {
            return self.replace(handle, record, now);
        }
        if validated {
            return self.consider(record, now);
        }
        // Verifying its address serves only the table: not when its bucket is full of fresh entries.
        if self.table.would_admit(&id, now) {
            self.verify(from, record, now);
        } else {
            self.count(Counter::verify_skipped_full);
        }
    }

    /// A node with id `id` spoke from `from` announcing `external` (it asked us, answered a
    /// query sent there, or a record names it there). For a table entry: touched when `from` is
    /// the entry's address and nothing changed ([`Heard::Done`]); to be replaced when it announced
    /// another external address there; nothing at all from another address (a record is public:
    /// only the entry's address speaks for it).
    pub(super) fn heard_entry(&mut self, id: &NodeId, from: SocketAddr, external: Option<SocketAddr>, now: Instant) -> Heard {
        let Some(slot) = self.table.get(id) else { return Heard::Absent };
        match slot.encoded.addrs() {
            Some((udp, ext)) if udp == from => {
                if ext != external {
                    return Heard::Replace(slot.handle);
                }
                self.seen(id, now);
                Heard::Done
            }
            _ => Heard::Done,
        }
    }

    /// Replaces the record of the entry `handle` (it announced another external address).
    pub(super) fn replace(&mut self, handle: u32, record: Encoded, now: Instant) {
        let id = record.id();
        self.failures.remove(&id);
        let _ = self.table.insert(id, Slot { handle, encoded: record }, now);
    }

    /// Pings a requester at `addr`; considers it once it answers (its address is then verified).
    fn verify(&mut self, addr: SocketAddr, record: Encoded, now: Instant) {
        if self.verifying.contains(&addr) {
            return;
        }
        if self.verifying.len() >= MAX_VERIFYING {
            return self.count(Counter::dropped_verify_busy);
        }
        self.verifying.insert(addr);
        self.ping(addr, Purpose::Verify { record }, now);
    }

    /// A peer at a validated address (its record names it): touched if in the table (its record
    /// replaced when it announced another external address), else approved and admitted.
    pub(super) fn consider(&mut self, record: Encoded, now: Instant) {
        let id = record.id();
        if id == self.own.id {
            return;
        }
        let Some((udp, external)) = record.addrs() else { return };
        match self.heard_entry(&id, udp, external, now) {
            Heard::Done => return,
            Heard::Replace(handle) => return self.replace(handle, record, now),
            Heard::Absent => {}
        }
        if self.config.approve {
            if self.approving.contains(&id) {
                return;
            }
            if self.approving.len() >= MAX_APPROVING {
                return self.count(Counter::dropped_approval_busy);
            }
            self.approving.insert(id);
            self.events.push_back(Event::Approve { record });
            return;
        }
        self.admit(record, now);
    }

    /// The caller's answer to [`Event::Approve`] for `record`.
    pub fn approved(&mut self, record: &[u8], ok: bool, now: Instant) {
        let Some(layout) = PeerRecord::layout_of(record) else { return };
        let record = Encoded::from_bytes(&record[..layout.len]);
        let id = record.id();
        if !self.approving.remove(&id) || !ok {
            return;
        }
        if self.table.contains(&id) {
            self.consider(record, now);
        } else {
            self.admit(record, now);
        }
        self.settle(now);
    }

    fn admit(&mut self, record: Encoded, now: Instant) {
        let handle = self.next_handle;
        self.next_handle = self.next_handle.wrapping_add(1);
        match self.insert_verified(handle, record, now) {
            InsertResult::Pending { to_ping } => {
                self.count(Counter::bucket_full);
                let old = self.table.get(&to_ping).map(|s| (s.handle, s.encoded.addrs()));
                if let Some((handle, Some((addr, _)))) = old {
                    self.count(Counter::eviction_pings);
                    self.ping(addr, Purpose::Evict { id: to_ping, handle }, now);
                }
            }
            InsertResult::Cached => self.count(Counter::bucket_full),
            InsertResult::Inserted | InsertResult::Updated | InsertResult::SelfId => {}
        }
    }

    /// Inserts a peer whose address is validated, under `handle` (the node's own, or a test's or
    /// tool's); the table's answer (an entry that had to be pinged is not).
    pub fn insert_verified(&mut self, handle: u32, record: Encoded, now: Instant) -> InsertResult {
        let id = record.id();
        let Some((udp, _)) = record.addrs() else { return InsertResult::SelfId };
        let event = self.peer_events.then(|| record.clone());
        let r = self.table.insert(id, Slot { handle, encoded: record }, now);
        if r == InsertResult::Inserted {
            self.entered(id, handle, udp, event);
        }
        r
    }

    fn entered(&mut self, id: NodeId, handle: u32, udp: SocketAddr, record: Option<Encoded>) {
        self.by_addr.insert(encode_raw_addr(udp), id);
        self.failures.remove(&id);
        self.count(Counter::peers_added);
        if let Some(record) = record {
            self.peer_event(Event::Connected { handle, record });
        }
    }

    fn evicted(&mut self, ev: Eviction<Slot>) {
        let removed = ev.removed;
        if let Some((udp, _)) = removed.value.encoded.addrs() {
            let udp = encode_raw_addr(udp);
            if self.by_addr.get(&udp) == Some(&removed.id) {
                self.by_addr.remove(&udp);
            }
        }
        self.failures.remove(&removed.id);
        self.count(Counter::peers_removed);
        if self.peer_events {
            self.peer_event(Event::Disconnected { handle: removed.value.handle, record: removed.value.encoded });
        }
        if let Some(p) = ev.promoted {
            if let Some((udp, _)) = p.value.encoded.addrs() {
                let event = self.peer_events.then(|| p.value.encoded.clone());
                self.entered(p.id, p.value.handle, udp, event);
            }
        }
    }

    /// The outcome of an eviction ping of the entry `id` (if it is still the one pinged).
    pub(super) fn ping_result(&mut self, id: &NodeId, handle: u32, alive: bool, now: Instant) {
        if self.table.get(id).is_none_or(|s| s.handle != handle) {
            return;
        }
        // Heard from since the PING went out (its bucket no longer waits for it): that was its answer.
        if !alive && self.table.bucket_index(id).and_then(|b| self.table.pending_ping(b)) != Some(id) {
            return;
        }
        if let Some(ev) = self.table.on_ping_result(id, alive, now) {
            self.evicted(ev);
        }
    }

    /// A table entry did not answer a query: removed after `max_failures` in a row.
    pub(super) fn failed(&mut self, id: &NodeId, _now: Instant) {
        if !self.table.contains(id) {
            return;
        }
        let n = self.failures.entry(*id).or_insert(0);
        *n += 1;
        if *n < self.config.max_failures {
            return;
        }
        if let Some(ev) = self.table.remove(id) {
            self.evicted(ev);
        }
    }

    /// A known entry answered or asked: no failures, touched.
    pub(super) fn seen(&mut self, id: &NodeId, now: Instant) {
        self.failures.remove(id);
        self.table.touch(id, now);
    }

    /// Any datagram from a table entry's address counts as a sign of life.
    pub fn alive(&mut self, from: SocketAddr, now: Instant) {
        if let Some(id) = self.by_addr.get(&encode_raw_addr(from)).copied() {
            self.seen(&id, now);
        }
    }

    /// Queues a table change for the caller, unless [`MAX_EVENTS`] wait (a caller that does not
    /// poll): then it is counted, not kept.
    fn peer_event(&mut self, e: Event) {
        if self.events.len() >= MAX_EVENTS {
            return self.count(Counter::dropped_peer_events);
        }
        self.events.push_back(e);
    }

    /// Whether `from` is a table entry's address.
    #[must_use]
    pub fn is_entry_address(&self, from: &SocketAddr) -> bool {
        self.by_addr.contains_key(&encode_raw_addr(*from))
    }
}

/// What [`KadNode::heard_entry`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Heard {
    /// The id is no entry's.
    Absent,
    /// An entry's: touched, or nothing (another address).
    Done,
    /// An entry's, at its address with another external address: replace its record.
    Replace(u32),
}
