//! A bounded memo of Ed25519 public keys already found valid, with their node ids.
//!
//! Checking a key (decompressing the curve point) costs microseconds and computing a node id is a
//! SHA-256; a node decodes the same peers' records over and over (every NODES answer carries up to
//! 20 of them, and a simulation runs thousands of nodes in one process). Both are pure functions of
//! the 32 key bytes, so the result is remembered: a key found valid once is not checked again and
//! its id is not recomputed. Invalid keys are not remembered (they are checked every time).
//!
//! Memory is bounded: two generations of at most [`GENERATION`] keys each; when the current one is
//! full it becomes the previous one and the older is dropped, so keys in use stay (a hit in the
//! previous generation is copied into the current one).

use std::collections::HashMap;
use std::sync::Mutex;

use super::NodeId;

/// Keys per generation (two generations: at most twice this many are kept, ~100 bytes each).
pub(crate) const GENERATION: usize = 32_768;

struct Memo {
    current: HashMap<[u8; 32], NodeId>,
    previous: HashMap<[u8; 32], NodeId>,
}

static MEMO: Mutex<Option<Memo>> = Mutex::new(None);

/// The node id of a key found valid before, if remembered.
pub(crate) fn lookup(key: &[u8; 32]) -> Option<NodeId> {
    let mut guard = MEMO.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let memo = guard.as_mut()?;
    if let Some(id) = memo.current.get(key) {
        return Some(*id);
    }
    let id = *memo.previous.get(key)?;
    insert_into(memo, *key, id);
    Some(id)
}

/// Remembers that `key` is a valid Ed25519 key whose identity has node id `id`.
pub(crate) fn remember(key: [u8; 32], id: NodeId) {
    let mut guard = MEMO.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let memo = guard.get_or_insert_with(|| Memo { current: HashMap::new(), previous: HashMap::new() });
    insert_into(memo, key, id);
}

fn insert_into(memo: &mut Memo, key: [u8; 32], id: NodeId) {
    if memo.current.len() >= GENERATION {
        memo.previous = std::mem::take(&mut memo.current);
    }
    memo.current.insert(key, id);
}

#[cfg(test)]
pub(crate) fn len() -> usize {
    let guard = MEMO.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    guard.as_ref().map_or(0, |m| m.current.len() + m.previous.len())
}
