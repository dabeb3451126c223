//! Peer records as the node keeps them: encoded once (a NODES answer copies the bytes; the table
//! reads nothing else), inside the entry when they fit.

use std::net::SocketAddr;

use crate::identity::NodeId;
use crate::wire::peer_record::PeerRecord;

/// Encoded records up to this size (an Ed25519 identity with an IPv4 address, a TCP port and an
/// IPv4 external address takes 85 bytes) are kept inline; larger ones on the heap. At 86 a table
/// entry (id, handle, record) takes 128 bytes (at 88 it took 136).
const INLINE_RECORD: usize = 86;

thread_local! {
    /// Where [`Encoded::new`] encodes (reused: a record encoded allocates only when it is long).
    static ENCODE: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(PeerRecord::MAX_ENCODED_LEN));
}

/// A record's encoding.
#[derive(Clone)]
pub enum Encoded {
    /// Short records, in place.
    Inline {
        /// Bytes used of `bytes`.
        len: u8,
        /// The encoding, zero-padded.
        bytes: [u8; INLINE_RECORD],
    },
    /// Longer records (long identities, IPv6 addresses).
    Heap(Box<[u8]>),
}

impl Encoded {
    /// The encoding of `record`.
    #[must_use]
    pub fn new(record: &PeerRecord) -> Encoded {
        ENCODE.with_borrow_mut(|v| {
            v.clear();
            record.encode_into(v);
            Encoded::from_bytes(v)
        })
    }

    /// A record already encoded (and validated).
    #[must_use]
    pub fn from_bytes(v: &[u8]) -> Encoded {
        if v.len() <= INLINE_RECORD {
            let mut bytes = [0u8; INLINE_RECORD];
            bytes[..v.len()].copy_from_slice(v);
            Encoded::Inline { len: v.len() as u8, bytes }
        } else {
            Encoded::Heap(v.into())
        }
    }

    /// The encoded bytes.
    #[must_use]
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Encoded::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Encoded::Heap(b) => b,
        }
    }

    /// The record's id (the bytes hold a record: they were encoded or validated here).
    #[must_use]
    pub fn id(&self) -> NodeId {
        self.as_slice()[2..34].try_into().expect("a record holds its id")
    }

    /// The record's UDP address and external address, if readable.
    #[must_use]
    pub fn addrs(&self) -> Option<(SocketAddr, Option<SocketAddr>)> {
        PeerRecord::layout_of(self.as_slice()).map(|l| (l.udp, l.external))
    }
}

/// A peer in the table: the handle the node gave it (what its events and the caller name it by)
/// and its record.
#[derive(Clone)]
pub struct Slot {
    /// The node's handle of this entry.
    pub handle: u32,
    /// The record served in NODES answers.
    pub encoded: Encoded,
}
