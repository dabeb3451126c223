//! Sending: GSO runs and the bounded queue for when the kernel's send buffer is full.
//!
//! Datagrams arrive laid out back to back with their lengths (from JavaScript's `sendBatch`, or
//! from the pipeline's transmit batch in the I/O thread). Runs of equal-size datagrams to one
//! destination leave in one `sendmsg` with UDP GSO (`UDP_SEGMENT`) where the kernel offers it.
//! The socket is non-blocking; what the kernel cannot take now (`EAGAIN`) is queued, bounded in
//! bytes, and flushed by the I/O thread when the socket becomes writable. Sends happen on the
//! calling thread; the queue's lock is held only while sending or queuing.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;

use polling::Event;
use quinn_udp::Transmit;

use super::{lock, Shared, KEY};

/// Total payload bytes a GSO send may carry (kernel limit is 64 KiB including headers).
const GSO_MAX_BYTES: usize = 65_000;

/// Datagrams the kernel could not take yet.
pub(crate) struct Pending {
  pub queue: VecDeque<(SocketAddr, Vec<u8>)>,
  pub bytes: usize,
}

impl Shared {
  /// Re-arms the (one-shot) poller; asks for writability only while something is queued.
  /// Called with the pending lock held, so the interest always matches the queue.
  /// While the JavaScript thread receives (see `js_rx`), this thread asks for writability only.
  pub(crate) fn arm(&self, pending: &Pending) -> io::Result<()> {
    let js = self.js_rx.load(Relaxed);
    let ev = match (pending.queue.is_empty(), js) {
      (true, false) => Event::readable(KEY),
      (false, false) => Event::all(KEY),
      (true, true) => Event::none(KEY),
      (false, true) => Event::writable(KEY),
    };
    self.poller.modify(&self.socket, ev)
  }

  fn to_socket_family(&self, addr: SocketAddr) -> SocketAddr {
    match addr {
      SocketAddr::V4(v4) if self.is_v6 => SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port()),
      other => other,
    }
  }

  /// Sends one transmit; GSO failures fall back to one datagram per call.
  fn transmit(&self, dest: SocketAddr, contents: &[u8], seg: usize) -> io::Result<()> {
    if self.aux.send(dest, contents, seg) {
      return Ok(());
    }
    let dest = self.to_socket_family(dest);
    let segments = contents.len().div_ceil(seg.max(1));
    let t = Transmit { destination: dest, ecn: None, contents, segment_size: (segments > 1).then_some(seg), src_ip: None };
    self.counters.tx_syscalls.fetch_add(1, Relaxed);
    match self.state.try_send(self.sock(), &t) {
      Ok(()) => {
        self.counters.tx_datagrams.fetch_add(segments as u64, Relaxed);
        self.counters.tx_bytes.fetch_add(contents.len() as u64, Relaxed);
        Ok(())
      }
      Err(e) if segments > 1 && e.kind() != io::ErrorKind::WouldBlock => {
        // The path refused GSO (EIO/EINVAL): quinn-udp lowers max_gso_segments; send one by one.
        for chunk in contents.chunks(seg) {
          self.transmit(dest, chunk, chunk.len())?;
        }
        Ok(())
      }
      Err(e) => Err(e),
    }
  }

  /// Sends datagrams laid out back to back in `data` (`lens[i]` bytes each, to `dest(i)`): runs of
  /// equal-size datagrams to one destination leave in one GSO send. What the kernel cannot take
  /// now is queued (bounded) for the I/O thread. Returns how many were sent or queued (the others
  /// had no valid destination).
  pub(crate) fn send_runs(&self, data: &[u8], lens: &[u32], dest: impl Fn(usize) -> Option<SocketAddr>, same: impl Fn(usize, usize) -> bool) -> u32 {
    let mut pending = lock(&self.pending);
    let mut accepted = 0u32;
    let (mut i, mut off, n) = (0usize, 0usize, lens.len());
    let max_segs = self.state.max_gso_segments().max(1);
    while i < n {
      let len = lens[i] as usize;
      let mut k = 1;
      while i + k < n && k < max_segs && (k + 1) * len <= GSO_MAX_BYTES && lens[i + k] as usize == len && same(i, i + k) {
        k += 1;
      }
      let run = &data[off..off + k * len];
      i += k;
      off += k * len;
      let Some(to) = dest(i - k) else {
        self.counters.tx_errors.fetch_add(k as u64, Relaxed);
        continue;
      };
      accepted += k as u32;
      self.send_or_queue(&mut pending, to, run, len);
    }
    accepted
  }

  fn send_or_queue(&self, pending: &mut Pending, to: SocketAddr, run: &[u8], seg: usize) {
    let queue = |pending: &mut Pending| {
      for p in run.chunks(seg.max(1)) {
        self.enqueue(pending, to, p);
      }
    };
    if !pending.queue.is_empty() {
      return queue(pending);
    }
    match self.transmit(to, run, seg) {
      Ok(()) => {}
      Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
        queue(pending);
        let _ = self.arm(pending);
      }
      Err(e) => self.count_send_error(&e, run.len().div_ceil(seg.max(1)) as u64),
    }
  }

  fn count_send_error(&self, e: &io::Error, datagrams: u64) {
    if quinn_udp::is_msg_size_err(e) || e.raw_os_error() == Some(90) {
      self.counters.tx_too_large.fetch_add(datagrams, Relaxed);
    } else {
      self.counters.tx_errors.fetch_add(datagrams, Relaxed);
    }
  }

  /// Queues datagrams for the I/O thread; drops (and counts) beyond the bound.
  fn enqueue(&self, pending: &mut Pending, dest: SocketAddr, payload: &[u8]) {
    if pending.bytes + payload.len() > self.max_pending_bytes {
      self.counters.tx_dropped_queue_full.fetch_add(1, Relaxed);
      return;
    }
    pending.bytes += payload.len();
    pending.queue.push_back((dest, payload.to_vec()));
    self.counters.tx_queued.fetch_add(1, Relaxed);
  }

  /// Flushes queued datagrams until the socket would block again (I/O thread).
  pub(crate) fn flush_pending(&self, pending: &mut Pending) {
    while let Some((dest, payload)) = pending.queue.front() {
      match self.transmit(*dest, payload, payload.len()) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
        Err(e) => self.count_send_error(&e, 1),
        Ok(()) => {}
      }
      let (_, payload) = pending.queue.pop_front().expect("front exists");
      pending.bytes -= payload.len();
    }
  }
}

/// The 18-byte address encoding used by `sendBatch` (and by `encodeAddress`) is the wire's raw
/// address (`docs/wire.md#address-encodings`), implemented once in `deccom_core::wire`.
pub use deccom_core::wire::{decode_raw_addr as decode_addr, RAW_ADDR_LEN as ADDR_LEN};

/// IPv4-mapped IPv6 sources as plain IPv4.
pub(crate) fn normalize(addr: SocketAddr) -> SocketAddr {
  match addr {
    SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
      Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
      None => addr,
    },
    v4 => v4,
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use deccom_core::wire::encode_raw_addr as encode_addr;

  #[test]
  fn address_encoding_round_trips_both_families() {
    for s in ["127.0.0.1:9", "0.0.0.0:65535", "[::1]:4000", "[fe80::1]:1", "[::]:0"] {
      let a: SocketAddr = s.parse().unwrap();
      assert_eq!(decode_addr(&encode_addr(a)), Some(a), "{s}");
    }
  }

  #[test]
  fn short_address_bytes_are_refused() {
    assert_eq!(decode_addr(&[0u8; 17]), None);
    assert_eq!(decode_addr(&[]), None);
  }

  #[test]
  fn mapped_v4_sources_are_normalized() {
    let mapped: SocketAddr = "[::ffff:10.0.0.1]:5".parse().unwrap();
    assert_eq!(normalize(mapped), "10.0.0.1:5".parse().unwrap());
    let v6: SocketAddr = "[::1]:5".parse().unwrap();
    assert_eq!(normalize(v6), v6);
  }
}
