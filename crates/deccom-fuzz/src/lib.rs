//! Fuzz targets for deccom-core, shared by the AFL++ binaries (`src/bin/*.rs`, built with
//! `cargo afl build`) and by the corpus replay test (`tests/replay.rs`, plain `cargo test`).
//!
//! Every target takes arbitrary bytes and must never panic: a panic (including a failed
//! assertion of a property checked here, or an arithmetic overflow: the profile keeps overflow
//! checks and debug assertions on) is a crash for AFL++ and a failure for the replay test.
//!
//! | target           | what the bytes are                                                      |
//! |------------------|--------------------------------------------------------------------------|
//! | `rudp_wire`      | one reliable-UDP datagram: decode, re-encode, compare                    |
//! | `noise_wire`     | one Noise datagram: decode, re-encode, compare                           |
//! | `noise_frame`    | one Noise frame: decode, re-encode, compare                              |
//! | `kad_wire`       | one Kademlia message: decode, re-encode, compare                         |
//! | `dht_wire`       | one DHT message: decode, re-encode, compare; the storer's reply size     |
//! | `mux_decode`     | one connection frame (tag 12): decode, check, re-encode, compare         |
//! | `records`        | selector byte, then a peer record / identity / address / key file        |
//! | `roundtrip`      | a description of values: encode, decode, compare (`decode(encode(x)) == x`) |
//! | `reassembly`     | operations on a frame `Reassembly`, checked against a model              |
//! | `rudp_endpoint`  | a scenario for two reliable-UDP endpoints on a hostile network           |
//! | `noise_endpoint` | a scenario for two Noise endpoints on a hostile network                  |

pub mod decode;
pub mod input;
pub mod noise_endpoint;
pub mod reassembly;
pub mod dht_wire;
pub mod roundtrip;
pub mod rudp_endpoint;

pub use dht_wire::dht_wire;
pub use decode::{kad_wire, mux_decode, noise_frame, noise_wire, records, rudp_wire};
pub use noise_endpoint::noise_endpoint;
pub use reassembly::reassembly;
pub use roundtrip::roundtrip;
pub use rudp_endpoint::rudp_endpoint;

/// A fuzz target: takes any bytes, panics only on a finding.
pub type Target = fn(&[u8]);

/// Every target by name, for the replay test.
pub const TARGETS: &[(&str, Target)] = &[
    ("rudp_wire", rudp_wire),
    ("noise_wire", noise_wire),
    ("noise_frame", noise_frame),
    ("kad_wire", kad_wire),
    ("mux_decode", mux_decode),
    ("records", records),
    ("roundtrip", roundtrip),
    ("reassembly", reassembly),
    ("rudp_endpoint", rudp_endpoint),
    ("noise_endpoint", noise_endpoint),
    ("dht_wire", dht_wire),
];
