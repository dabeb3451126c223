//! The caller's clock for objects JavaScript drives (RudpEndpoint, NoiseEndpoint, KadTable, ...).
//!
//! JavaScript passes time as milliseconds on its own clock: the real `performance.now()` or a
//! SimulatedNetwork's virtual time. The sans-IO cores take `Instant`s. A `JsClock` pins one
//! `Instant` to the caller's time at construction and maps both ways from there, so virtual time
//! runs through the cores unchanged (and as fast as the simulation wants).

use std::time::{Duration, Instant};

use napi::bindgen_prelude::{BufferSlice, Result, Uint32ArraySlice};
use napi::Env;
use napi_derive::napi;

#[derive(Clone, Copy, Debug)]
pub(crate) struct JsClock {
  /// The instant that corresponds to `origin_ms`.
  base: Instant,
  origin_ms: f64,
}

/// The longest duration a caller's milliseconds become (about 31 years): longer ones would
/// overflow an `Instant` (a panic, which would abort the process), and nothing waits that long.
pub const MAX_MS: f64 = 1e12;

/// `ms` milliseconds as a Duration, at most [`MAX_MS`] (not finite or not above 0: zero).
pub fn duration_of_ms(ms: f64) -> Duration {
  if ms.is_finite() && ms > 0.0 {
    Duration::from_secs_f64(ms.min(MAX_MS) / 1000.0)
  } else {
    Duration::ZERO
  }
}

impl JsClock {
  /// `now` is the caller's current time in milliseconds.
  pub fn new(now: f64) -> JsClock {
    JsClock { base: Instant::now(), origin_ms: now }
  }

  /// The instant for the caller's time `ms` (times before the origin, or not finite, map to it).
  pub fn at(&self, ms: f64) -> Instant {
    self.base + duration_of_ms(ms - self.origin_ms)
  }

  /// The caller's time for instant `t`.
  pub fn ms(&self, t: Instant) -> f64 {
    self.origin_ms + t.saturating_duration_since(self.base).as_secs_f64() * 1000.0
  }

  /// The instant the clock was pinned at (what the core was created with).
  pub fn base(&self) -> Instant {
    self.base
  }
}

/// Datagrams to send, as the JavaScript-driven endpoints return them: bytes back to back, their
/// lengths, and each one's peer.
#[napi(object)]
pub struct Transmits<'env> {
  pub data: BufferSlice<'env>,
  pub lens: Uint32ArraySlice<'env>,
  pub peers: Uint32ArraySlice<'env>,
}

/// Batches up to this many bytes are copied onto the JavaScript heap; larger ones are handed over
/// without a copy.
const COPY_MAX: usize = 64 << 10;

/// Drains up to `max` datagrams from `poll` into [`Transmits`] (null when there are none).
///
/// Small batches (handshake messages, acknowledgements) are copied onto the JavaScript heap:
/// that costs less than an external buffer, whose finalizer the garbage collector must run
/// (measured: JS-driven Noise handshakes 8–10 % faster). Large ones keep the zero-copy handover.
pub(crate) fn transmits<'env>(env: &'env Env, max: usize, out: &mut Vec<u8>, poll: impl FnMut(&mut Vec<u8>) -> Option<u32>) -> Result<Option<Transmits<'env>>> {
  let Some((data, lens, peers)) = collect_transmits(max, out, poll) else {
    return Ok(None);
  };
  let data = if data.len() <= COPY_MAX { BufferSlice::copy_from(env, &data)? } else { BufferSlice::from_data(env, data)? };
  Ok(Some(Transmits { data, lens: Uint32ArraySlice::copy_from(env, &lens)?, peers: Uint32ArraySlice::copy_from(env, &peers)? }))
}

/// Drains up to `max` datagrams from `poll` (which writes one into the buffer and returns its
/// peer) into one batch: payloads back to back, their lengths, their peers.
fn collect_transmits(max: usize, out: &mut Vec<u8>, mut poll: impl FnMut(&mut Vec<u8>) -> Option<u32>) -> Option<(Vec<u8>, Vec<u32>, Vec<u32>)> {
  let (mut data, mut lens, mut peers) = (Vec::new(), Vec::new(), Vec::new());
  while lens.len() < max {
    let Some(peer) = poll(out) else { break };
    data.extend_from_slice(out);
    lens.push(out.len() as u32);
    peers.push(peer);
  }
  (!lens.is_empty()).then_some((data, lens, peers))
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn maps_both_ways_and_clamps_the_past() {
    let c = JsClock::new(1000.0);
    assert_eq!(c.at(1000.0), c.base());
    assert_eq!(c.at(500.0), c.base());
    assert_eq!(c.at(f64::NAN), c.base());
    let t = c.at(1250.5);
    assert!((c.ms(t) - 1250.5).abs() < 1e-6);
  }

  #[test]
  fn collects_in_order_up_to_max() {
    let mut n = 0u32;
    let mut out = Vec::new();
    let (data, lens, peers) = collect_transmits(3, &mut out, |o| {
      n += 1;
      o.clear();
      o.extend_from_slice(&[n as u8; 2]);
      Some(n)
    })
    .unwrap();
    assert_eq!((data, lens, peers), (vec![1, 1, 2, 2, 3, 3], vec![2, 2, 2], vec![1, 2, 3]));
    assert!(collect_transmits(3, &mut out, |_| None).is_none());
  }
}
