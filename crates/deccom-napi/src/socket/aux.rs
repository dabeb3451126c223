//! Auxiliary sockets: extra UDP sockets, each connected to one remote, that carry the traffic to
//! and from that remote instead of the main socket (birthday-paradox hole punching, docs/nat.md).
//!
//! `auxOpen(remote, n)` opens `n` sockets (ephemeral ports, the main socket's family), each
//! `connect`ed to `remote` so the kernel delivers it nothing from anyone else, and registers them
//! with the I/O thread's poller. They form the remote's *group*:
//! - while no socket of the group has received anything, a datagram sent to `remote` (through
//!   `sendBatch` or by a native stage) leaves from **every** socket of the group (each one opens
//!   its own NAT mapping toward the remote);
//! - the first datagram received on one of them makes it the **winner**: the group's other sockets
//!   are closed at once, and from then on everything sent to `remote` leaves from the winner;
//! - whatever arrives on a group's socket is handed to the pipeline as a datagram from `remote`, so
//!   native stages (ReliableUdp, Noise) and JavaScript see an ordinary peer.
//!
//! `auxClose(remote)` closes the group; closing the main socket closes every group. The number of
//! auxiliary sockets open at once is bounded (`maxAuxSockets`, default 256): `auxOpen` beyond it
//! opens only what fits. Counters: `aux_open` (now), `aux_opened`, `aux_closed`, `aux_won`,
//! `aux_rx_datagrams`, `aux_tx_datagrams`, `aux_errors`.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, AtomicUsize};

use polling::{Event, Poller};

/// Poller keys of auxiliary sockets start here (the main socket's key is below).
pub(crate) const AUX_KEY_BASE: usize = 1 << 20;

#[derive(Default)]
pub(crate) struct AuxCounters {
  pub opened: AtomicU64,
  pub closed: AtomicU64,
  pub won: AtomicU64,
  pub rx: AtomicU64,
  pub tx: AtomicU64,
  pub errors: AtomicU64,
}

struct Group {
  /// (poller key, socket); after a win, only the winner.
  sockets: Vec<(usize, StdUdpSocket)>,
  won: bool,
}

/// The groups of one main socket, behind the Shared's mutex.
#[derive(Default)]
pub(crate) struct AuxTable {
  groups: HashMap<SocketAddr, Group>,
  by_key: HashMap<usize, SocketAddr>,
  next_key: usize,
}

/// Everything the main socket keeps about its auxiliary sockets.
pub(crate) struct Aux {
  pub table: std::sync::Mutex<AuxTable>,
  /// Sockets open now (also read without the lock: 0 means no lookup on the send path).
  pub open: AtomicUsize,
  pub max: usize,
  pub counters: AuxCounters,
}

impl Aux {
  pub fn new(max: usize) -> Aux {
    Aux { table: Default::default(), open: AtomicUsize::new(0), max, counters: AuxCounters::default() }
  }

  fn lock(&self) -> std::sync::MutexGuard<'_, AuxTable> {
    self.table.lock().unwrap_or_else(|p| p.into_inner())
  }

  /// Opens up to `n` sockets connected to `remote` (what fits under the bound); returns how many.
  pub fn open(&self, poller: &Poller, remote: SocketAddr, n: usize) -> io::Result<usize> {
    let mut t = self.lock();
    let room = self.max.saturating_sub(self.open.load(Relaxed));
    let mut opened = 0;
    for _ in 0..n.min(room) {
      let any: SocketAddr = match remote {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
      };
      let s = StdUdpSocket::bind(any)?;
      s.connect(remote)?;
      s.set_nonblocking(true)?;
      let key = AUX_KEY_BASE + t.next_key;
      t.next_key = (t.next_key + 1) % (usize::MAX - AUX_KEY_BASE);
      // SAFETY: the socket is deleted from the poller before it is dropped (close_socket).
      unsafe { poller.add(&s, Event::readable(key)) }?;
      let g = t.groups.entry(remote).or_insert_with(|| Group { sockets: Vec::new(), won: false });
      g.sockets.push((key, s));
      t.by_key.insert(key, remote);
      self.open.fetch_add(1, Relaxed);
      self.counters.opened.fetch_add(1, Relaxed);
      opened += 1;
    }
    Ok(opened)
  }

  fn close_socket(&self, poller: &Poller, t: &mut AuxTable, key: usize, s: StdUdpSocket) {
    let _ = poller.delete(&s);
    t.by_key.remove(&key);
    drop(s);
    self.open.fetch_sub(1, Relaxed);
    self.counters.closed.fetch_add(1, Relaxed);
  }

  /// Closes the group of `remote`; returns how many sockets were closed.
  pub fn close(&self, poller: &Poller, remote: SocketAddr) -> usize {
    let mut t = self.lock();
    let Some(g) = t.groups.remove(&remote) else { return 0 };
    let n = g.sockets.len();
    for (key, s) in g.sockets {
      self.close_socket(poller, &mut t, key, s);
    }
    n
  }

  /// Closes every group.
  pub fn close_all(&self, poller: &Poller) {
    let remotes: Vec<SocketAddr> = self.lock().groups.keys().copied().collect();
    for r in remotes {
      self.close(poller, r);
    }
  }

  /// Sends `contents` (datagrams of `seg` bytes back to back) to `dest` through its group, if it
  /// has one: from the winner, or from every socket before a win. Returns false when `dest` has
  /// no group (the caller sends through the main socket).
  pub fn send(&self, dest: SocketAddr, contents: &[u8], seg: usize) -> bool {
    if self.open.load(Relaxed) == 0 {
      return false;
    }
    let t = self.lock();
    let Some(g) = t.groups.get(&dest) else { return false };
    for (_, s) in &g.sockets {
      for d in contents.chunks(seg.max(1)) {
        match s.send(d) {
          Ok(_) => self.counters.tx.fetch_add(1, Relaxed),
          // A full send buffer or an ICMP error on one of many probing sockets: counted, not fatal.
          Err(_) => self.counters.errors.fetch_add(1, Relaxed),
        };
      }
    }
    true
  }

  /// Drains the socket with poller key `key` into `out` as (remote, datagram); the first
  /// datagram of a group makes that socket the winner and closes the others. Re-arms it.
  pub fn receive(&self, poller: &Poller, key: usize, buf: &mut [u8], out: &mut Vec<(SocketAddr, Vec<u8>)>, max: usize) {
    let mut t = self.lock();
    let Some(&remote) = t.by_key.get(&key) else { return };
    let mut got = 0;
    {
      let Some(g) = t.groups.get(&remote) else { return };
      let Some((_, s)) = g.sockets.iter().find(|(k, _)| *k == key) else { return };
      while got < max {
        match s.recv(buf) {
          Ok(n) => {
            got += 1;
            self.counters.rx.fetch_add(1, Relaxed);
            out.push((remote, buf[..n].to_vec()));
          }
          Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
          Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
          // ICMP unreachable of an earlier send (connected sockets report it): not fatal.
          Err(_) => {
            self.counters.errors.fetch_add(1, Relaxed);
            break;
          }
        }
      }
    }
    let g = t.groups.get_mut(&remote).expect("group exists");
    if got > 0 && !g.won {
      g.won = true;
      self.counters.won.fetch_add(1, Relaxed);
      let losers: Vec<(usize, StdUdpSocket)> = {
        let (win, lose): (Vec<_>, Vec<_>) = std::mem::take(&mut g.sockets).into_iter().partition(|(k, _)| *k == key);
        g.sockets = win;
        lose
      };
      for (k, s) in losers {
        self.close_socket(poller, &mut t, k, s);
      }
    }
    if let Some(g) = t.groups.get(&remote) {
      if let Some((_, s)) = g.sockets.iter().find(|(k, _)| *k == key) {
        if poller.modify(s, Event::readable(key)).is_err() {
          self.counters.errors.fetch_add(1, Relaxed);
        }
      }
    }
  }

  pub fn stats(&self) -> Vec<(&'static str, f64)> {
    let c = &self.counters;
    let g = |a: &AtomicU64| a.load(Relaxed) as f64;
    vec![
      ("aux_open", self.open.load(Relaxed) as f64),
      ("aux_opened", g(&c.opened)),
      ("aux_closed", g(&c.closed)),
      ("aux_won", g(&c.won)),
      ("aux_rx_datagrams", g(&c.rx)),
      ("aux_tx_datagrams", g(&c.tx)),
      ("aux_errors", g(&c.errors)),
    ]
  }
}
