//! `KadTable`'s answers to PING and FIND_NODE as a call of their own (the node answers every
//! datagram it handles itself; this is for tests and tools), and the per-address state
//! (`deccom_core::kad::addrbook`).

use deccom_core::kad::node::NoAnswer;
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::error::{coded, Code};
use crate::kad::{address, copy_out, KadTable};

/// `answer`: the FIND_NODE's record is our own id (not answered).
const ANSWER_SELF: i32 = -1;
/// `answer`: over the source prefix's reply rate (not answered).
const ANSWER_REPLY_RATE: i32 = -2;
/// `answer`: not a PING or FIND_NODE `answer` can read (not answered).
const ANSWER_MALFORMED: i32 = -3;

/// How many entries the address state holds (`KadTable.addrSizes`).
#[napi(object)]
pub struct KadAddrSizes {
  /// Addresses that echoed one of our request ids.
  pub verified: u32,
  /// Addresses whose requests we answered.
  pub verified_by: u32,
  /// IPs and prefixes with unvalidated request budget spent.
  pub budget_ips: u32,
  pub budget_prefixes: u32,
  /// Prefixes the reply rate tracks.
  pub reply_limit_keys: u32,
}

#[napi]
impl KadTable {
  /// Answers a PING or FIND_NODE `data` (without the layer tag) from `from` (18-byte address
  /// form) at `now`, as `onDatagram` does, writing the answer into `out`. `proven`: the sender
  /// proved the id its record names (a PING: it has an authenticated session); `inTable`: treat
  /// `from` as validated as a table entry's address is. Either, a table entry's address, or `from`
  /// having answered us, makes the address validated; a request from any other address is
  /// answered within its prefix's reply rate, and a NODES to it is cut to the query's size less a
  /// PING. A requester that got an answer is then remembered as having verified us.
  ///
  /// Returns `2 * len + v`: `len` bytes of `out` to send (0: a FIND_NODE whose answer would
  /// exceed the bound, nothing to send), `v` 1 when the address is validated; or -1 a FIND_NODE
  /// naming our own id, -2 over the reply rate, -3 not a PING or FIND_NODE — nothing to send.
  ///
  /// # Errors
  /// `ERR_DECCOM_INVALID_ADDRESS` for `from`; `ERR_DECCOM_INVALID_ARGUMENT` when `out` is too small.
  #[napi]
  pub fn answer(&mut self, from: &[u8], data: &[u8], proven: bool, in_table: bool, now: f64, mut out: BufferSlice) -> Result<i32> {
    let from = address(from)?;
    let now = self.clock.at(now);
    let a = match self.node.answer(from, data, proven || in_table, now) {
      Ok(a) => a,
      Err(NoAnswer::OwnId) => return Ok(ANSWER_SELF),
      Err(NoAnswer::ReplyRate) => return Ok(ANSWER_REPLY_RATE),
      Err(NoAnswer::Malformed) => return Ok(ANSWER_MALFORMED),
    };
    let bytes = &self.node.answer_bytes()[..a.len];
    let len = copy_out(bytes, &mut out);
    if len < 0 {
      return Err(coded(Code::InvalidArgument, format!("out holds {} bytes, the answer {}", out.len(), bytes.len())));
    }
    Ok(2 * len + i32::from(a.validated))
  }

  /// How many entries the address state holds.
  #[napi]
  pub fn addr_sizes(&self) -> KadAddrSizes {
    let s = self.node.book.sizes();
    KadAddrSizes { verified: s.verified as u32, verified_by: s.verified_by as u32, budget_ips: s.budget_ips as u32, budget_prefixes: s.budget_prefixes as u32, reply_limit_keys: s.reply_limit_keys as u32 }
  }
}
