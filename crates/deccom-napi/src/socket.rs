//! The native UDP socket: one OS socket, one I/O thread, batched in both directions.
//!
//! Receive: the I/O thread waits for readability (epoll/kqueue/IOCP through `polling`), then drains
//! the socket with `recvmmsg` (32 datagrams a call on Linux, one elsewhere) and UDP GRO where the
//! kernel offers it (one receive returns many coalesced datagrams of equal size). Datagrams are
//! copied, compacted, into one `Buffer` per batch and handed to JavaScript in ONE call together with
//! a `Uint32Array` of `[offset, length, sourceSlot]` triples. Source addresses are interned into
//! small integer slots so that JavaScript never parses an address per datagram: a batch carries the
//! text of the addresses it introduces, and a reset flag when the bounded slot table was cleared.
//!
//! Send: JavaScript hands over a whole batch per call (payloads back to back, their lengths, and an
//! 18-byte address per datagram). Runs of equal-size datagrams to the same destination leave in one
//! `sendmsg` with UDP GSO (`UDP_SEGMENT`) where the kernel offers it. The send happens on the calling
//! (JavaScript) thread with a non-blocking socket; if the kernel's send buffer is full, the rest is
//! queued (bounded) and flushed by the I/O thread when the socket becomes writable.
//!
//! Nothing here interprets the datagrams: protocol logic lives above (deccom-core / TypeScript).
//! `close()` stops the thread, releases the JavaScript callback and closes the socket, so a
//! process whose sockets are closed exits on its own.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use polling::{Event, Events, Poller};
use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use socket2::{Domain, Protocol, Socket, Type};

use crate::error::{coded, Code};

/// Bytes per encoded address in `sendBatch`: 16 bytes of IPv6 (IPv4 as `::ffff:a.b.c.d`) + port BE.
pub const ADDR_LEN: usize = 18;
/// Largest UDP payload (IPv6 jumbograms aside); receive slots are this large so GRO can fill them.
const SLOT: usize = 64 * 1024;
/// Interned source addresses per socket before the table is reset.
const MAX_SLOTS: usize = 4096;
/// Total payload bytes a GSO send may carry (kernel limit is 64 KiB including headers).
const GSO_MAX_BYTES: usize = 65_000;

/// One batch of received datagrams on its way to JavaScript.
pub struct RecvBatch {
  data: Vec<u8>,
  /// Header `[count, flags, firstNewSlot]`, then `[offset, length, slot]` per datagram.
  meta: Vec<u32>,
  /// `ip port` pairs, space separated, for the slots this batch introduces (in slot order).
  new_addrs: Option<String>,
}

/// Wakes JavaScript; it then pulls batches with `take()` until there are none.
type WakeFn = ThreadsafeFunction<(), (), (), Status, false, false, 1>;

struct RxQueue {
  batches: VecDeque<RecvBatch>,
  bytes: usize,
  /// A wake-up is outstanding (set by the I/O thread, cleared by `take()` on an empty queue).
  notified: bool,
}

/// A batch as JavaScript sees it.
#[napi(object)]
pub struct ReceivedBatch {
  /// The datagrams back to back.
  pub data: Buffer,
  /// `[count, flags (bit 0: slot table reset), firstNewSlot]`, then `[offset, length, slot]` each.
  pub meta: Uint32Array,
  /// `ip port` pairs, space separated, for the slots this batch introduces (from firstNewSlot on).
  pub new_addrs: Option<String>,
}

#[derive(Default)]
struct Counters {
  rx_datagrams: AtomicU64,
  rx_bytes: AtomicU64,
  rx_batches: AtomicU64,
  rx_syscalls: AtomicU64,
  rx_dropped_queue_full: AtomicU64,
  rx_errors: AtomicU64,
  tx_datagrams: AtomicU64,
  tx_bytes: AtomicU64,
  tx_syscalls: AtomicU64,
  tx_errors: AtomicU64,
  tx_too_large: AtomicU64,
  tx_queued: AtomicU64,
  tx_dropped_queue_full: AtomicU64,
}

struct Pending {
  queue: VecDeque<(SocketAddr, Vec<u8>)>,
  bytes: usize,
}

struct Shared {
  socket: StdUdpSocket,
  state: UdpSocketState,
  poller: Poller,
  closing: AtomicBool,
  counters: Counters,
  pending: Mutex<Pending>,
  max_pending_bytes: usize,
  rxq: Mutex<RxQueue>,
  max_rx_queue_bytes: usize,
  is_v6: bool,
}

const KEY: usize = 7;

impl Shared {
  fn sock(&self) -> UdpSockRef<'_> {
    UdpSockRef::from(&self.socket)
  }

  /// Re-arms the (one-shot) poller; asks for writability only while something is queued.
  /// Called with the pending lock held, so the interest always matches the queue.
  fn arm(&self, pending: &Pending) -> io::Result<()> {
    let ev = if pending.queue.is_empty() { Event::readable(KEY) } else { Event::all(KEY) };
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
  fn flush_pending(&self, pending: &mut Pending) {
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

/// Decodes the 18-byte address encoding used by `sendBatch` (and by `encodeAddress`).
pub fn decode_addr(b: &[u8]) -> Option<SocketAddr> {
  let ip: [u8; 16] = b.get(..16)?.try_into().ok()?;
  let port = u16::from_be_bytes(b.get(16..18)?.try_into().ok()?);
  let v6 = Ipv6Addr::from(ip);
  Some(match v6.to_ipv4_mapped() {
    Some(v4) => SocketAddr::new(IpAddr::V4(v4), port),
    None => SocketAddr::new(IpAddr::V6(v6), port),
  })
}

/// Encodes an address into the 18-byte form.
pub fn encode_addr(addr: SocketAddr) -> [u8; ADDR_LEN] {
  let ip = match addr.ip() {
    IpAddr::V4(v4) => v4.to_ipv6_mapped(),
    IpAddr::V6(v6) => v6,
  };
  let mut out = [0u8; ADDR_LEN];
  out[..16].copy_from_slice(&ip.octets());
  out[16..].copy_from_slice(&addr.port().to_be_bytes());
  out
}

fn normalize(addr: SocketAddr) -> SocketAddr {
  match addr {
    SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
      Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
      None => addr,
    },
    v4 => v4,
  }
}

/// Socket options for `UdpSocket.bind`.
#[napi(object)]
pub struct UdpBindOptions {
  /// SO_RCVBUF in bytes (the kernel may double or cap it; see `net.core.rmem_max`).
  pub recv_buffer_size: Option<u32>,
  /// SO_SNDBUF in bytes.
  pub send_buffer_size: Option<u32>,
  /// For IPv6 wildcard binds: accept IPv6 only (default true for `::`).
  pub ipv6_only: Option<bool>,
  /// Most datagrams per batch delivered to JavaScript (default 1024).
  pub max_batch: Option<u32>,
  /// Bytes of datagrams queued while the kernel's send buffer is full (default 4 MiB).
  pub max_pending_bytes: Option<u32>,
  /// Bytes of received datagrams waiting for JavaScript before new ones are dropped (default 32 MiB).
  pub max_queued_bytes: Option<u32>,
}

/// The bound address.
#[napi(object)]
pub struct LocalAddress {
  pub address: String,
  pub port: u32,
  pub family: String,
}

/// Counters of one socket (plain numbers; all monotonic).
#[napi(object)]
pub struct UdpSocketStats {
  pub rx_datagrams: f64,
  pub rx_bytes: f64,
  pub rx_batches: f64,
  pub rx_syscalls: f64,
  pub rx_dropped_queue_full: f64,
  pub rx_errors: f64,
  pub tx_datagrams: f64,
  pub tx_bytes: f64,
  pub tx_syscalls: f64,
  pub tx_errors: f64,
  pub tx_too_large: f64,
  pub tx_queued: f64,
  pub tx_dropped_queue_full: f64,
  pub recv_buffer_size: f64,
  pub send_buffer_size: f64,
  pub gso_segments: f64,
  pub gro_segments: f64,
}

/// A UDP socket owned by Rust. See the module documentation.
#[napi]
pub struct UdpSocket {
  shared: Option<Arc<Shared>>,
  thread: Option<JoinHandle<()>>,
}

fn parse_ip(host: &str) -> Result<IpAddr> {
  let h = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
  h.parse::<IpAddr>().map_err(|_| coded(Code::InvalidAddress, format!("\"{host}\" is not an IP address (IPv4 like 127.0.0.1 or IPv6 like ::1)")))
}

#[napi]
impl UdpSocket {
  /// Binds a socket and starts its I/O thread. `onReadable()` is called (on the JavaScript thread)
  /// when batches are waiting; call `take()` until it returns null.
  ///
  /// # Errors
  /// `ERR_DECCOM_INVALID_ADDRESS` for a host that is not an IP literal, `ERR_DECCOM_ADDRESS_IN_USE`
  /// when the port is taken, `ERR_DECCOM_SOCKET` for other OS errors.
  #[napi(factory)]
  pub fn bind(host: String, port: u32, options: Option<UdpBindOptions>, on_readable: Function<(), ()>) -> Result<UdpSocket> {
    let opts = options.unwrap_or(UdpBindOptions { recv_buffer_size: None, send_buffer_size: None, ipv6_only: None, max_batch: None, max_pending_bytes: None, max_queued_bytes: None });
    let ip = parse_ip(&host)?;
    let port = u16::try_from(port).map_err(|_| coded(Code::InvalidAddress, format!("port {port} is out of range 0..65535")))?;
    let addr = SocketAddr::new(ip, port);
    let sock_err = |what: &str, e: io::Error| coded(Code::Socket, format!("{what} {addr}: {e}"));
    let domain = if ip.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).map_err(|e| sock_err("cannot create a UDP socket for", e))?;
    if ip.is_ipv6() {
      socket.set_only_v6(opts.ipv6_only.unwrap_or(true)).map_err(|e| sock_err("cannot set IPV6_V6ONLY on", e))?;
    }
    if let Some(n) = opts.recv_buffer_size {
      socket.set_recv_buffer_size(n as usize).map_err(|e| sock_err("cannot set SO_RCVBUF on", e))?;
    }
    if let Some(n) = opts.send_buffer_size {
      socket.set_send_buffer_size(n as usize).map_err(|e| sock_err("cannot set SO_SNDBUF on", e))?;
    }
    socket.bind(&addr.into()).map_err(|e| match e.kind() {
      io::ErrorKind::AddrInUse => coded(Code::AddressInUse, format!("UDP address {addr} is already in use; choose another port or port 0 for any free port")),
      io::ErrorKind::AddrNotAvailable => coded(Code::InvalidAddress, format!("UDP address {addr} is not an address of this host")),
      _ => sock_err("cannot bind UDP", e),
    })?;
    let socket: StdUdpSocket = socket.into();
    let state = UdpSocketState::new(UdpSockRef::from(&socket)).map_err(|e| sock_err("cannot configure", e))?;
    allow_fragmentation(&socket, ip.is_ipv6());
    let poller = Poller::new().map_err(|e| sock_err("cannot create a poller for", e))?;
    // SAFETY: the socket outlives its registration: it is deleted from the poller before Shared drops.
    unsafe { poller.add(&socket, Event::readable(KEY)) }.map_err(|e| sock_err("cannot register", e))?;

    let tsfn: WakeFn = on_readable.build_threadsafe_function::<()>().callee_handled::<false>().max_queue_size::<1>().build()?;

    let shared = Arc::new(Shared {
      is_v6: ip.is_ipv6(),
      socket,
      state,
      poller,
      closing: AtomicBool::new(false),
      counters: Counters::default(),
      pending: Mutex::new(Pending { queue: VecDeque::new(), bytes: 0 }),
      max_pending_bytes: opts.max_pending_bytes.unwrap_or(4 << 20) as usize,
      rxq: Mutex::new(RxQueue { batches: VecDeque::new(), bytes: 0, notified: false }),
      max_rx_queue_bytes: opts.max_queued_bytes.unwrap_or(32 << 20) as usize,
    });
    let max_batch = opts.max_batch.unwrap_or(1024).clamp(1, 65_536) as usize;
    let thread_shared = shared.clone();
    let thread = std::thread::Builder::new()
      .name("deccom-udp".into())
      .spawn(move || io_loop(&thread_shared, tsfn, max_batch))
      .map_err(|e| coded(Code::Socket, format!("cannot start the UDP I/O thread: {e}")))?;
    Ok(UdpSocket { shared: Some(shared), thread: Some(thread) })
  }

  fn shared(&self) -> Result<&Arc<Shared>> {
    self.shared.as_ref().ok_or_else(|| coded(Code::Closed, "the UDP socket is closed"))
  }

  /// The bound address.
  #[napi]
  pub fn local_address(&self) -> Result<LocalAddress> {
    let addr = self.shared()?.socket.local_addr().map_err(|e| coded(Code::Socket, e.to_string()))?;
    Ok(LocalAddress { address: addr.ip().to_string(), port: u32::from(addr.port()), family: if addr.is_ipv4() { "IPv4".into() } else { "IPv6".into() } })
  }

  /// Sends a batch: `data` holds the payloads back to back, `lens[i]` the length of datagram i,
  /// `addrs` 18 bytes per datagram (see `encodeAddress`). Returns the number of datagrams sent or
  /// queued; the others were refused (too large, unroutable, queue full) and counted.
  ///
  /// # Errors
  /// `ERR_DECCOM_CLOSED` after `close()`; `ERR_DECCOM_INVALID_ARGUMENT` when the arrays disagree.
  #[napi]
  pub fn send_batch(&self, data: &[u8], lens: &[u32], addrs: &[u8]) -> Result<u32> {
    let sh = self.shared()?;
    let total: usize = lens.iter().map(|&l| l as usize).sum();
    if total > data.len() || addrs.len() < lens.len() * ADDR_LEN {
      return Err(coded(Code::InvalidArgument, "sendBatch: lengths exceed the data, or fewer addresses than datagrams"));
    }
    let mut pending = sh.pending.lock().unwrap_or_else(|p| p.into_inner());
    let mut accepted = 0u32;
    let (mut i, mut off, n) = (0usize, 0usize, lens.len());
    let max_segs = sh.state.max_gso_segments().max(1);
    while i < n {
      let a = &addrs[i * ADDR_LEN..(i + 1) * ADDR_LEN];
      let len = lens[i] as usize;
      // A run of equal-size datagrams to the same destination leaves in one GSO send.
      let mut k = 1;
      while i + k < n && k < max_segs && (k + 1) * len <= GSO_MAX_BYTES && lens[i + k] as usize == len && &addrs[(i + k) * ADDR_LEN..(i + k + 1) * ADDR_LEN] == a {
        k += 1;
      }
      let run = &data[off..off + k * len];
      match decode_addr(a) {
        None => {
          sh.counters.tx_errors.fetch_add(k as u64, Relaxed);
        }
        Some(dest) if !pending.queue.is_empty() => {
          for p in run.chunks(len.max(1)) {
            sh.enqueue(&mut pending, dest, p);
          }
          accepted += k as u32;
        }
        Some(dest) => match sh.transmit(dest, run, len) {
          Ok(()) => accepted += k as u32,
          Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            for p in run.chunks(len.max(1)) {
              sh.enqueue(&mut pending, dest, p);
            }
            accepted += k as u32;
            let _ = sh.arm(&pending);
          }
          Err(e) => sh.count_send_error(&e, k as u64),
        },
      }
      i += k;
      off += k * len;
    }
    Ok(accepted)
  }

  /// The next received batch, or null when none is waiting.
  #[napi]
  pub fn take(&self) -> Option<ReceivedBatch> {
    let sh = self.shared.as_ref()?;
    let mut q = sh.rxq.lock().unwrap_or_else(|p| p.into_inner());
    match q.batches.pop_front() {
      Some(b) => {
        q.bytes -= b.data.len();
        Some(ReceivedBatch { data: Buffer::from(b.data), meta: Uint32Array::new(b.meta), new_addrs: b.new_addrs })
      }
      None => {
        q.notified = false;
        None
      }
    }
  }

  /// Counters and socket facts.
  #[napi]
  pub fn stats(&self) -> Result<UdpSocketStats> {
    let sh = self.shared()?;
    let c = &sh.counters;
    let g = |a: &AtomicU64| a.load(Relaxed) as f64;
    Ok(UdpSocketStats {
      rx_datagrams: g(&c.rx_datagrams),
      rx_bytes: g(&c.rx_bytes),
      rx_batches: g(&c.rx_batches),
      rx_syscalls: g(&c.rx_syscalls),
      rx_dropped_queue_full: g(&c.rx_dropped_queue_full),
      rx_errors: g(&c.rx_errors),
      tx_datagrams: g(&c.tx_datagrams),
      tx_bytes: g(&c.tx_bytes),
      tx_syscalls: g(&c.tx_syscalls),
      tx_errors: g(&c.tx_errors),
      tx_too_large: g(&c.tx_too_large),
      tx_queued: g(&c.tx_queued),
      tx_dropped_queue_full: g(&c.tx_dropped_queue_full),
      recv_buffer_size: sh.state.recv_buffer_size(sh.sock()).unwrap_or(0) as f64,
      send_buffer_size: sh.state.send_buffer_size(sh.sock()).unwrap_or(0) as f64,
      gso_segments: sh.state.max_gso_segments() as f64,
      gro_segments: sh.state.gro_segments() as f64,
    })
  }

  /// Stops the I/O thread, releases the callback and closes the socket. Idempotent.
  #[napi]
  pub fn close(&mut self) {
    if let Some(sh) = self.shared.take() {
      sh.closing.store(true, Relaxed);
      let _ = sh.poller.notify();
      if let Some(t) = self.thread.take() {
        let _ = t.join();
      }
      let _ = sh.poller.delete(&sh.socket);
    }
  }

  /// True once `close()` has run.
  #[napi(getter)]
  pub fn closed(&self) -> bool {
    self.shared.is_none()
  }
}

impl Drop for UdpSocket {
  fn drop(&mut self) {
    self.close();
  }
}

/// Lets datagrams larger than the path MTU leave fragmented (as node:dgram does), instead of the
/// "probe" mode quinn-udp sets for QUIC. Best effort: on failure the OS default stays.
fn allow_fragmentation(socket: &StdUdpSocket, v6: bool) {
  #[cfg(any(target_os = "linux", target_os = "android"))]
  {
    use std::os::fd::AsRawFd;
    let fd = socket.as_raw_fd();
    let off: libc::c_int = libc::IP_PMTUDISC_DONT;
    // SAFETY: plain setsockopt on an owned, open descriptor with a correctly sized int.
    unsafe {
      libc::setsockopt(fd, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, (&off as *const libc::c_int).cast(), std::mem::size_of::<libc::c_int>() as libc::socklen_t);
      if v6 {
        let off6: libc::c_int = libc::IPV6_PMTUDISC_DONT;
        libc::setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER, (&off6 as *const libc::c_int).cast(), std::mem::size_of::<libc::c_int>() as libc::socklen_t);
      }
    }
  }
  #[cfg(not(any(target_os = "linux", target_os = "android")))]
  let _ = (socket, v6);
}

/// Interns source addresses into slots (bounded; cleared when full).
struct Slots {
  map: HashMap<SocketAddr, u32>,
  reset: bool,
  first_new: u32,
  new_text: String,
}

impl Slots {
  /// True when interning `addr` would clear the table (its slots must not share a batch with older ones).
  fn needs_reset(&self, addr: &SocketAddr) -> bool {
    self.map.len() >= MAX_SLOTS && !self.map.contains_key(addr)
  }

  fn slot(&mut self, addr: SocketAddr) -> u32 {
    if let Some(&s) = self.map.get(&addr) {
      return s;
    }
    if self.map.len() >= MAX_SLOTS {
      self.map.clear();
      self.reset = true;
      self.new_text.clear();
      self.first_new = 0;
    }
    let s = self.map.len() as u32;
    if self.new_text.is_empty() {
      self.first_new = s;
    } else {
      self.new_text.push(' ');
    }
    use std::fmt::Write;
    let _ = write!(self.new_text, "{} {}", addr.ip(), addr.port());
    self.map.insert(addr, s);
    s
  }
}

struct Batcher {
  data: Vec<u8>,
  meta: Vec<u32>,
  count: usize,
}

impl Batcher {
  fn new() -> Self {
    let mut meta = Vec::with_capacity(3 + 3 * 64);
    meta.extend_from_slice(&[0, 0, 0]);
    Batcher { data: Vec::with_capacity(64 * 1024), meta, count: 0 }
  }
}

/// Hands a finished batch to the receive queue and wakes JavaScript if it is not already awake.
/// When the queue is over its byte bound the batch is dropped and counted; the address slots it
/// would have introduced stay pending, so later batches still carry them.
fn deliver(sh: &Shared, tsfn: &WakeFn, slots: &mut Slots, b: &mut Batcher) {
  if b.count == 0 {
    return;
  }
  let mut q = sh.rxq.lock().unwrap_or_else(|p| p.into_inner());
  if q.bytes + b.data.len() > sh.max_rx_queue_bytes {
    sh.counters.rx_dropped_queue_full.fetch_add(b.count as u64, Relaxed);
    *b = Batcher::new();
    return;
  }
  let mut batch = std::mem::replace(b, Batcher::new());
  batch.meta[0] = batch.count as u32;
  batch.meta[1] = u32::from(slots.reset);
  batch.meta[2] = slots.first_new;
  let new_addrs = (!slots.new_text.is_empty()).then(|| std::mem::take(&mut slots.new_text));
  slots.reset = false;
  q.bytes += batch.data.len();
  q.batches.push_back(RecvBatch { data: batch.data, meta: batch.meta, new_addrs });
  sh.counters.rx_batches.fetch_add(1, Relaxed);
  if !q.notified {
    q.notified = true;
    drop(q);
    // At most one wake-up is outstanding, so the (size 1) queue of the function cannot be full.
    tsfn.call((), ThreadsafeFunctionCallMode::NonBlocking);
  }
}

fn io_loop(sh: &Shared, tsfn: WakeFn, max_batch: usize) {
  let mut events = Events::new();
  let mut scratch = vec![0u8; SLOT * quinn_udp::BATCH_SIZE];
  let mut metas = vec![RecvMeta::default(); quinn_udp::BATCH_SIZE];
  let mut slots = Slots { map: HashMap::new(), reset: false, first_new: 0, new_text: String::new() };
  let mut batch = Batcher::new();
  while !sh.closing.load(Relaxed) {
    events.clear();
    if let Err(e) = sh.poller.wait(&mut events, None) {
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
    for ev in events.iter() {
      readable |= ev.readable;
      writable |= ev.writable;
    }
    if writable {
      let mut pending = sh.pending.lock().unwrap_or_else(|p| p.into_inner());
      sh.flush_pending(&mut pending);
    }
    if readable {
      loop {
        let mut iovs: Vec<IoSliceMut<'_>> = scratch.chunks_mut(SLOT).map(IoSliceMut::new).collect();
        match sh.state.recv(sh.sock(), &mut iovs, &mut metas) {
          Ok(n) => {
            sh.counters.rx_syscalls.fetch_add(1, Relaxed);
            drop(iovs);
            for (m, buf) in metas.iter().take(n).zip(scratch.chunks(SLOT)) {
              let from = normalize(m.addr);
              if slots.needs_reset(&from) {
                // JavaScript clears its table before reading a batch: older slots go out first.
                deliver(sh, &tsfn, &mut slots, &mut batch);
              }
              let slot = slots.slot(from);
              let stride = m.stride.max(1);
              let mut start = 0;
              // `first` lets a 0-byte datagram through as one entry of length 0 (JavaScript counts it).
              let mut first = true;
              while start < m.len || std::mem::take(&mut first) {
                first = false;
                let end = (start + stride).min(m.len);
                let off = batch.data.len() as u32;
                batch.data.extend_from_slice(&buf[start..end]);
                batch.meta.extend_from_slice(&[off, (end - start) as u32, slot]);
                batch.count += 1;
                sh.counters.rx_datagrams.fetch_add(1, Relaxed);
                sh.counters.rx_bytes.fetch_add((end - start) as u64, Relaxed);
                start = end;
              }
            }
            if batch.count >= max_batch || batch.data.len() >= (1 << 20) {
              deliver(sh, &tsfn, &mut slots, &mut batch);
            }
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
      deliver(sh, &tsfn, &mut slots, &mut batch);
    }
    let pending = sh.pending.lock().unwrap_or_else(|p| p.into_inner());
    if sh.arm(&pending).is_err() {
      sh.counters.rx_errors.fetch_add(1, Relaxed);
    }
  }
  drop(tsfn);
}

#[cfg(test)]
mod tests {
  use super::*;

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

  #[test]
  fn slots_intern_and_reset_when_full() {
    let mut s = Slots { map: HashMap::new(), reset: false, first_new: 0, new_text: String::new() };
    let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let b: SocketAddr = "[::1]:2".parse().unwrap();
    assert_eq!(s.slot(a), 0);
    assert_eq!(s.slot(b), 1);
    assert_eq!(s.slot(a), 0);
    assert_eq!(s.new_text, "127.0.0.1 1 ::1 2");
    s.new_text.clear();
    for p in 3..(MAX_SLOTS as u16 + 1) {
      s.slot(SocketAddr::new("127.0.0.1".parse().unwrap(), p));
    }
    assert!(!s.reset);
    assert_eq!(s.map.len(), MAX_SLOTS);
    let c: SocketAddr = "127.0.0.2:9".parse().unwrap();
    assert_eq!(s.slot(c), 0, "a full table is cleared and numbering restarts");
    assert!(s.reset);
    assert_eq!((s.first_new, s.new_text.as_str()), (0, "127.0.0.2 9"));
  }
}
