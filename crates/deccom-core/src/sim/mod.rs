//! Pieces of the simulator that run natively: the delivery lane between native nodes ([`lane`]),
//! and its parallel form ([`parallel`]).

pub mod lane;
pub mod parallel;
mod queue;
#[cfg(test)]
mod testing;

pub use lane::{Lane, LaneNode, LaneStats, NodeCounters, Stop};
pub use parallel::{ParallelLane, MAX_THREADS};
