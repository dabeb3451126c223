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

/// Reassembly memory is charged in pieces of this many bytes of a message (plus [`PAGE`] each,
/// for the page a piece may share with its neighbour), as data arrives in them.
pub const REGION: usize = 64 << 10;
/// Page size assumed by the charge: memory becomes resident a page at a time.
pub const PAGE: usize = 4096;
/// Messages shorter than this are charged their whole length at the first segment (their buffer
/// may come from a heap whose pages are already written); longer ones region by region.
pub const SMALL_MESSAGE: usize = 256 << 10;
/// Most bytes reserved ahead of the highest byte written (see [`Partial::reserve_ahead`]).
pub const AHEAD_MAX: usize = 64 << 20;
/// Reservations ahead end on a multiple of this many bytes of *address* (a 2 MiB huge page), so
/// that consecutive reservations cover whole huge pages and a driver can back them with huge
/// pages (the first and the last reservation of a message excepted).
pub const AHEAD_ALIGN: usize = 2 << 20;

/// A partially received message: its buffer (written in place) and which segments arrived.
///
/// The buffer is allocated at full length but zero-filled lazily by the allocator (a large
/// `vec![0; n]` is fresh zero pages from the OS), so only the pages written (or pre-faulted on
/// purpose) become resident. The charge follows: a message of [`SMALL_MESSAGE`] bytes or more is
/// charged per [`REGION`] that data arrived in, never for its announced length.
#[derive(Debug)]
pub struct Partial {
    /// The message buffer, full length from the start.
    pub data: Vec<u8>,
    seg_size: u32,
    segments: u32,
    received: u32,
    bits: Vec<u64>,
    /// Regions charged (large messages only).
    regions: Vec<u64>,
    /// End of the highest segment stored.
    high: usize,
    /// Regions below this offset were charged ahead by [`Partial::reserve_ahead`].
    reserved_end: usize,
    /// When the last new segment arrived.
    pub last_activity: Instant,
    /// Bytes charged against the reassembly limits.
    pub charged: usize,
    /// Payload bytes stored.
    pub stored: usize,
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
    fn is_small(len: u32) -> bool {
        (len as usize) < SMALL_MESSAGE
    }

    fn region_cost(len: usize, region: usize) -> usize {
        let start = region * REGION;
        (start + REGION).min(len).saturating_sub(start) + PAGE
    }

    /// Bytes the regions covering `[start, end)` of a new message of `len` bytes cost.
    #[must_use]
    pub fn region_span_cost(len: u32, start: usize, end: usize) -> usize {
        if Self::is_small(len) || end <= start {
            return 0;
        }
        (start / REGION..end.div_ceil(REGION))
            .map(|r| Self::region_cost(len as usize, r))
            .sum()
    }

    /// Bytes charged when the first segment is stored, before any region: the bookkeeping, and
    /// the whole buffer of a small message.
    #[must_use]
    pub fn base_cost(len: u32, seg_size: u32) -> usize {
        let words = segment_count(len, seg_size).div_ceil(64) as usize;
        let regions = (len as usize).div_ceil(REGION).div_ceil(64);
        let buffer = if Self::is_small(len) { len as usize } else { 0 };
        buffer + (words + regions) * 8 + 64
    }

    /// Bytes a message of `len` bytes is charged once every byte arrived.
    #[must_use]
    pub fn full_cost(len: u32, seg_size: u32) -> usize {
        let regions = (len as usize).div_ceil(REGION);
        let buffer = if Self::is_small(len) { 0 } else { len as usize + regions * PAGE };
        Self::base_cost(len, seg_size) + buffer
    }

    /// [`Partial::full_cost`] of this message.
    #[must_use]
    pub fn full(&self) -> usize {
        Self::full_cost(u32::try_from(self.data.len()).unwrap_or(u32::MAX), self.seg_size)
    }

    /// An empty partial message charged [`Partial::base_cost`] (the caller checked the limits).
    #[must_use]
    pub fn new(len: u32, seg_size: u32, now: Instant) -> Self {
        let segments = segment_count(len, seg_size);
        let regions = if Self::is_small(len) { 0 } else { (len as usize).div_ceil(REGION) };
        Partial {
            data: vec![0; len as usize],
            seg_size,
            segments,
            received: 0,
            bits: vec![0; segments.div_ceil(64) as usize],
            regions: vec![0; regions.div_ceil(64)],
            high: 0,
            reserved_end: 0,
            last_activity: now,
            charged: Self::base_cost(len, seg_size),
            stored: 0,
        }
    }

    fn region_marked(&self, r: usize) -> bool {
        self.regions[r / 64] & (1 << (r % 64)) != 0
    }

    /// Bytes to charge before bytes `[start, end)` can be written (regions not charged yet).
    fn cost_of_range(&self, start: usize, end: usize) -> usize {
        if self.regions.is_empty() || end <= start {
            return 0;
        }
        let len = self.data.len();
        (start / REGION..end.div_ceil(REGION))
            .filter(|&r| !self.region_marked(r))
            .map(|r| Self::region_cost(len, r))
            .sum()
    }

    fn mark_range(&mut self, start: usize, end: usize) {
        if self.regions.is_empty() || end <= start {
            return;
        }
        let len = self.data.len();
        for r in start / REGION..end.div_ceil(REGION) {
            if !self.region_marked(r) {
                self.regions[r / 64] |= 1 << (r % 64);
                self.charged += Self::region_cost(len, r);
            }
        }
    }

    /// Bytes to charge before segment `index` can be stored (0 if it is a duplicate or lands
    /// in charged regions). Call with a segment validated against this message.
    #[must_use]
    pub fn cost_of(&self, index: u32) -> usize {
        if index >= self.segments || self.has(index) {
            return 0;
        }
        let start = index as usize * self.seg_size as usize;
        let len = segment_len(self.data.len() as u32, self.seg_size, index) as usize;
        self.cost_of_range(start, start + len)
    }

    fn has(&self, index: u32) -> bool {
        self.bits[(index / 64) as usize] & (1u64 << (index % 64)) != 0
    }

    /// Stores segment `index` (already validated against `len`/`seg_size` by the decoder),
    /// charging the regions it lands in (the caller checked [`Partial::cost_of`] against the
    /// limits).
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
        if self.has(index) {
            return SegmentResult::Duplicate;
        }
        if payload.len() != segment_len(len, seg_size, index) as usize {
            return SegmentResult::Inconsistent;
        }
        let start = index as usize * seg_size as usize;
        let end = start + payload.len();
        let Some(dst) = self.data.get_mut(start..end) else {
            return SegmentResult::Inconsistent;
        };
        dst.copy_from_slice(payload);
        self.mark_range(start, end);
        self.bits[(index / 64) as usize] |= 1u64 << (index % 64);
        self.received += 1;
        self.stored += payload.len();
        self.high = self.high.max(end);
        self.last_activity = now;
        if self.received == self.segments {
            SegmentResult::Complete
        } else {
            SegmentResult::Stored
        }
    }

    /// A range to reserve ahead of the writer, so that its pages can be made resident before the
    /// data arrives: `(start, end, cost)` in message offsets, or `None`. Only a large message
    /// that already stored at least [`REGION`] bytes gets one, never further than twice the bytes
    /// it stored (nor [`AHEAD_MAX`]) past the highest byte written, plus up to [`AHEAD_ALIGN`] to
    /// end on an aligned address: what is reserved ahead is bounded by what arrived. The range
    /// is returned when the reservation runs low (half of it left); the caller charges it with
    /// [`Partial::commit_ahead`] if the limits allow.
    #[must_use]
    pub fn reserve_ahead(&self) -> Option<(usize, usize, usize)> {
        let len = self.data.len();
        if self.regions.is_empty() || self.stored < REGION {
            return None;
        }
        let ahead = self.stored.saturating_mul(2).min(AHEAD_MAX);
        let from = self.reserved_end.max(self.high).min(len);
        if from >= len || from >= self.high + ahead / 2 {
            return None;
        }
        let base = self.data.as_ptr() as usize;
        let to = ((base + self.high + ahead).next_multiple_of(AHEAD_ALIGN) - base).min(len);
        (to > from).then(|| (from, to, self.cost_of_range(from, to)))
    }

    /// Charges the regions of `[start, end)` reserved ahead.
    pub fn commit_ahead(&mut self, start: usize, end: usize) {
        self.mark_range(start, end);
        self.reserved_end = self.reserved_end.max(end);
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
    fn large_partial_is_charged_as_data_arrives() {
        let t = Instant::now();
        let len = 64u32 << 20;
        let seg = 1200u32;
        let mut p = Partial::new(len, seg, t);
        let base = p.charged;
        assert!(base < 16 << 10, "{base}");
        // A segment far into the message costs one region, not the announced length.
        let idx = 40_000;
        let cost = p.cost_of(idx);
        assert!(cost <= REGION + PAGE, "{cost}");
        assert_eq!(p.store(len, seg, idx, &[1; 1200], t), SegmentResult::Stored);
        assert_eq!(p.charged, base + cost);
        assert_eq!(p.cost_of(idx), 0);
        assert!(p.reserve_ahead().is_none(), "one segment earns no reservation ahead");
        // In-order data earns a reservation ahead bounded by what arrived.
        for i in 0..100 {
            p.store(len, seg, i, &[2; 1200], t);
        }
        let (from, to, cost) = p.reserve_ahead().unwrap();
        assert!(from >= 120_000 && to - from <= 2 * 121_200 + AHEAD_ALIGN, "{from} {to}");
        assert!((p.data.as_ptr() as usize + to).is_multiple_of(AHEAD_ALIGN) || to == len as usize);
        p.commit_ahead(from, to);
        assert!(p.charged <= base + 2 * (REGION + PAGE) + cost + 2 * (REGION + PAGE));
        assert!(cost <= 2 * 121_200 + AHEAD_ALIGN + 2 * (REGION + PAGE) + AHEAD_ALIGN / REGION * PAGE);
        assert!(p.charged < Partial::full_cost(len, seg) / 20);
        assert!(p.reserve_ahead().is_none());
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
