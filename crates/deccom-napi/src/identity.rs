//! Identity, signatures, node ids and peer records for JavaScript.
//!
//! The logic is `deccom_core::identity` and `deccom_core::wire::peer_record`; this file converts
//! types and does the one piece of I/O the core must not: reading and writing key files (0600).

use std::net::SocketAddr;

use deccom_core::{Identity, PeerRecord, PublicIdentity};
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::error::{coded, core, Code};

/// An Ed25519 key pair, or a plain name (tests). The secret never leaves Rust except via `save`.
#[napi(js_name = "NativeIdentity")]
pub struct NativeIdentity {
  inner: Identity,
}

impl NativeIdentity {
  /// The core identity (with its secret), for other native objects of this crate (Noise).
  pub(crate) fn core(&self) -> &Identity {
    &self.inner
  }
}

#[napi]
impl NativeIdentity {
  /// A fresh key pair from the operating system's randomness.
  #[napi(factory)]
  pub fn generate() -> NativeIdentity {
    NativeIdentity { inner: Identity::try_generate().expect("the operating system random generator failed") }
  }

  /// A key pair derived from a 32-byte seed (deterministic).
  ///
  /// # Errors
  /// `ERR_DECCOM_BAD_KEY` unless the seed is 32 bytes.
  #[napi(factory)]
  pub fn from_seed(seed: &[u8]) -> Result<NativeIdentity> {
    Identity::from_secret_key_bytes(seed).map(|inner| NativeIdentity { inner }).map_err(core)
  }

  /// A name identity (cannot sign): the public identity is the name itself.
  ///
  /// # Errors
  /// `ERR_DECCOM_BAD_IDENTITY` for an empty name or one longer than 255 bytes.
  #[napi(factory)]
  pub fn from_name(name: String) -> Result<NativeIdentity> {
    Identity::from_name(&name).map(|inner| NativeIdentity { inner }).map_err(core)
  }

  /// Parses the text of a key file.
  ///
  /// # Errors
  /// `ERR_DECCOM_KEY_FILE` when the text is not a deccom key file.
  #[napi(factory)]
  pub fn from_key_file(text: String) -> Result<NativeIdentity> {
    Identity::from_key_file(&text).map(|inner| NativeIdentity { inner }).map_err(core)
  }

  /// Reads a key file.
  ///
  /// # Errors
  /// `ERR_DECCOM_KEY_FILE` when it cannot be read or is malformed.
  #[napi(factory)]
  pub fn load(path: String) -> Result<NativeIdentity> {
    let text = std::fs::read_to_string(&path).map_err(|e| coded(Code::KeyFile, format!("cannot read key file {path}: {e}")))?;
    Self::from_key_file(text)
  }

  /// Writes the key file with mode 0600 (owner read/write only) where the OS has modes.
  ///
  /// # Errors
  /// `ERR_DECCOM_NO_SECRET_KEY` for a name identity; `ERR_DECCOM_KEY_FILE` on I/O errors.
  #[napi]
  pub fn save(&self, path: String) -> Result<()> {
    let text = self.inner.to_key_file().map_err(core)?;
    write_private(&path, text.as_bytes()).map_err(|e| coded(Code::KeyFile, format!("cannot write key file {path}: {e}")))
  }

  /// The key file text (keep it secret).
  ///
  /// # Errors
  /// `ERR_DECCOM_NO_SECRET_KEY` for a name identity.
  #[napi]
  pub fn to_key_file(&self) -> Result<String> {
    self.inner.to_key_file().map_err(core)
  }

  /// The 32-byte node id: SHA-256 of the encoded public identity.
  #[napi(getter)]
  pub fn id(&self) -> Buffer {
    self.inner.id().to_vec().into()
  }

  /// The encoded public identity (kind byte + key or name).
  #[napi(getter)]
  pub fn public_identity(&self) -> Buffer {
    self.inner.public_identity_bytes().into()
  }

  /// The raw 32-byte Ed25519 public key, or null for a name identity.
  #[napi(getter)]
  pub fn public_key(&self) -> Option<Buffer> {
    match self.inner.public_identity() {
      PublicIdentity::Ed25519(k) => Some(k.to_vec().into()),
      _ => None,
    }
  }

  /// The name of a name identity, or null.
  #[napi(getter)]
  pub fn name(&self) -> Option<String> {
    match self.inner.public_identity() {
      PublicIdentity::Name(n) => Some(String::from_utf8_lossy(&n).into_owned()),
      _ => None,
    }
  }

  /// True for an Ed25519 key pair.
  #[napi(getter)]
  pub fn can_sign(&self) -> bool {
    self.inner.is_keypair()
  }

  /// A 64-byte Ed25519 signature.
  ///
  /// # Errors
  /// `ERR_DECCOM_NO_SECRET_KEY` for a name identity.
  #[napi]
  pub fn sign(&self, message: &[u8]) -> Result<Buffer> {
    self.inner.sign(message).map(|s| s.to_vec().into()).map_err(core)
  }
}

/// Verifies an Ed25519 signature (strict verification).
///
/// # Errors
/// `ERR_DECCOM_BAD_KEY` / `ERR_DECCOM_BAD_SIGNATURE` for malformed key or signature bytes.
#[napi]
pub fn verify(public_key: &[u8], message: &[u8], signature: &[u8]) -> Result<bool> {
  deccom_core::verify(public_key, message, signature).map_err(core)
}

/// SHA-256 of an encoded public identity: the node id.
#[napi]
pub fn node_id(public_identity: &[u8]) -> Buffer {
  deccom_core::node_id(public_identity).to_vec().into()
}

/// A peer record as JavaScript sees it.
#[napi(object)]
pub struct PeerRecordObject {
  /// 32-byte node id.
  pub id: Buffer,
  /// Encoded public identity.
  pub identity: Buffer,
  pub host: String,
  pub port: u32,
  pub tcp_port: Option<u32>,
  pub external_host: Option<String>,
  pub external_port: Option<u32>,
  /// Decoding: how many bytes of the input the record took (ignored when encoding).
  pub length: Option<u32>,
}

fn sockaddr(host: &str, port: u32, what: &str) -> Result<SocketAddr> {
  let h = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
  let ip = h.parse().map_err(|_| coded(Code::InvalidAddress, format!("{what} \"{host}\" is not an IP address")))?;
  let port = u16::try_from(port).map_err(|_| coded(Code::InvalidAddress, format!("{what} port {port} is out of range")))?;
  Ok(SocketAddr::new(ip, port))
}

/// Encodes a peer record (the id is recomputed from the identity).
///
/// # Errors
/// `ERR_DECCOM_INVALID_ADDRESS` for bad addresses, core codec errors for a bad identity.
#[napi]
pub fn encode_peer_record(record: PeerRecordObject) -> Result<Buffer> {
  let identity = PublicIdentity::decode(&record.identity).map_err(core)?;
  let mut r = PeerRecord::new(identity, sockaddr(&record.host, record.port, "address")?);
  if let Some(p) = record.tcp_port {
    r.tcp_port = Some(u16::try_from(p).map_err(|_| coded(Code::InvalidAddress, format!("TCP port {p} is out of range")))?);
  }
  if let (Some(h), Some(p)) = (record.external_host.as_deref(), record.external_port) {
    r.external = Some(sockaddr(h, p, "external address")?);
  }
  Ok(r.encode().into())
}

/// Decodes a peer record from the start of `bytes`; never panics on any input.
///
/// # Errors
/// `ERR_DECCOM_RECORD_*` codes naming what is wrong.
#[napi]
pub fn decode_peer_record(bytes: &[u8]) -> Result<PeerRecordObject> {
  let (r, length) = PeerRecord::decode(bytes).map_err(core)?;
  Ok(PeerRecordObject {
    id: r.id.to_vec().into(),
    identity: r.identity.encode().into(),
    host: r.udp.ip().to_string(),
    port: u32::from(r.udp.port()),
    tcp_port: r.tcp_port.map(u32::from),
    external_host: r.external.map(|a| a.ip().to_string()),
    external_port: r.external.map(|a| u32::from(a.port())),
    length: Some(length as u32),
  })
}

/// Encodes `host`/`port` into the 18-byte address form `UdpSocket.sendBatch` takes.
///
/// # Errors
/// `ERR_DECCOM_INVALID_ADDRESS` when `host` is not an IP literal or the port is out of range.
#[napi]
pub fn encode_address(host: String, port: u32) -> Result<Buffer> {
  Ok(deccom_core::wire::encode_raw_addr(sockaddr(&host, port, "address")?).to_vec().into())
}

fn write_private(path: &str, bytes: &[u8]) -> std::io::Result<()> {
  use std::io::Write;
  let mut opts = std::fs::OpenOptions::new();
  opts.write(true).create(true).truncate(true);
  #[cfg(unix)]
  std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
  let mut f = opts.open(path)?;
  // An existing file keeps its mode on open: force 0600.
  #[cfg(unix)]
  f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
  f.write_all(bytes)?;
  f.sync_all()
}
