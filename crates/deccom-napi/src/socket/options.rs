//! Options and plain result objects of `UdpSocket`.

use std::time::Duration;

use deccom_core::rudp::Config as RudpConfig;
use napi_derive::napi;

/// Reliable-UDP settings (see deccom-core `rudp::Config`; unset fields keep its defaults).
#[napi(object)]
#[derive(Default)]
pub struct RudpOptions {
  /// Bytes of message data per datagram (default 1200).
  pub segment_size: Option<u32>,
  /// Bytes of message data per datagram to loopback addresses (default 16,000, or `segment_size`
  /// if larger; native endpoint only). Equal to `segment_size`: loopback like any other path.
  pub loopback_segment_size: Option<u32>,
  /// Largest message in bytes (default 256 MiB).
  pub max_message_size: Option<f64>,
  /// Milliseconds without progress before sends to a peer fail with ERR_DECCOM_PEER_UNREACHABLE.
  pub peer_timeout: Option<u32>,
  /// Bytes of partially received messages per peer / in total.
  pub max_reassembly_per_peer: Option<f64>,
  pub max_reassembly_total: Option<f64>,
  /// Seed of the endpoint's randomness (default: from the OS).
  pub seed: Option<f64>,
}

/// The endpoint configuration, its seed, and the segment payload to loopback addresses.
pub(crate) fn rudp_config(o: RudpOptions) -> (RudpConfig, u64, usize) {
  let mut c = RudpConfig::default();
  if let Some(v) = o.segment_size {
    c.max_segment_payload = v as usize;
  }
  // Unset: the loopback default, or `segment_size` if that is larger.
  let loopback = o.loopback_segment_size.map_or(deccom_core::rudp::LOOPBACK_SEGMENT_PAYLOAD.max(c.max_segment_payload), |v| v as usize);
  if let Some(v) = o.max_message_size {
    c.max_message_size = v as u64;
  }
  // Every message carries the upper layer's tag byte in front of the user's bytes.
  c.max_message_size += 1;
  if let Some(v) = o.peer_timeout {
    c.peer_timeout = Duration::from_millis(u64::from(v));
  }
  if let Some(v) = o.max_reassembly_per_peer {
    c.max_reassembly_per_peer = v as usize;
  }
  if let Some(v) = o.max_reassembly_total {
    c.max_reassembly_total = v as usize;
  }
  let seed = o.seed.map(|s| s as u64).unwrap_or_else(|| {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
  });
  (c, seed, loopback)
}

/// Fault probabilities (0..1), the seed of their generator, and the longest extra delay in ms of
/// a reordered datagram (default 20).
#[napi(object)]
pub struct FaultOptions {
  pub drop: Option<f64>,
  pub duplicate: Option<f64>,
  pub reorder: Option<f64>,
  pub corrupt: Option<f64>,
  pub seed: Option<f64>,
  pub reorder_delay: Option<f64>,
}

/// Socket options for `UdpSocket.bind`.
#[napi(object)]
pub struct UdpBindOptions {
  /// SO_RCVBUF in bytes (the kernel may double or cap it; see `net.core.rmem_max`).
  pub recv_buffer_size: Option<u32>,
  /// SO_SNDBUF in bytes.
  pub send_buffer_size: Option<u32>,
  /// For IPv6 wildcard binds: accept IPv6 only (default true for `::`).
  pub ipv6_only: Option<bool>,
  /// Most datagrams per batch delivered to JavaScript (default 1024).
  pub max_batch: Option<u32>,
  /// Bytes of datagrams queued while the kernel's send buffer is full (default 4 MiB).
  pub max_pending_bytes: Option<u32>,
  /// Bytes of received datagrams waiting for JavaScript before new ones are dropped (default 32 MiB).
  pub max_queued_bytes: Option<u32>,
  /// Auxiliary sockets open at once at most (default 256; see `auxOpen`).
  pub max_aux_sockets: Option<u32>,
}

/// The bound address.
#[napi(object)]
pub struct LocalAddress {
  pub address: String,
  pub port: u32,
  pub family: String,
}

/// Counters of one socket (plain numbers; all monotonic).
#[napi(object)]
pub struct UdpSocketStats {
  pub rx_datagrams: f64,
  pub rx_bytes: f64,
  pub rx_batches: f64,
  pub rx_syscalls: f64,
  pub rx_dropped_queue_full: f64,
  pub rx_errors: f64,
  pub tx_datagrams: f64,
  pub tx_bytes: f64,
  pub tx_syscalls: f64,
  pub tx_errors: f64,
  pub tx_too_large: f64,
  pub tx_queued: f64,
  pub tx_dropped_queue_full: f64,
  pub recv_buffer_size: f64,
  pub send_buffer_size: f64,
  pub gso_segments: f64,
  pub gro_segments: f64,
}
