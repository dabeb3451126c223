//! DHT storage, sans-IO: topic announcements, immutable and signed mutable values
//! (`docs/wire.md#dht-tag-13`).
//!
//! - [`records`]: the signed records (announce, mutable value) and their checks.
//! - [`wire`]: the datagram codec (GET, REPLY, ANNOUNCE, PUT, PUT_MUTABLE, ACK, NOTIFY); decoding
//!   never panics and returns an error for anything that does not parse.
//! - [`store`]: what a node stores for others, bounded in total, per topic and per source, with
//!   expiry, and put rate limits per source.
//! - [`server`]: the answering side as one call per datagram: address tokens (a keyed hash with a
//!   rotating secret), the store, the recent lookers of a topic who are told of new announcers.
//!
//! Nothing here reads a clock or draws randomness: `now` (ms) and new secrets come from the caller.
//! The iterative query toward a key reuses [`crate::kad::lookup`].

pub mod records;
pub mod server;
pub mod store;
pub mod wire;

/// Largest value (immutable or mutable) in bytes, as BEP 44.
pub const MAX_VALUE_LEN: usize = 1000;
/// Largest salt of a mutable value in bytes, as BEP 44.
pub const MAX_SALT_LEN: usize = 64;
/// Bytes of an address token.
pub const TOKEN_LEN: usize = 16;
/// Bytes of a key (a topic, SHA-256 of an immutable value, SHA-256(public key || salt)).
pub const KEY_LEN: usize = 32;
/// Largest reply to a request that carries a valid token (a verified address).
pub const MAX_REPLY: usize = 1400;
/// Node entries (id + raw address) at most in one reply.
pub const MAX_NODES: usize = 20;

/// The kind of records a key names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Announce records of a topic.
    Topic = 1,
    /// An immutable value (key = SHA-256(value)).
    Immutable = 2,
    /// A signed mutable value (key = SHA-256(public key || salt)).
    Mutable = 3,
}

impl Kind {
    /// The kind of a wire byte.
    #[must_use]
    pub fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Topic),
            2 => Some(Kind::Immutable),
            3 => Some(Kind::Mutable),
            _ => None,
        }
    }
}

/// Outcome of a put, sent back in ACK (its wire value is the discriminant).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// Stored (or withdrawn, for an announce with ttl 0).
    Ok = 0,
    /// The request carried no valid token for its source address.
    BadToken = 1,
    /// The signature does not verify (or the identity cannot sign).
    BadSignature = 2,
    /// A record with a higher (or the same) sequence number is stored.
    LowerSeq = 3,
    /// The compare-and-swap sequence number does not match the stored one.
    CasMismatch = 4,
    /// The value is larger than [`MAX_VALUE_LEN`].
    TooLarge = 5,
    /// A storage bound (total, per topic, per source) is reached.
    Full = 6,
    /// The source is over its put rate.
    RateLimited = 7,
    /// The signed address of an announce is not the address it came from.
    AddressMismatch = 8,
}

impl Status {
    /// The status of a wire byte.
    #[must_use]
    pub fn from_u8(b: u8) -> Option<Status> {
        Some(match b {
            0 => Status::Ok,
            1 => Status::BadToken,
            2 => Status::BadSignature,
            3 => Status::LowerSeq,
            4 => Status::CasMismatch,
            5 => Status::TooLarge,
            6 => Status::Full,
            7 => Status::RateLimited,
            8 => Status::AddressMismatch,
            _ => return None,
        })
    }

    /// A short name for counters (`refused_<name>`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::BadToken => "bad_token",
            Status::BadSignature => "bad_signature",
            Status::LowerSeq => "lower_seq",
            Status::CasMismatch => "cas_mismatch",
            Status::TooLarge => "too_large",
            Status::Full => "full",
            Status::RateLimited => "rate_limited",
            Status::AddressMismatch => "address_mismatch",
        }
    }
}

/// SHA-256 of `parts` concatenated.
#[must_use]
pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// The key of a mutable value: SHA-256(public key || salt).
#[must_use]
pub fn mutable_key(public_key: &[u8; 32], salt: &[u8]) -> [u8; 32] {
    sha256(&[public_key, salt])
}

/// The key of an immutable value: SHA-256(value).
#[must_use]
pub fn immutable_key(value: &[u8]) -> [u8; 32] {
    sha256(&[value])
}
