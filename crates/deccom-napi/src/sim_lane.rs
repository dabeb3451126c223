//! `SimLane`: the simulator's native delivery lane (`deccom_core::sim::Lane`) for `KadTable`s.
//!
//! A SimulatedNetwork created with `nativeDelivery` attaches the Kademlia nodes that sit right on
//! their SimTransport; their datagrams to one another, and their timers, are then run here. The
//! network keeps its own event queue and runs whichever head comes first.
//!
//! Calls that may schedule take `io`, a caller-owned buffer of f64 LE values: the next sequence
//! number at 0 (read, then written back), and written back: the lane's first event's time at 8
//! (Infinity: none) and sequence number at 16, the time of the last event run at 24, the events
//! run at 32, the node with events at 40. `run` also writes a datagram it hands back: the
//! sender's 18-byte address at 48, the destination's at 66, the length (u32 LE) at 84, the bytes
//! (tag first) from 88.

use deccom_core::sim::{Lane, LaneNode, NodeCounters, ParallelLane, Stop, MAX_THREADS};
use deccom_core::wire::{encode_raw_addr, RAW_ADDR_LEN};
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::error::{coded, Code};
use crate::kad::{address, KadTable};

/// Where a handed-back datagram's bytes start in `io`.
const IO_BYTES: usize = 88;

/// What `run` stopped for.
const RUN_IDLE: u32 = 0;
const RUN_EVENTS: u32 = 1;
const RUN_DELIVER: u32 = 2;

/// A KadTable held by the lane (kept alive while attached).
struct Table(Reference<KadTable>);

// SAFETY: a parallel lane moves a table to one of its threads only inside `SimLane::run`, while
// the JavaScript thread waits in that call, and back before the call returns; there the thread
// only runs the table's Rust node (no N-API call). The reference itself is created and dropped
// on the JavaScript thread: a worker whose node panicked leaks its part rather than drop it.
unsafe impl Send for Table {}

impl LaneNode for Table {
  fn datagram(&mut self, from: std::net::SocketAddr, data: &[u8], now: f64) {
    let t = &mut *self.0;
    let now = t.clock.at(now);
    t.node.handle_datagram(from, data, None, now);
  }

  fn timer(&mut self, now: f64) {
    let t = &mut *self.0;
    let now = t.clock.at(now);
    t.node.handle_timeout(now);
  }

  fn frames(&self) -> &[u8] {
    self.0.node.transmits()
  }

  fn consume(&mut self, n: usize) {
    self.0.node.consume_transmits(n);
  }

  fn deadline(&mut self) -> f64 {
    let t = &mut *self.0;
    t.node.poll_timeout().map_or(-1.0, |x| t.clock.ms(x))
  }

  fn has_events(&self) -> bool {
    self.0.node.has_events()
  }
}

#[napi]
pub struct SimLane {
  lane: Inner,
  /// The caller's next sequence number (a parallel lane numbers its own events; it keeps the
  /// caller's as it got it).
  seq: u64,
}

/// The one-thread lane, or the parallel one.
enum Inner {
  One(Lane<Table>),
  Parallel(ParallelLane<Table>),
}

/// `$body` on whichever lane runs, named `$l` (the two lanes' calls share their names).
macro_rules! on_lane {
  ($inner:expr, |$l:ident| $body:expr) => {
    match $inner {
      Inner::One($l) => $body,
      Inner::Parallel($l) => $body,
    }
  };
}

/// The most threads a `SimLane` runs on (`deccom_core::sim::MAX_THREADS`).
#[napi]
pub fn sim_max_threads() -> u32 {
  MAX_THREADS
}

/// A node's counters as JavaScript reads them: [sent, received, dropped_self].
fn counters_vec(c: NodeCounters) -> Vec<f64> {
  vec![c.sent as f64, c.received as f64, c.dropped_self as f64]
}

fn io_f64(io: &[u8], at: usize) -> f64 {
  io.get(at..at + 8).map_or(0.0, |b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
}

fn put_f64(io: &mut [u8], at: usize, x: f64) {
  io[at..at + 8].copy_from_slice(&x.to_le_bytes());
}

/// A sequence number as the caller passes it (Infinity: after all).
fn seq_of(x: f64) -> u64 {
  if x.is_finite() && x >= 0.0 {
    x as u64
  } else if x > 0.0 {
    u64::MAX
  } else {
    0
  }
}

#[napi]
impl SimLane {
  /// A lane on links of `latency` + [0, `jitter`) ms, seeded from `seedBase` (the FNV-1a hash of
  /// `"<network seed> "`), at most `maxLinks` held. From then on the process's small native
  /// allocations come from mimalloc, which suits the engine's many small blocks per datagram
  /// (see `prefault.rs`).
  ///
  /// With `threads` above 1 (at most `deccom_core::sim::MAX_THREADS`) the lane is a parallel one
  /// (`deccom_core::sim::ParallelLane`), which needs a latency above 0.
  ///
  /// # Errors
  /// `ERR_DECCOM_INVALID_ARGUMENT` for `threads` above 1 with a latency not above 0, or more
  /// threads than that.
  #[napi(constructor)]
  pub fn new(latency: f64, jitter: f64, seed_base: u32, max_links: u32, threads: Option<u32>) -> Result<Self> {
    crate::prefault::prefer_mimalloc();
    let lane = match threads.unwrap_or(1) {
      0 | 1 => Inner::One(Lane::new(latency, jitter, seed_base, max_links as usize)),
      n => Inner::Parallel(
        ParallelLane::new(latency, jitter, seed_base, n).ok_or_else(|| coded(Code::InvalidArgument, format!("a parallel lane needs a link latency above 0 and at most {MAX_THREADS} threads")))?,
      ),
    };
    Ok(SimLane { lane, seq: 0 })
  }

  /// Attaches `table` (a running node) at `addr`, its datagrams tagged `tag`; returns its
  /// index, or -1 when the address has one.
  ///
  /// # Errors
  /// `ERR_DECCOM_INVALID_ADDRESS` for an address that is not 18 bytes.
  #[napi]
  pub fn attach(&mut self, table: Reference<KadTable>, addr: &[u8], tag: u32) -> Result<i32> {
    let addr = address(addr)?;
    Ok(on_lane!(&mut self.lane, |l| l.attach(addr, tag as u8, Table(table))).map_or(-1, |i| i as i32))
  }

  /// Detaches node `i`; returns its counters [sent, received, dropped_self] (empty: not attached).
  /// Writes `io`'s head.
  #[napi]
  pub fn detach(&mut self, i: u32, mut io: BufferSlice) -> Result<Vec<f64>> {
    self.begin(&io)?;
    let out = on_lane!(&mut self.lane, |l| l.detach(i).map(|d| d.1));
    self.end(&mut io);
    Ok(out.map_or_else(Vec::new, counters_vec))
  }

  /// Node `i`'s counters [sent, received, dropped_self] (empty: not attached).
  #[napi]
  pub fn node_counters(&mut self, i: u32) -> Vec<f64> {
    on_lane!(&mut self.lane, |l| l.counters(i)).map_or_else(Vec::new, counters_vec)
  }

  /// Puts a datagram sent at `now` from `from` to `to` (18-byte addresses; `data`: tag byte
  /// first) on its link, as an event of the lane. Reads and writes `io`.
  ///
  /// # Errors
  /// `ERR_DECCOM_INVALID_ADDRESS` for an address that is not 18 bytes.
  #[napi]
  pub fn transmit(&mut self, from: &[u8], to: &[u8], data: &[u8], now: f64, mut io: BufferSlice) -> Result<()> {
    let (from, to) = (address(from)?, address(to)?);
    self.begin(&io)?;
    on_lane!(&mut self.lane, |l| l.transmit(from, to, data, now));
    self.end(&mut io);
    Ok(())
  }

  /// Arms node `i`'s timer at `at` (ms; below 0: none) unless it is armed earlier; `now`: the
  /// caller's time. Reads and writes `io` (see the module docs).
  #[napi]
  pub fn arm(&mut self, i: u32, at: f64, now: f64, mut io: BufferSlice) -> Result<()> {
    self.begin(&io)?;
    on_lane!(&mut self.lane, |l| l.arm(i, at, now));
    self.end(&mut io);
    Ok(())
  }

  /// Arms node `i`'s timer for deadline `at` as the caller's event (`time`, `seq`), which the
  /// caller cancels: a timer armed before the node was attached. Writes `io`'s head.
  #[napi]
  pub fn adopt(&mut self, i: u32, at: f64, time: f64, seq: f64, mut io: BufferSlice) -> Result<()> {
    self.begin(&io)?;
    match &mut self.lane {
      Inner::One(l) => l.adopt(i, at, time, Some(seq_of(seq))),
      Inner::Parallel(l) => l.adopt(i, at, time),
    }
    self.end(&mut io);
    Ok(())
  }

  /// Sends what node `i` queued (after a call made on its table directly: a lookup started, an
  /// approval) at `now` and arms its timer; returns whether it has events. Reads and writes `io`.
  #[napi]
  pub fn kick(&mut self, i: u32, now: f64, mut io: BufferSlice) -> Result<bool> {
    self.begin(&io)?;
    let events = on_lane!(&mut self.lane, |l| {
      l.now = now;
      l.kick(i)
    });
    self.end(&mut io);
    Ok(events)
  }

  /// Runs events before the caller's next one (`limitTime`, `limitSeq`; Infinity: none) and not
  /// after `deadline`, at most `budget`; returns 0 (nothing more before the limit), 1 (node
  /// `io[40]` has events) or 2 (a datagram to deliver, in `io`). Reads and writes `io`.
  #[napi]
  pub fn run(&mut self, limit_time: f64, limit_seq: f64, deadline: f64, budget: u32, mut io: BufferSlice) -> Result<u32> {
    self.begin(&io)?;
    let (n, stop) = match &mut self.lane {
      Inner::One(l) => l.run(limit_time, seq_of(limit_seq), deadline, budget),
      Inner::Parallel(l) => l.run(limit_time, deadline, budget),
    };
    put_f64(&mut io, 32, f64::from(n));
    let kind = match stop {
      Stop::Idle => RUN_IDLE,
      Stop::Events(i) => {
        put_f64(&mut io, 40, f64::from(i));
        RUN_EVENTS
      }
      Stop::Deliver { from, to, bytes } => {
        let Some(dst) = io.get_mut(IO_BYTES..IO_BYTES + bytes.len()) else {
          return Err(coded(Code::InvalidArgument, format!("io must hold {} bytes", IO_BYTES + bytes.len())));
        };
        dst.copy_from_slice(&bytes);
        io[48..48 + RAW_ADDR_LEN].copy_from_slice(&encode_raw_addr(from));
        io[66..66 + RAW_ADDR_LEN].copy_from_slice(&encode_raw_addr(to));
        io[84..88].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
        RUN_DELIVER
      }
    };
    self.end(&mut io);
    Ok(kind)
  }

  /// The lane's counters: [events, timers_fired, sent, bytes_sent, delivered, bytes_delivered].
  #[napi]
  pub fn stats(&self) -> Vec<f64> {
    let s = on_lane!(&self.lane, |l| l.stats());
    [s.events, s.timers_fired, s.sent, s.bytes_sent, s.delivered, s.bytes_delivered].map(|x| x as f64).to_vec()
  }

  /// Events waiting.
  #[napi(getter)]
  pub fn pending(&self) -> u32 {
    on_lane!(&self.lane, |l| l.pending()) as u32
  }

  /// Drops every event, link and node.
  #[napi]
  pub fn clear(&mut self) {
    on_lane!(&mut self.lane, |l| l.clear());
  }

  fn begin(&mut self, io: &[u8]) -> Result<()> {
    if io.len() < IO_BYTES {
      return Err(coded(Code::InvalidArgument, format!("io must hold at least {IO_BYTES} bytes")));
    }
    self.seq = seq_of(io_f64(io, 0));
    if let Inner::One(l) = &mut self.lane {
      l.seq = self.seq;
    }
    Ok(())
  }

  fn end(&mut self, io: &mut [u8]) {
    let (seq, head) = match &mut self.lane {
      Inner::One(l) => (l.seq, l.head()),
      // After any of the caller's events at that time.
      Inner::Parallel(l) => (self.seq, l.head().map(|h| (h.0, u64::MAX))),
    };
    put_f64(io, 0, seq as f64);
    let (t, s) = head.map_or((f64::INFINITY, 0.0), |(t, s)| if s == u64::MAX { (t, f64::INFINITY) } else { (t, s as f64) });
    put_f64(io, 8, t);
    put_f64(io, 16, s);
    put_f64(io, 24, on_lane!(&self.lane, |l| l.now));
  }
}
