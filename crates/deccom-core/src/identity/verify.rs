//! Strict Ed25519 verification.

use ed25519_dalek::{Signature, VerifyingKey};

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

/// The canonical encodings of the 8 points of small order (the 8-torsion subgroup).
pub(super) fn small_order_encodings() -> &'static [[u8; 32]; 8] {
    static ENCODINGS: std::sync::OnceLock<[[u8; 32]; 8]> = std::sync::OnceLock::new();
    ENCODINGS
        .get_or_init(|| curve25519_dalek::constants::EIGHT_TORSION.map(|p| p.compress().to_bytes()))
}
