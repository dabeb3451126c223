//! The native UDP socket: one OS socket, one I/O thread, batched in both directions.
//!
//! - `mod.rs` (this file): the `UdpSocket` class JavaScript sees. Calls that concern the native
//!   stages validate their arguments here, on the JavaScript thread, and become commands.
//! - [`commands`]: the queue of commands to the I/O thread and the JavaScript-side state used to
//!   validate them; the counters snapshot the I/O thread publishes.
//! - [`io_thread`]: the thread that owns the pipeline, receives, drives the stages and delivers.
//! - [`batch`]: receive batches, address slots, and the pull-based delivery to JavaScript.
//! - [`send`]: GSO sends and the bounded queue used while the kernel's send buffer is full.
//! - [`aux`]: auxiliary sockets, each connected to one remote, that carry that remote's traffic.
//!
//! `sendBatch` sends on the calling (JavaScript) thread unless send-side stages (faults, delay)
//! are attached, in which case its datagrams go through the I/O thread's pipeline first. Small
//! reliable sends and handshake starts run the pipeline on the calling thread too when the I/O
//! thread is not working on it (see [`io_thread`]): their first datagram leaves without a
//! thread wake-up.
//! Nothing here interprets the datagrams: protocol logic lives in the stages (`crate::stages`,
//! over deccom-core) and in TypeScript. `close()` stops the thread, releases the JavaScript
//! callback and closes the socket, so a process whose sockets are closed exits on its own.

mod aux;
mod batch;
mod commands;
mod io_thread;
#[cfg(unix)]
mod js_rx;
mod options;
#[cfg(unix)]
mod responder;
mod send;

use std::collections::HashMap;
use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use napi::bindgen_prelude::*;
use napi_derive::napi;
use polling::{Event, Poller};
use quinn_udp::{UdpSockRef, UdpSocketState};
use socket2::{Domain, Protocol, Socket, Type};

use crate::error::{coded, Code};
use crate::stages::delay::DelayStage;
use crate::stages::faults::FaultStage;
use crate::stages::noise::NoiseStage;
use crate::stages::rudp::RudpStage;
use crate::stages::{Direction, Stats};
use batch::{RxQueue, WakeFn};
use commands::{Command, Commands, JsState, RudpLimits};
use deccom_core::delay::Link;
use deccom_core::impair::ImpairConfig;
use deccom_core::rudp::Payload;
use io_thread::Engine;
use send::Pending;

pub use batch::ReceivedBatch;
pub(crate) use options::rudp_config;
pub use options::{FaultOptions, LocalAddress, RudpOptions, UdpBindOptions, UdpSocketStats};
pub use send::{decode_addr, ADDR_LEN};

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

/// What the JavaScript thread and the I/O thread share. Each lock is held only for a push, a
/// pop or a send; the pipeline is not here (the I/O thread owns it).
pub(crate) struct Shared {
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
  /// Commands from JavaScript to the I/O thread.
  commands: Commands,
  /// The stages' counters as last published by the I/O thread.
  stats: Mutex<Stats>,
  /// Auxiliary sockets (one group per remote).
  aux: aux::Aux,
  /// The pipeline and the receive batch: the I/O thread's during a round, else a small send's.
  engine: Mutex<Engine>,
  /// The JavaScript thread receives (no stage attached yet; see `js_rx`).
  js_rx: AtomicBool,
  /// What the DHT GET responder did (see `responder`), by the DHT layer's counter names.
  #[cfg(unix)]
  dht_counts: Mutex<responder::Counts>,
}

const KEY: usize = 7;

/// Reliable messages up to this many bytes run the pipeline on the sending thread when the I/O
/// thread is idle (larger ones go to the I/O thread: segmenting and pacing them is its work).
const INLINE_MAX: usize = 16 << 10;

impl Shared {
  fn sock(&self) -> UdpSockRef<'_> {
    UdpSockRef::from(&self.socket)
  }
}

/// A UDP socket owned by Rust. See the module documentation.
#[napi]
pub struct UdpSocket {
  shared: Option<Arc<Shared>>,
  thread: Option<JoinHandle<()>>,
  /// What the JavaScript thread knows about the stages (validation before queuing).
  js: Mutex<JsState>,
  /// The JavaScript-thread receiver, until a stage attaches.
  #[cfg(unix)]
  rx_js: Mutex<Option<js_rx::JsRx>>,
}

fn parse_ip(host: &str) -> Result<IpAddr> {
  let h = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
  h.parse::<IpAddr>().map_err(|_| coded(Code::InvalidAddress, format!("\"{host}\" is not an IP address (IPv4 like 127.0.0.1 or IPv6 like ::1)")))
}

fn direction(what: &str, dir: &str) -> Result<Direction> {
  Direction::parse(dir).ok_or_else(|| coded(Code::InvalidArgument, format!("{what} direction must be \"send\" or \"receive\", not \"{dir}\"")))
}

fn slot(d: Direction) -> usize {
  match d {
    Direction::Receive => 0,
    Direction::Send => 1,
  }
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
  pub fn bind(env: Env, host: String, port: u32, options: Option<UdpBindOptions>, on_readable: Function<(), ()>) -> Result<UdpSocket> {
    #[cfg(unix)]
    let on_readable_raw = on_readable.value().value;
    #[cfg(not(unix))]
    let _ = &env;
    let opts = options.unwrap_or(UdpBindOptions { recv_buffer_size: None, send_buffer_size: None, ipv6_only: None, max_batch: None, max_pending_bytes: None, max_queued_bytes: None, max_aux_sockets: None });
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
      rxq: Mutex::new(RxQueue::new()),
      commands: Commands::new(),
      stats: Mutex::new(Stats::default()),
      max_rx_queue_bytes: opts.max_queued_bytes.unwrap_or(32 << 20) as usize,
      aux: aux::Aux::new(opts.max_aux_sockets.unwrap_or(256) as usize),
      engine: Mutex::new(Engine::new(tsfn, opts.max_batch.unwrap_or(1024).clamp(1, 65_536) as usize)),
      js_rx: AtomicBool::new(false),
      #[cfg(unix)]
      dht_counts: Mutex::new(responder::Counts::default()),
    });
    // Until a stage attaches, the JavaScript thread's event loop receives (see `js_rx`).
    #[cfg(unix)]
    let rx_js = {
      let started = js_rx::JsRx::start(&shared, env.raw(), on_readable_raw);
      if started.is_some() {
        shared.js_rx.store(true, Relaxed);
        let _ = shared.arm(&lock(&shared.pending));
      }
      Mutex::new(started)
    };
    let thread_shared = shared.clone();
    let thread = std::thread::Builder::new()
      .name("deccom-udp".into())
      .spawn(move || io_thread::io_loop(&thread_shared))
      .map_err(|e| coded(Code::Socket, format!("cannot start the UDP I/O thread: {e}")))?;
    Ok(UdpSocket {
      shared: Some(shared),
      thread: Some(thread),
      js: Mutex::new(JsState::default()),
      #[cfg(unix)]
      rx_js,
    })
  }

  /// A stage attaches: reception goes to the I/O thread for good.
  fn stop_js_rx(&self) {
    #[cfg(unix)]
    if let Some(r) = lock(&self.rx_js).take() {
      r.stop();
      if let Some(sh) = self.shared.as_ref() {
        sh.js_rx.store(false, Relaxed);
        let _ = sh.arm(&lock(&sh.pending));
      }
    }
  }

  fn shared(&self) -> Result<&Arc<Shared>> {
    self.shared.as_ref().ok_or_else(|| coded(Code::Closed, "the UDP socket is closed"))
  }

  fn js(&self) -> std::sync::MutexGuard<'_, JsState> {
    lock(&self.js)
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
    if !self.js().send_stages() {
      return Ok(sh.send_runs(data, lens, |i| decode_addr(addr_at(i)), |i, j| addr_at(i) == addr_at(j)));
    }
    // Send-side stages run in the I/O thread: the datagrams go there (copied; a test setup).
    let (mut out, mut out_lens, mut dests) = (Vec::with_capacity(total), Vec::with_capacity(lens.len()), Vec::with_capacity(lens.len()));
    let mut off = 0;
    for (i, &len) in lens.iter().enumerate() {
      let d = &data[off..off + len as usize];
      off += len as usize;
      match decode_addr(addr_at(i)) {
        Some(to) if !d.is_empty() => {
          out.extend_from_slice(d);
          out_lens.push(len);
          dests.push(to);
        }
        _ => {
          sh.counters.tx_errors.fetch_add(1, Relaxed);
        }
      }
    }
    let n = out_lens.len() as u32;
    Ok(if n > 0 && sh.command_send(out, out_lens, dests) { n } else { 0 })
  }

  /// The next received batch, or null when none is waiting.
  #[napi]
  pub fn take(&self) -> Option<ReceivedBatch> {
    let sh = self.shared.as_ref()?;
    let b = lock(&sh.rxq).pop()?;
    if !b.completions.is_empty() {
      let mut js = self.js();
      for pair in b.completions.chunks_exact(2) {
        js.completed(pair[0]);
      }
    }
    Some(b.into())
  }

  /// Attaches the native reliable-UDP endpoint on top of the stages attached so far: datagrams
  /// whose first byte is `tag` go to it, and `rudpSend` queues whole messages on it.
  ///
  /// # Errors
  /// `ERR_DECCOM_INVALID_ARGUMENT` for a bad tag or when already attached.
  #[napi]
  pub fn attach_rudp(&self, tag: u32, options: Option<RudpOptions>) -> Result<()> {
    let sh = self.shared()?;
    let tag = u8::try_from(tag).ok().filter(|t| *t != 0).ok_or_else(|| coded(Code::InvalidArgument, "the reliable-UDP tag must be 1..255"))?;
    let mut js = self.js();
    if js.rudp.is_some() {
      return Err(coded(Code::InvalidArgument, "a reliable-UDP endpoint is already attached to this socket"));
    }
    let (mut config, seed, loopback_segment) = rudp_config(options.unwrap_or_default());
    // Peers may have in flight only what our receive buffer holds: a sender in slow start then
    // never overflows it (the kernel would drop whole bursts, and recovery costs more than the wait).
    if let Ok(rcvbuf) = sh.state.recv_buffer_size(sh.sock()) {
      config.receive_window = deccom_core::rudp::receive_window_for_socket_buffer(rcvbuf, config.max_segment_payload);
    }
    js.rudp = Some(RudpLimits { max_message_size: config.max_message_size, max_outgoing_per_peer: config.max_outgoing_per_peer });
    self.stop_js_rx();
    let _ = sh.command(Command::Attach(Box::new(RudpStage::new(tag, config, loopback_segment, Instant::now(), seed))), false);
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
  pub fn rudp_send(&self, to: &[u8], tag: u32, data: Buffer, progress: Option<bool>) -> Result<f64> {
    let dest = decode_addr(to).ok_or_else(|| coded(Code::InvalidAddress, "rudpSend: the address must be 18 bytes (encodeAddress)"))?;
    let len = data.len() + 1;
    // The JavaScript buffer is held, not copied: the I/O thread reads segments straight from it.
    self.queue_rudp(dest, len, progress.unwrap_or(false), || Payload::with_prefix(tag as u8, data))
  }

  /// As `rudpSend`, but copies `data` (cheaper than holding a reference for small messages: a
  /// held JavaScript buffer must be released on the JavaScript thread).
  ///
  /// # Errors
  /// As `rudpSend`.
  #[napi]
  pub fn rudp_send_copy(&self, to: &[u8], tag: u32, data: &[u8], progress: Option<bool>) -> Result<f64> {
    let dest = decode_addr(to).ok_or_else(|| coded(Code::InvalidAddress, "rudpSendCopy: the address must be 18 bytes (encodeAddress)"))?;
    self.queue_rudp(dest, data.len() + 1, progress.unwrap_or(false), || {
      let mut message = Vec::with_capacity(data.len() + 1);
      message.push(tag as u8);
      message.extend_from_slice(data);
      message.into()
    })
  }

  fn queue_rudp(&self, to: SocketAddr, len: usize, progress: bool, message: impl FnOnce() -> Payload) -> Result<f64> {
    let sh = self.shared()?;
    let mut js = self.js();
    let id = js.rudp_send(to, len)?;
    let mut cmd = Command::RudpSend { id, to, message: message(), progress };
    // The first small send of a burst may run on this thread at once (see `Shared::inline`);
    // only with nothing staged before it, which would otherwise be overtaken.
    if len <= INLINE_MAX && js.staged.is_empty() {
      match sh.inline(cmd) {
        Ok(()) => return Ok(id),
        Err(c) => cmd = c,
      }
    }
    if sh.commands_waiting() + js.staged.len() >= commands::MAX_COMMANDS {
      js.rudp_unsend(id);
      return Err(crate::error::rudp(deccom_core::rudp::RudpError::SendQueueFull { limit: commands::MAX_COMMANDS }));
    }
    if js.staged.len() >= commands::MAX_STAGED {
      sh.command_all(&mut js.staged);
    }
    js.staged.push(cmd);
    Ok(id)
  }

  /// Hands the reliable sends staged in this turn to the I/O thread (`rudpSend` and
  /// `rudpSendCopy` stage them; JavaScript calls this in a microtask after the first send of a
  /// turn). Any other command hands them over first, so the order of commands is kept.
  #[napi]
  pub fn flush(&self) {
    if let Some(sh) = self.shared.as_ref() {
      sh.command_all(&mut self.js().staged);
    }
  }


  /// Gives up the reliable message `id` (from `rudpSend`): the I/O thread stops sending it and
  /// releases its bytes; no completion follows. Returns false (and does nothing) when `id` is
  /// unknown or its completion was taken already. A completion already on its way may still
  /// arrive (the message finished first): ignore it.
  ///
  /// # Errors
  /// `ERR_DECCOM_CLOSED`.
  #[napi]
  pub fn rudp_cancel(&self, id: f64) -> Result<bool> {
    let sh = self.shared()?;
    let mut js = self.js();
    if !js.rudp_outstanding(id) {
      return Ok(false);
    }
    // Unbounded: a cancel frees room, it must not be refused for lack of it. After the staged
    // sends, one of which may be the message cancelled.
    sh.command_all(&mut js.staged);
    let _ = sh.command(Command::RudpCancel { id }, false);
    js.completed(id);
    Ok(true)
  }

  /// Configures native fault injection on `direction` (`"receive"` or `"send"`), or removes it
  /// (null). A new fault stage is composed on top of the stages attached so far; a second call
  /// for the same direction replaces the stage in its place.
  ///
  /// # Errors
  /// `ERR_DECCOM_INVALID_ARGUMENT` for another direction.
  #[napi]
  pub fn set_faults(&self, direction: String, options: Option<FaultOptions>) -> Result<()> {
    let sh = self.shared()?;
    let dir = self::direction("fault", &direction)?;
    let stage = options.map(|o| {
      let (drop, duplicate, reorder, corrupt) = (o.drop.unwrap_or(0.0), o.duplicate.unwrap_or(0.0), o.reorder.unwrap_or(0.0), o.corrupt.unwrap_or(0.0));
      let cfg = ImpairConfig { drop, duplicate, reorder, corrupt, reorder_delay: o.reorder_delay.unwrap_or(20.0), ..ImpairConfig::default() };
      Box::new(FaultStage::new(dir, cfg, o.seed.map(|s| s as u64).unwrap_or(1), Instant::now()))
    });
    let mut js = self.js();
    if stage.is_some() && !js.faults[slot(dir)] {
      js.below_protocols("a fault stage")?;
    }
    js.faults[slot(dir)] = stage.is_some();
    if stage.is_some() {
      self.stop_js_rx();
    }
    sh.command_after(&mut js.staged, Command::Faults(dir, stage));
    Ok(())
  }

  /// Attaches the native Noise stage (encrypt mode) for `identity` on top of the stages attached
  /// so far: it seals and opens the datagrams of the stages attached above it (reliable UDP) in
  /// the I/O thread; datagrams tagged `tag` carry Noise.
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
    let mut js = self.js();
    if js.noise {
      return Err(coded(Code::InvalidArgument, "a Noise stage is already attached to this socket"));
    }
    if js.rudp.is_some() {
      return Err(coded(Code::InvalidArgument, "attach the Noise stage before the reliable-UDP endpoint it carries (stages are composed bottom first)"));
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| napi::Error::from_reason(format!("ERR_DECCOM_RNG: the operating system random generator failed: {e}")))?;
    let endpoint = deccom_core::noise::Endpoint::new(identity.core(), cfg, Instant::now(), seed).map_err(crate::noise::noise_err)?;
    js.noise = true;
    self.stop_js_rx();
    sh.command_after(&mut js.staged, Command::Attach(Box::new(NoiseStage::new(tag, endpoint))));
    Ok(())
  }

  /// Starts a Noise handshake with `to` on the native stage (no-op when a session exists).
  ///
  /// # Errors
  /// `ERR_DECCOM_INVALID_ARGUMENT` when no Noise stage is attached.
  #[napi]
  pub fn noise_connect(&self, to: &[u8], expected_id: Option<&[u8]>) -> Result<()> {
    let sh = self.shared()?;
    let peer = decode_addr(to).ok_or_else(|| coded(Code::InvalidAddress, "noiseConnect: the address must be 18 bytes (encodeAddress)"))?;
    if !self.js().noise {
      return Err(coded(Code::InvalidArgument, "no Noise stage is attached to this socket"));
    }
    let expected = match expected_id {
      None => None,
      Some(b) => Some(<[u8; 32]>::try_from(b).map_err(|_| coded(Code::InvalidArgument, format!("noiseConnect: a node id is 32 bytes, got {}", b.len())))?),
    };
    // After the staged sends (handed over first, so `inline` runs them before this); then on
    // this thread if the engine is free.
    sh.command_all(&mut self.js().staged);
    if let Err(cmd) = sh.inline(Command::NoiseConnect(peer, expected)) {
      let _ = sh.command(cmd, false);
    }
    Ok(())
  }

  /// Configures a native delay line on `direction` (`"receive"` or `"send"`), or removes it (null).
  /// A new line is composed on top of the stages attached so far; a second call for the same
  /// direction replaces the line in its place. The link of each peer is asked for lazily: a
  /// batch's `delayPeers` lists the peers whose link must be set with `setDelayLink`; their
  /// datagrams wait (bounded) until it is.
  ///
  /// # Errors
  /// `ERR_DECCOM_INVALID_ARGUMENT` for another direction.
  #[napi]
  pub fn set_delay(&self, direction: String, max_queue_bytes: Option<f64>) -> Result<()> {
    let sh = self.shared()?;
    let dir = self::direction("delay", &direction)?;
    let line = max_queue_bytes.map(|b| Box::new(DelayStage::new(dir, b.max(0.0) as usize)));
    let mut js = self.js();
    if line.is_some() && !js.delay[slot(dir)] {
      js.below_protocols("a delay line")?;
    }
    js.delay[slot(dir)] = line.is_some();
    if line.is_some() {
      self.stop_js_rx();
    }
    sh.command_after(&mut js.staged, Command::Delay(dir, line));
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
    let link = Link { latency: crate::clock::duration_of_ms(latency_ms), bytes_per_sec: (bytes_per_sec.is_finite() && bytes_per_sec >= 1.0).then_some(bytes_per_sec as u64) };
    let missing = || coded(Code::InvalidArgument, format!("no native delay line on \"{direction}\""));
    let dir = Direction::parse(&direction).ok_or_else(missing)?;
    if !self.js().delay[slot(dir)] {
      return Err(missing());
    }
    sh.command_after(&mut self.js().staged, Command::DelayLink(dir, peer, link));
    Ok(())
  }

  /// Counters of the native stages, as the I/O thread last published them (after its latest
  /// round): reliable UDP (`rudp_*`), Noise (`noise_*`), fault injection (`faults_rx_*`,
  /// `faults_tx_*`) and delay lines (`delay_rx_*`, `delay_tx_*`).
  #[napi]
  pub fn pipeline_stats(&self) -> Result<HashMap<String, f64>> {
    let sh = self.shared()?;
    let stats = lock(&sh.stats);
    Ok(stats.iter().map(|(k, v)| (k.to_string(), v)).collect())
  }

  /// Opens up to `count` auxiliary sockets connected to `remote` (18-byte address encoding), as
  /// many as fit under `maxAuxSockets`; returns how many were opened. See [`aux`].
  ///
  /// # Errors
  /// `ERR_DECCOM_INVALID_ADDRESS` for a bad address, `ERR_DECCOM_SOCKET` when the OS refuses a socket.
  #[napi]
  pub fn aux_open(&self, remote: &[u8], count: u32) -> Result<u32> {
    let sh = self.shared()?;
    let to = decode_addr(remote).ok_or_else(|| coded(Code::InvalidAddress, "the remote address is not a valid 18-byte address"))?;
    let n = sh.aux.open(&sh.poller, to, count as usize).map_err(|e| coded(Code::Socket, format!("cannot open an auxiliary socket to {to}: {e}")))?;
    Ok(n as u32)
  }

  /// Closes the auxiliary sockets of `remote`; returns how many were closed.
  #[napi]
  pub fn aux_close(&self, remote: &[u8]) -> Result<u32> {
    let sh = self.shared()?;
    let to = decode_addr(remote).ok_or_else(|| coded(Code::InvalidAddress, "the remote address is not a valid 18-byte address"))?;
    Ok(sh.aux.close(&sh.poller, to) as u32)
  }

  /// Answers DHT GETs (datagrams of `tag` whose DHT type is GET) in the receive path, with the
  /// DHT layer's `server` and the Kademlia layer's `table` (the up to `nodes` nodes closest to the
  /// key), without calling JavaScript; `now` is the layers' clock (ms), which the server's time
  /// follows. Only
  /// while the JavaScript thread receives (no stage attached; Unix): false when not attached (the
  /// layer then answers as before). See `socket/responder.rs`.
  #[napi]
  pub fn attach_dht_responder(&self, env: Env, tag: u32, nodes: u32, server: ClassInstance<'_, crate::dht::DhtServer>, mut table: ClassInstance<'_, crate::kad::KadTable>, now: f64) -> Result<bool> {
    let tag = u8::try_from(tag).ok().filter(|t| *t != 0).ok_or_else(|| coded(Code::InvalidArgument, "the DHT tag must be 1..255"))?;
    self.shared()?;
    #[cfg(unix)]
    {
      let rx = lock(&self.rx_js);
      let Some(rx) = rx.as_ref() else { return Ok(false) };
      let mut server = server;
      let server_ptr: *mut crate::dht::DhtServer = &mut *server;
      let table_ptr: *mut crate::kad::KadTable = &mut *table;
      // SAFETY: on the JavaScript thread (a method call), with the objects wrapping the pointers.
      let r = unsafe { responder::Responder::new(env.raw(), tag, nodes.min(64) as usize, (server.value, server_ptr), (table.value, table_ptr), now) };
      let Some(r) = r else { return Ok(false) };
      rx.set_responder(Some(r));
      Ok(true)
    }
    #[cfg(not(unix))]
    {
      let _ = (env, nodes, server, table, now);
      Ok(false)
    }
  }

  /// Removes the DHT GET responder (GETs go to JavaScript again), releasing its objects.
  #[napi]
  pub fn detach_dht_responder(&self) {
    #[cfg(unix)]
    if let Some(rx) = lock(&self.rx_js).as_ref() {
      rx.set_responder(None);
    }
  }

  /// What the DHT GET responder counted (by the DHT layer's counter names), since the socket opened.
  #[napi]
  pub fn dht_responder_stats(&self) -> Result<HashMap<String, f64>> {
    let _sh = self.shared()?;
    #[cfg(unix)]
    return Ok(lock(&_sh.dht_counts).entries.iter().map(|(k, v)| (k.clone(), *v as f64)).collect());
    #[cfg(not(unix))]
    Ok(HashMap::new())
  }

  /// Counters of the auxiliary sockets (`aux_open` is how many are open now).
  #[napi]
  pub fn aux_stats(&self) -> Result<HashMap<String, f64>> {
    let sh = self.shared()?;
    Ok(sh.aux.stats().into_iter().map(|(k, v)| (k.to_string(), v)).collect())
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

  /// Stops the I/O thread, releases the callback and the stages (and whatever JavaScript buffers
  /// they still hold), and closes the socket. Idempotent.
  #[napi]
  pub fn close(&mut self) {
    self.stop_js_rx();
    if let Some(sh) = self.shared.take() {
      sh.closing.store(true, Relaxed);
      let _ = sh.poller.notify();
      if let Some(t) = self.thread.take() {
        drop(t.join());
      }
      {
        // The pipeline (and the wake-up, should the thread have died early) is dropped here,
        // on the JavaScript thread.
        let mut e = lock(&sh.engine);
        e.tsfn = None;
        drop(std::mem::take(&mut e.pipeline));
      }
      let _ = sh.poller.delete(&sh.socket);
      sh.aux.close_all(&sh.poller);
      let mut rest = VecDeque::new();
      sh.take_commands(&mut rest);
      drop(rest);
      // Staged sends hold JavaScript buffers: released here, on the JavaScript thread.
      self.js().staged.clear();
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

/// Locks a mutex, recovering from poisoning (a panic elsewhere must not wedge the socket).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
  m.lock().unwrap_or_else(|p| p.into_inner())
}
