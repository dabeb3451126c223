//! Sets of bucket indexes, as the routing table keeps them: which buckets hold entries, which
//! have contents, which have a last activity.

/// A set of bucket indexes (0..256), bit `b % 64` of word `b / 64`.
pub(super) type BucketSet = [u64; 4];

/// How many buckets of `m` are below `b` (0..256): the place of bucket `b` among those of `m`.
#[inline]
pub(super) fn rank(m: &BucketSet, b: usize) -> usize {
    let w = b / 64;
    let below: u32 = m[..w].iter().map(|x| x.count_ones()).sum();
    (below + (m[w] & ((1u64 << (b % 64)) - 1)).count_ones()) as usize
}

/// Whether bucket `b` (0..256) is in `m`.
#[inline]
pub(super) fn has(m: &BucketSet, b: usize) -> bool {
    m[b / 64] >> (b % 64) & 1 == 1
}

/// The buckets below `b` (0..=256).
pub(super) fn buckets_below(b: usize) -> BucketSet {
    let mut m = [0u64; 4];
    for (w, word) in m.iter_mut().enumerate() {
        let lo = 64 * w;
        *word = if b >= lo + 64 {
            u64::MAX
        } else if b <= lo {
            0
        } else {
            (1u64 << (b - lo)) - 1
        };
    }
    m
}

/// Calls `f` with each bucket of `m`, lowest first, until it returns true; true if it did.
pub(super) fn each_ascending(m: BucketSet, mut f: impl FnMut(usize) -> bool) -> bool {
    for (w, &word) in m.iter().enumerate() {
        let mut x = word;
        while x != 0 {
            if f(64 * w + x.trailing_zeros() as usize) {
                return true;
            }
            x &= x - 1;
        }
    }
    false
}

/// Calls `f` with each bucket of `m`, highest first, until it returns true; true if it did.
pub(super) fn each_descending(m: BucketSet, mut f: impl FnMut(usize) -> bool) -> bool {
    for (w, &word) in m.iter().enumerate().rev() {
        let mut x = word;
        while x != 0 {
            let top = 63 - x.leading_zeros() as usize;
            if f(64 * w + top) {
                return true;
            }
            x &= !(1u64 << top);
        }
    }
    false
}
