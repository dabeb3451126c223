//! The addon's global allocator (small allocations from the system allocator, or from mimalloc
//! once a simulation asks for it; large ones lazily zero-filled memory from the OS on Linux), and
//! background pre-faulting of reassembly memory that the reliable endpoint reserved for data that
//! is arriving.
//!
//! # Small allocations
//!
//! The simulator's native lane runs millions of datagrams through the Kademlia engine, which
//! allocates and frees many small blocks per datagram (frames, records, map entries). mimalloc, a
//! size-class allocator with thread-local free lists, serves that pattern faster: the 10,000-node
//! join (`bench/sim.mjs`) took 25-30 % less CPU with it, for about 7 % more memory per node. The
//! sockets' paths are the other way round: the encrypted reliable transfer (`bench/rudp.mjs`,
//! segments sealed in the socket thread) ran about 20 % slower with it. So small allocations go
//! to the system allocator until [`prefer_mimalloc`] is called (the simulator's lane does, when it
//! is created); from then on new ones come from mimalloc. Each block is freed or grown by the
//! allocator that made it: mimalloc knows its own regions (`mi_is_in_heap_region`, a lookup in
//! its segment map), and a process that never switched never asks.
//!
//! # Lazily zero-filled large allocations
//!
//! A large reliable message is reassembled into one buffer allocated at full length
//! (`vec![0; len]`), and the endpoint charges its memory region by region as data arrives, not
//! for the length a peer announces (see `deccom_core::rudp`). That is sound only if the pages the
//! data has not reached stay untouched: fresh anonymous memory from the OS reads as zero and
//! becomes resident page by page when written. The C library's allocator gives that for large
//! requests only while they are above its (moving) mmap threshold, and mimalloc keeps freed memory
//! for reuse; there, a zeroed allocation may clear a reused block and make all of it resident at
//! once. So on Linux every allocation of
//! [`LAZY_THRESHOLD`] bytes or more (alignment up to a page) is mapped directly with `mmap` and
//! returned with `munmap`; smaller ones go to the small allocator (above).
//!
//! # Pre-faulting
//!
//! The first write to each page of fresh memory page-faults, and the kernel zeroes the page.
//! Measured on the development machine (a VM), touching 256 MiB of fresh memory costs 170–800 ms,
//! longer than receiving the data, and the socket's I/O thread would pay that inline. The
//! reliable endpoint therefore reserves memory a little ahead of a large message's writer
//! (bounded by the data that already arrived) and reports it (`Endpoint::poll_prefault`); the
//! drivers hand each range to [`populate`], which queues it for one background thread. That
//! thread marks the whole 2 MiB pages inside the range for transparent huge pages
//! (`MADV_HUGEPAGE`) and asks the kernel to populate the range (`madvise(MADV_POPULATE_WRITE)`,
//! Linux 5.14+) 2 MiB at a time, so the faults are taken on another core. Nothing is pre-faulted
//! for memory no data was sent for.
//!
//! The thread never writes to the memory, so it cannot race with the owner. Populating a page that
//! is already present does nothing. If a range was freed in the meantime, `madvise` fails and the
//! failure is ignored; if the range was reused, populating it is harmless. When the job queue is
//! full, the job is dropped and the owner faults the pages itself. On other platforms every
//! allocation goes to the small allocator and [`populate`] does nothing.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, Ordering};

use mimalloc::MiMalloc;

/// Small allocations come from mimalloc (see the module docs); never turned off again.
static MIMALLOC: AtomicBool = AtomicBool::new(false);

/// From now on, small allocations come from mimalloc (see the module docs). Blocks made before
/// stay with the system allocator until freed.
pub fn prefer_mimalloc() {
  MIMALLOC.store(true, Ordering::Relaxed);
}

/// The allocator of small blocks: mimalloc, or the system's.
struct Small;

impl Small {
  /// Whether `ptr` (a small block) is mimalloc's. Only asked once mimalloc was preferred: before
  /// that, every small block is the system allocator's.
  fn owns(ptr: *mut u8) -> bool {
    // SAFETY: a lookup in mimalloc's segment map; it reads no memory at `ptr`.
    MIMALLOC.load(Ordering::Relaxed) && unsafe { libmimalloc_sys::mi_is_in_heap_region(ptr.cast()) }
  }

  unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
    // SAFETY: forwarded with the caller's layout.
    unsafe { if MIMALLOC.load(Ordering::Relaxed) { MiMalloc.alloc(layout) } else { System.alloc(layout) } }
  }

  unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
    // SAFETY: forwarded with the caller's layout.
    unsafe { if MIMALLOC.load(Ordering::Relaxed) { MiMalloc.alloc_zeroed(layout) } else { System.alloc_zeroed(layout) } }
  }

  unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
    // SAFETY: forwarded to the allocator that made `ptr`, with its layout.
    unsafe { if Self::owns(ptr) { MiMalloc.dealloc(ptr, layout) } else { System.dealloc(ptr, layout) } }
  }

  unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
    // SAFETY: forwarded to the allocator that made `ptr` (the block stays with it).
    unsafe { if Self::owns(ptr) { MiMalloc.realloc(ptr, layout, new_size) } else { System.realloc(ptr, layout, new_size) } }
  }
}

/// Allocations at least this large are mapped directly from the OS (Linux). At most the core's
/// `SMALL_MESSAGE`, the length from which reassembly buffers are charged as data arrives.
pub const LAZY_THRESHOLD: usize = 256 << 10;

/// The allocator type (installed with `#[global_allocator]` in lib.rs).
pub struct Prefaulting;

// SAFETY: small requests are forwarded unchanged to the small allocator, which frees or grows a
// block with the allocator that made it; large ones (decided by size and alignment alone, so
// `dealloc`/`realloc` route a block back to where it came from) are whole anonymous mappings,
// page-aligned, which satisfies any alignment up to a page.
unsafe impl GlobalAlloc for Prefaulting {
  unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
    if imp::is_lazy(layout) {
      return imp::map(layout.size());
    }
    // SAFETY: forwarded with the caller's layout.
    unsafe { Small.alloc(layout) }
  }

  unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
    if imp::is_lazy(layout) {
      // SAFETY: a lazy layout was mapped by `imp::map` with this size.
      return unsafe { imp::unmap(ptr, layout.size()) };
    }
    // SAFETY: forwarded; `ptr` came from the small allocator with this layout.
    unsafe { Small.dealloc(ptr, layout) }
  }

  /// `vec![0; n]` comes here (the reliable endpoint's reassembly buffers do): a fresh mapping is
  /// already zero, and stays untouched until written.
  unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
    if imp::is_lazy(layout) {
      return imp::map(layout.size());
    }
    // SAFETY: forwarded with the caller's layout.
    unsafe { Small.alloc_zeroed(layout) }
  }

  unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
    // SAFETY: the caller upholds realloc's contract (`new_size` > 0, valid for the alignment).
    let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
    match (imp::is_lazy(layout), imp::is_lazy(new_layout)) {
      // SAFETY: forwarded; both sides belong to the small allocator.
      (false, false) => unsafe { Small.realloc(ptr, layout, new_size) },
      // SAFETY: `ptr` is a mapping of `layout.size()` bytes.
      (true, true) => unsafe { imp::remap(ptr, layout.size(), new_size) },
      _ => {
        // Crossing the threshold: allocate on the other side, copy, free.
        // SAFETY: `new_layout` is valid (checked by the caller's contract).
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
          // SAFETY: both blocks are valid for the smaller size and do not overlap.
          unsafe {
            std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            self.dealloc(ptr, layout);
          }
        }
        new
      }
    }
  }
}

/// Pre-faults `[addr, addr + len)`, reassembly memory the reliable endpoint charged ahead of its
/// writer, off the calling thread (see the module docs). Never blocks; never writes the memory.
pub fn populate(addr: usize, len: usize) {
  imp::populate(addr, len);
}

#[cfg(target_os = "linux")]
mod imp {
  use std::alloc::Layout;
  use std::sync::atomic::{AtomicBool, Ordering};
  use std::sync::{Condvar, Mutex};

  use super::LAZY_THRESHOLD;

  const PAGE: usize = 4096;
  const HUGE: usize = 2 << 20;
  const MAX_JOBS: usize = 16;

  pub fn is_lazy(layout: Layout) -> bool {
    layout.size() >= LAZY_THRESHOLD && layout.align() <= PAGE
  }

  pub fn map(size: usize) -> *mut u8 {
    // SAFETY: a new private anonymous mapping; no existing memory is affected.
    let p = unsafe {
      libc::mmap(std::ptr::null_mut(), size, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
    };
    if p == libc::MAP_FAILED { std::ptr::null_mut() } else { p.cast() }
  }

  /// # Safety
  /// `ptr` must be a mapping of `size` bytes made by [`map`] or [`remap`].
  pub unsafe fn unmap(ptr: *mut u8, size: usize) {
    // SAFETY: per the contract; the owner gives the mapping up.
    unsafe { libc::munmap(ptr.cast(), size) };
  }

  /// # Safety
  /// As [`unmap`]; on success the old pointer is invalid.
  pub unsafe fn remap(ptr: *mut u8, size: usize, new_size: usize) -> *mut u8 {
    // SAFETY: per the contract; the kernel moves or resizes the whole mapping.
    let p = unsafe { libc::mremap(ptr.cast(), size, new_size, libc::MREMAP_MAYMOVE) };
    if p == libc::MAP_FAILED { std::ptr::null_mut() } else { p.cast() }
  }

  struct Jobs {
    list: [(usize, usize); MAX_JOBS],
    len: usize,
  }

  static JOBS: Mutex<Jobs> = Mutex::new(Jobs { list: [(0, 0); MAX_JOBS], len: 0 });
  static READY: Condvar = Condvar::new();
  static STARTED: AtomicBool = AtomicBool::new(false);
  static DISABLED: AtomicBool = AtomicBool::new(false);

  pub fn populate(addr: usize, len: usize) {
    if DISABLED.load(Ordering::Relaxed) {
      return;
    }
    {
      // No allocation happens under this lock (a fixed array), so the allocator cannot re-enter it.
      let Ok(mut jobs) = JOBS.try_lock() else { return };
      if jobs.len == MAX_JOBS {
        return;
      }
      let n = jobs.len;
      jobs.list[n] = (addr, len);
      jobs.len += 1;
    }
    if !STARTED.swap(true, Ordering::AcqRel) && std::thread::Builder::new().name("deccom-prefault".into()).spawn(worker).is_err() {
      DISABLED.store(true, Ordering::Relaxed);
    }
    READY.notify_one();
  }

  /// The whole `unit`-aligned units inside `[addr, addr + len)`.
  fn aligned(addr: usize, len: usize, unit: usize) -> (usize, usize) {
    (addr.next_multiple_of(unit), (addr + len) & !(unit - 1))
  }

  fn worker() {
    loop {
      let (addr, len) = {
        let mut jobs = JOBS.lock().unwrap_or_else(|p| p.into_inner());
        while jobs.len == 0 {
          jobs = READY.wait(jobs).unwrap_or_else(|p| p.into_inner());
        }
        let job = jobs.list[0];
        jobs.list.copy_within(1.., 0);
        jobs.len -= 1;
        job
      };
      // Transparent huge pages for the whole 2 MiB pages of the range only (the range is charged;
      // a huge page reaching outside it would make uncharged memory resident). Given here, not in
      // the I/O thread: the hint takes the process's memory-map lock for writing, and the I/O
      // thread must not wait for it behind this thread's population of a range.
      let (huge_start, huge_end) = aligned(addr, len, HUGE);
      if huge_end > huge_start {
        // SAFETY: madvise only changes how the kernel backs this range; it never touches the bytes.
        unsafe { libc::madvise(huge_start as *mut libc::c_void, huge_end - huge_start, libc::MADV_HUGEPAGE) };
      }
      let (start, end) = aligned(addr, len, PAGE);
      let mut at = start;
      while at < end {
        let n = HUGE.min(end - at);
        // SAFETY: as above.
        let r = unsafe { libc::madvise(at as *mut libc::c_void, n, libc::MADV_POPULATE_WRITE) };
        if r != 0 {
          if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
            // A kernel without MADV_POPULATE_WRITE: stop trying for good.
            DISABLED.store(true, Ordering::Relaxed);
          }
          break;
        }
        at += n;
      }
    }
  }
}

#[cfg(not(target_os = "linux"))]
mod imp {
  use std::alloc::Layout;

  pub fn is_lazy(_layout: Layout) -> bool {
    false
  }
  pub fn map(_size: usize) -> *mut u8 {
    std::ptr::null_mut()
  }
  pub unsafe fn unmap(_ptr: *mut u8, _size: usize) {}
  pub unsafe fn remap(_ptr: *mut u8, _size: usize, _new_size: usize) -> *mut u8 {
    std::ptr::null_mut()
  }
  pub fn populate(_addr: usize, _len: usize) {}
}
