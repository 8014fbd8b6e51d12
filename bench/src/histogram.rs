//! Latency histogram: log-linear buckets of nanoseconds, merged across workers.

/// Log-linear histogram of nanoseconds: 128 linear sub-buckets per power of two, so a
/// reported percentile is within 0.8% of the true value (HdrHistogram's layout).
pub struct Hist {
    counts: Vec<u64>,
    pub total: u64,
    pub max: u64,
    sum: u128,
}

impl Default for Hist {
    fn default() -> Hist {
        Hist::new()
    }
}

const SUB_BITS: u32 = 7;
const SUB: usize = 1 << SUB_BITS;

impl Hist {
    pub fn new() -> Hist {
        Hist {
            counts: vec![0; 64 * SUB],
            total: 0,
            max: 0,
            sum: 0,
        }
    }
    fn index(v: u64) -> usize {
        if v < SUB as u64 {
            return v as usize;
        }
        let shift = 63 - v.leading_zeros() - SUB_BITS;
        (shift as usize + 1) * SUB + ((v >> shift) as usize - SUB)
    }
    fn value(i: usize) -> u64 {
        if i < SUB {
            return i as u64;
        }
        let shift = (i / SUB - 1) as u32;
        (((i % SUB + SUB) as u64) << shift) + ((1u64 << shift) >> 1)
    }
    pub fn record(&mut self, ns: u64) {
        self.counts[Self::index(ns)] += 1;
        self.total += 1;
        self.max = self.max.max(ns);
        self.sum += ns as u128;
    }
    pub fn merge(&mut self, o: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.total += o.total;
        self.max = self.max.max(o.max);
        self.sum += o.sum;
    }
    /// Percentile in microseconds.
    pub fn pct_us(&self, p: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let want = ((p / 100.0) * self.total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return Hist::value(i).min(self.max) as f64 / 1000.0;
            }
        }
        self.max as f64 / 1000.0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn histogram_percentiles_are_within_one_percent() {
        let mut h = Hist::new();
        for v in 1..=100_000u64 {
            h.record(v * 1000);
        }
        let p99 = h.pct_us(99.0);
        assert!((p99 - 99_000.0).abs() / 99_000.0 < 0.01, "{p99}");
        assert!((h.pct_us(50.0) - 50_000.0).abs() / 50_000.0 < 0.01);
    }
}
