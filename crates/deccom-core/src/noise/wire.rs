//! The datagram codec of the Noise layer (layout in the [module docs](super)).
//! Specified in `docs/wire.md#noise-datagrams-tag-4`.
//!
//! [`decode`] is safe for untrusted input: every read goes through the checked
//! [`crate::wire::Reader`] and every variable-length part is bounded. Encoders append to a
//! caller-supplied buffer.

use super::error::WireError;
use crate::wire::Reader;

/// Type byte: plaintext data.
pub const T_PLAINTEXT: u8 = 0x00;
/// Type byte: signed data.
pub const T_SIGNED: u8 = 0x01;
/// Type byte: Noise transport data.
pub const T_TRANSPORT: u8 = 0x02;
/// Type byte: handshake initiation (message 1).
pub const T_INIT: u8 = 0x10;
/// Type byte: handshake response (message 2).
pub const T_RESPONSE: u8 = 0x11;
/// Type byte: handshake final (message 3, XX only).
pub const T_FINAL: u8 = 0x12;
/// Type byte: cookie reply.
pub const T_COOKIE: u8 = 0x13;

/// Version byte carried by handshake initiations (and mixed into the Noise prologue).
pub const PROTOCOL_VERSION: u8 = 1;

/// Length of an X25519 public key.
pub const KEY_LEN: usize = 32;
/// Length of an AEAD tag.
pub const TAG_LEN: usize = 16;
/// Length of a cookie and of the cookie MAC on an initiation.
pub const MAC_LEN: usize = 16;
/// Length of an Ed25519 signature.
pub const SIG_LEN: usize = 64;

/// Header bytes before the ciphertext of a transport datagram.
pub const TRANSPORT_HEADER_LEN: usize = 1 + 4 + 8;
/// Header bytes before the payload of a signed datagram.
pub const SIGNED_HEADER_LEN: usize = 1 + 8 + 8 + SIG_LEN;
/// Longest Noise message (snow's and the spec's limit).
pub const MAX_NOISE_LEN: usize = 65_535;
/// Longest Noise handshake message we accept (our payloads are ~131 bytes).
pub const MAX_HANDSHAKE_NOISE_LEN: usize = 1024;
/// Header bytes of an initiation before its Noise message, without a cookie MAC.
pub const INIT_HEADER_LEN: usize = 1 + 1 + 4 + 1 + 1;
/// Header bytes of a response before its Noise message.
pub const RESPONSE_HEADER_LEN: usize = 1 + 4 + 4;
/// Length of the identity binding a handshake payload carries (Ed25519 identity).
pub const BINDING_LEN: usize = 1 + 32 + 1 + 33 + SIG_LEN;
/// The transport-suite byte after a binding: the offer in message 1, the choice in message 2
/// (docs/wire.md, "Transport suites").
pub const SUITE_LEN: usize = 1;
/// Noise part of XX message 2 with a [`BINDING_LEN`] binding and the suite choice: `e`,
/// encrypted `s`, encrypted payload.
pub const XX_RESPONSE_NOISE_LEN: usize =
    KEY_LEN + KEY_LEN + TAG_LEN + BINDING_LEN + SUITE_LEN + TAG_LEN;
/// Noise part of a padded XX message 1: the initiation datagram is as long as the response
/// datagram it asks for, so a responder never answers an unvalidated address with more bytes
/// than it received. The padding is message 1's (unencrypted) payload: the suite offer byte,
/// then zero bytes.
pub const XX_INIT_NOISE_LEN: usize = RESPONSE_HEADER_LEN + XX_RESPONSE_NOISE_LEN - INIT_HEADER_LEN;
/// Longest initiation we send: a padded XX message 1 with a cookie MAC (an IK message 1 with a
/// [`BINDING_LEN`] binding is one byte shorter).
pub const MAX_INIT_LEN: usize = INIT_HEADER_LEN + MAC_LEN + XX_INIT_NOISE_LEN;
/// Length of the payload (offer byte and zeros) that pads XX message 1 to [`XX_INIT_NOISE_LEN`].
pub const XX_INIT_PADDING: usize = XX_INIT_NOISE_LEN - KEY_LEN;
/// Shortest Noise handshake message part we accept: one ephemeral key (XX message 1).
const MIN_INIT_NOISE_LEN: usize = KEY_LEN;
/// XX message 2 is `e, ee, s, es` + payload tag; IK message 2 is `e, ee, se` + payload tag.
const MIN_RESPONSE_NOISE_LEN: usize = KEY_LEN + TAG_LEN;
/// XX message 3 is `s, se` + payload tag.
const MIN_FINAL_NOISE_LEN: usize = KEY_LEN + TAG_LEN + TAG_LEN;

/// Noise handshake pattern of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// `Noise_XX`: first contact, both static keys are transmitted.
    Xx = 0,
    /// `Noise_IK`: the initiator already knows the responder's static key.
    Ik = 1,
}

/// One decoded datagram; borrowed parts point into the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Plaintext mode data.
    Plaintext {
        /// The application payload.
        payload: &'a [u8],
    },
    /// Sign mode data.
    Signed {
        /// Sender's epoch (must not decrease across restarts).
        epoch: u64,
        /// Sender's counter within the epoch.
        counter: u64,
        /// Ed25519 signature over [`signed_message`].
        signature: [u8; SIG_LEN],
        /// The application payload.
        payload: &'a [u8],
    },
    /// Encrypt mode data.
    Transport {
        /// The receiver's session index.
        receiver: u32,
        /// Nonce / counter.
        counter: u64,
        /// Ciphertext with tag.
        ciphertext: &'a [u8],
    },
    /// Handshake message 1.
    Init {
        /// The initiator's index for this handshake.
        sender: u32,
        /// XX or IK.
        pattern: Pattern,
        /// Cookie MAC, present when the initiator holds a cookie.
        mac: Option<[u8; MAC_LEN]>,
        /// The Noise message.
        noise: &'a [u8],
    },
    /// Handshake message 2.
    Response {
        /// The responder's index.
        sender: u32,
        /// The initiator's index.
        receiver: u32,
        /// The Noise message.
        noise: &'a [u8],
    },
    /// Handshake message 3 (XX).
    Final {
        /// The responder's index.
        receiver: u32,
        /// The Noise message.
        noise: &'a [u8],
    },
    /// Cookie reply: "retry your initiation with this cookie".
    Cookie {
        /// The initiator's index from the initiation being answered.
        receiver: u32,
        /// The cookie.
        cookie: [u8; MAC_LEN],
    },
}

fn u32_be(r: &mut Reader<'_>) -> Result<u32, WireError> {
    Ok(u32::from_be_bytes(r.array()?))
}

fn u64_be(r: &mut Reader<'_>) -> Result<u64, WireError> {
    Ok(u64::from_be_bytes(r.array()?))
}

fn rest<'a>(
    r: &mut Reader<'a>,
    what: &'static str,
    min: usize,
    max: usize,
) -> Result<&'a [u8], WireError> {
    let n = r.remaining();
    if n < min {
        return Err(WireError::TooShort(what));
    }
    if n > max {
        return Err(WireError::TooLong(what));
    }
    Ok(r.take(n)?)
}

/// Decodes one datagram.
///
/// # Errors
///
/// A [`WireError`] for empty, truncated, unknown-type, unknown-version or out-of-bounds input.
pub fn decode(datagram: &[u8]) -> Result<Packet<'_>, WireError> {
    let mut r = Reader::new(datagram);
    let kind = r.u8().map_err(|_| WireError::Empty)?;
    match kind {
        T_PLAINTEXT => Ok(Packet::Plaintext {
            payload: r.take(r.remaining())?,
        }),
        T_SIGNED => {
            let epoch = u64_be(&mut r)?;
            let counter = u64_be(&mut r)?;
            let signature = r.array()?;
            Ok(Packet::Signed {
                epoch,
                counter,
                signature,
                payload: r.take(r.remaining())?,
            })
        }
        T_TRANSPORT => {
            let receiver = u32_be(&mut r)?;
            let counter = u64_be(&mut r)?;
            let ciphertext = rest(&mut r, "transport ciphertext", TAG_LEN, MAX_NOISE_LEN)?;
            Ok(Packet::Transport {
                receiver,
                counter,
                ciphertext,
            })
        }
        T_INIT => {
            let version = r.u8()?;
            if version != PROTOCOL_VERSION {
                return Err(WireError::UnsupportedVersion(version));
            }
            let sender = u32_be(&mut r)?;
            let pattern = match r.u8()? {
                0 => Pattern::Xx,
                1 => Pattern::Ik,
                other => return Err(WireError::UnknownPattern(other)),
            };
            let mac = match r.u8()? {
                0 => None,
                1 => Some(r.array()?),
                other => return Err(WireError::BadFlag(other)),
            };
            let noise = rest(
                &mut r,
                "handshake initiation",
                MIN_INIT_NOISE_LEN,
                MAX_HANDSHAKE_NOISE_LEN,
            )?;
            Ok(Packet::Init {
                sender,
                pattern,
                mac,
                noise,
            })
        }
        T_RESPONSE => {
            let sender = u32_be(&mut r)?;
            let receiver = u32_be(&mut r)?;
            let noise = rest(
                &mut r,
                "handshake response",
                MIN_RESPONSE_NOISE_LEN,
                MAX_HANDSHAKE_NOISE_LEN,
            )?;
            Ok(Packet::Response {
                sender,
                receiver,
                noise,
            })
        }
        T_FINAL => {
            let receiver = u32_be(&mut r)?;
            let noise = rest(
                &mut r,
                "handshake final",
                MIN_FINAL_NOISE_LEN,
                MAX_HANDSHAKE_NOISE_LEN,
            )?;
            Ok(Packet::Final { receiver, noise })
        }
        T_COOKIE => {
            let receiver = u32_be(&mut r)?;
            let cookie = r.array()?;
            if r.remaining() != 0 {
                return Err(WireError::TooLong("cookie reply"));
            }
            Ok(Packet::Cookie { receiver, cookie })
        }
        other => Err(WireError::UnknownType(other)),
    }
}

/// The bytes an initiation's cookie MAC covers: everything but the flag and the MAC.
pub fn init_mac_input(sender: u32, pattern: Pattern, noise: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&[T_INIT, PROTOCOL_VERSION]);
    out.extend_from_slice(&sender.to_be_bytes());
    out.push(pattern as u8);
    out.extend_from_slice(noise);
}

/// Appends a handshake initiation.
pub fn encode_init(
    sender: u32,
    pattern: Pattern,
    mac: Option<&[u8; MAC_LEN]>,
    noise: &[u8],
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(&[T_INIT, PROTOCOL_VERSION]);
    out.extend_from_slice(&sender.to_be_bytes());
    out.push(pattern as u8);
    match mac {
        Some(mac) => {
            out.push(1);
            out.extend_from_slice(mac);
        }
        None => out.push(0),
    }
    out.extend_from_slice(noise);
}

/// Appends a handshake response.
pub fn encode_response(sender: u32, receiver: u32, noise: &[u8], out: &mut Vec<u8>) {
    out.push(T_RESPONSE);
    out.extend_from_slice(&sender.to_be_bytes());
    out.extend_from_slice(&receiver.to_be_bytes());
    out.extend_from_slice(noise);
}

/// Appends a handshake final message.
pub fn encode_final(receiver: u32, noise: &[u8], out: &mut Vec<u8>) {
    out.push(T_FINAL);
    out.extend_from_slice(&receiver.to_be_bytes());
    out.extend_from_slice(noise);
}

/// Appends a cookie reply.
pub fn encode_cookie(receiver: u32, cookie: &[u8; MAC_LEN], out: &mut Vec<u8>) {
    out.push(T_COOKIE);
    out.extend_from_slice(&receiver.to_be_bytes());
    out.extend_from_slice(cookie);
}

/// Appends a transport header; the caller appends the ciphertext.
pub fn encode_transport_header(receiver: u32, counter: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(&transport_header(receiver, counter));
}

/// The transport datagram header: type, receiver index, counter.
#[must_use]
pub fn transport_header(receiver: u32, counter: u64) -> [u8; TRANSPORT_HEADER_LEN] {
    let mut h = [0u8; TRANSPORT_HEADER_LEN];
    h[0] = T_TRANSPORT;
    h[1..5].copy_from_slice(&receiver.to_be_bytes());
    h[5..].copy_from_slice(&counter.to_be_bytes());
    h
}

/// Appends a plaintext datagram.
pub fn encode_plaintext(payload: &[u8], out: &mut Vec<u8>) {
    out.push(T_PLAINTEXT);
    out.extend_from_slice(payload);
}

/// Appends a signed datagram.
pub fn encode_signed(
    epoch: u64,
    counter: u64,
    signature: &[u8; SIG_LEN],
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    out.push(T_SIGNED);
    out.extend_from_slice(&epoch.to_be_bytes());
    out.extend_from_slice(&counter.to_be_bytes());
    out.extend_from_slice(signature);
    out.extend_from_slice(payload);
}

/// Domain separator of Sign-mode signatures.
pub const SIGN_DOMAIN: &[u8] = b"deccom-noise-sign-v1";

/// The message a Sign-mode signature covers: domain || epoch || counter || payload.
#[must_use]
pub fn signed_message(epoch: u64, counter: u64, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGN_DOMAIN.len() + 16 + payload.len());
    m.extend_from_slice(SIGN_DOMAIN);
    m.extend_from_slice(&epoch.to_be_bytes());
    m.extend_from_slice(&counter.to_be_bytes());
    m.extend_from_slice(payload);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        let mut b = Vec::new();
        encode_plaintext(b"hi", &mut b);
        v.push(b);
        let mut b = Vec::new();
        encode_signed(3, 4, &[9; SIG_LEN], b"pay", &mut b);
        v.push(b);
        let mut b = Vec::new();
        encode_transport_header(7, 8, &mut b);
        b.extend_from_slice(&[1; TAG_LEN + 3]);
        v.push(b);
        let mut b = Vec::new();
        encode_init(5, Pattern::Ik, Some(&[2; MAC_LEN]), &[3; 120], &mut b);
        v.push(b);
        let mut b = Vec::new();
        encode_init(5, Pattern::Xx, None, &[3; 32], &mut b);
        v.push(b);
        let mut b = Vec::new();
        encode_response(1, 2, &[4; 96], &mut b);
        v.push(b);
        let mut b = Vec::new();
        encode_final(1, &[4; 64], &mut b);
        v.push(b);
        let mut b = Vec::new();
        encode_cookie(1, &[4; MAC_LEN], &mut b);
        v.push(b);
        v
    }

    #[test]
    fn round_trips() {
        let s = samples();
        assert_eq!(decode(&s[0]), Ok(Packet::Plaintext { payload: b"hi" }));
        assert_eq!(
            decode(&s[1]),
            Ok(Packet::Signed {
                epoch: 3,
                counter: 4,
                signature: [9; SIG_LEN],
                payload: b"pay"
            })
        );
        assert!(matches!(
            decode(&s[2]),
            Ok(Packet::Transport { receiver: 7, counter: 8, ciphertext }) if ciphertext.len() == 19
        ));
        assert!(matches!(
            decode(&s[3]),
            Ok(Packet::Init { sender: 5, pattern: Pattern::Ik, mac: Some(m), noise })
                if m == [2; MAC_LEN] && noise.len() == 120
        ));
        assert!(matches!(
            decode(&s[4]),
            Ok(Packet::Init { sender: 5, pattern: Pattern::Xx, mac: None, noise }) if noise.len() == 32
        ));
        assert!(matches!(
            decode(&s[5]),
            Ok(Packet::Response { sender: 1, receiver: 2, noise }) if noise.len() == 96
        ));
        assert!(matches!(
            decode(&s[6]),
            Ok(Packet::Final { receiver: 1, .. })
        ));
        assert_eq!(
            decode(&s[7]),
            Ok(Packet::Cookie {
                receiver: 1,
                cookie: [4; MAC_LEN]
            })
        );
    }

    #[test]
    fn every_truncation_is_rejected() {
        // Shortest valid datagram of each sample's type: everything below it must be rejected
        // (above it, a free-form payload/ciphertext is merely shorter and fails authentication).
        let min_len = [
            1,
            SIGNED_HEADER_LEN,
            TRANSPORT_HEADER_LEN + TAG_LEN,
            8 + MAC_LEN + KEY_LEN,
            8 + KEY_LEN,
            9 + KEY_LEN + TAG_LEN,
            5 + KEY_LEN + 2 * TAG_LEN,
            5 + MAC_LEN,
        ];
        for (s, min) in samples().into_iter().zip(min_len) {
            for cut in 0..min {
                assert!(decode(&s[..cut]).is_err(), "prefix {cut} of {s:?} accepted");
            }
            assert!(decode(&s[..min]).is_ok(), "minimum {min} of {s:?} rejected");
        }
        assert_eq!(decode(&[]), Err(WireError::Empty));
    }

    #[test]
    fn malformed_fields_are_rejected() {
        assert_eq!(decode(&[0x7f]), Err(WireError::UnknownType(0x7f)));
        let mut b = Vec::new();
        encode_init(5, Pattern::Xx, None, &[3; 32], &mut b);
        let mut v = b.clone();
        v[1] = 2;
        assert_eq!(decode(&v), Err(WireError::UnsupportedVersion(2)));
        let mut v = b.clone();
        v[6] = 9;
        assert_eq!(decode(&v), Err(WireError::UnknownPattern(9)));
        let mut v = b.clone();
        v[7] = 2;
        assert_eq!(decode(&v), Err(WireError::BadFlag(2)));
        let mut big = Vec::new();
        encode_init(
            5,
            Pattern::Xx,
            None,
            &[3; MAX_HANDSHAKE_NOISE_LEN + 1],
            &mut big,
        );
        assert_eq!(
            decode(&big),
            Err(WireError::TooLong("handshake initiation"))
        );
        let mut c = Vec::new();
        encode_cookie(1, &[4; MAC_LEN], &mut c);
        c.push(0);
        assert!(decode(&c).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x: u64 = 0x1234_5678_9abc_def1;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 200) as usize;
            let bytes: Vec<u8> = (0..len).map(|i| (x >> (i % 57)) as u8).collect();
            let _ = decode(&bytes);
        }
    }
}
