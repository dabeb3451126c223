//! Cryptographic helpers: the caller-seeded RNG handed to `snow`, the static key derivation, the
//! identity binding payload, and the cookie MACs.

use core::hash::{Hash, Hasher};
use std::collections::{HashMap, VecDeque};

use blake2::digest::{consts::U16, KeyInit, Mac};
use chacha20::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::CryptoResolver;
use snow::types::{Cipher, Dh, Hash as NoiseHash, Random};
use zeroize::Zeroizing;

use super::error::{HandshakeError, NoiseError};
pub(crate) use super::primitives::StaticPair;
use super::primitives::{Blake2b, ChaChaPoly, X25519Dh};
use super::wire::{KEY_LEN, MAC_LEN, SIG_LEN};
use crate::identity::{verify, Identity, NodeId, PublicIdentity, KIND_ED25519};

/// Noise protocol name for first contact.
pub const XX_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2b";
/// Noise protocol name when the responder's static key is known.
pub const IK_PARAMS: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2b";
/// Noise prologue: both sides must agree on it, so it pins the protocol version.
pub const PROLOGUE: &[u8] = b"deccom-noise-v1";
/// Domain separator of the identity signature over the Noise static key.
pub const STATIC_SIG_DOMAIN: &[u8] = b"deccom-noise-static-v1";
/// Domain separator of the X25519 static key derivation from the Ed25519 seed.
const STATIC_KEY_DOMAIN: &[u8] = b"deccom-noise-x25519-static-v1";
/// Version byte of the identity binding payload.
pub const BINDING_VERSION: u8 = 1;

/// `snow`'s RNG interface over a ChaCha20 stream seeded by us.
struct SeededRandom(ChaCha20Rng);

impl Random for SeededRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

/// A `snow` resolver whose RNG is a ChaCha20 stream from a 32-byte seed we draw from the
/// endpoint's own seeded generator (one fresh seed per handshake). X25519 and ChaCha20-Poly1305
/// (AWS-LC) and BLAKE2b come from [`super::primitives`]; the OS RNG is never touched.
pub(crate) struct SeededResolver {
    seed: Zeroizing<[u8; 32]>,
    /// The endpoint's static key pair, so its public key is not recomputed per handshake.
    static_pair: Option<StaticPair>,
}

impl SeededResolver {
    pub(crate) fn new(seed: [u8; 32], static_pair: Option<StaticPair>) -> Self {
        SeededResolver {
            seed: Zeroizing::new(seed),
            static_pair,
        }
    }
}

impl CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(SeededRandom(ChaCha20Rng::from_seed(*self.seed))))
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            DHChoice::Curve25519 => Some(Box::new(X25519Dh::with_known(self.static_pair.clone()))),
            _ => None,
        }
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn NoiseHash>> {
        match choice {
            HashChoice::Blake2b => Some(Box::<Blake2b>::default()),
            _ => None,
        }
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        match choice {
            CipherChoice::ChaChaPoly => Some(Box::<ChaChaPoly>::default()),
            _ => None,
        }
    }
}

/// The endpoint's deterministic random generator (ChaCha20, seeded by the caller).
pub(crate) struct EndpointRng(ChaCha20Rng);

impl EndpointRng {
    pub(crate) fn new(seed: [u8; 32]) -> Self {
        EndpointRng(ChaCha20Rng::from_seed(seed))
    }

    pub(crate) fn seed32(&mut self) -> [u8; 32] {
        let mut out = [0u8; 32];
        self.0.fill_bytes(&mut out);
        out
    }

    pub(crate) fn u32(&mut self) -> u32 {
        self.0.next_u32()
    }
}

/// The X25519 static key pair of an identity: the private key is
/// `SHA-256("deccom-noise-x25519-static-v1" || ed25519_seed)` (clamped by X25519), so it is
/// stable across restarts and IK keeps working with a remembered static key.
pub(crate) fn static_keypair(identity: &Identity) -> Result<StaticPair, NoiseError> {
    let seed = Zeroizing::new(identity.secret_seed().ok_or(NoiseError::NameIdentity)?);
    let mut h = Sha256::new();
    h.update(STATIC_KEY_DOMAIN);
    h.update(seed.as_ref());
    let private = Zeroizing::new(<[u8; 32]>::from(h.finalize()));
    StaticPair::new(&private).ok_or(NoiseError::Crypto {
        reason: "X25519 unavailable",
    })
}

/// Builds the identity binding payload (see the module docs):
/// `version || node_id || identity_len || identity || sig(domain || static_pub)`.
pub(crate) fn binding_payload(
    identity: &Identity,
    static_pub: &[u8; 32],
) -> Result<Vec<u8>, NoiseError> {
    let public = identity.public_identity();
    if !matches!(public, PublicIdentity::Ed25519(_)) {
        return Err(NoiseError::NameIdentity);
    }
    let encoded = public.encode();
    let sig = identity
        .sign(&static_sig_message(static_pub))
        .map_err(|_| NoiseError::NameIdentity)?;
    let mut out = Vec::with_capacity(1 + 32 + 1 + encoded.len() + SIG_LEN);
    out.push(BINDING_VERSION);
    out.extend_from_slice(&identity.id());
    out.push(u8::try_from(encoded.len()).map_err(|_| NoiseError::Crypto {
        reason: "identity too long",
    })?);
    out.extend_from_slice(&encoded);
    out.extend_from_slice(&sig);
    Ok(out)
}

fn static_sig_message(static_pub: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(STATIC_SIG_DOMAIN.len() + KEY_LEN);
    m.extend_from_slice(STATIC_SIG_DOMAIN);
    m.extend_from_slice(static_pub);
    m
}

/// Verifies a binding payload against the static key the Noise handshake authenticated.
///
/// Returns the peer's identity and node id (computed here as SHA-256 of the identity, and
/// checked against the claimed id).
pub(crate) fn verify_binding(
    payload: &[u8],
    remote_static: &[u8],
) -> Result<(PublicIdentity, NodeId), HandshakeError> {
    let mut r = crate::wire::Reader::new(payload);
    let malformed = |_| HandshakeError::Malformed;
    if r.u8().map_err(malformed)? != BINDING_VERSION {
        return Err(HandshakeError::Malformed);
    }
    let claimed: NodeId = r.array().map_err(malformed)?;
    let len = usize::from(r.u8().map_err(malformed)?);
    let encoded = r.take(len).map_err(malformed)?;
    let sig: [u8; SIG_LEN] = r.array().map_err(malformed)?;
    if r.remaining() != 0 {
        return Err(HandshakeError::Malformed);
    }
    if encoded.first() != Some(&KIND_ED25519) {
        return match PublicIdentity::decode(encoded) {
            Ok(PublicIdentity::Name(_)) => Err(HandshakeError::NameIdentity),
            _ => Err(HandshakeError::Malformed),
        };
    }
    let identity = PublicIdentity::decode(encoded).map_err(|_| HandshakeError::Malformed)?;
    let id = crate::identity::node_id(encoded);
    if id != claimed {
        return Err(HandshakeError::IdMismatch);
    }
    let key = identity.ed25519_key().ok_or(HandshakeError::NameIdentity)?;
    match verify(key, &static_sig_message(remote_static), &sig) {
        Ok(true) => Ok((identity, id)),
        _ => Err(HandshakeError::BadSignature),
    }
}

/// How many verified identity bindings an endpoint remembers by default (see [`BindingCache`]).
pub(crate) const VERIFIED_BINDINGS: usize = 1024;

/// The identity bindings an endpoint has verified, so that a peer it meets again (a rekey every
/// two minutes, a reconnection, IK after XX) costs no second Ed25519 verification.
///
/// The key is SHA-256 of the remote static key and the whole binding payload; an entry exists
/// only for a payload whose checks all passed. Verification is a pure function of those bytes,
/// so a hit gives exactly the answer a fresh verification would. Bounded: the oldest entry goes
/// first (FIFO) once `Config::verified_bindings` are held.
pub(crate) struct BindingCache {
    map: HashMap<[u8; 32], (PublicIdentity, NodeId)>,
    order: VecDeque<[u8; 32]>,
    capacity: usize,
    /// Verifications the cache spared.
    pub(crate) hits: u64,
}

impl BindingCache {
    pub(crate) fn new(capacity: usize) -> Self {
        BindingCache {
            map: HashMap::with_capacity(capacity.min(64)),
            order: VecDeque::with_capacity(capacity.min(64)),
            capacity,
            hits: 0,
        }
    }

    /// [`verify_binding`], answered from the cache when these exact bytes passed before.
    pub(crate) fn verify(
        &mut self,
        payload: &[u8],
        remote_static: &[u8],
    ) -> Result<(PublicIdentity, NodeId), HandshakeError> {
        let mut h = Sha256::new();
        h.update(remote_static);
        h.update(payload);
        let key: [u8; 32] = h.finalize().into();
        if let Some(hit) = self.map.get(&key) {
            self.hits += 1;
            return Ok(hit.clone());
        }
        let verified = verify_binding(payload, remote_static)?;
        if self.capacity > 0 {
            if self.order.len() >= self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
            self.order.push_back(key);
            self.map.insert(key, verified.clone());
        }
        Ok(verified)
    }
}

type CookieMac = blake2::Blake2sMac<U16>;

/// Keyed BLAKE2s-128 of `parts` under `key` (the WireGuard MAC construction).
pub(crate) fn mac16(key: &[u8], parts: &[&[u8]]) -> [u8; MAC_LEN] {
    // Keys are 16 or 32 bytes, within BLAKE2s' 1..=32 limit, so this cannot fail.
    let mut mac = match <CookieMac as KeyInit>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return [0; MAC_LEN],
    };
    for p in parts {
        Mac::update(&mut mac, p);
    }
    mac.finalize().into_bytes().into()
}

/// Collects the bytes a `Hash` impl feeds, giving a canonical byte string for a peer address of
/// any type (used as the cookie input, in place of WireGuard's IP and port).
struct ByteSink(Vec<u8>);

impl Hasher for ByteSink {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }
}

pub(crate) fn peer_bytes<P: Hash>(peer: &P) -> Vec<u8> {
    let mut sink = ByteSink(Vec::with_capacity(32));
    peer.hash(&mut sink);
    sink.0
}

/// Constant-time equality of two MACs.
pub(crate) fn ct_eq(a: &[u8; MAC_LEN], b: &[u8; MAC_LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(n: u8) -> Identity {
        Identity::from_seed(&[n; 32])
    }

    #[test]
    fn static_key_is_deterministic_and_name_identities_are_refused() {
        let a1 = static_keypair(&ident(1)).unwrap().public();
        let a2 = static_keypair(&ident(1)).unwrap().public();
        let b = static_keypair(&ident(2)).unwrap().public();
        assert_eq!(a1, a2);
        assert_ne!(a1, b);
        let name = Identity::from_name("bob").unwrap();
        assert_eq!(static_keypair(&name).unwrap_err(), NoiseError::NameIdentity);
        assert_eq!(
            binding_payload(&name, &[0; 32]).unwrap_err(),
            NoiseError::NameIdentity
        );
    }

    #[test]
    fn binding_round_trip() {
        let id = ident(3);
        let s = static_keypair(&id).unwrap().public();
        let p = binding_payload(&id, &s).unwrap();
        let (pi, nid) = verify_binding(&p, &s).unwrap();
        assert_eq!(pi, id.public_identity());
        assert_eq!(nid, id.id());
    }

    #[test]
    fn binding_rejects_wrong_static_key() {
        let id = ident(3);
        let s = static_keypair(&id).unwrap().public();
        let other = static_keypair(&ident(4)).unwrap().public();
        let p = binding_payload(&id, &s).unwrap();
        // The handshake authenticated `other`, but the signature covers `s`.
        assert_eq!(
            verify_binding(&p, &other),
            Err(HandshakeError::BadSignature)
        );
        // Someone else's binding replayed with our static key.
        let p4 = binding_payload(&ident(4), &other).unwrap();
        assert_eq!(verify_binding(&p4, &s), Err(HandshakeError::BadSignature));
    }

    #[test]
    fn binding_rejects_claimed_id_that_is_not_the_hash() {
        let id = ident(5);
        let s = static_keypair(&id).unwrap().public();
        let mut p = binding_payload(&id, &s).unwrap();
        p[1] ^= 1; // the claimed node id
        assert_eq!(verify_binding(&p, &s), Err(HandshakeError::IdMismatch));
        // A claimed id copied from another node.
        let mut p = binding_payload(&id, &s).unwrap();
        p[1..33].copy_from_slice(&ident(6).id());
        assert_eq!(verify_binding(&p, &s), Err(HandshakeError::IdMismatch));
    }

    #[test]
    fn binding_rejects_tampering_and_truncation() {
        let id = ident(7);
        let s = static_keypair(&id).unwrap().public();
        let p = binding_payload(&id, &s).unwrap();
        for cut in 0..p.len() {
            assert!(verify_binding(&p[..cut], &s).is_err(), "cut {cut}");
        }
        let mut long = p.clone();
        long.push(0);
        assert_eq!(verify_binding(&long, &s), Err(HandshakeError::Malformed));
        let mut bad_sig = p.clone();
        let n = bad_sig.len();
        bad_sig[n - 1] ^= 0x40;
        assert_eq!(
            verify_binding(&bad_sig, &s),
            Err(HandshakeError::BadSignature)
        );
        let mut bad_ver = p;
        bad_ver[0] = 9;
        assert_eq!(verify_binding(&bad_ver, &s), Err(HandshakeError::Malformed));
    }

    #[test]
    fn binding_cache_answers_repeats_and_never_caches_failures() {
        let id = ident(8);
        let s = static_keypair(&id).unwrap().public();
        let p = binding_payload(&id, &s).unwrap();
        let mut cache = BindingCache::new(2);
        assert_eq!(cache.verify(&p, &s).unwrap().1, id.id());
        assert_eq!(cache.hits, 0);
        assert_eq!(cache.verify(&p, &s).unwrap().1, id.id());
        assert_eq!(cache.hits, 1);
        // A failure is recomputed (and fails) every time; a cached payload does not verify
        // for another static key.
        let other = static_keypair(&ident(9)).unwrap().public();
        for _ in 0..2 {
            assert_eq!(cache.verify(&p, &other), Err(HandshakeError::BadSignature));
        }
        let mut bad = p.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert_eq!(cache.verify(&bad, &s), Err(HandshakeError::BadSignature));
        assert_eq!(cache.hits, 1);
        // Bounded: two more identities push the first one out.
        for n in [10u8, 11] {
            let i = ident(n);
            let si = static_keypair(&i).unwrap().public();
            cache
                .verify(&binding_payload(&i, &si).unwrap(), &si)
                .unwrap();
        }
        assert_eq!(cache.map.len(), 2);
        assert_eq!(cache.order.len(), 2);
        cache.verify(&p, &s).unwrap();
        assert_eq!(cache.hits, 1, "evicted, so verified again");
    }

    #[test]
    fn binding_rejects_name_identity() {
        let name = PublicIdentity::Name(b"mallory".to_vec()).encode();
        let mut p = vec![BINDING_VERSION];
        p.extend_from_slice(&crate::identity::node_id(&name));
        p.push(name.len() as u8);
        p.extend_from_slice(&name);
        p.extend_from_slice(&[0; SIG_LEN]);
        assert_eq!(
            verify_binding(&p, &[1; 32]),
            Err(HandshakeError::NameIdentity)
        );
    }

    #[test]
    fn seeded_resolver_is_deterministic() {
        let r = SeededResolver::new([9; 32], None);
        let mut a = [0u8; 16];
        let mut b = [0u8; 16];
        r.resolve_rng().unwrap().try_fill_bytes(&mut a).unwrap();
        r.resolve_rng().unwrap().try_fill_bytes(&mut b).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, [0; 16]);
    }

    #[test]
    fn mac_and_peer_bytes() {
        let a = mac16(&[1; 32], &[b"x", b"y"]);
        assert_eq!(a, mac16(&[1; 32], &[b"xy"]));
        assert_ne!(a, mac16(&[2; 32], &[b"xy"]));
        assert!(ct_eq(&a, &a));
        assert!(!ct_eq(&a, &[0; 16]));
        let p1: std::net::SocketAddr = "1.2.3.4:5".parse().unwrap();
        let p2: std::net::SocketAddr = "1.2.3.4:6".parse().unwrap();
        assert_ne!(peer_bytes(&p1), peer_bytes(&p2));
    }
}
