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

use super::seeded::SeededSet;
use super::NodeId;

/// Keys per generation (two generations: at most twice this many are kept per thread, 64 bytes
/// each plus the table's control byte).
pub(crate) const GENERATION: usize = 32_768;

/// Signatures per generation (two generations per thread, 128 bytes each).
pub(crate) const SIGNATURE_GENERATION: usize = 16_384;

/// A memo entry: a key and what was found for it, from a cache line's start (a memo of many keys
/// is read out of the cache: a key's entry of 64 bytes is one line per hit, not the two a key and
/// a value apart may span). Equal and hashed by the key alone.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Entry<K, V> {
    key: K,
    value: V,
}

impl<K: PartialEq, V> PartialEq for Entry<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl<K: Eq, V> Eq for Entry<K, V> {}
impl<K: Hash, V> Hash for Entry<K, V> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}
impl<K, V> Borrow<K> for Entry<K, V> {
    fn borrow(&self) -> &K {
        &self.key
    }
}

struct TwoGen<K, V> {
    current: SeededSet<Entry<K, V>>,
    previous: SeededSet<Entry<K, V>>,
}

impl<K: Hash + Eq + Copy, V: Copy> TwoGen<K, V> {
    fn new() -> Self {
        TwoGen { current: SeededSet::default(), previous: SeededSet::default() }
    }

    fn get(&mut self, k: &K, cap: usize) -> Option<V> {
        if let Some(e) = self.current.get(k) {
            return Some(e.value);
        }
        let e = *self.previous.get(k)?;
        self.insert(e.key, e.value, cap);
        Some(e.value)
    }

    fn insert(&mut self, key: K, value: V, cap: usize) {
        if self.current.len() >= cap {
            // The full generation becomes the previous one; the older one's table is reused.
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.clear();
        }
        self.current.replace(Entry { key, value });
    }
}

type Memo<K, V> = RefCell<TwoGen<K, V>>;

thread_local! {
    static KEYS: Memo<[u8; 32], NodeId> = RefCell::new(TwoGen::new());
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
    with(&KEYS, |m| m.get(key, GENERATION))
}

/// Remembers that `key` is a valid Ed25519 key whose identity has node id `id`.
pub(crate) fn remember(key: [u8; 32], id: NodeId) {
    with(&KEYS, |m| m.insert(key, id, GENERATION));
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
    with(&KEYS, |m| m.current.len() + m.previous.len())
}
