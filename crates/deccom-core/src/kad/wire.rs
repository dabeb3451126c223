//! Kademlia messages: versioned, length-checked, never panicking on input.
//! Specified in `docs/wire.md#kademlia-tag-3`.
//!
//! # Encoding (version 1)
//!
//! The bytes below follow the layer tag byte (the Kademlia layer uses tag 3). Integers are
//! big-endian; records use the [`crate::wire::peer_record`] codec (which checks that each id is
//! SHA-256 of its identity).
//!
//! | offset | bytes | field                                                       |
//! |--------|-------|-------------------------------------------------------------|
//! | 0      | 1     | version, `1`                                                |
//! | 1      | 1     | type: `1` PING, `2` PONG, `3` FIND_NODE, `4` NODES          |
//! | 2      | 8     | request id (random, chosen by the requester; echoed)        |
//!
//! - **PING**, **PONG**: nothing more (10 bytes exactly). A PONG is as large as its PING.
//! - **FIND_NODE**: 32-byte target id; the sender's peer record; then, optionally, a flags byte
//!   ([`FIND_EPHEMERAL`]: the sender asks not to be added to routing tables; other bits are
//!   ignored) and padding (zero bytes; receivers ignore their content). Padding lets a requester
//!   that the responder has not verified yet still receive a full answer (see *Amplification*).
//!   A version-1 receiver that predates the flags byte reads it as padding.
//! - **NODES**: 1 flags byte (`0x01` = truncated because the requester's address is not verified;
//!   other bits must be 0); 1 count byte `n <= MAX_NODES`; the responder's own peer record; `n`
//!   peer records. Nothing may follow.
//!
//! Decoding ([`Message::decode`]) rejects, with a typed [`WireError`]: input that ends early, an
//! unknown version or type, unknown flag bits, more than [`MAX_NODES`] records, any malformed record,
//! and trailing bytes (except FIND_NODE padding).
//!
//! # Anti-poisoning and amplification (the rules the layer applies)
//!
//! - A response (PONG, NODES) is accepted only if it answers a request we sent: same request id,
//!   same type pair, and it comes from the address we sent the request to. Anything else is dropped
//!   and counted; it never touches the routing table.
//! - Peers enter the routing table only once their address is verified: they answered a request of
//!   ours (a random 64-bit id echoed from that address). An unknown requester is answered and then
//!   pinged; it is added when its PONG arrives.
//! - No amplification: a response to an address that is not verified is never larger than the
//!   request that caused it. PONG has the size of PING; NODES is cut to fit in the FIND_NODE's size
//!   ([`encode_nodes`] with `max_len`, setting the truncated flag), or not sent at all if even an
//!   empty NODES would not fit. Requesters pad FIND_NODE to get a full answer on first contact.

use std::fmt;

use crate::identity::NodeId;
use crate::wire::peer_record::PeerRecord;
use crate::wire::{Reader, Truncated};
use crate::Error;

/// The only version written and read.
pub const VERSION: u8 = 1;
/// Bytes of the common header (version, type, request id).
pub const HEADER_LEN: usize = 10;
/// Most records a NODES message may carry.
pub const MAX_NODES: usize = 64;
/// NODES flag: the list was cut to fit the request's size (the requester is not verified).
pub const FLAG_TRUNCATED: u8 = 0x01;
/// FIND_NODE flag (the byte after the sender's record): the sender is ephemeral — it looks
/// others up but is not to be added to routing tables (nor verified for them).
pub const FIND_EPHEMERAL: u8 = 0x01;

/// Message type bytes.
pub mod kind {
    /// PING.
    pub const PING: u8 = 1;
    /// PONG.
    pub const PONG: u8 = 2;
    /// FIND_NODE.
    pub const FIND_NODE: u8 = 3;
    /// NODES.
    pub const NODES: u8 = 4;
}

/// A decoded Kademlia message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Are you there?
    Ping {
        /// Echoed by the PONG.
        request_id: u64,
    },
    /// Yes.
    Pong {
        /// The PING's id.
        request_id: u64,
    },
    /// Which peers do you know closest to `target`?
    FindNode {
        /// Echoed by the NODES.
        request_id: u64,
        /// The id looked up.
        target: NodeId,
        /// Who asks (its UDP address as it believes it to be).
        sender: PeerRecord,
        /// The sender asks not to be added to routing tables ([`FIND_EPHEMERAL`]).
        ephemeral: bool,
    },
    /// These.
    Nodes {
        /// The FIND_NODE's id.
        request_id: u64,
        /// The list was cut to fit the request's size.
        truncated: bool,
        /// Who answers.
        sender: PeerRecord,
        /// The closest peers the responder knows.
        nodes: Vec<PeerRecord>,
    },
}

/// Why [`Message::decode`] rejected its input.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// The input ended early.
    Truncated,
    /// A version other than 1.
    Version(u8),
    /// An unknown message type.
    UnknownType(u8),
    /// Unknown NODES flag bits.
    UnknownFlags(u8),
    /// More than [`MAX_NODES`] records.
    TooManyNodes(usize),
    /// Bytes after the end of the message.
    TrailingBytes(usize),
    /// A malformed peer record.
    Record(Error),
}

impl WireError {
    /// A short reason, for counters and logs.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            WireError::Truncated => "truncated",
            WireError::Version(_) => "version",
            WireError::UnknownType(_) => "unknown_type",
            WireError::UnknownFlags(_) => "unknown_flags",
            WireError::TooManyNodes(_) => "too_many_nodes",
            WireError::TrailingBytes(_) => "trailing_bytes",
            WireError::Record(_) => "record",
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Truncated => write!(f, "the Kademlia message is truncated"),
            WireError::Version(v) => write!(f, "unknown Kademlia message version {v} (expected {VERSION})"),
            WireError::UnknownType(t) => write!(f, "unknown Kademlia message type {t}"),
            WireError::UnknownFlags(x) => write!(f, "unknown NODES flag bits {x:#04x}"),
            WireError::TooManyNodes(n) => write!(f, "NODES carries {n} records (at most {MAX_NODES})"),
            WireError::TrailingBytes(n) => write!(f, "{n} bytes after the end of the Kademlia message"),
            WireError::Record(e) => write!(f, "malformed peer record: {e}"),
        }
    }
}

impl std::error::Error for WireError {}

impl From<Truncated> for WireError {
    fn from(_: Truncated) -> Self {
        WireError::Truncated
    }
}

fn record(r: &mut Reader<'_>, bytes: &[u8]) -> Result<PeerRecord, WireError> {
    let start = r.position();
    let (rec, used) = PeerRecord::decode(bytes.get(start..).unwrap_or_default()).map_err(WireError::Record)?;
    r.take(used)?;
    Ok(rec)
}

fn header(out: &mut Vec<u8>, kind: u8, request_id: u64) {
    out.push(VERSION);
    out.push(kind);
    out.extend_from_slice(&request_id.to_be_bytes());
}

impl Message {
    /// The request id.
    #[must_use]
    pub fn request_id(&self) -> u64 {
        match self {
            Message::Ping { request_id }
            | Message::Pong { request_id }
            | Message::FindNode { request_id, .. }
            | Message::Nodes { request_id, .. } => *request_id,
        }
    }

    /// Decodes one message filling all of `bytes` (FIND_NODE may end with padding).
    ///
    /// Safe on untrusted input: never panics.
    ///
    /// # Errors
    ///
    /// A [`WireError`] naming the first problem found.
    pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
        let mut sender = None;
        let mut nodes = Vec::new();
        let h = visit(bytes, |i, _, rec| {
            if i == 0 {
                sender = Some(rec);
            } else {
                nodes.push(rec);
            }
        })?;
        let request_id = h.request_id;
        Ok(match (h.kind, sender) {
            (kind::PING, _) => Message::Ping { request_id },
            (kind::PONG, _) => Message::Pong { request_id },
            (kind::FIND_NODE, Some(sender)) => Message::FindNode { request_id, target: h.target, sender, ephemeral: h.ephemeral },
            (_, Some(sender)) => Message::Nodes { request_id, truncated: h.truncated, sender, nodes },
            // visit() returns FIND_NODE and NODES only after their sender's record.
            (_, None) => return Err(WireError::Truncated),
        })
    }

    /// Appends the encoding to `out` (NODES with every record, not truncated by size; records
    /// beyond [`MAX_NODES`] are left out).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Message::Ping { request_id } => header(out, kind::PING, *request_id),
            Message::Pong { request_id } => header(out, kind::PONG, *request_id),
            Message::FindNode {
                request_id,
                target,
                sender,
                ephemeral,
            } => encode_find_node(*request_id, target, sender, *ephemeral, 0, out),
            Message::Nodes {
                request_id,
                truncated,
                sender,
                nodes,
            } => {
                let start = out.len();
                let n = nodes.len().min(MAX_NODES);
                header(out, kind::NODES, *request_id);
                out.push(if *truncated { FLAG_TRUNCATED } else { 0 });
                out.push(n as u8);
                sender.encode_into(out);
                for rec in &nodes[..n] {
                    rec.encode_into(out);
                }
                debug_assert!(out.len() > start);
            }
        }
    }

    /// The encoding as a new vector.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }
}

/// The header fields of a message [`visit`] validated (its records went to the callback).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Visited {
    /// The type byte ([`kind`]).
    pub kind: u8,
    /// The request id.
    pub request_id: u64,
    /// NODES: the truncated flag.
    pub truncated: bool,
    /// NODES: the records after the sender's.
    pub count: usize,
    /// FIND_NODE: the target (zeros otherwise).
    pub target: NodeId,
    /// FIND_NODE: the sender set [`FIND_EPHEMERAL`].
    pub ephemeral: bool,
}

/// Decodes and validates a message like [`Message::decode`] — the same checks in the same order,
/// the same errors — without collecting its records: `f` gets each record as it is decoded
/// (index 0: the sender, then the NODES records), with its offset in `bytes`. On an error, `f`
/// may have seen the records before the bad one.
///
/// # Errors
///
/// A [`WireError`] naming the first problem found.
pub fn visit(bytes: &[u8], mut f: impl FnMut(usize, usize, PeerRecord)) -> Result<Visited, WireError> {
    let mut r = Reader::new(bytes);
    let version = r.u8()?;
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    let kind = r.u8()?;
    let request_id = u64::from_be_bytes(r.array()?);
    let mut out = Visited { kind, request_id, truncated: false, count: 0, target: [0; 32], ephemeral: false };
    match kind {
        kind::PING | kind::PONG => {}
        kind::FIND_NODE => {
            out.target = r.array()?;
            let at = r.position();
            f(0, at, record(&mut r, bytes)?);
            // Then the flags byte, if any, and padding.
            out.ephemeral = bytes.get(r.position()).is_some_and(|f| f & FIND_EPHEMERAL != 0);
            return Ok(out);
        }
        kind::NODES => {
            let flags = r.u8()?;
            if flags & !FLAG_TRUNCATED != 0 {
                return Err(WireError::UnknownFlags(flags));
            }
            let count = usize::from(r.u8()?);
            if count > MAX_NODES {
                return Err(WireError::TooManyNodes(count));
            }
            out.truncated = flags & FLAG_TRUNCATED != 0;
            out.count = count;
            for i in 0..=count {
                let at = r.position();
                f(i, at, record(&mut r, bytes)?);
            }
        }
        other => return Err(WireError::UnknownType(other)),
    }
    if r.remaining() != 0 {
        return Err(WireError::TrailingBytes(r.remaining()));
    }
    Ok(out)
}

/// Appends a FIND_NODE (with the flags byte [`FIND_EPHEMERAL`] when `ephemeral`), padded with
/// zero bytes to at least `pad_to` bytes (0: no padding).
pub fn encode_find_node(request_id: u64, target: &NodeId, sender: &PeerRecord, ephemeral: bool, pad_to: usize, out: &mut Vec<u8>) {
    let start = out.len();
    header(out, kind::FIND_NODE, request_id);
    out.extend_from_slice(target);
    sender.encode_into(out);
    if ephemeral {
        out.push(FIND_EPHEMERAL);
    }
    let len = out.len() - start;
    if len < pad_to {
        out.resize(start + pad_to, 0);
    }
}

/// Appends a NODES holding as many of `nodes` as fit in `max_len` bytes (and at most
/// [`MAX_NODES`]); sets the truncated flag when some were left out for size. Returns the number of
/// records written, or `None` — and writes nothing — if even a NODES without records exceeds
/// `max_len` (then do not answer: see *Amplification* in the module docs).
pub fn encode_nodes<'a>(
    request_id: u64,
    sender: &PeerRecord,
    nodes: impl IntoIterator<Item = &'a PeerRecord>,
    max_len: usize,
    out: &mut Vec<u8>,
) -> Option<usize> {
    encode_nodes_with(request_id, sender, nodes, max_len, out)
}

/// [`encode_nodes`] from records already encoded (each one [`PeerRecord::encode`]'s bytes, e.g.
/// kept by a routing table since the record was inserted): the same bytes, without encoding the
/// records again.
pub fn encode_nodes_encoded<'a>(
    request_id: u64,
    sender: &PeerRecord,
    nodes: impl IntoIterator<Item = &'a [u8]>,
    max_len: usize,
    out: &mut Vec<u8>,
) -> Option<usize> {
    encode_nodes_with(request_id, sender, nodes, max_len, out)
}

/// A NODES record to write: a record, or its bytes already encoded.
trait NodeRecord {
    fn encoded_len(&self) -> usize;
    fn write(&self, out: &mut Vec<u8>);
}

impl NodeRecord for &PeerRecord {
    fn encoded_len(&self) -> usize {
        PeerRecord::encoded_len(self)
    }
    fn write(&self, out: &mut Vec<u8>) {
        self.encode_into(out);
    }
}

impl NodeRecord for &[u8] {
    fn encoded_len(&self) -> usize {
        self.len()
    }
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
}

/// The one NODES encoder behind [`encode_nodes`] and [`encode_nodes_encoded`].
fn encode_nodes_with<R: NodeRecord>(
    request_id: u64,
    sender: &PeerRecord,
    nodes: impl IntoIterator<Item = R>,
    max_len: usize,
    out: &mut Vec<u8>,
) -> Option<usize> {
    let start = out.len();
    let base = HEADER_LEN + 2 + sender.encoded_len();
    if base > max_len {
        return None;
    }
    header(out, kind::NODES, request_id);
    out.push(0);
    out.push(0);
    sender.encode_into(out);
    let mut n = 0;
    let mut cut = false;
    for rec in nodes {
        if n == MAX_NODES {
            break;
        }
        if out.len() - start + rec.encoded_len() > max_len {
            cut = true;
            break;
        }
        rec.write(out);
        n += 1;
    }
    out[start + HEADER_LEN] = if cut { FLAG_TRUNCATED } else { 0 };
    out[start + HEADER_LEN + 1] = n as u8;
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn rec(name: &str, port: u16) -> PeerRecord {
        PeerRecord::new(
            Identity::from_name(name).unwrap().public_identity(),
            format!("10.0.0.1:{port}").parse().unwrap(),
        )
    }

    #[test]
    fn round_trips() {
        let msgs = [
            Message::Ping { request_id: 7 },
            Message::Pong { request_id: u64::MAX },
            Message::FindNode {
                request_id: 1,
                target: [9; 32],
                sender: rec("a", 1),
                ephemeral: false,
            },
            Message::FindNode {
                request_id: 3,
                target: [8; 32],
                sender: rec("e", 5),
                ephemeral: true,
            },
            Message::Nodes {
                request_id: 2,
                truncated: true,
                sender: rec("b", 2),
                nodes: vec![rec("c", 3), rec("d", 4)],
            },
        ];
        for m in msgs {
            let bytes = m.encode();
            assert_eq!(Message::decode(&bytes), Ok(m.clone()));
            // Without its flags byte an ephemeral FIND_NODE is a plain one.
            let flags = usize::from(matches!(m, Message::FindNode { ephemeral: true, .. }));
            for cut in 0..bytes.len() - flags {
                assert!(Message::decode(&bytes[..cut]).is_err(), "{m:?} cut at {cut}");
            }
            if flags == 1 {
                assert!(matches!(Message::decode(&bytes[..bytes.len() - 1]), Ok(Message::FindNode { ephemeral: false, .. })));
            }
            if !matches!(m, Message::FindNode { .. }) {
                let mut long = bytes.clone();
                long.push(0);
                assert_eq!(Message::decode(&long), Err(WireError::TrailingBytes(1)));
            }
        }
    }

    #[test]
    fn padding_and_size_cap() {
        let me = rec("me", 1);
        let mut q = Vec::new();
        encode_find_node(5, &[1; 32], &me, false, 600, &mut q);
        assert_eq!(q.len(), 600);
        assert!(matches!(Message::decode(&q), Ok(Message::FindNode { request_id: 5, ephemeral: false, .. })));
        // The flags byte comes before the padding; other flag bits are ignored.
        let mut e = Vec::new();
        encode_find_node(6, &[1; 32], &me, true, 600, &mut e);
        assert_eq!(e.len(), 600);
        assert!(matches!(Message::decode(&e), Ok(Message::FindNode { request_id: 6, ephemeral: true, .. })));
        let flags_at = HEADER_LEN + 32 + me.encoded_len();
        e[flags_at] = 0xfe;
        assert!(matches!(Message::decode(&e), Ok(Message::FindNode { ephemeral: false, .. })));
        let others: Vec<_> = (0..20).map(|i| rec(&format!("n{i}"), 10 + i)).collect();
        let mut out = Vec::new();
        let n = encode_nodes(5, &me, &others, q.len(), &mut out).unwrap();
        assert!(out.len() <= q.len());
        assert!(n > 0 && n < 20);
        match Message::decode(&out).unwrap() {
            Message::Nodes { truncated, nodes, .. } => {
                assert!(truncated);
                assert_eq!(nodes.len(), n);
            }
            other => panic!("{other:?}"),
        }
        let mut out = Vec::new();
        assert_eq!(encode_nodes(5, &me, &others, usize::MAX, &mut out), Some(20));
        assert!(matches!(Message::decode(&out), Ok(Message::Nodes { truncated: false, .. })));
        let mut out = Vec::new();
        assert_eq!(encode_nodes(5, &me, &others, 20, &mut out), None);
        assert!(out.is_empty());
    }

    #[test]
    fn nodes_from_encoded_records_are_the_same_bytes() {
        let me = rec("me", 1);
        let others: Vec<_> = (0..30)
            .map(|i| {
                let r = rec(&format!("n{i}"), 10 + i);
                match i % 3 {
                    0 => r,
                    1 => r.with_tcp_port(7000 + i),
                    _ => r.with_external(format!("203.0.113.{i}:{}", 9000 + i).parse().unwrap()),
                }
            })
            .collect();
        let encoded: Vec<Vec<u8>> = others.iter().map(PeerRecord::encode).collect();
        for max_len in [0, 20, 100, 600, 1200, usize::MAX] {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let na = encode_nodes(9, &me, &others, max_len, &mut a);
            let nb = encode_nodes_encoded(9, &me, encoded.iter().map(Vec::as_slice), max_len, &mut b);
            assert_eq!(na, nb, "max_len {max_len}");
            assert_eq!(a, b, "max_len {max_len}");
        }
    }

    #[test]
    fn rejects_bad_headers() {
        assert_eq!(Message::decode(&[]), Err(WireError::Truncated));
        assert_eq!(Message::decode(&[2, 1, 0, 0, 0, 0, 0, 0, 0, 0]), Err(WireError::Version(2)));
        assert_eq!(Message::decode(&[1, 9, 0, 0, 0, 0, 0, 0, 0, 0]), Err(WireError::UnknownType(9)));
        let mut nodes = vec![1, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0];
        assert_eq!(Message::decode(&nodes), Err(WireError::UnknownFlags(2)));
        nodes[10] = 0;
        nodes[11] = 65;
        assert_eq!(Message::decode(&nodes), Err(WireError::TooManyNodes(65)));
    }
}
