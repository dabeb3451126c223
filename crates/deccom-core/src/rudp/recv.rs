//! Receive-side data structures: received packet-number ranges (for ACKs), the bounded
//! delivered-message filter, and a partially received message.

use std::collections::VecDeque;
use std::time::Instant;

use super::wire::{segment_count, segment_len, MAX_ACK_RANGES, MESSAGE_SPAN};

/// What inserting a packet number found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PnInsert {
    /// The next packet number after the largest: in order.
    InOrder,
    /// New, but it opens or fills a gap (or is older than the remembered history).
    OutOfOrder,
    /// Already recorded.
    Duplicate,
}

/// Received packet numbers as at most [`MAX_ACK_RANGES`] disjoint inclusive ranges, ascending;
/// the oldest range is forgotten when a new one would exceed the bound.
#[derive(Debug, Clone, Default)]
pub struct PnRanges {
    ranges: VecDeque<(u64, u64)>,
}

impl PnRanges {
    /// Records `pn`.
    pub fn insert(&mut self, pn: u64) -> PnInsert {
        let Some(last) = self.ranges.back_mut() else {
            self.ranges.push_back((pn, pn));
            return PnInsert::InOrder;
        };
        if last.1.checked_add(1) == Some(pn) {
            last.1 = pn;
            return PnInsert::InOrder;
        }
        if pn > last.1 {
            self.ranges.push_back((pn, pn));
            self.trim();
            return PnInsert::OutOfOrder;
        }
        // Older than the largest: walk back from the most recent range.
        let n = self.ranges.len();
        for i in (0..n).rev() {
            let (s, e) = self.ranges[i];
            if pn >= s && pn <= e {
                return PnInsert::Duplicate;
            }
            if pn > e {
                let joins_prev = pn == e + 1;
                let joins_next = self.ranges[i + 1].0 == pn + 1;
                match (joins_prev, joins_next) {
                    (true, true) => {
                        let next_end = self.ranges[i + 1].1;
                        self.ranges[i].1 = next_end;
                        self.ranges.remove(i + 1);
                    }
                    (true, false) => self.ranges[i].1 = pn,
                    (false, true) => self.ranges[i + 1].0 = pn,
                    (false, false) => {
                        self.ranges.insert(i + 1, (pn, pn));
                        self.trim();
                    }
                }
                return PnInsert::OutOfOrder;
            }
        }
        // Below every range.
        let first = &mut self.ranges[0];
        if pn + 1 == first.0 {
            first.0 = pn;
        } else {
            self.ranges.push_front((pn, pn));
            self.trim();
        }
        PnInsert::OutOfOrder
    }

    fn trim(&mut self) {
        while self.ranges.len() > MAX_ACK_RANGES {
            self.ranges.pop_front();
        }
    }

    /// Largest recorded packet number.
    #[must_use]
    pub fn largest(&self) -> Option<u64> {
        self.ranges.back().map(|r| r.1)
    }

    /// Up to `max` most recent ranges, most recent first, as inclusive `(start, end)`.
    pub fn recent(&self, max: usize) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().rev().take(max).copied()
    }

    /// Number of ranges held.
    #[must_use]
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Whether nothing was received.
    #[must_use]
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

/// Which message ids of one peer were delivered: all ids below a watermark, plus a ring bitmap
/// of the [`MESSAGE_SPAN`] ids above it. Fixed size (4 KiB), allocated on first use.
#[derive(Debug, Clone, Default)]
pub struct DeliveredSet {
    watermark: u64,
    bits: Vec<u64>,
}

const SPAN_WORDS: usize = (MESSAGE_SPAN / 64) as usize;

impl DeliveredSet {
    /// Every id below this is finished (delivered, or abandoned by the sender).
    #[must_use]
    pub fn watermark(&self) -> u64 {
        self.watermark
    }

    fn bit(&self, id: u64) -> bool {
        if self.bits.is_empty() {
            return false;
        }
        let slot = id % MESSAGE_SPAN;
        self.bits[(slot / 64) as usize] & (1 << (slot % 64)) != 0
    }

    fn set_bit(&mut self, id: u64, on: bool) {
        if self.bits.is_empty() {
            if !on {
                return;
            }
            self.bits = vec![0; SPAN_WORDS];
        }
        let slot = id % MESSAGE_SPAN;
        let word = &mut self.bits[(slot / 64) as usize];
        if on {
            *word |= 1 << (slot % 64);
        } else {
            *word &= !(1 << (slot % 64));
        }
    }

    /// Whether `id` is known finished.
    #[must_use]
    pub fn contains(&self, id: u64) -> bool {
        id < self.watermark || (id - self.watermark < MESSAGE_SPAN && self.bit(id))
    }

    /// Whether `id` lies inside the window this set can record.
    #[must_use]
    pub fn in_window(&self, id: u64) -> bool {
        id.saturating_sub(self.watermark) < MESSAGE_SPAN
    }

    /// Records `id` (which must be in the window) as delivered.
    pub fn insert(&mut self, id: u64) {
        if id < self.watermark || !self.in_window(id) {
            return;
        }
        self.set_bit(id, true);
        self.slide();
    }

    fn slide(&mut self) {
        while self.bit(self.watermark) {
            self.set_bit(self.watermark, false);
            self.watermark += 1;
        }
    }

    /// The sender declared every id below `floor` finished. Returns whether the watermark moved.
    pub fn advance_to(&mut self, floor: u64) -> bool {
        if floor <= self.watermark {
            return false;
        }
        if floor - self.watermark >= MESSAGE_SPAN {
            self.bits.iter_mut().for_each(|w| *w = 0);
        } else {
            for id in self.watermark..floor {
                self.set_bit(id, false);
            }
        }
        self.watermark = floor;
        self.slide();
        true
    }
}

/// A partially received message: its buffer (written in place) and which segments arrived.
#[derive(Debug)]
pub struct Partial {
    /// The message buffer, full length from the start.
    pub data: Vec<u8>,
    seg_size: u32,
    segments: u32,
    received: u32,
    bits: Vec<u64>,
    /// When the last new segment arrived.
    pub last_activity: Instant,
    /// Bytes charged against the reassembly limits.
    pub charged: usize,
}

/// What a segment did to a [`Partial`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentResult {
    /// Stored; more are missing.
    Stored,
    /// Stored; the message is complete.
    Complete,
    /// Already had it.
    Duplicate,
    /// Inconsistent with the first segment seen (other length or segment size).
    Inconsistent,
}

impl Partial {
    /// Bytes a partial message of `len` bytes and `seg_size`-byte segments is charged.
    #[must_use]
    pub fn cost(len: u32, seg_size: u32) -> usize {
        let words = segment_count(len, seg_size).div_ceil(64) as usize;
        len as usize + words * 8 + 64
    }

    /// An empty partial message (the caller checked the limits against [`Partial::cost`]).
    #[must_use]
    pub fn new(len: u32, seg_size: u32, now: Instant) -> Self {
        let segments = segment_count(len, seg_size);
        Partial {
            data: vec![0; len as usize],
            seg_size,
            segments,
            received: 0,
            bits: vec![0; segments.div_ceil(64) as usize],
            last_activity: now,
            charged: Self::cost(len, seg_size),
        }
    }

    /// Stores segment `index` (already validated against `len`/`seg_size` by the decoder).
    pub fn store(
        &mut self,
        len: u32,
        seg_size: u32,
        index: u32,
        payload: &[u8],
        now: Instant,
    ) -> SegmentResult {
        if seg_size != self.seg_size || len as usize != self.data.len() || index >= self.segments {
            return SegmentResult::Inconsistent;
        }
        let word = (index / 64) as usize;
        let mask = 1u64 << (index % 64);
        if self.bits[word] & mask != 0 {
            return SegmentResult::Duplicate;
        }
        let start = index as usize * seg_size as usize;
        let Some(dst) = self.data.get_mut(start..start + payload.len()) else {
            return SegmentResult::Inconsistent;
        };
        if payload.len() != segment_len(len, seg_size, index) as usize {
            return SegmentResult::Inconsistent;
        }
        dst.copy_from_slice(payload);
        self.bits[word] |= mask;
        self.received += 1;
        self.last_activity = now;
        if self.received == self.segments {
            SegmentResult::Complete
        } else {
            SegmentResult::Stored
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pn_ranges_merge_and_detect() {
        let mut r = PnRanges::default();
        assert_eq!(r.insert(0), PnInsert::InOrder);
        assert_eq!(r.insert(1), PnInsert::InOrder);
        assert_eq!(r.insert(1), PnInsert::Duplicate);
        assert_eq!(r.insert(5), PnInsert::OutOfOrder);
        assert_eq!(r.insert(6), PnInsert::InOrder);
        assert_eq!(r.insert(3), PnInsert::OutOfOrder);
        assert_eq!(
            r.recent(10).collect::<Vec<_>>(),
            vec![(5, 6), (3, 3), (0, 1)]
        );
        assert_eq!(r.insert(2), PnInsert::OutOfOrder);
        assert_eq!(r.insert(4), PnInsert::OutOfOrder);
        assert_eq!(r.recent(10).collect::<Vec<_>>(), vec![(0, 6)]);
        assert_eq!(r.insert(4), PnInsert::Duplicate);
        assert_eq!(r.largest(), Some(6));
        assert!(!r.is_empty());
    }

    #[test]
    fn pn_ranges_are_bounded() {
        let mut r = PnRanges::default();
        for i in 0..1000u64 {
            r.insert(i * 2 + 10);
        }
        assert_eq!(r.len(), MAX_ACK_RANGES);
        assert_eq!(r.recent(1).next(), Some((2008, 2008)));
        // Far below the remembered history: recorded then trimmed at once.
        assert_eq!(r.insert(0), PnInsert::OutOfOrder);
        assert_eq!(r.len(), MAX_ACK_RANGES);
        assert_eq!(r.recent(3).count(), 3);
    }

    #[test]
    fn delivered_set_slides_and_is_bounded() {
        let mut d = DeliveredSet::default();
        assert!(!d.contains(0));
        d.insert(1);
        assert!(d.contains(1) && !d.contains(0));
        assert_eq!(d.watermark(), 0);
        d.insert(0);
        assert_eq!(d.watermark(), 2);
        d.insert(5);
        assert!(d.advance_to(4));
        assert_eq!(d.watermark(), 4);
        assert!(!d.contains(4));
        d.insert(4);
        assert_eq!(d.watermark(), 6);
        assert!(!d.in_window(6 + MESSAGE_SPAN));
        d.insert(6 + MESSAGE_SPAN); // ignored
        assert!(!d.contains(6 + MESSAGE_SPAN));
        d.insert(100);
        assert!(d.advance_to(10 * MESSAGE_SPAN));
        assert!(!d.contains(10 * MESSAGE_SPAN + 100));
        assert!(d.contains(10));
        assert_eq!(d.bits.len(), SPAN_WORDS);
    }

    #[test]
    fn partial_reassembles_in_place() {
        let t = Instant::now();
        let mut p = Partial::new(10, 4, t);
        assert_eq!(p.store(10, 4, 2, &[9, 10], t), SegmentResult::Stored);
        assert_eq!(p.store(10, 4, 2, &[9, 10], t), SegmentResult::Duplicate);
        assert_eq!(
            p.store(10, 3, 0, &[1, 2, 3], t),
            SegmentResult::Inconsistent
        );
        assert_eq!(
            p.store(11, 4, 0, &[1, 2, 3, 4], t),
            SegmentResult::Inconsistent
        );
        assert_eq!(p.store(10, 4, 0, &[1, 2, 3, 4], t), SegmentResult::Stored);
        assert_eq!(p.store(10, 4, 1, &[5, 6, 7, 8], t), SegmentResult::Complete);
        assert_eq!(p.data, (1..=10).collect::<Vec<u8>>());
    }
}
