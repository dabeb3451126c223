//! The signed records of the DHT: topic announcements and mutable values.
//!
//! An announce record says "the node with this identity is at this address for this topic"; its
//! signature covers the topic, the address, a sequence number and the TTL, so it cannot be replayed
//! for another topic or address, and a record with a lower sequence number never replaces a newer
//! one. A TTL of 0 withdraws the announcement. A mutable value is signed BEP 44-style over the salt,
//! the sequence number and the value; its key is SHA-256(public key || salt).

use super::{mutable_key, MAX_SALT_LEN, MAX_VALUE_LEN};
use crate::identity::{node_id, verify_remembered, KIND_ED25519};
use crate::wire::RAW_ADDR_LEN;
use crate::NodeId;

/// Domain separation of announce signatures.
pub const ANNOUNCE_CONTEXT: &[u8] = b"deccom-dht-announce-v1";
/// Domain separation of mutable value signatures.
pub const MUTABLE_CONTEXT: &[u8] = b"deccom-dht-mutable-v1";
/// Bytes of an encoded announce record.
pub const ANNOUNCE_LEN: usize = 1 + 33 + RAW_ADDR_LEN + 8 + 4 + 64;

/// Why a record does not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// The bytes end before the record does.
    Truncated,
    /// The identity is not an Ed25519 public identity.
    BadIdentity,
    /// The salt is longer than [`MAX_SALT_LEN`].
    SaltTooLong,
    /// The value is longer than [`MAX_VALUE_LEN`].
    ValueTooLarge,
}

/// A topic announcement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnounceRecord {
    /// The announcer's encoded public identity (kind 0x01 + 32-byte Ed25519 key).
    pub identity: [u8; 33],
    /// The raw address (`docs/wire.md#address-encodings`) the announcer is reachable at.
    pub addr: [u8; RAW_ADDR_LEN],
    /// Sequence number (the announcer's clock in ms is a good one); higher replaces lower.
    pub seq: u64,
    /// Seconds the record may be stored; 0 withdraws it.
    pub ttl: u32,
    /// Ed25519 signature of [`AnnounceRecord::message`].
    pub signature: [u8; 64],
}

impl AnnounceRecord {
    /// The bytes an announcer signs: context || topic || addr || seq || ttl.
    #[must_use]
    pub fn message(topic: &[u8; 32], addr: &[u8; RAW_ADDR_LEN], seq: u64, ttl: u32) -> Vec<u8> {
        let mut m = Vec::with_capacity(ANNOUNCE_CONTEXT.len() + 32 + RAW_ADDR_LEN + 12);
        m.extend_from_slice(ANNOUNCE_CONTEXT);
        m.extend_from_slice(topic);
        m.extend_from_slice(addr);
        m.extend_from_slice(&seq.to_be_bytes());
        m.extend_from_slice(&ttl.to_be_bytes());
        m
    }

    /// The announcer's node id.
    #[must_use]
    pub fn node_id(&self) -> NodeId {
        node_id(&self.identity)
    }

    /// The announcer's Ed25519 key.
    #[must_use]
    pub fn public_key(&self) -> &[u8] {
        &self.identity[1..]
    }

    /// True when the signature verifies for `topic`.
    #[must_use]
    pub fn verify(&self, topic: &[u8; 32]) -> bool {
        let m = Self::message(topic, &self.addr, self.seq, self.ttl);
        verify_remembered(self.public_key(), &m, &self.signature)
    }

    /// Appends the encoding: u8 33, identity, addr, seq u64, ttl u32, signature.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(33);
        out.extend_from_slice(&self.identity);
        out.extend_from_slice(&self.addr);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.ttl.to_be_bytes());
        out.extend_from_slice(&self.signature);
    }

    /// Decodes a record from the start of `b`; returns it and the bytes it took.
    pub fn decode(b: &[u8]) -> Result<(AnnounceRecord, usize), RecordError> {
        if b.len() < ANNOUNCE_LEN {
            return Err(RecordError::Truncated);
        }
        if b[0] != 33 || b[1] != KIND_ED25519 {
            return Err(RecordError::BadIdentity);
        }
        let mut r = Reader(&b[1..]);
        let rec = AnnounceRecord {
            identity: r.array()?,
            addr: r.array()?,
            seq: u64::from_be_bytes(r.array()?),
            ttl: u32::from_be_bytes(r.array()?),
            signature: r.array()?,
        };
        Ok((rec, ANNOUNCE_LEN))
    }
}

/// A signed mutable value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MutableRecord {
    /// The owner's Ed25519 public key.
    pub public_key: [u8; 32],
    /// Up to [`MAX_SALT_LEN`] bytes: one key can own several values.
    pub salt: Vec<u8>,
    /// Sequence number: higher replaces lower.
    pub seq: u64,
    /// Up to [`MAX_VALUE_LEN`] bytes.
    pub value: Vec<u8>,
    /// Ed25519 signature of [`MutableRecord::message`].
    pub signature: [u8; 64],
}

impl MutableRecord {
    /// The bytes an owner signs: context || u8 salt length || salt || seq u64 || value.
    #[must_use]
    pub fn message(salt: &[u8], seq: u64, value: &[u8]) -> Vec<u8> {
        let mut m = Vec::with_capacity(MUTABLE_CONTEXT.len() + 1 + salt.len() + 8 + value.len());
        m.extend_from_slice(MUTABLE_CONTEXT);
        m.push(salt.len().min(255) as u8);
        m.extend_from_slice(salt);
        m.extend_from_slice(&seq.to_be_bytes());
        m.extend_from_slice(value);
        m
    }

    /// SHA-256(public key || salt).
    #[must_use]
    pub fn key(&self) -> [u8; 32] {
        mutable_key(&self.public_key, &self.salt)
    }

    /// True when the signature verifies.
    #[must_use]
    pub fn verify(&self) -> bool {
        let m = Self::message(&self.salt, self.seq, &self.value);
        verify_remembered(&self.public_key, &m, &self.signature)
    }

    /// Bytes of the encoding.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        32 + 1 + self.salt.len() + 8 + 2 + self.value.len() + 64
    }

    /// Appends the encoding: key, u8 salt length, salt, seq u64, u16 value length, value, signature.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.public_key);
        out.push(self.salt.len() as u8);
        out.extend_from_slice(&self.salt);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&(self.value.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.value);
        out.extend_from_slice(&self.signature);
    }

    /// Decodes a record from the start of `b`; returns it and the bytes it took.
    pub fn decode(b: &[u8]) -> Result<(MutableRecord, usize), RecordError> {
        let mut r = Reader(b);
        let public_key = r.array()?;
        let salt_len = r.array::<1>()?[0] as usize;
        if salt_len > MAX_SALT_LEN {
            return Err(RecordError::SaltTooLong);
        }
        let salt = r.take(salt_len)?.to_vec();
        let seq = u64::from_be_bytes(r.array()?);
        let value_len = u16::from_be_bytes(r.array()?) as usize;
        if value_len > MAX_VALUE_LEN {
            return Err(RecordError::ValueTooLarge);
        }
        let value = r.take(value_len)?.to_vec();
        let signature = r.array()?;
        let rec = MutableRecord { public_key, salt, seq, value, signature };
        let n = rec.encoded_len();
        Ok((rec, n))
    }
}

/// A cursor over untrusted bytes.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.0.len() < n {
            return Err(RecordError::Truncated);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        Ok(self.take(N)?.try_into().expect("length checked"))
    }

    pub(crate) fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, RecordError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
}
