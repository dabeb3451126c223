//! The socket's I/O thread: the only owner of the pipeline.
//!
//! It sleeps on the poller until the socket is readable or writable, a stage's timer is due, or
//! JavaScript queued a command (the poller's notify). Each round it applies the queued commands,
//! flushes the send queue when writable, drains the socket — `recvmmsg` (32 datagrams a call on
//! Linux, one elsewhere) with UDP GRO where the kernel offers it, each datagram through
//! `Pipeline::receive`, driving the pipeline after every receive call so acknowledgements and
//! new data leave while the burst goes on — then drives the stages' timers and transmits,
//! publishes the stages' counters and hands the batch to JavaScript.
//!
//! It returns the pipeline when the socket closes, so whatever the stages still hold (JavaScript
//! buffers of unfinished sends among them) is released on the closing thread.

use std::collections::VecDeque;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use polling::Events;
use quinn_udp::RecvMeta;

use super::aux::AUX_KEY_BASE;
use super::batch::{Batcher, Rx, Slots, WakeFn};
use super::commands::apply;
use super::send::normalize;
use super::{lock, Shared};
use crate::pipeline::Pipeline;

/// Bytes of received datagrams after which the pipeline is driven (acknowledgements sent) within
/// one receive call.
const DRIVE_EVERY_BYTES: usize = 256 << 10;

/// Largest UDP payload (IPv6 jumbograms aside); receive slots are this large so GRO can fill them.
const SLOT: usize = 64 * 1024;

pub(crate) fn io_loop(sh: &Shared, tsfn: WakeFn, max_batch: usize) -> Pipeline {
  let mut events = Events::new();
  let mut scratch = vec![0u8; SLOT * quinn_udp::BATCH_SIZE];
  let mut metas = vec![RecvMeta::default(); quinn_udp::BATCH_SIZE];
  let mut slots = Slots::new();
  let mut batch = Batcher::new();
  let mut pipeline = Pipeline::default();
  let mut commands = VecDeque::new();
  let mut aux_keys: Vec<usize> = Vec::new();
  let mut aux_rx: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
  let send = |data: &[u8], lens: &[u32], dests: &[SocketAddr]| {
    sh.send_runs(data, lens, |i| Some(dests[i]), |i, j| dests[i] == dests[j]);
  };
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
    let timeout = pipeline.next_timeout().map(|t| t.saturating_duration_since(Instant::now()));
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
    let mut rx = Rx { sh, tsfn: &tsfn, slots: &mut slots, batch: &mut batch, max_batch };
    run_commands(&mut pipeline, &mut rx);
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
              let from = normalize(m.addr);
              let stride = m.stride.max(1);
              let mut start = 0;
              // `first` lets a 0-byte datagram through as one entry of length 0 (JavaScript counts it).
              let mut first = true;
              while start < m.len || std::mem::take(&mut first) {
                first = false;
                let end = (start + stride).min(m.len);
                sh.counters.rx_datagrams.fetch_add(1, Relaxed);
                sh.counters.rx_bytes.fetch_add((end - start) as u64, Relaxed);
                pipeline.receive(now, from, &buf[start..end], &mut rx);
                start = end;
              }
            }
            // Commands (sends) queued meanwhile join, then acknowledge and send while the burst
            // goes on, not only after it.
            run_commands(&mut pipeline, &mut rx);
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
  drop(tsfn);
  pipeline
}
