//! Node identities, node ids, signatures and the key file format.
//! Encodings specified in `docs/wire.md#public-identity`.
//!
//! A node is identified either by an **Ed25519 key pair** or, for tests and small known groups, by a
//! plain **name** (which cannot sign). Its [`NodeId`] is the SHA-256 of its *encoded public
//! identity*.
//!
//! # Public identity encoding
//!
//! This is what is hashed into the node id and what a peer record carries:
//!
//! | byte(s)  | Ed25519 (33 bytes)        | name (2..=256 bytes)           |
//! |----------|---------------------------|--------------------------------|
//! | 0        | kind `0x01`               | kind `0x02`                    |
//! | 1..      | 32-byte Ed25519 public key | 1..=255 bytes of UTF-8 name   |
//!
//! Decoding ([`PublicIdentity::decode`]) is exact: the whole input must be one identity, an
//! Ed25519 key must be a valid curve point, and a name must be valid UTF-8 of 1..=255 bytes.
//!
//! # Key file format
//!
//! [`Identity::to_key_file`] writes, and [`Identity::from_key_file`] reads, a two-line text file:
//!
//! ```text
//! deccom-ed25519-v1
//! <64 lowercase hex digits: the 32-byte Ed25519 seed>
//! ```
//!
//! Reading tolerates CRLF line ends, trailing whitespace on each line and trailing blank lines, and
//! upper-case hex; anything else is rejected with `ERR_DECCOM_KEY_FILE`. Writing the file (with mode
//! `0600`) is the caller's job: this crate does no I/O.
//!
//! # Secrets
//!
//! Secret keys live in [`ed25519_dalek::SigningKey`], which is zeroized on drop, and in AWS-LC's
//! Ed25519 key used for signing (freed through `OPENSSL_free`, which clears the memory);
//! temporary seed buffers are zeroized too. `Debug` of an [`Identity`] prints only its kind and a short id.

use core::fmt;

use std::sync::{Arc, OnceLock};

use aws_lc_rs::signature::Ed25519KeyPair;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::Error;

mod checked;
pub(crate) mod seeded;
mod verify;
pub use verify::{verify, verify_remembered};

/// A node id: SHA-256 of the node's encoded public identity.
pub type NodeId = [u8; 32];

/// Kind byte of an Ed25519 public identity.
pub const KIND_ED25519: u8 = 0x01;
/// Kind byte of a name public identity.
pub const KIND_NAME: u8 = 0x02;
/// Longest name, in bytes, of a name identity.
pub const MAX_NAME_LEN: usize = 255;
/// Longest encoded public identity, in bytes (kind byte + longest name).
pub const MAX_PUBLIC_IDENTITY_LEN: usize = 1 + MAX_NAME_LEN;

const KEY_FILE_HEADER: &str = "deccom-ed25519-v1";

/// Computes the node id of an encoded public identity: its SHA-256.
///
/// The input is not validated; pass the output of [`PublicIdentity::encode`].
#[must_use]
pub fn node_id(public_identity: &[u8]) -> NodeId {
    Sha256::digest(public_identity).into()
}

/// The public half of an identity: what other nodes see and what the node id is computed from.
///
/// Construct `Name` only with 1..=255 bytes of UTF-8 (as [`Identity::from_name`] does); other
/// contents encode to bytes that [`PublicIdentity::decode`] rejects.
///
/// `Debug` prints the key in hex and the name as (lossy) text.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum PublicIdentity {
    /// An Ed25519 public key.
    Ed25519([u8; 32]),
    /// A plain name (UTF-8, 1..=255 bytes). Name identities cannot sign.
    Name(Vec<u8>),
}

impl fmt::Debug for PublicIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublicIdentity::Ed25519(key) => {
                let mut hex = String::with_capacity(64);
                push_hex(&mut hex, key);
                f.debug_tuple("Ed25519")
                    .field(&format_args!("{hex}"))
                    .finish()
            }
            PublicIdentity::Name(name) => f
                .debug_tuple("Name")
                .field(&String::from_utf8_lossy(name))
                .finish(),
        }
    }
}

impl PublicIdentity {
    /// Length of this identity's encoding in bytes.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        match self {
            PublicIdentity::Ed25519(_) => 33,
            PublicIdentity::Name(name) => 1 + name.len(),
        }
    }

    /// Encodes this identity (see the module docs for the layout).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// Appends this identity's encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            PublicIdentity::Ed25519(key) => {
                out.push(KIND_ED25519);
                out.extend_from_slice(key);
            }
            PublicIdentity::Name(name) => {
                debug_assert!(
                    (1..=MAX_NAME_LEN).contains(&name.len()),
                    "name identity must be 1..=255 bytes"
                );
                out.push(KIND_NAME);
                out.extend_from_slice(name);
            }
        }
    }

    /// Decodes an identity that fills all of `bytes`.
    ///
    /// # Errors
    ///
    /// [`Error::BadIdentity`] if the input is empty, has an unknown kind byte, has the wrong length
    /// for its kind, or holds a name that is not UTF-8; [`Error::BadKey`] if an Ed25519 key is not
    /// a valid curve point.
    pub fn decode(bytes: &[u8]) -> Result<PublicIdentity, Error> {
        decode_public_identity(bytes).map_err(|e| match e {
            IdentityDecodeError::BadKey(reason) => Error::BadKey { reason },
            IdentityDecodeError::Malformed(reason) => Error::BadIdentity { reason },
        })
    }

    /// The node id of this identity: SHA-256 of [`PublicIdentity::encode`].
    #[must_use]
    pub fn id(&self) -> NodeId {
        let mut hasher = Sha256::new();
        match self {
            PublicIdentity::Ed25519(key) => {
                hasher.update([KIND_ED25519]);
                hasher.update(key);
            }
            PublicIdentity::Name(name) => {
                hasher.update([KIND_NAME]);
                hasher.update(name);
            }
        }
        hasher.finalize().into()
    }

    /// The Ed25519 public key, if this is an Ed25519 identity.
    #[must_use]
    pub fn ed25519_key(&self) -> Option<&[u8; 32]> {
        match self {
            PublicIdentity::Ed25519(key) => Some(key),
            PublicIdentity::Name(_) => None,
        }
    }
}

/// Why an encoded identity was rejected; mapped to [`Error`] by each caller (identity or record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdentityDecodeError {
    BadKey(&'static str),
    Malformed(&'static str),
}

impl IdentityDecodeError {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            IdentityDecodeError::BadKey(r) | IdentityDecodeError::Malformed(r) => r,
        }
    }
}

/// Checks an Ed25519 key (a valid curve point) and returns the node id of its identity; a key found
/// valid before is answered from a bounded memo (see `checked.rs`) without checking it again.
fn checked_ed25519(key: &[u8; 32]) -> Result<NodeId, IdentityDecodeError> {
    if let Some(id) = checked::lookup(key) {
        return Ok(id);
    }
    VerifyingKey::from_bytes(key).map_err(|_| {
        IdentityDecodeError::BadKey("Ed25519 public key is not a valid curve point")
    })?;
    let id = PublicIdentity::Ed25519(*key).id();
    checked::remember(*key, id);
    Ok(id)
}

/// Decodes an identity that fills all of `bytes` and returns it with its node id (for an Ed25519
/// key found valid before, both come from the memo: no curve check, no hash).
pub(crate) fn decode_public_identity_with_id(
    bytes: &[u8],
) -> Result<(PublicIdentity, NodeId), IdentityDecodeError> {
    if let [KIND_ED25519, rest @ ..] = bytes {
        if let Ok(key) = <[u8; 32]>::try_from(rest) {
            let id = checked_ed25519(&key)?;
            return Ok((PublicIdentity::Ed25519(key), id));
        }
    }
    let identity = decode_public_identity(bytes)?;
    let id = identity.id();
    Ok((identity, id))
}

pub(crate) fn decode_public_identity(bytes: &[u8]) -> Result<PublicIdentity, IdentityDecodeError> {
    let (&kind, rest) = bytes
        .split_first()
        .ok_or(IdentityDecodeError::Malformed("public identity is empty"))?;
    match kind {
        KIND_ED25519 => {
            let key: [u8; 32] = rest.try_into().map_err(|_| {
                IdentityDecodeError::Malformed(
                    "Ed25519 identity must be 1 kind byte + 32 key bytes",
                )
            })?;
            checked_ed25519(&key)?;
            Ok(PublicIdentity::Ed25519(key))
        }
        KIND_NAME => {
            check_name(rest).map_err(IdentityDecodeError::Malformed)?;
            Ok(PublicIdentity::Name(rest.to_vec()))
        }
        _ => Err(IdentityDecodeError::Malformed(
            "unknown public identity kind (expected 0x01 Ed25519 or 0x02 name)",
        )),
    }
}

fn check_name(name: &[u8]) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("name identity is empty; use 1 to 255 bytes");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("name identity is longer than 255 bytes");
    }
    if core::str::from_utf8(name).is_err() {
        return Err("name identity is not valid UTF-8");
    }
    Ok(())
}

#[derive(Clone)]
enum Secret {
    /// The dalek key gives the public key and the seed; AWS-LC signs (about twice as fast as
    /// ed25519-dalek's signing on x86-64, and byte-identical: Ed25519 signatures are
    /// deterministic, RFC 8032). AWS-LC's key pair is made at the first signature (shared by the
    /// identity's clones): deriving it costs as much as the identity itself, and many identities
    /// (a simulation's nodes without a secure channel) never sign. `None` in it only if AWS-LC
    /// refused the seed, which it does not for 32 bytes; dalek signs then.
    Ed25519(Box<SigningKey>, Arc<OnceLock<Option<Ed25519KeyPair>>>),
    Name(String),
}

/// A node's own identity: an Ed25519 key pair, or a plain name (for tests; cannot sign).
///
/// `Debug` prints only the kind and a short hex prefix of the id, never key material.
#[derive(Clone)]
pub struct Identity {
    secret: Secret,
    id: NodeId,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.secret {
            Secret::Ed25519(..) => "ed25519",
            Secret::Name(_) => "name",
        };
        f.debug_struct("Identity")
            .field("kind", &kind)
            .field("id", &ShortHex(&self.id))
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Generates a fresh Ed25519 identity from the operating system's random number generator.
    ///
    /// This is the only impure function of the crate.
    ///
    /// # Panics
    ///
    /// If the operating system's random number generator fails; use [`Identity::try_generate`] to
    /// get an error instead.
    #[must_use]
    pub fn generate() -> Identity {
        match Identity::try_generate() {
            Ok(identity) => identity,
            Err(_) => panic!("the operating system's random number generator failed"),
        }
    }

    /// Generates a fresh Ed25519 identity, reporting a failing OS random number generator.
    ///
    /// # Errors
    ///
    /// [`Error::Rng`] if the operating system's random number generator fails.
    pub fn try_generate() -> Result<Identity, Error> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|_| Error::Rng)?;
        Ok(Identity::from_seed(&seed))
    }

    /// Builds the Ed25519 identity whose secret key is `seed` (deterministic).
    #[must_use]
    pub fn from_seed(seed: &[u8; 32]) -> Identity {
        Identity::from_signing_key(SigningKey::from_bytes(seed))
    }

    /// Builds an Ed25519 identity from a 32-byte secret key (seed) given as a slice.
    ///
    /// # Errors
    ///
    /// [`Error::BadKey`] if `bytes` is not exactly 32 bytes long.
    pub fn from_secret_key_bytes(bytes: &[u8]) -> Result<Identity, Error> {
        let seed: &[u8; 32] = bytes.try_into().map_err(|_| Error::BadKey {
            reason: "secret key must be exactly 32 bytes",
        })?;
        Ok(Identity::from_seed(seed))
    }

    /// Builds a name identity (for tests and small known groups); it cannot sign.
    ///
    /// # Errors
    ///
    /// [`Error::BadIdentity`] if `name` is empty or longer than 255 bytes.
    pub fn from_name(name: &str) -> Result<Identity, Error> {
        check_name(name.as_bytes()).map_err(|reason| Error::BadIdentity { reason })?;
        let id = PublicIdentity::Name(name.as_bytes().to_vec()).id();
        Ok(Identity {
            secret: Secret::Name(name.to_owned()),
            id,
        })
    }

    fn from_signing_key(key: SigningKey) -> Identity {
        let public = key.verifying_key().to_bytes();
        let id = PublicIdentity::Ed25519(public).id();
        // A key derived from a secret is a valid point: remembered as checked, so this thread
        // reads it in records (its own, encoded at start; a simulation's nodes') without the
        // curve check.
        checked::remember(public, id);
        Identity {
            secret: Secret::Ed25519(Box::new(key), Arc::new(OnceLock::new())),
            id,
        }
    }

    /// The public half of this identity.
    #[must_use]
    pub fn public_identity(&self) -> PublicIdentity {
        match &self.secret {
            Secret::Ed25519(key, _) => PublicIdentity::Ed25519(key.verifying_key().to_bytes()),
            Secret::Name(name) => PublicIdentity::Name(name.as_bytes().to_vec()),
        }
    }

    /// The encoded public identity (see the module docs); its SHA-256 is [`Identity::id`].
    #[must_use]
    pub fn public_identity_bytes(&self) -> Vec<u8> {
        self.public_identity().encode()
    }

    /// This node's id: SHA-256 of [`Identity::public_identity_bytes`].
    #[must_use]
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Whether this identity is an Ed25519 key pair (and so can sign).
    #[must_use]
    pub fn is_keypair(&self) -> bool {
        matches!(self.secret, Secret::Ed25519(..))
    }

    /// The 32-byte secret seed, for saving; `None` for a name identity.
    ///
    /// The caller owns the copy and should zeroize it when done.
    #[must_use]
    pub fn secret_seed(&self) -> Option<[u8; 32]> {
        match &self.secret {
            Secret::Ed25519(key, _) => Some(key.to_bytes()),
            Secret::Name(_) => None,
        }
    }

    /// Signs `msg` with Ed25519.
    ///
    /// # Errors
    ///
    /// [`Error::NoSecretKey`] for a name identity.
    pub fn sign(&self, msg: &[u8]) -> Result<[u8; 64], Error> {
        match &self.secret {
            Secret::Ed25519(key, signer) => {
                let signer = signer.get_or_init(|| {
                    let seed = Zeroizing::new(key.to_bytes());
                    Ed25519KeyPair::from_seed_unchecked(seed.as_ref()).ok()
                });
                match signer {
                    Some(signer) => {
                        let mut out = [0u8; 64];
                        out.copy_from_slice(signer.sign(msg).as_ref());
                        Ok(out)
                    }
                    None => Ok(key.sign(msg).to_bytes()),
                }
            }
            Secret::Name(_) => Err(Error::NoSecretKey),
        }
    }

    /// Serializes the secret seed in the key file format (see the module docs).
    ///
    /// The returned string holds the secret key; write it with mode `0600` and do not log it.
    ///
    /// # Errors
    ///
    /// [`Error::NoSecretKey`] for a name identity.
    pub fn to_key_file(&self) -> Result<String, Error> {
        let Secret::Ed25519(key, _) = &self.secret else {
            return Err(Error::NoSecretKey);
        };
        let seed = Zeroizing::new(key.to_bytes());
        let mut out = String::with_capacity(KEY_FILE_HEADER.len() + 2 + 64);
        out.push_str(KEY_FILE_HEADER);
        out.push('\n');
        push_hex(&mut out, seed.as_ref());
        out.push('\n');
        Ok(out)
    }

    /// Parses a key file (see the module docs for the format and what is tolerated).
    ///
    /// # Errors
    ///
    /// [`Error::KeyFile`] if the header line is wrong, the seed line is not exactly 64 hex digits,
    /// or there are extra non-blank lines.
    pub fn from_key_file(text: &str) -> Result<Identity, Error> {
        let bad = |reason| Error::KeyFile { reason };
        let mut lines = text.trim_end().split('\n').map(str::trim_end);
        let header = lines.next().unwrap_or_default();
        if header != KEY_FILE_HEADER {
            return Err(bad("first line is not `deccom-ed25519-v1`"));
        }
        let hex = lines.next().ok_or(bad("the seed line is missing"))?;
        if lines.next().is_some() {
            return Err(bad("unexpected content after the seed line"));
        }
        if hex.len() != 64 {
            return Err(bad("the seed line must be exactly 64 hex digits"));
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        for (byte, pair) in seed.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
            match (hex_val(pair[0]), hex_val(pair[1])) {
                (Some(hi), Some(lo)) => *byte = (hi << 4) | lo,
                _ => return Err(bad("the seed line contains a non-hex character")),
            }
        }
        Ok(Identity::from_seed(&seed))
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

pub(crate) fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

/// Formats the first 8 bytes of an id as hex followed by `…`.
pub(crate) struct ShortHex<'a>(pub(crate) &'a [u8]);

impl fmt::Debug for ShortHex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::with_capacity(20);
        push_hex(&mut s, self.0.get(..8).unwrap_or(self.0));
        if self.0.len() > 8 {
            s.push('…');
        }
        f.write_str(&s)
    }
}

#[cfg(test)]
mod tests;
