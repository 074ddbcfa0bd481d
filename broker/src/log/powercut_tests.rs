//! Power-cut tests of the partition log, disk faults that `tests.rs` does not
//! cover, and a bounded fuzz of recovery over arbitrary segment bytes.
//!
//! ## Power cuts
//!
//! Each case runs the log on a [`PowerCutFs`] through random appends (plain
//! and idempotent), commits, rolls, timer syncs, clean restarts and
//! `kill -9` restarts, recording which appends were acknowledged (commit
//! returned `Ok`) and which the log claims are synced. Then the power is cut,
//! either between two calls or in the middle of one (the file system fails
//! every call after a random budget, so the cut can land inside a roll, a
//! checkpoint, a retention delete or a recovery), and the real files are
//! rewritten to what a power cut leaves (see [`crate::io::PowerCutFs`]). The
//! log is reopened with the plain [`StdFs`] and must:
//!
//! - open (recovery succeeds);
//! - serve offsets densely from its start to its end, every batch passing
//!   its CRC, every record byte-for-byte the value appended at that offset;
//! - keep everything the log reported as synced (`durable_position`), so the
//!   loss is at most the unsynced suffix: never a hole;
//! - under `fsync=always`, keep every acknowledged record;
//! - answer a retry of any surviving idempotent batch still in the producer
//!   cache as a duplicate with its original offsets, never append it twice.
//!
//! A case runs 1–3 rounds of "work, cut, check". Seeds: a random base seed is
//! printed; `PIGEON_TEST_SEED=<seed>` replays it. The long form:
//! `cargo test -p pigeon-broker --release power_cut_long -- --ignored --nocapture`
//! (`PIGEON_POWERCUT_CASES` sets the number of cases per policy).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pigeon_client::batch::{
    BatchBuilder, ProducerStamp, RecordBatch, read_prefix, records_of, verify_stored,
};

use super::producers::CACHED_BATCHES;
use super::*;
use crate::io::{FileSystem, PowerCutFs, StdFs};

const T0: i64 = 1_700_000_000_000;
const PID: i64 = 7;

/// splitmix64, so a case replays exactly from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

fn base_seed() -> u64 {
    match std::env::var("PIGEON_TEST_SEED") {
        Ok(seed) => seed.trim().parse().expect("PIGEON_TEST_SEED must be a u64"),
        Err(_) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            Rng(nanos ^ u64::from(std::process::id())).next()
        }
    }
}

/// A temp dir in `/dev/shm` when there is one: the checks reopen the log
/// with the real [`StdFs`], whose fsyncs cost milliseconds on a disk and
/// nothing in memory (durability itself is simulated by [`PowerCutFs`]).
fn fast_tempdir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().expect("tempdir")
}

fn make_batch(values: &[Vec<u8>], producer: ProducerStamp) -> RecordBatch {
    let mut builder = BatchBuilder::new();
    for value in values {
        builder.push(None, value, &[]);
    }
    RecordBatch::validate(builder.build(producer, 0), 1 << 20).expect("valid batch")
}

fn stamp(sequence: i32) -> ProducerStamp {
    ProducerStamp {
        producer_id: PID,
        producer_epoch: 0,
        base_sequence: sequence,
    }
}

/// Every record from `from` to the end as `(offset, value)`, checking each
/// served batch's CRC.
fn read_records(reader: &LogReader, from: u64) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        let result = reader
            .read(offset, 4096)
            .unwrap_or_else(|e| panic!("read at {offset} failed: {e}"));
        if result.bytes.is_empty() {
            return out;
        }
        let mut bytes = &result.bytes[..];
        while !bytes.is_empty() {
            let (_, length) = read_prefix(bytes).expect("batch prefix");
            let total = 12 + length as usize;
            verify_stored(&bytes[..total], 1 << 20).expect("served batches verify");
            let records = records_of(Bytes::copy_from_slice(&bytes[..total])).expect("batch");
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

/// An idempotent batch that was appended (staged at least).
#[derive(Debug, Clone)]
struct IdemBatch {
    sequence: i32,
    base: u64,
    last: u64,
    values: Vec<Vec<u8>>,
}

/// Figures over a run.
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    cases: u64,
    cuts: u64,
    cuts_mid_call: u64,
    cuts_in_recovery: u64,
    records_checked: u64,
    acked_checked: u64,
    acked_lost: u64,
    unsynced_lost: u64,
    torn: u64,
    vanished: u64,
    restored: u64,
    index_truncated: u64,
    duplicates_checked: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.cases += o.cases;
        self.cuts += o.cuts;
        self.cuts_mid_call += o.cuts_mid_call;
        self.cuts_in_recovery += o.cuts_in_recovery;
        self.records_checked += o.records_checked;
        self.acked_checked += o.acked_checked;
        self.acked_lost += o.acked_lost;
        self.unsynced_lost += o.unsynced_lost;
        self.torn += o.torn;
        self.vanished += o.vanished;
        self.restored += o.restored;
        self.index_truncated += o.index_truncated;
        self.duplicates_checked += o.duplicates_checked;
    }
}

struct Case {
    seed: u64,
    policy: FsyncPolicy,
    rng: Rng,
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    config: LogConfig,
    clock: ManualClock,
    fs: PowerCutFs,
    /// Every value appended, by offset (offsets are reused only after a cut
    /// lost them).
    written: BTreeMap<u64, Vec<u8>>,
    /// Offsets below this were acknowledged.
    acked_end: u64,
    /// Offsets below this are covered by a completed fsync, as the log says.
    durable_end: u64,
    /// Log start offset last seen.
    start: u64,
    idem: Vec<IdemBatch>,
    next_sequence: i32,
    counter: u64,
    stats: Stats,
}

impl Case {
    fn new(seed: u64, policy: FsyncPolicy) -> Case {
        let mut rng = Rng(seed);
        let tmp = fast_tempdir();
        let dir = tmp.path().join("p");
        let segment_bytes = [1024, 2048, 4096][rng.below(3) as usize];
        let config = LogConfig {
            segment_bytes,
            index_interval_bytes: 128,
            fsync: policy,
            retention_ms: None,
            retention_bytes: rng.chance(3).then(|| segment_bytes * 3),
            checkpoint_interval_bytes: [512, 4096, 1 << 30][rng.below(3) as usize],
            ..LogConfig::default()
        };
        Case {
            seed,
            policy,
            rng,
            _tmp: tmp,
            dir,
            config,
            clock: ManualClock::new(T0),
            fs: PowerCutFs::new(),
            written: BTreeMap::new(),
            acked_end: 0,
            durable_end: 0,
            start: 0,
            idem: Vec::new(),
            next_sequence: 0,
            counter: 0,
            stats: Stats {
                cases: 1,
                ..Stats::default()
            },
        }
    }

    fn open_with(&self, fs: Arc<dyn FileSystem>) -> LogResult<Log> {
        Log::open(
            fs,
            &self.dir,
            self.config.clone(),
            Arc::new(self.clock.clone()),
        )
    }

    fn open_cut(&self) -> LogResult<Log> {
        self.open_with(Arc::new(self.fs.clone()))
    }

    fn run(mut self) -> Stats {
        let rounds = 1 + self.rng.below(3);
        for _ in 0..rounds {
            self.round();
        }
        self.stats
    }

    /// Work until the power goes off or the steps run out, cut, check.
    fn round(&mut self) {
        if self.rng.chance(6) {
            // The cut lands inside the recovery of the previous cut.
            self.fs.fail_after(self.rng.below(25));
        }
        let mut log = match self.open_cut() {
            Ok(log) => Some(log),
            Err(e) => {
                assert!(self.fs.is_off(), "open failed without a power cut: {e}");
                self.stats.cuts_in_recovery += 1;
                None
            }
        };
        if let Some(log) = &log {
            self.note_durable(log);
        }
        if log.is_some() && self.rng.chance(2) {
            self.fs.fail_after(self.rng.below(300));
        }
        let steps = 5 + self.rng.below(80);
        for _ in 0..steps {
            let Some(next_before) = log.as_ref().map(Log::next_offset) else {
                break;
            };
            if self.fs.is_off() {
                break;
            }
            let result = self.step(&mut log, next_before);
            if let Err(e) = result {
                assert!(
                    self.fs.is_off(),
                    "a call failed without a power failure: {e}"
                );
                break;
            }
            if let Some(log) = &log {
                self.note_durable(log);
            }
        }
        if self.fs.is_off() {
            self.stats.cuts_mid_call += 1;
        } else if let Some(current) = log.as_mut().filter(|_| self.rng.chance(2)) {
            // The power goes while a group is written but not yet synced.
            let written = self
                .append(current)
                .and_then(|()| current.flush_writes());
            if let Err(e) = written {
                assert!(self.fs.is_off(), "a call failed without a power failure: {e}");
            }
            self.note_durable(current);
        }
        drop(log);
        let report = self.fs.power_cut(self.rng.next()).expect("power cut");
        self.stats.cuts += 1;
        self.stats.torn += report.torn as u64;
        self.stats.vanished += report.vanished as u64;
        self.stats.restored += report.restored as u64;
        self.stats.index_truncated += report.index_truncated as u64;
        self.check_after_cut();
    }

    fn step(&mut self, log: &mut Option<Log>, next_before: u64) -> LogResult<()> {
        let current = log.as_mut().expect("open");
        match self.rng.below(24) {
            0..=11 => self.append(current),
            12..=17 => {
                current.commit()?;
                self.acked_end = current.next_offset();
                if self.policy == FsyncPolicy::Always {
                    assert_eq!(
                        current.durable_position(),
                        current.end_position(),
                        "fsync=always acknowledged unsynced bytes"
                    );
                }
                Ok(())
            }
            18 => current.roll(),
            // Written, not yet synced: what the writer does before its fsync.
            19 => current.flush_writes(),
            20 | 21 => match self.policy {
                // What the interval policy's timer does.
                FsyncPolicy::Never => Ok(()),
                _ => current.sync(),
            },
            22 => {
                // Clean restart on the same (simulated) disk.
                let closing = log.take().expect("open");
                closing.close()?;
                self.durable_end = self.durable_end.max(next_before);
                *log = Some(self.open_cut()?);
                Ok(())
            }
            _ => {
                // kill -9: the page cache survives, staged appends do not.
                let written_end = {
                    let current = log.as_ref().expect("open");
                    current.reader().end_offset()
                };
                drop(log.take());
                let reopened = self.open_cut()?;
                assert!(
                    reopened.next_offset() >= written_end.max(self.acked_end),
                    "kill -9 lost written records: next {} < {}",
                    reopened.next_offset(),
                    written_end.max(self.acked_end)
                );
                // Appends staged but never written died with the process.
                self.forget_from(reopened.next_offset());
                *log = Some(reopened);
                Ok(())
            }
        }
    }

    fn append(&mut self, log: &mut Log) -> LogResult<()> {
        self.clock.advance(1 + self.rng.below(50) as i64);
        let count = 1 + self.rng.below(4) as usize;
        let values: Vec<Vec<u8>> = (0..count)
            .map(|_| {
                self.counter += 1;
                let size = if self.rng.chance(8) {
                    300 + self.rng.below(700)
                } else {
                    self.rng.below(120)
                } as usize;
                let tag = (self.seed ^ self.counter).to_le_bytes();
                let mut value = self.counter.to_le_bytes().to_vec();
                value.extend((0..size).map(|i| tag[i % 8]));
                value
            })
            .collect();
        let idempotent = self.rng.chance(3);
        let producer = if idempotent {
            stamp(self.next_sequence)
        } else {
            ProducerStamp::NONE
        };
        let info = log.append(&make_batch(&values, producer))?;
        assert!(!info.duplicate, "a new batch was taken for a duplicate");
        for (i, value) in values.iter().enumerate() {
            self.written.insert(info.base_offset + i as u64, value.clone());
        }
        if idempotent {
            self.idem.push(IdemBatch {
                sequence: self.next_sequence,
                base: info.base_offset,
                last: info.last_offset,
                values,
            });
            self.next_sequence += count as i32;
        }
        Ok(())
    }

    /// Records what the log says is synced, and its start.
    fn note_durable(&mut self, log: &Log) {
        if log.durable_position() == log.end_position() {
            self.durable_end = self.durable_end.max(log.reader().end_offset());
        }
        // Retention moves the start in memory before deleting files: the
        // start after a cut may be earlier (deletes undone), never later.
        self.start = log.reader().start_offset();
    }

    fn check_after_cut(&mut self) {
        let mut log = self
            .open_with(Arc::new(StdFs))
            .unwrap_or_else(|e| panic!("recovery after a power cut failed: {e}"));
        let reader = log.reader();
        let start = reader.start_offset();
        let next = log.next_offset();
        assert!(
            start <= self.start,
            "the log starts at {start}, after {}: more was deleted than retention did",
            self.start
        );
        let records = read_records(&reader, start);
        let offsets: Vec<u64> = records.iter().map(|r| r.0).collect();
        assert!(
            offsets.iter().copied().eq(start..next),
            "offsets are not dense from {start} to {next}: {offsets:?}"
        );
        for (offset, value) in &records {
            let want = self.written.get(offset);
            assert!(
                want == Some(value),
                "offset {offset} holds bytes that were never appended there"
            );
        }
        assert!(
            self.acked_end <= self.durable_end || self.policy != FsyncPolicy::Always,
            "fsync=always acknowledged up to {} but synced only up to {}",
            self.acked_end,
            self.durable_end
        );
        assert!(
            next >= self.durable_end,
            "records {next}..{} were reported synced and are gone",
            self.durable_end
        );
        if self.policy == FsyncPolicy::Always {
            assert!(
                next >= self.acked_end,
                "acknowledged records {next}..{} are gone",
                self.acked_end
            );
        }
        let written_end = self.written.keys().next_back().map_or(0, |o| o + 1);
        self.stats.records_checked += records.len() as u64;
        self.stats.acked_checked += self.acked_end.min(next).saturating_sub(start);
        self.stats.acked_lost += self.acked_end.saturating_sub(next);
        self.stats.unsynced_lost += written_end.saturating_sub(next);
        self.check_retries(&mut log, next);
        // The survivors are the new baseline.
        self.acked_end = self.acked_end.min(next);
        self.durable_end = next;
        self.start = start;
        if self.rng.chance(2) {
            log.close().expect("clean close after recovery");
        }
    }

    /// Forgets appends from offset `next` on: they did not survive, and
    /// their offsets and sequences will be used again.
    fn forget_from(&mut self, next: u64) {
        self.written.split_off(&next);
        self.idem.retain(|b| b.last < next);
        self.next_sequence = self
            .idem
            .last()
            .map_or(0, |b| b.sequence + (b.last - b.base) as i32 + 1);
    }

    /// Retries of surviving idempotent batches are answered as duplicates.
    fn check_retries(&mut self, log: &mut Log, next: u64) {
        self.forget_from(next);
        let cached = self.idem.len().saturating_sub(CACHED_BATCHES);
        for batch in &self.idem[cached..] {
            let info = log
                .append(&make_batch(&batch.values, stamp(batch.sequence)))
                .unwrap_or_else(|e| panic!("retry of sequence {}: {e}", batch.sequence));
            assert!(
                info.duplicate,
                "a retried batch was appended again (sequence {})",
                batch.sequence
            );
            assert_eq!(
                (info.base_offset, info.last_offset),
                (batch.base, batch.last),
                "a retry was answered with other offsets"
            );
            self.stats.duplicates_checked += 1;
        }
        if let Some(old) = cached.checked_sub(1).map(|i| self.idem[i].clone()) {
            // Too old to be answered: refused, and certainly not appended.
            let result = log.append(&make_batch(&old.values, stamp(old.sequence)));
            assert!(
                result.as_ref().is_err() || result.as_ref().is_ok_and(|i| i.duplicate),
                "an old retried batch was appended again: {result:?}"
            );
        }
        log.commit().expect("commit after retries");
        assert_eq!(log.next_offset(), next, "retries appended nothing");
    }
}

fn case_count(default: u64) -> u64 {
    std::env::var("PIGEON_POWERCUT_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// Runs `cases` cases under `policy` and prints the figures.
fn run_cases(policy: FsyncPolicy, cases: u64) -> Stats {
    let seed = base_seed();
    println!(
        "power cut, fsync={policy}: base seed {seed} (replay: PIGEON_TEST_SEED={seed} cargo test -p pigeon-broker power_cut)"
    );
    let started = Instant::now();
    let mut total = Stats::default();
    for i in 0..cases {
        let case_seed = Rng(seed.wrapping_add(i)).next();
        let outcome = std::panic::catch_unwind(|| Case::new(case_seed, policy).run());
        match outcome {
            Ok(stats) => total.add(&stats),
            Err(panic) => {
                eprintln!(
                    "power cut case {i} failed: fsync={policy}, base seed {seed} (PIGEON_TEST_SEED={seed})"
                );
                std::panic::resume_unwind(panic);
            }
        }
    }
    println!(
        "power cut, fsync={policy}: {} cases, {} cuts ({} inside a call, {} inside recovery) in {:.2} s; \
         {} records checked byte for byte, {} of them acknowledged; acknowledged lost: {}; \
         unsynced records lost: {}; torn writes: {}; entries vanished: {}, restored: {}; \
         index files cut: {}; duplicate retries checked: {}",
        total.cases,
        total.cuts,
        total.cuts_mid_call,
        total.cuts_in_recovery,
        started.elapsed().as_secs_f64(),
        total.records_checked,
        total.acked_checked,
        total.acked_lost,
        total.unsynced_lost,
        total.torn,
        total.vanished,
        total.restored,
        total.index_truncated,
        total.duplicates_checked,
    );
    total
}

#[test]
fn power_cut_with_fsync_always_loses_no_acknowledged_record() {
    let stats = run_cases(FsyncPolicy::Always, case_count(200));
    assert_eq!(stats.acked_lost, 0);
    assert!(stats.torn > 0 && stats.cuts_mid_call > 0, "{stats:?}");
}

#[test]
fn power_cut_with_fsync_interval_loses_only_an_unsynced_suffix() {
    // The timer is driven by the test (`sync` steps), so a seed replays.
    let policy = FsyncPolicy::Interval(Duration::from_secs(3600));
    let stats = run_cases(policy, case_count(100));
    assert!(stats.cuts > 0, "{stats:?}");
}

#[test]
fn power_cut_with_fsync_never_loses_only_an_unsynced_suffix() {
    let stats = run_cases(FsyncPolicy::Never, case_count(100));
    assert!(
        stats.unsynced_lost > 0,
        "fsync=never should lose something: {stats:?}"
    );
}

#[test]
#[ignore = "long form: thousands of power cuts; run with --release -- --ignored"]
fn power_cut_long() {
    let cases = case_count(2000);
    let mut total = Stats::default();
    for policy in [
        FsyncPolicy::Always,
        FsyncPolicy::Interval(Duration::from_secs(3600)),
        FsyncPolicy::Never,
    ] {
        total.add(&run_cases(policy, cases));
    }
    println!("power cut, all policies: {total:?}");
}
