//! Connection frames (layer tag 12): what a connection between two nodes sends inside reliable
//! messages or TCP data frames. Specified in `docs/wire.md#connections-tag-12`; the connection
//! layer itself is TypeScript (`ts/connection/`, codec `ts/wire/mux.ts`), and this codec must
//! agree with it byte for byte (both check `test-vectors/connection.json`).
//!
//! A frame is `[type u8][body]`, integers big-endian:
//!
//! | type | name        | body                                                                  | length |
//! |------|-------------|-----------------------------------------------------------------------|--------|
//! | 1    | HELLO       | version u8 = 1, nonce (8, not all zero), echo (8), max streams u32, max data u32, stream window u32 | 31 |
//! | 2    | DATA        | stream id u32 (≠ 0), offset u64, flags u8 (`0x01` FIN), payload (the rest) | ≥ 14 |
//! | 3    | MAX_DATA    | stream id u32 (0: the connection), max u64                            | 13     |
//! | 4    | MAX_STREAMS | max u32                                                               | 5      |
//! | 5    | RESET       | stream id u32 (≠ 0), code u32, flags u8 (`0x01` finished), final size u64 | 18  |
//! | 6    | CLOSE       | code u32                                                              | 5      |
//! | 7    | MESSAGE     | payload (the rest)                                                    | ≥ 1    |
//!
//! [`decode`] is safe on arbitrary bytes: it reads through [`crate::wire::Reader`], never panics
//! and never reads past the input. It refuses, with a typed [`MuxError`] (every one of which the
//! receiving layer drops and counts in `connections_dropped_malformed`): an unknown type, a length
//! other than the table's, HELLO version ≠ 1, an all-zero HELLO nonce, stream id 0 in DATA or
//! RESET, flag bits other than `0x01`, and any u64 above [`MAX_SAFE`] (2^53 − 1, the largest
//! integer a JavaScript number holds exactly): a MAX_DATA max, a RESET final size, a DATA offset,
//! and also a DATA frame whose end (`offset + payload length`) lies above it, as the TypeScript
//! codec does. Every accepted frame re-encodes ([`MuxFrame::encode`]) to exactly its bytes.

use crate::wire::{Reader, Truncated};

/// The layer tag connection frames travel under.
pub const TAG: u8 = 12;
/// The only HELLO version written and read.
pub const VERSION: u8 = 1;
/// Largest u64 value a frame may carry: 2^53 − 1.
pub const MAX_SAFE: u64 = (1 << 53) - 1;

/// Frame type bytes.
pub mod kind {
    /// HELLO: opens a connection (or answers an opening).
    pub const HELLO: u8 = 1;
    /// DATA: bytes of a stream.
    pub const DATA: u8 = 2;
    /// MAX_DATA: raises a credit (of one stream, or of the connection).
    pub const MAX_DATA: u8 = 3;
    /// MAX_STREAMS: raises the number of streams the receiver may have opened.
    pub const MAX_STREAMS: u8 = 4;
    /// RESET: abandons a stream.
    pub const RESET: u8 = 5;
    /// CLOSE: ends the connection.
    pub const CLOSE: u8 = 6;
    /// MESSAGE: one application message.
    pub const MESSAGE: u8 = 7;
}

/// DATA flag: the frame's last byte is the stream's last (final size `offset + length`). Also the
/// RESET flag: the resetter had sent all its bytes.
pub const FLAG_FIN: u8 = 0x01;
/// Bytes of a HELLO frame.
pub const HELLO_LEN: usize = 1 + 1 + 8 + 8 + 4 + 4 + 4;
/// Bytes of a DATA frame before its payload.
pub const DATA_HEADER_LEN: usize = 1 + 4 + 8 + 1;
/// Bytes of a MAX_DATA frame.
pub const MAX_DATA_LEN: usize = 1 + 4 + 8;
/// Bytes of a MAX_STREAMS frame.
pub const MAX_STREAMS_LEN: usize = 1 + 4;
/// Bytes of a RESET frame.
pub const RESET_LEN: usize = 1 + 4 + 4 + 1 + 8;
/// Bytes of a CLOSE frame.
pub const CLOSE_LEN: usize = 1 + 4;

/// The body of a HELLO frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// Random per connection instance, never all zeros.
    pub nonce: [u8; 8],
    /// The peer's nonce as the sender knows it (zeros: not known yet).
    pub echo: [u8; 8],
    /// Streams the receiver of this HELLO may open (cumulative count), initially.
    pub max_streams: u32,
    /// Stream payload bytes the receiver may send on the connection, initially.
    pub max_data: u32,
    /// Bytes the receiver may send on each stream, initially.
    pub stream_window: u32,
}

/// A decoded connection frame; payloads borrow from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MuxFrame<'a> {
    /// Opens a connection or answers an opening.
    Hello(Hello),
    /// Bytes `offset..offset + data.len()` of a stream.
    Data {
        /// The stream (never 0).
        stream: u32,
        /// Where `data` starts in the stream.
        offset: u64,
        /// The stream ends with these bytes.
        fin: bool,
        /// The payload (may be empty).
        data: &'a [u8],
    },
    /// A new credit: bytes of `stream` (or, for stream 0, of the whole connection) the receiver
    /// may have sent in total.
    MaxData {
        /// The stream, or 0 for the connection.
        stream: u32,
        /// The new absolute maximum.
        max: u64,
    },
    /// A new stream limit (streams the receiver may have opened in total).
    MaxStreams {
        /// The new absolute maximum.
        max: u32,
    },
    /// Abandons a stream.
    Reset {
        /// The stream (never 0).
        stream: u32,
        /// Application reset code.
        code: u32,
        /// The sender had sent all its bytes (its final size) already.
        finished: bool,
        /// The bytes the sender had sent on the stream.
        final_size: u64,
    },
    /// Ends the connection.
    Close {
        /// `0` normal, `1` protocol violation, `2` refused, `3` shutdown; others: application codes.
        code: u32,
    },
    /// One application message.
    Message {
        /// Its bytes (may be empty).
        data: &'a [u8],
    },
}

/// Why a frame was refused. The connection layer drops every one and counts it in
/// `connections_dropped_malformed` ([`MuxError::counter`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MuxError {
    /// The input ended inside a field (or was empty).
    #[error("frame cut short")]
    Truncated,
    /// Bytes after a fixed-length frame.
    #[error("{0} bytes after the frame")]
    Trailing(usize),
    /// A type byte this version does not know.
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    /// A HELLO version other than [`VERSION`].
    #[error("unknown HELLO version {0}")]
    Version(u8),
    /// A HELLO whose nonce is all zeros.
    #[error("HELLO nonce all zeros")]
    ZeroNonce,
    /// Stream id 0 in DATA or RESET.
    #[error("stream id 0")]
    StreamZero,
    /// Flag bits other than [`FLAG_FIN`].
    #[error("unknown flag bits {0:#04x}")]
    Flags(u8),
    /// A u64 (or the end of a DATA frame's bytes) above [`MAX_SAFE`].
    #[error("value above 2^53 - 1")]
    TooLarge,
}

impl MuxError {
    /// The counter (in the connection layer's stats) a refused frame is counted in.
    #[must_use]
    pub fn counter(self) -> &'static str {
        "dropped_malformed"
    }
}

impl From<Truncated> for MuxError {
    fn from(_: Truncated) -> Self {
        MuxError::Truncated
    }
}

impl MuxFrame<'_> {
    /// The frame's type byte.
    #[must_use]
    pub fn kind(&self) -> u8 {
        match self {
            MuxFrame::Hello(_) => kind::HELLO,
            MuxFrame::Data { .. } => kind::DATA,
            MuxFrame::MaxData { .. } => kind::MAX_DATA,
            MuxFrame::MaxStreams { .. } => kind::MAX_STREAMS,
            MuxFrame::Reset { .. } => kind::RESET,
            MuxFrame::Close { .. } => kind::CLOSE,
            MuxFrame::Message { .. } => kind::MESSAGE,
        }
    }

    /// Length of the encoded frame, in bytes.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        match self {
            MuxFrame::Hello(_) => HELLO_LEN,
            MuxFrame::Data { data, .. } => DATA_HEADER_LEN + data.len(),
            MuxFrame::MaxData { .. } => MAX_DATA_LEN,
            MuxFrame::MaxStreams { .. } => MAX_STREAMS_LEN,
            MuxFrame::Reset { .. } => RESET_LEN,
            MuxFrame::Close { .. } => CLOSE_LEN,
            MuxFrame::Message { data } => 1 + data.len(),
        }
    }

    /// Appends the encoded frame to `out`. Values are written as given: a frame that [`decode`]
    /// would refuse (stream 0 in DATA, an offset above [`MAX_SAFE`], an all-zero nonce) encodes
    /// to bytes that receivers drop.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        out.push(self.kind());
        match *self {
            MuxFrame::Hello(h) => {
                out.push(VERSION);
                out.extend_from_slice(&h.nonce);
                out.extend_from_slice(&h.echo);
                out.extend_from_slice(&h.max_streams.to_be_bytes());
                out.extend_from_slice(&h.max_data.to_be_bytes());
                out.extend_from_slice(&h.stream_window.to_be_bytes());
            }
            MuxFrame::Data { stream, offset, fin, data } => {
                out.extend_from_slice(&stream.to_be_bytes());
                out.extend_from_slice(&offset.to_be_bytes());
                out.push(if fin { FLAG_FIN } else { 0 });
                out.extend_from_slice(data);
            }
            MuxFrame::MaxData { stream, max } => {
                out.extend_from_slice(&stream.to_be_bytes());
                out.extend_from_slice(&max.to_be_bytes());
            }
            MuxFrame::MaxStreams { max } => out.extend_from_slice(&max.to_be_bytes()),
            MuxFrame::Reset { stream, code, finished, final_size } => {
                out.extend_from_slice(&stream.to_be_bytes());
                out.extend_from_slice(&code.to_be_bytes());
                out.push(if finished { FLAG_FIN } else { 0 });
                out.extend_from_slice(&final_size.to_be_bytes());
            }
            MuxFrame::Close { code } => out.extend_from_slice(&code.to_be_bytes()),
            MuxFrame::Message { data } => out.extend_from_slice(data),
        }
    }

    /// The encoded frame in a new buffer.
    #[must_use]
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out
    }
}

fn u32_be(r: &mut Reader<'_>) -> Result<u32, Truncated> {
    Ok(u32::from_be_bytes(r.array()?))
}

/// A u64 that must not exceed [`MAX_SAFE`].
fn safe_u64(r: &mut Reader<'_>) -> Result<u64, MuxError> {
    let v = u64::from_be_bytes(r.array()?);
    if v > MAX_SAFE {
        return Err(MuxError::TooLarge);
    }
    Ok(v)
}

/// The one flag byte DATA and RESET carry: [`FLAG_FIN`] or nothing.
fn fin_flag(r: &mut Reader<'_>) -> Result<bool, MuxError> {
    match r.u8()? {
        0 => Ok(false),
        FLAG_FIN => Ok(true),
        other => Err(MuxError::Flags(other)),
    }
}

fn stream_id(r: &mut Reader<'_>) -> Result<u32, MuxError> {
    match u32_be(r)? {
        0 => Err(MuxError::StreamZero),
        id => Ok(id),
    }
}

/// A fixed-length frame ends here.
fn end(r: &Reader<'_>) -> Result<(), MuxError> {
    match r.remaining() {
        0 => Ok(()),
        n => Err(MuxError::Trailing(n)),
    }
}

/// Decodes one frame (the bytes after the layer tag).
///
/// # Errors
///
/// [`MuxError`] for anything that is not a well-formed frame of this version (see the module
/// docs); the receiver drops it and counts it in `connections_dropped_malformed`.
pub fn decode(bytes: &[u8]) -> Result<MuxFrame<'_>, MuxError> {
    let mut r = Reader::new(bytes);
    let frame = match r.u8()? {
        kind::HELLO => {
            let version = r.u8()?;
            if version != VERSION {
                return Err(MuxError::Version(version));
            }
            let nonce = r.array::<8>()?;
            let echo = r.array::<8>()?;
            let max_streams = u32_be(&mut r)?;
            let max_data = u32_be(&mut r)?;
            let stream_window = u32_be(&mut r)?;
            end(&r)?;
            if nonce == [0; 8] {
                return Err(MuxError::ZeroNonce);
            }
            MuxFrame::Hello(Hello { nonce, echo, max_streams, max_data, stream_window })
        }
        kind::DATA => {
            let stream = stream_id(&mut r)?;
            let offset = safe_u64(&mut r)?;
            let fin = fin_flag(&mut r)?;
            let data = r.take(r.remaining())?;
            // offset <= 2^53 - 1 and a slice is shorter than 2^63 bytes: no overflow.
            if offset.checked_add(data.len() as u64).is_none_or(|e| e > MAX_SAFE) {
                return Err(MuxError::TooLarge);
            }
            MuxFrame::Data { stream, offset, fin, data }
        }
        kind::MAX_DATA => {
            let stream = u32_be(&mut r)?;
            let max = safe_u64(&mut r)?;
            end(&r)?;
            MuxFrame::MaxData { stream, max }
        }
        kind::MAX_STREAMS => {
            let max = u32_be(&mut r)?;
            end(&r)?;
            MuxFrame::MaxStreams { max }
        }
        kind::RESET => {
            let stream = stream_id(&mut r)?;
            let code = u32_be(&mut r)?;
            let finished = fin_flag(&mut r)?;
            let final_size = safe_u64(&mut r)?;
            end(&r)?;
            MuxFrame::Reset { stream, code, finished, final_size }
        }
        kind::CLOSE => {
            let code = u32_be(&mut r)?;
            end(&r)?;
            MuxFrame::Close { code }
        }
        kind::MESSAGE => MuxFrame::Message { data: r.take(r.remaining())? },
        other => return Err(MuxError::UnknownType(other)),
    };
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> MuxFrame<'static> {
        MuxFrame::Hello(Hello { nonce: [1, 2, 3, 4, 5, 6, 7, 8], echo: [0; 8], max_streams: 1024, max_data: 1 << 24, stream_window: 1 << 22 })
    }

    #[test]
    fn fixed_lengths_are_exact() {
        for f in [
            hello(),
            MuxFrame::MaxData { stream: 0, max: MAX_SAFE },
            MuxFrame::MaxStreams { max: 7 },
            MuxFrame::Reset { stream: 3, code: 9, finished: true, final_size: 6 },
            MuxFrame::Close { code: 2 },
        ] {
            let b = f.to_vec();
            assert_eq!(b.len(), f.encoded_len());
            assert_eq!(decode(&b), Ok(f));
            for cut in 0..b.len() {
                assert_eq!(decode(&b[..cut]), Err(MuxError::Truncated), "{f:?} cut to {cut}");
            }
            let mut long = b.clone();
            long.push(0);
            assert_eq!(decode(&long), Err(MuxError::Trailing(1)));
        }
    }

    #[test]
    fn u64_limit_is_two_to_the_53_minus_one() {
        let at = |offset: u64, data: &'static [u8]| MuxFrame::Data { stream: 1, offset, fin: false, data };
        assert!(decode(&at(MAX_SAFE, b"").to_vec()).is_ok());
        assert!(decode(&at(MAX_SAFE - 2, b"ab").to_vec()).is_ok());
        assert_eq!(decode(&at(MAX_SAFE - 1, b"ab").to_vec()), Err(MuxError::TooLarge));
        assert_eq!(decode(&at(MAX_SAFE + 1, b"").to_vec()), Err(MuxError::TooLarge));
        assert_eq!(decode(&at(u64::MAX, b"x").to_vec()), Err(MuxError::TooLarge));
        assert_eq!(decode(&MuxFrame::MaxData { stream: 1, max: MAX_SAFE + 1 }.to_vec()), Err(MuxError::TooLarge));
        let reset = MuxFrame::Reset { stream: 1, code: 0, finished: false, final_size: MAX_SAFE + 1 };
        assert_eq!(decode(&reset.to_vec()), Err(MuxError::TooLarge));
    }

    #[test]
    fn refusals_are_typed() {
        assert_eq!(decode(&[]), Err(MuxError::Truncated));
        assert_eq!(decode(&[0]), Err(MuxError::UnknownType(0)));
        assert_eq!(decode(&[8, 0, 0, 0, 1]), Err(MuxError::UnknownType(8)));
        let mut b = hello().to_vec();
        b[1] = 2;
        assert_eq!(decode(&b), Err(MuxError::Version(2)));
        let zero = MuxFrame::Hello(Hello { nonce: [0; 8], echo: [1; 8], max_streams: 1, max_data: 1, stream_window: 1 });
        assert_eq!(decode(&zero.to_vec()), Err(MuxError::ZeroNonce));
        let data0 = MuxFrame::Data { stream: 0, offset: 0, fin: false, data: b"h" };
        assert_eq!(decode(&data0.to_vec()), Err(MuxError::StreamZero));
        let mut flags = MuxFrame::Data { stream: 1, offset: 0, fin: true, data: b"h" }.to_vec();
        flags[13] = 0x03;
        assert_eq!(decode(&flags), Err(MuxError::Flags(0x03)));
        let mut reset = MuxFrame::Reset { stream: 1, code: 42, finished: false, final_size: 0 }.to_vec();
        reset[9] = 0x80;
        assert_eq!(decode(&reset), Err(MuxError::Flags(0x80)));
        assert_eq!(decode(&MuxFrame::Reset { stream: 0, code: 42, finished: false, final_size: 0 }.to_vec()), Err(MuxError::StreamZero));
        // MAX_DATA names the connection with stream 0.
        assert!(decode(&MuxFrame::MaxData { stream: 0, max: 1 }.to_vec()).is_ok());
    }

    #[test]
    fn payloads_borrow_the_input() {
        let b = MuxFrame::Data { stream: 2, offset: 5, fin: true, data: b"hello" }.to_vec();
        match decode(&b) {
            Ok(MuxFrame::Data { data, .. }) => assert_eq!(data.as_ptr(), b[DATA_HEADER_LEN..].as_ptr()),
            other => panic!("{other:?}"),
        }
        assert_eq!(decode(&[kind::MESSAGE]), Ok(MuxFrame::Message { data: &[] }));
        assert_eq!(decode(&[kind::DATA, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]), Ok(MuxFrame::Data { stream: 1, offset: 0, fin: false, data: &[] }));
    }
}
