//! Answering DHT GETs in the receive path, without JavaScript.
//!
//! A DHT node answers every GET the same way: the nodes of its Kademlia table closest to the key
//! (`KadTable::write_rows`) and what it stores for the key, through its `DhtServer` (token check,
//! amplification bound, records, reply encoding: `DhtServer::handle_raw`). While the JavaScript
//! thread receives for the socket (see `js_rx`: no native stage attached), that answer needs
//! nothing from JavaScript, so the drain makes it itself and sends the reply: a storer's answer
//! costs one native pass instead of a JavaScript call through the layers. Everything else —
//! other DHT messages, GETs once a stage took reception to the I/O thread — goes to JavaScript as
//! before, where the same `DhtServer` answers it.
//!
//! The responder holds strong references to the layer's `DhtServer` and `KadTable` objects (so
//! the pointers stay valid) and uses them only on the JavaScript thread between two JavaScript
//! calls, when no borrow of them from a JavaScript call can be alive. The `Dht` layer attaches it
//! only where the datagram path is plain (Kademlia directly over this socket's transport, the
//! node's real clock); `Dht.stats()` adds the counts kept here to its own.

use std::net::SocketAddr;
use std::time::Instant;

use napi::sys;

use crate::dht::{event_name, DhtServer};
use crate::kad::{KadTable, ROW_LEN};

/// DHT message type of a GET (the byte after the tag and the version).
const GET: u8 = 1;
/// The GET's key: bytes 11..43 of the DHT message (after the tag).
const KEY: std::ops::Range<usize> = 11..43;

/// Counts of what the responder did, by the DHT layer's counter names.
#[derive(Default)]
pub(crate) struct Counts {
  pub entries: Vec<(String, u64)>,
}

impl Counts {
  fn add(&mut self, name: &str, n: u64) {
    match self.entries.iter_mut().find(|(k, _)| k == name) {
      Some((_, v)) => *v += n,
      None => self.entries.push((name.to_owned(), n)),
    }
  }
}

/// The GET responder of one socket (see the module documentation).
pub(crate) struct Responder {
  tag: u8,
  env: sys::napi_env,
  refs: [sys::napi_ref; 2],
  server: *mut DhtServer,
  table: *mut KadTable,
  /// The caller's clock at `origin` (ms): the server's time is the layer's clock.
  origin: Instant,
  origin_ms: f64,
  /// Room for the nodes a GET's answer lists (the layer says how many: `ROW_LEN` bytes each).
  rows: Vec<u8>,
}

impl Responder {
  /// A responder for DHT datagrams of `tag` whose answers list up to `nodes` nodes. `server` and
  /// `table`: each JavaScript object (kept alive by a reference released in `release`) and the
  /// pointer into it.
  ///
  /// # Safety
  /// On the JavaScript thread; each object is the one wrapping its pointer.
  pub unsafe fn new(env: sys::napi_env, tag: u8, nodes: usize, server: (sys::napi_value, *mut DhtServer), table: (sys::napi_value, *mut KadTable), now_ms: f64) -> Option<Responder> {
    let ((server_obj, server), (table_obj, table)) = (server, table);
    let mut refs = [std::ptr::null_mut(); 2];
    // SAFETY: plain Node-API calls on the JavaScript thread with valid values.
    unsafe {
      if sys::napi_create_reference(env, server_obj, 1, &mut refs[0]) != sys::Status::napi_ok {
        return None;
      }
      if sys::napi_create_reference(env, table_obj, 1, &mut refs[1]) != sys::Status::napi_ok {
        sys::napi_delete_reference(env, refs[0]);
        return None;
      }
    }
    Some(Responder { tag, env, refs, server, table, origin: Instant::now(), origin_ms: now_ms, rows: vec![0u8; nodes * ROW_LEN] })
  }

  /// Releases the references (on the JavaScript thread).
  pub fn release(&self) {
    // SAFETY: the references were created by `new` in this env and are deleted once, here.
    unsafe {
      for r in self.refs {
        sys::napi_delete_reference(self.env, r);
      }
    }
  }

  /// Answers `datagram` (one, tag included) from `from` when it is a GET of this responder's
  /// tag: the reply (tag included) is pushed to `out`. False: not a GET, JavaScript gets it.
  pub fn answer(&mut self, now: Instant, from: SocketAddr, datagram: &[u8], counts: &mut Counts, out: &mut Vec<(SocketAddr, Vec<u8>)>) -> bool {
    if datagram.len() < 1 + KEY.end || datagram[0] != self.tag || datagram[2] != GET {
      return false;
    }
    let msg = &datagram[1..];
    let key: [u8; 32] = msg[KEY].try_into().expect("32 bytes");
    let src = deccom_core::wire::encode_raw_addr(from);
    let now_ms = self.origin_ms + now.saturating_duration_since(self.origin).as_secs_f64() * 1000.0;
    // SAFETY: the objects are alive (referenced); this runs on the JavaScript thread outside any
    // JavaScript call, so no other borrow of them exists.
    let (server, table) = unsafe { (&mut *self.server, &mut *self.table) };
    let n = table.write_rows(&key, self.rows.len() / ROW_LEN, Some(&src), &mut self.rows);
    let h = server.handle_raw(msg, &src, &self.rows[..n * ROW_LEN], now_ms);
    counts.add("received", 1);
    counts.add("answered_natively", 1);
    counts.add(&event_name(&h.event), 1);
    if let Some(reply) = h.reply {
      counts.add("replies_sent", 1);
      out.push((from, tagged(self.tag, &reply)));
    }
    if let Some(notify) = h.notify {
      for to in &h.notify_to {
        if let Some(a) = deccom_core::wire::decode_raw_addr(to) {
          counts.add("notifies_sent", 1);
          out.push((a, tagged(self.tag, &notify)));
        }
      }
    }
    true
  }
}

fn tagged(tag: u8, body: &[u8]) -> Vec<u8> {
  let mut v = Vec::with_capacity(1 + body.len());
  v.push(tag);
  v.extend_from_slice(body);
  v
}
