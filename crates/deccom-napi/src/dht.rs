//! The DHT storage layer's core, driven from JavaScript (`deccom_core::dht`).
//!
//! `DhtServer.handle` is the whole answering side of one datagram (decode, token check, rate
//! limit, signature check, store, reply and NOTIFY encoding) in one call. The requesting side
//! encodes requests with the `dhtEncode*` functions and decodes answers with `dhtDecode`, which
//! verifies every record against the key before it reaches JavaScript (a record that fails is
//! counted in `badRecords` and left out). Records come back packed in a few Buffers (fixed-size
//! entries), not as one object each. Time is the caller's clock in ms.

use std::borrow::Cow;

use deccom_core::dht::records::{AnnounceRecord, MutableRecord};
use deccom_core::dht::server::{Event, Handled, RawAddr, Server, ServerConfig};
use deccom_core::dht::store::StoreConfig;
use deccom_core::dht::wire::{self, Message, NODE_LEN};
use deccom_core::dht::{immutable_key, mutable_key, Kind, Status, MAX_SALT_LEN, MAX_VALUE_LEN, TOKEN_LEN};
use deccom_core::identity::node_id;
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::error::{coded, Code};

fn arr<const N: usize>(b: &[u8], what: &str) -> Result<[u8; N]> {
  b.try_into().map_err(|_| coded(Code::InvalidArgument, format!("{what} is {N} bytes, got {}", b.len())))
}

fn ms(now: f64) -> u64 {
  if now.is_finite() && now > 0.0 {
    now as u64
  } else {
    0
  }
}

fn seq_of(seq: f64) -> Result<u64> {
  if seq.is_finite() && seq >= 0.0 && seq.fract() == 0.0 && seq <= 9_007_199_254_740_991.0 {
    Ok(seq as u64)
  } else {
    Err(coded(Code::InvalidArgument, format!("seq must be an integer 0..2^53-1, got {seq}")))
  }
}

fn rid(hi: u32, lo: u32) -> u64 {
  (u64::from(hi) << 32) | u64::from(lo)
}

fn kind_of(k: u32) -> Result<Kind> {
  u8::try_from(k).ok().and_then(Kind::from_u8).ok_or_else(|| coded(Code::InvalidArgument, format!("unknown record kind {k}")))
}

/// Limits of a `DhtServer` (see `deccom_core::dht::store::StoreConfig`); unset fields keep the defaults.
#[napi(object)]
pub struct DhtServerOptions {
  pub max_records: Option<u32>,
  pub max_per_topic: Option<u32>,
  pub max_per_source: Option<u32>,
  pub max_ttl_ms: Option<f64>,
  pub value_ttl_ms: Option<f64>,
  pub put_rate: Option<f64>,
  pub put_burst: Option<f64>,
  pub max_subscribers: Option<u32>,
  pub subscribe_ms: Option<f64>,
}

/// What `DhtServer.handle` did: `event` names a counter; `reply` goes back to the source,
/// `notify` to each 18-byte raw address in `notifyTo`.
#[napi(object)]
pub struct DhtHandled {
  pub event: String,
  pub reply: Option<Buffer>,
  pub notify: Option<Buffer>,
  pub notify_to: Option<Buffer>,
}

/// Sizes of a `DhtServer`'s state.
#[napi(object)]
pub struct DhtServerStats {
  pub records: u32,
  pub topics: u32,
  pub subscribers: u32,
  pub rate_buckets: u32,
}

/// The answering side (`deccom_core::dht::server::Server`).
#[napi]
pub struct DhtServer {
  inner: Server,
}

/// The counter a server event is counted under (what `DhtServer.handle` reports as `event`).
pub(crate) fn event_name(e: &Event) -> Cow<'static, str> {
  match e {
    Event::Answered => "answered".into(),
    Event::Amplification => "dropped_amplification".into(),
    Event::Stored(Kind::Topic) => "stored_announce".into(),
    Event::Stored(Kind::Immutable) => "stored_immutable".into(),
    Event::Stored(Kind::Mutable) => "stored_mutable".into(),
    Event::Withdrawn => "withdrawn".into(),
    Event::Refused(s) => format!("refused_{}", s.name()).into(),
    Event::Malformed(e) => format!("dropped_malformed_{}", e.name()).into(),
    Event::NotARequest => "not_a_request".into(),
  }
}

impl DhtServer {
  /// One datagram (without the tag) from `source`; `nodes` as `handle` takes them: what both
  /// `handle` and the socket's GET responder (`socket::responder`) call.
  pub(crate) fn handle_raw(&mut self, data: &[u8], source: &RawAddr, nodes: &[u8], now: f64) -> Handled {
    let list: Vec<([u8; 32], RawAddr)> = nodes
      .chunks_exact(NODE_LEN)
      .map(|c| (c[..32].try_into().expect("32"), c[32..].try_into().expect("18")))
      .collect();
    self.inner.handle(data, source, &list, ms(now))
  }
}

#[napi]
impl DhtServer {
  /// `secret`: 32 random bytes, the first token secret.
  #[napi(constructor)]
  pub fn new(secret: Buffer, opts: Option<DhtServerOptions>) -> Result<Self> {
    let mut cfg = ServerConfig::default();
    let d = StoreConfig::default();
    if let Some(o) = opts {
      cfg.store = StoreConfig {
        max_records: o.max_records.map_or(d.max_records, |v| v as usize),
        max_per_topic: o.max_per_topic.map_or(d.max_per_topic, |v| v as usize),
        max_per_source: o.max_per_source.map_or(d.max_per_source, |v| v as usize),
        max_ttl_ms: o.max_ttl_ms.map_or(d.max_ttl_ms, ms),
        value_ttl_ms: o.value_ttl_ms.map_or(d.value_ttl_ms, ms),
        put_rate: o.put_rate.unwrap_or(d.put_rate),
        put_burst: o.put_burst.unwrap_or(d.put_burst),
        max_sources: d.max_sources,
      };
      if let Some(v) = o.max_subscribers {
        cfg.max_subscribers = v as usize;
      }
      if let Some(v) = o.subscribe_ms {
        cfg.subscribe_ms = ms(v);
      }
    }
    Ok(DhtServer { inner: Server::new(cfg, arr(&secret, "a secret")?) })
  }

  /// Handles one datagram (without the tag) from the 18-byte raw `source`; `nodes` holds the
  /// nodes closest to a GET's key, 50 bytes each (id, raw address).
  #[napi]
  pub fn handle(&mut self, data: &[u8], source: &[u8], nodes: &[u8], now: f64) -> Result<DhtHandled> {
    let src: RawAddr = arr(source, "a raw address")?;
    let h = self.handle_raw(data, &src, nodes, now);
    let notify_to = if h.notify_to.is_empty() { None } else { Some(h.notify_to.concat().into()) };
    Ok(DhtHandled { event: event_name(&h.event).into_owned(), reply: h.reply.map(Into::into), notify: h.notify.map(Into::into), notify_to })
  }

  /// A new token secret (32 random bytes).
  #[napi]
  pub fn rotate(&mut self, secret: Buffer) -> Result<()> {
    self.inner.rotate(arr(&secret, "a secret")?);
    Ok(())
  }

  /// Announce records of `topic` held (expired ones included until `expire`); 0 for a key that
  /// is not 32 bytes.
  #[napi]
  pub fn topic_len(&self, topic: &[u8]) -> u32 {
    <&[u8; 32]>::try_from(topic).map_or(0, |t| self.inner.store().topic_len(t) as u32)
  }

  /// Removes expired records and lookers; returns the records removed.
  #[napi]
  pub fn expire(&mut self, now: f64) -> u32 {
    self.inner.expire(ms(now)) as u32
  }

  #[napi]
  pub fn stats(&self) -> DhtServerStats {
    let s = self.inner.store();
    DhtServerStats {
      records: s.len() as u32,
      topics: s.topic_count() as u32,
      subscribers: self.inner.subscriber_count() as u32,
      rate_buckets: s.bucket_count() as u32,
    }
  }
}

/// A decoded DHT datagram (requests are decoded too, for test vectors). Packed fields:
/// `nodeIds` 32 bytes and `nodeAddrs` 18 bytes per node; `peerIdentities` 33, `peerIds` 32,
/// `peerAddrs` 18 bytes per verified announce record.
#[napi(object)]
pub struct DhtDecoded {
  /// Type byte (1 GET ... 7 NOTIFY), 0 when malformed.
  pub kind: u32,
  /// Why it did not decode (`truncated`, `version`, ...).
  pub error: Option<String>,
  pub request_hi: u32,
  pub request_lo: u32,
  pub truncated: bool,
  /// Record kind: 1 topic, 2 immutable, 3 mutable.
  pub record_kind: u32,
  /// GET/REPLY key, ANNOUNCE/NOTIFY topic, PUT/PUT_MUTABLE the value's key.
  pub key: Option<Buffer>,
  pub token: Option<Buffer>,
  pub observed: Option<Buffer>,
  pub offset: u32,
  pub total: u32,
  pub node_count: u32,
  pub node_ids: Option<Buffer>,
  pub node_addrs: Option<Buffer>,
  pub peer_count: u32,
  pub peer_identities: Option<Buffer>,
  pub peer_ids: Option<Buffer>,
  pub peer_addrs: Option<Buffer>,
  /// Records that failed verification (left out).
  pub bad_records: u32,
  pub value: Option<Buffer>,
  pub seq: Option<f64>,
  pub ttl: Option<u32>,
  pub signature: Option<Buffer>,
  pub public_key: Option<Buffer>,
  pub salt: Option<Buffer>,
  pub cas: Option<f64>,
  pub status: Option<u32>,
}

fn empty(kind: u32) -> DhtDecoded {
  DhtDecoded {
    kind,
    error: None,
    request_hi: 0,
    request_lo: 0,
    truncated: false,
    record_kind: 0,
    key: None,
    token: None,
    observed: None,
    offset: 0,
    total: 0,
    node_count: 0,
    node_ids: None,
    node_addrs: None,
    peer_count: 0,
    peer_identities: None,
    peer_ids: None,
    peer_addrs: None,
    bad_records: 0,
    value: None,
    seq: None,
    ttl: None,
    signature: None,
    public_key: None,
    salt: None,
    cas: None,
    status: None,
  }
}

fn set_rid(d: &mut DhtDecoded, rid: u64) {
  d.request_hi = (rid >> 32) as u32;
  d.request_lo = rid as u32;
}

// What a record of an answer must be to count (both readers, `dhtDecode` and `dhtParse`, apply
// these; a record that fails is counted in `badRecords` and left out).

/// A REPLY's topic record: one whole announce record.
fn whole_announce(r: &[u8]) -> Option<AnnounceRecord> {
  match AnnounceRecord::decode(r) {
    Ok((rec, n)) if n == r.len() => Some(rec),
    _ => None,
  }
}

/// An announce record that counts: a TTL, and a signature over `topic`.
fn announce_ok(rec: &AnnounceRecord, topic: &[u8; 32]) -> bool {
  rec.ttl != 0 && rec.verify(topic)
}

/// An immutable value stored under `key`.
fn immutable_ok(r: &[u8], key: &[u8; 32]) -> bool {
  r.len() <= MAX_VALUE_LEN && immutable_key(r) == *key
}

/// A mutable record stored under `key`: whole and signed.
fn mutable_of(r: &[u8], key: &[u8; 32]) -> Option<MutableRecord> {
  match MutableRecord::decode(r) {
    Ok((rec, n)) if n == r.len() && rec.key() == *key && rec.verify() => Some(rec),
    _ => None,
  }
}

fn put_announces<'a>(d: &mut DhtDecoded, topic: &[u8; 32], recs: impl Iterator<Item = &'a AnnounceRecord>) {
  let (mut ids, mut idents, mut addrs) = (Vec::new(), Vec::new(), Vec::new());
  for r in recs {
    if !announce_ok(r, topic) {
      d.bad_records += 1;
      continue;
    }
    ids.extend_from_slice(&node_id(&r.identity));
    idents.extend_from_slice(&r.identity);
    addrs.extend_from_slice(&r.addr);
    d.peer_count += 1;
    d.seq = Some(r.seq as f64);
    d.ttl = Some(r.ttl);
  }
  d.peer_ids = Some(ids.into());
  d.peer_identities = Some(idents.into());
  d.peer_addrs = Some(addrs.into());
}

fn put_mutable(d: &mut DhtDecoded, r: &MutableRecord) {
  d.public_key = Some(r.public_key.to_vec().into());
  d.salt = Some(r.salt.clone().into());
  d.seq = Some(r.seq as f64);
  d.value = Some(r.value.clone().into());
  d.signature = Some(r.signature.to_vec().into());
}

/// Words of `dhtParse`'s layout before the records.
const PARSE_HEAD: usize = 19;

/// The offset of `part` (a slice of `whole`) in `whole`.
fn offset_in(whole: &[u8], part: &[u8]) -> u32 {
  (part.as_ptr() as usize - whole.as_ptr() as usize) as u32
}

/// Where `dhtParse` writes.
struct Layout<'a> {
  out: &'a mut [u32],
  ids: &'a mut [u8],
}

impl Layout<'_> {
  /// A verified announce record starting at `at` (its length byte): its identity and address
  /// offsets, its id; false when there is no room (the caller counts it as failed).
  fn announce(&mut self, at: usize, rec: &AnnounceRecord) -> bool {
    let i = self.out[7] as usize;
    if PARSE_HEAD + 2 * i + 2 > self.out.len() || 32 * i + 32 > self.ids.len() {
      return false;
    }
    self.out[PARSE_HEAD + 2 * i] = (at + 1) as u32;
    self.out[PARSE_HEAD + 2 * i + 1] = (at + 34) as u32;
    self.ids[32 * i..32 * i + 32].copy_from_slice(&node_id(&rec.identity));
    self.out[7] += 1;
    self.out[12] = (rec.seq >> 32) as u32;
    self.out[13] = rec.seq as u32;
    true
  }

  /// An announce record at `at` checked against `topic` (`dhtDecode`'s rule: a zero TTL or a
  /// signature that does not verify fails).
  fn check_announce(&mut self, at: usize, rec: &AnnounceRecord, topic: &[u8; 32]) {
    if !announce_ok(rec, topic) || !self.announce(at, rec) {
      self.out[8] += 1;
    }
  }
}

/// Decodes an answer-side DHT datagram (REPLY, ACK, NOTIFY, or an ANNOUNCE this node stores;
/// without the tag) in place: the decoding and record checks of `dhtDecode` (records that fail are
/// counted and left out), written as offsets into `data` instead of objects and buffers. `out`
/// (at least 19 words) gets: 0 kind (0: malformed or another type; `dhtDecode` says why),
/// 1 request id high, 2 low, 3 truncated, 4 record kind, 5 total, 6 nodes (a REPLY's rows of id and
/// raw address, 50 bytes each from byte 81), 7 verified topic records, 8 records that failed, 9 an
/// ACK's status, 10 the value's offset, 11 its length, 12 seq high, 13 seq low (a mutable record's;
/// else the last topic record's), 14 a mutable record's signature offset, 15 its public key's,
/// 16 its salt's, 17 the salt's length, 18 the key's offset (a REPLY's key; a NOTIFY's or an
/// ANNOUNCE's topic); from word 19, two per verified topic record: its identity's offset (33 bytes)
/// and its address's (18 bytes), its node id into `ids` (32 bytes each). Records beyond the room in
/// `out` and `ids` count as failed.
#[napi]
pub fn dht_parse(data: &[u8], mut out: Uint32ArraySlice, mut ids: BufferSlice) -> u32 {
  // SAFETY: the JavaScript thread is inside this synchronous call, so nothing else can touch the
  // typed array's memory while we write to it.
  let out: &mut [u32] = unsafe { out.as_mut() };
  if out.len() < PARSE_HEAD {
    return 0;
  }
  out[..PARSE_HEAD].fill(0);
  let Ok(m) = wire::decode(data) else { return 0 };
  let mut l = Layout { out, ids: &mut ids };
  let kind = match m {
    Message::Reply { rid, truncated, kind, key, total, nodes, records, .. } => {
      l.out[1] = (rid >> 32) as u32;
      l.out[2] = rid as u32;
      l.out[3] = u32::from(truncated);
      l.out[4] = kind as u32;
      l.out[5] = u32::from(total);
      l.out[6] = nodes.len() as u32;
      l.out[18] = 12;
      for r in &records {
        let at = offset_in(data, r) as usize;
        match kind {
          Kind::Topic => match whole_announce(r) {
            Some(rec) => l.check_announce(at, &rec, &key),
            None => l.out[8] += 1,
          },
          Kind::Immutable => {
            if immutable_ok(r, &key) && l.out[10] == 0 {
              l.out[10] = at as u32;
              l.out[11] = r.len() as u32;
            } else {
              l.out[8] += 1;
            }
          }
          Kind::Mutable => match mutable_of(r, &key) {
            Some(rec) if l.out[10] == 0 => {
              let salt_at = at + 33;
              let value_at = salt_at + rec.salt.len() + 10;
              l.out[10] = value_at as u32;
              l.out[11] = rec.value.len() as u32;
              l.out[12] = (rec.seq >> 32) as u32;
              l.out[13] = rec.seq as u32;
              l.out[14] = (value_at + rec.value.len()) as u32;
              l.out[15] = at as u32;
              l.out[16] = salt_at as u32;
              l.out[17] = rec.salt.len() as u32;
            }
            _ => l.out[8] += 1,
          },
        }
      }
      wire::REPLY
    }
    Message::Ack { rid, status } => {
      l.out[1] = (rid >> 32) as u32;
      l.out[2] = rid as u32;
      l.out[9] = status as u32;
      wire::ACK
    }
    Message::Notify { topic, record } => {
      l.out[4] = Kind::Topic as u32;
      l.out[18] = 2;
      l.check_announce(34, &record, &topic);
      wire::NOTIFY
    }
    Message::Announce { rid, topic, record, .. } => {
      l.out[1] = (rid >> 32) as u32;
      l.out[2] = rid as u32;
      l.out[4] = Kind::Topic as u32;
      l.out[18] = 26;
      l.check_announce(58, &record, &topic);
      wire::ANNOUNCE
    }
    _ => return 0,
  };
  l.out[0] = u32::from(kind);
  u32::from(kind)
}

/// Decodes a DHT datagram (without the tag), verifying the records of REPLY and NOTIFY.
#[napi]
pub fn dht_decode(data: &[u8]) -> DhtDecoded {
  let m = match wire::decode(data) {
    Ok(m) => m,
    Err(e) => {
      let mut d = empty(0);
      d.error = Some(e.name().to_owned());
      return d;
    }
  };
  match m {
    Message::Get { rid, kind, key, token, offset, .. } => {
      let mut d = empty(u32::from(wire::GET));
      set_rid(&mut d, rid);
      d.record_kind = kind as u32;
      d.key = Some(key.to_vec().into());
      d.token = Some(token.to_vec().into());
      d.offset = u32::from(offset);
      d
    }
    Message::Reply { rid, truncated, kind, key, token, observed, total, nodes, records } => {
      let mut d = empty(u32::from(wire::REPLY));
      set_rid(&mut d, rid);
      d.truncated = truncated;
      d.record_kind = kind as u32;
      d.token = Some(token.to_vec().into());
      d.observed = Some(observed.to_vec().into());
      d.total = u32::from(total);
      d.node_count = nodes.len() as u32;
      let (mut ids, mut addrs) = (Vec::with_capacity(32 * nodes.len()), Vec::with_capacity(18 * nodes.len()));
      for (id, a) in &nodes {
        ids.extend_from_slice(id);
        addrs.extend_from_slice(a);
      }
      d.node_ids = Some(ids.into());
      d.node_addrs = Some(addrs.into());
      match kind {
        Kind::Topic => {
          let mut recs = Vec::with_capacity(records.len());
          for r in &records {
            match whole_announce(r) {
              Some(rec) => recs.push(rec),
              None => d.bad_records += 1,
            }
          }
          put_announces(&mut d, &key, recs.iter());
        }
        Kind::Immutable => {
          for r in &records {
            if immutable_ok(r, &key) && d.value.is_none() {
              d.value = Some(r.to_vec().into());
            } else {
              d.bad_records += 1;
            }
          }
        }
        Kind::Mutable => {
          for r in &records {
            match mutable_of(r, &key) {
              Some(rec) if d.value.is_none() => put_mutable(&mut d, &rec),
              _ => d.bad_records += 1,
            }
          }
        }
      }
      d.key = Some(key.to_vec().into());
      d
    }
    Message::Announce { rid, token, topic, record } => {
      let mut d = empty(u32::from(wire::ANNOUNCE));
      set_rid(&mut d, rid);
      d.token = Some(token.to_vec().into());
      d.record_kind = Kind::Topic as u32;
      put_announces(&mut d, &topic, std::iter::once(&record));
      d.key = Some(topic.to_vec().into());
      d
    }
    Message::Put { rid, token, value } => {
      let mut d = empty(u32::from(wire::PUT));
      set_rid(&mut d, rid);
      d.token = Some(token.to_vec().into());
      d.record_kind = Kind::Immutable as u32;
      d.key = Some(immutable_key(value).to_vec().into());
      d.value = Some(value.to_vec().into());
      d
    }
    Message::PutMutable { rid, token, record, cas } => {
      let mut d = empty(u32::from(wire::PUT_MUTABLE));
      set_rid(&mut d, rid);
      d.token = Some(token.to_vec().into());
      d.record_kind = Kind::Mutable as u32;
      d.key = Some(record.key().to_vec().into());
      if !record.verify() {
        d.bad_records = 1;
      }
      put_mutable(&mut d, &record);
      d.cas = cas.map(|c| c as f64);
      d
    }
    Message::Ack { rid, status } => {
      let mut d = empty(u32::from(wire::ACK));
      set_rid(&mut d, rid);
      d.status = Some(status as u32);
      d
    }
    Message::Notify { topic, record } => {
      let mut d = empty(u32::from(wire::NOTIFY));
      d.record_kind = Kind::Topic as u32;
      put_announces(&mut d, &topic, std::iter::once(&record));
      d.key = Some(topic.to_vec().into());
      d
    }
  }
}

/// GET of `key` (kind 1 topic, 2 immutable, 3 mutable), zero-padded to `padTo` bytes.
#[napi]
pub fn dht_encode_get(hi: u32, lo: u32, kind: u32, key: &[u8], token: &[u8], offset: u32, pad_to: u32) -> Result<Buffer> {
  Ok(get_bytes(hi, lo, kind, key, token, offset, pad_to)?.into())
}

/// A GET's bytes (what `dhtEncodeGet` and `dhtEncodeGetInto` return).
fn get_bytes(hi: u32, lo: u32, kind: u32, key: &[u8], token: &[u8], offset: u32, pad_to: u32) -> Result<Vec<u8>> {
  let k = kind_of(kind)?;
  let off = u16::try_from(offset).map_err(|_| coded(Code::InvalidArgument, "offset must be < 65536"))?;
  Ok(wire::encode_get(rid(hi, lo), k, &arr(key, "a key")?, &arr::<TOKEN_LEN>(token, "a token")?, off, pad_to as usize))
}

/// `dhtEncodeGet` into `out` (a caller's scratch buffer); returns the length, or -1 when `out`
/// is too small.
///
/// # Errors
/// As `dhtEncodeGet`.
#[napi]
#[allow(clippy::too_many_arguments)]
pub fn dht_encode_get_into(hi: u32, lo: u32, kind: u32, key: &[u8], token: &[u8], offset: u32, pad_to: u32, mut out: BufferSlice) -> Result<i32> {
  let v = get_bytes(hi, lo, kind, key, token, offset, pad_to)?;
  let out: &mut [u8] = &mut out;
  let Some(dst) = out.get_mut(..v.len()) else { return Ok(-1) };
  dst.copy_from_slice(&v);
  Ok(v.len() as i32)
}

/// The bytes an announcer signs (see `AnnounceRecord::message`).
#[napi]
pub fn dht_announce_message(topic: &[u8], addr: &[u8], seq: f64, ttl: u32) -> Result<Buffer> {
  Ok(AnnounceRecord::message(&arr(topic, "a topic")?, &arr(addr, "a raw address")?, seq_of(seq)?, ttl).into())
}

/// ANNOUNCE of a signed record.
#[napi]
#[allow(clippy::too_many_arguments)]
pub fn dht_encode_announce(hi: u32, lo: u32, token: &[u8], topic: &[u8], identity: &[u8], addr: &[u8], seq: f64, ttl: u32, signature: &[u8]) -> Result<Buffer> {
  let rec = AnnounceRecord { identity: arr(identity, "an Ed25519 public identity")?, addr: arr(addr, "a raw address")?, seq: seq_of(seq)?, ttl, signature: arr(signature, "a signature")? };
  Ok(wire::encode_announce(rid(hi, lo), &arr(token, "a token")?, &arr(topic, "a topic")?, &rec).into())
}

/// PUT of an immutable value (≤ 1000 bytes).
#[napi]
pub fn dht_encode_put(hi: u32, lo: u32, token: &[u8], value: &[u8]) -> Result<Buffer> {
  if value.len() > MAX_VALUE_LEN {
    return Err(coded(Code::InvalidArgument, format!("a value is at most {MAX_VALUE_LEN} bytes, got {}", value.len())));
  }
  Ok(wire::encode_put(rid(hi, lo), &arr(token, "a token")?, value).into())
}

/// The bytes the owner of a mutable value signs (see `MutableRecord::message`).
#[napi]
pub fn dht_mutable_message(salt: &[u8], seq: f64, value: &[u8]) -> Result<Buffer> {
  Ok(MutableRecord::message(salt, seq_of(seq)?, value).into())
}

/// SHA-256(publicKey || salt).
#[napi]
pub fn dht_mutable_key(public_key: &[u8], salt: &[u8]) -> Result<Buffer> {
  Ok(mutable_key(&arr(public_key, "a public key")?, salt).to_vec().into())
}

/// SHA-256(value).
#[napi]
pub fn dht_immutable_key(value: &[u8]) -> Buffer {
  immutable_key(value).to_vec().into()
}

/// PUT_MUTABLE of a signed record; `cas`: store only over this seq.
#[napi]
#[allow(clippy::too_many_arguments)]
pub fn dht_encode_put_mutable(hi: u32, lo: u32, token: &[u8], public_key: &[u8], salt: &[u8], seq: f64, value: &[u8], signature: &[u8], cas: Option<f64>) -> Result<Buffer> {
  if value.len() > MAX_VALUE_LEN || salt.len() > MAX_SALT_LEN {
    return Err(coded(Code::InvalidArgument, format!("a value is at most {MAX_VALUE_LEN} bytes and a salt {MAX_SALT_LEN}")));
  }
  let rec = MutableRecord { public_key: arr(public_key, "a public key")?, salt: salt.to_vec(), seq: seq_of(seq)?, value: value.to_vec(), signature: arr(signature, "a signature")? };
  let cas = cas.map(seq_of).transpose()?;
  Ok(wire::encode_put_mutable(rid(hi, lo), &arr(token, "a token")?, &rec, cas).into())
}

/// The name of an ACK status (`ok`, `bad_token`, ...).
#[napi]
pub fn dht_status_name(status: u32) -> String {
  u8::try_from(status).ok().and_then(Status::from_u8).map_or("unknown", Status::name).to_owned()
}
