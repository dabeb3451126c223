//! Decoders of the Rust wire formats for tests and tools: the decoded fields (as JSON text, the
//! shape of `test-vectors/*.json`) and the re-encoding of what was decoded, so JavaScript can check
//! the vectors byte-exact (`docs/wire.md`, "Test vectors").

use std::fmt::Write;

use deccom_core::noise::frame::{self, Frame};
use deccom_core::noise::wire::{self as nwire, Packet, Pattern};
use deccom_core::rudp::wire::{self as rwire, Datagram};
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::error::{coded, Code};

/// What `wireDecode` found: `fields` (JSON text) and `reencoded` for valid input, else `error`.
#[napi(object)]
pub struct WireDecoded {
  pub fields: Option<String>,
  pub reencoded: Option<Buffer>,
  pub error: Option<String>,
}

/// A JSON object written field by field: u64 values as decimal strings, bytes as hex.
struct Obj(String);

impl Obj {
  fn new() -> Obj {
    Obj(String::from("{"))
  }
  fn key(&mut self, k: &str) -> &mut String {
    if self.0.len() > 1 {
      self.0.push(',');
    }
    let _ = write!(self.0, "\"{k}\":");
    &mut self.0
  }
  fn str(mut self, k: &str, v: &str) -> Obj {
    let _ = write!(self.key(k), "\"{v}\"");
    self
  }
  fn num(mut self, k: &str, v: impl Into<u64>) -> Obj {
    let _ = write!(self.key(k), "{}", v.into());
    self
  }
  fn u64s(mut self, k: &str, v: u64) -> Obj {
    let _ = write!(self.key(k), "\"{v}\"");
    self
  }
  fn hex(self, k: &str, v: &[u8]) -> Obj {
    let h = v.iter().fold(String::with_capacity(v.len() * 2), |mut s, b| {
      let _ = write!(s, "{b:02x}");
      s
    });
    self.str(k, &h)
  }
  fn boolean(mut self, k: &str, v: bool) -> Obj {
    let _ = write!(self.key(k), "{v}");
    self
  }
  fn raw(mut self, k: &str, json: &str) -> Obj {
    self.key(k).push_str(json);
    self
  }
  fn done(mut self) -> String {
    self.0.push('}');
    self.0
  }
}

fn pairs<A: std::fmt::Display, B: std::fmt::Display>(items: &[(A, B)], quote_second: bool) -> String {
  let q = if quote_second { "\"" } else { "" };
  let inner: Vec<String> = items.iter().map(|(a, b)| format!("[\"{a}\",{q}{b}{q}]")).collect();
  format!("[{}]", inner.join(","))
}

fn rudp(b: &[u8]) -> std::result::Result<(String, Vec<u8>), String> {
  let d = rwire::decode(b).map_err(|e| format!("{e:?}"))?;
  let mut out = Vec::new();
  let fields = match d {
    Datagram::Data(h, payload) => {
      rwire::encode_data(&h, payload, &mut out);
      Obj::new()
        .str("type", "DATA")
        .boolean("ack_now", h.ack_now)
        .u64s("src_epoch", h.src_epoch)
        .u64s("dst_epoch", h.dst_epoch)
        .u64s("pn", h.pn)
        .u64s("msg_id", h.msg_id)
        .num("floor_delta", h.floor_delta)
        .num("msg_len", h.msg_len)
        .num("seg_size", h.seg_size)
        .num("seg_index", h.seg_index)
        .hex("payload", payload)
    }
    Datagram::Ack(a) => {
      rwire::encode_ack(&a, &mut out);
      Obj::new()
        .str("type", "ACK")
        .u64s("src_epoch", a.src_epoch)
        .u64s("dst_epoch", a.dst_epoch)
        .num("ack_delay_us", a.ack_delay_us)
        .num("window", a.window)
        .raw("ranges", &pairs(a.ranges(), true))
        .raw("refused", &pairs(a.refused(), false))
    }
  };
  Ok((fields.done(), out))
}

fn noise(b: &[u8]) -> std::result::Result<(String, Vec<u8>), String> {
  let p = nwire::decode(b).map_err(|e| format!("{} {e:?}", e.code()))?;
  let mut out = Vec::new();
  let fields = match p {
    Packet::Plaintext { payload } => {
      nwire::encode_plaintext(payload, &mut out);
      Obj::new().str("type", "plaintext").hex("payload", payload)
    }
    Packet::Signed { epoch, counter, signature, payload } => {
      nwire::encode_signed(epoch, counter, &signature, payload, &mut out);
      Obj::new().str("type", "signed").u64s("epoch", epoch).u64s("counter", counter).hex("signature", &signature).hex("payload", payload)
    }
    Packet::Transport { receiver, counter, ciphertext } => {
      nwire::encode_transport_header(receiver, counter, &mut out);
      out.extend_from_slice(ciphertext);
      Obj::new().str("type", "transport").num("receiver", receiver).u64s("counter", counter).hex("ciphertext", ciphertext)
    }
    Packet::Init { sender, pattern, mac, noise } => {
      nwire::encode_init(sender, pattern, mac.as_ref(), noise, &mut out);
      let o = Obj::new()
        .str("type", "init")
        .num("version", nwire::PROTOCOL_VERSION)
        .num("sender", sender)
        .str("pattern", if pattern == Pattern::Xx { "XX" } else { "IK" });
      let o = match mac {
        Some(m) => o.hex("mac", &m),
        None => o.raw("mac", "null"),
      };
      o.hex("noise", noise)
    }
    Packet::Response { sender, receiver, noise } => {
      nwire::encode_response(sender, receiver, noise, &mut out);
      Obj::new().str("type", "response").num("sender", sender).num("receiver", receiver).hex("noise", noise)
    }
    Packet::Final { receiver, noise } => {
      nwire::encode_final(receiver, noise, &mut out);
      Obj::new().str("type", "final").num("receiver", receiver).hex("noise", noise)
    }
    Packet::Cookie { receiver, cookie } => {
      nwire::encode_cookie(receiver, &cookie, &mut out);
      Obj::new().str("type", "cookie").num("receiver", receiver).hex("cookie", &cookie)
    }
  };
  Ok((fields.done(), out))
}

fn noise_frame(b: &[u8]) -> std::result::Result<(String, Vec<u8>), String> {
  let f = frame::decode(b).map_err(|e| format!("{} {e:?}", e.counter()))?;
  let mut out = Vec::new();
  f.encode(&mut out);
  let fields = match f {
    Frame::Whole { tag, data } => Obj::new().str("kind", "whole").num("tag", tag).hex("data", data),
    Frame::Chunk { tag, id, total, offset, data } => Obj::new()
      .str("kind", "chunk")
      .num("tag", tag)
      .num("id", id)
      .num("total", total)
      .num("offset", offset)
      .hex("data", data),
  };
  Ok((fields.done(), out))
}

/// Decodes `bytes` as `format` (`"rudp"`, `"noise"` or `"noise-frame"`: the bytes after the layer
/// tag, or a Noise plaintext) and re-encodes what was decoded. Never throws for bad input: it
/// answers with `error` (the same text as the `error` of the invalid vectors).
///
/// # Errors
/// `ERR_DECCOM_INVALID_ARGUMENT` for an unknown format name.
#[napi]
pub fn wire_decode(format: String, bytes: &[u8]) -> Result<WireDecoded> {
  let r = match format.as_str() {
    "rudp" => rudp(bytes),
    "noise" => noise(bytes),
    "noise-frame" => noise_frame(bytes),
    other => return Err(coded(Code::InvalidArgument, format!("unknown wire format {other:?} (rudp, noise, noise-frame)"))),
  };
  Ok(match r {
    Ok((fields, again)) => WireDecoded { fields: Some(fields), reencoded: Some(again.into()), error: None },
    Err(e) => WireDecoded { fields: None, reencoded: None, error: Some(e) },
  })
}
