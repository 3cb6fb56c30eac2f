//! End-to-end processing latency, as nsqd's `--e2e-processing-latency-percentile`
//! reports it in `/stats`: for each FIN, the time from the message's publish
//! timestamp to the FIN, kept over a sliding window of two halves (the
//! current half and the one before; `--e2e-processing-latency-window-time`
//! covers both), and summarised as the configured quantiles.
//!
//! A channel keeps its own window; a topic's figures merge its channels'.
//! Histograms (2 significant digits, 1 µs .. 1 h) keep memory fixed
//! whatever the message rate.

use hdrhistogram::Histogram;

/// Smallest and largest latency tracked, in nanoseconds.
const LOWEST_NS: u64 = 1_000;
const HIGHEST_NS: u64 = 3_600_000_000_000;
const SIGNIFICANT_DIGITS: u8 = 2;

fn empty_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(LOWEST_NS, HIGHEST_NS, SIGNIFICANT_DIGITS)
        .expect("constant bounds are valid")
}

/// The quantiles asked for, and the window they cover.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySettings {
    /// Each in (0, 1]; empty means the feature is off.
    pub quantiles: Vec<f64>,
    pub window_ms: u64,
}

impl LatencySettings {
    pub fn enabled(&self) -> bool {
        !self.quantiles.is_empty()
    }
}

/// A summary for `/stats`: how many FINs the window holds, and each
/// quantile's latency in nanoseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub percentiles: Vec<(f64, f64)>,
}

/// One half of a window: the FINs recorded from `started_ms` on.
#[derive(Debug)]
struct Half {
    started_ms: u64,
    histogram: Histogram<u64>,
}

/// One channel's sliding window.
#[derive(Debug)]
pub struct LatencyWindow {
    half_ms: u64,
    halves: [Half; 2],
    /// The half being recorded into.
    current: usize,
}

impl LatencyWindow {
    pub fn new(window_ms: u64, now_ms: u64) -> Self {
        let half = || Half {
            started_ms: now_ms,
            histogram: empty_histogram(),
        };
        LatencyWindow {
            half_ms: (window_ms / 2).max(1),
            halves: [half(), half()],
            current: 0,
        }
    }

    /// Records one FIN that came `latency_ns` after its publish.
    pub fn record(&mut self, now_ms: u64, latency_ns: u64) {
        let started_ms = self.halves[self.current].started_ms;
        if now_ms >= started_ms + self.half_ms {
            // A new half begins at the boundary `now_ms` falls in; the
            // other half, older, is dropped.
            let steps = (now_ms - started_ms) / self.half_ms;
            self.current ^= 1;
            let half = &mut self.halves[self.current];
            half.started_ms = started_ms + steps * self.half_ms;
            half.histogram.reset();
        }
        let half = &mut self.halves[self.current];
        debug_assert!(half.started_ms <= now_ms && now_ms < half.started_ms + self.half_ms);
        half.histogram
            .saturating_record(latency_ns.clamp(LOWEST_NS, HIGHEST_NS));
    }

    /// Adds what the window holds at `now_ms` to `into`: each half that
    /// began less than a whole window ago.
    pub fn merge_into(&self, now_ms: u64, into: &mut Histogram<u64>) {
        for half in &self.halves {
            if now_ms < half.started_ms + 2 * self.half_ms {
                into.add(&half.histogram).expect("same bounds");
            }
        }
    }
}

/// Merges `windows` at `now_ms` and reads the quantiles.
pub fn summarize<'a>(
    windows: impl IntoIterator<Item = &'a LatencyWindow>,
    now_ms: u64,
    quantiles: &[f64],
) -> LatencySummary {
    let mut merged = empty_histogram();
    for window in windows {
        window.merge_into(now_ms, &mut merged);
    }
    let empty = merged.is_empty();
    LatencySummary {
        count: merged.len(),
        percentiles: quantiles
            .iter()
            .map(|&q| {
                let value = if empty {
                    0
                } else {
                    merged.value_at_quantile(q)
                };
                (q, value as f64)
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn quantiles_of_recorded_latencies() {
        let mut window = LatencyWindow::new(60_000, 0);
        for i in 1..=100 {
            window.record(10, i * MS);
        }
        let summary = summarize([&window], 20, &[0.5, 0.99]);
        assert_eq!(summary.count, 100);
        let (q50, v50) = summary.percentiles[0];
        assert_eq!(q50, 0.5);
        assert!(
            (49.0 * MS as f64..=51.0 * MS as f64).contains(&v50),
            "{v50}"
        );
        let (_, v99) = summary.percentiles[1];
        assert!(
            (98.0 * MS as f64..=100.5 * MS as f64).contains(&v99),
            "{v99}"
        );
    }

    #[test]
    fn old_halves_fall_out_of_the_window() {
        let mut window = LatencyWindow::new(1_000, 0);
        window.record(100, MS);
        window.record(600, 2 * MS);
        // At 1100 the first half (0..500) is gone, the second (500..1000) stays.
        assert_eq!(summarize([&window], 1_100, &[0.5]).count, 1);
        assert_eq!(summarize([&window], 1_600, &[0.5]).count, 0);
        window.record(10_000, MS);
        assert_eq!(summarize([&window], 10_000, &[0.5]).count, 1);
    }

    #[test]
    fn an_empty_window_reports_zero_for_each_quantile() {
        let window = LatencyWindow::new(1_000, 0);
        let summary = summarize([&window], 0, &[0.9]);
        assert_eq!(
            summary,
            LatencySummary {
                count: 0,
                percentiles: vec![(0.9, 0.0)]
            }
        );
    }

    #[test]
    fn a_topic_merges_its_channels() {
        let mut a = LatencyWindow::new(1_000, 0);
        let mut b = LatencyWindow::new(1_000, 0);
        a.record(1, MS);
        b.record(1, 3 * MS);
        b.record(1, 3 * MS);
        let summary = summarize([&a, &b], 2, &[1.0]);
        assert_eq!(summary.count, 3);
        assert!(summary.percentiles[0].1 >= 2.9 * MS as f64);
    }
}
