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
use std::time::{Duration, Instant};

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use polling::{Event, Events, Poller};
use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use socket2::{Domain, Protocol, Socket, Type};

use crate::error::{coded, Code};
use crate::pipeline::{FaultStage, NoiseStage, Pipeline, RudpStage, Sink};
use deccom_core::delay::{DelayLine, Link};
use deccom_core::impair::ImpairConfig;
use deccom_core::rudp::{Config as RudpConfig, Payload};

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
  /// Whole reliable messages and the slot of each sender.
  messages: Vec<Vec<u8>>,
  message_slots: Vec<u32>,
  /// `[id, status]` pairs of finished reliable sends.
  completions: Vec<f64>,
  /// `[direction, slot]` pairs: peers whose delay-line link JavaScript must set.
  delay_peers: Vec<u32>,
  /// Native Noise sessions: `[slot u32 BE][node id 32][encoded identity]` each.
  noise_connected: Vec<Vec<u8>>,
  /// `[slot, kind]` pairs: 1 handshake failed, 2 session ended.
  noise_failed: Vec<u32>,
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
  /// Whole reliable messages (first byte: the upper layer's tag), or null.
  pub messages: Option<Vec<Buffer>>,
  /// The sender slot of each message.
  pub message_slots: Option<Uint32Array>,
  /// `[id, status]` pairs of finished reliable sends (status 0 sent, 1 peer unreachable, 2 forgotten).
  pub completions: Option<Float64Array>,
  /// `[direction (0 receive, 1 send), slot]` pairs: peers whose native delay link must be set
  /// with `setDelayLink`, or null.
  pub delay_peers: Option<Uint32Array>,
  /// Sessions the native Noise stage completed: `[slot u32 BE][node id (32)][encoded identity]`.
  pub noise_connected: Option<Vec<Buffer>>,
  /// `[slot, kind]` pairs of Noise failures: 1 a handshake we started failed, 2 a session ended.
  pub noise_failed: Option<Uint32Array>,
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
  /// Send-side fault injection (FaultyTransport in native mode), if configured.
  tx_faults: Mutex<Option<FaultStage>>,
  /// Send-side delay line (Delay in native mode), if configured.
  tx_delay: Mutex<Option<DelayLine<SocketAddr>>>,
  /// Native stages on the receive path and the reliable-UDP endpoint, driven by the I/O thread.
  pipeline: Mutex<Pipeline>,
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

  /// Sends datagrams laid out back to back in `data` (`lens[i]` bytes each, to `dest(i)`): runs of
  /// equal-size datagrams to one destination leave in one GSO send. Send-side test stages apply
  /// first, one datagram at a time: faults, then the delay line (whose datagrams the I/O thread
  /// sends when due). What the kernel cannot take now is queued (bounded) for the I/O thread.
  /// Returns how many were sent or queued.
  pub(crate) fn send_runs(&self, data: &[u8], lens: &[u32], dest: impl Fn(usize) -> Option<SocketAddr>, same: impl Fn(usize, usize) -> bool) -> u32 {
    let mut faults = lock(&self.tx_faults);
    let mut delay = lock(&self.tx_delay);
    let mut pending = lock(&self.pending);
    let now = Instant::now();
    let mut accepted = 0u32;
    let (mut i, mut off, n) = (0usize, 0usize, lens.len());
    let max_segs = if faults.is_some() || delay.is_some() { 1 } else { self.state.max_gso_segments().max(1) };
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
      if let Some(f) = faults.as_mut() {
        // A test layer: apply the fault, then send each resulting datagram on its own.
        f.apply(now, to, run, |to, d| self.send_or_delay(&mut pending, &mut delay, now, to, d, d.len()));
        continue;
      }
      self.send_or_delay(&mut pending, &mut delay, now, to, run, len);
    }
    if let Some(f) = faults.as_mut() {
      f.release(now, |to, d| self.send_or_delay(&mut pending, &mut delay, now, to, d, d.len()));
    }
    if delay.is_some() || faults.as_ref().is_some_and(|f| f.next_due().is_some()) {
      // The I/O thread may have to wake earlier for what was just queued.
      let _ = self.poller.notify();
    }
    accepted
  }

  fn send_or_delay(&self, pending: &mut Pending, delay: &mut Option<DelayLine<SocketAddr>>, now: Instant, to: SocketAddr, run: &[u8], seg: usize) {
    match delay {
      Some(d) => {
        for p in run.chunks(seg.max(1)) {
          d.push(now, to, p.to_vec());
        }
      }
      None => self.send_or_queue(pending, to, run, seg),
    }
  }

  /// Sends the delayed datagrams that are due (I/O thread): those the send faults held first
  /// (through the delay line, if any), then the delay line's; returns peers whose link is unknown.
  fn release_delayed(&self, now: Instant) -> Vec<SocketAddr> {
    let mut due = Vec::new();
    let unknown = {
      let mut faults = lock(&self.tx_faults);
      let mut delay = lock(&self.tx_delay);
      if let Some(f) = faults.as_mut() {
        let mut pending = lock(&self.pending);
        f.release(now, |to, d| self.send_or_delay(&mut pending, &mut delay, now, to, d, d.len()));
      }
      let Some(d) = delay.as_mut() else { return Vec::new() };
      while let Some(x) = d.pop_due(now) {
        due.push(x);
      }
      d.take_unknown()
    };
    let mut pending = lock(&self.pending);
    for (to, data) in due {
      self.send_or_queue(&mut pending, to, &data, data.len());
    }
    unknown
  }

  fn next_delayed(&self) -> Option<Instant> {
    let faults = lock(&self.tx_faults).as_ref().and_then(FaultStage::next_due);
    let delay = lock(&self.tx_delay).as_ref().and_then(DelayLine::next_due);
    faults.into_iter().chain(delay).min()
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

/// Reliable-UDP settings (see deccom-core `rudp::Config`; unset fields keep its defaults).
#[napi(object)]
#[derive(Default)]
pub struct RudpOptions {
  /// Bytes of message data per datagram (default 1200).
  pub segment_size: Option<u32>,
  /// Largest message in bytes (default 256 MiB).
  pub max_message_size: Option<f64>,
  /// Milliseconds without progress before sends to a peer fail with ERR_DECCOM_PEER_UNREACHABLE.
  pub peer_timeout: Option<u32>,
  /// Bytes of partially received messages per peer / in total.
  pub max_reassembly_per_peer: Option<f64>,
  pub max_reassembly_total: Option<f64>,
  /// Seed of the endpoint's randomness (default: from the OS).
  pub seed: Option<f64>,
}

pub(crate) fn rudp_config(o: RudpOptions) -> (RudpConfig, u64) {
  let mut c = RudpConfig::default();
  if let Some(v) = o.segment_size {
    c.max_segment_payload = v as usize;
  }
  if let Some(v) = o.max_message_size {
    c.max_message_size = v as u64;
  }
  // Every message carries the upper layer's tag byte in front of the user's bytes.
  c.max_message_size += 1;
  if let Some(v) = o.peer_timeout {
    c.peer_timeout = Duration::from_millis(u64::from(v));
  }
  if let Some(v) = o.max_reassembly_per_peer {
    c.max_reassembly_per_peer = v as usize;
  }
  if let Some(v) = o.max_reassembly_total {
    c.max_reassembly_total = v as usize;
  }
  let seed = o.seed.map(|s| s as u64).unwrap_or_else(|| {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
  });
  (c, seed)
}

/// Fault probabilities (0..1), the seed of their generator, and the longest extra delay in ms of
/// a reordered datagram (default 20).
#[napi(object)]
pub struct FaultOptions {
  pub drop: Option<f64>,
  pub duplicate: Option<f64>,
  pub reorder: Option<f64>,
  pub corrupt: Option<f64>,
  pub seed: Option<f64>,
  pub reorder_delay: Option<f64>,
}

fn delay_fields(out: &mut HashMap<String, f64>, prefix: &str, d: &DelayLine<SocketAddr>) {
  let s = d.stats();
  for (k, v) in [("queued", s.queued), ("released", s.released), ("dropped_full", s.dropped_full), ("bytes", d.bytes() as u64)] {
    out.insert(format!("{prefix}_{k}"), v as f64);
  }
}

fn fault_fields(out: &mut HashMap<String, f64>, prefix: &str, s: deccom_core::impair::ImpairStats) {
  for (k, v) in [("passed", s.passed), ("dropped", s.lost), ("duplicated", s.duplicated), ("reordered", s.reordered), ("corrupted", s.corrupted)] {
    out.insert(format!("{prefix}_{k}"), v as f64);
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
      tx_faults: Mutex::new(None),
      tx_delay: Mutex::new(None),
      pipeline: Mutex::new(Pipeline::default()),
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
    let addr_at = |i: usize| &addrs[i * ADDR_LEN..(i + 1) * ADDR_LEN];
    let accepted = sh.send_runs(data, lens, |i| decode_addr(addr_at(i)), |i, j| addr_at(i) == addr_at(j));
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
        q.bytes -= b.messages.iter().map(Vec::len).sum::<usize>();
        let has_messages = !b.messages.is_empty();
        Some(ReceivedBatch {
          data: Buffer::from(b.data),
          meta: Uint32Array::new(b.meta),
          new_addrs: b.new_addrs,
          messages: has_messages.then(|| b.messages.into_iter().map(Buffer::from).collect()),
          message_slots: has_messages.then(|| Uint32Array::new(b.message_slots)),
          completions: (!b.completions.is_empty()).then(|| Float64Array::new(b.completions)),
          delay_peers: (!b.delay_peers.is_empty()).then(|| Uint32Array::new(b.delay_peers)),
          noise_connected: (!b.noise_connected.is_empty()).then(|| b.noise_connected.into_iter().map(Buffer::from).collect()),
          noise_failed: (!b.noise_failed.is_empty()).then(|| Uint32Array::new(b.noise_failed)),
        })
      }
      None => {
        q.notified = false;
        None
      }
    }
  }

  /// Attaches the native reliable-UDP endpoint: datagrams whose first byte is `tag` go to it, and
  /// `rudpSend` queues whole messages on it. Idempotent per socket (a second call replaces nothing
  /// and fails).
  ///
  /// # Errors
  /// `ERR_DECCOM_INVALID_ARGUMENT` for a bad tag or when already attached.
  #[napi]
  pub fn attach_rudp(&self, tag: u32, options: Option<RudpOptions>) -> Result<()> {
    let sh = self.shared()?;
    let tag = u8::try_from(tag).ok().filter(|t| *t != 0).ok_or_else(|| coded(Code::InvalidArgument, "the reliable-UDP tag must be 1..255"))?;
    let mut p = lock(&sh.pipeline);
    if p.rudp.is_some() {
      return Err(coded(Code::InvalidArgument, "a reliable-UDP endpoint is already attached to this socket"));
    }
    let (config, seed) = rudp_config(options.unwrap_or_default());
    p.rudp = Some(RudpStage::new(tag, config, Instant::now(), seed));
    Ok(())
  }

  /// Queues a reliable message `[tag][data]` to the 18-byte address `to`; returns its id. The
  /// I/O thread segments, paces, retransmits, and reports completion in a later batch. `data` is
  /// not copied: it must not change until the completion arrives.
  ///
  /// # Errors
  /// `ERR_DECCOM_MESSAGE_TOO_LARGE`, `ERR_DECCOM_SEND_QUEUE_FULL`, `ERR_DECCOM_INVALID_ADDRESS`,
  /// `ERR_DECCOM_CLOSED`, or `ERR_DECCOM_INVALID_ARGUMENT` when no endpoint is attached.
  #[napi]
  pub fn rudp_send(&self, to: &[u8], tag: u32, data: Buffer) -> Result<f64> {
    let sh = self.shared()?;
    let dest = decode_addr(to).ok_or_else(|| coded(Code::InvalidAddress, "rudpSend: the address must be 18 bytes (encodeAddress)"))?;
    // The JavaScript buffer is held, not copied: the I/O thread reads segments straight from it.
    let message = Payload::with_prefix(tag as u8, data);
    let id = {
      let mut p = lock(&sh.pipeline);
      let r = p.rudp.as_mut().ok_or_else(|| coded(Code::InvalidArgument, "no reliable-UDP endpoint is attached to this socket"))?;
      r.endpoint.send(Instant::now(), dest, message).map_err(crate::error::rudp)?
    };
    let _ = sh.poller.notify();
    Ok(id.0 as f64)
  }

  /// As `rudpSend`, but copies `data` (cheaper than holding a reference for small messages: a
  /// held JavaScript buffer must be released on the JavaScript thread).
  ///
  /// # Errors
  /// As `rudpSend`.
  #[napi]
  pub fn rudp_send_copy(&self, to: &[u8], tag: u32, data: &[u8]) -> Result<f64> {
    let sh = self.shared()?;
    let dest = decode_addr(to).ok_or_else(|| coded(Code::InvalidAddress, "rudpSendCopy: the address must be 18 bytes (encodeAddress)"))?;
    let mut message = Vec::with_capacity(data.len() + 1);
    message.push(tag as u8);
    message.extend_from_slice(data);
    let id = {
      let mut p = lock(&sh.pipeline);
      let r = p.rudp.as_mut().ok_or_else(|| coded(Code::InvalidArgument, "no reliable-UDP endpoint is attached to this socket"))?;
      r.endpoint.send(Instant::now(), dest, message).map_err(crate::error::rudp)?
    };
    let _ = sh.poller.notify();
    Ok(id.0 as f64)
  }

  /// Configures native fault injection on `direction` (`"receive"` or `"send"`), or removes it (null).
  ///
  /// # Errors
  /// `ERR_DECCOM_INVALID_ARGUMENT` for another direction.
  #[napi]
  pub fn set_faults(&self, direction: String, options: Option<FaultOptions>) -> Result<()> {
    let sh = self.shared()?;
    let stage = options.map(|o| {
      let (drop, duplicate, reorder, corrupt) = (o.drop.unwrap_or(0.0), o.duplicate.unwrap_or(0.0), o.reorder.unwrap_or(0.0), o.corrupt.unwrap_or(0.0));
      let cfg = ImpairConfig { drop, duplicate, reorder, corrupt, reorder_delay: o.reorder_delay.unwrap_or(20.0), ..ImpairConfig::default() };
      FaultStage::new(cfg, o.seed.map(|s| s as u64).unwrap_or(1))
    });
    match direction.as_str() {
      "receive" => lock(&sh.pipeline).rx_faults = stage,
      "send" => *lock(&sh.tx_faults) = stage,
      other => return Err(coded(Code::InvalidArgument, format!("fault direction must be \"send\" or \"receive\", not \"{other}\""))),
    }
    Ok(())
  }

  /// Attaches the native Noise stage (encrypt mode) for `identity`: reliable-UDP datagrams are
  /// sealed and opened in the I/O thread; datagrams tagged `tag` carry Noise. Requires the
  /// reliable-UDP endpoint to be attached as well (the stage carries only its traffic).
  ///
  /// # Errors
  /// `ERR_DECCOM_INVALID_ARGUMENT` for a bad tag or when already attached; Noise errors for a
  /// name identity or a bad option.
  #[napi]
  pub fn attach_noise(&self, identity: &crate::identity::NativeIdentity, tag: u32, options: Option<crate::noise::NoiseEndpointOptions>) -> Result<()> {
    let sh = self.shared()?;
    let tag = u8::try_from(tag).ok().filter(|t| *t != 0).ok_or_else(|| coded(Code::InvalidArgument, "the Noise tag must be 1..255"))?;
    let o = options.unwrap_or_default();
    let cfg = crate::noise::config(&o)?;
    if cfg.mode != deccom_core::noise::Mode::Encrypt {
      return Err(coded(Code::InvalidArgument, "the native Noise stage runs in encrypt mode only"));
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| napi::Error::from_reason(format!("ERR_DECCOM_RNG: the operating system random generator failed: {e}")))?;
    let endpoint = deccom_core::noise::Endpoint::new(identity.core(), cfg, Instant::now(), seed).map_err(crate::noise::noise_err)?;
    let mut p = lock(&sh.pipeline);
    if p.noise.is_some() {
      return Err(coded(Code::InvalidArgument, "a Noise stage is already attached to this socket"));
    }
    p.noise = Some(NoiseStage::new(tag, endpoint));
    drop(p);
    let _ = sh.poller.notify();
    Ok(())
  }

  /// Starts a Noise handshake with `to` on the native stage (no-op when a session exists).
  ///
  /// # Errors
  /// `ERR_DECCOM_INVALID_ARGUMENT` when no Noise stage is attached.
  #[napi]
  pub fn noise_connect(&self, to: &[u8]) -> Result<()> {
    let sh = self.shared()?;
    let peer = decode_addr(to).ok_or_else(|| coded(Code::InvalidAddress, "noiseConnect: the address must be 18 bytes (encodeAddress)"))?;
    {
      let mut p = lock(&sh.pipeline);
      let n = p.noise.as_mut().ok_or_else(|| coded(Code::InvalidArgument, "no Noise stage is attached to this socket"))?;
      if n.endpoint.is_authenticated(peer).is_none() {
        n.endpoint.connect(Instant::now(), peer, None);
      }
    }
    let _ = sh.poller.notify();
    Ok(())
  }

  /// Configures a native delay line on `direction` (`"receive"` or `"send"`), or removes it (null).
  /// The link of each peer is asked for lazily: a batch's `delayPeers` lists the peers whose link
  /// must be set with `setDelayLink`; their datagrams wait (bounded) until it is.
  ///
  /// # Errors
  /// `ERR_DECCOM_INVALID_ARGUMENT` for another direction.
  #[napi]
  pub fn set_delay(&self, direction: String, max_queue_bytes: Option<f64>) -> Result<()> {
    let sh = self.shared()?;
    let line = max_queue_bytes.map(|b| DelayLine::new(b.max(0.0) as usize));
    match direction.as_str() {
      "receive" => lock(&sh.pipeline).rx_delay = line,
      "send" => *lock(&sh.tx_delay) = line,
      other => return Err(coded(Code::InvalidArgument, format!("delay direction must be \"send\" or \"receive\", not \"{other}\""))),
    }
    let _ = sh.poller.notify();
    Ok(())
  }

  /// Sets the link of one peer on a native delay line: one-way latency in ms and bandwidth in
  /// bytes per second (0: unlimited).
  ///
  /// # Errors
  /// `ERR_DECCOM_INVALID_ARGUMENT` for another direction or no delay line there.
  #[napi]
  pub fn set_delay_link(&self, direction: String, to: &[u8], latency_ms: f64, bytes_per_sec: f64) -> Result<()> {
    let sh = self.shared()?;
    let peer = decode_addr(to).ok_or_else(|| coded(Code::InvalidAddress, "setDelayLink: the address must be 18 bytes (encodeAddress)"))?;
    let ms = if latency_ms.is_finite() && latency_ms > 0.0 { latency_ms } else { 0.0 };
    let link = Link { latency: Duration::from_secs_f64(ms / 1000.0), bytes_per_sec: (bytes_per_sec.is_finite() && bytes_per_sec >= 1.0).then_some(bytes_per_sec as u64) };
    let now = Instant::now();
    let missing = || coded(Code::InvalidArgument, format!("no native delay line on \"{direction}\""));
    match direction.as_str() {
      "receive" => lock(&sh.pipeline).rx_delay.as_mut().ok_or_else(missing)?.set_link(peer, link, now),
      "send" => lock(&sh.tx_delay).as_mut().ok_or_else(missing)?.set_link(peer, link, now),
      _ => return Err(missing()),
    }
    let _ = sh.poller.notify();
    Ok(())
  }

  /// Counters of the native stages: reliable UDP (`rudp_*`) and fault injection (`faults_rx_*`, `faults_tx_*`).
  #[napi]
  pub fn pipeline_stats(&self) -> Result<HashMap<String, f64>> {
    let sh = self.shared()?;
    let mut out = HashMap::new();
    {
      let p = lock(&sh.pipeline);
      if let Some(r) = &p.rudp {
        for (k, v) in crate::pipeline::rudp_fields(&r.endpoint.stats()) {
          out.insert(format!("rudp_{k}"), v as f64);
        }
        out.insert("rudp_dropped_backpressure".into(), r.dropped_backpressure as f64);
        out.insert("rudp_reassembly_bytes".into(), r.endpoint.reassembly_bytes() as f64);
      }
      if let Some(f) = &p.rx_faults {
        fault_fields(&mut out, "faults_rx", f.stats());
      }
      if let Some(d) = &p.rx_delay {
        delay_fields(&mut out, "delay_rx", d);
      }
      if let Some(n) = &p.noise {
        for (k, v) in crate::noise::stats_fields(&n.endpoint.stats()) {
          out.insert(if k.starts_with("noise") { k.to_string() } else { format!("noise_{k}") }, v as f64);
        }
        out.insert("noise_dropped_unprotected".into(), n.dropped_unprotected as f64);
        out.insert("noise_dropped_not_reliable".into(), n.dropped_not_reliable as f64);
        out.insert("noise_dropped_malformed_frame".into(), n.dropped_malformed_frame as f64);
        out.insert("noise_dropped_queue_full".into(), n.dropped_queue_full as f64);
      }
    }
    if let Some(f) = lock(&sh.tx_faults).as_ref() {
      fault_fields(&mut out, "faults_tx", f.stats());
    }
    if let Some(d) = lock(&sh.tx_delay).as_ref() {
      delay_fields(&mut out, "delay_tx", d);
    }
    Ok(out)
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
  messages: Vec<Vec<u8>>,
  message_slots: Vec<u32>,
  message_bytes: usize,
  completions: Vec<f64>,
  delay_peers: Vec<u32>,
  noise_connected: Vec<Vec<u8>>,
  noise_failed: Vec<u32>,
}

impl Batcher {
  fn new() -> Self {
    let mut meta = Vec::with_capacity(3 + 3 * 64);
    meta.extend_from_slice(&[0, 0, 0]);
    Batcher { data: Vec::with_capacity(64 * 1024), meta, count: 0, messages: Vec::new(), message_slots: Vec::new(), message_bytes: 0, completions: Vec::new(), delay_peers: Vec::new(), noise_connected: Vec::new(), noise_failed: Vec::new() }
  }

  fn is_empty(&self) -> bool {
    self.count == 0 && self.messages.is_empty() && self.completions.is_empty() && self.delay_peers.is_empty() && !self.must_deliver()
  }

  /// Reliable messages and completions were accepted by the sender's peer: never drop them.
  fn must_deliver(&self) -> bool {
    !self.messages.is_empty() || !self.completions.is_empty() || !self.delay_peers.is_empty() || !self.noise_connected.is_empty() || !self.noise_failed.is_empty()
  }
}

/// The receive sink of the I/O thread: datagrams, messages and completions go into the batch
/// being built; a full batch goes to the queue for JavaScript.
struct Rx<'a> {
  sh: &'a Shared,
  tsfn: &'a WakeFn,
  slots: &'a mut Slots,
  batch: &'a mut Batcher,
  max_batch: usize,
}

impl Rx<'_> {
  fn slot(&mut self, from: SocketAddr) -> u32 {
    if self.slots.needs_reset(&from) {
      // JavaScript clears its table before reading a batch: older slots go out first.
      deliver(self.sh, self.tsfn, self.slots, self.batch);
    }
    self.slots.slot(from)
  }

  fn full(&mut self) {
    if self.batch.count >= self.max_batch || self.batch.data.len() + self.batch.message_bytes >= (1 << 20) {
      deliver(self.sh, self.tsfn, self.slots, self.batch);
    }
  }
}

impl Sink for Rx<'_> {
  fn datagram(&mut self, from: SocketAddr, bytes: &[u8]) {
    let slot = self.slot(from);
    let off = self.batch.data.len() as u32;
    self.batch.data.extend_from_slice(bytes);
    self.batch.meta.extend_from_slice(&[off, bytes.len() as u32, slot]);
    self.batch.count += 1;
    self.full();
  }

  fn message(&mut self, from: SocketAddr, message: Vec<u8>) {
    let slot = self.slot(from);
    self.batch.message_bytes += message.len();
    self.batch.messages.push(message);
    self.batch.message_slots.push(slot);
    self.full();
  }

  fn completion(&mut self, id: f64, status: f64) {
    self.batch.completions.extend_from_slice(&[id, status]);
  }

  fn delay_peer(&mut self, direction: u32, peer: SocketAddr) {
    let slot = self.slot(peer);
    self.batch.delay_peers.extend_from_slice(&[direction, slot]);
  }

  fn noise_connected(&mut self, peer: SocketAddr, id: &[u8; 32], identity: &[u8]) {
    let slot = self.slot(peer);
    let mut rec = Vec::with_capacity(4 + 32 + identity.len());
    rec.extend_from_slice(&slot.to_be_bytes());
    rec.extend_from_slice(id);
    rec.extend_from_slice(identity);
    self.batch.noise_connected.push(rec);
  }

  fn noise_failed(&mut self, peer: SocketAddr, kind: u32) {
    let slot = self.slot(peer);
    self.batch.noise_failed.extend_from_slice(&[slot, kind]);
  }

  fn congested(&self) -> bool {
    let q = self.sh.rxq.lock().unwrap_or_else(|p| p.into_inner());
    q.bytes > self.sh.max_rx_queue_bytes
  }
}

/// Hands a finished batch to the receive queue and wakes JavaScript if it is not already awake.
/// When the queue is over its byte bound the batch is dropped and counted; the address slots it
/// would have introduced stay pending, so later batches still carry them.
fn deliver(sh: &Shared, tsfn: &WakeFn, slots: &mut Slots, b: &mut Batcher) {
  if b.is_empty() {
    return;
  }
  let mut q = sh.rxq.lock().unwrap_or_else(|p| p.into_inner());
  if q.bytes + b.data.len() > sh.max_rx_queue_bytes && !b.must_deliver() {
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
  q.bytes += batch.data.len() + batch.message_bytes;
  q.batches.push_back(RecvBatch {
    data: batch.data,
    meta: batch.meta,
    new_addrs,
    messages: batch.messages,
    message_slots: batch.message_slots,
    completions: batch.completions,
    delay_peers: batch.delay_peers,
    noise_connected: batch.noise_connected,
    noise_failed: batch.noise_failed,
  });
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
  let send = |data: &[u8], lens: &[u32], dests: &[SocketAddr]| {
    sh.send_runs(data, lens, |i| Some(dests[i]), |i, j| dests[i] == dests[j]);
  };
  while !sh.closing.load(Relaxed) {
    events.clear();
    let next = match (lock(&sh.pipeline).next_timeout(), sh.next_delayed()) {
      (Some(a), Some(b)) => Some(a.min(b)),
      (a, b) => a.or(b),
    };
    let timeout = next.map(|t| t.saturating_duration_since(Instant::now()));
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
    for ev in events.iter() {
      readable |= ev.readable;
      writable |= ev.writable;
    }
    if writable {
      let mut pending = lock(&sh.pending);
      sh.flush_pending(&mut pending);
    }
    let mut pipeline = lock(&sh.pipeline);
    let mut rx = Rx { sh, tsfn: &tsfn, slots: &mut slots, batch: &mut batch, max_batch };
    if readable {
      loop {
        let mut iovs: Vec<IoSliceMut<'_>> = scratch.chunks_mut(SLOT).map(IoSliceMut::new).collect();
        match sh.state.recv(sh.sock(), &mut iovs, &mut metas) {
          Ok(n) => {
            sh.counters.rx_syscalls.fetch_add(1, Relaxed);
            drop(iovs);
            let now = Instant::now();
            for (m, buf) in metas.iter().take(n).zip(scratch.chunks(SLOT)) {
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
            // Acknowledge and send while the burst goes on, not only after it.
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
    let now = Instant::now();
    pipeline.end_of_burst(now, &mut rx);
    pipeline.drive(now, send, &mut rx);
    for peer in sh.release_delayed(now) {
      rx.delay_peer(1, peer);
    }
    drop(pipeline);
    deliver(sh, &tsfn, &mut slots, &mut batch);
    let pending = lock(&sh.pending);
    if sh.arm(&pending).is_err() {
      sh.counters.rx_errors.fetch_add(1, Relaxed);
    }
  }
  drop(tsfn);
}

/// Locks a mutex, recovering from poisoning (a panic elsewhere must not wedge the socket).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
  m.lock().unwrap_or_else(|p| p.into_inner())
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
