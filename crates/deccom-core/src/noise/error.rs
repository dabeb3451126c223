//! Errors of the Noise layer, each with a stable `ERR_DECCOM_NOISE_*` code.
//!
//! These are local to [`crate::noise`] (the crate-wide [`crate::Error`] is owned elsewhere); the
//! napi binding passes [`NoiseError::code`] / [`HandshakeError::code`] to JavaScript unchanged.
//! No variant carries key material.

use crate::wire::Truncated;

/// Errors returned by the public methods of [`super::Endpoint`].
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NoiseError {
    /// The identity is a name identity: it cannot sign, so it cannot bind a Noise static key.
    #[error("a name identity cannot use the Noise layer (it cannot sign its static key); use an Ed25519 identity")]
    NameIdentity,

    /// A configuration value is out of range.
    #[error("invalid Noise configuration: {reason}")]
    BadConfig {
        /// Which value is wrong and what is allowed.
        reason: &'static str,
    },

    /// The message is larger than one Noise transport message can carry.
    #[error(
        "message of {len} bytes is too large; at most {max} bytes fit in one datagram message"
    )]
    MessageTooLarge {
        /// Length of the rejected message.
        len: usize,
        /// Largest accepted length.
        max: usize,
    },

    /// A bounded queue (messages waiting for a handshake, or the transmit queue) is full.
    #[error("the {queue} queue is full; drain poll_transmit / wait for the handshake, then retry")]
    QueueFull {
        /// Which queue: `"pending"` or `"transmit"`.
        queue: &'static str,
    },

    /// The underlying Noise implementation refused an operation (should not happen with valid
    /// configuration; reported instead of panicking).
    #[error("Noise primitive failure: {reason}")]
    Crypto {
        /// What failed.
        reason: &'static str,
    },
}

impl NoiseError {
    /// The stable machine-readable code of this error.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            NoiseError::NameIdentity => "ERR_DECCOM_NOISE_NAME_IDENTITY",
            NoiseError::BadConfig { .. } => "ERR_DECCOM_NOISE_CONFIG",
            NoiseError::MessageTooLarge { .. } => "ERR_DECCOM_NOISE_MESSAGE_TOO_LARGE",
            NoiseError::QueueFull { .. } => "ERR_DECCOM_NOISE_QUEUE_FULL",
            NoiseError::Crypto { .. } => "ERR_DECCOM_NOISE_CRYPTO",
        }
    }
}

/// Why a handshake failed (reported in [`super::Event::HandshakeFailed`] and counted in
/// [`super::Stats`]).
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HandshakeError {
    /// No answer after all retransmissions.
    #[error("handshake timed out after all retransmissions")]
    Timeout,
    /// A handshake message did not authenticate (tampered, or keyed for someone else).
    #[error("handshake message failed to decrypt/authenticate")]
    Decrypt,
    /// The identity payload is malformed or has an unknown version.
    #[error("handshake identity payload is malformed")]
    Malformed,
    /// The peer presented a name identity, which cannot sign its static key.
    #[error("peer presented a name identity, which cannot be bound to a Noise static key")]
    NameIdentity,
    /// The claimed node id is not SHA-256 of the presented identity.
    #[error("claimed node id is not SHA-256 of the presented identity")]
    IdMismatch,
    /// The Ed25519 signature does not cover the Noise static key used in the handshake.
    #[error("identity signature does not cover the peer's Noise static key")]
    BadSignature,
    /// The peer authenticated an identity other than the one the dial expected
    /// ([`super::Endpoint::expect_identity`]). The session is never created and nothing queued
    /// for the peer is sent.
    #[error("the peer authenticated a different identity than the one expected at this address")]
    IdentityMismatch,
}

impl HandshakeError {
    /// The stable machine-readable code of this failure.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            HandshakeError::Timeout => "ERR_DECCOM_NOISE_HANDSHAKE_TIMEOUT",
            HandshakeError::Decrypt => "ERR_DECCOM_NOISE_HANDSHAKE_DECRYPT",
            HandshakeError::Malformed => "ERR_DECCOM_NOISE_HANDSHAKE_MALFORMED",
            HandshakeError::NameIdentity => "ERR_DECCOM_NOISE_HANDSHAKE_NAME_IDENTITY",
            HandshakeError::IdMismatch => "ERR_DECCOM_NOISE_HANDSHAKE_ID_MISMATCH",
            HandshakeError::BadSignature => "ERR_DECCOM_NOISE_HANDSHAKE_BAD_SIGNATURE",
            HandshakeError::IdentityMismatch => "ERR_DECCOM_PEER_IDENTITY_MISMATCH",
        }
    }
}

/// Why a datagram could not be decoded (see the wire table in the module docs).
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// The datagram is empty.
    #[error("empty datagram")]
    Empty,
    /// The datagram ends inside a field.
    #[error("datagram truncated: needed {needed} bytes, {remaining} remain")]
    Truncated {
        /// Bytes the next field needs.
        needed: usize,
        /// Bytes left.
        remaining: usize,
    },
    /// The type byte is not one of ours.
    #[error("unknown datagram type {0:#04x}")]
    UnknownType(u8),
    /// A handshake initiation with a protocol version we do not speak.
    #[error("unsupported Noise protocol version {0}")]
    UnsupportedVersion(u8),
    /// A handshake initiation names an unknown pattern.
    #[error("unknown handshake pattern {0}")]
    UnknownPattern(u8),
    /// A flag byte has a value other than 0 or 1.
    #[error("invalid flag byte {0}")]
    BadFlag(u8),
    /// A variable-length part is shorter than its minimum.
    #[error("{0} is too short")]
    TooShort(&'static str),
    /// A variable-length part is longer than its maximum.
    #[error("{0} is too long")]
    TooLong(&'static str),
}

impl WireError {
    /// The stable machine-readable code of this error.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            WireError::Empty | WireError::Truncated { .. } | WireError::TooShort(_) => {
                "ERR_DECCOM_NOISE_TRUNCATED"
            }
            WireError::UnsupportedVersion(_) => "ERR_DECCOM_NOISE_VERSION",
            WireError::UnknownType(_)
            | WireError::UnknownPattern(_)
            | WireError::BadFlag(_)
            | WireError::TooLong(_) => "ERR_DECCOM_NOISE_MALFORMED",
        }
    }
}

impl From<Truncated> for WireError {
    fn from(t: Truncated) -> Self {
        WireError::Truncated {
            needed: t.needed,
            remaining: t.remaining,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_and_prefixed() {
        let all = [
            NoiseError::NameIdentity.code(),
            NoiseError::BadConfig { reason: "x" }.code(),
            NoiseError::MessageTooLarge { len: 1, max: 0 }.code(),
            NoiseError::QueueFull { queue: "pending" }.code(),
            NoiseError::Crypto { reason: "x" }.code(),
            HandshakeError::Timeout.code(),
            HandshakeError::BadSignature.code(),
            WireError::Empty.code(),
            WireError::UnknownType(9).code(),
        ];
        for code in all {
            assert!(code.starts_with("ERR_DECCOM_NOISE_"), "{code}");
        }
        assert_eq!(
            NoiseError::NameIdentity.code(),
            "ERR_DECCOM_NOISE_NAME_IDENTITY"
        );
    }
}
