//! Bounded memos of checks already passed: Ed25519 public keys found valid (with their node ids),
//! and signatures found valid (with the key and message they were checked against).
//!
//! Checking a key (decompressing the curve point) costs microseconds and computing a node id is a
//! SHA-256; a node decodes the same peers' records over and over (every NODES answer carries up to
//! 20 of them, and a simulation runs thousands of nodes in one process). Both are pure functions of
//! the 32 key bytes, so the result is remembered: a key found valid once is not checked again and
//! its id is not recomputed.
//!
//! Verifying a signature costs tens of microseconds; the DHT's records (announces, mutable values)
//! come back alike from each of the k nodes that store them. A signature that verified is
//! remembered with the SHA-256 of the key and message it verified for; the same signature met
//! again verifies only if that digest matches (a SHA-256 of the key and message, not the curve
//! arithmetic), so a memo hit answers exactly what a fresh check would.
//!
//! Failed checks are never remembered (they are checked every time). Memory is bounded: two
//! generations per memo; when the current one is full it becomes the previous one and the older
//! is dropped, so entries in use stay (a hit in the previous generation is copied into the current
//! one).
//!
//! The memos are per thread (no lock on the path of every record; a simulation decodes on one
//! thread), each bounded as above, and hashed with a keyed multiply-fold (`seeded.rs`): the keys are
//! whatever a peer sends.

use std::borrow::Borrow;
use std::cell::RefCell;
use std::hash::{Hash, Hasher};

use super::seeded::{SeededMap, SeededSet};
use super::NodeId;

/// Keys per generation (two generations: at most twice this many are kept per thread, ~100 bytes
/// each).
pub(crate) const GENERATION: usize = 32_768;

/// Signatures per generation (two generations per thread, ~150 bytes each).
pub(crate) const SIGNATURE_GENERATION: usize = 16_384;

struct TwoGen<K, V> {
    current: SeededMap<K, V>,
    previous: SeededMap<K, V>,
}

impl<K: Hash + Eq + Copy, V: Copy> TwoGen<K, V> {
    fn new() -> Self {
        TwoGen { current: SeededMap::default(), previous: SeededMap::default() }
    }

    fn get(&mut self, k: &K, cap: usize) -> Option<V> {
        if let Some(v) = self.current.get(k) {
            return Some(*v);
        }
        let v = *self.previous.get(k)?;
        self.insert(*k, v, cap);
        Some(v)
    }

    fn insert(&mut self, k: K, v: V, cap: usize) {
        if self.current.len() >= cap {
            // The full generation becomes the previous one; the older one's table is reused.
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.clear();
        }
        self.current.insert(k, v);
    }
}

/// A key found valid and its node id, in one cache line (a memo of many keys is read out of the
/// cache: one line per hit, not the two a key and a value apart may span).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct KeyId {
    key: [u8; 32],
    id: NodeId,
}

impl PartialEq for KeyId {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for KeyId {}
impl Hash for KeyId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}
impl Borrow<[u8; 32]> for KeyId {
    fn borrow(&self) -> &[u8; 32] {
        &self.key
    }
}

/// [`TwoGen`] for keys, as sets of [`KeyId`].
struct KeyMemo {
    current: SeededSet<KeyId>,
    previous: SeededSet<KeyId>,
}

impl KeyMemo {
    fn get(&mut self, key: &[u8; 32]) -> Option<NodeId> {
        if let Some(e) = self.current.get(key) {
            return Some(e.id);
        }
        let e = *self.previous.get(key)?;
        self.insert(e);
        Some(e.id)
    }

    fn insert(&mut self, e: KeyId) {
        if self.current.len() >= GENERATION {
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.clear();
        }
        self.current.replace(e);
    }
}

type Memo<K, V> = RefCell<TwoGen<K, V>>;

thread_local! {
    static KEYS: RefCell<KeyMemo> = RefCell::new(KeyMemo { current: SeededSet::default(), previous: SeededSet::default() });
    static SIGNATURES: Memo<[u8; 64], [u8; 32]> = RefCell::new(TwoGen::new());
}

fn with<K: Hash + Eq + Copy + 'static, V: Copy + 'static, R>(
    memo: &'static std::thread::LocalKey<Memo<K, V>>,
    f: impl FnOnce(&mut TwoGen<K, V>) -> R,
) -> R {
    memo.with(|m| f(&mut m.borrow_mut()))
}

/// The node id of a key found valid before, if remembered.
pub(crate) fn lookup(key: &[u8; 32]) -> Option<NodeId> {
    KEYS.with(|m| m.borrow_mut().get(key))
}

/// Remembers that `key` is a valid Ed25519 key whose identity has node id `id`.
pub(crate) fn remember(key: [u8; 32], id: NodeId) {
    KEYS.with(|m| m.borrow_mut().insert(KeyId { key, id }));
}

/// True when `signature` verified before for the key and message whose SHA-256 is `digest`.
pub(crate) fn signature_known(signature: &[u8; 64], digest: &[u8; 32]) -> bool {
    with(&SIGNATURES, |m| m.get(signature, SIGNATURE_GENERATION)).is_some_and(|d| &d == digest)
}

/// Remembers that `signature` verified for the key and message whose SHA-256 is `digest`.
pub(crate) fn remember_signature(signature: [u8; 64], digest: [u8; 32]) {
    with(&SIGNATURES, |m| m.insert(signature, digest, SIGNATURE_GENERATION));
}

/// Keys this thread remembers.
#[cfg(test)]
pub(crate) fn len() -> usize {
    KEYS.with(|m| {
        let m = m.borrow();
        m.current.len() + m.previous.len()
    })
}
