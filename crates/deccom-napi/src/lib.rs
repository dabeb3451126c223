//! deccom-napi: the Node-API binding of deccom.
//!
//! A thin layer: it owns sockets, threads and file I/O, converts between JavaScript and Rust, and
//! holds no protocol logic of its own (that lives in `deccom-core`). One file per exposed object.
#![deny(clippy::all)]

mod clock;
mod dht;
mod error;
mod identity;
mod impair;
mod kad;
mod kad_answer;
mod kad_lookup;
mod kad_node;
mod kad_wire;
mod noise;
mod pipeline;
mod prefault;
mod rudp;
mod sim_lane;
mod socket;
mod stages;
mod wire;

#[global_allocator]
static ALLOCATOR: prefault::Prefaulting = prefault::Prefaulting;
