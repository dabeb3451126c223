//! deccom-core: the sans-IO heart of deccom.
//!
//! Nothing in this crate opens a socket, reads the clock or spawns a thread. Every state machine
//! takes its inputs (bytes, `now`, randomness) from the caller and returns what to do as values.
//!
//! # Modules
//!
//! - [`identity`]: Ed25519 / name identities, node ids (SHA-256 of the encoded public identity),
//!   signatures, and the key file format.
//! - [`wire`]: checked binary codecs that never panic on untrusted input, starting with
//!   [`wire::peer_record`].
//! - [`error`]: the crate's one error type, each variant with a stable `ERR_DECCOM_*` code.
//! - [`dht`]: DHT storage (topic announcements, immutable and signed mutable values), sans-IO.
//! - [`impair`]: the one seeded impairment model (drop, duplicate, reorder, corrupt, latency,
//!   jitter, bandwidth) behind the test layers and the simulator's links; [`delay`] holds
//!   datagrams until they are due.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod delay;
pub mod dht;
pub mod error;
pub mod identity;
pub mod impair;
pub mod kad;
pub mod noise;
pub mod rudp;
pub mod sim;
pub mod wire;

pub use error::Error;
pub use identity::{node_id, verify, Identity, NodeId, PublicIdentity};
pub use wire::peer_record::PeerRecord;
