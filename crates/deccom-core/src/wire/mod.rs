//! Wire formats: checked binary codecs that never panic on input.
//! Specified in `docs/wire.md` (socket addresses: `docs/wire.md#address-encodings`).
//!
//! Every decoder reads through a [`Reader`], whose accessors return an error instead of reading
//! past the end of the input, so untrusted bytes can be fed to any `decode` function. Encoders
//! append to a caller-supplied `Vec<u8>` (`encode_into`) so that several values can share one
//! buffer.
//!
//! # Socket address encoding
//!
//! Shared by every format that carries an address ([`encode_socket_addr`],
//! [`decode_socket_addr`]); integers are big-endian:
//!
//! | bytes | IPv4 (7 bytes)  | IPv6 (19 bytes)  |
//! |-------|-----------------|------------------|
//! | 1     | family `4`      | family `6`       |
//! | 4/16  | address octets  | address octets   |
//! | 2     | port            | port             |
//!
//! IPv6 flow info and scope id are not carried (decoded as 0). An IPv4-mapped IPv6 address stays
//! an IPv6 address.

pub mod mux;
pub mod peer_record;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Family byte of an encoded IPv4 socket address.
pub const FAMILY_V4: u8 = 4;
/// Family byte of an encoded IPv6 socket address.
pub const FAMILY_V6: u8 = 6;
/// Longest encoded socket address (IPv6), in bytes.
pub const MAX_SOCKET_ADDR_LEN: usize = 1 + 16 + 2;

/// A read past the end of the input was attempted.
///
/// Each codec maps this to its own typed error (e.g. `ERR_DECCOM_RECORD_TRUNCATED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncated {
    /// Bytes the read needed.
    pub needed: usize,
    /// Bytes that were left.
    pub remaining: usize,
}

/// Why [`decode_socket_addr`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrError {
    /// The input ended inside the address.
    Truncated(Truncated),
    /// The family byte is neither 4 nor 6.
    UnknownFamily(u8),
}

impl From<Truncated> for AddrError {
    fn from(t: Truncated) -> Self {
        AddrError::Truncated(t)
    }
}

/// A cursor over untrusted bytes whose reads are all bounds-checked.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    #[must_use]
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    #[must_use]
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not yet consumed.
    #[must_use]
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// Consumes the next `n` bytes.
    ///
    /// # Errors
    ///
    /// [`Truncated`] if fewer than `n` bytes remain; nothing is consumed then.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Truncated> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let out = rest.get(..n).ok_or(Truncated {
            needed: n,
            remaining: rest.len(),
        })?;
        self.pos += n;
        Ok(out)
    }

    /// Consumes the next `N` bytes as an array.
    ///
    /// # Errors
    ///
    /// [`Truncated`] if fewer than `N` bytes remain.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], Truncated> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// Consumes one byte.
    ///
    /// # Errors
    ///
    /// [`Truncated`] if the input is exhausted.
    pub fn u8(&mut self) -> Result<u8, Truncated> {
        let [b] = self.array::<1>()?;
        Ok(b)
    }

    /// Consumes a big-endian `u16`.
    ///
    /// # Errors
    ///
    /// [`Truncated`] if fewer than 2 bytes remain.
    pub fn u16_be(&mut self) -> Result<u16, Truncated> {
        Ok(u16::from_be_bytes(self.array()?))
    }
}

/// Length of the raw address encoding ([`encode_raw_addr`]).
pub const RAW_ADDR_LEN: usize = 18;

/// The raw address (`docs/wire.md#address-encodings`): 16 bytes of IPv6 address, an IPv4 address
/// as IPv4-mapped `::ffff:a.b.c.d`, then the port (big-endian). Used by TCP HELLO/OBSERVED and by
/// the native socket's API.
#[must_use]
pub fn encode_raw_addr(addr: SocketAddr) -> [u8; RAW_ADDR_LEN] {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        std::net::IpAddr::V6(v6) => v6,
    };
    let mut out = [0u8; RAW_ADDR_LEN];
    out[..16].copy_from_slice(&ip.octets());
    out[16..].copy_from_slice(&addr.port().to_be_bytes());
    out
}

/// Decodes a raw address ([`encode_raw_addr`]); an IPv4-mapped address comes back as IPv4.
/// `None` when fewer than 18 bytes are given (extra bytes are not looked at).
#[must_use]
pub fn decode_raw_addr(b: &[u8]) -> Option<SocketAddr> {
    let ip: [u8; 16] = b.get(..16)?.try_into().ok()?;
    let port = u16::from_be_bytes(b.get(16..18)?.try_into().ok()?);
    let v6 = Ipv6Addr::from(ip);
    Some(match v6.to_ipv4_mapped() {
        Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
        None => SocketAddr::V6(SocketAddrV6::new(v6, port, 0, 0)),
    })
}

/// Appends the encoding of `addr` (see the module docs) to `out`.
pub fn encode_socket_addr(addr: &SocketAddr, out: &mut Vec<u8>) {
    match addr {
        SocketAddr::V4(a) => {
            out.push(FAMILY_V4);
            out.extend_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            out.push(FAMILY_V6);
            out.extend_from_slice(&a.ip().octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// Length in bytes of the encoding of `addr`.
#[must_use]
pub fn socket_addr_encoded_len(addr: &SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(_) => 1 + 4 + 2,
        SocketAddr::V6(_) => MAX_SOCKET_ADDR_LEN,
    }
}

/// Reads one encoded socket address (see the module docs) from `reader`.
///
/// # Errors
///
/// [`AddrError::UnknownFamily`] for a family byte other than 4 or 6; [`AddrError::Truncated`] if
/// the input ends inside the address.
pub fn decode_socket_addr(reader: &mut Reader<'_>) -> Result<SocketAddr, AddrError> {
    match reader.u8()? {
        FAMILY_V4 => {
            let ip = Ipv4Addr::from(reader.array::<4>()?);
            let port = reader.u16_be()?;
            Ok(SocketAddr::V4(SocketAddrV4::new(ip, port)))
        }
        FAMILY_V6 => {
            let ip = Ipv6Addr::from(reader.array::<16>()?);
            let port = reader.u16_be()?;
            Ok(SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0)))
        }
        other => Err(AddrError::UnknownFamily(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_is_bounds_checked() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u8(), Ok(1));
        assert_eq!(
            r.take(5),
            Err(Truncated {
                needed: 5,
                remaining: 2
            })
        );
        assert_eq!(r.position(), 1);
        assert_eq!(r.u16_be(), Ok(0x0203));
        assert_eq!(r.remaining(), 0);
        assert_eq!(
            r.u8(),
            Err(Truncated {
                needed: 1,
                remaining: 0
            })
        );
        assert_eq!(
            r.take(usize::MAX),
            Err(Truncated {
                needed: usize::MAX,
                remaining: 0
            })
        );
        assert_eq!(r.take(0), Ok(&[][..]));
    }

    #[test]
    fn socket_addr_round_trip() {
        for addr in [
            "1.2.3.4:5".parse::<SocketAddr>().unwrap(),
            "[::1]:65535".parse().unwrap(),
            "[::ffff:10.0.0.1]:80".parse().unwrap(),
            "0.0.0.0:0".parse().unwrap(),
        ] {
            let mut buf = Vec::new();
            encode_socket_addr(&addr, &mut buf);
            assert_eq!(buf.len(), socket_addr_encoded_len(&addr));
            let mut r = Reader::new(&buf);
            assert_eq!(decode_socket_addr(&mut r), Ok(addr));
            assert_eq!(r.remaining(), 0);
            for cut in 0..buf.len() {
                let mut r = Reader::new(&buf[..cut]);
                assert!(matches!(
                    decode_socket_addr(&mut r),
                    Err(AddrError::Truncated(_))
                ));
            }
        }
        let mut r = Reader::new(&[5, 0, 0, 0, 0, 0, 0]);
        assert_eq!(decode_socket_addr(&mut r), Err(AddrError::UnknownFamily(5)));
    }
}
