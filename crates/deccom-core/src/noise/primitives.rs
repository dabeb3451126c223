//! The Noise primitives X25519 and ChaCha20-Poly1305, implemented for `snow` over `aws-lc-rs`,
//! and a session's transport keys with the AEAD its handshake chose ([`Suite`]).
//!
//! Why not snow's default resolver: on the x86-64 CPUs we measured, its pure-Rust primitives are
//! the handshake's and the data path's bottleneck. curve25519-dalek's Montgomery ladder takes
//! 55–80 µs per X25519, against about 25 µs for AWS-LC's (fiat-crypto field arithmetic with the
//! ADX/BMI2 assembly); RustCrypto's ChaCha20-Poly1305 seals a 1200-byte datagram at about
//! 480 MB/s, against about 1.8 GB/s for AWS-LC's assembly. Both are the same standard algorithms,
//! so the wire format and the interop with other Noise implementations do not change.
//!
//! BLAKE2b, the handshake hash, is `blake2b_simd` (AWS-LC has none; it is about twice as fast as
//! RustCrypto's `blake2` with AVX2).

use std::sync::Arc;

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};
use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey, X25519};
use snow::types::{Cipher, Dh, Hash, Random};
use zeroize::{Zeroize, Zeroizing};

/// Length of an X25519 key and of a ChaCha20-Poly1305 key.
const KEY_LEN: usize = 32;
/// Length of the Poly1305 tag.
pub(crate) const TAG_LEN: usize = 16;

/// An AWS-LC X25519 private key object for 32 private bytes, and its public key.
fn x25519_key(private: &[u8; KEY_LEN]) -> Option<(PrivateKey, [u8; KEY_LEN])> {
    // 32 bytes is the only length X25519 checks for, so this does not fail in practice.
    let key = PrivateKey::from_private_key(&X25519, private).ok()?;
    let public = key.compute_public_key().ok()?.as_ref().try_into().ok()?;
    Some((key, public))
}

/// X25519 key pair for `snow` (the `25519` of the Noise protocol names). X25519 clamps the
/// scalar itself (RFC 7748), so 32 private bytes agree with any other implementation.
///
/// `known` is the endpoint's static key pair, made once: snow sets the static private key on
/// every new handshake, and this spares building its key object and computing its public key (a
/// base-point multiplication) each time.
#[derive(Default)]
pub(crate) struct X25519Dh {
    private: Zeroizing<[u8; KEY_LEN]>,
    public: [u8; KEY_LEN],
    key: Option<Arc<PrivateKey>>,
    known: Option<StaticPair>,
}

/// A static X25519 key pair with its key object, shared by the endpoint's handshakes. `Debug`
/// shows the public key only.
#[derive(Clone)]
pub(crate) struct StaticPair {
    private: Zeroizing<[u8; KEY_LEN]>,
    public: [u8; KEY_LEN],
    key: Arc<PrivateKey>,
}

impl core::fmt::Debug for StaticPair {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StaticPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl StaticPair {
    pub(crate) fn new(private: &[u8; KEY_LEN]) -> Option<Self> {
        let (key, public) = x25519_key(private)?;
        Some(StaticPair {
            private: Zeroizing::new(*private),
            public,
            key: Arc::new(key),
        })
    }

    pub(crate) fn public(&self) -> [u8; KEY_LEN] {
        self.public
    }

    pub(crate) fn private(&self) -> &[u8] {
        self.private.as_ref()
    }
}

impl X25519Dh {
    pub(crate) fn with_known(known: Option<StaticPair>) -> Self {
        X25519Dh {
            known,
            ..X25519Dh::default()
        }
    }

    fn load(&mut self) {
        if let Some(k) = self.known.as_ref().filter(|k| k.private == self.private) {
            self.public = k.public;
            self.key = Some(k.key.clone());
            return;
        }
        // On the (unseen) failure the key stays unset and every `dh` with it reports an error.
        let made = x25519_key(&self.private);
        self.public = made.as_ref().map_or([0; KEY_LEN], |(_, public)| *public);
        self.key = made.map(|(key, _)| Arc::new(key));
    }
}

impl Dh for X25519Dh {
    fn name(&self) -> &'static str {
        "25519"
    }

    fn pub_len(&self) -> usize {
        KEY_LEN
    }

    fn priv_len(&self) -> usize {
        KEY_LEN
    }

    fn set(&mut self, privkey: &[u8]) {
        let n = privkey.len().min(KEY_LEN);
        self.private.zeroize();
        self.private[..n].copy_from_slice(&privkey[..n]);
        self.load();
    }

    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        rng.try_fill_bytes(self.private.as_mut())?;
        self.load();
        Ok(())
    }

    fn pubkey(&self) -> &[u8] {
        &self.public
    }

    fn privkey(&self) -> &[u8] {
        self.private.as_ref()
    }

    /// Fails (and so fails the handshake) for a public key of the wrong length and for a
    /// low-order public key, whose shared secret would be all zeros (RFC 7748 §6.1).
    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        let key = self.key.as_deref().ok_or(snow::Error::Dh)?;
        let peer = pubkey.get(..KEY_LEN).ok_or(snow::Error::Dh)?;
        let dest = out.get_mut(..KEY_LEN).ok_or(snow::Error::Dh)?;
        agreement::agree(
            key,
            UnparsedPublicKey::new(&X25519, peer),
            snow::Error::Dh,
            |secret| {
                dest.copy_from_slice(secret);
                Ok(())
            },
        )
    }
}

/// ChaCha20-Poly1305 (RFC 8439) for `snow`, with the Noise nonce layout: 4 zero bytes, then the
/// 64-bit counter little-endian.
#[derive(Default)]
pub(crate) struct ChaChaPoly {
    key: Option<LessSafeKey>,
}

fn nonce(n: u64) -> Nonce {
    let mut bytes = [0u8; aead::NONCE_LEN];
    bytes[4..].copy_from_slice(&n.to_le_bytes());
    Nonce::assume_unique_for_key(bytes)
}

/// Encrypts `buf` in place under `key` with `nonce` and associated data `ad`; returns the tag.
fn seal_with(key: &LessSafeKey, nonce: Nonce, ad: &[u8], buf: &mut [u8]) -> Option<[u8; TAG_LEN]> {
    let tag = key
        .seal_in_place_separate_tag(nonce, Aad::from(ad), buf)
        .ok()?;
    tag.as_ref().try_into().ok()
}

/// Opens `ciphertext` (body, then the 16-byte tag) into `out[..body length]`; returns the body
/// length, or `None` if authentication fails or `out` is too short.
fn open_with(
    key: &LessSafeKey,
    nonce: Nonce,
    ad: &[u8],
    ciphertext: &[u8],
    out: &mut [u8],
) -> Option<usize> {
    let len = ciphertext.len().checked_sub(TAG_LEN)?;
    let dest = out.get_mut(..len)?;
    let (body, tag) = ciphertext.split_at(len);
    key.open_separate_gather(nonce, Aad::from(ad), body, tag, dest)
        .ok()?;
    Some(len)
}

impl ChaChaPoly {
    /// Encrypts `buf` in place with nonce `n` and associated data `ad`; returns the tag.
    pub(crate) fn seal_in_place(&self, n: u64, ad: &[u8], buf: &mut [u8]) -> Option<[u8; TAG_LEN]> {
        seal_with(self.key.as_ref()?, nonce(n), ad, buf)
    }

    /// Opens `ciphertext` (body, then the 16-byte tag) into `out[..body length]`; see [`open_with`].
    pub(crate) fn open_into(
        &self,
        n: u64,
        ad: &[u8],
        ciphertext: &[u8],
        out: &mut [u8],
    ) -> Option<usize> {
        open_with(self.key.as_ref()?, nonce(n), ad, ciphertext, out)
    }
}

impl Cipher for ChaChaPoly {
    fn name(&self) -> &'static str {
        "ChaChaPoly"
    }

    fn set(&mut self, key: &[u8; KEY_LEN]) {
        self.key = UnboundKey::new(&CHACHA20_POLY1305, key)
            .ok()
            .map(LessSafeKey::new);
    }

    /// `out` must hold `plaintext.len() + 16` bytes (snow checks it before calling).
    fn encrypt(
        &self,
        nonce_value: u64,
        authtext: &[u8],
        plaintext: &[u8],
        out: &mut [u8],
    ) -> usize {
        let len = plaintext.len();
        let Some(dest) = out.get_mut(..len + TAG_LEN) else {
            // Unreachable with snow's checks; an empty result then fails the peer's decryption.
            return 0;
        };
        let (body, tag_out) = dest.split_at_mut(len);
        body.copy_from_slice(plaintext);
        match self.seal_in_place(nonce_value, authtext, body) {
            Some(tag) => {
                tag_out.copy_from_slice(&tag);
                len + TAG_LEN
            }
            None => 0,
        }
    }

    fn decrypt(
        &self,
        nonce_value: u64,
        authtext: &[u8],
        ciphertext: &[u8],
        out: &mut [u8],
    ) -> Result<usize, snow::Error> {
        self.open_into(nonce_value, authtext, ciphertext, out)
            .ok_or(snow::Error::Decrypt)
    }
}

/// The AEAD of a session's transport messages, agreed in the handshake (docs/wire.md, "Transport
/// suites"). The handshake itself always uses ChaCha20-Poly1305 (the `ChaChaPoly` of the Noise
/// protocol names); only the keys `Split()` gives are used with the chosen suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    /// ChaCha20-Poly1305 (RFC 8439), nonce: 4 zero bytes, then the counter little-endian. The
    /// default, and what a peer that predates suites uses.
    ChaChaPoly = 0,
    /// AES-256-GCM, nonce: 4 zero bytes, then the counter big-endian (the Noise `AESGCM` nonce).
    /// Chosen only when both sides prefer it (both have AES instructions).
    AesGcm = 1,
}

/// Bit of a suite offer: the sender prefers AES-256-GCM. Other bits are reserved for suites a
/// later version may add; a responder ignores the ones it does not implement.
pub const OFFER_AES_GCM: u8 = 0x01;

impl Suite {
    /// The responder's choice for the initiator's `offer` byte: AES-256-GCM when offered and
    /// preferred here too, else ChaCha20-Poly1305.
    #[must_use]
    pub fn choose(offer: u8, prefer_aes_gcm: bool) -> Suite {
        if prefer_aes_gcm && offer & OFFER_AES_GCM != 0 {
            Suite::AesGcm
        } else {
            Suite::ChaChaPoly
        }
    }

    /// The suite a choice byte names, if it is one the offer allowed.
    #[must_use]
    pub fn from_choice(byte: u8, offer: u8) -> Option<Suite> {
        match byte {
            0 => Some(Suite::ChaChaPoly),
            1 if offer & OFFER_AES_GCM != 0 => Some(Suite::AesGcm),
            _ => None,
        }
    }

    /// Whether this CPU runs AES-256-GCM in hardware (AES and carry-less multiplication
    /// instructions), where it is several times faster than ChaCha20-Poly1305; without them
    /// ChaCha20-Poly1305 is the faster one.
    #[must_use]
    pub fn hardware_aes() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("aes")
                && std::arch::is_x86_feature_detected!("pclmulqdq")
        }
        #[cfg(target_arch = "aarch64")]
        {
            std::arch::is_aarch64_feature_detected!("aes")
                && std::arch::is_aarch64_feature_detected!("pmull")
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            false
        }
    }
}

/// One direction of a session: its key and suite.
struct TransportKey {
    key: LessSafeKey,
    suite: Suite,
}

impl TransportKey {
    fn new(suite: Suite, key: &[u8; KEY_LEN]) -> Option<Self> {
        let alg = match suite {
            Suite::ChaChaPoly => &CHACHA20_POLY1305,
            Suite::AesGcm => &AES_256_GCM,
        };
        let key = LessSafeKey::new(UnboundKey::new(alg, key).ok()?);
        Some(TransportKey { key, suite })
    }

    fn nonce(&self, n: u64) -> Nonce {
        match self.suite {
            Suite::ChaChaPoly => nonce(n),
            Suite::AesGcm => {
                let mut bytes = [0u8; aead::NONCE_LEN];
                bytes[4..].copy_from_slice(&n.to_be_bytes());
                Nonce::assume_unique_for_key(bytes)
            }
        }
    }
}

/// A session's transport keys: Noise's `Split()` of a finished handshake, one key per direction
/// for the agreed [`Suite`], used with the explicit counter of each datagram as the nonce and
/// empty associated data (Noise transport messages, as snow's stateless transport state makes
/// them). Holding the keys, rather than snow's transport state, lets a datagram be sealed where
/// it lies (the native data path builds it in the socket's transmit batch).
pub(crate) struct Transport {
    send: TransportKey,
    recv: TransportKey,
}

impl Transport {
    /// The keys of a finished handshake for `suite` (`None` before it is finished).
    pub(crate) fn from_handshake(hs: &mut snow::HandshakeState, suite: Suite) -> Option<Self> {
        if !hs.is_handshake_finished() {
            return None;
        }
        // Split() gives (initiator -> responder, responder -> initiator).
        let (mut i2r, mut r2i) = hs.dangerously_get_raw_split();
        let (send, recv) = if hs.is_initiator() {
            (&i2r, &r2i)
        } else {
            (&r2i, &i2r)
        };
        let t = TransportKey::new(suite, send)
            .zip(TransportKey::new(suite, recv))
            .map(|(send, recv)| Transport { send, recv });
        i2r.zeroize();
        r2i.zeroize();
        t
    }

    /// The suite both directions use.
    pub(crate) fn suite(&self) -> Suite {
        self.send.suite
    }

    /// Encrypts `buf` in place as the transport message with counter `n`; returns the tag.
    pub(crate) fn seal_in_place(&self, n: u64, buf: &mut [u8]) -> Option<[u8; TAG_LEN]> {
        seal_with(&self.send.key, self.send.nonce(n), &[], buf)
    }

    /// Opens the transport message `ciphertext` with counter `n` into `out`.
    pub(crate) fn open_into(&self, n: u64, ciphertext: &[u8], out: &mut [u8]) -> Option<usize> {
        open_with(&self.recv.key, self.recv.nonce(n), &[], ciphertext, out)
    }
}

/// BLAKE2b-512 for `snow` (the `BLAKE2b` of the Noise protocol names; HMAC and HKDF are snow's
/// generic ones over it). `blake2b_simd` picks its AVX2 code at run time where the CPU has it.
pub(crate) struct Blake2b {
    hasher: blake2b_simd::State,
}

impl Default for Blake2b {
    fn default() -> Self {
        Blake2b {
            hasher: blake2b_simd::State::new(),
        }
    }
}

impl Hash for Blake2b {
    fn name(&self) -> &'static str {
        "BLAKE2b"
    }

    fn block_len(&self) -> usize {
        128
    }

    fn hash_len(&self) -> usize {
        64
    }

    fn reset(&mut self) {
        self.hasher = blake2b_simd::State::new();
    }

    fn input(&mut self, data: &[u8]) {
        self.hasher.update(data);
    }

    fn result(&mut self, out: &mut [u8]) {
        let hash = self.hasher.finalize();
        self.reset();
        let bytes = hash.as_bytes();
        let n = out.len().min(bytes.len());
        out[..n].copy_from_slice(&bytes[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AES-256-GCM only when offered and preferred; a choice the offer did not allow, or an
    /// unknown suite, is refused; unknown offer bits are ignored.
    #[test]
    fn suite_choice_follows_the_offer() {
        assert_eq!(Suite::choose(OFFER_AES_GCM, true), Suite::AesGcm);
        assert_eq!(Suite::choose(OFFER_AES_GCM, false), Suite::ChaChaPoly);
        assert_eq!(Suite::choose(0, true), Suite::ChaChaPoly);
        assert_eq!(Suite::choose(0xfe, true), Suite::ChaChaPoly);
        assert_eq!(Suite::choose(0xff, true), Suite::AesGcm);
        assert_eq!(
            Suite::from_choice(0, OFFER_AES_GCM),
            Some(Suite::ChaChaPoly)
        );
        assert_eq!(Suite::from_choice(1, OFFER_AES_GCM), Some(Suite::AesGcm));
        assert_eq!(
            Suite::from_choice(1, 0),
            None,
            "AES-256-GCM was not offered"
        );
        for b in 2..=255u8 {
            assert_eq!(Suite::from_choice(b, 0xff), None);
        }
    }

    /// The two suites' nonces differ in byte order: the same counter seals differently, and a
    /// datagram sealed with one suite does not open with the other under the same key.
    #[test]
    fn suites_do_not_open_each_other() {
        let key = [7u8; KEY_LEN];
        let aes = TransportKey::new(Suite::AesGcm, &key).unwrap();
        let cha = TransportKey::new(Suite::ChaChaPoly, &key).unwrap();
        assert_ne!(aes.nonce(1).as_ref(), cha.nonce(1).as_ref());
        let mut buf = *b"sixteen bytes!!!";
        let tag = aes
            .key
            .seal_in_place_separate_tag(aes.nonce(1), Aad::empty(), &mut buf)
            .unwrap();
        let mut out = [0u8; 16];
        let opened =
            cha.key
                .open_separate_gather(cha.nonce(1), Aad::empty(), &buf, tag.as_ref(), &mut out);
        assert!(opened.is_err());
        let opened =
            aes.key
                .open_separate_gather(aes.nonce(1), Aad::empty(), &buf, tag.as_ref(), &mut out);
        assert!(opened.is_ok());
        assert_eq!(&out, b"sixteen bytes!!!");
    }

    /// RFC 7748 §6.1 test vector.
    #[test]
    fn x25519_rfc7748_vector() {
        let hex = |s: &str| -> [u8; 32] {
            let mut out = [0u8; 32];
            for (i, b) in out.iter_mut().enumerate() {
                *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
            }
            out
        };
        let alice = hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let alice_pub = hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
        let bob = hex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
        let bob_pub = hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
        let shared = hex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
        let mut a = X25519Dh::default();
        a.set(&alice);
        assert_eq!(a.pubkey(), alice_pub);
        let mut out = [0u8; 32];
        a.dh(&bob_pub, &mut out).unwrap();
        assert_eq!(out, shared);
        let mut b = X25519Dh::default();
        b.set(&bob);
        b.dh(&alice_pub, &mut out).unwrap();
        assert_eq!(out, shared);
        // A low-order point (here 0) is refused instead of yielding an all-zero secret.
        assert!(a.dh(&[0; 32], &mut out).is_err());
        assert!(a.dh(&[9; 31], &mut out).is_err());
        // A known static pair is taken as is for its own private key (a planted wrong public
        // key shows that it was), and ignored for another private key.
        let mut known = StaticPair::new(&alice).unwrap();
        assert_eq!(known.public(), alice_pub);
        known.public = [7; 32];
        let mut k = X25519Dh::with_known(Some(known));
        k.set(&alice);
        assert_eq!(k.pubkey(), [7; 32]);
        k.dh(&bob_pub, &mut out).unwrap();
        assert_eq!(out, shared);
        k.set(&bob);
        assert_eq!(k.pubkey(), bob_pub);
    }

    /// RFC 7693 Appendix A: BLAKE2b-512("abc").
    #[test]
    fn blake2b_abc() {
        let mut h = Blake2b::default();
        h.input(b"a");
        h.input(b"bc");
        let mut out = [0u8; 64];
        h.result(&mut out);
        assert_eq!(out[..8], [0xba, 0x80, 0xa5, 0x3f, 0x98, 0x1c, 0x4d, 0x0d]);
        assert_eq!(out[56..], [0xb9, 0x23, 0x86, 0xed, 0xd4, 0x00, 0x99, 0x23]);
        h.input(b"abc");
        let mut again = [0u8; 64];
        h.result(&mut again);
        assert_eq!(out, again, "result resets the state");
    }

    /// Round trip; a wrong nonce, wrong associated data, a flipped bit or a short input fail.
    #[test]
    fn chachapoly_round_trip_and_tamper() {
        let mut c = ChaChaPoly::default();
        c.set(&[7; 32]);
        let msg = b"deccom transport message";
        let mut sealed = [0u8; 24 + TAG_LEN];
        assert_eq!(c.encrypt(5, b"ad", msg, &mut sealed), msg.len() + TAG_LEN);
        let mut opened = [0u8; 24];
        assert_eq!(
            c.decrypt(5, b"ad", &sealed, &mut opened).unwrap(),
            msg.len()
        );
        assert_eq!(&opened, msg);
        assert!(c.decrypt(6, b"ad", &sealed, &mut opened).is_err());
        assert!(c.decrypt(5, b"xx", &sealed, &mut opened).is_err());
        sealed[3] ^= 1;
        assert!(c.decrypt(5, b"ad", &sealed, &mut opened).is_err());
        assert!(c.decrypt(5, b"ad", &sealed[..15], &mut opened).is_err());
    }

    /// Byte-identical to the RustCrypto implementation (snow's default) for the Noise nonce layout.
    #[test]
    fn chachapoly_matches_rustcrypto() {
        use chacha20poly1305::aead::{AeadInPlace, KeyInit};
        let theirs = chacha20poly1305::ChaCha20Poly1305::new(&[3u8; 32].into());
        let mut ours = ChaChaPoly::default();
        ours.set(&[3; 32]);
        let n = u64::MAX - 1;
        let mut nonce_bytes = [0u8; 12];
        nonce_bytes[4..].copy_from_slice(&n.to_le_bytes());
        for len in [0usize, 1, 63, 64, 65, 1200, 4096] {
            let msg: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut a = vec![0u8; len + TAG_LEN];
            ours.encrypt(n, b"h", &msg, &mut a);
            let mut b = msg.clone();
            let tag = theirs
                .encrypt_in_place_detached(&nonce_bytes.into(), b"h", &mut b)
                .unwrap();
            b.extend_from_slice(&tag);
            assert_eq!(a, b, "len {len}");
        }
    }
}
