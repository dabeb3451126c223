//! Receiving on the JavaScript thread while no stage is attached.
//!
//! A socket without native stages (no reliable UDP, Noise, faults or delay line: a plain
//! `UdpTransport`, as under Kademlia and the DHT) has nothing for the I/O thread to do with what
//! arrives but copy it into a batch for JavaScript. Handing the batch over costs a second thread
//! wake-up per datagram burst (kernel → I/O thread → JavaScript), which on a request/response
//! exchange is most of the per-hop latency. So until the first stage attaches, the JavaScript
//! thread's own event loop (libuv, which Node.js exports to addons) watches the socket and drains
//! it itself, into the same batches, and calls `onReadable` at once; the I/O thread keeps the
//! commands, the send queue and the auxiliary sockets. Attaching a stage hands reception back to
//! the I/O thread for good ([`JsRx::stop`]).
//!
//! A wake-up that finds only a few datagrams ([`ONE_BY_ONE`]) calls `onReadable` once per
//! datagram: each call ends with Node.js running the microtasks the datagram caused (a promise
//! that awaited exactly that answer resumes), before the next datagram is handled — as when
//! answers arrive one by one. A burst still goes in one call.
//!
//! Unix only: elsewhere the I/O thread receives from the start.

use std::ffi::{c_int, c_void};
use std::io::IoSliceMut;
use std::sync::Arc;
use std::time::Instant;

use napi::sys;
use quinn_udp::RecvMeta;

use super::responder::Responder;
use super::send::normalize;
use super::{lock, Shared};

/// Receive slots of the JavaScript-thread drain (GRO may fill each one up to 64 KiB).
const SLOTS: usize = 8;
const SLOT: usize = 64 * 1024;
/// `recvmmsg` calls per wake-up at most (the rest waits for the next turn of the event loop).
const MAX_CALLS: usize = 64;
/// A wake-up that finds at most this many datagrams (and the socket then empty) hands them to
/// JavaScript one call each, as an event loop that reads one datagram per callback would: what a
/// datagram resolves (a promise awaiting an answer) runs before the next datagram is handled,
/// as a reply that arrives alone would be. Larger drains go in one call (throughput).
const ONE_BY_ONE: usize = 4;

const UV_READABLE: c_int = 1;
/// `uv_handle_type` of a poll handle (libuv's `UV_POLL`, stable since libuv 1.0).
const UV_POLL: c_int = 8;

unsafe extern "C" {
  fn uv_handle_size(kind: c_int) -> usize;
  fn uv_poll_init(event_loop: *mut sys::uv_loop_s, handle: *mut c_void, fd: c_int) -> c_int;
  fn uv_poll_start(handle: *mut c_void, events: c_int, cb: extern "C" fn(*mut c_void, c_int, c_int)) -> c_int;
  fn uv_poll_stop(handle: *mut c_void) -> c_int;
  fn uv_close(handle: *mut c_void, cb: extern "C" fn(*mut c_void));
  fn uv_handle_set_data(handle: *mut c_void, data: *mut c_void);
  fn uv_handle_get_data(handle: *const c_void) -> *mut c_void;
}

/// What the poll callback works with; owned by the handle (freed by its close callback).
struct Ctx {
  /// None once stopped: the socket closes with its owner, not when libuv gets to the close.
  sh: Option<Arc<Shared>>,
  env: sys::napi_env,
  func: sys::napi_ref,
  async_ctx: sys::napi_async_context,
  scratch: Vec<u8>,
  metas: Vec<RecvMeta>,
  /// The handle's memory (`uv_handle_size(UV_POLL)` bytes, 8-aligned).
  handle: Vec<u64>,
  /// Answers DHT GETs in the drain (see `responder`), once the DHT layer attached one.
  responder: Option<Responder>,
}

/// The JavaScript-thread receiver of one socket (see the module documentation).
pub(crate) struct JsRx {
  handle: *mut c_void,
}

// SAFETY: the handle is only touched on the JavaScript thread (start, stop); the socket keeps it
// behind a mutex only to satisfy the class's bounds.
unsafe impl Send for JsRx {}

impl JsRx {
  /// Starts watching the socket from the JavaScript thread's event loop; None when that is not
  /// possible (the caller leaves reception to the I/O thread).
  pub fn start(sh: &Arc<Shared>, env: sys::napi_env, func: sys::napi_value) -> Option<JsRx> {
    use std::os::fd::AsRawFd;
    // SAFETY: plain Node-API and libuv calls on the JavaScript thread with valid arguments; on
    // any failure what was created is released and None returned.
    unsafe {
      let mut event_loop = std::ptr::null_mut();
      if sys::napi_get_uv_event_loop(env, &mut event_loop) != sys::Status::napi_ok || event_loop.is_null() {
        return None;
      }
      let mut func_ref = std::ptr::null_mut();
      if sys::napi_create_reference(env, func, 1, &mut func_ref) != sys::Status::napi_ok {
        return None;
      }
      let mut name = std::ptr::null_mut();
      let label = c"deccom:udp";
      let mut async_ctx = std::ptr::null_mut();
      if sys::napi_create_string_utf8(env, label.as_ptr(), label.to_bytes().len() as _, &mut name) != sys::Status::napi_ok
        || sys::napi_async_init(env, std::ptr::null_mut(), name, &mut async_ctx) != sys::Status::napi_ok
      {
        sys::napi_delete_reference(env, func_ref);
        return None;
      }
      let words = uv_handle_size(UV_POLL).div_ceil(8).max(32);
      let mut ctx = Box::new(Ctx {
        sh: Some(sh.clone()),
        env,
        func: func_ref,
        async_ctx,
        scratch: vec![0u8; SLOT * SLOTS],
        metas: vec![RecvMeta::default(); SLOTS],
        handle: vec![0u64; words],
        responder: None,
      });
      let handle = ctx.handle.as_mut_ptr().cast::<c_void>();
      if uv_poll_init(event_loop, handle, sh.socket.as_raw_fd()) != 0 {
        release(&ctx);
        return None;
      }
      uv_handle_set_data(handle, Box::into_raw(ctx).cast());
      if uv_poll_start(handle, UV_READABLE, on_poll) != 0 {
        uv_close(handle, on_close);
        return None;
      }
      Some(JsRx { handle })
    }
  }

  /// Attaches (Some) or removes (None) the DHT GET responder. On the JavaScript thread.
  pub fn set_responder(&self, r: Option<Responder>) {
    // SAFETY: the data pointer is the live context until the handle is closed (by `stop`, which
    // consumes this JsRx); only the JavaScript thread touches it, as here.
    unsafe {
      let ctx = uv_handle_get_data(self.handle).cast::<Ctx>();
      let old = match ctx.as_mut() {
        Some(ctx) => std::mem::replace(&mut ctx.responder, r),
        None => r,
      };
      if let Some(old) = old {
        old.release();
      }
    }
  }

  /// Stops watching; the handle and its context are freed once libuv closed it.
  pub fn stop(self) {
    // SAFETY: the handle was initialised by `start` and is closed exactly once, here.
    unsafe {
      uv_poll_stop(self.handle);
      let ctx = uv_handle_get_data(self.handle).cast::<Ctx>();
      if !ctx.is_null() {
        (*ctx).sh = None;
      }
      uv_close(self.handle, on_close);
    }
  }
}

/// Releases the Node-API objects of a context (on the JavaScript thread).
unsafe fn release(ctx: &Ctx) {
  // SAFETY: called on the JavaScript thread with the env the objects were created in.
  unsafe {
    sys::napi_async_destroy(ctx.env, ctx.async_ctx);
    sys::napi_delete_reference(ctx.env, ctx.func);
  }
  if let Some(r) = ctx.responder.as_ref() {
    r.release();
  }
}

extern "C" fn on_close(handle: *mut c_void) {
  // SAFETY: the data pointer was set by `start` from `Box::into_raw` and is taken back once.
  unsafe {
    let ctx = uv_handle_get_data(handle).cast::<Ctx>();
    if !ctx.is_null() {
      let ctx = Box::from_raw(ctx);
      release(&ctx);
    }
  }
}

extern "C" fn on_poll(handle: *mut c_void, _status: c_int, _events: c_int) {
  // SAFETY: the data pointer is the live context until `on_close` runs, which libuv does only
  // after this callback can no longer be called.
  let ctx = unsafe { &mut *uv_handle_get_data(handle).cast::<Ctx>() };
  let (waiting, held) = drain(ctx);
  if held.is_empty() {
    if waiting {
      call(ctx);
    }
    return;
  }
  for b in held {
    {
      // The socket may have closed during the previous call. No reference to it is held across
      // a call: JavaScript may close it there and count its descriptors in the call's microtasks.
      let Some(sh) = ctx.sh.as_ref() else { return };
      lock(&sh.rxq).push_held(b);
    }
    call(ctx);
  }
}

/// Reads what the socket holds into batches. Returns whether JavaScript has something to take,
/// and the batches to hand over one call each (a small drain, see [`ONE_BY_ONE`]).
fn drain(ctx: &mut Ctx) -> (bool, Vec<super::batch::RecvBatch>) {
  let Some(owner) = ctx.sh.clone() else { return (false, Vec::new()) };
  let sh = &*owner;
  let mut guard = lock(&sh.engine);
  let e = &mut *guard;
  let Some(tsfn) = e.tsfn.as_ref() else { return (false, Vec::new()) };
  let mut rx = super::batch::Rx::new(sh, tsfn, &mut e.slots, &mut e.batch, e.max_batch);
  rx.direct = true;
  let mut replies = Vec::new();
  for call in 0..MAX_CALLS {
    let mut iovs: Vec<IoSliceMut<'_>> = ctx.scratch.chunks_mut(SLOT).map(IoSliceMut::new).collect();
    match sh.state.recv(sh.sock(), &mut iovs, &mut ctx.metas) {
      Ok(n) => {
        sh.counters.rx_syscalls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        drop(iovs);
        // A first call that found a few datagrams and room to spare: the socket is drained.
        let few = call == 0 && n <= ONE_BY_ONE && n < ctx.metas.len() && ctx.metas.iter().take(n).all(|m| m.len <= m.stride);
        if few {
          rx.max_batch = 1;
          rx.held = Some(Vec::new());
        }
        let now = Instant::now();
        for (m, buf) in ctx.metas.iter().take(n).zip(ctx.scratch.chunks(SLOT)) {
          let from = normalize(m.addr);
          if let Some(r) = ctx.responder.as_mut() {
            // One datagram (not a GRO run) that the responder answers: JavaScript never sees it.
            if m.len <= m.stride && r.answer(now, from, &buf[..m.len], &mut lock(&sh.dht_counts), &mut replies) {
              sh.counters.rx_datagrams.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
              sh.counters.rx_bytes.fetch_add(m.len as u64, std::sync::atomic::Ordering::Relaxed);
              continue;
            }
          }
          super::io_thread::split(sh, &mut e.pipeline, now, from, &buf[..m.len], m.stride, &mut rx);
        }
        if few {
          break;
        }
      }
      Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
      Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => continue,
      Err(err) => {
        if err.kind() != std::io::ErrorKind::WouldBlock {
          sh.counters.rx_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        break;
      }
    }
  }
  rx.deliver();
  let held = rx.held.take().unwrap_or_default();
  drop(guard);
  for (to, reply) in replies {
    sh.send_runs(&reply, &[reply.len() as u32], |_| Some(to), |_, _| false);
  }
  let waiting = lock(&sh.rxq).has_batches();
  (waiting, held)
}

/// Calls `onReadable` as a callback from the event loop (microtasks and ticks run after it; an
/// exception it throws becomes an uncaught exception, as from any event-loop callback).
fn call(ctx: &Ctx) {
  // SAFETY: on the JavaScript thread (a libuv callback), with a handle scope around the values.
  unsafe {
    let env = ctx.env;
    let mut scope = std::ptr::null_mut();
    if sys::napi_open_handle_scope(env, &mut scope) != sys::Status::napi_ok {
      return;
    }
    let mut func = std::ptr::null_mut();
    let mut recv = std::ptr::null_mut();
    if sys::napi_get_reference_value(env, ctx.func, &mut func) == sys::Status::napi_ok && !func.is_null() && sys::napi_get_global(env, &mut recv) == sys::Status::napi_ok {
      let mut result = std::ptr::null_mut();
      if sys::napi_make_callback(env, ctx.async_ctx, recv, func, 0, std::ptr::null(), &mut result) == sys::Status::napi_pending_exception {
        let mut err = std::ptr::null_mut();
        if sys::napi_get_and_clear_last_exception(env, &mut err) == sys::Status::napi_ok {
          sys::napi_fatal_exception(env, err);
        }
      }
    }
    sys::napi_close_handle_scope(env, scope);
  }
}
