//! The DHT datagram codec (`docs/wire.md#dht-tag-13`). Every message starts with version `1` and a
//! type byte; all but NOTIFY carry a 64-bit request id. Decoding is total: anything that does not
//! parse (unknown version, type, kind, status or flag, a length past the end, bytes after the last
//! field except GET padding, a bad record) is an error, never a panic.

use super::records::{AnnounceRecord, MutableRecord, Reader, RecordError};
use super::{Kind, Status, KEY_LEN, MAX_NODES, MAX_VALUE_LEN, TOKEN_LEN};
use crate::wire::RAW_ADDR_LEN;

/// Wire version.
pub const VERSION: u8 = 1;
/// GET: records of a key and the nodes closest to it.
pub const GET: u8 = 1;
/// REPLY to a GET.
pub const REPLY: u8 = 2;
/// ANNOUNCE: store an announce record for a topic.
pub const ANNOUNCE: u8 = 3;
/// PUT: store an immutable value.
pub const PUT: u8 = 4;
/// PUT_MUTABLE: store a signed mutable value.
pub const PUT_MUTABLE: u8 = 5;
/// ACK of ANNOUNCE, PUT, PUT_MUTABLE with a status.
pub const ACK: u8 = 6;
/// NOTIFY: a storer tells a recent looker of a topic about a new announcer.
pub const NOTIFY: u8 = 7;
/// Bytes of a GET without padding.
pub const GET_LEN: usize = 2 + 8 + 1 + KEY_LEN + TOKEN_LEN + 2;
/// Bytes of a REPLY without nodes and records.
pub const REPLY_FIXED: usize = 2 + 8 + 1 + 1 + KEY_LEN + TOKEN_LEN + RAW_ADDR_LEN + 2 + 1 + 1;
/// Bytes of one node entry in a REPLY (id + raw address).
pub const NODE_LEN: usize = 32 + RAW_ADDR_LEN;
/// REPLY flag: nodes or records were left out to fit the size limit.
pub const FLAG_TRUNCATED: u8 = 0x01;

/// Why a datagram does not decode (the counter suffix is [`DecodeError::name`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes end before the message does.
    Truncated,
    /// Version byte other than [`VERSION`].
    Version,
    /// Unknown type byte.
    UnknownType,
    /// Unknown record kind.
    UnknownKind,
    /// Unknown ACK status.
    UnknownStatus,
    /// Unknown REPLY flag bits or CAS flag value.
    UnknownFlags,
    /// More than [`MAX_NODES`] nodes.
    TooManyNodes,
    /// Bytes after the last field.
    TrailingBytes,
    /// A record that does not decode.
    Record,
    /// A value longer than [`MAX_VALUE_LEN`].
    TooLarge,
}

impl DecodeError {
    /// Counter suffix (`dropped_malformed_<name>`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            DecodeError::Truncated => "truncated",
            DecodeError::Version => "version",
            DecodeError::UnknownType => "unknown_type",
            DecodeError::UnknownKind => "unknown_kind",
            DecodeError::UnknownStatus => "unknown_status",
            DecodeError::UnknownFlags => "unknown_flags",
            DecodeError::TooManyNodes => "too_many_nodes",
            DecodeError::TrailingBytes => "trailing_bytes",
            DecodeError::Record => "record",
            DecodeError::TooLarge => "too_large",
        }
    }
}

impl From<RecordError> for DecodeError {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::Truncated => DecodeError::Truncated,
            RecordError::ValueTooLarge => DecodeError::TooLarge,
            _ => DecodeError::Record,
        }
    }
}

/// A decoded datagram; byte slices borrow from the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// Records of `key` from index `offset` on, and the nodes closest to `key`.
    Get {
        /// Request id.
        rid: u64,
        /// What `key` names.
        kind: Kind,
        /// The key.
        key: [u8; KEY_LEN],
        /// The token the responder gave this address (zeros if none).
        token: [u8; TOKEN_LEN],
        /// Index of the first record wanted.
        offset: u16,
        /// Bytes of the whole datagram (padding included).
        len: usize,
    },
    /// The answer to a GET.
    Reply {
        /// Request id of the GET.
        rid: u64,
        /// Nodes or records were left out to fit.
        truncated: bool,
        /// What `key` names.
        kind: Kind,
        /// The key of the GET.
        key: [u8; KEY_LEN],
        /// A token for the requester's address, to echo in its next requests.
        token: [u8; TOKEN_LEN],
        /// The requester's address as the responder saw it (raw).
        observed: [u8; RAW_ADDR_LEN],
        /// Records the responder stores for the key.
        total: u16,
        /// Nodes close to the key: id and raw address.
        nodes: Vec<([u8; 32], [u8; RAW_ADDR_LEN])>,
        /// Records from the GET's offset on (announce records, a value, or a mutable record).
        records: Vec<&'a [u8]>,
    },
    /// Store an announce record for `topic`.
    Announce {
        /// Request id.
        rid: u64,
        /// The token the storer gave this address.
        token: [u8; TOKEN_LEN],
        /// The topic.
        topic: [u8; KEY_LEN],
        /// The record.
        record: AnnounceRecord,
    },
    /// Store an immutable value.
    Put {
        /// Request id.
        rid: u64,
        /// The token the storer gave this address.
        token: [u8; TOKEN_LEN],
        /// The value (at most [`MAX_VALUE_LEN`] bytes).
        value: &'a [u8],
    },
    /// Store a mutable value.
    PutMutable {
        /// Request id.
        rid: u64,
        /// The token the storer gave this address.
        token: [u8; TOKEN_LEN],
        /// The record.
        record: MutableRecord,
        /// Store only if the stored seq is this one.
        cas: Option<u64>,
    },
    /// Outcome of a put.
    Ack {
        /// Request id of the put.
        rid: u64,
        /// What happened.
        status: Status,
    },
    /// A new announcer of a topic the receiver looked up recently.
    Notify {
        /// The topic.
        topic: [u8; KEY_LEN],
        /// The record.
        record: AnnounceRecord,
    },
}

fn header(out: &mut Vec<u8>, kind: u8, rid: u64) {
    out.push(VERSION);
    out.push(kind);
    out.extend_from_slice(&rid.to_be_bytes());
}

/// GET padded with zeros to `pad_to` bytes (no padding when `pad_to` ≤ [`GET_LEN`]).
#[must_use]
pub fn encode_get(rid: u64, kind: Kind, key: &[u8; 32], token: &[u8; TOKEN_LEN], offset: u16, pad_to: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(pad_to.max(GET_LEN));
    header(&mut out, GET, rid);
    out.push(kind as u8);
    out.extend_from_slice(key);
    out.extend_from_slice(token);
    out.extend_from_slice(&offset.to_be_bytes());
    if pad_to > out.len() {
        out.resize(pad_to, 0);
    }
    out
}

/// The parts of a REPLY before its nodes and records.
pub struct ReplyHead<'a> {
    /// Request id of the GET.
    pub rid: u64,
    /// What the key names.
    pub kind: Kind,
    /// The key.
    pub key: &'a [u8; 32],
    /// Token for the requester.
    pub token: &'a [u8; TOKEN_LEN],
    /// The requester's address (raw).
    pub observed: &'a [u8; RAW_ADDR_LEN],
    /// Records stored for the key.
    pub total: u16,
}

/// A REPLY no larger than `max` bytes, the truncated flag saying something was left out. For a
/// topic the nodes come first (the query needs them to go on; more records are fetched with a
/// GET's offset), then as many whole records as fit; for a value the record comes first, then
/// nodes. `None` when not even the fixed part fits.
#[must_use]
pub fn encode_reply(head: &ReplyHead<'_>, nodes: &[([u8; 32], [u8; RAW_ADDR_LEN])], records: &[&[u8]], max: usize) -> Option<Vec<u8>> {
    if max < REPLY_FIXED {
        return None;
    }
    let mut room = max - REPLY_FIXED;
    let wanted_nodes = nodes.len().min(MAX_NODES);
    let mut nnodes = 0;
    if head.kind == Kind::Topic {
        nnodes = wanted_nodes.min(room / NODE_LEN);
        room -= nnodes * NODE_LEN;
    }
    let mut nrec = 0;
    for r in records.iter().take(255) {
        if 2 + r.len() > room {
            break;
        }
        room -= 2 + r.len();
        nrec += 1;
    }
    if head.kind != Kind::Topic {
        nnodes = wanted_nodes.min(room / NODE_LEN);
        room -= nnodes * NODE_LEN;
    }
    let truncated = nrec < records.len() || nnodes < wanted_nodes;
    let mut out = Vec::with_capacity(max - room);
    header(&mut out, REPLY, head.rid);
    out.push(if truncated { FLAG_TRUNCATED } else { 0 });
    out.push(head.kind as u8);
    out.extend_from_slice(head.key);
    out.extend_from_slice(head.token);
    out.extend_from_slice(head.observed);
    out.extend_from_slice(&head.total.to_be_bytes());
    out.push(nnodes as u8);
    for (id, addr) in &nodes[..nnodes] {
        out.extend_from_slice(id);
        out.extend_from_slice(addr);
    }
    out.push(nrec as u8);
    for r in &records[..nrec] {
        out.extend_from_slice(&(r.len() as u16).to_be_bytes());
        out.extend_from_slice(r);
    }
    Some(out)
}

/// ANNOUNCE.
#[must_use]
pub fn encode_announce(rid: u64, token: &[u8; TOKEN_LEN], topic: &[u8; 32], record: &AnnounceRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(10 + TOKEN_LEN + 32 + super::records::ANNOUNCE_LEN);
    header(&mut out, ANNOUNCE, rid);
    out.extend_from_slice(token);
    out.extend_from_slice(topic);
    record.encode_into(&mut out);
    out
}

/// PUT (the caller keeps `value` ≤ [`MAX_VALUE_LEN`]; a longer one is refused by decoders).
#[must_use]
pub fn encode_put(rid: u64, token: &[u8; TOKEN_LEN], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + TOKEN_LEN + value.len());
    header(&mut out, PUT, rid);
    out.extend_from_slice(token);
    out.extend_from_slice(&(value.len().min(u16::MAX as usize) as u16).to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// PUT_MUTABLE.
#[must_use]
pub fn encode_put_mutable(rid: u64, token: &[u8; TOKEN_LEN], record: &MutableRecord, cas: Option<u64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(19 + TOKEN_LEN + record.encoded_len());
    header(&mut out, PUT_MUTABLE, rid);
    out.extend_from_slice(token);
    record.encode_into(&mut out);
    match cas {
        Some(c) => {
            out.push(1);
            out.extend_from_slice(&c.to_be_bytes());
        }
        None => out.push(0),
    }
    out
}

/// ACK.
#[must_use]
pub fn encode_ack(rid: u64, status: Status) -> Vec<u8> {
    let mut out = Vec::with_capacity(11);
    header(&mut out, ACK, rid);
    out.push(status as u8);
    out
}

/// NOTIFY.
#[must_use]
pub fn encode_notify(topic: &[u8; 32], record: &AnnounceRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + 32 + super::records::ANNOUNCE_LEN);
    out.push(VERSION);
    out.push(NOTIFY);
    out.extend_from_slice(topic);
    record.encode_into(&mut out);
    out
}

impl Message<'_> {
    /// The encoding (a GET padded to its `len`; a REPLY exactly as decoded, flag included).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Message::Get { rid, kind, key, token, offset, len } => encode_get(*rid, *kind, key, token, *offset, *len),
            Message::Reply { rid, truncated, kind, key, token, observed, total, nodes, records } => {
                let mut out = Vec::new();
                header(&mut out, REPLY, *rid);
                out.push(if *truncated { FLAG_TRUNCATED } else { 0 });
                out.push(*kind as u8);
                out.extend_from_slice(key);
                out.extend_from_slice(token);
                out.extend_from_slice(observed);
                out.extend_from_slice(&total.to_be_bytes());
                out.push(nodes.len() as u8);
                for (id, addr) in nodes {
                    out.extend_from_slice(id);
                    out.extend_from_slice(addr);
                }
                out.push(records.len() as u8);
                for r in records {
                    out.extend_from_slice(&(r.len() as u16).to_be_bytes());
                    out.extend_from_slice(r);
                }
                out
            }
            Message::Announce { rid, token, topic, record } => encode_announce(*rid, token, topic, record),
            Message::Put { rid, token, value } => encode_put(*rid, token, value),
            Message::PutMutable { rid, token, record, cas } => encode_put_mutable(*rid, token, record, *cas),
            Message::Ack { rid, status } => encode_ack(*rid, *status),
            Message::Notify { topic, record } => encode_notify(topic, record),
        }
    }
}

/// Decodes one datagram (without the layer tag).
pub fn decode(b: &[u8]) -> Result<Message<'_>, DecodeError> {
    let mut r = Reader(b);
    if r.u8()? != VERSION {
        return Err(DecodeError::Version);
    }
    let ty = r.u8()?;
    if ty == NOTIFY {
        let topic = r.array()?;
        let (record, n) = AnnounceRecord::decode(r.0)?;
        r.take(n)?;
        return end(r, Message::Notify { topic, record });
    }
    if !(GET..=ACK).contains(&ty) {
        return Err(DecodeError::UnknownType);
    }
    let rid = u64::from_be_bytes(r.array()?);
    match ty {
        GET => {
            let kind = Kind::from_u8(r.u8()?).ok_or(DecodeError::UnknownKind)?;
            let key = r.array()?;
            let token = r.array()?;
            let offset = r.u16()?;
            // Padding: any content, ignored.
            Ok(Message::Get { rid, kind, key, token, offset, len: b.len() })
        }
        REPLY => {
            let flags = r.u8()?;
            if flags & !FLAG_TRUNCATED != 0 {
                return Err(DecodeError::UnknownFlags);
            }
            let kind = Kind::from_u8(r.u8()?).ok_or(DecodeError::UnknownKind)?;
            let key = r.array()?;
            let token = r.array()?;
            let observed = r.array()?;
            let total = r.u16()?;
            let nn = r.u8()? as usize;
            if nn > MAX_NODES {
                return Err(DecodeError::TooManyNodes);
            }
            let mut nodes = Vec::with_capacity(nn);
            for _ in 0..nn {
                nodes.push((r.array()?, r.array()?));
            }
            let nr = r.u8()? as usize;
            let mut records = Vec::with_capacity(nr);
            for _ in 0..nr {
                let len = r.u16()? as usize;
                records.push(r.take(len)?);
            }
            end(r, Message::Reply { rid, truncated: flags & FLAG_TRUNCATED != 0, kind, key, token, observed, total, nodes, records })
        }
        ANNOUNCE => {
            let token = r.array()?;
            let topic = r.array()?;
            let (record, n) = AnnounceRecord::decode(r.0)?;
            r.take(n)?;
            end(r, Message::Announce { rid, token, topic, record })
        }
        PUT => {
            let token = r.array()?;
            let len = r.u16()? as usize;
            if len > MAX_VALUE_LEN {
                return Err(DecodeError::TooLarge);
            }
            let value = r.take(len)?;
            end(r, Message::Put { rid, token, value })
        }
        PUT_MUTABLE => {
            let token = r.array()?;
            let (record, n) = MutableRecord::decode(r.0)?;
            r.take(n)?;
            let cas = match r.u8()? {
                0 => None,
                1 => Some(u64::from_be_bytes(r.array()?)),
                _ => return Err(DecodeError::UnknownFlags),
            };
            end(r, Message::PutMutable { rid, token, record, cas })
        }
        _ => {
            let status = Status::from_u8(r.u8()?).ok_or(DecodeError::UnknownStatus)?;
            end(r, Message::Ack { rid, status })
        }
    }
}

fn end<'a>(r: Reader<'_>, m: Message<'a>) -> Result<Message<'a>, DecodeError> {
    if r.0.is_empty() {
        Ok(m)
    } else {
        Err(DecodeError::TrailingBytes)
    }
}
