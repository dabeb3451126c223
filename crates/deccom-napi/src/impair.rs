//! `Impairment`: the impairment model of deccom-core (`deccom_core::impair`) for JavaScript.
//!
//! FaultyTransport and Delay driven from JavaScript, and every link of a SimulatedNetwork, hold
//! one instance each and call `offer` once per datagram: it returns the verdict as a bit set and
//! writes the due times and the bit to flip into a caller-owned `Float64Array`, so a call
//! allocates nothing on either side. The decisions are the ones the socket thread takes for the
//! same seed and datagram sequence (see the module documentation of `deccom_core::impair`).

use deccom_core::impair::{ImpairConfig, ImpairStats};
use napi::bindgen_prelude::*;
use napi_derive::napi;

/// Parameters of an impairment (see `deccom_core::impair::ImpairConfig`). Probabilities 0..1,
/// times in ms, `bandwidth` in bytes per ms (omitted, 0 or Infinity: unlimited), `maxQueueBytes`
/// the largest serialization backlog (default unbounded).
#[napi(object)]
#[derive(Default)]
pub struct ImpairOptions {
  pub drop: Option<f64>,
  pub duplicate: Option<f64>,
  pub reorder: Option<f64>,
  pub corrupt: Option<f64>,
  pub latency: Option<f64>,
  pub jitter: Option<f64>,
  pub reorder_delay: Option<f64>,
  pub bandwidth: Option<f64>,
  pub max_queue_bytes: Option<f64>,
}

fn config(o: &ImpairOptions) -> ImpairConfig {
  let d = ImpairConfig::default();
  ImpairConfig {
    drop: o.drop.unwrap_or(d.drop),
    duplicate: o.duplicate.unwrap_or(d.duplicate),
    reorder: o.reorder.unwrap_or(d.reorder),
    corrupt: o.corrupt.unwrap_or(d.corrupt),
    latency: o.latency.unwrap_or(d.latency),
    jitter: o.jitter.unwrap_or(d.jitter),
    reorder_delay: o.reorder_delay.unwrap_or(d.reorder_delay),
    bytes_per_ms: o.bandwidth.unwrap_or(d.bytes_per_ms),
    max_backlog: o.max_queue_bytes.unwrap_or(d.max_backlog),
  }
}

/// Counters of an impairment's decisions.
#[napi(object)]
pub struct ImpairCounters {
  pub offered: f64,
  pub passed: f64,
  pub lost: f64,
  pub queue_full: f64,
  pub duplicated: f64,
  pub reordered: f64,
  pub corrupted: f64,
}

impl From<ImpairStats> for ImpairCounters {
  fn from(s: ImpairStats) -> Self {
    ImpairCounters {
      offered: s.offered as f64,
      passed: s.passed as f64,
      lost: s.lost as f64,
      queue_full: s.queue_full as f64,
      duplicated: s.duplicated as f64,
      reordered: s.reordered as f64,
      corrupted: s.corrupted as f64,
    }
  }
}

/// One seeded impairment instance: a link, or one direction of a test layer.
#[napi]
pub struct Impairment {
  inner: deccom_core::impair::Impairment,
}

#[napi]
impl Impairment {
  /// An instance whose random stream starts at `seed` (an integer 0..2^53; fractions truncated).
  ///
  /// # Errors
  /// `ERR_DECCOM_INVALID_ARGUMENT` for a negative or non-finite seed.
  #[napi(constructor)]
  pub fn new(seed: f64, options: Option<ImpairOptions>) -> Result<Self> {
    if !(seed.is_finite() && seed >= 0.0) {
      return Err(crate::error::coded(crate::error::Code::InvalidArgument, format!("an impairment seed is an integer >= 0, got {seed}")));
    }
    Ok(Impairment { inner: deccom_core::impair::Impairment::new(config(&options.unwrap_or_default()), seed as u64) })
  }

  /// Replaces the parameters; the random stream and the serialization backlog carry on.
  #[napi]
  pub fn configure(&mut self, options: ImpairOptions) {
    self.inner.set_config(config(&options));
  }

  /// Decides the fate of a datagram of `len` bytes (the layer tag included) offered at `now`
  /// (ms). Returns the verdict's bit set: copies in bits 0-1, then lost (4), queue full (8),
  /// duplicated (16), reordered (32), corrupted (64). Writes into `out` (3 entries or more): the
  /// due time of the first copy, of the second copy, and the index of the bit to flip (counted
  /// from byte 0's lowest bit, always >= 8; -1 for none).
  #[napi]
  pub fn offer(&mut self, now: f64, len: u32, mut out: Float64ArraySlice) -> u32 {
    let v = self.inner.offer(now, len as usize);
    // SAFETY: the JavaScript thread is inside this synchronous call, so nothing else can touch
    // the typed array's memory while we write to it.
    let out: &mut [f64] = unsafe { out.as_mut() };
    for (o, x) in out.iter_mut().zip([v.at[0], v.at[1], v.corrupt_bit.map_or(-1.0, |b| b as f64)]) {
      *o = x;
    }
    v.code()
  }

  /// True when nothing waits for serialization at `now` (the instance can be dropped and
  /// recreated without changing any timing).
  #[napi]
  pub fn idle(&self, now: f64) -> bool {
    self.inner.idle(now)
  }

  /// Counters of the decisions taken.
  #[napi]
  pub fn stats(&self) -> ImpairCounters {
    self.inner.stats().into()
  }
}
