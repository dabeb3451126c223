//! Buffers a node needs only while one of its calls runs, or while it has datagrams waiting to be
//! read, lent by the thread instead of owned by every node: a simulator's thousands of idle nodes
//! hold none of them.
//!
//! A node takes a buffer at the start of a call and gives it back at its end (the records of the
//! datagram being handled, a lookup's queries), or once the caller has read all it sent (the
//! frames). A buffer is only ever taken empty: nothing of one node's work reaches another.

use std::cell::{Cell, RefCell};

use super::Rec;
use crate::identity::NodeId;
use std::net::SocketAddr;

/// A lookup's queries to send: (id, UDP address, external address, who named it).
pub(super) type Query = (NodeId, SocketAddr, Option<SocketAddr>, Option<SocketAddr>);

/// Capacity of a new frames buffer (three padded FIND_NODEs fit).
const OUT_CAPACITY: usize = 4096;
/// Frames buffers a thread keeps for the next node that sends.
const SPARE_OUTS: usize = 4;
/// A frames buffer that grew beyond this is freed rather than kept.
const MAX_SPARE_OUT: usize = 64 * 1024;

thread_local! {
    static RECS: Cell<Vec<Rec>> = const { Cell::new(Vec::new()) };
    static QUERIES: Cell<Vec<Query>> = const { Cell::new(Vec::new()) };
    static OUTS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// The thread's records buffer (empty).
pub(super) fn take_recs() -> Vec<Rec> {
    let mut v = RECS.take();
    v.clear();
    v
}

/// Gives the records buffer back.
pub(super) fn put_recs(v: Vec<Rec>) {
    RECS.set(v);
}

/// The thread's queries buffer (empty).
pub(super) fn take_queries() -> Vec<Query> {
    let mut v = QUERIES.take();
    v.clear();
    v
}

/// Gives the queries buffer back.
pub(super) fn put_queries(v: Vec<Query>) {
    QUERIES.set(v);
}

/// An empty frames buffer: a spare one of the thread's, else a new one.
pub(super) fn lend_out() -> Vec<u8> {
    OUTS.with_borrow_mut(Vec::pop).unwrap_or_else(|| Vec::with_capacity(OUT_CAPACITY))
}

/// Takes back a frames buffer the node emptied (kept as a spare, or freed).
pub(super) fn return_out(mut v: Vec<u8>) {
    if v.capacity() == 0 || v.capacity() > MAX_SPARE_OUT {
        return;
    }
    v.clear();
    OUTS.with_borrow_mut(|spare| {
        if spare.len() < SPARE_OUTS {
            spare.push(v);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lent_buffer_is_empty_and_spares_are_bounded() {
        // Drain whatever spares this test thread has.
        while OUTS.with_borrow(|s| !s.is_empty()) {
            drop(lend_out());
        }
        let mut a = lend_out();
        assert!(a.is_empty() && a.capacity() >= OUT_CAPACITY);
        a.extend_from_slice(b"one node's frames");
        return_out(a);
        let b = lend_out();
        assert!(b.is_empty(), "a spare comes back empty");
        assert!(b.capacity() >= OUT_CAPACITY, "and keeps its capacity");

        // A buffer that grew too large is freed, not kept.
        return_out(Vec::with_capacity(MAX_SPARE_OUT + 1));
        assert_eq!(OUTS.with_borrow(Vec::len), 0);
        // At most SPARE_OUTS are kept.
        for _ in 0..SPARE_OUTS + 3 {
            return_out(Vec::with_capacity(OUT_CAPACITY));
        }
        assert_eq!(OUTS.with_borrow(Vec::len), SPARE_OUTS);

        let mut r = take_recs();
        r.push(Rec { at: 1, len: 2, id: [7; 32], udp: "10.0.0.1:1".parse().expect("an address"), external: None });
        put_recs(r);
        assert!(take_recs().is_empty(), "records are taken empty");
    }
}
