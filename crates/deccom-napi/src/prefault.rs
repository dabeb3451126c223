//! The addon's global allocator: the system allocator, plus background pre-faulting of very large
//! allocations on Linux.
//!
//! A large reliable message is reassembled into one fresh buffer. The first write to each page of
//! it page-faults, and the kernel zeroes the page. Measured on the development machine (a VM),
//! touching 256 MiB of fresh memory costs 170–800 ms, which is longer than receiving the data. The
//! socket's I/O thread would pay that inline while datagrams pile up in the kernel.
//!
//! So every allocation of [`THRESHOLD`] bytes or more is also handed to one background thread. That
//! thread asks the kernel to populate the pages ahead of the writer, 2 MiB at a time
//! (`madvise(MADV_POPULATE_WRITE)`, Linux 5.14+), so the faults are taken on another core. The
//! `MADV_HUGEPAGE` hint is given at once, in the allocating thread, so that what the owner faults
//! itself (when it overtakes the worker, as it does when both cores are busy) comes in 2 MiB pages.
//!
//! The thread never writes to the memory, so it cannot race with the owner. Populating a page that
//! is already present does nothing. If a range was freed in the meantime, `madvise` fails and the
//! failure is ignored; if the range was reused, populating it is harmless. When the job queue is
//! full, the job is dropped and the owner faults the pages itself. On other platforms this is
//! exactly the system allocator.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at least this large are pre-faulted in the background.
pub const THRESHOLD: usize = 16 << 20;

/// The allocator type (installed with `#[global_allocator]` in lib.rs).
pub struct Prefaulting;

// SAFETY: every call is forwarded unchanged to `System`; the only addition is a hint to the kernel
// about memory `System` just returned, which never reads or writes that memory.
unsafe impl GlobalAlloc for Prefaulting {
  unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
    // SAFETY: forwarded with the caller's layout.
    let p = unsafe { System.alloc(layout) };
    if layout.size() >= THRESHOLD && !p.is_null() {
      imp::prefault(p as usize, layout.size());
    }
    p
  }

  unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
    // SAFETY: forwarded; `ptr` came from `System` with this layout.
    unsafe { System.dealloc(ptr, layout) }
  }

  /// `vec![0; n]` comes here (the reliable endpoint's reassembly buffers do): fresh mmap'd memory
  /// is already zero, and pre-faulting it matters just as much.
  unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
    // SAFETY: forwarded with the caller's layout.
    let p = unsafe { System.alloc_zeroed(layout) };
    if layout.size() >= THRESHOLD && !p.is_null() {
      imp::prefault(p as usize, layout.size());
    }
    p
  }

  unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
    // SAFETY: forwarded; the caller upholds realloc's contract.
    unsafe { System.realloc(ptr, layout, new_size) }
  }
}

#[cfg(target_os = "linux")]
mod imp {
  use std::sync::atomic::{AtomicBool, Ordering};
  use std::sync::{Condvar, Mutex};

  const CHUNK: usize = 2 << 20;
  const MAX_JOBS: usize = 16;

  struct Jobs {
    list: [(usize, usize); MAX_JOBS],
    len: usize,
  }

  static JOBS: Mutex<Jobs> = Mutex::new(Jobs { list: [(0, 0); MAX_JOBS], len: 0 });
  static READY: Condvar = Condvar::new();
  static STARTED: AtomicBool = AtomicBool::new(false);
  static DISABLED: AtomicBool = AtomicBool::new(false);

  pub fn prefault(addr: usize, len: usize) {
    // Ask for transparent huge pages at once (one syscall, no allocation), so that the pages the
    // owner touches before the worker gets there are 2 MiB ones too: 128 faults for 256 MiB
    // instead of 65,536.
    let (start, end) = page_aligned(addr, len);
    if end > start {
      // SAFETY: madvise only changes how the kernel backs this range; it never touches the bytes.
      unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
    }
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
    if !STARTED.swap(true, Ordering::AcqRel) {
      // Spawning allocates only small amounts, which do not come back here.
      if std::thread::Builder::new().name("deccom-prefault".into()).spawn(worker).is_err() {
        DISABLED.store(true, Ordering::Relaxed);
      }
    }
    READY.notify_one();
  }

  /// The whole pages inside `[addr, addr + len)`: madvise wants an aligned start; partial pages
  /// are left to the owner.
  fn page_aligned(addr: usize, len: usize) -> (usize, usize) {
    let page = 4096;
    (addr.next_multiple_of(page), (addr + len) & !(page - 1))
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
      let (start, end) = page_aligned(addr, len);
      if end <= start {
        continue;
      }
      let mut at = start;
      while at < end {
        let n = CHUNK.min(end - at);
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
  pub fn prefault(_addr: usize, _len: usize) {}
}
