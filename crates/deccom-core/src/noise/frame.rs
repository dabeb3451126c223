//! Frames: what the plaintext of every Noise data message carries (`docs/wire.md#noise-frames`).
//!
//! ```text
//! whole message:  [upper tag u8][0x00][data ...]
//! chunk:          [upper tag u8][0x01][message id u32][total length u32][offset u32][data ...]   (big-endian)
//! ```
//!
//! The upper tag names the layer above Noise the data belongs to (0 application, 2 reliable UDP,
//! ...). A message longer than one frame is split into chunks that the receiver puts back
//! together in a [`Reassembly`]. Both drivers of the Noise layer use this module: the socket
//! thread (where every reliable-UDP datagram travels as one whole-message frame) and the endpoint
//! driven from JavaScript (which also chunks large messages).

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Frame kind: a whole message.
pub const KIND_WHOLE: u8 = 0x00;
/// Frame kind: one chunk of a larger message.
pub const KIND_CHUNK: u8 = 0x01;
/// Bytes before the data of a whole-message frame.
pub const WHOLE_HEADER_LEN: usize = 2;
/// Bytes before the data of a chunk.
pub const CHUNK_HEADER_LEN: usize = 14;

/// A decoded frame, borrowing its data from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A whole message.
    Whole {
        /// The layer above Noise the message belongs to.
        tag: u8,
        /// The message.
        data: &'a [u8],
    },
    /// Bytes `offset..offset + data.len()` of a larger message.
    Chunk {
        /// The layer above Noise the message belongs to.
        tag: u8,
        /// The sender's number for the message (unique among its partial messages).
        id: u32,
        /// The message's length.
        total: u32,
        /// Where `data` starts in the message.
        offset: u32,
        /// The chunk's bytes.
        data: &'a [u8],
    },
}

/// Why a frame was refused. Each maps to one counter of the Noise layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Shorter than its header.
    Truncated,
    /// A kind byte other than 0x00 or 0x01 (a newer format this node does not speak).
    UnknownKind(u8),
    /// A chunk without data, or whose bytes end past its message's total length.
    ChunkOutOfRange,
}

impl FrameError {
    /// The counter (in the Noise layer's stats) this refusal is counted in.
    pub fn counter(self) -> &'static str {
        match self {
            FrameError::Truncated | FrameError::UnknownKind(_) => "dropped_malformed_frame",
            FrameError::ChunkOutOfRange => "dropped_reassembly_invalid",
        }
    }
}

impl<'a> Frame<'a> {
    /// The layer tag the frame's data belongs to.
    pub fn tag(&self) -> u8 {
        match *self {
            Frame::Whole { tag, .. } | Frame::Chunk { tag, .. } => tag,
        }
    }

    /// Appends the encoded frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Frame::Whole { tag, data } => {
                out.extend_from_slice(&[tag, KIND_WHOLE]);
                out.extend_from_slice(data);
            }
            Frame::Chunk { tag, id, total, offset, data } => {
                out.extend_from_slice(&[tag, KIND_CHUNK]);
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&total.to_be_bytes());
                out.extend_from_slice(&offset.to_be_bytes());
                out.extend_from_slice(data);
            }
        }
    }
}

/// The header of a whole-message frame for the layer `tag` (the data follows it).
pub fn whole_header(tag: u8) -> [u8; WHOLE_HEADER_LEN] {
    [tag, KIND_WHOLE]
}

/// Decodes one frame. Safe for any input: it never panics and never reads past `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Frame<'_>, FrameError> {
    let (&tag, rest) = bytes.split_first().ok_or(FrameError::Truncated)?;
    let (&kind, rest) = rest.split_first().ok_or(FrameError::Truncated)?;
    match kind {
        KIND_WHOLE => Ok(Frame::Whole { tag, data: rest }),
        KIND_CHUNK => {
            if rest.len() < CHUNK_HEADER_LEN - 2 {
                return Err(FrameError::Truncated);
            }
            let word = |i: usize| u32::from_be_bytes([rest[i], rest[i + 1], rest[i + 2], rest[i + 3]]);
            let (id, total, offset) = (word(0), word(4), word(8));
            let data = &rest[12..];
            if data.is_empty() || u64::from(offset) + data.len() as u64 > u64::from(total) {
                return Err(FrameError::ChunkOutOfRange);
            }
            Ok(Frame::Chunk { tag, id, total, offset, data })
        }
        other => Err(FrameError::UnknownKind(other)),
    }
}

/// How many frames a message of `len` bytes takes when no frame may exceed `max_frame` bytes.
pub fn frame_count(len: usize, max_frame: usize) -> usize {
    if len + WHOLE_HEADER_LEN <= max_frame {
        1
    } else {
        len.div_ceil(chunk_step(max_frame))
    }
}

/// Data bytes per chunk when no frame may exceed `max_frame` bytes.
fn chunk_step(max_frame: usize) -> usize {
    max_frame.saturating_sub(CHUNK_HEADER_LEN).max(1)
}

/// Appends frame number `index` (of [`frame_count`]) of `message` to `out`: the whole message when
/// it fits one frame, else its `index`-th chunk, numbered `id`.
///
/// # Panics
/// When `index >= frame_count(message.len(), max_frame)` or the message exceeds `u32::MAX` bytes.
pub fn encode_part(tag: u8, id: u32, message: &[u8], index: usize, max_frame: usize, out: &mut Vec<u8>) {
    let count = frame_count(message.len(), max_frame);
    assert!(index < count, "frame index {index} out of {count}");
    if count == 1 {
        return Frame::Whole { tag, data: message }.encode(out);
    }
    let step = chunk_step(max_frame);
    let start = index * step;
    let end = (start + step).min(message.len());
    let total = u32::try_from(message.len()).expect("a chunked message fits u32");
    Frame::Chunk { tag, id, total, offset: start as u32, data: &message[start..end] }.encode(out)
}

/// Bounds of a [`Reassembly`].
#[derive(Debug, Clone, Copy)]
pub struct ReassemblyLimits {
    /// Largest message accepted.
    pub max_message: u32,
    /// Bytes of partial messages per peer.
    pub max_per_peer: u64,
    /// Bytes of partial messages in total.
    pub max_total: u64,
    /// A partial message without a new chunk for this long is dropped.
    pub timeout: Duration,
}

impl Default for ReassemblyLimits {
    fn default() -> Self {
        ReassemblyLimits {
            max_message: 256 * 1024 * 1024,
            max_per_peer: 320 * 1024 * 1024,
            max_total: 1024 * 1024 * 1024,
            timeout: Duration::from_secs(30),
        }
    }
}

/// What became of one chunk handed to [`Reassembly::push`].
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Stored; the message is not complete yet.
    Stored,
    /// The last missing bytes arrived.
    Complete {
        /// The layer the message belongs to.
        tag: u8,
        /// The whole message.
        message: Vec<u8>,
    },
    /// Refused and counted in the named counter (nothing stored).
    Dropped(&'static str),
}

struct Partial {
    tag: u8,
    buf: Vec<u8>,
    /// Received byte ranges, start → end, never overlapping.
    ranges: BTreeMap<u32, u32>,
    received: u64,
    last: Instant,
}

/// Chunks of messages from many peers put back together, within fixed memory bounds.
///
/// A chunk that overlaps bytes already received, changes a message's total or tag, or does not
/// fit the bounds is refused; a message is delivered only when every byte of it arrived exactly
/// once, so no byte of a delivered message is left unwritten.
pub struct Reassembly<P> {
    limits: ReassemblyLimits,
    partials: HashMap<P, HashMap<u32, Partial>>,
    per_peer: HashMap<P, u64>,
    total: u64,
}

impl<P: Copy + Eq + Hash> Reassembly<P> {
    /// An empty reassembly with these bounds.
    pub fn new(limits: ReassemblyLimits) -> Self {
        Reassembly { limits, partials: HashMap::new(), per_peer: HashMap::new(), total: 0 }
    }

    /// Bytes held by partial messages.
    pub fn bytes(&self) -> u64 {
        self.total
    }

    /// Adds one frame from `peer`. A whole-message frame completes at once (its data copied).
    pub fn push(&mut self, now: Instant, peer: P, frame: Frame<'_>) -> Pushed {
        let (tag, id, total, offset, data) = match frame {
            Frame::Whole { tag, data } => return Pushed::Complete { tag, message: data.to_vec() },
            Frame::Chunk { tag, id, total, offset, data } => (tag, id, total, offset, data),
        };
        let end = offset as u64 + data.len() as u64;
        if total > self.limits.max_message || data.is_empty() || end > total as u64 {
            return Pushed::Dropped("dropped_reassembly_invalid");
        }
        let used = self.per_peer.get(&peer).copied().unwrap_or(0);
        let exists = self.partials.get(&peer).is_some_and(|m| m.contains_key(&id));
        if !exists {
            if used + total as u64 > self.limits.max_per_peer || self.total + total as u64 > self.limits.max_total {
                return Pushed::Dropped("dropped_reassembly_full");
            }
            let p = Partial { tag, buf: vec![0; total as usize], ranges: BTreeMap::new(), received: 0, last: now };
            self.partials.entry(peer).or_default().insert(id, p);
            self.per_peer.insert(peer, used + total as u64);
            self.total += total as u64;
        }
        let p = self.partials.get_mut(&peer).and_then(|m| m.get_mut(&id)).expect("partial present");
        if p.buf.len() != total as usize || p.tag != tag {
            return Pushed::Dropped("dropped_reassembly_invalid");
        }
        let end = end as u32;
        // Overlap with the range starting at or before `offset`, or with the next one.
        let before = p.ranges.range(..=offset).next_back().is_some_and(|(_, &e)| e > offset);
        let after = p.ranges.range(offset..).next().is_some_and(|(&s, _)| s < end);
        if before || after {
            return Pushed::Dropped("dropped_reassembly_duplicate");
        }
        p.ranges.insert(offset, end);
        p.buf[offset as usize..end as usize].copy_from_slice(data);
        p.received += data.len() as u64;
        p.last = now;
        if p.received < total as u64 {
            return Pushed::Stored;
        }
        let p = self.remove(peer, id).expect("partial present");
        Pushed::Complete { tag: p.tag, message: p.buf }
    }

    fn remove(&mut self, peer: P, id: u32) -> Option<Partial> {
        let map = self.partials.get_mut(&peer)?;
        let p = map.remove(&id)?;
        if map.is_empty() {
            self.partials.remove(&peer);
        }
        let len = p.buf.len() as u64;
        match self.per_peer.get_mut(&peer) {
            Some(u) if *u > len => *u -= len,
            _ => {
                self.per_peer.remove(&peer);
            }
        }
        self.total -= len;
        Some(p)
    }

    /// Drops every partial message of `peer` (its session ended); returns how many.
    pub fn drop_peer(&mut self, peer: P) -> usize {
        let ids: Vec<u32> = self.partials.get(&peer).map(|m| m.keys().copied().collect()).unwrap_or_default();
        for id in &ids {
            self.remove(peer, *id);
        }
        ids.len()
    }

    /// When the oldest partial message times out (None without partial messages).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.partials.values().flat_map(|m| m.values()).map(|p| p.last + self.limits.timeout).min()
    }

    /// Drops partial messages without progress for the timeout; returns how many.
    pub fn handle_timeout(&mut self, now: Instant) -> usize {
        let timeout = self.limits.timeout;
        let stale: Vec<(P, u32)> = self
            .partials
            .iter()
            .flat_map(|(peer, m)| m.iter().filter(|(_, p)| now >= p.last + timeout).map(move |(id, _)| (*peer, *id)))
            .collect();
        for (peer, id) in &stale {
            self.remove(*peer, *id);
        }
        stale.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(tag: u8, id: u32, message: &[u8], max_frame: usize) -> Vec<Vec<u8>> {
        (0..frame_count(message.len(), max_frame))
            .map(|i| {
                let mut out = Vec::new();
                encode_part(tag, id, message, i, max_frame, &mut out);
                assert!(out.len() <= max_frame);
                out
            })
            .collect()
    }

    #[test]
    fn whole_and_chunks_round_trip_in_any_order() {
        let t0 = Instant::now();
        let message: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let mut frames = parts(9, 77, &message, 1000);
        assert_eq!(frames.len(), 11);
        frames.reverse();
        let mut r = Reassembly::new(ReassemblyLimits::default());
        let mut done = None;
        for f in &frames {
            let frame = decode(f).unwrap();
            assert!(matches!(frame, Frame::Chunk { .. }));
            match r.push(t0, 1u8, frame) {
                Pushed::Stored => {}
                Pushed::Complete { tag, message } => done = Some((tag, message)),
                Pushed::Dropped(c) => panic!("dropped: {c}"),
            }
        }
        assert_eq!(done, Some((9, message)));
        assert_eq!(r.bytes(), 0);
        let small = parts(3, 1, b"hi", 1000);
        assert_eq!(small, vec![vec![3, 0, b'h', b'i']]);
        assert_eq!(decode(&small[0]), Ok(Frame::Whole { tag: 3, data: b"hi" }));
    }

    #[test]
    fn hostile_chunks_are_refused() {
        let t0 = Instant::now();
        assert_eq!(decode(&[]), Err(FrameError::Truncated));
        assert_eq!(decode(&[0]), Err(FrameError::Truncated));
        assert_eq!(decode(&[0, 2, 1]), Err(FrameError::UnknownKind(2)));
        assert_eq!(decode(&[0, 1, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0]), Err(FrameError::Truncated));
        // Ends past the total, and empty.
        assert_eq!(decode(&[0, 1, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 3, 1, 2]), Err(FrameError::ChunkOutOfRange));
        assert_eq!(decode(&[0, 1, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 0]), Err(FrameError::ChunkOutOfRange));
        let limits = ReassemblyLimits { max_message: 100, max_per_peer: 150, max_total: 200, timeout: Duration::from_secs(1) };
        let mut r = Reassembly::new(limits);
        assert_eq!(r.push(t0, 1u8, Frame::Chunk { tag: 0, id: 1, total: 101, offset: 0, data: &[1] }), Pushed::Dropped("dropped_reassembly_invalid"));
        assert_eq!(r.push(t0, 1u8, Frame::Chunk { tag: 0, id: 1, total: 100, offset: 0, data: &[1; 10] }), Pushed::Stored);
        // Overlapping bytes (a rewrite, or a range straddling a received one) never count twice.
        assert_eq!(r.push(t0, 1u8, Frame::Chunk { tag: 0, id: 1, total: 100, offset: 5, data: &[2; 10] }), Pushed::Dropped("dropped_reassembly_duplicate"));
        assert_eq!(r.push(t0, 1u8, Frame::Chunk { tag: 0, id: 1, total: 100, offset: 20, data: &[2; 10] }), Pushed::Stored);
        assert_eq!(r.push(t0, 1u8, Frame::Chunk { tag: 0, id: 1, total: 100, offset: 15, data: &[2; 10] }), Pushed::Dropped("dropped_reassembly_duplicate"));
        // Another total or tag for the same message.
        assert_eq!(r.push(t0, 1u8, Frame::Chunk { tag: 0, id: 1, total: 99, offset: 40, data: &[2; 10] }), Pushed::Dropped("dropped_reassembly_invalid"));
        assert_eq!(r.push(t0, 1u8, Frame::Chunk { tag: 5, id: 1, total: 100, offset: 40, data: &[2; 10] }), Pushed::Dropped("dropped_reassembly_invalid"));
        // Budgets: per peer, then in total.
        assert_eq!(r.push(t0, 1u8, Frame::Chunk { tag: 0, id: 2, total: 60, offset: 0, data: &[1] }), Pushed::Dropped("dropped_reassembly_full"));
        assert_eq!(r.push(t0, 2u8, Frame::Chunk { tag: 0, id: 2, total: 100, offset: 0, data: &[1] }), Pushed::Stored);
        assert_eq!(r.push(t0, 3u8, Frame::Chunk { tag: 0, id: 2, total: 10, offset: 0, data: &[1] }), Pushed::Dropped("dropped_reassembly_full"));
        assert_eq!(r.bytes(), 200);
        // Timeout and session end free everything.
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(r.drop_peer(2), 1);
        assert_eq!(r.handle_timeout(t0 + Duration::from_millis(999)), 0);
        assert_eq!(r.handle_timeout(t0 + Duration::from_secs(1)), 1);
        assert_eq!(r.bytes(), 0);
        assert_eq!(r.poll_timeout(), None);
    }
}
