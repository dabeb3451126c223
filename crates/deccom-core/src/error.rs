//! The one error type of `deccom-core`.
//!
//! Every variant carries a stable machine-readable code ([`Error::code`], `ERR_DECCOM_...`) that the
//! napi binding passes through to JavaScript unchanged. Codes never change meaning once published;
//! new failure kinds get new variants (the enum is `#[non_exhaustive]`).
//!
//! Messages are actionable sentences meant for humans. No variant ever carries key material, so
//! `Debug` and `Display` are safe to log.

/// Everything that can go wrong in `deccom-core`.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A public or secret key has the wrong length or is not a valid key.
    #[error("invalid key: {reason}; pass a 32-byte Ed25519 key")]
    BadKey {
        /// What is wrong with the key.
        reason: &'static str,
    },

    /// Signature bytes are malformed (not 64 bytes long).
    #[error("malformed signature: {reason}; an Ed25519 signature is exactly 64 bytes")]
    BadSignature {
        /// What is wrong with the signature.
        reason: &'static str,
    },

    /// The identity has no secret key (it is a name identity), so it cannot sign or be saved.
    #[error("this identity has no secret key (it is a name identity); use an Ed25519 identity to sign or save keys")]
    NoSecretKey,

    /// The contents of a key file are malformed.
    #[error("malformed key file: {reason}; expected the line `deccom-ed25519-v1` followed by a line of 64 hex digits")]
    KeyFile {
        /// What is wrong with the key file.
        reason: &'static str,
    },

    /// A public identity (its encoding, or a name) is invalid.
    #[error("invalid public identity: {reason}")]
    BadIdentity {
        /// What is wrong with the identity.
        reason: &'static str,
    },

    /// The operating system's random number generator failed.
    #[error(
        "the operating system's random number generator failed; retry, or load a saved key instead"
    )]
    Rng,

    /// An encoded peer record ends before all of its fields were read.
    #[error("peer record truncated: needed {needed} more bytes but only {remaining} remain; the datagram was cut short or is not a peer record")]
    RecordTruncated {
        /// Bytes the next field needs.
        needed: usize,
        /// Bytes that were left in the input.
        remaining: usize,
    },

    /// An encoded peer record has a version this implementation does not understand.
    #[error("peer record has unsupported version {version}; this implementation understands version 1 only, upgrade the node that sent it or this one")]
    RecordVersion {
        /// The version byte found.
        version: u8,
    },

    /// An encoded peer record is structurally invalid.
    #[error("malformed peer record: {reason}")]
    RecordMalformed {
        /// What is wrong with the record.
        reason: &'static str,
    },

    /// A peer record's id is not the SHA-256 of its public identity.
    #[error("peer record id does not match SHA-256 of its public identity; the record is corrupt or forged, drop it")]
    RecordIdMismatch,

    /// A length field in a peer record declares more bytes than the format allows.
    #[error("peer record field too large: {len} bytes declared, at most {max} allowed")]
    RecordTooLarge {
        /// Declared length.
        len: usize,
        /// Largest length the format allows.
        max: usize,
    },
}

impl Error {
    /// The stable error code, e.g. `"ERR_DECCOM_BAD_KEY"`, shared with the JavaScript side.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Error::BadKey { .. } => "ERR_DECCOM_BAD_KEY",
            Error::BadSignature { .. } => "ERR_DECCOM_BAD_SIGNATURE",
            Error::NoSecretKey => "ERR_DECCOM_NO_SECRET_KEY",
            Error::KeyFile { .. } => "ERR_DECCOM_KEY_FILE",
            Error::BadIdentity { .. } => "ERR_DECCOM_BAD_IDENTITY",
            Error::Rng => "ERR_DECCOM_RNG",
            Error::RecordTruncated { .. } => "ERR_DECCOM_RECORD_TRUNCATED",
            Error::RecordVersion { .. } => "ERR_DECCOM_RECORD_VERSION",
            Error::RecordMalformed { .. } => "ERR_DECCOM_RECORD_MALFORMED",
            Error::RecordIdMismatch => "ERR_DECCOM_RECORD_ID_MISMATCH",
            Error::RecordTooLarge { .. } => "ERR_DECCOM_RECORD_TOO_LARGE",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_and_prefixed() {
        let all = [
            (Error::BadKey { reason: "x" }, "ERR_DECCOM_BAD_KEY"),
            (
                Error::BadSignature { reason: "x" },
                "ERR_DECCOM_BAD_SIGNATURE",
            ),
            (Error::NoSecretKey, "ERR_DECCOM_NO_SECRET_KEY"),
            (Error::KeyFile { reason: "x" }, "ERR_DECCOM_KEY_FILE"),
            (
                Error::BadIdentity { reason: "x" },
                "ERR_DECCOM_BAD_IDENTITY",
            ),
            (Error::Rng, "ERR_DECCOM_RNG"),
            (
                Error::RecordTruncated {
                    needed: 1,
                    remaining: 0,
                },
                "ERR_DECCOM_RECORD_TRUNCATED",
            ),
            (
                Error::RecordVersion { version: 9 },
                "ERR_DECCOM_RECORD_VERSION",
            ),
            (
                Error::RecordMalformed { reason: "x" },
                "ERR_DECCOM_RECORD_MALFORMED",
            ),
            (Error::RecordIdMismatch, "ERR_DECCOM_RECORD_ID_MISMATCH"),
            (
                Error::RecordTooLarge { len: 2, max: 1 },
                "ERR_DECCOM_RECORD_TOO_LARGE",
            ),
        ];
        for (err, code) in all {
            assert_eq!(err.code(), code);
            assert!(!err.to_string().is_empty());
        }
    }
}
