//! Pieces of the simulator that run natively: the delivery lane between native nodes ([`lane`]).

pub mod lane;

pub use lane::{Lane, LaneNode, LaneStats, NodeCounters, Stop};
