//! The socket's I/O thread, and the engine it shares with small JavaScript-thread sends.
//!
//! It sleeps on the poller until the socket is readable or writable, a stage's timer is due, or
//! JavaScript queued a command (the poller's notify). Each round it applies the queued commands,
//! flushes the send queue when writable, drains the socket — `recvmmsg` (32 datagrams a call on
//! Linux, one elsewhere) with UDP GRO where the kernel offers it, each datagram through
//! `Pipeline::receive`, driving the pipeline after every receive call so acknowledgements and
//! new data leave while the burst goes on — then drives the stages' timers and transmits,
//! publishes the stages' counters and hands the batch to JavaScript.
//!
//! The pipeline and the batch being built live in an [`Engine`] behind a mutex that the I/O
//! thread holds for a whole round (never while it sleeps). A small reliable send or a handshake
//! start from JavaScript that finds the engine free runs on the JavaScript thread at once
//! ([`Shared::inline`]): the datagram leaves without waking the I/O thread, which is woken only
//! when the send made a stage's timer due earlier than the thread's sleep ends. When the engine
//! is busy the call queues a command as before.
//!
//! The pipeline is dropped on the thread that closes the socket, so whatever the stages still
//! hold (JavaScript buffers of unfinished sends among them) is released there.

use std::collections::VecDeque;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use polling::Events;
use quinn_udp::RecvMeta;

use super::aux::AUX_KEY_BASE;
use super::batch::{Batcher, Rx, Slots, WakeFn};
use super::commands::{apply, Command};
use super::send::normalize;
use super::{lock, Shared};
use crate::pipeline::Pipeline;

/// Bytes of received datagrams after which the pipeline is driven (acknowledgements sent) within
/// one receive call.
const DRIVE_EVERY_BYTES: usize = 256 << 10;

/// Largest UDP payload (IPv6 jumbograms aside); receive slots are this large so GRO can fill them.
const SLOT: usize = 64 * 1024;

/// Sends run on the JavaScript thread at most once per this interval (see [`Shared::inline`]).
const INLINE_GAP: Duration = Duration::from_micros(100);

/// The pipeline, the receive batch being built and the JavaScript wake-up: what a round works on.
pub(crate) struct Engine {
  pub pipeline: Pipeline,
  pub slots: Slots,
  pub batch: Batcher,
  /// None once the I/O thread ended (the socket is closing).
  pub tsfn: Option<WakeFn>,
  pub max_batch: usize,
  /// The I/O thread is asleep (or about to be) until `sleep_until` (None: until I/O or a notify).
  sleeping: bool,
  sleep_until: Option<Instant>,
  /// When the last send run on the JavaScript thread ended.
  last_inline: Option<Instant>,
}

impl Engine {
  pub fn new(tsfn: WakeFn, max_batch: usize) -> Engine {
    Engine { pipeline: Pipeline::default(), slots: Slots::new(), batch: Batcher::new(), tsfn: Some(tsfn), max_batch, sleeping: false, sleep_until: None, last_inline: None }
  }
}

impl Shared {
  fn send_fn(&self) -> impl Fn(&[u8], &[u32], &[SocketAddr]) + '_ {
    move |data: &[u8], lens: &[u32], dests: &[SocketAddr]| {
      self.send_runs(data, lens, |i| Some(dests[i]), |i, j| dests[i] == dests[j]);
    }
  }

  /// Runs `cmd` on the calling (JavaScript) thread when the engine is free: the commands queued
  /// before it first, then it, then the pipeline is driven (its datagrams leave now), the
  /// counters published and whatever it reported handed to JavaScript. Returns the command back
  /// when the I/O thread holds the engine (the caller queues it).
  pub(crate) fn inline(&self, cmd: Command) -> Result<(), Command> {
    let Ok(mut guard) = self.engine.try_lock() else { return Err(cmd) };
    let e = &mut *guard;
    let Some(tsfn) = e.tsfn.as_ref() else { return Err(cmd) };
    // The first send of a burst runs here; the ones right behind it (a lookup's α queries) go
    // to the I/O thread, which sends them while JavaScript goes on (a loopback send costs the
    // sender the receiver's wake-up, tens to hundreds of µs on a busy machine).
    // A transfer in progress is the I/O thread's work: a send behind it waits its turn there.
    if e.last_inline.is_some_and(|t| t.elapsed() < INLINE_GAP) || e.pipeline.busy() {
      return Err(cmd);
    }
    let send = self.send_fn();
    let send = &send;
    let mut rx = Rx::new(self, tsfn, &mut e.slots, &mut e.batch, e.max_batch);
    let now = Instant::now();
    let mut queued = VecDeque::new();
    self.take_commands(&mut queued);
    for c in queued.drain(..) {
      apply(self, &mut e.pipeline, c, now, send, &mut rx);
    }
    apply(self, &mut e.pipeline, cmd, now, send, &mut rx);
    e.pipeline.drive(now, send, &mut rx);
    e.pipeline.stats(&mut lock(&self.stats));
    rx.deliver();
    e.last_inline = Some(Instant::now());
    // A timer now due before the I/O thread's sleep ends (a retransmission, a handshake
    // timeout) needs the thread awake for it; otherwise it sleeps on.
    if e.sleeping {
      if let Some(t) = e.pipeline.next_timeout() {
        if e.sleep_until.is_none_or(|s| t < s) {
          e.sleep_until = Some(t);
          let _ = self.poller.notify();
        }
      }
    }
    Ok(())
  }
}

/// One receive slot (`stride`-byte datagrams back to back, as GRO coalesced them) up through
/// the pipeline, datagram by datagram, counted.
pub(crate) fn split(sh: &Shared, pipeline: &mut Pipeline, now: Instant, from: SocketAddr, buf: &[u8], stride: usize, rx: &mut Rx<'_>) {
  let stride = stride.max(1);
  let mut start = 0;
  // `first` lets a 0-byte datagram through as one entry of length 0 (JavaScript counts it).
  let mut first = true;
  while start < buf.len() || std::mem::take(&mut first) {
    first = false;
    let end = (start + stride).min(buf.len());
    sh.counters.rx_datagrams.fetch_add(1, Relaxed);
    sh.counters.rx_bytes.fetch_add((end - start) as u64, Relaxed);
    pipeline.receive(now, from, &buf[start..end], rx);
    start = end;
  }
}

pub(crate) fn io_loop(sh: &Shared) {
  let mut events = Events::new();
  let mut scratch = vec![0u8; SLOT * quinn_udp::BATCH_SIZE];
  let mut metas = vec![RecvMeta::default(); quinn_udp::BATCH_SIZE];
  let mut commands = VecDeque::new();
  let mut aux_keys: Vec<usize> = Vec::new();
  let mut aux_rx: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
  let send = sh.send_fn();
  let send = &send;
  // Applies what JavaScript queued, in order.
  let mut run_commands = |pipeline: &mut Pipeline, rx: &mut Rx<'_>| {
    sh.take_commands(&mut commands);
    let now = Instant::now();
    for cmd in commands.drain(..) {
      apply(sh, pipeline, cmd, now, send, rx);
    }
  };
  while !sh.closing.load(Relaxed) {
    events.clear();
    let timeout = {
      let mut e = lock(&sh.engine);
      let next = e.pipeline.next_timeout();
      e.sleeping = true;
      e.sleep_until = next;
      next.map(|t| t.saturating_duration_since(Instant::now()))
    };
    if let Err(e) = sh.poller.wait(&mut events, timeout) {
      if e.kind() == io::ErrorKind::Interrupted {
        continue;
      }
      sh.counters.rx_errors.fetch_add(1, Relaxed);
      std::thread::sleep(Duration::from_millis(10));
      continue;
    }
    if sh.closing.load(Relaxed) {
      break;
    }
    let mut guard = lock(&sh.engine);
    let eng = &mut *guard;
    eng.sleeping = false;
    let Some(tsfn) = eng.tsfn.as_ref() else { break };
    let pipeline = &mut eng.pipeline;
    let (mut readable, mut writable) = (false, false);
    aux_keys.clear();
    for ev in events.iter() {
      if ev.key >= AUX_KEY_BASE {
        aux_keys.push(ev.key);
        continue;
      }
      readable |= ev.readable;
      writable |= ev.writable;
    }
    if writable {
      let mut pending = lock(&sh.pending);
      sh.flush_pending(&mut pending);
    }
    let mut rx = Rx::new(sh, tsfn, &mut eng.slots, &mut eng.batch, eng.max_batch);
    run_commands(pipeline, &mut rx);
    if readable {
      loop {
        let mut iovs: Vec<IoSliceMut<'_>> = scratch.chunks_mut(SLOT).map(IoSliceMut::new).collect();
        match sh.state.recv(sh.sock(), &mut iovs, &mut metas) {
          Ok(n) => {
            sh.counters.rx_syscalls.fetch_add(1, Relaxed);
            drop(iovs);
            let now = Instant::now();
            let mut since_drive = 0usize;
            for (m, buf) in metas.iter().take(n).zip(scratch.chunks(SLOT)) {
              if since_drive >= DRIVE_EVERY_BYTES {
                // A call can return 2 MB (32 GRO slots): acknowledge what was processed so far
                // before the rest, so the sender refills while this thread copies.
                pipeline.drive(now, send, &mut rx);
                since_drive = 0;
              }
              since_drive += m.len;
              split(sh, pipeline, now, normalize(m.addr), &buf[..m.len], m.stride, &mut rx);
            }
            // Commands (sends) queued meanwhile join, then acknowledge and send while the burst
            // goes on, not only after it.
            run_commands(pipeline, &mut rx);
            pipeline.drive(now, send, &mut rx);
          }
          Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
          Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
          // Windows reports ICMP port-unreachable of earlier sends as a receive error: not fatal.
          Err(e) if e.kind() == io::ErrorKind::ConnectionReset => continue,
          Err(_) => {
            sh.counters.rx_errors.fetch_add(1, Relaxed);
            break;
          }
        }
      }
    }
    // Auxiliary sockets: what they received goes up as from their remote (the table's lock is
    // released first: the pipeline may send, and sending looks the table up).
    for &key in &aux_keys {
      sh.aux.receive(&sh.poller, key, &mut scratch[..SLOT], &mut aux_rx, 64);
      let now = Instant::now();
      for (from, data) in aux_rx.drain(..) {
        sh.counters.rx_datagrams.fetch_add(1, Relaxed);
        sh.counters.rx_bytes.fetch_add(data.len() as u64, Relaxed);
        pipeline.receive(now, from, &data, &mut rx);
      }
    }
    let now = Instant::now();
    pipeline.end_of_burst(now, &mut rx);
    pipeline.drive(now, send, &mut rx);
    // Published before the batch, so JavaScript reading the counters on wake-up sees them at
    // least as new as the batch.
    pipeline.stats(&mut lock(&sh.stats));
    rx.deliver();
    let pending = lock(&sh.pending);
    if sh.arm(&pending).is_err() {
      sh.counters.rx_errors.fetch_add(1, Relaxed);
    }
  }
  // Released here, on this thread; the pipeline stays for the closing thread to drop.
  lock(&sh.engine).tsfn = None;
}
