//! Answers to PING and FIND_NODE, and the other readers of the table that write into caller
//! buffers (the rows a DHT answer lists).

use std::net::SocketAddr;
use std::time::Instant;

use super::{pool, KadNode};
use crate::identity::NodeId;
use crate::kad::wire::{self, Message};
use crate::wire::peer_record::PeerRecord;
use crate::wire::{encode_raw_addr, RAW_ADDR_LEN};

/// A Kademlia PING with the layer's tag byte (10 + 1): what verifying an unknown requester sends
/// it. To an unverified address, NODES and that PING together stay within the query's size.
const KAD_PING_LEN: usize = wire::HEADER_LEN + 1;
/// Where FIND_NODE's target starts (after the header) and the sender's record's id (after the
/// target, the record's version and flags bytes).
const FIND_NODE_TARGET: usize = wire::HEADER_LEN;
const FIND_NODE_SENDER_ID: usize = wire::HEADER_LEN + 32 + 2;

/// Bytes per row of [`KadNode::write_rows`]: an id and an 18-byte address.
pub const ROW_LEN: usize = 32 + RAW_ADDR_LEN;

/// Why [`KadNode::answer`] sends nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoAnswer {
    /// A FIND_NODE whose record is our own id.
    OwnId,
    /// Over the source prefix's reply rate.
    ReplyRate,
    /// Not a PING or FIND_NODE this reads.
    Malformed,
}

/// What [`KadNode::answer`] wrote into [`KadNode::answer_bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    /// Bytes to send (0: a FIND_NODE whose answer would exceed the amplification bound).
    pub len: usize,
    /// The requester's address is validated (proven, a table entry's, or it answered us).
    pub validated: bool,
}

impl KadNode {
    /// Answers a PING or FIND_NODE `data` (without the layer tag; a message the wire decoder
    /// accepted) from `from` at `now` into [`answer_bytes`](Self::answer_bytes). `proven`: the
    /// sender proved the id its record names (a PING: it has an authenticated session). A proven
    /// sender, a table entry's address or one that answered us is validated; any other is
    /// answered within its prefix's reply rate, and a NODES to it is cut to the query's size less
    /// a PING. A requester that got an answer is then remembered as having verified us.
    ///
    /// # Errors
    /// [`NoAnswer`]: nothing to send.
    pub fn answer(&mut self, from: SocketAddr, data: &[u8], proven: bool, now: Instant) -> Result<Answered, NoAnswer> {
        if self.bytes.capacity() == 0 {
            self.bytes = pool::lend_out();
        }
        let (Some(&wire::VERSION), Some(&kind), Some(id)) = (data.first(), data.get(1), data.get(2..wire::HEADER_LEN)) else {
            return Err(NoAnswer::Malformed);
        };
        let request_id = u64::from_be_bytes(id.try_into().expect("8 bytes"));
        let validated = proven || self.is_entry_address(&from) || self.book.is_verified(&from);
        match kind {
            wire::kind::PING if data.len() == wire::HEADER_LEN => {
                if !validated && !self.book.reply_allowed(&from, now) {
                    return Err(NoAnswer::ReplyRate);
                }
                self.bytes.clear();
                Message::Pong { request_id }.encode_into(&mut self.bytes);
                self.book.remember_verified_by(from);
                Ok(Answered { len: self.bytes.len(), validated })
            }
            wire::kind::FIND_NODE => {
                let (Some(target), Some(sender)) = (data.get(FIND_NODE_TARGET..FIND_NODE_TARGET + 32), data.get(FIND_NODE_SENDER_ID..FIND_NODE_SENDER_ID + 32)) else {
                    return Err(NoAnswer::Malformed);
                };
                if *sender == self.own.id {
                    return Err(NoAnswer::OwnId);
                }
                if !validated && !self.book.reply_allowed(&from, now) {
                    return Err(NoAnswer::ReplyRate);
                }
                let max_len = if validated { usize::MAX } else { data.len().saturating_sub(KAD_PING_LEN) };
                let target: NodeId = target.try_into().expect("32 bytes");
                let written = self.nodes_into_bytes(request_id, &target, max_len);
                // Only an answer sent lets the requester verify us.
                if written {
                    self.book.remember_verified_by(from);
                }
                Ok(Answered { len: if written { self.bytes.len() } else { 0 }, validated })
            }
            _ => Err(NoAnswer::Malformed),
        }
    }

    /// What the last [`answer`](Self::answer) wrote (an answer the node sent itself, handling a
    /// datagram, is not kept).
    #[must_use]
    pub fn answer_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The NODES answer to a FIND_NODE for `target` into `self.bytes`: our record and up to k
    /// records closest to `target`, cut to `max_len` bytes. False when even an empty answer would
    /// exceed `max_len`.
    fn nodes_into_bytes(&mut self, request_id: u64, target: &NodeId, max_len: usize) -> bool {
        let k = self.table.config().k.min(wire::MAX_NODES);
        // The records on the stack (k is at most 64): an answer allocates nothing.
        let mut recs: [&[u8]; wire::MAX_NODES] = [&[]; wire::MAX_NODES];
        let mut n = 0;
        self.table.for_each_closest(target, k, &mut self.scratch, |e| {
            recs[n] = e.value.encoded.as_slice();
            n += 1;
        });
        self.bytes.clear();
        wire::encode_nodes_encoded(request_id, &self.own, recs[..n].iter().copied(), max_len, &mut self.bytes).is_some()
    }

    /// Writes the up to `n` entries closest to `target` (closest first) into `out` as rows of
    /// [`ROW_LEN`] bytes: the id, then the UDP address of its record in the 18-byte form. An entry
    /// at `exclude` (18-byte form) is taken but not written. `n` is capped by `out`'s size.
    /// Returns the rows written.
    pub fn write_rows(&mut self, target: &NodeId, n: usize, exclude: Option<&[u8]>, out: &mut [u8]) -> usize {
        let n = n.min(out.len() / ROW_LEN);
        let mut i = 0;
        self.table.for_each_closest(target, n, &mut self.scratch, |e| {
            let Some(raw) = PeerRecord::udp_of(e.value.encoded.as_slice()).map(encode_raw_addr) else { return };
            if exclude.is_some_and(|x| x == raw) {
                return;
            }
            let row = &mut out[i * ROW_LEN..(i + 1) * ROW_LEN];
            row[..32].copy_from_slice(&e.id);
            row[32..].copy_from_slice(&raw);
            i += 1;
        });
        i
    }

    /// The up to `n` entries closest to `target` (closest first), their records back to back
    /// into `out` (cleared first).
    pub fn closest_records(&mut self, target: &NodeId, n: usize, out: &mut Vec<u8>) {
        out.clear();
        self.table.for_each_closest(target, n, &mut self.scratch, |e| out.extend_from_slice(e.value.encoded.as_slice()));
    }
}
