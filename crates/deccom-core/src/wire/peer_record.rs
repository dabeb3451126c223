//! Peer records: how one node tells another who a peer is and where to reach it.
//! Specified in `docs/wire.md#peer-record`.
//!
//! A [`PeerRecord`] carries a node id, the public identity it is derived from, a UDP address, an
//! optional TCP port and an optional external (NAT-mapped) address.
//!
//! # Encoding (version 1)
//!
//! Integers are big-endian. Addresses use the socket address encoding of [`crate::wire`]
//! (family byte `4`/`6`, 4 or 16 address bytes, 2-byte port).
//!
//! | offset   | bytes    | field                                                         |
//! |----------|----------|---------------------------------------------------------------|
//! | 0        | 1        | version, `1`                                                  |
//! | 1        | 1        | flags: `0x01` TCP port present, `0x02` external address present; other bits must be 0 |
//! | 2        | 32       | node id = SHA-256(public identity)                            |
//! | 34       | 2        | public identity length `L`, `1..=256`                          |
//! | 36       | `L`      | public identity (see [`crate::identity`])                     |
//! | 36+L     | 7 or 19  | UDP address                                                   |
//! | …        | 2        | TCP port, if flag `0x01`                                       |
//! | …        | 7 or 19  | external address, if flag `0x02`                              |
//!
//! The smallest record (name of 1 byte, IPv4, no options) is 45 bytes; the largest is
//! [`PeerRecord::MAX_ENCODED_LEN`] = 332 bytes.
//!
//! # Decoding untrusted input
//!
//! [`PeerRecord::decode`] is safe on arbitrary bytes: it never panics and never reads past the
//! record. It reads one record from the front of its input and returns how many bytes it used, so
//! records can be concatenated. It rejects, with a typed [`Error`]:
//!
//! - input that ends early: `ERR_DECCOM_RECORD_TRUNCATED`;
//! - a version other than 1: `ERR_DECCOM_RECORD_VERSION`;
//! - unknown flag bits, a zero identity length, an invalid identity (unknown kind, wrong length,
//!   invalid Ed25519 point, non-UTF-8 name), an unknown address family:
//!   `ERR_DECCOM_RECORD_MALFORMED`;
//! - an identity length above 256: `ERR_DECCOM_RECORD_TOO_LARGE`;
//! - an id that is not SHA-256 of the identity: `ERR_DECCOM_RECORD_ID_MISMATCH`.
//!
//! A record that decodes re-encodes to exactly the bytes consumed.

use core::fmt;
use std::net::SocketAddr;

use crate::error::Error;
use crate::identity::{
    decode_public_identity_with_id, NodeId, PublicIdentity, ShortHex, MAX_PUBLIC_IDENTITY_LEN,
};
use crate::wire::{
    decode_socket_addr, encode_socket_addr, socket_addr_encoded_len, AddrError, Reader, Truncated,
    MAX_SOCKET_ADDR_LEN,
};

/// The only record version this implementation writes and reads.
pub const VERSION: u8 = 1;
/// Flag bit: a TCP port follows the UDP address.
pub const FLAG_TCP_PORT: u8 = 0x01;
/// Flag bit: an external address follows.
pub const FLAG_EXTERNAL: u8 = 0x02;
const KNOWN_FLAGS: u8 = FLAG_TCP_PORT | FLAG_EXTERNAL;

/// Who a peer is and where to reach it.
///
/// The fields are public; keep `id == identity.id()` (as [`PeerRecord::new`] does), otherwise the
/// encoding is rejected by [`PeerRecord::decode`] with `ERR_DECCOM_RECORD_ID_MISMATCH`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PeerRecord {
    /// Node id: SHA-256 of the encoded `identity`.
    pub id: NodeId,
    /// The peer's public identity.
    pub identity: PublicIdentity,
    /// Where the peer receives datagrams.
    pub udp: SocketAddr,
    /// The peer's TCP port (on the UDP address's IP), if it accepts streams.
    pub tcp_port: Option<u16>,
    /// The peer's address as seen from outside its NAT, if known.
    pub external: Option<SocketAddr>,
}

impl fmt::Debug for PeerRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerRecord")
            .field("id", &ShortHex(&self.id))
            .field("identity", &self.identity)
            .field("udp", &self.udp)
            .field("tcp_port", &self.tcp_port)
            .field("external", &self.external)
            .finish()
    }
}

fn truncated(t: Truncated) -> Error {
    Error::RecordTruncated {
        needed: t.needed,
        remaining: t.remaining,
    }
}

fn addr_error(e: AddrError) -> Error {
    match e {
        AddrError::Truncated(t) => truncated(t),
        AddrError::UnknownFamily(_) => Error::RecordMalformed {
            reason: "unknown address family (expected 4 or 6)",
        },
    }
}

/// What [`PeerRecord::layout_of`] reads of an encoded record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordLayout {
    /// The UDP address.
    pub udp: SocketAddr,
    /// The external address, if the record announces one.
    pub external: Option<SocketAddr>,
    /// The record's length in bytes.
    pub len: usize,
}

impl PeerRecord {
    /// Largest possible encoding, in bytes: a 256-byte identity and two IPv6 addresses.
    pub const MAX_ENCODED_LEN: usize =
        1 + 1 + 32 + 2 + MAX_PUBLIC_IDENTITY_LEN + MAX_SOCKET_ADDR_LEN + 2 + MAX_SOCKET_ADDR_LEN;

    /// A record for `identity` reachable at `udp`, with the id computed and no options.
    #[must_use]
    pub fn new(identity: PublicIdentity, udp: SocketAddr) -> PeerRecord {
        PeerRecord {
            id: identity.id(),
            identity,
            udp,
            tcp_port: None,
            external: None,
        }
    }

    /// Sets the TCP port.
    #[must_use]
    pub fn with_tcp_port(mut self, port: u16) -> PeerRecord {
        self.tcp_port = Some(port);
        self
    }

    /// Sets the external (NAT-mapped) address.
    #[must_use]
    pub fn with_external(mut self, addr: SocketAddr) -> PeerRecord {
        self.external = Some(addr);
        self
    }

    /// Length of this record's encoding, in bytes.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        2 + 32
            + 2
            + self.identity.encoded_len()
            + socket_addr_encoded_len(&self.udp)
            + self.tcp_port.map_or(0, |_| 2)
            + self.external.as_ref().map_or(0, socket_addr_encoded_len)
    }

    /// Encodes this record (see the module docs for the layout).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// Appends this record's encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let mut flags = 0;
        if self.tcp_port.is_some() {
            flags |= FLAG_TCP_PORT;
        }
        if self.external.is_some() {
            flags |= FLAG_EXTERNAL;
        }
        out.reserve(self.encoded_len());
        out.push(VERSION);
        out.push(flags);
        out.extend_from_slice(&self.id);
        let identity_len = self.identity.encoded_len();
        debug_assert!(identity_len <= MAX_PUBLIC_IDENTITY_LEN, "identity too long");
        out.extend_from_slice(
            &u16::try_from(identity_len)
                .unwrap_or(u16::MAX)
                .to_be_bytes(),
        );
        self.identity.encode_into(out);
        encode_socket_addr(&self.udp, out);
        if let Some(port) = self.tcp_port {
            out.extend_from_slice(&port.to_be_bytes());
        }
        if let Some(external) = &self.external {
            encode_socket_addr(external, out);
        }
    }

    /// Decodes one record from the front of `bytes`; returns it and the number of bytes consumed.
    ///
    /// Safe on untrusted input: never panics and never reads past the record.
    ///
    /// # Errors
    ///
    /// [`Error::RecordTruncated`] if the input ends early; [`Error::RecordVersion`] for a version
    /// other than 1; [`Error::RecordMalformed`] for unknown flag bits, an empty or invalid identity,
    /// or an unknown address family; [`Error::RecordTooLarge`] for an identity length above 256;
    /// [`Error::RecordIdMismatch`] if the id is not SHA-256 of the identity.
    pub fn decode(bytes: &[u8]) -> Result<(PeerRecord, usize), Error> {
        let mut r = Reader::new(bytes);
        let version = r.u8().map_err(truncated)?;
        if version != VERSION {
            return Err(Error::RecordVersion { version });
        }
        let flags = r.u8().map_err(truncated)?;
        if flags & !KNOWN_FLAGS != 0 {
            return Err(Error::RecordMalformed {
                reason: "unknown flag bits are set",
            });
        }
        let id: NodeId = r.array().map_err(truncated)?;
        let identity_len = usize::from(r.u16_be().map_err(truncated)?);
        if identity_len == 0 {
            return Err(Error::RecordMalformed {
                reason: "public identity length is zero",
            });
        }
        if identity_len > MAX_PUBLIC_IDENTITY_LEN {
            return Err(Error::RecordTooLarge {
                len: identity_len,
                max: MAX_PUBLIC_IDENTITY_LEN,
            });
        }
        let identity_bytes = r.take(identity_len).map_err(truncated)?;
        let (identity, identity_id) = decode_public_identity_with_id(identity_bytes)
            .map_err(|e| Error::RecordMalformed { reason: e.reason() })?;
        if identity_id != id {
            return Err(Error::RecordIdMismatch);
        }
        let udp = decode_socket_addr(&mut r).map_err(addr_error)?;
        let tcp_port = if flags & FLAG_TCP_PORT != 0 {
            Some(r.u16_be().map_err(truncated)?)
        } else {
            None
        };
        let external = if flags & FLAG_EXTERNAL != 0 {
            Some(decode_socket_addr(&mut r).map_err(addr_error)?)
        } else {
            None
        };
        let record = PeerRecord {
            id,
            identity,
            udp,
            tcp_port,
            external,
        };
        Ok((record, r.position()))
    }

    /// Where an encoded record this process made or already decoded (a routing table's copy, a
    /// record of a validated message) puts its addresses, and its length: read from its layout
    /// (the version, the flags, the identity length, the address families) without checking the
    /// identity again. `None` when the bytes are not laid out as a record.
    #[must_use]
    pub fn layout_of(encoded: &[u8]) -> Option<RecordLayout> {
        let mut r = Reader::new(encoded);
        if r.u8().ok()? != VERSION {
            return None;
        }
        let flags = r.u8().ok()?;
        r.take(32).ok()?;
        let identity_len = usize::from(r.u16_be().ok()?);
        r.take(identity_len).ok()?;
        let udp = decode_socket_addr(&mut r).ok()?;
        if flags & FLAG_TCP_PORT != 0 {
            r.u16_be().ok()?;
        }
        let external = if flags & FLAG_EXTERNAL != 0 { Some(decode_socket_addr(&mut r).ok()?) } else { None };
        Some(RecordLayout { udp, external, len: r.position() })
    }

    /// The UDP address of an encoded record (see [`layout_of`](Self::layout_of)).
    #[must_use]
    pub fn udp_of(encoded: &[u8]) -> Option<SocketAddr> {
        Self::layout_of(encoded).map(|l| l.udp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn ed() -> PublicIdentity {
        Identity::from_seed(&[3u8; 32]).public_identity()
    }

    fn name() -> PublicIdentity {
        Identity::from_name("alice").unwrap().public_identity()
    }

    fn samples() -> Vec<PeerRecord> {
        let v4: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::7]:65535".parse().unwrap();
        let mut out = Vec::new();
        for identity in [ed(), name(), PublicIdentity::Name(vec![b'z'; 255])] {
            for udp in [v4, v6] {
                for tcp in [None, Some(0), Some(4001)] {
                    for external in [None, Some(v4), Some(v6)] {
                        let mut r = PeerRecord::new(identity.clone(), udp);
                        r.tcp_port = tcp;
                        r.external = external;
                        out.push(r);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn udp_of_reads_the_udp_address_of_every_record() {
        for rec in samples() {
            assert_eq!(PeerRecord::udp_of(&rec.encode()), Some(rec.udp));
        }
        assert_eq!(PeerRecord::udp_of(&[]), None);
        let mut wrong = samples()[0].encode();
        wrong[0] = 2;
        assert_eq!(PeerRecord::udp_of(&wrong), None);
    }

    #[test]
    fn layout_of_reads_the_addresses_and_length_of_every_record() {
        for rec in samples() {
            let mut bytes = rec.encode();
            let len = bytes.len();
            let want = Some(RecordLayout { udp: rec.udp, external: rec.external, len });
            assert_eq!(PeerRecord::layout_of(&bytes), want);
            // Bytes after the record are not part of it; a record cut short has no layout.
            bytes.extend_from_slice(&[7; 9]);
            assert_eq!(PeerRecord::layout_of(&bytes), want);
            assert_eq!(PeerRecord::layout_of(&bytes[..len - 1]), None);
        }
        assert_eq!(PeerRecord::layout_of(&[]), None);
        let mut wrong = samples()[0].encode();
        wrong[0] = 2;
        assert_eq!(PeerRecord::layout_of(&wrong), None);
    }

    #[test]
    fn round_trips() {
        for record in samples() {
            let bytes = record.encode();
            assert_eq!(bytes.len(), record.encoded_len());
            assert!(bytes.len() <= PeerRecord::MAX_ENCODED_LEN);
            assert_eq!(
                PeerRecord::decode(&bytes),
                Ok((record.clone(), bytes.len()))
            );
            // Trailing data is left alone.
            let mut longer = bytes.clone();
            longer.extend_from_slice(&[0xAA, 0xBB]);
            assert_eq!(
                PeerRecord::decode(&longer),
                Ok((record.clone(), bytes.len()))
            );
            // encode_into appends.
            let mut buf = vec![9];
            record.encode_into(&mut buf);
            assert_eq!(&buf[1..], &bytes[..]);
        }
    }

    #[test]
    fn max_encoded_len_is_reached() {
        let v6: SocketAddr = "[::1]:1".parse().unwrap();
        let r = PeerRecord::new(PublicIdentity::Name(vec![b'n'; 255]), v6)
            .with_tcp_port(1)
            .with_external(v6);
        assert_eq!(r.encode().len(), PeerRecord::MAX_ENCODED_LEN);
        assert_eq!(PeerRecord::MAX_ENCODED_LEN, 332);
        let small = PeerRecord::new(
            PublicIdentity::Name(vec![b'n']),
            "1.2.3.4:5".parse().unwrap(),
        );
        assert_eq!(small.encode().len(), 45);
    }

    #[test]
    fn layout_is_as_documented() {
        let r = PeerRecord::new(name(), "1.2.3.4:258".parse().unwrap())
            .with_tcp_port(0x0102)
            .with_external("[::1]:3".parse().unwrap());
        let b = r.encode();
        assert_eq!(b[0], 1);
        assert_eq!(b[1], FLAG_TCP_PORT | FLAG_EXTERNAL);
        assert_eq!(&b[2..34], &r.id);
        assert_eq!(&b[34..36], &[0, 6]);
        assert_eq!(&b[36..42], b"\x02alice");
        assert_eq!(&b[42..49], &[4, 1, 2, 3, 4, 1, 2]);
        assert_eq!(&b[49..51], &[1, 2]);
        assert_eq!(b[51], 6);
        assert_eq!(&b[68..70], &[0, 3]);
        assert_eq!(b.len(), 70);
    }

    #[test]
    fn every_truncation_is_an_error() {
        for record in samples() {
            let bytes = record.encode();
            for cut in 0..bytes.len() {
                let err = PeerRecord::decode(&bytes[..cut]).unwrap_err();
                assert_eq!(err.code(), "ERR_DECCOM_RECORD_TRUNCATED", "cut at {cut}");
            }
        }
    }

    fn code(bytes: &[u8]) -> &'static str {
        PeerRecord::decode(bytes).unwrap_err().code()
    }

    #[test]
    fn wrong_version() {
        let mut b = PeerRecord::new(ed(), "1.1.1.1:1".parse().unwrap()).encode();
        for v in [0u8, 2, 255] {
            b[0] = v;
            assert_eq!(
                PeerRecord::decode(&b),
                Err(Error::RecordVersion { version: v })
            );
        }
        assert_eq!(code(&[2]), "ERR_DECCOM_RECORD_VERSION");
    }

    #[test]
    fn unknown_flags() {
        let mut b = PeerRecord::new(ed(), "1.1.1.1:1".parse().unwrap()).encode();
        for bit in 2..8 {
            b[1] = 1 << bit;
            assert_eq!(code(&b), "ERR_DECCOM_RECORD_MALFORMED");
        }
    }

    #[test]
    fn bad_family() {
        let r = PeerRecord::new(name(), "1.1.1.1:1".parse().unwrap())
            .with_external("2.2.2.2:2".parse().unwrap());
        let b = r.encode();
        let udp_at = 36 + 6;
        for family in [0u8, 5, 7, 41, 255] {
            let mut m = b.clone();
            m[udp_at] = family;
            assert_eq!(code(&m), "ERR_DECCOM_RECORD_MALFORMED");
            let mut m = b.clone();
            let ext_at = b.len() - 7;
            m[ext_at] = family;
            assert_eq!(code(&m), "ERR_DECCOM_RECORD_MALFORMED");
        }
    }

    #[test]
    fn id_mismatch() {
        let mut r = PeerRecord::new(ed(), "1.1.1.1:1".parse().unwrap());
        r.id[0] ^= 1;
        assert_eq!(
            PeerRecord::decode(&r.encode()),
            Err(Error::RecordIdMismatch)
        );
        let mut r = PeerRecord::new(name(), "1.1.1.1:1".parse().unwrap());
        r.id = ed().id();
        assert_eq!(code(&r.encode()), "ERR_DECCOM_RECORD_ID_MISMATCH");
    }

    #[test]
    fn identity_length_checks() {
        let b = PeerRecord::new(name(), "1.1.1.1:1".parse().unwrap()).encode();
        let mut m = b.clone();
        m[34..36].copy_from_slice(&[0, 0]);
        assert_eq!(code(&m), "ERR_DECCOM_RECORD_MALFORMED");
        let mut m = b.clone();
        m[34..36].copy_from_slice(&257u16.to_be_bytes());
        assert_eq!(
            PeerRecord::decode(&m),
            Err(Error::RecordTooLarge { len: 257, max: 256 })
        );
        let mut m = b.clone();
        m[34..36].copy_from_slice(&[0xff, 0xff]);
        assert_eq!(code(&m), "ERR_DECCOM_RECORD_TOO_LARGE");
    }

    #[test]
    fn invalid_identity_contents() {
        // Unknown identity kind, with the id matching the bytes so only the kind is wrong.
        let bogus = [0x09u8, b'x'];
        let mut b = vec![1, 0];
        b.extend_from_slice(&crate::identity::node_id(&bogus));
        b.extend_from_slice(&[0, 2]);
        b.extend_from_slice(&bogus);
        b.extend_from_slice(&[4, 1, 1, 1, 1, 0, 1]);
        assert_eq!(code(&b), "ERR_DECCOM_RECORD_MALFORMED");
        // Non-UTF-8 name.
        let bad_name = [0x02u8, 0xff];
        let mut b = vec![1, 0];
        b.extend_from_slice(&crate::identity::node_id(&bad_name));
        b.extend_from_slice(&[0, 2]);
        b.extend_from_slice(&bad_name);
        b.extend_from_slice(&[4, 1, 1, 1, 1, 0, 1]);
        assert_eq!(code(&b), "ERR_DECCOM_RECORD_MALFORMED");
        // Ed25519 identity with a length of 32 (one key byte short).
        let ed_bytes = ed().encode();
        let mut b = vec![1, 0];
        b.extend_from_slice(&crate::identity::node_id(&ed_bytes[..32]));
        b.extend_from_slice(&[0, 32]);
        b.extend_from_slice(&ed_bytes[..32]);
        b.extend_from_slice(&[4, 1, 1, 1, 1, 0, 1]);
        assert_eq!(code(&b), "ERR_DECCOM_RECORD_MALFORMED");
    }

    #[test]
    fn debug_is_short() {
        let r = PeerRecord::new(name(), "1.1.1.1:1".parse().unwrap());
        let s = format!("{r:?}");
        assert!(s.contains("PeerRecord"));
        assert!(s.len() < 200, "{s}");
    }
}
