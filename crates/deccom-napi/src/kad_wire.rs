//! The Kademlia wire codec for JavaScript tests and tools: `kadDecode` and the encoders. The layer
//! itself hands datagrams to the node whole (`KadTable.onDatagram`), which decodes them in Rust.

use deccom_core::kad::wire::{self, Message};
use deccom_core::wire::peer_record::PeerRecord;
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::error::core;
use crate::kad::request_id;

/// A decoded Kademlia message. `kind`: 1 PING, 2 PONG, 3 FIND_NODE, 4 NODES, 0 malformed (`error`
/// says why).
///
/// Records (FIND_NODE: the sender; NODES: the sender, then `count` nodes) come in a compact form so
/// that one message costs a handful of JavaScript values, not several per record: record `i`'s id
/// is `ids[32*i .. 32*i+32]`, its encoded identity `identities[identityEnds[i-1] (or 0) ..
/// identityEnds[i]]`, its host and port words `2i` and `2i+1` of `hosts.split(' ')`, and its
/// external address (the NAT-mapped address the node reports, if any) words `2i` and `2i+1` of
/// `externals.split(' ')`, which are `- 0` when the record has none; its TCP port `tcpPorts[i]`
/// (0: none).
#[napi(object)]
pub struct KadMessage {
  pub kind: u32,
  pub request_hi: u32,
  pub request_lo: u32,
  pub target: Option<Buffer>,
  pub truncated: bool,
  /// FIND_NODE: the sender asks not to be added to routing tables.
  pub ephemeral: bool,
  /// Number of NODES records (not counting the sender).
  pub count: u32,
  pub ids: Option<Buffer>,
  pub identities: Option<Buffer>,
  pub identity_ends: Option<Uint32Array>,
  pub hosts: Option<String>,
  pub externals: Option<String>,
  pub tcp_ports: Option<Uint32Array>,
  pub error: Option<String>,
}

fn message(kind: u32, id: u64) -> KadMessage {
  KadMessage {
    kind,
    request_hi: (id >> 32) as u32,
    request_lo: id as u32,
    target: None,
    truncated: false,
    ephemeral: false,
    count: 0,
    ids: None,
    identities: None,
    identity_ends: None,
    hosts: None,
    externals: None,
    tcp_ports: None,
    error: None,
  }
}

fn records<'a>(m: &mut KadMessage, recs: impl Iterator<Item = &'a PeerRecord>) {
  use std::fmt::Write;
  let (mut ids, mut identities, mut ends, mut hosts, mut externals) = (Vec::new(), Vec::new(), Vec::new(), String::new(), String::new());
  let mut tcp_ports = Vec::new();
  for r in recs {
    tcp_ports.push(u32::from(r.tcp_port.unwrap_or(0)));
    ids.extend_from_slice(&r.id);
    r.identity.encode_into(&mut identities);
    ends.push(identities.len() as u32);
    if !hosts.is_empty() {
      hosts.push(' ');
      externals.push(' ');
    }
    let _ = write!(hosts, "{} {}", r.udp.ip(), r.udp.port());
    let _ = match r.external {
      Some(e) => write!(externals, "{} {}", e.ip(), e.port()),
      None => write!(externals, "- 0"),
    };
  }
  m.ids = Some(ids.into());
  m.identities = Some(identities.into());
  m.identity_ends = Some(ends.into());
  m.hosts = Some(hosts);
  m.externals = Some(externals);
  m.tcp_ports = Some(tcp_ports.into());
}

/// Decodes a Kademlia message (without the layer tag); never throws: malformed input gives
/// `kind` 0 and an `error` reason.
#[napi]
pub fn kad_decode(bytes: &[u8]) -> KadMessage {
  match Message::decode(bytes) {
    Ok(Message::Ping { request_id }) => message(wire::kind::PING.into(), request_id),
    Ok(Message::Pong { request_id }) => message(wire::kind::PONG.into(), request_id),
    Ok(Message::FindNode { request_id, target, sender, ephemeral }) => {
      let mut m = message(wire::kind::FIND_NODE.into(), request_id);
      m.target = Some(target.to_vec().into());
      m.ephemeral = ephemeral;
      records(&mut m, std::iter::once(&sender));
      m
    }
    Ok(Message::Nodes { request_id, truncated, sender, nodes }) => {
      let mut m = message(wire::kind::NODES.into(), request_id);
      m.truncated = truncated;
      m.count = nodes.len() as u32;
      records(&mut m, std::iter::once(&sender).chain(nodes.iter()));
      m
    }
    Err(e) => {
      let mut m = message(0, 0);
      m.error = Some(e.reason().to_owned());
      m
    }
  }
}

/// A PING (or, with `pong`, a PONG) with the given request id.
#[napi]
pub fn kad_encode_ping(pong: bool, request_hi: u32, request_lo: u32) -> Buffer {
  let request_id = request_id(request_hi, request_lo);
  let m = if pong { Message::Pong { request_id } } else { Message::Ping { request_id } };
  m.encode().into()
}

/// A NODES message from encoded records (for tests and tools; the node answers FIND_NODE itself).
///
/// # Errors
/// `ERR_DECCOM_RECORD_*` for a malformed record.
#[napi]
pub fn kad_encode_nodes(request_hi: u32, request_lo: u32, sender_record: &[u8], records: Vec<Buffer>, truncated: bool) -> Result<Buffer> {
  let (sender, _) = PeerRecord::decode(sender_record).map_err(core)?;
  let nodes = records.iter().map(|b| PeerRecord::decode(b).map(|(r, _)| r)).collect::<std::result::Result<Vec<_>, _>>().map_err(core)?;
  Ok(Message::Nodes { request_id: request_id(request_hi, request_lo), truncated, sender, nodes }.encode().into())
}
