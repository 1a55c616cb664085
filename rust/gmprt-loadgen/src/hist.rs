//! A log-linear (HDR-style) latency histogram.
//!
//! Values are nanoseconds. Below 2,048 every value has its own bucket; above,
//! each power-of-two range is split into 1,024 equal buckets, so a bucket is
//! never wider than 1/1,024 of the values in it and a reported percentile is
//! within 0.05% of the true sample (the bucket's midpoint is reported). `min`,
//! `max` and the mean are exact. Values above [`Histogram::MAX_VALUE`]
//! (about 18 minutes) are clamped into the last bucket; `max` stays exact.

/// log2 of the number of buckets per power-of-two range.
const SUB_BITS: u32 = 10;
const SUB: u64 = 1 << SUB_BITS;
/// Highest shift: values up to 2^(SUB_BITS + 1 + MAX_SHIFT) ns.
const MAX_SHIFT: u32 = 29;
const BUCKETS: usize = ((MAX_SHIFT as u64 + 2) * SUB) as usize;

/// Latency histogram; see the module docs for its precision.
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// Largest value with a bucket of its own precision (2^40 - 1 ns).
    pub const MAX_VALUE: u64 = (1 << (SUB_BITS + 1 + MAX_SHIFT)) - 1;

    /// An empty histogram.
    pub fn new() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    fn index(v: u64) -> usize {
        let v = v.min(Self::MAX_VALUE);
        if v < 2 * SUB {
            v as usize
        } else {
            // v >> shift lands in [SUB, 2 * SUB).
            let shift = 63 - v.leading_zeros() - SUB_BITS;
            ((shift as u64 + 1) * SUB + ((v >> shift) - SUB)) as usize
        }
    }

    /// The midpoint of bucket `i`.
    fn value_at(i: usize) -> u64 {
        let i = i as u64;
        if i < 2 * SUB {
            i
        } else {
            let shift = i / SUB - 1;
            let low = (i % SUB + SUB) << shift;
            low + ((1u64 << shift) - 1) / 2
        }
    }

    /// Records one value (ns).
    pub fn record(&mut self, v: u64) {
        self.counts[Self::index(v)] += 1;
        self.total += 1;
        self.sum += v as u128;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    /// Adds every value recorded in `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Smallest value recorded (0 when empty).
    pub fn min(&self) -> u64 {
        if self.total == 0 {
            0
        } else {
            self.min
        }
    }

    /// Largest value recorded (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Arithmetic mean (0 when empty).
    pub fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }

    /// The value at percentile `p` (0..=100): the smallest recorded value
    /// such that at least `p`% of the values are at or below it, to the
    /// histogram's precision (nearest-rank definition). 0 when empty.
    pub fn percentile(&self, p: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        if p >= 100.0 {
            return self.max;
        }
        let rank = ((p.max(0.0) / 100.0) * self.total as f64).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::value_at(i).clamp(self.min, self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_monotonic() {
        let mut last = 0;
        for v in 0..1_000_000u64 {
            let i = Histogram::index(v);
            assert!(i == last || i == last + 1, "gap at {v}: {last} -> {i}");
            last = i;
        }
        assert!(Histogram::index(Histogram::MAX_VALUE) < BUCKETS);
        assert_eq!(Histogram::index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn bucket_midpoint_within_precision() {
        for v in [0u64, 1, 2047, 2048, 4095, 4096, 123_456, 9_999_999, 1 << 39] {
            let m = Histogram::value_at(Histogram::index(v));
            let err = (m as f64 - v as f64).abs() / (v.max(1) as f64);
            assert!(err <= 1.0 / 1024.0, "v={v} m={m}");
        }
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::new();
        for v in 1..=100 {
            h.record(v);
        }
        assert_eq!(h.count(), 100);
        assert_eq!(h.min(), 1);
        assert_eq!(h.max(), 100);
        assert_eq!(h.percentile(50.0), 50);
        assert_eq!(h.percentile(99.0), 99);
        assert_eq!(h.percentile(100.0), 100);
        assert_eq!(h.percentile(0.0), 1);
        assert!((h.mean() - 50.5).abs() < 1e-9);
    }

    #[test]
    fn percentiles_match_sorted_sample() {
        // A deterministic spread of latencies from 1 µs to ~100 ms.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut sample = Vec::new();
        let mut h = Histogram::new();
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = 1_000 + (x % 1_000) * (x >> 54).max(1) * 97;
            sample.push(v);
            h.record(v);
        }
        sample.sort_unstable();
        for p in [1.0, 10.0, 50.0, 90.0, 99.0, 99.9] {
            let rank = ((p / 100.0) * sample.len() as f64).ceil() as usize;
            let exact = sample[rank - 1] as f64;
            let got = h.percentile(p) as f64;
            assert!(
                (got - exact).abs() / exact <= 1.0 / 1024.0,
                "p{p}: exact {exact} got {got}"
            );
        }
        assert_eq!(h.max(), *sample.last().unwrap());
        assert_eq!(h.min(), sample[0]);
    }

    #[test]
    fn merge_adds_up() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        a.record(10);
        a.record(20);
        b.record(5);
        b.record(1_000_000);
        a.merge(&b);
        assert_eq!(a.count(), 4);
        assert_eq!(a.min(), 5);
        assert_eq!(a.max(), 1_000_000);
        assert_eq!(a.percentile(50.0), 10);
    }

    #[test]
    fn empty_is_zero() {
        let h = Histogram::new();
        assert_eq!(h.percentile(99.0), 0);
        assert_eq!(h.min(), 0);
        assert_eq!(h.max(), 0);
        assert_eq!(h.mean(), 0.0);
    }
}
