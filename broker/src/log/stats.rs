//! [`LogStats`]: what one partition log counts about its own work, for
//! `/metrics`: records and bytes appended, how long each commit's
//! `fdatasync` took, how many records each commit group carried, and where
//! each append's time went ([`AppendStages`]).
//!
//! Recording is plain relaxed atomic adds (no lock, nothing allocated):
//! the log's writer (on a pool thread) records everything but the `wake`
//! stage, which the task that waited for the append records when it
//! resumes; a scrape reads from any thread. A
//! histogram keeps one count per bucket (not cumulative) plus an overflow
//! count, so a reader never sees a bucket smaller than the one before it
//! once it sums them, even while the writer records: its total is the sum
//! of the buckets it read. Nothing here is persisted: counts start at zero
//! when the log is opened (Prometheus reads a drop as a counter reset).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the fsync-latency buckets, in nanoseconds: 50 µs to
/// 10 s (a slower fsync lands in the overflow bucket, `+Inf`).
pub const FSYNC_BUCKETS_NS: &[u64] = &[
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Upper bounds of the records-per-commit buckets: powers of 4 from 1 to
/// 4^11 (4,194,304). A commit group holds at most 8 MiB of batches staged
/// plus the batch that crossed that line (at most `max_batch_bytes`), and
/// a record takes several bytes, so a commit stays within the finite
/// buckets; `+Inf` is there all the same.
pub const COMMIT_RECORDS_BUCKETS: &[u64] = &[
    1, 4, 16, 64, 256, 1_024, 4_096, 16_384, 65_536, 262_144, 1_048_576, 4_194_304,
];

/// Upper bounds of the append-stage buckets, in nanoseconds: 10 µs to
/// 10 s, fine below 5 ms (where an fsync and a wake-up land on an idle
/// disk) so that percentiles read from the buckets mean something.
pub const STAGE_BUCKETS_NS: &[u64] = &[
    10_000,
    25_000,
    50_000,
    75_000,
    100_000,
    150_000,
    200_000,
    250_000,
    300_000,
    400_000,
    500_000,
    600_000,
    750_000,
    1_000_000,
    1_250_000,
    1_500_000,
    2_000_000,
    2_500_000,
    3_000_000,
    4_000_000,
    5_000_000,
    7_500_000,
    10_000_000,
    15_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    10_000_000_000,
];

/// The stages of one append, from the moment it is queued at the writer
/// until the task that waits for it runs again. They follow each other
/// without gap, so their sum is the append's whole time in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// In the writer's queue, until the writer takes the group it is in.
    Queued,
    /// The group's staging (every batch of the group, copied and
    /// restamped) and its positioned write.
    Write,
    /// The commit after the write: the group's `fdatasync` under
    /// `fsync=always` (plus a recovery checkpoint when one is due); near
    /// zero under `interval` and `never`, unless a sync is due.
    Fsync,
    /// From the commit's end until the waiting task resumed: the writer
    /// answering the group's appends, the wake-up of the task, and its
    /// wait for a worker thread.
    Wake,
}

impl Stage {
    /// Every stage, in order.
    pub const ALL: [Stage; 4] = [Stage::Queued, Stage::Write, Stage::Fsync, Stage::Wake];

    /// The `stage` label of `pigeon_append_stage_seconds`.
    pub fn label(self) -> &'static str {
        match self {
            Stage::Queued => "queued",
            Stage::Write => "write",
            Stage::Fsync => "fsync",
            Stage::Wake => "wake",
        }
    }
}

/// Where the appends' time went: one histogram per [`Stage`], one
/// observation per append (a group's write and fsync count once for each
/// append that waited for them: they are per-request figures).
#[derive(Debug)]
pub struct AppendStages {
    stages: [Histogram; 4],
}

impl Default for AppendStages {
    fn default() -> Self {
        AppendStages {
            stages: Stage::ALL.map(|_| Histogram::new(STAGE_BUCKETS_NS)),
        }
    }
}

impl AppendStages {
    /// One append spent `took` in `stage`.
    pub fn record(&self, stage: Stage, took: Duration) {
        self.stages[stage as usize].record(nanos(took));
    }

    /// The histogram of `stage` now.
    pub fn snapshot(&self, stage: Stage) -> HistogramSnapshot {
        self.stages[stage as usize].snapshot()
    }
}

fn nanos(took: Duration) -> u64 {
    u64::try_from(took.as_nanos()).unwrap_or(u64::MAX)
}

/// A histogram of `u64` observations over fixed upper bounds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    /// One count per bound, then the overflow (`+Inf`) count.
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

/// A histogram as read at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Upper bounds (inclusive), ascending.
    pub bounds: &'static [u64],
    /// Observations per bucket (not cumulative), one per bound then the
    /// overflow bucket.
    pub counts: Vec<u64>,
    /// Sum of the observations.
    pub sum: u64,
}

impl HistogramSnapshot {
    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds `other`'s observations (same bounds; a snapshot of other
    /// bounds is left out, as nothing could place its counts).
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        if self.bounds != other.bounds || self.counts.len() != other.counts.len() {
            return;
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.sum = self.sum.saturating_add(other.sum);
    }
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending).
    pub fn new(bounds: &'static [u64]) -> Histogram {
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Histogram {
            bounds,
            counts,
            sum: AtomicU64::new(0),
        }
    }

    /// Counts one observation in the first bucket whose bound is at least
    /// `value` (the overflow bucket past the last bound).
    pub fn record(&self, value: u64) {
        let bucket = self.bounds.partition_point(|bound| *bound < value);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// The counts now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds,
            counts: self
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            sum: self.sum.load(Ordering::Relaxed),
        }
    }
}

/// What a partition log counts about its own work.
#[derive(Debug)]
pub struct LogStats {
    appended_records: AtomicU64,
    appended_bytes: AtomicU64,
    /// Duration of each `fdatasync` of the active segment, in nanoseconds.
    pub fsync_ns: Histogram,
    /// Records made durable (or, under `interval` and `never`, written) by
    /// each commit group.
    pub commit_records: Histogram,
    /// Where each append's time went.
    pub stages: AppendStages,
}

impl Default for LogStats {
    fn default() -> Self {
        LogStats {
            appended_records: AtomicU64::new(0),
            appended_bytes: AtomicU64::new(0),
            fsync_ns: Histogram::new(FSYNC_BUCKETS_NS),
            commit_records: Histogram::new(COMMIT_RECORDS_BUCKETS),
            stages: AppendStages::default(),
        }
    }
}

impl LogStats {
    /// One `fdatasync` took `took`.
    pub fn synced(&self, took: Duration) {
        self.fsync_ns.record(nanos(took));
    }

    /// A commit group's appends were answered: `records` records in
    /// `bytes` bytes of batches were appended (retries of batches already
    /// stored are not counted). Empty groups are not counted.
    pub fn committed(&self, records: u64, bytes: u64) {
        if records == 0 {
            return;
        }
        self.appended_records.fetch_add(records, Ordering::Relaxed);
        self.appended_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.commit_records.record(records);
    }

    /// Records appended since the log was opened.
    pub fn appended_records(&self) -> u64 {
        self.appended_records.load(Ordering::Relaxed)
    }

    /// Bytes of record batches appended since the log was opened.
    pub fn appended_bytes(&self) -> u64 {
        self.appended_bytes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_at_or_above_them() {
        let h = Histogram::new(&[1, 4, 16]);
        for value in [0, 1, 2, 4, 5, 16, 17, u64::MAX / 2] {
            h.record(value);
        }
        let s = h.snapshot();
        assert_eq!(s.counts, vec![2, 2, 2, 2], "le 1, le 4, le 16, +Inf");
        assert_eq!(s.count(), 8);
        assert_eq!(s.sum, 45 + u64::MAX / 2);
    }

    #[test]
    fn commits_count_records_and_bytes_and_skip_empty_groups() {
        let stats = LogStats::default();
        stats.committed(0, 0);
        stats.committed(3, 300);
        stats.committed(100, 1_000);
        assert_eq!(stats.appended_records(), 103);
        assert_eq!(stats.appended_bytes(), 1_300);
        assert_eq!(stats.commit_records.snapshot().count(), 2);
        stats.synced(Duration::from_micros(70));
        let fsync = stats.fsync_ns.snapshot();
        assert_eq!(fsync.counts[1], 1, "70 µs is in the 100 µs bucket");
    }

    #[test]
    fn stages_land_in_their_own_histograms_and_merge_across_logs() {
        let (a, b) = (LogStats::default(), LogStats::default());
        a.stages.record(Stage::Queued, Duration::from_micros(12));
        a.stages.record(Stage::Fsync, Duration::from_micros(260));
        b.stages.record(Stage::Fsync, Duration::from_secs(20));
        let mut fsync = a.stages.snapshot(Stage::Fsync);
        fsync.merge(&b.stages.snapshot(Stage::Fsync));
        assert_eq!(fsync.count(), 2);
        let le_300us = STAGE_BUCKETS_NS.partition_point(|b| *b < 300_000);
        assert_eq!(fsync.counts[le_300us], 1, "260 µs is in the 300 µs bucket");
        assert_eq!(
            *fsync.counts.last().expect("overflow"),
            1,
            "20 s is past 10 s"
        );
        assert_eq!(fsync.sum, 260_000 + 20_000_000_000);
        let queued = a.stages.snapshot(Stage::Queued);
        assert_eq!(queued.counts[1], 1, "12 µs is in the 25 µs bucket");
        assert_eq!(a.stages.snapshot(Stage::Write).count(), 0);
        let mut other = Histogram::new(&[1, 2]).snapshot();
        other.counts[0] = 5;
        fsync.merge(&other);
        assert_eq!(fsync.count(), 2, "other bounds are not merged");
    }

    #[test]
    fn bounds_ascend() {
        for bounds in [FSYNC_BUCKETS_NS, COMMIT_RECORDS_BUCKETS, STAGE_BUCKETS_NS] {
            assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
