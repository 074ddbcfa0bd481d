//! Model test of the log: random sequences of append, read, roll,
//! retention, background seal jobs, clean restart and crash (the process
//! dies; the segment holding the durable point, the active one or a
//! sealed one whose background sync is unsettled, is cut at a random byte
//! of its unsynced tail, as a power cut would, and a sealed segment that
//! lost its tail takes the segments after it along) run against the real log and a plain vector of records. After
//! every step the log must hold exactly the model's records.

use std::sync::Arc;

use proptest::prelude::*;

use super::tests::batch;
use super::*;
use crate::io::StdFs;

const T0: i64 = 1_700_000_000_000;
const RETENTION_MS: u64 = 10_000;

#[derive(Debug, Clone)]
enum Step {
    /// Append a batch of records with these value sizes.
    Append(Vec<usize>),
    /// Read from this fraction of the offset range and compare.
    Read(f64),
    Roll,
    /// Advance the clock by this many ms, then run retention.
    Retention(u64),
    CleanRestart,
    /// Crash; cut the active segment at this fraction of its unsynced tail.
    Crash(f64),
    /// Run a background seal's job (a roll under `fsync=never` leaves the
    /// sealed segment's sync to one), and the commit that settles it.
    SealJob,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => proptest::collection::vec(0usize..300, 1..8).prop_map(Step::Append),
        2 => (0.0..1.0f64).prop_map(Step::Read),
        1 => Just(Step::Roll),
        1 => (0u64..8_000).prop_map(Step::Retention),
        1 => Just(Step::CleanRestart),
        2 => (0.0..1.0f64).prop_map(Step::Crash),
        1 => Just(Step::SealJob),
    ]
}

#[derive(Debug, Clone)]
struct ModelRecord {
    offset: u64,
    value: Vec<u8>,
    timestamp: i64,
    segment: u64,
    /// End of its batch in the segment file.
    batch_end: u64,
}

struct Harness {
    _tmp: tempfile::TempDir,
    dir: std::path::PathBuf,
    clock: ManualClock,
    config: LogConfig,
    log: Option<Log>,
    model: Vec<ModelRecord>,
    /// Offset the next record gets according to the model.
    next: u64,
    counter: u64,
}

impl Harness {
    fn new() -> Harness {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("p");
        let config = LogConfig {
            segment_bytes: 2048,
            index_interval_bytes: 128,
            fsync: FsyncPolicy::Never,
            retention_ms: Some(RETENTION_MS),
            checkpoint_interval_bytes: 1 << 30,
            ..LogConfig::default()
        };
        let clock = ManualClock::new(T0);
        let mut harness = Harness {
            _tmp: tmp,
            dir,
            clock,
            config,
            log: None,
            model: Vec::new(),
            next: 0,
            counter: 0,
        };
        harness.reopen();
        harness
    }

    fn reopen(&mut self) {
        let log = Log::open(
            Arc::new(StdFs),
            &self.dir,
            self.config.clone(),
            Arc::new(self.clock.clone()),
        );
        // Seal jobs run when a step says so (or the log waits for one).
        self.log = Some(log.expect("reopen").with_manual_seals());
    }

    fn log(&mut self) -> &mut Log {
        self.log.as_mut().expect("open")
    }

    fn apply(&mut self, step: &Step) {
        match step {
            Step::Append(sizes) => {
                // An append may roll, and a roll runs retention.
                let before = self.log().end_position().0;
                self.append(sizes);
                if self.log().end_position().0 != before {
                    self.predict_retention();
                }
            }
            Step::Read(at) => self.read_from(*at),
            Step::Roll => {
                let before = self.log().end_position().0;
                self.log().roll().expect("roll");
                if self.log().end_position().0 != before {
                    self.predict_retention();
                }
            }
            Step::Retention(ms) => self.retention(*ms),
            Step::CleanRestart => {
                self.log.take().expect("open").close().expect("close");
                self.reopen();
            }
            Step::Crash(at) => self.crash(*at),
            Step::SealJob => {
                self.log().run_seal_job();
                self.log().commit().expect("settle the seal");
            }
        }
    }

    fn append(&mut self, sizes: &[usize]) {
        self.clock.advance(100);
        let values: Vec<Vec<u8>> = sizes
            .iter()
            .map(|&size| {
                self.counter += 1;
                let tag = self.counter.to_le_bytes();
                (0..size.max(8)).map(|i| tag[i % 8]).collect()
            })
            .collect();
        let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        let info = self.log().append(&batch(&refs)).expect("append");
        self.log().commit().expect("commit");
        assert_eq!(info.base_offset, self.next, "offsets are dense");
        let (segment, batch_end) = self.log().end_position();
        for (i, value) in values.into_iter().enumerate() {
            self.model.push(ModelRecord {
                offset: info.base_offset + i as u64,
                value,
                timestamp: info.timestamp,
                segment,
                batch_end,
            });
        }
        self.next = info.last_offset + 1;
    }

    fn retention(&mut self, ms: u64) {
        self.clock.advance(ms as i64);
        self.log().enforce_retention().expect("retention");
        self.predict_retention();
    }

    fn predict_retention(&mut self) {
        // Prediction: a prefix of sealed segments goes, each whose newest
        // record is older than the retention time.
        let now = self.clock.now_ms();
        let active = self.log().end_position().0;
        // A segment whose background seal runs is kept until it is synced.
        let sealing = self.log().sealing_base();
        let mut segments: Vec<u64> = self.model.iter().map(|r| r.segment).collect();
        segments.dedup();
        for segment in segments {
            let newest = self
                .model
                .iter()
                .filter(|r| r.segment == segment)
                .map(|r| r.timestamp)
                .max();
            let expired = newest.is_some_and(|ts| now - ts > RETENTION_MS as i64);
            if segment == active || Some(segment) == sealing || !expired {
                break;
            }
            self.model.retain(|r| r.segment != segment);
        }
    }

    fn crash(&mut self, at: f64) {
        let log = self.log.take().expect("open");
        let (segment, durable) = log.durable_position();
        let path = self.dir.join(format!("{segment:020}.log"));
        // While a sealed segment's background sync is unsettled, the
        // durable point is in it, not in the active segment.
        let end = std::fs::metadata(&path).expect("segment").len();
        drop(log);
        let cut = durable + ((end - durable) as f64 * at) as u64;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open segment");
        file.set_len(cut).expect("cut");
        // A sealed segment that lost its tail ends the log: the segments
        // after it go too.
        let lost_tail = cut < end;
        self.model.retain(|r| {
            r.segment < segment || (r.segment == segment && r.batch_end <= cut) || !lost_tail
        });
        self.next = self
            .model
            .last()
            .map_or(self.next_after_empty(segment), |r| r.offset + 1);
        self.reopen();
    }

    /// The next offset when every record was cut or deleted: the start of
    /// the active segment (retention never deletes that one).
    fn next_after_empty(&self, segment: u64) -> u64 {
        segment.min(self.next)
    }

    fn read_from(&mut self, at: f64) {
        let reader = self.log().reader();
        let start = reader.start_offset();
        let span = self.next - start;
        let from = start + (span as f64 * at) as u64;
        let got = read_records(&reader, from);
        let want: Vec<(u64, Vec<u8>)> = self
            .model
            .iter()
            .filter(|r| r.offset >= from)
            .map(|r| (r.offset, r.value.clone()))
            .collect();
        assert_same(&got, &want, &format!("records from offset {from}"));
    }

    fn check(&mut self) {
        let next = self.next;
        let log = self.log();
        assert_eq!(log.next_offset(), next, "next offset");
        let reader = log.reader();
        let start = reader.start_offset();
        let got = read_records(&reader, start);
        let want: Vec<(u64, Vec<u8>)> = self
            .model
            .iter()
            .map(|r| (r.offset, r.value.clone()))
            .collect();
        assert_same(&got, &want, "whole log");
        if let Some(first) = self.model.first() {
            assert!(
                start <= first.offset,
                "start {start} is past the first kept record {}",
                first.offset
            );
        }
        // Time lookups agree with the model too.
        if let Some(record) = self.model.get(self.model.len() / 2) {
            let found = reader
                .offset_for_timestamp(record.timestamp)
                .expect("time lookup");
            let expected = self
                .model
                .iter()
                .find(|r| r.timestamp >= record.timestamp)
                .map(|r| r.offset);
            assert_eq!(found, expected, "offset for timestamp {}", record.timestamp);
        }
    }
}

/// Compares offsets first, so a failure shows which records differ.
fn assert_same(got: &[(u64, Vec<u8>)], want: &[(u64, Vec<u8>)], what: &str) {
    let offsets = |records: &[(u64, Vec<u8>)]| records.iter().map(|r| r.0).collect::<Vec<_>>();
    assert_eq!(offsets(got), offsets(want), "offsets of {what}");
    for (g, w) in got.iter().zip(want) {
        assert!(g.1 == w.1, "value of offset {} differs in {what}", g.0);
    }
}

fn read_records(reader: &LogReader, from: u64) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        let result = reader.read(offset, 700).expect("read");
        if result.bytes.is_empty() {
            return out;
        }
        let mut bytes = &result.bytes[..];
        while !bytes.is_empty() {
            let (_, length) = pigeon_protocol::batch::read_prefix(bytes).expect("prefix");
            let total = 12 + length as usize;
            let records =
                pigeon_protocol::batch::records_of(bytes::Bytes::copy_from_slice(&bytes[..total]))
                    .expect("batch");
            for record in records {
                let record = record.expect("record");
                if record.offset >= offset {
                    out.push((record.offset, record.value.to_vec()));
                }
            }
            bytes = &bytes[total..];
        }
        offset = out.last().map_or(offset, |r| r.0 + 1);
    }
}

/// `PROPTEST_CASES` when set (for long runs), else `default`.
fn cases_from_env(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases_from_env(48)))]

    #[test]
    fn log_matches_model(steps in proptest::collection::vec(step(), 1..40)) {
        let mut harness = Harness::new();
        for step in &steps {
            harness.apply(step);
            harness.check();
        }
    }
}
