//! `KadTable`'s answers to PING and FIND_NODE, one call per request, and the per-address state
//! they and the layer's requests read (`deccom_core::kad::addrbook`: verified addresses, the
//! unvalidated request budgets, the reply rate), which the table holds.
//!
//! The TypeScript layer validates the datagram first (`kadParse`), calls `answer` with it, sends
//! what was written into its scratch buffer, and counts by the returned code; what to do with the
//! requester for the routing table stays in the layer.

use deccom_core::kad::wire::{self, Message};
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

/// A Kademlia PING with the layer's tag byte (10 + 1): what verifying an unknown requester sends
/// it. To an unverified address, NODES and that PING together stay within the query's size.
const KAD_PING_LEN: usize = wire::HEADER_LEN + 1;
/// Where FIND_NODE's target starts (after the header) and the sender's record's id (after the
/// target, the record's version and flags bytes).
const FIND_NODE_TARGET: usize = wire::HEADER_LEN;
const FIND_NODE_SENDER_ID: usize = wire::HEADER_LEN + 32 + 2;

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
  /// Answers a PING or FIND_NODE `data` (without the layer tag; a message `kadParse` accepted)
  /// from `from` (18-byte address form) at `now`, writing the answer into `out`. `proven`: the
  /// sender proved the id its record names (a PING: it has an authenticated session);
  /// `inTable`: `from` is a table entry's address. Either, or `from` having answered us, makes
  /// the address validated; a request from any other address is answered within its prefix's
  /// reply rate, and a NODES to it is cut to the query's size less a PING. The requester is then
  /// remembered as having verified us (`verifiedBy`).
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
    let (Some(&wire::VERSION), Some(&kind), Some(id)) = (data.first(), data.get(1), data.get(2..wire::HEADER_LEN)) else {
      return Ok(ANSWER_MALFORMED);
    };
    let request_id = u64::from_be_bytes(id.try_into().expect("8 bytes"));
    let now = self.clock.at(now);
    let validated = proven || in_table || self.book.is_verified(&from);
    let len = match kind {
      wire::kind::PING if data.len() == wire::HEADER_LEN => {
        if !validated && !self.book.reply_allowed(&from, now) {
          return Ok(ANSWER_REPLY_RATE);
        }
        self.bytes.clear();
        Message::Pong { request_id }.encode_into(&mut self.bytes);
        self.book.remember_verified_by(from);
        copy_out(&self.bytes, &mut out)
      }
      wire::kind::FIND_NODE => {
        let (Some(target), Some(sender)) = (data.get(FIND_NODE_TARGET..FIND_NODE_TARGET + 32), data.get(FIND_NODE_SENDER_ID..FIND_NODE_SENDER_ID + 32)) else {
          return Ok(ANSWER_MALFORMED);
        };
        if *sender == self.own.id {
          return Ok(ANSWER_SELF);
        }
        if !validated && !self.book.reply_allowed(&from, now) {
          return Ok(ANSWER_REPLY_RATE);
        }
        let max_len = if validated { usize::MAX } else { data.len().saturating_sub(KAD_PING_LEN) };
        let target = target.try_into().expect("32 bytes");
        let written = self.nodes_into_bytes(request_id, &target, max_len);
        self.book.remember_verified_by(from);
        if written {
          copy_out(&self.bytes, &mut out)
        } else {
          0
        }
      }
      _ => return Ok(ANSWER_MALFORMED),
    };
    if len < 0 {
      return Err(coded(Code::InvalidArgument, format!("out holds {} bytes, the answer {}", out.len(), self.bytes.len())));
    }
    Ok(2 * len + i32::from(validated))
  }

  /// Whether a request to `to` (18-byte form) may be sent at `now`: always to an address that
  /// answered us or a table entry's (`inTable`), else within the unvalidated budgets of its IP
  /// and prefix, of which it then spends a token each.
  ///
  /// # Errors
  /// `ERR_DECCOM_INVALID_ADDRESS` for `to`.
  #[napi]
  pub fn within_budget(&mut self, to: &[u8], in_table: bool, now: f64) -> Result<bool> {
    let to = address(to)?;
    let now = self.clock.at(now);
    Ok(self.book.within_budget(&to, in_table, now))
  }

  /// `from` (18-byte form) echoed one of our request ids: it is verified from now on, and the
  /// budget its request took comes back.
  ///
  /// # Errors
  /// `ERR_DECCOM_INVALID_ADDRESS` for `from`.
  #[napi]
  pub fn answered(&mut self, from: &[u8]) -> Result<()> {
    self.book.answered(address(from)?);
    Ok(())
  }

  /// Whether we answered a request from `addr` (18-byte form): it has verified us, so our
  /// FIND_NODEs to it need no padding.
  ///
  /// # Errors
  /// `ERR_DECCOM_INVALID_ADDRESS` for `addr`.
  #[napi]
  pub fn verified_by(&self, addr: &[u8]) -> Result<bool> {
    Ok(self.book.is_verified_by(&address(addr)?))
  }

  /// `addr` (18-byte form) cut its answer to our unpadded FIND_NODE: pad the next one again.
  ///
  /// # Errors
  /// `ERR_DECCOM_INVALID_ADDRESS` for `addr`.
  #[napi]
  pub fn forget_verified_by(&mut self, addr: &[u8]) -> Result<()> {
    self.book.forget_verified_by(&address(addr)?);
    Ok(())
  }

  /// How many entries the address state holds.
  #[napi]
  pub fn addr_sizes(&self) -> KadAddrSizes {
    let s = self.book.sizes();
    KadAddrSizes { verified: s.verified as u32, verified_by: s.verified_by as u32, budget_ips: s.budget_ips as u32, budget_prefixes: s.budget_prefixes as u32, reply_limit_keys: s.reply_limit_keys as u32 }
  }
}
